//! A real Kubernetes API server for tests: the Go program in `testkit/apiserver`, which runs
//! apiextensions-apiserver's test server over an embedded etcd, with the CRDs of
//! `../shared/crds` installed and Established.
//!
//! It serves CRDs and custom resources, not core/v1: there are no Namespace objects, and a
//! namespaced custom resource can be created in any namespace (admission is off), so
//! [`ApiServer::new_namespace`] only hands out a fresh name.
//!
//! The binary is built once per test process with the machine's `go` (or by CI beforehand)
//! into `<cargo target dir>/testkit-apiserver/apiserver`; when it cannot be built or does not
//! start, the test panics with why: these tests never skip.
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
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long the server may take to start, install the CRDs and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running API server, stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct ApiServer {
    child: Mutex<Child>,
    kubeconfig: PathBuf,
    config: kube::Config,
    log: Arc<Mutex<String>>,
    namespaces: AtomicU32,
}

impl ApiServer {
    /// The API server this test process shares, started by the first caller. It is never
    /// dropped: it stops when this process exits, because it watches its stdin, a pipe from us.
    pub async fn shared() -> &'static ApiServer {
        static SHARED: tokio::sync::OnceCell<ApiServer> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(ApiServer::start).await
    }

    /// Builds the binary if needed and starts a new API server, waiting until it is ready.
    /// Panics, with its output, when it cannot be built or does not get ready in 120 s.
    pub async fn start() -> ApiServer {
        let (child, kubeconfig, log) =
            tokio::task::spawn_blocking(Self::spawn).await.expect("starting the API server");
        let file = Kubeconfig::read_from(&kubeconfig).expect("the server's kubeconfig reads");
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .expect("the server's kubeconfig is a kube-rs configuration");
        ApiServer { child: Mutex::new(child), kubeconfig, config, log, namespaces: AtomicU32::new(0) }
    }

    /// Starts the server and waits until it is ready: its process, kubeconfig and log.
    fn spawn() -> (Child, PathBuf, Arc<Mutex<String>>) {
        let bin = Self::build();
        let kubeconfig = unique_kubeconfig_path();
        let crds = crds_dir();
        let mut child = Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--crds")
            .arg(&crds)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        copy_lines(stdout, Arc::clone(&log), Some(ready_tx));
        copy_lines(stderr, Arc::clone(&log), None);
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => (child, kubeconfig, log),
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

    /// Builds `testkit/apiserver` with `go build` into `<target>/testkit-apiserver/apiserver`,
    /// once per process, unless the binary is newer than its sources. Returns its path.
    /// Panics, with go's output, when it cannot be built.
    pub fn build() -> PathBuf {
        static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bin) = &*built {
            return bin.clone();
        }
        let source = crate::workspace_root().join("testkit/apiserver");
        let bin = crate::target_dir().join("testkit-apiserver/apiserver");
        std::fs::create_dir_all(bin.parent().expect("a folder")).expect("the binary's folder");
        let newest_source = ["main.go", "go.mod", "go.sum"]
            .iter()
            .filter_map(|f| modified(&source.join(f)))
            .max()
            .expect("testkit/apiserver has main.go, go.mod and go.sum");
        if modified(&bin).is_none_or(|b| b < newest_source) {
            // Build next to the binary, then rename, so another process never runs half a file.
            let partial = bin.with_file_name(format!("apiserver.{}.partial", std::process::id()));
            let output = Command::new("go")
                .args(["build", "-o"])
                .arg(&partial)
                .arg(".")
                .current_dir(&source)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run `go` to build the test API server (install Go; see .ci/run): {e}")
                });
            if !output.status.success() {
                panic!(
                    "`go build` of the test API server in {} failed ({}):\n{}{}",
                    source.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::fs::rename(&partial, &bin).expect("moving the built API server into place");
        }
        *built = Some(bin.clone());
        bin
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
        &self.kubeconfig
    }

    /// A namespace name no other caller of this server gets, starting with `prefix` (a DNS
    /// label). The API server has no Namespace objects, and needs none: resources can be
    /// created in any namespace.
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
        format!("{}-{n}", prefix.trim_end_matches('-'))
    }

    /// What the server printed so far, stdout and stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        stop(self.child.get_mut().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Stops the server: SIGTERM, then SIGKILL after 20 s. Returns how it exited.
fn stop(child: &mut Child) -> Option<std::process::ExitStatus> {
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
fn copy_lines(from: impl Read + Send + 'static, log: Arc<Mutex<String>>, ready: Option<mpsc::Sender<()>>) {
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

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The CRDs to install: `../shared/crds` next to the workspace.
fn crds_dir() -> PathBuf {
    let dir = crate::workspace_root().join("../shared/crds");
    assert!(dir.is_dir(), "the CRDs for the test API server are not at {}", dir.display());
    dir
}

/// Where a new server writes its kubeconfig; the server removes it when it stops.
fn unique_kubeconfig_path() -> PathBuf {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "testkit-apiserver-{}-{}.kubeconfig",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ))
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
        let names: Vec<_> = crds
            .list(&Default::default())
            .await
            .expect("list CRDs")
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert!(names.contains(&"virtualservices.networking.istio.io".to_owned()), "{names:?}");
        assert!(names.contains(&"httproutes.gateway.networking.k8s.io".to_owned()), "{names:?}");
        assert_ne!(server.new_namespace("a").await, server.new_namespace("a").await);
        let pid = server.child.lock().unwrap().id();
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the server exited");
        assert!(!kubeconfig.exists(), "the server removed its kubeconfig");
    }
}
