//! testkit's fake Kubernetes API server as a process, seeded with route VirtualServices: the
//! API server of the Kubernetes-store benchmark (`bench/kube.sh`).
//!
//! ```text
//! fake-kube-server [--routes N] [--http-routes] --kubeconfig PATH
//! ```
//!
//! Listens on a free port of 127.0.0.1 (plain HTTP, no authentication), stores `N` (default
//! 10,000) VirtualServices in namespace `hub`, each as the proxy would write it for the route
//! `/user/bench-<i>` -> `http://jupyter-bench-<i>:8888` (gateway
//! `istio-system/jupyterhub-gateway`, prefix `jupyter`), with `--http-routes` the same routes as
//! the Gateway API backend's HTTPRoutes too (parent `istio-system/jupyterhub-gateway`), writes a
//! kubeconfig for it to `PATH`, prints `ready <url>` on stdout, and serves until SIGTERM or
//! SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use gateway_routes::GatewayTranslation;
use istio_routes::Translation;
use proxy_api::{RouteSpec, RoutingMode, wire};
use serde_json::json;
use testkit::fake_kube::FakeKube;
use tokio::signal::unix::{SignalKind, signal};

const NAMESPACE: &str = "hub";
const GATEWAY: &str = "istio-system/jupyterhub-gateway";
const USAGE: &str = "usage: fake-kube-server [--routes N] [--http-routes] --kubeconfig PATH";

struct Args {
    routes: usize,
    http_routes: bool,
    kubeconfig: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut routes = 10_000;
    let mut http_routes = false;
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--routes" => {
                let text = value("--routes")?;
                routes = text.parse().map_err(|_| format!("--routes: not a count: {text:?}"))?;
            }
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value("--kubeconfig")?)),
            "--http-routes" => http_routes = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let kubeconfig = kubeconfig.ok_or_else(|| format!("--kubeconfig is required\n{USAGE}"))?;
    Ok(Args { routes, http_routes, kubeconfig })
}

/// Benchmark route `i`.
fn route(i: usize) -> Result<proxy_api::Route, String> {
    let user = format!("bench-{i}");
    let spec = RouteSpec::new(&format!("/user/{user}"), RoutingMode::Path).map_err(|e| e.to_string())?;
    let body = json!({
        "target": format!("http://jupyter-{user}:8888"),
        "jupyterhub": true,
        "user": user,
        "server_name": "",
    });
    wire::route_from_body(spec, body.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// The VirtualService of benchmark route `i`, as JSON.
fn virtual_service(translation: &Translation, i: usize) -> Result<serde_json::Value, String> {
    let rendered = translation.render(&route(i)?, 0).map_err(|e| format!("route {i}: {e}"))?;
    if rendered.service_entry.is_some() {
        return Err(format!("route {i}: a service target should need no ServiceEntry"));
    }
    serde_json::to_value(&rendered.virtual_service).map_err(|e| format!("route {i}: {e}"))
}

/// The HTTPRoute of benchmark route `i`, as JSON.
fn http_route(translation: &GatewayTranslation, i: usize) -> Result<serde_json::Value, String> {
    let rendered = translation.render(&route(i)?).map_err(|e| format!("route {i}: {e}"))?;
    serde_json::to_value(&rendered.http_route).map_err(|e| format!("route {i}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("fake-kube-server: {message}");
            return ExitCode::from(2);
        }
    };
    // Install the handlers before saying "ready", so a prompt SIGTERM is not lost.
    let (mut terminate, mut interrupt) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("fake-kube-server: cannot handle signals: {e}");
                return ExitCode::FAILURE;
            }
        };

    let translation = Translation {
        namespace: NAMESPACE.to_owned(),
        gateways: vec![GATEWAY.to_owned()],
        prefix: "jupyter".to_owned(),
        ..Translation::default()
    };
    let started = Instant::now();
    let fake = FakeKube::start().await;
    for i in 0..args.routes {
        let object = match virtual_service(&translation, i) {
            Ok(object) => object,
            Err(message) => {
                eprintln!("fake-kube-server: {message}");
                return ExitCode::FAILURE;
            }
        };
        let version = translation.version.as_str();
        fake.insert(istio_routes::resources::ISTIO_GROUP, version, "virtualservices", NAMESPACE, object);
    }
    if args.http_routes {
        let gateway = GatewayTranslation {
            namespace: NAMESPACE.to_owned(),
            parent_refs: vec![GATEWAY.parse().expect("a parent reference")],
            ..GatewayTranslation::default()
        };
        for i in 0..args.routes {
            match http_route(&gateway, i) {
                Ok(object) => {
                    fake.insert("gateway.networking.k8s.io", "v1", "httproutes", NAMESPACE, object);
                }
                Err(message) => {
                    eprintln!("fake-kube-server: {message}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    fake.write_kubeconfig(&args.kubeconfig, NAMESPACE);
    eprintln!(
        "fake-kube-server: {} VirtualServices{} in namespace {NAMESPACE} seeded in {:.2} s; kubeconfig {}",
        args.routes,
        if args.http_routes { " and as many HTTPRoutes" } else { "" },
        started.elapsed().as_secs_f64(),
        args.kubeconfig.display()
    );
    println!("ready {}", fake.url());

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    eprintln!("fake-kube-server: stopping");
    ExitCode::SUCCESS
}
