//! What the Kubernetes store's tests share, whichever API server they run against.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use istio_routes::resources::{IstioVersion, ServiceEntry, VirtualService};
use istio_routes::{IstioBackend, KubeStore, Translation};
use kube::api::ListParams;
use kube_routes::Error;
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

/// What is in a namespace, read with the given (admin's) credentials past any cache.
pub(crate) struct Namespace {
    pub(crate) virtual_services: kube::Api<VirtualService>,
    pub(crate) service_entries: kube::Api<ServiceEntry>,
    pub(crate) translation: Translation,
}

impl Namespace {
    pub(crate) fn new(client: kube::Client, namespace: &str) -> Namespace {
        Namespace {
            virtual_services: kube::Api::namespaced_with(client.clone(), namespace, &IstioVersion::V1),
            service_entries: kube::Api::namespaced_with(client, namespace, &IstioVersion::V1),
            translation: translation(namespace),
        }
    }

    /// Our VirtualServices.
    pub(crate) async fn virtual_services(&self) -> Vec<VirtualService> {
        let labelled = ListParams::default().labels(&self.translation.label_selector());
        self.virtual_services.list(&labelled).await.expect("list VirtualServices").items
    }

    /// Our ServiceEntries.
    pub(crate) async fn service_entries(&self) -> Vec<ServiceEntry> {
        let labelled = ListParams::default().labels(&self.translation.label_selector());
        self.service_entries.list(&labelled).await.expect("list ServiceEntries").items
    }

    /// The names of our VirtualServices, sorted.
    pub(crate) async fn names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.virtual_services().await.into_iter().filter_map(|o| o.metadata.name).collect();
        names.sort();
        names
    }

    /// The route each VirtualService holds, as `spec -> target`, sorted.
    pub(crate) async fn routes(&self) -> Vec<String> {
        let mut routes: Vec<String> = self
            .virtual_services()
            .await
            .iter()
            .map(|object| {
                let stored = self.translation.read(object).expect("ours").expect("readable");
                format!("{} -> {}", stored.route.spec(), stored.route.target())
            })
            .collect();
        routes.sort();
        routes
    }

    pub(crate) async fn service_entry_count(&self) -> usize {
        self.service_entries().await.len()
    }
}
