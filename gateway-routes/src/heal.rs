//! Healing of the Gateway API's objects: what drifts, and how it is repaired. When to look and
//! when to write (the jitter, the grace, one replica acting through preconditions, back-off)
//! is the engine's, [`kube_routes::heal`], which Istio routing's healing shares.
//!
//! The HTTPRoute watch the store already runs tells healing which route an event touched (and,
//! for a delete, the object's last state); two more label-selected watches, of our Services
//! and EndpointSlices, do the same for a pod-IP route's backend, of which healing keeps only
//! what judging one takes ([`kube_routes::SeenObjects`]). Each touched route is checked against
//! the caches:
//!
//! | drift | what is found | repair |
//! |---|---|---|
//! | `edited` | a route's HTTPRoute whose spec differs from its rendering; or its Service's ports, or its EndpointSlice's address or ports, not as rendered | patch it back (a merge patch, which creates nothing), with the object's `resourceVersion` as precondition |
//! | `deleted` | an HTTPRoute deleted without the delete mark; or a pod-IP route's Service or EndpointSlice missing | create it again from its last state (the HTTPRoute, then its backend owned by it); a missing backend only for an HTTPRoute the API server still holds, unmarked |
//! | `orphaned` | our Service or EndpointSlice with no HTTPRoute of its route, or one whose route needs none (a Service target) | delete it with its `resourceVersion` as precondition |
//! | `stray` | our Service or EndpointSlice labelled with a route's id under a name that route does not render | delete it with its `resourceVersion` as precondition |
//!
//! An add writes the backend before the HTTPRoute, and a route changed from a pod IP to a
//! Service deletes its backend after the HTTPRoute, so orphans and strays wait for the engine's
//! grace period before they are deleted. A cluster's garbage collector also deletes a deleted
//! HTTPRoute's backend (it names the HTTPRoute as owner), but not at once, and not where none
//! runs.
//!
//! **A delete JupyterHub asked for is never undone.** A route delete marks its HTTPRoute with
//! [`DELETE_INTENT_ANNOTATION`](kube_routes::heal::DELETE_INTENT_ANNOTATION) and deletes it at
//! the marked `resourceVersion`, so the Deleted event every replica's watch delivers carries
//! the mark; a marked HTTPRoute is neither healed nor restored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_routes::heal::{
    self, HealOptions, Healing, Repairs, is_marked, observed_digest, spec_digest, spec_sha256,
};
use kube_routes::{Error, HealMetrics, ROUTE_LABEL, Result, Seen, SeenObjects};
use tokio::sync::mpsc;

use crate::backend::GatewayBackend;
use crate::kube_store::{ENDPOINT_SLICES_PLURAL, GatewayKubeStore};
use crate::resources::HttpRoute;
use crate::translate::{PodBackend, Rendered};

/// What the watches tell healing: the last state of a deleted HTTPRoute.
pub(crate) type Touch = heal::Touch<Arc<HttpRoute>>;

const HTTP_ROUTES: &str = HttpRoute::PLURAL;
const SERVICES: &str = "services";

/// What healing compares a Service by: its ports, the only part of its spec we write (the API
/// server fills in the rest: a cluster IP, IP families...).
fn service_digest(service: &Service) -> [u8; 32] {
    spec_sha256(&service.spec.as_ref().and_then(|spec| spec.ports.as_ref()))
}

/// What healing compares an EndpointSlice by: its address type, endpoints and ports.
fn slice_digest(slice: &EndpointSlice) -> [u8; 32] {
    spec_sha256(&(&slice.address_type, &slice.endpoints, &slice.ports))
}

/// Starts healing the objects of `backend`'s store (on the current tokio runtime): watches of
/// our Services and EndpointSlices, and the checks and repairs, which begin once the HTTPRoute
/// cache is synced.
pub fn heal(
    backend: Arc<GatewayBackend<GatewayKubeStore>>,
    options: HealOptions,
    metrics: HealMetrics,
) -> Healing {
    let (feed, touches) = mpsc::unbounded_channel();
    let store = Arc::clone(backend.store());
    if !store.feed_healing(feed.clone()) {
        tracing::warn!("healing was started twice on one store; the second sees no HTTPRoute events");
    }
    let selector = backend.translation().label_selector();
    let watched = || (Arc::new(SeenObjects::new(ROUTE_LABEL)), Arc::new(AtomicBool::new(false)));
    let (services, slices) = (watched(), watched());
    let (_, service_calls, slice_calls) = store.calls();
    let watches = vec![
        heal::watch_seen(
            service_calls.api().clone(),
            &selector,
            SERVICES,
            services.clone(),
            service_digest,
            feed.clone(),
            store.metrics().clone(),
        ),
        heal::watch_seen(
            slice_calls.api().clone(),
            &selector,
            ENDPOINT_SLICES_PLURAL,
            slices.clone(),
            slice_digest,
            feed,
            store.metrics().clone(),
        ),
    ];
    let repairs = GatewayRepairs { backend, services, slices };
    heal::start(Arc::new(repairs), touches, options, metrics, watches)
}

/// What drifts in the Gateway API's objects, and how each is repaired.
struct GatewayRepairs {
    backend: Arc<GatewayBackend<GatewayKubeStore>>,
    /// Our Services as their watch shows them, and whether it has had its first list.
    services: (Arc<SeenObjects>, Arc<AtomicBool>),
    /// The same for our EndpointSlices.
    slices: (Arc<SeenObjects>, Arc<AtomicBool>),
}

/// What is wrong with a route's objects, and what repairs it.
enum Drift {
    /// Its HTTPRoute was deleted behind our back: the objects to create again.
    Deleted(Box<Rendered>),
    /// The rendering to write, carrying the edited HTTPRoute's resource version.
    Edited(Box<HttpRoute>),
    /// A pod-IP route's Service (`services`) or EndpointSlice is missing: the backend to create,
    /// for the HTTPRoute of this name.
    BackendMissing(&'static str, Box<PodBackend>, String),
    /// The rendered Service, carrying the edited one's resource version.
    ServiceEdited(Box<Service>),
    /// The rendered EndpointSlice, carrying the edited one's resource version.
    SliceEdited(Box<EndpointSlice>),
    /// A Service or EndpointSlice (by resource) of a route that has no HTTPRoute or needs none.
    Orphaned(&'static str, Seen),
    /// A Service or EndpointSlice labelled with a route's id under a name it does not render.
    Stray(&'static str, Seen),
}

impl heal::Drift for Drift {
    fn resource(&self) -> &'static str {
        match self {
            Drift::Deleted(_) | Drift::Edited(_) => HTTP_ROUTES,
            Drift::BackendMissing(resource, ..)
            | Drift::Orphaned(resource, _)
            | Drift::Stray(resource, _) => resource,
            Drift::ServiceEdited(_) => SERVICES,
            Drift::SliceEdited(_) => ENDPOINT_SLICES_PLURAL,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Drift::Deleted(_) | Drift::BackendMissing(..) => "deleted",
            Drift::Edited(_) | Drift::ServiceEdited(_) | Drift::SliceEdited(_) => "edited",
            Drift::Orphaned(..) => "orphaned",
            Drift::Stray(..) => "stray",
        }
    }

    fn object(&self) -> String {
        let name = match self {
            Drift::Deleted(rendered) => rendered.http_route.metadata.name.clone(),
            Drift::Edited(object) => object.metadata.name.clone(),
            Drift::BackendMissing(_, _, name) => Some(name.clone()),
            Drift::ServiceEdited(service) => service.metadata.name.clone(),
            Drift::SliceEdited(slice) => slice.metadata.name.clone(),
            Drift::Orphaned(_, seen) | Drift::Stray(_, seen) => Some(seen.name.clone()),
        };
        name.unwrap_or_default()
    }

    fn needs_grace(&self) -> bool {
        matches!(self, Drift::Orphaned(..) | Drift::Stray(..))
    }
}

/// The backend objects of a route that has no HTTPRoute or needs no backend: orphans, the
/// Service first.
fn orphaned(service: Option<Seen>, slice: Option<Seen>) -> Option<Drift> {
    let orphan = service.map(|s| (SERVICES, s)).or(slice.map(|s| (ENDPOINT_SLICES_PLURAL, s)));
    orphan.map(|(resource, seen)| Drift::Orphaned(resource, seen))
}

/// A resource version as the integer it is (an etcd revision), to tell which state is later.
fn revision(object: &HttpRoute) -> u64 {
    object.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl GatewayRepairs {
    fn store(&self) -> &GatewayKubeStore {
        self.backend.store()
    }

    /// The Services and EndpointSlices labelled with route `id`, once both watches have
    /// listed; `None` before.
    fn backend_objects(&self, id: &str) -> Option<(Vec<Seen>, Vec<Seen>)> {
        let synced = self.services.1.load(Ordering::Acquire) && self.slices.1.load(Ordering::Acquire);
        synced.then(|| (self.services.0.of_route(id), self.slices.0.of_route(id)))
    }

    fn render(&self, route: &proxy_api::Route) -> Option<Rendered> {
        match self.backend.translation().render(route) {
            Ok(rendered) => Some(rendered),
            Err(error) => {
                tracing::warn!(route = %route.spec(), %error, "a stored route no longer renders; not healing it");
                None
            }
        }
    }

    /// Whether the HTTPRoute `name` is on the API server now and not being deleted: a missing
    /// backend is created only for such a route, never from a cache that may be stale.
    async fn live_route(&self, name: &str) -> Result<Option<HttpRoute>> {
        let live = self.store().calls().0.get(name).await?;
        Ok(live.filter(|object| !is_marked(&object.metadata)))
    }
}

#[async_trait]
impl Repairs for GatewayRepairs {
    type Drift = Drift;
    type Gone = Arc<HttpRoute>;

    async fn ready(&self) {
        self.store().wait_until_ready().await;
    }

    fn route_ids(&self) -> Vec<String> {
        let routes = crate::store::HttpRouteStore::http_routes(self.store());
        let mut ids: Vec<String> = routes
            .iter()
            .filter_map(|object| object.metadata.labels.as_ref()?.get(ROUTE_LABEL).cloned())
            .collect();
        ids.extend(self.services.0.routes());
        ids.extend(self.slices.0.routes());
        ids
    }

    fn assess(&self, id: &str, gone: Option<&Arc<HttpRoute>>) -> Option<Drift> {
        let translation = self.backend.translation();
        let name = translation.object_name_of(id);
        let current = crate::store::HttpRouteStore::http_route(self.store(), &name);
        // Being deleted: nothing of it is restored.
        if current.as_ref().is_some_and(|object| is_marked(&object.metadata)) {
            return None;
        }
        let known = self.backend_objects(id);
        let synced = known.is_some();
        let (services, slices) = known.unwrap_or_default();
        let named = |seen: &Seen| seen.name == name;
        let (service, stray_services): (Vec<Seen>, Vec<Seen>) = services.into_iter().partition(named);
        let (slice, stray_slices): (Vec<Seen>, Vec<Seen>) = slices.into_iter().partition(named);
        let (service, slice) = (service.into_iter().next(), slice.into_iter().next());
        let Some(current) = current else {
            if let Some(gone) = gone.filter(|gone| !is_marked(&gone.metadata))
                && let Some(Ok(route)) = translation.read(gone)
            {
                return self.render(&route).map(|rendered| Drift::Deleted(Box::new(rendered)));
            }
            return orphaned(service, slice);
        };
        // Another instance's, or unreadable: not ours to render.
        let Some(Ok(route)) = translation.read(&current) else {
            return None;
        };
        let rendered = self.render(&route)?;
        if observed_digest(&current.metadata, &current.spec) != spec_digest(&rendered.http_route.spec) {
            let mut wanted = rendered.http_route;
            wanted.metadata.resource_version = current.metadata.resource_version.clone();
            return Some(Drift::Edited(Box::new(wanted)));
        }
        if !synced {
            return None;
        }
        if let Some(stray) = stray_services.into_iter().next() {
            return Some(Drift::Stray(SERVICES, stray));
        }
        if let Some(stray) = stray_slices.into_iter().next() {
            return Some(Drift::Stray(ENDPOINT_SLICES_PLURAL, stray));
        }
        let Some(backend) = rendered.pod_backend else {
            return orphaned(service, slice);
        };
        let backend = backend.owned_by(&current);
        match (service, slice) {
            (None, _) => Some(Drift::BackendMissing(SERVICES, Box::new(backend), name)),
            (_, None) => Some(Drift::BackendMissing(ENDPOINT_SLICES_PLURAL, Box::new(backend), name)),
            (Some(service), _) if service.digest != service_digest(&backend.service) => {
                let mut wanted = backend.service;
                wanted.metadata.resource_version = Some(service.resource_version);
                Some(Drift::ServiceEdited(Box::new(wanted)))
            }
            (_, Some(slice)) if slice.digest != slice_digest(&backend.endpoint_slice) => {
                let mut wanted = backend.endpoint_slice;
                wanted.metadata.resource_version = Some(slice.resource_version);
                Some(Drift::SliceEdited(Box::new(wanted)))
            }
            _ => None,
        }
    }

    async fn repair(&self, _: &str, drift: Drift) -> Result<bool> {
        let store = self.store();
        let (_, services, slices) = store.calls();
        match drift {
            Drift::Deleted(rendered) => {
                let name = rendered.http_route.metadata.name.clone().unwrap_or_default();
                // A route re-added meanwhile wins.
                if crate::store::HttpRouteStore::http_route(store, &name).is_some() {
                    return Ok(false);
                }
                let created = match store.create_http_route(&rendered.http_route).await {
                    Ok(created) => created,
                    Err(Error::AlreadyExists { .. }) => return Ok(false),
                    Err(error) => return Err(error),
                };
                if let Some(backend) = rendered.pod_backend {
                    crate::store::HttpRouteStore::apply_pod_backend(store, backend.owned_by(&created))
                        .await?;
                }
                Ok(true)
            }
            Drift::Edited(wanted) => store.restore_http_route(&wanted).await,
            Drift::BackendMissing(_, backend, name) => {
                let Some(live) = self.live_route(&name).await? else {
                    return Ok(false);
                };
                let backend = backend.owned_by(&live);
                let mut created = false;
                for result in [
                    services.create(&backend.service).await.map(drop),
                    slices.create(&backend.endpoint_slice).await.map(drop),
                ] {
                    match result {
                        Ok(()) => created = true,
                        Err(Error::AlreadyExists { .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(created)
            }
            Drift::ServiceEdited(wanted) => {
                let name = wanted.metadata.name.clone().unwrap_or_default();
                let ports = wanted.spec.as_ref().and_then(|spec| spec.ports.as_ref());
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": wanted.metadata.resource_version},
                    "spec": {"ports": ports},
                });
                Ok(services.merge(&name, &patch).await?.is_some())
            }
            Drift::SliceEdited(wanted) => {
                let name = wanted.metadata.name.clone().unwrap_or_default();
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": wanted.metadata.resource_version},
                    "addressType": wanted.address_type,
                    "endpoints": wanted.endpoints,
                    "ports": wanted.ports,
                });
                Ok(slices.merge(&name, &patch).await?.is_some())
            }
            Drift::Orphaned(resource, seen) | Drift::Stray(resource, seen) => {
                let version = Some(seen.resource_version);
                match resource {
                    SERVICES => services.delete(&seen.name, version).await,
                    _ => slices.delete(&seen.name, version).await,
                }
            }
        }
    }

    fn supersedes(&self, kept: &Arc<HttpRoute>, new: &Arc<HttpRoute>) -> bool {
        revision(kept) <= revision(new)
    }
}
