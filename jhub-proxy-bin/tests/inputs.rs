//! Arbitrary input, thrown by machines at what the binary adds to proxy-api's parsers (whose
//! own properties are in `proxy-api/tests/inputs.rs`): whole HTTP/1 requests, as bytes, at the
//! service stack behind hyper (auth, probes, the gate, the body's deadline, the API), and
//! `render --routes-file`. Never a panic nor a 5xx; every refusal of ours is a JSON error with
//! a 4xx, and nothing is written unless a request was answered 201 or 204.
//!
//! Failures proptest finds are kept in `inputs.proptest-regressions` beside this file and run
//! first on every run.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use istio_routes::{IstioBackend, MemoryStore, Translation};
use jhub_proxy_bin::config::Config;
use jhub_proxy_bin::{Error, app, render, server};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use proxy_api::{ApiConfig, Backend, RoutingMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pieces of text that look like HTTP, paths and JSON, with hostile bytes among them.
fn pieces() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_owned()),
        Just("%".to_owned()),
        Just("\r\n".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("\"".to_owned()),
        Just("{".to_owned()),
        "%[0-9a-fA-FzZ]{0,2}",
        "[0-9]{1,6}",
        "[a-zA-Z0-9_~.-]{1,8}",
        any::<char>().prop_map(String::from),
    ]
}

fn garble() -> impl Strategy<Value = String> {
    proptest::collection::vec(pieces(), 0..8).prop_map(|pieces| pieces.concat())
}

/// An HTTP/1 request, mostly well-formed: method, path, headers (the token right, wrong or
/// absent; a length that may lie; chunked or not) and body; or bytes.
fn requests() -> impl Strategy<Value = Vec<u8>> {
    // Weighted towards requests that get through, so that writes happen too.
    let method = prop_oneof![
        3 => Just("POST"),
        2 => Just("GET"),
        2 => Just("DELETE"),
        1 => proptest::sample::select(vec!["PUT", "HEAD", "PATCH", "BREW", ""]),
    ];
    let prefix = prop_oneof![
        4 => Just("/api/routes/user/"),
        1 => proptest::sample::select(vec!["/api/routes", "/ping", "/readyz", "/metrics", "/", ""]),
    ];
    let path = (prefix, prop_oneof![2 => "[a-z]{1,6}", 1 => garble()])
        .prop_map(|(prefix, rest)| format!("{prefix}{rest}"));
    let token = prop_oneof![
        4 => Just(format!("authorization: token {}\r\n", common::TOKEN)),
        1 => proptest::sample::select(vec![
            "authorization: token wrong\r\n".to_owned(),
            "authorization: Bearer x\r\n".to_owned(),
            String::new(),
        ]),
    ];
    let body = prop_oneof![
        3 => Just(br#"{"target": "http://10.0.0.2:8888", "user": "u"}"#.to_vec()),
        1 => garble().prop_map(String::into_bytes),
        1 => garble().prop_map(|target| format!(r#"{{"target": "http://{target}", "jupyterhub": true}}"#).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..32),
    ];
    // The true length (most often), a lie, or none (then chunked, or no body).
    let length = prop_oneof![
        3 => Just(Some(None)),
        1 => (0usize..64).prop_map(|lie| Some(Some(lie))),
        1 => Just(None),
    ];
    let header = prop_oneof![3 => Just(String::new()), 1 => garble()];
    let structured = (method, path, token, header, length, any::<bool>(), body).prop_map(
        |(method, path, token, header, length, chunked, body)| {
            let mut head = format!("{method} {path} HTTP/1.1\r\nhost: x\r\n{token}x-extra: {header}\r\n");
            match length {
                Some(Some(lie)) => head.push_str(&format!("content-length: {lie}\r\n")),
                Some(None) => head.push_str(&format!("content-length: {}\r\n", body.len())),
                None if chunked => head.push_str("transfer-encoding: chunked\r\n"),
                None => {}
            }
            head.push_str("\r\n");
            let mut request = head.into_bytes();
            if length.is_none() && chunked {
                request.extend(format!("{:x}\r\n", body.len()).into_bytes());
                request.extend(&body);
                request.extend(b"\r\n0\r\n\r\n");
            } else {
                request.extend(&body);
            }
            request
        },
    );
    prop_oneof![3 => structured, 1 => proptest::collection::vec(any::<u8>(), 0..200)]
}

/// One response read back from the bytes hyper wrote: its status, headers and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// The responses in `bytes`, each with a `content-length` as hyper writes full bodies
/// (none for the answers to HEAD).
fn answers(mut bytes: &[u8], heads: bool) -> Vec<Answer> {
    let mut answers = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        let length = if heads { 0 } else { length };
        let body = bytes[end + 4..end + 4 + length].to_vec();
        bytes = &bytes[end + 4 + length..];
        answers.push(Answer { status, head, body });
    }
    answers
}

async fn listing<B: Backend>(backend: &B) -> Vec<(String, String)> {
    let routes = backend.list().await.unwrap();
    routes.iter().map(|route| (route.spec().as_str().to_owned(), route.wire_json().to_owned())).collect()
}

/// Serves `request` on an in-memory connection through the whole stack, over a memory store
/// holding one route, and checks the answers.
async fn serve_bytes(request: Vec<u8>, mode: RoutingMode) -> Result<(), TestCaseError> {
    let translation = Translation { routing_mode: mode, ..Translation::default() };
    let backend = Arc::new(IstioBackend::new(Arc::new(MemoryStore::new(translation.clone())), translation));
    let seed = match mode {
        RoutingMode::Path => "/user/seed",
        RoutingMode::Host => "/seed.org/user/seed",
    };
    let seed = proxy_api::wire::route_from_body(
        proxy_api::RouteSpec::new(seed, mode).unwrap(),
        br#"{"target": "http://10.0.0.1:8888"}"#,
    )
    .unwrap();
    backend.add(seed).await.unwrap();
    let before = listing(&*backend).await;
    let options = app::AppOptions {
        tokens: jhub_proxy_bin::token::Tokens::fixed(common::TOKEN),
        api: ApiConfig { routing_mode: mode, ..ApiConfig::default() },
        request_timeout: Duration::from_secs(5),
        client_timeout: Duration::from_secs(5),
        ready: jhub_proxy_bin::health::Readiness::ready(),
        ready_wait: Duration::from_secs(1),
        metrics: Arc::new(jhub_proxy_bin::metrics::Metrics::new()),
        serve_metrics: true,
        explain: Some(jhub_proxy_bin::explain::explainer(Arc::clone(&backend))),
    };
    let service = app::service(Arc::clone(&backend), options);
    let (mut client, server_side) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(async move {
        let mut builder = server::Limits::default().builder();
        // The client closes its half once it has written everything; answer all the same.
        builder.http1().half_close(true);
        let _ = builder.serve_connection(TokioIo::new(server_side), TowerToHyperService::new(service)).await;
    });
    client.write_all(&request).await.unwrap();
    client.shutdown().await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut bytes))
        .await
        .expect("the server answers and closes")
        .unwrap();
    served.await.expect("no panic serving the connection");

    let heads = request.starts_with(b"HEAD ");
    let answers = answers(&bytes, heads);
    let mut wrote = false;
    for answer in &answers {
        prop_assert!(answer.status < 500, "{answer:?}");
        wrote |= matches!(answer.status, 201 | 204);
        let ours = answer.head.contains("content-type: application/json");
        if (400..500).contains(&answer.status) && !heads {
            // hyper answers what it cannot parse itself (400, 431), with no body, before the
            // service sees a request; every other refusal is ours, in JSON.
            if ours {
                let json: serde_json::Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {answer:?}")))?;
                prop_assert!(json["error"].is_string(), "{answer:?}");
            } else {
                prop_assert!(matches!(answer.status, 400 | 431) && answer.body.is_empty(), "{answer:?}");
            }
        }
    }
    if !wrote {
        prop_assert_eq!(listing(&*backend).await, before, "written without a 201 or 204");
    }
    Ok(())
}

/// `render --routes-file` with `content` as the file.
async fn render_file(content: &[u8], mode: RoutingMode) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.json");
    std::fs::write(&file, content).unwrap();
    let mut args = vec!["jupyterhub-istio-proxy", "--k8s-namespace", "hub"];
    if mode == RoutingMode::Host {
        args.push("--host-routing=true");
    }
    args.extend(["render", "--routes-file", file.to_str().unwrap()]);
    let config = Config::from_args(args).unwrap();
    let Some(jhub_proxy_bin::config::Command::Render(render_args)) = &config.command else {
        unreachable!("a render command")
    };
    match render::render(&config, render_args).await {
        Ok(yaml) => prop_assert!(yaml.contains("kind: \"VirtualService\""), "{yaml}"),
        Err(Error::Render(message)) => {
            prop_assert!(!message.is_empty() && !message.contains('\n'), "{message:?}");
        }
        Err(other) => prop_assert!(false, "not a render error: {other:?}"),
    }
    Ok(())
}

/// Listings as `GET /api/routes` writes them, with hostile keys and values; or bytes.
fn listings() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        garble().prop_map(|target| serde_json::json!({"target": format!("http://{target}"), "user": "u"})),
        garble().prop_map(|target| serde_json::json!({"target": target})),
        Just(serde_json::json!([1, 2])),
        Just(serde_json::json!({"no": "target"})),
        any::<i64>().prop_map(|n| serde_json::json!({"target": n})),
    ];
    let key = (proptest::sample::select(vec!["/", "/user/", "/hub.org/user/", ""]), garble())
        .prop_map(|(prefix, rest)| format!("{prefix}{rest}"));
    prop_oneof![
        3 => proptest::collection::btree_map(key, value, 0..4)
            .prop_map(|map| serde_json::to_vec(&map).unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => garble().prop_map(String::into_bytes),
    ]
}

fn mode() -> impl Strategy<Value = RoutingMode> {
    prop_oneof![Just(RoutingMode::Path), Just(RoutingMode::Host)]
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

proptest! {
    // A fixed budget: each case serves a connection or renders, about a millisecond. Failures
    // are kept beside this file (proptest looks for a lib.rs or main.rs by default).
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn raw_requests_are_answered_without_a_5xx_and_refusals_write_nothing(request in requests(), mode in mode()) {
        block_on(serve_bytes(request, mode))?;
    }

    #[test]
    fn a_routes_file_renders_or_says_why_in_one_line(content in listings(), mode in mode()) {
        block_on(render_file(&content, mode))?;
    }
}
