//! Healing against a real API server, with three replicas healing one namespace: each drift
//! (a spec edited, a VirtualService or ServiceEntry deleted, a stray generation, an orphaned
//! ServiceEntry, a copy under a name the route does not render) is repaired, by exactly one replica, within seconds; and a route deleted
//! through any replica stays deleted on all of them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Namespace, route, spec};
use istio_routes::heal::heal;
use istio_routes::{IstioBackend, KubeStore};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube_routes::HealMetrics;
use kube_routes::heal::{HealOptions, Healing};
use proxy_api::Backend;
use serde_json::json;
use testkit::apiserver::ApiServer;
use testkit::within;

const VS: &str = "virtualservices";
const SE: &str = "serviceentries";
const KINDS: [&str; 5] = ["edited", "deleted", "stray_generation", "orphaned", "stray"];

/// The grace of stray generations and orphans in these tests (5 s by default).
const GRACE: Duration = Duration::from_secs(2);

/// Longer than any replica waits before checking a route again after a repair (the jitter, its
/// first back-off step, and the grace): a second repair would have happened by then.
const SETTLE: Duration = Duration::from_secs(7);

struct Replica {
    backend: Arc<IstioBackend<KubeStore>>,
    metrics: HealMetrics,
    _healing: Healing,
}

async fn setup(prefix: &str) -> (Vec<Replica>, Namespace) {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace(prefix).await;
    let options = HealOptions { grace: GRACE, ..HealOptions::default() };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let backend = Arc::new(
            common::start(server.kube_config(), &namespace)
                .await
                .unwrap_or_else(|e| panic!("the store starts: {e}\n{}", server.log())),
        );
        let metrics = HealMetrics::default();
        let healing = heal(Arc::clone(&backend), options.clone(), metrics.clone());
        replicas.push(Replica { backend, metrics, _healing: healing });
    }
    let objects = Namespace::new(server.client(), &namespace);
    (replicas, objects)
}

/// Repairs of `kind` on `resource` by all replicas.
fn repaired(replicas: &[Replica], resource: &'static str, kind: &'static str) -> u64 {
    replicas.iter().map(|r| r.metrics.repaired(resource, kind)).sum()
}

/// Every repair by all replicas, as `resource/kind: count`, leaving out zeros.
fn all_repairs(replicas: &[Replica]) -> Vec<String> {
    let mut repairs = Vec::new();
    for resource in [VS, SE] {
        for kind in KINDS {
            let count = repaired(replicas, resource, kind);
            if count > 0 {
                repairs.push(format!("{resource}/{kind}: {count}"));
            }
        }
    }
    repairs
}

/// Adds routes through the first replica and waits until every replica has them.
async fn add(replicas: &[Replica], routes: &[(&str, &str)]) {
    for (path, target) in routes {
        replicas[0].backend.add(route(path, target)).await.unwrap();
    }
    for replica in replicas {
        within("every replica lists the routes", Duration::from_secs(10), || async {
            replica.backend.list().await.unwrap().len() == routes.len()
        })
        .await;
    }
}

#[tokio::test]
async fn an_edited_spec_is_restored_once() {
    let (replicas, objects) = setup("heal-edit").await;
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888")]).await;
    let name = objects.names().await.remove(0);
    let before = objects.virtual_services.get(&name).await.unwrap().spec;

    // kubectl edit: the route sent somewhere else.
    let edit = json!({"spec": {"hosts": ["evil.example.org"]}});
    let params = PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() };
    objects.virtual_services.patch(&name, &params, &Patch::Merge(&edit)).await.unwrap();

    let took = within("the spec is restored", Duration::from_secs(10), || async {
        objects.virtual_services.get(&name).await.unwrap().spec == before
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), [format!("{VS}/edited: 1")], "repaired once, after {took:?}");
    assert_eq!(objects.virtual_services.get(&name).await.unwrap().spec, before);
}

#[tokio::test]
async fn a_virtual_service_deleted_behind_our_back_comes_back_once() {
    let (replicas, objects) = setup("heal-delete").await;
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888"), ("/user/bob", "http://jupyter-bob:8888")])
        .await;
    let names = objects.names().await;
    let routes = objects.routes().await;

    objects.virtual_services.delete(&names[0], &DeleteParams::default()).await.unwrap();
    let took = within("the VirtualService is back", Duration::from_secs(10), || async {
        objects.names().await == names
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), [format!("{VS}/deleted: 1")], "repaired once, after {took:?}");
    assert_eq!(objects.routes().await, routes, "the route as it was");
    for replica in &replicas {
        assert_eq!(replica.backend.list().await.unwrap().len(), 2, "every replica lists it again");
    }
}

#[tokio::test]
async fn a_service_entry_deleted_behind_our_back_comes_back_once() {
    let (replicas, objects) = setup("heal-entry").await;
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888")]).await;
    let entry = objects.service_entries().await.remove(0);
    let name = entry.metadata.name.clone().unwrap();

    objects.service_entries.delete(&name, &DeleteParams::default()).await.unwrap();
    let took = within("the ServiceEntry is back", Duration::from_secs(10), || async {
        objects.service_entries().await.len() == 1
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), [format!("{SE}/deleted: 1")], "repaired once, after {took:?}");
    assert_eq!(objects.service_entries.get(&name).await.unwrap().spec, entry.spec);
}

#[tokio::test]
async fn an_edited_service_entry_is_restored_once() {
    let (replicas, objects) = setup("heal-entry-edit").await;
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888")]).await;
    let entry = objects.service_entries().await.remove(0);
    let name = entry.metadata.name.clone().unwrap();

    // kubectl edit: the pod's address made another one.
    let edit = json!({"spec": {"endpoints": [{"address": "10.0.0.99"}]}});
    let params = PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() };
    objects.service_entries.patch(&name, &params, &Patch::Merge(&edit)).await.unwrap();

    let took = within("the ServiceEntry is restored", Duration::from_secs(10), || async {
        objects.service_entries.get(&name).await.unwrap().spec == entry.spec
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), [format!("{SE}/edited: 1")], "repaired once, after {took:?}");
}

#[tokio::test]
async fn a_stray_generation_is_removed_once() {
    let (replicas, objects) = setup("heal-stray").await;
    add(&replicas, &[("/user/alice", "http://jupyter-alice:8888")]).await;
    let old = objects.names().await.remove(0);
    // A replica stopped between creating the route's next generation and deleting the old one.
    let mut next = objects.translation.render(&route("/user/alice", "http://jupyter-alice:8888"), 1).unwrap();
    let current = vec![next.virtual_service.metadata.name.clone().unwrap()];
    next.virtual_service.metadata.namespace = None;
    objects.virtual_services.create(&PostParams::default(), &next.virtual_service).await.unwrap();

    // Gone after the grace, not before.
    tokio::time::sleep(GRACE / 2).await;
    assert!(objects.names().await.contains(&old), "a stray is left alone for its grace period");
    let took =
        within("the stray is gone", Duration::from_secs(10), || async { objects.names().await == current })
            .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        all_repairs(&replicas),
        [format!("{VS}/stray_generation: 1")],
        "repaired once, after {took:?}"
    );
}

#[tokio::test]
async fn an_orphaned_service_entry_is_deleted_once() {
    let (replicas, objects) = setup("heal-orphan").await;
    add(&replicas, &[("/user/bob", "http://jupyter-bob:8888")]).await;
    // The ServiceEntry of a route that has no VirtualService (its replica stopped between the two).
    let mut orphan = objects.translation.render(&route("/user/alice", "http://10.0.0.1:8888"), 0).unwrap();
    let mut entry = orphan.service_entry.take().unwrap();
    entry.metadata.namespace = None;
    objects.service_entries.create(&PostParams::default(), &entry).await.unwrap();

    tokio::time::sleep(GRACE / 2).await;
    assert_eq!(objects.service_entries().await.len(), 1, "an orphan is left alone for its grace period");
    let took = within("the orphan is gone", Duration::from_secs(10), || async {
        objects.service_entries().await.is_empty()
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(all_repairs(&replicas), [format!("{SE}/orphaned: 1")], "repaired once, after {took:?}");
    assert_eq!(objects.routes().await, ["/user/bob -> http://jupyter-bob:8888"]);
}

#[tokio::test]
async fn copies_under_names_the_route_does_not_render_are_deleted_once() {
    let (replicas, objects) = setup("heal-copy").await;
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888")]).await;
    let names = objects.names().await;
    let entries: Vec<String> =
        objects.service_entries().await.iter().map(|e| e.metadata.name.clone().unwrap()).collect();

    // Each object copied, labels and all: the VirtualService under an older naming (no depth
    // in the name), the ServiceEntry under a name of someone's choosing.
    let mut copy = objects.virtual_services.get(&names[0]).await.unwrap();
    let id = copy.metadata.labels.as_ref().unwrap()[kube_routes::ROUTE_LABEL].clone();
    copy.metadata = kube::api::ObjectMeta {
        name: Some(format!("{}-{id}-0", objects.translation.prefix)),
        labels: copy.metadata.labels.take(),
        annotations: copy.metadata.annotations.take(),
        ..Default::default()
    };
    objects.virtual_services.create(&PostParams::default(), &copy).await.unwrap();
    let mut entry = objects.service_entries.get(&entries[0]).await.unwrap();
    entry.metadata = kube::api::ObjectMeta {
        name: Some(format!("{}-copy", entries[0])),
        labels: entry.metadata.labels.take(),
        annotations: entry.metadata.annotations.take(),
        ..Default::default()
    };
    objects.service_entries.create(&PostParams::default(), &entry).await.unwrap();

    let took = within("the copies are gone", Duration::from_secs(15), || async {
        let left: Vec<String> =
            objects.service_entries().await.iter().map(|e| e.metadata.name.clone().unwrap()).collect();
        objects.names().await == names && left == entries
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        all_repairs(&replicas),
        [format!("{VS}/stray: 1"), format!("{SE}/stray: 1")],
        "repaired once each, after {took:?}"
    );
    assert_eq!(objects.routes().await, ["/user/alice -> http://10.0.0.1:8888"]);
}

/// A small deterministic generator, so that a failure replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Adds and deletes through random replicas, under a hub route whose object is re-created as
/// routes appear below it in later seconds (its old generations deleted unmarked): whatever
/// JupyterHub deleted stays deleted, what it added stays, and healing repairs nothing.
#[tokio::test]
async fn routes_deleted_through_any_replica_stay_deleted() {
    let (replicas, objects) = setup("heal-deletes").await;
    let mut random = Lcg(12);
    let mut expected = std::collections::BTreeMap::new();
    replicas[0].backend.add(route("/jhub", "http://hub:8081")).await.unwrap();
    expected.insert("/jhub".to_owned(), "http://hub:8081".to_owned());
    for step in 0..24 {
        let user = format!("/jhub/user/u{}", random.below(6));
        let replica = &replicas[random.below(3)].backend;
        if expected.contains_key(&user) && random.below(3) > 0 {
            assert!(replica.delete(&spec(&user)).await.unwrap(), "{user} deleted at step {step}");
            expected.remove(&user);
        } else {
            let target = format!("http://10.0.1.{}:8888", step + 1);
            replica.add(route(&user, &target)).await.unwrap();
            expected.insert(user, target);
        }
        // JupyterHub waits for each answer; a replica sees another's write when its watch does.
        let specs: Vec<String> = expected.keys().cloned().collect();
        for replica in &replicas {
            within("every replica lists the routes", Duration::from_secs(10), || async {
                common::listed(&replica.backend).await == specs
            })
            .await;
        }
        if step % 4 == 3 {
            // A later second: the hub route's object is created again below new routes.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    let expected: Vec<String> = expected.iter().map(|(spec, target)| format!("{spec} -> {target}")).collect();
    assert_eq!(objects.routes().await, expected);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(objects.routes().await, expected, "the routes JupyterHub deleted stay deleted");
    assert_eq!(all_repairs(&replicas), Vec::<String>::new(), "nothing drifted");
    let ip_routes = expected.iter().filter(|r| r.contains("10.0.1.")).count();
    assert_eq!(objects.service_entries().await.len(), ip_routes, "a ServiceEntry per pod-IP route");
    for replica in &replicas {
        assert_eq!(replica.backend.list().await.unwrap().len(), expected.len());
    }
}

/// A route JupyterHub deletes while healing's check of it waits: the delete wins.
#[tokio::test]
async fn a_route_deleted_while_its_repair_waits_stays_deleted() {
    let (replicas, objects) = setup("heal-race").await;
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888")]).await;
    let name = objects.names().await.remove(0);
    let edit = json!({"spec": {"hosts": ["evil.example.org"]}});
    objects.virtual_services.patch(&name, &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    // Before any replica's jitter has run out.
    assert!(replicas[1].backend.delete(&spec("/user/alice")).await.unwrap());
    tokio::time::sleep(SETTLE).await;
    assert!(objects.names().await.is_empty(), "the route stays deleted");
    assert!(objects.service_entries().await.is_empty());
    assert_eq!(all_repairs(&replicas), Vec::<String>::new());
}

/// On the fake API server: a replica whose watch missed both the delete mark and the delete (a
/// watch down, history compacted, then a relist) does not restore the route.
#[tokio::test]
async fn a_delete_missed_by_a_watch_is_not_undone_at_the_relist() {
    use testkit::fake_kube::FakeKube;
    const NAMESPACE: &str = "hub";
    let fake = FakeKube::start().await;
    let options = HealOptions {
        jitter: (Duration::from_millis(50), Duration::from_millis(200)),
        ..HealOptions::default()
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let backend = Arc::new(common::start(fake.kubeconfig(NAMESPACE), NAMESPACE).await.unwrap());
        let metrics = HealMetrics::default();
        let healing = heal(Arc::clone(&backend), options.clone(), metrics.clone());
        replicas.push(Replica { backend, metrics, _healing: healing });
    }
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888"), ("/user/bob", "http://jupyter-bob:8888")])
        .await;

    fake.hold_watch_events();
    assert!(replicas[0].backend.delete(&spec("/user/alice")).await.unwrap());
    fake.compact();
    fake.break_watches();
    fake.release_watch_events(usize::MAX);
    within("both replicas relist without alice", Duration::from_secs(10), || async {
        let mut all = true;
        for replica in &replicas {
            all &= common::listed(&replica.backend).await == ["/user/bob"];
        }
        all
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.objects("virtualservices").len(), 1, "alice stays deleted");
    assert!(fake.objects("serviceentries").is_empty());
    assert_eq!(all_repairs(&replicas), Vec::<String>::new());
}

/// A route JupyterHub adds again (another target) right after its VirtualService was deleted
/// behind our back, before any replica's check: the re-added route stays, not the old one.
#[tokio::test]
async fn a_route_re_added_before_its_repair_wins() {
    let (replicas, objects) = setup("heal-readd").await;
    add(&replicas, &[("/user/alice", "http://10.0.0.1:8888")]).await;
    let name = objects.names().await.remove(0);
    objects.virtual_services.delete(&name, &DeleteParams::default()).await.unwrap();
    replicas[2].backend.add(route("/user/alice", "http://10.0.0.2:8888")).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(objects.routes().await, ["/user/alice -> http://10.0.0.2:8888"]);
    assert_eq!(objects.service_entries().await.len(), 1);
    assert_eq!(all_repairs(&replicas), Vec::<String>::new());
}

/// What makes one replica's repair of an edit the only one, and never a re-creation: on the
/// real API server, a restore with a stale `resourceVersion` is a Conflict, and a restore of a
/// deleted object leaves it deleted (a server-side apply would create it).
#[tokio::test]
async fn a_restore_is_refused_when_the_object_changed_and_creates_nothing() {
    use kube_routes::Error;
    let (replicas, objects) = setup("heal-precondition").await;
    add(&replicas, &[("/user/alice", "http://jupyter-alice:8888")]).await;
    let stale = objects.virtual_services().await.remove(0);
    let edit = json!({"spec": {"hosts": ["evil.example.org"]}});
    let name = stale.metadata.name.clone().unwrap();
    objects.virtual_services.patch(&name, &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let mut rendered =
        objects.translation.render(&route("/user/alice", "http://jupyter-alice:8888"), 0).unwrap();
    rendered.virtual_service.metadata.resource_version = stale.metadata.resource_version.clone();
    let store = replicas[0].backend.store();
    let error = store.restore_virtual_service(&rendered.virtual_service).await.unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error}");

    let mut gone = objects.translation.render(&route("/user/zed", "http://jupyter-zed:8888"), 0).unwrap();
    gone.virtual_service.metadata.resource_version = stale.metadata.resource_version.clone();
    assert!(store.restore_virtual_service(&gone.virtual_service).await.unwrap().is_none());
    let zed = gone.virtual_service.metadata.name.unwrap();
    assert!(objects.virtual_services.get_opt(&zed).await.unwrap().is_none(), "not created");
}
