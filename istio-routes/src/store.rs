//! What the backend needs from wherever the objects are kept.

use std::sync::Arc;

use async_trait::async_trait;

use crate::resources::{ServiceEntry, VirtualService};
use crate::{Result, StoredRoute, Translation};

/// A place that keeps VirtualServices and ServiceEntries the way the Kubernetes API does:
/// creation times with 1-second resolution, resource versions, and a cache of this proxy
/// instance's VirtualServices to read from without a request per read.
///
/// Reads come from the cache; writes go to the API and are in the cache when they return
/// (read-your-writes), so a listing right after a write shows it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RouteStore: Send + Sync + 'static {
    /// Whether the cache holds a complete list (the first list after start has finished).
    fn is_ready(&self) -> bool;

    /// A number that changes whenever [`virtual_services`](Self::virtual_services) would answer
    /// differently, so a listing built from it can be reused until then; `None` when the store
    /// cannot vouch for that now (then nothing is reused).
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Every VirtualService of this proxy instance, from the cache. A store may leave out what
    /// reading routes never needs (the `spec`, others' annotations): routes are read from the
    /// name, creation time, resource version, labels and our annotations.
    fn virtual_services(&self) -> Vec<Arc<VirtualService>>;

    /// The route of every VirtualService, as `translation` reads them, for a store that keeps
    /// them decoded (the memory store): a listing then builds no objects only to read them back.
    /// `None`, the default, leaves the reading of [`virtual_services`](Self::virtual_services)
    /// to the caller.
    fn stored_routes(&self, translation: &Translation) -> Option<Vec<StoredRoute>> {
        let _ = translation;
        None
    }

    /// Every VirtualService a gateway could route this instance's requests through, read now
    /// and whole (specs included): for `explain`, which must see what Istio sees, edits and
    /// other writers' objects too. The default answers the cache, for stores that keep specs.
    async fn live_virtual_services(&self) -> Result<Vec<Arc<VirtualService>>> {
        Ok(self.virtual_services())
    }

    /// The VirtualServices of one route (label `jupyterhub-istio-proxy/route=<id>`), from the cache.
    fn virtual_services_of(&self, route_id: &str) -> Vec<Arc<VirtualService>>;

    /// The routes of [`virtual_services_of`](Self::virtual_services_of), as `translation` reads
    /// them, for a store that keeps them decoded (the memory store): a route's GET then builds
    /// no object only to read it back. `None`, the default, leaves the reading to the caller.
    fn stored_routes_of(&self, route_id: &str, translation: &Translation) -> Option<Vec<StoredRoute>> {
        let _ = (route_id, translation);
        None
    }

    /// Creates or updates a VirtualService (server-side apply); an update keeps its creation
    /// time. Answers the object as stored.
    async fn apply_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>>;

    /// Creates a VirtualService; [`Error::AlreadyExists`](crate::Error::AlreadyExists) when the
    /// name is taken, and then the object that holds it is in the cache (another writer's,
    /// which a lagging watch may not have delivered yet). Answers the object as stored.
    async fn create_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>>;

    /// Deletes a VirtualService; with `resource_version`, only if it is still that version
    /// ([`Error::Conflict`](crate::Error::Conflict) otherwise). Answers whether it existed.
    async fn delete_virtual_service(&self, name: &str, resource_version: Option<String>) -> Result<bool>;

    /// Marks a VirtualService as about to be deleted because JupyterHub deleted its route, so
    /// that whoever watches can tell that delete from one nobody asked for: the Kubernetes
    /// store annotates it (one more call), and healing restores nothing of a marked route nor
    /// a VirtualService deleted with the mark. Answers the marked resource version, to delete
    /// it at (`None` when it is gone, or for a store nobody heals, which needs no mark).
    async fn mark_deleting(&self, name: &str) -> Result<Option<String>> {
        let _ = name;
        Ok(None)
    }

    /// Marks a VirtualService and deletes it at the marked version, marking it again if it
    /// changed in between, so that it is deleted with the mark. Answers whether it existed.
    async fn delete_route_virtual_service(&self, name: &str) -> Result<bool> {
        for _ in 0..3 {
            let version = self.mark_deleting(name).await?;
            match self.delete_virtual_service(name, version).await {
                Err(crate::Error::Conflict { .. }) => continue,
                answer => return answer,
            }
        }
        Err(crate::Error::Conflict { name: name.to_owned() })
    }

    /// Creates or updates a ServiceEntry (server-side apply).
    async fn apply_service_entry(&self, object: ServiceEntry) -> Result<()>;

    /// Deletes a ServiceEntry; answers whether it existed.
    async fn delete_service_entry(&self, name: &str) -> Result<bool>;
}
