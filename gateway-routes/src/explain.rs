//! Where a conforming Gateway API implementation sends a request, and why: how it routes
//! through HTTPRoutes, written from the specification: the Gateway API v1 reference, `apis/v1/httproute_types.go` in
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
//!
//! [`explain`] answers `jupyterhub-istio-proxy explain URL` and `GET /api/explain` with it, as
//! `istio_routes::explain` does for VirtualServices: every rule that matches the request in
//! precedence order, the one that wins, and whether configurable-http-proxy would pick the same
//! route. This is the only copy of these rules: `testkit::gateway_model`, which the tests route
//! through, is [`GatewayApi`]; the tests judge it against Istio's own pilot and Traefik.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

pub use kube_routes::explain::{Error, Request, Result};
use kube_routes::explain::{chp_choice, without_query};
use proxy_api::RouteSpec;
use regex::Regex;
use serde::Serialize;

use crate::resources::{
    EXACT, HttpRoute, HttpRouteMatch, HttpRouteRule, PATH_PREFIX, PathMatch, REGULAR_EXPRESSION,
};
use crate::translate::GatewayTranslation;

/// What a request is routed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// The `RegularExpression` matches' patterns, compiled once, anchored at both ends; `None`
    /// for a pattern the `regex` crate refuses (RE2 may take it), which then matches nothing.
    regexes: HashMap<String, Option<Regex>>,
}

/// The precedence of one matching rule; smaller sorts first (wins).
type Precedence = (Reverse<usize>, Reverse<usize>, u8, Reverse<usize>, Option<String>, String, usize);

impl GatewayApi {
    /// A gateway routing through `routes`.
    pub fn new(routes: Vec<Arc<HttpRoute>>) -> Self {
        let patterns = routes.iter().flat_map(|route| &route.spec.rules).flat_map(|rule| &rule.matches);
        let regexes = patterns
            .filter_map(|m| m.path.as_ref().filter(|path| path.kind == REGULAR_EXPRESSION))
            .map(|path| (path.value.clone(), Regex::new(&format!("^(?:{})$", path.value)).ok()))
            .collect();
        GatewayApi { routes, regexes }
    }

    /// Where a request for `path` (as sent, percent-encoded, query allowed) with `Host: host`
    /// goes; `None` is the 404 that `HTTPRouteSpec.rules` requires "when no rules matching a
    /// request have been successfully attached".
    pub fn route(&self, host: &str, path: &str) -> Option<Routed> {
        self.candidates(host, path).into_iter().next().map(|(_, routed, _)| routed)
    }

    /// Every rule match that holds for the request, in precedence order (the first wins), each
    /// with the object it belongs to.
    fn candidates(&self, host: &str, path: &str) -> Vec<(PathMatch, Routed, Arc<HttpRoute>)> {
        let path = path.split('?').next().unwrap_or_default();
        let mut found: Vec<(Precedence, PathMatch, Routed, Arc<HttpRoute>)> = Vec::new();
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
                let root = [HttpRouteMatch { path: Some(PathMatch::prefix("/")) }];
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
                    let routed = Routed {
                        http_route: meta.name.clone().unwrap_or_default(),
                        rule: index,
                        path: rewritten(rule, candidate, path),
                    };
                    found.push((precedence, candidate.clone(), routed, Arc::clone(object)));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.into_iter().map(|(_, matcher, routed, object)| (matcher, routed, object)).collect()
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
            REGULAR_EXPRESSION => {
                self.regexes.get(&candidate.value).and_then(Option::as_ref).is_some_and(|r| r.is_match(path))
            }
            // A kind the API may gain: no implementation we model routes it.
            _ => false,
        }
    }
}

/// `HTTPPathModifier.replacePrefixMatch`: the matched prefix (trailing `/` ignored) is replaced,
/// as in the field's table: `/foo/bar` with prefix `/foo` and replacement `/xyz` is `/xyz/bar`,
/// `/foo` with replacement `/` is `/`, and prefix `/` with replacement `/foo` makes `/bar`
/// `/foo/bar`.
fn rewritten(rule: &HttpRouteRule, candidate: &PathMatch, path: &str) -> String {
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

/// One rule match that holds for the request; the gateway takes the first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The HTTPRoute it comes from.
    pub http_route: String,
    /// Its namespace.
    pub namespace: String,
    /// The index of its rule.
    pub rule: usize,
    /// The path match that holds.
    #[serde(rename = "match")]
    pub matcher: PathMatch,
    /// The route spec of the object, when it is one of this proxy's routes.
    pub route: Option<String>,
    /// The backend it sends the request to: `service[.namespace]:port`.
    pub backend: Option<String>,
    /// The path forwarded, after the rule's rewrite.
    pub path: String,
}

/// Why a request goes where it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The request.
    pub request: Request,
    /// How many HTTPRoutes the gateway holds, matching or not.
    pub http_routes: usize,
    /// Every rule match that holds, in the order of the specification's precedence: the first
    /// wins, the others lose to it.
    pub candidates: Vec<Candidate>,
    /// The winner, `candidates[0]`; `None` when nothing matches (404).
    pub winner: Option<Candidate>,
    /// The route configurable-http-proxy would pick.
    pub chp_route: Option<String>,
    /// Whether the gateway sends the request to the route configurable-http-proxy would pick.
    pub agrees_with_chp: bool,
    /// What is wrong, when the gateway disagrees with configurable-http-proxy.
    pub warning: Option<String>,
}

/// Explains where a conforming gateway sends a request for `url` through `objects` (the
/// namespace's HTTPRoutes, with their specs), all attached to a listener that takes every host.
pub fn explain(
    objects: &[Arc<HttpRoute>],
    translation: &GatewayTranslation,
    url: &str,
) -> Result<Explanation> {
    let request = Request::parse(url)?;
    let gateway = GatewayApi::new(objects.to_vec());
    let route_of = |object: &HttpRoute| translation.read(object)?.ok().map(|route| route.spec().clone());
    let specs: BTreeSet<RouteSpec> = objects.iter().filter_map(|object| route_of(object)).collect();
    let candidates: Vec<Candidate> = gateway
        .candidates(&request.authority, without_query(&request.path))
        .into_iter()
        .map(|(matcher, routed, object)| {
            let backend = object.spec.rules.get(routed.rule).and_then(|rule| rule.backend_refs.first());
            let backend = backend.map(|backend| {
                let namespace = backend.namespace.as_ref().map(|ns| format!(".{ns}")).unwrap_or_default();
                let port = backend.port.map(|port| format!(":{port}")).unwrap_or_default();
                format!("{}{namespace}{port}", backend.name)
            });
            Candidate {
                http_route: routed.http_route,
                namespace: object.metadata.namespace.clone().unwrap_or_default(),
                rule: routed.rule,
                matcher,
                route: route_of(&object).map(|spec| spec.to_string()),
                backend,
                path: routed.path,
            }
        })
        .collect();
    let winner = candidates.first().cloned();
    let chp_route = chp_choice(&specs, translation.routing_mode, &request).map(|spec| spec.to_string());
    let agrees_with_chp = winner.as_ref().and_then(|w| w.route.clone()) == chp_route;
    let warning = (!agrees_with_chp).then(|| {
        let chp = chp_route.as_deref().map_or_else(|| "no route (404)".to_owned(), |spec| format!("route {spec}"));
        match &winner {
            None => format!("the gateway answers 404, but configurable-http-proxy would send this request to {chp}"),
            Some(Candidate { http_route, route: Some(spec), .. }) => format!(
                "the gateway sends this request to route {spec} ({http_route}), but configurable-http-proxy would send it to {chp}"
            ),
            Some(Candidate { http_route, route: None, .. }) => format!(
                "the gateway sends this request to {http_route}, which is not one of this proxy's routes, but configurable-http-proxy would send it to {chp}"
            ),
        }
    });
    Ok(Explanation {
        request,
        http_routes: objects.len(),
        candidates,
        winner,
        chp_route,
        agrees_with_chp,
        warning,
    })
}

#[cfg(test)]
mod tests {
    use crate::resources::{HttpRouteFilter, HttpRouteSpec};
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

    #[test]
    fn an_explanation_lists_every_match_in_precedence_order_and_compares_with_chp() {
        let translation = GatewayTranslation {
            namespace: "hub".to_owned(),
            parent_refs: vec!["istio-system/gw".parse().unwrap()],
            ..GatewayTranslation::default()
        };
        let render = |spec: &str, target: &str| {
            let spec = RouteSpec::new(spec, proxy_api::RoutingMode::Path).unwrap();
            let route =
                proxy_api::Route::new(spec, proxy_api::Target::parse(target).unwrap(), Default::default());
            Arc::new(translation.render(&route.unwrap()).unwrap().http_route)
        };
        let objects = [render("/", "http://hub:8081"), render("/user/alice", "http://10.0.0.7:8888")];
        let explained = explain(&objects, &translation, "http://hub.org/user/alice/lab?x=1").unwrap();
        let routes: Vec<Option<&str>> = explained.candidates.iter().map(|c| c.route.as_deref()).collect();
        assert_eq!(routes, [Some("/user/alice"), Some("/")], "alice's prefix first, the hub's after");
        let winner = explained.winner.unwrap();
        assert_eq!(winner.backend.as_deref(), Some(format!("{}:8888", winner.http_route).as_str()));
        assert_eq!(winner.path, "/user/alice/lab");
        assert_eq!((explained.chp_route.as_deref(), explained.agrees_with_chp), (Some("/user/alice"), true));
        assert!(explained.warning.is_none());

        // The hub's object alone: configurable-http-proxy would pick alice's route, were it there.
        let lone = explain(&objects[..1], &translation, "http://hub.org/user/alice").unwrap();
        assert_eq!(lone.chp_route.as_deref(), Some("/"));
        assert!(lone.agrees_with_chp);
        let none = explain(&[], &translation, "http://hub.org/").unwrap();
        assert!(none.winner.is_none() && none.agrees_with_chp, "404 from both");
        assert!(matches!(explain(&objects, &translation, "/user/alice"), Err(Error::InvalidUrl { .. })));
    }
}
