//! `jupyterhub-istio-proxy render`: the objects for some routes, as YAML, without a cluster.
//!
//! The routes go through the same backend and translation as when serving, into a memory
//! store, so what is printed is what the proxy would write.

use std::io::Read;
use std::sync::Arc;

use gateway_routes::{GatewayBackend, GatewayMemoryStore, HttpRouteStore};
use istio_routes::{IstioBackend, MemoryStore, RouteStore, yaml};
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target, wire};
use serde_json::Value;

use crate::config::{Config, RenderArgs, Routing};
use crate::{Error, Result};

/// The YAML of the objects for the routes `args` names.
pub async fn render(config: &Config, args: &RenderArgs) -> Result<String> {
    let mode = config.routing_mode();
    let mut routes = args.routes.iter().map(|arg| route_arg(arg, mode)).collect::<Result<Vec<_>>>()?;
    if let Some(path) = &args.routes_file {
        routes.extend(routes_file(path, mode)?);
    }
    if routes.is_empty() {
        return Err(Error::Render("no routes: give --route SPEC=TARGET or --routes-file FILE".to_owned()));
    }
    let mut documents = match config.routing {
        Routing::Istio => istio_documents(config, routes).await?,
        Routing::GatewayApi => gateway_documents(config, routes).await?,
    };
    for document in &mut documents {
        // What the API server assigns has no place in a manifest.
        if let Some(metadata) = document.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["creationTimestamp", "resourceVersion", "uid"] {
                metadata.remove(field);
            }
        }
    }
    Ok(yaml::documents(&documents))
}

/// The ServiceEntries, then the VirtualServices in Istio's order within one second.
async fn istio_documents(config: &Config, routes: Vec<Route>) -> Result<Vec<Value>> {
    let store = memory_backend(config, routes).await?.store().clone();
    // By name, which is Istio's order within one second: deeper routes first.
    let mut virtual_services = store.virtual_services();
    virtual_services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let entries = store.service_entries().into_iter().map(|entry| serde_json::to_value(&*entry));
    let services = virtual_services.into_iter().map(|service| serde_json::to_value(&*service));
    Ok(entries.chain(services).collect::<Result<Vec<Value>, _>>().expect("objects serialise"))
}

/// The HTTPRoutes, then each pod IP's Service and EndpointSlice (which name their HTTPRoute as
/// owner once the API server has given it a uid).
async fn gateway_documents(config: &Config, routes: Vec<Route>) -> Result<Vec<Value>> {
    let backend = gateway_memory_backend(config, routes).await?;
    let store = backend.store();
    let mut documents = Vec::new();
    for route in store.http_routes() {
        documents.push(serde_json::to_value(&*route).expect("objects serialise"));
    }
    for backend in store.pod_backends().into_values() {
        for mut document in
            [serde_json::to_value(&backend.service), serde_json::to_value(&backend.endpoint_slice)]
                .map(|document| document.expect("objects serialise"))
        {
            // The owner's uid is the API server's to give.
            if let Some(metadata) = document.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("ownerReferences");
            }
            documents.push(document);
        }
    }
    Ok(documents)
}

/// `routes` in a memory store, through the backend and translation the proxy serves with.
pub(crate) async fn memory_backend(
    config: &Config,
    mut routes: Vec<Route>,
) -> Result<IstioBackend<MemoryStore>> {
    // Deepest first, so no ancestor is ever created again and every name is generation 0:
    // the output does not depend on the clock.
    routes.sort_by_key(|route| std::cmp::Reverse(istio_routes::order::depth(route.spec())));
    let namespace = config.k8s_namespace.clone().unwrap_or_else(|| "default".to_owned());
    let translation = config.translation(&namespace);
    let store = Arc::new(MemoryStore::new(translation.clone()));
    let backend = IstioBackend::new(store, translation);
    for route in routes {
        let spec = route.spec().clone();
        backend.add(route).await.map_err(|e| Error::Render(format!("route {spec}: {e}")))?;
    }
    Ok(backend)
}

/// `routes` in a Gateway API memory store, through the backend and translation the proxy serves
/// with.
pub(crate) async fn gateway_memory_backend(
    config: &Config,
    routes: Vec<Route>,
) -> Result<GatewayBackend<GatewayMemoryStore>> {
    let namespace = config.k8s_namespace.clone().unwrap_or_else(|| "default".to_owned());
    let store = Arc::new(GatewayMemoryStore::new());
    let backend = GatewayBackend::new(store, config.gateway_translation(&namespace));
    for route in routes {
        let spec = route.spec().clone();
        backend.add(route).await.map_err(|e| Error::Render(format!("route {spec}: {e}")))?;
    }
    Ok(backend)
}

/// `SPEC=TARGET`; the target starts at the first `=http://` or `=https://`.
fn route_arg(arg: &str, mode: RoutingMode) -> Result<Route> {
    let at = ["=http://", "=https://", "=HTTP://", "=HTTPS://"].iter().filter_map(|sep| arg.find(sep)).min();
    let Some(at) = at else {
        return Err(Error::Render(format!(
            "--route {arg:?}: expected SPEC=TARGET, e.g. /user/alice/=http://10.0.0.7:8888"
        )));
    };
    let bad = |e: proxy_api::Error| Error::Render(format!("--route {arg:?}: {e}"));
    let spec = RouteSpec::new(&arg[..at], mode).map_err(bad)?;
    let target = Target::parse(&arg[at + 1..]).map_err(bad)?;
    Route::new(spec, target, Default::default()).map_err(bad)
}

/// Routes as `GET /api/routes` lists them: an object from spec to `{"target": ..., <data>}`.
pub(crate) fn routes_file(path: &std::path::Path, mode: RoutingMode) -> Result<Vec<Route>> {
    let name = path.display();
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| Error::Render(format!("cannot read {name}: {e}")))?;
    let listing: serde_json::Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| Error::Render(format!("{name} is not a JSON object of routes: {e}")))?;
    listing
        .into_iter()
        .map(|(key, object)| {
            let bad = |e: proxy_api::Error| Error::Render(format!("{name}: route {key:?}: {e}"));
            let Value::Object(object) = object else {
                return Err(Error::Render(format!("{name}: route {key:?} is not a JSON object")));
            };
            wire::route_from_object(RouteSpec::new(&key, mode).map_err(bad)?, object).map_err(bad)
        })
        .collect()
}
