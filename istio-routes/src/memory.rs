//! Routing objects kept in this process's memory, as the Kubernetes API would keep them.
//!
//! `--store memory` runs the very same translation as the Kubernetes store, so what it lists is
//! what a cluster would hold; nothing reaches Istio, and everything is lost on restart. Tests
//! use it with a [`Clock`] they control, to replay creation times.
//!
//! An object that is exactly what the store's [`Translation`] renders for the route it holds
//! (every object this proxy writes) is kept as that route and its generation, and rendered
//! again when read: a `VirtualService` with its maps costs some 3.5 KB, the route a tenth of
//! that. A ServiceEntry is kept as the spec and target it renders for, the same way. Anything
//! else is kept as it came.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use proxy_api::{RouteSpec, Target};

use crate::read::{Origin, StoredRoute};
use crate::resources::{ServiceEntry, VirtualService};
use crate::store::RouteStore;
use crate::translate::Translation;
use crate::{Error, Result};
use kube_routes::shrink_when_sparse;
use kube_routes::{ROUTE_LABEL, SPEC_ANNOTATION, route_id};

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
    /// By name.
    virtual_services: BTreeMap<String, Held>,
    /// Route id (see [`route_key`]) to the names of its VirtualServices: one, or two while one
    /// is re-created.
    by_route: HashMap<u64, Vec<Box<str>>>,
    /// By name.
    service_entries: BTreeMap<String, HeldEntry>,
    last_version: u64,
}

/// A ServiceEntry as kept.
#[derive(Debug)]
enum HeldEntry {
    /// What the translation renders for a route of `spec` to `target`.
    Rendered { spec: RouteSpec, target: Target, resource_version: u64 },
    /// Anything else, as JSON.
    Raw(Box<str>),
}

/// A VirtualService as kept.
#[derive(Debug)]
enum Held {
    /// What the translation renders for `stored.route` as `generation`, with what the server
    /// set: rendered again when read.
    Rendered { stored: StoredRoute, generation: u32, server: Server },
    /// Anything else, as it came, with what the server set in its metadata.
    Raw(Arc<VirtualService>),
}

/// What the API server sets in an object's metadata.
#[derive(Debug, Clone)]
struct Server {
    resource_version: u64,
    created: Time,
    uid: u64,
}

impl Server {
    fn set(&self, metadata: &mut ObjectMeta) {
        metadata.resource_version = Some(self.resource_version.to_string());
        metadata.creation_timestamp = Some(self.created.clone());
        metadata.uid = Some(format!("uid-{}", self.uid));
    }
}

impl Held {
    fn resource_version(&self) -> Option<String> {
        match self {
            Held::Rendered { server, .. } => Some(server.resource_version.to_string()),
            Held::Raw(object) => object.metadata.resource_version.clone(),
        }
    }

    /// The creation time and uid an update keeps.
    fn identity(&self) -> (Option<Time>, Option<String>) {
        match self {
            Held::Rendered { server, .. } => {
                (Some(server.created.clone()), Some(format!("uid-{}", server.uid)))
            }
            Held::Raw(object) => (object.metadata.creation_timestamp.clone(), object.metadata.uid.clone()),
        }
    }
}

/// VirtualServices and ServiceEntries in memory, with creation times of 1-second resolution,
/// resource versions and preconditions, like the API server.
pub struct MemoryStore {
    state: RwLock<State>,
    clock: Clock,
    translation: Translation,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store on the system clock, for a backend with `translation`: the objects it
    /// renders are kept compactly (any others are kept too, as they come).
    pub fn new(translation: Translation) -> Self {
        Self::with_clock(translation, Arc::new(Timestamp::now))
    }

    /// An empty store whose creation times come from `clock`.
    pub fn with_clock(translation: Translation, clock: Clock) -> Self {
        MemoryStore { state: RwLock::default(), clock, translation }
    }

    /// Every ServiceEntry.
    pub fn service_entries(&self) -> Vec<Arc<ServiceEntry>> {
        let state = self.read();
        let entries = state.service_entries.values().map(|held| match held {
            HeldEntry::Rendered { spec, target, resource_version } => {
                let mut entry = self.render_entry(spec, target).expect("it rendered when it was stored");
                entry.metadata.resource_version = Some(resource_version.to_string());
                entry
            }
            HeldEntry::Raw(json) => serde_json::from_str(json).expect("a ServiceEntry we serialised"),
        });
        entries.map(Arc::new).collect()
    }

    /// The ServiceEntry the translation renders for a route of `spec` to `target`.
    fn render_entry(&self, spec: &RouteSpec, target: &Target) -> Option<ServiceEntry> {
        self.translation.render_service_entry(spec, target)
    }

    /// The spec and target `entry` is the rendering of, if it is exactly that. A ServiceEntry
    /// depends on the route's spec and on its target's scheme, address and port only, so a
    /// target made of those renders it.
    fn entry_rendering_of(&self, entry: &ServiceEntry) -> Option<(RouteSpec, Target)> {
        let annotations = entry.metadata.annotations.as_ref()?;
        let spec = RouteSpec::new(annotations.get(SPEC_ANNOTATION)?, self.translation.routing_mode).ok()?;
        let (port, endpoint) = (entry.spec.ports.first()?, entry.spec.endpoints.first()?);
        let ip: IpAddr = endpoint.address.parse().ok()?;
        let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
        let target = Target::parse(&format!("{}://{host}:{}", port.name, port.number)).ok()?;
        let mut rendered = self.render_entry(&spec, &target)?;
        rendered.metadata.resource_version.clone_from(&entry.metadata.resource_version);
        (rendered == *entry).then_some((spec, target))
    }

    /// Puts an object in as it is, metadata and all: for tests that need objects this proxy
    /// would not write (the Go proxy's, or a broken one).
    pub fn insert_raw(&self, object: VirtualService) {
        let mut state = self.write();
        let name = object.metadata.name.clone().expect("a named object");
        index(&mut state.by_route, route_of(&object), &name);
        state.virtual_services.insert(name, Held::Raw(Arc::new(object)));
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

    /// The route and generation `object` is the rendering of, if it is exactly that.
    fn rendering_of(&self, object: &VirtualService) -> Option<(StoredRoute, u32)> {
        let stored = self.translation.read(object)?.ok()?;
        let Origin::Ours { generation } = stored.origin else { return None };
        let mut rendered = self.translation.render(&stored.route, generation).ok()?.virtual_service;
        rendered.metadata.resource_version.clone_from(&object.metadata.resource_version);
        rendered.metadata.creation_timestamp.clone_from(&object.metadata.creation_timestamp);
        rendered.metadata.uid.clone_from(&object.metadata.uid);
        (rendered == *object).then_some((stored, generation))
    }

    /// The route an object holds, as the store's translation reads it.
    fn stored_route(&self, held: &Held) -> Option<StoredRoute> {
        match held {
            Held::Rendered { stored, .. } => Some(stored.clone()),
            Held::Raw(object) => self.translation.read(object)?.ok(),
        }
    }

    /// The object as stored, rendered again if it was kept as its route.
    fn object(&self, held: &Held) -> Arc<VirtualService> {
        match held {
            Held::Rendered { stored, generation, server } => {
                let rendered = self.translation.render(&stored.route, *generation);
                let mut object = rendered.expect("it rendered when it was stored").virtual_service;
                server.set(&mut object.metadata);
                Arc::new(object)
            }
            Held::Raw(object) => Arc::clone(object),
        }
    }

    fn store_virtual_service(
        &self,
        object: VirtualService,
        must_be_new: bool,
    ) -> Result<Arc<VirtualService>> {
        let name = object.metadata.name.clone().unwrap_or_default();
        // Read outside the lock: it decodes and renders.
        let rendering = self.rendering_of(&object);
        let now = self.now();
        let mut state = self.write();
        let State { virtual_services, by_route, last_version, .. } = &mut *state;
        // One walk of the tree for the lookup and the write: names share long prefixes.
        let entry = virtual_services.entry(name);
        let (created, uid) = match &entry {
            Entry::Occupied(old) if must_be_new => {
                return Err(Error::AlreadyExists { name: old.key().clone() });
            }
            Entry::Occupied(old) => old.get().identity(),
            Entry::Vacant(_) => (None, None),
        };
        *last_version += 1;
        let resource_version = *last_version;
        let created = created.unwrap_or(now);
        let uid = uid.unwrap_or_else(|| format!("uid-{resource_version}"));
        // The object as stored: what came, with what the server sets.
        let mut object = object;
        object.metadata.resource_version = Some(resource_version.to_string());
        object.metadata.creation_timestamp = Some(created.clone());
        object.metadata.uid = Some(uid.clone());
        let stored = Arc::new(object);
        let held = match rendering {
            Some((route, generation)) => {
                // Ours are "uid-<n>"; a Go proxy's object replaced by ours gets a number of its own.
                let uid = uid.trim_start_matches("uid-").parse().unwrap_or(resource_version);
                Held::Rendered {
                    stored: route,
                    generation,
                    server: Server { resource_version, created, uid },
                }
            }
            None => Held::Raw(Arc::clone(&stored)),
        };
        match entry {
            Entry::Occupied(mut old) => {
                unindex(by_route, old.get(), old.key());
                index(by_route, route_of(&stored), old.key());
                old.insert(held);
            }
            Entry::Vacant(new) => {
                index(by_route, route_of(&stored), new.key());
                new.insert(held);
            }
        }
        Ok(stored)
    }
}

fn route_of(object: &VirtualService) -> Option<u64> {
    object.metadata.labels.as_ref()?.get(ROUTE_LABEL).map(|id| route_key(id))
}

/// A route id as an index key: our ids are 16 hex digits, 8 bytes; any other label value is
/// hashed, and a collision only makes `virtual_services_of` answer an object more, which the
/// backend tells apart by its spec.
fn route_key(id: &str) -> u64 {
    match u64::from_str_radix(id, 16) {
        Ok(key) if id.len() == 16 => key,
        _ => {
            let mut hasher = std::hash::DefaultHasher::new();
            id.hash(&mut hasher);
            hasher.finish()
        }
    }
}

fn index(by_route: &mut HashMap<u64, Vec<Box<str>>>, route: Option<u64>, name: &str) {
    if let Some(route) = route {
        by_route.entry(route).or_default().push(name.into());
    }
}

fn unindex(by_route: &mut HashMap<u64, Vec<Box<str>>>, held: &Held, name: &str) {
    let route = match held {
        Held::Rendered { stored, .. } => Some(route_key(&route_id(stored.route.spec()))),
        Held::Raw(object) => route_of(object),
    };
    if let Some(route) = route
        && let Some(names) = by_route.get_mut(&route)
    {
        names.retain(|n| &**n != name);
        if names.is_empty() {
            by_route.remove(&route);
            shrink_when_sparse(by_route);
        }
    }
}

impl State {
    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
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
        let state = self.read();
        state.virtual_services.values().map(|held| self.object(held)).collect()
    }

    fn stored_routes(&self, translation: &Translation) -> Option<Vec<StoredRoute>> {
        if *translation != self.translation {
            return None;
        }
        let state = self.read();
        Some(state.virtual_services.values().filter_map(|held| self.stored_route(held)).collect())
    }

    fn virtual_services_of(&self, route_id: &str) -> Vec<Arc<VirtualService>> {
        let state = self.read();
        let names = state.by_route.get(&route_key(route_id)).into_iter().flatten();
        names.filter_map(|name| state.virtual_services.get(&**name)).map(|held| self.object(held)).collect()
    }

    fn stored_routes_of(&self, route_id: &str, translation: &Translation) -> Option<Vec<StoredRoute>> {
        if *translation != self.translation {
            return None;
        }
        let state = self.read();
        let names = state.by_route.get(&route_key(route_id)).into_iter().flatten();
        let held = names.filter_map(|name| state.virtual_services.get(&**name));
        Some(held.filter_map(|held| self.stored_route(held)).collect())
    }

    async fn apply_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>> {
        self.store_virtual_service(object, false)
    }

    async fn create_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>> {
        self.store_virtual_service(object, true)
    }

    async fn delete_virtual_service(&self, name: &str, resource_version: Option<String>) -> Result<bool> {
        let mut state = self.write();
        let Some(old) = state.virtual_services.get(name) else {
            return Ok(false);
        };
        if resource_version.is_some() && resource_version != old.resource_version() {
            return Err(Error::Conflict { name: name.to_owned() });
        }
        if let Some(old) = state.virtual_services.remove(name) {
            unindex(&mut state.by_route, &old, name);
        }
        // A delete is a change too: the API server gives it a resource version of its own.
        state.next_version();
        Ok(true)
    }

    async fn apply_service_entry(&self, mut object: ServiceEntry) -> Result<()> {
        let rendering = self.entry_rendering_of(&object);
        let mut state = self.write();
        let resource_version = state.next_version();
        let held = match rendering {
            Some((spec, target)) => HeldEntry::Rendered { spec, target, resource_version },
            None => {
                object.metadata.resource_version = Some(resource_version.to_string());
                HeldEntry::Raw(serde_json::to_string(&object).expect("a ServiceEntry serialises").into())
            }
        };
        let name = object.metadata.name.clone().unwrap_or_default();
        state.service_entries.insert(name, held);
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
        let store = MemoryStore::with_clock(Translation::default(), clock.clock());
        let first = store.apply_virtual_service(object("a")).await.unwrap();
        clock.advance(5);
        let second = store.apply_virtual_service(object("a")).await.unwrap();
        assert_eq!(first.metadata.creation_timestamp, second.metadata.creation_timestamp);
        assert_ne!(first.metadata.resource_version, second.metadata.resource_version);
        let other = store.create_virtual_service(object("b")).await.unwrap();
        assert_eq!(other.metadata.creation_timestamp.as_ref().unwrap().0.as_second(), 1_005);
    }

    fn path(spec: &str) -> proxy_api::RouteSpec {
        proxy_api::RouteSpec::new(spec, proxy_api::RoutingMode::Path).unwrap()
    }

    fn rendered(spec: &str, target: &str) -> VirtualService {
        let spec = path(spec);
        let target = proxy_api::Target::parse(target).unwrap();
        let route = proxy_api::Route::new(spec, target, Default::default()).unwrap();
        Translation::default().render(&route, 3).unwrap().virtual_service
    }

    #[tokio::test]
    async fn what_the_translation_renders_is_kept_as_its_route_and_read_back_whole() {
        let store = MemoryStore::new(Translation::default());
        let object = rendered("/user/alice", "http://10.0.0.7:8888");
        let name = object.metadata.name.clone().unwrap();
        let stored = store.apply_virtual_service(object.clone()).await.unwrap();
        assert!(matches!(store.read().virtual_services[&name], Held::Rendered { generation: 3, .. }));

        // Read back, it is the object written, with what the server sets.
        let mut expected = object;
        expected.metadata.resource_version = stored.metadata.resource_version.clone();
        expected.metadata.creation_timestamp = stored.metadata.creation_timestamp.clone();
        expected.metadata.uid = stored.metadata.uid.clone();
        assert_eq!(*stored, expected);
        assert_eq!(*store.virtual_services()[0], expected);
        assert_eq!(*store.virtual_services_of(&route_id(&path("/user/alice")))[0], expected);

        let routes = store.stored_routes(&Translation::default()).expect("decoded for its translation");
        assert_eq!(routes[0].route.target().as_str(), "http://10.0.0.7:8888");
        let other = Translation { prefix: "other".into(), ..Translation::default() };
        assert!(store.stored_routes(&other).is_none(), "another translation reads the objects itself");
    }

    #[tokio::test]
    async fn service_entries_are_kept_as_their_spec_and_target_or_as_they_came() {
        let store = MemoryStore::new(Translation::default());
        for target in ["http://10.0.0.7:8888", "https://[fd00::7]:8443"] {
            let route = proxy_api::Route::new(path("/user/a"), proxy_api::Target::parse(target).unwrap(), {
                let mut data = serde_json::Map::new();
                data.insert("user".into(), "a".into());
                data
            })
            .unwrap();
            let entry = Translation::default().render(&route, 0).unwrap().service_entry.unwrap();
            store.apply_service_entry(entry.clone()).await.unwrap();
            let name = entry.metadata.name.clone().unwrap();
            assert!(matches!(store.read().service_entries[&name], HeldEntry::Rendered { .. }), "{target}");
            let read = store.service_entries().remove(0);
            assert_eq!(read.spec, entry.spec, "{target}");
            assert_eq!(read.metadata.annotations, entry.metadata.annotations);
            assert_eq!(read.metadata.labels, entry.metadata.labels);
        }
        let mut changed = (*store.service_entries()[0]).clone();
        changed.spec.location = Some("MESH_EXTERNAL".into());
        changed.metadata.resource_version = None;
        store.apply_service_entry(changed.clone()).await.unwrap();
        assert!(matches!(store.read().service_entries.values().next(), Some(HeldEntry::Raw(_))));
        assert_eq!(store.service_entries()[0].spec, changed.spec);
    }

    #[tokio::test]
    async fn anything_else_is_kept_as_it_came() {
        let store = MemoryStore::new(Translation::default());
        let mut changed = rendered("/user/bob", "http://jupyter-bob:8888");
        changed.spec.hosts = vec!["changed.example.org".into()];
        let name = changed.metadata.name.clone().unwrap();
        let stored = store.apply_virtual_service(changed.clone()).await.unwrap();
        assert!(matches!(store.read().virtual_services[&name], Held::Raw(_)));
        assert_eq!(stored.spec, changed.spec);
        assert_eq!(store.virtual_services()[0].spec.hosts, ["changed.example.org"]);
        // Still a route, read by the translation.
        let routes = store.stored_routes(&Translation::default()).unwrap();
        assert_eq!(routes[0].route.spec().as_str(), "/user/bob");

        // An update keeps the creation time and uid, whichever way either version is kept.
        let update =
            store.apply_virtual_service(rendered("/user/bob", "http://jupyter-bob:8888")).await.unwrap();
        assert!(matches!(store.read().virtual_services[&name], Held::Rendered { .. }));
        assert_eq!(update.metadata.creation_timestamp, stored.metadata.creation_timestamp);
        assert_eq!(update.metadata.uid, stored.metadata.uid);
        assert_eq!(store.virtual_services_of(&route_id(&path("/user/bob"))).len(), 1);
    }

    #[tokio::test]
    async fn create_refuses_a_taken_name_and_delete_honours_preconditions() {
        let store = MemoryStore::new(Translation::default());
        let created = store.create_virtual_service(object("a")).await.unwrap();
        assert!(matches!(store.create_virtual_service(object("a")).await, Err(Error::AlreadyExists { .. })));
        assert!(matches!(
            store.delete_virtual_service("a", Some("stale".into())).await,
            Err(Error::Conflict { .. })
        ));
        assert!(store.delete_virtual_service("a", created.metadata.resource_version.clone()).await.unwrap());
        assert!(!store.delete_virtual_service("a", None).await.unwrap());
    }

    #[tokio::test]
    async fn the_route_index_gives_its_room_back_when_routes_go() {
        let translation = Translation::default();
        let store = MemoryStore::new(translation.clone());
        let mut names = Vec::new();
        for n in 0..5000 {
            let spec = RouteSpec::new(&format!("/user/u{n}"), translation.routing_mode).unwrap();
            let route = proxy_api::Route::new(spec, Target::parse("http://a:1").unwrap(), Default::default());
            let rendered = translation.render(&route.unwrap(), 0).unwrap().virtual_service;
            names.push(store.apply_virtual_service(rendered).await.unwrap().metadata.name.clone().unwrap());
        }
        let full = store.read().by_route.capacity();
        for name in &names[100..] {
            assert!(store.delete_virtual_service(name, None).await.unwrap());
        }
        let left = store.read().by_route.capacity();
        assert!(left * 4 <= full, "the index kept {left} of {full} buckets for 100 routes");
    }
}
