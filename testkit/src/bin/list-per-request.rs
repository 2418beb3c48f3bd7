//! The benchmark's baseline, and nothing else: `GET /api/routes` served the way the Go
//! jupyterhub-istio-proxy serves it, by LISTing the VirtualServices from the Kubernetes API
//! server on every request. `bench/kube.sh` measures it beside our watch cache on the same
//! (fake) API server. It is not a proxy: no writes, no token check, no other routes.
//!
//! ```text
//! KUBECONFIG=... list-per-request --listen 127.0.0.1:PORT [--k8s-namespace hub]
//! ```
//!
//! Per `GET /api/routes`: a LIST of the namespace's VirtualServices with our label selector,
//! in pages of 500 as a client would ask for them, each object read back into a route by
//! [`Translation::read`], the routes sorted by spec (as ours lists them), and the listing in
//! configurable-http-proxy's wire format. `GET /ping` answers 200.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use istio_routes::Translation;
use istio_routes::resources::{IstioVersion, VirtualService};
use kube::api::{Api, ListParams};
use proxy_api::Route;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: list-per-request --listen ADDR [--k8s-namespace NAMESPACE]";
/// The page size a client asks for.
const PAGE: u32 = 500;

struct Baseline {
    api: Api<VirtualService>,
    translation: Translation,
}

impl Baseline {
    /// Every route, listed from the API server now.
    async fn routes(&self) -> Result<Vec<Arc<Route>>, String> {
        let mut params = ListParams::default().labels(&self.translation.label_selector()).limit(PAGE);
        let mut routes = Vec::new();
        // Bounded: 10,000 pages of 500 is far beyond any hub.
        for _ in 0..10_000 {
            let page = self.api.list(&params).await.map_err(|e| format!("listing VirtualServices: {e}"))?;
            for object in &page.items {
                match self.translation.read(object) {
                    Some(Ok(stored)) => routes.push(stored.route),
                    Some(Err(message)) => eprintln!("list-per-request: skipping {message}"),
                    None => {}
                }
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => {
                    routes.sort_by(|a, b| a.spec().cmp(b.spec()));
                    routes.dedup_by(|later, first| later.spec() == first.spec());
                    return Ok(routes);
                }
            }
        }
        Err("more than 10,000 pages of VirtualServices".to_owned())
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

async fn handle(
    baseline: Arc<Baseline>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().trim_end_matches('/');
    Ok(match (request.method(), path) {
        (&Method::GET, "/api/routes") => match baseline.routes().await {
            Ok(routes) => respond(StatusCode::OK, proxy_api::wire::route_table_json(&routes)),
            Err(message) => {
                eprintln!("list-per-request: {message}");
                let body = serde_json::json!({ "error": message }).to_string();
                respond(StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        },
        (&Method::GET, "/ping") => respond(StatusCode::OK, r#"{"message":"pong"}"#),
        _ => respond(StatusCode::NOT_FOUND, r#"{"error":"the baseline serves GET /api/routes only"}"#),
    })
}

fn parse_args() -> Result<(SocketAddr, String), String> {
    let (mut listen, mut namespace) = (None, "hub".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let text = value("--listen")?;
                listen = Some(text.parse().map_err(|_| format!("--listen: not an address: {text:?}"))?);
            }
            "--k8s-namespace" => namespace = value("--k8s-namespace")?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok((listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?, namespace))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, namespace) = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("list-per-request: {message}");
            return ExitCode::from(2);
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("list-per-request: no Kubernetes client (set KUBECONFIG): {e}");
            return ExitCode::FAILURE;
        }
    };
    let translation = Translation { namespace: namespace.clone(), ..Translation::default() };
    let api = Api::namespaced_with(client, &namespace, &IstioVersion::V1);
    let baseline = Arc::new(Baseline { api, translation });
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("list-per-request: listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut terminate, mut interrupt) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("list-per-request: cannot handle signals: {e}");
                return ExitCode::FAILURE;
            }
        };
    eprintln!(
        "list-per-request: listening on http://{listen}, listing VirtualServices in {namespace} per request"
    );
    let started = Instant::now();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("list-per-request: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let baseline = Arc::clone(&baseline);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&baseline), request));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
    eprintln!("list-per-request: stopping after {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
