//! A route: a spec, a target, and the data JupyterHub attached to it.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::{Error, Result, RouteSpec, Target};

/// A route as JupyterHub adds it.
///
/// `data` is every key of the POST body except `target`, kept exactly (`jupyterhub`, `user`,
/// `server_name`, `service`, or anything else), because JupyterHub recognises its own routes by
/// them.
#[derive(Debug, Clone)]
pub struct Route {
    spec: RouteSpec,
    target: Target,
    data: Map<String, Value>,
    /// The wire form, made on first use: routes are immutable and shared, so a listing of
    /// 10,000 routes copies strings instead of serialising every route again.
    wire: OnceLock<Box<str>>,
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.target == other.target && self.data == other.data
    }
}

impl Route {
    /// A route from its parts; `data` must not hold `target`, which has a field of its own.
    pub fn new(spec: RouteSpec, target: Target, data: Map<String, Value>) -> Result<Self> {
        if data.contains_key("target") {
            return Err(Error::InvalidBody { reason: "'target' is not route data".to_owned() });
        }
        Ok(Route { spec, target, data, wire: OnceLock::new() })
    }

    /// The route's spec, its key.
    pub fn spec(&self) -> &RouteSpec {
        &self.spec
    }

    /// Where the route sends requests.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The data JupyterHub attached.
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }

    /// The route in configurable-http-proxy's wire format, `{"target": ..., <data>...}`.
    pub fn wire_json(&self) -> &str {
        self.wire.get_or_init(|| {
            let json = serde_json::to_string(&crate::wire::WireRoute(self)).expect("routes serialise");
            json.into_boxed_str()
        })
    }

    /// Takes the route apart.
    pub fn into_parts(self) -> (RouteSpec, Target, Map<String, Value>) {
        (self.spec, self.target, self.data)
    }
}
