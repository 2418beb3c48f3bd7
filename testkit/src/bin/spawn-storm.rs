//! The spawn-storm benchmark, run by `bench/storm.sh`: a class of users whose servers start at
//! once, as new-route POSTs from many concurrent clients, against our binary on the real API
//! server in testkit, beside the two figures that frame it, measured in the same run:
//!
//! - `bare`: the physical limit here. A plain kube-rs client writes the objects a route needs
//!   (its ServiceEntry, then its VirtualService, both server-side applies as ours are, rendered
//!   by the same [`Translation`]) with the same concurrency, on the same API server.
//! - `chp`: configurable-http-proxy taking the same POSTs (it writes nothing anywhere).
//!
//! ```text
//! spawn-storm --ours BIN [--chp BIN] [--routes 300] [--clients 8,64] [--rounds 3]
//! ```
//!
//! Each round starts every server fresh, with the hub's route at `/jhub/` written a second
//! before the storm (so each user's route is deeper and newer, and ancestor re-creation runs
//! as in production), then POSTs `/jhub/user/u<i>` with pod-IP targets. For ours it also counts
//! the API server requests per route (from our `kubernetes_requests_total`) and checks that
//! afterwards the API server holds exactly one VirtualService per route and one ServiceEntry
//! per user: nothing lost, nothing duplicated. A POST answered other than 201 fails the run.
//!
//! Output: one tab-separated line per measurement (`round clients server metric value`) on
//! stdout, then a table of medians over the rounds on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use istio_routes::Translation;
use istio_routes::resources::{ServiceEntry, VirtualService};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_routes::FIELD_MANAGER;
use proxy_api::{RouteSpec, RoutingMode, wire};
use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::metrics::Scrape;
use testkit::process::ProxyProcess;

const USAGE: &str =
    "usage: spawn-storm --ours BIN [--chp BIN] [--routes N] [--clients C1,C2,...] [--rounds R]";
const TOKEN: &str = "storm-token";

struct Args {
    ours: String,
    chp: Option<String>,
    routes: usize,
    clients: Vec<usize>,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { ours: String::new(), chp: None, routes: 300, clients: vec![8, 64], rounds: 3 };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| text.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--ours" => args.ours = value()?,
            "--chp" => args.chp = Some(value()?),
            "--routes" => args.routes = number(value()?)?,
            "--rounds" => args.rounds = number(value()?)?,
            "--clients" => {
                args.clients = value()?.split(',').map(|c| number(c.to_owned())).collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.ours.is_empty() || args.routes == 0 || args.rounds == 0 || args.clients.contains(&0) {
        return Err(USAGE.to_owned());
    }
    Ok(args)
}

/// The user route `i` of a storm, and its body: a pod IP, as KubeSpawner's default.
fn user_route(i: usize) -> (String, String) {
    let path = format!("/jhub/user/u{i}");
    let body = format!(
        r#"{{"target": "http://10.{}.{}.7:8888", "user": "u{i}", "jupyterhub": true}}"#,
        i / 250,
        i % 250
    );
    (path, body)
}

/// What one storm measured: routes per second and each POST's time to its answer.
struct Storm {
    rate: f64,
    latencies: Vec<Duration>,
}

impl Storm {
    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index].as_secs_f64() * 1000.0
    }
}

/// Runs `routes` jobs on `clients` workers and times each; a job answers whether it succeeded.
async fn storm<F, Fut>(routes: usize, clients: usize, job: F) -> Result<Storm, String>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, job) = (Arc::clone(&next), job.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= routes {
                        return Ok::<_, String>(latencies);
                    }
                    let sent = Instant::now();
                    job(i).await?;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(routes);
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| e.to_string())??);
    }
    Ok(Storm { rate: routes as f64 / started.elapsed().as_secs_f64(), latencies })
}

/// The bare object writes of `routes` routes, as a plain client makes them.
async fn bare(server: &ApiServer, routes: usize, clients: usize) -> Result<Storm, String> {
    let namespace = server.new_namespace("bare").await;
    let translation = Arc::new(Translation { namespace: namespace.clone(), ..Translation::default() });
    let client = server.client();
    let entries: Api<ServiceEntry> = Api::namespaced_with(client.clone(), &namespace, &translation.version);
    let services: Api<VirtualService> = Api::namespaced_with(client, &namespace, &translation.version);
    storm(routes, clients, move |i| {
        let (translation, entries, services) = (Arc::clone(&translation), entries.clone(), services.clone());
        async move {
            let (path, body) = user_route(i);
            let spec = RouteSpec::new(&path, RoutingMode::Path).map_err(|e| e.to_string())?;
            let route = wire::route_from_body(spec, body.as_bytes()).map_err(|e| e.to_string())?;
            let rendered = translation.render(&route, 0).map_err(|e| e.to_string())?;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let entry = rendered.service_entry.ok_or("a pod-IP route has a ServiceEntry")?;
            let name = entry.metadata.name.clone().unwrap_or_default();
            entries.patch(&name, &params, &Patch::Apply(&entry)).await.map_err(|e| e.to_string())?;
            let object = rendered.virtual_service;
            let name = object.metadata.name.clone().unwrap_or_default();
            services.patch(&name, &params, &Patch::Apply(&object)).await.map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await
}

/// POSTs the hub's route, waits a second so the users' routes are newer, then the storm.
async fn post_storm(client: &ApiClient, routes: usize, clients: usize) -> Result<Storm, String> {
    let hub = client.post("/api/routes/jhub", r#"{"target": "http://hub:8081", "jupyterhub": true}"#).await;
    if hub.status != 201 {
        return Err(format!("the hub's route was answered {}: {}", hub.status, hub.error()));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = client.clone();
    storm(routes, clients, move |i| {
        let client = client.clone();
        async move {
            let (path, body) = user_route(i);
            let answer = client.post(&format!("/api/routes{path}"), &body).await;
            if answer.status == 201 {
                Ok(())
            } else {
                Err(format!("POST {path}: {} {}", answer.status, answer.error()))
            }
        }
    })
    .await
}

/// Waits until the server answers the routes API.
async fn wait_until_serving(client: &ApiClient) -> Result<(), String> {
    for _ in 0..600 {
        if client.get("/api/routes").await.status == 200 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the server did not serve /api/routes within 30 s".to_owned())
}

const KUBE_REQUESTS: &str = "jupyterhub_istio_proxy_kubernetes_requests_total";

/// Our Kubernetes API calls so far, by `verb outcome`, and in all.
fn kube_requests(text: &str) -> BTreeMap<String, f64> {
    let scrape = Scrape::parse(text);
    let mut calls = BTreeMap::new();
    for sample in scrape.samples.iter().filter(|s| s.name == KUBE_REQUESTS) {
        let label = |name: &str| sample.labels.get(name).cloned().unwrap_or_default();
        *calls.entry(format!("{} {} {}", label("verb"), label("resource"), label("outcome"))).or_default() +=
            sample.value;
        *calls.entry("all".to_owned()).or_default() += sample.value;
    }
    calls
}

/// Ours on the real API server: the storm, its API server requests per route, and a check of
/// what the API server holds afterwards.
async fn ours(server: &ApiServer, bin: &str, routes: usize, clients: usize) -> Result<(Storm, f64), String> {
    let namespace = server.new_namespace("storm").await;
    let process = ProxyProcess::start_kubernetes(bin, server.kubeconfig_path(), &namespace, TOKEN, &[]).await;
    let client = ApiClient::new(process.addr(), Some(TOKEN));
    wait_until_serving(&client).await?;
    let before = kube_requests(&String::from_utf8_lossy(&client.get("/metrics").await.body));
    let result = post_storm(&client, routes, clients).await;
    let result = match result {
        Ok(storm) => storm,
        Err(error) => return Err(format!("{error}\nits log:\n{}", process.log())),
    };
    let after = kube_requests(&String::from_utf8_lossy(&client.get("/metrics").await.body));
    // The hub's route and the second's wait are not the storm's: their requests are few, and
    // counting them slightly overstates the cost per route.
    let per_route = (after["all"] - before["all"]) / routes as f64;
    let spent: Vec<String> = after
        .iter()
        .filter(|(call, _)| call.as_str() != "all")
        .map(|(call, n)| (call, n - before.get(call).copied().unwrap_or_default()))
        .filter(|(_, n)| *n > 0.0)
        .map(|(call, n)| format!("{call}: {n}"))
        .collect();
    eprintln!("ours at {clients} clients, Kubernetes API calls during the storm: {}", spent.join(", "));

    let listed = client.get("/api/routes").await.keys().len();
    if listed != routes + 1 {
        return Err(format!("GET /api/routes lists {listed} routes, not {}", routes + 1));
    }
    let version = Translation::default().version;
    let services: Api<VirtualService> = Api::namespaced_with(server.client(), &namespace, &version);
    let entries: Api<ServiceEntry> = Api::namespaced_with(server.client(), &namespace, &version);
    let services = services.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    let labels: BTreeSet<String> = services
        .items
        .iter()
        .filter_map(|o| o.metadata.labels.as_ref()?.get(kube_routes::ROUTE_LABEL).cloned())
        .collect();
    if services.items.len() != routes + 1 || labels.len() != routes + 1 {
        return Err(format!(
            "the API server holds {} VirtualServices of {} routes, not one for each of {}",
            services.items.len(),
            labels.len(),
            routes + 1
        ));
    }
    let entries = entries.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items.len();
    if entries != routes {
        return Err(format!("the API server holds {entries} ServiceEntries, not {routes}"));
    }
    Ok((result, per_route))
}

/// configurable-http-proxy taking the same storm.
async fn chp(bin: &str, routes: usize, clients: usize) -> Result<Storm, String> {
    let port = free_port()?;
    let mut child = tokio::process::Command::new(bin)
        .args(["--ip", "127.0.0.1", "--port", &free_port()?.to_string()])
        .args(["--api-ip", "127.0.0.1", "--api-port", &port.to_string(), "--log-level", "warn"])
        .env("CONFIGPROXY_AUTH_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {bin}: {e}"))?;
    let client = ApiClient::new(([127, 0, 0, 1], port).into(), Some(TOKEN));
    // The client panics on a refused connection; wait until the port takes one.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until_serving(&client).await?;
    let result = post_storm(&client, routes, clients).await;
    let _ = child.kill().await;
    result
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("spawn-storm failed: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let server = ApiServer::start().await;
    // (clients, server, metric) to one value per round.
    let mut figures: BTreeMap<(usize, &str, &str), Vec<f64>> = BTreeMap::new();
    let mut record =
        |round: usize, clients: usize, server: &'static str, metric: &'static str, value: f64| {
            println!("{round}\t{clients}\t{server}\t{metric}\t{value:.2}");
            figures.entry((clients, server, metric)).or_default().push(value);
        };
    for round in 1..=args.rounds {
        for &clients in &args.clients {
            let storm = bare(&server, args.routes, clients).await?;
            record(round, clients, "bare", "routes_per_s", storm.rate);
            record(round, clients, "bare", "p50_ms", storm.quantile(0.5));
            record(round, clients, "bare", "p99_ms", storm.quantile(0.99));
            let (storm, per_route) = ours(&server, &args.ours, args.routes, clients).await?;
            record(round, clients, "ours", "routes_per_s", storm.rate);
            record(round, clients, "ours", "p50_ms", storm.quantile(0.5));
            record(round, clients, "ours", "p99_ms", storm.quantile(0.99));
            record(round, clients, "ours", "requests_per_route", per_route);
            if let Some(bin) = &args.chp {
                let storm = chp(bin, args.routes, clients).await?;
                record(round, clients, "chp", "routes_per_s", storm.rate);
                record(round, clients, "chp", "p50_ms", storm.quantile(0.5));
                record(round, clients, "chp", "p99_ms", storm.quantile(0.99));
            }
        }
    }
    eprintln!("\n{} routes under /jhub/, pod-IP targets, medians of {} rounds:\n", args.routes, args.rounds);
    eprintln!("| clients | server | routes/s | p50 ms | p99 ms | API requests/route | ours ÷ bare |");
    eprintln!("|---|---|---|---|---|---|---|");
    for &clients in &args.clients {
        let get = |server: &str, metric: &str| figures.get(&(clients, server, metric)).map(|v| median(v));
        let bare_rate = get("bare", "routes_per_s").unwrap_or(f64::NAN);
        for server in ["bare", "ours", "chp"] {
            let Some(rate) = get(server, "routes_per_s") else { continue };
            let per_route = get(server, "requests_per_route")
                .map_or("2 (by definition)".to_owned(), |v| format!("{v:.2}"));
            let per_route = if server == "chp" { "none".to_owned() } else { per_route };
            let ratio = if server == "ours" { format!("{:.2}", rate / bare_rate) } else { String::new() };
            eprintln!(
                "| {clients} | {server} | {rate:.0} | {:.0} | {:.0} | {per_route} | {ratio} |",
                get(server, "p50_ms").unwrap_or(f64::NAN),
                get(server, "p99_ms").unwrap_or(f64::NAN),
            );
        }
    }
    Ok(())
}
