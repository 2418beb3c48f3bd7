//! The ready gate: API requests wait for the store's first sync, for a bounded time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::serve_with;
use http::StatusCode;
use istio_routes::{IstioBackend, MemoryStore, Translation};
use jhub_proxy_bin::health::Readiness;
use proxy_api::RoutingMode;
use tokio::sync::watch;

async fn proxy(ready: watch::Receiver<bool>, wait: Duration) -> common::TestProxy {
    let backend = Arc::new(IstioBackend::new(
        Arc::new(MemoryStore::new(Translation::default())),
        Translation::default(),
    ));
    serve_with(backend, RoutingMode::Path, Duration::from_secs(30), Readiness::from_signal(ready), wait).await
}

#[tokio::test]
async fn requests_wait_for_readiness_then_go_through() {
    let (ready, signal) = watch::channel(false);
    let proxy = proxy(signal, Duration::from_secs(10)).await;
    assert_eq!(proxy.api.with_token(None).get("/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    // configurable-http-proxy's probe, which Zero to JupyterHub uses for readiness, follows it.
    assert_eq!(proxy.api.with_token(None).get("/_chp_healthz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        proxy.api.with_token(None).get("/healthz").await.status,
        StatusCode::OK,
        "alive while not ready"
    );

    let api = proxy.api.clone();
    let held =
        tokio::spawn(async move { api.post("/api/routes/user/a", r#"{"target": "http://a:1"}"#).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "answered before the store was ready");
    ready.send_replace(true);
    assert_eq!(held.await.unwrap().status, StatusCode::CREATED);
    assert_eq!(proxy.api.with_token(None).get("/readyz").await.status, StatusCode::OK);
    assert_eq!(proxy.api.with_token(None).get("/_chp_healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_store_that_stays_unready_is_a_503_with_retry_after() {
    let (_ready, signal) = watch::channel(false);
    let proxy = proxy(signal, Duration::from_millis(300)).await;
    let response = proxy.api.get("/api/routes").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers[http::header::RETRY_AFTER], "1");
    assert!(response.error().contains("still loading"), "{}", response.error());
    // The token is checked before anything waits.
    let refused = proxy.api.with_token(Some("wrong")).get("/api/routes").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
