//! A watch cache's objects by the value of one label: a route's objects found without walking
//! every object.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kube::Resource;
use kube::runtime::watcher::Event;

use crate::caches::shrink_when_sparse;

/// The names of the objects a watch has delivered, by their value of one label (a route's
/// id), kept from the watch's events.
///
/// A relist builds the index anew and takes it whole at its end, as the reflector's cache does,
/// so objects deleted while the watch was down leave nothing behind. An object whose label is
/// edited stays under its old value too until the next relist: readers check the label of what
/// they find, so such a name only costs a lookup.
///
/// ```
/// use kube_routes::LabelIndex;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::runtime::watcher::Event;
///
/// let object = |name: &str, route: &str| {
///     let mut object = ConfigMap::default();
///     object.metadata.name = Some(name.to_owned());
///     object.metadata.labels = Some([("route".to_owned(), route.to_owned())].into());
///     object
/// };
/// let index = LabelIndex::new("route");
/// index.observe(&Event::Apply(object("a-0", "a")));
/// index.observe(&Event::Apply(object("a-1", "a")));
/// index.observe(&Event::Apply(object("b-0", "b")));
/// assert_eq!(index.names("a"), ["a-0", "a-1"]);
/// index.observe(&Event::Delete(object("a-0", "a")));
/// assert_eq!(index.names("a"), ["a-1"]);
/// assert!(index.names("c").is_empty());
/// ```
#[derive(Debug)]
pub struct LabelIndex {
    label: &'static str,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Label value to the names of the objects holding it.
    live: Names,
    /// The index a relist is building, taken as `live` at its end.
    relist: Option<Names>,
}

type Names = HashMap<Box<str>, Vec<Box<str>>>;

impl LabelIndex {
    /// An empty index of `label`'s values.
    pub fn new(label: &'static str) -> Self {
        LabelIndex { label, state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is one insert or removal: a poisoned lock holds nothing half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in one watch event.
    pub fn observe<K: Resource>(&self, event: &Event<K>) {
        let mut state = self.state();
        match event {
            Event::Apply(object) => {
                if let Some((value, name)) = self.entry(object) {
                    insert(&mut state.live, value, name);
                }
            }
            Event::Delete(object) => {
                if let Some((value, name)) = self.entry(object) {
                    remove(&mut state.live, value, name);
                }
            }
            Event::Init => state.relist = Some(Names::default()),
            Event::InitApply(object) => {
                if let (Some(relist), Some((value, name))) = (state.relist.as_mut(), self.entry(object)) {
                    insert(relist, value, name);
                }
            }
            Event::InitDone => {
                if let Some(relist) = state.relist.take() {
                    state.live = relist;
                }
            }
        }
    }

    /// Every value some object's label holds.
    pub fn values(&self) -> Vec<String> {
        self.state().live.keys().map(|value| value.to_string()).collect()
    }

    /// The names of the objects whose label holds `value`.
    pub fn names(&self, value: &str) -> Vec<String> {
        let state = self.state();
        state
            .live
            .get(value)
            .map(|names| names.iter().map(|name| name.to_string()).collect())
            .unwrap_or_default()
    }

    fn entry<'a, K: Resource>(&self, object: &'a K) -> Option<(&'a str, &'a str)> {
        let meta = object.meta();
        let value = meta.labels.as_ref()?.get(self.label)?;
        Some((value.as_str(), meta.name.as_deref()?))
    }
}

fn insert(names: &mut Names, value: &str, name: &str) {
    let held = names.entry(value.into()).or_default();
    if !held.iter().any(|held| &**held == name) {
        held.push(name.into());
    }
}

fn remove(names: &mut Names, value: &str, name: &str) {
    if let Some(held) = names.get_mut(value) {
        held.retain(|held| &**held != name);
        if held.is_empty() {
            names.remove(value);
            shrink_when_sparse(names);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn object(name: &str, route: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.to_owned());
        object.metadata.labels = Some([("route".to_owned(), route.to_owned())].into());
        object
    }

    #[test]
    fn a_relist_replaces_the_index_at_its_end() {
        let index = LabelIndex::new("route");
        index.observe(&Event::Apply(object("a-0", "a")));
        index.observe(&Event::Apply(object("b-0", "b")));
        index.observe(&Event::<ConfigMap>::Init);
        index.observe(&Event::InitApply(object("a-1", "a")));
        assert_eq!(index.names("a"), ["a-0"], "the old index serves until the relist is done");
        index.observe(&Event::<ConfigMap>::InitDone);
        assert_eq!(index.names("a"), ["a-1"]);
        assert!(index.names("b").is_empty(), "deleted while the watch was down");
    }

    #[test]
    fn an_object_is_listed_once_and_unlabelled_ones_not_at_all() {
        let index = LabelIndex::new("route");
        index.observe(&Event::Apply(object("a-0", "a")));
        index.observe(&Event::Apply(object("a-0", "a")));
        index.observe(&Event::Apply(ConfigMap::default()));
        assert_eq!(index.names("a"), ["a-0"]);
        index.observe(&Event::Delete(object("a-0", "a")));
        assert!(index.state().live.is_empty(), "no empty entry is kept");
    }
}
