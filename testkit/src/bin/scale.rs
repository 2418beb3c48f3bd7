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
//! route and `--samples` POSTs re-adding one route with another target, one at a time, and as
//! many server-side applies of a small object of the same kind straight to the API server (its
//! own share of a POST); add routes up to `--routes` with `--clients` concurrent clients; time
//! the same again; list every route once (as JupyterHub's check does) and read the process's
//! VmRSS. Then, for where the memory goes, the VmRSS of fresh processes that read the same
//! routes: with healing, with healing and the allocator giving freed memory back at once, and
//! without healing.
//!
//! Output: one tab-separated line per figure on stdout, and a table on stderr.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
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

/// The API server's own share of a POST: the median of `samples` server-side applies of a
/// small object of the kind the routing API writes, not ours (no labels), made by this client,
/// its host changing each time as a route's target does.
async fn server_apply(
    server: &ApiServer,
    namespace: &str,
    routing: &str,
    samples: usize,
) -> Result<f64, String> {
    let istio = routing == "istio";
    let (group, kind, plural) = match istio {
        true => ("networking.istio.io", "VirtualService", "virtualservices"),
        false => ("gateway.networking.k8s.io", "HTTPRoute", "httproutes"),
    };
    let spec = |host: String| match istio {
        true => {
            serde_json::json!({"hosts": [host], "http": [{"route": [{"destination": {"host": "probe"}}]}]})
        }
        false => {
            serde_json::json!({"hostnames": [host], "rules": [{"backendRefs": [{"name": "probe", "port": 80}]}]})
        }
    };
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(server.client(), namespace, &resource);
    let params = PatchParams::apply("scale-bench").force();
    median_ms(samples, |i| {
        let object = serde_json::json!({
            "apiVersion": format!("{group}/v1"),
            "kind": kind,
            "metadata": {"name": "scale-probe"},
            "spec": spec(format!("h{}.example.org", i % 2)),
        });
        let (api, params) = (&api, &params);
        async move {
            api.patch("scale-probe", params, &Patch::Apply(&object))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await
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

/// How long the watch, healing's checks and the API server get to settle before a measurement.
const SETTLE: Duration = Duration::from_secs(10);

/// One routing API's figures: (at `--small`, at `--routes`) medians in ms, and VmRSS in MiB.
struct Row<'a> {
    routing: &'a str,
    get: (f64, f64),
    post: (f64, f64),
    server: (f64, f64),
    rss: f64,
    /// A fresh start's VmRSS in each of [`FRESH`]'s ways.
    fresh: Vec<f64>,
}

/// The fresh starts that say where the memory goes: healing on; healing on with the allocator
/// giving freed memory back at once (mimalloc's purge delay, 10 ms by default, at 0); healing
/// off.
const FRESH: [(&str, &[(&str, &str)]); 3] =
    [("--heal=true", &[]), ("--heal=true", &[("MIMALLOC_PURGE_DELAY", "0")]), ("--heal=false", &[])];

/// Lists every route once, as JupyterHub's check does, and checks their number.
async fn listed(api: &ApiClient, routes: usize) -> Result<(), String> {
    let listed = api.get("/api/routes").await;
    let count = listed.json().as_object().map_or(0, |routes| routes.len());
    if count == routes { Ok(()) } else { Err(format!("listed {count} routes, not {routes}")) }
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
        // A client of its own after each pause: the proxy closes idle connections, and a pooled
        // one reused just then fails the request.
        let client = || ApiClient::new(proxy.addr(), Some(TOKEN)).with_timeout(Duration::from_secs(60));
        let api = client();

        add_routes(&api, 0, args.small, args.clients).await?;
        // The watch, healing's checks and the API server settle before each measurement.
        tokio::time::sleep(SETTLE).await;
        let api = client();
        let (get_small, post_small) = one_route(&api, args.samples).await?;
        let server_small = server_apply(&api_server, &namespace, routing, args.samples).await?;
        let started = Instant::now();
        add_routes(&api, args.small, args.routes, args.clients).await?;
        eprintln!("{routing}: {} routes added in {:.0} s", args.routes, started.elapsed().as_secs_f64());
        tokio::time::sleep(SETTLE).await;
        let api = client();
        let (get_large, post_large) = one_route(&api, args.samples).await?;
        let server_large = server_apply(&api_server, &namespace, routing, args.samples).await?;
        listed(&api, args.routes).await.map_err(|e| format!("{routing}: {e}"))?;
        tokio::time::sleep(SETTLE).await;
        let rss = rss_mib(pid)?;
        drop(proxy);

        // Where the memory goes: the same routes read by a fresh process, with healing and
        // without; what the one above holds beyond the first is what adding them left behind.
        let mut fresh = Vec::new();
        for (heal, env) in FRESH {
            let mut command = tokio::process::Command::new(&args.ours);
            command
                .env_clear()
                .env("KUBECONFIG", api_server.kubeconfig_path())
                .env("CONFIGPROXY_AUTH_TOKEN", TOKEN);
            command.envs(env.iter().copied());
            command.args(["--store", "kubernetes", "--listen", "127.0.0.1:0", "--k8s-namespace", &namespace]);
            command.args(flags).arg(heal);
            let proxy = ProxyProcess::spawn(command).await;
            let api = ApiClient::new(proxy.addr(), Some(TOKEN)).with_timeout(Duration::from_secs(60));
            listed(&api, args.routes).await.map_err(|e| format!("{routing}, fresh: {e}"))?;
            tokio::time::sleep(SETTLE).await;
            fresh.push(rss_mib(proxy.pid().ok_or("the proxy has no pid")?)?);
        }
        rows.push(Row {
            routing,
            get: (get_small, get_large),
            post: (post_small, post_large),
            server: (server_small, server_large),
            rss,
            fresh,
        });
    }

    let (s, l) = (args.small, args.routes);
    eprintln!(
        "\nMedians in ms; ratio = at {l} ÷ at {s}; the API server's apply is its own share of a POST.\n"
    );
    eprintln!(
        "| routing | GET at {s} | GET at {l} | ratio | POST at {s} | POST at {l} | ratio | API server's apply at {s} | at {l} | ratio |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let ratio = |(small, large): (f64, f64)| large / small;
        eprintln!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            row.routing,
            row.get.0,
            row.get.1,
            ratio(row.get),
            row.post.0,
            row.post.1,
            ratio(row.post),
            row.server.0,
            row.server.1,
            ratio(row.server)
        );
    }
    eprintln!("\nVmRSS in MiB with {l} routes.\n");
    eprintln!(
        "| routing | after adding them (healing on) | a fresh start, healing on | the same, MIMALLOC_PURGE_DELAY=0 | a fresh start, healing off |"
    );
    eprintln!("|---|---|---|---|---|");
    for row in &rows {
        let [on, purged, off] = [row.fresh[0], row.fresh[1], row.fresh[2]];
        eprintln!("| {} | {:.1} | {on:.1} | {purged:.1} | {off:.1} |", row.routing, row.rss);
        for (name, value) in [
            ("get_small_ms", row.get.0),
            ("get_large_ms", row.get.1),
            ("post_small_ms", row.post.0),
            ("post_large_ms", row.post.1),
            ("server_apply_small_ms", row.server.0),
            ("server_apply_large_ms", row.server.1),
            ("rss_mib", row.rss),
            ("fresh_healing_rss_mib", row.fresh[0]),
            ("fresh_healing_purge0_rss_mib", row.fresh[1]),
            ("fresh_no_healing_rss_mib", row.fresh[2]),
        ] {
            println!("{}\t{name}\t{value:.2}", row.routing);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    testkit::bench_main("scale", USAGE, parse_args(), run).await
}
