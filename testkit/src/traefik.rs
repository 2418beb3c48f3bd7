//! Traefik, a Gateway API implementation, carrying real requests: the data plane the routing
//! tests send their probes through.
//!
//! Traefik is one Go program. `testkit/traefik/go.mod` is Traefik's own (the version it pins,
//! v3.6.12) with the module renamed and Traefik required, so every dependency is the one Traefik
//! was released with; the binary is built once per test process with the machine's `go` (or by
//! CI beforehand) into `<cargo target dir>/testkit-traefik/traefik`. A first build compiles for
//! about eight minutes; when it cannot be built or does not start, the test panics saying why:
//! these tests never skip.
//!
//! [`Traefik::start`] runs it against testkit's API server with its Kubernetes Gateway provider
//! on (which reads `KUBECONFIG` outside a cluster), watching one namespace, with one entry point
//! on a free loopback port. It applies the GatewayClass [`GATEWAY_CLASS`] (controller
//! `traefik.io/gateway-controller`) and a Gateway in that namespace whose one HTTP listener is
//! that entry point, and waits until Traefik says the Gateway is programmed. HTTPRoutes whose
//! parent is [`Traefik::parent_ref`] are then routed by it: send requests to [`Traefik::addr`].
//! Their backends must listen where Traefik reaches them by an EndpointSlice, which may not
//! hold a loopback address: in a [`PodNetwork`](crate::podnet::PodNetwork).
//!
//! ```no_run
//! # async fn run() {
//! let api_server = testkit::apiserver::ApiServer::shared().await;
//! let namespace = api_server.new_namespace("traefik").await;
//! let traefik = testkit::traefik::Traefik::start(api_server, &namespace).await;
//! // The proxy writes HTTPRoutes with `--parent-ref <traefik.parent_ref()>`; then:
//! let answer = traefik.get("hub.example.org", "/user/alice/").await;
//! # }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;

use crate::apiserver::ApiServer;
use crate::client::{ApiClient, ApiResponse};

/// The GatewayClass every test's Gateway is of, Traefik's.
pub const GATEWAY_CLASS: &str = "testkit-traefik";
/// The controller name Traefik's Gateway provider reconciles.
const CONTROLLER: &str = "traefik.io/gateway-controller";
/// The Gateway's name, in the test's namespace.
const GATEWAY: &str = "traefik";
/// How long Traefik may take to start and program the Gateway.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The Go package of Traefik's command, in the module `testkit/traefik/go.mod` pins.
const PACKAGE: &str = "github.com/traefik/traefik/v3/cmd/traefik";

/// A running Traefik, stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct Traefik {
    child: Child,
    addr: SocketAddr,
    namespace: String,
    log: Arc<Mutex<String>>,
    client: ApiClient,
}

/// How to run Traefik.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `--providers.providersThrottleDuration`: how long Traefik waits after a change before
    /// it applies the next. Traefik's default is 2 s; tests shorten it.
    pub throttle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { throttle: Duration::from_millis(100) }
    }
}

impl Traefik {
    /// Builds Traefik with `go build` into `<target>/testkit-traefik/traefik`, once per process,
    /// unless the binary is newer than `testkit/traefik`'s go.mod and go.sum. Returns its path.
    /// Panics, with go's output, when it cannot be built.
    pub fn build() -> PathBuf {
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        BUILT
            .get_or_init(|| {
                crate::go::build_package_if_stale(
                    "testkit/traefik",
                    PACKAGE,
                    "testkit-traefik/traefik",
                    "Traefik",
                    |_| Ok(()),
                )
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .clone()
    }

    /// Starts Traefik on `namespace` of `api_server` with [`Options::default`]: see the module's
    /// documentation.
    pub async fn start(api_server: &ApiServer, namespace: &str) -> Traefik {
        Traefik::start_with(api_server, namespace, Options::default()).await
    }

    /// Starts Traefik on `namespace` of `api_server`, applies its GatewayClass and Gateway, and
    /// waits until the Gateway is programmed. Panics, with Traefik's log, when it is not within
    /// a minute.
    pub async fn start_with(api_server: &ApiServer, namespace: &str, options: Options) -> Traefik {
        let bin = tokio::task::spawn_blocking(Traefik::build).await.expect("building Traefik");
        // The Gateway's listener must name the entry point's port up front.
        let port = crate::free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut child = Command::new(&bin)
            .env_clear()
            .env("KUBECONFIG", api_server.kubeconfig_path())
            .arg("--providers.kubernetesGateway=true")
            .arg(format!("--providers.kubernetesGateway.namespaces={namespace}"))
            .arg(format!("--providers.providersThrottleDuration={}ms", options.throttle.as_millis()))
            .arg(format!("--entryPoints.web.address={addr}"))
            .arg("--log.level=INFO")
            .arg("--log.noColor=true")
            // Traefik would call out to its vendor; tests reach nothing beyond loopback.
            .arg("--global.checkNewVersion=false")
            .arg("--global.sendAnonymousUsage=false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run Traefik ({}): {e}", bin.display()));
        let log = Arc::new(Mutex::new(String::new()));
        crate::apiserver::copy_lines(child.stdout.take().expect("piped stdout"), Arc::clone(&log), None);
        crate::apiserver::copy_lines(child.stderr.take().expect("piped stderr"), Arc::clone(&log), None);
        let mut traefik =
            Traefik { child, addr, namespace: namespace.to_owned(), log, client: ApiClient::new(addr, None) };
        traefik.apply_gateway(api_server.client(), port).await;
        traefik
    }

    async fn apply_gateway(&mut self, client: kube::Client, port: u16) {
        let class = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": CONTROLLER},
        });
        let gateway = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": self.namespace},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [{
                    "name": "web", "port": port, "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                }],
            },
        });
        let params = PatchParams::apply("testkit").force();
        let classes: Api<DynamicObject> =
            Api::all_with(client.clone(), &resource("GatewayClass", "gatewayclasses"));
        if let Err(e) = classes.patch(GATEWAY_CLASS, &params, &Patch::Apply(&class)).await {
            self.fail(&format!("applying the GatewayClass: {e}"));
        }
        let gateways: Api<DynamicObject> =
            Api::namespaced_with(client, &self.namespace, &resource("Gateway", "gateways"));
        if let Err(e) = gateways.patch(GATEWAY, &params, &Patch::Apply(&gateway)).await {
            self.fail(&format!("applying the Gateway: {e}"));
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                self.fail(&format!("Traefik exited ({status}) while starting"));
            }
            if let Ok(gateway) = gateways.get(GATEWAY).await {
                let conditions = &gateway.data["status"]["conditions"];
                let programmed = conditions.as_array().into_iter().flatten().any(|c| {
                    c["type"] == "Programmed"
                        && c["status"] == "True"
                        && c["observedGeneration"] == gateway.metadata.generation.unwrap_or_default()
                });
                if programmed {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("the Gateway was not programmed within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!("Traefik in namespace {}: {why}; its log:\n{}", self.namespace, self.log());
    }

    /// The entry point, where requests go in.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Gateway as `--parent-ref` takes it: `namespace/name`.
    pub fn parent_ref(&self) -> String {
        format!("{}/{GATEWAY}", self.namespace)
    }

    /// `GET path` through Traefik with `Host: host`; `path` is sent exactly as given.
    pub async fn get(&self, host: &str, path: &str) -> ApiResponse {
        self.client.send(http::Method::GET, path, &[("host", host)], &[]).await
    }

    /// Everything Traefik has printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        crate::apiserver::stop(&mut self.child);
    }
}

/// The Gateway API resource `kind` (`plural`), version v1.
fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "gateway.networking.k8s.io/v1".to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}
