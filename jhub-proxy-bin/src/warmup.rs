//! Waiting, after a write, until the gateway serves the route (`WAIT_FOR_WARMUP`).
//!
//! Istio no longer reports when a gateway has a route (1.23 removed config-distribution
//! tracking), so we ask the gateway: request the route's path with its `Host`, and wait for the
//! `jupyter-proxy-id` response header the route sets, which changes whenever the route does.
//! JupyterHub redirects the browser as soon as we answer, and gives up after about 14 s, so the
//! wait is bounded well under that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_routes::{PROXY_ID_HEADER, encode_path, revision};
use proxy_api::{Backend, Route, RouteSpec};

use crate::metrics::WarmupMetrics;

/// How to reach the gateway and how long to wait for it.
#[derive(Debug, Clone)]
pub struct WarmupOptions {
    /// The gateway's plain-HTTP address, e.g. `http://istio-ingressgateway.istio-system`.
    pub url: Uri,
    /// The `Host` for routes without a host of their own (path routing).
    pub public_host: String,
    /// How long to wait for one route.
    pub timeout: Duration,
    /// Answer 503 instead of 201 when the route is not served in time.
    pub strict: bool,
}

/// A backend that, after adding a route, waits until the gateway serves it.
pub struct Warmup<B> {
    inner: Arc<B>,
    options: WarmupOptions,
    client: Client<HttpConnector, Empty<Bytes>>,
    metrics: WarmupMetrics,
}

impl<B> std::fmt::Debug for Warmup<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warmup").field("options", &self.options).finish_non_exhaustive()
    }
}

impl<B: Backend> Warmup<B> {
    /// Warm-up in front of `inner`.
    pub fn new(inner: Arc<B>, options: WarmupOptions) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Warmup { inner, options, client, metrics: WarmupMetrics::default() }
    }

    /// Records every wait in `metrics`.
    pub fn with_metrics(mut self, metrics: WarmupMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// How many routes the gateway did not serve in time.
    pub fn timeouts(&self) -> u64 {
        self.metrics.timeouts()
    }

    /// The proxy id the gateway sends now for `host` and `path`, if it answers within `limit`
    /// (at most 2 s: a gateway that hangs is asked again rather than waited on) with anything
    /// but a server error. A gateway that has the route but not yet its backend (Traefik
    /// before the Service and EndpointSlice reach it answers 500 or 503) still sets the route's
    /// headers on its error, and a user sent there would get that error.
    async fn served_id(&self, host: &str, path: &str, limit: Duration) -> Option<String> {
        let base = self.options.url.to_string();
        let uri: Uri = format!("{}{path}", base.trim_end_matches('/')).parse().ok()?;
        let request = Request::get(uri).header(header::HOST, host).body(Empty::new()).ok()?;
        let limit = limit.min(Duration::from_secs(2));
        let response = tokio::time::timeout(limit, self.client.request(request)).await.ok()?.ok()?;
        if response.status().is_server_error() {
            return None;
        }
        response.headers().get(PROXY_ID_HEADER)?.to_str().ok().map(str::to_owned)
    }

    async fn wait_until_served(&self, route: &Route) -> proxy_api::Result<()> {
        let spec = route.spec();
        let host = spec.host().unwrap_or(&self.options.public_host).to_owned();
        let path = encode_path(spec.path());
        let expected = revision(route);
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            // A probe gets what is left of the time-out, so a hung gateway cannot stretch it.
            let left = self.options.timeout.saturating_sub(started.elapsed());
            if self.served_id(&host, &path, left).await.as_deref() == Some(expected.as_str()) {
                self.metrics.record(started.elapsed(), false);
                tracing::debug!(%spec, waited_ms = started.elapsed().as_millis() as u64, "the gateway serves the route");
                return Ok(());
            }
            let remaining = self.options.timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            tokio::time::sleep(pause.min(remaining)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        self.metrics.record(started.elapsed(), true);
        let message = format!(
            "the gateway at {} did not serve route {spec} (Host {host}) within {} s",
            self.options.url,
            self.options.timeout.as_secs_f32()
        );
        tracing::warn!(%spec, "{message}");
        if self.options.strict {
            return Err(proxy_api::Error::Unavailable {
                message,
                retry_after: Some(Duration::from_secs(1)),
                source: None,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl<B: Backend> Backend for Warmup<B> {
    async fn list(&self) -> proxy_api::Result<Vec<Arc<Route>>> {
        self.inner.list().await
    }

    async fn get(&self, spec: &RouteSpec) -> proxy_api::Result<Option<Arc<Route>>> {
        self.inner.get(spec).await
    }

    async fn add(&self, route: Route) -> proxy_api::Result<()> {
        let waiting = route.clone();
        self.inner.add(route).await?;
        self.wait_until_served(&waiting).await
    }

    async fn delete(&self, spec: &RouteSpec) -> proxy_api::Result<bool> {
        self.inner.delete(spec).await
    }
}
