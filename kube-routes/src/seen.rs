//! What a watch has shown of objects healing only judges and never reads routes from: each
//! one's name, route, resource version and spec digest, not the object.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kube::Resource;
use kube::runtime::watcher::Event;

use crate::caches::shrink_when_sparse;

/// What healing knows of one object: enough to tell whether its spec is what its route
/// renders, and to write or delete it with its resource version as precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The object's name.
    pub name: String,
    /// Its value of the route label.
    pub route: String,
    /// Its `resourceVersion` when last seen.
    pub resource_version: String,
    /// The SHA-256 of its spec, as the caller of [`SeenObjects::observe`] computes it.
    pub digest: [u8; 32],
}

/// The objects a label-selected watch has delivered, by name and by route id, each as a
/// [`Seen`] (about 250 bytes, where a reflector's copy of a ServiceEntry, slimmed, took 1.8 KB;
/// at 10,000 pod-IP routes that was 17 MiB of healing's memory).
///
/// A relist builds the table anew and takes it whole at its end, as a reflector does, so
/// objects deleted while the watch was down leave nothing behind.
///
/// ```
/// use kube_routes::SeenObjects;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::runtime::watcher::Event;
///
/// let object = |name: &str, route: &str, version: &str| {
///     let mut object = ConfigMap::default();
///     object.metadata.name = Some(name.to_owned());
///     object.metadata.resource_version = Some(version.to_owned());
///     object.metadata.labels = Some([("route".to_owned(), route.to_owned())].into());
///     object
/// };
/// let digest = |object: &ConfigMap| [object.data.is_some() as u8; 32];
/// let seen = SeenObjects::new("route");
/// seen.observe(&Event::Apply(object("a-0", "a", "7")), digest);
/// seen.observe(&Event::Apply(object("a-1", "a", "8")), digest);
/// assert_eq!(seen.get("a-0").unwrap().resource_version, "7");
/// assert_eq!(seen.of_route("a").len(), 2);
/// seen.observe(&Event::Delete(object("a-0", "a", "9")), digest);
/// assert!(seen.get("a-0").is_none());
/// assert_eq!(seen.routes(), ["a"]);
/// ```
#[derive(Debug)]
pub struct SeenObjects {
    label: &'static str,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    live: Table,
    /// The table a relist is building, taken as `live` at its end.
    relist: Option<Table>,
}

#[derive(Debug, Default)]
struct Table {
    by_name: HashMap<Box<str>, Entry>,
    /// Route id to the names of the objects labelled with it.
    by_route: HashMap<Box<str>, Vec<Box<str>>>,
}

#[derive(Debug)]
struct Entry {
    route: Box<str>,
    resource_version: Box<str>,
    digest: [u8; 32],
}

impl SeenObjects {
    /// An empty table of the objects labelled with `label` (the route id's label).
    pub fn new(label: &'static str) -> Self {
        SeenObjects { label, state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change completes under the lock before it is released, and none panics midway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in one watch event; `digest` is the SHA-256 of an object's spec.
    pub fn observe<K: Resource>(&self, event: &Event<K>, digest: impl Fn(&K) -> [u8; 32]) {
        let mut state = self.state();
        match event {
            Event::Apply(object) => self.apply(&mut state.live, object, &digest),
            Event::Delete(object) => {
                if let Some(name) = object.meta().name.as_deref() {
                    state.live.remove(name);
                }
            }
            Event::Init => state.relist = Some(Table::default()),
            Event::InitApply(object) => {
                if let Some(relist) = state.relist.as_mut() {
                    self.apply(relist, object, &digest);
                }
            }
            Event::InitDone => {
                if let Some(relist) = state.relist.take() {
                    state.live = relist;
                }
            }
        }
    }

    fn apply<K: Resource>(&self, table: &mut Table, object: &K, digest: &impl Fn(&K) -> [u8; 32]) {
        let meta = object.meta();
        let Some(name) = meta.name.as_deref() else { return };
        // Whatever it was labelled before, it is what it is labelled now, or nothing of ours.
        table.remove(name);
        let Some(route) = meta.labels.as_ref().and_then(|labels| labels.get(self.label)) else { return };
        let entry = Entry {
            route: route.as_str().into(),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            digest: digest(object),
        };
        table.by_route.entry(route.as_str().into()).or_default().push(name.into());
        table.by_name.insert(name.into(), entry);
    }

    /// The object named `name`, if the watch has shown it.
    pub fn get(&self, name: &str) -> Option<Seen> {
        let state = self.state();
        state.live.by_name.get_key_value(name).map(|(name, entry)| entry.seen(name))
    }

    /// The objects labelled with the route id `route`.
    pub fn of_route(&self, route: &str) -> Vec<Seen> {
        let state = self.state();
        let names = state.live.by_route.get(route).map(Vec::as_slice).unwrap_or_default();
        names
            .iter()
            .filter_map(|name| state.live.by_name.get_key_value(name))
            .map(|(n, e)| e.seen(n))
            .collect()
    }

    /// Every route id some object is labelled with.
    pub fn routes(&self) -> Vec<String> {
        self.state().live.by_route.keys().map(|route| route.to_string()).collect()
    }
}

impl Table {
    fn remove(&mut self, name: &str) {
        let Some(entry) = self.by_name.remove(name) else { return };
        if let Some(names) = self.by_route.get_mut(&entry.route) {
            names.retain(|held| &**held != name);
            if names.is_empty() {
                self.by_route.remove(&entry.route);
                shrink_when_sparse(&mut self.by_route);
            }
        }
        shrink_when_sparse(&mut self.by_name);
    }
}

impl Entry {
    fn seen(&self, name: &str) -> Seen {
        Seen {
            name: name.to_owned(),
            route: self.route.to_string(),
            resource_version: self.resource_version.to_string(),
            digest: self.digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn object(name: &str, route: Option<&str>, version: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.to_owned());
        object.metadata.resource_version = Some(version.to_owned());
        object.metadata.labels = route.map(|route| [("route".to_owned(), route.to_owned())].into());
        object
    }

    fn digest(object: &ConfigMap) -> [u8; 32] {
        [object.metadata.resource_version.as_deref().unwrap_or("0").len() as u8; 32]
    }

    #[test]
    fn a_relist_replaces_the_table_at_its_end() {
        let seen = SeenObjects::new("route");
        seen.observe(&Event::Apply(object("a-0", Some("a"), "1")), digest);
        seen.observe(&Event::Apply(object("b-0", Some("b"), "2")), digest);
        seen.observe(&Event::<ConfigMap>::Init, digest);
        seen.observe(&Event::InitApply(object("a-0", Some("a"), "30")), digest);
        assert_eq!(
            seen.get("a-0").unwrap().resource_version,
            "1",
            "the old table serves until the relist ends"
        );
        seen.observe(&Event::<ConfigMap>::InitDone, digest);
        assert_eq!(seen.get("a-0").unwrap().resource_version, "30");
        assert_eq!(seen.get("a-0").unwrap().digest, [2; 32]);
        assert!(seen.get("b-0").is_none(), "deleted while the watch was down");
        assert_eq!(seen.routes(), ["a"]);
    }

    #[test]
    fn a_relabelled_object_moves_and_an_unlabelled_one_leaves() {
        let seen = SeenObjects::new("route");
        seen.observe(&Event::Apply(object("x", Some("a"), "1")), digest);
        seen.observe(&Event::Apply(object("x", Some("b"), "2")), digest);
        assert!(seen.of_route("a").is_empty());
        assert_eq!(seen.of_route("b")[0].route, "b");
        seen.observe(&Event::Apply(object("x", None, "3")), digest);
        assert!(seen.get("x").is_none());
        let state = seen.state();
        assert!(state.live.by_name.is_empty() && state.live.by_route.is_empty(), "nothing empty is kept");
    }
}
