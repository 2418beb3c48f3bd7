//! What the Gateway API backend needs from wherever the objects are kept.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube_routes::Result;

use crate::resources::HttpRoute;
use crate::status::Acceptance;
use crate::translate::PodBackend;

/// A place that keeps HTTPRoutes, and the Services and EndpointSlices of pod-IP routes, the
/// way the Kubernetes API does, with a cache of this proxy instance's HTTPRoutes to read from.
///
/// Reads come from the cache; writes go to the API and are in the cache when they return
/// (read-your-writes), so a listing right after a write shows it.
#[async_trait]
pub trait HttpRouteStore: Send + Sync + 'static {
    /// Whether the cache holds a complete list (the first list after start has finished).
    fn is_ready(&self) -> bool;

    /// A number that changes whenever [`http_routes`](Self::http_routes) would answer
    /// differently, so a listing built from it can be reused until then; `None` when the store
    /// cannot vouch for that now (then nothing is reused).
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Every HTTPRoute of this proxy instance, from the cache.
    fn http_routes(&self) -> Vec<Arc<HttpRoute>>;

    /// One HTTPRoute by name, from the cache.
    fn http_route(&self, name: &str) -> Option<Arc<HttpRoute>>;

    /// Every HTTPRoute in the namespace as the API server holds it now, specs and all (the cache
    /// keeps none), ours or not: what a gateway routes through, for `explain`.
    async fn live_http_routes(&self) -> Result<Vec<Arc<HttpRoute>>>;

    /// Creates or updates an HTTPRoute (server-side apply). Answers the object as stored, with
    /// the uid the objects it owns refer to.
    async fn apply_http_route(&self, object: HttpRoute) -> Result<Arc<HttpRoute>>;

    /// Marks the HTTPRoute `name` as being deleted because JupyterHub asked
    /// ([`DELETE_INTENT_ANNOTATION`](kube_routes::heal::DELETE_INTENT_ANNOTATION)), so that no
    /// replica's healing restores it; answers its marked resource version, `None` when it is
    /// gone.
    async fn mark_deleting(&self, name: &str) -> Result<Option<String>>;

    /// Deletes an HTTPRoute, only at `resource_version` when one is given (else `Conflict`);
    /// answers whether it existed.
    async fn delete_http_route(&self, name: &str, resource_version: Option<String>) -> Result<bool>;

    /// Creates or updates the Service and EndpointSlice of a pod-IP route.
    async fn apply_pod_backend(&self, backend: PodBackend) -> Result<()>;

    /// Deletes the Service and EndpointSlice named `name`; answers whether either existed.
    async fn delete_pod_backend(&self, name: &str) -> Result<bool>;

    /// How many of the cached HTTPRoutes a gateway refused ([`crate::status`]); 0 for a store
    /// no gateway reads.
    fn refused(&self) -> usize {
        0
    }

    /// Waits, at most `within`, until a gateway has said how it took `generation` (or a later
    /// one) of the HTTPRoute `name`. A store no gateway reads answers
    /// [`Acceptance::Pending`] at once.
    async fn wait_accepted(&self, name: &str, generation: Option<i64>, within: Duration) -> Acceptance {
        let _ = (name, generation, within);
        Acceptance::Pending
    }
}
