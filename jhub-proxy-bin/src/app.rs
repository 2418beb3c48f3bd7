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
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::RequireTokenLayer;
use crate::gate::ReadyGateLayer;
use crate::health::{HealthLayer, ReadyCheck};

/// The service the server runs for every connection.
pub type HttpService =
    BoxCloneSyncService<Request<Incoming>, Response<UnsyncBoxBody<Bytes, Infallible>>, Infallible>;

/// What the service stack needs besides the backend.
#[derive(Clone)]
pub struct AppOptions {
    /// The token JupyterHub sends.
    pub token: String,
    /// How the API reads requests.
    pub api: ApiConfig,
    /// How long one request may take before it is answered 504.
    pub request_timeout: Duration,
    /// Whether the backend can serve now, for `/readyz` and the gate.
    pub ready: ReadyCheck,
    /// How long an API request waits for the backend to become ready.
    pub ready_wait: Duration,
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions")
            .field("api", &self.api)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The routes API over `backend`, in its layers, outermost first: request tracing (method,
/// path, status and latency; never headers, which carry the token), the request timeout, the
/// unauthenticated probes, the token check, and the gate that holds requests until the store
/// is ready.
pub fn service<B: Backend>(backend: Arc<B>, options: AppOptions) -> HttpService {
    let stack = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, options.request_timeout))
        .layer(HealthLayer::new(options.ready.clone()))
        .layer(RequireTokenLayer::new(&options.token))
        .layer(ReadyGateLayer::new(options.ready, options.ready_wait))
        .service(RoutesApi::new(backend, options.api));
    let boxed_bodies =
        ServiceExt::<Request<Incoming>>::map_response(stack, |response| response.map(BodyExt::boxed_unsync));
    BoxCloneSyncService::new(boxed_bodies)
}
