//! A route: a spec, a target, and the data JupyterHub attached to it.

use serde_json::{Map, Value};

use crate::{Error, Result, RouteSpec, Target};

/// A route as JupyterHub adds it.
///
/// `data` is every key of the POST body except `target`, kept exactly (`jupyterhub`, `user`,
/// `server_name`, `service`, or anything else), because JupyterHub recognises its own routes by
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    spec: RouteSpec,
    target: Target,
    data: Map<String, Value>,
}

impl Route {
    /// A route from its parts; `data` must not hold `target`, which has a field of its own.
    pub fn new(spec: RouteSpec, target: Target, data: Map<String, Value>) -> Result<Self> {
        if data.contains_key("target") {
            return Err(Error::InvalidBody {
                reason: "'target' is not route data".to_owned(),
            });
        }
        Ok(Route { spec, target, data })
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

    /// Takes the route apart.
    pub fn into_parts(self) -> (RouteSpec, Target, Map<String, Value>) {
        (self.spec, self.target, self.data)
    }
}
