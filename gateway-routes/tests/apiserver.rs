//! The Gateway API backend on a real Kubernetes API server (`testkit::apiserver`), with the
//! Gateway API's standard CRDs, whose structural schemas and CEL rules a production cluster
//! applies too.
//!
//! - Schema fidelity: every object rendered for every target kind and routing mode is accepted
//!   unchanged (what the server stores is what we wrote), and a malformed one is refused, so
//!   the validation is live.
//! - The store: routes added through one replica are listed by another once its watch has
//!   them, read back exactly; deleted routes are gone everywhere with what they owned.

use std::sync::Arc;
use std::time::Duration;

use gateway_routes::{GatewayBackend, GatewayKubeStore, GatewayTranslation, HttpRoute, HttpRouteStore};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube_routes::KubeMetrics;
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use testkit::apiserver::ApiServer;

/// Specs (decoded, without the host) and targets covering every backend rule.
const ROUTES: &[(&str, &str)] = &[
    ("/", "http://hub:8081"),
    ("/user/alice", "http://jupyter-alice:8888"),
    ("/user/bob", "http://jupyter-bob.users:8888"),
    ("/user/carol", "http://jupyter-carol.users.svc.cluster.local:8888"),
    ("/user/dave", "http://10.0.0.7:8888"),
    ("/user/erin", "http://[fd00::7]:8888"),
    ("/user/heidi", "http://jupyter-heidi:8888/base/path"),
    ("/user/ivan smith/秀樹@example.org", "http://jupyter-ivan:8888"),
    ("/user/judy smith@x", "http://10.0.0.9:8888/prefix"),
];

fn routes(mode: RoutingMode) -> Vec<Route> {
    ROUTES
        .iter()
        .map(|(path, target)| {
            let spec = match (mode, *path) {
                (RoutingMode::Host, "/") => "/".to_owned(),
                (RoutingMode::Host, path) => format!("/alice.hub.example.org{path}"),
                (RoutingMode::Path, path) => path.to_owned(),
            };
            let spec = RouteSpec::new(&spec, mode).unwrap();
            Route::new(spec, Target::parse(target).unwrap(), Default::default()).unwrap()
        })
        .collect()
}

fn translation(namespace: &str, mode: RoutingMode) -> GatewayTranslation {
    GatewayTranslation {
        namespace: namespace.to_owned(),
        parent_refs: vec!["istio-system/jupyterhub".parse().unwrap(), "web/gateway.v1/http".parse().unwrap()],
        routing_mode: mode,
        ..GatewayTranslation::default()
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_is_stored_as_written() {
    let server = ApiServer::shared().await;
    let client = server.client();
    for mode in [RoutingMode::Path, RoutingMode::Host] {
        let namespace = server.new_namespace("gw-schema").await;
        let translation = translation(&namespace, mode);
        let http_routes: Api<HttpRoute> = Api::namespaced(client.clone(), &namespace);
        let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
        let apply = PatchParams::apply("schema-test").force();
        for route in routes(mode) {
            let rendered = translation.render(&route).unwrap();
            let name = rendered.http_route.metadata.name.clone().unwrap();
            let stored = http_routes.patch(&name, &apply, &Patch::Apply(&rendered.http_route)).await;
            let stored = stored.unwrap_or_else(|e| panic!("{mode:?} {}: refused: {e}", route.spec()));
            assert_eq!(
                stored.spec,
                rendered.http_route.spec,
                "{mode:?} {}: changed on the way",
                route.spec()
            );
            if let Some(backend) = rendered.pod_backend {
                let backend = backend.owned_by(&stored);
                let service = services.patch(&name, &apply, &Patch::Apply(&backend.service)).await.unwrap();
                let ports = service.spec.as_ref().and_then(|s| s.ports.clone()).unwrap();
                assert_eq!(ports[0].port, i32::from(route.target().port()));
                let slice =
                    slices.patch(&name, &apply, &Patch::Apply(&backend.endpoint_slice)).await.unwrap();
                assert_eq!(slice.endpoints, backend.endpoint_slice.endpoints);
                assert_eq!(slice.metadata.owner_references, backend.endpoint_slice.metadata.owner_references);
            }
        }
    }
    // The validation is live: a PathPrefix with `//` breaks one of the CRD's CEL rules.
    let namespace = server.new_namespace("gw-schema").await;
    let translation = translation(&namespace, RoutingMode::Path);
    let mut bad = translation.render(&routes(RoutingMode::Path)[1]).unwrap().http_route;
    bad.spec.rules[0].matches[0].path.as_mut().unwrap().value = "/user//alice".to_owned();
    let http_routes: Api<HttpRoute> = Api::namespaced(client, &namespace);
    let refused = http_routes.patch("bad", &PatchParams::apply("schema-test"), &Patch::Apply(&bad)).await;
    assert!(refused.is_err(), "a path with // was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_list_each_others_routes_and_deletes_take_what_they_owned() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("gw-store").await;
    let translation = translation(&namespace, RoutingMode::Path);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store =
            GatewayKubeStore::start(server.client(), &translation, KubeMetrics::default()).await.unwrap();
        let store = Arc::new(store);
        let mut ready = store.readiness();
        tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r)).await.unwrap().unwrap();
        replicas.push(GatewayBackend::new(store, translation.clone()));
    }
    let added = routes(RoutingMode::Path);
    for route in &added {
        replicas[0].add(route.clone()).await.unwrap();
    }
    // Read-your-writes on the writer, the watch on the other replica.
    assert_eq!(replicas[0].list().await.unwrap().len(), added.len());
    eventually("the other replica lists every route", || {
        replicas[1].store().http_routes().len() == added.len()
    })
    .await;
    for route in &added {
        let listed = replicas[1].get(route.spec()).await.unwrap().unwrap();
        assert_eq!(*listed, *route, "read back exactly");
    }
    let slices: Api<EndpointSlice> = Api::namespaced(server.client(), &namespace);
    let services: Api<Service> = Api::namespaced(server.client(), &namespace);
    let pod_routes = added.iter().filter(|r| r.target().ip().is_some()).count();
    assert_eq!(slices.list(&ListParams::default()).await.unwrap().items.len(), pod_routes);

    for route in &added {
        assert!(replicas[1].delete(route.spec()).await.unwrap(), "{} was there", route.spec());
        assert!(replicas[1].get(route.spec()).await.unwrap().is_none(), "read-your-deletes");
    }
    eventually("the writer's cache is empty", || replicas[0].store().http_routes().is_empty()).await;
    assert!(slices.list(&ListParams::default()).await.unwrap().items.is_empty());
    assert!(services.list(&ListParams::default()).await.unwrap().items.is_empty());
}

/// Plays a gateway controller: writes `conditions` as the route's status for its parent.
async fn set_status(api: &Api<HttpRoute>, name: &str, generation: i64, conditions: &[(&str, &str, &str)]) {
    let conditions: Vec<serde_json::Value> = conditions
        .iter()
        .map(|(kind, status, reason)| {
            serde_json::json!({
                "type": kind, "status": status, "reason": reason,
                "message": format!("{kind} {status}: {reason}"),
                "observedGeneration": generation,
                "lastTransitionTime": "2026-12-01T00:00:00Z",
            })
        })
        .collect();
    let status = serde_json::json!({"status": {"parents": [{
        "parentRef": {"namespace": "istio-system", "name": "jupyterhub"},
        "controllerName": "example.net/gateway-controller",
        "conditions": conditions,
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_a_gateway_to_accept_and_refusals_are_counted() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("gw-status").await;
    let translation = translation(&namespace, RoutingMode::Path);
    let store = GatewayKubeStore::start(server.client(), &translation, KubeMetrics::default()).await.unwrap();
    let store = Arc::new(store);
    let mut ready = store.readiness();
    tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r)).await.unwrap().unwrap();
    let backend = GatewayBackend::new(Arc::clone(&store), translation.clone())
        .with_acceptance_wait(Duration::from_secs(15));
    let api: Api<HttpRoute> = Api::namespaced(server.client(), &namespace);
    let route = routes(RoutingMode::Path)[1].clone();
    let name = translation.object_name(route.spec());

    // A controller that accepts the route a moment after it appears. The flag goes up just
    // before the status is written: a write that did not wait returns long before.
    let accepting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let controller = {
        let (api, name, accepting) = (api.clone(), name.clone(), Arc::clone(&accepting));
        tokio::spawn(async move {
            loop {
                if let Ok(object) = api.get(&name).await {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let generation = object.metadata.generation.unwrap();
                    accepting.store(true, std::sync::atomic::Ordering::SeqCst);
                    set_status(
                        &api,
                        &name,
                        generation,
                        &[("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")],
                    )
                    .await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    backend.add(route.clone()).await.unwrap();
    assert!(
        accepting.load(std::sync::atomic::Ordering::SeqCst),
        "the write returned before the gateway accepted the route"
    );
    controller.await.unwrap();
    let generation = api.get(&name).await.unwrap().metadata.generation;
    let now = store.wait_accepted(&name, generation, Duration::ZERO).await;
    assert_eq!(now, gateway_routes::status::Acceptance::Accepted);
    assert_eq!(store.refused(), 0);

    // The backend's Service is not allowed: counted until the gateway takes the route.
    set_status(
        &api,
        &name,
        generation.unwrap(),
        &[("Accepted", "True", "Accepted"), ("ResolvedRefs", "False", "RefNotPermitted")],
    )
    .await;
    eventually("the refusal is counted", || store.refused() == 1).await;
    set_status(
        &api,
        &name,
        generation.unwrap(),
        &[("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")],
    )
    .await;
    eventually("the refusal is let go", || store.refused() == 0).await;

    // With no gateway to say anything, a write waits no longer than it was told to.
    let quick =
        GatewayBackend::new(Arc::clone(&store), translation).with_acceptance_wait(Duration::from_millis(500));
    let started = std::time::Instant::now();
    quick.add(routes(RoutingMode::Path)[2].clone()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500), "it did not wait for the gateway at all");
}
