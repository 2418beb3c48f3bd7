//! Route specs: the keys of configurable-http-proxy's routing table.
//!
//! A spec arrives percent-encoded in the API path (`/api/routes/has%20space/foo/`) and is kept
//! decoded and normalised (`/has space/foo`), because that is the form configurable-http-proxy
//! lists and JupyterHub compares against.

use std::fmt;

use crate::{Error, Result};

/// How the proxy reads route specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingMode {
    /// Specs are URL paths: `/user/alice`.
    #[default]
    Path,
    /// The first segment of a spec is a host name: `/alice.hub.example.org/user/alice`. Only the
    /// root route `/` has no host. JupyterHub uses this when `subdomain_host` is set.
    Host,
}

/// A decoded, normalised route spec.
///
/// Always starts with `/`, never ends with `/` unless it is the root route `/`, holds no empty,
/// `.` or `..` segment and no control character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteSpec {
    key: String,
    /// Byte length of the host prefix (`/host`) under host routing; 0 when there is none.
    host_end: usize,
}

impl RouteSpec {
    /// The root route `/`, which catches every request no other route matches.
    pub fn root() -> Self {
        RouteSpec { key: "/".to_owned(), host_end: 0 }
    }

    /// Parses a spec as it stands, percent-encoded, in a request path.
    ///
    /// ```
    /// use proxy_api::{RouteSpec, RoutingMode};
    /// let spec = RouteSpec::from_encoded("/user/%E7%A7%80%E6%A8%B9/", RoutingMode::Path).unwrap();
    /// assert_eq!(spec.as_str(), "/user/秀樹");
    /// assert!(RouteSpec::from_encoded("/user/%zz", RoutingMode::Path).is_err());
    /// ```
    pub fn from_encoded(encoded: &str, mode: RoutingMode) -> Result<Self> {
        let decoded = percent_decode_strict(encoded)
            .map_err(|reason| Error::InvalidSpec { spec: encoded.to_owned(), reason })?;
        Self::new(&decoded, mode)
    }

    /// Parses an already decoded spec, normalising it: a leading `/` is added and one trailing
    /// `/` removed, so `user/alice/` and `/user/alice` are the same route.
    pub fn new(decoded: &str, mode: RoutingMode) -> Result<Self> {
        let invalid = |reason| Error::InvalidSpec { spec: decoded.to_owned(), reason };
        if decoded.chars().any(char::is_control) {
            return Err(invalid("control characters cannot be part of a route"));
        }
        let mut key = String::with_capacity(decoded.len() + 1);
        if !decoded.starts_with('/') {
            key.push('/');
        }
        key.push_str(decoded);
        if key.len() > 1 && key.ends_with('/') {
            key.pop();
        }
        if key == "/" {
            return Ok(Self::root());
        }
        for segment in key[1..].split('/') {
            match segment {
                "" => return Err(invalid("empty path segments ('//') cannot be routed")),
                "." | ".." => {
                    return Err(invalid(
                        "'.' and '..' segments are removed by the gateway, so cannot be routed",
                    ));
                }
                _ => {}
            }
        }
        let host_end = match mode {
            RoutingMode::Path => 0,
            RoutingMode::Host => {
                let host = key[1..].split('/').next().unwrap_or_default();
                check_host(host).map_err(invalid)?;
                1 + host.len()
            }
        };
        Ok(RouteSpec { key, host_end })
    }

    /// The spec as configurable-http-proxy lists it.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// Whether this is the root route `/`.
    pub fn is_root(&self) -> bool {
        self.key == "/"
    }

    /// The host under host routing, `None` in path mode and for the root route.
    pub fn host(&self) -> Option<&str> {
        (self.host_end > 0).then(|| &self.key[1..self.host_end])
    }

    /// The path part: the whole spec in path mode, the part after the host under host routing
    /// (`/` when the spec is only a host).
    pub fn path(&self) -> &str {
        match &self.key[self.host_end..] {
            "" => "/",
            path => path,
        }
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// Host names as an HTTP `Host` header carries them, without the port, which
/// configurable-http-proxy strips before matching.
fn check_host(host: &str) -> std::result::Result<(), &'static str> {
    if host.is_empty() {
        return Err("host routing needs a host as the first segment");
    }
    let valid = host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid || host.starts_with('.') || host.ends_with('.') {
        return Err("the first segment must be a host name (letters, digits, '-', '.', '_'; no port)");
    }
    Ok(())
}

/// Percent-decodes `input`, refusing what a lenient decoder would pass through: a `%` not
/// followed by two hex digits, and bytes that do not decode to UTF-8.
pub(crate) fn percent_decode_strict(input: &str) -> std::result::Result<String, &'static str> {
    let bytes = input.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        let hex = bytes.get(at + 1..at + 3).unwrap_or_default();
        if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err("malformed percent-escape: '%' must be followed by two hex digits");
        }
        i = at + 3;
    }
    percent_encoding::percent_decode_str(input)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "percent-escapes do not decode to UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(spec: &str) -> Result<RouteSpec> {
        RouteSpec::from_encoded(spec, RoutingMode::Path)
    }

    fn host(spec: &str) -> Result<RouteSpec> {
        RouteSpec::from_encoded(spec, RoutingMode::Host)
    }

    fn reason(result: Result<RouteSpec>) -> &'static str {
        match result {
            Err(Error::InvalidSpec { reason, .. }) => reason,
            other => panic!("expected an invalid spec, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_decoded_and_normalised() {
        let cases = [
            ("/has%20space/foo/", "/has space/foo"),
            ("/user/%E7%A7%80%E6%A8%B9", "/user/秀樹"),
            ("/user/alice/", "/user/alice"),
            ("/user/alice", "/user/alice"),
            ("user/alice", "/user/alice"),
            ("/has/@/", "/has/@"),
            ("/has/%40/", "/has/@"),
            ("/user/~x/", "/user/~x"),
            ("/", "/"),
            ("", "/"),
            ("/a%2Fb", "/a/b"),
        ];
        for (encoded, key) in cases {
            assert_eq!(path(encoded).unwrap().as_str(), key, "{encoded}");
        }
    }

    #[test]
    fn root_is_root_in_both_modes() {
        assert!(path("/").unwrap().is_root());
        let root = host("/").unwrap();
        assert!(root.is_root());
        assert_eq!(root.host(), None);
        assert_eq!(root.path(), "/");
    }

    #[test]
    fn host_routing_splits_host_and_path() {
        let spec = host("/alice.hub.example.org/user/alice/").unwrap();
        assert_eq!(spec.as_str(), "/alice.hub.example.org/user/alice");
        assert_eq!(spec.host(), Some("alice.hub.example.org"));
        assert_eq!(spec.path(), "/user/alice");

        let bare = host("hub.example.org/").unwrap();
        assert_eq!(bare.host(), Some("hub.example.org"));
        assert_eq!(bare.path(), "/");

        let path_mode = path("/alice.hub.example.org/user/alice").unwrap();
        assert_eq!(path_mode.host(), None);
        assert_eq!(path_mode.path(), "/alice.hub.example.org/user/alice");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for bad in ["/user/%", "/user/%2", "/user/%zz", "/user/%%41", "/%g0/x"] {
            assert!(reason(path(bad)).contains("malformed percent-escape"), "{bad}");
        }
        assert!(reason(path("/user/%FF%FE")).contains("UTF-8"));
    }

    #[test]
    fn what_cannot_be_a_route_is_refused_with_a_reason() {
        assert!(reason(path("/user/a%0Ab")).contains("control"));
        assert!(reason(path("/user/a%00")).contains("control"));
        assert!(reason(path("/user/a%7F")).contains("control"));
        assert!(reason(path("/user/../hub")).contains("'..'"));
        assert!(reason(path("/user/%2E%2E/hub")).contains("'..'"));
        assert!(reason(path("/user/./alice")).contains("'.'"));
        assert!(reason(path("/user//alice")).contains("empty path segment"));
        assert!(reason(path("/user/alice//")).contains("empty path segment"));
        assert!(reason(host("//user/alice")).contains("empty path segment"));
    }

    #[test]
    fn host_routing_refuses_what_is_not_a_host() {
        for bad in ["/host:8000/x", "/a b/x", "/*.hub.org/x", "/.hub.org/x", "/hub.org./x", "/ho%C3%BCst/x"] {
            assert!(reason(host(bad)).contains("host name"), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_spec() {
        let error = path("/user/..").unwrap_err();
        assert!(error.to_string().contains("\"/user/..\""), "{error}");
    }
}
