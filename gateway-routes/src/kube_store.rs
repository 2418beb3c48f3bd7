//! The Kubernetes store: HTTPRoutes, Services and EndpointSlices through the API server, read
//! from a label-selected watch cache of the HTTPRoutes.
//!
//! The machinery is [`kube_routes`]', as the Istio store's is: the read-your-writes overlay,
//! the watch's retry, the metrics of every call, and the mapping of the API server's answers
//! to errors. Writes are server-side applies with the same field manager.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef};
use kube_routes::heal::{SPEC_DIGEST_ANNOTATION, spec_digest};
use kube_routes::{
    Calls, KubeMetrics, Overlay, Result, WatchCache, WatchStats, Write, check_kind_served, server_version,
    watch_cache,
};

use crate::heal::Touch;
use crate::resources::{GATEWAY_GROUP, GATEWAY_VERSION, HttpRoute};
use crate::status::{Acceptance, Refusals, acceptance};
use crate::store::HttpRouteStore;
use crate::translate::{GatewayTranslation, PodBackend};

/// HTTPRoutes as RBAC and messages name them.
const HTTP_ROUTES: &str = "httproutes.gateway.networking.k8s.io";
const SERVICES: &str = "services";
const ENDPOINT_SLICES: &str = "endpointslices.discovery.k8s.io";
/// The top-level fields of an HTTPRoute's spec we write (a test keeps the list whole).
const HTTP_ROUTE_FIELDS: &[&str] = &["parentRefs", "hostnames", "rules"];
/// The metrics' `resource` of EndpointSlices.
pub(crate) const ENDPOINT_SLICES_PLURAL: &str = "endpointslices";

/// HTTPRoutes, Services and EndpointSlices in a Kubernetes namespace.
pub struct GatewayKubeStore {
    http_routes: Calls<HttpRoute>,
    services: Calls<Service>,
    endpoint_slices: Calls<EndpointSlice>,
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
    /// Where the watch tells healing (`heal`) which routes changed, once it listens.
    heal_feed: Arc<OnceLock<tokio::sync::mpsc::UnboundedSender<Touch>>>,
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
        let services = Calls::new(services, SERVICES, SERVICES, &namespace, metrics.clone());
        let slices = Api::namespaced(client, &namespace);
        let endpoint_slices =
            Calls::new(slices, ENDPOINT_SLICES_PLURAL, ENDPOINT_SLICES, &namespace, metrics.clone());
        let install = format!("the Gateway API's standard CRDs ({GATEWAY_GROUP} {GATEWAY_VERSION})");
        check_kind_served(&http_routes, HttpRoute::PLURAL, HTTP_ROUTES, &namespace, &install, &metrics)
            .await?;

        let refused = Arc::new(Mutex::new(Refusals::default()));
        let (tick, changes) = tokio::sync::watch::channel(0);
        let watch_refused = Arc::clone(&refused);
        let heal_feed: Arc<OnceLock<tokio::sync::mpsc::UnboundedSender<Touch>>> = Arc::new(OnceLock::new());
        let watch_feed = Arc::clone(&heal_feed);
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
                if let Some(feed) = watch_feed.get() {
                    kube_routes::heal::tell(feed, event);
                }
            },
        );
        let http_routes =
            Calls::new(http_routes, HttpRoute::PLURAL, HTTP_ROUTES, &namespace, metrics.clone());
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
            heal_feed,
        })
    }

    /// Every HTTPRoute in the translation's namespace, specs and all, without starting a watch:
    /// for `explain` against a live cluster.
    pub async fn list_live(client: Client, translation: &GatewayTranslation) -> Result<Vec<Arc<HttpRoute>>> {
        let api = Api::namespaced(client, &translation.namespace);
        let calls =
            Calls::new(api, HttpRoute::PLURAL, HTTP_ROUTES, &translation.namespace, KubeMetrics::default());
        Ok(calls.list_all().await?.into_iter().map(Arc::new).collect())
    }

    /// Has the watch tell `feed` about every change from now on (see `heal`); the first
    /// caller wins.
    pub(crate) fn feed_healing(&self, feed: tokio::sync::mpsc::UnboundedSender<Touch>) -> bool {
        self.heal_feed.set(feed).is_ok()
    }

    /// The calls on HTTPRoutes, Services and EndpointSlices, for healing's repairs.
    pub(crate) fn calls(&self) -> (&Calls<HttpRoute>, &Calls<Service>, &Calls<EndpointSlice>) {
        (&self.http_routes, &self.services, &self.endpoint_slices)
    }

    /// The metrics every call is counted in.
    pub(crate) fn metrics(&self) -> &KubeMetrics {
        &self.metrics
    }

    /// Waits until the first list has arrived.
    pub(crate) async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Writes `wanted` over the HTTPRoute of its name, at `wanted`'s resource version (else
    /// `Conflict`), never creating it; answers whether it was there. The cache shows the write
    /// until the watch delivers it.
    pub(crate) async fn restore_http_route(&self, wanted: &HttpRoute) -> Result<bool> {
        let name = wanted.metadata.name.clone().unwrap_or_default();
        // A merge patch keeps what it does not name: the fields the rendering leaves empty are
        // removed by name.
        let mut spec = serde_json::to_value(&wanted.spec).unwrap_or_default();
        if let Some(spec) = spec.as_object_mut() {
            for field in HTTP_ROUTE_FIELDS {
                spec.entry(*field).or_insert(serde_json::Value::Null);
            }
        }
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": wanted.metadata.resource_version,
                "labels": wanted.metadata.labels,
                "annotations": wanted.metadata.annotations,
            },
            "spec": spec,
        });
        let Some(mut written) = self.http_routes.merge(&name, &patch).await? else {
            return Ok(false);
        };
        slim(&mut written);
        self.overlay.wrote(&name, Write::Stored(Arc::new(written)));
        Ok(true)
    }

    /// Creates an HTTPRoute deleted behind our back (`AlreadyExists` when another replica did);
    /// answers it as stored, with the uid its pod backend names as owner.
    pub(crate) async fn create_http_route(&self, object: &HttpRoute) -> Result<HttpRoute> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let created = self.http_routes.create(object).await?;
        let mut cached = created.clone();
        slim(&mut cached);
        self.overlay.wrote(&name, Write::Stored(Arc::new(cached)));
        Ok(created)
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
}

/// Drops from a cached HTTPRoute what reading routes never needs (its spec and managed fields,
/// others' annotations): routes are rebuilt from the labels and our annotations. The status
/// stays, for [`crate::status`].
///
/// A digest of the spec stays for healing, as an annotation only the cache holds.
fn slim(object: &mut HttpRoute) {
    object.metadata.managed_fields = None;
    let digest = spec_digest(&object.spec);
    object.spec = Default::default();
    let annotations = object.metadata.annotations.get_or_insert_default();
    annotations.retain(|key, _| key.starts_with("jupyterhub-istio-proxy/"));
    annotations.insert(SPEC_DIGEST_ANNOTATION.to_owned(), digest);
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

    async fn live_http_routes(&self) -> Result<Vec<Arc<HttpRoute>>> {
        Ok(self.http_routes.list_all().await?.into_iter().map(Arc::new).collect())
    }

    async fn apply_http_route(&self, object: HttpRoute) -> Result<Arc<HttpRoute>> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let mut written = self.http_routes.apply(&object).await?;
        slim(&mut written);
        let written = Arc::new(written);
        self.overlay.wrote(&name, Write::Stored(Arc::clone(&written)));
        Ok(written)
    }

    async fn mark_deleting(&self, name: &str) -> Result<Option<String>> {
        // The mark goes in the object's last state, which every replica's watch sees in the
        // Deleted event: healing restores only HTTPRoutes deleted without it.
        self.http_routes.mark_deleting(name).await
    }

    async fn delete_http_route(&self, name: &str, resource_version: Option<String>) -> Result<bool> {
        let existed = self.http_routes.delete(name, resource_version).await?;
        // JupyterHub is told the route is gone, so a lagging watch must not list it again: a
        // tombstone at the server's version read now, no older than the delete.
        let version = server_version(self.http_routes.api(), HttpRoute::PLURAL, &self.metrics).await;
        self.overlay.wrote(name, Write::Gone(version));
        Ok(existed)
    }

    async fn apply_pod_backend(&self, backend: PodBackend) -> Result<()> {
        self.services.apply(&backend.service).await?;
        self.endpoint_slices.apply(&backend.endpoint_slice).await?;
        Ok(())
    }

    async fn delete_pod_backend(&self, name: &str) -> Result<bool> {
        let slice = self.endpoint_slices.delete(name, None).await?;
        let service = self.services.delete(name, None).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{HttpRouteRule, HttpRouteSpec, ParentReference};

    /// A restore removes the fields its rendering leaves empty only if it knows them all.
    #[test]
    fn a_restore_knows_every_field_of_a_spec() {
        let spec = HttpRouteSpec {
            parent_refs: vec![ParentReference::default()],
            hostnames: vec!["x".to_owned()],
            rules: vec![HttpRouteRule::default()],
        };
        let json = serde_json::to_value(spec).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut fields = HTTP_ROUTE_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }
}
