//! Routes rendered offline, as the Istio objects the proxy would write, in YAML for
//! `kubectl apply -f -`: no cluster and no API server.
//!
//! ```sh
//! cargo run -p istio-routes --example render -- /user/alice http://10.0.0.7:8888 /jhub/ http://hub:8081
//! ```

use std::sync::Arc;

use istio_routes::{IstioBackend, MemoryStore, Translation, yaml};
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        args = ["/user/alice", "http://10.0.0.7:8888"].map(String::from).to_vec();
    }
    let translation = Translation {
        namespace: "jupyterhub".into(),
        gateways: vec!["istio-system/jupyterhub-gateway".into()],
        ..Translation::default()
    };
    // The backend over the memory store writes exactly what it writes to Kubernetes.
    let store = Arc::new(MemoryStore::new(translation.clone()));
    let backend = IstioBackend::new(Arc::clone(&store), translation);
    for pair in args.chunks(2) {
        let [spec, target] = pair else { return Err("give routes as pairs: SPEC TARGET".into()) };
        let spec = RouteSpec::new(spec, RoutingMode::Path)?;
        backend.add(Route::new(spec, Target::parse(target)?, Default::default())?).await?;
    }
    let mut objects = Vec::new();
    for entry in store.service_entries() {
        objects.push(serde_json::to_value(&*entry)?);
    }
    for service in istio_routes::RouteStore::virtual_services(&*store) {
        objects.push(serde_json::to_value(&*service)?);
    }
    print!("{}", yaml::documents(&objects));
    Ok(())
}
