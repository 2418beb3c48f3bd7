//! The Kubernetes store against a real API server (testkit's kube-apiserver over etcd, with
//! Istio's CRDs): what it writes, reading through the watch, two writers at once, and what
//! denied and invalid writes, and writes into a missing or terminating namespace, return. The
//! fake API server's tests (`kube_store.rs`) cover failure injection; these check that the
//! real server agrees.

mod common;

use common::{Namespace, listed, route, spec};
use istio_routes::resources::VirtualService;
use istio_routes::{IstioBackend, KubeStore, RouteStore};
use kube::api::DeleteParams;
use kube_routes::Error;
use proxy_api::Backend;
use testkit::apiserver::ApiServer;
use testkit::eventually;

async fn start(server: &ApiServer, namespace: &str) -> IstioBackend<KubeStore> {
    common::start(server.kube_config(), namespace)
        .await
        .unwrap_or_else(|e| panic!("the store starts: {e}\n{}", server.log()))
}

#[tokio::test]
async fn routes_are_applied_updated_listed_and_deleted() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("crud").await;
    let objects = Namespace::new(server.client(), &namespace);
    let backend = start(server, &namespace).await;

    backend.add(route("/user/alice", "http://10.0.0.1:8888")).await.unwrap();
    backend.add(route("/user/bob", "http://jupyter-bob:8888")).await.unwrap();
    assert_eq!(
        objects.routes().await,
        ["/user/alice -> http://10.0.0.1:8888", "/user/bob -> http://jupyter-bob:8888"]
    );
    assert_eq!(objects.service_entry_count().await, 1, "alice's pod IP has a ServiceEntry");
    let alice = &objects.virtual_services().await[0];
    let created = alice.metadata.creation_timestamp.clone().expect("the server stamps creation");

    // An update changes the object in place: same name, new resourceVersion, no orphan.
    backend.add(route("/user/alice", "http://10.0.0.2:8888")).await.unwrap();
    let updated = &objects.virtual_services().await[0];
    assert_eq!(updated.metadata.name, alice.metadata.name);
    assert_ne!(updated.metadata.resource_version, alice.metadata.resource_version);
    assert_eq!(updated.metadata.creation_timestamp, Some(created));
    assert_eq!(
        objects.routes().await,
        ["/user/alice -> http://10.0.0.2:8888", "/user/bob -> http://jupyter-bob:8888"]
    );

    // A store started afresh lists the same routes from the server.
    let fresh = start(server, &namespace).await;
    assert_eq!(listed(&fresh).await, ["/user/alice", "/user/bob"]);
    let got = fresh.get(&spec("/user/alice")).await.unwrap().expect("alice");
    assert_eq!(got.target().as_str(), "http://10.0.0.2:8888");

    assert!(backend.delete(&spec("/user/alice")).await.unwrap());
    assert_eq!(objects.routes().await, ["/user/bob -> http://jupyter-bob:8888"]);
    assert_eq!(objects.service_entry_count().await, 0, "the ServiceEntry went with its route");
    // Deleting what is gone is no error, through the backend or the store.
    assert!(!backend.delete(&spec("/user/alice")).await.unwrap());
    assert!(!backend.store().delete_virtual_service("jupyter-97-nothing-0", None).await.unwrap());
    assert!(!backend.store().delete_service_entry("jupyter-nothing").await.unwrap());
}

#[tokio::test]
async fn the_watch_brings_other_writers_changes() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("watch").await;
    let objects = Namespace::new(server.client(), &namespace);
    let (first, second) = (start(server, &namespace).await, start(server, &namespace).await);

    first.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
    eventually("the second replica sees alice", || async { listed(&second).await == ["/user/alice"] }).await;

    second.add(route("/user/alice", "http://jupyter-alice-2:8888")).await.unwrap();
    eventually("the first replica sees the new target", || async {
        let got = first.get(&spec("/user/alice")).await.unwrap();
        got.is_some_and(|r| r.target().as_str() == "http://jupyter-alice-2:8888")
    })
    .await;

    // An object deleted behind the proxies' backs (kubectl delete) leaves their listings.
    let name = objects.virtual_services().await[0].metadata.name.clone().unwrap();
    objects.virtual_services.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("both replicas see the delete", || async {
        listed(&first).await.is_empty() && listed(&second).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn two_writers_of_one_route_leave_one_object() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("conflict").await;
    let objects = Namespace::new(server.client(), &namespace);
    let writers = [start(server, &namespace).await, start(server, &namespace).await];

    // The hub under a base URL, then a user under it, then the hub again: the hub's object is
    // re-created as a newer generation to sort after the user's, while the other writer
    // rewrites it. Whatever the interleaving, every route ends as exactly one object.
    for round in 0..4 {
        let writes = ["/jhub", "/jhub/user/alice", "/jhub"].iter().enumerate().flat_map(|(i, path)| {
            writers.iter().enumerate().map(move |(w, writer)| {
                let target = format!("http://jupyter-{round}-{i}-{w}:8888");
                async move { writer.add(route(path, &target)).await }
            })
        });
        for result in futures::future::join_all(writes).await {
            // Losing a race is a 503 JupyterHub retries; anything else is a bug.
            if let Err(error) = result {
                assert_eq!(error.status(), 503, "{error}");
            }
        }
    }
    let routes = objects.routes().await;
    let specs: Vec<&str> = routes.iter().map(|r| r.split(" -> ").next().unwrap()).collect();
    assert_eq!(specs, ["/jhub", "/jhub/user/alice"], "one object per route: {routes:#?}");
    eventually("both writers list what the server holds", || async {
        let mut listings = Vec::new();
        for writer in &writers {
            let mut listing: Vec<String> = writer
                .list()
                .await
                .unwrap()
                .iter()
                .map(|r| format!("{} -> {}", r.spec(), r.target()))
                .collect();
            listing.sort();
            listings.push(listing);
        }
        listings.iter().all(|listing| *listing == routes)
    })
    .await;
}

#[tokio::test]
async fn the_server_answers_preconditions_and_existing_names_as_the_store_expects() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("precondition").await;
    let objects = Namespace::new(server.client(), &namespace);
    let backend = start(server, &namespace).await;
    backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
    let object = objects.virtual_services().await.remove(0);
    let name = object.metadata.name.clone().unwrap();

    let again = backend.store().create_virtual_service(without_server_fields(&object)).await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })), "{again:?}");

    let stale = Some("1".to_owned());
    let error = backend.store().delete_virtual_service(&name, stale).await.unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert_eq!(objects.virtual_services().await.len(), 1, "a failed precondition deletes nothing");

    let current = object.metadata.resource_version.clone();
    assert!(backend.store().delete_virtual_service(&name, current).await.unwrap());
    assert!(objects.virtual_services().await.is_empty());
}

/// The read-your-writes overlay and the fake API server rely on this: a custom resource's
/// delete is answered with a Status that names it and carries no resource version, so the
/// store reads the server's version after a delete to know what its tombstone covers.
#[tokio::test]
async fn the_server_answers_a_delete_with_a_status_and_no_version() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("delete-answer").await;
    let objects = Namespace::new(server.client(), &namespace);
    let backend = start(server, &namespace).await;
    backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();
    let name = objects.virtual_services().await.remove(0).metadata.name.unwrap();

    let deleted = objects.virtual_services.delete(&name, &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status, not the object");
    assert_eq!(status.details.map(|d| d.name), Some(name));
    assert_eq!(status.metadata.and_then(|m| m.resource_version), None);
}

#[tokio::test]
async fn a_denied_write_is_403_naming_the_verb_and_changes_nothing() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("denied").await;
    let objects = Namespace::new(server.client(), &namespace);
    // The read-only user may list and watch, so the store starts and syncs; writing fails.
    let backend = common::start(server.readonly_kube_config().await, &namespace)
        .await
        .expect("listing and watching are allowed");
    // A pod IP's ServiceEntry is written first, then the VirtualService.
    for (target, resource) in
        [("http://10.0.0.1:8888", "serviceentries"), ("http://jupyter-alice:8888", "virtualservices")]
    {
        let error = backend.add(route("/user/alice", target)).await.unwrap_err();
        assert_eq!(error.status(), 403, "{error}");
        let grant = format!("needs 'patch' on {resource}.networking.istio.io in namespace \"{namespace}\"");
        assert!(error.to_string().contains(&grant), "the error says what to grant: {error}");
    }
    assert!(objects.virtual_services().await.is_empty());
    assert_eq!(objects.service_entry_count().await, 0);
    assert!(listed(&backend).await.is_empty(), "nothing half-written shows in the cache");
}

/// RBAC asks a server-side apply that creates an object for `create` besides `patch`: a
/// ServiceAccount whose Role grants serviceentries every verb but `create` is refused a new
/// pod-IP route, and the error names `create`, the verb to grant, not the call's `patch`.
#[tokio::test]
async fn an_apply_that_creates_needs_create_and_the_error_says_so() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("apply-create").await;
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "proxy"},
        "rules": [
            {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"],
             "verbs": ["create", "delete", "list", "patch", "watch"]},
            {"apiGroups": ["networking.istio.io"], "resources": ["serviceentries"],
             "verbs": ["delete", "list", "patch", "watch"]},
        ],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "proxy"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "proxy"},
        "subjects": [{"kind": "ServiceAccount", "name": "proxy", "namespace": namespace}],
    }))
    .unwrap();
    kube::Api::namespaced(server.client(), &namespace).create(&Default::default(), &role).await.unwrap();
    kube::Api::namespaced(server.client(), &namespace).create(&Default::default(), &binding).await.unwrap();
    let kubeconfig = server.impersonating_kubeconfig(
        &format!("system:serviceaccount:{namespace}:proxy"),
        &["system:serviceaccounts", "system:authenticated"],
    );
    let file = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await.unwrap();
    // The authorizer follows RBAC objects through a watch: the store starts once it has them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let backend = loop {
        match common::start(config.clone(), &namespace).await {
            Ok(backend) => break backend,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("the store does not start under the Role: {e}"),
        }
    };

    backend
        .add(route("/user/bob", "http://jupyter-bob:8888"))
        .await
        .expect("a VirtualService: create granted");
    let error = backend.add(route("/user/alice", "http://10.0.0.1:8888")).await.unwrap_err();
    assert_eq!(error.status(), 403, "{error}");
    let grant = format!("needs 'create' on serviceentries.networking.istio.io in namespace \"{namespace}\"");
    assert!(error.to_string().contains(&grant), "the error names the verb RBAC denied: {error}");
}

/// An operator's K8S_NAMESPACE naming a namespace that does not exist: the store starts (a
/// list in a missing namespace is empty), and each write fails with an error that names the
/// namespace and the setting, not a verb to grant or a CRD to install.
#[tokio::test]
async fn a_write_into_a_missing_namespace_says_to_create_it_or_fix_k8s_namespace() {
    let server = ApiServer::shared().await;
    // A name new_namespace never hands out (it ends in a number), so nobody creates it.
    let namespace = "missing-namespace";
    let backend = start(server, namespace).await;
    for target in ["http://10.0.0.1:8888", "http://jupyter-alice:8888"] {
        let error = backend.add(route("/user/alice", target)).await.unwrap_err();
        assert_eq!(error.status(), 500, "the operator's configuration, which a retry will not fix: {error}");
        let message = error.to_string();
        assert!(
            message.contains("the namespace \"missing-namespace\" does not exist")
                && message.contains("set K8S_NAMESPACE"),
            "{target}: {message}"
        );
    }
    assert!(listed(&backend).await.is_empty(), "nothing half-written shows in the cache");
}

/// A namespace deleted under a running proxy stays Terminating until its finalizers are
/// done; here for good, as the namespace controller (kube-controller-manager's) that removes
/// the `kubernetes` finalizer does not run. New routes fail with an error that says so.
#[tokio::test]
async fn a_write_into_a_terminating_namespace_says_it_is_being_deleted() {
    use k8s_openapi::api::core::v1::Namespace as NamespaceObject;
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("terminating").await;
    let backend = start(server, &namespace).await;
    backend.add(route("/user/alice", "http://jupyter-alice:8888")).await.unwrap();

    let namespaces: kube::Api<NamespaceObject> = kube::Api::all(server.client());
    namespaces.delete(&namespace, &DeleteParams::default()).await.expect("deleting the namespace");
    let phase = namespaces.get(&namespace).await.unwrap().status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Terminating"));

    for target in ["http://10.0.0.2:8888", "http://jupyter-bob:8888"] {
        let error = backend.add(route("/user/bob", target)).await.unwrap_err();
        assert_eq!(error.status(), 500, "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("the namespace \"{namespace}\" is being deleted"))
                && message.contains("set K8S_NAMESPACE"),
            "{target}: {message}"
        );
    }
    assert_eq!(listed(&backend).await, ["/user/alice"], "the route written before is still there");
}

#[tokio::test]
async fn an_invalid_object_is_refused_with_the_servers_reason() {
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("invalid").await;
    let backend = start(server, &namespace).await;
    let rendered = common::translation(&namespace)
        .render(&route("/user/alice", "http://jupyter-alice:8888"), 0)
        .expect("renders");
    let mut object = rendered.virtual_service;
    // Not a DNS-1123 name: the API server refuses it before any schema.
    object.metadata.name = Some("Not_A_Name".into());
    let error = backend.store().apply_virtual_service(object).await.unwrap_err();
    match &error {
        Error::Invalid { message, .. } => assert!(message.contains("Not_A_Name"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    // A retry would be refused the same way, so JupyterHub hears the server's reason at once.
    let answer = proxy_api::Error::from(error);
    assert_eq!(answer.status(), 400);
    assert!(answer.to_string().contains("Not_A_Name"), "{answer}");
}

/// The object as a client would send it: no server-set fields.
fn without_server_fields(object: &VirtualService) -> VirtualService {
    let mut object = object.clone();
    object.metadata.resource_version = None;
    object.metadata.uid = None;
    object.metadata.creation_timestamp = None;
    object.metadata.generation = None;
    object.metadata.managed_fields = None;
    object
}

/// `explain` reads the objects as the API server holds them, specs included (the watch cache
/// keeps none): an edit behind our back, and another writer's VirtualService, are what it sees.
#[tokio::test]
async fn explain_reads_the_live_objects_whole() {
    use kube::api::{Patch, PatchParams, PostParams};
    let server = ApiServer::shared().await;
    let namespace = server.new_namespace("explain").await;
    let objects = Namespace::new(server.client(), &namespace);
    let backend = start(server, &namespace).await;
    backend.add(route("/", "http://hub:8081")).await.unwrap();
    backend.add(route("/user/alice", "http://10.0.0.1:8888")).await.unwrap();
    let url = "http://hub.org/user/alice/lab";
    let explained = backend.explain(url).await.unwrap();
    assert_eq!(explained.winner.unwrap().route.as_deref(), Some("/user/alice"));
    assert!(explained.agrees_with_chp);

    // Alice's object edited to send her requests to the hub: the explanation says so loudly.
    let alice = objects
        .virtual_services()
        .await
        .into_iter()
        .find(|o| objects.translation.read(o).unwrap().unwrap().route.spec().as_str() == "/user/alice");
    let name = alice.unwrap().metadata.name.unwrap();
    let edit = serde_json::json!({"spec": {"http": [{"match": [{"uri": {"prefix": "/nobody/"}}],
        "route": [{"destination": {"host": "hub.hub.svc.cluster.local"}}]}]}});
    objects.virtual_services.patch(&name, &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let explained = backend.explain(url).await.unwrap();
    assert_eq!(explained.winner.as_ref().unwrap().route.as_deref(), Some("/"));
    assert_eq!(explained.chp_route.as_deref(), Some("/user/alice"));
    assert!(
        explained.warning.unwrap().contains("configurable-http-proxy would send it to route /user/alice")
    );

    // Another writer's VirtualService on the same gateway, unlabelled, takes alice's path.
    let mut foreign: VirtualService = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "someone-elses", "namespace": namespace},
        "spec": {"hosts": ["*"], "gateways": [common::GATEWAY],
                 "http": [{"match": [{"uri": {"prefix": "/user/"}}], "route": [{"destination": {"host": "other"}}]}]}
    }))
    .unwrap();
    foreign.metadata.namespace = Some(namespace.clone());
    objects.virtual_services.create(&PostParams::default(), &foreign).await.unwrap();
    let client = server.client();
    for explained in [
        backend.explain(url).await.unwrap(),
        istio_routes::explain::explain(
            &KubeStore::list_live(client, &objects.translation).await.unwrap(),
            &objects.translation,
            url,
        )
        .unwrap(),
    ] {
        let winner = explained.winner.unwrap();
        assert_eq!((winner.virtual_service.as_str(), winner.route), ("someone-elses", None));
    }
}
