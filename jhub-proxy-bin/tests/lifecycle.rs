//! Starting, failing to start, timing out and draining.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{TOKEN, serve};
use http::StatusCode;
use proxy_api::{Backend, Result, Route, RouteSpec, RoutingMode};
use testkit::process::ProxyProcess;
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");

/// Runs the binary with a clean environment and these arguments, expecting it to fail.
fn failing_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(BIN).env_clear().envs(env.iter().copied()).args(args).output().unwrap();
    assert!(!output.status.success(), "{args:?} started");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    stderr
}

#[test]
fn bad_configuration_exits_with_one_line_naming_flag_and_variable() {
    let missing = failing_start(&["--store", "memory"], &[]);
    assert!(missing.contains("--auth-token") && missing.contains("CONFIGPROXY_AUTH_TOKEN"), "{missing}");

    let token = [("CONFIGPROXY_AUTH_TOKEN", "t")];
    let listen = failing_start(&["--store", "memory"], &[token[0], ("PROXY_LISTEN", "localhost")]);
    assert!(listen.contains("--listen (env PROXY_LISTEN)") && listen.contains("'localhost'"), "{listen}");

    let store = failing_start(&[], &token);
    assert!(store.contains("--store (env PROXY_STORE)") && store.contains("--store memory"), "{store}");

    let routing = failing_start(&["--store", "memory"], &[token[0], ("HOST_ROUTING", "maybe")]);
    assert!(routing.contains("HOST_ROUTING"), "{routing}");
}

#[test]
fn a_taken_port_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let message =
        failing_start(&["--store", "memory", "--listen", &addr], &[("CONFIGPROXY_AUTH_TOKEN", "t")]);
    assert!(message.contains(&format!("cannot listen on {addr} (--listen, env PROXY_LISTEN)")), "{message}");
}

#[test]
fn version_is_printed_with_the_commit() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    // The commit the build script saw: the override, else git's, else "unknown".
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(testkit::manifest_dir())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8(output.stdout).unwrap().trim().to_owned());
    let commit = option_env!("JHUB_PROXY_COMMIT").map(str::to_owned).or(git).unwrap_or("unknown".into());
    assert_eq!(
        printed.trim(),
        format!("jupyterhub-istio-proxy {} (commit {commit})", env!("CARGO_PKG_VERSION")),
        "{printed}"
    );
}

#[tokio::test]
async fn environment_configures_like_flags() {
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_clear()
        .env("CONFIGPROXY_AUTH_TOKEN", TOKEN)
        .env("PROXY_STORE", "memory")
        .env("PROXY_LISTEN", "127.0.0.1:0")
        .env("HOST_ROUTING", "true");
    let proxy = ProxyProcess::spawn(command).await;
    let api = testkit::client::ApiClient::new(proxy.addr(), Some(TOKEN));
    assert_eq!(
        api.post("/api/routes/hub.example.org/user/a", r#"{"target":"http://a:1"}"#).await.status,
        201
    );
    // Under host routing a host segment is required, so the spec kept its host.
    assert!(api.get("/api/routes").await.json().get("/hub.example.org/user/a").is_some());
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly_and_the_token_is_never_logged() {
    let mut proxy = ProxyProcess::start(BIN, &["--store", "memory"], TOKEN).await;
    let api = testkit::client::ApiClient::new(proxy.addr(), Some(TOKEN));
    assert_eq!(api.post("/api/routes/user/a", r#"{"target":"http://a:1"}"#).await.status, 201);
    assert_eq!(api.with_token(Some("wrong-token")).get("/api/routes").await.status, StatusCode::FORBIDDEN);
    let status = proxy.terminate(Duration::from_secs(10)).await.expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let log = proxy.log();
    assert!(log.contains("SIGTERM") && log.contains("drained"), "{log}");
    let line = |status: &str| log.lines().filter(|l| l.contains("request") && l.contains(status)).count();
    // The text format's one line per request: the span's method and path (and a new route's
    // target), then status and time.
    let created = log.lines().find(|l| l.contains("status=201")).expect("the POST's line");
    assert!(created.contains("request{method=POST path=/api/routes/user/a target=http://a:1}"), "{created}");
    assert!(created.contains("duration_ms="), "{created}");
    assert_eq!((line("status=201"), line("status=403")), (1, 1), "one line per request: {log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log:\n{log}");
}

#[tokio::test]
async fn json_logs_at_trace_carry_one_line_per_request_and_never_a_token() {
    const WRONG: &str = "wrong-token-9c2e";
    let mut command = tokio::process::Command::new(BIN);
    command.env_clear().env("CONFIGPROXY_AUTH_TOKEN", TOKEN).env("LOG_FORMAT", "json").args([
        "--store",
        "memory",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "trace",
    ]);
    let mut proxy = ProxyProcess::spawn(command).await;
    let api = testkit::client::ApiClient::new(proxy.addr(), Some(TOKEN));
    let mut answers = vec![
        api.post("/api/routes/user/a", r#"{"target":"http://a:1"}"#).await,
        api.post("/api/routes/user/b", r#"{"target":"no url"}"#).await,
        api.get("/api/routes/user/missing").await,
        api.with_token(Some(WRONG)).get("/api/routes").await,
        api.send(http::Method::PATCH, "/api/routes/user/a", &[], b"").await,
    ];
    answers.push(api.with_token(None).get("/api/routes").await);
    // Logged at DEBUG only: it shows --log-level took effect.
    answers.push(api.with_token(None).get("/ping").await);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [201, 400, 404, 403, 405, 403, 200]);
    for answer in &answers[1..] {
        let body = String::from_utf8_lossy(&answer.body);
        assert!(!body.contains(TOKEN) && !body.contains(WRONG), "a token in an error body: {body}");
    }
    assert!(proxy.terminate(Duration::from_secs(10)).await.is_some_and(|s| s.success()));

    let log = proxy.log();
    assert!(!log.contains(TOKEN) && !log.contains(WRONG), "a token leaked into the log:\n{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let requests: Vec<(String, String, u64)> = lines
        .iter()
        .filter(|line| line["fields"]["message"] == "request")
        .map(|line| {
            assert!(line["fields"]["duration_ms"].as_f64().is_some(), "{line}");
            let span = &line["span"];
            let level = if span["path"] == "/ping" { "DEBUG" } else { "INFO" };
            assert_eq!(line["level"], level, "{line}");
            let status = line["fields"]["status"].as_u64().unwrap();
            let target = if status == 201 { "http://a:1" } else { "" };
            assert_eq!(span["target"].as_str().unwrap_or_default(), target, "{line}");
            (span["method"].to_string(), span["path"].to_string(), status)
        })
        .collect();
    let expected: Vec<(String, String, u64)> = [
        ("POST", "/api/routes/user/a", 201),
        ("POST", "/api/routes/user/b", 400),
        ("GET", "/api/routes/user/missing", 404),
        ("GET", "/api/routes", 403),
        ("PATCH", "/api/routes/user/a", 405),
        ("GET", "/api/routes", 403),
        ("GET", "/ping", 200),
    ]
    .iter()
    .map(|(method, path, status)| (format!("{method:?}"), format!("{path:?}"), *status))
    .collect();
    assert_eq!(requests, expected, "one line per request, in order");
}

/// A backend whose writes wait until released, to hold requests in flight.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl Backend for Gate {
    async fn list(&self) -> Result<Vec<Arc<Route>>> {
        Ok(Vec::new())
    }
    async fn get(&self, _: &RouteSpec) -> Result<Option<Arc<Route>>> {
        Ok(None)
    }
    async fn add(&self, _: Route) -> Result<()> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(())
    }
    async fn delete(&self, _: &RouteSpec) -> Result<bool> {
        Ok(false)
    }
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_refuses_new_connections() {
    let gate = Arc::new(Gate::default());
    let mut proxy = serve(Arc::clone(&gate), RoutingMode::Path, Duration::from_secs(30)).await;
    let api = proxy.api.clone();
    let in_flight =
        tokio::spawn(
            async move { api.post("/api/routes/user/a", r#"{"target":"http://a:1"}"#).await.status },
        );
    gate.entered.notified().await;

    proxy.shut_down();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err(), "still accepting after shutdown");
    assert!(!proxy.served.is_finished(), "stopped before the request in flight finished");

    gate.release.notify_one();
    assert_eq!(in_flight.await.unwrap(), StatusCode::CREATED);
    tokio::time::timeout(Duration::from_secs(5), &mut proxy.served).await.expect("drained").unwrap();
}

#[tokio::test]
async fn a_request_over_the_timeout_is_answered_504() {
    let gate = Arc::new(Gate::default());
    let proxy = serve(Arc::clone(&gate), RoutingMode::Path, Duration::from_millis(300)).await;
    let response = proxy.api.post("/api/routes/user/a", r#"{"target":"http://a:1"}"#).await;
    assert_eq!(response.status, StatusCode::GATEWAY_TIMEOUT);
}
