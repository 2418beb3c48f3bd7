//! `GET /metrics`: the API's requests by method and status, on the API port or on
//! `--metrics-listen` alone, and the store's and the build's metrics as the binary wires them.

mod common;

use std::net::SocketAddr;

use proxy_api::RoutingMode;
use testkit::client::ApiClient;
use testkit::fake_kube::FakeKube;
use testkit::metrics::Scrape;
use testkit::process::ProxyProcess;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const REQUESTS: &str = "jupyterhub_istio_proxy_http_requests_total";
const LATENCY: &str = "jupyterhub_istio_proxy_http_request_duration_seconds_count";

/// Scrapes without a token, as Prometheus does.
async fn scrape(addr: SocketAddr) -> Scrape {
    let response = ApiClient::new(addr, None).get("/metrics").await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(response.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    Scrape::parse(std::str::from_utf8(&response.body).unwrap())
}

fn requests(scrape: &Scrape, method: &str, status: &str) -> f64 {
    scrape.sum(REQUESTS, &[("method", method), ("status", status)])
}

#[tokio::test]
async fn requests_are_counted_by_method_and_status_with_latency() {
    let proxy = common::memory(RoutingMode::Path).await;
    let before = scrape(proxy.addr).await;
    assert_eq!(before.sum(REQUESTS, &[]), 0.0, "{}", before.text);

    let api = &proxy.api;
    assert_eq!(api.post("/api/routes/user/a", r#"{"target":"http://a:1"}"#).await.status, 201);
    assert_eq!(api.post("/api/routes/user/b", r#"{"target":"no url"}"#).await.status, 400);
    assert_eq!(api.get("/api/routes").await.status, 200);
    assert_eq!(api.with_token(Some("wrong")).get("/api/routes").await.status, 403);
    assert_eq!(api.delete("/api/routes/user/a").await.status, 204);
    // Probes and scrapes stay out of the request metrics.
    assert_eq!(api.get("/ping").await.status, 200);
    assert_eq!(api.get("/readyz").await.status, 200);

    let after = scrape(proxy.addr).await;
    assert_eq!(requests(&after, "POST", "201"), 1.0, "{}", after.text);
    assert_eq!(requests(&after, "POST", "400"), 1.0);
    assert_eq!(requests(&after, "GET", "200"), 1.0);
    assert_eq!(requests(&after, "GET", "403"), 1.0);
    assert_eq!(requests(&after, "DELETE", "204"), 1.0);
    assert_eq!(after.sum(REQUESTS, &[]), 5.0, "nothing else counted");
    assert_eq!(after.value(LATENCY, &[("method", "GET")]), Some(2.0));
    assert_eq!(after.value(LATENCY, &[("method", "POST")]), Some(2.0));
    assert!(after.samples.iter().all(|s| !s.labels.contains_key("path")), "no series per path");
}

/// The address in the proxy's `serving metrics on http://ADDR/metrics` line.
fn metrics_addr(log: &str) -> SocketAddr {
    let (_, rest) = log.split_once("serving metrics on http://").expect("the metrics address is logged");
    rest.split("/metrics").next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn metrics_listen_serves_metrics_there_and_not_on_the_api_port() {
    let proxy =
        ProxyProcess::start(BIN, &["--store", "memory", "--metrics-listen", "127.0.0.1:0"], common::TOKEN)
            .await;
    let metrics = metrics_addr(&proxy.log());
    assert_ne!(metrics, proxy.addr());
    let api = ApiClient::new(proxy.addr(), Some(common::TOKEN));
    assert_eq!(api.post("/api/routes/user/a", r#"{"target":"http://a:1"}"#).await.status, 201);

    let scraped = scrape(metrics).await;
    assert_eq!(requests(&scraped, "POST", "201"), 1.0, "{}", scraped.text);
    assert_eq!(scraped.value("jupyterhub_istio_proxy_routes", &[]), Some(1.0));
    assert_eq!(scraped.value("jupyterhub_istio_proxy_route_cache_synced", &[]), Some(1.0));
    let build = [("version", env!("CARGO_PKG_VERSION")), ("commit", jhub_proxy_bin::COMMIT)];
    assert_eq!(scraped.value("jupyterhub_istio_proxy_build_info", &build), Some(1.0));

    // The API port has no /metrics, with a token or without; the metrics port nothing else.
    let on_api = api.with_token(None).get("/metrics").await;
    assert_eq!(on_api.status, 403);
    assert_eq!(api.get("/metrics").await.status, 404);
    assert_eq!(ApiClient::new(metrics, Some(common::TOKEN)).get("/api/routes").await.status, 404);
}

/// configurable-http-proxy's `--ip`/`--port` (Zero to JupyterHub's proxy pod): the probes and
/// metrics on that listener, metrics no longer on the API's port; `--metrics-port` moves
/// metrics off it again.
#[tokio::test]
async fn the_probe_listener_serves_the_probes_and_metrics() {
    let args = ["--store", "memory", "--ip", "127.0.0.1", "--port", "0"];
    let proxy = ProxyProcess::start(BIN, &args, common::TOKEN).await;
    let log = proxy.log();
    let (_, rest) =
        log.split_once("serving probes (/_chp_healthz) on http://").expect("the probe listener is logged");
    let probes: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let anonymous = ApiClient::new(probes, None);
    for path in ["/_chp_healthz", "/ping", "/healthz", "/readyz"] {
        assert_eq!(anonymous.get(path).await.status, 200, "{path}");
    }
    assert_eq!(anonymous.get("/_chp_healthz").await.json(), serde_json::json!({"status": "OK"}));
    scrape(probes).await;
    assert_eq!(ApiClient::new(probes, Some(common::TOKEN)).get("/api/routes").await.status, 404);
    let api = ApiClient::new(proxy.addr(), Some(common::TOKEN));
    assert_eq!(api.get("/metrics").await.status, 404, "metrics left the API's port");
    assert_eq!(
        api.with_token(None).get("/_chp_healthz").await.status,
        200,
        "the API's port has the probes too"
    );
    drop(proxy);

    let args = ["--store", "memory", "--port", "0", "--metrics-ip", "127.0.0.1", "--metrics-port", "0"];
    let proxy = ProxyProcess::start(BIN, &args, common::TOKEN).await;
    let metrics = metrics_addr(&proxy.log());
    scrape(metrics).await;
}

#[tokio::test]
async fn the_kubernetes_store_reports_its_calls_and_its_cache() {
    let fake = FakeKube::start().await;
    let kubeconfig = std::env::temp_dir().join(format!("jhub-proxy-metrics-{}", std::process::id()));
    fake.write_kubeconfig(&kubeconfig, "hub");
    let mut command = Command::new(BIN);
    command.env_clear().env("KUBECONFIG", &kubeconfig).env("CONFIGPROXY_AUTH_TOKEN", common::TOKEN).args([
        "--store",
        "kubernetes",
        "--listen",
        "127.0.0.1:0",
    ]);
    let proxy = ProxyProcess::spawn(command).await;
    let api = ApiClient::new(proxy.addr(), Some(common::TOKEN));
    assert_eq!(api.post("/api/routes/user/a", r#"{"target":"http://10.0.0.1:8888"}"#).await.status, 201);
    fake.fail_next(
        testkit::fake_kube::FailureRule::new(testkit::fake_kube::Answer::status(403, "Forbidden"))
            .method(http::Method::PATCH),
    );
    assert_eq!(api.post("/api/routes/user/b", r#"{"target":"http://b:8888"}"#).await.status, 403);
    // A throttled call is tried again by the store and counted, not retried unseen by kube.
    fake.fail_next(
        testkit::fake_kube::FailureRule::new(testkit::fake_kube::Answer::status(429, "TooManyRequests"))
            .method(http::Method::PATCH),
    );
    assert_eq!(api.post("/api/routes/user/c", r#"{"target":"http://c:8888"}"#).await.status, 201);

    let scraped = scrape(proxy.addr()).await;
    let calls = |verb, resource, outcome| {
        scraped.sum(
            "jupyterhub_istio_proxy_kubernetes_requests_total",
            &[("verb", verb), ("resource", resource), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("patch", "serviceentries", "ok"), 1.0, "{}", scraped.text);
    assert_eq!(calls("patch", "virtualservices", "ok"), 2.0);
    assert_eq!(calls("patch", "virtualservices", "forbidden"), 1.0);
    assert_eq!(calls("patch", "virtualservices", "throttled"), 1.0);
    assert!(calls("list", "virtualservices", "ok") >= 1.0);
    assert_eq!(scraped.value("jupyterhub_istio_proxy_route_cache_synced", &[]), Some(1.0));
    assert_eq!(scraped.value("jupyterhub_istio_proxy_routes", &[]), Some(2.0));
    assert_eq!(scraped.value("jupyterhub_istio_proxy_watch_lists_total", &[]), Some(1.0));
    assert_eq!(requests(&scraped, "POST", "403"), 1.0);
    assert_eq!(requests(&scraped, "POST", "201"), 2.0);
    let _ = std::fs::remove_file(kubeconfig);
}
