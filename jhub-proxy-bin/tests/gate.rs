//! The ready gate: API requests wait for the store's first sync, for a bounded time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::serve_with;
use http::StatusCode;
use istio_routes::{IstioBackend, MemoryStore, Translation};
use proxy_api::RoutingMode;

async fn proxy(ready: Arc<AtomicBool>, wait: Duration) -> common::TestProxy {
    let backend = Arc::new(IstioBackend::new(
        Arc::new(MemoryStore::new(Translation::default())),
        Translation::default(),
    ));
    let check = Arc::new(move || ready.load(Ordering::SeqCst));
    serve_with(backend, RoutingMode::Path, Duration::from_secs(30), check, wait).await
}

#[tokio::test]
async fn requests_wait_for_readiness_then_go_through() {
    let ready = Arc::new(AtomicBool::new(false));
    let proxy = proxy(Arc::clone(&ready), Duration::from_secs(10)).await;
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
    ready.store(true, Ordering::SeqCst);
    assert_eq!(held.await.unwrap().status, StatusCode::CREATED);
    assert_eq!(proxy.api.with_token(None).get("/readyz").await.status, StatusCode::OK);
    assert_eq!(proxy.api.with_token(None).get("/_chp_healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_store_that_stays_unready_is_a_503_with_retry_after() {
    let proxy = proxy(Arc::new(AtomicBool::new(false)), Duration::from_millis(300)).await;
    let response = proxy.api.get("/api/routes").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers[http::header::RETRY_AFTER], "1");
    assert!(response.error().contains("still loading"), "{}", response.error());
    // The token is checked before anything waits.
    let refused = proxy.api.with_token(Some("wrong")).get("/api/routes").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
