//! Healing: when one of our objects no longer is what its route renders, the proxy repairs it.
//!
//! Nothing polls the API server. The VirtualService watch the store already runs tells healing
//! which route an event touched (and, for a delete, the object's last state); a second,
//! label-selected watch does the same for our ServiceEntries. Each touched route is checked
//! after a random delay (the jitter, 0.5–2.5 s by default), against the caches, and only what
//! drifted is written:
//!
//! | drift | what is found | repair |
//! |---|---|---|
//! | `edited` | the spec of a route's current VirtualService (or its ServiceEntry) differs from its rendering | patch it back to the rendering (a merge patch: an apply would create the object were it deleted meanwhile), with the object's `resourceVersion` as precondition |
//! | `deleted` | a VirtualService deleted without the delete mark, and no other generation of its route left; or a pod-IP route's ServiceEntry missing | create it again from its last state (and its ancestors re-created after it, as on add) |
//! | `stray_generation` | an older generation beside the route's current VirtualService | delete it with its `resourceVersion` as precondition, after carrying its content over when it was written last |
//! | `orphaned` | our ServiceEntry with no VirtualService of its route, or one whose route needs none | delete it with its `resourceVersion` as precondition |
//! | `stray` | an object of ours labelled with a route's id under a name that route does not render (copied, or left by an older naming), beside the one it does | delete it with its `resourceVersion` as precondition |
//!
//! Stray generations, strays and orphaned ServiceEntries are also what an add or an ancestor's
//! re-creation leaves for a moment (the ServiceEntry is applied before the VirtualService; a
//! new generation is created before the old one is deleted), so they are repaired only once
//! they have been seen for a grace period (5 s by default), checked again then.
//!
//! **One replica acts, without a lease.** Every replica sees the drift, but every repair is
//! conditional on the API server: a create fails with AlreadyExists, and an apply or delete
//! with a `resourceVersion` precondition fails with Conflict, when another replica got there
//! first or the object changed; the route is then checked again after a new delay, by which
//! time the watch shows what the other replica wrote.
//!
//! **A delete JupyterHub asked for is never undone.** A route delete marks each of the route's
//! VirtualServices with [`DELETE_INTENT_ANNOTATION`]
//! ([`RouteStore::mark_deleting`]) before deleting its
//! ServiceEntry (a marked route is not healed) and then the VirtualServices, each with the
//! marked `resourceVersion` as precondition, so the Deleted event every replica's watch
//! delivers carries the mark in the object's last state. Healing re-creates
//! only VirtualServices deleted unmarked whose route has no other generation left (an
//! ancestor's re-creation deletes the old generation after creating the new one, and the watch
//! delivers the two in that order, so those deletes need no mark). Right before re-creating, the
//! route's objects are looked up again in the cache and the overlay: a route re-added meanwhile
//! wins.
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

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backend::{Found, IstioBackend, name_of};
use crate::kube_store::SPEC_DIGEST_ANNOTATION;
use crate::read::Origin;
use crate::resources::{IstioKind, IstioObject, ServiceEntry, ServiceEntrySpec, VirtualService};
use crate::store::RouteStore;
use crate::translate::Rendered;
use crate::{Error, KubeStore, Result};
use kube_routes::HealMetrics;
use kube_routes::ROUTE_LABEL;
use kube_routes::{Seen, SeenObjects};
use kube_routes::{count_watch_call, watch_backoff};

/// The annotation a VirtualService is marked with right before the proxy deletes it because
/// JupyterHub deleted its route: a delete healing must not undo.
pub const DELETE_INTENT_ANNOTATION: &str = "jupyterhub-istio-proxy/deleting";

/// What the watches tell healing.
#[derive(Debug)]
pub(crate) enum Touch {
    /// An object of the route with this id changed; `gone` is the last state of a deleted
    /// VirtualService.
    Route { id: String, gone: Option<Arc<VirtualService>> },
    /// A watch listed everything again: every route is checked.
    Resync,
}

/// The SHA-256 of a spec as JSON: what healing compares objects by.
pub(crate) fn spec_sha256<T: Serialize>(spec: &T) -> [u8; 32] {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    Sha256::digest(json).into()
}

/// [`spec_sha256`] in hex, as a cached VirtualService carries it.
pub(crate) fn spec_digest<T: Serialize>(spec: &T) -> String {
    kube_routes::hex(&spec_sha256(spec))
}

/// How healing paces itself.
#[derive(Debug, Clone)]
pub struct HealOptions {
    /// The shortest and longest wait between a watch event and the check of its route (a
    /// random time in between), so that replicas seldom check at the same moment and the
    /// watch has shown each one the others' repairs.
    pub jitter: (Duration, Duration),
    /// How long a stray generation or an orphaned ServiceEntry must have been seen before it
    /// is deleted: the moments an add or a re-creation in progress looks like that.
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
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Healing {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts healing the objects of `backend`'s store (on the current tokio runtime): a watch of
/// our ServiceEntries, and the checks and repairs, which begin once both caches are synced.
pub fn heal(backend: Arc<IstioBackend<KubeStore>>, options: HealOptions, metrics: HealMetrics) -> Healing {
    let (feed, touches) = mpsc::unbounded_channel();
    if !backend.store().feed_healing(feed.clone()) {
        tracing::warn!("healing was started twice on one store; the second sees no VirtualService events");
    }
    let translation = backend.translation();
    let api = backend.store().service_entries_api().clone();
    let config = watcher::Config::default().labels(&translation.label_selector());
    let kube_metrics = backend.store().metrics().clone();
    let entries_synced = Arc::new(AtomicBool::new(false));
    let synced = Arc::clone(&entries_synced);
    let stream = watcher::<ServiceEntry>(api, config).backoff(watch_backoff());
    // Not a reflector of the objects: healing only judges ServiceEntries, so it keeps what
    // judging one takes.
    let entries = Arc::new(SeenObjects::new(ROUTE_LABEL));
    let seen = Arc::clone(&entries);
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut listing_since = None;
        while let Some(event) = stream.next().await {
            count_watch_call(&kube_metrics, ServiceEntrySpec::PLURAL, &event, &mut listing_since);
            if let Ok(event) = &event {
                seen.observe(event, |entry| spec_sha256(&entry.spec));
            }
            let touch = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    let id = object.metadata.labels.as_ref().and_then(|l| l.get(ROUTE_LABEL));
                    id.map(|id| Touch::Route { id: id.clone(), gone: None })
                }
                Ok(watcher::Event::InitDone) => {
                    synced.store(true, Ordering::Release);
                    Some(Touch::Resync)
                }
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(%error, "watching ServiceEntries failed; retrying");
                    None
                }
            };
            if let Some(touch) = touch {
                let _ = feed.send(touch);
            }
        }
    });
    let healer = Healer {
        backend,
        entries,
        entries_synced,
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
        healer.backend.store().wait_until_ready().await;
        healer.run(touches).await;
    });
    Healing { tasks: [watch, checks] }
}

/// A route waiting for its check.
struct Pending {
    key: (Instant, u64),
    gone: Option<Arc<VirtualService>>,
}

/// A route's recent repairs and failures, for its back-off.
struct Streak {
    count: u32,
    last: Instant,
}

struct Healer {
    backend: Arc<IstioBackend<KubeStore>>,
    /// Our ServiceEntries as the watch shows them, by name and by route id.
    entries: Arc<SeenObjects>,
    /// Whether the ServiceEntry cache has had its first list: until then (a Role without
    /// `watch` on serviceentries, say) ServiceEntries are not judged.
    entries_synced: Arc<AtomicBool>,
    options: HealOptions,
    metrics: HealMetrics,
    /// Checks by due time (and a sequence number, to keep keys unique), to route ids.
    queue: BTreeMap<(Instant, u64), String>,
    pending: HashMap<String, Pending>,
    /// Routes found drifting, with the kind and since when: found counts once per drift, and
    /// the grace of stray generations and orphans runs from then.
    drifting: HashMap<String, (&'static str, Instant)>,
    streaks: HashMap<String, Streak>,
    random: std::collections::hash_map::RandomState,
    seq: u64,
    /// When the last repair was written, for the rate limit.
    last_repair: Instant,
}

/// What is wrong with a route's objects, and what repairs it.
enum Drift {
    /// Its VirtualService was deleted behind our back: the objects to create again.
    Deleted(Box<Rendered>),
    Stray {
        stray: Found,
        current: Found,
    },
    /// The rendering to apply, carrying the edited object's resource version.
    Edited(VirtualService),
    /// The entry to create, and the name of the VirtualService that needs it.
    EntryMissing(Box<ServiceEntry>, String),
    /// The rendering to apply, carrying the edited entry's resource version.
    EntryEdited(ServiceEntry),
    Orphaned(Seen),
    /// An object of ours labelled with the route's id under a name the route does not render.
    Misnamed(Misnamed),
}

/// An object under a name its route does not render.
enum Misnamed {
    VirtualService(Arc<VirtualService>),
    ServiceEntry(Seen),
}

impl Drift {
    /// The metrics' `resource` and `kind`.
    fn labels(&self) -> (&'static str, &'static str) {
        const VS: &str = crate::resources::VirtualServiceSpec::PLURAL;
        const SE: &str = ServiceEntrySpec::PLURAL;
        match self {
            Drift::Deleted(_) => (VS, "deleted"),
            Drift::Stray { .. } => (VS, "stray_generation"),
            Drift::Edited(_) => (VS, "edited"),
            Drift::EntryMissing(..) => (SE, "deleted"),
            Drift::EntryEdited(_) => (SE, "edited"),
            Drift::Orphaned(_) => (SE, "orphaned"),
            Drift::Misnamed(Misnamed::VirtualService(_)) => (VS, "stray"),
            Drift::Misnamed(Misnamed::ServiceEntry(_)) => (SE, "stray"),
        }
    }

    /// Whether an operation in progress leaves the same picture for a moment.
    fn needs_grace(&self) -> bool {
        matches!(self, Drift::Stray { .. } | Drift::Orphaned(_) | Drift::Misnamed(_))
    }
}

fn is_marked(object: &VirtualService) -> bool {
    object.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DELETE_INTENT_ANNOTATION))
}

/// The digest of an object's spec: from the cache's annotation, or the spec itself for an
/// object the overlay holds whole.
fn observed_digest<S: Serialize>(object: &IstioObject<S>) -> String {
    match object.metadata.annotations.as_ref().and_then(|a| a.get(SPEC_DIGEST_ANNOTATION)) {
        Some(digest) => digest.clone(),
        None => spec_digest(&object.spec),
    }
}

/// An etcd revision, to tell which of two writes came last.
fn revision(object: &VirtualService) -> u64 {
    object.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

impl Healer {
    async fn run(mut self, mut touches: mpsc::UnboundedReceiver<Touch>) {
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
                        // From the store's index: a check costs one route, whatever the number.
                        let found = self.backend.objects_labelled(&id);
                        self.check(id, found, gone).await;
                    }
                }
            }
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
    fn schedule(&mut self, id: String, delay: Duration, gone: Option<Arc<VirtualService>>) {
        self.seq += 1;
        let key = (Instant::now() + delay, self.seq);
        let translation = self.backend.translation();
        let generation =
            |object: &Arc<VirtualService>| translation.read(object).and_then(|r| r.ok()).map(|r| r.origin);
        match self.pending.get_mut(&id) {
            Some(pending) => {
                if let Some(gone) = gone
                    && pending.gone.as_ref().is_none_or(|kept| generation(kept) <= generation(&gone))
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

    /// Every VirtualService in the cache (with the overlay), by route id.
    fn by_route(&self) -> HashMap<String, Vec<Arc<VirtualService>>> {
        let mut objects: HashMap<String, Vec<Arc<VirtualService>>> = HashMap::new();
        for object in self.backend.store().virtual_services() {
            if let Some(id) = object.metadata.labels.as_ref().and_then(|l| l.get(ROUTE_LABEL)) {
                objects.entry(id.clone()).or_default().push(object);
            }
        }
        objects
    }

    /// Checks every route now in the caches, without a call to the API server, and schedules
    /// those that drifted.
    fn survey(&mut self) {
        let mut objects = self.by_route();
        let mut ids: Vec<String> = objects.keys().cloned().collect();
        ids.extend(self.entries.routes());
        ids.sort();
        ids.dedup();
        let drifted: Vec<String> = ids
            .into_iter()
            .filter(|id| {
                let found = self.backend.found(objects.remove(id).unwrap_or_default());
                self.assess(id, found, None).is_some()
            })
            .collect();
        if !drifted.is_empty() {
            tracing::info!(routes = drifted.len(), "routes whose objects drifted, to repair");
        }
        for id in drifted {
            let delay = self.delay(&id);
            self.schedule(id, delay, None);
        }
    }

    /// The ServiceEntry of a route, as the watch last showed it.
    fn entry(&self, id: &str) -> Option<Seen> {
        self.entries.get(&self.backend.translation().service_entry_name_of(id))
    }

    /// What is wrong with a route's objects now, if anything.
    fn assess(&self, id: &str, objects: Vec<Found>, gone: Option<&Arc<VirtualService>>) -> Option<Drift> {
        let translation = self.backend.translation();
        let render = |route: &proxy_api::Route, generation| match translation.render(route, generation) {
            Ok(rendered) => Some(rendered),
            Err(error) => {
                tracing::warn!(route = %route.spec(), %error, "a stored route no longer renders; not healing it");
                None
            }
        };
        // Being deleted: nothing of it is restored.
        if objects.iter().any(|(object, _)| is_marked(object)) {
            return None;
        }
        let entries_known = self.entries_synced.load(Ordering::Acquire);
        let own_name = translation.service_entry_name_of(id);
        let (entry, stray_entries): (Vec<_>, Vec<_>) = match entries_known {
            true => self.entries.of_route(id).into_iter().partition(|entry| entry.name == own_name),
            false => Default::default(),
        };
        let entry = entry.into_iter().next();
        let ours: Vec<&Found> =
            objects.iter().filter(|(_, stored)| matches!(stored.origin, Origin::Ours { .. })).collect();
        // A copy under another name, beside the object its route renders, is deleted; alone it
        // is what routes the route, and is left to the route's next write.
        let (named, misnamed): (Vec<&Found>, Vec<&Found>) = ours.iter().partition(|(object, stored)| {
            matches!(stored.origin, Origin::Ours { generation }
                    if name_of(object) == translation.virtual_service_name(stored.route.spec(), generation))
        });
        if let (Some(stray), false) = (misnamed.first(), named.is_empty()) {
            return Some(Drift::Misnamed(Misnamed::VirtualService(Arc::clone(&stray.0))));
        }
        let Some(&current) = ours.first() else {
            if !objects.is_empty() {
                // The Go proxy's object: not ours to render or restore.
                return None;
            }
            if let Some(gone) = gone
                && !is_marked(gone)
                && let Some(Ok(stored)) = translation.read(gone)
                && let Origin::Ours { generation } = stored.origin
            {
                return render(&stored.route, generation).map(|r| Drift::Deleted(Box::new(r)));
            }
            return entry.or_else(|| stray_entries.into_iter().next()).map(Drift::Orphaned);
        };
        if let Some(&stray) = ours.get(1) {
            return Some(Drift::Stray { stray: stray.clone(), current: current.clone() });
        }
        let Origin::Ours { generation } = current.1.origin else {
            return None;
        };
        let rendered = render(&current.1.route, generation)?;
        if observed_digest(&current.0) != spec_digest(&rendered.virtual_service.spec) {
            let mut wanted = rendered.virtual_service;
            wanted.metadata.resource_version = current.0.metadata.resource_version.clone();
            return Some(Drift::Edited(wanted));
        }
        if !entries_known {
            return None;
        }
        if let Some(stray) = stray_entries.into_iter().next() {
            return Some(Drift::Misnamed(Misnamed::ServiceEntry(stray)));
        }
        match (rendered.service_entry, entry) {
            (Some(wanted), None) => {
                Some(Drift::EntryMissing(Box::new(wanted), name_of(&current.0).to_owned()))
            }
            (Some(mut wanted), Some(entry)) if entry.digest != spec_sha256(&wanted.spec) => {
                wanted.metadata.resource_version = Some(entry.resource_version);
                Some(Drift::EntryEdited(wanted))
            }
            (None, Some(entry)) => Some(Drift::Orphaned(entry)),
            _ => None,
        }
    }

    /// Checks a route, and repairs what drifted.
    async fn check(&mut self, id: String, objects: Vec<Found>, gone: Option<Arc<VirtualService>>) {
        let Some(drift) = self.assess(&id, objects, gone.as_ref()) else {
            self.drifting.remove(&id);
            return;
        };
        let (resource, kind) = drift.labels();
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
        let object = match &drift {
            Drift::Deleted(rendered) => rendered.virtual_service.metadata.name.clone(),
            Drift::Stray { stray, .. } => stray.0.metadata.name.clone(),
            Drift::Edited(object) => object.metadata.name.clone(),
            Drift::EntryMissing(entry, _) => entry.metadata.name.clone(),
            Drift::EntryEdited(entry) => entry.metadata.name.clone(),
            Drift::Orphaned(entry) => Some(entry.name.clone()),
            Drift::Misnamed(Misnamed::VirtualService(object)) => object.metadata.name.clone(),
            Drift::Misnamed(Misnamed::ServiceEntry(entry)) => Some(entry.name.clone()),
        }
        .unwrap_or_default();
        // At most `max_repairs_per_second`: a new build that renders every route differently
        // re-applies them all, but as a trickle.
        let spacing = Duration::from_secs(1) / self.options.max_repairs_per_second.max(1);
        tokio::time::sleep_until(self.last_repair + spacing).await;
        self.last_repair = Instant::now();
        match self.repair(&id, drift).await {
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

    /// Repairs a drift; answers whether this replica's write did.
    async fn repair(&self, id: &str, drift: Drift) -> Result<bool> {
        let store = self.backend.store();
        match drift {
            Drift::Deleted(rendered) => {
                let rendered = *rendered;
                // A route re-added meanwhile wins: its objects are in the cache or overlay.
                if !self.backend.objects_labelled(id).is_empty() {
                    return Ok(false);
                }
                if let Some(entry) = rendered.service_entry
                    && self.entry(id).is_none()
                {
                    match store.create_service_entry(entry).await {
                        Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
                let spec = self.backend.translation().read(&rendered.virtual_service).and_then(|r| r.ok());
                let created = match store.create_virtual_service(rendered.virtual_service).await {
                    Ok(created) => created,
                    Err(Error::AlreadyExists { .. }) => return Ok(false),
                    Err(error) => return Err(error),
                };
                // Newer now than its ancestors' objects: they are created again after it.
                if let Some(stored) = spec
                    && let Err(error) = self.backend.keep_ancestors_after(stored.route.spec(), &created).await
                {
                    tracing::warn!(route = %stored.route.spec(), %error, "re-ordering a restored route's ancestors failed");
                }
                Ok(true)
            }
            Drift::Stray { stray, current } => {
                // Written after the current object (by a replica that had not seen it): its
                // content is the newer, and is carried over first.
                if stray.1.route != current.1.route
                    && revision(&stray.0) > revision(&current.0)
                    && let Origin::Ours { generation } = current.1.origin
                {
                    let Ok(rendered) = self.backend.translation().render(&stray.1.route, generation) else {
                        return Ok(false);
                    };
                    let mut wanted = rendered.virtual_service;
                    wanted.metadata.resource_version = current.0.metadata.resource_version.clone();
                    if store.restore_virtual_service(&wanted).await?.is_none() {
                        return Ok(false);
                    }
                }
                store
                    .delete_virtual_service(name_of(&stray.0), stray.0.metadata.resource_version.clone())
                    .await
            }
            Drift::Edited(wanted) => Ok(store.restore_virtual_service(&wanted).await?.is_some()),
            Drift::EntryMissing(entry, virtual_service) => {
                // The cache may be stale while its watch is down or relisting (the route since
                // deleted); the entry is created only for a VirtualService the server still
                // holds, unmarked. One list, for a rare repair.
                match store.live_virtual_service(&virtual_service).await? {
                    Some(object) if !is_marked(&object) => {}
                    _ => return Ok(false),
                }
                match store.create_service_entry(*entry).await {
                    Ok(()) => Ok(true),
                    Err(Error::AlreadyExists { .. }) => Ok(false),
                    Err(error) => Err(error),
                }
            }
            Drift::EntryEdited(entry) => store.restore_service_entry(&entry).await,
            Drift::Orphaned(entry) | Drift::Misnamed(Misnamed::ServiceEntry(entry)) => {
                store.delete_service_entry_at(&entry.name, entry.resource_version).await
            }
            Drift::Misnamed(Misnamed::VirtualService(object)) => {
                store.delete_virtual_service(name_of(&object), object.metadata.resource_version.clone()).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_store::{SERVICE_ENTRY_FIELDS, VIRTUAL_SERVICE_FIELDS};
    use crate::resources::{HttpRoute, ServicePort, VirtualServiceSpec, WorkloadEntry};

    fn keys<T: Serialize>(spec: &T) -> Vec<String> {
        let mut keys: Vec<String> =
            serde_json::to_value(spec).unwrap().as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        fields.sort();
        fields
    }

    /// A restore removes the fields its rendering leaves empty only if it knows them all.
    #[test]
    fn a_restore_knows_every_field_of_a_spec() {
        let one = || vec!["x".to_owned()];
        let virtual_service = VirtualServiceSpec {
            hosts: one(),
            gateways: one(),
            http: vec![HttpRoute::default()],
            export_to: one(),
        };
        assert_eq!(keys(&virtual_service), sorted(VIRTUAL_SERVICE_FIELDS));
        let entry = ServiceEntrySpec {
            hosts: one(),
            location: Some("MESH_INTERNAL".into()),
            resolution: Some("STATIC".into()),
            ports: vec![ServicePort::default()],
            endpoints: vec![WorkloadEntry::default()],
            export_to: one(),
        };
        assert_eq!(keys(&entry), sorted(SERVICE_ENTRY_FIELDS));
    }
}
