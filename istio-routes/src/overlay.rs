//! Read-your-writes for a watch cache: our writes, until the watch delivers them.
//!
//! A write usually returns before the watch event for it arrives, and JupyterHub may read
//! right after. The overlay keeps each write until the watch stream, which delivers events in
//! resource-version order, has passed it; only then can the cache be trusted to hold it or
//! something newer (another replica's write).
//!
//! The event can also arrive *before* the write's response. So the overlay tracks the highest
//! resource version the watch has delivered, and a write at or below it is not kept at all.
//! This compares resource versions as the integers they are (etcd revisions); should one not
//! parse, the write waits for its own event, a relist, or the time limit, which also guards
//! against a watch that is down. A delete's tombstone is kept only while the cache still
//! holds the object, so its event is still to come.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::runtime::watcher::Event;

use crate::resources::VirtualService;

/// How long a write may wait for the watch before the overlay lets it go.
const TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Pending {
    /// The object as written, or `None` for a delete.
    object: Option<Arc<VirtualService>>,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// When the relist in progress started.
    relist_started: Option<Instant>,
    /// The highest resource version the watch has delivered.
    watched: u64,
}

fn version_of(object: &VirtualService) -> Option<u64> {
    object.metadata.resource_version.as_deref()?.parse().ok()
}

impl State {
    /// Whether the watch has delivered `object`'s version, or a later one.
    fn delivered(&self, object: &VirtualService) -> bool {
        version_of(object).is_some_and(|version| version <= self.watched)
    }
}

/// Writes the watch has not delivered yet, by object name.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    state: Mutex<State>,
}

fn name_of(object: &VirtualService) -> &str {
    object.metadata.name.as_deref().unwrap_or_default()
}

impl Overlay {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no write is waiting for the watch.
    pub(crate) fn is_empty(&self) -> bool {
        self.state().pending.is_empty()
    }

    /// Remembers a write: the object as stored, or `None` for a delete, which `cached` tells
    /// whether the cache still shows.
    pub(crate) fn wrote(
        &self,
        name: &str,
        object: Option<Arc<VirtualService>>,
        cached: impl FnOnce() -> bool,
    ) {
        let mut state = self.state();
        let delivered = match &object {
            Some(object) => state.delivered(object),
            // The cache is updated before its event reaches `saw`, under this lock.
            None => !cached(),
        };
        if delivered {
            state.pending.remove(name);
        } else {
            state.pending.insert(name.to_owned(), Pending { object, at: Instant::now() });
        }
    }

    /// Lets go of the writes a watch event shows the cache has caught up with.
    pub(crate) fn saw(&self, event: &Event<VirtualService>) {
        let mut state = self.state();
        if let Event::Apply(object) | Event::Delete(object) | Event::InitApply(object) = event
            && let Some(version) = version_of(object)
        {
            state.watched = state.watched.max(version);
            let watched = state.watched;
            state.pending.retain(|_, p| p.object.as_deref().and_then(version_of).is_none_or(|v| v > watched));
        }
        match event {
            Event::Apply(object) => {
                let name = name_of(object);
                let caught_up = state.pending.get(name).is_some_and(|p| {
                    p.object
                        .as_ref()
                        .is_some_and(|o| o.metadata.resource_version == object.metadata.resource_version)
                });
                if caught_up {
                    state.pending.remove(name);
                }
            }
            Event::Delete(object) => {
                let name = name_of(object);
                if state.pending.get(name).is_some_and(|p| p.object.is_none()) {
                    state.pending.remove(name);
                }
            }
            Event::Init => state.relist_started = Some(Instant::now()),
            Event::InitApply(_) => {}
            Event::InitDone => {
                // The list began after these writes, so it holds them or what came after.
                if let Some(started) = state.relist_started.take() {
                    state.pending.retain(|_, p| p.at > started);
                }
            }
        }
    }

    /// The cached objects with the writes not yet in them.
    pub(crate) fn apply(&self, mut objects: Vec<Arc<VirtualService>>) -> Vec<Arc<VirtualService>> {
        let mut state = self.state();
        if state.pending.is_empty() {
            return objects;
        }
        state.pending.retain(|name, pending| {
            // A write that changed nothing gets no event; the cache already shows it.
            let shown = pending.object.as_ref().is_some_and(|written| {
                objects.iter().any(|o| {
                    name_of(o) == name && o.metadata.resource_version == written.metadata.resource_version
                })
            });
            !shown && pending.at.elapsed() < TTL
        });
        objects.retain(|o| !state.pending.contains_key(name_of(o)));
        objects.extend(state.pending.values().filter_map(|p| p.object.clone()));
        objects
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::resources::{IstioVersion, VirtualServiceSpec};

    fn object(name: &str, version: &str) -> Arc<VirtualService> {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        };
        Arc::new(VirtualService::new(IstioVersion::V1, metadata, VirtualServiceSpec::default()))
    }

    fn versions(objects: &[Arc<VirtualService>]) -> Vec<String> {
        objects
            .iter()
            .map(|o| format!("{}@{}", name_of(o), o.metadata.resource_version.as_deref().unwrap()))
            .collect()
    }

    #[test]
    fn a_write_shows_until_its_event_then_newer_writes_show() {
        let overlay = Overlay::default();
        overlay.wrote("a", Some(object("a", "5")), || true);
        assert_eq!(versions(&overlay.apply(vec![object("a", "3")])), ["a@5"]);
        overlay.saw(&Event::Apply((*object("a", "5")).clone()));
        // Another replica wrote after us: the cache is right now.
        assert_eq!(versions(&overlay.apply(vec![object("a", "7")])), ["a@7"]);
    }

    #[test]
    fn a_delete_hides_the_object_until_its_event() {
        let overlay = Overlay::default();
        overlay.wrote("a", None, || true);
        assert!(overlay.apply(vec![object("a", "3")]).is_empty());
        overlay.saw(&Event::Delete((*object("a", "3")).clone()));
        assert_eq!(versions(&overlay.apply(vec![object("a", "9")])), ["a@9"], "created again since");
    }

    #[test]
    fn a_relist_that_began_after_a_write_covers_it() {
        let overlay = Overlay::default();
        overlay.wrote("a", Some(object("x", "not a number")), || true);
        std::thread::sleep(Duration::from_millis(2));
        overlay.saw(&Event::Init);
        overlay.saw(&Event::InitDone);
        assert_eq!(versions(&overlay.apply(vec![object("a", "8")])), ["a@8"]);
        assert!(overlay.state().pending.is_empty());
    }

    #[test]
    fn an_unchanged_write_is_shown_by_the_cache_itself() {
        let overlay = Overlay::default();
        overlay.wrote("a", Some(object("a", "4")), || true);
        assert_eq!(versions(&overlay.apply(vec![object("a", "4")])), ["a@4"]);
        assert!(overlay.state().pending.is_empty());
    }

    #[test]
    fn a_write_whose_event_came_before_its_response_is_not_kept() {
        let overlay = Overlay::default();
        // Our write is version 5; its event, and another replica's version 7, arrive first.
        overlay.saw(&Event::Apply((*object("a", "5")).clone()));
        overlay.saw(&Event::Apply((*object("a", "7")).clone()));
        overlay.wrote("a", Some(object("a", "5")), || true);
        assert_eq!(versions(&overlay.apply(vec![object("a", "7")])), ["a@7"]);
        // Likewise a delete whose event has reached the cache.
        overlay.wrote("b", None, || false);
        assert_eq!(versions(&overlay.apply(vec![object("b", "9")])), ["b@9"]);
    }
}
