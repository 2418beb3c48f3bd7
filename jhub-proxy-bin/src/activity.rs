//! Routes' `last_activity` from the gateway's traffic (`--activity-prometheus-url`).
//!
//! A background task asks Prometheus, once per `--activity-interval`, when requests last reached
//! each destination ([`istio_routes::activity`]), and keeps the answers in a shared map;
//! [`Activity`] fills them into the routes that `list` and `get` return. The API never waits on
//! Prometheus: when it is slow or down, the map keeps what it knew, and the failure is counted
//! and logged. Nothing is written anywhere: every replica asks the same Prometheus the same
//! question, so they all answer the same times, and so does a replica started later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use istio_routes::activity::{self, ActivityQuery};
use jiff::Timestamp;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proxy_api::{Backend, Route, RouteSpec};
use serde_json::Value;

use crate::metrics::ActivityMetrics;
use crate::{Error, Result};

/// The route data key JupyterHub reads.
const LAST_ACTIVITY: &str = "last_activity";

/// How a routing API names a route's destination the way the gateway's request metrics do
/// (Istio's `destination_service`): the seam activity reads either API's routes through.
pub trait Destinations: Send + Sync + 'static {
    /// The destination host of `route`; `None` for one the routing API cannot route.
    fn destination_host(&self, route: &Route) -> Option<String>;
}

/// Istio routing: a pod IP's ServiceEntry host, or the target Service's cluster host.
impl Destinations for istio_routes::Translation {
    fn destination_host(&self, route: &Route) -> Option<String> {
        istio_routes::Translation::destination_host(self, route).ok()
    }
}

/// The Gateway API: the route's own Service for a pod IP, or the target Service's cluster
/// host, as Istio's implementation of the Gateway API reports them.
impl Destinations for gateway_routes::GatewayTranslation {
    fn destination_host(&self, route: &Route) -> Option<String> {
        gateway_routes::GatewayTranslation::destination_host(self, route).ok()
    }
}

/// Where Prometheus is, what to ask it, and how often.
#[derive(Debug, Clone)]
pub struct ActivityOptions {
    /// Prometheus's base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: Uri,
    /// Which series count, and the resolution (its `step`).
    pub query: ActivityQuery,
    /// How often to ask.
    pub interval: Duration,
    /// How far back a replica that knows nothing yet looks.
    pub lookback: Duration,
    /// How long one query may take.
    pub timeout: Duration,
}

/// Destination host to the last time requests reached it; shared by the refresher, which
/// swaps in a new map, and the backend, which reads a snapshot per call.
#[derive(Debug, Clone, Default)]
pub struct ActivityMap(Arc<RwLock<Arc<HashMap<String, Timestamp>>>>);

impl ActivityMap {
    /// The map as it is now.
    pub fn snapshot(&self) -> Arc<HashMap<String, Timestamp>> {
        Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Takes `fresh` times, keeping the later of two for a destination: a query that looks back
    /// less far than an earlier one must not forget what that one found. Times before `oldest`
    /// (the lookback's start) are dropped, as a replica started now would not find them: so
    /// every replica answers alike, and destinations gone for good leave the map.
    fn merge(&self, fresh: HashMap<String, Timestamp>, oldest: Timestamp) -> usize {
        let mut merged = HashMap::clone(&self.snapshot());
        merged.retain(|_, stamp| *stamp >= oldest);
        for (host, stamp) in fresh.into_iter().filter(|(_, stamp)| *stamp >= oldest) {
            let entry = merged.entry(host).or_insert(stamp);
            *entry = (*entry).max(stamp);
        }
        let size = merged.len();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(merged);
        size
    }
}

/// What a refresher has covered, and what it still owes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Coverage {
    /// Up to when the refreshes so far have asked (or left the rest in `backlog`).
    covered_to: Option<Timestamp>,
    /// An older span a failed refresh did not get to: asked after the newest.
    backlog: Option<(Timestamp, Timestamp)>,
    /// Whether a refresh has ever succeeded in full.
    succeeded: bool,
}

impl Coverage {
    /// The windows a refresh at `now` asks, newest first: from where the last one got to
    /// (less `overlap`, for samples that reached Prometheus late), or from `lookback` ago, then
    /// the backlog; nothing older than `lookback`.
    fn plan(
        &mut self,
        query: &ActivityQuery,
        now: Timestamp,
        lookback: jiff::SignedDuration,
        overlap: jiff::SignedDuration,
    ) -> Vec<(Timestamp, Duration)> {
        let oldest = now - lookback;
        let from = self.covered_to.map_or(oldest, |covered| (covered - overlap).max(oldest));
        let mut windows = query.windows(from, now);
        if let Some((from, to)) = self.backlog.take()
            && to > oldest
        {
            windows.extend(query.windows(from.max(oldest), to));
        }
        self.covered_to = Some(now);
        windows
    }

    /// Keeps what `windows[failed..]` covered for the next refresh: one span, from the oldest
    /// window's start to the failed window's end.
    fn failed_at(&mut self, windows: &[(Timestamp, Duration)], failed: usize) {
        let span = |&(at, span): &(Timestamp, Duration)| {
            at - jiff::SignedDuration::try_from(span).unwrap_or_default()
        };
        let oldest = windows.last().map(span);
        self.backlog = oldest.map(|oldest| (oldest, windows[failed].0));
    }
}

/// Asks Prometheus, and keeps the answers in an [`ActivityMap`].
pub struct Refresher {
    options: ActivityOptions,
    client: Client<HttpConnector, Empty<Bytes>>,
    map: ActivityMap,
    metrics: ActivityMetrics,
    coverage: Coverage,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Refresher {
    /// A refresher filling `map`, counting in `metrics`.
    pub fn new(options: ActivityOptions, map: ActivityMap, metrics: ActivityMetrics) -> Refresher {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Refresher { options, client, map, metrics, coverage: Coverage::default() }
    }

    /// Starts refreshing every interval, in the background, for as long as the runtime runs.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                // Errors are counted and logged in `refresh`; the map keeps its times.
                let _ = self.refresh().await;
                tokio::time::sleep(self.options.interval).await;
            }
        })
    }

    /// One refresh: how many destinations the map knows after it, or why it failed.
    ///
    /// It asks about the time since the last refresh (or `--activity-lookback`), plus two steps
    /// for samples that reached Prometheus late, in queries of at most
    /// [`MAX_STEPS`](activity::MAX_STEPS) steps, newest first; then about any older span a
    /// failed refresh left. What one query finds is kept even if a later one fails, and what the
    /// failed one and those after it should have asked is left for the next refresh.
    pub async fn refresh(&mut self) -> Result<usize> {
        let now = Timestamp::now();
        let overlap = jiff::SignedDuration::try_from(self.options.query.step * 2).unwrap_or_default();
        let lookback = jiff::SignedDuration::try_from(self.options.lookback).unwrap_or_default();
        let windows = self.coverage.plan(&self.options.query, now, lookback, overlap);
        let mut known = self.map.snapshot().len();
        for (i, &(at, span)) in windows.iter().enumerate() {
            let error = match tokio::time::timeout(self.options.timeout, self.query(at, span)).await {
                Ok(Ok(fresh)) => {
                    known = self.map.merge(fresh, now - lookback);
                    continue;
                }
                Ok(Err(error)) => error,
                Err(_) => Error::Prometheus(format!(
                    "no answer within {} s (--activity-timeout)",
                    self.options.timeout.as_secs()
                )),
            };
            self.coverage.failed_at(&windows, i);
            return Err(self.failed(error));
        }
        self.metrics.succeeded(now, known);
        if !std::mem::replace(&mut self.coverage.succeeded, true) {
            tracing::info!(destinations = known, "activity read from Prometheus");
        } else {
            tracing::debug!(destinations = known, "activity read from Prometheus");
        }
        Ok(known)
    }

    fn failed(&self, error: Error) -> Error {
        self.metrics.failed();
        tracing::warn!(
            url = %self.options.url,
            destinations = self.map.snapshot().len(),
            "{error}; routes keep their last known last_activity"
        );
        error
    }

    /// The activity query evaluated at `at`, looking back `lookback`.
    async fn query(&self, at: Timestamp, lookback: Duration) -> Result<HashMap<String, Timestamp>> {
        let promql = self.options.query.promql(lookback);
        let base = self.options.url.to_string();
        let url = format!(
            "{}/api/v1/query?query={}&time={}.{:03}",
            base.trim_end_matches('/'),
            utf8_percent_encode(&promql, NON_ALPHANUMERIC),
            at.as_second(),
            at.subsec_millisecond()
        );
        let fail = |what: String| Error::Prometheus(what);
        let uri: Uri = url.parse().map_err(|e| fail(format!("{url}: {e}")))?;
        let request = Request::get(uri).body(Empty::new()).map_err(|e| fail(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| fail(format!("{base}: {e}")))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
        // Prometheus answers a bad query 400 and a failed one 422 or 503, with the reason in JSON.
        if status != StatusCode::OK && !body.starts_with(b"{") {
            return Err(fail(format!("{base} answered {status}")));
        }
        activity::parse_response(&body).map_err(|e| fail(e.to_string()))
    }
}

/// Starts refreshing activity as `options` say, in the background, and returns `backend` with
/// it on its routes (whose destinations `translation` names).
pub fn start<B: Backend>(
    backend: Arc<B>,
    translation: Arc<dyn Destinations>,
    options: ActivityOptions,
    metrics: ActivityMetrics,
) -> Arc<Activity<B>> {
    tracing::info!(
        url = %options.url,
        interval_s = options.interval.as_secs(),
        "reading routes' last_activity from Prometheus"
    );
    let map = ActivityMap::default();
    Refresher::new(options, map.clone(), metrics).spawn();
    Arc::new(Activity::new(backend, translation, map))
}

/// A backend whose routes carry the `last_activity` of their destination.
pub struct Activity<B> {
    inner: Arc<B>,
    translation: Arc<dyn Destinations>,
    map: ActivityMap,
    /// Each route of the last listing as answered, so that the next listing rebuilds only the
    /// routes whose time or route changed: rebuilding one costs a JSON parse and write, and
    /// JupyterHub lists 10,000 routes at a time.
    answered: Mutex<HashMap<RouteSpec, Answered>>,
}

/// A route as the store gave it, its destination, and what we answered for it.
#[derive(Debug, Clone)]
struct Answered {
    given: Arc<Route>,
    host: Option<Arc<str>>,
    seen: Option<Timestamp>,
    answer: Arc<Route>,
}

impl<B> std::fmt::Debug for Activity<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity").finish_non_exhaustive()
    }
}

impl<B: Backend> Activity<B> {
    /// Activity from `map` on the routes of `inner`, whose destinations `translation` names.
    pub fn new(inner: Arc<B>, translation: Arc<dyn Destinations>, map: ActivityMap) -> Self {
        Activity { inner, translation, map, answered: Mutex::default() }
    }

    fn answered(&self) -> std::sync::MutexGuard<'_, HashMap<RouteSpec, Answered>> {
        self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What to answer for `route`, reusing `previous` when neither the route nor its time changed.
    fn answer(
        &self,
        route: Arc<Route>,
        times: &HashMap<String, Timestamp>,
        previous: Option<&Answered>,
    ) -> Answered {
        let previous =
            previous.filter(|p| Arc::ptr_eq(&p.given, &route) || p.given.wire_json() == route.wire_json());
        let host = match previous {
            Some(previous) => previous.host.clone(),
            None => self.translation.destination_host(&route).map(Arc::from),
        };
        let seen = host.as_deref().and_then(|host| times.get(host)).copied();
        let answer = match (previous, seen) {
            (Some(previous), _) if previous.seen == seen => Arc::clone(&previous.answer),
            (_, Some(seen)) => with_time(&route, seen),
            (_, None) => Arc::clone(&route),
        };
        Answered { given: route, host, seen, answer }
    }
}

/// `route` with `seen` as its `last_activity`, unless JupyterHub gave it a later one.
fn with_time(route: &Arc<Route>, seen: Timestamp) -> Arc<Route> {
    let mut data = route.data();
    let posted = data
        .get(LAST_ACTIVITY)
        .and_then(Value::as_str)
        .and_then(|stamp| proxy_api::wire::parse_datestamp(stamp).ok());
    if posted.is_some_and(|posted| posted >= seen) {
        return Arc::clone(route);
    }
    data.insert(LAST_ACTIVITY.to_owned(), Value::String(activity::iso8601(seen)));
    match Route::new(route.spec().clone(), route.target().clone(), data) {
        Ok(with) => Arc::new(with),
        Err(_) => Arc::clone(route),
    }
}

#[async_trait]
impl<B: Backend> Backend for Activity<B> {
    async fn list(&self) -> proxy_api::Result<Vec<Arc<Route>>> {
        let routes = self.inner.list().await?;
        let times = self.map.snapshot();
        if times.is_empty() {
            return Ok(routes);
        }
        // Taken, not held: a listing meanwhile answers without the cache, and routes deleted
        // since leave it.
        let previous = std::mem::take(&mut *self.answered());
        let mut next = HashMap::with_capacity(routes.len());
        let answers = routes
            .into_iter()
            .map(|route| {
                let before = previous.get(route.spec());
                let answered = self.answer(route, &times, before);
                let answer = Arc::clone(&answered.answer);
                next.insert(answered.given.spec().clone(), answered);
                answer
            })
            .collect();
        *self.answered() = next;
        Ok(answers)
    }

    async fn get(&self, spec: &RouteSpec) -> proxy_api::Result<Option<Arc<Route>>> {
        let Some(route) = self.inner.get(spec).await? else { return Ok(None) };
        let times = self.map.snapshot();
        let previous = self.answered().get(spec).cloned();
        Ok(Some(self.answer(route, &times, previous.as_ref()).answer))
    }

    async fn add(&self, route: Route) -> proxy_api::Result<()> {
        self.inner.add(route).await
    }

    async fn delete(&self, spec: &RouteSpec) -> proxy_api::Result<bool> {
        self.inner.delete(spec).await
    }
}

#[cfg(test)]
mod tests {
    use istio_routes::{IstioBackend, MemoryStore, Translation};
    use proxy_api::{RoutingMode, Target};

    use super::*;

    fn route(spec: &str, target: &str, data: serde_json::Value) -> Route {
        let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
        let data = data.as_object().cloned().unwrap_or_default();
        Route::new(spec, Target::parse(target).unwrap(), data).unwrap()
    }

    fn stamp(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_refresh_asks_from_where_the_last_got_to_and_then_what_a_failure_left() {
        let query = ActivityQuery { step: Duration::from_secs(60), ..ActivityQuery::default() };
        let hours = jiff::SignedDuration::from_hours;
        let (lookback, overlap) = (hours(24), jiff::SignedDuration::from_mins(2));
        let start = stamp("2026-11-30T12:00:00Z");
        let mut coverage = Coverage::default();

        // A replica that knows nothing: a day, an hour a query, newest first.
        let first = coverage.plan(&query, start, lookback, overlap);
        assert_eq!(first.len(), 24);
        assert_eq!(first[0], (start, Duration::from_secs(3600)));
        // The third query fails: it and the older ones are left for later.
        coverage.failed_at(&first, 2);
        assert_eq!(coverage.backlog, Some((start - hours(24), start - hours(2))));

        // A minute later: the new minute (and the overlap) first, then the 22 hours left.
        let later = start + jiff::SignedDuration::from_mins(1);
        let second = coverage.plan(&query, later, lookback, overlap);
        assert_eq!(second[0], (later, Duration::from_secs(180)));
        assert_eq!(second[1], (start - hours(2), Duration::from_secs(3600)));
        assert_eq!(second.len(), 1 + 22);
        assert_eq!(coverage.backlog, None);

        // All done: the next refresh asks three steps, nothing older.
        let third = coverage.plan(&query, later + jiff::SignedDuration::from_mins(1), lookback, overlap);
        assert_eq!(third, [(later + jiff::SignedDuration::from_mins(1), Duration::from_secs(180))]);

        // A backlog older than the lookback by then is dropped.
        coverage.backlog = Some((start - hours(30), start - hours(25)));
        assert_eq!(coverage.plan(&query, later, lookback, overlap).len(), 1);
    }

    #[tokio::test]
    async fn routes_get_their_destinations_time_or_a_later_one_jupyterhub_gave() {
        let translation = Translation { namespace: "hub".to_owned(), ..Translation::default() };
        let store = Arc::new(MemoryStore::new(translation.clone()));
        let backend = Arc::new(IstioBackend::new(store, translation.clone()));
        backend
            .add(route("/user/alice", "http://10.0.0.7:8888", serde_json::json!({"user": "alice"})))
            .await
            .unwrap();
        backend.add(route("/user/bob", "http://jupyter-bob:8888", serde_json::json!({}))).await.unwrap();
        let later = serde_json::json!({"last_activity": "2026-11-30T13:00:00Z"});
        backend.add(route("/user/carol", "http://jupyter-carol:8888", later)).await.unwrap();
        backend.add(route("/", "http://hub:8081", serde_json::json!({}))).await.unwrap();

        let map = ActivityMap::default();
        let alice =
            translation.service_entry_host(&RouteSpec::new("/user/alice", RoutingMode::Path).unwrap());
        map.merge(
            HashMap::from([
                (alice, stamp("2026-11-30T12:00:00.5Z")),
                ("jupyter-bob.hub.svc.cluster.local".to_owned(), stamp("2026-11-30T12:01:00Z")),
                ("jupyter-carol.hub.svc.cluster.local".to_owned(), stamp("2026-11-30T12:02:00Z")),
            ]),
            Timestamp::MIN,
        );
        // An older time never replaces a newer one.
        map.merge(
            HashMap::from([("jupyter-bob.hub.svc.cluster.local".to_owned(), stamp("2026-11-30T11:00:00Z"))]),
            Timestamp::MIN,
        );
        // Times older than the lookback leave; the others stay.
        map.merge(
            HashMap::from([("old.hub.svc.cluster.local".to_owned(), stamp("2026-11-29T00:00:00Z"))]),
            Timestamp::MIN,
        );
        assert_eq!(map.snapshot().len(), 4);
        map.merge(HashMap::new(), stamp("2026-11-30T00:00:00Z"));
        assert_eq!(map.snapshot().len(), 3);
        assert!(!map.snapshot().contains_key("old.hub.svc.cluster.local"));
        let activity = Activity::new(backend, Arc::new(translation), map);

        let listed: HashMap<String, serde_json::Value> = activity
            .list()
            .await
            .unwrap()
            .iter()
            .map(|r| (r.spec().to_string(), serde_json::from_str(r.wire_json()).unwrap()))
            .collect();
        assert_eq!(listed["/user/alice"]["last_activity"], "2026-11-30T12:00:00.500Z");
        assert_eq!(listed["/user/alice"]["user"], "alice", "the data JupyterHub gave stays");
        assert_eq!(listed["/user/bob"]["last_activity"], "2026-11-30T12:01:00.000Z");
        assert_eq!(listed["/user/carol"]["last_activity"], "2026-11-30T13:00:00Z", "JupyterHub's later time");
        assert!(listed["/"].get("last_activity").is_none(), "no traffic, no time");

        let bob =
            activity.get(&RouteSpec::new("/user/bob", RoutingMode::Path).unwrap()).await.unwrap().unwrap();
        assert!(bob.wire_json().contains(r#""last_activity":"2026-11-30T12:01:00.000Z""#));
    }

    #[tokio::test]
    async fn a_listing_rebuilds_only_routes_whose_time_or_route_changed() {
        let translation = Translation { namespace: "hub".to_owned(), ..Translation::default() };
        let store = Arc::new(MemoryStore::new(translation.clone()));
        let backend = Arc::new(IstioBackend::new(store, translation.clone()));
        for user in ["alice", "bob"] {
            let target = format!("http://jupyter-{user}:8888");
            backend.add(route(&format!("/user/{user}"), &target, serde_json::json!({}))).await.unwrap();
        }
        let map = ActivityMap::default();
        let host = |user: &str| format!("jupyter-{user}.hub.svc.cluster.local");
        map.merge(
            HashMap::from([
                (host("alice"), stamp("2026-11-30T12:00:00Z")),
                (host("bob"), stamp("2026-11-30T12:00:00Z")),
            ]),
            Timestamp::MIN,
        );
        let activity = Activity::new(Arc::clone(&backend), Arc::new(translation), map.clone());
        let by_spec = |routes: Vec<Arc<Route>>| -> HashMap<String, Arc<Route>> {
            routes.into_iter().map(|r| (r.spec().to_string(), r)).collect()
        };
        let first = by_spec(activity.list().await.unwrap());
        let second = by_spec(activity.list().await.unwrap());
        assert!(Arc::ptr_eq(&first["/user/alice"], &second["/user/alice"]), "nothing changed: reused");

        // Bob's time moves, and alice's server moves to another service.
        map.merge(
            HashMap::from([
                (host("bob"), stamp("2026-11-30T12:05:00Z")),
                (host("carol"), stamp("2026-11-30T12:07:00Z")),
            ]),
            Timestamp::MIN,
        );
        backend.add(route("/user/alice", "http://jupyter-carol:8888", serde_json::json!({}))).await.unwrap();
        let third = by_spec(activity.list().await.unwrap());
        assert!(
            third["/user/bob"].wire_json().contains("2026-11-30T12:05:00.000Z"),
            "{}",
            third["/user/bob"].wire_json()
        );
        assert!(
            third["/user/alice"].wire_json().contains("2026-11-30T12:07:00.000Z"),
            "{}",
            third["/user/alice"].wire_json()
        );
        assert!(third["/user/alice"].wire_json().contains("jupyter-carol"));
        let got =
            activity.get(&RouteSpec::new("/user/bob", RoutingMode::Path).unwrap()).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&got, &third["/user/bob"]), "get reuses the listing's answer");

        // A deleted route leaves the cache at the next listing.
        backend.delete(&RouteSpec::new("/user/bob", RoutingMode::Path).unwrap()).await.unwrap();
        assert_eq!(activity.list().await.unwrap().len(), 1);
        assert_eq!(activity.answered().len(), 1);
    }
}
