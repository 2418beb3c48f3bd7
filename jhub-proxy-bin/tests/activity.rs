//! `last_activity` from the gateway's traffic: the binary reads a real Prometheus, which
//! scrapes Istio-format `istio_requests_total` series that the tests raise as a gateway would.

use std::time::{Duration, Instant};

use istio_routes::Translation;
use jiff::Timestamp;
use proxy_api::{RouteSpec, RoutingMode};
use testkit::client::ApiClient;
use testkit::metrics::Scrape;
use testkit::process::ProxyProcess;
use testkit::prometheus::{IstioExporter, Prometheus};

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "activity-token";
const NAMESPACE: &str = "hub";
/// The step of the activity query (`--activity-interval`), in seconds.
const STEP: u64 = 2;

/// The proxy, with the memory store, reading activity from `prometheus_url`.
async fn proxy(prometheus_url: &str, extra: &[&str]) -> (ProxyProcess, ApiClient) {
    let step = STEP.to_string();
    let mut args = vec![
        "--store",
        "memory",
        "--k8s-namespace",
        NAMESPACE,
        "--activity-prometheus-url",
        prometheus_url,
        "--activity-interval",
        &step,
        "--activity-lookback",
        "600",
    ];
    args.extend_from_slice(extra);
    let proxy = ProxyProcess::start(BIN, &args, TOKEN).await;
    let api = ApiClient::new(proxy.addr(), Some(TOKEN));
    (proxy, api)
}

/// Alice's server by pod IP (a ServiceEntry host of its own), Bob's by service.
async fn add_routes(api: &ApiClient) {
    let alice =
        api.post("/api/routes/user/alice", r#"{"target":"http://10.0.0.7:8888","user":"alice"}"#).await;
    assert_eq!(alice.status, 201);
    let bob = api.post("/api/routes/user/bob", r#"{"target":"http://jupyter-bob:8888","user":"bob"}"#).await;
    assert_eq!(bob.status, 201);
}

/// The host the gateway reports Alice's requests under: her route's ServiceEntry host.
fn alice_host() -> String {
    let translation = Translation { namespace: NAMESPACE.to_owned(), ..Translation::default() };
    translation.service_entry_host(&RouteSpec::new("/user/alice", RoutingMode::Path).unwrap())
}

const BOB_HOST: &str = "jupyter-bob.hub.svc.cluster.local";

/// A route's `last_activity` in a listing, if it has one.
async fn last_activity(api: &ApiClient, query: &str, spec: &str) -> Option<String> {
    let listing = api.get(&format!("/api/routes{query}")).await;
    assert_eq!(listing.status, 200);
    listing.json()[spec]["last_activity"].as_str().map(str::to_owned)
}

/// Polls until `spec` has a `last_activity` other than `not`, for up to 30 s.
async fn wait_for_activity(api: &ApiClient, spec: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(stamp) = last_activity(api, "", spec).await
            && Some(stamp.as_str()) != not
        {
            return stamp;
        }
        assert!(Instant::now() < deadline, "{spec} got no (new) last_activity in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn parse(stamp: &str) -> Timestamp {
    stamp.parse().unwrap_or_else(|e| panic!("{stamp:?} is not a timestamp: {e}"))
}

#[tokio::test]
async fn last_activity_follows_the_gateways_requests_and_is_the_same_after_a_restart() {
    let exporter = IstioExporter::start().await;
    let prometheus = Prometheus::start(&[exporter.addr()]).await;
    let (first, api) = proxy(&prometheus.url(), &[]).await;
    add_routes(&api).await;

    // Alice's first requests: her series appears at once with 3, never at zero, as in Envoy.
    let sent = Timestamp::now();
    exporter.requests(&alice_host(), 3);
    // Bob's requests are reported by a sidecar, not by the gateway: they do not count.
    exporter.requests_with(
        &[
            ("reporter", "destination"),
            ("source_workload", "istio-ingressgateway"),
            ("source_workload_namespace", "istio-system"),
        ],
        BOB_HOST,
        5,
    );
    let seen = wait_for_activity(&api, "/user/alice", None).await;
    assert!(
        seen.ends_with('Z') && seen.len() == "2026-11-30T12:34:56.789Z".len(),
        "as CHP writes it: {seen}"
    );
    let lag = parse(&seen).duration_since(sent).as_secs_f64();
    // Never before the requests; at most two steps and a scrape after them.
    assert!((-1.0..=(2 * STEP + 2) as f64).contains(&lag), "{seen} is {lag} s after the requests at {sent}");
    assert_eq!(last_activity(&api, "", "/user/bob").await, None, "no gateway traffic, no last_activity");
    let listing = api.get("/api/routes").await.json();
    assert_eq!(listing["/user/alice"]["user"], "alice", "JupyterHub's data stays");

    // Once the counter stops rising, the time stops moving.
    tokio::time::sleep(Duration::from_secs(3 * STEP + 2)).await;
    let settled = last_activity(&api, "", "/user/alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(STEP + 1)).await;
    assert_eq!(last_activity(&api, "", "/user/alice").await.unwrap(), settled);

    // inactive_since filters on it; a route without one is never reported inactive.
    let after = (parse(&settled) + jiff::SignedDuration::from_secs(1)).to_string();
    let before = (parse(&settled) - jiff::SignedDuration::from_secs(1)).to_string();
    let inactive = api.get(&format!("/api/routes?inactive_since={after}")).await.json();
    assert_eq!(inactive.as_object().unwrap().keys().collect::<Vec<_>>(), ["/user/alice"]);
    let inactive = api.get(&format!("/api/routes?inactive_since={before}")).await.json();
    assert!(inactive.as_object().unwrap().is_empty(), "{inactive}");

    // Another replica, started now, answers the same time: nothing was kept but in Prometheus.
    let (_second, second_api) = proxy(&prometheus.url(), &[]).await;
    add_routes(&second_api).await;
    assert_eq!(wait_for_activity(&second_api, "/user/alice", None).await, settled);
    drop(first);

    // More requests move it forward, on both.
    let later = Timestamp::now();
    exporter.requests(&alice_host(), 2);
    let moved = wait_for_activity(&second_api, "/user/alice", Some(&settled)).await;
    assert!(parse(&moved) >= later - jiff::SignedDuration::from_secs(1), "{moved} is before {later}");
}

#[tokio::test]
async fn with_prometheus_down_routes_keep_their_last_known_activity_and_the_failure_shows() {
    let exporter = IstioExporter::start().await;
    let mut prometheus = Prometheus::start(&[exporter.addr()]).await;
    let (proxy, api) = proxy(&prometheus.url(), &["--activity-timeout", "1"]).await;
    add_routes(&api).await;
    exporter.requests(BOB_HOST, 1);
    let known = wait_for_activity(&api, "/user/bob", None).await;
    let failures = || async {
        let scrape = Scrape::parse(std::str::from_utf8(&api.get("/metrics").await.body).unwrap());
        let last = scrape.value("jupyterhub_istio_proxy_activity_last_success_timestamp_seconds", &[]);
        assert!(last.is_some_and(|t| t > 0.0), "{}", scrape.text);
        scrape.value("jupyterhub_istio_proxy_activity_refresh_failures_total", &[]).unwrap()
    };
    assert_eq!(failures().await, 0.0);

    prometheus.stop().await;
    testkit::eventually("a failed query is counted", || async { failures().await >= 1.0 }).await;
    let started = Instant::now();
    assert_eq!(last_activity(&api, "", "/user/bob").await.as_deref(), Some(known.as_str()));
    assert!(started.elapsed() < Duration::from_millis(500), "the listing waited on Prometheus");
    assert!(proxy.log().contains("routes keep their last known last_activity"), "{}", proxy.log());

    // Back: what happens now is read again.
    prometheus.restart().await;
    exporter.requests(BOB_HOST, 1);
    let after = wait_for_activity(&api, "/user/bob", Some(&known)).await;
    assert!(parse(&after) > parse(&known), "{after} after {known}");
}

#[tokio::test]
async fn a_prometheus_that_never_answers_times_out_without_holding_the_api() {
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (proxy, api) = proxy(&url, &["--activity-timeout", "1"]).await;
    add_routes(&api).await;
    let started = Instant::now();
    let listing = api.get("/api/routes").await;
    assert_eq!(listing.status, 200);
    assert!(started.elapsed() < Duration::from_millis(500), "the listing waited on Prometheus");
    assert!(listing.json()["/user/alice"].get("last_activity").is_none());
    testkit::eventually("the timeout is logged", || async {
        proxy.log().contains("no answer within 1 s (--activity-timeout)")
    })
    .await;
    drop(silent);
}

/// With `--routing gateway-api`, on Istio's implementation of the Gateway API: its gateways
/// report a request's `destination_service` as the Service the HTTPRoute's backendRef names,
/// the route's own Service for a pod IP (KubeSpawner's), the target's for a Service target.
#[tokio::test]
async fn gateway_api_routes_take_the_activity_of_the_services_they_route_to() {
    let exporter = IstioExporter::start().await;
    let prometheus = Prometheus::start(&[exporter.addr()]).await;
    let gateway = ["--routing", "gateway-api", "--parent-ref", "istio-system/jupyterhub"];
    let (_proxy, api) = proxy(&prometheus.url(), &gateway).await;
    add_routes(&api).await;
    let alice = gateway_routes::GatewayTranslation { namespace: NAMESPACE.to_owned(), ..Default::default() }
        .object_name(&RouteSpec::new("/user/alice", RoutingMode::Path).unwrap());
    let alice_service = format!("{alice}.{NAMESPACE}.svc.cluster.local");
    assert_ne!(alice_service, alice_host(), "not the ServiceEntry host Istio routing writes");

    let sent = Timestamp::now();
    exporter.requests(&alice_service, 3);
    exporter.requests(BOB_HOST, 2);
    for spec in ["/user/alice", "/user/bob"] {
        let seen = wait_for_activity(&api, spec, None).await;
        let lag = parse(&seen).duration_since(sent).as_secs_f64();
        assert!((-1.0..=(2 * STEP + 2) as f64).contains(&lag), "{spec}: {seen} is {lag} s after {sent}");
    }
}
