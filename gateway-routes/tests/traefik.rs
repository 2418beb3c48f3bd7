//! The HTTPRoutes the Gateway API backend writes, judged by where real requests arrive:
//! Traefik (`testkit::traefik`), a Gateway API implementation, reads them from the real API
//! server and carries every probe to echo servers in a pod network (`testkit::podnet`), each
//! answering with its name and the path it was sent.
//!
//! Random route tables (the generators of `common`, non-ASCII names, `@` and `a b` included) are
//! written by three replicas of the store, each with its own watch, to pod-IP and Service targets,
//! with and without a path. Every probe around every route (its path in each spelling CHP takes,
//! below it, beside it, on other hosts and ports) must reach the server of the route
//! configurable-http-proxy picks, with the path CHP forwards (the target's path, then the
//! request's), and get Traefik's 404 where CHP has no route. Where CHP forwards the path as it
//! came, Traefik forwards its escapes with upper-case hex digits (`%c3%bc` as `%C3%BC`), the
//! same path by RFC 3986; the test expects that of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_routes::resources::REGULAR_EXPRESSION;
use gateway_routes::{GatewayBackend, GatewayKubeStore, GatewayTranslation, HttpRoute, path_matches};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube_routes::KubeMetrics;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use testkit::apiserver::ApiServer;
use testkit::chp::{ChpTable, upper_hex};
use testkit::echo::{EchoServer, read_answer};
use testkit::podnet::PodNetwork;
use testkit::traefik::Traefik;

// Shared with the other routing tests, which use what this one does not.
#[allow(dead_code)]
mod common;
use common::{host_spec, path_spec};

/// Tables per routing mode.
const TABLES: usize = 6;
/// How long Traefik may take to apply a table: its throttle, our writes, its watch.
const SETTLE: Duration = Duration::from_secs(30);

/// The kinds of target: (a Service rather than a pod IP, the target's path).
const TARGETS: &[(bool, &str)] = &[(false, ""), (true, ""), (true, "/base"), (false, "/srv/x")];

/// A route table: specs and the kind of their targets, in the order JupyterHub added them.
fn table(spec: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Vec<(String, usize)>> {
    prop::collection::vec((spec, 0..TARGETS.len()), 1..8)
}

/// Whether Traefik forwards a request for this path to a target with a path as the Gateway
/// API specifies: only when the path is matched in one spelling without escapes. Traefik's
/// `ReplacePrefixMatch` trims the match's value from the decoded path, which fails when the
/// value has escapes, and a regular expression (what a non-ASCII path needs on Traefik) cannot
/// be rewritten at all; `traefik_forwards_a_target_path_only_for_paths_without_escapes` shows
/// both. Routes with other paths get targets without a path in the property test.
fn traefik_rewrites(spec: &RouteSpec) -> bool {
    match &path_matches(spec.path())[..] {
        [only] => only.kind != REGULAR_EXPRESSION && !only.value.contains('%'),
        _ => false,
    }
}

/// A gateway, a pod network, and three replicas writing to the namespace Traefik watches.
struct Bench {
    api_server: &'static ApiServer,
    namespace: String,
    mode: RoutingMode,
    traefik: Traefik,
    network: PodNetwork,
    replicas: Vec<GatewayBackend<GatewayKubeStore>>,
}

impl Bench {
    async fn start(mode: RoutingMode) -> Bench {
        let api_server = ApiServer::shared().await;
        let namespace = api_server.new_namespace("traefik-routing").await;
        let traefik = Traefik::start(api_server, &namespace).await;
        let translation = GatewayTranslation {
            namespace: namespace.clone(),
            parent_refs: vec![traefik.parent_ref().parse().unwrap()],
            routing_mode: mode,
            ..GatewayTranslation::default()
        };
        let mut replicas = Vec::new();
        for _ in 0..3 {
            let store = GatewayKubeStore::start(api_server.client(), &translation, KubeMetrics::default())
                .await
                .unwrap();
            let store = Arc::new(store);
            let mut ready = store.readiness();
            tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r)).await.unwrap().unwrap();
            replicas.push(GatewayBackend::new(store, translation.clone()));
        }
        Bench { api_server, namespace, mode, traefik, network: PodNetwork::new(), replicas }
    }

    /// A Service `name` whose one endpoint is `server`, as Kubernetes would keep it for a pod.
    async fn service(&self, name: &str, server: &EchoServer) {
        let port = i32::from(server.addr().port());
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]},
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [server.addr().ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }))
        .unwrap();
        let apply = PatchParams::apply("traefik-test").force();
        let client = self.api_server.client();
        let services: Api<Service> = Api::namespaced(client.clone(), &self.namespace);
        services.patch(name, &apply, &Patch::Apply(&service)).await.unwrap();
        let slices: Api<EndpointSlice> = Api::namespaced(client, &self.namespace);
        slices.patch(name, &apply, &Patch::Apply(&slice)).await.unwrap();
    }

    /// Writes `table` (round robin over the replicas, after deleting what is there), waits
    /// until Traefik routes every probe as CHP would, and fails naming the probes it does not.
    async fn check(&self, number: usize, table: &[(String, usize)]) {
        for (i, route) in self.replicas[0].list().await.unwrap().iter().enumerate() {
            assert!(self.replicas[i % 3].delete(route.spec()).await.unwrap());
        }
        let mut servers = Vec::new();
        let mut routes: BTreeMap<RouteSpec, (String, Route)> = BTreeMap::new();
        let mut chp = ChpTable::new(self.mode == RoutingMode::Host);
        for (i, (spec, kind)) in table.iter().enumerate() {
            let spec = RouteSpec::new(spec, self.mode).unwrap();
            let (service, mut path) = TARGETS[*kind];
            if !traefik_rewrites(&spec) {
                path = "";
            }
            let name = format!("t{number}-{i}");
            let listener = self.network.bind_tokio((self.network.pod_ip(), 0).into()).unwrap();
            let server = EchoServer::serve(listener, &name);
            let target = if service {
                self.service(&name, &server).await;
                format!("http://{name}:80{path}")
            } else {
                format!("http://{}{path}", server.addr())
            };
            servers.push(server);
            let route =
                Route::new(spec.clone(), Target::parse(&target).unwrap(), Default::default()).unwrap();
            self.replicas[i % 3].add(route.clone()).await.unwrap();
            chp.add(spec.as_str());
            routes.insert(spec, (name, route));
        }
        let probes = common::probes(routes.keys());
        let expected: Vec<Option<(String, String)>> = probes
            .iter()
            .map(|(host, path)| {
                let spec = RouteSpec::new(&chp.route(host, path)?, self.mode).unwrap();
                let (name, route) = &routes[&spec];
                let forwarded = format!("{}{path}", route.target().path());
                Some((name.clone(), upper_hex(&forwarded)))
            })
            .collect();
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut wrong = Vec::new();
            for ((host, path), expected) in probes.iter().zip(&expected) {
                let answer = self.traefik.get(host, path).await;
                let arrived = read_answer(&answer.body);
                let right = match expected {
                    Some(_) => answer.status == 200 && arrived == *expected,
                    None => answer.status == 404 && arrived.is_none(),
                };
                if !right {
                    wrong.push(format!(
                        "Host: {host}, {path}: {} {:?}, CHP: {expected:?}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ));
                }
            }
            if wrong.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let api: Api<HttpRoute> = Api::namespaced(self.api_server.client(), &self.namespace);
                let objects = api.list(&Default::default()).await.unwrap().items;
                let objects: Vec<_> = objects.iter().map(|o| (&o.spec.hostnames, &o.spec.rules)).collect();
                panic!(
                    "{:?} table {number} {table:#?}: {} of {} probes are not routed as CHP routes them:\n{}\n\
                     HTTPRoutes: {objects:#?}\nTraefik's log:\n{}",
                    self.mode,
                    wrong.len(),
                    probes.len(),
                    wrong.join("\n"),
                    self.traefik.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_routes_every_probe_as_chp_does() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for (mode, strategy) in
        [(RoutingMode::Path, table(path_spec()).boxed()), (RoutingMode::Host, table(host_spec()).boxed())]
    {
        let bench = Bench::start(mode).await;
        for number in 0..TABLES {
            let table = strategy.new_tree(&mut runner).unwrap().current();
            bench.check(number, &table).await;
        }
    }
}

/// Where Traefik departs from the specification: a target's path is put in front only for a
/// route whose path is matched in one spelling without escapes. Its `ReplacePrefixMatch` trims
/// the match's value from the decoded path and escapes the replacement again, so a request for
/// `/user/x%40y/lab` (the `%40` spelling of `/user/x@y`) reaches the server as the replacement,
/// escaped twice, followed by the whole path. And a non-ASCII path, which Traefik matches
/// decoded, is matched by a regular expression, which the Gateway API cannot rewrite: the
/// request goes to the enclosing route. JupyterHub's own targets never have a path
/// (docs/gateway-api.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_forwards_a_target_path_only_for_paths_without_escapes() {
    let bench = Bench::start(RoutingMode::Path).await;
    let mut servers = Vec::new();
    for (spec, name, path) in [
        ("/", "hub", "/hub"),
        ("/user/ü", "u", "/base"),
        ("/user/x@y", "at", "/base"),
        ("/user/x", "x", "/base"),
    ] {
        let listener = bench.network.bind_tokio((bench.network.pod_ip(), 0).into()).unwrap();
        let server = EchoServer::serve(listener, name);
        let target = Target::parse(&format!("http://{}{path}", server.addr())).unwrap();
        let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
        bench.replicas[0].add(Route::new(spec, target, Default::default()).unwrap()).await.unwrap();
        servers.push(server);
    }
    // The routes were added in order and Traefik applies a configuration whole: once the
    // last is routed, so are the others.
    let deadline = Instant::now() + SETTLE;
    loop {
        let answer = bench.traefik.get("hub.org", "/user/x/lab").await;
        if read_answer(&answer.body) == Some(("x".to_owned(), "/base/user/x/lab".to_owned())) {
            break;
        }
        assert!(Instant::now() < deadline, "/user/x is not routed: {answer:?}\n{}", bench.traefik.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let traefik = &bench.traefik;
    let arrived = |path: &'static str| async move {
        let answer = traefik.get("hub.org", path).await;
        read_answer(&answer.body).unwrap_or_else(|| panic!("{path}: {answer:?}"))
    };
    let pair = |name: &str, path: &str| (name.to_owned(), path.to_owned());
    // As specified, and as CHP forwards them (the root route's too, unlike Istio's).
    assert_eq!(arrived("/other").await, pair("hub", "/hub/other"));
    assert_eq!(arrived("/user/x@y/lab").await, pair("at", "/base/user/x@y/lab"));
    // Not as specified.
    assert_eq!(arrived("/user/%C3%BC/lab").await, pair("hub", "/hub/user/%C3%BC/lab"));
    assert_eq!(arrived("/user/x%40y/lab").await, pair("at", "/base/user/x%2540y/user/x@y/lab"));
}
