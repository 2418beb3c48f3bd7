//! A real JupyterHub, from the [`python`](crate::python) venv, as a child process.
//!
//! The hub is configured by `testkit/python/jupyterhub_e2e_config.py`: it starts no proxy
//! but talks to ours, listens on a free loopback port, keeps its database and cookie secret
//! in a fresh temporary folder, spawns every server as a local process running JupyterHub's
//! mock single-user server (`jupyterhub.tests.mocksu`, which answers `.../env` with its
//! environment) with a kernel's websocket added (`.../api/kernels/<id>/channels` echoes each
//! message after `<user>/<server name> `), and allows named servers. Users log in with any
//! name and [`USER_PASSWORD`]. Tests drive it through its REST API with an admin
//! token.
//!
//! ```no_run
//! # async fn run() {
//! use testkit::jupyterhub::{HubConfig, JupyterHub};
//!
//! let hub = JupyterHub::start(HubConfig {
//!     proxy_api_url: "http://127.0.0.1:8001",
//!     proxy_token: "secret",
//!     base_url: "/",
//!     last_activity_interval: 300,
//!     network: None,
//! })
//! .await;
//! hub.start_server("alice", "").await.unwrap();
//! let routes = hub.api(http::Method::GET, "/proxy", None).await.json();
//! # }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use crate::client::{ApiClient, ApiResponse};
use crate::podnet::PodNetwork;

/// The configuration file, in [`crate::python::scripts_dir`].
const CONFIG: &str = "jupyterhub_e2e_config.py";
/// The user servers' program, in [`crate::python::scripts_dir`]: JupyterHub's mock server and
/// a kernel's websocket that echoes, prefixed with the server's user and name.
const SINGLEUSER: &str = "mock_singleuser.py";
/// The password every user logs in with (JupyterHub's `DummyAuthenticator`), as a browser would.
pub const USER_PASSWORD: &str = "testkit-jupyterhub-user-password";
/// The token of the hub's `e2e` service, which has the admin role.
const ADMIN_TOKEN: &str = "testkit-jupyterhub-admin-token";
/// How long the hub may take to start, and a server to start or stop.
const TIMEOUT: Duration = Duration::from_secs(60);
/// What the hub logs when its start-up, including its first check of the proxy's routes, is
/// done. Acting earlier races that check, which removes routes it does not expect.
const RUNNING: &str = "JupyterHub is now running";

/// How to start a hub.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig<'a> {
    /// The proxy's API (`c.ConfigurableHTTPProxy.api_url`).
    pub proxy_api_url: &'a str,
    /// The proxy's token (`c.ConfigurableHTTPProxy.auth_token`).
    pub proxy_token: &'a str,
    /// `c.JupyterHub.base_url`: `/`, or a prefix with slashes at both ends.
    pub base_url: &'a str,
    /// `c.JupyterHub.last_activity_interval`: seconds between the hub's reads of the routes'
    /// `last_activity` (JupyterHub's default is 300).
    pub last_activity_interval: u32,
    /// Where the hub and its servers run: `None` on this machine, listening on loopback; or in
    /// a pod network, listening on its pod address (`hub_ip`, `Spawner.ip`), for a backend
    /// whose objects may not hold a loopback address (a Kubernetes EndpointSlice may not) or a
    /// gateway that must reach them. The proxy's API must then listen where the pods reach it,
    /// on the network's [`host_ip`](PodNetwork::host_ip).
    pub network: Option<&'a PodNetwork>,
}

/// A running hub, stopped when dropped (SIGTERM, so it stops its servers too).
#[derive(Debug)]
pub struct JupyterHub {
    child: Child,
    addr: SocketAddr,
    base_url: String,
    api: ApiClient,
    log: Arc<Mutex<String>>,
    state_dir: PathBuf,
}

impl JupyterHub {
    /// Starts a hub and waits until it has finished starting and its API answers. Our proxy
    /// must be up: the hub adds its own route at start. Panics, with the hub's log, when it
    /// exits or is not up within 60 s.
    pub async fn start(config: HubConfig<'_>) -> JupyterHub {
        let python = tokio::task::spawn_blocking(crate::python::jupyterhub_python).await.expect("the venv");
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let state_dir = std::env::temp_dir().join(format!(
            "testkit-jupyterhub-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir).expect("the hub's state folder");
        let port = crate::free_port();
        let ip: IpAddr = config.network.map_or(Ipv4Addr::LOCALHOST, PodNetwork::pod_ip).into();
        let mut command = match config.network {
            Some(network) => network.command(&python),
            None => Command::new(&python),
        };
        let mut child = command
            .args(["-m", "jupyterhub", "-f"])
            .arg(crate::python::scripts_dir().join(CONFIG))
            .current_dir(&state_dir)
            .env("E2E_STATE_DIR", &state_dir)
            .env("E2E_HUB_PORT", port.to_string())
            .env("E2E_BASE_URL", config.base_url)
            .env("E2E_PROXY_API_URL", config.proxy_api_url)
            .env("E2E_PROXY_TOKEN", config.proxy_token)
            .env("E2E_LAST_ACTIVITY_INTERVAL", config.last_activity_interval.to_string())
            .env("E2E_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("E2E_USER_PASSWORD", USER_PASSWORD)
            .env("E2E_SINGLEUSER", crate::python::scripts_dir().join(SINGLEUSER))
            .env("E2E_IP", ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run JupyterHub with {}: {e}", python.display()));
        let log = Arc::new(Mutex::new(String::new()));
        crate::apiserver::copy_lines(child.stdout.take().expect("piped stdout"), Arc::clone(&log), None);
        crate::apiserver::copy_lines(child.stderr.take().expect("piped stderr"), Arc::clone(&log), None);
        let addr = SocketAddr::new(ip, port);
        let mut hub = JupyterHub {
            child,
            addr,
            base_url: config.base_url.to_owned(),
            api: ApiClient::new(addr, Some(ADMIN_TOKEN)),
            log,
            state_dir,
        };
        hub.wait_until_running().await;
        hub
    }

    async fn wait_until_running(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The log readers finish at end of file, soon after the process exits.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("JupyterHub exited ({status}) while starting; its log:\n{}", self.log());
            }
            if self.log().contains(RUNNING) {
                let answer = self.api(Method::GET, "/", None).await;
                assert_eq!(answer.status, 200, "JupyterHub's API does not answer; its log:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "JupyterHub did not start in {TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The hub's own address: the target of its route.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `c.JupyterHub.base_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request to the hub's REST API as admin: `path` is under `<base_url>hub/api`
    /// (`/users/alice`), `body` is sent as JSON.
    pub async fn api(&self, method: Method, path: &str, body: Option<&Value>) -> ApiResponse {
        let path = format!("{}hub/api{path}", self.base_url);
        let body = body.map(Value::to_string).unwrap_or_default();
        self.api.send(method, &path, &[("content-type", "application/json")], body.as_bytes()).await
    }

    /// Asks the hub to start `user`'s server `server` (`""`: the default one) and waits until
    /// the hub says it is ready. The error says what the hub answered.
    pub async fn start_server(&self, user: &str, server: &str) -> Result<(), String> {
        let answer = self.api(Method::POST, &server_path(user, server), None).await;
        if ![201, 202].contains(&answer.status.as_u16()) {
            return Err(format!("starting {user}/{server}: {} {:?}", answer.status, answer.body));
        }
        self.wait_for_server(user, server, |model| model.is_some_and(|m| m["ready"] == true)).await
    }

    /// Asks the hub to stop `user`'s server `server` and waits until the hub has forgotten it.
    pub async fn stop_server(&self, user: &str, server: &str) -> Result<(), String> {
        let answer = self.api(Method::DELETE, &server_path(user, server), None).await;
        if ![202, 204].contains(&answer.status.as_u16()) {
            return Err(format!("stopping {user}/{server}: {} {:?}", answer.status, answer.body));
        }
        self.wait_for_server(user, server, |model| model.is_none()).await
    }

    /// Polls the user's model until `done` holds for the server's (`None`: no such server).
    async fn wait_for_server(
        &self,
        user: &str,
        server: &str,
        done: impl Fn(Option<&Value>) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let answer = self.api(Method::GET, &format!("/users/{user}"), None).await;
            if answer.status != 200 {
                return Err(format!("reading user {user}: {} {:?}", answer.status, answer.body));
            }
            let model = answer.json();
            if done(model["servers"].get(server)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{user}/{server} did not get there in {TIMEOUT:?}; the hub says {model:#}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the hub and its servers have printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for JupyterHub {
    fn drop(&mut self) {
        crate::apiserver::stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// The API path of a user's server: JupyterHub's default server has a path of its own.
fn server_path(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("/users/{user}/server")
    } else {
        format!("/users/{user}/servers/{server}")
    }
}
