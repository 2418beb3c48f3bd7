//! The Kubernetes store: VirtualServices and ServiceEntries through the API server, read from
//! a label-selected watch cache.
//!
//! Reads never reach the API server: a kube-runtime reflector keeps this instance's
//! VirtualServices in memory, and writes show in reads at once (read-your-writes) through an
//! overlay until the watch delivers them (see `overlay`). Writes are server-side applies with our
//! field manager, so several replicas writing the same route converge instead of conflicting.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Client, Resource};
use kube_routes::{
    Calls, FIELD_MANAGER, INSTANCE_LABEL, KubeMetrics, LabelIndex, MANAGED_BY, MANAGED_BY_LABEL, Overlay,
    ROUTE_LABEL, Verb, WatchCache, WatchStats, Write, check_kind_served, classify_resource, retry_throttled,
    route_id, server_version, watch_cache,
};

use kube_routes::heal::{DELETE_INTENT_ANNOTATION, SPEC_DIGEST_ANNOTATION, spec_digest};

use crate::heal::Touch;
use crate::read::Origin;
use crate::resources::{
    ISTIO_GROUP, IstioKind, IstioObject, IstioVersion, ServiceEntry, ServiceEntrySpec, VirtualService,
    VirtualServiceSpec,
};
use crate::store::RouteStore;
use crate::translate::Translation;
use crate::{Error, Result};

/// The `resource` label of metrics.
const VS: &str = VirtualServiceSpec::PLURAL;
const SE: &str = ServiceEntrySpec::PLURAL;

/// VirtualServices and ServiceEntries in a Kubernetes namespace.
pub struct KubeStore {
    virtual_services: Api<VirtualService>,
    service_entries: Api<ServiceEntry>,
    namespace: String,
    /// The API version of the VirtualServices, which names them in the cache.
    version: IstioVersion,
    cache: reflector::Store<VirtualService>,
    /// The cached VirtualServices by route id.
    index: Arc<LabelIndex>,
    /// Set by the watch loop on the first complete list. (kube-runtime's
    /// `Store::wait_until_ready` missed that wake-up on a current-thread runtime, and would
    /// hold readiness back until something else polled it.)
    ready: tokio::sync::watch::Receiver<bool>,
    overlay: Arc<Overlay<VirtualService>>,
    stats: Arc<WatchStats>,
    metrics: KubeMetrics,
    /// Where the watch tells healing (`heal`) which routes changed, once it listens.
    heal_feed: Arc<OnceLock<tokio::sync::mpsc::UnboundedSender<Touch>>>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl KubeStore {
    /// Checks that the API serves Istio's resources to us, adopts the Go proxy's objects, and
    /// starts the watch cache (on the current tokio runtime). The store answers
    /// [`RouteStore::is_ready`] once the first list has arrived.
    ///
    /// Give it a client without kube's default retry policy (`kube::Config::default_retry`
    /// false): the store tries a throttled call (429) again itself, a few times within
    /// seconds, and counts each 429 in its metrics, while kube's policy retries 429s and 503s
    /// unseen for up to minutes, past JupyterHub's patience.
    pub async fn start(client: Client, translation: &Translation) -> Result<KubeStore> {
        Self::start_with_metrics(client, translation, KubeMetrics::default()).await
    }

    /// [`start`](Self::start), counting every API call in `metrics`.
    pub async fn start_with_metrics(
        client: Client,
        translation: &Translation,
        metrics: KubeMetrics,
    ) -> Result<KubeStore> {
        let namespace = translation.namespace.clone();
        let version = translation.version;
        let virtual_services: Api<VirtualService> =
            Api::namespaced_with(client.clone(), &namespace, &version);
        let service_entries: Api<ServiceEntry> = Api::namespaced_with(client, &namespace, &version);
        check_served(&virtual_services, &namespace, version, &metrics).await?;
        check_served(&service_entries, &namespace, version, &metrics).await?;
        adopt_legacy(&virtual_services, translation, &metrics).await?;

        let heal_feed: Arc<OnceLock<tokio::sync::mpsc::UnboundedSender<Touch>>> = Arc::new(OnceLock::new());
        let watch_feed = Arc::clone(&heal_feed);
        let legacy_annotation = translation.legacy_annotation();
        let index = Arc::new(LabelIndex::new(ROUTE_LABEL));
        let watch_index = Arc::clone(&index);
        let WatchCache { cache, ready, overlay, stats } = watch_cache(
            virtual_services.clone(),
            version,
            &translation.label_selector(),
            move |object: &mut VirtualService| slim(object, &legacy_annotation),
            metrics.clone(),
            VS,
            move |event| {
                watch_index.observe(event);
                if let Some(feed) = watch_feed.get() {
                    kube_routes::heal::tell(feed, event);
                }
            },
        );
        Ok(KubeStore {
            virtual_services,
            service_entries,
            namespace,
            version,
            cache,
            index,
            ready,
            overlay,
            stats,
            metrics,
            heal_feed,
        })
    }

    /// Has the watch tell `feed` about every change from now on (see `heal`); the first
    /// caller wins.
    pub(crate) fn feed_healing(&self, feed: tokio::sync::mpsc::UnboundedSender<Touch>) -> bool {
        self.heal_feed.set(feed).is_ok()
    }

    /// Every route id some cached VirtualService is labelled with, from the index: what
    /// healing checks at a relist.
    pub(crate) fn route_ids(&self) -> Vec<String> {
        self.index.values()
    }

    /// The ServiceEntries' API, for healing's watch of them.
    pub(crate) fn service_entries_api(&self) -> &Api<ServiceEntry> {
        &self.service_entries
    }

    /// The metrics every call is counted in.
    pub(crate) fn metrics(&self) -> &KubeMetrics {
        &self.metrics
    }

    /// Creates a ServiceEntry; [`Error::AlreadyExists`] when the name is taken.
    pub(crate) async fn create_service_entry(&self, object: ServiceEntry) -> Result<()> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        retry_throttled(|| {
            self.metrics.time(Verb::Create, SE, self.service_entries.create(&params, &object))
        })
        .await
        .map_err(|e| classify::<ServiceEntrySpec>(e, "create", &name, &self.namespace()))?;
        Ok(())
    }

    /// Deletes a ServiceEntry only if it is still at `resource_version` ([`Error::Conflict`]
    /// otherwise); answers whether it existed.
    pub(crate) async fn delete_service_entry_at(&self, name: &str, resource_version: String) -> Result<bool> {
        let params = DeleteParams {
            preconditions: Some(Preconditions { resource_version: Some(resource_version), uid: None }),
            ..DeleteParams::default()
        };
        match retry_throttled(|| {
            self.metrics.time(Verb::Delete, SE, self.service_entries.delete(name, &params))
        })
        .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(error) => Err(classify::<ServiceEntrySpec>(error, "delete", name, &self.namespace())),
        }
    }

    /// Writes a VirtualService's labels, annotations and spec back to `object`'s, only if it is
    /// still at `object`'s resource version: [`Error::Conflict`] when it changed, `None` when it
    /// is gone (never created again, unlike an apply). What healing repairs an edit with.
    pub async fn restore_virtual_service(
        &self,
        object: &VirtualService,
    ) -> Result<Option<Arc<VirtualService>>> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let patch = restore_patch(object, VIRTUAL_SERVICE_FIELDS);
        let Some(written) =
            restore(&self.virtual_services, &name, &patch, &self.metrics, &self.namespace).await?
        else {
            return Ok(None);
        };
        let written = Arc::new(written);
        self.overlay.wrote(&name, Write::Stored(Arc::clone(&written)));
        Ok(Some(written))
    }

    /// [`restore_virtual_service`](Self::restore_virtual_service) for a ServiceEntry; answers
    /// whether it was there to restore.
    pub async fn restore_service_entry(&self, object: &ServiceEntry) -> Result<bool> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let patch = restore_patch(object, SERVICE_ENTRY_FIELDS);
        Ok(restore(&self.service_entries, &name, &patch, &self.metrics, &self.namespace).await?.is_some())
    }

    /// Leaves a tombstone for a deleted name in the overlay (see `delete_virtual_service`).
    async fn forget(&self, name: &str) {
        // The API server answers a custom resource's delete without a resource version; the
        // server's version read now is no older than the delete, and bounds what the
        // tombstone hides.
        let version = self.server_version().await;
        self.overlay.wrote(name, Write::Gone(version));
    }

    /// The watch's counters.
    pub fn watch_stats(&self) -> &Arc<WatchStats> {
        &self.stats
    }

    /// The readiness signal: `true` once the first list has arrived, for whoever wants to wait
    /// for it without holding the store (a server's ready gate and probes).
    pub fn readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Waits until the first list has arrived.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// The cached objects, with our writes the watch has not delivered yet.
    fn current(&self) -> Vec<Arc<VirtualService>> {
        self.overlay.apply(|| self.cache.state())
    }

    /// The API server's current resource version, from a list of at most one object: what a
    /// delete that found nothing is known to be no older than.
    async fn server_version(&self) -> Option<String> {
        server_version(&self.virtual_services, VS, &self.metrics).await
    }

    /// Reads one object from the API server into the overlay: the one that took a name we
    /// tried to create. Another replica made it, and our watch may not have brought it yet;
    /// the caller finds it in the cache then. A list by name, so that no `get` needs granting.
    async fn read_back(&self, name: &str) {
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        match retry_throttled(|| self.metrics.time(Verb::List, VS, self.virtual_services.list(&params))).await
        {
            Ok(list) => {
                if let Some(found) = list.items.into_iter().next() {
                    self.overlay.wrote(name, Write::Stored(Arc::new(found)));
                }
            }
            Err(error) => {
                tracing::warn!(object = name, %error, "reading back a VirtualService another writer created failed")
            }
        }
    }

    /// A VirtualService as the API server holds it now (a list by name, so that no `get` needs
    /// granting), for a repair that must not trust a cache whose watch may be down.
    pub(crate) async fn live_virtual_service(&self, name: &str) -> Result<Option<VirtualService>> {
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        let list = retry_throttled(|| self.metrics.time(Verb::List, VS, self.virtual_services.list(&params)))
            .await
            .map_err(|e| classify::<VirtualServiceSpec>(e, "list", name, &self.namespace()))?;
        Ok(list.items.into_iter().next())
    }

    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    /// Every VirtualService in the translation's namespace, whole, read now: what
    /// [`RouteStore::live_virtual_services`] answers, for a caller with no store running (the
    /// `explain` command, which must not write or wait for a watch).
    pub async fn list_live(client: Client, translation: &Translation) -> Result<Vec<Arc<VirtualService>>> {
        let api = Api::namespaced_with(client, &translation.namespace, &translation.version);
        list_whole(&api, &translation.namespace, &KubeMetrics::default()).await
    }
}

/// Every VirtualService in the namespace, specs and all (not only ours: another writer's object
/// bound to the gateway routes requests too).
async fn list_whole(
    api: &Api<VirtualService>,
    namespace: &str,
    metrics: &KubeMetrics,
) -> Result<Vec<Arc<VirtualService>>> {
    let calls =
        Calls::new(api.clone(), VS, resource_name::<VirtualServiceSpec>(), namespace, metrics.clone());
    Ok(calls.list_all().await?.into_iter().map(Arc::new).collect())
}

#[async_trait]
impl RouteStore for KubeStore {
    fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    fn generation(&self) -> Option<u64> {
        // The overlay changes what is read without an event; while it holds writes, rebuild.
        self.overlay.is_empty().then(|| self.stats.events.load(Ordering::Acquire))
    }

    fn virtual_services(&self) -> Vec<Arc<VirtualService>> {
        self.current()
    }

    async fn live_virtual_services(&self) -> Result<Vec<Arc<VirtualService>>> {
        // The cache keeps no specs (see `slim`).
        list_whole(&self.virtual_services, &self.namespace, &self.metrics).await
    }

    fn virtual_services_of(&self, route: &str) -> Vec<Arc<VirtualService>> {
        let belongs = |o: &VirtualService| {
            o.metadata.labels.as_ref().and_then(|l| l.get(ROUTE_LABEL)).map(String::as_str) == Some(route)
        };
        // The names the cache's index and our pending writes give, each read through the
        // overlay as `current` reads them all: the cost of one route, whatever the number.
        // The overlay first: the watch updates the index before the overlay lets go of a write,
        // so a write gone from the one read is in the other read after it.
        let mut names = self.overlay.pending_names(belongs);
        names.extend(self.index.names(route));
        names.sort_unstable();
        names.dedup();
        let cached =
            |name: &str| self.cache.get(&ObjectRef::new_with(name, self.version).within(&self.namespace));
        names
            .iter()
            .filter_map(|name| self.overlay.get(name, || cached(name)))
            .filter(|o| belongs(o))
            .collect()
    }

    async fn apply_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&object));
        let written = retry_throttled(|| {
            self.metrics.time(Verb::Patch, VS, self.virtual_services.patch(&name, &params, &patch))
        })
        .await
        .map_err(|e| classify::<VirtualServiceSpec>(e, "patch", &name, &self.namespace()))?;
        let written = Arc::new(written);
        self.overlay.wrote(&name, Write::Stored(Arc::clone(&written)));
        Ok(written)
    }

    async fn create_virtual_service(&self, object: VirtualService) -> Result<Arc<VirtualService>> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        let written = match retry_throttled(|| {
            self.metrics.time(Verb::Create, VS, self.virtual_services.create(&params, &object))
        })
        .await
        {
            Ok(written) => written,
            Err(error) => {
                let error = classify::<VirtualServiceSpec>(error, "create", &name, &self.namespace());
                if matches!(error, Error::AlreadyExists { .. }) {
                    self.read_back(&name).await;
                }
                return Err(error);
            }
        };
        let written = Arc::new(written);
        self.overlay.wrote(&name, Write::Stored(Arc::clone(&written)));
        Ok(written)
    }

    async fn delete_virtual_service(&self, name: &str, resource_version: Option<String>) -> Result<bool> {
        let params = DeleteParams {
            preconditions: resource_version.map(|rv| Preconditions { resource_version: Some(rv), uid: None }),
            ..DeleteParams::default()
        };
        let existed = match retry_throttled(|| {
            self.metrics.time(Verb::Delete, VS, self.virtual_services.delete(name, &params))
        })
        .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.is_not_found() => false,
            Err(error) => {
                return Err(classify::<VirtualServiceSpec>(error, "delete", name, &self.namespace()));
            }
        };
        // JupyterHub is told the route is gone (even when another replica deleted it first),
        // so the listing must not show it again from a lagging watch.
        self.forget(name).await;
        Ok(existed)
    }

    async fn mark_deleting(&self, name: &str) -> Result<Option<String>> {
        // The mark goes in the object's last state, which every replica's watch sees in the
        // Deleted event: healing restores only VirtualServices deleted without it.
        let patch = serde_json::json!({"metadata": {"annotations": {DELETE_INTENT_ANNOTATION: "true"}}});
        let merge = Patch::Merge(&patch);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        match retry_throttled(|| {
            self.metrics.time(Verb::Patch, VS, self.virtual_services.patch(name, &params, &merge))
        })
        .await
        {
            Ok(marked) => Ok(marked.metadata.resource_version),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
            Err(error) => Err(classify::<VirtualServiceSpec>(error, "patch", name, &self.namespace())),
        }
    }

    async fn apply_service_entry(&self, object: ServiceEntry) -> Result<()> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&object));
        retry_throttled(|| {
            self.metrics.time(Verb::Patch, SE, self.service_entries.patch(&name, &params, &patch))
        })
        .await
        .map_err(|e| classify::<ServiceEntrySpec>(e, "patch", &name, &self.namespace()))?;
        Ok(())
    }

    async fn delete_service_entry(&self, name: &str) -> Result<bool> {
        let params = DeleteParams::default();
        match retry_throttled(|| {
            self.metrics.time(Verb::Delete, SE, self.service_entries.delete(name, &params))
        })
        .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(error) => Err(classify::<ServiceEntrySpec>(error, "delete", name, &self.namespace())),
        }
    }
}

/// Drops from a cached object what reading routes never needs: routes are rebuilt from the
/// name, creation time, resource version, labels and our annotations. At 10,000 routes the
/// spec and managed fields are most of the cache's memory, and a foreign annotation (kubectl's
/// last-applied configuration) can be as large as the object.
///
/// Healing needs to know whether the spec is still what the route renders, so a digest of it
/// stays, as an annotation only the cache holds ([`SPEC_DIGEST_ANNOTATION`]).
pub(crate) fn slim<S: serde::Serialize + Default>(object: &mut IstioObject<S>, legacy_annotation: &str) {
    object.metadata.managed_fields = None;
    let digest = spec_digest(&object.spec);
    object.spec = Default::default();
    let annotations = object.metadata.annotations.get_or_insert_default();
    annotations.retain(|key, _| {
        key.starts_with("jupyterhub-istio-proxy/")
            || (!legacy_annotation.is_empty() && key == legacy_annotation)
    });
    annotations.insert(SPEC_DIGEST_ANNOTATION.to_owned(), digest);
}

/// The top-level spec fields of a VirtualService we write; a restore removes those we leave
/// empty (a test keeps the lists whole).
pub(crate) const VIRTUAL_SERVICE_FIELDS: &[&str] = &["hosts", "gateways", "http", "exportTo"];
/// The same for a ServiceEntry.
pub(crate) const SERVICE_ENTRY_FIELDS: &[&str] =
    &["hosts", "location", "resolution", "ports", "endpoints", "exportTo"];

/// A JSON merge patch that makes an object's spec `object`'s (lists are replaced whole, and the
/// fields it leaves empty are removed), adds its labels and annotations, and holds
/// `object`'s resource version as precondition.
fn restore_patch<S: serde::Serialize>(object: &IstioObject<S>, fields: &[&str]) -> serde_json::Value {
    let mut spec = serde_json::to_value(&object.spec).unwrap_or_default();
    if let Some(spec) = spec.as_object_mut() {
        for field in fields {
            spec.entry(*field).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({
        "metadata": {
            "resourceVersion": object.metadata.resource_version,
            "labels": object.metadata.labels,
            "annotations": object.metadata.annotations,
        },
        "spec": spec,
    })
}

/// Applies a [`restore_patch`]. A merge patch, not a server-side apply: an apply creates a
/// missing object whatever resource version it carries, and would bring back what JupyterHub
/// deleted since the drift was seen. `None` when the object is gone.
async fn restore<S>(
    api: &Api<IstioObject<S>>,
    name: &str,
    patch: &serde_json::Value,
    metrics: &KubeMetrics,
    namespace: &str,
) -> Result<Option<IstioObject<S>>>
where
    S: IstioKind + Clone + Default + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
    IstioObject<S>: Resource<DynamicType = IstioVersion>,
{
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    let merge = Patch::Merge(patch);
    match retry_throttled(|| metrics.time(Verb::Patch, S::PLURAL, api.patch(name, &params, &merge))).await {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(error) => Err(classify::<S>(error, "patch", name, namespace)),
    }
}

/// `virtualservices.networking.istio.io`, for messages about permissions.
fn resource_name<S: IstioKind>() -> &'static str {
    match S::PLURAL {
        "virtualservices" => "virtualservices.networking.istio.io",
        _ => "serviceentries.networking.istio.io",
    }
}

/// Our error for what the API server (or the way to it) answered.
pub(crate) fn classify<S: IstioKind>(
    error: kube::Error,
    verb: &'static str,
    name: &str,
    namespace: &str,
) -> Error {
    classify_resource(error, verb, name, namespace, resource_name::<S>())
}

/// Fails start-up, with what to do, when the API does not serve a kind to us.
async fn check_served<S>(
    api: &Api<IstioObject<S>>,
    namespace: &str,
    version: IstioVersion,
    metrics: &KubeMetrics,
) -> Result<()>
where
    S: IstioKind + Clone + Default + std::fmt::Debug + serde::de::DeserializeOwned,
    IstioObject<S>: Resource<DynamicType = IstioVersion>,
{
    let install = format!("Istio's CRDs ({ISTIO_GROUP} {version})");
    check_kind_served(api, S::PLURAL, resource_name::<S>(), namespace, &install, metrics).await
}

/// Labels the VirtualServices the Go jupyterhub-istio-proxy wrote, which carry no labels, so
/// that our label-selected cache sees them, and exports them as ours. They are listed as routes from then on and replaced
/// by ours when JupyterHub next writes the route.
async fn adopt_legacy(
    api: &Api<VirtualService>,
    translation: &Translation,
    metrics: &KubeMetrics,
) -> Result<()> {
    let namespace = translation.namespace.clone();
    let mut params = ListParams::default().limit(500);
    let (mut adopted, mut reexported) = (0, 0);
    loop {
        let page = retry_throttled(|| metrics.time(Verb::List, VS, api.list(&params)))
            .await
            .map_err(|e| classify::<VirtualServiceSpec>(e, "list", "", &namespace))?;
        for object in &page.items {
            let instance = object.metadata.labels.as_ref().and_then(|l| l.get(INSTANCE_LABEL));
            let Some(Ok(stored)) = translation.read(object) else {
                continue;
            };
            if instance == Some(&translation.prefix) && stored.origin != Origin::Legacy {
                reexported += reexport(api, object, translation, metrics).await?;
                continue;
            }
            if instance.is_some() || stored.origin != Origin::Legacy {
                continue;
            }
            let name = object.metadata.name.clone().unwrap_or_default();
            let mut patch = serde_json::json!({"metadata": {"labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                INSTANCE_LABEL: translation.prefix,
                ROUTE_LABEL: route_id(stored.route.spec()),
            }}});
            // Istio tries VirtualServices exported to the gateway's namespace before public ones
            // (the Go proxy's): exported like ours, they keep their place by creation time
            // among ours, which the ancestor ordering relies on.
            if !translation.export_to.is_empty() {
                patch["spec"] = serde_json::json!({"exportTo": translation.export_to});
            }
            let (merge, labelling) = (Patch::Merge(&patch), PatchParams::default());
            retry_throttled(|| metrics.time(Verb::Patch, VS, api.patch(&name, &labelling, &merge)))
                .await
                .map_err(|e| classify::<VirtualServiceSpec>(e, "patch", &name, &namespace))?;
            adopted += 1;
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    if adopted > 0 {
        tracing::info!(
            adopted,
            "labelled the Go jupyterhub-istio-proxy's VirtualServices as this proxy's routes"
        );
    }
    if reexported > 0 {
        tracing::info!(reexported, export_to = ?translation.export_to, "exported this proxy's VirtualServices anew");
    }
    Ok(())
}

/// Gives one of our VirtualServices the `exportTo` this start writes, when it has another (an
/// earlier build, or another ISTIO_EXPORT_TO). Istio tries the objects exported to the gateway's
/// namespace before the public ones, so objects of both kinds would break the order the
/// ancestor re-creation keeps: a hub route written anew would shadow the users' older routes.
/// Answers 1 when it patched the object.
async fn reexport(
    api: &Api<VirtualService>,
    object: &VirtualService,
    translation: &Translation,
    metrics: &KubeMetrics,
) -> Result<u32> {
    if object.spec.export_to == translation.export_to {
        return Ok(0);
    }
    let name = object.metadata.name.clone().unwrap_or_default();
    let export_to = (!translation.export_to.is_empty()).then_some(&translation.export_to);
    let patch = serde_json::json!({"spec": {"exportTo": export_to}});
    let (merge, params) = (Patch::Merge(&patch), PatchParams::default());
    retry_throttled(|| metrics.time(Verb::Patch, VS, api.patch(&name, &params, &merge)))
        .await
        .map_err(|e| classify::<VirtualServiceSpec>(e, "patch", &name, &translation.namespace))?;
    Ok(1)
}
