//! A real Prometheus (the machine's `prometheus`, as Debian packages it), scraping an
//! [`IstioExporter`] whose `istio_requests_total` series the test drives as a gateway would.
//!
//! `PROMETHEUS` names the binary; otherwise `prometheus` on `PATH`. Tests that need it never
//! skip: without it they fail saying how to install it (`.ci/run` does).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::process::{Child, Command};

/// How often Prometheus scrapes the exporter.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The labels of the gateway Istio installs by default, reporting the requests it sends.
pub const GATEWAY: [(&str, &str); 3] = [
    ("reporter", "source"),
    ("source_workload", "istio-ingressgateway"),
    ("source_workload_namespace", "istio-system"),
];

/// A running Prometheus, killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    binary: PathBuf,
    args: Vec<String>,
    /// The configuration and the database, removed when dropped.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every [`SCRAPE_INTERVAL`], on a free loopback port
    /// with a database of its own, and waits until it has scraped each of them: what the
    /// targets count from then on is seen within a scrape. Panics when the binary is missing or
    /// that takes more than 30 s.
    pub async fn start(targets: &[SocketAddr]) -> Prometheus {
        let binary = binary();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: {s}s\n  evaluation_interval: {s}s\nscrape_configs:\n  - job_name: istio\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", "),
            s = SCRAPE_INTERVAL.as_secs()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = free_port();
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={addr}"),
            "--log.level=warn".to_owned(),
        ];
        let mut prometheus = Prometheus { child: None, addr, binary, args, _dir: dir };
        prometheus.restart().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let up = format!("count(up == 1) == {}", targets.len());
        while prometheus.query(&up).await["data"]["result"].as_array().is_none_or(Vec::is_empty) {
            assert!(tokio::time::Instant::now() < deadline, "Prometheus did not scrape its targets in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prometheus
    }

    /// Prometheus's base URL, e.g. `http://127.0.0.1:9090`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops Prometheus, as an outage; [`restart`](Self::restart) brings it back on the same
    /// address, with the same database.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts Prometheus again (or the first time) and waits until it is ready.
    pub async fn restart(&mut self) {
        self.stop().await;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while get(self.addr, "/-/ready").await.is_none_or(|(status, _)| status != 200) {
            assert!(tokio::time::Instant::now() < deadline, "Prometheus did not become ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an instant query and returns Prometheus's JSON answer.
    pub async fn query(&self, promql: &str) -> serde_json::Value {
        let encoded = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
        let (_, body) =
            get(self.addr, &format!("/api/v1/query?query={encoded}")).await.expect("Prometheus answers");
        serde_json::from_slice(&body).expect("Prometheus answers JSON")
    }
}

/// The Prometheus binary, or a panic saying how to install it.
fn binary() -> PathBuf {
    let binary = std::env::var_os("PROMETHEUS").map(PathBuf::from).unwrap_or_else(|| "prometheus".into());
    let found = std::process::Command::new(&binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "cannot run {} (set PROMETHEUS, or install it: apt-get install -y prometheus; see .ci/run)",
        binary.display()
    );
    binary
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    let request = Request::get(path).header("host", addr.to_string()).body(Empty::<Bytes>::new()).ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.into_body().collect().await.ok()?.to_bytes()))
}

/// Serves `istio_requests_total` as an Istio gateway's Envoy does, with counters the test
/// raises. A counter appears at its first request, as in Envoy: never at zero.
#[derive(Debug)]
pub struct IstioExporter {
    addr: SocketAddr,
    counters: Arc<Mutex<BTreeMap<String, u64>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for IstioExporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl IstioExporter {
    /// Starts serving `/metrics` on a free loopback port.
    pub async fn start() -> IstioExporter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("its address");
        let counters = Arc::new(Mutex::new(BTreeMap::new()));
        let shared = Arc::clone(&counters);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        let text = exposition(&shared.lock().unwrap());
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(text)));
                            response.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("text/plain; version=0.0.4"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        IstioExporter { addr, counters, server }
    }

    /// Where Prometheus scrapes it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts `count` requests from the default gateway to `destination_service`.
    pub fn requests(&self, destination_service: &str, count: u64) {
        self.requests_with(&GATEWAY, destination_service, count);
    }

    /// Counts `count` requests to `destination_service` in a series with the reporter and
    /// source labels `source` (e.g. a sidecar's report, which is not the gateway's).
    pub fn requests_with(&self, source: &[(&str, &str)], destination_service: &str, count: u64) {
        let mut labels: Vec<String> = source.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        labels.push(format!("destination_service=\"{destination_service}\""));
        labels.push("response_code=\"200\"".to_owned());
        *self.counters.lock().unwrap().entry(labels.join(",")).or_default() += count;
    }
}

fn exposition(counters: &BTreeMap<String, u64>) -> String {
    let mut text = String::from("# TYPE istio_requests_total counter\n");
    for (labels, value) in counters {
        text.push_str(&format!("istio_requests_total{{{labels}}} {value}\n"));
    }
    text
}
