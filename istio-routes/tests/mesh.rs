//! What our objects cost the mesh, on Istio's own pilot (`testkit::oracle::measure`): with the
//! default `exportTo`, the gateway's pods get every route, cluster and endpoint, and a sidecar
//! in any other namespace gets nothing of ours, for either usual place of the gateway's pods.

use istio_routes::{Translation, default_export_to};
use testkit::mesh::{GATEWAY, NAMESPACE, hub_routes, ours, translation};
use testkit::oracle::{MeshOutcome, MeshScenario, ProxyFigures, gateway, measure};

const USERS: usize = 5;

fn scenario(
    objects: Vec<serde_json::Value>,
    writes: Vec<serde_json::Value>,
    gateway_namespace: &str,
) -> MeshScenario {
    MeshScenario {
        objects,
        gateway_namespace: gateway_namespace.into(),
        sidecars: vec!["other".into(), NAMESPACE.into()],
        writes,
    }
}

/// A pod's figures less what it has with no objects of ours: what our objects add.
fn added(with: &ProxyFigures, without: &ProxyFigures) -> [usize; 4] {
    [
        with.routes - without.routes,
        with.clusters - without.clusters,
        with.endpoints - without.endpoints,
        with.pushes - without.pushes,
    ]
}

fn accepted(outcome: &MeshOutcome) -> &MeshOutcome {
    assert_eq!(outcome.rejected, Vec::<String>::new(), "Istio accepted every object");
    outcome
}

#[test]
fn only_the_gateways_pods_carry_our_routes() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let routes = hub_routes("/", USERS);
    // The gateway beside its pods in istio-system (exported there only); the Go proxy's
    // documented Gateway in the hub's namespace, whose pods may run in either (exported to both).
    let bare = Translation {
        gateways: vec!["jupyterhub-gateway".into()],
        export_to: default_export_to(NAMESPACE, &["jupyterhub-gateway".to_owned()]),
        ..translation()
    };
    let public = Translation { export_to: Vec::new(), ..translation() };
    let (system, hub, everyone) = runtime.block_on(async {
        (ours(&translation(), &routes).await, ours(&bare, &routes).await, ours(&public, &routes).await)
    });
    let mut bare_objects = hub.objects.clone();
    bare_objects[0] = gateway(&format!("{NAMESPACE}/jupyterhub-gateway"), &["*"]);
    let empty = vec![gateway(GATEWAY, &["*"])];
    let outcomes = measure(&[
        scenario(empty, Vec::new(), "istio-system"),
        scenario(system.objects, system.writes, "istio-system"),
        scenario(bare_objects.clone(), hub.writes.clone(), "istio-system"),
        scenario(bare_objects, hub.writes, NAMESPACE),
        scenario(everyone.objects, everyone.writes, "istio-system"),
    ]);
    let [empty, system, bare_system, bare_hub, everyone] =
        [0, 1, 2, 3, 4].map(|i| accepted(&outcomes[i]).clone());
    // 2 routes (exact and prefix) per user, 1 for the hub; a cluster and an endpoint per pod IP
    // (the hub's Service is not in this registry); the new server's ServiceEntry and
    // VirtualService each push to the gateway.
    let gateway_gets = [2 * USERS + 1, USERS, USERS, 2];
    assert_eq!(added(&system.gateway, &empty.gateway), gateway_gets, "the gateway in istio-system");
    assert_eq!(
        added(&bare_system.gateway, &empty.gateway),
        gateway_gets,
        "a hub-namespace Gateway's pods in istio-system"
    );
    assert_eq!(added(&bare_hub.gateway, &empty.gateway), gateway_gets, "its pods beside the hub");
    // Sidecars elsewhere: nothing, not even a push.
    for (outcome, gateway) in [(&system, GATEWAY), (&bare_system, "jupyterhub-gateway")] {
        assert_eq!(
            added(&outcome.sidecars[0], &empty.sidecars[0]),
            [0; 4],
            "a sidecar in other, for {gateway}"
        );
    }
    assert_eq!(added(&system.sidecars[1], &empty.sidecars[1]), [0; 4], "a sidecar in the hub's namespace");
    // What exportTo saves: without it, every sidecar gets a cluster and an endpoint per user,
    // and a push per server start.
    let [_, clusters, endpoints, pushes] = added(&everyone.sidecars[0], &empty.sidecars[0]);
    assert_eq!(
        (clusters, endpoints, pushes),
        (USERS, USERS, 1),
        "a public ServiceEntry reaches every sidecar"
    );
}
