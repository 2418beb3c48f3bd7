//! The watch cache: a label-selected reflector of our objects, with the overlay that shows our
//! writes until the watch delivers them, its retry and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{WatchStreamExt, watcher};

use crate::answers::Failure;
use crate::metrics::{KubeMetrics, Verb};
use crate::overlay::Overlay;

/// Counters of the watch, for logs and metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Errors of the watch (each followed by a retry with backoff).
    pub errors: AtomicU64,
    /// Completed lists (the first one, and every relist after a broken watch).
    pub lists: AtomicU64,
    /// Events applied to the cache.
    pub events: AtomicU64,
}

/// A label-selected watch cache with read-your-writes: what [`watch_cache`] starts.
#[allow(missing_debug_implementations)] // reflector::Store is Debug only for some K.
pub struct WatchCache<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The objects the watch has delivered.
    pub cache: reflector::Store<K>,
    /// `true` once the first list has arrived.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// Our writes the watch has not delivered yet; read through [`Overlay::apply`].
    pub overlay: Arc<Overlay<K>>,
    /// The watch's counters.
    pub stats: Arc<WatchStats>,
}

/// Starts watching the objects of `api` that `selector` selects (on the current tokio
/// runtime): list, then watch, retried with [`watch_backoff`], each object trimmed by `slim`
/// before it is cached, every call counted in `metrics` under `resource`. Each event reaches
/// the cache, then `also` (an index of the cache, healing's feed), then the overlay.
pub fn watch_cache<K>(
    api: Api<K>,
    dynamic: K::DynamicType,
    selector: &str,
    slim: impl FnMut(&mut K) + Send + 'static,
    metrics: KubeMetrics,
    resource: &'static str,
    mut also: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> WatchCache<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Default + Eq + std::hash::Hash + Send + Sync,
{
    let writer = Writer::new(dynamic);
    let cache = writer.as_reader();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let stats = Arc::new(WatchStats::default());
    let overlay = Arc::new(Overlay::default());
    let (watch_stats, watch_overlay) = (Arc::clone(&stats), Arc::clone(&overlay));
    let config = watcher::Config::default().labels(selector);
    let stream = watcher(api, config).backoff(watch_backoff()).modify(slim).reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut listing_since = None;
        while let Some(event) = stream.next().await {
            count_watch_call(&metrics, resource, &event, &mut listing_since);
            if let Ok(event) = &event {
                // Counted after the reflector applied it: a listing built before the count
                // changes is rebuilt, never kept stale.
                watch_stats.events.fetch_add(1, Ordering::AcqRel);
                // `also` before the overlay lets go of the writes the event shows: an index it
                // keeps of the cache (the store's by route id) must never be behind the overlay,
                // or a route just written would be found in neither.
                also(event);
                watch_overlay.saw(event);
            }
            match event {
                Ok(watcher::Event::InitDone) => {
                    ready_tx.send_replace(true);
                    watch_stats.lists.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(resource, "route cache synced with the Kubernetes API server");
                }
                Ok(_) => {}
                Err(error) => {
                    watch_overlay.watch_failed();
                    watch_stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, resource, "watching our objects failed; retrying");
                }
            }
        }
    });
    WatchCache { cache, ready, overlay, stats }
}

/// Counts what the watch stream shows of the API calls behind it: a list from its start to its
/// last page (or its failure), and failed watches.
pub fn count_watch_call<K>(
    metrics: &KubeMetrics,
    resource: &'static str,
    event: &std::result::Result<watcher::Event<K>, watcher::Error>,
    listing_since: &mut Option<Instant>,
) {
    let mut list_done = |outcome| {
        if let Some(started) = listing_since.take() {
            metrics.record(Verb::List, resource, outcome, started.elapsed());
        }
    };
    match event {
        Ok(watcher::Event::Init) => *listing_since = Some(Instant::now()),
        Ok(watcher::Event::InitDone) => list_done("ok"),
        Ok(_) => {}
        Err(watcher::Error::InitialListFailed(error)) => list_done(Failure::of(error).label()),
        Err(watcher::Error::WatchStartFailed(error) | watcher::Error::WatchFailed(error)) => {
            metrics.count(Verb::Watch, resource, Failure::of(error).label());
        }
        Err(watcher::Error::WatchError(status)) => {
            metrics.count(Verb::Watch, resource, Failure::of_status(status).label());
        }
        Err(watcher::Error::NoResourceVersion) => {
            metrics.count(Verb::Watch, resource, Failure::Other.label())
        }
    }
}

/// How the watch retries: kube-runtime's default (client-go's) waits up to 30 s between
/// attempts, and after an API-server outage of a few seconds a replica would keep listing
/// stale routes for that long. A restarted API server also answers the first watch 410 Gone,
/// which costs a second wait before the relist. One watch per replica is no load worth
/// protecting the server from, so the wait is capped at 2 s (4 s with jitter).
pub fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(120))
}
