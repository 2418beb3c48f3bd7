//! Prometheus metrics of the stores, registered into a registry the application owns: the
//! routing crates stay usable without them (a store started without metrics records into
//! metrics nobody reads).
//!
//! - [`KubeMetrics`]: every Kubernetes API call a store makes, by `verb` (`get`, `list`,
//!   `watch`, `create`, `patch`, `delete`), `resource` (`virtualservices`, `httproutes`,
//!   `endpointslices`...) and `outcome` (`ok`, or the class of failure: `not_found`,
//!   `forbidden`, `already_exists`, `conflict`, `invalid`, `expired`, `not_installed`,
//!   `unavailable`, `throttled`, `error`), with latency by verb and resource. A call the API
//!   server throttles (429) is tried again ([`retry_throttled`](crate::retry_throttled)): each
//!   429 counts as a `throttled` call, so a rising count says the API server's priority and
//!   fairness limits are what holds the writes back. The watch's lists are timed from start to
//!   the last page; a watch is a long-lived stream, so it is counted only when it fails.
//! - [`HealMetrics`]: drifts healing found and repaired, by `resource` and `kind` (`edited`,
//!   `deleted`, `stray_generation`, `orphaned`, `stray`).
//! - [`StoreMetrics`]: read when scraped, not kept up to date on every write: the routes
//!   stored, whether the route cache is synced, and the watch's counters ([`WatchStats`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::answers::Failure;
use crate::watch::WatchStats;

/// Latency buckets of Kubernetes API calls, in seconds: a few milliseconds normally, up to
/// kube-rs's own timeouts when the API server struggles.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The verb of a Kubernetes API call, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// A get of one object.
    Get,
    /// A list (a watch's lists too).
    List,
    /// A watch stream.
    Watch,
    /// A create.
    Create,
    /// A patch: server-side apply, or a merge patch.
    Patch,
    /// A delete.
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    verb: &'static str,
    resource: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    verb: &'static str,
    resource: &'static str,
}

/// Kubernetes API calls by verb, resource and outcome, with their latency. Clones share the
/// counts.
#[derive(Debug, Clone)]
pub struct KubeMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

impl Default for KubeMetrics {
    fn default() -> Self {
        KubeMetrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        }
    }
}

impl KubeMetrics {
    /// Registers `kubernetes_requests_total` and `kubernetes_request_duration_seconds` (under
    /// the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubernetes_requests",
            "Kubernetes API calls by verb, resource and outcome (ok, or the class of failure)",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "kubernetes_request_duration",
            "Latency of Kubernetes API calls by verb and resource (a watch's list from start to its last page)",
            Unit::Seconds,
            self.latency.clone(),
        );
    }

    /// Counts a call and its latency.
    pub(crate) fn record(&self, verb: Verb, resource: &'static str, outcome: &'static str, took: Duration) {
        self.count(verb, resource, outcome);
        let labels = LatencyLabels { verb: verb.as_str(), resource };
        self.latency.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts a call whose latency means nothing (a watch's failure).
    pub(crate) fn count(&self, verb: Verb, resource: &'static str, outcome: &'static str) {
        self.calls.get_or_create(&CallLabels { verb: verb.as_str(), resource, outcome }).inc();
    }

    /// Awaits `call`, one API call, and counts it with its outcome and latency. A throttled
    /// call is made again by [`retry_throttled`](crate::retry_throttled), around this.
    pub async fn time<T>(
        &self,
        verb: Verb,
        resource: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        let started = Instant::now();
        let result = call.await;
        let outcome = result.as_ref().err().map_or("ok", |error| Failure::of(error).label());
        self.record(verb, resource, outcome, started.elapsed());
        result
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabels {
    resource: &'static str,
    kind: &'static str,
}

/// Drifts healing found and repaired, by resource and kind. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct HealMetrics {
    found: Family<DriftLabels, Counter>,
    repaired: Family<DriftLabels, Counter>,
}

impl HealMetrics {
    /// Registers `route_drift_found_total` and `route_drift_repaired_total` (under the
    /// registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "route_drift_found",
            "Objects found no longer as their routes render them, by resource and kind (edited, deleted, stray_generation, orphaned), each drift counted once by every replica that saw it",
            self.found.clone(),
        );
        registry.register(
            "route_drift_repaired",
            "Drifted objects this replica repaired, by resource and kind (a drift is repaired by one replica)",
            self.repaired.clone(),
        );
    }

    /// Counts a drift found.
    pub fn count_found(&self, resource: &'static str, kind: &'static str) {
        self.found.get_or_create(&DriftLabels { resource, kind }).inc();
    }

    /// Counts a drift this replica repaired.
    pub fn count_repaired(&self, resource: &'static str, kind: &'static str) {
        self.repaired.get_or_create(&DriftLabels { resource, kind }).inc();
    }

    /// How many drifts of `kind` on `resource` (`virtualservices`, `serviceentries`) were found.
    pub fn found(&self, resource: &'static str, kind: &'static str) -> u64 {
        self.found.get(&DriftLabels { resource, kind }).map_or(0, |c| c.get())
    }

    /// How many drifts of `kind` on `resource` this replica repaired.
    pub fn repaired(&self, resource: &'static str, kind: &'static str) -> u64 {
        self.repaired.get(&DriftLabels { resource, kind }).map_or(0, |c| c.get())
    }
}

/// What a store holds, read at scrape time: `routes` (once the cache is synced),
/// `route_cache_synced` (0 or 1), and for the Kubernetes store `watch_restarts_total` (failed
/// watches, each retried with backoff) and `watch_lists_total` (complete lists: the first and
/// every relist).
pub struct StoreMetrics<B> {
    backend: Arc<B>,
    watch: Option<Arc<WatchStats>>,
}

/// What [`StoreMetrics`] reads of a backend at every scrape, whichever routing API it writes.
pub trait StoreState: Send + Sync + 'static {
    /// Whether its cache holds a complete list.
    fn synced(&self) -> bool;
    /// The routes it holds, when it can tell without a request.
    fn route_count(&self) -> Option<usize>;
    /// The routes a gateway says it did not take, for a routing API whose objects carry a
    /// status (the Gateway API's); `None` where nothing says.
    fn refused_routes(&self) -> Option<usize> {
        None
    }
}

impl<B> std::fmt::Debug for StoreMetrics<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMetrics").field("watch", &self.watch).finish_non_exhaustive()
    }
}

impl<B: StoreState> StoreMetrics<B> {
    /// The metrics of `backend`'s store, with the watch's counters when it has a watch.
    pub fn new(backend: Arc<B>, watch: Option<Arc<WatchStats>>) -> Self {
        StoreMetrics { backend, watch }
    }

    /// Registers them, read at every scrape.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl<B: StoreState> Collector for StoreMetrics<B> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let synced = ConstGauge::new(i64::from(self.backend.synced()));
        let help =
            "Whether the route cache holds a complete list from the Kubernetes API server (1) or not yet (0)";
        synced.encode(encoder.encode_descriptor(
            "route_cache_synced",
            help,
            None,
            synced.metric_type(),
        )?)?;
        if let Some(routes) = self.backend.route_count() {
            let routes = ConstGauge::new(i64::try_from(routes).unwrap_or(i64::MAX));
            let help = "Routes stored (one per route spec)";
            routes.encode(encoder.encode_descriptor("routes", help, None, routes.metric_type())?)?;
        }
        if let Some(refused) = self.backend.refused_routes() {
            let refused = ConstGauge::new(i64::try_from(refused).unwrap_or(i64::MAX));
            let help =
                "Routes a gateway did not take: Accepted or ResolvedRefs False in their HTTPRoute's status";
            refused.encode(encoder.encode_descriptor(
                "routes_refused",
                help,
                None,
                refused.metric_type(),
            )?)?;
        }
        if let Some(watch) = &self.watch {
            let counters = [
                (
                    "watch_restarts",
                    "Failed watches of our routing objects (VirtualServices or HTTPRoutes), each retried with backoff",
                    &watch.errors,
                ),
                (
                    "watch_lists",
                    "Complete lists of our routing objects: the first, and every relist",
                    &watch.lists,
                ),
            ];
            for (name, help, value) in counters {
                let counter = ConstCounter::new(value.load(Ordering::Relaxed));
                counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
            }
        }
        Ok(())
    }
}
