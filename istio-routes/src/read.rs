//! Objects back to routes: ours, and those the Go jupyterhub-istio-proxy wrote.

use std::sync::Arc;

use base64::Engine;
use proxy_api::{Route, RouteSpec, Target, wire};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::resources::VirtualService;
use crate::translate::Translation;
use kube_routes::{INSTANCE_LABEL, ROUTE_ANNOTATION, SPEC_ANNOTATION};

/// Who wrote a route's VirtualService.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The Go jupyterhub-istio-proxy; replaced by ours on the next write of the route.
    Legacy,
    /// This proxy, as this generation of the route's object.
    Ours {
        /// The generation: bumped when the object is created again to keep Istio's order.
        generation: u32,
    },
}

/// A route read from a VirtualService.
#[derive(Debug, Clone)]
pub struct StoredRoute {
    /// The route.
    pub route: Arc<Route>,
    /// Who wrote the object.
    pub origin: Origin,
}

/// What the Go proxy kept in its annotation, base64 JSON.
#[derive(Deserialize)]
struct LegacyRoute {
    route_spec: String,
    target: String,
    #[serde(default)]
    jupyterhub: bool,
    #[serde(default)]
    data: Map<String, Value>,
}

impl Translation {
    /// The annotation the Go proxy kept its routes in: `<prefix>.splunk.io/proxy-data`.
    pub fn legacy_annotation(&self) -> String {
        format!("{}.splunk.io/proxy-data", self.prefix)
    }

    /// The route an object holds: `None` when it is not a route object of this instance;
    /// an error naming the object when it is one but cannot be read.
    pub fn read(&self, object: &VirtualService) -> Option<Result<StoredRoute, String>> {
        let meta = &object.metadata;
        let name = meta.name.as_deref().unwrap_or_default();
        let annotations = meta.annotations.as_ref()?;
        let ours = meta.labels.as_ref().and_then(|l| l.get(INSTANCE_LABEL)) == Some(&self.prefix);
        if ours
            && let (Some(spec), Some(route)) =
                (annotations.get(SPEC_ANNOTATION), annotations.get(ROUTE_ANNOTATION))
        {
            return Some(self.read_ours(name, spec, route));
        }
        let legacy = annotations.get(&self.legacy_annotation())?;
        Some(self.read_legacy(name, legacy))
    }

    fn read_ours(&self, name: &str, spec: &str, route: &str) -> Result<StoredRoute, String> {
        let generation = name
            .rsplit_once('-')
            .and_then(|(_, generation)| generation.parse().ok())
            .ok_or_else(|| format!("{name}: no generation at the end of the name"))?;
        let spec = RouteSpec::new(spec, self.routing_mode).map_err(|e| format!("{name}: {e}"))?;
        let object: Map<String, Value> =
            serde_json::from_str(route).map_err(|e| format!("{name}: route annotation: {e}"))?;
        let route = wire::route_from_object(spec, object).map_err(|e| format!("{name}: {e}"))?;
        Ok(StoredRoute { route: Arc::new(route), origin: Origin::Ours { generation } })
    }

    fn read_legacy(&self, name: &str, encoded: &str) -> Result<StoredRoute, String> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("{name}: legacy annotation is not base64: {e}"))?;
        let legacy: LegacyRoute =
            serde_json::from_slice(&json).map_err(|e| format!("{name}: legacy annotation: {e}"))?;
        let spec =
            RouteSpec::new(&legacy.route_spec, self.routing_mode).map_err(|e| format!("{name}: {e}"))?;
        let target = Target::parse(&legacy.target).map_err(|e| format!("{name}: {e}"))?;
        // The Go proxy listed `jupyterhub` beside the data, always.
        let mut data = legacy.data;
        data.insert("jupyterhub".to_owned(), Value::Bool(legacy.jupyterhub));
        let route = Route::new(spec, target, data).map_err(|e| format!("{name}: {e}"))?;
        Ok(StoredRoute { route: Arc::new(route), origin: Origin::Legacy })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proxy_api::RoutingMode;
    use serde_json::json;

    use super::*;
    use crate::resources::{IstioVersion, VirtualServiceSpec};

    #[test]
    fn ours_round_trip_exactly() {
        let translation = Translation::default();
        let spec = RouteSpec::new("/user/秀樹", RoutingMode::Path).unwrap();
        let body =
            json!({"target": "http://10.0.0.1:8888", "jupyterhub": true, "user": "秀樹", "server_name": ""});
        let route = wire::route_from_body(spec, body.to_string().as_bytes()).unwrap();
        let rendered = translation.render(&route, 4).unwrap();
        let stored = translation.read(&rendered.virtual_service).unwrap().unwrap();
        assert_eq!(*stored.route, route);
        assert_eq!(stored.origin, Origin::Ours { generation: 4 });
    }

    #[test]
    fn another_instances_objects_are_not_ours() {
        let rendered = Translation::default()
            .render(&wire::route_from_body(RouteSpec::root(), br#"{"target":"http://hub:8081"}"#).unwrap(), 0)
            .unwrap();
        let other = Translation { prefix: "other".into(), ..Translation::default() };
        assert!(other.read(&rendered.virtual_service).is_none());
    }

    fn legacy_object(annotation: &str, value: &str) -> VirtualService {
        let metadata = ObjectMeta {
            name: Some("jupyter-0a1b".into()),
            annotations: Some(BTreeMap::from([(annotation.to_owned(), value.to_owned())])),
            ..ObjectMeta::default()
        };
        VirtualService::new(IstioVersion::V1, metadata, VirtualServiceSpec::default())
    }

    #[test]
    fn the_go_proxys_objects_are_read_as_it_listed_them() {
        let translation = Translation::default();
        let json = json!({"route_spec": "/user/alice/", "target": "http://jupyter-alice:8888", "jupyterhub": true,
                          "data": {"user": "alice", "server_name": ""}});
        let encoded = base64::engine::general_purpose::STANDARD.encode(json.to_string());
        let stored =
            translation.read(&legacy_object("jupyter.splunk.io/proxy-data", &encoded)).unwrap().unwrap();
        assert_eq!(stored.origin, Origin::Legacy);
        assert_eq!(stored.route.spec().as_str(), "/user/alice");
        assert_eq!(
            serde_json::from_str::<Value>(stored.route.wire_json()).unwrap(),
            json!({"target": "http://jupyter-alice:8888", "jupyterhub": true, "user": "alice", "server_name": ""})
        );
        let broken = translation.read(&legacy_object("jupyter.splunk.io/proxy-data", "%%%")).unwrap();
        assert!(broken.unwrap_err().contains("jupyter-0a1b"));
        assert!(translation.read(&legacy_object("other.splunk.io/proxy-data", &encoded)).is_none());
    }
}
