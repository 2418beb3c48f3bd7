//! The memory store: HTTPRoutes and pod backends in this process, for `--store memory` and
//! for tests. Nothing survives a restart, and replicas do not share it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use kube_routes::Result;

use crate::resources::HttpRoute;
use crate::store::HttpRouteStore;
use crate::translate::PodBackend;

/// HTTPRoutes and pod backends in memory, always ready.
#[derive(Debug, Default)]
pub struct GatewayMemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    routes: BTreeMap<String, Arc<HttpRoute>>,
    backends: BTreeMap<String, PodBackend>,
    /// The last resource version (and uid) handed out.
    version: u64,
}

impl GatewayMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere leaves the maps consistent: every change is one insert or remove.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pod backends, by name.
    pub fn pod_backends(&self) -> BTreeMap<String, PodBackend> {
        self.lock().backends.clone()
    }
}

#[async_trait]
impl HttpRouteStore for GatewayMemoryStore {
    fn is_ready(&self) -> bool {
        true
    }

    fn generation(&self) -> Option<u64> {
        Some(self.lock().version)
    }

    fn http_routes(&self) -> Vec<Arc<HttpRoute>> {
        self.lock().routes.values().cloned().collect()
    }

    fn http_route(&self, name: &str) -> Option<Arc<HttpRoute>> {
        self.lock().routes.get(name).cloned()
    }

    async fn live_http_routes(&self) -> Result<Vec<Arc<HttpRoute>>> {
        Ok(self.http_routes())
    }

    async fn apply_http_route(&self, mut object: HttpRoute) -> Result<Arc<HttpRoute>> {
        let mut inner = self.lock();
        inner.version += 1;
        let name = object.metadata.name.clone().unwrap_or_default();
        // An update keeps the object's uid, as the API server's does.
        let uid = inner.routes.get(&name).and_then(|old| old.metadata.uid.clone());
        object.metadata.uid = Some(uid.unwrap_or_else(|| format!("memory-{}", inner.version)));
        object.metadata.resource_version = Some(inner.version.to_string());
        let object = Arc::new(object);
        inner.routes.insert(name, Arc::clone(&object));
        Ok(object)
    }

    async fn mark_deleting(&self, name: &str) -> Result<Option<String>> {
        Ok(self.lock().routes.get(name).and_then(|object| object.metadata.resource_version.clone()))
    }

    async fn delete_http_route(&self, name: &str, _: Option<String>) -> Result<bool> {
        let mut inner = self.lock();
        inner.version += 1;
        Ok(inner.routes.remove(name).is_some())
    }

    async fn apply_pod_backend(&self, backend: PodBackend) -> Result<()> {
        let name = backend.service.metadata.name.clone().unwrap_or_default();
        self.lock().backends.insert(name, backend);
        Ok(())
    }

    async fn delete_pod_backend(&self, name: &str) -> Result<bool> {
        Ok(self.lock().backends.remove(name).is_some())
    }
}
