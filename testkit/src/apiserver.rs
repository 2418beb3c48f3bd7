//! A real Kubernetes API server for tests: the Go program in `testkit/apiserver`, which runs
//! kube-apiserver itself (`k8s.io/kubernetes` at the version `testkit/apiserver/go.mod` pins,
//! started in process by Kubernetes' own integration-test server) over an embedded etcd, with
//! Istio's and the Gateway API's CRDs installed and Established. The CRDs come from the Go
//! modules that publish them, at the versions the same go.mod pins: every Istio CRD from
//! `istio.io/api` (`kubernetes/customresourcedefinitions.gen.yaml`), and the Gateway API's
//! standard GatewayClass, Gateway, HTTPRoute, ReferenceGrant, GRPCRoute and BackendTLSPolicy
//! from `sigs.k8s.io/gateway-api` (`config/crd/standard/`).
//!
//! It serves what a cluster's API server serves: core objects (Namespaces, Services,
//! EndpointSlices, ...), RBAC (authorization `Node,RBAC`) and the default admission plugins
//! but ServiceAccount's. So namespaces are real: [`ApiServer::new_namespace`] creates one, and
//! a write into a namespace that does not exist gets 404, as in a cluster. No
//! kube-controller-manager runs: nothing is garbage-collected by owner references, a deleted
//! namespace stays Terminating, and Services with selectors get no EndpointSlices.
//!
//! A server of its own ([`ApiServer::start`]) can be stopped and started again at the same
//! address with the same objects ([`ApiServer::stop`], [`ApiServer::restart`]), for tests of
//! an outage. The admin's kubeconfig is in `system:masters`; there is also one for a user bound
//! to a ClusterRole that may only get, list and watch ([`ApiServer::readonly_kube_config`]),
//! for tests of denied writes, and one can be written that impersonates any user, such as a
//! ServiceAccount under a Role the test applied ([`ApiServer::impersonating_kubeconfig`]).
//!
//! The binary is built once per test process with the machine's `go` (or by CI beforehand)
//! into `<cargo target dir>/testkit-apiserver/kube-apiserver`, with the version stamped in, so
//! that `/version` answers the release go.mod pins; when it cannot be built or does not start,
//! the test panics with why: these tests never skip. A first build takes about ten minutes
//! and 3 GB of Go's build cache; later ones take seconds.
//!
//! ```no_run
//! # async fn run() {
//! let server = testkit::apiserver::ApiServer::shared().await;
//! let client = kube::Client::try_from(server.kube_config()).unwrap();
//! let namespace = server.new_namespace("schema").await;
//! # }
//! ```

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long the server may take to start, install the CRDs and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running API server, stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct ApiServer {
    child: Mutex<Option<Child>>,
    launch: Launch,
    config: kube::Config,
    log: Arc<Mutex<String>>,
    namespaces: AtomicU32,
    /// The kubeconfigs [`ApiServer::impersonating_kubeconfig`] wrote, removed when dropped.
    impersonations: Mutex<Vec<PathBuf>>,
}

/// What the server is started with, the same on a restart.
#[derive(Debug, Clone)]
struct Launch {
    kubeconfig: PathBuf,
    readonly_kubeconfig: PathBuf,
    /// Where etcd keeps the objects; `None` lets the server use a temporary folder it removes
    /// when it exits, and then it cannot be restarted.
    data_dir: Option<PathBuf>,
    port: u16,
}

impl ApiServer {
    /// The API server this test process shares, started by the first caller. It is never
    /// dropped: it stops when this process exits, because it watches its stdin, a pipe from us.
    /// It keeps its data in a temporary folder of its own, so it cannot be restarted.
    pub async fn shared() -> &'static ApiServer {
        static SHARED: tokio::sync::OnceCell<ApiServer> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(|| ApiServer::launch(Launch::new(false))).await
    }

    /// Builds the binary if needed and starts a new API server, waiting until it is ready.
    /// Panics, with its output, when it cannot be built or does not get ready in 120 s.
    pub async fn start() -> ApiServer {
        ApiServer::launch(Launch::new(true)).await
    }

    async fn launch(launch: Launch) -> ApiServer {
        let log = Arc::new(Mutex::new(String::new()));
        let child = spawn(&launch, &log).await;
        let config = kube_config(&launch.kubeconfig).await;
        ApiServer {
            child: Mutex::new(Some(child)),
            launch,
            config,
            log,
            namespaces: AtomicU32::new(0),
            impersonations: Mutex::default(),
        }
    }

    /// Stops the server (SIGTERM, waited for), keeping its objects for [`ApiServer::restart`].
    /// Its clients see connections refused.
    pub async fn stop(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            tokio::task::spawn_blocking(move || stop(&mut child)).await.expect("stopping the API server");
        }
    }

    /// Starts the stopped server again, at the same address, with the same credentials and
    /// objects, and waits until it is ready. Panics for the [`ApiServer::shared`] server.
    pub async fn restart(&self) {
        assert!(self.launch.data_dir.is_some(), "the shared API server cannot be restarted");
        self.stop().await;
        let child = spawn(&self.launch, &self.log).await;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    /// Builds `testkit/apiserver` with `go build` into
    /// `<target>/testkit-apiserver/kube-apiserver`, once per process, unless the binary is
    /// newer than its sources. Returns its path. Panics, with go's output, when it cannot be
    /// built.
    pub fn build() -> PathBuf {
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        BUILT.get_or_init(Self::build_if_stale).clone()
    }

    fn build_if_stale() -> PathBuf {
        crate::go::build_if_stale_with(
            "testkit/apiserver",
            "testkit-apiserver/kube-apiserver",
            "the test API server",
            |go| {
                // As .ci/run builds it: the test server finds its fixtures through its source
                // path, which -trimpath would remove.
                let flags = std::env::var("GOFLAGS").unwrap_or_default().replace("-trimpath", "");
                go.env("GOFLAGS", flags).arg("-ldflags").arg(version_ldflags(&kubernetes_version()?)?);
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A kube-rs configuration for this server.
    pub fn kube_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A kube-rs client for this server, on the current tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config()).expect("a client for the test API server")
    }

    /// Where the server's kubeconfig is.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.launch.kubeconfig
    }

    /// Where the kubeconfig of a user who may only get, list and watch is (a ClusterRole bound
    /// to it); the server answers its other requests 403 Forbidden, as RBAC does.
    pub fn readonly_kubeconfig_path(&self) -> &Path {
        &self.launch.readonly_kubeconfig
    }

    /// A kube-rs configuration for the user who may only get, list and watch.
    pub async fn readonly_kube_config(&self) -> kube::Config {
        kube_config(&self.launch.readonly_kubeconfig).await
    }

    /// Creates a Namespace no other caller of this server gets, named starting with `prefix`
    /// (made a DNS label), and returns its name. Panics when the server refuses it.
    pub async fn new_namespace(&self, prefix: &str) -> String {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let mut prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(50)
            .collect();
        if prefix.is_empty() || !prefix.starts_with(|c: char| c.is_ascii_alphabetic()) {
            prefix.insert(0, 't');
        }
        let name = format!("{}-{n}", prefix.trim_end_matches('-'));
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        kube::Api::<Namespace>::all(self.client())
            .create(&Default::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating the namespace {name}: {e}\n{}", self.log()));
        name
    }

    /// Writes a kubeconfig with the admin's credentials that acts as `user` in `groups` (its
    /// `as` and `as-groups`, as `kubectl --as`), and returns its path, a file removed with the
    /// server. The server authorizes each request as that user, so a test sees exactly what
    /// RBAC grants, say, `system:serviceaccount:<namespace>:<name>` (in the groups
    /// `system:serviceaccounts` and `system:serviceaccounts:<namespace>`).
    pub fn impersonating_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let mut file = Kubeconfig::read_from(&self.launch.kubeconfig).expect("the server's kubeconfig reads");
        for auth in &mut file.auth_infos {
            let info = auth.auth_info.get_or_insert_with(Default::default);
            info.impersonate = Some(user.to_string());
            info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        }
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let path = self
            .launch
            .kubeconfig
            .with_extension(format!("as-{}.kubeconfig", COUNT.fetch_add(1, Ordering::Relaxed)));
        // JSON is YAML, which every kubeconfig reader takes.
        let text = serde_json::to_vec_pretty(&file).expect("a kubeconfig serialises");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.impersonations.lock().unwrap_or_else(|e| e.into_inner()).push(path.clone());
        path
    }

    /// What the server printed so far, stdout and stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.get_mut().unwrap_or_else(|e| e.into_inner()) {
            stop(child);
        }
        let _ = std::fs::remove_file(&self.launch.kubeconfig);
        let _ = std::fs::remove_file(&self.launch.readonly_kubeconfig);
        for path in self.impersonations.get_mut().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = &self.launch.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Launch {
    /// Paths no other server uses, and a free port; a data folder when `restartable`.
    fn new(restartable: bool) -> Launch {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "testkit-apiserver-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        // The server binds it again at once; another process taking it in between is unlikely
        // on loopback, and would fail the start loudly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        Launch {
            kubeconfig: base.with_extension("kubeconfig"),
            readonly_kubeconfig: base.with_extension("readonly.kubeconfig"),
            data_dir: restartable.then(|| base.with_extension("data")),
            port,
        }
    }
}

/// Starts the server and waits until it is ready; its output goes to `log`.
async fn spawn(launch: &Launch, log: &Arc<Mutex<String>>) -> Child {
    let launch = launch.clone();
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || spawn_blocking(&launch, log)).await.expect("starting the API server")
}

fn spawn_blocking(launch: &Launch, log: Arc<Mutex<String>>) -> Child {
    let bin = ApiServer::build();
    let mut command = Command::new(&bin);
    command
        .arg("--kubeconfig")
        .arg(&launch.kubeconfig)
        .arg("--readonly-kubeconfig")
        .arg(&launch.readonly_kubeconfig)
        .arg("--crds")
        .arg(crd_paths())
        .arg("--port")
        .arg(launch.port.to_string())
        .arg("--exit-on-stdin-eof");
    if let Some(dir) = &launch.data_dir {
        command.arg("--data-dir").arg(dir);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    copy_lines(stdout, Arc::clone(&log), Some(ready_tx));
    copy_lines(stderr, Arc::clone(&log), None);
    match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(()) => child,
        Err(e) => {
            let status = stop(&mut child);
            // The readers finish at end of file, soon after the process exits.
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the test API server ({}) did not get ready ({e}); it exited with {status:?}. Its output:\n{}",
                bin.display(),
                log.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
    }
}

async fn kube_config(path: &Path) -> kube::Config {
    let file = Kubeconfig::read_from(path).expect("the server's kubeconfig reads");
    kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("the server's kubeconfig is a kube-rs configuration")
}

/// Stops a child process: SIGTERM, then SIGKILL after 20 s. Returns how it exited.
pub(crate) fn stop(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Copies the lines of `from` into `log` on a thread; the first `ready ` line is signalled.
pub(crate) fn copy_lines(
    from: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<()>>,
) {
    std::thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ready ")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// The release of `k8s.io/kubernetes` that `testkit/apiserver/go.mod` pins (`v1.37.2`), which
/// the binary is stamped with: `go list -m` reads it, as `.ci/run` does.
fn kubernetes_version() -> Result<String, String> {
    let output = Command::new("go")
        .args(["list", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes"])
        .current_dir(crate::workspace_root().join("testkit/apiserver"))
        .output()
        .map_err(|e| {
            format!("cannot run `go list` for the Kubernetes version (install Go; see .ci/run): {e}")
        })?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || version.is_empty() {
        return Err(format!(
            "`go list -m k8s.io/kubernetes` in testkit/apiserver failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(version)
}

/// The linker flags that make the binary's `/version` say `version` (`vMAJOR.MINOR.PATCH`), as
/// Kubernetes' own build stamps `k8s.io/component-base/version`; unstamped it says
/// `v0.0.0-master`.
fn version_ldflags(version: &str) -> Result<String, String> {
    let mut parts = version.strip_prefix('v').unwrap_or(version).split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return Err(format!("the Kubernetes version {version:?} is not vMAJOR.MINOR.PATCH"));
    };
    let var = "k8s.io/component-base/version";
    Ok(format!(
        "-X {var}.gitVersion={version} -X {var}.gitMajor={major} -X {var}.gitMinor={minor} -X {var}.gitTreeState=clean"
    ))
}

/// The Gateway API's standard CRDs the server installs, in `config/crd/standard/`: ours, and
/// the rest of what Traefik's Gateway provider watches (`testkit::traefik`).
const GATEWAY_API_CRDS: &[&str] =
    &["gatewayclasses", "gateways", "httproutes", "referencegrants", "grpcroutes", "backendtlspolicies"];

/// The CRD files to install, comma-separated for `--crds`: found once per process with
/// `go mod download`, which fetches the modules into Go's module cache if needed.
fn crd_paths() -> String {
    static PATHS: OnceLock<String> = OnceLock::new();
    PATHS.get_or_init(|| find_crds().unwrap_or_else(|e| panic!("{e}"))).clone()
}

fn find_crds() -> Result<String, String> {
    let source = crate::workspace_root().join("testkit/apiserver");
    let output = Command::new("go")
        .args(["mod", "download", "-json", "istio.io/api", "sigs.k8s.io/gateway-api"])
        .current_dir(&source)
        .output()
        .map_err(|e| format!("cannot run `go mod download` for the CRDs (install Go; see .ci/run): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`go mod download` of the CRD modules failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let dir = |module: &str| -> Result<PathBuf, String> {
        serde_json::Deserializer::from_slice(&output.stdout)
            .into_iter::<serde_json::Value>()
            .filter_map(Result::ok)
            .find(|m| m["Path"] == module)
            .and_then(|m| m["Dir"].as_str().map(PathBuf::from))
            .ok_or_else(|| format!("`go mod download` named no folder for {module}"))
    };
    let istio = dir("istio.io/api")?.join("kubernetes/customresourcedefinitions.gen.yaml");
    let standard = dir("sigs.k8s.io/gateway-api")?.join("config/crd/standard");
    let gateway_api =
        GATEWAY_API_CRDS.iter().map(|name| standard.join(format!("gateway.networking.k8s.io_{name}.yaml")));
    let files: Vec<PathBuf> = std::iter::once(istio).chain(gateway_api).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(format!("the CRD file {} is not in its module", missing.display()));
    }
    Ok(files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_serves_the_crds_and_stops_when_dropped() {
        let server = ApiServer::start().await;
        let kubeconfig = server.kubeconfig_path().to_path_buf();
        let crds: kube::Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = kube::Api::all(server.client());
        let listed = crds.list(&Default::default()).await.expect("list CRDs").items;
        let served = |name: &str| -> Vec<String> {
            let crd = listed.iter().find(|c| c.metadata.name.as_deref() == Some(name));
            let crd = crd.unwrap_or_else(|| panic!("{name} is not installed"));
            crd.spec.versions.iter().filter(|v| v.served).map(|v| v.name.clone()).collect()
        };
        // What the tests rely on: Istio's networking v1, and the Gateway API's standard v1.
        for name in ["virtualservices", "serviceentries", "gateways"] {
            assert!(served(&format!("{name}.networking.istio.io")).contains(&"v1".into()), "{name}");
        }
        for name in GATEWAY_API_CRDS {
            assert!(served(&format!("{name}.gateway.networking.k8s.io")).contains(&"v1".into()), "{name}");
        }
        assert_ne!(server.new_namespace("a").await, server.new_namespace("a").await);
        // kube-apiserver, stamped with the release go.mod pins, not v0.0.0-master.
        let version = server.client().apiserver_version().await.expect("/version");
        assert_eq!(version.git_version, kubernetes_version().unwrap(), "{version:?}");
        let pid = server.child.lock().unwrap().as_ref().unwrap().id();
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the server exited");
        assert!(!kubeconfig.exists(), "dropping the server removed its kubeconfig");
    }

    fn virtual_services(client: kube::Client, namespace: &str) -> kube::Api<kube::api::DynamicObject> {
        let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
        kube::Api::namespaced_with(client, namespace, &resource)
    }

    fn virtual_service(name: &str) -> kube::api::DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": ["*"]},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn namespaces_are_real_and_core_objects_are_served() {
        let server = ApiServer::shared().await;
        let namespace = server.new_namespace("core").await;
        let namespaces: kube::Api<Namespace> = kube::Api::all(server.client());
        let created = namespaces.get(&namespace).await.expect("new_namespace created it");
        assert_eq!(created.status.and_then(|s| s.phase).as_deref(), Some("Active"));

        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hub"},
            "spec": {"ports": [{"port": 8081}], "selector": {"app": "hub"}},
        }))
        .unwrap();
        let services = kube::Api::namespaced(server.client(), &namespace);
        let created = services.create(&Default::default(), &service).await.expect("a Service");
        // The server allocates from the test server's service range.
        let ip = created.spec.and_then(|s| s.cluster_ip).expect("a cluster IP");
        assert!(ip.starts_with("10.0."), "{ip}");

        // NamespaceLifecycle admission: a write into a namespace that does not exist is 404.
        let missing = virtual_services(server.client(), "no-such-namespace");
        match missing.create(&Default::default(), &virtual_service("lost")).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 404, "{status:?}");
                assert!(status.message.contains("namespaces \"no-such-namespace\" not found"), "{status:?}");
            }
            other => panic!("a create in a missing namespace answered {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_impersonated_service_account_gets_what_rbac_grants_it() {
        let server = ApiServer::shared().await;
        let namespace = server.new_namespace("impersonate").await;
        let user = format!("system:serviceaccount:{namespace}:proxy");
        let path = server.impersonating_kubeconfig(&user, &["system:serviceaccounts"]);
        let file = Kubeconfig::read_from(&path).expect("the kubeconfig written reads");
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await.unwrap();
        let api = virtual_services(kube::Client::try_from(config).unwrap(), &namespace);
        match api.list(&Default::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{status:?}");
                assert!(status.message.contains(&format!("\"{user}\" cannot list")), "{status:?}");
            }
            other => panic!("a ServiceAccount without a Role listed: {other:?}"),
        }

        let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"], "verbs": ["list"]}],
        }))
        .unwrap();
        let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "proxy", "namespace": namespace}],
        }))
        .unwrap();
        kube::Api::namespaced(server.client(), &namespace).create(&Default::default(), &role).await.unwrap();
        kube::Api::namespaced(server.client(), &namespace)
            .create(&Default::default(), &binding)
            .await
            .unwrap();
        // The authorizer follows RBAC objects through a watch: allowed within moments.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = api.list(&Default::default()).await {
            assert!(Instant::now() < deadline, "still denied after the RoleBinding: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let denied = api.create(&Default::default(), &virtual_service("no")).await.expect_err("only list");
        assert!(matches!(&denied, kube::Error::Api(s) if s.code == 403), "{denied:?}");
    }

    #[tokio::test]
    async fn a_restarted_server_keeps_its_address_credentials_and_objects() {
        let server = ApiServer::start().await;
        let namespace = server.new_namespace("restart").await;
        let api = virtual_services(server.client(), &namespace);
        let created = api.create(&Default::default(), &virtual_service("kept")).await.expect("create");

        server.stop().await;
        let error = api.list(&Default::default()).await.expect_err("nothing answers while stopped");
        assert!(matches!(error, kube::Error::HyperError(_) | kube::Error::Service(_)), "{error:?}");

        server.restart().await;
        // The same client, built before the restart, reads what was written before it.
        let kept = api.get("kept").await.unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
        assert_eq!(kept.metadata.uid, created.metadata.uid);
    }

    #[tokio::test]
    async fn the_readonly_user_reads_and_is_forbidden_to_write() {
        let server = ApiServer::shared().await;
        let namespace = server.new_namespace("readonly").await;
        let admin = virtual_services(server.client(), &namespace);
        admin.create(&Default::default(), &virtual_service("seen")).await.expect("the admin writes");
        let client = kube::Client::try_from(server.readonly_kube_config().await).unwrap();
        let reader = virtual_services(client, &namespace);
        let listed = reader.list(&Default::default()).await.expect("the read-only user lists");
        assert_eq!(listed.items.len(), 1);
        match reader.delete("seen", &Default::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{status:?}");
                assert!(status.message.contains("cannot delete"), "{status:?}");
            }
            other => panic!("a delete by the read-only user answered {other:?}"),
        }
        admin.get("seen").await.expect("still there");
    }
}
