//! `jupyterhub-istio-proxy explain URL --routes-file FILE`: the explanation of a routing table
//! offline, as text and as JSON; a table where Istio and configurable-http-proxy differ is said
//! to differ.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");

/// Runs `explain` with `routes` as the routes file, on standard input.
fn explain(routes: &serde_json::Value, args: &[&str]) -> (bool, String, String) {
    explain_with(&["--istio-gateway", "istio-system/jupyterhub-gateway"], routes, args)
}

/// Runs `explain` with the routing options `routing`.
fn explain_with(routing: &[&str], routes: &serde_json::Value, args: &[&str]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .env_clear()
        .args(["--k8s-namespace", "hub"])
        .args(routing)
        .arg("explain")
        .args(args)
        .args(["--routes-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(routes.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[test]
fn explains_a_routing_table_offline_as_text_and_json() {
    let routes = serde_json::json!({
        "/": {"target": "http://hub:8081"},
        "/user/alice": {"target": "http://10.0.0.7:8888"},
        "/user/alice/foo": {"target": "http://10.0.0.8:8888"},
    });
    let (ok, text, stderr) = explain(&routes, &["http://hub.example.org/user/alice/lab"]);
    assert!(ok, "{stderr}");
    assert!(text.contains("Host hub.example.org, path /user/alice/lab"), "{text}");
    assert!(text.contains("2 match"), "{text}");
    let wins = text.lines().find(|l| l.contains("WINS")).unwrap();
    assert!(wins.contains("(route /user/alice)"), "{text}");
    assert!(text.contains("destination: jupyter-"), "{text}");
    assert!(text.contains("configurable-http-proxy would pick: /user/alice\n"), "{text}");
    assert!(!text.contains("!!!"), "{text}");

    let (ok, json, _) = explain(&routes, &["--json", "http://hub.example.org/user/alice/foo"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["winner"]["route"], "/user/alice/foo");
    assert_eq!(json["agrees_with_chp"], true);
}

#[test]
fn bad_urls_and_files_fail_with_a_reason() {
    let routes = serde_json::json!({"/": {"target": "http://hub:8081"}});
    let (ok, _, stderr) = explain(&routes, &["/user/alice"]);
    assert!(!ok);
    assert!(stderr.contains("cannot explain") && stderr.contains("absolute URL"), "{stderr}");
    let (ok, _, stderr) = explain(&serde_json::json!([1]), &["http://h/"]);
    assert!(!ok);
    assert!(stderr.contains("cannot explain") && stderr.contains("not a JSON object of routes"), "{stderr}");
}

/// With `--routing gateway-api`, by the Gateway API's precedence over the HTTPRoutes the
/// routes render to.
#[test]
fn explains_http_routes_by_the_gateway_apis_precedence() {
    let gateway = ["--routing", "gateway-api", "--parent-ref", "istio-system/jupyterhub"];
    let routes = serde_json::json!({
        "/": {"target": "http://hub:8081"},
        "/user/alice": {"target": "http://10.0.0.7:8888"},
        "/user/bob": {"target": "http://jupyter-bob:8888/base"},
    });
    let (ok, text, stderr) = explain_with(&gateway, &routes, &["http://hub.example.org/user/alice/lab"]);
    assert!(ok, "{stderr}");
    assert!(text.contains("3 HTTPRoutes; 2 rule matches"), "{text}");
    let wins = text.lines().find(|l| l.contains("WINS")).unwrap();
    assert!(wins.contains("(route /user/alice)"), "{text}");
    assert!(text.lines().any(|l| l.contains("loses") && l.contains("(route /)")), "{text}");
    assert!(text.contains("configurable-http-proxy would pick: /user/alice\n"), "{text}");
    assert!(!text.contains("!!!"), "{text}");

    let (ok, json, stderr) =
        explain_with(&gateway, &routes, &["--json", "http://hub.example.org/user/bob/tree"]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["winner"]["route"], "/user/bob");
    assert_eq!(json["winner"]["backend"], "jupyter-bob:8888");
    assert_eq!(json["winner"]["path"], "/base/user/bob/tree", "the target's path, then the request's");
    assert_eq!(json["agrees_with_chp"], true);
}

/// `GET /api/explain` with `--routing gateway-api`: the same JSON shape's fields for the
/// Gateway API's choice, and the same refusals.
#[tokio::test]
async fn the_api_explains_http_routes_too() {
    let args = ["--store", "memory", "--routing", "gateway-api", "--parent-ref", "istio-system/jupyterhub"];
    let proxy = testkit::process::ProxyProcess::start(BIN, &args, "explain-token").await;
    let api = testkit::client::ApiClient::new(proxy.addr(), Some("explain-token"));
    assert_eq!(api.post("/api/routes/", r#"{"target": "http://hub:8081"}"#).await.status, 201);
    assert_eq!(
        api.post("/api/routes/user/alice/", r#"{"target": "http://10.0.0.7:8888"}"#).await.status,
        201
    );
    let explained = api.get("/api/explain?url=http%3A%2F%2Fhub.example.org%2Fuser%2Falice%2Flab").await;
    assert_eq!(explained.status, 200, "{}", explained.error());
    let body = explained.json();
    assert_eq!(body["winner"]["route"], "/user/alice");
    assert_eq!(body["winner"]["match"]["type"], "PathPrefix");
    assert_eq!(body["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&body["chp_route"], &body["agrees_with_chp"]),
        (&serde_json::json!("/user/alice"), &serde_json::json!(true))
    );
    let refused = api.get("/api/explain?url=/user/alice").await;
    assert_eq!(refused.status, 400);
    assert!(refused.error().contains("absolute URL"), "{}", refused.error());
}
