//! End to end: a real JupyterHub (6.1.1, from PyPI) drives the binary, which writes to a real
//! Kubernetes API server (testkit's, with Istio's CRDs). The hub spawns mock servers on
//! loopback ports; after every step the VirtualServices and ServiceEntries in the namespace
//! must be exactly the hub's routes, and Istio's gateway (its pilot, `testkit::oracle`), fed
//! those objects, must route each user's paths to a server that says it is that user's (its
//! `/env`), and the hub's paths to the hub. Then the proxy restarts, loses an object behind the hub's back, and hands
//! over to a second replica, and the hub notices nothing amiss. Last, with a real Prometheus
//! counting a gateway's requests, the hub's users' `last_activity` follows that traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use istio_routes::resources::{IstioVersion, ServiceEntry, VirtualService};
use istio_routes::{PROXY_ID_HEADER, ROUTE_ANNOTATION, SPEC_ANNOTATION, revision};
use kube::Api;
use proxy_api::{Route, RouteSpec, RoutingMode, Target};
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::jupyterhub::{HubConfig, JupyterHub};
use testkit::oracle::{Answer, Request, Scenario};
use testkit::process::ProxyProcess;
use testkit::prometheus::{IstioExporter, Prometheus};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "e2e-proxy-token";
const GATEWAY: &str = "istio-system/jupyterhub-gateway";
/// How long the objects and listings may take to settle after a step: writes are synchronous,
/// but another replica sees them through its watch.
const SETTLE: Duration = Duration::from_secs(10);

/// Who should serve a route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Hub,
    Server { user: String, name: String },
}

/// The hub, the proxy it talks to, and the routes that should exist.
struct E2e {
    // Dropped first, while the proxy still runs: the hub stops its servers through it.
    hub: JupyterHub,
    proxy: ProxyProcess,
    /// Proxies stopped on the way, kept for their logs.
    retired: Vec<ProxyProcess>,
    api_server: &'static ApiServer,
    namespace: String,
    virtual_services: Api<VirtualService>,
    service_entries: Api<ServiceEntry>,
    /// Route spec (as our API lists it) → who serves it.
    expected: BTreeMap<String, Owner>,
}

/// One route as the API server holds it, resolved to the address the gateway would reach.
#[derive(Debug)]
struct Stored {
    virtual_service: String,
    target: Target,
    data: Value,
    /// The VirtualService's destination.
    host: String,
    port: Option<u32>,
    /// The ServiceEntry endpoint of `host`.
    address: IpAddr,
}

async fn start_proxy(api_server: &ApiServer, namespace: &str, listen: &str, extra: &[&str]) -> ProxyProcess {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("KUBECONFIG", api_server.kubeconfig_path())
        .env("CONFIGPROXY_AUTH_TOKEN", TOKEN)
        .env("K8S_NAMESPACE", namespace)
        .args(["--store", "kubernetes", "--listen", listen, "--istio-gateway", GATEWAY])
        .arg("--allow-loopback-targets")
        .args(extra);
    ProxyProcess::spawn(command).await
}

/// A route spec as our API lists it: decoded, without a trailing slash (but `/`).
fn normalized(spec: &str) -> String {
    match spec.trim_end_matches('/') {
        "" => "/".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

impl E2e {
    async fn start(base_url: &str) -> E2e {
        let api_server = ApiServer::shared().await;
        let namespace = api_server.new_namespace("jupyterhub-e2e").await;
        let proxy = start_proxy(api_server, &namespace, "127.0.0.1:0", &[]).await;
        let api_url = format!("http://{}", proxy.addr());
        let hub = JupyterHub::start(HubConfig {
            proxy_api_url: &api_url,
            proxy_token: TOKEN,
            base_url,
            last_activity_interval: 300,
        })
        .await;
        let client = api_server.client();
        E2e {
            expected: BTreeMap::from([(normalized(base_url), Owner::Hub)]),
            hub,
            proxy,
            retired: Vec::new(),
            api_server,
            virtual_services: Api::namespaced_with(client.clone(), &namespace, &IstioVersion::V1),
            service_entries: Api::namespaced_with(client, &namespace, &IstioVersion::V1),
            namespace,
        }
    }

    /// Fails the test at `step`, with every log.
    fn fail(&self, step: &str, why: &str) -> ! {
        let mut logs = String::new();
        for (i, proxy) in self.retired.iter().chain([&self.proxy]).enumerate() {
            logs.push_str(&format!("\n----- proxy {i} log -----\n{}", proxy.log()));
        }
        logs.push_str(&format!("\n----- JupyterHub log -----\n{}", self.hub.log()));
        panic!("{step} (namespace {}): {why}\n{logs}", self.namespace);
    }

    fn user_spec(&self, user: &str, server: &str) -> String {
        normalized(&format!("{}user/{user}/{server}", self.hub.base_url()))
    }

    async fn hub_api(
        &self,
        step: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        status: u16,
    ) -> Value {
        let answer = self.hub.api(method.clone(), path, body).await;
        if answer.status != status {
            self.fail(step, &format!("{method} {path}: {} {:?}", answer.status, answer.body));
        }
        if answer.body.is_empty() { Value::Null } else { answer.json() }
    }

    async fn create_user(&self, user: &str) {
        let step = format!("creating user {user}");
        self.hub_api(&step, Method::POST, &format!("/users/{user}"), None, 201).await;
    }

    async fn start_server(&mut self, user: &str, server: &str) {
        let step = format!("starting {user}/{server}");
        if let Err(why) = self.hub.start_server(user, server).await {
            self.fail(&step, &why);
        }
        let owner = Owner::Server { user: user.to_owned(), name: server.to_owned() };
        self.expected.insert(self.user_spec(user, server), owner);
        self.expect_objects(&step).await;
    }

    async fn stop_server(&mut self, user: &str, server: &str) {
        let step = format!("stopping {user}/{server}");
        if let Err(why) = self.hub.stop_server(user, server).await {
            self.fail(&step, &why);
        }
        self.expected.remove(&self.user_spec(user, server));
        self.expect_objects(&step).await;
    }

    async fn list(&self, step: &str) -> (Vec<Arc<VirtualService>>, Vec<ServiceEntry>) {
        let params = Default::default();
        let virtual_services = match self.virtual_services.list(&params).await {
            Ok(list) => list.items.into_iter().map(Arc::new).collect(),
            Err(e) => self.fail(step, &format!("listing VirtualServices: {e}")),
        };
        match self.service_entries.list(&params).await {
            Ok(list) => (virtual_services, list.items),
            Err(e) => self.fail(step, &format!("listing ServiceEntries: {e}")),
        }
    }

    /// The objects in the namespace, by route spec, when they are exactly the expected routes,
    /// each with the right target and data, a destination a ServiceEntry resolves to the
    /// target, no ServiceEntry left over, and no two routes with one destination.
    fn check_objects(
        &self,
        virtual_services: &[Arc<VirtualService>],
        service_entries: &[ServiceEntry],
    ) -> Result<BTreeMap<String, Stored>, String> {
        let mut stored = BTreeMap::new();
        for object in virtual_services {
            let annotation = |key: &str| object.metadata.annotations.as_ref().and_then(|a| a.get(key));
            let name = object.metadata.name.clone().unwrap_or_default();
            let (Some(spec), Some(route)) = (annotation(SPEC_ANNOTATION), annotation(ROUTE_ANNOTATION))
            else {
                return Err(format!("{name} lacks our annotations"));
            };
            let route: Value = serde_json::from_str(route).map_err(|e| format!("{name}: route: {e}"))?;
            let target = route["target"].as_str().and_then(|t| Target::parse(t).ok());
            let target = target.ok_or_else(|| format!("{name}: no valid target in {route}"))?;
            let destination = object
                .spec
                .http
                .first()
                .and_then(|http| http.route.first())
                .map(|r| r.destination.clone())
                .ok_or_else(|| format!("{name} has no destination"))?;
            let entry = service_entries
                .iter()
                .find(|e| e.spec.hosts.contains(&destination.host))
                .ok_or_else(|| format!("{name}: no ServiceEntry for {}", destination.host))?;
            let address = entry.spec.endpoints.first().and_then(|e| e.address.parse().ok());
            let address = address.ok_or_else(|| format!("{name}: no endpoint in {:?}", entry.spec))?;
            let port = destination.port.map(|p| p.number);
            let record =
                Stored { virtual_service: name, target, data: route, host: destination.host, port, address };
            if let Some(other) = stored.insert(spec.clone(), record) {
                return Err(format!("two objects for {spec}: {}", other.virtual_service));
            }
        }
        let specs: Vec<&String> = stored.keys().collect();
        if !specs.iter().copied().eq(self.expected.keys()) {
            return Err(format!("objects for {specs:?}, expected {:?}", self.expected.keys()));
        }
        for (spec, owner) in &self.expected {
            let route = &stored[spec];
            let loopback = route.target.ip().is_some_and(|ip| ip.is_loopback());
            // A loopback target is a pod-IP target: a ServiceEntry with the address itself,
            // reached under a synthetic host, on the target's port.
            if !loopback || route.address != route.target.ip().unwrap() {
                return Err(format!(
                    "{spec}: target {} resolves to {}",
                    route.target.as_str(),
                    route.address
                ));
            }
            if route.port != Some(u32::from(route.target.port())) || !route.host.ends_with(".internal") {
                return Err(format!(
                    "{spec}: destination {}:{:?} for {}",
                    route.host,
                    route.port,
                    route.target.as_str()
                ));
            }
            let right = match owner {
                Owner::Hub => route.target.as_str() == self.hub.url() && route.data["hub"] == true,
                Owner::Server { user, name } => {
                    route.data["user"] == *user && route.data["server_name"] == *name
                }
            };
            if !right {
                return Err(format!("{spec} is {}, expected {owner:?}", route.data));
            }
        }
        let destinations: BTreeSet<_> = stored.values().map(|r| (&r.host, r.port)).collect();
        if destinations.len() != stored.len() {
            return Err(format!("routes share destinations: {stored:#?}"));
        }
        if service_entries.len() != stored.len() {
            let hosts: Vec<_> = service_entries.iter().map(|e| &e.spec.hosts).collect();
            return Err(format!("ServiceEntries {hosts:?} for {} routes", stored.len()));
        }
        Ok(stored)
    }

    /// Waits until the API server holds exactly the expected routes; returns them, and the
    /// Istio objects as the server lists them, with the Gateway, for the oracle.
    async fn expect_objects(&self, step: &str) -> (BTreeMap<String, Stored>, Vec<Value>) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let (virtual_services, service_entries) = self.list(step).await;
            match self.check_objects(&virtual_services, &service_entries) {
                Ok(stored) => {
                    let objects = std::iter::once(testkit::oracle::gateway(GATEWAY, &["*"]))
                        .chain(virtual_services.iter().map(|o| serde_json::to_value(&**o).unwrap()))
                        .chain(service_entries.iter().map(|o| serde_json::to_value(o).unwrap()))
                        .collect();
                    return (stored, objects);
                }
                Err(why) if Instant::now() > deadline => self.fail(step, &why),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Routes, through Istio's pilot (one oracle run), a request for each user server's `/env`
    /// and for the hub's API, follows it to the address the ServiceEntry names, and checks who
    /// answers.
    async fn expect_gateway(&self, step: &str) {
        let (stored, objects) = self.expect_objects(step).await;
        let base = self.hub.base_url();
        let mut probes = Vec::new();
        for (spec, owner) in &self.expected {
            let paths = match owner {
                Owner::Hub => vec![format!("{base}hub/api/"), format!("{base}user/nobody/env")],
                Owner::Server { .. } => vec![format!("{spec}/env")],
            };
            probes.extend(paths.into_iter().map(|path| (path, spec, owner)));
        }
        let mut requests: Vec<Request> =
            probes.iter().map(|(path, ..)| Request::new("hub.example.org", path)).collect();
        requests.push(Request::new("hub.example.org", "/elsewhere"));
        let outcome = testkit::oracle::route_one(&Scenario { objects, requests });
        if !outcome.rejected.is_empty() {
            self.fail(step, &format!("Istio refuses objects: {:?}", outcome.rejected));
        }
        for ((path, spec, owner), answer) in probes.iter().zip(&outcome.answers) {
            self.expect_routed(step, answer.as_ref(), &stored, path, spec, owner).await;
        }
        if base != "/" && outcome.answers.last().is_some_and(Option::is_some) {
            self.fail(step, "a path outside the hub's base_url is routed");
        }
    }

    async fn expect_routed(
        &self,
        step: &str,
        answer: Option<&Answer>,
        stored: &BTreeMap<String, Stored>,
        path: &str,
        spec: &str,
        owner: &Owner,
    ) {
        let route = &stored[spec];
        let Some(routed) = answer else {
            self.fail(step, &format!("the gateway does not route {path}"));
        };
        let full = Route::new(
            RouteSpec::new(spec, RoutingMode::Path).expect("a valid spec"),
            route.target.clone(),
            Default::default(),
        )
        .expect("a valid route");
        let proxy_id = routed.response_headers.get(PROXY_ID_HEADER);
        let port = route.port.map_or_else(String::new, |p| p.to_string());
        if routed.virtual_service_name() != route.virtual_service
            || routed.cluster != format!("outbound|{port}||{}", route.host)
            || !routed.cluster_known
            || proxy_id != Some(&revision(&full))
        {
            self.fail(step, &format!("{path} is routed to {routed:#?}, expected {route:#?}"));
        }
        // Where the gateway would send it: the ServiceEntry's address, the destination's port.
        let addr = SocketAddr::new(route.address, u16::try_from(route.port.unwrap_or(80)).unwrap());
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            self.fail(step, &format!("nothing listens at {addr}, where {path} is routed"));
        }
        let answer = ApiClient::new(addr, None).get(&routed.path).await;
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let right = match owner {
            // The hub answers its API, and redirects an unknown user's path to its pages; every
            // answer of the hub has this header, none of the mock servers'.
            Owner::Hub => answer.headers.contains_key("x-jupyterhub-version"),
            Owner::Server { user, name } => {
                body["JUPYTERHUB_USER"] == *user && body["JUPYTERHUB_SERVER_NAME"] == *name
            }
        };
        if !right {
            let body = String::from_utf8_lossy(&answer.body);
            self.fail(
                step,
                &format!("{path}, at {addr}{}, answers {} {body:.300}", routed.path, answer.status),
            );
        }
    }

    /// Waits until our API and the hub's view of the proxy (`GET /hub/api/proxy`) both list
    /// exactly the expected routes.
    async fn expect_listings(&self, step: &str) {
        let ours = ApiClient::new(self.proxy.addr(), Some(TOKEN));
        let deadline = Instant::now() + SETTLE;
        loop {
            let listed = ours.get("/api/routes").await;
            let hubs = self.hub_api(step, Method::GET, "/proxy", None, 200).await;
            let hubs: Vec<String> =
                hubs.as_object().map(|o| o.keys().map(|k| normalized(k)).collect()).unwrap_or_default();
            let expected: Vec<&String> = self.expected.keys().collect();
            let ours_match = listed.status == 200 && listed.keys().iter().eq(expected.iter().copied());
            let hubs_match = hubs.iter().eq(expected.iter().copied());
            if ours_match && hubs_match {
                return;
            }
            if Instant::now() > deadline {
                let why = format!(
                    "the proxy lists {} {:?}, the hub {hubs:?}, expected {expected:?}",
                    listed.status, listed.body
                );
                self.fail(step, &why);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the proxy the hub talks to (SIGTERM); it must exit cleanly.
    async fn stop_proxy(&mut self, step: &str) {
        let status = self.proxy.terminate(Duration::from_secs(30)).await;
        if !status.is_some_and(|s| s.success()) {
            self.fail(step, &format!("the proxy exited with {status:?}"));
        }
    }

    /// Puts `next` in place of the stopped proxy, whose log is kept.
    fn replace_proxy(&mut self, next: ProxyProcess) {
        let previous = std::mem::replace(&mut self.proxy, next);
        self.retired.push(previous);
    }

    /// A new process on the same address, so the hub does not notice: it reads the routes
    /// back from the API server.
    async fn restart_proxy(&mut self) {
        let step = "restarting the proxy";
        let listen = self.proxy.addr().to_string();
        self.stop_proxy(step).await;
        let next = start_proxy(self.api_server, &self.namespace, &listen, &[]).await;
        self.replace_proxy(next);
        self.expect_objects(step).await;
        self.expect_listings(step).await;
    }

    /// Deletes a server's VirtualService with kube, then has the hub check the proxy's routes
    /// (`POST /hub/api/proxy`): the hub adds the missing one again.
    async fn delete_behind_the_hubs_back(&self, user: &str, server: &str) {
        let step = &format!("deleting {user}/{server}'s VirtualService behind the hub's back");
        let spec = self.user_spec(user, server);
        let (stored, _) = self.expect_objects(step).await;
        let name = &stored[&spec].virtual_service;
        if let Err(e) = self.virtual_services.delete(name, &Default::default()).await {
            self.fail(step, &format!("deleting {name}: {e}"));
        }
        // The hub must see the route missing: wait until our watch has seen the deletion.
        let ours = ApiClient::new(self.proxy.addr(), Some(TOKEN));
        let deadline = Instant::now() + SETTLE;
        while ours.get("/api/routes").await.keys().contains(&spec) {
            if Instant::now() > deadline {
                self.fail(step, &format!("the proxy still lists {spec}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.hub_api(step, Method::POST, "/proxy", None, 200).await;
        self.expect_objects(step).await;
        self.expect_listings(step).await;
    }

    /// Starts a second replica on the namespace, points the hub at it
    /// (`PATCH /hub/api/proxy`), and stops the first: the hub's view, now through the
    /// second, is the same.
    async fn hand_over_to_a_second_replica(&mut self) {
        let step = "handing over to a second replica";
        let next = start_proxy(self.api_server, &self.namespace, "127.0.0.1:0", &[]).await;
        let body = json!({"api_url": format!("http://{}", next.addr()), "auth_token": TOKEN});
        self.hub_api(step, Method::PATCH, "/proxy", Some(&body), 200).await;
        self.stop_proxy(step).await;
        self.replace_proxy(next);
        self.expect_listings(step).await;
    }
}

/// Everything, with the hub at `base_url`.
async fn hub_drives_the_proxy(base_url: &str) {
    let mut e2e = E2e::start(base_url).await;
    e2e.expect_objects("the hub's own route, after the hub started").await;
    for user in ["alice", "bob"] {
        e2e.create_user(user).await;
    }
    e2e.start_server("alice", "").await;
    e2e.start_server("bob", "").await;
    e2e.start_server("alice", "lab").await;
    e2e.expect_gateway("with alice's, alice's lab and bob's servers").await;
    e2e.stop_server("alice", "lab").await;
    e2e.expect_gateway("after stopping alice's lab").await;
    e2e.restart_proxy().await;
    e2e.delete_behind_the_hubs_back("bob", "").await;
    e2e.hand_over_to_a_second_replica().await;
    // The second replica writes what the hub asks now.
    e2e.stop_server("alice", "").await;
    e2e.stop_server("bob", "").await;
    e2e.expect_gateway("with only the hub").await;
    e2e.expect_listings("with only the hub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_at_the_root_drives_the_proxy() {
    hub_drives_the_proxy("/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_under_a_base_url_drives_the_proxy() {
    hub_drives_the_proxy("/jhub/").await;
}

/// A user's `last_activity` (and their default server's) as the hub reports it.
async fn hub_activity(hub: &JupyterHub, user: &str) -> (jiff::Timestamp, jiff::Timestamp) {
    let model = hub.api(Method::GET, &format!("/users/{user}"), None).await.json();
    let stamp = |value: &Value| -> jiff::Timestamp {
        let text = value.as_str().unwrap_or_else(|| panic!("no last_activity in {model:#}"));
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    };
    (stamp(&model["last_activity"]), stamp(&model["servers"][""]["last_activity"]))
}

/// The hub reads the routes' `last_activity` (every 2 s here, 300 s by default) into its users'
/// and servers' activity, which its idle culler acts on: with `--activity-prometheus-url`, a
/// user whose server the gateway sends requests to becomes active then, and one whose server
/// gets none stays as active as when it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_last_activity_follows_the_gateways_traffic() {
    let exporter = IstioExporter::start().await;
    let prometheus = Prometheus::start(&[exporter.addr()]).await;
    let api_server = ApiServer::shared().await;
    let namespace = api_server.new_namespace("jupyterhub-activity").await;
    let url = prometheus.url();
    let activity =
        ["--activity-prometheus-url", &url, "--activity-interval", "2", "--activity-lookback", "600"];
    let proxy = start_proxy(api_server, &namespace, "127.0.0.1:0", &activity).await;
    let api_url = format!("http://{}", proxy.addr());
    let hub = JupyterHub::start(HubConfig {
        proxy_api_url: &api_url,
        proxy_token: TOKEN,
        base_url: "/",
        last_activity_interval: 2,
    })
    .await;
    for user in ["alice", "bob"] {
        assert_eq!(hub.api(Method::POST, &format!("/users/{user}"), None).await.status, 201);
        hub.start_server(user, "").await.unwrap();
    }

    // Alice's destination, as the gateway names it: her route's own ServiceEntry host.
    let routes = ApiClient::new(proxy.addr(), Some(TOKEN)).get("/api/routes").await.json();
    let (spec, object) = routes
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, route)| route["user"] == "alice")
        .unwrap_or_else(|| panic!("no route of alice's in {routes:#}"));
    let route = proxy_api::wire::route_from_object(
        RouteSpec::new(spec, RoutingMode::Path).unwrap(),
        object.as_object().unwrap().clone(),
    )
    .unwrap();
    let translation = istio_routes::Translation { namespace: namespace.clone(), ..Default::default() };
    let host = translation.destination_host(&route).unwrap();

    // Well after the spawns, so that the traffic's time is later than anything the hub knew.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (bob_before, _) = hub_activity(&hub, "bob").await;
    let sent = jiff::Timestamp::now();
    exporter.requests(&host, 5);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (user, server) = hub_activity(&hub, "alice").await;
        if user >= sent && server >= sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's last_activity ({user}, server {server}) did not follow the requests at {sent} in 60 s;\nproxy log:\n{}\nhub log:\n{}",
            proxy.log(),
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (bob_after, _) = hub_activity(&hub, "bob").await;
    assert_eq!(bob_after, bob_before, "bob's server got no requests");
    assert!(bob_after < sent);
    // The hub stops its servers through the proxy: before the proxy goes.
    drop(hub);
}
