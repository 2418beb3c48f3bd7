//! JupyterHub's own proxy client (`jupyterhub.proxy.ConfigurableHTTPProxy`, from PyPI) drives
//! the binary; every route must round-trip exactly, or JupyterHub would re-add it on every
//! check. The driver is `testkit/python/chp_client_roundtrip.py`.

use testkit::process::ProxyProcess;
use testkit::python::run_script;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "jupyterhub-client-token";

async fn drive(proxy_args: &[&str], driver_args: &[&str]) {
    let proxy = ProxyProcess::start(BIN, proxy_args, TOKEN).await;
    let api_url = format!("http://{}", proxy.addr());
    let mut args: Vec<String> = vec!["--api-url".into(), api_url, "--token".into(), TOKEN.into()];
    args.extend(driver_args.iter().map(|arg| arg.to_string()));
    // The driver blocks; the proxy's log readers need the runtime meanwhile.
    let (passed, output) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script("chp_client_roundtrip.py", &args)
    })
    .await
    .unwrap();
    println!("{output}");
    assert!(passed, "JupyterHub's client failed against the proxy:\n{output}\nproxy log:\n{}", proxy.log());
    assert!(output.contains("PASS all checks"), "{output}");
}

#[tokio::test]
async fn routes_round_trip_through_jupyterhubs_client() {
    drive(&["--store", "memory"], &[]).await;
}

#[tokio::test]
async fn host_routes_round_trip_through_jupyterhubs_client() {
    drive(&["--store", "memory", "--host-routing"], &["--host-routing"]).await;
}
