//! How configurable-http-proxy picks a route (`lib/trie.js`, `lib/configproxy.js`): the
//! longest route prefix in whole segments of the decoded path; under host routing the host
//! (without its port) is the first segment. This is the behaviour our Istio objects must match.

use std::collections::BTreeSet;

/// A routing table of decoded, normalised specs (`/`, `/user/alice`, `/host/path`).
#[derive(Debug, Clone, Default)]
pub struct ChpTable {
    specs: BTreeSet<String>,
    host_routing: bool,
}

impl ChpTable {
    /// An empty table; `host_routing` as `--host-routing`.
    pub fn new(host_routing: bool) -> Self {
        ChpTable { specs: BTreeSet::new(), host_routing }
    }

    /// Adds or replaces a route.
    pub fn add(&mut self, spec: &str) {
        self.specs.insert(spec.to_owned());
    }

    /// Deletes a route.
    pub fn delete(&mut self, spec: &str) {
        self.specs.remove(spec);
    }

    /// The routes.
    pub fn specs(&self) -> impl Iterator<Item = &str> {
        self.specs.iter().map(String::as_str)
    }

    /// The spec a request goes to: `path` as sent (percent-encoded; CHP decodes it, and `%40`
    /// is `@`), `host` as in the `Host` header. `None` is a 404.
    pub fn route(&self, host: &str, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or_default();
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        let mut segments: Vec<String> = Vec::new();
        if self.host_routing {
            let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
            segments.push(name.to_ascii_lowercase());
        }
        segments.extend(decoded.split('/').filter(|s| !s.is_empty()).map(str::to_owned));
        // The longest prefix first: walk back from the whole path to the root.
        for length in (0..=segments.len()).rev() {
            let candidate = format!("/{}", segments[..length].join("/"));
            if self.specs.contains(&candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

/// Request paths around a route's path as JupyterHub spells it (`encoded`, percent-encoded):
/// the path itself, below it (`/`, `/lab/tree`), beside it (`/user/alice2`, where CHP's whole
/// segments and a raw prefix part) and beside it below (`x/y`). The property tests probe these,
/// each in the spellings CHP takes for the same path.
pub fn paths_around(encoded: &str) -> Vec<String> {
    let base = if encoded == "/" { "" } else { encoded };
    [
        encoded.to_owned(),
        format!("{base}/"),
        format!("{base}/lab/tree"),
        format!("{base}2"),
        format!("{base}x/y"),
    ]
    .into_iter()
    // Around the root, `{base}2` is no path.
    .filter(|path| path.starts_with('/'))
    .collect()
}

/// `path` with the hex digits of its escapes in lower case: a spelling CHP decodes to the
/// same path.
pub fn lower_hex(path: &str) -> String {
    escapes_mapped(path, |escape| escape.to_ascii_lowercase())
}

/// `path` with the hex digits of its escapes in upper case: the same path by RFC 3986, as
/// Traefik forwards it.
pub fn upper_hex(path: &str) -> String {
    escapes_mapped(path, |escape| escape.to_ascii_uppercase())
}

/// `path` with every `%` and the two characters after it passed through `map`.
fn escapes_mapped(path: &str, map: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&map(escape));
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_around_the_path_in_chps_spellings() {
        assert_eq!(
            paths_around("/user/x%40y"),
            ["/user/x%40y", "/user/x%40y/", "/user/x%40y/lab/tree", "/user/x%40y2", "/user/x%40yx/y"]
        );
        assert_eq!(paths_around("/"), ["/", "/", "/lab/tree"]);
        assert_eq!(lower_hex("/%C3%BC/%4"), "/%c3%bc/%4");
        assert_eq!(upper_hex("/%c3%bc/a%4"), "/%C3%BC/a%4");
    }

    #[test]
    fn longest_prefix_in_whole_segments() {
        let mut table = ChpTable::new(false);
        for spec in ["/", "/user/alice", "/user/alice/foo"] {
            table.add(spec);
        }
        assert_eq!(table.route("h", "/user/alice/foo/lab").as_deref(), Some("/user/alice/foo"));
        assert_eq!(table.route("h", "/user/alice/lab?x=1").as_deref(), Some("/user/alice"));
        assert_eq!(table.route("h", "/user/alice").as_deref(), Some("/user/alice"));
        assert_eq!(table.route("h", "/user/alice2").as_deref(), Some("/"));
        assert_eq!(table.route("h", "/user/%61lice/").as_deref(), Some("/user/alice"));
        table.delete("/");
        assert_eq!(table.route("h", "/hub"), None);
    }

    #[test]
    fn host_routing_prepends_the_host() {
        let mut table = ChpTable::new(true);
        table.add("/");
        table.add("/alice.hub.org/user/alice");
        assert_eq!(
            table.route("alice.hub.org:443", "/user/alice/x").as_deref(),
            Some("/alice.hub.org/user/alice")
        );
        assert_eq!(table.route("bob.hub.org", "/user/alice/x").as_deref(), Some("/"));
    }
}
