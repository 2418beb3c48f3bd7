//! The soak benchmark, run by `bench/soak.sh`: many route adds and deletes through one proxy
//! process, to see whether anything grows with the routes written rather than with the routes
//! kept.
//!
//! ```text
//! soak --ours BIN [--store memory|kubernetes] [--ops 100000] [--clients 8] [--live 50]
//! ```
//!
//! Each client adds user routes with pod-IP targets one after another and, once it holds
//! `--live` of them, deletes its oldest with each add, so the proxy keeps `clients × live`
//! routes while `--ops` writes (adds and deletes) go through it. With `--store kubernetes` it
//! runs on testkit's real API server. Every quarter second it samples the proxy's resident
//! memory (`VmRSS`), its Tokio tasks (`runtime_tasks` from `/metrics`) and its open sockets
//! (a watch stream that leaked would hold one). After warm-up (the first fifth of the writes)
//! it fits a line to each and reports the slope per 10,000 writes. At the end the listing, and
//! on the API server the VirtualServices and ServiceEntries, must be exactly the routes kept.
//!
//! Output: one tab-separated sample per line (`ops rss_kib tasks sockets`) on stdout, then the
//! summary on stderr. A write answered other than 201/204, or a wrong listing, fails the run.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use istio_routes::resources::{IstioVersion, ServiceEntry, VirtualService};
use kube::api::{Api, ListParams};
use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::metrics::Scrape;
use testkit::process::ProxyProcess;
use tokio::process::Command;

const USAGE: &str = "usage: soak --ours BIN [--store memory|kubernetes] [--ops N] [--clients C] [--live L]";
const TOKEN: &str = "soak-token";

struct Args {
    ours: String,
    kubernetes: bool,
    ops: usize,
    clients: usize,
    live: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { ours: String::new(), kubernetes: false, ops: 100_000, clients: 8, live: 50 };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--ours" => args.ours = value,
            "--store" if value == "memory" || value == "kubernetes" => {
                args.kubernetes = value == "kubernetes"
            }
            "--ops" => args.ops = number()?,
            "--clients" => args.clients = number()?,
            "--live" => args.live = number()?,
            _ => return Err(format!("unknown argument {flag} {value}\n{USAGE}")),
        }
    }
    if args.ours.is_empty() || args.ops == 0 || args.clients == 0 || args.live == 0 {
        return Err(USAGE.to_owned());
    }
    Ok(args)
}

/// One sample of the proxy process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ops: usize,
    rss_kib: f64,
    tasks: f64,
    sockets: f64,
}

/// One figure of a sample.
type Figure = fn(&Sample) -> f64;

/// Resident memory in KiB and open sockets of process `pid`.
fn process_figures(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let rss_kib: f64 = rss.trim().trim_end_matches("kB").trim().parse().ok()?;
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|link| link.to_string_lossy().starts_with("socket:"))
        .count();
    Some((rss_kib, sockets as f64))
}

async fn sample(client: &ApiClient, pid: u32, ops: usize) -> Result<Sample, String> {
    let (rss_kib, sockets) = process_figures(pid).ok_or("the proxy process is gone")?;
    let scrape = Scrape::parse(std::str::from_utf8(&client.get("/metrics").await.body).unwrap_or_default());
    let tasks = scrape.value("jupyterhub_istio_proxy_runtime_tasks", &[]).ok_or("no runtime_tasks metric")?;
    Ok(Sample { ops, rss_kib, tasks, sockets })
}

/// The least-squares slope of `y` over the samples' writes, per 10,000 writes.
fn slope(samples: &[Sample], y: impl Fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    let mean_x = samples.iter().map(|s| s.ops as f64).sum::<f64>() / n;
    let mean_y = samples.iter().map(&y).sum::<f64>() / n;
    let covariance: f64 = samples.iter().map(|s| (s.ops as f64 - mean_x) * (y(s) - mean_y)).sum();
    let variance: f64 = samples.iter().map(|s| (s.ops as f64 - mean_x).powi(2)).sum();
    if variance == 0.0 { 0.0 } else { covariance / variance * 10_000.0 }
}

/// User route `k` of client `c`, and its body.
fn route(c: usize, k: usize) -> (String, String) {
    let body =
        format!(r#"{{"target": "http://10.{c}.{}.{}:8888", "jupyterhub": true}}"#, k / 250 % 250, k % 250);
    (format!("/user/s{c}-{k}"), body)
}

/// Adds and deletes until `ops` writes are done between all clients; answers the routes kept.
async fn write(
    client: ApiClient,
    c: usize,
    live: usize,
    done: Arc<AtomicUsize>,
    ops: usize,
) -> Result<Vec<String>, String> {
    let mut kept = std::collections::VecDeque::new();
    for k in 0.. {
        if done.load(Ordering::Relaxed) >= ops {
            break;
        }
        let (path, body) = route(c, k);
        let status = client.post(&format!("/api/routes{path}"), &body).await.status;
        if status != 201 {
            return Err(format!("POST {path} answered {status}"));
        }
        kept.push_back(path);
        done.fetch_add(1, Ordering::Relaxed);
        if kept.len() > live {
            let oldest = kept.pop_front().expect("more than `live` kept");
            let status = client.delete(&format!("/api/routes{oldest}")).await.status;
            if status != 204 {
                return Err(format!("DELETE {oldest} answered {status}"));
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(kept.into())
}

async fn run(args: Args) -> Result<(), String> {
    let server = if args.kubernetes { Some(ApiServer::start().await) } else { None };
    let mut command = Command::new(&args.ours);
    command.env_clear().env("CONFIGPROXY_AUTH_TOKEN", TOKEN).env("RUST_LOG", "info");
    command.args(["--listen", "127.0.0.1:0"]);
    let namespace = match &server {
        Some(server) => {
            let namespace = server.new_namespace("soak").await;
            command.env("KUBECONFIG", server.kubeconfig_path());
            command.args(["--store", "kubernetes", "--k8s-namespace", &namespace]);
            command.args(["--istio-gateway", "istio-system/jupyterhub-gateway"]);
            namespace
        }
        None => {
            command.args(["--store", "memory"]);
            String::new()
        }
    };
    let proxy = ProxyProcess::spawn(command).await;
    let pid = proxy.pid().ok_or("the proxy exited")?;
    let client = ApiClient::new(proxy.addr(), Some(TOKEN));
    let ready = Instant::now();
    while client.get("/readyz").await.status != 200 {
        if ready.elapsed() > Duration::from_secs(60) {
            return Err(format!("not ready in 60 s:\n{}", proxy.log()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..args.clients)
        .map(|c| tokio::spawn(write(client.clone(), c, args.live, Arc::clone(&done), args.ops)))
        .collect();
    let mut samples = vec![sample(&client, pid, 0).await?];
    while !writers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let next = sample(&client, pid, done.load(Ordering::Relaxed)).await?;
        println!("{}\t{}\t{}\t{}", next.ops, next.rss_kib, next.tasks, next.sockets);
        samples.push(next);
    }
    let elapsed = started.elapsed();
    let mut kept = BTreeSet::new();
    for writer in writers {
        kept.extend(writer.await.map_err(|e| e.to_string())??);
    }
    let last = sample(&client, pid, done.load(Ordering::Relaxed)).await?;
    samples.push(last);

    let listed: BTreeSet<String> = client.get("/api/routes").await.keys().into_iter().collect();
    if listed != kept {
        return Err(format!(
            "the listing is not the routes kept: {} listed, {} kept",
            listed.len(),
            kept.len()
        ));
    }
    if let Some(server) = &server {
        let params = ListParams::default();
        let virtual_services: Api<VirtualService> =
            Api::namespaced_with(server.client(), &namespace, &IstioVersion::V1);
        let service_entries: Api<ServiceEntry> =
            Api::namespaced_with(server.client(), &namespace, &IstioVersion::V1);
        let objects = virtual_services.list(&params).await.map_err(|e| e.to_string())?.items.len();
        let entries = service_entries.list(&params).await.map_err(|e| e.to_string())?.items.len();
        if objects != kept.len() || entries != kept.len() {
            return Err(format!(
                "{} routes kept, but {objects} VirtualServices and {entries} ServiceEntries",
                kept.len()
            ));
        }
    }

    let warm: Vec<Sample> = samples.iter().copied().filter(|s| s.ops >= args.ops / 5).collect();
    if warm.len() < 3 {
        return Err(format!("too few samples after warm-up ({}); raise --ops", warm.len()));
    }
    let first = warm[0];
    let peak = |y: Figure| warm.iter().map(y).fold(f64::MIN, f64::max);
    eprintln!(
        "store {}: {} writes by {} clients in {:.0} s ({:.0}/s), {} routes kept, listing and objects exact",
        if args.kubernetes { "kubernetes" } else { "memory" },
        last.ops,
        args.clients,
        elapsed.as_secs_f64(),
        last.ops as f64 / elapsed.as_secs_f64(),
        kept.len()
    );
    eprintln!(
        "\n| after warm-up: {} samples from write {} on | at warm-up | at end | peak | slope per 10,000 writes |",
        warm.len(),
        first.ops
    );
    eprintln!("|---|---|---|---|---|");
    let rows: [(&str, Figure, f64); 3] = [
        ("resident memory (MiB)", |s| s.rss_kib, 1024.0),
        ("Tokio tasks", |s| s.tasks, 1.0),
        ("open sockets", |s| s.sockets, 1.0),
    ];
    for (name, y, unit) in rows {
        let (start, end, top) = (y(&first) / unit, y(&last) / unit, peak(y) / unit);
        eprintln!("| {name} | {start:.1} | {end:.1} | {top:.1} | {:+.3} |", slope(&warm, y) / unit);
    }
    Ok(())
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
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("soak failed: {message}");
            ExitCode::FAILURE
        }
    }
}
