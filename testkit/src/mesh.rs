//! What a hub's routes cost the mesh: the objects ours and the Go proxy's write for the same
//! routes, and what one server start writes, for [`crate::oracle::measure`] to measure on
//! Istio's pilot. `istio-routes/tests/mesh.rs` checks the sidecar goal with it;
//! `bench/mesh.sh` prints the figures.

use std::collections::BTreeMap;
use std::sync::Arc;

use istio_routes::{IstioBackend, ManualClock, MemoryStore, RouteStore, Translation, default_export_to};
use kube_routes::route_id;
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use serde_json::{Value, json};

/// The hub's namespace.
pub const NAMESPACE: &str = "hub";
/// The gateway, as the usual install names it: its pods run in `istio-system`.
pub const GATEWAY: &str = "istio-system/jupyterhub-gateway";

/// Our translation for [`GATEWAY`], exported as the binary does by default.
pub fn translation() -> Translation {
    Translation {
        namespace: NAMESPACE.into(),
        gateways: vec![GATEWAY.into()],
        hosts: vec!["*".into()],
        export_to: default_export_to(NAMESPACE, &[GATEWAY.to_owned()]),
        ..Translation::default()
    }
}

/// The routes JupyterHub adds for a hub under `base` (`/` or `/jhub/`) and `users` running
/// servers, the hub's first: each user's server at a pod IP, as KubeSpawner targets them.
pub fn hub_routes(base: &str, users: usize) -> Vec<Route> {
    let route = |spec: &str, target: &str| {
        let spec = RouteSpec::new(spec, RoutingMode::Path).expect("a valid spec");
        Route::new(spec, Target::parse(target).expect("a valid target"), Default::default()).expect("a route")
    };
    std::iter::once(route(base, "http://hub:8081"))
        .chain((0..users).map(|i| route(&format!("{base}user/u{i}/"), &pod_ip(i))))
        .collect()
}

/// A distinct pod IP per user.
fn pod_ip(i: usize) -> String {
    format!("http://10.{}.{}.{}:8888", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

/// The objects some routes leave, and those the last route's write changed.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Every object after the last write, the Gateway first.
    pub objects: Vec<Value>,
    /// The objects the last route's write created, changed or deleted (a deleted one as it
    /// was): each is one config event for istiod.
    pub writes: Vec<Value>,
}

/// Our objects after `routes` are added through a backend with `translation`, one server
/// start per second (the last one's writes kept apart), as the API server would hold them.
pub async fn ours(translation: &Translation, routes: &[Route]) -> Written {
    let clock = ManualClock::at(1_700_000_000);
    let store = Arc::new(MemoryStore::with_clock(translation.clone(), clock.clock()));
    let backend = IstioBackend::new(Arc::clone(&store), translation.clone());
    let (last, first) = routes.split_last().expect("at least one route");
    for route in first {
        backend.add(route.clone()).await.expect("the route is added");
        clock.advance(1);
    }
    let before = snapshot(&store);
    backend.add(last.clone()).await.expect("the route is added");
    let after = snapshot(&store);
    let mut writes: Vec<Value> = after
        .iter()
        .filter(|(key, object)| before.get(*key) != Some(object))
        .map(|(_, o)| o.clone())
        .collect();
    writes.extend(before.iter().filter(|(key, _)| !after.contains_key(*key)).map(|(_, o)| o.clone()));
    let objects =
        std::iter::once(crate::oracle::gateway(GATEWAY, &["*"])).chain(after.into_values()).collect();
    Written { objects, writes }
}

/// Every object of the store by kind and name.
fn snapshot(store: &MemoryStore) -> BTreeMap<(String, String), Value> {
    let services = store.virtual_services().into_iter().map(|o| serde_json::to_value(&*o).expect("JSON"));
    let entries = store.service_entries().into_iter().map(|o| serde_json::to_value(&*o).expect("JSON"));
    services
        .chain(entries)
        .map(|o| ((o["kind"].as_str().unwrap_or_default().to_owned(), o["metadata"]["name"].to_string()), o))
        .collect()
}

/// The Go jupyterhub-istio-proxy's objects for the same routes, as its README deploys it
/// (`VIRTUAL_SERVICE_PREFIX=jupyterhub`, `CLUSTER_DOMAIN=cluster.local`): one VirtualService
/// per route, `prefix: <spec>`, to `<target host>.<namespace>.svc.<domain>` (a pod IP too,
/// which no Service answers), no ServiceEntry, no `exportTo`. One server start writes one
/// VirtualService. Names are shortened (the Go proxy used the whole SHA-256).
pub fn go_proxy(routes: &[Route]) -> Written {
    let object = |i: usize, route: &Route| {
        let target = route.target();
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {
                "name": format!("jupyterhub-{}", route_id(route.spec())),
                "namespace": NAMESPACE,
                "creationTimestamp": jiff::Timestamp::from_second(1_700_000_000 + i as i64).expect("a time").to_string(),
            },
            "spec": {
                "hosts": ["*"],
                "gateways": [GATEWAY],
                "http": [{
                    "match": [{"uri": {"prefix": route.spec().as_str()}}],
                    "route": [{"destination": {
                        "host": format!("{}.{NAMESPACE}.svc.cluster.local", target.host()),
                        "port": {"number": target.port()},
                    }}],
                }],
            },
        })
    };
    let objects: Vec<Value> = routes.iter().enumerate().map(|(i, r)| object(i, r)).collect();
    let writes = objects.last().cloned().into_iter().collect();
    Written {
        objects: std::iter::once(crate::oracle::gateway(GATEWAY, &["*"])).chain(objects).collect(),
        writes,
    }
}
