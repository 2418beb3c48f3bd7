//! The binary as a drop-in for configurable-http-proxy in Zero to JupyterHub's own proxy pod:
//! started by the name `configurable-http-proxy`, with the exact command line and environment
//! z2jh 4.4.0 renders for that pod in each of its HTTPS modes (`tests/fixtures/z2jh-4.4.0.yaml`),
//! on the real API server. In each: it starts, z2jh's probes answer where z2jh sends them (port
//! and scheme), JupyterHub's own proxy client works on the port z2jh's `proxy-api` Service
//! targets, and the routes land as VirtualServices bound to the gateway from `extraEnv`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use istio_routes::resources::{IstioVersion, VirtualService};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use testkit::client::ApiClient;
use testkit::process::ProxyProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "z2jh-drop-in-token";

#[derive(Debug, Deserialize)]
struct Fixture {
    modes: Vec<Mode>,
}

/// What z2jh renders for its proxy pod with some values.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mode {
    name: String,
    values: String,
    service_account_name: Option<String>,
    container: Container,
}

fn fixture() -> Fixture {
    let path = testkit::manifest_dir().join("tests/fixtures/z2jh-4.4.0.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the fixture is z2jh's containers")
}

fn tls_dir() -> PathBuf {
    testkit::manifest_dir().join("tests/fixtures/tls")
}

/// The value of `--name=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().find_map(|arg| arg.strip_prefix(&format!("--{name}=")))
}

/// The number of the container's port called `name`.
fn container_port(container: &Container, name: &str) -> u16 {
    let ports = container.ports.as_deref().unwrap_or_default();
    let port =
        ports.iter().find(|p| p.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("no port {name}"));
    u16::try_from(port.container_port).unwrap()
}

/// The command line as the kubelet runs it, with what this test changes, and only that: the
/// Service link variable `HUB_SERVICE_PORT` (z2jh's Service `hub`) expanded as the kubelet
/// expands `$(VAR)`, free ports for `--port` and `--api-port` (0), and the TLS Secret's mount,
/// `/etc/chp/tls`, at the test's certificate.
fn kubelet_args(container: &Container) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    assert_eq!(command.first().map(String::as_str), Some("configurable-http-proxy"), "z2jh's command");
    let args = command[1..].iter().chain(container.args.iter().flatten());
    let tls = format!("{}/", tls_dir().display());
    args.map(|arg| {
        let arg = arg.replace("$(HUB_SERVICE_PORT)", "8081").replace("/etc/chp/tls/", &tls);
        match arg.split_once('=') {
            Some(("--port" | "--api-port", _)) => format!("{}=0", arg.split_once('=').unwrap().0),
            _ => arg,
        }
    })
    .collect()
}

/// z2jh's probe of the container: both are the same GET.
fn probe(container: &Container) -> HTTPGetAction {
    let get = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe.as_ref().and_then(|p| p.http_get.clone()).expect("z2jh's probes are GETs")
    };
    let (liveness, readiness) = (get(&container.liveness_probe), get(&container.readiness_probe));
    assert_eq!(liveness, readiness);
    liveness
}

/// `GET path` over HTTPS, trusting only the test's CA: the status.
async fn https_get(port: u16, path: &str) -> u16 {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(tls_dir().join("ca.crt")).unwrap()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls =
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("a TLS handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{answer}"))
}

/// The address and scheme of the probe listener, from the binary's log.
fn probe_listener(log: &str) -> (String, SocketAddr) {
    let line =
        log.lines().find(|l| l.contains("serving probes (/_chp_healthz) on ")).expect("a probe listener");
    let (_, url) = line.split_once(" on ").unwrap();
    let (scheme, rest) = url.split_once("://").unwrap();
    let addr = rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap();
    (scheme.to_owned(), addr.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn z2jhs_proxy_pod_runs_this_binary_in_every_https_mode() {
    let server = testkit::apiserver::ApiServer::shared().await;
    // The image's second name, as the Dockerfile makes it.
    let bin_dir = std::env::temp_dir().join(format!("jhub-proxy-z2jh-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).unwrap();
    let chp = bin_dir.join("configurable-http-proxy");
    let _ = std::fs::remove_file(&chp);
    std::os::unix::fs::symlink(BIN, &chp).unwrap();

    let fixture = fixture();
    let names: Vec<&str> = fixture.modes.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["https-disabled", "offload", "letsencrypt", "manual", "secret", "debug-subdomain"]);
    for mode in &fixture.modes {
        let what = format!("{} ({})", mode.name, mode.values);
        // z2jh 4.x gives its proxy pod no ServiceAccount: our chart's mode z2jh binds `default`.
        assert_eq!(mode.service_account_name, None, "{what}");
        let container = &mode.container;
        let namespace = server.new_namespace("z2jh").await;
        let args = kubelet_args(container);
        let mut command = Command::new(&chp);
        command.env_clear().args(&args);
        // In the pod: the service account's token and namespace, here the API server's.
        command.env("KUBECONFIG", server.kubeconfig_path()).env("K8S_NAMESPACE", &namespace);
        let mut gateway = None;
        for var in container.env.iter().flatten() {
            match (&var.value, &var.value_from) {
                (Some(value), None) => {
                    if var.name == "ISTIO_GATEWAY" {
                        gateway = Some(value.clone());
                    }
                    command.env(&var.name, value);
                }
                (None, Some(from)) => {
                    let key = from.secret_key_ref.as_ref().expect("a Secret's key");
                    assert_eq!(
                        (var.name.as_str(), key.key.as_str()),
                        ("CONFIGPROXY_AUTH_TOKEN", "hub.config.ConfigurableHTTPProxy.auth_token")
                    );
                    command.env(&var.name, TOKEN);
                }
                other => panic!("{what}: env {} is {other:?}", var.name),
            }
        }
        let mut proxy = ProxyProcess::spawn(command).await;
        let log = proxy.log();

        // The probes: where z2jh's point (port and scheme), answered by the probe listener.
        let get = probe(container);
        let IntOrString::String(port_name) = &get.port else { panic!("{what}: a named port") };
        let scheme = get.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let rendered_args: Vec<String> = container.command.iter().flatten().cloned().collect();
        assert_eq!(
            flag(&rendered_args, "port").map(str::parse::<u16>),
            Some(Ok(container_port(container, port_name))),
            "{what}: z2jh probes the port it passes as --port"
        );
        let (served, probes) = probe_listener(&log);
        assert_eq!(served, scheme, "{what}: the probe listener's scheme is the probes'");
        let path = get.path.as_deref().unwrap();
        testkit::eventually(&format!("{what}: {path} answers 200"), || async {
            match scheme.as_str() {
                "https" => https_get(probes.port(), path).await == 200,
                _ => {
                    ApiClient::new(SocketAddr::from(([127, 0, 0, 1], probes.port())), None)
                        .get(path)
                        .await
                        .status
                        == 200
                }
            }
        })
        .await;

        // The API: where z2jh's Service proxy-api sends the hub (its port `api`).
        assert_eq!(
            flag(&rendered_args, "api-port").map(str::parse::<u16>),
            Some(Ok(container_port(container, "api")))
        );
        let api_addr = SocketAddr::from(([127, 0, 0, 1], proxy.addr().port()));
        let host_routing = args.iter().any(|arg| arg == "--host-routing");
        let mut driver = vec![
            "--api-url".to_owned(),
            format!("http://{api_addr}"),
            "--token".to_owned(),
            TOKEN.to_owned(),
        ];
        if host_routing {
            driver.push("--host-routing".to_owned());
        }
        let (passed, output) = tokio::task::spawn_blocking(move || {
            let driver: Vec<&str> = driver.iter().map(String::as_str).collect();
            testkit::python::run_script("chp_client_roundtrip.py", &driver)
        })
        .await
        .unwrap();
        assert!(
            passed && output.contains("PASS all checks"),
            "{what}: JupyterHub's client:\n{output}\nlog:\n{}",
            proxy.log()
        );

        // A route as the hub adds it lands as a VirtualService bound to the gateway.
        let api = ApiClient::new(api_addr, Some(TOKEN));
        let spec = if host_routing { "/hub.example.org/user/alice/" } else { "/user/alice/" };
        let added = api
            .post(&format!("/api/routes{spec}"), r#"{"target": "http://10.0.0.7:8888", "user": "alice"}"#)
            .await;
        assert_eq!(added.status, 201, "{what}: {}", added.error());
        let virtual_services: kube::Api<VirtualService> =
            kube::Api::namespaced_with(server.client(), &namespace, &IstioVersion::V1);
        let listed = virtual_services.list(&Default::default()).await.unwrap().items;
        let [object] = &listed[..] else { panic!("{what}: one VirtualService, not {listed:#?}") };
        let spec_json = serde_json::to_value(&object.spec).unwrap();
        assert_eq!(spec_json["gateways"], serde_json::json!([gateway.clone().unwrap()]), "{what}");

        // The flags that do not apply are named once.
        let ignored: Vec<&str> =
            log.lines().filter(|l| l.contains("do not apply to a proxy carrying no traffic")).collect();
        let [line] = &ignored[..] else { panic!("{what}: one line naming the ignored flags:\n{log}") };
        assert!(line.contains("--default-target --error-target"), "{what}: {line}");
        let redirects = rendered_args.iter().any(|a| a.starts_with("--redirect-port="));
        assert_eq!(line.contains("--redirect-port --redirect-to"), redirects, "{what}: {line}");

        assert_eq!(proxy.terminate(Duration::from_secs(30)).await.and_then(|s| s.code()), Some(0), "{what}");
        if mode.name == "debug-subdomain" {
            assert!(proxy.log().contains("DEBUG"), "{what}: --log-level=debug");
        }
    }
    let _ = std::fs::remove_dir_all(&bin_dir);
}
