//! Healing of the Gateway API's objects on a real Kubernetes API server, with two replicas
//! healing the same namespace: each drift repaired once, by one of them, and what JupyterHub
//! deleted left deleted.

use std::sync::Arc;
use std::time::Duration;

use gateway_routes::heal::heal;
use gateway_routes::{GatewayBackend, GatewayKubeStore, GatewayTranslation, HttpRoute, HttpRouteStore};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_routes::heal::{HealOptions, Healing};
use kube_routes::{HealMetrics, KubeMetrics};
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use serde_json::json;
use testkit::apiserver::ApiServer;
use testkit::within;

const RESOURCES: [&str; 3] = ["httproutes", "services", "endpointslices"];
const KINDS: [&str; 4] = ["edited", "deleted", "orphaned", "stray"];

/// The grace of orphans and strays in these tests (5 s by default).
const GRACE: Duration = Duration::from_secs(2);

/// Longer than any replica waits before checking a route again after a repair (the jitter, its
/// first back-off step, and the grace): a second repair would have happened by then.
const SETTLE: Duration = Duration::from_secs(7);

struct Replica {
    backend: Arc<GatewayBackend<GatewayKubeStore>>,
    metrics: HealMetrics,
    _healing: Healing,
}

struct Objects {
    translation: GatewayTranslation,
    http_routes: Api<HttpRoute>,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
}

impl Objects {
    async fn names<K>(api: &Api<K>) -> Vec<String>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let listed = api.list(&ListParams::default()).await.unwrap();
        let mut names: Vec<String> = listed.items.iter().filter_map(|o| o.meta().name.clone()).collect();
        names.sort();
        names
    }
}

async fn setup(prefix: &str) -> (Vec<Replica>, Objects) {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace(prefix).await;
    let translation = GatewayTranslation {
        namespace: namespace.clone(),
        parent_refs: vec!["istio-system/jupyterhub".parse().unwrap()],
        ..GatewayTranslation::default()
    };
    let options = HealOptions { grace: GRACE, ..HealOptions::default() };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = GatewayKubeStore::start(server.client(), &translation, KubeMetrics::default())
            .await
            .unwrap_or_else(|e| panic!("the store starts: {e}\n{}", server.log()));
        let mut ready = store.readiness();
        tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r)).await.unwrap().unwrap();
        let backend = Arc::new(GatewayBackend::new(Arc::new(store), translation.clone()));
        let metrics = HealMetrics::default();
        let healing = heal(Arc::clone(&backend), options.clone(), metrics.clone());
        replicas.push(Replica { backend, metrics, _healing: healing });
    }
    let client = server.client();
    let objects = Objects {
        translation,
        http_routes: Api::namespaced(client.clone(), &namespace),
        services: Api::namespaced(client.clone(), &namespace),
        slices: Api::namespaced(client, &namespace),
    };
    (replicas, objects)
}

/// Every repair by both replicas, as `resource/kind: count`, leaving out zeros.
fn all_repairs(replicas: &[Replica]) -> Vec<String> {
    let mut repairs = Vec::new();
    for resource in RESOURCES {
        for kind in KINDS {
            let count: u64 = replicas.iter().map(|r| r.metrics.repaired(resource, kind)).sum();
            if count > 0 {
                repairs.push(format!("{resource}/{kind}: {count}"));
            }
        }
    }
    repairs
}

fn route(path: &str, target: &str) -> Route {
    let spec = RouteSpec::new(path, RoutingMode::Path).unwrap();
    Route::new(spec, Target::parse(target).unwrap(), Default::default()).unwrap()
}

/// Adds a route through the first replica, waits until both list it, and answers its objects'
/// name.
async fn add(replicas: &[Replica], objects: &Objects, path: &str, target: &str) -> String {
    let route = route(path, target);
    replicas[0].backend.add(route.clone()).await.unwrap();
    for replica in replicas {
        within("both replicas list the route", Duration::from_secs(10), || async {
            replica.backend.get(route.spec()).await.unwrap().is_some()
        })
        .await;
    }
    objects.translation.object_name(route.spec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_http_route_is_restored_once() {
    let (replicas, objects) = setup("gw-heal-edit").await;
    let name = add(&replicas, &objects, "/user/alice", "http://10.0.0.1:8888").await;
    let before = objects.http_routes.get(&name).await.unwrap().spec;

    // kubectl edit: the route sent to another host.
    let edit = json!({"spec": {"hostnames": ["evil.example.org"]}});
    let params = PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() };
    objects.http_routes.patch(&name, &params, &Patch::Merge(&edit)).await.unwrap();

    let took = within("the spec is restored", Duration::from_secs(10), || async {
        objects.http_routes.get(&name).await.unwrap().spec == before
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), ["httproutes/edited: 1"], "repaired once, after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_route_deleted_behind_our_back_comes_back_once_owning_its_backend() {
    let (replicas, objects) = setup("gw-heal-delete").await;
    let name = add(&replicas, &objects, "/user/alice", "http://10.0.0.1:8888").await;
    let before = objects.http_routes.get(&name).await.unwrap();

    objects.http_routes.delete(&name, &DeleteParams::default()).await.unwrap();
    let took = within("the HTTPRoute is back", Duration::from_secs(10), || async {
        objects.http_routes.get_opt(&name).await.unwrap().is_some()
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), ["httproutes/deleted: 1"], "repaired once, after {took:?}");
    let back = objects.http_routes.get(&name).await.unwrap();
    assert_eq!(back.spec, before.spec);
    assert_ne!(back.metadata.uid, before.metadata.uid, "created again");
    // Its backend names the new HTTPRoute as owner, so a garbage collector keeps it.
    let owner = |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
        refs.unwrap_or_default().first().map(|owner| owner.uid.clone())
    };
    let service = objects.services.get(&name).await.unwrap();
    let slice = objects.slices.get(&name).await.unwrap();
    assert_eq!(owner(service.metadata.owner_references), back.metadata.uid);
    assert_eq!(owner(slice.metadata.owner_references), back.metadata.uid);
    for replica in &replicas {
        assert_eq!(replica.backend.list().await.unwrap().len(), 1, "every replica lists it again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_endpoint_slice_and_an_edited_service_are_restored_once_each() {
    let (replicas, objects) = setup("gw-heal-backend").await;
    let name = add(&replicas, &objects, "/user/alice", "http://10.0.0.1:8888").await;
    let slice = objects.slices.get(&name).await.unwrap();
    let ports = objects.services.get(&name).await.unwrap().spec.unwrap().ports;

    objects.slices.delete(&name, &DeleteParams::default()).await.unwrap();
    within("the EndpointSlice is back", Duration::from_secs(10), || async {
        objects.slices.get_opt(&name).await.unwrap().is_some()
    })
    .await;
    let edit =
        json!({"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": 9999, "protocol": "TCP"}]}});
    let params = PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() };
    objects.services.patch(&name, &params, &Patch::Merge(&edit)).await.unwrap();
    within("the Service's ports are restored", Duration::from_secs(10), || async {
        objects.services.get(&name).await.unwrap().spec.unwrap().ports == ports
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), ["services/edited: 1", "endpointslices/deleted: 1"]);
    let back = objects.slices.get(&name).await.unwrap();
    assert_eq!((back.endpoints, back.ports), (slice.endpoints, slice.ports));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_backend_and_a_strays_are_deleted_once() {
    let (replicas, objects) = setup("gw-heal-orphan").await;
    let bob = add(&replicas, &objects, "/user/bob", "http://10.0.0.2:8888").await;
    // The backend of a route with no HTTPRoute (its replica stopped between the two), and a
    // copy of bob's Service under another name.
    let rendered = objects.translation.render(&route("/user/alice", "http://10.0.0.1:8888")).unwrap();
    let backend = rendered.pod_backend.unwrap();
    let post = PostParams::default();
    objects.services.create(&post, &backend.service).await.unwrap();
    objects.slices.create(&post, &backend.endpoint_slice).await.unwrap();
    let mut copy = objects.services.get(&bob).await.unwrap();
    copy.metadata = kube::api::ObjectMeta {
        name: Some(format!("{bob}-copy")),
        labels: copy.metadata.labels.clone(),
        ..Default::default()
    };
    if let Some(spec) = copy.spec.as_mut() {
        (spec.cluster_ip, spec.cluster_ips) = (None, None);
    }
    objects.services.create(&post, &copy).await.unwrap();

    tokio::time::sleep(GRACE / 2).await;
    assert_eq!(Objects::names(&objects.services).await.len(), 3, "left alone for the grace period");
    let took = within("the orphans and the copy are gone", Duration::from_secs(15), || async {
        Objects::names(&objects.services).await == [bob.clone()]
            && Objects::names(&objects.slices).await == [bob.clone()]
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        all_repairs(&replicas),
        ["services/orphaned: 1", "services/stray: 1", "endpointslices/orphaned: 1"],
        "repaired once each, after {took:?}"
    );
    assert_eq!(replicas[1].backend.list().await.unwrap().len(), 1, "bob's route is untouched");
}

/// Routes added and deleted through either replica: what JupyterHub deleted stays deleted,
/// what it added stays, and healing repairs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_deleted_through_either_replica_stay_deleted() {
    let (replicas, objects) = setup("gw-heal-deletes").await;
    for i in 0..6 {
        let path = format!("/user/u{i}");
        add(&replicas, &objects, &path, &format!("http://10.0.2.{}:8888", i + 1)).await;
    }
    for i in 0..6 {
        if i % 2 == 0 {
            let spec = RouteSpec::new(&format!("/user/u{i}"), RoutingMode::Path).unwrap();
            assert!(replicas[i % 2 + usize::from(i % 4 == 0)].backend.delete(&spec).await.unwrap());
        }
    }
    tokio::time::sleep(SETTLE).await;
    let left: Vec<String> = (0..6)
        .filter(|i| i % 2 == 1)
        .map(|i| {
            objects
                .translation
                .object_name(&RouteSpec::new(&format!("/user/u{i}"), RoutingMode::Path).unwrap())
        })
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(Objects::names(&objects.http_routes).await, left, "deleted routes stay deleted");
    assert_eq!(Objects::names(&objects.services).await, left);
    assert_eq!(Objects::names(&objects.slices).await, left);
    assert!(all_repairs(&replicas).is_empty(), "nothing to repair: {:?}", all_repairs(&replicas));
    for replica in &replicas {
        assert_eq!(replica.backend.store().http_routes().len(), 3);
    }
}
