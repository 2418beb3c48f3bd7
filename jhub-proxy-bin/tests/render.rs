//! `jupyterhub-istio-proxy render` against golden YAML: the translation of a hub's routes,
//! byte for byte. Run with `UPDATE_GOLDEN=1` to rewrite the files after an intended change, and
//! read the diff.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");

fn golden(name: &str) -> PathBuf {
    testkit::manifest_dir().join("tests/golden").join(name)
}

fn render(options: &[&str], routes: &[&str]) -> String {
    render_with(&[&["--istio-gateway", "istio-system/jupyterhub-gateway"], options].concat(), routes)
}

fn render_with(options: &[&str], routes: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command.env_clear().args(["--k8s-namespace", "hub"]);
    command.args(options).arg("render");
    for route in routes {
        command.args(["--route", route]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn check(name: &str, yaml: &str) {
    let path = golden(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, yaml).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        yaml == expected,
        "{} differs; rerun with UPDATE_GOLDEN=1 and read the diff:\n{yaml}",
        path.display()
    );
    // And it is YAML that a YAML parser reads back (PyYAML, from the JupyterHub venv).
    let script = "import sys, yaml; print(len([d for d in yaml.safe_load_all(sys.stdin) if d['kind']]))";
    let python = testkit::python::jupyterhub_python();
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let documents: usize =
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("PyYAML parsed the documents");
    assert_eq!(documents, yaml.matches("\n---\n").count() + 1);
}

#[test]
fn a_hub_under_a_base_url_with_users_named_servers_and_services() {
    let yaml = render(
        &["--sub-domain-host", "hub.example.org"],
        &[
            "/jhub/=http://hub:8081",
            "/jhub/user/alice/=http://10.0.0.7:8888",
            "/jhub/user/alice/foo/=http://10.0.0.8:8888",
            "/jhub/user/bob%20o/=http://jupyter-bob:8888/base",
            "/jhub/user/秀樹@x.org/=http://jupyter-hideki.users:8888",
            "/jhub/services/grafana/=https://grafana.monitoring.svc.cluster.local:3000",
        ],
    );
    check("base-url.yaml", &yaml);
}

#[test]
fn host_routing_matches_the_authority() {
    let yaml = render(
        &[
            "--host-routing",
            "--sub-domain-host",
            "*",
            "--ip-target-mtls=false",
            "--istio-api-version",
            "v1beta1",
        ],
        &["/=http://hub:8081", "alice.hub.example.org/user/alice/=http://10.0.0.7:8888"],
    );
    check("host-routing.yaml", &yaml);
}

#[test]
fn gateway_api_routes_are_httproutes_with_services_for_pod_ips() {
    let yaml = render_with(
        &[
            "--routing",
            "gateway-api",
            "--parent-ref",
            "istio-system/jupyterhub/http",
            "--sub-domain-host",
            "hub.example.org",
        ],
        &[
            "/jhub/=http://hub:8081",
            "/jhub/user/alice/=http://10.0.0.7:8888",
            "/jhub/user/bob%20o/=http://jupyter-bob:8888/base",
            "/jhub/user/秀樹@x.org/=http://jupyter-hideki.users:8888",
        ],
    );
    check("gateway-api.yaml", &yaml);
}

#[test]
fn render_refuses_what_cannot_be_routed_with_the_reason() {
    let output = Command::new(BIN)
        .env_clear()
        .args(["render", "--route", "/user/a/=http://127.0.0.1:8888"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("route /user/a") && stderr.contains("gateway can reach"), "{stderr}");
    let none = Command::new(BIN).env_clear().arg("render").output().unwrap();
    assert!(String::from_utf8(none.stderr).unwrap().contains("no routes"));
}
