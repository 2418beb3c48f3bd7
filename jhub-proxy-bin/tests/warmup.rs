//! Warm-up: a POST is answered once the gateway serves the new route.
//!
//! The gateway here is mostly `testkit::istio_model` serving a snapshot of the store that is
//! taken only every so often, as istiod pushes configuration to gateways some time after a
//! write; and, for the Gateway API, a real one: Traefik (`testkit::traefik`), routing to
//! servers in a pod network.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::serve;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use istio_routes::resources::VirtualService;
use istio_routes::{IstioBackend, MemoryStore, RouteStore, Translation};
use jhub_proxy_bin::metrics::Metrics;
use jhub_proxy_bin::warmup::{Warmup, WarmupOptions};
use proxy_api::RoutingMode;
use testkit::istio_model::Gateway;
use testkit::metrics::Scrape;

const GATEWAY: &str = "istio-system/jupyterhub-gateway";

type Snapshot = Arc<Mutex<Vec<Arc<VirtualService>>>>;

/// How the gateway misbehaves.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// It routes by the model.
    None,
    /// It accepts connections and requests and never answers.
    NeverAnswers,
    /// It answers every request 500, with no headers of the route.
    Fails,
    /// It routes by the model, each answer this late.
    Slow(Duration),
    /// It routes by the model, with the route's headers, but answers 503 (or 500): what a
    /// gateway answers while the route's backend is not there yet (Traefik until it has the
    /// Service and EndpointSlice, Envoy without the cluster).
    NoBackend(StatusCode),
}

/// A gateway on loopback that routes by the model over `snapshot`, answering with the
/// response headers of the route it picked, or 404; unless `fault` says otherwise.
async fn gateway(snapshot: Snapshot, fault: Fault) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let snapshot = Arc::clone(&snapshot);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let objects = snapshot.lock().unwrap().clone();
                async move {
                    match fault {
                        Fault::None => {}
                        Fault::NeverAnswers => std::future::pending::<()>().await,
                        Fault::Fails => {
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            return Ok(response);
                        }
                        Fault::Slow(delay) => tokio::time::sleep(delay).await,
                        Fault::NoBackend(_) => {}
                    }
                    let host =
                        request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
                    let routed = Gateway::build(&objects, GATEWAY, &["*"]).route(host, request.uri().path());
                    let mut response = Response::new(Full::new(Bytes::new()));
                    match routed {
                        Some(routed) => {
                            for (name, value) in routed.response_headers {
                                response.headers_mut().insert(
                                    http::HeaderName::try_from(name).unwrap(),
                                    http::HeaderValue::try_from(value).unwrap(),
                                );
                            }
                        }
                        None => *response.status_mut() = StatusCode::NOT_FOUND,
                    }
                    if let Fault::NoBackend(status) = fault {
                        *response.status_mut() = status;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    format!("http://{addr}")
}

struct Setup {
    proxy: common::TestProxy,
    warmup: Arc<Warmup<IstioBackend<MemoryStore>>>,
    gateway: String,
    metrics: Metrics,
}

/// The warm-up metrics as scraped: the waits, the waits over `le` seconds, and the time-outs.
fn scraped(metrics: &Metrics, le: &str) -> (f64, f64, f64) {
    let scrape = Scrape::parse(&metrics.encode());
    let count = scrape.value("jupyterhub_istio_proxy_warmup_duration_seconds_count", &[]).unwrap();
    let within =
        scrape.value("jupyterhub_istio_proxy_warmup_duration_seconds_bucket", &[("le", le)]).unwrap();
    let timeouts = scrape.value("jupyterhub_istio_proxy_warmup_timeouts_total", &[]).unwrap();
    (count, count - within, timeouts)
}

/// The `jupyter-proxy-id` the gateway sends for a path now.
async fn served_id(gateway: &str, path: &str) -> Option<String> {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = Request::get(format!("{gateway}{path}"))
        .header(header::HOST, "hub.example.org")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    response.headers().get(kube_routes::PROXY_ID_HEADER).map(|v| v.to_str().unwrap().to_owned())
}

/// A proxy with warm-up over a memory store, whose gateway sees the store's objects every
/// `push` (never, when `None`).
async fn setup(push: Option<Duration>, timeout: Duration, strict: bool) -> Setup {
    setup_with(push, timeout, strict, Fault::None).await
}

/// The same, with a gateway that misbehaves as `fault` says.
async fn setup_with(push: Option<Duration>, timeout: Duration, strict: bool, fault: Fault) -> Setup {
    let translation =
        Translation { gateways: vec![GATEWAY.into()], hosts: vec!["*".into()], ..Translation::default() };
    let store = Arc::new(MemoryStore::new(translation.clone()));
    let snapshot: Snapshot = Arc::default();
    if let Some(push) = push {
        let (store, snapshot) = (Arc::clone(&store), Arc::clone(&snapshot));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(push).await;
                *snapshot.lock().unwrap() = store.virtual_services();
            }
        });
    }
    let url = gateway(snapshot, fault).await;
    let options =
        WarmupOptions { url: url.parse().unwrap(), public_host: "hub.example.org".into(), timeout, strict };
    let metrics = Metrics::new();
    let warmup = Warmup::new(Arc::new(IstioBackend::new(store, translation)), options)
        .with_metrics(metrics.warmup().clone());
    let warmup = Arc::new(warmup);
    let proxy = serve(Arc::clone(&warmup), RoutingMode::Path, Duration::from_secs(30)).await;
    Setup { proxy, warmup, gateway: url, metrics }
}

#[tokio::test]
async fn a_post_is_answered_once_the_gateway_serves_the_route() {
    let Setup { proxy, warmup, gateway, metrics } =
        setup(Some(Duration::from_millis(400)), Duration::from_secs(5), false).await;
    for target in ["http://10.0.0.1:8888", "http://10.0.0.2:8888"] {
        let body = format!(r#"{{"target": "{target}"}}"#);
        assert_eq!(proxy.api.post("/api/routes/user/alice", &body).await.status, StatusCode::CREATED);
        // The gateway's snapshot lags by up to 400 ms, and yet at the 201 it serves this very
        // version of the route.
        let spec = proxy_api::RouteSpec::new("/user/alice", RoutingMode::Path).unwrap();
        let route =
            proxy_api::Route::new(spec, proxy_api::Target::parse(target).unwrap(), Default::default())
                .unwrap();
        assert_eq!(served_id(&gateway, "/user/alice/lab").await, Some(kube_routes::revision(&route)));
    }
    assert_eq!(warmup.timeouts(), 0);
    // Two waits, none of them as long as the 5 s time-out.
    assert_eq!(scraped(&metrics, "5"), (2.0, 0.0, 0.0));
}

#[tokio::test]
async fn a_gateway_that_never_serves_the_route_times_out_and_still_answers_201() {
    let Setup { proxy, warmup, metrics, .. } = setup(None, Duration::from_secs(1), false).await;
    let started = Instant::now();
    assert_eq!(proxy.api.post("/api/routes/user/alice", r#"{"target": "http://a:1"}"#).await.status, 201);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    assert_eq!(warmup.timeouts(), 1);
    // One wait, as long as the time-out, and it timed out.
    assert_eq!(scraped(&metrics, "0.5"), (1.0, 1.0, 1.0));
}

#[tokio::test]
async fn strict_warm_up_answers_503_so_jupyterhub_retries() {
    let Setup { proxy, warmup, .. } = setup(None, Duration::from_secs(1), true).await;
    let response = proxy.api.post("/api/routes/user/alice", r#"{"target": "http://a:1"}"#).await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.error().contains("did not serve route /user/alice"), "{}", response.error());
    assert_eq!(warmup.timeouts(), 1);
    // The route was written all the same; a retry finds it.
    assert_eq!(proxy.api.get("/api/routes").await.keys(), ["/user/alice"]);
}

/// A gateway that hangs, fails, answers too late, or routes to a backend it does not have yet
/// (its error carries the route's headers) during warm-up: the wait ends at the time-out, not
/// later (a hung request is cut off at what is left of it), the answer is 201, or 503 when
/// strict, and the route is written whole either way: a retry finds it.
#[tokio::test]
async fn a_gateway_that_hangs_fails_or_is_slow_is_waited_on_no_longer_than_the_timeout() {
    let timeout = Duration::from_secs(1);
    let no_backend =
        [StatusCode::SERVICE_UNAVAILABLE, StatusCode::INTERNAL_SERVER_ERROR].map(Fault::NoBackend);
    for fault in
        [Fault::NeverAnswers, Fault::Fails, Fault::Slow(Duration::from_secs(3))].into_iter().chain(no_backend)
    {
        for strict in [false, true] {
            let push = Some(Duration::from_millis(50));
            let Setup { proxy, warmup, .. } = setup_with(push, timeout, strict, fault).await;
            let started = Instant::now();
            let body = r#"{"target": "http://10.0.0.1:8888"}"#;
            let response = proxy.api.post("/api/routes/user/alice", body).await;
            let waited = started.elapsed();
            let expected = if strict { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::CREATED };
            assert_eq!(response.status, expected, "{fault:?}, strict {strict}");
            assert!(
                waited >= timeout && waited < timeout + Duration::from_millis(900),
                "{fault:?}, strict {strict}: answered after {waited:?}"
            );
            assert_eq!(warmup.timeouts(), 1, "{fault:?}");
            let listed = proxy.api.get("/api/routes/user/alice").await;
            assert_eq!(listed.json()["target"], "http://10.0.0.1:8888", "{fault:?}, strict {strict}");
        }
    }
}

/// A gateway slower than usual but within the time-out still confirms the route.
#[tokio::test]
async fn a_slow_gateway_within_the_timeout_confirms_the_route() {
    let fault = Fault::Slow(Duration::from_millis(300));
    let Setup { proxy, warmup, .. } =
        setup_with(Some(Duration::from_millis(50)), Duration::from_secs(5), true, fault).await;
    let response = proxy.api.post("/api/routes/user/alice", r#"{"target": "http://10.0.0.1:8888"}"#).await;
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(warmup.timeouts(), 0);
}

/// With `--wait-for-warmup` and `--warmup-url` at Traefik's entry point, a POST is answered
/// only once a request through Traefik reaches the new server: right after each 201, the
/// route's path through Traefik is answered by that server, for plain, non-ASCII and `@`
/// names. Traefik applies a change no sooner than its throttle (2 s, its default, here) after
/// the one before, and the routes are added back to back, so a POST that did not wait would be
/// answered long before Traefik routes its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_answered_once_traefik_routes_to_the_new_server() {
    use testkit::echo::{EchoServer, read_answer};

    let api_server = testkit::apiserver::ApiServer::shared().await;
    let namespace = api_server.new_namespace("warmup-traefik").await;
    let options = testkit::traefik::Options { throttle: Duration::from_secs(2) };
    let traefik = testkit::traefik::Traefik::start_with(api_server, &namespace, options).await;
    let network = testkit::podnet::PodNetwork::new();
    let warmup_url = format!("http://{}", traefik.addr());
    let parent = traefik.parent_ref();
    let args = [
        "--routing",
        "gateway-api",
        "--parent-ref",
        &parent,
        "--wait-for-warmup",
        "--warmup-url",
        &warmup_url,
        "--warmup-timeout",
        "20",
        "--warmup-strict",
        "--public-host",
        "hub.example.org",
    ];
    let proxy = testkit::process::ProxyProcess::start_kubernetes(
        env!("CARGO_BIN_EXE_jupyterhub-istio-proxy"),
        api_server.kubeconfig_path(),
        &namespace,
        common::TOKEN,
        &args,
    )
    .await;
    // A busy machine may take Traefik longer than the client's usual 10 s to route a write; a
    // strict warm-up's time-out (503) still fails the test.
    let api = testkit::client::ApiClient::new(proxy.addr(), Some(common::TOKEN))
        .with_timeout(Duration::from_secs(30));
    let mut servers = Vec::new();
    for (user, path) in
        [("alice", "/user/alice"), ("ü", "/user/%C3%BC"), ("x@y", "/user/x@y"), ("bob", "/user/bob")]
    {
        let server = EchoServer::serve(network.bind_tokio((network.pod_ip(), 0).into()).unwrap(), user);
        let body = serde_json::json!({"target": format!("http://{}", server.addr())}).to_string();
        let started = Instant::now();
        let added = api.post(&format!("/api/routes{path}"), &body).await;
        assert_eq!(added.status, 201, "{path}: {added:?}\n{}", proxy.log());
        let waited = started.elapsed();
        let through = traefik.get("hub.example.org", &format!("{path}/lab")).await;
        assert_eq!(
            read_answer(&through.body),
            Some((user.to_owned(), format!("{path}/lab"))),
            "{path} answered 201 after {waited:?}, but Traefik answers {through:?}"
        );
        servers.push(server);
    }
}
