//! Read-your-writes for a watch cache: our writes, until the watch delivers them.
//!
//! A write usually returns before the watch event for it arrives, and JupyterHub may read
//! right after. The overlay keeps each write until the cache can be trusted to show it or
//! something newer (another replica's write), and meanwhile answers reads with it.
//!
//! Everything here rests on resource versions, compared as the integers they are (etcd
//! revisions), and on one fact of the API server: a watch stream delivers events in
//! resource-version order. So once the watch has delivered version `w`, the cache holds every
//! change up to `w`. Per object name, the overlay keeps our latest write with its version:
//!
//! - An object we stored at version `r` is shown instead of the cached one while the cache
//!   holds an older version (or none), and let go once the watch has delivered `r`.
//! - A delete is a tombstone at version `r`, the server's version read after the delete was
//!   answered (whether it found the object or another replica had deleted it first). It hides
//!   every cached version of the name up to `r`, each of which the server had deleted by then,
//!   and shows a newer one (a re-creation since). It is let go once the watch has passed `r`:
//!   the cache then holds the name as it was at `r` or later, after the delete.
//!
//! Neither depends on when events arrive: a watch that lags behind our writes delivers the
//! creation of an object we have deleted since, and the tombstone still hides it.
//! An event can also arrive before the write's response, which is then not kept at all.
//!
//! A relist (after a broken watch) swaps the whole cache at its end: the list began after every
//! write made before it started, so it holds them or something newer. Should a resource version
//! not parse, a stored object waits for its own event and a tombstone for a relist. Either way
//! a write is kept for a time limit at most, counted while the watch is up: a write the watch
//! never shows is not kept for ever, and one made just before the API server went away is not
//! let go while the watch cannot bring it (the route would vanish, and JupyterHub's delete of
//! it answer 404 and leave it on the server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::watcher::Event;

/// How long a write may wait for the watch before the overlay lets it go.
const TTL: Duration = Duration::from_secs(10);

/// What a write left on the server.
#[derive(Debug)]
pub enum Write<K> {
    /// The object as the server stored it.
    Stored(Arc<K>),
    /// Deleted as of this resource version: the server's version read after the delete
    /// answered (`None` when that read failed). The API server answers a custom resource's
    /// delete with a Status that carries none, whether the delete found the object or not.
    Gone(Option<String>),
}

#[derive(Debug)]
struct Pending<K> {
    /// The object as written, or `None` for a delete.
    object: Option<Arc<K>>,
    /// The write's resource version as an integer, if it is one.
    version: Option<u64>,
    /// The write's resource version as the server wrote it, to match events by.
    raw_version: Option<String>,
    /// When, in the overlay's own order of writes and relists, the write was remembered.
    seq: u64,
    at: Instant,
}

impl<K: Resource> Pending<K> {
    /// Whether this write is superseded by the object the cache holds for its name, which is
    /// then the one to show.
    fn outdated_by(&self, cached: Option<&K>) -> bool {
        let (Some(cached), Some(version)) = (cached, self.version) else {
            return false;
        };
        let Some(cached_version) = version_of(cached) else {
            return false;
        };
        match self.object {
            // The cache holds our write or a later one.
            Some(_) => cached_version >= version,
            // Created again since the delete.
            None => cached_version > version,
        }
    }

    /// Whether the cache, having every change up to `watched`, shows this write or something
    /// newer for good, so that it need not be kept.
    fn settled(&self, watched: u64) -> bool {
        self.version.is_some_and(|version| version <= watched)
    }
}

#[derive(Debug)]
struct State<K> {
    pending: HashMap<String, Pending<K>>,
    /// The highest resource version the watch has delivered.
    watched: u64,
    /// The highest resource version of a write of ours the server has answered.
    answered: u64,
    /// Counts writes and relists, to tell which came first.
    seq: u64,
    /// The relist in progress.
    relist: Option<Relist>,
    /// Since when the watch has been delivering: `None` while it fails or relists, when the
    /// time limit does not run.
    watching_since: Option<Instant>,
}

/// A relist in progress.
#[derive(Debug, Clone, Copy)]
struct Relist {
    /// When it began, in the overlay's order of writes.
    seq: u64,
    /// A version the list is known to hold: it was taken after the server had answered our
    /// writes up to this one, and it holds at least the versions listed so far.
    floor: u64,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        State { pending: HashMap::new(), watched: 0, answered: 0, seq: 0, relist: None, watching_since: None }
    }
}

impl<K: Resource> State<K> {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Whether `pending` still has to be shown over `cached`, the cache's object of its name:
    /// the cache does not show it yet, the watch has not passed it, and its time is not up.
    fn keeps(&self, pending: &Pending<K>, cached: Option<&K>) -> bool {
        // A write that changed nothing gets no event; the cache already shows it.
        let shown = pending.object.is_some()
            && cached.map(|o| &o.meta().resource_version) == Some(&pending.raw_version);
        // The time limit runs from the write, or from when the watch came back after it.
        let timed_out = self.watching_since.is_some_and(|since| pending.at.max(since).elapsed() >= TTL);
        !shown && !pending.settled(self.watched) && !timed_out
    }

    fn saw_version(&mut self, version: u64) {
        self.watched = self.watched.max(version);
        let watched = self.watched;
        // Our writes up to `watched` are in the cache now, or something newer is.
        self.pending.retain(|_, p| !p.settled(watched));
    }
}

fn version_of<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

fn name_of<K: Resource>(object: &K) -> &str {
    object.meta().name.as_deref().unwrap_or_default()
}

/// Writes the watch has not delivered yet, by object name.
#[derive(Debug)]
pub struct Overlay<K> {
    state: Mutex<State<K>>,
}

impl<K> Default for Overlay<K> {
    fn default() -> Self {
        Overlay { state: Mutex::new(State::default()) }
    }
}

impl<K: Resource> Overlay<K> {
    fn state(&self) -> MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no write is waiting for the watch.
    pub fn is_empty(&self) -> bool {
        self.state().pending.is_empty()
    }

    /// Remembers a write the server has answered, or an object read back from the server
    /// (another writer's, found when our create hit its name): either is the server's state at
    /// its resource version, which the watch will deliver.
    pub fn wrote(&self, name: &str, write: Write<K>) {
        let mut state = self.state();
        let (object, raw_version) = match write {
            Write::Stored(object) => {
                let raw = object.meta().resource_version.clone();
                (Some(object), raw)
            }
            Write::Gone(raw) => (None, raw),
        };
        let version = raw_version.as_deref().and_then(|v| v.parse().ok());
        state.answered = state.answered.max(version.unwrap_or_default());
        // Two of our writes to one name may answer out of order: keep the later one. A
        // tombstone at an object's version came after it: the version was read after the delete.
        if let Some(kept) = state.pending.get(name)
            && let (Some(kept_version), Some(new)) = (kept.version, version)
            && (kept_version > new || (kept_version == new && kept.object.is_none()))
        {
            return;
        }
        let seq = state.next_seq();
        let pending = Pending { object, version, raw_version, seq, at: Instant::now() };
        if pending.settled(state.watched) {
            // Its event came before its answer: the cache shows it or something newer.
            state.pending.remove(name);
        } else {
            state.pending.insert(name.to_owned(), pending);
        }
    }

    /// The watch failed (it will retry, or list again): the time limit stops until it delivers.
    pub fn watch_failed(&self) {
        self.state().watching_since = None;
    }

    /// Lets go of the writes a watch event shows the cache has caught up with. Called after
    /// the event has reached the cache.
    pub fn saw(&self, event: &Event<K>) {
        let mut state = self.state();
        if matches!(event, Event::Apply(_) | Event::Delete(_))
            && state.relist.is_none()
            && state.watching_since.is_none()
        {
            // The watch resumed without a relist.
            state.watching_since = Some(Instant::now());
        }
        match event {
            Event::Apply(object) => {
                if let Some(version) = version_of(object) {
                    state.saw_version(version);
                }
                // A version that does not parse is matched as written.
                let name = name_of(object);
                let own_event =
                    |p: &Pending<K>| p.object.is_some() && p.raw_version == object.meta().resource_version;
                if state.pending.get(name).is_some_and(own_event) {
                    state.pending.remove(name);
                }
            }
            Event::Delete(object) => {
                // A tombstone without a version is not let go here: the delete of an earlier
                // object of the name, from a lagging watch, may still be followed by its
                // creation of the one we deleted.
                if let Some(version) = version_of(object) {
                    state.saw_version(version);
                }
            }
            Event::Init => {
                let seq = state.next_seq();
                state.relist = Some(Relist { seq, floor: state.answered });
                state.watching_since = None;
            }
            Event::InitApply(object) => {
                if let (Some(relist), Some(version)) = (&mut state.relist, version_of(object)) {
                    relist.floor = relist.floor.max(version);
                }
            }
            Event::InitDone => {
                // The cache is the list now, which was taken after these writes, so it holds
                // them or what came after; and it holds every change up to its floor.
                if let Some(relist) = state.relist.take() {
                    state.pending.retain(|_, p| p.seq > relist.seq);
                    state.saw_version(relist.floor);
                }
                state.watching_since = Some(Instant::now());
            }
        }
    }

    /// Lets [`TTL`] go by: for every write kept, and for the watch if it is up.
    #[cfg(test)]
    fn expire(&self) {
        let mut state = self.state();
        let back = |at: Instant| at.checked_sub(TTL).unwrap_or(at);
        state.watching_since = state.watching_since.map(back);
        for pending in state.pending.values_mut() {
            pending.at = back(pending.at);
        }
    }

    /// The names of written objects the watch has not delivered yet that `select` picks: with
    /// an index of the cache, what a reader of a few objects must look up by name.
    pub fn pending_names(&self, select: impl Fn(&K) -> bool) -> Vec<String> {
        let state = self.state();
        let written = state.pending.iter().filter(|(_, p)| p.object.as_deref().is_some_and(&select));
        written.map(|(name, _)| name.clone()).collect()
    }

    /// The cached objects with the writes not yet in them. `cache` is read under the
    /// overlay's lock, so that no event can pass between the two reads.
    pub fn apply(&self, cache: impl FnOnce() -> Vec<Arc<K>>) -> Vec<Arc<K>> {
        let mut state = self.state();
        let mut objects = cache();
        if state.pending.is_empty() {
            return objects;
        }
        let mut written = Vec::new();
        {
            let cached: HashMap<&str, &K> =
                objects.iter().map(|o| (name_of(o.as_ref()), o.as_ref())).collect();
            let mut pending = std::mem::take(&mut state.pending);
            pending.retain(|name, p| state.keeps(p, cached.get(name.as_str()).copied()));
            state.pending = pending;
            for (name, p) in &state.pending {
                if let Some(object) = &p.object
                    && !p.outdated_by(cached.get(name.as_str()).copied())
                {
                    written.push(Arc::clone(object));
                }
            }
        }
        // A cached object stays unless a write of ours to its name is newer.
        objects.retain(|o| state.pending.get(name_of(o.as_ref())).is_none_or(|p| p.outdated_by(Some(o))));
        objects.extend(written);
        objects
    }

    /// The object named `name`, as [`apply`](Self::apply) would list it: our write if one is
    /// still waiting for the watch, otherwise what `cache` (the cache's object of that name,
    /// read under the overlay's lock) holds. Costs one lookup, not a walk of the cache.
    pub fn get(&self, name: &str, cache: impl FnOnce() -> Option<Arc<K>>) -> Option<Arc<K>> {
        let mut state = self.state();
        let cached = cache();
        let Some(pending) = state.pending.get(name) else {
            return cached;
        };
        if !state.keeps(pending, cached.as_deref()) {
            state.pending.remove(name);
            return cached;
        }
        if pending.outdated_by(cached.as_deref()) { cached } else { pending.object.clone() }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    type Vs = ConfigMap;

    fn object(name: &str, version: &str) -> Arc<Vs> {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        };
        Arc::new(ConfigMap { metadata, ..ConfigMap::default() })
    }

    fn listed(overlay: &Overlay<Vs>, cache: &[Arc<Vs>]) -> Vec<String> {
        let mut shown: Vec<String> = overlay
            .apply(|| cache.to_vec())
            .iter()
            .map(|o| format!("{}@{}", name_of(o.as_ref()), o.metadata.resource_version.as_deref().unwrap()))
            .collect();
        shown.sort();
        shown
    }

    fn stored(name: &str, version: &str) -> Write<Vs> {
        Write::Stored(object(name, version))
    }

    fn gone(version: &str) -> Write<Vs> {
        Write::Gone(Some(version.into()))
    }

    fn apply(name: &str, version: &str) -> Event<Vs> {
        Event::Apply((*object(name, version)).clone())
    }

    fn delete(name: &str, version: &str) -> Event<Vs> {
        Event::Delete((*object(name, version)).clone())
    }

    #[test]
    fn a_write_shows_until_its_event_then_newer_writes_show() {
        let overlay = Overlay::default();
        overlay.wrote("a", stored("a", "5"));
        assert_eq!(listed(&overlay, &[object("a", "3")]), ["a@5"]);
        overlay.saw(&apply("a", "5"));
        // Another replica wrote after us: the cache is right now.
        assert_eq!(listed(&overlay, &[object("a", "7")]), ["a@7"]);
        assert!(overlay.is_empty());
    }

    #[test]
    fn a_delete_hides_the_object_until_its_event() {
        let overlay = Overlay::default();
        overlay.wrote("a", gone("4"));
        assert!(listed(&overlay, &[object("a", "3")]).is_empty());
        overlay.saw(&delete("a", "4"));
        assert_eq!(listed(&overlay, &[object("a", "9")]), ["a@9"], "created again since");
    }

    /// The watch lags behind a create and a delete of ours. The creation event arrives
    /// after the delete's answer; the deleted object must stay hidden until its delete event.
    #[test]
    fn a_delete_hides_a_creation_the_lagging_watch_delivers_late() {
        let overlay = Overlay::default();
        overlay.wrote("a", stored("a", "5"));
        overlay.wrote("a", gone("6"));
        assert!(listed(&overlay, &[]).is_empty());
        overlay.saw(&apply("a", "5"));
        assert!(listed(&overlay, &[object("a", "5")]).is_empty(), "deleted, though the cache shows it");
        overlay.saw(&delete("a", "6"));
        assert!(listed(&overlay, &[]).is_empty());
        assert!(overlay.is_empty());
    }

    /// An earlier generation's delete event does not let go of a later delete's tombstone.
    #[test]
    fn an_older_delete_event_does_not_end_a_newer_tombstone() {
        let overlay = Overlay::default();
        overlay.wrote("a", gone("9"));
        overlay.saw(&delete("a", "4"));
        overlay.saw(&apply("a", "7"));
        assert!(listed(&overlay, &[object("a", "7")]).is_empty());
    }

    #[test]
    fn a_tombstone_ends_once_the_watch_passed_it_and_hides_nothing() {
        let overlay = Overlay::default();
        overlay.wrote("a", gone("6"));
        overlay.saw(&apply("b", "4"));
        assert_eq!(listed(&overlay, &[object("a", "5"), object("b", "4")]), ["b@4"]);
        assert!(!overlay.is_empty(), "the watch has not passed the delete yet");
        overlay.saw(&apply("b", "7"));
        assert_eq!(listed(&overlay, &[object("b", "7")]), ["b@7"]);
        assert!(overlay.is_empty());
    }

    /// When the server's version could not be read after a delete, no event can tell the
    /// delete's from an earlier one of the same name; a relist (or the time limit) can.
    /// Found by `.ci/stress` in `apiserver_outage.rs`: a route written just before the API
    /// server went away was let go after 10 s while the watch was still down, so JupyterHub's
    /// delete of it answered 404 and left its VirtualService on the server.
    #[test]
    fn the_time_limit_stops_while_the_watch_is_down() {
        let overlay = Overlay::default();
        overlay.saw(&Event::Init);
        overlay.saw(&Event::InitDone);
        overlay.wrote("a", stored("a", "5"));
        overlay.watch_failed();
        overlay.expire();
        assert_eq!(listed(&overlay, &[]), ["a@5"], "let go while the watch could not bring it");
        overlay.saw(&Event::Init);
        overlay.expire();
        assert_eq!(listed(&overlay, &[]), ["a@5"], "let go during the relist");
        overlay.saw(&Event::InitApply((*object("a", "5")).clone()));
        overlay.saw(&Event::InitDone);
        assert_eq!(listed(&overlay, &[object("a", "5")]), ["a@5"]);
        assert!(overlay.is_empty());

        // With the watch up again, a write no event will ever match is let go at the limit,
        // counted from when the watch came back.
        overlay.watch_failed();
        overlay.wrote("b", Write::Stored(object("b", "not-a-number")));
        overlay.expire();
        overlay.saw(&apply("c", "9"));
        assert_eq!(listed(&overlay, &[]), ["b@not-a-number"], "the limit runs from the watch's return");
        overlay.expire();
        assert!(listed(&overlay, &[]).is_empty());
    }

    #[test]
    fn a_tombstone_without_a_version_waits_for_a_relist() {
        let overlay = Overlay::default();
        overlay.wrote("a", Write::Gone(None));
        overlay.saw(&delete("a", "4"));
        overlay.saw(&apply("a", "5"));
        assert!(listed(&overlay, &[object("a", "5")]).is_empty());
        overlay.saw(&Event::Init);
        overlay.saw(&Event::InitDone);
        assert_eq!(listed(&overlay, &[object("a", "5")]), ["a@5"]);
        assert!(overlay.is_empty());
    }

    #[test]
    fn a_relist_that_began_after_a_write_covers_it() {
        let overlay = Overlay::default();
        overlay.wrote("a", stored("x", "not a number"));
        overlay.saw(&Event::Init);
        overlay.saw(&Event::InitApply((*object("a", "8")).clone()));
        assert_eq!(listed(&overlay, &[]), ["x@not a number"], "the cache is swapped only at the end");
        overlay.saw(&Event::InitDone);
        assert_eq!(listed(&overlay, &[object("a", "8")]), ["a@8"]);
        assert!(overlay.is_empty());
    }

    #[test]
    fn a_relist_in_progress_does_not_let_go_of_writes() {
        let overlay = Overlay::default();
        overlay.saw(&Event::Init);
        overlay.saw(&Event::InitApply((*object("b", "20")).clone()));
        overlay.wrote("a", stored("a", "5"));
        // The old cache is still what reads see.
        assert_eq!(listed(&overlay, &[]), ["a@5"]);
        overlay.saw(&Event::InitDone);
        assert_eq!(listed(&overlay, &[object("a", "5"), object("b", "20")]), ["a@5", "b@20"]);
        assert!(overlay.is_empty());
    }

    #[test]
    fn an_unchanged_write_is_shown_by_the_cache_itself() {
        let overlay = Overlay::default();
        overlay.wrote("a", stored("a", "4"));
        assert_eq!(listed(&overlay, &[object("a", "4")]), ["a@4"]);
        assert!(overlay.is_empty());
    }

    #[test]
    fn a_write_whose_event_came_before_its_response_is_not_kept() {
        let overlay = Overlay::default();
        // Our write is version 5; its event, and another replica's version 7, arrive first.
        overlay.saw(&apply("a", "5"));
        overlay.saw(&apply("a", "7"));
        overlay.wrote("a", stored("a", "5"));
        assert_eq!(listed(&overlay, &[object("a", "7")]), ["a@7"]);
        assert!(overlay.is_empty());
    }

    #[test]
    fn of_two_answers_for_one_name_the_later_write_wins() {
        let overlay = Overlay::default();
        overlay.wrote("a", gone("8"));
        overlay.wrote("a", stored("a", "6"));
        assert!(listed(&overlay, &[]).is_empty());
    }

    /// Property test of read-your-writes against a model of the API server and one watch.
    mod model {
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::*;

        const NAMES: usize = 3;

        /// One step of the world: a write and its answer are separate steps, as requests
        /// overlap and answers arrive late.
        #[derive(Debug, Clone)]
        enum Step {
            /// Our write reaches the server now; its answer is in flight.
            Ours {
                name: usize,
                put: bool,
            },
            /// Another replica's write.
            Theirs {
                name: usize,
                put: bool,
            },
            /// One of our writes in flight is answered.
            Answer {
                pick: usize,
            },
            /// The watch delivers its next events.
            Deliver {
                events: usize,
            },
            /// The watch breaks and lists again; writes may happen meanwhile.
            StartRelist,
            FinishRelist,
            /// The time limit passes while the watch is relisting.
            WaitWhileRelisting,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0..NAMES, any::<bool>()).prop_map(|(name, put)| Step::Ours { name, put }),
                2 => (0..NAMES, any::<bool>()).prop_map(|(name, put)| Step::Theirs { name, put }),
                4 => any::<usize>().prop_map(|pick| Step::Answer { pick }),
                4 => (1..4usize).prop_map(|events| Step::Deliver { events }),
                1 => Just(Step::StartRelist),
                1 => Just(Step::FinishRelist),
                1 => Just(Step::WaitWhileRelisting),
            ]
        }

        /// A change on the server: at `rv`, `name` became `Some(version)` or was deleted.
        #[derive(Debug, Clone)]
        struct Change {
            rv: u64,
            name: String,
            now: Option<u64>,
        }

        /// What the server did for a write of ours, before it is answered.
        #[derive(Debug)]
        enum Done {
            Stored(u64),
            /// Deleted, or found nothing to delete.
            Deleted,
        }

        #[derive(Debug)]
        struct World {
            /// Whether the server's version read after a delete is the delete's own (nothing
            /// written between), or the version when the answer reaches the overlay.
            read_at_once: bool,
            rv: u64,
            live: BTreeMap<String, u64>,
            log: Vec<Change>,
            /// Our writes the server has done and not yet answered, with the server's version
            /// right after each.
            in_flight: Vec<(String, Done, u64)>,
            /// Per name, the server's version as of our latest answered write.
            acknowledged: BTreeMap<String, u64>,
            delivered: usize,
            cache: BTreeMap<String, Arc<Vs>>,
            relist: Option<(BTreeMap<String, u64>, u64)>,
            /// The server's version when the latest relist listed.
            listed_at: u64,
            /// Names with a write of ours answered after a relist had listed it.
            answered_in_relist: BTreeSet<String>,
            overlay: Overlay<Vs>,
        }

        impl World {
            fn new(read_at_once: bool) -> World {
                World {
                    read_at_once,
                    rv: 1,
                    live: BTreeMap::new(),
                    log: Vec::new(),
                    in_flight: Vec::new(),
                    acknowledged: BTreeMap::new(),
                    delivered: 0,
                    cache: BTreeMap::new(),
                    relist: None,
                    listed_at: 0,
                    answered_in_relist: BTreeSet::new(),
                    overlay: Overlay::default(),
                }
            }

            /// Writes on the server.
            fn write(&mut self, name: &str, put: bool) -> Done {
                if !put && !self.live.contains_key(name) {
                    return Done::Deleted;
                }
                self.rv += 1;
                let rv = self.rv;
                let now = put.then_some(rv);
                match now {
                    Some(version) => self.live.insert(name.to_owned(), version),
                    None => self.live.remove(name),
                };
                self.log.push(Change { rv, name: name.to_owned(), now });
                if put { Done::Stored(rv) } else { Done::Deleted }
            }

            fn run(&mut self, step: &Step) {
                match *step {
                    Step::Ours { name, put } => {
                        let name = format!("vs{name}");
                        // JupyterHub writes a route one request at a time.
                        if self.in_flight.iter().any(|(n, ..)| *n == name) {
                            return;
                        }
                        let done = self.write(&name, put);
                        self.in_flight.push((name, done, self.rv));
                    }
                    Step::Theirs { name, put } => {
                        self.write(&format!("vs{name}"), put);
                    }
                    Step::Answer { pick } if !self.in_flight.is_empty() => {
                        let (name, done, as_of) = self.in_flight.remove(pick % self.in_flight.len());
                        let write = match done {
                            Done::Stored(rv) => Write::Stored(object(&name, &rv.to_string())),
                            // The store reads the server's version after the delete's answer.
                            Done::Deleted if self.read_at_once => Write::Gone(Some(as_of.to_string())),
                            Done::Deleted => Write::Gone(Some(self.rv.to_string())),
                        };
                        if self.listed_at >= as_of {
                            self.answered_in_relist.insert(name.clone());
                        }
                        self.overlay.wrote(&name, write);
                        let acknowledged = self.acknowledged.entry(name).or_default();
                        *acknowledged = (*acknowledged).max(as_of);
                    }
                    Step::Deliver { events } if self.relist.is_none() => {
                        for change in
                            self.log.iter().skip(self.delivered).take(events).cloned().collect::<Vec<_>>()
                        {
                            self.deliver(&change);
                        }
                    }
                    Step::StartRelist if self.relist.is_none() => {
                        self.overlay.saw(&Event::Init);
                        self.relist = Some((self.live.clone(), self.rv));
                        self.listed_at = self.rv;
                    }
                    Step::FinishRelist => self.finish_relist(),
                    Step::WaitWhileRelisting if self.relist.is_some() => self.overlay.expire(),
                    _ => {}
                }
            }

            fn deliver(&mut self, change: &Change) {
                self.delivered += 1;
                let rv = change.rv.to_string();
                let event = match change.now {
                    Some(_) => {
                        let object = object(&change.name, &rv);
                        self.cache.insert(change.name.clone(), Arc::clone(&object));
                        Event::Apply((*object).clone())
                    }
                    None => {
                        self.cache.remove(&change.name);
                        Event::Delete((*object(&change.name, &rv)).clone())
                    }
                };
                self.overlay.saw(&event);
            }

            fn finish_relist(&mut self) {
                let Some((listed, listed_at)) = self.relist.take() else {
                    return;
                };
                for (name, version) in &listed {
                    self.overlay.saw(&Event::InitApply((*object(name, &version.to_string())).clone()));
                }
                self.cache = listed
                    .iter()
                    .map(|(name, version)| (name.clone(), object(name, &version.to_string())))
                    .collect();
                self.overlay.saw(&Event::InitDone);
                self.delivered = self.log.iter().take_while(|c| c.rv <= listed_at).count();
            }

            /// What the listing shows, by name, as versions.
            fn listing(&self) -> BTreeMap<String, u64> {
                let listing = self.overlay.apply(|| self.cache.values().cloned().collect());
                let shown: BTreeMap<String, u64> = listing
                    .iter()
                    .map(|o| (name_of(o.as_ref()).to_owned(), version_of(o.as_ref()).unwrap()))
                    .collect();
                assert_eq!(shown.len(), listing.len(), "a name listed twice: {listing:?}");
                shown
            }

            /// The listing, checked against reading each name alone (first: the listing lets
            /// go of what is done).
            fn read(&self) -> Result<BTreeMap<String, u64>, TestCaseError> {
                let alone: Vec<(String, Option<u64>)> = (0..NAMES)
                    .map(|n| format!("vs{n}"))
                    .map(|name| {
                        let object = self.overlay.get(&name, || self.cache.get(&name).cloned());
                        (name, object.map(|o| version_of(o.as_ref()).unwrap()))
                    })
                    .collect();
                let shown = self.listing();
                for (name, version) in alone {
                    prop_assert_eq!(version, shown.get(&name).copied(), "{} read alone, and listed", name);
                }
                Ok(shown)
            }

            /// The name's state (its version, or `None` when absent) at revision `t`.
            fn state_at(&self, name: &str, t: u64) -> Option<u64> {
                self.log.iter().rev().find(|c| c.name == name && c.rv <= t).and_then(|c| c.now)
            }

            /// Every name is listed as the server held it at some revision no older than our
            /// latest answered write to it.
            fn check(&self) -> Result<(), TestCaseError> {
                let shown = self.read()?;
                for name in (0..NAMES).map(|n| format!("vs{n}")) {
                    let since = self.acknowledged.get(&name).copied().unwrap_or(0);
                    let mut valid = vec![self.state_at(&name, since)];
                    valid.extend(self.log.iter().filter(|c| c.name == name && c.rv > since).map(|c| c.now));
                    let listed = shown.get(&name).copied();
                    prop_assert!(
                        valid.contains(&listed),
                        "{name} listed as {listed:?}; the server held {valid:?} since our write at {since}"
                    );
                }
                Ok(())
            }

            /// Lets everything arrive; the listing is then exactly the server's state. Only a
            /// write answered after a relist had listed it may be kept until the time limit:
            /// when the list lacks it, nothing tells the overlay whether the list was taken
            /// before the write or after a later delete (kube-runtime does not hand out the
            /// list's resource version), and no event may ever come for it.
            fn settle(&mut self) -> Result<(), TestCaseError> {
                self.finish_relist();
                while !self.in_flight.is_empty() {
                    self.run(&Step::Answer { pick: 0 });
                }
                for change in self.log.iter().skip(self.delivered).cloned().collect::<Vec<_>>() {
                    self.deliver(&change);
                }
                let unsure = |listing: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
                    listing
                        .iter()
                        .filter(|(n, _)| !self.answered_in_relist.contains(*n))
                        .map(|(n, v)| (n.clone(), *v))
                        .collect()
                };
                prop_assert_eq!(unsure(&self.read()?), unsure(&self.live));
                self.overlay.expire();
                prop_assert_eq!(self.read()?, self.live.clone());
                Ok(())
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn a_listing_shows_our_latest_writes_or_something_newer(
                steps in proptest::collection::vec(step(), 1..60),
                read_at_once in any::<bool>(),
            ) {
                let mut world = World::new(read_at_once);
                for step in &steps {
                    world.run(step);
                    world.check()?;
                }
                world.settle()?;
            }
        }
    }
}
