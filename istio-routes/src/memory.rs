//! Routing objects kept in this process's memory, as the Kubernetes API would keep them.
//!
//! `--store memory` runs the very same translation as the Kubernetes store, so what it lists is
//! what a cluster would hold; nothing reaches Istio, and everything is lost on restart. Tests
//! use it with a [`Clock`] they control, to replay creation times.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::resources::{ServiceEntry, VirtualService};
use crate::store::RouteStore;
use crate::translate::ROUTE_LABEL;
use crate::{Error, Result};

/// Where creation times come from.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// A clock for tests: stands still until moved.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `second` (Unix time).
    pub fn at(second: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(second)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// The clock, for [`MemoryStore::with_clock`].
    pub fn clock(&self) -> Clock {
        let seconds = Arc::clone(&self.0);
        Arc::new(move || Timestamp::from_second(seconds.load(Ordering::SeqCst)).expect("a valid time"))
    }
}

#[derive(Debug, Default)]
struct State {
    virtual_services: BTreeMap<String, Arc<VirtualService>>,
    /// Route id to the names of its VirtualServices.
    by_route: HashMap<String, BTreeSet<String>>,
    service_entries: BTreeMap<String, Arc<ServiceEntry>>,
    last_version: u64,
}

/// VirtualServices and ServiceEntries in memory, with creation times of 1-second resolution,
/// resource versions and preconditions, like the API server.
pub struct MemoryStore {
    state: RwLock<State>,
    clock: Clock,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_clock(Arc::new(Timestamp::now))
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose creation times come from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        MemoryStore { state: RwLock::default(), clock }
    }

    /// Every ServiceEntry.
    pub fn service_entries(&self) -> Vec<Arc<ServiceEntry>> {
        self.read().service_entries.values().cloned().collect()
    }

    /// Puts an object in as it is, metadata and all: for tests that need objects this proxy
    /// would not write (the Go proxy's, or a broken one).
    pub fn insert_raw(&self, object: VirtualService) {
        let mut state = self.write();
        let name = object.metadata.name.clone().expect("a named object");
        index(&mut state.by_route, &object, &name);
        state.virtual_services.insert(name, Arc::new(object));
    }

    // A panic while holding the lock cannot leave the maps half-written (each write is a few
    // inserts that cannot panic), so a poisoned lock is still safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Time {
        let now = (self.clock)();
        Time(Timestamp::from_second(now.as_second()).expect("a valid time"))
    }
}

fn route_of(object: &VirtualService) -> Option<String> {
    object.metadata.labels.as_ref()?.get(ROUTE_LABEL).cloned()
}

fn index(by_route: &mut HashMap<String, BTreeSet<String>>, object: &VirtualService, name: &str) {
    if let Some(route) = route_of(object) {
        by_route.entry(route).or_default().insert(name.to_owned());
    }
}

fn unindex(by_route: &mut HashMap<String, BTreeSet<String>>, object: &VirtualService, name: &str) {
    if let Some(route) = route_of(object)
        && let Some(names) = by_route.get_mut(&route)
    {
        names.remove(name);
        if names.is_empty() {
            by_route.remove(&route);
        }
    }
}

impl State {
    fn next_version(&mut self) -> String {
        self.last_version += 1;
        self.last_version.to_string()
    }

    fn store_virtual_service(
        &mut self,
        mut object: VirtualService,
        now: Time,
        must_be_new: bool,
    ) -> Result<Arc<VirtualService>> {
        let name = object.metadata.name.clone().unwrap_or_default();
        if let Some(old) = self.virtual_services.get(&name).cloned() {
            if must_be_new {
                return Err(Error::AlreadyExists { name });
            }
            object.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
            object.metadata.uid = old.metadata.uid.clone();
            unindex(&mut self.by_route, &old, &name);
        } else {
            object.metadata.creation_timestamp = Some(now);
            object.metadata.uid = Some(format!("uid-{}", self.last_version + 1));
        }
        object.metadata.resource_version = Some(self.next_version());
        index(&mut self.by_route, &object, &name);
        let object = Arc::new(object);
        self.virtual_services.insert(name, Arc::clone(&object));
        Ok(object)
    }
}

#[async_trait]
impl RouteStore for MemoryStore {
    fn is_ready(&self) -> bool {
        true
    }

    fn generation(&self) -> Option<u64> {
        // Every write takes a new resource version.
        Some(self.read().last_version)
    }

    fn virtual_services(&self) -> Vec<Arc<VirtualService>> {
        self.read().virtual_services.values().cloned().collect()
    }

    fn virtual_services_of(&self, route_id: &str) -> Vec<Arc<VirtualService>> {
        let state = self.read();
        let names = state.by_route.get(route_id).into_iter().flatten();
        names.filter_map(|name| state.virtual_services.get(name).cloned()).collect()
    }

    async fn apply_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>> {
        let now = self.now();
        self.write().store_virtual_service(object, now, false)
    }

    async fn create_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>> {
        let now = self.now();
        self.write().store_virtual_service(object, now, true)
    }

    async fn delete_virtual_service(&self, name: &str, resource_version: Option<String>) -> Result<bool> {
        let mut state = self.write();
        let Some(old) = state.virtual_services.get(name).cloned() else {
            return Ok(false);
        };
        if resource_version.is_some() && resource_version != old.metadata.resource_version {
            return Err(Error::Conflict { name: name.to_owned() });
        }
        unindex(&mut state.by_route, &old, name);
        state.virtual_services.remove(name);
        // A delete is a change too: the API server gives it a resource version of its own.
        state.next_version();
        Ok(true)
    }

    async fn apply_service_entry(&self, mut object: ServiceEntry) -> Result<()> {
        let mut state = self.write();
        object.metadata.resource_version = Some(state.next_version());
        let name = object.metadata.name.clone().unwrap_or_default();
        state.service_entries.insert(name, Arc::new(object));
        Ok(())
    }

    async fn delete_service_entry(&self, name: &str) -> Result<bool> {
        Ok(self.write().service_entries.remove(name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::resources::{IstioVersion, VirtualServiceSpec};

    fn object(name: &str) -> VirtualService {
        let metadata = ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() };
        VirtualService::new(IstioVersion::V1, metadata, VirtualServiceSpec::default())
    }

    #[tokio::test]
    async fn apply_keeps_the_creation_time_and_bumps_the_version() {
        let clock = ManualClock::at(1_000);
        let store = MemoryStore::with_clock(clock.clock());
        let first = store.apply_virtual_service(object("a")).await.unwrap();
        clock.advance(5);
        let second = store.apply_virtual_service(object("a")).await.unwrap();
        assert_eq!(first.metadata.creation_timestamp, second.metadata.creation_timestamp);
        assert_ne!(first.metadata.resource_version, second.metadata.resource_version);
        let other = store.create_virtual_service(object("b")).await.unwrap();
        assert_eq!(other.metadata.creation_timestamp.as_ref().unwrap().0.as_second(), 1_005);
    }

    #[tokio::test]
    async fn create_refuses_a_taken_name_and_delete_honours_preconditions() {
        let store = MemoryStore::new();
        let created = store.create_virtual_service(object("a")).await.unwrap();
        assert!(matches!(store.create_virtual_service(object("a")).await, Err(Error::AlreadyExists { .. })));
        assert!(matches!(
            store.delete_virtual_service("a", Some("stale".into())).await,
            Err(Error::Conflict { .. })
        ));
        assert!(store.delete_virtual_service("a", created.metadata.resource_version.clone()).await.unwrap());
        assert!(!store.delete_virtual_service("a", None).await.unwrap());
    }
}
