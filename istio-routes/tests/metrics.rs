//! The Kubernetes store's metrics, scraped from a registry while it works against testkit's
//! fake API server: calls by verb, resource and outcome, their latency, and the store's state.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use istio_routes::{IstioBackend, KubeStore, Translation};
use kube_routes::{KubeMetrics, StoreMetrics};
use prometheus_client::registry::Registry;
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use testkit::fake_kube::{Answer, FailureRule, FakeKube};
use testkit::metrics::Scrape;

const CALLS: &str = "jupyterhub_istio_proxy_kubernetes_requests_total";
const LATENCY: &str = "jupyterhub_istio_proxy_kubernetes_request_duration_seconds_count";

struct Setup {
    backend: Arc<IstioBackend<KubeStore>>,
    registry: Registry,
}

async fn start(fake: &FakeKube) -> Setup {
    let translation = Translation { namespace: "hub".into(), ..Translation::default() };
    // As the binary makes it: the store retries, not kube's default policy.
    let mut config = fake.kubeconfig("hub");
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let mut registry = Registry::with_prefix("jupyterhub_istio_proxy");
    let metrics = KubeMetrics::default();
    metrics.register(&mut registry);
    let store = KubeStore::start_with_metrics(client, &translation, metrics).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await.expect("the cache syncs");
    let watch = Arc::clone(store.watch_stats());
    let backend = Arc::new(IstioBackend::new(Arc::new(store), translation));
    StoreMetrics::new(Arc::clone(&backend), Some(watch)).register(&mut registry);
    Setup { backend, registry }
}

fn scrape(registry: &Registry) -> Scrape {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
    Scrape::parse(&text)
}

fn calls(scrape: &Scrape, verb: &str, resource: &str, outcome: &str) -> f64 {
    scrape.sum(CALLS, &[("verb", verb), ("resource", resource), ("outcome", outcome)])
}

fn route(spec: &str, target: &str) -> Route {
    let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
    Route::new(spec, Target::parse(target).unwrap(), Default::default()).unwrap()
}

#[tokio::test]
async fn every_call_is_counted_by_verb_resource_and_outcome_with_its_latency() {
    let fake = FakeKube::start().await;
    let Setup { backend, registry } = start(&fake).await;
    let started = scrape(&registry);
    // At start: a check that each resource is served, the Go proxy's objects looked for, and
    // the watch's first list.
    assert_eq!(calls(&started, "list", "virtualservices", "ok"), 3.0, "{}", started.text);
    assert_eq!(calls(&started, "list", "serviceentries", "ok"), 1.0, "{}", started.text);
    assert_eq!(started.value("jupyterhub_istio_proxy_route_cache_synced", &[]), Some(1.0));
    assert_eq!(started.value("jupyterhub_istio_proxy_routes", &[]), Some(0.0));
    assert_eq!(started.value("jupyterhub_istio_proxy_watch_lists_total", &[]), Some(1.0));

    // A pod-IP route: its ServiceEntry, then its VirtualService; deleting it removes both.
    backend.add(route("/user/alice", "http://10.0.0.1:8888")).await.unwrap();
    let added = scrape(&registry);
    assert_eq!(calls(&added, "patch", "serviceentries", "ok"), 1.0, "{}", added.text);
    assert_eq!(calls(&added, "patch", "virtualservices", "ok"), 1.0);
    assert_eq!(added.value(LATENCY, &[("verb", "patch"), ("resource", "virtualservices")]), Some(1.0));
    assert_eq!(added.value("jupyterhub_istio_proxy_routes", &[]), Some(1.0));
    backend.delete(&route("/user/alice", "http://a:1").spec().clone()).await.unwrap();
    let deleted = scrape(&registry);
    assert_eq!(calls(&deleted, "delete", "virtualservices", "ok"), 1.0, "{}", deleted.text);
    assert_eq!(calls(&deleted, "delete", "serviceentries", "ok"), 1.0);
    // The delete marks the object first, so that healing tells it from drift: one patch more.
    assert_eq!(calls(&deleted, "patch", "virtualservices", "ok"), 2.0);
    // And the overlay's tombstone reads the server's version.
    assert_eq!(calls(&deleted, "list", "virtualservices", "ok"), 4.0);
    assert_eq!(deleted.value("jupyterhub_istio_proxy_routes", &[]), Some(0.0));

    // A refused write is counted by its class, and timed like any call.
    fake.fail_next(FailureRule::new(Answer::status(403, "Forbidden")).method(Method::PATCH));
    assert!(backend.add(route("/user/bob", "http://bob:8888")).await.is_err());
    let refused = scrape(&registry);
    assert_eq!(calls(&refused, "patch", "virtualservices", "forbidden"), 1.0, "{}", refused.text);
    assert_eq!(refused.value(LATENCY, &[("verb", "patch"), ("resource", "virtualservices")]), Some(3.0));
    assert_eq!(refused.sum(CALLS, &[("verb", "patch")]), 4.0, "nothing else was counted");
}

#[tokio::test]
async fn a_failed_watch_is_counted_and_restarted() {
    let fake = FakeKube::start().await;
    let Setup { registry, .. } = start(&fake).await;
    assert_eq!(scrape(&registry).value("jupyterhub_istio_proxy_watch_restarts_total", &[]), Some(0.0));

    // The watch breaks, and its next start is refused once.
    fake.fail_next(FailureRule::new(Answer::status(500, "InternalError")).watch(true));
    fake.break_watches();
    for _ in 0..200 {
        let now = scrape(&registry);
        if now.value("jupyterhub_istio_proxy_watch_restarts_total", &[]) >= Some(1.0)
            && calls(&now, "watch", "virtualservices", "unavailable") >= 1.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the failed watch was not counted:\n{}", scrape(&registry).text);
}

/// A 429 is the API server's priority and fairness turning a call away unprocessed: the store
/// waits and tries again, counting each 429, and JupyterHub sees its route written. Only a
/// server that keeps refusing makes a 503.
#[tokio::test]
async fn throttled_calls_are_tried_again_and_counted() {
    let fake = FakeKube::start().await;
    let Setup { backend, registry } = start(&fake).await;
    let throttled = Answer::status(429, "TooManyRequests");
    fake.fail_next(FailureRule::new(throttled.clone()).method(Method::PATCH).times(2));
    backend.add(route("/user/a", "http://jupyter-a:8888")).await.unwrap();
    let scraped = scrape(&registry);
    assert_eq!(calls(&scraped, "patch", "virtualservices", "throttled"), 2.0, "{}", scraped.text);
    assert_eq!(calls(&scraped, "patch", "virtualservices", "ok"), 1.0, "{}", scraped.text);

    fake.fail_next(FailureRule::new(throttled).method(Method::PATCH).times(100));
    let error = backend.add(route("/user/b", "http://jupyter-b:8888")).await.unwrap_err();
    assert_eq!(error.status(), 503, "{error}");
    let scraped = scrape(&registry);
    assert_eq!(calls(&scraped, "patch", "virtualservices", "throttled"), 7.0, "2 + 1 call tried 5 times");
}
