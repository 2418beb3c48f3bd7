//! The Kubernetes store against testkit's fake API server: what it writes, that reads come
//! from its watch cache, how it recovers, and what API failures become.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{GATEWAY, listed, route, spec};
use http::Method;
use istio_routes::{IstioBackend, KubeStore, RouteStore, Translation};
use kube_routes::Error;
use proxy_api::Backend;
use serde_json::json;
use testkit::eventually;
use testkit::fake_kube::{Answer, FailureRule, FakeKube};
use testkit::istio_model::Gateway;

const NAMESPACE: &str = "hub";

fn translation() -> Translation {
    common::translation(NAMESPACE)
}

async fn start(fake: &FakeKube) -> Result<IstioBackend<KubeStore>, Error> {
    common::start(fake.kubeconfig(NAMESPACE), NAMESPACE).await
}

#[tokio::test]
async fn routes_become_labelled_objects_and_read_back_at_once() {
    let fake = FakeKube::start().await;
    let backend = start(&fake).await.unwrap();
    backend.add(route("/user/alice", "http://10.0.0.1:8888")).await.unwrap();
    // Read-your-writes: listed at once, whatever the watch is doing.
    assert_eq!(listed(&backend).await, ["/user/alice"]);

    let objects = fake.objects("virtualservices");
    assert_eq!(objects.len(), 1);
    let labels = &objects[0]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "jupyterhub-istio-proxy");
    assert_eq!(labels["jupyterhub-istio-proxy/instance"], "jupyter");
    assert_eq!(fake.objects("serviceentries").len(), 1, "the pod IP's ServiceEntry");

    assert!(backend.delete(&spec("/user/alice")).await.unwrap());
    assert!(listed(&backend).await.is_empty());
    assert!(fake.objects("virtualservices").is_empty() && fake.objects("serviceentries").is_empty());
    assert!(!backend.delete(&spec("/user/alice")).await.unwrap(), "a missing route is a 404, not an error");
}

/// Waits until the store's watch has applied `count` more events than `before`.
async fn events_applied(backend: &IstioBackend<KubeStore>, before: u64, count: u64) {
    let stats = Arc::clone(backend.store().watch_stats());
    eventually("the watch applies the released events", || {
        let stats = Arc::clone(&stats);
        async move { stats.events.load(std::sync::atomic::Ordering::Acquire) >= before + count }
    })
    .await;
}

/// The watch lags behind our writes. The creation event of a route we have deleted
/// since arrives after the delete was answered; the route must stay deleted in the listing.
#[tokio::test]
async fn a_deleted_route_stays_deleted_while_the_watch_lags() {
    let fake = FakeKube::start().await;
    let backend = start(&fake).await.unwrap();
    let events = || backend.store().watch_stats().events.load(std::sync::atomic::Ordering::Acquire);
    backend.add(route("/user/bob", "http://jupyter-bob:8888")).await.unwrap();
    events_applied(&backend, 0, 1).await;

    fake.hold_watch_events();
    backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
    assert_eq!(listed(&backend).await, ["/user/alice", "/user/bob"]);
    assert!(backend.delete(&spec("/user/alice")).await.unwrap());
    assert_eq!(listed(&backend).await, ["/user/bob"]);

    // Only the creation arrives: the cache shows alice, the listing must not.
    let before = events();
    fake.release_watch_events(1);
    events_applied(&backend, before, 1).await;
    assert_eq!(listed(&backend).await, ["/user/bob"], "a deleted route is listed again");

    let before = events();
    fake.release_watch_events(usize::MAX);
    events_applied(&backend, before, 1).await;
    assert_eq!(listed(&backend).await, ["/user/bob"]);
}

/// A delete that finds nothing (another replica deleted the route first) still hides the
/// route from a lagging watch.
#[tokio::test]
async fn a_route_another_replica_deleted_first_stays_deleted_while_the_watch_lags() {
    let fake = FakeKube::start().await;
    let backend = start(&fake).await.unwrap();
    let other = start(&fake).await.unwrap();
    let events = || backend.store().watch_stats().events.load(std::sync::atomic::Ordering::Acquire);

    fake.hold_watch_events();
    backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
    // The other replica, which has not seen our write, writes the route and deletes it.
    other.add(route("/user/alice", "http://jupyter-alice-2:8888")).await.unwrap();
    assert!(other.delete(&spec("/user/alice")).await.unwrap());
    // Our listing still shows our write; deleting it finds nothing on the server.
    assert!(backend.delete(&spec("/user/alice")).await.unwrap());
    assert!(listed(&backend).await.is_empty());
    for _ in 0..3 {
        let before = events();
        fake.release_watch_events(1);
        events_applied(&backend, before, 1).await;
        assert!(listed(&backend).await.is_empty(), "the lagging watch shows alice again");
    }
}

/// The VirtualService creations the fake API server has seen.
fn creations(fake: &FakeKube) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.path.ends_with("/virtualservices"))
        .count()
}

/// A spawn storm: many routes added at once below the hub's route, which must then sort after
/// each of them. It is created again once between them, not once per route (each of which
/// would collide on the next generation's name and retire the same old object).
#[tokio::test]
async fn routes_added_at_once_below_one_route_re_create_it_once() {
    let fake = FakeKube::start().await;
    fake.set_clock(1_700_000_000);
    let backend = start(&fake).await.unwrap();
    backend.add(route("/jhub", "http://hub:8081")).await.unwrap();
    fake.advance_clock(1);
    // Slow answers, so that the writes overlap as they do under load.
    fake.set_latency(Duration::from_millis(20));
    fake.clear_requests();
    let users: Vec<String> = (0..16).map(|i| format!("/jhub/user/u{i}")).collect();
    let adds =
        users.iter().enumerate().map(|(i, s)| backend.add(route(s, &format!("http://10.0.0.{i}:8888"))));
    for result in futures::future::join_all(adds).await {
        result.unwrap();
    }
    assert_eq!(creations(&fake), 1, "the hub's route is created again once");
    assert_eq!(fake.objects("virtualservices").len(), users.len() + 1, "no stray generations");
    let objects: Vec<Arc<istio_routes::resources::VirtualService>> = fake
        .objects("virtualservices")
        .into_iter()
        .map(|v| Arc::new(serde_json::from_value(v).unwrap()))
        .collect();
    let routed = Gateway::build(&objects, GATEWAY, &["*"]).route("hub.org", "/jhub/user/u7/lab").unwrap();
    let object =
        objects.iter().find(|o| o.metadata.name.as_deref() == Some(&routed.virtual_service)).unwrap();
    let chosen = backend.translation().read(object).unwrap().unwrap().route.spec().to_string();
    assert_eq!(chosen, "/jhub/user/u7");
}

/// Another replica has just created the hub route's next generation, and our watch has not
/// brought it yet: our create of the same name finds it taken, and the store reads it back,
/// so the write succeeds with the other replica's object instead of failing.
#[tokio::test]
async fn a_generation_another_replica_just_created_is_read_back_not_an_error() {
    let fake = FakeKube::start().await;
    fake.set_clock(1_700_000_000);
    let (one, two) = (start(&fake).await.unwrap(), start(&fake).await.unwrap());
    one.add(route("/jhub", "http://hub:8081")).await.unwrap();
    eventually("the second replica lists the hub's route", || async { listed(&two).await == ["/jhub"] })
        .await;
    fake.advance_clock(1);
    fake.hold_watch_events();
    one.add(route("/jhub/user/alice", "http://10.0.0.1:8888")).await.unwrap();
    two.add(route("/jhub/user/bob", "http://10.0.0.2:8888")).await.unwrap();
    assert_eq!(fake.objects("virtualservices").len(), 3, "one object per route");
    assert_eq!(listed(&two).await, ["/jhub", "/jhub/user/bob"]);
    fake.release_watch_events(usize::MAX);
    for replica in [&one, &two] {
        eventually("each replica lists every route", || async {
            listed(replica).await == ["/jhub", "/jhub/user/alice", "/jhub/user/bob"]
        })
        .await;
    }
}

#[tokio::test]
async fn reads_come_from_the_watch_cache_not_the_api_server() {
    let fake = FakeKube::start().await;
    let backend = start(&fake).await.unwrap();
    backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
    fake.clear_requests();
    for _ in 0..50 {
        assert_eq!(listed(&backend).await.len(), 1);
        assert!(backend.get(&spec("/user/alice")).await.unwrap().is_some());
    }
    let reads: Vec<_> =
        fake.requests().into_iter().filter(|r| r.method == Method::GET && !r.is_watch()).collect();
    assert!(reads.is_empty(), "reads reached the API server: {reads:?}");
}

#[tokio::test]
async fn other_writers_show_up_through_the_watch_even_after_it_breaks() {
    let fake = FakeKube::start().await;
    let backend = start(&fake).await.unwrap();
    let other = start(&fake).await.unwrap();
    other.add(route("/user/bob", "http://jupyter-bob:8888")).await.unwrap();
    eventually("the first replica sees bob", || async { listed(&backend).await == ["/user/bob"] }).await;

    fake.break_watches();
    other.add(route("/user/carol", "http://jupyter-carol:8888")).await.unwrap();
    fake.compact();
    other.delete(&spec("/user/bob")).await.unwrap();
    eventually("the first replica converges after the watch broke", || async {
        listed(&backend).await == ["/user/carol"]
    })
    .await;
}

#[tokio::test]
async fn api_failures_become_statuses_jupyterhub_understands() {
    let fake = FakeKube::start().await;
    let backend = start(&fake).await.unwrap();

    fake.fail_next(FailureRule::new(Answer::status(403, "Forbidden")).method(Method::PATCH));
    let error = backend.add(route("/user/a", "http://jupyter-a:8888")).await.unwrap_err();
    assert_eq!(error.status(), 403);
    assert!(
        error
            .to_string()
            .contains("needs 'patch' on virtualservices.networking.istio.io in namespace \"hub\""),
        "{error}"
    );

    fake.fail_next(FailureRule::new(Answer::status(500, "InternalError")).method(Method::PATCH));
    let error = backend.add(route("/user/a", "http://jupyter-a:8888")).await.unwrap_err();
    assert_eq!(error.status(), 503, "{error}");

    // Nothing half-written: the failed adds left no objects.
    assert!(fake.objects("virtualservices").is_empty());
    backend.add(route("/user/a", "http://jupyter-a:8888")).await.unwrap();
    assert_eq!(listed(&backend).await, ["/user/a"]);
}

#[tokio::test]
async fn missing_crds_or_permissions_stop_the_start_with_what_to_do() {
    let fake = FakeKube::start().await;
    fake.fail_next(FailureRule::new(Answer::NotServed).path_contains("virtualservices"));
    let error = start(&fake).await.unwrap_err();
    assert!(matches!(error, Error::NotInstalled { .. }), "{error:?}");
    assert!(error.to_string().contains("install Istio's CRDs (networking.istio.io v1)"), "{error}");

    fake.fail_next(FailureRule::new(Answer::status(403, "Forbidden")).path_contains("serviceentries"));
    let error = start(&fake).await.unwrap_err();
    assert!(error.to_string().contains("needs 'list' on serviceentries.networking.istio.io"), "{error}");
}

#[tokio::test]
async fn the_store_is_not_ready_until_the_first_list() {
    let fake = FakeKube::start().await;
    let client = kube::Client::try_from(fake.kubeconfig(NAMESPACE)).unwrap();
    let store = KubeStore::start(client, &translation()).await.unwrap();
    // The watch was spawned but has not run yet (one-thread runtime): slow its first list.
    fake.set_latency(Duration::from_millis(500));
    assert!(!store.is_ready());
    let backend = IstioBackend::new(Arc::new(store), translation());
    let error = backend.list().await.unwrap_err();
    assert_eq!(error.status(), 503);
    assert!(error.to_string().contains("still loading"), "{error}");
    tokio::time::timeout(Duration::from_secs(10), backend.store().wait_until_ready()).await.unwrap();
    fake.set_latency(Duration::ZERO);
    assert!(backend.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_go_proxys_objects_are_adopted_listed_and_replaced() {
    let fake = FakeKube::start().await;
    let legacy = json!({"route_spec": "/user/alice/", "target": "http://jupyter-alice:8888", "jupyterhub": true,
                        "data": {"user": "alice", "server_name": ""}});
    use base64::Engine;
    let annotation = base64::engine::general_purpose::STANDARD.encode(legacy.to_string());
    fake.insert(
        "networking.istio.io",
        "v1",
        "virtualservices",
        NAMESPACE,
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "jupyter-0123", "annotations": {"jupyter.splunk.io/proxy-data": annotation}},
            "spec": {"hosts": ["*"], "gateways": ["jupyterhub-gateway"],
                     "http": [{"match": [{"uri": {"prefix": "/user/alice/"}}],
                               "route": [{"destination": {"host": "jupyter-alice.hub.svc.cluster.local"}}]}]}
        }),
    );
    // Another program's object, which must be left alone.
    fake.insert(
        "networking.istio.io",
        "v1",
        "virtualservices",
        NAMESPACE,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "grafana"},
               "spec": {"hosts": ["*"]}}),
    );
    let backend = start(&fake).await.unwrap();
    assert_eq!(listed(&backend).await, ["/user/alice"]);
    let adopted = fake.object("virtualservices", NAMESPACE, "jupyter-0123").unwrap();
    assert_eq!(adopted["metadata"]["labels"]["jupyterhub-istio-proxy/instance"], "jupyter");
    // Exported as ours, so that Istio orders it among ours by creation time.
    assert_eq!(adopted["spec"]["exportTo"], json!(["istio-system"]));
    assert!(fake.object("virtualservices", NAMESPACE, "grafana").unwrap()["metadata"]["labels"].is_null());

    backend.add(route("/user/alice", "http://10.0.0.5:8888")).await.unwrap();
    assert!(
        fake.object("virtualservices", NAMESPACE, "jupyter-0123").is_none(),
        "replaced on the next write"
    );
    assert_eq!(listed(&backend).await, ["/user/alice"]);
}

/// Objects an earlier build wrote public (or with another ISTIO_EXPORT_TO) are exported anew
/// at start: Istio tries exported objects before public ones, so a hub route written anew
/// would otherwise shadow the users' older routes.
#[tokio::test]
async fn our_objects_exported_otherwise_are_exported_anew_at_start() {
    let fake = FakeKube::start().await;
    let public = Translation { export_to: Vec::new(), ..translation() };
    let mut config = fake.kubeconfig(NAMESPACE);
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let store = KubeStore::start(client, &public).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await.unwrap();
    let earlier = IstioBackend::new(Arc::new(store), public);
    earlier.add(route("/jhub", "http://hub:8081")).await.unwrap();
    earlier.add(route("/jhub/user/alice", "http://10.0.0.1:8888")).await.unwrap();
    let exports = || -> Vec<serde_json::Value> {
        fake.objects("virtualservices").iter().map(|o| o["spec"]["exportTo"].clone()).collect()
    };
    assert_eq!(exports(), [serde_json::Value::Null, serde_json::Value::Null]);

    let backend = start(&fake).await.unwrap();
    assert_eq!(exports(), [json!(["istio-system"]), json!(["istio-system"])]);
    assert_eq!(listed(&backend).await, ["/jhub", "/jhub/user/alice"]);
}

#[tokio::test]
async fn two_replicas_writing_overlapping_routes_route_as_chp_does() {
    let fake = FakeKube::start().await;
    fake.set_clock(1_700_000_000);
    let replicas = [start(&fake).await.unwrap(), start(&fake).await.unwrap()];
    let specs =
        ["/jhub", "/jhub/user/alice", "/jhub/user/alice/foo", "/jhub/user/bob", "/jhub/services/x", "/"];
    for round in 0..3 {
        let writes = specs.iter().enumerate().map(|(i, s)| {
            let replica = &replicas[(i + round) % 2];
            replica.add(route(s, &format!("http://10.0.{round}.{i}:8888")))
        });
        for result in futures::future::join_all(writes).await {
            result.unwrap();
        }
        fake.advance_clock(1);
    }
    eventually("both replicas list every route", || async {
        for replica in &replicas {
            if listed(replica).await.len() != specs.len() {
                return false;
            }
        }
        true
    })
    .await;
    // Exactly one object per route: no duplicates, no orphans.
    assert_eq!(fake.objects("virtualservices").len(), specs.len());

    // The gateway sees what the API server holds (the cache keeps no specs).
    let objects: Vec<Arc<istio_routes::resources::VirtualService>> = fake
        .objects("virtualservices")
        .into_iter()
        .map(|v| Arc::new(serde_json::from_value(v).unwrap()))
        .collect();
    let gateway = Gateway::build(&objects, GATEWAY, &["*"]);
    let mut chp = testkit::chp::ChpTable::new(false);
    specs.iter().for_each(|s| chp.add(s));
    for path in [
        "/jhub/user/alice/foo/lab",
        "/jhub/user/alice/lab",
        "/jhub/user/bob",
        "/jhub/hub/home",
        "/jhub/services/x/",
        "/other",
    ] {
        let routed = gateway.route("hub.org", path).unwrap();
        let object =
            objects.iter().find(|o| o.metadata.name.as_deref() == Some(&routed.virtual_service)).unwrap();
        let chosen = replicas[0].translation().read(object).unwrap().unwrap().route.spec().to_string();
        assert_eq!(Some(chosen), chp.route("hub.org", path), "{path}");
    }
}

#[tokio::test]
async fn an_api_server_outage_is_a_503_for_writes_while_reads_go_on() {
    let fake = FakeKube::start().await;
    let backend = start(&fake).await.unwrap();
    backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();

    fake.stop().await;
    assert_eq!(listed(&backend).await, ["/user/alice"], "reads come from the cache");
    let error = backend.add(route("/user/bob", "http://jupyter-bob:8888")).await.unwrap_err();
    assert_eq!(error.status(), 503, "{error}");

    fake.restart().await;
    backend.add(route("/user/bob", "http://jupyter-bob:8888")).await.unwrap();
    // Another writer's change arrives again once the watch has reconnected.
    fake.insert(
        "networking.istio.io",
        "v1",
        "virtualservices",
        NAMESPACE,
        serde_json::to_value(
            &translation()
                .render(&route("/user/carol", "http://jupyter-carol:8888"), 0)
                .unwrap()
                .virtual_service,
        )
        .unwrap(),
    );
    eventually("the watch resumes after the outage", || async {
        listed(&backend).await == ["/user/alice", "/user/bob", "/user/carol"]
    })
    .await;
}
