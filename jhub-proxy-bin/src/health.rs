//! Unauthenticated probes: `/ping` (as the Go proxy answered it), `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use proxy_api::json_response;
use serde_json::json;
use tower::{Layer, Service};

/// Answers whether the proxy can serve the routes API now.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Answers the probes in front of the authenticated API.
#[derive(Clone)]
pub struct HealthLayer {
    ready: ReadyCheck,
}

impl HealthLayer {
    /// Probes that report readiness by `ready`.
    pub fn new(ready: ReadyCheck) -> Self {
        HealthLayer { ready }
    }
}

impl std::fmt::Debug for HealthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Health<S> {
        Health { inner, ready: Arc::clone(&self.ready) }
    }
}

/// The service [`HealthLayer`] makes.
#[derive(Clone)]
pub struct Health<S> {
    inner: S,
    ready: ReadyCheck,
}

impl<S> std::fmt::Debug for Health<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for Health<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.method() != Method::GET {
            return Box::pin(self.inner.call(request));
        }
        let response = match request.uri().path() {
            "/ping" => json_response(StatusCode::OK, &json!({"message": "pong"})),
            "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" if (self.ready)() => json_response(StatusCode::OK, &json!({"status": "ready"})),
            "/readyz" => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "not ready"})),
            _ => return Box::pin(self.inner.call(request)),
        };
        Box::pin(std::future::ready(Ok(response)))
    }
}
