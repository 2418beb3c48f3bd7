//! The deployment files: the manifests in `deploy/kubernetes` are the Kubernetes objects they
//! claim to be and fit the binary, the Role grants exactly what the store calls (found by
//! running it on the fake API server) and is enough for all of it (the binary run as the
//! ServiceAccount under that Role on a real API server's RBAC), and the Helm chart renders the
//! same objects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::fake_kube::FakeKube;
use testkit::process::ProxyProcess;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "deploy-token";
const NAMESPACE: &str = "jhub";

/// Objects by kind and name.
type Objects = BTreeMap<(String, String), Value>;

fn chart() -> PathBuf {
    testkit::workspace_root().join("deploy/helm/jupyterhub-istio-proxy")
}

/// The YAML documents of `text` as JSON, empty ones left out, keyed by kind and name.
fn objects(text: &str, origin: &str) -> Objects {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{origin} is not YAML: {e}")))
        .filter(|value| !value.is_null())
        .map(|value| {
            let key =
                |field: &Value| field.as_str().unwrap_or_else(|| panic!("{origin}: {value}")).to_owned();
            ((key(&value["kind"]), key(&value["metadata"]["name"])), value)
        })
        .collect()
}

/// Every object in `deploy/kubernetes`, but the kustomization.
fn manifests() -> Objects {
    let dir = testkit::workspace_root().join("deploy/kubernetes");
    let mut all = Objects::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = entry.unwrap().path();
        // The kustomization, and overlays (gateway-api/), which patch these objects.
        if path.is_dir() || path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        all.extend(objects(&text, &path.display().to_string()));
    }
    all
}

/// The object as `T`, after checking that `T` keeps every field of it: a misspelt or
/// misplaced field would be dropped, and then differ.
fn typed<T: DeserializeOwned + serde::Serialize>(value: &Value) -> T {
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("not a {}: {e}\n{value:#}", std::any::type_name::<T>()));
    assert_eq!(
        &serde_json::to_value(&object).unwrap(),
        value,
        "fields lost by {}",
        std::any::type_name::<T>()
    );
    object
}

fn one<T: DeserializeOwned + serde::Serialize>(objects: &Objects, kind: &str) -> T {
    let mut of_kind = objects.iter().filter(|((k, _), _)| k == kind);
    let (_, value) = of_kind.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(of_kind.next().is_none(), "more than one {kind}");
    typed(value)
}

#[test]
fn the_manifests_are_the_kubernetes_objects_they_claim_to_be_and_fit_together() {
    let objects = manifests();
    let kinds: BTreeSet<&str> = objects.keys().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]));
    let deployment: Deployment = one(&objects, "Deployment");
    let service: Service = one(&objects, "Service");
    let account: ServiceAccount = one(&objects, "ServiceAccount");
    let role: Role = one(&objects, "Role");
    let binding: RoleBinding = one(&objects, "RoleBinding");
    for (_, value) in objects {
        assert_eq!(value["metadata"]["namespace"], NAMESPACE, "{value}");
    }

    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&pod_labels));
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    let term = &anti.preferred_during_scheduling_ignored_during_execution.unwrap()[0].pod_affinity_term;
    assert_eq!(term.label_selector.as_ref().unwrap().match_labels.as_ref(), Some(&pod_labels));
    assert!(pod.termination_grace_period_seconds.unwrap() > 25, "longer than the binary's drain");
    let security = pod.security_context.unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert!(security.run_as_user.is_some_and(|uid| uid > 0), "a numeric non-root UID");
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let [container] = &pod.containers[..] else { panic!("one container") };
    let hardening = container.security_context.clone().unwrap();
    assert_eq!(hardening.allow_privilege_escalation, Some(false));
    assert_eq!(hardening.read_only_root_filesystem, Some(true));
    assert_eq!(hardening.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert!(container.resources.as_ref().is_some_and(|r| r.requests.is_some() && r.limits.is_some()));
    let token = container.env.as_ref().unwrap().iter().find(|e| e.name == "CONFIGPROXY_AUTH_TOKEN").unwrap();
    assert!(token.value.is_none() && token.value_from.as_ref().unwrap().secret_key_ref.is_some());

    // The Service reaches the pods' API port, as Zero to JupyterHub's hub calls it.
    let service_spec = service.spec.unwrap();
    assert_eq!(service.metadata.name.as_deref(), Some("proxy-api"));
    assert_eq!(service_spec.selector.as_ref(), Some(&pod_labels));
    let [port] = &service_spec.ports.unwrap()[..] else { panic!("one port") };
    assert_eq!(port.port, 8001);
    let target = container_port(container, port.target_port.as_ref().unwrap());
    assert_eq!(target, 8000);

    // The binding gives the Role to the account the pods run as.
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let [subject] = &binding.subjects.unwrap()[..] else { panic!("one subject") };
    assert_eq!((subject.kind.as_str(), subject.namespace.as_deref()), ("ServiceAccount", Some(NAMESPACE)));
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(pod.service_account_name, account.metadata.name);
}

/// The number of a container port given by name or number.
fn container_port(
    container: &k8s_openapi::api::core::v1::Container,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let ports = container.ports.as_ref().unwrap();
    match port {
        IntOrString::Int(number) => {
            ports.iter().find(|p| p.container_port == *number).unwrap().container_port
        }
        IntOrString::String(name) => {
            ports.iter().find(|p| p.name.as_ref() == Some(name)).expect("a named port").container_port
        }
    }
}

#[tokio::test]
async fn the_probes_are_paths_the_binary_serves_on_the_port_it_listens_on() {
    let deployment: Deployment = one(&manifests(), "Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let env = |name: &str| {
        container.env.as_ref().unwrap().iter().find(|e| e.name == name).and_then(|e| e.value.clone())
    };
    let listen = env("PROXY_LISTEN").unwrap_or_else(|| "0.0.0.0:8000".to_owned());
    let mut proxy = ProxyProcess::start(BIN, &["--store", "memory"], TOKEN).await;
    let api = ApiClient::new(proxy.addr(), None);
    for (what, probe) in [("readiness", &container.readiness_probe), ("liveness", &container.liveness_probe)]
    {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(container_port(container, &get.port).to_string(), listen.rsplit(':').next().unwrap());
        let path = get.path.as_deref().unwrap();
        let answer = api.get(path).await;
        assert_eq!(answer.status, 200, "{what} probe {path}: {}", String::from_utf8_lossy(&answer.body));
    }
    proxy.terminate(Duration::from_secs(10)).await;
}

/// The Kubernetes verb and resource (`plural.group`) of a request to the API server.
fn verb_and_resource(request: &testkit::fake_kube::SeenRequest) -> (String, String) {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (group, plural, named) = match segments[..] {
        ["apis", group, _version, "namespaces", _, plural] => (group, plural, false),
        ["apis", group, _version, "namespaces", _, plural, _name] => (group, plural, true),
        _ => panic!("a request this test cannot map to RBAC: {request:?}"),
    };
    let verb = match (request.method.as_str(), named) {
        ("GET", false) if request.is_watch() => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", false) => "create",
        ("PATCH", true) => "patch",
        ("PUT", true) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => panic!("a request this test cannot map to RBAC: {request:?}"),
    };
    (verb.to_owned(), format!("{plural}.{group}"))
}

/// What a Role grants, as (verb, `plural.group`).
fn grants(role: &Role) -> BTreeSet<(String, String)> {
    let mut grants = BTreeSet::new();
    for rule in role.rules.as_deref().unwrap_or_default() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none(), "{rule:?}");
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    grants.insert((verb.clone(), format!("{resource}.{group}")));
                }
            }
        }
    }
    grants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_grants_exactly_what_the_store_calls() {
    let fake = FakeKube::start().await;
    fake.set_clock(1_700_000_000);
    fake.insert("networking.istio.io", "v1", "virtualservices", "hub", legacy_virtual_service("hub"));
    let kubeconfig = std::env::temp_dir().join(format!("jhub-proxy-deploy-{}", std::process::id()));
    fake.write_kubeconfig(&kubeconfig, "hub");
    let mut command = Command::new(BIN);
    command.env_clear().env("KUBECONFIG", &kubeconfig).env("CONFIGPROXY_AUTH_TOKEN", TOKEN).args([
        "--listen",
        "127.0.0.1:0",
        "--istio-gateway",
        "istio-system/jupyterhub-gateway",
    ]);
    let mut proxy = ProxyProcess::spawn(command).await;
    let api = ApiClient::new(proxy.addr(), Some(TOKEN));

    assert_eq!(api.get("/api/routes").await.keys(), ["/user/carol"], "the Go proxy's route, adopted");
    let post = async |path: &str, target: &str| {
        let answer = api.post(&format!("/api/routes{path}"), &format!(r#"{{"target": "{target}"}}"#)).await;
        assert_eq!(answer.status, 201, "{path}: {}", answer.error());
    };
    // A pod IP: a ServiceEntry and a VirtualService; then the same route updated.
    post("/user/alice/", "http://10.0.0.7:8888").await;
    post("/user/alice/", "http://10.0.0.8:8888").await;
    // A route under an existing ancestor, a second later: the ancestor is made again.
    post("/jhub/", "http://hub:8081").await;
    fake.advance_clock(1);
    post("/jhub/user/bob/", "http://10.0.0.9:8888").await;
    // Healing: a ServiceEntry deleted behind the proxy's back is created again.
    let entry = fake
        .objects("serviceentries")
        .into_iter()
        .find(|o| o["metadata"]["annotations"]["jupyterhub-istio-proxy/route-spec"] == "/jhub/user/bob")
        .expect("bob's ServiceEntry");
    let entry = entry["metadata"]["name"].as_str().unwrap().to_owned();
    let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "ServiceEntry");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "serviceentries");
    let admin = kube::Client::try_from(fake.kubeconfig("hub")).unwrap();
    let entries: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(admin, "hub", &resource);
    entries.delete(&entry, &Default::default()).await.unwrap();
    testkit::eventually("healing restores the ServiceEntry", || async {
        fake.object("serviceentries", "hub", &entry).is_some()
    })
    .await;
    // The adopted route written again: the Go proxy's object goes.
    post("/user/carol/", "http://10.0.0.10:8888").await;
    assert!(fake.object("virtualservices", "hub", "jupyter-0123").is_none(), "the Go object was replaced");
    assert_eq!(api.delete("/api/routes/user/alice").await.status, 204);
    assert_eq!(api.get("/api/routes").await.keys(), ["/jhub", "/jhub/user/bob", "/user/carol"]);
    assert_eq!(proxy.terminate(Duration::from_secs(30)).await.and_then(|s| s.code()), Some(0));
    let _ = std::fs::remove_file(&kubeconfig);

    // The test's own delete is no call of the store's.
    let called: BTreeSet<(String, String)> = fake
        .requests()
        .iter()
        .filter(|request| {
            !(request.method == http::Method::DELETE && request.path.ends_with(&format!("/{entry}")))
        })
        .map(verb_and_resource)
        .collect();
    let role: Role = one(&manifests(), "Role");
    assert_eq!(grants(&role), called, "deploy/kubernetes/role.yaml against what the store called");
    let rendered = objects(&testkit::helm::template(&chart(), NAMESPACE, &[]), "the chart");
    assert_eq!(grants(&one(&rendered, "Role")), called, "the chart's Role against what the store called");
    let z2jh = objects(&testkit::helm::template(&chart(), NAMESPACE, &["mode=z2jh"]), "the chart, mode z2jh");
    assert_eq!(
        grants(&one(&z2jh, "Role")),
        called,
        "the chart's Role in mode z2jh against what the store called"
    );
}

/// A route the Go proxy wrote in `namespace`, which the binary adopts at start (a patch) and
/// replaces when the route is written again (a delete).
fn legacy_virtual_service(namespace: &str) -> Value {
    let legacy = json!({"route_spec": "/user/carol/", "target": "http://jupyter-carol:8888", "data": {}});
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "jupyter-0123", "annotations": {
            "jupyter.splunk.io/proxy-data": serde_json::to_value(ByteString(legacy.to_string().into_bytes())).unwrap()
        }},
        "spec": {"hosts": ["*"], "http": [{"match": [{"uri": {"prefix": "/user/carol/"}}],
                 "route": [{"destination": {"host": format!("jupyter-carol.{namespace}.svc.cluster.local")}}]}]}
    })
}

/// Applies the ServiceAccount and RoleBinding of `deploy/kubernetes`, with `role`, to a fresh
/// namespace of a real API server, waits until its authorizer allows `probe` (group, resource)
/// to the account, and answers the namespace and a kubeconfig that impersonates the account
/// (the admin's credentials, as `kubectl --as` does).
async fn as_service_account(
    server: &ApiServer,
    role: Role,
    probe: (&str, &str),
) -> (String, std::path::PathBuf) {
    let namespace = server.new_namespace("rbac").await;
    let mut manifests = manifests();
    for ((kind, _), object) in manifests.iter_mut() {
        object["metadata"]["namespace"] = json!(namespace);
        if kind == "RoleBinding" {
            for subject in object["subjects"].as_array_mut().unwrap() {
                subject["namespace"] = json!(namespace);
            }
        }
    }
    let mut role = role;
    role.metadata.namespace = Some(namespace.clone());
    let account: ServiceAccount = one(&manifests, "ServiceAccount");
    let binding: RoleBinding = one(&manifests, "RoleBinding");
    let admin = server.client();
    let post_params = kube::api::PostParams::default();
    kube::Api::namespaced(admin.clone(), &namespace).create(&post_params, &account).await.unwrap();
    kube::Api::namespaced(admin.clone(), &namespace).create(&post_params, &role).await.unwrap();
    kube::Api::namespaced(admin.clone(), &namespace).create(&post_params, &binding).await.unwrap();
    let user = format!("system:serviceaccount:{namespace}:{}", account.metadata.name.as_deref().unwrap());
    // The groups a ServiceAccount's token carries.
    let groups =
        ["system:serviceaccounts", &format!("system:serviceaccounts:{namespace}"), "system:authenticated"];
    // The authorizer follows RBAC objects through a watch: wait until it has the binding.
    let reviews: kube::Api<k8s_openapi::api::authorization::v1::SubjectAccessReview> =
        kube::Api::all(admin.clone());
    let (group, resource) = probe;
    testkit::eventually("RBAC allows what the Role grants", || async {
        let review = serde_json::from_value(json!({"spec": {"user": user, "groups": groups,
            "resourceAttributes": {"namespace": namespace, "verb": "watch", "group": group, "resource": resource}}}))
        .unwrap();
        let answer = reviews.create(&post_params, &review).await.unwrap();
        answer.status.is_some_and(|s| s.allowed)
    })
    .await;
    let kubeconfig = server.impersonating_kubeconfig(&user, &groups);
    (namespace, kubeconfig)
}

/// The ServiceAccount, Role and RoleBinding of `deploy/kubernetes`, applied to a real API
/// server in a namespace of their own, and the binary run as that ServiceAccount (the admin
/// impersonating it, as `kubectl --as` does), so the server's RBAC authorizes every call the
/// store makes: adopting the Go proxy's route, pod-IP routes with their ServiceEntries, an
/// ancestor made again, deletes, and healing what is deleted behind its back. Any verb the
/// Role lacks fails a request, or shows as a `forbidden` outcome in the binary's metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_is_enough_for_the_service_account_on_a_real_api_servers_rbac() {
    let server = ApiServer::shared().await;
    let role: Role = one(&manifests(), "Role");
    let (namespace, kubeconfig) =
        as_service_account(server, role, ("networking.istio.io", "virtualservices")).await;
    let admin = server.client();
    let post_params = kube::api::PostParams::default();
    let resource = |kind: &str, plural: &str| {
        let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", kind);
        kube::api::ApiResource::from_gvk_with_plural(&gvk, plural)
    };
    let virtual_services: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(admin.clone(), &namespace, &resource("VirtualService", "virtualservices"));
    let entries: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(admin.clone(), &namespace, &resource("ServiceEntry", "serviceentries"));
    let legacy = serde_json::from_value(legacy_virtual_service(&namespace)).unwrap();
    virtual_services.create(&post_params, &legacy).await.unwrap();

    let mut proxy = ProxyProcess::start_kubernetes(
        BIN,
        &kubeconfig,
        &namespace,
        TOKEN,
        &["--istio-gateway", "istio-system/jupyterhub-gateway"],
    )
    .await;
    let api = ApiClient::new(proxy.addr(), Some(TOKEN));
    let routes = api.get("/api/routes").await;
    assert_eq!(
        routes.keys(),
        ["/user/carol"],
        "the Go proxy's route, adopted: {}\n{}",
        routes.error(),
        proxy.log()
    );
    let post = async |path: &str, target: &str| {
        let answer = api.post(&format!("/api/routes{path}"), &format!(r#"{{"target": "{target}"}}"#)).await;
        assert_eq!(answer.status, 201, "{path}: {}\n{}", answer.error(), proxy.log());
    };
    // A pod IP: a ServiceEntry and a VirtualService; then the same route updated.
    post("/user/alice/", "http://10.0.0.7:8888").await;
    post("/user/alice/", "http://10.0.0.8:8888").await;
    // A route under an existing ancestor, in a later second: the ancestor is made again.
    let by_route = |objects: Vec<kube::api::DynamicObject>, route: &str| {
        objects
            .into_iter()
            .filter(|o| {
                let annotations = o.metadata.annotations.as_ref();
                annotations
                    .and_then(|a| a.get("jupyterhub-istio-proxy/route-spec"))
                    .is_some_and(|r| r == route)
            })
            .map(|o| o.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    post("/jhub/", "http://hub:8081").await;
    let hub = by_route(virtual_services.list(&Default::default()).await.unwrap().items, "/jhub");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    post("/jhub/user/bob/", "http://10.0.0.9:8888").await;
    let again = by_route(virtual_services.list(&Default::default()).await.unwrap().items, "/jhub");
    assert!(
        again.len() == 1 && again != hub,
        "the ancestor made again, under its next name: {hub:?}, {again:?}"
    );
    // Healing: a ServiceEntry and a VirtualService deleted behind the proxy's back come back.
    let [entry] = &by_route(entries.list(&Default::default()).await.unwrap().items, "/jhub/user/bob")[..]
    else {
        panic!("one ServiceEntry for bob")
    };
    let [bob] =
        &by_route(virtual_services.list(&Default::default()).await.unwrap().items, "/jhub/user/bob")[..]
    else {
        panic!("one VirtualService for bob")
    };
    entries.delete(entry, &Default::default()).await.unwrap();
    virtual_services.delete(bob, &Default::default()).await.unwrap();
    testkit::eventually("healing restores the ServiceEntry and the VirtualService", || async {
        entries.get_opt(entry).await.unwrap().is_some()
            && virtual_services.get_opt(bob).await.unwrap().is_some()
    })
    .await;
    // The adopted route written again: the Go proxy's object goes.
    post("/user/carol/", "http://10.0.0.10:8888").await;
    assert!(virtual_services.get_opt("jupyter-0123").await.unwrap().is_none(), "the Go object was replaced");
    assert_eq!(api.delete("/api/routes/user/alice").await.status, 204);
    assert_eq!(api.get("/api/routes").await.keys(), ["/jhub", "/jhub/user/bob", "/user/carol"]);
    assert!(by_route(entries.list(&Default::default()).await.unwrap().items, "/user/alice").is_empty());

    // Nothing in the background (the watches, healing) was denied either.
    let metrics = String::from_utf8(api.get("/metrics").await.body.to_vec()).unwrap();
    let denied: Vec<&str> = metrics.lines().filter(|l| l.contains(r#"outcome="forbidden""#)).collect();
    assert!(denied.is_empty(), "calls RBAC denied: {denied:#?}\n{}", proxy.log());
    assert_eq!(proxy.terminate(Duration::from_secs(30)).await.and_then(|s| s.code()), Some(0));
}

/// The overlay `deploy/kubernetes/gateway-api`'s Role, run as on a cluster: the binary with
/// `--routing gateway-api` as the ServiceAccount, through the real authorizer, writing
/// HTTPRoutes, and a Service and EndpointSlice per pod IP, updating and deleting them. And the
/// chart with `PROXY_ROUTING=gateway-api` renders that same Role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_role_is_enough_for_the_service_account_on_a_real_api_servers_rbac() {
    let overlay = testkit::workspace_root().join("deploy/kubernetes/gateway-api/role.yaml");
    let overlay = objects(&std::fs::read_to_string(&overlay).unwrap(), "the gateway-api overlay");
    let role: Role = one(&overlay, "Role");
    let set = ["config.PROXY_ROUTING=gateway-api", "config.GATEWAY_API_PARENT=istio-system/gw"];
    let rendered = objects(&testkit::helm::template(&chart(), NAMESPACE, &set), "the chart, gateway-api");
    assert_eq!(grants(&one(&rendered, "Role")), grants(&role), "the chart's Role against the overlay's");

    let server = ApiServer::shared().await;
    let (namespace, kubeconfig) =
        as_service_account(server, role, ("gateway.networking.k8s.io", "httproutes")).await;
    let args = ["--routing", "gateway-api", "--parent-ref", "istio-system/jupyterhub"];
    let mut proxy = ProxyProcess::start_kubernetes(BIN, &kubeconfig, &namespace, TOKEN, &args).await;
    let api = ApiClient::new(proxy.addr(), Some(TOKEN));
    let post = async |path: &str, target: &str| {
        let answer = api.post(&format!("/api/routes{path}"), &format!(r#"{{"target": "{target}"}}"#)).await;
        assert_eq!(answer.status, 201, "{path}: {}\n{}", answer.error(), proxy.log());
    };
    post("/", "http://hub:8081").await;
    post("/user/alice/", "http://10.0.0.7:8888").await;
    post("/user/alice/", "http://10.0.0.8:8888").await;
    post("/user/bob/", "http://10.0.0.9:8888").await;
    post("/user/bob/", "http://jupyter-bob:8888").await;
    assert_eq!(api.delete("/api/routes/user/alice").await.status, 204);
    assert_eq!(api.get("/api/routes").await.keys(), ["/", "/user/bob"]);
    let slices: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        kube::Api::namespaced(server.client(), &namespace);
    let left = slices.list(&Default::default()).await.unwrap().items;
    assert!(left.is_empty(), "alice's deleted, bob's replaced by a Service target: {left:#?}");

    // Healing: carol's HTTPRoute and EndpointSlice deleted behind the proxy's back come back.
    post("/user/carol/", "http://10.0.0.10:8888").await;
    let spec = proxy_api::RouteSpec::new("/user/carol", proxy_api::RoutingMode::Path).unwrap();
    let carol = format!("jupyter-{}", kube_routes::route_id(&spec));
    let http_routes: kube::Api<gateway_routes::HttpRoute> =
        kube::Api::namespaced(server.client(), &namespace);
    http_routes.delete(&carol, &Default::default()).await.unwrap();
    slices.delete(&carol, &Default::default()).await.unwrap();
    let back = async || {
        http_routes.get_opt(&carol).await.unwrap().is_some()
            && slices.get_opt(&carol).await.unwrap().is_some()
    };
    let started = std::time::Instant::now();
    while !back().await {
        assert!(started.elapsed() < Duration::from_secs(20), "carol's objects not back\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let metrics = String::from_utf8(api.get("/metrics").await.body.to_vec()).unwrap();
    let denied: Vec<&str> = metrics.lines().filter(|l| l.contains(r#"outcome="forbidden""#)).collect();
    assert!(denied.is_empty(), "calls RBAC denied: {denied:#?}\n{}", proxy.log());
    assert_eq!(proxy.terminate(Duration::from_secs(30)).await.and_then(|s| s.code()), Some(0));
}

#[test]
fn the_chart_renders_the_manifests_with_default_values() {
    let rendered = objects(&testkit::helm::template(&chart(), NAMESPACE, &[]), "the chart");
    let manifests = manifests();
    assert_eq!(rendered.keys().collect::<Vec<_>>(), manifests.keys().collect::<Vec<_>>());
    for (key, manifest) in &manifests {
        assert_eq!(&rendered[key], manifest, "{key:?}: the chart's (left) against deploy/kubernetes (right)");
    }
}

/// Mode `z2jh`: Zero to JupyterHub runs our image in its own proxy pod, so the chart renders only
/// what z2jh lacks, the Role and its binding to that pod's ServiceAccount.
#[test]
fn the_chart_in_z2jh_mode_renders_only_the_role_and_its_binding() {
    for (set, account) in
        [(&["mode=z2jh"][..], "default"), (&["mode=z2jh", "z2jh.serviceAccountName=chp"], "chp")]
    {
        let rendered = objects(&testkit::helm::template(&chart(), NAMESPACE, set), "the chart, mode z2jh");
        let kinds: Vec<&str> = rendered.keys().map(|(kind, _)| kind.as_str()).collect();
        assert_eq!(kinds, ["Role", "RoleBinding"], "{set:?}");
        let role: Role = one(&rendered, "Role");
        let binding: RoleBinding = one(&rendered, "RoleBinding");
        assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
        assert_eq!(binding.role_ref.kind, "Role");
        let [subject] = &binding.subjects.unwrap()[..] else { panic!("one subject") };
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
            ("ServiceAccount", account, Some(NAMESPACE)),
            "{set:?}"
        );
        for value in rendered.values() {
            assert_eq!(value["metadata"]["namespace"], NAMESPACE, "{value}");
        }
    }
    // The standalone chart's Role is the same Role.
    let standalone = objects(&testkit::helm::template(&chart(), NAMESPACE, &[]), "the chart");
    let z2jh = objects(&testkit::helm::template(&chart(), NAMESPACE, &["mode=z2jh"]), "the chart, mode z2jh");
    assert_eq!(
        z2jh[&("Role".to_owned(), "jupyterhub-istio-proxy".to_owned())],
        standalone[&("Role".to_owned(), "jupyterhub-istio-proxy".to_owned())]
    );
    let bad = std::panic::catch_unwind(|| testkit::helm::template(&chart(), NAMESPACE, &["mode=sidecar"]));
    let message = *bad.expect_err("an unknown mode fails").downcast::<String>().unwrap();
    assert!(message.contains("mode must be standalone or z2jh"), "{message}");
}

#[test]
fn the_chart_passes_helm_lint() {
    let output = testkit::helm::lint(&chart());
    assert!(output.contains("0 chart(s) failed"), "{output}");
}

#[test]
fn chart_values_reach_the_deployment() {
    let set = [
        "config.HOST_ROUTING=true",
        "config.ISTIO_GATEWAY=istio-system/gw",
        "config.PROXY_LISTEN=0.0.0.0:9000",
        "config.METRICS_LISTEN=0.0.0.0:9090",
        "replicas=5",
        "authToken.secretName=my-hub",
    ];
    let rendered = objects(&testkit::helm::template(&chart(), "elsewhere", &set), "the chart");
    let deployment: Deployment = one(&rendered, "Deployment");
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(5));
    let container = &spec.template.spec.unwrap().containers[0];
    let env: BTreeMap<&str, &k8s_openapi::api::core::v1::EnvVar> =
        container.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e)).collect();
    let value = |name: &str| env.get(name).and_then(|e| e.value.as_deref());
    assert_eq!(value("HOST_ROUTING"), Some("true"));
    assert_eq!(value("ISTIO_GATEWAY"), Some("istio-system/gw"));
    assert_eq!(value("PROXY_LISTEN"), Some("0.0.0.0:9000"));
    assert_eq!(value("SUB_DOMAIN_HOST"), None, "an empty value is not set");
    let token = env["CONFIGPROXY_AUTH_TOKEN"].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!(token.name, "my-hub");
    let ports: Vec<(Option<&str>, i32)> =
        container.ports.as_ref().unwrap().iter().map(|p| (p.name.as_deref(), p.container_port)).collect();
    assert_eq!(ports, [(Some("http"), 9000), (Some("metrics"), 9090)]);
    let binding: RoleBinding = one(&rendered, "RoleBinding");
    assert_eq!(binding.subjects.unwrap()[0].namespace.as_deref(), Some("elsewhere"));
}
