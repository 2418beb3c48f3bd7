//! Where Istio's gateway sends a request, and why: the routing rules the design relies on,
//! applied to the VirtualServices a gateway sees.
//!
//! [`Gateway`] builds a gateway's routing as istiod does (`docs/istio.md`, "How Istio routes these
//! objects"; each step names the place in Istio's source it follows) and routes a request as
//! Envoy does. [`explain`] answers `jupyterhub-istio-proxy explain URL` and `GET /api/explain`
//! with it: every route that matches the request in the order the gateway tries them, the one
//! that wins, the route it belongs to and its destination, and whether configurable-http-proxy
//! would have picked the same route.
//!
//! This is the only copy of these rules: `testkit::istio_model`, which the tests route through,
//! is this module. Its independent judge is Istio's own pilot (`testkit::oracle`), which the
//! routing property tests compare it with on every probe; a second hand-written model would only
//! be a second thing to keep in step with Istio.
//!
//! It models one gateway with one HTTP server, VirtualServices that are all visible to it
//! (default `exportTo`), and the request fields our objects match on: the path and the `Host`.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use proxy_api::RouteSpec;
use regex::Regex;
use serde::Serialize;

pub use kube_routes::explain::{Error, Request, Result};
use kube_routes::explain::{chp_choice, without_query};

use crate::Translation;
use crate::resources::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};

/// Where the gateway sent a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    namespace: String,
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
    /// A regex RE2 may take but the `regex` crate does not (istiod would have refused most
    /// such objects): it never matches here, and the explanation says so.
    Unsupported,
}

impl Matcher {
    fn new(matcher: &StringMatch) -> Matcher {
        match matcher {
            StringMatch::Exact(exact) => Matcher::Exact(exact.clone()),
            StringMatch::Prefix(prefix) => Matcher::Prefix(prefix.clone()),
            // RE2 as Envoy uses it: the whole value must match.
            StringMatch::Regex(pattern) => {
                Regex::new(&format!("^(?:{pattern})$")).map_or(Matcher::Unsupported, Matcher::Regex)
            }
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(exact) => value == exact,
            Matcher::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Matcher::Regex(regex) => regex.is_match(value),
            Matcher::Unsupported => false,
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

    fn matches(&self, host: &str, path: &str) -> bool {
        self.uri.as_ref().is_none_or(|uri| uri.matches(path))
            && self.authority.as_ref().is_none_or(|authority| authority.matches(host))
    }

    fn routed(&self, path: &str) -> Option<Routed> {
        let destination = &self.route.route.first()?.destination;
        Some(Routed {
            virtual_service: self.virtual_service.clone(),
            host: destination.host.clone(),
            port: destination.port.as_ref().map(|p| p.number),
            path: rewrite(&self.route, &self.matcher, path),
            response_headers: self
                .route
                .headers
                .as_ref()
                .and_then(|h| h.response.as_ref())
                .map(|r| r.set.clone())
                .unwrap_or_default(),
        })
    }
}

/// An Envoy virtual host: one per host name of the VirtualServices.
#[derive(Debug, Clone)]
struct VirtualHost {
    domain: String,
    routes: Vec<EnvoyRoute>,
}

/// A gateway's routing, built from VirtualServices as istiod would build it.
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

/// Whether a VirtualService binds to the gateway `gateway` (`namespace/name`, or `mesh`): its
/// `gateways` name it as `namespace/name`, or as `name` in the VirtualService's namespace; none
/// means `mesh`, the sidecars.
fn binds(object: &VirtualService, gateway: &str) -> bool {
    let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
    if object.spec.gateways.is_empty() {
        return gateway == "mesh";
    }
    object.spec.gateways.iter().any(|g| {
        if g.contains('/') || g == "mesh" { g == gateway } else { format!("{namespace}/{g}") == gateway }
    })
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
        let path = without_query(path);
        let virtual_host = self.virtual_host(host)?;
        // Envoy takes the first route that matches.
        virtual_host.routes.iter().find(|r| r.matches(host, path))?.routed(path)
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
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let mut routes = Vec::new();
    for http in &object.spec.http {
        let matchers =
            if http.matches.is_empty() { vec![HttpMatchRequest::default()] } else { http.matches.clone() };
        for matcher in matchers {
            let route = EnvoyRoute {
                virtual_service: name.clone(),
                namespace: namespace.clone(),
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
        let Ok(pattern) = Regex::new(&regex.pattern) else {
            return path.to_owned();
        };
        // RE2's \1 is the regex crate's ${1}.
        let replacement = regex.rewrite.replace("\\1", "${1}");
        return pattern.replace(path, replacement.as_str()).into_owned();
    }
    path.to_owned()
}

/// One Envoy route that matches the request, in the order the gateway tries them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The VirtualService it comes from.
    pub virtual_service: String,
    /// Its namespace.
    pub namespace: String,
    /// Its place in the gateway's virtual host: the gateway tries lower places first.
    pub position: usize,
    /// The match that holds.
    #[serde(rename = "match")]
    pub matcher: HttpMatchRequest,
    /// The route spec of the object, when it is one of this proxy's routes (or the Go proxy's).
    pub route: Option<String>,
    /// Where it would send the request.
    pub destination: Option<Routed>,
}

/// Why a request goes where it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The request.
    pub request: Request,
    /// The gateway's virtual host chosen by the request's host, e.g. `*`; `None` when no
    /// VirtualService serves the host (the gateway answers 404).
    pub virtual_host: Option<String>,
    /// How many routes the virtual host holds, matching or not.
    pub routes_in_virtual_host: usize,
    /// Every route that matches the request, in the order the gateway tries them: the first
    /// wins, the others are shadowed by it.
    pub candidates: Vec<Candidate>,
    /// The winner, `candidates[0]`; `None` when nothing matches (404).
    pub winner: Option<Candidate>,
    /// The route configurable-http-proxy would pick: the longest route spec that is a prefix
    /// of the request in whole segments (under host routing, the host first).
    pub chp_route: Option<String>,
    /// Whether the gateway sends the request to the route CHP would pick.
    pub agrees_with_chp: bool,
    /// What is wrong, when the gateway disagrees with CHP; for people to read.
    pub warning: Option<String>,
}

/// Explains where the gateway of `translation` sends a request for `url`, through `objects`
/// (the namespace's VirtualServices, with their specs). The gateway's server is taken to serve
/// the translation's hosts.
pub fn explain(objects: &[Arc<VirtualService>], translation: &Translation, url: &str) -> Result<Explanation> {
    Explainer::new(objects, translation).explain(url)
}

/// The gateway's routing and the routes of a set of objects, built once to explain many URLs.
#[derive(Debug)]
pub struct Explainer<'a> {
    objects: &'a [Arc<VirtualService>],
    translation: &'a Translation,
    gateway: Gateway,
    /// The routes' specs, for CHP's choice.
    specs: BTreeSet<RouteSpec>,
}

impl<'a> Explainer<'a> {
    /// The routing of the gateway of `translation` through `objects`.
    pub fn new(objects: &'a [Arc<VirtualService>], translation: &'a Translation) -> Self {
        let hosts: Vec<&str> = translation.hosts.iter().map(String::as_str).collect();
        let gateway = Gateway::build(objects, &gateway_name(translation), &hosts);
        let specs = objects
            .iter()
            .filter_map(|o| translation.read(o)?.ok())
            .map(|stored| stored.route.spec().clone())
            .collect();
        Explainer { objects, translation, gateway, specs }
    }

    /// Where a request for `url` goes, and why.
    pub fn explain(&self, url: &str) -> Result<Explanation> {
        let request = Request::parse(url)?;
        let path = without_query(&request.path);
        let virtual_host = self.gateway.virtual_host(&request.authority);
        let candidates: Vec<Candidate> = virtual_host
            .map(|v| &v.routes[..])
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(&request.authority, path))
            .map(|(position, r)| Candidate {
                virtual_service: r.virtual_service.clone(),
                namespace: r.namespace.clone(),
                position,
                matcher: r.matcher.clone(),
                route: self.route_of(&r.virtual_service),
                destination: r.routed(path),
            })
            .collect();
        let winner = candidates.first().cloned();
        let chp_route =
            chp_choice(&self.specs, self.translation.routing_mode, &request).map(|s| s.to_string());
        let agrees_with_chp = winner.as_ref().and_then(|w| w.route.clone()) == chp_route;
        let warning = (!agrees_with_chp).then(|| disagreement(winner.as_ref(), chp_route.as_deref()));
        Ok(Explanation {
            request,
            virtual_host: virtual_host.map(|v| v.domain.clone()),
            routes_in_virtual_host: virtual_host.map_or(0, |v| v.routes.len()),
            candidates,
            winner,
            chp_route,
            agrees_with_chp,
            warning,
        })
    }

    /// The route spec of the object `name`, when it holds one.
    fn route_of(&self, name: &str) -> Option<String> {
        let object = self.objects.iter().find(|o| o.metadata.name.as_deref() == Some(name))?;
        self.translation.read(object)?.ok().map(|stored| stored.route.spec().to_string())
    }
}

/// The gateway as `namespace/name`: a bare name is in the objects' namespace, as Istio reads it.
fn gateway_name(translation: &Translation) -> String {
    match translation.gateways.first() {
        Some(gateway) if gateway.contains('/') => gateway.clone(),
        Some(gateway) => format!("{}/{gateway}", translation.namespace),
        // No gateway: the objects bind to the mesh's sidecars, which Istio calls `mesh`.
        None => "mesh".to_owned(),
    }
}

fn disagreement(winner: Option<&Candidate>, chp: Option<&str>) -> String {
    let chp = chp.map_or_else(|| "no route (404)".to_owned(), |spec| format!("route {spec}"));
    match winner {
        None => {
            format!("the gateway answers 404, but configurable-http-proxy would send this request to {chp}")
        }
        Some(Candidate { virtual_service, route: Some(spec), .. }) => format!(
            "the gateway sends this request to route {spec} ({virtual_service}), but configurable-http-proxy would send it to {chp}"
        ),
        Some(Candidate { virtual_service, route: None, .. }) => format!(
            "the gateway sends this request to {virtual_service}, which is not one of this proxy's routes, but configurable-http-proxy would send it to {chp}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use proxy_api::RoutingMode;

    use super::*;
    use crate::resources::{Destination, HttpRouteDestination, IstioVersion, VirtualServiceSpec};

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
            ..VirtualServiceSpec::default()
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

    fn translation(mode: RoutingMode) -> Translation {
        Translation {
            namespace: "hub".into(),
            gateways: vec!["istio-system/gw".into()],
            routing_mode: mode,
            ..Translation::default()
        }
    }

    /// Our objects for these routes, each created at its second.
    fn ours(translation: &Translation, routes: &[(&str, &str, i64)]) -> Vec<Arc<VirtualService>> {
        routes
            .iter()
            .map(|(spec, target, created)| {
                let spec = RouteSpec::new(spec, translation.routing_mode).unwrap();
                let route = proxy_api::Route::new(
                    spec,
                    proxy_api::Target::parse(target).unwrap(),
                    Default::default(),
                )
                .unwrap();
                let mut object = translation.render(&route, 0).unwrap().virtual_service;
                object.metadata.creation_timestamp = Some(Time(Timestamp::from_second(*created).unwrap()));
                Arc::new(object)
            })
            .collect()
    }

    #[test]
    fn explains_the_winner_its_route_and_the_shadowed() {
        let translation = translation(RoutingMode::Path);
        let objects =
            ours(&translation, &[("/", "http://hub:8081", 1), ("/user/alice", "http://10.0.0.7:8888", 2)]);
        let explained = explain(&objects, &translation, "http://hub.org/user/alice/lab?x=1").unwrap();
        assert_eq!(explained.request.authority, "hub.org");
        assert_eq!(explained.request.path, "/user/alice/lab");
        assert_eq!(explained.virtual_host.as_deref(), Some("*"));
        let routes: Vec<_> = explained.candidates.iter().map(|c| c.route.clone().unwrap()).collect();
        assert_eq!(routes, ["/user/alice", "/"], "alice's route first, the catch-all shadowed");
        let winner = explained.winner.unwrap();
        assert_eq!(winner.matcher.uri, Some(StringMatch::Prefix("/user/alice/".into())));
        assert_eq!(winner.destination.unwrap().port, Some(8888));
        assert_eq!(explained.chp_route.as_deref(), Some("/user/alice"));
        assert!(explained.agrees_with_chp);
        assert_eq!(explained.warning, None);
        assert_eq!(
            explain(&objects, &translation, "http://hub.org/user/alice2").unwrap().chp_route.as_deref(),
            Some("/")
        );
    }

    #[test]
    fn says_loudly_when_the_gateway_is_not_chp() {
        // The Go proxy's failure: `/jhub/` (a raw prefix) created first shadows `/jhub/user/alice/`.
        let translation = translation(RoutingMode::Path);
        let mut objects = ours(&translation, &[("/jhub/user/alice", "http://alice:8888", 2)]);
        let mut hub = (*ours(&translation, &[("/jhub", "http://hub:8081", 1)])[0]).clone();
        hub.spec.http[0].matches =
            vec![HttpMatchRequest { uri: Some(StringMatch::Prefix("/jhub/".into())), authority: None }];
        objects.push(Arc::new(hub));
        let explained = explain(&objects, &translation, "http://hub.org/jhub/user/alice/lab").unwrap();
        assert_eq!(explained.winner.unwrap().route.as_deref(), Some("/jhub"));
        assert_eq!(explained.candidates.len(), 2);
        assert_eq!(explained.chp_route.as_deref(), Some("/jhub/user/alice"));
        assert!(!explained.agrees_with_chp);
        let warning = explained.warning.unwrap();
        assert!(warning.contains("/jhub/user/alice") && warning.contains("route /jhub "), "{warning}");

        let nothing = explain(&[], &translation, "http://hub.org/").unwrap();
        assert_eq!((nothing.winner, nothing.virtual_host, nothing.agrees_with_chp), (None, None, true));
    }

    #[test]
    fn host_routing_matches_the_authority_and_chp_takes_the_host_first() {
        let translation = translation(RoutingMode::Host);
        let objects = ours(
            &translation,
            &[("/", "http://hub:8081", 1), ("/alice.hub.org/user/alice", "http://alice:8888", 2)],
        );
        let explained = explain(&objects, &translation, "https://Alice.hub.org:443/user/alice/").unwrap();
        assert_eq!(explained.chp_route.as_deref(), Some("/alice.hub.org/user/alice"));
        assert_eq!(explained.winner.unwrap().route.as_deref(), Some("/alice.hub.org/user/alice"));
        let other = explain(&objects, &translation, "http://bob.hub.org/user/alice/").unwrap();
        assert_eq!((other.chp_route.as_deref(), other.agrees_with_chp), (Some("/"), true));
    }
}
