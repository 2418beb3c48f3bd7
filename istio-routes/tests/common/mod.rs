//! What the Kubernetes store's tests share, whichever API server they run against.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use istio_routes::{Error, IstioBackend, KubeStore, Translation};
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};

pub(crate) const GATEWAY: &str = "istio-system/jupyterhub-gateway";

pub(crate) fn translation(namespace: &str) -> Translation {
    Translation {
        namespace: namespace.into(),
        gateways: vec![GATEWAY.into()],
        hosts: vec!["*".into()],
        // As the binary exports them by default.
        export_to: istio_routes::default_export_to(namespace, &[GATEWAY.to_owned()]),
        ..Translation::default()
    }
}

/// A backend over a Kubernetes store in `namespace`, once its cache has synced.
pub(crate) async fn start(
    mut config: kube::Config,
    namespace: &str,
) -> Result<IstioBackend<KubeStore>, Error> {
    // As the binary makes it: the store retries, not kube's default policy.
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let store = KubeStore::start(client, &translation(namespace)).await?;
    tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await.expect("the cache syncs");
    Ok(IstioBackend::new(Arc::new(store), translation(namespace)))
}

pub(crate) fn route(spec: &str, target: &str) -> Route {
    let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
    Route::new(spec, Target::parse(target).unwrap(), Default::default()).unwrap()
}

pub(crate) fn spec(s: &str) -> RouteSpec {
    RouteSpec::new(s, RoutingMode::Path).unwrap()
}

/// The specs a backend lists, in order.
pub(crate) async fn listed(backend: &IstioBackend<KubeStore>) -> Vec<String> {
    backend.list().await.unwrap().iter().map(|r| r.spec().to_string()).collect()
}
