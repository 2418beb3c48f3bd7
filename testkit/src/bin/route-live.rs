//! How soon a route is live, run by `bench/route-live.sh`: from the 201 of a new route's POST to
//! the first request through a real gateway answered by the new server.
//!
//! Our binary writes HTTPRoutes (`--routing gateway-api`) to testkit's real API server; Traefik
//! (`testkit::traefik`, its default `providersThrottleDuration` of 2 s unless `--throttle-ms`)
//! routes them to echo servers in a pod network, one per route. After each 201 the client
//! polls the route's path through Traefik every 10 ms until its server answers.
//!
//! ```text
//! route-live --ours BIN [--singles 20] [--routes 300] [--clients 64] [--throttle-ms 2000]
//! ```
//!
//! Two cases, each without and with warm-up (`--wait-for-warmup --warmup-url <Traefik>`):
//! `single`, routes added one at a time, each once the one before is live; `storm`, `--routes`
//! routes added at once by `--clients` concurrent clients. For each: the median and p99 of the
//! POST (request to 201) and of the wait after it (201 to live), in milliseconds; with warm-up
//! the second should be the poll's own few milliseconds.
//!
//! Output: one tab-separated line per case and figure on stdout, and a table on stderr.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::echo::{EchoServer, read_answer};
use testkit::podnet::PodNetwork;
use testkit::process::ProxyProcess;
use testkit::traefik::{Options, Traefik};

const USAGE: &str =
    "usage: route-live --ours BIN [--singles N] [--routes N] [--clients C] [--throttle-ms MS]";
const TOKEN: &str = "route-live-token";
/// How long a route may take to be live before the run fails.
const LIVE_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    ours: String,
    singles: usize,
    routes: usize,
    clients: usize,
    throttle: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { ours: String::new(), singles: 20, routes: 300, clients: 64, throttle: Duration::from_secs(2) };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--ours" => args.ours = value.clone(),
            "--singles" => args.singles = number()?,
            "--routes" => args.routes = number()?,
            "--clients" => args.clients = number()?.max(1),
            "--throttle-ms" => args.throttle = Duration::from_millis(number()? as u64),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.ours.is_empty() {
        return Err("--ours is required".to_owned());
    }
    Ok(args)
}

/// One route's figures: the POST, and the wait from its 201 until its server answered through
/// the gateway.
#[derive(Debug, Clone, Copy)]
struct Timing {
    post: Duration,
    live: Duration,
}

/// Adds `path` to `server` through `api` and waits until Traefik routes it there.
async fn add_and_wait(
    api: &ApiClient,
    traefik: &Traefik,
    path: &str,
    server: &EchoServer,
) -> Result<Timing, String> {
    let name = path.rsplit('/').next().unwrap_or_default();
    let body = format!(r#"{{"target": "http://{}"}}"#, server.addr());
    let started = Instant::now();
    let answer = api.post(&format!("/api/routes{path}"), &body).await;
    let answered = Instant::now();
    if answer.status != 201 {
        return Err(format!("POST {path}: {} {:?}", answer.status, answer.body));
    }
    let probe = format!("{path}/api");
    loop {
        let through = traefik.get("hub.example.org", &probe).await;
        if read_answer(&through.body).is_some_and(|(who, _)| who == name) {
            return Ok(Timing { post: answered - started, live: answered.elapsed() });
        }
        if answered.elapsed() > LIVE_TIMEOUT {
            return Err(format!("{path} was not live {LIVE_TIMEOUT:?} after its 201: {through:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `q`-quantile of `values` in milliseconds (nearest rank).
fn quantile(values: &mut [Duration], q: f64) -> f64 {
    values.sort();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1].as_secs_f64() * 1000.0
}

async fn run(args: Args) -> Result<(), String> {
    let api_server = ApiServer::start().await;
    let namespace = api_server.new_namespace("route-live").await;
    let traefik = Traefik::start_with(&api_server, &namespace, Options { throttle: args.throttle }).await;
    let traefik = Arc::new(traefik);
    let network = PodNetwork::new();
    let warmup_url = format!("http://{}", traefik.addr());
    let parent = traefik.parent_ref();
    let mut rows = Vec::new();
    for warmup in [false, true] {
        let mut flags = vec!["--routing", "gateway-api", "--parent-ref", &parent];
        if warmup {
            flags.extend(["--wait-for-warmup", "--warmup-url", &warmup_url, "--warmup-timeout", "20"]);
            flags.extend(["--public-host", "hub.example.org"]);
        }
        let proxy = ProxyProcess::start_kubernetes(
            &args.ours,
            api_server.kubeconfig_path(),
            &namespace,
            TOKEN,
            &flags,
        )
        .await;
        // A storm's POSTs queue behind each other's warm-up.
        let api = ApiClient::new(proxy.addr(), Some(TOKEN)).with_timeout(LIVE_TIMEOUT);
        let tag = if warmup { "w" } else { "n" };

        let mut singles = Vec::new();
        for i in 0..args.singles {
            let path = format!("/user/{tag}s{i}");
            let listener = network.bind_tokio((network.pod_ip(), 0).into()).map_err(|e| e.to_string())?;
            let server = EchoServer::serve(listener, &format!("{tag}s{i}"));
            singles.push((add_and_wait(&api, &traefik, &path, &server).await?, server));
        }
        eprintln!("singles with warm-up {warmup}: {} routes live", singles.len());
        rows.push((warmup, "single", singles.into_iter().map(|(timing, _)| timing).collect::<Vec<_>>()));

        let mut servers = Vec::new();
        for i in 0..args.routes {
            let listener = network.bind_tokio((network.pod_ip(), 0).into()).map_err(|e| e.to_string())?;
            servers.push(Arc::new(EchoServer::serve(listener, &format!("{tag}r{i}"))));
        }
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut clients = Vec::new();
        for _ in 0..args.clients {
            let (api, traefik, servers, next) =
                (api.clone(), Arc::clone(&traefik), servers.clone(), Arc::clone(&next));
            clients.push(tokio::spawn(async move {
                let mut timings = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(server) = servers.get(i) else { return Ok::<_, String>(timings) };
                    timings.push(add_and_wait(&api, &traefik, &format!("/user/{tag}r{i}"), server).await?);
                }
            }));
        }
        let mut storm = Vec::new();
        for client in clients {
            storm.extend(client.await.map_err(|e| e.to_string())??);
        }
        eprintln!("storm with warm-up {warmup}: {} routes live", storm.len());
        rows.push((warmup, "storm", storm));
    }

    eprintln!(
        "\n| case | warm-up | routes | POST p50 ms | POST p99 ms | 201 to live p50 ms | 201 to live p99 ms |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    for (warmup, case, timings) in rows {
        let mut posts: Vec<Duration> = timings.iter().map(|t| t.post).collect();
        let mut lives: Vec<Duration> = timings.iter().map(|t| t.live).collect();
        let figures = [
            ("post_p50_ms", quantile(&mut posts, 0.5)),
            ("post_p99_ms", quantile(&mut posts, 0.99)),
            ("live_p50_ms", quantile(&mut lives, 0.5)),
            ("live_p99_ms", quantile(&mut lives, 0.99)),
        ];
        let warmup = if warmup { "on" } else { "off" };
        for (name, value) in figures {
            println!("{case}\t{warmup}\t{name}\t{value:.1}");
        }
        let [a, b, c, d] = figures.map(|(_, value)| value);
        eprintln!("| {case} | {warmup} | {} | {a:.0} | {b:.0} | {c:.0} | {d:.0} |", timings.len());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    testkit::bench_main("route-live", USAGE, parse_args(), run).await
}
