//! Serving the app in-process on a loopback port, for HTTP tests.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jhub_proxy_bin::{app, server};
use proxy_api::{ApiConfig, Backend, RoutingMode};
use testkit::client::ApiClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const TOKEN: &str = "test-token-4f1d";

/// A proxy served in-process; dropping it stops it.
pub(crate) struct TestProxy {
    pub(crate) addr: SocketAddr,
    pub(crate) api: ApiClient,
    shutdown: Option<oneshot::Sender<()>>,
    pub(crate) served: JoinHandle<()>,
}

impl TestProxy {
    /// Stops accepting and drains, as on SIGTERM.
    pub(crate) fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shut_down();
    }
}

pub(crate) async fn serve<B: Backend>(
    backend: Arc<B>,
    mode: RoutingMode,
    request_timeout: Duration,
) -> TestProxy {
    serve_with(
        backend,
        mode,
        request_timeout,
        jhub_proxy_bin::health::Readiness::ready(),
        Duration::from_secs(10),
    )
    .await
}

/// [`serve`], with readiness and the ready gate's wait of the test's choosing.
pub(crate) async fn serve_with<B: Backend>(
    backend: Arc<B>,
    mode: RoutingMode,
    request_timeout: Duration,
    ready: jhub_proxy_bin::health::Readiness,
    ready_wait: Duration,
) -> TestProxy {
    serve_explaining(backend, mode, request_timeout, ready, ready_wait, None).await
}

/// [`serve_with`], answering `GET /api/explain` with `explain` when given.
async fn serve_explaining<B: Backend>(
    backend: Arc<B>,
    mode: RoutingMode,
    request_timeout: Duration,
    ready: jhub_proxy_bin::health::Readiness,
    ready_wait: Duration,
    explain: Option<jhub_proxy_bin::explain::Explainer>,
) -> TestProxy {
    let options = app::AppOptions {
        tokens: jhub_proxy_bin::token::Tokens::fixed(TOKEN),
        api: ApiConfig { routing_mode: mode, ..ApiConfig::default() },
        request_timeout,
        client_timeout: server::Limits::default().client_timeout,
        ready,
        ready_wait,
        metrics: Arc::new(jhub_proxy_bin::metrics::Metrics::new()),
        serve_metrics: true,
        explain,
    };
    serve_app(app::service(backend, options), server::Limits::default()).await
}

/// Serves `service` with `limits` on a free loopback port.
pub(crate) async fn serve_app(service: app::HttpService, limits: server::Limits) -> TestProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let served = tokio::spawn(server::serve(
        listener,
        service,
        limits,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    TestProxy { addr, api: ApiClient::new(addr, Some(TOKEN)), shutdown: Some(tx), served }
}

/// A proxy over a fresh memory store, with the Istio translation as `--store memory` runs it.
pub(crate) async fn memory(mode: RoutingMode) -> TestProxy {
    let translation =
        istio_routes::Translation { routing_mode: mode, ..istio_routes::Translation::default() };
    let backend = Arc::new(istio_routes::IstioBackend::new(
        Arc::new(istio_routes::MemoryStore::new(translation.clone())),
        translation,
    ));
    let explain = Some(jhub_proxy_bin::explain::explainer(Arc::clone(&backend)));
    serve_explaining(
        backend,
        mode,
        Duration::from_secs(30),
        jhub_proxy_bin::health::Readiness::ready(),
        Duration::from_secs(10),
        explain,
    )
    .await
}
