//! How a conforming Gateway API implementation routes a request through HTTPRoutes, written
//! from the specification: the Gateway API v1 reference, `apis/v1/httproute_types.go` in
//! `sigs.k8s.io/gateway-api` (the doc comments the CRDs carry as descriptions). Each rule
//! below cites the field whose documentation states it. It models what the Gateway API backend
//! writes (path matches, hostnames, URL rewrites), attached to one listener without a
//! hostname, and no more: method, header and query matches are never written, so they never
//! decide.
//!
//! Two things the specification leaves to the implementation, this model decides as Istio
//! does: paths are matched as sent, escapes and all; and a `RegularExpression` match (RE2
//! syntax, the whole path) ranks after every `Exact` and `PathPrefix` match, longer patterns
//! first.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use gateway_routes::resources::{EXACT, HttpRoute, PATH_PREFIX, PathMatch, REGULAR_EXPRESSION};
use regex::Regex;

/// What a request is routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The HTTPRoute's name.
    pub http_route: String,
    /// The index of its rule that took the request.
    pub rule: usize,
    /// The path forwarded to the backend, after the rule's rewrite.
    pub path: String,
}

/// The HTTPRoutes attached to one Gateway listener that has no hostname of its own.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    routes: Vec<Arc<HttpRoute>>,
    /// The `RegularExpression` matches' patterns, compiled once, anchored at both ends.
    regexes: HashMap<String, Regex>,
}

/// The precedence of one matching rule; smaller sorts first (wins).
type Precedence = (Reverse<usize>, Reverse<usize>, u8, Reverse<usize>, Option<String>, String, usize);

impl GatewayApi {
    /// A gateway routing through `routes`. Panics on a regular expression RE2 would refuse.
    pub fn new(routes: Vec<Arc<HttpRoute>>) -> Self {
        let patterns = routes.iter().flat_map(|route| &route.spec.rules).flat_map(|rule| &rule.matches);
        let regexes = patterns
            .filter_map(|m| m.path.as_ref().filter(|path| path.kind == REGULAR_EXPRESSION))
            .map(|path| {
                let regex = Regex::new(&format!("^(?:{})$", path.value))
                    .unwrap_or_else(|e| panic!("{:?} is no regular expression: {e}", path.value));
                (path.value.clone(), regex)
            })
            .collect();
        GatewayApi { routes, regexes }
    }

    /// Where a request for `path` (as sent, percent-encoded, query allowed) with `Host: host`
    /// goes; `None` is the 404 that `HTTPRouteSpec.rules` requires "when no rules matching a
    /// request have been successfully attached".
    pub fn route(&self, host: &str, path: &str) -> Option<Routed> {
        let path = path.split('?').next().unwrap_or_default();
        let mut best: Option<(Precedence, Routed)> = None;
        for object in &self.routes {
            let Some((non_wildcard, any)) = hostname_match(object, host) else { continue };
            let meta = &object.metadata;
            let created = meta.creation_timestamp.as_ref().map(|t| t.0.to_string());
            let name = format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            );
            for (index, rule) in object.spec.rules.iter().enumerate() {
                // `HTTPRouteRule.matches`: no matches is a prefix match on "/".
                let root = [gateway_routes::resources::HttpRouteMatch { path: Some(PathMatch::prefix("/")) }];
                let matches = if rule.matches.is_empty() { &root[..] } else { &rule.matches[..] };
                for candidate in matches.iter().filter_map(|m| m.path.as_ref()) {
                    if !self.path_matches(candidate, path) {
                        continue;
                    }
                    // `HTTPRouteSpec.hostnames`: rules from the route with the most characters in a
                    // matching non-wildcard hostname, then in a matching hostname, first. Then
                    // `HTTPRouteSpec.rules`: an "Exact" path match, then the "Prefix" match with
                    // the most characters; then the oldest Route by creation timestamp, then
                    // "{namespace}/{name}" in alphabetical order; within a route, the first
                    // matching rule in list order. Regular expressions after both (as Istio).
                    let kind = match candidate.kind.as_str() {
                        EXACT => 0,
                        PATH_PREFIX => 1,
                        _ => 2,
                    };
                    let precedence = (
                        Reverse(non_wildcard),
                        Reverse(any),
                        kind,
                        Reverse(candidate.value.len()),
                        created.clone(),
                        name.clone(),
                        index,
                    );
                    if best.as_ref().is_none_or(|(held, _)| precedence < *held) {
                        let forwarded = rewritten(rule, candidate, path);
                        let routed = Routed {
                            http_route: meta.name.clone().unwrap_or_default(),
                            rule: index,
                            path: forwarded,
                        };
                        best = Some((precedence, routed));
                    }
                }
            }
        }
        best.map(|(_, routed)| routed)
    }
}

/// Whether a route applies to `host`, and how specifically: (characters of a matching
/// non-wildcard hostname, characters of a matching hostname). `HTTPRouteSpec.hostnames`: a route
/// without hostnames takes every host; the port is ignored; `*.example.com` matches
/// `a.example.com` and `a.b.example.com`, not `example.com`.
fn hostname_match(route: &HttpRoute, host: &str) -> Option<(usize, usize)> {
    let host = host.rsplit_once(':').map_or(host, |(name, _)| name).to_ascii_lowercase();
    if route.spec.hostnames.is_empty() {
        return Some((0, 0));
    }
    route
        .spec
        .hostnames
        .iter()
        .filter_map(|name| match name.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")).then_some((0, name.len())),
            None => (*name == host).then_some((name.len(), name.len())),
        })
        .max()
}

impl GatewayApi {
    /// `HTTPPathMatch.type`: "Exact" is the whole path; "PathPrefix" matches element by
    /// element (split by `/`, a trailing `/` in the value ignored, case-sensitive): `/abc`
    /// matches `/abc`, `/abc/` and `/abc/def`, not `/abcd`; "RegularExpression" the whole path.
    fn path_matches(&self, candidate: &PathMatch, path: &str) -> bool {
        match candidate.kind.as_str() {
            EXACT => candidate.value == path,
            PATH_PREFIX => {
                let prefix = candidate.value.trim_end_matches('/');
                prefix.is_empty()
                    || path == prefix
                    || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
            }
            REGULAR_EXPRESSION => self.regexes[&candidate.value].is_match(path),
            other => panic!("the model does not route {other} path matches"),
        }
    }
}

/// `HTTPPathModifier.replacePrefixMatch`: the matched prefix (trailing `/` ignored) is replaced,
/// as in the field's table: `/foo/bar` with prefix `/foo` and replacement `/xyz` is `/xyz/bar`,
/// `/foo` with replacement `/` is `/`, and prefix `/` with replacement `/foo` makes `/bar`
/// `/foo/bar`.
fn rewritten(rule: &gateway_routes::resources::HttpRouteRule, candidate: &PathMatch, path: &str) -> String {
    let replacement = rule.filters.iter().find_map(|filter| {
        let modifier = filter.url_rewrite.as_ref()?.path.as_ref()?;
        (modifier.kind == "ReplacePrefixMatch")
            .then(|| modifier.replace_prefix_match.clone().unwrap_or_default())
    });
    let Some(replacement) = replacement else {
        return path.to_owned();
    };
    let rest = &path[candidate.value.trim_end_matches('/').len()..];
    let forwarded = format!("{}{rest}", replacement.trim_end_matches('/'));
    if forwarded.is_empty() { "/".to_owned() } else { forwarded }
}

#[cfg(test)]
mod tests {
    use gateway_routes::resources::{HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn object(name: &str, hostnames: &[&str], rules: Vec<HttpRouteRule>) -> Arc<HttpRoute> {
        let meta = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("hub".to_owned()),
            ..Default::default()
        };
        let spec = HttpRouteSpec {
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            rules,
            ..Default::default()
        };
        Arc::new(HttpRoute::new(meta, spec))
    }

    fn rule(kind: &str, value: &str, rewrite: Option<&str>) -> HttpRouteRule {
        HttpRouteRule {
            matches: vec![HttpRouteMatch {
                path: Some(PathMatch { kind: kind.to_owned(), value: value.to_owned() }),
            }],
            filters: rewrite
                .map(|r| HttpRouteFilter::replace_prefix_match(r.to_owned()))
                .into_iter()
                .collect(),
            backend_refs: Vec::new(),
        }
    }

    fn winner(gateway: &GatewayApi, host: &str, path: &str) -> Option<(String, String)> {
        gateway.route(host, path).map(|r| (r.http_route, r.path))
    }

    #[test]
    fn the_longest_prefix_in_whole_segments_wins_whatever_the_order() {
        let gateway = GatewayApi::new(vec![
            object("a", &[], vec![rule(PATH_PREFIX, "/", None)]),
            object("b", &[], vec![rule(PATH_PREFIX, "/user/alice/", None)]),
            object("c", &[], vec![rule(PATH_PREFIX, "/user", None)]),
            object("d", &[], vec![rule(EXACT, "/user/alice", None)]),
        ]);
        let name = |path| winner(&gateway, "h", path).map(|(name, _)| name);
        assert_eq!(name("/user/alice/lab").as_deref(), Some("b"));
        assert_eq!(name("/user/alice").as_deref(), Some("d"), "an exact match before any prefix");
        assert_eq!(name("/user/alice2").as_deref(), Some("c"), "whole segments only");
        assert_eq!(name("/users").as_deref(), Some("a"));
        assert_eq!(name("/User/alice/x").as_deref(), Some("a"), "case-sensitive");
        assert_eq!(winner(&GatewayApi::new(Vec::new()), "h", "/"), None);
    }

    #[test]
    fn ties_go_to_the_oldest_route_then_by_name_then_to_the_first_rule() {
        let mut older = (*object("z", &[], vec![rule(PATH_PREFIX, "/a", None)])).clone();
        older.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
        let mut newer = (*object("y", &[], vec![rule(PATH_PREFIX, "/a", None)])).clone();
        newer.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:01Z".parse().unwrap(),
        ));
        let gateway = GatewayApi::new(vec![Arc::new(newer), Arc::new(older)]);
        assert_eq!(winner(&gateway, "h", "/a").unwrap().0, "z");
        let gateway = GatewayApi::new(vec![
            object("n", &[], vec![rule(PATH_PREFIX, "/a", None)]),
            object("m", &[], vec![rule(PATH_PREFIX, "/b", None), rule(PATH_PREFIX, "/a", Some("/first"))]),
        ]);
        assert_eq!(
            gateway.route("h", "/a").unwrap(),
            Routed { http_route: "m".into(), rule: 1, path: "/first".into() }
        );
    }

    #[test]
    fn a_matching_hostname_comes_before_the_path() {
        let gateway = GatewayApi::new(vec![
            object("any", &[], vec![rule(PATH_PREFIX, "/user/alice/deep", None)]),
            object("wild", &["*.hub.org"], vec![rule(PATH_PREFIX, "/user", None)]),
            object("exact", &["a.hub.org"], vec![rule(PATH_PREFIX, "/", None)]),
        ]);
        let name = |host, path| winner(&gateway, host, path).map(|(name, _)| name);
        assert_eq!(name("a.hub.org:443", "/user/alice/deep").as_deref(), Some("exact"));
        assert_eq!(name("b.hub.org", "/user/alice/deep").as_deref(), Some("wild"));
        assert_eq!(name("b.hub.org", "/other").as_deref(), None);
        assert_eq!(name("hub.org", "/user/alice/deep").as_deref(), Some("any"), "a wildcard needs a label");
    }

    #[test]
    fn regular_expressions_match_the_path_as_sent_after_every_prefix() {
        let gateway = GatewayApi::new(vec![
            object("root", &[], vec![rule(PATH_PREFIX, "/", None)]),
            object("u", &[], vec![rule(REGULAR_EXPRESSION, r"^/user/\x{FC}(/.*)?$", None)]),
            object("any", &[], vec![rule(REGULAR_EXPRESSION, "/a.*", None)]),
        ]);
        let name = |path| winner(&gateway, "h", path).map(|(name, _)| name);
        assert_eq!(name("/user/%C3%BC/lab").as_deref(), Some("root"), "escapes are not decoded");
        assert_eq!(name("/user/\u{fc}/lab").as_deref(), Some("root"), "a prefix before an expression");
        let gateway = GatewayApi::new(vec![
            object("u", &[], vec![rule(REGULAR_EXPRESSION, r"^/user/\x{FC}(/.*)?$", None)]),
            object("any", &[], vec![rule(REGULAR_EXPRESSION, "/.*", None)]),
        ]);
        let name = |path| winner(&gateway, "h", path).map(|(name, _)| name);
        assert_eq!(name("/user/\u{fc}/lab").as_deref(), Some("u"), "the longer expression first");
        assert_eq!(name("/user/\u{fc}x").as_deref(), Some("any"), "the whole path");
    }

    #[test]
    fn prefix_rewrites_follow_the_specifications_table() {
        for (path, prefix, replacement, forwarded) in [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/bar", "/", "/foo", "/foo/bar"),
        ] {
            let gateway =
                GatewayApi::new(vec![object("r", &[], vec![rule(PATH_PREFIX, prefix, Some(replacement))])]);
            assert_eq!(gateway.route("h", path).unwrap().path, forwarded, "{path} {prefix} {replacement}");
        }
    }
}
