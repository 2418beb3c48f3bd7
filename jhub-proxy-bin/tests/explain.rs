//! `jupyterhub-istio-proxy explain URL --routes-file FILE`: the explanation of a routing table
//! offline, as text and as JSON; a table where Istio and configurable-http-proxy differ is said
//! to differ.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");

/// Runs `explain` with `routes` as the routes file, on standard input.
fn explain(routes: &serde_json::Value, args: &[&str]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .env_clear()
        .args(["--k8s-namespace", "hub", "--istio-gateway", "istio-system/jupyterhub-gateway", "explain"])
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
