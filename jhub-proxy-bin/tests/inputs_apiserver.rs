//! Routes thrown by machines at the proxy on a real Kubernetes API server (`testkit::apiserver`,
//! with Istio's and the Gateway API's CRDs), for both routing APIs: random specs (names, depths,
//! encodings) and targets (addresses of every class, names, ports, paths). Each POST is either
//! refused with a 400 that leaves nothing in the namespace, or answered 201 with every object of
//! the route accepted by the API server and the route listed as sent; its DELETE then leaves
//! nothing. What the API server would refuse, we refuse first: never a 500, never half a route,
//! and the memory store answers every input as the Kubernetes store does.
//!
//! Failures proptest finds are kept in `inputs_apiserver.proptest-regressions` beside this
//! file and run first on every run.

use std::collections::BTreeMap;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::process::ProxyProcess;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "inputs-token";

/// The kinds either routing API writes: (group, version, kind, plural).
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("networking.istio.io", "v1", "VirtualService", "virtualservices"),
    ("networking.istio.io", "v1", "ServiceEntry", "serviceentries"),
    ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
    ("", "v1", "Service", "services"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
];

/// The proxy's objects in `namespace`, by kind.
async fn objects(server: &ApiServer, namespace: &str) -> BTreeMap<&'static str, usize> {
    let mut found = BTreeMap::new();
    for (group, version, kind, plural) in KINDS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(server.client(), namespace, &resource);
        let count = api.list(&ours()).await.unwrap_or_else(|e| panic!("listing {plural}: {e}")).items.len();
        if count > 0 {
            found.insert(*kind, count);
        }
    }
    found
}

/// Deletes the proxy's objects in `namespace`, so that each case starts from nothing whatever
/// the one before it left.
async fn clear(server: &ApiServer, namespace: &str) {
    for (group, version, kind, plural) in KINDS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(server.client(), namespace, &resource);
        // One by one: Services have no collection delete.
        for object in api.list(&ours()).await.unwrap_or_else(|e| panic!("listing {plural}: {e}")).items {
            let name = object.metadata.name.unwrap_or_default();
            api.delete(&name, &Default::default()).await.unwrap_or_else(|e| panic!("deleting {name}: {e}"));
        }
    }
}

fn ours() -> ListParams {
    ListParams::default().labels(&format!("{}={}", kube_routes::MANAGED_BY_LABEL, kube_routes::MANAGED_BY))
}

/// A name's pieces: ASCII, non-ASCII, the characters JupyterHub escapes, and long runs.
fn name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z0-9]{1,8}",
        1 => proptest::sample::select(vec!["ü", "秀樹", "é", "ß", "😀"]).prop_map(str::to_owned),
        2 => proptest::sample::select(vec!["@", " ", "~", ".", "-", "_", "'", "+", "*", "(", "!", "$", "&", "=", ",", ";", ":", "%"])
            .prop_map(str::to_owned),
        1 => (50usize..130).prop_map(|n| "x".repeat(n)),
    ];
    proptest::collection::vec(piece, 1..6).prop_map(|pieces| pieces.concat())
}

/// A route spec, decoded: a user's server, a named one, deeper paths, or the root.
fn spec() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => name().prop_map(|user| format!("/user/{user}")),
        2 => (name(), name()).prop_map(|(user, server)| format!("/user/{user}/{server}")),
        1 => (name(), 1usize..12).prop_map(|(user, depth)| format!("/jhub/user/{user}{}", "/d".repeat(depth))),
        1 => Just("/".to_owned()),
    ]
}

/// How a spec is put in the URL: each byte that must be escaped escaped, in upper- or
/// lower-case hex; or every byte but letters and digits escaped.
fn encode(spec: &str, upper: bool, everything: bool) -> String {
    let mut url = String::new();
    for byte in spec.bytes() {
        let keep = byte == b'/'
            || byte.is_ascii_alphanumeric()
            || (!everything && (b"-._~!$&'()*+,;=:@".contains(&byte)));
        if keep {
            url.push(char::from(byte));
        } else if upper {
            url.push_str(&format!("%{byte:02X}"));
        } else {
            url.push_str(&format!("%{byte:02x}"));
        }
    }
    url
}

/// Hosts of every class: pod addresses and the ones no pod has, names of Services and not.
fn host() -> impl Strategy<Value = String> {
    let fixed = proptest::sample::select(vec![
        // IPv4: private, public, loopback, link-local, unspecified, multicast, broadcast, class E.
        "10.0.0.7",
        "192.168.1.20",
        "172.16.5.4",
        "100.64.0.1",
        "8.8.8.8",
        "127.0.0.1",
        "127.1.2.3",
        "169.254.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "010.0.0.7",
        "10.0.0.256",
        "10.1",
        // IPv6: unique-local, documentation, loopback, unspecified, link-local, multicast,
        // IPv4-mapped, IPv4-compatible, non-canonical spellings.
        "[fd00::7]",
        "[2001:db8::1]",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[ff02::1]",
        "[ff05::2]",
        "[::ffff:10.0.0.7]",
        "[::10.0.0.7]",
        "[FD00::7]",
        "[fd00:0:0:0:0:0:0:7]",
        "[2001:db8:0:1:1:1:1:1]",
        "[fe80::1%25eth0]",
        // Names: a Service in our namespace or another, fully qualified or not, and names that
        // are not Services.
        "hub",
        "jupyter-alice",
        "jupyter-alice.users",
        "jupyter-alice.users.svc",
        "jupyter-alice.users.svc.cluster.local",
        "www.example.org",
        "Jupyter-Alice",
        "under_score",
        "1abc",
        "a-",
        "-a",
        "localhost",
        "a..b",
        "xn--bcher-kva",
    ]);
    prop_oneof![
        6 => fixed.prop_map(str::to_owned),
        2 => (any::<u8>(), any::<u8>(), 1u8..255).prop_map(|(a, b, c)| format!("10.{a}.{b}.{c}")),
        1 => (1usize..70).prop_map(|n| "s".repeat(n)),
        1 => (1usize..70, 1usize..70).prop_map(|(n, m)| format!("{}.{}", "s".repeat(n), "n".repeat(m))),
    ]
}

fn target() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![6 => Just("http"), 1 => Just("https"), 1 => Just("HTTP")];
    let port = prop_oneof![
        1 => Just(String::new()),
        4 => proptest::sample::select(vec![":8888", ":80", ":1", ":65535", ":8081"]).prop_map(str::to_owned),
        1 => proptest::sample::select(vec![":0", ":65536", ":", ":08888"]).prop_map(str::to_owned),
    ];
    let path = prop_oneof![
        4 => Just(String::new()),
        2 => proptest::sample::select(vec!["/", "/base", "/base/path/", "/b%C3%BCse", "/büse", "/a@b", "/x~y", "/a%2Fb"])
            .prop_map(str::to_owned),
        1 => name().prop_map(|name| format!("/{}", encode(&name, true, false))),
    ];
    (scheme, host(), port, path)
        .prop_map(|(scheme, host, port, path)| format!("{scheme}://{host}{port}{path}"))
}

/// The data JupyterHub sends, now and then too large for a Kubernetes object.
fn body(target: String) -> impl Strategy<Value = String> {
    let blob = prop_oneof![8 => Just(0usize), 1 => Just(150 * 1024), 1 => Just(210 * 1024)];
    (blob, name()).prop_map(move |(blob, user)| {
        serde_json::json!({
            "target": target,
            "jupyterhub": true,
            "user": user,
            "server_name": "",
            "blob": "b".repeat(blob),
        })
        .to_string()
    })
}

/// One POST: a 400 writes nothing, a 201 writes a route that is listed as sent and whose
/// objects the API server holds; its DELETE leaves nothing.
async fn post_and_check(
    server: &ApiServer,
    namespace: &str,
    client: &ApiClient,
    memory: &ApiClient,
    spec: &str,
    url: &str,
    body: &str,
) -> Result<(), TestCaseError> {
    clear(server, namespace).await;
    let target =
        serde_json::from_str::<serde_json::Value>(body).unwrap()["target"].as_str().unwrap().to_owned();
    let answer = client.post(url, body).await;
    let status = answer.status.as_u16();
    // The memory store takes exactly what the API server takes.
    let in_memory = memory.post(url, body).await;
    prop_assert_eq!(
        in_memory.status.as_u16(),
        status,
        "{} {}: the memory store said {}, the Kubernetes store {}",
        url,
        target,
        String::from_utf8_lossy(&in_memory.body),
        String::from_utf8_lossy(&answer.body)
    );
    if in_memory.status.as_u16() == 201 {
        prop_assert_eq!(memory.delete(url).await.status.as_u16(), 204);
    }
    let key = match spec.trim_end_matches('/') {
        "" => "/",
        key => key,
    };
    let listed = client.get("/api/routes").await.json();
    match status {
        201 => {
            let route = &listed[key];
            prop_assert_eq!(
                route["target"].as_str(),
                Some(target.as_str()),
                "{} {}: listed {}",
                url,
                target,
                listed
            );
            let written = objects(server, namespace).await;
            prop_assert!(
                written.contains_key("VirtualService") || written.contains_key("HTTPRoute"),
                "{:?}",
                written
            );
            let deleted = client.delete(url).await;
            prop_assert_eq!(deleted.status.as_u16(), 204, "{} {}: {}", url, target, deleted.error());
        }
        400 => {
            prop_assert!(!answer.error().is_empty(), "a 400 says why");
            prop_assert_eq!(&listed, &serde_json::json!({}), "{} {}: refused, yet listed", url, target);
        }
        _ => prop_assert!(false, "{} {}: answered {}: {}", url, target, status, answer.error()),
    }
    let left = objects(server, namespace).await;
    prop_assert!(left.is_empty(), "{} {} (answered {}): left {:?}", url, target, status, left);
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // Each case is a few calls to the API server; PROPTEST_CASES asks for more.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/inputs_apiserver.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    }
}

/// Runs the property against one proxy on the real API server with `args`.
fn run(routing: &str, args: &'static [&'static str]) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = runtime.block_on(ApiServer::shared());
    let namespace = runtime.block_on(server.new_namespace(routing));
    let proxy = runtime.block_on(ProxyProcess::start_kubernetes(
        BIN,
        server.kubeconfig_path(),
        &namespace,
        TOKEN,
        args,
    ));
    let client = ApiClient::new(proxy.addr(), Some(TOKEN));
    let memory_proxy =
        runtime.block_on(ProxyProcess::start(BIN, &[&["--store", "memory"], args].concat(), TOKEN));
    let memory = ApiClient::new(memory_proxy.addr(), Some(TOKEN));
    let case = (spec(), any::<bool>(), any::<bool>(), target()).prop_flat_map(
        |(spec, upper, everything, target)| (Just(spec), Just(upper), Just(everything), body(target)),
    );
    proptest::test_runner::TestRunner::new(config())
        .run(&case, |(spec, upper, everything, body)| {
            let url = format!("/api/routes{}", encode(&spec, upper, everything));
            runtime.block_on(post_and_check(server, &namespace, &client, &memory, &spec, &url, &body))
        })
        .unwrap_or_else(|failure| panic!("{failure}\nproxy log:\n{}", proxy.log()));
}

#[test]
fn random_routes_on_istio_are_refused_whole_or_written_whole() {
    run("inputs-istio", &["--istio-gateway", "istio-system/jupyterhub-gateway"]);
}

#[test]
fn random_routes_on_the_gateway_api_are_refused_whole_or_written_whole() {
    run("inputs-gateway", &["--routing", "gateway-api", "--parent-ref", "istio-system/jupyterhub"]);
}
