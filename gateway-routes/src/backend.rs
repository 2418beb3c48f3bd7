//! The routes API over HTTPRoutes: [`GatewayBackend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kube_routes::{Listing, shrink_when_sparse};
use proxy_api::{Backend, Route, RouteSpec};

use crate::resources::HttpRoute;
use crate::store::HttpRouteStore;
use crate::translate::{GatewayTranslation, Rendered};

/// configurable-http-proxy's routes as HTTPRoutes in a store.
///
/// No ordering is kept, unlike `istio_routes::IstioBackend`: the Gateway API gives the
/// longest path prefix precedence whatever the objects' ages, so one object per route, written
/// in place, routes as configurable-http-proxy does.
pub struct GatewayBackend<S> {
    store: Arc<S>,
    translation: GatewayTranslation,
    /// Each HTTPRoute's route, decoded once per resource version: a listing of 10,000 routes
    /// then parses no JSON.
    decoded: Mutex<HashMap<String, Decoded>>,
    /// How long a write waits for a gateway to accept the route (with warm-up).
    acceptance_wait: Option<Duration>,
    /// The last listing, reused while the store is at the generation it was built at.
    listing: Listing,
}

/// A route and the resource version of the object it was decoded from.
type Decoded = (Option<String>, Arc<Route>);

impl<S> std::fmt::Debug for GatewayBackend<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBackend").field("translation", &self.translation).finish_non_exhaustive()
    }
}

impl<S: HttpRouteStore> GatewayBackend<S> {
    /// A backend writing `translation`'s objects to `store`.
    pub fn new(store: Arc<S>, translation: GatewayTranslation) -> Self {
        GatewayBackend {
            store,
            translation,
            decoded: Mutex::default(),
            acceptance_wait: None,
            listing: Listing::default(),
        }
    }

    /// Has every write wait, at most `within`, until a gateway has accepted the route (its
    /// `Accepted` condition at the written generation), so that warm-up polls a gateway that
    /// has the route. A refusal is logged by the store; the write still succeeds, as JupyterHub
    /// could not do better with an error.
    pub fn with_acceptance_wait(mut self, within: Duration) -> Self {
        self.acceptance_wait = Some(within);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// How routes become objects.
    pub fn translation(&self) -> &GatewayTranslation {
        &self.translation
    }

    fn ready(&self) -> proxy_api::Result<()> {
        if self.store.is_ready() { Ok(()) } else { Err(kube_routes::Error::NotReady.into()) }
    }

    /// The route an object holds, decoded once per resource version; unreadable objects
    /// (someone else's edit) are logged and skipped, never fatal to a listing.
    fn decode(&self, object: &HttpRoute) -> Option<Arc<Route>> {
        let name = object.metadata.name.as_deref().unwrap_or_default();
        let version = &object.metadata.resource_version;
        let mut decoded = self.decoded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((seen, route)) = decoded.get(name)
            && seen == version
        {
            return Some(Arc::clone(route));
        }
        match self.translation.read(object)? {
            Ok(route) => {
                decoded.insert(name.to_owned(), (version.clone(), Arc::clone(&route)));
                Some(route)
            }
            Err(error) => {
                tracing::warn!(%error, "skipping an HTTPRoute that does not hold a readable route");
                None
            }
        }
    }

    /// Whether the cached HTTPRoute `name` holds a route to a pod IP (which has a Service and an
    /// EndpointSlice of its own); `None` when the cache has no readable route of that name.
    fn cached_pod_target(&self, name: &str) -> Option<bool> {
        let object = self.store.http_route(name)?;
        let route = self.decode(&object)?;
        Some(route.target().ip().is_some())
    }

    /// Writes a route's objects over `cached`, the HTTPRoute of that name the cache holds.
    ///
    /// A gateway must never hold the HTTPRoute without its backend: until the Service and
    /// EndpointSlice reach it, it answers the route's requests with an error (Traefik's 500 or
    /// 503), where the user's browser lands right after the spawn. So they are written first.
    /// They name the HTTPRoute as their owner by uid, which only the API server gives: owned by
    /// the cached one, and written again, owned by what the write returned, when there was none
    /// or it was another (re-created behind our back).
    async fn write(
        &self,
        name: &str,
        rendered: Rendered,
        cached: Option<&HttpRoute>,
    ) -> kube_routes::Result<Arc<HttpRoute>> {
        match rendered.pod_backend {
            Some(backend) => {
                let early = match cached {
                    Some(object) => backend.clone().owned_by(object),
                    None => backend.clone(),
                };
                self.store.apply_pod_backend(early).await?;
                let stored = self.store.apply_http_route(rendered.http_route).await?;
                if cached.and_then(|object| object.metadata.uid.as_ref()) != stored.metadata.uid.as_ref() {
                    self.store.apply_pod_backend(backend.owned_by(&stored)).await?;
                }
                Ok(stored)
            }
            None => {
                // Read before the write, which replaces the cached route.
                let had_pod_backend = self.cached_pod_target(name) == Some(true);
                let stored = self.store.apply_http_route(rendered.http_route).await?;
                if had_pod_backend {
                    self.store.delete_pod_backend(name).await?;
                }
                Ok(stored)
            }
        }
    }

    /// Puts back what a failed [`write`](Self::write) may have changed, so that a route the
    /// API server refused leaves nothing routable or listed: a new route's objects are deleted,
    /// an existing route's are written again as they were. Best effort: what fails here is
    /// logged, and the write's own error is what JupyterHub hears.
    async fn undo(&self, name: &str, cached: Option<&HttpRoute>) {
        let result = match cached {
            // A new route: nothing of it may stay, and healing must not bring it back.
            None => {
                let deleted = match self.store.mark_deleting(name).await {
                    Ok(marked) => self.store.delete_http_route(name, marked).await,
                    Err(error) => Err(error),
                };
                match deleted {
                    Ok(_) => self.store.delete_pod_backend(name).await.map(drop).map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                }
            }
            Some(cached) => self.restore(name, cached).await,
        };
        self.forget(name);
        if let Err(error) = result {
            tracing::warn!(http_route = name, %error, "could not undo a refused write");
        }
    }

    /// Writes an existing route's objects again as `cached` holds it. One this build cannot
    /// write again (unreadable, or refused by its checks now) is left as it is, never deleted:
    /// JupyterHub did not ask for that.
    async fn restore(&self, name: &str, cached: &HttpRoute) -> Result<(), String> {
        let route = self.decode(cached).ok_or("the route it held cannot be read")?;
        let rendered = self.translation.render(&route).map_err(|e| e.to_string())?;
        let had_pod_backend = rendered.pod_backend.is_some();
        let restored = self.write(name, rendered, Some(cached)).await.map(drop);
        // The failed write may have given the route a backend it did not have.
        let deleted = match had_pod_backend {
            false => self.store.delete_pod_backend(name).await.map(drop),
            true => Ok(()),
        };
        restored.and(deleted).map_err(|e| e.to_string())
    }

    fn forget(&self, name: &str) {
        let mut decoded = self.decoded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        decoded.remove(name);
        shrink_when_sparse(&mut decoded);
    }
}

impl<S: HttpRouteStore> GatewayBackend<S> {
    /// Where a gateway sends a request for `url` through the HTTPRoutes as they are now (see
    /// [`crate::explain`]); a bad URL is refused before the store is asked.
    pub async fn explain(&self, url: &str) -> crate::explain::Result<crate::explain::Explanation> {
        crate::explain::Request::parse(url)?;
        let objects = self.store.live_http_routes().await?;
        crate::explain::explain(&objects, &self.translation, url)
    }
}

impl<S: HttpRouteStore> kube_routes::StoreState for GatewayBackend<S> {
    fn synced(&self) -> bool {
        self.store.is_ready()
    }

    fn route_count(&self) -> Option<usize> {
        self.store.is_ready().then(|| self.store.http_routes().len())
    }

    fn refused_routes(&self) -> Option<usize> {
        Some(self.store.refused())
    }
}

#[async_trait]
impl<S: HttpRouteStore> Backend for GatewayBackend<S> {
    async fn list(&self) -> proxy_api::Result<Vec<Arc<Route>>> {
        self.ready()?;
        let generation = self.store.generation();
        if let Some(routes) = self.listing.at(generation) {
            return Ok(routes);
        }
        let routes: Vec<Arc<Route>> =
            self.store.http_routes().iter().filter_map(|object| self.decode(object)).collect();
        self.listing.keep(generation, &routes);
        Ok(routes)
    }

    async fn get(&self, spec: &RouteSpec) -> proxy_api::Result<Option<Arc<Route>>> {
        self.ready()?;
        let object = self.store.http_route(&self.translation.object_name(spec));
        Ok(object.and_then(|object| self.decode(&object)))
    }

    async fn add(&self, route: Route) -> proxy_api::Result<()> {
        self.ready()?;
        self.listing.clear();
        let rendered = self.translation.render(&route)?;
        let name = self.translation.object_name(route.spec());
        let cached = self.store.http_route(&name).filter(|object| object.metadata.uid.is_some());
        let stored = match self.write(&name, rendered, cached.as_deref()).await {
            Ok(stored) => stored,
            Err(error) => {
                self.undo(&name, cached.as_deref()).await;
                return Err(error.into());
            }
        };
        if let Some(within) = self.acceptance_wait {
            let taken = self.store.wait_accepted(&name, stored.metadata.generation, within).await;
            tracing::debug!(http_route = name, ?taken, "how the gateways took the route");
        }
        Ok(())
    }

    async fn delete(&self, spec: &RouteSpec) -> proxy_api::Result<bool> {
        self.ready()?;
        self.listing.clear();
        let name = self.translation.object_name(spec);
        // The HTTPRoute first, so that no request is routed to a backend about to go; then
        // what it owns, which a cluster's garbage collector would also delete, but not at once.
        // A route the cache shows with a Service target has no pod backend to delete; one it
        // does not show (gone already, a delete cut short, a lagging watch) may.
        let pod_backend = self.cached_pod_target(&name) != Some(false);
        // Marked first, at the version the delete then requires: every replica's watch sees
        // the mark in the Deleted event, and healing does not undo what JupyterHub asked for.
        let marked = self.store.mark_deleting(&name).await?;
        let existed = self.store.delete_http_route(&name, marked).await?;
        self.forget(&name);
        if pod_backend {
            self.store.delete_pod_backend(&name).await?;
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use proxy_api::{RoutingMode, Target};

    use super::*;
    use crate::GatewayMemoryStore;

    fn route(spec: &str, target: &str) -> Route {
        Route::new(spec_of(spec), Target::parse(target).unwrap(), Default::default()).unwrap()
    }

    fn spec_of(spec: &str) -> RouteSpec {
        RouteSpec::new(spec, RoutingMode::Path).unwrap()
    }

    fn backend() -> GatewayBackend<GatewayMemoryStore> {
        GatewayBackend::new(Arc::new(GatewayMemoryStore::new()), GatewayTranslation::default())
    }

    #[tokio::test]
    async fn routes_are_listed_as_added_and_gone_when_deleted() {
        let backend = backend();
        backend.add(route("/", "http://hub:8081")).await.unwrap();
        backend.add(route("/user/alice", "http://10.0.0.7:8888")).await.unwrap();
        let mut listed: Vec<String> =
            backend.list().await.unwrap().iter().map(|r| r.spec().to_string()).collect();
        listed.sort();
        assert_eq!(listed, ["/", "/user/alice"]);
        let got = backend.get(&spec_of("/user/alice")).await.unwrap().unwrap();
        assert_eq!(got.target().as_str(), "http://10.0.0.7:8888");

        assert!(backend.delete(&spec_of("/user/alice")).await.unwrap());
        assert!(!backend.delete(&spec_of("/user/alice")).await.unwrap(), "already gone");
        assert!(backend.get(&spec_of("/user/alice")).await.unwrap().is_none());
        assert!(backend.store().pod_backends().is_empty(), "the pod backend goes with its route");
        assert!(backend.decoded.lock().unwrap().len() <= 1, "nothing decoded is kept for a deleted route");
    }

    #[tokio::test]
    async fn a_pod_backend_is_owned_by_its_route_and_follows_its_target() {
        let backend = backend();
        backend.add(route("/user/alice", "http://10.0.0.7:8888")).await.unwrap();
        let object = backend.store().http_routes().pop().unwrap();
        let backends = backend.store().pod_backends();
        let owner = &backends.values().next().unwrap().service.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), &owner.uid), ("HTTPRoute", object.metadata.uid.as_ref().unwrap()));

        backend.add(route("/user/alice", "http://10.0.0.8:8888")).await.unwrap();
        let moved = backend.store().pod_backends();
        let slice = &moved.values().next().unwrap().endpoint_slice;
        assert_eq!(slice.endpoints[0].addresses, ["10.0.0.8"]);
        let again = backend.store().http_routes().pop().unwrap();
        assert_eq!(again.metadata.uid, object.metadata.uid, "updated in place");

        backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
        assert!(backend.store().pod_backends().is_empty(), "a service target needs no pod backend");
        let listed = backend.list().await.unwrap();
        assert_eq!(listed[0].target().as_str(), "http://jupyter-alice:8888", "decoded anew after the update");
    }

    #[tokio::test]
    async fn a_listing_is_reused_until_the_store_changes() {
        let backend = backend();
        backend.add(route("/user/alice", "http://10.0.0.7:8888")).await.unwrap();
        let first = backend.list().await.unwrap();
        let again = backend.list().await.unwrap();
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert!(backend.listing.at(backend.store().generation()).is_some(), "kept for the next listing");
        backend.add(route("/user/bob", "http://10.0.0.8:8888")).await.unwrap();
        assert_eq!(backend.list().await.unwrap().len(), 2, "rebuilt after a write");
        let before = backend.store().generation();
        backend.delete(&spec_of("/user/alice")).await.unwrap();
        assert!(backend.listing.at(before).is_none(), "a write lets go of the listing");
        assert_eq!(backend.list().await.unwrap().len(), 1, "rebuilt after a delete");
    }

    /// The memory store, counting the pod-backend deletes and applies asked of it, and the
    /// pod addresses its pod backend held for each HTTPRoute written (what a gateway would
    /// route the route's requests to, had it the HTTPRoute at that moment).
    #[derive(Default)]
    struct CountingStore {
        inner: GatewayMemoryStore,
        pod_backend_deletes: std::sync::atomic::AtomicUsize,
        pod_backend_applies: std::sync::atomic::AtomicUsize,
        backend_at_route_write: std::sync::Mutex<Vec<Option<Vec<String>>>>,
        /// Refuse (as the API server's 422) every HTTPRoute, or every pod backend, written.
        refuse_routes: std::sync::atomic::AtomicBool,
        refuse_pod_backends: std::sync::atomic::AtomicBool,
    }

    fn refused(name: String) -> kube_routes::Error {
        kube_routes::Error::Invalid { name, message: "spec: Invalid value".to_owned() }
    }

    #[async_trait]
    impl HttpRouteStore for CountingStore {
        fn is_ready(&self) -> bool {
            self.inner.is_ready()
        }
        fn http_routes(&self) -> Vec<Arc<HttpRoute>> {
            self.inner.http_routes()
        }
        fn http_route(&self, name: &str) -> Option<Arc<HttpRoute>> {
            self.inner.http_route(name)
        }
        async fn apply_http_route(&self, object: HttpRoute) -> kube_routes::Result<Arc<HttpRoute>> {
            let name = object.metadata.name.clone().unwrap_or_default();
            let held =
                self.inner.pod_backends().get(&name).map(|b| b.endpoint_slice.endpoints[0].addresses.clone());
            self.backend_at_route_write.lock().unwrap().push(held);
            if self.refuse_routes.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(refused(name));
            }
            self.inner.apply_http_route(object).await
        }
        async fn live_http_routes(&self) -> kube_routes::Result<Vec<Arc<HttpRoute>>> {
            self.inner.live_http_routes().await
        }
        async fn mark_deleting(&self, name: &str) -> kube_routes::Result<Option<String>> {
            self.inner.mark_deleting(name).await
        }
        async fn delete_http_route(&self, name: &str, version: Option<String>) -> kube_routes::Result<bool> {
            self.inner.delete_http_route(name, version).await
        }
        async fn apply_pod_backend(&self, backend: crate::PodBackend) -> kube_routes::Result<()> {
            self.pod_backend_applies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.refuse_pod_backends.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(refused(backend.endpoint_slice.metadata.name.unwrap_or_default()));
            }
            self.inner.apply_pod_backend(backend).await
        }
        async fn delete_pod_backend(&self, name: &str) -> kube_routes::Result<bool> {
            self.pod_backend_deletes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.delete_pod_backend(name).await
        }
    }

    /// A gateway never holds a pod-IP route's HTTPRoute without its backend: the Service and
    /// EndpointSlice, with the new address, are written before the HTTPRoute, and a new route's
    /// again after it, owned by the uid the write returned.
    #[tokio::test]
    async fn a_pod_backend_is_written_before_its_route() {
        let backend = GatewayBackend::new(Arc::new(CountingStore::default()), GatewayTranslation::default());
        let applies = || backend.store().pod_backend_applies.load(std::sync::atomic::Ordering::Relaxed);
        backend.add(route("/user/alice", "http://10.0.0.7:8888")).await.unwrap();
        assert_eq!(applies(), 2, "before the new route, and owned after it");
        backend.add(route("/user/alice", "http://10.0.0.8:8888")).await.unwrap();
        assert_eq!(applies(), 3, "an update is owned by the route the cache holds at once");
        let held = backend.store().backend_at_route_write.lock().unwrap().clone();
        let address = |a: &str| Some(vec![a.to_owned()]);
        assert_eq!(held, [address("10.0.0.7"), address("10.0.0.8")]);
        let object = backend.store().http_routes().pop().unwrap();
        let backends = backend.store().inner.pod_backends();
        let owners =
            backends.values().next().unwrap().endpoint_slice.metadata.owner_references.clone().unwrap();
        assert_eq!(Some(&owners[0].uid), object.metadata.uid.as_ref());
    }

    #[tokio::test]
    async fn only_a_route_that_may_have_a_pod_backend_deletes_one() {
        let backend = GatewayBackend::new(Arc::new(CountingStore::default()), GatewayTranslation::default());
        let deletes = || backend.store().pod_backend_deletes.load(std::sync::atomic::Ordering::Relaxed);
        backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
        backend.delete(&spec_of("/user/alice")).await.unwrap();
        assert_eq!(deletes(), 0, "a Service target has none");
        backend.add(route("/user/bob", "http://10.0.0.8:8888")).await.unwrap();
        backend.delete(&spec_of("/user/bob")).await.unwrap();
        assert_eq!(deletes(), 1, "a pod IP's goes with it");
        backend.delete(&spec_of("/user/carol")).await.unwrap();
        assert_eq!(deletes(), 2, "a route the cache does not show may have one");
    }

    #[tokio::test]
    async fn a_route_refused_writes_nothing() {
        let backend = backend();
        let error = backend.add(route("/user/alice", "https://10.0.0.7:8888")).await.unwrap_err();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert!(backend.store().http_routes().is_empty() && backend.store().pod_backends().is_empty());
    }

    /// What the API server refuses leaves nothing of a new route, and an existing route as it
    /// was; JupyterHub hears a 400 with the server's reason.
    #[tokio::test]
    async fn a_write_the_api_server_refuses_is_undone() {
        use std::sync::atomic::Ordering::Relaxed;
        let backend = GatewayBackend::new(Arc::new(CountingStore::default()), GatewayTranslation::default());
        let store = backend.store();
        let addresses = || {
            store
                .inner
                .pod_backends()
                .values()
                .map(|b| b.endpoint_slice.endpoints[0].addresses[0].clone())
                .collect::<Vec<_>>()
        };
        let refused_add = |target: &'static str| {
            let backend = &backend;
            async move {
                let error = backend.add(route("/user/alice", target)).await.unwrap_err();
                assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{error}");
                assert!(error.to_string().contains("spec: Invalid value"), "{error}");
            }
        };

        for refuse in [&store.refuse_pod_backends, &store.refuse_routes] {
            refuse.store(true, Relaxed);
            refused_add("http://10.0.0.7:8888").await;
            assert!(store.http_routes().is_empty() && addresses().is_empty(), "a new route leaves nothing");
            refuse.store(false, Relaxed);
        }

        backend.add(route("/user/alice", "http://10.0.0.7:8888")).await.unwrap();
        store.refuse_routes.store(true, Relaxed);
        refused_add("http://10.0.0.8:9999").await;
        store.refuse_routes.store(false, Relaxed);
        let kept = backend.get(&spec_of("/user/alice")).await.unwrap().unwrap();
        assert_eq!(kept.target().as_str(), "http://10.0.0.7:8888");
        assert_eq!(addresses(), ["10.0.0.7"], "the backend holds the old address again");
        let port = store
            .inner
            .pod_backends()
            .values()
            .next()
            .unwrap()
            .service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port;
        assert_eq!(port, 8888);

        backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
        assert!(addresses().is_empty());
        store.refuse_routes.store(true, Relaxed);
        refused_add("http://10.0.0.9:8888").await;
        store.refuse_routes.store(false, Relaxed);
        let kept = backend.get(&spec_of("/user/alice")).await.unwrap().unwrap();
        assert_eq!(kept.target().as_str(), "http://jupyter-alice:8888");
        assert!(addresses().is_empty(), "a Service target gets no pod backend from a refused write");
    }

    /// An existing route this build would not write (here a loopback target, written by a
    /// proxy that allowed them) is left as it was by a refused update, never deleted.
    #[tokio::test]
    async fn a_refused_update_never_deletes_a_route_it_cannot_write_again() {
        use std::sync::atomic::Ordering::Relaxed;
        let store = Arc::new(CountingStore::default());
        let lenient = GatewayTranslation { allow_loopback_targets: true, ..GatewayTranslation::default() };
        GatewayBackend::new(Arc::clone(&store), lenient)
            .add(route("/user/alice", "http://127.0.0.1:8888"))
            .await
            .unwrap();
        let backend = GatewayBackend::new(Arc::clone(&store), GatewayTranslation::default());
        store.refuse_routes.store(true, Relaxed);
        let error = backend.add(route("/user/alice", "http://10.0.0.8:8888")).await.unwrap_err();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        store.refuse_routes.store(false, Relaxed);
        let kept = backend.get(&spec_of("/user/alice")).await.unwrap().unwrap();
        assert_eq!(kept.target().as_str(), "http://127.0.0.1:8888");
    }
}
