//! Holding API requests until the store is ready: after start, the Kubernetes store's cache
//! needs its first list before it can answer. A request waits up to a bound, woken by the
//! store's readiness signal, then is answered 503 with `Retry-After`, which JupyterHub retries.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use proxy_api::{Error, ResponseFuture};
use tower::{Layer, Service};

use crate::health::Readiness;

/// Holds requests until `ready` says so, for at most `wait`.
#[derive(Debug, Clone)]
pub struct ReadyGateLayer {
    ready: Readiness,
    wait: Duration,
}

impl ReadyGateLayer {
    /// A gate on `ready` that holds a request for at most `wait`.
    pub fn new(ready: Readiness, wait: Duration) -> Self {
        ReadyGateLayer { ready, wait }
    }
}

impl<S> Layer<S> for ReadyGateLayer {
    type Service = ReadyGate<S>;

    fn layer(&self, inner: S) -> ReadyGate<S> {
        ReadyGate { inner, ready: self.ready.clone(), wait: self.wait }
    }
}

/// The service [`ReadyGateLayer`] makes.
#[derive(Debug, Clone)]
pub struct ReadyGate<S> {
    inner: S,
    ready: Readiness,
    wait: Duration,
}

impl<S, B> Service<Request<B>> for ReadyGate<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.ready.is_ready() {
            return Box::pin(self.inner.call(request));
        }
        // The inner service was readied for this call; take it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (ready, wait) = (self.ready.clone(), self.wait);
        Box::pin(async move {
            if let Ok(true) = tokio::time::timeout(wait, ready.wait()).await {
                return inner.call(request).await;
            }
            Ok(Error::Unavailable {
                message: "the route cache is still loading from the Kubernetes API server".to_owned(),
                retry_after: Some(Duration::from_secs(1)),
                source: None,
            }
            .into_response())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held request goes on the moment the store is ready, not at a poll's next tick: with the
    /// clock paused, no time passes between the two.
    #[tokio::test(start_paused = true)]
    async fn a_held_request_is_woken_by_the_signal_not_a_poll() {
        let (signal, receiver) = tokio::sync::watch::channel(false);
        let ok =
            tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(Full::default())) });
        let mut gate =
            ReadyGateLayer::new(Readiness::from_signal(receiver), Duration::from_secs(10)).layer(ok);
        let held = tokio::spawn(gate.call(Request::new(())));
        // Not a multiple of any polling period.
        tokio::time::sleep(Duration::from_millis(1_001)).await;
        assert!(!held.is_finished(), "answered before the store was ready");
        let readied = tokio::time::Instant::now();
        signal.send_replace(true);
        let response = held.await.unwrap().unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(readied.elapsed(), Duration::ZERO);
    }
}
