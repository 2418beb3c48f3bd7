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
//! `istio_gateway_api.rs` has Istio's own Gateway API implementation judge the same objects.

use std::collections::BTreeSet;
use std::sync::Arc;

use gateway_routes::{GatewayBackend, GatewayMemoryStore, GatewayTranslation, HttpRouteStore};
use proptest::prelude::*;
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use testkit::chp::ChpTable;
use testkit::gateway_model::GatewayApi;

mod common;
use common::{host_spec, path_spec, target};

const REPLICAS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Add { replica: usize, spec: String, target: usize },
    Delete { replica: usize, spec: String },
}

fn steps(spec: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0..REPLICAS, spec.clone(), 0..4usize).prop_map(|(replica, spec, target)| Step::Add { replica, spec, target }),
        1 => (0..REPLICAS, spec).prop_map(|(replica, spec)| Step::Delete { replica, spec }),
    ];
    prop::collection::vec(step, 1..30)
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

    /// Every probe goes where CHP sends it, with the path CHP forwards: the target's path,
    /// then the request's.
    fn check(&self, history: &[Step]) {
        let objects = self.store.http_routes();
        let gateway = GatewayApi::new(objects.clone());
        for (host, path) in common::probes(&self.seen) {
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
