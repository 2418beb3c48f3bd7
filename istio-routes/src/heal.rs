//! Healing of Istio routing's objects: what drifts, and how it is repaired. When to look and
//! when to write (the jitter, the grace, one replica acting through preconditions, back-off)
//! is the engine's, [`kube_routes::heal`], which the Gateway API's healing shares.
//!
//! The VirtualService watch the store already runs tells healing which route an event touched
//! (and, for a delete, the object's last state); a second, label-selected watch does the same
//! for our ServiceEntries, of which healing keeps only what judging one takes
//! ([`kube_routes::SeenObjects`]). Each touched route is checked against the caches:
//!
//! | drift | what is found | repair |
//! |---|---|---|
//! | `edited` | the spec of a route's current VirtualService (or its ServiceEntry) differs from its rendering | patch it back to the rendering (a merge patch: an apply would create the object were it deleted meanwhile), with the object's `resourceVersion` as precondition |
//! | `deleted` | a VirtualService deleted without the delete mark, and no other generation of its route left; or a pod-IP route's ServiceEntry missing | create it again from its last state (and its ancestors re-created after it, as on add) |
//! | `stray_generation` | an older generation beside the route's current VirtualService | delete it with its `resourceVersion` as precondition, after carrying its content over when it was written last |
//! | `orphaned` | our ServiceEntry with no VirtualService of its route, or one whose route needs none | delete it with its `resourceVersion` as precondition |
//! | `stray` | an object of ours labelled with a route's id under a name that route does not render (copied, or left by an older naming), beside the one it does | delete it with its `resourceVersion` as precondition |
//!
//! Stray generations, strays and orphaned ServiceEntries are also what an add or an ancestor's
//! re-creation leaves for a moment (the ServiceEntry is applied before the VirtualService; a
//! new generation is created before the old one is deleted), so they wait for the engine's
//! grace period before they are repaired.
//!
//! **A delete JupyterHub asked for is never undone.** A route delete marks each of the route's
//! VirtualServices with [`DELETE_INTENT_ANNOTATION`](kube_routes::heal::DELETE_INTENT_ANNOTATION)
//! ([`RouteStore::mark_deleting`]) before deleting its
//! ServiceEntry (a marked route is not healed) and then the VirtualServices, each with the
//! marked `resourceVersion` as precondition, so the Deleted event every replica's watch
//! delivers carries the mark in the object's last state. Healing re-creates
//! only VirtualServices deleted unmarked whose route has no other generation left (an
//! ancestor's re-creation deletes the old generation after creating the new one, and the watch
//! delivers the two in that order, so those deletes need no mark). Right before re-creating, the
//! route's objects are looked up again in the cache and the overlay: a route re-added meanwhile
//! wins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use kube_routes::heal::{self, HealOptions, Healing, Repairs, spec_digest, spec_sha256};
use kube_routes::{HealMetrics, ROUTE_LABEL, Seen, SeenObjects};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::backend::{Found, IstioBackend, name_of};
use crate::read::Origin;
use crate::resources::{IstioKind, IstioObject, ServiceEntry, ServiceEntrySpec, VirtualService};
use crate::store::RouteStore;
use crate::translate::Rendered;
use crate::{Error, KubeStore, Result};

/// What the watches tell healing: the last state of a deleted VirtualService.
pub(crate) type Touch = heal::Touch<Arc<VirtualService>>;

/// Starts healing the objects of `backend`'s store (on the current tokio runtime): a watch of
/// our ServiceEntries, and the checks and repairs, which begin once the VirtualService cache is
/// synced.
pub fn heal(backend: Arc<IstioBackend<KubeStore>>, options: HealOptions, metrics: HealMetrics) -> Healing {
    let (feed, touches) = mpsc::unbounded_channel();
    if !backend.store().feed_healing(feed.clone()) {
        tracing::warn!("healing was started twice on one store; the second sees no VirtualService events");
    }
    let translation = backend.translation();
    let api = backend.store().service_entries_api().clone();
    // Not a reflector of the objects: healing only judges ServiceEntries, so it keeps what
    // judging one takes.
    let entries = Arc::new(SeenObjects::new(ROUTE_LABEL));
    let entries_synced = Arc::new(AtomicBool::new(false));
    let watch = heal::watch_seen(
        api,
        &translation.label_selector(),
        ServiceEntrySpec::PLURAL,
        (Arc::clone(&entries), Arc::clone(&entries_synced)),
        |entry: &ServiceEntry| spec_sha256(&entry.spec),
        feed,
        backend.store().metrics().clone(),
    );
    let repairs = IstioRepairs { backend, entries, entries_synced };
    heal::start(Arc::new(repairs), touches, options, metrics, vec![watch])
}

/// What drifts in Istio routing's objects, and how each is repaired.
struct IstioRepairs {
    backend: Arc<IstioBackend<KubeStore>>,
    /// Our ServiceEntries as the watch shows them, by name and by route id.
    entries: Arc<SeenObjects>,
    /// Whether the ServiceEntry watch has had its first list: until then (a Role without
    /// `watch` on serviceentries, say) ServiceEntries are not judged.
    entries_synced: Arc<AtomicBool>,
}

/// What is wrong with a route's objects, and what repairs it.
enum Drift {
    /// Its VirtualService was deleted behind our back: the objects to create again.
    Deleted(Box<Rendered>),
    Stray {
        stray: Found,
        current: Found,
    },
    /// The rendering to apply, carrying the edited object's resource version.
    Edited(VirtualService),
    /// The entry to create, and the name of the VirtualService that needs it.
    EntryMissing(Box<ServiceEntry>, String),
    /// The rendering to apply, carrying the edited entry's resource version.
    EntryEdited(ServiceEntry),
    Orphaned(Seen),
    /// An object of ours labelled with the route's id under a name the route does not render.
    Misnamed(Misnamed),
}

/// An object under a name its route does not render.
enum Misnamed {
    VirtualService(Arc<VirtualService>),
    ServiceEntry(Seen),
}

impl Drift {
    /// The metrics' `resource` and `kind`.
    fn labels(&self) -> (&'static str, &'static str) {
        const VS: &str = crate::resources::VirtualServiceSpec::PLURAL;
        const SE: &str = ServiceEntrySpec::PLURAL;
        match self {
            Drift::Deleted(_) => (VS, "deleted"),
            Drift::Stray { .. } => (VS, "stray_generation"),
            Drift::Edited(_) => (VS, "edited"),
            Drift::EntryMissing(..) => (SE, "deleted"),
            Drift::EntryEdited(_) => (SE, "edited"),
            Drift::Orphaned(_) => (SE, "orphaned"),
            Drift::Misnamed(Misnamed::VirtualService(_)) => (VS, "stray"),
            Drift::Misnamed(Misnamed::ServiceEntry(_)) => (SE, "stray"),
        }
    }
}

impl heal::Drift for Drift {
    fn resource(&self) -> &'static str {
        self.labels().0
    }

    fn kind(&self) -> &'static str {
        self.labels().1
    }

    fn object(&self) -> String {
        match self {
            Drift::Deleted(rendered) => rendered.virtual_service.metadata.name.clone(),
            Drift::Stray { stray, .. } => stray.0.metadata.name.clone(),
            Drift::Edited(object) => object.metadata.name.clone(),
            Drift::EntryMissing(entry, _) => entry.metadata.name.clone(),
            Drift::EntryEdited(entry) => entry.metadata.name.clone(),
            Drift::Orphaned(entry) => Some(entry.name.clone()),
            Drift::Misnamed(Misnamed::VirtualService(object)) => object.metadata.name.clone(),
            Drift::Misnamed(Misnamed::ServiceEntry(entry)) => Some(entry.name.clone()),
        }
        .unwrap_or_default()
    }

    fn needs_grace(&self) -> bool {
        matches!(self, Drift::Stray { .. } | Drift::Orphaned(_) | Drift::Misnamed(_))
    }
}

fn is_marked(object: &VirtualService) -> bool {
    heal::is_marked(&object.metadata)
}

/// The digest of an object's spec: from the cache's annotation, or the spec itself for an
/// object the overlay holds whole.
fn observed_digest<S: Serialize>(object: &IstioObject<S>) -> String {
    heal::observed_digest(&object.metadata, &object.spec)
}

/// An etcd revision, to tell which of two writes came last.
fn revision(object: &VirtualService) -> u64 {
    object.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl IstioRepairs {
    /// The ServiceEntry of a route, as the watch last showed it.
    fn entry(&self, id: &str) -> Option<Seen> {
        self.entries.get(&self.backend.translation().service_entry_name_of(id))
    }

    /// What is wrong with a route's objects now, if anything.
    fn assess_objects(
        &self,
        id: &str,
        objects: Vec<Found>,
        gone: Option<&Arc<VirtualService>>,
    ) -> Option<Drift> {
        let translation = self.backend.translation();
        let render = |route: &proxy_api::Route, generation| match translation.render(route, generation) {
            Ok(rendered) => Some(rendered),
            Err(error) => {
                tracing::warn!(route = %route.spec(), %error, "a stored route no longer renders; not healing it");
                None
            }
        };
        // Being deleted: nothing of it is restored.
        if objects.iter().any(|(object, _)| is_marked(object)) {
            return None;
        }
        let entries_known = self.entries_synced.load(Ordering::Acquire);
        let own_name = translation.service_entry_name_of(id);
        let (entry, stray_entries): (Vec<_>, Vec<_>) = match entries_known {
            true => self.entries.of_route(id).into_iter().partition(|entry| entry.name == own_name),
            false => Default::default(),
        };
        let entry = entry.into_iter().next();
        let ours: Vec<&Found> =
            objects.iter().filter(|(_, stored)| matches!(stored.origin, Origin::Ours { .. })).collect();
        // A copy under another name, beside the object its route renders, is deleted; alone it
        // is what routes the route, and is left to the route's next write.
        let (named, misnamed): (Vec<&Found>, Vec<&Found>) = ours.iter().partition(|(object, stored)| {
            matches!(stored.origin, Origin::Ours { generation }
                    if name_of(object) == translation.virtual_service_name(stored.route.spec(), generation))
        });
        if let (Some(stray), false) = (misnamed.first(), named.is_empty()) {
            return Some(Drift::Misnamed(Misnamed::VirtualService(Arc::clone(&stray.0))));
        }
        let Some(&current) = ours.first() else {
            if !objects.is_empty() {
                // The Go proxy's object: not ours to render or restore.
                return None;
            }
            if let Some(gone) = gone
                && !is_marked(gone)
                && let Some(Ok(stored)) = translation.read(gone)
                && let Origin::Ours { generation } = stored.origin
            {
                return render(&stored.route, generation).map(|r| Drift::Deleted(Box::new(r)));
            }
            return entry.or_else(|| stray_entries.into_iter().next()).map(Drift::Orphaned);
        };
        if let Some(&stray) = ours.get(1) {
            return Some(Drift::Stray { stray: stray.clone(), current: current.clone() });
        }
        let Origin::Ours { generation } = current.1.origin else {
            return None;
        };
        let rendered = render(&current.1.route, generation)?;
        if observed_digest(&current.0) != spec_digest(&rendered.virtual_service.spec) {
            let mut wanted = rendered.virtual_service;
            wanted.metadata.resource_version = current.0.metadata.resource_version.clone();
            return Some(Drift::Edited(wanted));
        }
        if !entries_known {
            return None;
        }
        if let Some(stray) = stray_entries.into_iter().next() {
            return Some(Drift::Misnamed(Misnamed::ServiceEntry(stray)));
        }
        match (rendered.service_entry, entry) {
            (Some(wanted), None) => {
                Some(Drift::EntryMissing(Box::new(wanted), name_of(&current.0).to_owned()))
            }
            (Some(mut wanted), Some(entry)) if entry.digest != spec_sha256(&wanted.spec) => {
                wanted.metadata.resource_version = Some(entry.resource_version);
                Some(Drift::EntryEdited(wanted))
            }
            (None, Some(entry)) => Some(Drift::Orphaned(entry)),
            _ => None,
        }
    }

    /// Repairs a drift; answers whether this replica's write did.
    async fn repair_drift(&self, id: &str, drift: Drift) -> Result<bool> {
        let store = self.backend.store();
        match drift {
            Drift::Deleted(rendered) => {
                let rendered = *rendered;
                // A route re-added meanwhile wins: its objects are in the cache or overlay.
                if !self.backend.objects_labelled(id).is_empty() {
                    return Ok(false);
                }
                if let Some(entry) = rendered.service_entry
                    && self.entry(id).is_none()
                {
                    match store.create_service_entry(entry).await {
                        Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
                let spec = self.backend.translation().read(&rendered.virtual_service).and_then(|r| r.ok());
                let created = match store.create_virtual_service(rendered.virtual_service).await {
                    Ok(created) => created,
                    Err(Error::AlreadyExists { .. }) => return Ok(false),
                    Err(error) => return Err(error),
                };
                // Newer now than its ancestors' objects: they are created again after it.
                if let Some(stored) = spec
                    && let Err(error) = self.backend.keep_ancestors_after(stored.route.spec(), &created).await
                {
                    tracing::warn!(route = %stored.route.spec(), %error, "re-ordering a restored route's ancestors failed");
                }
                Ok(true)
            }
            Drift::Stray { stray, current } => {
                // Written after the current object (by a replica that had not seen it): its
                // content is the newer, and is carried over first.
                if stray.1.route != current.1.route
                    && revision(&stray.0) > revision(&current.0)
                    && let Origin::Ours { generation } = current.1.origin
                {
                    let Ok(rendered) = self.backend.translation().render(&stray.1.route, generation) else {
                        return Ok(false);
                    };
                    let mut wanted = rendered.virtual_service;
                    wanted.metadata.resource_version = current.0.metadata.resource_version.clone();
                    if store.restore_virtual_service(&wanted).await?.is_none() {
                        return Ok(false);
                    }
                }
                store
                    .delete_virtual_service(name_of(&stray.0), stray.0.metadata.resource_version.clone())
                    .await
            }
            Drift::Edited(wanted) => Ok(store.restore_virtual_service(&wanted).await?.is_some()),
            Drift::EntryMissing(entry, virtual_service) => {
                // The cache may be stale while its watch is down or relisting (the route since
                // deleted); the entry is created only for a VirtualService the server still
                // holds, unmarked. One list, for a rare repair.
                match store.live_virtual_service(&virtual_service).await? {
                    Some(object) if !is_marked(&object) => {}
                    _ => return Ok(false),
                }
                match store.create_service_entry(*entry).await {
                    Ok(()) => Ok(true),
                    Err(Error::AlreadyExists { .. }) => Ok(false),
                    Err(error) => Err(error),
                }
            }
            Drift::EntryEdited(entry) => store.restore_service_entry(&entry).await,
            Drift::Orphaned(entry) | Drift::Misnamed(Misnamed::ServiceEntry(entry)) => {
                store.delete_service_entry_at(&entry.name, entry.resource_version).await
            }
            Drift::Misnamed(Misnamed::VirtualService(object)) => {
                store.delete_virtual_service(name_of(&object), object.metadata.resource_version.clone()).await
            }
        }
    }
}

#[async_trait]
impl Repairs for IstioRepairs {
    type Drift = Drift;
    type Gone = Arc<VirtualService>;

    async fn ready(&self) {
        self.backend.store().wait_until_ready().await;
    }

    fn route_ids(&self) -> Vec<String> {
        let mut ids = self.backend.store().route_ids();
        ids.extend(self.entries.routes());
        ids
    }

    fn assess(&self, id: &str, gone: Option<&Arc<VirtualService>>) -> Option<Drift> {
        // From the store's index: a check costs one route, whatever the number.
        self.assess_objects(id, self.backend.objects_labelled(id), gone)
    }

    async fn repair(&self, id: &str, drift: Drift) -> Result<bool> {
        self.repair_drift(id, drift).await
    }

    fn supersedes(&self, kept: &Arc<VirtualService>, new: &Arc<VirtualService>) -> bool {
        let translation = self.backend.translation();
        let generation =
            |object: &Arc<VirtualService>| translation.read(object).and_then(|r| r.ok()).map(|r| r.origin);
        generation(kept) <= generation(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_store::{SERVICE_ENTRY_FIELDS, VIRTUAL_SERVICE_FIELDS};
    use crate::resources::{HttpRoute, ServicePort, VirtualServiceSpec, WorkloadEntry};

    fn keys<T: Serialize>(spec: &T) -> Vec<String> {
        let mut keys: Vec<String> =
            serde_json::to_value(spec).unwrap().as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        fields.sort();
        fields
    }

    /// A restore removes the fields its rendering leaves empty only if it knows them all.
    #[test]
    fn a_restore_knows_every_field_of_a_spec() {
        let one = || vec!["x".to_owned()];
        let virtual_service = VirtualServiceSpec {
            hosts: one(),
            gateways: one(),
            http: vec![HttpRoute::default()],
            export_to: one(),
        };
        assert_eq!(keys(&virtual_service), sorted(VIRTUAL_SERVICE_FIELDS));
        let entry = ServiceEntrySpec {
            hosts: one(),
            location: Some("MESH_INTERNAL".into()),
            resolution: Some("STATIC".into()),
            ports: vec![ServicePort::default()],
            endpoints: vec![WorkloadEntry::default()],
            export_to: one(),
        };
        assert_eq!(keys(&entry), sorted(SERVICE_ENTRY_FIELDS));
    }
}
