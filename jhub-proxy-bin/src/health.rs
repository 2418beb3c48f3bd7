//! Unauthenticated answers in front of the API: the probes `/ping` (as the Go proxy answered
//! it), `/healthz`, `/readyz` and `/_chp_healthz` (as configurable-http-proxy answers it), and
//! (through [`Responder`]) `/metrics`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use proxy_api::{ResponseFuture, json_response};
use serde_json::json;
use tokio::sync::watch;
use tower::{Layer, Service};

/// Whether the proxy can serve the routes API: the store's readiness signal, read by the probes
/// and awaited by the ready gate, which is woken when it turns, never polling.
#[derive(Debug, Clone)]
pub struct Readiness(watch::Receiver<bool>);

impl Readiness {
    /// Ready from the start (the memory store).
    pub fn ready() -> Readiness {
        Readiness(watch::channel(true).1)
    }

    /// Ready once `signal` says `true` (the Kubernetes store's first list).
    pub fn from_signal(signal: watch::Receiver<bool>) -> Readiness {
        Readiness(signal)
    }

    /// Whether the proxy can serve now.
    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the proxy can serve: `false` if the signal's sender is gone before that.
    pub async fn wait(&self) -> bool {
        self.0.clone().wait_for(|ready| *ready).await.is_ok()
    }
}

/// Answers some requests itself, by method and path, in front of the service it wraps.
pub trait Responder: Clone + Send + Sync + 'static {
    /// The answer to `method path`, or `None` to pass the request on.
    fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>>;
}

/// A layer that answers what its [`Responder`] answers and passes the rest on: the probes
/// ([`HealthLayer`]) and `/metrics`, unauthenticated, in front of the token check.
#[derive(Debug, Clone)]
pub struct AnswerLayer<R> {
    responder: R,
}

impl<R: Responder> AnswerLayer<R> {
    /// Answering with `responder`.
    pub fn with(responder: R) -> Self {
        AnswerLayer { responder }
    }
}

impl<S, R: Responder> Layer<S> for AnswerLayer<R> {
    type Service = Answer<S, R>;

    fn layer(&self, inner: S) -> Answer<S, R> {
        Answer { inner, responder: self.responder.clone() }
    }
}

/// The service [`AnswerLayer`] makes.
#[derive(Debug, Clone)]
pub struct Answer<S, R> {
    inner: S,
    responder: R,
}

impl<S, B, R> Service<Request<B>> for Answer<S, R>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
    R: Responder,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.responder.respond(request.method(), request.uri().path()) {
            Some(response) => Box::pin(std::future::ready(Ok(response))),
            None => Box::pin(self.inner.call(request)),
        }
    }
}

/// The probes in front of the authenticated API.
pub type HealthLayer = AnswerLayer<Probes>;

impl HealthLayer {
    /// Probes that report readiness by `ready`.
    pub fn new(ready: Readiness) -> Self {
        AnswerLayer::with(Probes { ready })
    }
}

/// configurable-http-proxy's probe, which Zero to JupyterHub polls for liveness and readiness.
pub const CHP_HEALTHZ: &str = "/_chp_healthz";

/// `/ping`, `/healthz`, `/readyz` and [`CHP_HEALTHZ`].
#[derive(Debug, Clone)]
pub struct Probes {
    ready: Readiness,
}

impl Responder for Probes {
    fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        if method != Method::GET {
            return None;
        }
        Some(match path {
            "/ping" => json_response(StatusCode::OK, &json!({"message": "pong"})),
            "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" if self.ready.is_ready() => json_response(StatusCode::OK, &json!({"status": "ready"})),
            "/readyz" => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "not ready"})),
            // configurable-http-proxy's answer. Zero to JupyterHub uses it for readiness as well
            // as liveness, so it is `/readyz` here: 503 until the route cache has loaded, which
            // the liveness probe there waits out (60 s, then 30 failures 10 s apart).
            CHP_HEALTHZ if self.ready.is_ready() => json_response(StatusCode::OK, &json!({"status": "OK"})),
            CHP_HEALTHZ => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "not ready"})),
            _ => return None,
        })
    }
}
