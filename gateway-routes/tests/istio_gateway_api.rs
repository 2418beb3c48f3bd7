//! The HTTPRoutes the Gateway API backend writes, judged by Istio's own Gateway API
//! implementation: `testkit::oracle` runs Istio's pilot with its Gateway API controller on
//! random route tables rendered by `GatewayTranslation` (HTTPRoutes as rendered, a Gateway of
//! class `istio`, the Services and EndpointSlices of pod-IP targets, the Services that other
//! targets name) and routes probes through what it generates, as Envoy would. For every probe,
//! Istio must pick the HTTPRoute that `testkit::gateway_model` (the specification) and
//! `testkit::chp` (configurable-http-proxy) pick, and forward the same path.
//!
//! The corpus is drawn with a fixed seed and sent to the oracle in one run (a pilot per table,
//! tens of milliseconds each).

use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_routes::GatewayTranslation;
use gateway_routes::resources::HttpRoute;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proxy_api::{Route, RouteSpec, RoutingMode, Target};
use serde_json::{Value, json};
use testkit::chp::ChpTable;
use testkit::gateway_model::GatewayApi;
use testkit::oracle::{Answer, Request, Scenario};

mod common;
use common::{host_spec, path_spec, target};

const NAMESPACE: &str = "hub";
/// Tables per routing mode.
const CASES: usize = 48;

/// A route table: specs and their targets, in the order JupyterHub added them.
fn table(spec: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Vec<(String, usize)>> {
    prop::collection::vec((spec, 0..4usize), 1..10)
}

/// The Services that the Service targets name, and the ReferenceGrant that lets the hub's
/// HTTPRoutes reach the one in another namespace (docs/gateway-api.md).
fn named_services() -> Vec<Value> {
    let service = |name: &str, namespace: &str, port: u16| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
        })
    };
    let grant = json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "jupyterhub-routes", "namespace": "other", "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": NAMESPACE}],
            "to": [{"group": "", "kind": "Service"}],
        },
    });
    vec![service("jupyter-x", NAMESPACE, 8888), service("hub", "other", 8081), grant]
}

/// One table, rendered: the objects Istio is given, the HTTPRoutes the model is given, and
/// CHP's table.
struct Case {
    mode: RoutingMode,
    table: Vec<(String, usize)>,
    translation: GatewayTranslation,
    /// The routes JupyterHub added, by spec.
    routes: BTreeMap<RouteSpec, Route>,
    http_routes: Vec<Arc<HttpRoute>>,
    chp: ChpTable,
    scenario: Scenario,
}

impl Case {
    fn new(mode: RoutingMode, table: Vec<(String, usize)>) -> Case {
        let translation = GatewayTranslation {
            namespace: NAMESPACE.into(),
            parent_refs: vec!["istio-system/jupyterhub".parse().unwrap()],
            routing_mode: mode,
            ..GatewayTranslation::default()
        };
        // A later add of a spec replaces the route, as JupyterHub's would.
        let mut routes = BTreeMap::new();
        let mut chp = ChpTable::new(mode == RoutingMode::Host);
        for (order, (spec, n)) in table.iter().enumerate() {
            let spec = RouteSpec::new(spec, mode).unwrap();
            let route =
                Route::new(spec.clone(), Target::parse(target(*n)).unwrap(), Default::default()).unwrap();
            chp.add(spec.as_str());
            routes.insert(spec, (order, route));
        }
        let mut objects = testkit::oracle::gateway_api("istio-system/jupyterhub");
        objects.extend(named_services());
        let mut http_routes = Vec::new();
        for (order, route) in routes.values() {
            let rendered = translation.render(route).unwrap();
            // Creation times in the order of the adds, as the API server would set them.
            let created = Time(format!("2020-01-01T00:{:02}:00Z", order).parse().unwrap());
            let mut http_route = rendered.http_route;
            http_route.metadata.creation_timestamp = Some(created.clone());
            objects.push(serde_json::to_value(&http_route).unwrap());
            if let Some(backend) = rendered.pod_backend {
                let (mut service, mut slice) = (backend.service, backend.endpoint_slice);
                service.metadata.creation_timestamp = Some(created.clone());
                slice.metadata.creation_timestamp = Some(created);
                objects.push(kube_object("v1", "Service", &service));
                objects.push(kube_object("discovery.k8s.io/v1", "EndpointSlice", &slice));
            }
            http_routes.push(Arc::new(http_route));
        }
        let requests = common::probes(routes.keys())
            .into_iter()
            .map(|(host, path)| Request::new(&host, &path))
            .collect();
        let routes = routes.into_iter().map(|(spec, (_, route))| (spec, route)).collect();
        Case { mode, table, translation, routes, http_routes, chp, scenario: Scenario { objects, requests } }
    }

    /// Every probe goes, through Istio, to the HTTPRoute of the route CHP picks, with the path
    /// CHP forwards (the target's path, then the request's), but in the two cases where Istio
    /// departs from the specification, which are counted; and the specification's model picks
    /// the same HTTPRoute and path as CHP. Istio is asked first: it is the judge.
    fn check(&self, answers: &[Option<Answer>], departures: &mut Departures) {
        let model = GatewayApi::new(self.http_routes.clone());
        for (request, istio) in self.scenario.requests.iter().zip(answers) {
            let (host, path) = (&request.authority, &request.path);
            let context = || format!("{:?} table {:#?}\nHost: {host}, path {path}", self.mode, self.table);
            let route = self
                .chp
                .route(host, path)
                .map(|spec| &self.routes[&RouteSpec::new(&spec, self.mode).unwrap()]);
            let chp = route.map(|route| {
                (self.translation.object_name(route.spec()), format!("{}{path}", route.target().path()))
            });
            let expected = match (chp.clone(), route) {
                (Some(_), Some(route)) if self.istio_has_only_hostname_routes(host, route) => {
                    departures.host_fallbacks += 1;
                    None
                }
                (Some((name, forwarded)), Some(route)) => {
                    let istio = istio_forwards(route, path, &forwarded);
                    departures.root_rewrites += usize::from(istio != forwarded);
                    Some((format!("{NAMESPACE}/{name}"), istio))
                }
                _ => None,
            };
            let chosen =
                istio.as_ref().map(|a| (a.http_route.clone().expect("an HTTPRoute's route"), a.path.clone()));
            assert_eq!(chosen, expected, "Istio (left) and CHP (right) disagree\n{}", context());
            let specified = model.route(host, path).map(|routed| (routed.http_route, routed.path));
            assert_eq!(specified, chp, "the specification (left) and CHP (right) disagree\n{}", context());
            if let Some(answer) = istio {
                assert!(
                    answer.cluster_known,
                    "Istio routes to a cluster it lacks: {answer:?}\n{}",
                    context()
                );
            }
        }
    }

    /// Whether Istio answers 404 where the specification picks `route`: a route without
    /// hostnames (the root route under host routing), for a host that other HTTPRoutes name.
    /// Istio gives each hostname an Envoy virtual host of its own holding only the rules of
    /// the HTTPRoutes that name it, and Envoy picks the virtual host by the request's host
    /// before any path: the hostname-less routes, in the `*` virtual host, are never
    /// considered for that host. The specification ranks a matching hostname before the path
    /// among the rules a request matches, so a request no hostname's rule matches falls back
    /// to the hostname-less routes.
    fn istio_has_only_hostname_routes(&self, host: &str, route: &Route) -> bool {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name).to_ascii_lowercase();
        let named = self.http_routes.iter().any(|object| object.spec.hostnames.contains(&name));
        route.spec().host().is_none() && self.mode == RoutingMode::Host && named
    }
}

/// Probes on which Istio departs from the specification, as documented.
#[derive(Debug, Default)]
struct Departures {
    /// Routed by the root route to a target with a path: see [`istio_forwards`].
    root_rewrites: usize,
    /// Sent to the hostname-less route for a host other routes name: see
    /// [`Case::istio_has_only_hostname_routes`].
    host_fallbacks: usize,
}

/// The path Istio forwards `path` with when the specification forwards `specified`. They
/// differ in one case: a `PathPrefix` of `/` with `ReplacePrefixMatch` `/base` (the root route
/// to a target with a path) forwards `/other` as `/baseother`, where the specification (and
/// configurable-http-proxy) make it `/base/other`. Istio trims the replacement's trailing `/`
/// and keeps the `/` match a plain Envoy prefix, so Envoy's `prefix_rewrite` swaps `/` for
/// `/base` (pilot/pkg/config/kube/gateway/conversion.go, createRewriteFilter).
fn istio_forwards(route: &Route, path: &str, specified: &str) -> String {
    let base = route.target().path();
    if route.spec().path() == "/" && !base.is_empty() {
        format!("{base}{}", &path[1..])
    } else {
        specified.to_owned()
    }
}

/// A Kubernetes object as the API server lists it: k8s-openapi's structs leave out the type.
fn kube_object(api_version: &str, kind: &str, object: &impl serde::Serialize) -> Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["apiVersion"] = json!(api_version);
    value["kind"] = json!(kind);
    value
}

/// Istio's Gateway API implementation routes every probe of every table of the corpus as the
/// specification and configurable-http-proxy do.
#[test]
fn istio_routes_the_http_routes_as_the_specification_and_chp_do() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut cases = Vec::new();
    for (mode, strategy) in
        [(RoutingMode::Path, table(path_spec()).boxed()), (RoutingMode::Host, table(host_spec()).boxed())]
    {
        for _ in 0..CASES {
            cases.push(Case::new(mode, strategy.new_tree(&mut runner).unwrap().current()));
        }
    }
    let scenarios: Vec<Scenario> = cases.iter().map(|case| case.scenario.clone()).collect();
    let outcomes = testkit::oracle::route(&scenarios);
    let mut departures = Departures::default();
    for (case, outcome) in cases.iter().zip(&outcomes) {
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        case.check(&outcome.answers, &mut departures);
    }
    let probes: usize = cases.iter().map(|case| case.scenario.requests.len()).sum();
    assert!(probes >= 2 * CASES * 10, "every table is probed: {probes} probes");
    // Both departures are met, so the exceptions above describe what Istio does, not cases
    // that never arise.
    assert!(
        departures.root_rewrites > 0 && departures.host_fallbacks > 0,
        "{departures:?} of {probes} probes"
    );
    eprintln!("{probes} probes; Istio departs from the specification on {departures:?}");
}

/// What Istio answers for `table`'s probes (Host header, path): the HTTPRoute's name without
/// namespace and the path forwarded, or `None` for a 404.
fn istio_answers(
    mode: RoutingMode,
    table: &[(&str, usize)],
    probes: &[(&str, &str)],
) -> Vec<Option<(String, String)>> {
    let table = table.iter().map(|(spec, n)| ((*spec).to_owned(), *n)).collect();
    let mut case = Case::new(mode, table);
    case.scenario.requests = probes.iter().map(|(host, path)| Request::new(host, path)).collect();
    let outcome = testkit::oracle::route_one(&case.scenario);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let name =
        |answer: &Answer| answer.http_route.as_deref().unwrap().strip_prefix("hub/").unwrap().to_owned();
    outcome.answers.into_iter().map(|answer| answer.map(|a| (name(&a), a.path))).collect()
}

/// Istio's departure from the specification on the root route to a target with a path: the
/// `ReplacePrefixMatch` of a `/` prefix is concatenated, `/other` forwarded as `/baseother`
/// where the specification and configurable-http-proxy forward `/base/other`. A path of its
/// own is rewritten right (`/user/alice/lab` to `/srv/x/user/alice/lab`).
#[test]
fn istio_concatenates_the_root_routes_target_path() {
    let table = [("/", 2), ("/user/alice", 3)];
    let root = GatewayTranslation::default().object_name(&RouteSpec::new("/", RoutingMode::Path).unwrap());
    let alice =
        GatewayTranslation::default().object_name(&RouteSpec::new("/user/alice", RoutingMode::Path).unwrap());
    let answers = istio_answers(
        RoutingMode::Path,
        &table,
        &[("hub.org", "/other"), ("hub.org", "/"), ("hub.org", "/user/alice/lab")],
    );
    assert_eq!(
        answers,
        [
            Some((root.clone(), "/baseother".to_owned())),
            Some((root, "/base".to_owned())),
            Some((alice, "/srv/x/user/alice/lab".to_owned())),
        ]
    );
    let mut chp = ChpTable::new(false);
    chp.add("/");
    assert_eq!(chp.route("hub.org", "/other").as_deref(), Some("/"), "CHP forwards /base/other");
}

/// Istio's departure from the specification under host routing: a request for a host that an
/// HTTPRoute names, on a path none of that host's rules match, is a 404, where the
/// specification (and configurable-http-proxy) send it to the route without hostnames, the
/// hub's `/`. A host no HTTPRoute names does go to `/`.
#[test]
fn istio_does_not_fall_back_to_hostname_less_routes_for_a_named_host() {
    let table = [("/", 1), ("/a.hub.org/user/alice", 0)];
    let spec = |spec: &str| RouteSpec::new(spec, RoutingMode::Host).unwrap();
    let host = GatewayTranslation { routing_mode: RoutingMode::Host, ..GatewayTranslation::default() };
    let (root, alice) = (host.object_name(&spec("/")), host.object_name(&spec("/a.hub.org/user/alice")));
    let answers = istio_answers(
        RoutingMode::Host,
        &table,
        &[("a.hub.org", "/other"), ("b.hub.org", "/other"), ("a.hub.org", "/user/alice/lab")],
    );
    assert_eq!(
        answers,
        [None, Some((root, "/other".to_owned())), Some((alice, "/user/alice/lab".to_owned()))]
    );
    let table = table.iter().map(|(spec, n)| ((*spec).to_owned(), *n)).collect();
    let model = GatewayApi::new(Case::new(RoutingMode::Host, table).http_routes);
    assert!(model.route("a.hub.org", "/other").is_some(), "the specification falls back to /");
}
