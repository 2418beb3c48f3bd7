//! The HTTP service: the routes API behind its layers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use proxy_api::{ApiConfig, Backend, RoutesApi};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::timeout::TimeoutLayer;

use crate::auth::RequireTokenLayer;
use crate::explain::{ExplainLayer, Explainer};
use crate::gate::ReadyGateLayer;
use crate::health::{AnswerLayer, HealthLayer, Readiness};
use crate::metrics::{Metrics, MetricsEndpoint};
use crate::requests::RequestsLayer;
use crate::server::DeadlineBody;

/// The service the server runs for every connection.
pub type HttpService =
    BoxCloneSyncService<Request<Incoming>, Response<UnsyncBoxBody<Bytes, Infallible>>, Infallible>;

/// What the service stack needs besides the backend.
#[derive(Clone)]
pub struct AppOptions {
    /// The token JupyterHub sends, as it is now.
    pub tokens: crate::token::Tokens,
    /// How the API reads requests.
    pub api: ApiConfig,
    /// How long one request may take before it is answered 504.
    pub request_timeout: Duration,
    /// How long a request's body may take to arrive, after its headers, before it is answered
    /// 408 (`--client-timeout`, which also bounds the headers: [`crate::server::Limits`]).
    pub client_timeout: Duration,
    /// Whether the backend can serve now, for `/readyz` and the gate.
    pub ready: Readiness,
    /// How long an API request waits for the backend to become ready.
    pub ready_wait: Duration,
    /// The metrics requests are counted in.
    pub metrics: Arc<Metrics>,
    /// Whether `GET /metrics` is served here (no `--metrics-listen`).
    pub serve_metrics: bool,
    /// What answers `GET /api/explain`; without it, that path is the routes API's 404.
    pub explain: Option<Explainer>,
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions")
            .field("api", &self.api)
            .field("request_timeout", &self.request_timeout)
            .field("client_timeout", &self.client_timeout)
            .field("serve_metrics", &self.serve_metrics)
            .finish_non_exhaustive()
    }
}

/// The routes API over `backend`, in its layers, outermost first: one log line and the
/// metrics per request (`requests`; never headers, which carry the token), the body's deadline
/// (408 for a slow body), `/metrics` when served here, the request timeout, the unauthenticated
/// probes, the token check, the gate that holds requests until the store is ready, and
/// `GET /api/explain` when there is an explainer.
pub fn service<B: Backend>(backend: Arc<B>, options: AppOptions) -> HttpService {
    let endpoint = options.serve_metrics.then(|| Arc::clone(&options.metrics));
    let client_timeout = options.client_timeout;
    let stack = ServiceBuilder::new()
        .layer(RequestsLayer::new(options.metrics.http().clone()))
        .map_request(move |request: Request<Incoming>| {
            request.map(|body| DeadlineBody::new(body, client_timeout))
        })
        .layer(AnswerLayer::with(MetricsEndpoint(endpoint)))
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, options.request_timeout))
        .layer(HealthLayer::new(options.ready.clone()))
        .layer(RequireTokenLayer::new(options.tokens, options.metrics.auth().clone()))
        .layer(ReadyGateLayer::new(options.ready, options.ready_wait))
        .option_layer(options.explain.map(ExplainLayer))
        .service(RoutesApi::new(backend, options.api));
    boxed(stack)
}

/// `GET /metrics` alone, for its own listener (`--metrics-listen`); anything else is a 404.
pub fn metrics_service(metrics: Arc<Metrics>) -> HttpService {
    let not_found = tower::service_fn(|_: Request<Incoming>| {
        let body = serde_json::json!({"error": "only GET /metrics is served here"});
        std::future::ready(Ok::<_, Infallible>(proxy_api::json_response(StatusCode::NOT_FOUND, &body)))
    });
    let stack = ServiceBuilder::new()
        .layer(RequestsLayer::new(metrics.http().clone()))
        .layer(AnswerLayer::with(MetricsEndpoint(Some(metrics))))
        .service(not_found);
    boxed(stack)
}

/// The probes, and `GET /metrics` when `metrics` is given, alone, for the probe listener
/// (configurable-http-proxy's `--ip`/`--port`); anything else is a 404.
pub fn probes_service(ready: Readiness, metrics: Arc<Metrics>, serve_metrics: bool) -> HttpService {
    let not_found = tower::service_fn(|_: Request<Incoming>| {
        let body = serde_json::json!({"error": "only the probes and GET /metrics are served here; the API is on --listen"});
        std::future::ready(Ok::<_, Infallible>(proxy_api::json_response(StatusCode::NOT_FOUND, &body)))
    });
    let endpoint = serve_metrics.then(|| Arc::clone(&metrics));
    let stack = ServiceBuilder::new()
        .layer(RequestsLayer::new(metrics.http().clone()))
        .layer(AnswerLayer::with(MetricsEndpoint(endpoint)))
        .layer(HealthLayer::new(ready))
        .service(not_found);
    boxed(stack)
}

/// The server's service type: bodies boxed, cloned per connection.
fn boxed<S, B>(stack: S) -> HttpService
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let boxed_bodies =
        ServiceExt::<Request<Incoming>>::map_response(stack, |response| response.map(BodyExt::boxed_unsync));
    BoxCloneSyncService::new(boxed_bodies)
}
