//! For any routes and any order of adds, deletes and re-adds through several replicas, the
//! route a conforming Gateway API implementation picks for a request is the one
//! configurable-http-proxy would pick: the longest prefix in whole segments. No ordering is
//! kept: the objects' creation times are left out (the store sets none), so the
//! specification's tie-breaks by age and name, which are arbitrary here, would show if they
//! ever decided.
//!
//! The gateway is `testkit::gateway_model`, the specification's precedence rules; CHP is
//! `testkit::chp`. Probes are the routes' paths as browsers send them (encoded, `@` raw or as
//! `%40`, hex in either case), below them, beside them (`/user/alice2`) and above them.

use std::collections::BTreeSet;
use std::sync::Arc;

use gateway_routes::{GatewayBackend, GatewayMemoryStore, GatewayTranslation, HttpRouteStore};
use istio_routes::encode_path;
use proptest::prelude::*;
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use testkit::chp::ChpTable;
use testkit::gateway_model::GatewayApi;

const REPLICAS: usize = 3;
/// Segments chosen to overlap: hubs under a base URL, users, named servers, encoded names.
const SEGMENTS: &[&str] = &["jhub", "user", "alice", "a", "foo", "a b", "ü", "x@y", "~t"];
const HOSTS: &[&str] = &["a.hub.org", "b.hub.org"];

#[derive(Debug, Clone)]
enum Step {
    Add { replica: usize, spec: String, target: usize },
    Delete { replica: usize, spec: String },
}

fn path_spec() -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(prop::sample::select(SEGMENTS), 0..=4)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn host_spec() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        1 => Just("/".to_owned()),
        6 => (prop::sample::select(HOSTS), prop::collection::vec(prop::sample::select(SEGMENTS), 0..=3))
            .prop_map(|(host, segments)| if segments.is_empty() { format!("/{host}") } else { format!("/{host}/{}", segments.join("/")) }),
    ]
}

fn steps(spec: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0..REPLICAS, spec.clone(), 0..4usize).prop_map(|(replica, spec, target)| Step::Add { replica, spec, target }),
        1 => (0..REPLICAS, spec).prop_map(|(replica, spec)| Step::Delete { replica, spec }),
    ];
    prop::collection::vec(step, 1..30)
}

/// Targets of every kind the translation handles: pod IPs, services, target paths.
fn target(n: usize) -> &'static str {
    [
        "http://10.0.0.7:8888",
        "http://jupyter-x:8888",
        "http://hub.other:8081/base",
        "http://10.0.0.9:8000/srv/x",
    ][n]
}

struct World {
    store: Arc<GatewayMemoryStore>,
    replicas: Vec<GatewayBackend<GatewayMemoryStore>>,
    chp: ChpTable,
    translation: GatewayTranslation,
    seen: BTreeSet<RouteSpec>,
}

impl World {
    fn new(mode: RoutingMode) -> World {
        let translation = GatewayTranslation {
            namespace: "hub".into(),
            parent_refs: vec!["istio-system/jupyterhub".parse().unwrap()],
            routing_mode: mode,
            ..GatewayTranslation::default()
        };
        let store = Arc::new(GatewayMemoryStore::new());
        let replicas =
            (0..REPLICAS).map(|_| GatewayBackend::new(Arc::clone(&store), translation.clone())).collect();
        World {
            store,
            replicas,
            chp: ChpTable::new(mode == RoutingMode::Host),
            translation,
            seen: BTreeSet::new(),
        }
    }

    async fn step(&mut self, step: &Step) {
        let mode = self.translation.routing_mode;
        match step {
            Step::Add { replica, spec, target: n } => {
                let spec = RouteSpec::new(spec, mode).unwrap();
                let route =
                    Route::new(spec.clone(), Target::parse(target(*n)).unwrap(), Default::default()).unwrap();
                self.replicas[*replica].add(route).await.unwrap();
                self.chp.add(spec.as_str());
                self.seen.insert(spec);
            }
            Step::Delete { replica, spec } => {
                let spec = RouteSpec::new(spec, mode).unwrap();
                self.replicas[*replica].delete(&spec).await.unwrap();
                self.chp.delete(spec.as_str());
            }
        }
    }

    /// Requests around every spec seen: (Host header, path as sent).
    fn probes(&self) -> BTreeSet<(String, String)> {
        let mut probes = BTreeSet::from([
            ("c.hub.org".to_owned(), "/".to_owned()),
            ("a.hub.org".to_owned(), "/other".to_owned()),
        ]);
        for spec in &self.seen {
            let host = spec.host().unwrap_or("hub.org").to_owned();
            let path = encode_path(spec.path());
            let base = if path == "/" { String::new() } else { path.clone() };
            let around = [
                path.clone(),
                format!("{base}/"),
                format!("{base}/lab/tree"),
                format!("{base}2"),
                format!("{base}x/y"),
            ];
            for probe in around.into_iter().filter(|p| p.starts_with('/')) {
                probes.insert((host.clone(), probe.replace('@', "%40")));
                probes.insert((host.clone(), lower_hex(&probe)));
                probes.insert(("c.hub.org".to_owned(), probe.clone()));
                probes.insert((format!("{host}:8443"), probe));
            }
        }
        probes
    }

    /// Every probe goes where CHP sends it, with the path CHP forwards: the target's path,
    /// then the request's.
    fn check(&self, history: &[Step]) {
        let objects = self.store.http_routes();
        let gateway = GatewayApi::new(objects.clone());
        for (host, path) in self.probes() {
            let expected = self.chp.route(&host, &path);
            let routed = gateway.route(&host, &path);
            let route = routed.as_ref().map(|routed| {
                let object =
                    objects.iter().find(|o| o.metadata.name.as_deref() == Some(&routed.http_route)).unwrap();
                self.translation.read(object).unwrap().unwrap()
            });
            let context = || format!("Host: {host}, path {path}\nafter {history:#?}");
            assert_eq!(route.as_ref().map(|r| r.spec().to_string()), expected, "{}", context());
            if let (Some(route), Some(routed)) = (route, routed) {
                assert_eq!(routed.path, format!("{}{path}", route.target().path()), "{}", context());
            }
        }
    }
}

/// `path` with the hex digits of its escapes in lower case.
fn lower_hex(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

fn run(mode: RoutingMode, steps: &[Step]) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut world = World::new(mode);
        for (done, step) in steps.iter().enumerate() {
            world.step(step).await;
            world.check(&steps[..=done]);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn path_routes_go_where_chp_sends_them(steps in steps(path_spec())) {
        run(RoutingMode::Path, &steps);
    }

    #[test]
    fn host_routes_go_where_chp_sends_them(steps in steps(host_spec())) {
        run(RoutingMode::Host, &steps);
    }
}
