//! Istio's own answer to where its ingress gateway sends a request: the judge of the routing
//! tests.
//!
//! The Go program in `testkit/oracle` runs Istio's control plane in process (the pilot of the
//! `istio.io/istio` version its go.mod pins, as Istio's own tests build it), takes the route
//! configuration pilot generates for an ingress gateway pod (namespace `istio-system`, label
//! `istio: ingressgateway`) and evaluates it as Envoy's router does: the virtual host by host
//! name without port, then the first route in order whose match holds (path without query
//! string; prefix, exact, segment-aware prefix and RE2 full-match regex; header matchers, the
//! `:authority` as sent, case and port kept). Envoy's path normalization is not applied:
//! requests are routed on the path exactly as given.
//!
//! A scenario may instead hold Gateway API objects ([`gateway_api`]'s GatewayClass and
//! Gateway, HTTPRoutes) and the core objects their backends name (Services, EndpointSlices),
//! as the API server lists them. The oracle then runs pilot as Istio's own Gateway API tests
//! do (`pilot/test/xds`'s fake discovery server: a fake Kubernetes client holding the objects,
//! Istio's Kubernetes service registry and its Gateway API controller), plays the pod Istio
//! would deploy for the first Gateway, and names in each answer the HTTPRoute and rule the
//! route came from ([`Answer::http_route`]). Istio objects may sit beside them.
//!
//! [`route`] sends every scenario of a batch to one run of the program: pilot starts once per
//! scenario, so batch what you can. The binary is built once per test process with the
//! machine's `go` (or by CI beforehand) into `<cargo target dir>/testkit-oracle/oracle`; a
//! first build compiles about 1,750 Go packages. When it cannot be built or fails, the test
//! panics with why: the oracle is never skipped.
//!
//! ```no_run
//! use testkit::oracle::{Request, Scenario};
//!
//! let objects = vec![testkit::oracle::gateway("istio-system/jupyterhub-gateway", &["*"])];
//! let requests = vec![Request::new("hub.org", "/user/alice/")];
//! let outcome = testkit::oracle::route_one(&Scenario { objects, requests });
//! assert!(outcome.answers[0].is_none(), "no VirtualService, no route");
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A set of Istio or Gateway API objects and the requests to route through them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scenario {
    /// Gateways, VirtualServices and ServiceEntries as the API server lists them: `apiVersion`,
    /// `kind`, `metadata` (name, namespace, `creationTimestamp`) and `spec`. Or Gateway API
    /// objects (a Gateway of class `istio`, HTTPRoutes) with the Services and EndpointSlices
    /// their backends name: see the module's documentation.
    pub objects: Vec<serde_json::Value>,
    /// The requests, answered in this order.
    pub requests: Vec<Request>,
}

/// One request to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Request {
    /// The `Host` header as sent, port and case kept.
    pub authority: String,
    /// The path as sent: percent-encoded, with any query string.
    pub path: String,
    /// The gateway port the request arrives on.
    pub port: u16,
}

impl Request {
    /// A request on port 80, where [`gateway`] listens.
    pub fn new(authority: &str, path: &str) -> Request {
        Request { authority: authority.to_owned(), path: path.to_owned(), port: 80 }
    }
}

/// Where the gateway sends a request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The Envoy virtual host chosen by the request's host, e.g. `*:80`.
    pub virtual_host: String,
    /// The position of the matching route in that virtual host.
    pub route_index: usize,
    /// The matching route's name (the http route's `name`, when it has one).
    pub route: String,
    /// `namespace/name` of the VirtualService the route came from; for an HTTPRoute, the one
    /// Istio converted the HTTPRoutes of a hostname to.
    pub virtual_service: String,
    /// `namespace/name` of the HTTPRoute the route came from, in a Gateway API scenario.
    #[serde(default)]
    pub http_route: Option<String>,
    /// The index of that HTTPRoute's rule.
    #[serde(default)]
    pub rule: usize,
    /// The upstream cluster, e.g. `outbound|8888||jupyter-alice.hub.svc.cluster.local`.
    pub cluster: String,
    /// Whether pilot gave the gateway that cluster (from a Service or a ServiceEntry); a route
    /// to a cluster Envoy does not have answers 503.
    pub cluster_known: bool,
    /// The path forwarded, after any rewrite, query string kept.
    pub path: String,
    /// The headers the route adds to the response.
    pub response_headers: BTreeMap<String, String>,
}

impl Answer {
    /// The VirtualService's name, without its namespace.
    pub fn virtual_service_name(&self) -> &str {
        self.virtual_service.rsplit('/').next().unwrap_or_default()
    }
}

/// The answers to one scenario.
#[derive(Debug, Clone, Deserialize)]
pub struct Outcome {
    /// Objects Istio's validation refused, with why; istiod skips them.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rejected: Vec<String>,
    /// Per request, in order: where it goes, or `None` for a 404.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub answers: Vec<Option<Answer>>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// An Istio Gateway `namespace/name` for the ingress gateway pods the oracle plays, with one
/// plain HTTP server on port 80 for `hosts`.
pub fn gateway(gateway: &str, hosts: &[&str]) -> serde_json::Value {
    let (namespace, name) = gateway.split_once('/').expect("a gateway as namespace/name");
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}],
        },
    })
}

/// A Gateway API Gateway `namespace/name` of class `istio` (and that GatewayClass), with one
/// plain HTTP listener, `http` on port 80, taking HTTPRoutes from every namespace: the pod
/// the oracle plays for it is the gateway that answers.
pub fn gateway_api(gateway: &str) -> Vec<serde_json::Value> {
    let (namespace, name) = gateway.split_once('/').expect("a gateway as namespace/name");
    let created = "2020-01-01T00:00:00Z";
    vec![
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "istio", "creationTimestamp": created},
            "spec": {"controllerName": "istio.io/gateway-controller"},
        }),
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {
                "gatewayClassName": "istio",
                "listeners": [{
                    "name": "http", "port": 80, "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }],
            },
        }),
    ]
}

/// A question about what the mesh carries for a set of objects: what Istio's pilot gives an
/// ingress gateway pod and sidecars in other namespaces, and which of them some writes concern.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshScenario {
    /// Gateways, VirtualServices and ServiceEntries, as in [`Scenario::objects`].
    pub objects: Vec<serde_json::Value>,
    /// Where the ingress gateway pod (label `istio: ingressgateway`) runs.
    pub gateway_namespace: String,
    /// Namespaces of ordinary sidecar pods to measure, one pod each.
    pub sidecars: Vec<String>,
    /// Objects written (created, changed or deleted): each write is one config event, which
    /// istiod pushes to the proxies it concerns.
    pub writes: Vec<serde_json::Value>,
}

/// What pilot gives one proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ProxyFigures {
    /// Envoy routes, over all its route configurations.
    pub routes: usize,
    /// Clusters, pilot's own (`BlackHoleCluster`, ...) included.
    pub clusters: usize,
    /// Endpoints of its EDS clusters.
    pub endpoints: usize,
    /// How many of the scenario's writes concern it: istiod pushes to it for each.
    pub pushes: usize,
}

/// The answer to a [`MeshScenario`].
#[derive(Debug, Clone, Deserialize)]
pub struct MeshOutcome {
    /// Objects Istio's validation refused, with why.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rejected: Vec<String>,
    /// The gateway pod's figures.
    pub gateway: ProxyFigures,
    /// Each sidecar's, in [`MeshScenario::sidecars`]' order.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub sidecars: Vec<ProxyFigures>,
}

/// Measures every mesh scenario on Istio's pilot, in one run of the oracle. Panics as
/// [`route`] does.
pub fn measure(scenarios: &[MeshScenario]) -> Vec<MeshOutcome> {
    #[derive(Serialize)]
    struct Input<'a> {
        mesh: &'a [MeshScenario],
    }
    #[derive(Deserialize)]
    struct Output {
        #[serde(default, deserialize_with = "null_as_empty")]
        mesh: Vec<MeshOutcome>,
    }
    let input = serde_json::to_vec(&Input { mesh: scenarios }).expect("scenarios serialize");
    let output: Output = serde_json::from_slice(&run(&input)).expect("the oracle writes its answers as JSON");
    assert_eq!(output.mesh.len(), scenarios.len(), "the oracle answered every mesh scenario");
    output.mesh
}

/// Routes every scenario's requests through Istio, in one run of the oracle. Panics, with the
/// oracle's output, when it cannot be built or run, or fails on a scenario.
pub fn route(scenarios: &[Scenario]) -> Vec<Outcome> {
    #[derive(Serialize)]
    struct Input<'a> {
        scenarios: &'a [&'a Scenario],
    }
    #[derive(Deserialize)]
    struct Output {
        scenarios: Vec<Outcome>,
    }
    // A step that changes no object (a refused write, a delete of nothing) repeats the scenario
    // before it, and pilot's run is most of a property test's time: each distinct scenario is
    // asked once.
    let mut distinct: Vec<&Scenario> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let slots: Vec<usize> = scenarios
        .iter()
        .map(|scenario| {
            let key = serde_json::to_string(scenario).expect("scenarios serialize");
            *seen.entry(key).or_insert_with(|| {
                distinct.push(scenario);
                distinct.len() - 1
            })
        })
        .collect();
    let input = serde_json::to_vec(&Input { scenarios: &distinct }).expect("scenarios serialize");
    let output: Output = serde_json::from_slice(&run(&input)).expect("the oracle writes its answers as JSON");
    assert_eq!(output.scenarios.len(), distinct.len(), "the oracle answered every scenario");
    slots.into_iter().map(|slot| output.scenarios[slot].clone()).collect()
}

/// [`route`] for one scenario.
pub fn route_one(scenario: &Scenario) -> Outcome {
    route(std::slice::from_ref(scenario)).remove(0)
}

/// Runs the oracle with `input` on stdin; its stdout.
fn run(input: &[u8]) -> Vec<u8> {
    let bin = build();
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the routing oracle {}: {e}", bin.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written on a thread: the oracle may fill its stdout pipe before it has read all of stdin.
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("the routing oracle ran");
    writer.join().expect("writing to the oracle").expect("the oracle read its input");
    assert!(
        output.status.success(),
        "the routing oracle failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Builds `testkit/oracle` with `go build` into `<target>/testkit-oracle/oracle`, once per
/// process, unless the binary is newer than its sources. Returns its path. Panics, with go's
/// output, when it cannot be built.
pub fn build() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            crate::go::build_if_stale("testkit/oracle", "testkit-oracle/oracle", "the routing oracle")
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}
