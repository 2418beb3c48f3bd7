//! The Kubernetes store: HTTPRoutes, Services and EndpointSlices through the API server, read
//! from a label-selected watch cache of the HTTPRoutes.
//!
//! The machinery is [`kube_routes`]', as the Istio store's is: the read-your-writes overlay,
//! the watch's retry, the metrics of every call, and the mapping of the API server's answers
//! to errors. Writes are server-side applies with the same field manager.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Client, Resource};
use kube_routes::{
    FIELD_MANAGER, KubeMetrics, Overlay, Result, Verb, WatchCache, WatchStats, Write, check_kind_served,
    classify_resource, retry_throttled, server_version, watch_cache,
};

use crate::resources::{GATEWAY_GROUP, GATEWAY_VERSION, HttpRoute};
use crate::status::{Acceptance, Refusals, acceptance};
use crate::store::HttpRouteStore;
use crate::translate::{GatewayTranslation, PodBackend};

/// HTTPRoutes as RBAC and messages name them.
const HTTP_ROUTES: &str = "httproutes.gateway.networking.k8s.io";
const SERVICES: &str = "services";
const ENDPOINT_SLICES: &str = "endpointslices.discovery.k8s.io";

/// HTTPRoutes, Services and EndpointSlices in a Kubernetes namespace.
pub struct GatewayKubeStore {
    http_routes: Api<HttpRoute>,
    services: Api<Service>,
    endpoint_slices: Api<EndpointSlice>,
    namespace: String,
    cache: reflector::Store<HttpRoute>,
    ready: tokio::sync::watch::Receiver<bool>,
    overlay: Arc<Overlay<HttpRoute>>,
    stats: Arc<WatchStats>,
    metrics: KubeMetrics,
    /// The routes a gateway refused, as the watch last showed them.
    refused: Arc<Mutex<Refusals>>,
    /// Ticks on every change the watch delivers, for whoever waits on a route's status.
    changes: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for GatewayKubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKubeStore").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl GatewayKubeStore {
    /// Checks that the API serves HTTPRoutes to us and starts the watch cache (on the current
    /// tokio runtime), counting every call in `metrics`. The store answers
    /// [`HttpRouteStore::is_ready`] once the first list has arrived.
    pub async fn start(
        client: Client,
        translation: &GatewayTranslation,
        metrics: KubeMetrics,
    ) -> Result<Self> {
        let namespace = translation.namespace.clone();
        let http_routes: Api<HttpRoute> = Api::namespaced(client.clone(), &namespace);
        let services = Api::namespaced(client.clone(), &namespace);
        let endpoint_slices = Api::namespaced(client, &namespace);
        let install = format!("the Gateway API's standard CRDs ({GATEWAY_GROUP} {GATEWAY_VERSION})");
        check_kind_served(&http_routes, HttpRoute::PLURAL, HTTP_ROUTES, &namespace, &install, &metrics)
            .await?;

        let refused = Arc::new(Mutex::new(Refusals::default()));
        let (tick, changes) = tokio::sync::watch::channel(0);
        let watch_refused = Arc::clone(&refused);
        let WatchCache { cache, ready, overlay, stats } = watch_cache(
            http_routes.clone(),
            (),
            &translation.label_selector(),
            slim,
            metrics.clone(),
            HttpRoute::PLURAL,
            move |event| {
                watch_refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).follow(event);
                tick.send_modify(|n| *n += 1);
            },
        );
        Ok(GatewayKubeStore {
            http_routes,
            services,
            endpoint_slices,
            namespace,
            cache,
            ready,
            overlay,
            stats,
            metrics,
            refused,
            changes,
        })
    }

    /// The readiness signal: `true` once the first list has arrived.
    pub fn readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.clone()
    }

    /// The watch's counters.
    pub fn watch_stats(&self) -> &Arc<WatchStats> {
        &self.stats
    }

    fn current(&self) -> Vec<Arc<HttpRoute>> {
        self.overlay.apply(|| self.cache.state())
    }

    /// Applies one object of a pod backend.
    async fn apply<K>(
        &self,
        api: &Api<K>,
        object: &K,
        plural: &'static str,
        resource: &'static str,
    ) -> Result<()>
    where
        K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(object));
        retry_throttled(|| self.metrics.time(Verb::Patch, plural, api.patch(&name, &params, &patch)))
            .await
            .map_err(|e| classify_resource(e, "patch", &name, &self.namespace, resource))?;
        Ok(())
    }

    /// Deletes one object; answers whether it existed.
    async fn delete<K>(
        &self,
        api: &Api<K>,
        name: &str,
        plural: &'static str,
        resource: &'static str,
    ) -> Result<bool>
    where
        K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        let params = DeleteParams::default();
        match retry_throttled(|| self.metrics.time(Verb::Delete, plural, api.delete(name, &params))).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(error) => Err(classify_resource(error, "delete", name, &self.namespace, resource)),
        }
    }
}

/// Drops from a cached HTTPRoute what reading routes never needs (its spec and managed fields,
/// others' annotations): routes are rebuilt from the labels and our annotations. The status
/// stays, for [`crate::status`].
fn slim(object: &mut HttpRoute) {
    object.metadata.managed_fields = None;
    object.spec = Default::default();
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with("jupyterhub-istio-proxy/"));
    }
}

#[async_trait]
impl HttpRouteStore for GatewayKubeStore {
    fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    fn generation(&self) -> Option<u64> {
        // The overlay changes what is read without an event; while it holds writes, rebuild.
        self.overlay.is_empty().then(|| self.stats.events.load(std::sync::atomic::Ordering::Acquire))
    }

    fn http_routes(&self) -> Vec<Arc<HttpRoute>> {
        self.current()
    }

    fn http_route(&self, name: &str) -> Option<Arc<HttpRoute>> {
        self.overlay.get(name, || self.cache.get(&ObjectRef::new(name).within(&self.namespace)))
    }

    async fn apply_http_route(&self, object: HttpRoute) -> Result<Arc<HttpRoute>> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&object));
        let mut written = retry_throttled(|| {
            self.metrics.time(Verb::Patch, HttpRoute::PLURAL, self.http_routes.patch(&name, &params, &patch))
        })
        .await
        .map_err(|e| classify_resource(e, "patch", &name, &self.namespace, HTTP_ROUTES))?;
        slim(&mut written);
        let written = Arc::new(written);
        self.overlay.wrote(&name, Write::Stored(Arc::clone(&written)));
        Ok(written)
    }

    async fn delete_http_route(&self, name: &str) -> Result<bool> {
        let existed = self.delete(&self.http_routes, name, HttpRoute::PLURAL, HTTP_ROUTES).await?;
        // JupyterHub is told the route is gone, so a lagging watch must not list it again: a
        // tombstone at the server's version read now, no older than the delete.
        let version = server_version(&self.http_routes, HttpRoute::PLURAL, &self.metrics).await;
        self.overlay.wrote(name, Write::Gone(version));
        Ok(existed)
    }

    async fn apply_pod_backend(&self, backend: PodBackend) -> Result<()> {
        self.apply(&self.services, &backend.service, SERVICES, SERVICES).await?;
        self.apply(&self.endpoint_slices, &backend.endpoint_slice, "endpointslices", ENDPOINT_SLICES).await
    }

    async fn delete_pod_backend(&self, name: &str) -> Result<bool> {
        let slice = self.delete(&self.endpoint_slices, name, "endpointslices", ENDPOINT_SLICES).await?;
        let service = self.delete(&self.services, name, SERVICES, SERVICES).await?;
        Ok(slice || service)
    }

    fn refused(&self) -> usize {
        self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).count()
    }

    async fn wait_accepted(&self, name: &str, generation: Option<i64>, within: Duration) -> Acceptance {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changes.borrow_and_update();
            let current = self.cache.get(&ObjectRef::new(name).within(&self.namespace));
            if let Some(object) = current.filter(|o| o.metadata.generation >= generation) {
                let taken = acceptance(&object);
                if taken != Acceptance::Pending {
                    return taken;
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return Acceptance::Pending;
            }
        }
    }
}
