//! The routes API's backend over a [`RouteStore`]: routes in, Istio objects out, in an order
//! that routes as configurable-http-proxy would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use proxy_api::{Backend, Route, RouteSpec, Target};

use crate::order::{Placement, ancestors, is_catch_all};
use crate::read::{Origin, StoredRoute};
use crate::resources::VirtualService;
use crate::store::RouteStore;
use crate::translate::{Rendered, Translation};
use crate::{Error, Result};
use kube_routes::route_id;
use kube_routes::{Listing, shrink_when_sparse};

/// How often a write retries when another writer changed an object under it.
const WRITE_ATTEMPTS: u32 = 3;

/// The routes API's [`Backend`] over a [`RouteStore`].
pub struct IstioBackend<S> {
    store: Arc<S>,
    translation: Translation,
    /// Routes read from objects, by object name, with the resource version they were read at:
    /// a listing decodes only what changed since the last one.
    decoded: Mutex<DecodedRoutes>,
    /// The last listing, sorted, while the store is at the generation it was built at.
    listing: Listing,
    /// Per ancestor route being kept in order, whose turn it is to check and re-create it.
    reordering: Turns,
}

/// One lock per route spec, held while a writer checks an ancestor's place and re-creates it.
/// Concurrent writes below one route (a spawn storm under the hub's route) then cause one
/// re-creation between them, which the others find done, instead of one each that collide on
/// the next generation's name and retire the same old object.
type Turns = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Object name to the resource version it was read at and the route it held.
type DecodedRoutes = HashMap<String, (Option<String>, Option<StoredRoute>)>;

impl<S> std::fmt::Debug for IstioBackend<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioBackend").field("translation", &self.translation).finish_non_exhaustive()
    }
}

/// A route's object with the route read from it.
pub(crate) type Found = (Arc<VirtualService>, StoredRoute);

pub(crate) fn name_of(object: &VirtualService) -> &str {
    object.metadata.name.as_deref().unwrap_or_default()
}

impl<S: RouteStore> IstioBackend<S> {
    /// The backend over `store`, writing objects as `translation` says.
    pub fn new(store: Arc<S>, translation: Translation) -> Self {
        IstioBackend {
            store,
            translation,
            decoded: Mutex::default(),
            listing: Listing::default(),
            reordering: Mutex::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// How routes become objects.
    pub fn translation(&self) -> &Translation {
        &self.translation
    }

    /// Waits for the turn to check and re-create `spec`'s object (see [`Turns`]).
    async fn turn(&self, spec: &RouteSpec) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.reordering.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget the locks nobody holds or waits for, now and then rather than every time.
            if locks.len() > 64 {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(locks.entry(spec.as_str().to_owned()).or_default())
        };
        lock.lock_owned().await
    }

    fn ready(&self) -> Result<()> {
        if self.store.is_ready() { Ok(()) } else { Err(Error::NotReady) }
    }

    /// The route an object holds, decoding it only when it changed since last time.
    fn decode(
        &self,
        cache: &mut HashMap<String, (Option<String>, Option<StoredRoute>)>,
        object: &VirtualService,
    ) -> Option<StoredRoute> {
        let name = name_of(object);
        let version = &object.metadata.resource_version;
        if let Some((seen, stored)) = cache.get(name)
            && seen == version
        {
            return stored.clone();
        }
        let stored = match self.translation.read(object) {
            Some(Ok(stored)) => Some(stored),
            Some(Err(problem)) => {
                tracing::warn!(%problem, "skipping a VirtualService that holds no readable route");
                None
            }
            None => None,
        };
        cache.insert(name.to_owned(), (version.clone(), stored.clone()));
        stored
    }

    /// The objects of one route, the current one first: ours of the highest generation, then
    /// older generations, then the Go proxy's.
    pub(crate) fn objects_of(&self, spec: &RouteSpec) -> Vec<Found> {
        let mut found = self.objects_labelled(&route_id(spec));
        found.retain(|(_, stored)| stored.route.spec() == spec);
        found
    }

    /// The readable objects labelled with route id `id`, the current one first (as
    /// [`objects_of`](Self::objects_of), for a caller that knows only the label).
    pub(crate) fn objects_labelled(&self, id: &str) -> Vec<Found> {
        self.found(self.store.virtual_services_of(id))
    }

    /// The readable ones of `objects` (of one route), the current one first.
    pub(crate) fn found(&self, objects: Vec<Arc<VirtualService>>) -> Vec<Found> {
        let mut cache = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<Found> = objects
            .into_iter()
            .filter_map(|object| {
                let stored = self.decode(&mut cache, &object)?;
                Some((object, stored))
            })
            .collect();
        found.sort_by_key(|found| std::cmp::Reverse(found.1.origin));
        found
    }

    /// Creates a route's object again under its next generation, so that it sorts after
    /// `floor`, then deletes the old one. Answers the new object.
    async fn recreate_after(
        &self,
        old: &Found,
        floor: &Placement,
    ) -> Result<Arc<VirtualService>, proxy_api::Error> {
        let (old_object, stored) = old;
        let mut generation = match stored.origin {
            Origin::Ours { generation } => generation + 1,
            Origin::Legacy => 0,
        };
        let mut created = None;
        for _ in 0..WRITE_ATTEMPTS {
            let rendered = self.translation.render(&stored.route, generation)?;
            let name = rendered.virtual_service.metadata.name.clone().unwrap_or_default();
            let object = match self.store.create_virtual_service(rendered.virtual_service).await {
                Ok(object) => object,
                // Another writer is reordering the same route; its object serves as well.
                Err(Error::AlreadyExists { .. }) => {
                    match self.objects_of(stored.route.spec()).into_iter().find(|(o, _)| name_of(o) == name) {
                        Some((object, _)) => object,
                        None => return Err(Error::AlreadyExists { name }.into()),
                    }
                }
                Err(error) => return Err(error.into()),
            };
            if Placement::of(&object) > *floor {
                created = Some(object);
                break;
            }
            // Only a clock running behind on another API server replica gets here. The object
            // we made is no use; the next generation tries again.
            tracing::warn!(
                object = name,
                "a re-created VirtualService still sorts before its descendant; again"
            );
            self.delete_object(&name, None).await?;
            generation += 1;
        }
        let created = created.ok_or_else(|| Error::Conflict { name: name_of(old_object).to_owned() })?;
        self.retire(old, generation).await?;
        Ok(created)
    }

    /// Writes a route's ServiceEntry, if it has one, and then its VirtualService.
    async fn write(&self, rendered: Rendered) -> Result<Arc<VirtualService>> {
        if let Some(entry) = rendered.service_entry {
            self.store.apply_service_entry(entry).await?;
        }
        self.store.apply_virtual_service(rendered.virtual_service).await
    }

    /// Puts back the ServiceEntry a failed [`write`](Self::write) may have changed: the one of
    /// `previous`, the target the route had, or none. The VirtualService, the last write, is
    /// as it was. Best effort: what fails here is logged, and the write's own error is what
    /// JupyterHub hears.
    async fn undo_entry(&self, spec: &RouteSpec, previous: Option<&Target>) {
        let result = match previous.and_then(|target| self.translation.render_service_entry(spec, target)) {
            Some(entry) => self.store.apply_service_entry(entry).await,
            None => {
                self.store.delete_service_entry(&self.translation.service_entry_name(spec)).await.map(drop)
            }
        };
        if let Err(error) = result {
            tracing::warn!(route = %spec, %error, "could not undo a refused write's ServiceEntry");
        }
    }

    /// Deletes a VirtualService, and forgets the route decoded from it: otherwise the cache
    /// would keep one entry per object ever written until the next listing prunes it, and a
    /// proxy nobody lists grows with every route added and deleted.
    async fn delete_object(&self, name: &str, version: Option<String>) -> Result<bool> {
        let deleted = self.store.delete_virtual_service(name, version).await?;
        self.forget(name);
        Ok(deleted)
    }

    /// Forgets the route decoded from a deleted object (see [`delete_object`](Self::delete_object)).
    fn forget(&self, name: &str) {
        let mut decoded = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        decoded.remove(name);
        shrink_when_sparse(&mut decoded);
    }

    /// Deletes a route's object that `generation` replaced, unless it changed since it was
    /// read: a writer that had not seen the new generation wrote to it, so its content is
    /// carried over first and no write is lost.
    async fn retire(&self, old: &Found, generation: u32) -> Result<(), proxy_api::Error> {
        let spec = old.1.route.spec();
        let name = name_of(&old.0).to_owned();
        let mut version = old.0.metadata.resource_version.clone();
        for _ in 0..WRITE_ATTEMPTS {
            match self.delete_object(&name, version.take()).await {
                Ok(_) => return Ok(()),
                Err(Error::Conflict { .. }) => {
                    let Some((changed, stored)) =
                        self.objects_of(spec).into_iter().find(|(o, _)| name_of(o) == name)
                    else {
                        return Ok(());
                    };
                    let rendered = self.translation.render(&stored.route, generation)?;
                    self.store.apply_virtual_service(rendered.virtual_service).await?;
                    version = changed.metadata.resource_version.clone();
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Conflict { name }.into())
    }

    /// Keeps every ancestor of `spec` sorting after it: an ancestor that sorts before is
    /// created again. Ancestors are visited deepest first, each one's floor the placement of
    /// the one below it.
    pub(crate) async fn keep_ancestors_after(
        &self,
        spec: &RouteSpec,
        written: &Arc<VirtualService>,
    ) -> Result<(), proxy_api::Error> {
        if is_catch_all(spec) {
            return Ok(());
        }
        let mut floor = Placement::of(written);
        for ancestor in ancestors(spec) {
            let _turn = self.turn(&ancestor).await;
            let objects = self.objects_of(&ancestor);
            let Some(current) = objects.first() else {
                continue;
            };
            let placement = Placement::of(&current.0);
            if placement > floor {
                floor = placement;
                continue;
            }
            tracing::info!(route = %ancestor, below = %spec, "re-creating a route's VirtualService so that Istio tries it after a deeper route");
            let recreated = self.recreate_after(current, &floor).await?;
            floor = Placement::of(&recreated);
        }
        Ok(())
    }
}

impl<S: RouteStore> IstioBackend<S> {
    /// Where the gateway sends a request for `url` through the objects as they are now (see
    /// [`crate::explain`]); a bad URL is refused before the store is asked.
    pub async fn explain(&self, url: &str) -> crate::explain::Result<crate::explain::Explanation> {
        crate::explain::Request::parse(url)?;
        let objects = self.store.live_virtual_services().await?;
        crate::explain::explain(&objects, &self.translation, url)
    }

    /// Every route, sorted by spec, from the store's cache: what [`Backend::list`] answers,
    /// without waiting for anything (for metrics read at scrape time).
    pub fn routes(&self) -> proxy_api::Result<Vec<Arc<Route>>> {
        self.ready()?;
        let generation = self.store.generation();
        if let Some(routes) = self.listing.at(generation) {
            return Ok(routes);
        }
        let mut stored = match self.store.stored_routes(&self.translation) {
            Some(stored) => stored,
            None => self.decode_all(),
        };
        // One route per spec: the current object's (see `objects_of`).
        stored.sort_by(|a, b| a.route.spec().cmp(b.route.spec()).then(b.origin.cmp(&a.origin)));
        stored.dedup_by(|later, first| later.route.spec() == first.route.spec());
        let routes: Vec<Arc<Route>> = stored.into_iter().map(|s| s.route).collect();
        self.listing.keep(generation, &routes);
        Ok(routes)
    }

    /// The routes of every object in the store, decoding only what changed since last time.
    fn decode_all(&self) -> Vec<StoredRoute> {
        let objects = self.store.virtual_services();
        let mut cache = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = objects.iter().filter_map(|object| self.decode(&mut cache, object)).collect();
        // Forget objects that are gone, now and then rather than on every listing.
        if cache.len() > 2 * objects.len() + 64 {
            let live: std::collections::HashSet<&str> =
                objects.iter().filter_map(|o| o.metadata.name.as_deref()).collect();
            cache.retain(|name, _| live.contains(name.as_str()));
            shrink_when_sparse(&mut cache);
        }
        stored
    }
}

#[async_trait]
impl<S: RouteStore> Backend for IstioBackend<S> {
    async fn list(&self) -> proxy_api::Result<Vec<Arc<Route>>> {
        self.routes()
    }

    async fn get(&self, spec: &RouteSpec) -> proxy_api::Result<Option<Arc<Route>>> {
        self.ready()?;
        let Some(mut stored) = self.store.stored_routes_of(&route_id(spec), &self.translation) else {
            return Ok(self.objects_of(spec).into_iter().next().map(|(_, stored)| stored.route));
        };
        // The current one, as `objects_of` orders them.
        stored.retain(|stored| stored.route.spec() == spec);
        stored.sort_by_key(|stored| std::cmp::Reverse(stored.origin));
        Ok(stored.into_iter().next().map(|stored| stored.route))
    }

    async fn add(&self, route: Route) -> proxy_api::Result<()> {
        self.ready()?;
        self.listing.clear();
        let spec = route.spec().clone();
        let existing = self.objects_of(&spec);
        // Updating the current object in place keeps its creation time, and so its place.
        let generation = match existing.first() {
            Some((_, StoredRoute { origin: Origin::Ours { generation }, .. })) => *generation,
            _ => 0,
        };
        let rendered = self.translation.render(&route, generation)?;
        let had_entry = existing.iter().any(|(_, stored)| stored.route.target().ip().is_some());
        // The destination first, so the route never points at a host the mesh does not know.
        let has_entry = rendered.service_entry.is_some();
        let written = match self.write(rendered).await {
            Ok(written) => written,
            Err(error) => {
                if has_entry {
                    self.undo_entry(&spec, existing.first().map(|(_, stored)| stored.route.target())).await;
                }
                return Err(error.into());
            }
        };
        for (object, _) in &existing {
            if name_of(object) != name_of(&written) {
                self.delete_object(name_of(object), None).await?;
            }
        }
        if had_entry && !has_entry {
            self.store.delete_service_entry(&self.translation.service_entry_name(&spec)).await?;
        }
        self.keep_ancestors_after(&spec, &written).await
    }

    async fn delete(&self, spec: &RouteSpec) -> proxy_api::Result<bool> {
        self.ready()?;
        self.listing.clear();
        let existing = self.objects_of(spec);
        // Marked first, so that no replica's healing restores the ServiceEntry deleted next
        // (see `heal`).
        let mut marked = Vec::new();
        for (object, _) in &existing {
            marked.push((name_of(object), self.store.mark_deleting(name_of(object)).await?));
        }
        // The ServiceEntry goes first: when a later call fails (the API server went away), the
        // route's VirtualService is still there, so JupyterHub's retry finds the route and
        // finishes the delete. The other way round, the retry finds no route, answers 404,
        // and the ServiceEntry is left behind for ever.
        if existing.iter().any(|(_, stored)| stored.route.target().ip().is_some()) {
            self.store.delete_service_entry(&self.translation.service_entry_name(spec)).await?;
        }
        for (name, version) in marked {
            // Deleted with its mark: a write since the mark is marked again.
            match self.store.delete_virtual_service(name, version).await {
                Err(Error::Conflict { .. }) => {
                    self.store.delete_route_virtual_service(name).await?;
                }
                answer => {
                    answer?;
                }
            }
            self.forget(name);
        }
        Ok(!existing.is_empty())
    }
}

/// What the store metrics read of the backend at every scrape.
impl<S: RouteStore> kube_routes::StoreState for IstioBackend<S> {
    fn synced(&self) -> bool {
        self.store().is_ready()
    }

    fn route_count(&self) -> Option<usize> {
        // The listing is reused until the store changes, so a scrape rarely rebuilds it.
        self.routes().ok().map(|routes| routes.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proxy_api::{RoutingMode, wire};
    use serde_json::json;

    use super::*;
    use crate::memory::{ManualClock, MemoryStore};
    use crate::resources::{IstioVersion, VirtualServiceSpec};
    use crate::store::MockRouteStore;
    use kube_routes::{INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, ROUTE_LABEL};

    fn route(spec: &str, target: &str) -> Route {
        let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
        wire::route_from_body(spec, format!(r#"{{"target": "{target}", "jupyterhub": true}}"#).as_bytes())
            .unwrap()
    }

    fn spec(s: &str) -> RouteSpec {
        RouteSpec::new(s, RoutingMode::Path).unwrap()
    }

    fn backend() -> (IstioBackend<MemoryStore>, ManualClock) {
        let clock = ManualClock::at(1_700_000_000);
        let store = Arc::new(MemoryStore::with_clock(Translation::default(), clock.clock()));
        (IstioBackend::new(store, Translation::default()), clock)
    }

    /// The names of the store's VirtualServices in Istio's order.
    fn istio_order(backend: &IstioBackend<MemoryStore>) -> Vec<String> {
        let mut objects = backend.store().virtual_services();
        objects.sort_by_key(|o| Placement::of(o));
        objects
            .iter()
            .map(|o| backend.translation.read(o).unwrap().unwrap().route.spec().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_deeper_route_added_later_is_tried_first() {
        let (backend, clock) = backend();
        backend.add(route("/jhub", "http://hub:8081")).await.unwrap();
        clock.advance(10);
        backend.add(route("/jhub/user/alice", "http://10.0.0.1:8888")).await.unwrap();
        assert_eq!(istio_order(&backend), ["/jhub/user/alice", "/jhub"]);
        // The hub route was created again, as its next generation.
        let hub = backend.objects_of(&spec("/jhub"));
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].1.origin, Origin::Ours { generation: 1 });

        clock.advance(10);
        backend.add(route("/jhub/user/alice/lab", "http://10.0.0.2:8888")).await.unwrap();
        assert_eq!(istio_order(&backend), ["/jhub/user/alice/lab", "/jhub/user/alice", "/jhub"]);
    }

    #[tokio::test]
    async fn a_clock_running_behind_leaves_no_stray_generations() {
        use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
        // API server replicas whose clocks disagree: from the `behind_from`-th reading on, the
        // clock says a minute earlier.
        let (readings, behind_from) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(usize::MAX)));
        let now = Arc::new(AtomicI64::new(1_700_000_000));
        let (r, b, n) = (Arc::clone(&readings), Arc::clone(&behind_from), Arc::clone(&now));
        let clock: crate::Clock = Arc::new(move || {
            let behind = r.fetch_add(1, Ordering::SeqCst) >= b.load(Ordering::SeqCst);
            k8s_openapi::jiff::Timestamp::from_second(n.load(Ordering::SeqCst) - if behind { 60 } else { 0 })
                .unwrap()
        });
        let backend = IstioBackend::new(
            Arc::new(MemoryStore::with_clock(Translation::default(), clock)),
            Translation::default(),
        );
        backend.add(route("/jhub", "http://hub:8081")).await.unwrap();
        now.fetch_add(10, Ordering::SeqCst);
        // The deeper route is created honestly; the hub route's re-creations all run behind.
        behind_from.store(readings.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
        let error = backend.add(route("/jhub/user", "http://10.0.0.1:8888")).await.unwrap_err();
        assert_eq!(error.status(), 503, "{error}");
        assert_eq!(backend.store().virtual_services().len(), 2, "no stray generations of the hub route");

        // Once the clocks agree again, the next write restores the order.
        behind_from.store(usize::MAX, Ordering::SeqCst);
        now.fetch_add(10, Ordering::SeqCst);
        backend.add(route("/jhub/user", "http://10.0.0.1:8888")).await.unwrap();
        assert_eq!(istio_order(&backend), ["/jhub/user", "/jhub"]);
    }

    #[tokio::test]
    async fn within_one_second_the_name_puts_the_deeper_route_first() {
        let (backend, _clock) = backend();
        backend.add(route("/user/alice", "http://10.0.0.1:8888")).await.unwrap();
        backend.add(route("/user/alice/foo", "http://10.0.0.2:8888")).await.unwrap();
        // Same second: no re-creation needed, the depth digits of the names decide.
        assert_eq!(istio_order(&backend), ["/user/alice/foo", "/user/alice"]);
        assert_eq!(backend.objects_of(&spec("/user/alice"))[0].1.origin, Origin::Ours { generation: 0 });
    }

    #[tokio::test]
    async fn updating_a_route_keeps_its_place_and_replaces_it_whole() {
        let (backend, clock) = backend();
        backend.add(route("/user/alice/foo", "http://10.0.0.2:8888")).await.unwrap();
        clock.advance(1);
        backend.add(route("/user/alice", "http://10.0.0.1:8888")).await.unwrap();
        clock.advance(1);
        backend.add(route("/user/alice/foo", "http://10.0.0.3:8888")).await.unwrap();
        assert_eq!(istio_order(&backend), ["/user/alice/foo", "/user/alice"]);
        let foo = backend.get(&spec("/user/alice/foo")).await.unwrap().unwrap();
        assert_eq!(foo.target().as_str(), "http://10.0.0.3:8888");
        assert_eq!(backend.store().virtual_services().len(), 2);
    }

    #[tokio::test]
    async fn pod_ip_routes_own_a_service_entry_for_as_long_as_they_need_it() {
        let (backend, _clock) = backend();
        backend.add(route("/user/a", "http://10.0.0.1:8888")).await.unwrap();
        assert_eq!(backend.store().service_entries().len(), 1);
        backend.add(route("/user/a", "http://jupyter-a:8888")).await.unwrap();
        assert!(backend.store().service_entries().is_empty());
        backend.add(route("/user/a", "http://10.0.0.1:8888")).await.unwrap();
        assert!(backend.delete(&spec("/user/a")).await.unwrap());
        assert!(backend.store().service_entries().is_empty());
        assert!(backend.store().virtual_services().is_empty());
        assert!(!backend.delete(&spec("/user/a")).await.unwrap());
    }

    /// JupyterHub retries a delete answered 503. When the API server goes away between the
    /// delete's two writes, the retry must still find the route and finish, leaving no
    /// ServiceEntry behind (`api_server_restarts_*` in jhub-proxy-bin found one left).
    #[tokio::test]
    async fn a_delete_cut_short_is_finished_by_the_retry() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

        let (rendered, _clock) = backend();
        rendered.add(route("/user/a", "http://10.0.0.1:8888")).await.unwrap();
        let object = rendered.store().virtual_services()[0].clone();
        let virtual_service = Arc::new(AtomicBool::new(true));
        let service_entry = Arc::new(AtomicBool::new(true));
        let writes = Arc::new(AtomicUsize::new(0));
        // Each delete answers whether the object was there; the second write fails once.
        let delete = |exists: &Arc<AtomicBool>| {
            let (exists, writes) = (exists.clone(), writes.clone());
            move |_: &str| match writes.fetch_add(1, SeqCst) {
                1 => Err(Error::Unavailable("connection refused".into())),
                _ => Ok(exists.swap(false, SeqCst)),
            }
        };
        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(true);
        let listed = virtual_service.clone();
        store
            .expect_virtual_services_of()
            .returning(move |_| if listed.load(SeqCst) { vec![object.clone()] } else { Vec::new() });
        let delete_service_entry = delete(&service_entry);
        store.expect_delete_service_entry().returning(move |name| delete_service_entry(name));
        let delete_virtual_service = delete(&virtual_service);
        // A route delete marks its VirtualService for healing first: not a write that fails.
        store.expect_mark_deleting().returning(|_| Ok(None));
        store.expect_delete_virtual_service().returning(move |name, _| delete_virtual_service(name));
        let backend = IstioBackend::new(Arc::new(store), Translation::default());

        let error = backend.delete(&spec("/user/a")).await.unwrap_err();
        assert_eq!(error.status(), http_status(503));
        assert!(backend.delete(&spec("/user/a")).await.unwrap(), "the retry finds the route");
        assert!(!virtual_service.load(SeqCst));
        assert!(!service_entry.load(SeqCst), "the ServiceEntry is left behind");
    }

    /// Adding and deleting routes with no listing in between leaves nothing behind in the
    /// decoded routes' cache (the soak benchmark found it growing with every route written).
    #[tokio::test]
    async fn routes_added_and_deleted_leave_no_decoded_route_behind() {
        let (backend, clock) = backend();
        backend.add(route("/jhub", "http://hub:8081")).await.unwrap();
        for i in 0..200 {
            clock.advance(1);
            let user = format!("/jhub/user/u{i}");
            backend.add(route(&user, "http://10.0.0.1:8888")).await.unwrap();
            assert!(backend.get(&spec(&user)).await.unwrap().is_some());
            assert!(backend.delete(&spec(&user)).await.unwrap());
        }
        let cached = backend.decoded.lock().unwrap().len();
        assert!(cached <= 2, "{cached} decoded routes cached for 1 object");
    }

    /// A VirtualService as the Go proxy wrote it, once adopted (labelled) by this instance.
    fn legacy(spec: &str, target: &str, created: i64) -> VirtualService {
        let translation = Translation::default();
        let json =
            json!({"route_spec": spec, "target": target, "jupyterhub": true, "data": {"user": "alice"}});
        let annotation = base64::engine::general_purpose::STANDARD.encode(json.to_string());
        let parsed = RouteSpec::new(spec, RoutingMode::Path).unwrap();
        let metadata = ObjectMeta {
            name: Some(format!("jupyter-{}", "ab".repeat(32))),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (INSTANCE_LABEL.to_owned(), "jupyter".to_owned()),
                (ROUTE_LABEL.to_owned(), route_id(&parsed)),
            ])),
            annotations: Some(BTreeMap::from([(translation.legacy_annotation(), annotation)])),
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
            )),
            resource_version: Some("1".into()),
            ..ObjectMeta::default()
        };
        VirtualService::new(IstioVersion::V1, metadata, VirtualServiceSpec::default())
    }

    #[tokio::test]
    async fn the_go_proxys_routes_are_listed_and_replaced_on_the_next_write() {
        let (backend, _clock) = backend();
        backend.store().insert_raw(legacy("/user/alice/", "http://jupyter-alice:8888", 1_600_000_000));
        let listed = backend.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].spec().as_str(), "/user/alice");
        assert_eq!(listed[0].data()["user"], "alice");

        backend.add(route("/user/alice", "http://10.0.0.9:8888")).await.unwrap();
        let objects = backend.objects_of(&spec("/user/alice"));
        assert_eq!(objects.len(), 1, "the Go proxy's object is gone");
        assert_eq!(objects[0].1.origin, Origin::Ours { generation: 0 });
    }

    #[tokio::test]
    async fn an_ancestor_the_go_proxy_wrote_is_replaced_to_keep_the_order() {
        let (backend, _clock) = backend();
        backend.store().insert_raw(legacy("/jhub/", "http://hub:8081", 1_600_000_000));
        backend.add(route("/jhub/user/alice", "http://10.0.0.1:8888")).await.unwrap();
        assert_eq!(istio_order(&backend), ["/jhub/user/alice", "/jhub"]);
        assert_eq!(backend.objects_of(&spec("/jhub"))[0].1.origin, Origin::Ours { generation: 0 });
    }

    #[tokio::test]
    async fn unreadable_objects_are_skipped_not_fatal() {
        let (backend, _clock) = backend();
        let mut broken = legacy("/user/bob", "http://b:1", 1);
        broken.metadata.annotations =
            Some(BTreeMap::from([(Translation::default().legacy_annotation(), "%%%".to_owned())]));
        backend.store().insert_raw(broken);
        backend.add(route("/user/alice", "http://a:1")).await.unwrap();
        assert_eq!(backend.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn store_failures_reach_jupyterhub_as_the_right_status() {
        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(true);
        store.expect_virtual_services_of().returning(|_| Vec::new());
        store
            .expect_apply_virtual_service()
            .returning(|_| Err(Error::Unavailable("connection refused".into())));
        let backend = IstioBackend::new(Arc::new(store), Translation::default());
        let error = backend.add(route("/user/a", "http://a:1")).await.unwrap_err();
        assert_eq!(error.status(), http_status(503));

        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(true);
        store.expect_virtual_services_of().returning(|_| Vec::new());
        store.expect_apply_virtual_service().returning(|_| {
            Err(Error::Forbidden {
                verb: "patch",
                resource: "virtualservices.networking.istio.io",
                namespace: "hub".into(),
                source: "denied".into(),
            })
        });
        let backend = IstioBackend::new(Arc::new(store), Translation::default());
        let error = backend.add(route("/user/a", "http://a:1")).await.unwrap_err();
        assert_eq!(error.status(), http_status(403));
        assert!(
            error.to_string().contains("needs 'patch' on virtualservices.networking.istio.io"),
            "{error}"
        );
    }

    /// A VirtualService the API server refuses takes back the ServiceEntry written before it:
    /// a new route's is deleted, an existing route's written again for its old target.
    #[tokio::test]
    async fn a_refused_virtual_service_takes_back_its_service_entry() {
        let refused =
            |_| Err(Error::Invalid { name: "vs".into(), message: "spec.http: Invalid value".into() });
        let entry_name = Translation::default().service_entry_name(&spec("/user/a"));
        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(true);
        store.expect_virtual_services_of().returning(|_| Vec::new());
        store.expect_apply_service_entry().times(1).returning(|_| Ok(()));
        store.expect_apply_virtual_service().returning(refused);
        store
            .expect_delete_service_entry()
            .withf(move |name| name == entry_name)
            .times(1)
            .returning(|_| Ok(true));
        let backend = IstioBackend::new(Arc::new(store), Translation::default());
        let error = backend.add(route("/user/a", "http://10.0.0.7:8888")).await.unwrap_err();
        assert_eq!(error.status(), http_status(400));
        assert!(error.to_string().contains("spec.http: Invalid value"), "{error}");

        let object = Arc::new(legacy("/user/a", "http://10.0.0.7:8888", 1_700_000_000));
        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(true);
        store.expect_virtual_services_of().returning(move |_| vec![Arc::clone(&object)]);
        let entries = Arc::new(Mutex::new(Vec::new()));
        let applied = Arc::clone(&entries);
        store.expect_apply_service_entry().times(2).returning(move |entry| {
            applied.lock().unwrap().push(entry.spec.endpoints[0].address.clone());
            Ok(())
        });
        store.expect_apply_virtual_service().returning(refused);
        let backend = IstioBackend::new(Arc::new(store), Translation::default());
        let error = backend.add(route("/user/a", "http://10.0.0.8:8888")).await.unwrap_err();
        assert_eq!(error.status(), http_status(400));
        assert_eq!(*entries.lock().unwrap(), ["10.0.0.8", "10.0.0.7"], "the old address written back");
    }

    #[tokio::test]
    async fn a_listing_is_reused_until_the_store_changes() {
        let (backend, _clock) = backend();
        let specs = async |backend: &IstioBackend<MemoryStore>| {
            backend.list().await.unwrap().iter().map(|r| r.spec().to_string()).collect::<Vec<_>>()
        };
        backend.add(route("/user/a", "http://a:1")).await.unwrap();
        assert_eq!(specs(&backend).await, ["/user/a"]);
        backend.add(route("/user/b", "http://10.0.0.2:8888")).await.unwrap();
        assert_eq!(specs(&backend).await, ["/user/a", "/user/b"]);
        let before = backend.store().generation();
        backend.delete(&spec("/user/a")).await.unwrap();
        assert!(backend.listing.at(before).is_none(), "a write lets go of the listing");
        assert_eq!(specs(&backend).await, ["/user/b"]);
        backend.add(route("/user/b", "http://b:2")).await.unwrap();
        assert_eq!(backend.list().await.unwrap()[0].target().as_str(), "http://b:2");

        // A store that vouches for its generation is read once for two listings.
        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(true);
        store.expect_generation().return_const(Some(7));
        store.expect_stored_routes().times(1).returning(|_| None);
        store.expect_virtual_services().times(1).returning(Vec::new);
        let backend = IstioBackend::new(Arc::new(store), Translation::default());
        backend.list().await.unwrap();
        backend.list().await.unwrap();
    }

    #[tokio::test]
    async fn a_store_that_keeps_routes_decoded_answers_a_get_without_objects() {
        let stored =
            |target: &str, origin: Origin| StoredRoute { route: Arc::new(route("/user/a", target)), origin };
        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(true);
        store.expect_virtual_services_of().never();
        store.expect_stored_routes_of().returning(move |_, _| {
            Some(vec![
                stored("http://old:1", Origin::Ours { generation: 0 }),
                stored("http://current:1", Origin::Ours { generation: 1 }),
                stored("http://legacy:1", Origin::Legacy),
            ])
        });
        let backend = IstioBackend::new(Arc::new(store), Translation::default());
        let got = backend.get(&spec("/user/a")).await.unwrap().unwrap();
        assert_eq!(got.target().as_str(), "http://current:1", "the highest generation is the route");
        // An id shared by another spec (a hash collision) answers nothing for this one.
        assert!(backend.get(&spec("/user/b")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn nothing_is_served_before_the_cache_is_ready() {
        let mut store = MockRouteStore::new();
        store.expect_is_ready().return_const(false);
        let backend = IstioBackend::new(Arc::new(store), Translation::default());
        let error = backend.list().await.unwrap_err();
        assert_eq!(error.status(), http_status(503));
        assert!(backend.add(route("/user/a", "http://a:1")).await.is_err());
    }

    fn http_status(code: u16) -> http::StatusCode {
        http::StatusCode::from_u16(code).unwrap()
    }
}
