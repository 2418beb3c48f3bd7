//! The calls a store makes on one kind of our objects, each counted in the metrics, made again
//! when throttled, and its failure classified: written once for every kind either routing API
//! writes.

use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::heal::DELETE_INTENT_ANNOTATION;
use crate::{FIELD_MANAGER, KubeMetrics, Result, Verb, classify_resource, retry_throttled};

/// One kind of object in one namespace, as a store calls it.
#[derive(Debug, Clone)]
pub struct Calls<K> {
    api: Api<K>,
    /// The metrics' `resource`: `httproutes`, `services`...
    plural: &'static str,
    /// The resource as RBAC names it, for errors: `httproutes.gateway.networking.k8s.io`.
    resource: &'static str,
    namespace: String,
    metrics: KubeMetrics,
}

impl<K> Calls<K>
where
    K: Resource + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
{
    /// The calls on `api` (namespaced), counted under `plural`, errors naming `resource`.
    pub fn new(
        api: Api<K>,
        plural: &'static str,
        resource: &'static str,
        namespace: &str,
        metrics: KubeMetrics,
    ) -> Self {
        Calls { api, plural, resource, namespace: namespace.to_owned(), metrics }
    }

    /// The API the calls go to.
    pub fn api(&self) -> &Api<K> {
        &self.api
    }

    /// Creates or updates `object` (a server-side apply with our field manager, forced).
    pub async fn apply(&self, object: &K) -> Result<K> {
        let name = object.meta().name.clone().unwrap_or_default();
        let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(object));
        retry_throttled(|| {
            self.metrics.time(Verb::Patch, self.plural, self.api.patch(&name, &params, &patch))
        })
        .await
        .map_err(|e| classify_resource(e, "patch", &name, &self.namespace, self.resource))
    }

    /// Creates `object`; fails with `AlreadyExists` when the name is taken (another replica's
    /// repair, say).
    pub async fn create(&self, object: &K) -> Result<K> {
        let name = object.meta().name.clone().unwrap_or_default();
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        retry_throttled(|| self.metrics.time(Verb::Create, self.plural, self.api.create(&params, object)))
            .await
            .map_err(|e| classify_resource(e, "create", &name, &self.namespace, self.resource))
    }

    /// Merge-patches the object `name` with `patch`; `None` when it is gone. A merge patch, not
    /// an apply, where the object must not be created again (a repair racing a delete): with a
    /// `resourceVersion` in the patch, it fails with `Conflict` when the object changed.
    pub async fn merge(&self, name: &str, patch: &serde_json::Value) -> Result<Option<K>> {
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        let merge = Patch::Merge(patch);
        match retry_throttled(|| {
            self.metrics.time(Verb::Patch, self.plural, self.api.patch(name, &params, &merge))
        })
        .await
        {
            Ok(written) => Ok(Some(written)),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
            Err(error) => Err(classify_resource(error, "patch", name, &self.namespace, self.resource)),
        }
    }

    /// Marks the object `name` with [`DELETE_INTENT_ANNOTATION`] before a delete JupyterHub
    /// asked for; answers the marked `resourceVersion`, or `None` when it is gone.
    pub async fn mark_deleting(&self, name: &str) -> Result<Option<String>> {
        let patch = serde_json::json!({"metadata": {"annotations": {DELETE_INTENT_ANNOTATION: "true"}}});
        Ok(self.merge(name, &patch).await?.and_then(|marked| marked.meta().resource_version.clone()))
    }

    /// Deletes the object `name`, only at `resource_version` when one is given (else `Conflict`);
    /// answers whether it existed.
    pub async fn delete(&self, name: &str, resource_version: Option<String>) -> Result<bool> {
        let params = DeleteParams {
            preconditions: resource_version.map(|rv| Preconditions { resource_version: Some(rv), uid: None }),
            ..DeleteParams::default()
        };
        match retry_throttled(|| self.metrics.time(Verb::Delete, self.plural, self.api.delete(name, &params)))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(error) => Err(classify_resource(error, "delete", name, &self.namespace, self.resource)),
        }
    }

    /// Every object of the kind in the namespace, page by page, whole (not only ours: another
    /// writer's object routes requests too).
    pub async fn list_all(&self) -> Result<Vec<K>> {
        let mut params = ListParams::default().limit(500);
        let mut objects = Vec::new();
        loop {
            let page = retry_throttled(|| self.metrics.time(Verb::List, self.plural, self.api.list(&params)))
                .await
                .map_err(|e| classify_resource(e, "list", "", &self.namespace, self.resource))?;
            objects.extend(page.items);
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(objects),
            }
        }
    }

    /// The object `name` as the API server holds it now (one call: for a rare repair that must
    /// not trust a cache).
    pub async fn get(&self, name: &str) -> Result<Option<K>> {
        retry_throttled(|| self.metrics.time(Verb::Get, self.plural, self.api.get_opt(name)))
            .await
            .map_err(|e| classify_resource(e, "get", name, &self.namespace, self.resource))
    }
}
