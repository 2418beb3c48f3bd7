//! What 10,000 routes cost, run by `bench/scale.sh`: one route's GET and POST at 100 routes and
//! at 10,000, and the resident memory once 10,000 routes are added and listed, on testkit's real
//! API server, for each routing API, with healing on (the default).
//!
//! ```text
//! scale --ours BIN [--routes 10000] [--small 100] [--samples 300] [--clients 16] [--routing istio|gateway-api|both]
//! ```
//!
//! Per routing API: start ours (`--store kubernetes`) in a namespace of its own; add `--small`
//! routes (pod-IP targets, as KubeSpawner sends) through the API; time `--samples` GETs of one
//! route and `--samples` POSTs re-adding one route with another target, one at a time; add
//! routes up to `--routes` with `--clients` concurrent clients; time the same again; list every
//! route once (as JupyterHub's check does) and read the process's VmRSS.
//!
//! Output: one tab-separated line per figure on stdout, and a table on stderr.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::process::ProxyProcess;

const USAGE: &str = "usage: scale --ours BIN [--routes N] [--small N] [--samples N] [--clients C] \
    [--routing istio|gateway-api|both]";
const TOKEN: &str = "scale-token";

struct Args {
    ours: String,
    routes: usize,
    small: usize,
    samples: usize,
    clients: usize,
    routing: Vec<&'static str>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        ours: String::new(),
        routes: 10_000,
        small: 100,
        samples: 300,
        clients: 16,
        routing: vec!["istio", "gateway-api"],
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--ours" => args.ours = value.clone(),
            "--routes" => args.routes = number()?,
            "--small" => args.small = number()?.max(1),
            "--samples" => args.samples = number()?.max(1),
            "--clients" => args.clients = number()?.max(1),
            "--routing" => {
                args.routing = match value.as_str() {
                    "istio" => vec!["istio"],
                    "gateway-api" => vec!["gateway-api"],
                    "both" => vec!["istio", "gateway-api"],
                    other => return Err(format!("--routing: istio, gateway-api or both, not {other}")),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.ours.is_empty() {
        return Err("--ours is required".to_owned());
    }
    if args.routes < args.small {
        return Err("--routes must be at least --small".to_owned());
    }
    Ok(args)
}

/// A pod IP for route `i`, as KubeSpawner's targets are.
fn target(i: usize) -> String {
    format!("http://10.{}.{}.{}:8888", (i >> 16) & 0xff, (i >> 8) & 0xff, (i & 0xff).max(1))
}

/// Adds routes `from..to` with `clients` concurrent clients.
async fn add_routes(api: &ApiClient, from: usize, to: usize, clients: usize) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (api, next) = (api.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return Ok::<_, String>(());
                }
                let body = format!(r#"{{"target": "{}", "jupyterhub": true, "user": "u{i}"}}"#, target(i));
                let answer = api.post(&format!("/api/routes/user/u{i}"), &body).await;
                if answer.status != 201 {
                    return Err(format!("POST u{i}: {} {:?}", answer.status, answer.body));
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The median of `samples` calls of `call`, in milliseconds.
async fn median_ms<F: std::future::Future<Output = Result<(), String>>>(
    samples: usize,
    mut call: impl FnMut(usize) -> F,
) -> Result<f64, String> {
    let mut taken = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        call(i).await?;
        taken.push(started.elapsed());
    }
    taken.sort();
    Ok(taken[taken.len() / 2].as_secs_f64() * 1000.0)
}

/// One route's GET and POST, each the median of `samples`.
async fn one_route(api: &ApiClient, samples: usize) -> Result<(f64, f64), String> {
    let get = median_ms(samples, |_| async {
        let answer = api.get("/api/routes/user/u0").await;
        if answer.status == 200 { Ok(()) } else { Err(format!("GET u0: {}", answer.status)) }
    })
    .await?;
    let post = median_ms(samples, |i| async move {
        let body = format!(r#"{{"target": "{}", "jupyterhub": true, "user": "u0"}}"#, target(i % 2));
        let answer = api.post("/api/routes/user/u0", &body).await;
        if answer.status == 201 { Ok(()) } else { Err(format!("POST u0: {}", answer.status)) }
    })
    .await?;
    Ok((get, post))
}

fn rss_mib(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    let kib: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or("bad VmRSS")?;
    Ok(kib / 1024.0)
}

async fn run(args: Args) -> Result<(), String> {
    let api_server = ApiServer::start().await;
    let mut rows = Vec::new();
    for routing in &args.routing {
        let namespace = api_server.new_namespace("scale").await;
        let flags: &[&str] = match *routing {
            "istio" => &["--istio-gateway", "istio-system/jupyterhub-gateway"],
            _ => &["--routing", "gateway-api", "--parent-ref", "istio-system/jupyterhub"],
        };
        let proxy = ProxyProcess::start_kubernetes(
            &args.ours,
            api_server.kubeconfig_path(),
            &namespace,
            TOKEN,
            flags,
        )
        .await;
        let pid = proxy.pid().ok_or("the proxy has no pid")?;
        let api = ApiClient::new(proxy.addr(), Some(TOKEN)).with_timeout(Duration::from_secs(60));

        add_routes(&api, 0, args.small, args.clients).await?;
        let (get_small, post_small) = one_route(&api, args.samples).await?;
        let started = Instant::now();
        add_routes(&api, args.small, args.routes, args.clients).await?;
        eprintln!("{routing}: {} routes added in {:.0} s", args.routes, started.elapsed().as_secs_f64());
        let (get_large, post_large) = one_route(&api, args.samples).await?;
        let listed = api.get("/api/routes").await;
        let count = listed.json().as_object().map_or(0, |routes| routes.len());
        if count != args.routes {
            return Err(format!("{routing}: listed {count} routes, not {}", args.routes));
        }
        // Healing's first pass and the watch settle; then the memory as an operator sees it.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss = rss_mib(pid)?;
        rows.push((*routing, get_small, get_large, post_small, post_large, rss));
    }

    eprintln!(
        "\n| routing | GET at {s} ms | GET at {l} ms | ratio | POST at {s} ms | POST at {l} ms | ratio | VmRSS at {l} MiB |",
        s = args.small,
        l = args.routes
    );
    eprintln!("|---|---|---|---|---|---|---|---|");
    for (routing, get_small, get_large, post_small, post_large, rss) in rows {
        for (name, value) in [
            ("get_small_ms", get_small),
            ("get_large_ms", get_large),
            ("post_small_ms", post_small),
            ("post_large_ms", post_large),
            ("rss_mib", rss),
        ] {
            println!("{routing}\t{name}\t{value:.2}");
        }
        eprintln!(
            "| {routing} | {get_small:.2} | {get_large:.2} | {:.2} | {post_small:.2} | {post_large:.2} | {:.2} | {rss:.1} |",
            get_large / get_small,
            post_large / post_small
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    testkit::bench_main("scale", USAGE, parse_args(), run).await
}
