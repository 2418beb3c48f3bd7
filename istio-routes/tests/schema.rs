//! Schema fidelity: the objects [`Translation`] renders are accepted by a real Kubernetes API
//! server with Istio's CRDs, whose structural schemas and validation rules a production
//! cluster applies too; and a malformed object is rejected, so the validation is live. The
//! objects read back from the server go through Istio's pilot (`testkit::oracle`): it accepts
//! them all, and routes every route's path, and a path below it, to the route's VirtualService.

use istio_routes::resources::{IstioVersion, ServiceEntry, VirtualService};
use istio_routes::{Rendered, Translation, default_export_to};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube_routes::encode_path;
use proxy_api::{Route, RouteSpec, RoutingMode, Target};
use testkit::apiserver::ApiServer;
use testkit::oracle::{Request, Scenario};

const GATEWAY: &str = "istio-system/jupyterhub-gateway";

/// Specs (decoded, without the host) and targets covering every destination rule.
const ROUTES: &[(&str, &str)] = &[
    ("/", "http://hub:8081"),
    ("/user/alice", "http://jupyter-alice:8888"),
    ("/user/bob", "http://jupyter-bob.users:8888"),
    ("/user/carol", "http://jupyter-carol.users.svc.cluster.local:8888"),
    ("/user/dave", "http://jupyter-dave.users.svc:8888"),
    ("/user/erin", "http://10.0.0.7:8888"),
    ("/user/frank", "http://[fd00::7]:8888"),
    ("/user/grace", "https://10.0.0.8:8443"),
    ("/user/heidi", "http://jupyter-heidi:8888/base/path"),
    ("/user/ivan smith/秀樹@example.org", "http://jupyter-ivan:8888"),
    ("/user/judy smith@x", "http://10.0.0.9:8888/prefix"),
];

fn routes(mode: RoutingMode) -> Vec<Route> {
    ROUTES
        .iter()
        .map(|(path, target)| {
            let spec = match mode {
                RoutingMode::Path => path.to_string(),
                RoutingMode::Host => format!("/alice.hub.example.org{}", path.trim_end_matches('/')),
            };
            let spec = RouteSpec::new(&spec, mode).expect("a valid spec");
            Route::new(spec, Target::parse(target).expect("a valid target"), Default::default())
                .expect("a valid route")
        })
        .collect()
}

async fn apply_all(mode: RoutingMode, prefix: &str) {
    let server = ApiServer::shared().await;
    let client = server.client();
    let namespace = server.new_namespace(prefix).await;
    let translation = Translation {
        namespace: namespace.clone(),
        routing_mode: mode,
        gateways: vec![GATEWAY.into()],
        export_to: default_export_to(&namespace, &[GATEWAY.to_owned()]),
        ..Translation::default()
    };
    let virtual_services: Api<VirtualService> =
        Api::namespaced_with(client.clone(), &namespace, &IstioVersion::V1);
    let service_entries: Api<ServiceEntry> = Api::namespaced_with(client, &namespace, &IstioVersion::V1);
    let params = PatchParams::apply("test").force();
    let mut entries = 0;
    // The root last: under host routing it is an ancestor of every route, which must sort
    // after them, as the backend keeps it (this test writes without the backend).
    for route in routes(mode).into_iter().rev() {
        let Rendered { virtual_service, service_entry } =
            translation.render(&route, 0).unwrap_or_else(|e| panic!("{} renders: {e}", route.spec()));
        let name = virtual_service.metadata.name.clone().expect("a name");
        let applied = virtual_services
            .patch(&name, &params, &Patch::Apply(&virtual_service))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the API server rejects the VirtualService of {}: {e}\n{}",
                    route.spec(),
                    serde_json::to_string_pretty(&virtual_service).unwrap()
                )
            });
        // What the server stored is what we sent: no field was pruned as unknown.
        assert_eq!(
            serde_json::to_value(&applied.spec).unwrap(),
            serde_json::to_value(&virtual_service.spec).unwrap(),
            "the stored VirtualService of {} differs",
            route.spec()
        );
        if let Some(entry) = service_entry {
            let name = entry.metadata.name.clone().expect("a name");
            let applied =
                service_entries.patch(&name, &params, &Patch::Apply(&entry)).await.unwrap_or_else(|e| {
                    panic!(
                        "the API server rejects the ServiceEntry of {}: {e}\n{}",
                        route.spec(),
                        serde_json::to_string_pretty(&entry).unwrap()
                    )
                });
            assert_eq!(
                serde_json::to_value(&applied.spec).unwrap(),
                serde_json::to_value(&entry.spec).unwrap(),
                "the stored ServiceEntry of {} differs",
                route.spec()
            );
            entries += 1;
        }
    }
    assert_eq!(entries, 4, "every pod-IP target has a ServiceEntry");
    let listed = virtual_services.list(&Default::default()).await.expect("list VirtualServices");
    assert_eq!(listed.items.len(), ROUTES.len());
    let entries = service_entries.list(&Default::default()).await.expect("list ServiceEntries");
    judge(&translation, mode, &listed.items, &entries.items);
}

/// Istio's pilot, given the objects as the server stored them, accepts them all and routes each
/// route's path, and one below it, to the route's VirtualService; a pod IP to a cluster the
/// gateway has (its ServiceEntry is exported to the gateway).
fn judge(
    translation: &Translation,
    mode: RoutingMode,
    services: &[VirtualService],
    entries: &[ServiceEntry],
) {
    let objects = std::iter::once(testkit::oracle::gateway(GATEWAY, &["*"]))
        .chain(services.iter().map(|o| serde_json::to_value(o).unwrap()))
        .chain(entries.iter().map(|o| serde_json::to_value(o).unwrap()))
        .collect();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for route in routes(mode) {
        let host = route.spec().host().unwrap_or("hub.example.org");
        let path = encode_path(route.spec().path());
        let below = format!("{}/lab", path.trim_end_matches('/'));
        for path in [path, below] {
            requests.push(Request::new(host, &path));
            expected.push((translation.virtual_service_name(route.spec(), 0), route.target().ip().is_some()));
        }
    }
    let outcome = testkit::oracle::route_one(&Scenario { objects, requests: requests.clone() });
    assert_eq!(outcome.rejected, Vec::<String>::new(), "Istio accepts every object the server stored");
    for ((request, (name, pod_ip)), answer) in requests.iter().zip(expected).zip(outcome.answers) {
        let answer = answer.unwrap_or_else(|| panic!("Istio does not route {request:?}"));
        assert_eq!(answer.virtual_service_name(), name, "{request:?}");
        assert!(
            !pod_ip || answer.cluster_known,
            "{request:?}: the gateway has no cluster {}",
            answer.cluster
        );
    }
}

#[tokio::test]
async fn path_routes_are_accepted() {
    apply_all(RoutingMode::Path, "schema-path").await;
}

#[tokio::test]
async fn host_routes_are_accepted() {
    apply_all(RoutingMode::Host, "schema-host").await;
}

#[tokio::test]
async fn malformed_virtual_service_is_rejected() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("schema-malformed").await;
    let translation = Translation { namespace: namespace.clone(), ..Translation::default() };
    let route = routes(RoutingMode::Path).remove(1);
    let virtual_service = translation.render(&route, 0).expect("renders").virtual_service;
    let name = virtual_service.metadata.name.clone().expect("a name");
    let api: Api<VirtualService> = Api::namespaced_with(server.client(), &namespace, &IstioVersion::V1);
    let params = PatchParams::apply("test").force();

    // A StringMatch is one of exact, prefix and regex: not two.
    let mut two_matches = serde_json::to_value(&virtual_service).unwrap();
    two_matches["spec"]["http"][0]["match"][0]["uri"] =
        serde_json::json!({"exact": "/user/alice", "prefix": "/user/alice/"});
    // A destination needs a host.
    let mut no_host = serde_json::to_value(&virtual_service).unwrap();
    no_host["spec"]["http"][0]["route"][0]["destination"].as_object_mut().unwrap().remove("host");
    // A timeout is a duration of at least 1 ms (a CEL rule, x-kubernetes-validations).
    let mut zero_timeout = serde_json::to_value(&virtual_service).unwrap();
    zero_timeout["spec"]["http"][0]["timeout"] = serde_json::json!("0s");
    // (A value of the wrong type, such as hosts: "*", is rejected too, but server-side apply
    // reports it as 500 "failed to create typed patch object", not 422.)

    for (what, object) in [
        ("two uri matches", two_matches),
        ("a destination without host", no_host),
        ("timeout 0s", zero_timeout),
    ] {
        match api.patch(&name, &params, &Patch::Apply(&object)).await {
            Err(kube::Error::Api(status)) if status.code == 422 => {}
            other => panic!("a VirtualService with {what} should be rejected with 422, got {other:?}"),
        }
    }
    // The well-formed one is accepted, so the rejections were the schema's.
    api.patch(&name, &params, &Patch::Apply(&virtual_service)).await.expect("accepted");
}
