//! End to end: a real JupyterHub (6.1.1, from PyPI) drives the binary, which writes to a real
//! Kubernetes API server (testkit's, with Istio's and the Gateway API's CRDs). The hub spawns
//! mock servers on loopback ports; after every step the routing objects in the namespace must
//! be exactly the hub's routes, and the gateway fed those objects must route each user's paths
//! to a server that says it is that user's (its `/env`), and the hub's paths to the hub. With
//! Istio routing the gateway is Istio's pilot (`testkit::oracle`) over VirtualServices and
//! ServiceEntries; with `--routing gateway-api`, the Gateway API's precedence rules
//! (`testkit::gateway_model`) over HTTPRoutes, followed to their Services' EndpointSlices. Then the proxy restarts, loses an object behind the hub's back, and hands
//! over to a second replica, and the hub notices nothing amiss. Last, with a real Prometheus
//! counting a gateway's requests, the hub's users' `last_activity` follows that traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_routes::HttpRoute;
use gateway_routes::resources::HttpRouteFilter;
use http::Method;
use istio_routes::resources::{IstioVersion, ServiceEntry, VirtualService};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube_routes::{PROXY_ID_HEADER, ROUTE_ANNOTATION, SPEC_ANNOTATION, revision};
use proxy_api::{Route, RouteSpec, RoutingMode, Target};
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;
use testkit::chp::ChpTable;
use testkit::client::ApiClient;
use testkit::jupyterhub::{HubConfig, JupyterHub};
use testkit::oracle::{Answer, Request, Scenario};
use testkit::podnet::PodNetwork;
use testkit::process::ProxyProcess;
use testkit::prometheus::{IstioExporter, Prometheus};
use testkit::traefik::Traefik;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "e2e-proxy-token";
const GATEWAY: &str = "istio-system/jupyterhub-gateway";
/// How long the objects and listings may take to settle after a step: writes are synchronous,
/// but another replica sees them through its watch.
const SETTLE: Duration = Duration::from_secs(10);

/// Which routing API the proxy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    Istio,
    GatewayApi,
}

impl Routing {
    /// The proxy's options that pick it, bound to `gateway` (`namespace/name`).
    fn args(self, gateway: &str) -> Vec<String> {
        let args: &[&str] = match self {
            Routing::Istio => &["--istio-gateway", gateway],
            Routing::GatewayApi => &["--routing", "gateway-api", "--parent-ref", gateway],
        };
        args.iter().map(|&arg| arg.to_owned()).collect()
    }
}

/// The objects a gateway routes through, as the API server lists them.
enum Objects {
    /// The Gateway, VirtualServices and ServiceEntries, for the oracle.
    Istio(Vec<Value>),
    /// The HTTPRoutes, for the Gateway API's model.
    GatewayApi(Vec<Arc<HttpRoute>>),
}

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
    routing: Routing,
    virtual_services: Api<VirtualService>,
    service_entries: Api<ServiceEntry>,
    http_routes: Api<HttpRoute>,
    services: Api<Service>,
    endpoint_slices: Api<EndpointSlice>,
    /// Route spec (as our API lists it) → who serves it.
    expected: BTreeMap<String, Owner>,
    /// The specs of servers stopped on the way.
    stopped: BTreeSet<String>,
    /// The gateway the proxy's objects name, `namespace/name`.
    gateway: String,
    /// With the Gateway API, the gateway that carries the probes.
    traefik: Option<Traefik>,
    /// Where the hub runs with the Gateway API; removed last, once the hub has stopped.
    _network: Option<PodNetwork>,
}

/// One route as the API server holds it, resolved to the address the gateway would reach.
#[derive(Debug)]
struct Stored {
    /// The VirtualService or HTTPRoute.
    object: String,
    target: Target,
    data: Value,
    /// The VirtualService's destination host, or the HTTPRoute's backend Service.
    host: String,
    port: Option<u32>,
    /// The ServiceEntry's, or the EndpointSlice's, endpoint of `host`.
    address: IpAddr,
}

async fn start_proxy(
    api_server: &ApiServer,
    namespace: &str,
    listen: &str,
    (routing, gateway): (Routing, &str),
    extra: &[&str],
) -> ProxyProcess {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("KUBECONFIG", api_server.kubeconfig_path())
        .env("CONFIGPROXY_AUTH_TOKEN", TOKEN)
        .env("K8S_NAMESPACE", namespace)
        .args(["--store", "kubernetes", "--listen", listen])
        .args(routing.args(gateway))
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
    async fn start(base_url: &str, routing: Routing) -> E2e {
        let api_server = ApiServer::shared().await;
        let namespace = api_server.new_namespace("jupyterhub-e2e").await;
        // An EndpointSlice may not hold a loopback address: with the Gateway API the hub and
        // its servers run in a pod network, and reach the proxy's API at its host end.
        let network = (routing == Routing::GatewayApi).then(PodNetwork::new);
        let listen = match &network {
            Some(network) => format!("{}:0", network.host_ip()),
            None => "127.0.0.1:0".to_owned(),
        };
        // With the Gateway API, Traefik carries real requests to the hub and its servers.
        let traefik = match routing {
            Routing::GatewayApi => Some(Traefik::start(api_server, &namespace).await),
            Routing::Istio => None,
        };
        let gateway = traefik.as_ref().map_or_else(|| GATEWAY.to_owned(), Traefik::parent_ref);
        let proxy = start_proxy(api_server, &namespace, &listen, (routing, &gateway), &[]).await;
        let api_url = format!("http://{}", proxy.addr());
        let hub = JupyterHub::start(HubConfig {
            proxy_api_url: &api_url,
            proxy_token: TOKEN,
            base_url,
            last_activity_interval: 300,
            network: network.as_ref(),
        })
        .await;
        let client = api_server.client();
        E2e {
            expected: BTreeMap::from([(normalized(base_url), Owner::Hub)]),
            stopped: BTreeSet::new(),
            hub,
            proxy,
            retired: Vec::new(),
            api_server,
            routing,
            virtual_services: Api::namespaced_with(client.clone(), &namespace, &IstioVersion::V1),
            service_entries: Api::namespaced_with(client.clone(), &namespace, &IstioVersion::V1),
            http_routes: Api::namespaced(client.clone(), &namespace),
            services: Api::namespaced(client.clone(), &namespace),
            endpoint_slices: Api::namespaced(client, &namespace),
            namespace,
            gateway,
            traefik,
            _network: network,
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
        self.stopped.insert(self.user_spec(user, server));
        self.expect_objects(&step).await;
    }

    async fn list<K>(&self, step: &str, api: &Api<K>, what: &str) -> Vec<K>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        match api.list(&Default::default()).await {
            Ok(list) => list.items,
            Err(e) => self.fail(step, &format!("listing {what}: {e}")),
        }
    }

    /// The objects in the namespace, as the gateway would route through them, and each route's
    /// record; or why they are not (yet) exactly the expected routes.
    async fn objects(&self, step: &str) -> Result<(BTreeMap<String, Stored>, Objects), String> {
        match self.routing {
            Routing::Istio => {
                let virtual_services: Vec<Arc<VirtualService>> = self
                    .list(step, &self.virtual_services, "VirtualServices")
                    .await
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                let service_entries = self.list(step, &self.service_entries, "ServiceEntries").await;
                let stored = self.check_objects(istio_records(&virtual_services, &service_entries)?)?;
                if service_entries.len() != stored.len() {
                    let hosts: Vec<_> = service_entries.iter().map(|e| &e.spec.hosts).collect();
                    return Err(format!("ServiceEntries {hosts:?} for {} routes", stored.len()));
                }
                if let Some(route) = stored.values().find(|route| !route.host.ends_with(".internal")) {
                    return Err(format!("{} is not a pod IP's synthetic host", route.host));
                }
                let objects = std::iter::once(testkit::oracle::gateway(GATEWAY, &["*"]))
                    .chain(virtual_services.iter().map(|o| serde_json::to_value(&**o).unwrap()))
                    .chain(service_entries.iter().map(|o| serde_json::to_value(o).unwrap()))
                    .collect();
                Ok((stored, Objects::Istio(objects)))
            }
            Routing::GatewayApi => {
                let routes: Vec<Arc<HttpRoute>> = self
                    .list(step, &self.http_routes, "HTTPRoutes")
                    .await
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                let services = self.list(step, &self.services, "Services").await;
                let slices = self.list(step, &self.endpoint_slices, "EndpointSlices").await;
                let stored = self.check_objects(gateway_records(&routes, &services, &slices)?)?;
                if services.len() != stored.len() || slices.len() != stored.len() {
                    return Err(format!(
                        "{} Services and {} EndpointSlices for {} pod-IP routes",
                        services.len(),
                        slices.len(),
                        stored.len()
                    ));
                }
                Ok((stored, Objects::GatewayApi(routes)))
            }
        }
    }

    /// The records by route spec, when they are exactly the expected routes, each with the
    /// right target and data, resolved to the target's own address and port, and no two routes
    /// with one destination.
    fn check_objects(&self, records: Vec<(String, Stored)>) -> Result<BTreeMap<String, Stored>, String> {
        let mut stored = BTreeMap::new();
        for (spec, record) in records {
            if let Some(other) = stored.insert(spec.clone(), record) {
                return Err(format!("two objects for {spec}: {}", other.object));
            }
        }
        let specs: Vec<&String> = stored.keys().collect();
        if !specs.iter().copied().eq(self.expected.keys()) {
            return Err(format!("objects for {specs:?}, expected {:?}", self.expected.keys()));
        }
        for (spec, owner) in &self.expected {
            let route = &stored[spec];
            // The hub's and servers' targets are IPs, as KubeSpawner's pod IPs: the endpoint is
            // the address itself, reached on the target's port.
            if route.target.ip() != Some(route.address) {
                return Err(format!(
                    "{spec}: target {} resolves to {}",
                    route.target.as_str(),
                    route.address
                ));
            }
            if route.port != Some(u32::from(route.target.port())) {
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
        Ok(stored)
    }

    /// Waits until the API server holds exactly the expected routes; returns them, and the
    /// objects a gateway routes through.
    async fn expect_objects(&self, step: &str) -> (BTreeMap<String, Stored>, Objects) {
        let deadline = Instant::now() + SETTLE;
        loop {
            match self.objects(step).await {
                Ok(found) => return found,
                Err(why) if Instant::now() > deadline => self.fail(step, &why),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Routes a request for each user server's `/env` and for the hub's API through the
    /// gateway (Istio's pilot in one oracle run, or the Gateway API's model), follows it to
    /// the endpoint the objects name, and checks who answers.
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
        let mut paths: Vec<String> = probes.iter().map(|(path, ..)| path.clone()).collect();
        paths.push("/elsewhere".to_owned());
        let routed: Vec<Option<Routed>> = match objects {
            Objects::Istio(objects) => {
                let requests = paths.iter().map(|path| Request::new("hub.example.org", path)).collect();
                let outcome = testkit::oracle::route_one(&Scenario { objects, requests });
                if !outcome.rejected.is_empty() {
                    self.fail(step, &format!("Istio refuses objects: {:?}", outcome.rejected));
                }
                let answers = outcome.answers.iter().zip(&paths);
                answers
                    .map(|(answer, path)| answer.as_ref().map(|a| self.istio_routed(step, a, &stored, path)))
                    .collect()
            }
            Objects::GatewayApi(routes) => {
                let gateway = testkit::gateway_model::GatewayApi::new(routes);
                let routed = paths.iter().map(|path| gateway.route("hub.example.org", path));
                routed.map(|r| r.map(|r| Routed { object: r.http_route, path: r.path })).collect()
            }
        };
        for ((path, spec, owner), routed) in probes.iter().zip(&routed) {
            self.expect_routed(step, routed.as_ref(), &stored, path, spec, owner).await;
        }
        if base != "/" && routed.last().is_some_and(Option::is_some) {
            self.fail(step, "a path outside the hub's base_url is routed");
        }
        // Stopped servers' paths go where configurable-http-proxy sends them: to an enclosing
        // server's route, or the hub's.
        let mut chp = ChpTable::new(false);
        self.expected.keys().for_each(|spec| chp.add(spec));
        let mut probes: Vec<(String, Option<&Owner>)> =
            probes.iter().map(|(path, _, owner)| (path.clone(), Some(*owner))).collect();
        for spec in self.stopped.difference(&self.expected.keys().cloned().collect()) {
            let path = format!("{spec}/env");
            let owner = chp.route("hub.example.org", &path).map(|spec| &self.expected[&spec]);
            probes.push((path, owner));
        }
        if base != "/" {
            probes.push(("/elsewhere".to_owned(), None));
        }
        self.expect_traefik(step, &probes).await;
    }

    /// Sends every probe through Traefik, when the test has it, as a browser would, until
    /// each is answered by its owner (or is Traefik's 404 where there is none): Traefik
    /// applies a change after its throttle. Fails naming the probes that are not.
    async fn expect_traefik(&self, step: &str, probes: &[(String, Option<&Owner>)]) {
        let Some(traefik) = &self.traefik else { return };
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut wrong = Vec::new();
            for (path, owner) in probes {
                let answer = traefik.get("hub.example.org", path).await;
                let right = match owner {
                    Some(owner) => answered_by(owner, &answer),
                    None => answer.status == 404 && !answer.headers.contains_key("x-jupyterhub-version"),
                };
                if !right {
                    let body = String::from_utf8_lossy(&answer.body);
                    wrong.push(format!("{path} (for {owner:?}): {} {body:.200}", answer.status));
                }
            }
            if wrong.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                self.fail(step, &format!("through Traefik:\n{}\n{}", wrong.join("\n"), traefik.log()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What Istio's answer says beyond the object and path: the cluster of the route's
    /// destination, known to the gateway, and the route's `jupyter-proxy-id`.
    fn istio_routed(
        &self,
        step: &str,
        answer: &Answer,
        stored: &BTreeMap<String, Stored>,
        path: &str,
    ) -> Routed {
        let routed = Routed { object: answer.virtual_service_name().to_owned(), path: answer.path.clone() };
        let Some((spec, route)) = stored.iter().find(|(_, r)| r.object == routed.object) else {
            self.fail(step, &format!("{path} is routed to an object of no route: {answer:#?}"));
        };
        let full = Route::new(
            RouteSpec::new(spec, RoutingMode::Path).unwrap(),
            route.target.clone(),
            Default::default(),
        )
        .unwrap();
        let port = route.port.map_or_else(String::new, |p| p.to_string());
        if answer.cluster != format!("outbound|{port}||{}", route.host)
            || !answer.cluster_known
            || answer.response_headers.get(PROXY_ID_HEADER) != Some(&revision(&full))
        {
            self.fail(step, &format!("{path} is routed to {answer:#?}, expected {route:#?}"));
        }
        routed
    }

    async fn expect_routed(
        &self,
        step: &str,
        routed: Option<&Routed>,
        stored: &BTreeMap<String, Stored>,
        path: &str,
        spec: &str,
        owner: &Owner,
    ) {
        let route = &stored[spec];
        let Some(routed) = routed else {
            self.fail(step, &format!("the gateway does not route {path}"));
        };
        if routed.object != route.object {
            self.fail(step, &format!("{path} is routed to {routed:#?}, expected {route:#?}"));
        }
        // Where the gateway would send it: the endpoint's address, the destination's port.
        let addr = SocketAddr::new(route.address, u16::try_from(route.port.unwrap_or(80)).unwrap());
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            self.fail(step, &format!("nothing listens at {addr}, where {path} is routed"));
        }
        let answer = ApiClient::new(addr, None).get(&routed.path).await;
        if !answered_by(owner, &answer) {
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
        let routing = (self.routing, self.gateway.as_str());
        let next = start_proxy(self.api_server, &self.namespace, &listen, routing, &[]).await;
        self.replace_proxy(next);
        self.expect_objects(step).await;
        self.expect_listings(step).await;
    }

    /// Deletes a server's VirtualService or HTTPRoute with kube, then has the hub check the
    /// proxy's routes (`POST /hub/api/proxy`): the hub adds the missing one again.
    async fn delete_behind_the_hubs_back(&self, user: &str, server: &str) {
        let step = &format!("deleting {user}/{server}'s routing object behind the hub's back");
        let spec = self.user_spec(user, server);
        let (stored, _) = self.expect_objects(step).await;
        let name = &stored[&spec].object;
        let deleted = match self.routing {
            Routing::Istio => self.virtual_services.delete(name, &Default::default()).await.err(),
            Routing::GatewayApi => self.http_routes.delete(name, &Default::default()).await.err(),
        };
        if let Some(e) = deleted {
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
        // Where the first listens, on another port.
        let listen = SocketAddr::new(self.proxy.addr().ip(), 0).to_string();
        let routing = (self.routing, self.gateway.as_str());
        let next = start_proxy(self.api_server, &self.namespace, &listen, routing, &[]).await;
        let body = json!({"api_url": format!("http://{}", next.addr()), "auth_token": TOKEN});
        self.hub_api(step, Method::PATCH, "/proxy", Some(&body), 200).await;
        self.stop_proxy(step).await;
        self.replace_proxy(next);
        self.expect_listings(step).await;
    }
}

/// Whether `owner` gave `answer`: the hub answers its API, and redirects an unknown user's path
/// to its pages, every answer with this header, which no mock server sends; a user's server
/// answers `.../env` with its environment.
fn answered_by(owner: &Owner, answer: &testkit::client::ApiResponse) -> bool {
    match owner {
        Owner::Hub => answer.headers.contains_key("x-jupyterhub-version"),
        Owner::Server { user, name } => {
            let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            body["JUPYTERHUB_USER"] == *user && body["JUPYTERHUB_SERVER_NAME"] == *name
        }
    }
}

/// Where a gateway sends a request: the object that matched, and the path it forwards.
#[derive(Debug)]
struct Routed {
    object: String,
    path: String,
}

/// Each VirtualService's route, resolved through its ServiceEntry.
fn istio_records(
    virtual_services: &[Arc<VirtualService>],
    service_entries: &[ServiceEntry],
) -> Result<Vec<(String, Stored)>, String> {
    let mut records = Vec::new();
    for object in virtual_services {
        let (name, spec, target, data) = annotated(&object.metadata)?;
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
        records.push((spec, Stored { object: name, target, data, host: destination.host, port, address }));
    }
    Ok(records)
}

/// Each HTTPRoute's route, resolved through its backend Service (owned by it, with the route's
/// `jupyter-proxy-id` set on responses) to the EndpointSlice of that Service.
fn gateway_records(
    routes: &[Arc<HttpRoute>],
    services: &[Service],
    slices: &[EndpointSlice],
) -> Result<Vec<(String, Stored)>, String> {
    let mut records = Vec::new();
    for object in routes {
        let (name, spec, target, data) = annotated(&object.metadata)?;
        let full =
            Route::new(RouteSpec::new(&spec, RoutingMode::Path).unwrap(), target.clone(), Default::default())
                .map_err(|e| format!("{name}: {e}"))?;
        let rule = object.spec.rules.first().ok_or_else(|| format!("{name} has no rule"))?;
        let backend = rule.backend_refs.first().ok_or_else(|| format!("{name} has no backend"))?;
        let header = HttpRouteFilter::set_response_header(PROXY_ID_HEADER, revision(&full));
        if !rule.filters.contains(&header) {
            return Err(format!("{name} does not set {PROXY_ID_HEADER}: {:?}", rule.filters));
        }
        let service = services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(&backend.name))
            .ok_or_else(|| format!("{name}: no Service {}", backend.name))?;
        let owners = service.metadata.owner_references.as_deref().unwrap_or_default();
        if !owners.iter().any(|o| Some(&o.uid) == object.metadata.uid.as_ref()) {
            return Err(format!("{name}: Service {} is not owned by it: {owners:?}", backend.name));
        }
        let slice = slices
            .iter()
            .find(|s| {
                let labels = s.metadata.labels.as_ref();
                labels.and_then(|l| l.get("kubernetes.io/service-name")) == Some(&backend.name)
            })
            .ok_or_else(|| format!("{name}: no EndpointSlice for Service {}", backend.name))?;
        let address = slice.endpoints.first().and_then(|e| e.addresses.first()).and_then(|a| a.parse().ok());
        let address = address.ok_or_else(|| format!("{name}: no address in {:?}", slice.endpoints))?;
        let slice_port = slice.ports.as_deref().and_then(|p| p.first()).and_then(|p| p.port);
        if slice_port != backend.port {
            return Err(format!(
                "{name}: backend port {:?}, EndpointSlice port {slice_port:?}",
                backend.port
            ));
        }
        let port = backend.port.and_then(|p| u32::try_from(p).ok());
        records
            .push((spec, Stored { object: name, target, data, host: backend.name.clone(), port, address }));
    }
    Ok(records)
}

/// An object's name, and the route spec, target and data our annotations keep.
fn annotated(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(String, String, Target, Value), String> {
    let name = meta.name.clone().unwrap_or_default();
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    let (Some(spec), Some(route)) = (annotation(SPEC_ANNOTATION), annotation(ROUTE_ANNOTATION)) else {
        return Err(format!("{name} lacks our annotations"));
    };
    let data: Value = serde_json::from_str(route).map_err(|e| format!("{name}: route: {e}"))?;
    let target = data["target"].as_str().and_then(|t| Target::parse(t).ok());
    let target = target.ok_or_else(|| format!("{name}: no valid target in {data}"))?;
    Ok((name, spec.clone(), target, data))
}

/// Everything, with the hub at `base_url`.
async fn hub_drives_the_proxy(base_url: &str, routing: Routing) {
    let mut e2e = E2e::start(base_url, routing).await;
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

/// A kernel's websocket, opened through the gateway (Traefik) to a user's server, keeps carrying
/// messages while other servers' routes are added and deleted: JupyterHub's proxy contract is
/// that route changes do not drop live connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernels_websocket_through_the_gateway_outlives_other_routes_changing() {
    let mut e2e = E2e::start("/", Routing::GatewayApi).await;
    for user in ["alice", "bob", "carol"] {
        e2e.create_user(user).await;
    }
    e2e.start_server("alice", "").await;
    e2e.expect_gateway("with alice's server").await;
    let gateway = e2e.traefik.as_ref().expect("Traefik, with the Gateway API").addr();
    let url = format!("ws://{gateway}/user/alice/api/kernels/k1/channels");
    let (mut socket, _) = match tokio_tungstenite::connect_async(&url).await {
        Ok(connected) => connected,
        Err(e) => e2e.fail("opening alice's kernel websocket", &format!("{url}: {e}")),
    };
    if let Err(why) = exchange(&mut socket, 1).await {
        e2e.fail("the first message", &why);
    }
    e2e.start_server("bob", "").await;
    e2e.start_server("carol", "lab").await;
    e2e.expect_gateway("with bob's and carol's servers added").await;
    if let Err(why) = exchange(&mut socket, 2).await {
        e2e.fail("after routes were added", &why);
    }
    e2e.stop_server("bob", "").await;
    e2e.stop_server("carol", "lab").await;
    e2e.expect_gateway("with bob's and carol's servers deleted").await;
    if let Err(why) = exchange(&mut socket, 3).await {
        e2e.fail("after routes were deleted", &why);
    }
}

/// A user logs in through the gateway as a browser would (the login form, its XSRF cookie,
/// every redirect followed), which has the hub spawn their server; the browser lands on the
/// server, through the gateway, and the routes are then exactly the hub's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_through_the_gateway_and_lands_on_their_new_server() {
    let mut e2e = E2e::start("/", Routing::GatewayApi).await;
    e2e.expect_gateway("the hub's own route, after the hub started").await;
    let gateway = e2e.traefik.as_ref().expect("Traefik, with the Gateway API").addr();
    let mut browser = Browser { client: ApiClient::new(gateway, None), cookies: BTreeMap::new() };
    let step = "logging in through the gateway";
    let page = browser.request(Method::GET, "/hub/login").await;
    let Some(xsrf) = browser.cookies.get("_xsrf").cloned().filter(|_| page.status == 200) else {
        e2e.fail(step, &format!("the login page: {page:?}"));
    };
    let form = format!(
        "username=dora&password={}&_xsrf={}",
        form_encoded(testkit::jupyterhub::USER_PASSWORD),
        form_encoded(&xsrf)
    );
    let mut answer = browser.post_form("/hub/login", &form).await;
    let mut hops: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let landed = loop {
        let location = answer.headers.get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
        let location = location.map(|l| match l.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/".to_owned(), |at| rest[at..].to_owned()),
            None => l,
        });
        let last = hops.last().cloned().unwrap_or_default();
        let next = match (answer.status.is_redirection(), location) {
            (true, Some(location)) => location,
            // The spawn-pending page: the browser's script waits, then asks again.
            _ if answer.status == 200 && last.starts_with("/hub/spawn-pending/") => last.clone(),
            _ if last.starts_with("/user/dora/") && !answer.headers.contains_key("x-jupyterhub-version") => {
                break (last, answer);
            }
            _ => e2e.fail(step, &format!("after {hops:?}: {answer:?}")),
        };
        if Instant::now() > deadline {
            e2e.fail(step, &format!("still not on the server after {hops:?}"));
        }
        if next == last {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        answer = browser.request(Method::GET, &next).await;
        hops.push(next);
    };
    // The mock server echoes the path it was asked for.
    if landed.1.status != 200 || landed.1.body != landed.0.split('?').next().unwrap_or_default() {
        e2e.fail(step, &format!("landed on {}: {:?}", landed.0, landed.1));
    }
    e2e.expected
        .insert(e2e.user_spec("dora", ""), Owner::Server { user: "dora".into(), name: String::new() });
    e2e.expect_gateway("with dora's server, spawned by her login").await;
}

/// A browser: cookies kept from every answer and sent with every request, through one
/// gateway, with the `Host` of the hub's public address.
struct Browser {
    client: ApiClient,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    async fn request(&mut self, method: Method, path: &str) -> testkit::client::ApiResponse {
        self.send(method, path, None).await
    }

    async fn post_form(&mut self, path: &str, form: &str) -> testkit::client::ApiResponse {
        self.send(Method::POST, path, Some(form)).await
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&str>) -> testkit::client::ApiResponse {
        let cookie = self.cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>();
        let cookie = cookie.join("; ");
        let mut headers = vec![("host", "hub.example.org")];
        if !cookie.is_empty() {
            headers.push(("cookie", &cookie));
        }
        if form.is_some() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let answer = self.client.send(method, path, &headers, form.unwrap_or_default().as_bytes()).await;
        for set in answer.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let value = value.trim_matches('"');
                if value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_owned(), value.to_owned());
                }
            }
        }
        answer
    }
}

/// `text` as a form field's value: everything but ASCII letters and digits escaped.
fn form_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Sends message `n` on alice's kernel websocket and reads her server's echo.
async fn exchange<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>, n: u32) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let sent = socket.send(Message::text(format!("message {n}"))).await;
    let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
    match (sent, echoed) {
        (Ok(()), Ok(Some(Ok(Message::Text(text))))) if text.as_str() == format!("alice/ message {n}") => {
            Ok(())
        }
        other => Err(format!("the websocket, at message {n}: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_at_the_root_drives_the_proxy() {
    hub_drives_the_proxy("/", Routing::Istio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_under_a_base_url_drives_the_proxy() {
    hub_drives_the_proxy("/jhub/", Routing::Istio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_at_the_root_drives_the_gateway_api_backend() {
    hub_drives_the_proxy("/", Routing::GatewayApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_under_a_base_url_drives_the_gateway_api_backend() {
    hub_drives_the_proxy("/jhub/", Routing::GatewayApi).await;
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
    let proxy =
        start_proxy(api_server, &namespace, "127.0.0.1:0", (Routing::Istio, GATEWAY), &activity).await;
    let api_url = format!("http://{}", proxy.addr());
    let hub = JupyterHub::start(HubConfig {
        proxy_api_url: &api_url,
        proxy_token: TOKEN,
        base_url: "/",
        last_activity_interval: 2,
        network: None,
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
