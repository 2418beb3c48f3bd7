//! A model of how an Istio ingress gateway routes a request through VirtualServices.
//!
//! Written from Istio's source (see "How Istio routes these objects" in `docs/istio.md`); each
//! step names the place in Istio it follows, and `testkit::oracle`, Istio's own pilot, judges it. It models one gateway with one HTTP server,
//! VirtualServices that are all visible to it (default `exportTo`), and the request fields our
//! objects match on: the path and the `Host` header.

use std::cmp::Ordering;
use std::sync::Arc;

use istio_routes::resources::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use regex::Regex;

/// Where the gateway sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The VirtualService whose route matched.
    pub virtual_service: String,
    /// The destination host.
    pub host: String,
    /// The destination port.
    pub port: Option<u32>,
    /// The path forwarded, after any rewrite.
    pub path: String,
    /// Response headers the route sets.
    pub response_headers: std::collections::BTreeMap<String, String>,
}

/// One Envoy route: a single match of an http route of a VirtualService.
#[derive(Debug, Clone)]
struct EnvoyRoute {
    virtual_service: String,
    matcher: HttpMatchRequest,
    route: HttpRoute,
    /// The matcher's regexes, compiled once.
    uri: Option<Matcher>,
    authority: Option<Matcher>,
}

/// A compiled [`StringMatch`].
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Matcher {
    fn new(matcher: &StringMatch) -> Matcher {
        match matcher {
            StringMatch::Exact(exact) => Matcher::Exact(exact.clone()),
            StringMatch::Prefix(prefix) => Matcher::Prefix(prefix.clone()),
            // RE2 as Envoy uses it: the whole value must match.
            StringMatch::Regex(pattern) => Matcher::Regex(
                Regex::new(&format!("^(?:{pattern})$"))
                    .unwrap_or_else(|e| panic!("the model cannot compile {pattern:?}: {e}")),
            ),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(exact) => value == exact,
            Matcher::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Matcher::Regex(regex) => regex.is_match(value),
        }
    }
}

impl EnvoyRoute {
    /// `pilot/pkg/networking/core/route/route.go`, `isCatchAllRoute`: a prefix of exactly `/`
    /// (or the regex `.*`), or no uri match at all, with no header match. The authority is a
    /// header (`:authority`).
    fn is_catch_all(&self) -> bool {
        let uri_catches_all = match &self.matcher.uri {
            None => true,
            Some(StringMatch::Prefix(prefix)) => prefix == "/",
            Some(StringMatch::Regex(regex)) => regex == ".*",
            Some(StringMatch::Exact(_)) => false,
        };
        uri_catches_all && self.matcher.authority.is_none()
    }
}

/// An Envoy virtual host: one per host name of the VirtualServices.
#[derive(Debug, Clone)]
struct VirtualHost {
    domain: String,
    routes: Vec<EnvoyRoute>,
}

/// The gateway's routing, built from VirtualServices as istiod would build it.
#[derive(Debug, Clone)]
pub struct Gateway {
    virtual_hosts: Vec<VirtualHost>,
}

/// `pilot/pkg/model/config.go`, `configCompareByCreationTime`: creation time (seconds), then
/// name, then namespace.
fn istio_order(a: &VirtualService, b: &VirtualService) -> Ordering {
    let created = |o: &VirtualService| o.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        .then_with(|| a.metadata.namespace.cmp(&b.metadata.namespace))
}

/// Whether a VirtualService in `namespace` binds to the gateway `gateway` (`namespace/name`):
/// its `gateways` name it as `namespace/name`, or as `name` in the VirtualService's namespace.
fn binds(object: &VirtualService, gateway: &str) -> bool {
    let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
    object
        .spec
        .gateways
        .iter()
        .any(|g| if g.contains('/') { g == gateway } else { format!("{namespace}/{g}") == gateway })
}

/// Whether a VirtualService host and a gateway server host intersect (`*` and `*.suffix`
/// wildcards).
fn hosts_intersect(a: &str, b: &str) -> bool {
    let covers = |wild: &str, host: &str| match wild.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => wild == host,
    };
    covers(a, b) || covers(b, a)
}

impl Gateway {
    /// The routing of gateway `gateway` (`namespace/name`) whose server serves `server_hosts`,
    /// from every VirtualService in the cluster.
    pub fn build(objects: &[Arc<VirtualService>], gateway: &str, server_hosts: &[&str]) -> Gateway {
        // `pilot/pkg/networking/core/gateway.go`, `buildGatewayHTTPRouteConfig`: the
        // VirtualServices bound to the gateway whose hosts meet the server's, in the order of
        // `pilot/pkg/model/push_context.go` (`VirtualServicesForGateway`).
        let mut bound: Vec<&VirtualService> = objects
            .iter()
            .map(Arc::as_ref)
            .filter(|o| binds(o, gateway))
            .filter(|o| o.spec.hosts.iter().any(|h| server_hosts.iter().any(|s| hosts_intersect(h, s))))
            .collect();
        bound.sort_by(|a, b| istio_order(a, b));

        // One virtual host per host name; each VirtualService's routes are appended, in order,
        // to the virtual host of each of its hosts (a `*` VirtualService's routes are not
        // copied into `alice.hub.org`'s).
        let mut virtual_hosts: Vec<VirtualHost> = Vec::new();
        for object in bound {
            let routes = envoy_routes(object);
            for host in &object.spec.hosts {
                match virtual_hosts.iter_mut().find(|v| &v.domain == host) {
                    Some(virtual_host) => virtual_host.routes.extend(routes.iter().cloned()),
                    None => virtual_hosts.push(VirtualHost { domain: host.clone(), routes: routes.clone() }),
                }
            }
        }
        // `route.go`, `SortVHostRoutes`: catch-all routes move to the end; every other route
        // keeps its relative order (a stable partition).
        for virtual_host in &mut virtual_hosts {
            let (catch_all, specific): (Vec<_>, Vec<_>) =
                virtual_host.routes.drain(..).partition(EnvoyRoute::is_catch_all);
            virtual_host.routes = specific.into_iter().chain(catch_all).collect();
        }
        Gateway { virtual_hosts }
    }

    /// Where a request for `path` (as sent, percent-encoded, with any query) with `Host: host`
    /// goes; `None` is a 404 from the gateway.
    pub fn route(&self, host: &str, path: &str) -> Option<Routed> {
        let virtual_host = self.virtual_host(host)?;
        let path = path.split('?').next().unwrap_or_default();
        // Envoy takes the first route that matches.
        let chosen = virtual_host.routes.iter().find(|r| matches(r, host, path))?;
        let destination = &chosen.route.route.first()?.destination;
        Some(Routed {
            virtual_service: chosen.virtual_service.clone(),
            host: destination.host.clone(),
            port: destination.port.as_ref().map(|p| p.number),
            path: rewrite(&chosen.route, &chosen.matcher, path),
            response_headers: chosen
                .route
                .headers
                .as_ref()
                .and_then(|h| h.response.as_ref())
                .map(|r| r.set.clone())
                .unwrap_or_default(),
        })
    }

    /// Envoy's virtual host selection: an exact domain, then the longest `*.suffix`, then `*`.
    /// The port of the `Host` header is not part of the name.
    fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name).to_ascii_lowercase();
        if let Some(exact) = self.virtual_hosts.iter().find(|v| v.domain == name) {
            return Some(exact);
        }
        let suffix = self
            .virtual_hosts
            .iter()
            .filter(|v| v.domain.len() > 1 && v.domain.starts_with('*') && name.ends_with(&v.domain[1..]))
            .max_by_key(|v| v.domain.len());
        suffix.or_else(|| self.virtual_hosts.iter().find(|v| v.domain == "*"))
    }
}

/// `route.go`, `BuildHTTPRoutesForVirtualService`: each match of each http route becomes an
/// Envoy route, in order; an http route without matches is one catch-all route; everything
/// after the first catch-all of a VirtualService is dropped.
fn envoy_routes(object: &VirtualService) -> Vec<EnvoyRoute> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let mut routes = Vec::new();
    for http in &object.spec.http {
        let matchers =
            if http.matches.is_empty() { vec![HttpMatchRequest::default()] } else { http.matches.clone() };
        for matcher in matchers {
            let route = EnvoyRoute {
                virtual_service: name.clone(),
                uri: matcher.uri.as_ref().map(Matcher::new),
                authority: matcher.authority.as_ref().map(Matcher::new),
                matcher,
                route: http.clone(),
            };
            let catch_all = route.is_catch_all();
            routes.push(route);
            if catch_all {
                return routes;
            }
        }
    }
    routes
}

fn matches(route: &EnvoyRoute, host: &str, path: &str) -> bool {
    route.uri.as_ref().is_none_or(|uri| uri.matches(path))
        && route.authority.as_ref().is_none_or(|authority| authority.matches(host))
}

/// `rewrite.uri` replaces the matched prefix, or the whole path after an exact or regex match;
/// `uriRegexRewrite` substitutes its regex.
fn rewrite(route: &HttpRoute, matcher: &HttpMatchRequest, path: &str) -> String {
    let Some(rewrite) = &route.rewrite else {
        return path.to_owned();
    };
    if let Some(uri) = &rewrite.uri {
        return match &matcher.uri {
            Some(StringMatch::Prefix(prefix)) => format!("{uri}{}", &path[prefix.len()..]),
            _ => uri.clone(),
        };
    }
    if let Some(regex) = &rewrite.uri_regex_rewrite {
        let pattern = Regex::new(&regex.pattern).expect("a valid rewrite regex");
        // RE2's \1 is the regex crate's ${1}.
        let replacement = regex.rewrite.replace("\\1", "${1}");
        return pattern.replace(path, replacement.as_str()).into_owned();
    }
    path.to_owned()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use istio_routes::resources::{Destination, HttpRouteDestination, IstioVersion, VirtualServiceSpec};

    fn object(name: &str, created: i64, prefix: &str, host: &str) -> Arc<VirtualService> {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("hub".into()),
            creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
            ..ObjectMeta::default()
        };
        let http = HttpRoute {
            matches: vec![HttpMatchRequest {
                uri: Some(StringMatch::Prefix(prefix.into())),
                authority: None,
            }],
            route: vec![HttpRouteDestination { destination: Destination { host: host.into(), port: None } }],
            ..HttpRoute::default()
        };
        let spec = VirtualServiceSpec {
            hosts: vec!["*".into()],
            gateways: vec!["gw".into()],
            http: vec![http],
            ..Default::default()
        };
        Arc::new(VirtualService::new(IstioVersion::V1, metadata, spec))
    }

    #[test]
    fn older_virtual_services_win_overlaps_as_the_reference_says() {
        // The Go proxy's failure: `/jhub/` created first shadows the later `/jhub/user/alice/`.
        let objects = [object("hub", 1, "/jhub/", "hub"), object("alice", 2, "/jhub/user/alice/", "alice")];
        let gateway = Gateway::build(&objects, "hub/gw", &["*"]);
        assert_eq!(gateway.route("x", "/jhub/user/alice/lab").unwrap().host, "hub");
    }

    #[test]
    fn catch_alls_go_last_whatever_their_age() {
        let objects = [object("root", 1, "/", "hub"), object("alice", 2, "/user/alice/", "alice")];
        let gateway = Gateway::build(&objects, "hub/gw", &["*"]);
        assert_eq!(gateway.route("x", "/user/alice/lab").unwrap().host, "alice");
        assert_eq!(gateway.route("x", "/other").unwrap().host, "hub");
    }

    #[test]
    fn ties_of_creation_time_go_by_name() {
        let objects = [object("b", 1, "/a/", "second"), object("a", 1, "/a/", "first")];
        let gateway = Gateway::build(&objects, "hub/gw", &["*"]);
        assert_eq!(gateway.route("x", "/a/b").unwrap().host, "first");
    }

    #[test]
    fn unbound_or_foreign_hosts_are_not_routed() {
        let objects = [object("a", 1, "/", "hub")];
        assert!(Gateway::build(&objects, "hub/other", &["*"]).route("x", "/").is_none());
        assert!(Gateway::build(&objects, "istio-system/gw", &["*"]).route("x", "/").is_none());
    }
}
