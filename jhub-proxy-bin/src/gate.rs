//! Holding API requests until the store is ready: after start, the Kubernetes store's cache
//! needs its first list before it can answer. A request waits up to a bound, then is answered
//! 503 with `Retry-After`, which JupyterHub retries.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use proxy_api::Error;
use tower::{Layer, Service};

use crate::health::ReadyCheck;

/// How often a held request looks again.
const POLL: Duration = Duration::from_millis(25);

/// Holds requests until `ready` says so, for at most `wait`.
#[derive(Clone)]
pub struct ReadyGateLayer {
    ready: ReadyCheck,
    wait: Duration,
}

impl ReadyGateLayer {
    /// A gate on `ready` that holds a request for at most `wait`.
    pub fn new(ready: ReadyCheck, wait: Duration) -> Self {
        ReadyGateLayer { ready, wait }
    }
}

impl std::fmt::Debug for ReadyGateLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyGateLayer").field("wait", &self.wait).finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ReadyGateLayer {
    type Service = ReadyGate<S>;

    fn layer(&self, inner: S) -> ReadyGate<S> {
        ReadyGate { inner, ready: self.ready.clone(), wait: self.wait }
    }
}

/// The service [`ReadyGateLayer`] makes.
#[derive(Clone)]
pub struct ReadyGate<S> {
    inner: S,
    ready: ReadyCheck,
    wait: Duration,
}

impl<S> std::fmt::Debug for ReadyGate<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyGate").field("wait", &self.wait).finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for ReadyGate<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if (self.ready)() {
            return Box::pin(self.inner.call(request));
        }
        // The inner service was readied for this call; take it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ready = self.ready.clone();
        let wait = self.wait;
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            while !ready() {
                if Instant::now() >= deadline {
                    return Ok(Error::Unavailable {
                        message: "the route cache is still loading from the Kubernetes API server".to_owned(),
                        retry_after: Some(Duration::from_secs(1)),
                        source: None,
                    }
                    .into_response());
                }
                tokio::time::sleep(POLL).await;
            }
            inner.call(request).await
        })
    }
}
