//! What the API needs from wherever routes are kept.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Result, Route, RouteSpec};

/// Where routes are kept: memory, or routing objects in Kubernetes (Istio VirtualServices,
/// Gateway API HTTPRoutes).
///
/// Implementations must be safe under concurrent calls: JupyterHub sends up to ten requests at
/// once, and several proxy replicas may share one store. Errors use this crate's [`Error`],
/// whose variant decides the status JupyterHub sees; a store that cannot be reached should
/// answer [`Error::Unavailable`] so that JupyterHub retries.
///
/// [`Error`]: crate::Error
/// [`Error::Unavailable`]: crate::Error::Unavailable
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Every route, in any order.
    async fn list(&self) -> Result<Vec<Arc<Route>>>;

    /// The route with this spec, if there is one.
    async fn get(&self, spec: &RouteSpec) -> Result<Option<Arc<Route>>>;

    /// Adds the route, replacing any route with the same spec whole (data is not merged).
    async fn add(&self, route: Route) -> Result<()>;

    /// Deletes the route with this spec; answers whether there was one.
    async fn delete(&self, spec: &RouteSpec) -> Result<bool>;
}
