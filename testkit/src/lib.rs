//! What the tests of jupyterhub-istio-proxy share.
//!
//! - [`istio_model`]: how an Istio gateway routes a request through VirtualServices, and
//!   [`chp`]: how configurable-http-proxy would route it; property tests compare the two.
//! - [`gateway_model`]: how a conforming Gateway API implementation routes a request through
//!   HTTPRoutes, written from the specification, for the Gateway API backend.
//! - [`oracle`]: where Istio's own control plane, built from `testkit/oracle` with Go, and
//!   Envoy's matching rules send a request: the judge of the model and of our objects.
//! - [`client`]: an HTTP client for the routes API, and raw requests for what a well-behaved
//!   client would never send.
//! - [`apiserver`]: a real Kubernetes API server (kube-apiserver over an embedded etcd, built
//!   from `testkit/apiserver` with Go), with RBAC, admission, real namespaces and the Istio
//!   and Gateway API CRDs.
//! - [`echo`]: a server answering with its name and the path it was sent, for tests whose
//!   judge is a real gateway.
//! - [`fake_kube`]: a fake Kubernetes API server for kube-rs clients, with failure injection.
//! - [`metrics`]: a Prometheus scrape read back into samples.
//! - [`process`]: the proxy binary as a child process, with its log.
//! - [`python`]: a virtualenv with JupyterHub from PyPI, whose own proxy client drives ours.
//! - [`jupyterhub`]: a real JupyterHub from that venv, spawning mock servers, driven through
//!   its REST API, for end-to-end tests.
//! - [`helm`]: Helm, built from Go modules, to render the chart in `deploy/helm`.
//! - [`prometheus`]: a real Prometheus scraping an exporter of Istio's request metrics that
//!   the test drives, as a gateway's traffic would.
//! - [`podnet`]: a pod network (a network namespace joined by a veth pair) where the servers a
//!   gateway reaches listen, as pods would.
//! - [`traefik`]: Traefik, a Gateway API implementation built from Go modules, carrying real
//!   requests to servers in the pod network through the HTTPRoutes we write.
//! - [`mesh`]: a hub's objects, ours and the Go proxy's, to measure what they cost the mesh.
//!
//! ```no_run
//! use testkit::{client::ApiClient, process::ProxyProcess};
//!
//! # async fn run() {
//! let proxy = ProxyProcess::start("target/debug/jupyterhub-istio-proxy", &["--store", "memory"], "secret").await;
//! let api = ApiClient::new(proxy.addr(), Some("secret"));
//! let response = api.get("/api/routes").await;
//! assert_eq!(response.status, 200);
//! # }
//! ```
#![deny(missing_docs)]

pub mod apiserver;
pub mod chp;
pub mod client;
pub mod echo;
pub mod fake_kube;
pub mod gateway_model;
mod go;
pub mod helm;
pub mod istio_model;
pub mod jupyterhub;
pub mod mesh;
pub mod metrics;
pub mod oracle;
pub mod podnet;
pub mod process;
pub mod prometheus;
pub mod python;
pub mod traefik;

/// The folder of the package whose tests are running.
///
/// Read at run time (cargo sets `CARGO_MANIFEST_DIR` for the tests it runs; the current folder
/// otherwise), never with `env!`: CI builds each fresh clone in a new folder over a warm cache,
/// and cargo then reuses a build whose compile-time paths name the previous, maybe deleted, clone.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("the current folder"))
}

/// The root of this workspace, for finding its scripts, fixtures and target folder: the
/// nearest folder above [`manifest_dir`] that holds `testkit/`.
pub fn workspace_root() -> std::path::PathBuf {
    let start = manifest_dir();
    start
        .ancestors()
        .find(|dir| dir.join("testkit/Cargo.toml").is_file())
        .unwrap_or_else(|| panic!("no workspace with testkit/ above {}", start.display()))
        .to_path_buf()
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after 15 s. For what
/// arrives asynchronously, such as a watch event.
pub async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !condition().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls `condition` every 50 ms until it holds, for up to `limit`; answers how long it took,
/// or panics naming `what`. For a test that reports how soon something happened (a repair).
pub async fn within<F: Future<Output = bool>>(
    what: &str,
    limit: std::time::Duration,
    mut condition: impl FnMut() -> F,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !condition().await {
        assert!(started.elapsed() < limit, "not {what} within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// A loopback port that was free a moment ago, for a program that must be told its port up
/// front (JupyterHub's hub, Traefik's entry point). In a pod network of the test's own every
/// port is free.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// The cargo target dir this test binary was built into (`<target>/<profile>/deps/<test>`),
/// where tools the tests build are cached.
pub fn target_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The `main` of a benchmark binary: its arguments parsed (a usage error exits 2), then the run
/// (a failure exits 1, with `name` and why).
pub async fn bench_main<A, F>(
    name: &str,
    usage: &str,
    args: Result<A, String>,
    run: impl FnOnce(A) -> F,
) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let args = match args {
        Ok(args) => args,
        Err(why) => {
            eprintln!("{why}\n{usage}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("{name}: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}
