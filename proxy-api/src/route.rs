//! A route: a spec, a target, and the data JupyterHub attached to it.

use serde::ser::{Serialize, SerializeMap, Serializer};
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
    /// The wire form, `{"target": ..., <data>...}`, made once: routes are immutable and
    /// listings copy it. The data lives only here: a `Map` of its own would cost a tree node
    /// of hundreds of bytes per route, more than the rest of the route, and only the rare
    /// `inactive_since` listing reads it back. `Map`s serialise with sorted keys, so equal
    /// routes have equal wire forms.
    wire: Box<str>,
}

impl Route {
    /// A route from its parts; `data` must not hold `target`, which has a field of its own.
    pub fn new(spec: RouteSpec, target: Target, data: Map<String, Value>) -> Result<Self> {
        if data.contains_key("target") {
            return Err(Error::InvalidBody { reason: "'target' is not route data".to_owned() });
        }
        let wire =
            serde_json::to_string(&WireForm { target: &target, data: &data }).expect("routes serialise");
        Ok(Route { spec, target, wire: wire.into_boxed_str() })
    }

    /// The route's spec, its key.
    pub fn spec(&self) -> &RouteSpec {
        &self.spec
    }

    /// Where the route sends requests.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The data JupyterHub attached, read back from the wire form.
    pub fn data(&self) -> Map<String, Value> {
        let Ok(Value::Object(mut data)) = serde_json::from_str(&self.wire) else {
            unreachable!("the wire form is a JSON object, made by Route::new")
        };
        data.remove("target");
        data
    }

    /// The route in configurable-http-proxy's wire format, `{"target": ..., <data>...}`.
    pub fn wire_json(&self) -> &str {
        &self.wire
    }

    /// Takes the route apart.
    pub fn into_parts(self) -> (RouteSpec, Target, Map<String, Value>) {
        let data = self.data();
        (self.spec, self.target, data)
    }
}

/// The wire form of a route's parts: `target` first, then the data.
struct WireForm<'a> {
    target: &'a Target,
    data: &'a Map<String, Value>,
}

impl Serialize for WireForm<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.data.len() + 1))?;
        map.serialize_entry("target", self.target.as_str())?;
        for (key, value) in self.data {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}
