//! Routes kept in this process's memory: for trying the proxy out, and for tests.
//!
//! Nothing reaches Istio from here, and routes are lost on restart: with several replicas each
//! has its own table. Use the Kubernetes store in a cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use proxy_api::{Backend, Result, Route, RouteSpec};

/// A routing table in memory, safe under concurrent requests.
///
/// Routes are stored behind `Arc`, so a listing copies pointers, not routes; at 10,000 routes
/// the lock is held for microseconds. The map is ordered, so listings come out sorted.
#[derive(Debug, Default)]
pub struct MemoryStore {
    routes: RwLock<BTreeMap<RouteSpec, Arc<Route>>>,
}

impl MemoryStore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }
}

// A panic while holding the lock cannot leave the map half-written (each operation is one
// insert or remove), so a poisoned lock is still safe to use.
#[async_trait]
impl Backend for MemoryStore {
    async fn list(&self) -> Result<Vec<Arc<Route>>> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        Ok(routes.values().cloned().collect())
    }

    async fn get(&self, spec: &RouteSpec) -> Result<Option<Arc<Route>>> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        Ok(routes.get(spec).cloned())
    }

    async fn add(&self, route: Route) -> Result<()> {
        let route = Arc::new(route);
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        routes.insert(route.spec().clone(), route);
        Ok(())
    }

    async fn delete(&self, spec: &RouteSpec) -> Result<bool> {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        Ok(routes.remove(spec).is_some())
    }
}

#[cfg(test)]
mod tests {
    use proxy_api::{RoutingMode, Target};
    use serde_json::json;

    use super::*;

    fn route(spec: &str, target: &str, data: serde_json::Value) -> Route {
        let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
        Route::new(
            spec,
            Target::parse(target).unwrap(),
            data.as_object().unwrap().clone(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn add_replaces_whole_routes() {
        let store = MemoryStore::new();
        store
            .add(route("/user/a", "http://a:1", json!({"user": "a"})))
            .await
            .unwrap();
        store
            .add(route("/user/a", "http://b:2", json!({"extra": true})))
            .await
            .unwrap();
        let spec = RouteSpec::new("/user/a", RoutingMode::Path).unwrap();
        let stored = store.get(&spec).await.unwrap().unwrap();
        assert_eq!(
            *stored,
            route("/user/a", "http://b:2", json!({"extra": true}))
        );
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn delete_says_whether_the_route_existed() {
        let store = MemoryStore::new();
        let spec = RouteSpec::root();
        assert!(!store.delete(&spec).await.unwrap());
        store
            .add(route("/", "http://hub:8081", json!({})))
            .await
            .unwrap();
        assert!(store.delete(&spec).await.unwrap());
        assert!(store.get(&spec).await.unwrap().is_none());
    }
}
