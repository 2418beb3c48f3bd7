//! Healing's engine, whichever routing API: when a route's objects no longer are what the
//! route renders, the proxy repairs them. A routing API says what drifted and how to repair it
//! ([`Repairs`]); this module decides when to look and when to write.
//!
//! Nothing polls the API server. The routing API's watches tell healing which route an event
//! touched ([`Touch`]; for a deleted object, its last state). Each touched route is checked
//! after a random delay (the jitter, 0.5–2.5 s by default), against the caches, and only what
//! drifted is written. Every relist checks every route the caches show.
//!
//! Some drifts are also what an operation in progress leaves for a moment (an object written
//! before another, an old generation deleted after the new one is created), so they are
//! repaired only once they have been seen for a grace period (5 s by default), checked again
//! then ([`Drift::needs_grace`]).
//!
//! **One replica acts, without a lease.** Every replica sees the drift, but every repair is
//! conditional on the API server: a create fails with AlreadyExists, and a write or delete with
//! a `resourceVersion` precondition fails with Conflict, when another replica got there first
//! or the object changed; the route is then checked again after a new delay, by which time the
//! watch shows what the other replica wrote.
//!
//! **Back-off.** A route that keeps drifting (something else fights over it) or whose repair
//! fails waits longer each time before its next check: 1 s, 2 s, 4 s... up to a minute, on top
//! of the jitter, until it has been quiet for two minutes. A replica writes at most 20 repairs
//! a second (a build that renders every route differently re-applies them all, as a trickle).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{
    Error, HealMetrics, KubeMetrics, ROUTE_LABEL, Result, SeenObjects, count_watch_call, watch_backoff,
};

/// The annotation a route's main object (VirtualService, HTTPRoute) is marked with right
/// before the proxy deletes it because JupyterHub deleted its route: a delete healing must not
/// undo. The Deleted event every replica's watch delivers carries it in the object's last state.
pub const DELETE_INTENT_ANNOTATION: &str = "jupyterhub-istio-proxy/deleting";

/// The annotation a cached object carries its spec's digest in, in place of the spec (which
/// the cache drops to save memory); never written to the API server.
pub const SPEC_DIGEST_ANNOTATION: &str = "jupyterhub-istio-proxy/cached-spec-sha256";

/// The SHA-256 of a spec as JSON: what healing compares objects by.
pub fn spec_sha256<T: Serialize>(spec: &T) -> [u8; 32] {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    Sha256::digest(json).into()
}

/// [`spec_sha256`] in hex, as a cached object carries it in [`SPEC_DIGEST_ANNOTATION`].
pub fn spec_digest<T: Serialize>(spec: &T) -> String {
    crate::hex(&spec_sha256(spec))
}

/// The digest of an object's spec: the cache's annotation, or `spec`'s for an object held whole
/// (our write, in the overlay).
pub fn observed_digest<T: Serialize>(metadata: &ObjectMeta, spec: &T) -> String {
    match metadata.annotations.as_ref().and_then(|a| a.get(SPEC_DIGEST_ANNOTATION)) {
        Some(digest) => digest.clone(),
        None => spec_digest(spec),
    }
}

/// Whether an object carries [`DELETE_INTENT_ANNOTATION`].
pub fn is_marked(metadata: &ObjectMeta) -> bool {
    metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DELETE_INTENT_ANNOTATION))
}

/// What the watches tell healing.
#[derive(Debug)]
pub enum Touch<G> {
    /// An object of the route with this id changed; `gone` is the last state of a deleted
    /// object that a repair may create again.
    Route {
        /// The route id (the route label's value).
        id: String,
        /// The deleted object's last state.
        gone: Option<G>,
    },
    /// A watch listed everything again: every route is checked.
    Resync,
}

/// A drift a routing API found, as healing's metrics and logs name it.
pub trait Drift: Send {
    /// The metrics' `resource`: `virtualservices`, `httproutes`, `services`...
    fn resource(&self) -> &'static str;
    /// The metrics' `kind`: `edited`, `deleted`, `orphaned`, `stray`...
    fn kind(&self) -> &'static str;
    /// The name of the object it is about.
    fn object(&self) -> String;
    /// Whether an operation in progress leaves the same picture for a moment, so that it is
    /// repaired only once seen for the grace period.
    fn needs_grace(&self) -> bool;
}

/// What a routing API tells healing: what drifted, and how to repair it.
#[async_trait]
pub trait Repairs: Send + Sync + 'static {
    /// A drift, carrying what its repair writes.
    type Drift: Drift;
    /// The last state of a deleted object, kept until its route's check.
    type Gone: Send + Sync + 'static;

    /// Waits until the caches the checks read are synced.
    async fn ready(&self);

    /// Every route id the caches show an object of: what a relist checks.
    fn route_ids(&self) -> Vec<String>;

    /// What is wrong with the route's objects now, if anything, from the caches (no call to
    /// the API server); `gone` is the last state of its most recently deleted object.
    fn assess(&self, id: &str, gone: Option<&Self::Gone>) -> Option<Self::Drift>;

    /// Repairs `drift`; answers whether this replica's write did (`false`: nothing was left to
    /// do, another replica or a write of JupyterHub's made it right).
    async fn repair(&self, id: &str, drift: Self::Drift) -> Result<bool>;

    /// Whether `new` should replace `kept` as the route's last deleted state (a later
    /// generation of its object).
    fn supersedes(&self, kept: &Self::Gone, new: &Self::Gone) -> bool;
}

/// How healing paces itself.
#[derive(Debug, Clone)]
pub struct HealOptions {
    /// The shortest and longest wait between a watch event and the check of its route (a
    /// random time in between), so that replicas seldom check at the same moment and the
    /// watch has shown each one the others' repairs.
    pub jitter: (Duration, Duration),
    /// How long a drift that needs grace must have been seen before it is repaired: the
    /// moments an add or a re-creation in progress looks like that.
    pub grace: Duration,
    /// The longest back-off of a route that keeps drifting or failing.
    pub max_backoff: Duration,
    /// How many repairs a replica writes per second at most.
    pub max_repairs_per_second: u32,
}

impl Default for HealOptions {
    fn default() -> Self {
        HealOptions {
            jitter: (Duration::from_millis(500), Duration::from_millis(2500)),
            grace: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            max_repairs_per_second: 20,
        }
    }
}

/// Healing at work; it stops when this is dropped.
#[derive(Debug)]
pub struct Healing {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Healing {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts checking and repairing what `touches` names (on the current tokio runtime), once
/// `repairs` is ready. `watches` are the routing API's tasks that feed `touches`, stopped with
/// the rest when the [`Healing`] is dropped.
pub fn start<R: Repairs>(
    repairs: Arc<R>,
    touches: mpsc::UnboundedReceiver<Touch<R::Gone>>,
    options: HealOptions,
    metrics: HealMetrics,
    watches: Vec<tokio::task::JoinHandle<()>>,
) -> Healing {
    let healer = Healer {
        repairs,
        options,
        metrics,
        queue: BTreeMap::new(),
        pending: HashMap::new(),
        drifting: HashMap::new(),
        streaks: HashMap::new(),
        random: std::collections::hash_map::RandomState::new(),
        seq: 0,
        last_repair: Instant::now(),
    };
    let checks = tokio::spawn(async move {
        healer.repairs.ready().await;
        healer.run(touches).await;
    });
    let mut tasks = watches;
    tasks.push(checks);
    Healing { tasks }
}

/// Tells `feed` what a watch event of a route's main object (a VirtualService, an HTTPRoute)
/// means for healing: the route it touched, with the object's last state when deleted; at the
/// end of a relist, that every route is to be checked. A relist delivers no deletes, and the
/// cache's last state of an object deleted during the gap may predate its delete mark: every
/// route is checked then, but none of those is restored.
pub fn tell<K: Resource + Clone>(feed: &mpsc::UnboundedSender<Touch<Arc<K>>>, event: &watcher::Event<K>) {
    let touch = |object: &K, gone: bool| {
        if let Some(id) = object.meta().labels.as_ref().and_then(|l| l.get(ROUTE_LABEL)) {
            let gone = gone.then(|| Arc::new(object.clone()));
            let _ = feed.send(Touch::Route { id: id.clone(), gone });
        }
    };
    match event {
        watcher::Event::Apply(object) => touch(object, false),
        watcher::Event::Delete(object) => touch(object, true),
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
        watcher::Event::InitDone => {
            let _ = feed.send(Touch::Resync);
        }
    }
}

/// Watches the objects of `api` that `selector` selects, which healing judges but nothing reads
/// routes from (a ServiceEntry, a Service, an EndpointSlice), into `seen` (each object's
/// `digest`), and tells `feed` which route each event touched; `synced` is set at the end of
/// the first list, and until then the routing API does not judge these objects (a Role without
/// `watch` on them, say). Every call is counted in `metrics` under `plural`.
pub fn watch_seen<K, G>(
    api: Api<K>,
    selector: &str,
    plural: &'static str,
    watched: (Arc<SeenObjects>, Arc<AtomicBool>),
    digest: fn(&K) -> [u8; 32],
    feed: mpsc::UnboundedSender<Touch<G>>,
    metrics: KubeMetrics,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
    G: Send + 'static,
{
    let (seen, synced) = watched;
    let config = watcher::Config::default().labels(selector);
    let stream = watcher(api, config).backoff(watch_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut listing_since = None;
        while let Some(event) = stream.next().await {
            count_watch_call(&metrics, plural, &event, &mut listing_since);
            if let Ok(event) = &event {
                seen.observe(event, digest);
            }
            let touch = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    let id = object.meta().labels.as_ref().and_then(|l| l.get(ROUTE_LABEL)).cloned();
                    id.map(|id| Touch::Route { id, gone: None })
                }
                Ok(watcher::Event::InitDone) => {
                    synced.store(true, Ordering::Release);
                    Some(Touch::Resync)
                }
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(%error, resource = plural, "watching our objects failed; retrying");
                    None
                }
            };
            if let Some(touch) = touch {
                let _ = feed.send(touch);
            }
        }
    })
}

/// A route waiting for its check.
struct Pending<G> {
    key: (Instant, u64),
    gone: Option<G>,
}

/// A route's recent repairs and failures, for its back-off.
struct Streak {
    count: u32,
    last: Instant,
}

struct Healer<R: Repairs> {
    repairs: Arc<R>,
    options: HealOptions,
    metrics: HealMetrics,
    /// Checks by due time (and a sequence number, to keep keys unique), to route ids.
    queue: BTreeMap<(Instant, u64), String>,
    pending: HashMap<String, Pending<R::Gone>>,
    /// Routes found drifting, with the kind and since when: found counts once per drift, and
    /// the grace runs from then.
    drifting: HashMap<String, (&'static str, Instant)>,
    streaks: HashMap<String, Streak>,
    random: std::collections::hash_map::RandomState,
    seq: u64,
    /// When the last repair was written, for the rate limit.
    last_repair: Instant,
}

async fn until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

impl<R: Repairs> Healer<R> {
    async fn run(mut self, mut touches: mpsc::UnboundedReceiver<Touch<R::Gone>>) {
        loop {
            let next = self.queue.keys().next().map(|(due, _)| *due);
            tokio::select! {
                touch = touches.recv() => match touch {
                    Some(Touch::Route { id, gone }) => {
                        let delay = self.delay(&id);
                        self.schedule(id, delay, gone);
                    }
                    Some(Touch::Resync) => self.survey(),
                    None => return,
                },
                () = until(next) => {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    while let Some(entry) = self.queue.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let id = entry.remove();
                        let gone = self.pending.remove(&id).and_then(|p| p.gone);
                        due.push((id, gone));
                    }
                    for (id, gone) in due {
                        self.check(id, gone).await;
                    }
                }
            }
        }
    }

    /// Checks every route the caches show, without a call to the API server, and schedules
    /// those that drifted.
    fn survey(&mut self) {
        let mut ids = self.repairs.route_ids();
        ids.sort_unstable();
        ids.dedup();
        let drifted: Vec<String> =
            ids.into_iter().filter(|id| self.repairs.assess(id, None).is_some()).collect();
        if !drifted.is_empty() {
            tracing::info!(routes = drifted.len(), "routes whose objects drifted, to repair");
        }
        for id in drifted {
            let delay = self.delay(&id);
            self.schedule(id, delay, None);
        }
    }

    /// A random time within the jitter.
    fn jitter(&mut self) -> Duration {
        self.seq += 1;
        let (shortest, longest) = self.options.jitter;
        let fraction = self.random.hash_one(self.seq) as f64 / u64::MAX as f64;
        shortest + longest.saturating_sub(shortest).mul_f64(fraction)
    }

    /// The wait before a route's next check: the jitter, plus its back-off.
    fn delay(&mut self, id: &str) -> Duration {
        let quiet = 2 * self.options.max_backoff;
        let backoff = match self.streaks.get(id) {
            Some(streak) if streak.last.elapsed() < quiet => Duration::from_secs(1)
                .saturating_mul(1 << streak.count.saturating_sub(1).min(16))
                .min(self.options.max_backoff),
            Some(_) => {
                self.streaks.remove(id);
                Duration::ZERO
            }
            None => Duration::ZERO,
        };
        self.jitter() + backoff
    }

    /// Lengthens a route's back-off.
    fn strike(&mut self, id: &str) {
        let streak = self.streaks.entry(id.to_owned()).or_insert(Streak { count: 0, last: Instant::now() });
        streak.count += 1;
        streak.last = Instant::now();
    }

    /// Has `id` checked after `delay`, or sooner if it already waits for an earlier check;
    /// keeps the last state of its most recent generation deleted.
    fn schedule(&mut self, id: String, delay: Duration, gone: Option<R::Gone>) {
        self.seq += 1;
        let key = (Instant::now() + delay, self.seq);
        match self.pending.get_mut(&id) {
            Some(pending) => {
                if let Some(gone) = gone
                    && pending.gone.as_ref().is_none_or(|kept| self.repairs.supersedes(kept, &gone))
                {
                    pending.gone = Some(gone);
                }
                if key < pending.key {
                    self.queue.remove(&pending.key);
                    pending.key = key;
                    self.queue.insert(key, id);
                }
            }
            None => {
                self.queue.insert(key, id.clone());
                self.pending.insert(id, Pending { key, gone });
            }
        }
    }

    /// Checks a route, and repairs what drifted.
    async fn check(&mut self, id: String, gone: Option<R::Gone>) {
        let Some(drift) = self.repairs.assess(&id, gone.as_ref()) else {
            self.drifting.remove(&id);
            return;
        };
        let (resource, kind) = (drift.resource(), drift.kind());
        let now = Instant::now();
        let since = match self.drifting.get(&id) {
            Some((seen, since)) if *seen == kind => *since,
            _ => {
                self.metrics.count_found(resource, kind);
                self.drifting.insert(id.clone(), (kind, now));
                now
            }
        };
        if drift.needs_grace() && now < since + self.options.grace {
            let wait = since + self.options.grace - now + self.jitter();
            self.schedule(id, wait, gone);
            return;
        }
        let object = drift.object();
        // At most `max_repairs_per_second`: a new build that renders every route differently
        // re-applies them all, but as a trickle.
        let spacing = Duration::from_secs(1) / self.options.max_repairs_per_second.max(1);
        tokio::time::sleep_until(self.last_repair + spacing).await;
        self.last_repair = Instant::now();
        match self.repairs.repair(&id, drift).await {
            Ok(true) => {
                self.metrics.count_repaired(resource, kind);
                tracing::info!(object, resource, kind, route = id, "repaired an object that drifted");
                self.drifting.remove(&id);
                self.strike(&id);
                // Another drift of the same route may be next.
                let delay = self.delay(&id);
                self.schedule(id, delay, None);
            }
            // Another replica repaired it, or a write made it right.
            Ok(false) => {
                self.drifting.remove(&id);
            }
            // Someone else got there first or the object changed: look again once the watch
            // has shown what.
            Err(Error::Conflict { .. } | Error::AlreadyExists { .. }) => {
                tracing::debug!(
                    object,
                    resource,
                    kind,
                    route = id,
                    "another writer changed the object first"
                );
                let delay = self.jitter();
                self.schedule(id, delay, gone);
            }
            Err(error) => {
                tracing::warn!(object, resource, kind, route = id, %error, "repairing an object failed; will retry");
                self.strike(&id);
                let delay = self.delay(&id);
                self.schedule(id, delay, gone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// One route whose object drifted until a repair answers `Ok(true)`; the repairs answer as
    /// scripted.
    struct Fake {
        grace: bool,
        drifted: Mutex<bool>,
        answers: Mutex<VecDeque<Result<bool>>>,
        repairs: Mutex<Vec<Instant>>,
    }

    struct Edited(bool);

    impl Drift for Edited {
        fn resource(&self) -> &'static str {
            "things"
        }
        fn kind(&self) -> &'static str {
            "edited"
        }
        fn object(&self) -> String {
            "thing".to_owned()
        }
        fn needs_grace(&self) -> bool {
            self.0
        }
    }

    #[async_trait]
    impl Repairs for Fake {
        type Drift = Edited;
        type Gone = ();

        async fn ready(&self) {}

        fn route_ids(&self) -> Vec<String> {
            vec!["r".to_owned()]
        }

        fn assess(&self, _: &str, _: Option<&()>) -> Option<Edited> {
            (*self.drifted.lock().unwrap()).then_some(Edited(self.grace))
        }

        async fn repair(&self, _: &str, _: Edited) -> Result<bool> {
            self.repairs.lock().unwrap().push(Instant::now());
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(true));
            if matches!(answer, Ok(true)) {
                *self.drifted.lock().unwrap() = false;
            }
            answer
        }

        fn supersedes(&self, _: &(), _: &()) -> bool {
            true
        }
    }

    fn fake(grace: bool, answers: Vec<Result<bool>>) -> Arc<Fake> {
        Arc::new(Fake {
            grace,
            drifted: Mutex::new(true),
            answers: Mutex::new(answers.into()),
            repairs: Mutex::new(Vec::new()),
        })
    }

    async fn run(repairs: &Arc<Fake>, for_: Duration) -> HealMetrics {
        let (feed, touches) = mpsc::unbounded_channel();
        let metrics = HealMetrics::default();
        let _healing =
            start(Arc::clone(repairs), touches, HealOptions::default(), metrics.clone(), Vec::new());
        feed.send(Touch::Route { id: "r".to_owned(), gone: None }).unwrap();
        tokio::time::sleep(for_).await;
        metrics
    }

    #[tokio::test(start_paused = true)]
    async fn a_drift_that_needs_grace_waits_for_it_and_is_counted_once() {
        let repairs = fake(true, Vec::new());
        let started = Instant::now();
        let metrics = run(&repairs, Duration::from_secs(30)).await;
        let done = repairs.repairs.lock().unwrap().clone();
        assert_eq!(done.len(), 1);
        assert!(done[0] - started >= HealOptions::default().grace, "repaired after {:?}", done[0] - started);
        assert_eq!((metrics.found("things", "edited"), metrics.repaired("things", "edited")), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_is_looked_at_again_and_a_failure_backs_off() {
        let unavailable = || Error::Unavailable("down".into());
        let conflict = Error::Conflict { name: "thing".to_owned() };
        let repairs = fake(false, vec![Err(conflict), Err(unavailable()), Err(unavailable())]);
        let metrics = run(&repairs, Duration::from_secs(60)).await;
        let done = repairs.repairs.lock().unwrap().clone();
        assert_eq!(done.len(), 4, "a conflict, two failures, then the repair");
        let gaps: Vec<Duration> = done.windows(2).map(|w| w[1] - w[0]).collect();
        let (shortest, longest) = HealOptions::default().jitter;
        assert!(gaps[0] <= longest, "a conflict is looked at again after the jitter alone: {gaps:?}");
        assert!(gaps[1] >= shortest + Duration::from_secs(1), "a failure backs off: {gaps:?}");
        assert!(gaps[2] >= shortest + Duration::from_secs(2), "longer each time: {gaps:?}");
        assert_eq!(metrics.repaired("things", "edited"), 1);
    }
}
