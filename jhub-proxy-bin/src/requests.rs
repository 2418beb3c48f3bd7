//! What is recorded of every request: one log line and the request metrics.
//!
//! The line is `request` with `status` and `duration_ms`, in the span `request` with `method`
//! and `path` (without the query), and the `target` of a route being added (recorded by the
//! routes API), so whatever is logged while the request runs names it too.
//! Headers are never logged: they carry the token. The API's requests are logged at INFO; the
//! probes and scrapes, which come every few seconds, at DEBUG, and stay out of the metrics.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use proxy_api::ResponseFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::{HttpMetrics, is_unmetered};

/// Logs and counts every request; the outermost layer, so it sees every answer.
#[derive(Debug, Clone)]
pub struct RequestsLayer {
    metrics: HttpMetrics,
}

impl RequestsLayer {
    /// Counting into `metrics`.
    pub fn new(metrics: HttpMetrics) -> Self {
        RequestsLayer { metrics }
    }
}

impl<S> Layer<S> for RequestsLayer {
    type Service = Requests<S>;

    fn layer(&self, inner: S) -> Requests<S> {
        Requests { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`RequestsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Requests<S> {
    inner: S,
    metrics: HttpMetrics,
}

impl<S, B, R> Service<Request<B>> for Requests<S>
where
    S: Service<Request<B>, Response = Response<R>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = Infallible;
    type Future = ResponseFuture<R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        let quiet = is_unmetered(request.uri().path());
        let span = tracing::info_span!(
            "request",
            %method,
            path = %request.uri().path(),
            target = tracing::field::Empty
        );
        let answer = span.in_scope(|| self.inner.call(request)).instrument(span.clone());
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let Ok(response) = answer.await;
            let took = started.elapsed();
            let status = response.status().as_u16();
            // Milliseconds with microseconds: reads take well under one.
            let duration_ms = took.as_micros() as f64 / 1000.0;
            let _in_request = span.enter();
            if quiet {
                tracing::debug!(status, duration_ms, "request");
            } else {
                metrics.record(&method, response.status(), took);
                tracing::info!(status, duration_ms, "request");
            }
            Ok(response)
        })
    }
}
