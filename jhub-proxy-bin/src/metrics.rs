//! Prometheus metrics, in the text format at `GET /metrics` (unauthenticated; on the API's
//! port, or on `--metrics-listen` alone). Every name starts `jupyterhub_istio_proxy_`:
//!
//! - `http_requests_total{method, status}` and `http_request_duration_seconds{method}`: the
//!   API's requests, whatever their answer (403, 503 and 504 included), but not the probes
//!   (`/ping`, `/healthz`, `/readyz`) nor `/metrics`, which would drown them. Not by path: a
//!   path names a user, and each would be a series of its own.
//! - `kubernetes_requests_total{verb, resource, outcome}`,
//!   `kubernetes_request_duration_seconds{verb, resource}`, `routes`, `route_cache_synced`,
//!   `watch_restarts_total`, `watch_lists_total`: the store's (`kube_routes::StoreMetrics`).
//! - `warmup_duration_seconds` (every wait, served or timed out) and `warmup_timeouts_total`.
//! - `auth_refusals_total{reason}`: requests refused for their token, `no_token` (no or a
//!   malformed `Authorization` header) or `wrong_token` (a token, not the one in force).
//! - `auth_token_reloads_total{outcome}`: with `--auth-token-file`, each new token taken
//!   (`rotated`) and each read of the file that failed (`missing`, `unreadable`, `empty`,
//!   `invalid`), after which the last good token stays in force.
//! - `activity_refresh_failures_total`, `activity_last_success_timestamp_seconds` and
//!   `activity_destinations`: with `--activity-prometheus-url`, queries of Prometheus that
//!   failed, when one last succeeded, and how many destinations have a known last activity.
//! - `runtime_tasks`: the Tokio tasks alive when scraped. Flat under steady load; a count that
//!   grows with the routes written is a leak (`bench/soak.sh` reports its slope).
//! - `build_info{version, commit}`, always 1.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use kube_routes::KubeMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::health::Responder;

/// The prefix of every metric's name.
pub const PREFIX: &str = "jupyterhub_istio_proxy";

/// The path metrics are served at.
pub const PATH: &str = "/metrics";

/// Latency buckets of API requests, in seconds: reads take well under a millisecond, writes a
/// few Kubernetes calls, warm-up up to `--warmup-timeout`, and the request timeout is 30 s.
const REQUEST_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

/// Warm-up buckets, in seconds: istiod pushes to gateways in about a second, and JupyterHub
/// gives up after about 14.
const WARMUP_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0];

/// Every metric of the proxy, and the registry it is scraped from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
    warmup: WarmupMetrics,
    kube: KubeMetrics,
    auth: AuthMetrics,
    activity: ActivityMetrics,
    tasks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The registry with the API's, warm-up's, the Kubernetes calls' and the build's metrics;
    /// the store's gauges are added with [`registry_mut`](Self::registry_mut) once it exists.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let http = HttpMetrics::default();
        registry.register(
            "http_requests",
            "Requests of the routes API by method and status (not probes nor /metrics)",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer a request of the routes API, by method",
            Unit::Seconds,
            http.latency.clone(),
        );
        let warmup = WarmupMetrics::default();
        registry.register_with_unit(
            "warmup_duration",
            "Time from writing a route until the gateway served it (or warm-up gave up)",
            Unit::Seconds,
            warmup.duration.clone(),
        );
        registry.register(
            "warmup_timeouts",
            "Routes the gateway did not serve within --warmup-timeout",
            warmup.timeouts.clone(),
        );
        let kube = KubeMetrics::default();
        kube.register(&mut registry);
        let auth = AuthMetrics::default();
        registry.register(
            "auth_refusals",
            "Requests refused for their token: no_token (none, or a malformed header) or wrong_token",
            auth.refusals.clone(),
        );
        registry.register(
            "auth_token_reloads",
            "With --auth-token-file: new tokens taken (rotated) and failed reads of the file, by why",
            auth.reloads.clone(),
        );
        let activity = ActivityMetrics::default();
        activity.register(&mut registry);
        let tasks = Gauge::default();
        registry.register("runtime_tasks", "Tokio tasks alive when scraped", tasks.clone());
        let build = vec![("version", crate::VERSION), ("commit", crate::COMMIT)];
        registry.register("build", "The proxy's version and the commit it was built from", Info::new(build));
        Metrics { registry, http, warmup, kube, auth, activity, tasks }
    }

    /// The API's request metrics.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// Warm-up's metrics.
    pub fn warmup(&self) -> &WarmupMetrics {
        &self.warmup
    }

    /// The token check's and the token file's metrics.
    pub fn auth(&self) -> &AuthMetrics {
        &self.auth
    }

    /// The activity refresher's metrics.
    pub fn activity(&self) -> &ActivityMetrics {
        &self.activity
    }

    /// The Kubernetes store's call metrics, to give to `KubeStore::start_with_metrics`.
    pub fn kube(&self) -> &KubeMetrics {
        &self.kube
    }

    /// The registry, for metrics registered later (the store's, read at scrape time).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Everything, in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing to a String fails only if a metric's encoder does, and ours do not.
        prometheus_text::encode(&mut text, &self.registry).expect("encoding metrics into a String");
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// The API's requests by method and status, with their latency by method.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
        }
    }
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn record(&self, method: &Method, status: StatusCode, took: Duration) {
        let method = method_label(method);
        self.requests.get_or_create(&RequestLabels { method, status: status.as_u16() }).inc();
        self.latency.get_or_create(&MethodLabels { method }).observe(took.as_secs_f64());
    }
}

/// Whether requests to `path` stay out of the request metrics: the probes, polled every few
/// seconds, and scrapes.
pub fn is_unmetered(path: &str) -> bool {
    matches!(path, "/ping" | "/healthz" | "/readyz" | crate::health::CHP_HEALTHZ | PATH)
}

/// The method as a label: anyone can send any method name, so the few the API knows are kept
/// and the rest are `other`, which keeps the number of series bounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Why requests were refused for their token, and what became of the token file's reads.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    refusals: Family<ReasonLabels, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
}

impl AuthMetrics {
    /// Counts a request refused: `wrong` when it carried a token that is not the one in force.
    pub fn refused(&self, wrong: bool) {
        let reason = if wrong { "wrong_token" } else { "no_token" };
        self.refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a read of the token file: `rotated`, or what was wrong with the file.
    pub fn token_reloaded(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// How long warm-up waited, and how often it gave up.
#[derive(Debug, Clone)]
pub struct WarmupMetrics {
    duration: Histogram,
    timeouts: Counter,
}

impl Default for WarmupMetrics {
    fn default() -> Self {
        WarmupMetrics { duration: Histogram::new(WARMUP_BUCKETS), timeouts: Counter::default() }
    }
}

impl WarmupMetrics {
    /// Records one wait.
    pub fn record(&self, took: Duration, timed_out: bool) {
        self.duration.observe(took.as_secs_f64());
        if timed_out {
            self.timeouts.inc();
        }
    }

    /// How many waits timed out.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.get()
    }
}

/// How the activity refresher fares.
#[derive(Debug, Clone, Default)]
pub struct ActivityMetrics {
    failures: Counter,
    last_success: Gauge<f64, AtomicU64>,
    destinations: Gauge,
}

impl ActivityMetrics {
    fn register(&self, registry: &mut Registry) {
        let failures = "Queries of Prometheus for routes' activity that failed or timed out";
        registry.register("activity_refresh_failures", failures, self.failures.clone());
        let last = "When a query of Prometheus for routes' activity last succeeded (Unix time; 0: never)";
        registry.register("activity_last_success_timestamp_seconds", last, self.last_success.clone());
        let known = "Destinations whose last activity is known";
        registry.register("activity_destinations", known, self.destinations.clone());
    }

    /// Records a query that succeeded at `at`, after which `destinations` are known.
    pub fn succeeded(&self, at: jiff::Timestamp, destinations: usize) {
        self.last_success.set(at.as_millisecond() as f64 / 1000.0);
        self.destinations.set(i64::try_from(destinations).unwrap_or(i64::MAX));
    }

    /// Counts a query that failed.
    pub fn failed(&self) {
        self.failures.inc();
    }

    /// How many queries failed.
    pub fn failures(&self) -> u64 {
        self.failures.get()
    }
}

/// Answers `GET /metrics` (with `Some` metrics) in front of the rest, without authentication:
/// Prometheus scrapes carry no token, and nothing in them is secret.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint(pub Option<Arc<Metrics>>);

impl Responder for MetricsEndpoint {
    fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let metrics = self.0.as_ref().filter(|_| method == Method::GET && path == PATH)?;
        let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
        let content_type = header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE);
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use testkit::metrics::Scrape;

    use super::*;

    /// The gauge follows the tasks alive at each scrape, up and down again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn runtime_tasks_are_counted_at_scrape() {
        let metrics = Metrics::new();
        let tasks = |metrics: &Metrics| {
            Scrape::parse(&metrics.encode()).value("jupyterhub_istio_proxy_runtime_tasks", &[]).unwrap()
        };
        let before = tasks(&metrics);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let mut stopped = stopped.clone();
                tokio::spawn(async move { stopped.wait_for(|stop| *stop).await.map(|_| ()) })
            })
            .collect();
        assert_eq!(tasks(&metrics), before + 5.0);
        stop.send_replace(true);
        for task in waiting {
            task.await.unwrap().unwrap();
        }
        assert_eq!(tasks(&metrics), before);
    }

    #[test]
    fn names_follow_the_conventions_and_build_info_is_one() {
        let metrics = Metrics::new();
        metrics.http().record(&Method::POST, StatusCode::CREATED, Duration::from_millis(3));
        metrics.http().record(&Method::from_bytes(b"BREW").unwrap(), StatusCode::NOT_FOUND, Duration::ZERO);
        metrics.warmup().record(Duration::from_secs(2), false);
        metrics.warmup().record(Duration::from_secs(10), true);
        metrics.auth().refused(true);
        metrics.auth().refused(false);
        metrics.auth().refused(true);
        metrics.auth().token_reloaded("rotated");
        metrics.activity().failed();
        metrics.activity().succeeded("2026-11-30T12:00:00.5Z".parse().unwrap(), 3);
        let scrape = Scrape::parse(&metrics.encode());
        let build = [("version", crate::VERSION), ("commit", crate::COMMIT)];
        assert_eq!(scrape.value("jupyterhub_istio_proxy_build_info", &build), Some(1.0), "{}", scrape.text);
        let created = [("method", "POST"), ("status", "201")];
        assert_eq!(scrape.value("jupyterhub_istio_proxy_http_requests_total", &created), Some(1.0));
        let brewed = [("method", "other"), ("status", "404")];
        assert_eq!(scrape.value("jupyterhub_istio_proxy_http_requests_total", &brewed), Some(1.0));
        let post = [("method", "POST")];
        assert_eq!(
            scrape.value("jupyterhub_istio_proxy_http_request_duration_seconds_count", &post),
            Some(1.0)
        );
        let fast = [("method", "POST"), ("le", "0.005")];
        assert_eq!(
            scrape.value("jupyterhub_istio_proxy_http_request_duration_seconds_bucket", &fast),
            Some(1.0)
        );
        assert_eq!(scrape.value("jupyterhub_istio_proxy_warmup_duration_seconds_count", &[]), Some(2.0));
        assert_eq!(scrape.value("jupyterhub_istio_proxy_warmup_timeouts_total", &[]), Some(1.0));
        assert_eq!(metrics.warmup().timeouts(), 1);
        let refusals = "jupyterhub_istio_proxy_auth_refusals_total";
        assert_eq!(scrape.value(refusals, &[("reason", "wrong_token")]), Some(2.0));
        assert_eq!(scrape.value(refusals, &[("reason", "no_token")]), Some(1.0));
        let reloads = "jupyterhub_istio_proxy_auth_token_reloads_total";
        assert_eq!(scrape.value(reloads, &[("outcome", "rotated")]), Some(1.0));
        let activity = |name: &str| scrape.value(&format!("jupyterhub_istio_proxy_activity_{name}"), &[]);
        assert_eq!(activity("refresh_failures_total"), Some(1.0));
        assert_eq!(activity("last_success_timestamp_seconds"), Some(1_796_040_000.5));
        assert_eq!(activity("destinations"), Some(3.0));
        assert_eq!(metrics.activity().failures(), 1);
        for sample in &scrape.samples {
            assert!(sample.name.starts_with("jupyterhub_istio_proxy_"), "{}", sample.name);
        }
    }
}
