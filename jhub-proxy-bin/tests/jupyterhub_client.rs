//! JupyterHub's own proxy client (`jupyterhub.proxy.ConfigurableHTTPProxy`, from PyPI) drives
//! the binary; every route must round-trip exactly, or JupyterHub would re-add it on every
//! check. The driver is `testkit/python/chp_client_roundtrip.py`.

use testkit::process::ProxyProcess;
use testkit::python::run_script;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "jupyterhub-client-token";

async fn drive(proxy_args: &[&str], driver_args: &[&str]) {
    let proxy = ProxyProcess::start(BIN, proxy_args, TOKEN).await;
    drive_started(&proxy, driver_args).await;
}

async fn drive_started(proxy: &ProxyProcess, driver_args: &[&str]) {
    let api_url = format!("http://{}", proxy.addr());
    let mut args: Vec<String> = vec!["--api-url".into(), api_url, "--token".into(), TOKEN.into()];
    args.extend(driver_args.iter().map(|arg| arg.to_string()));
    // The driver blocks; the proxy's log readers need the runtime meanwhile.
    let (passed, output) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script("chp_client_roundtrip.py", &args)
    })
    .await
    .unwrap();
    println!("{output}");
    assert!(passed, "JupyterHub's client failed against the proxy:\n{output}\nproxy log:\n{}", proxy.log());
    assert!(output.contains("PASS all checks"), "{output}");
}

#[tokio::test]
async fn routes_round_trip_through_jupyterhubs_client() {
    drive(&["--store", "memory"], &[]).await;
}

/// Runs the binary with the Kubernetes store, on the kubeconfig's cluster, in `namespace`.
async fn kubernetes_proxy(kubeconfig: &std::path::Path, namespace: &str) -> ProxyProcess {
    ProxyProcess::start_kubernetes(BIN, kubeconfig, namespace, TOKEN, &["--istio-gateway", "istio-system/gw"])
        .await
}

/// The same, with the Kubernetes store writing VirtualServices to testkit's fake API server.
#[tokio::test]
async fn routes_round_trip_through_the_kubernetes_store() {
    let fake = testkit::fake_kube::FakeKube::start().await;
    let kubeconfig = std::env::temp_dir().join(format!("jhub-proxy-kubeconfig-{}", std::process::id()));
    fake.write_kubeconfig(&kubeconfig, "hub");
    let proxy = kubernetes_proxy(&kubeconfig, "hub").await;
    drive_started(&proxy, &[]).await;
    // The routes went through the API server: the driver deleted what it added, and the
    // objects it wrote are gone again, no orphans.
    assert!(fake.requests().iter().any(|r| r.method == http::Method::PATCH));
    assert!(fake.objects("virtualservices").is_empty(), "{:#?}", fake.objects("virtualservices"));
    assert!(fake.objects("serviceentries").is_empty());
    let _ = std::fs::remove_file(kubeconfig);
}

/// The same on the real API server, whose schemas validate every object the driver's
/// routes become.
#[tokio::test]
async fn routes_round_trip_through_the_real_api_server() {
    let server = testkit::apiserver::ApiServer::shared().await;
    let namespace = server.new_namespace("jupyterhub-client").await;
    let proxy = kubernetes_proxy(server.kubeconfig_path(), &namespace).await;
    drive_started(&proxy, &[]).await;
    let api: kube::Api<istio_routes::resources::VirtualService> =
        kube::Api::namespaced_with(server.client(), &namespace, &istio_routes::resources::IstioVersion::V1);
    let left = api.list(&Default::default()).await.unwrap().items;
    assert!(left.is_empty(), "the driver deleted every route it added: {left:#?}");
}

#[tokio::test]
async fn host_routes_round_trip_through_jupyterhubs_client() {
    drive(&["--store", "memory", "--host-routing"], &["--host-routing"]).await;
}

const GATEWAY_API: &[&str] = &["--routing", "gateway-api", "--parent-ref", "istio-system/jupyterhub"];

/// With `--routing gateway-api`: HTTPRoutes round-trip as VirtualServices do. Its targets are
/// plain HTTP, as this backend refuses https targets (no BackendTLSPolicy yet).
#[tokio::test]
async fn gateway_api_routes_round_trip_through_jupyterhubs_client() {
    let memory = [&["--store", "memory"], GATEWAY_API].concat();
    drive(&memory, &["--plain-http"]).await;
    drive(&[memory.as_slice(), &["--host-routing"]].concat(), &["--host-routing", "--plain-http"]).await;
}

/// The same through the real API server: HTTPRoutes, and a Service and EndpointSlice for each
/// pod IP, all gone again once the driver has deleted its routes.
#[tokio::test]
async fn gateway_api_routes_round_trip_through_the_real_api_server() {
    let server = testkit::apiserver::ApiServer::shared().await;
    let namespace = server.new_namespace("jupyterhub-client-gw").await;
    let proxy =
        ProxyProcess::start_kubernetes(BIN, server.kubeconfig_path(), &namespace, TOKEN, GATEWAY_API).await;
    drive_started(&proxy, &["--plain-http"]).await;
    let client = server.client();
    let routes: kube::Api<gateway_routes::HttpRoute> = kube::Api::namespaced(client.clone(), &namespace);
    let slices: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        kube::Api::namespaced(client.clone(), &namespace);
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(client, &namespace);
    let params = kube::api::ListParams::default();
    assert!(routes.list(&params).await.unwrap().items.is_empty(), "every HTTPRoute deleted");
    assert!(slices.list(&params).await.unwrap().items.is_empty(), "every EndpointSlice deleted");
    assert!(services.list(&params).await.unwrap().items.is_empty(), "every Service deleted");
}
