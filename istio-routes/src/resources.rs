//! Istio's VirtualService and ServiceEntry, with only the fields this proxy writes.
//!
//! The API version is chosen at run time (`networking.istio.io/v1`, or `v1beta1` for Istio
//! older than 1.22), so these types implement [`kube::Resource`] with [`IstioVersion`] as their
//! dynamic type instead of deriving a fixed one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The API group of Istio's networking resources.
pub const ISTIO_GROUP: &str = "networking.istio.io";

/// Which version of Istio's networking API to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IstioVersion {
    /// `networking.istio.io/v1`, Istio 1.22 and newer.
    #[default]
    V1,
    /// `networking.istio.io/v1beta1`, for older Istio.
    V1beta1,
}

impl IstioVersion {
    /// The version as the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            IstioVersion::V1 => "v1",
            IstioVersion::V1beta1 => "v1beta1",
        }
    }

    /// `networking.istio.io/<version>`.
    pub fn api_version(self) -> String {
        format!("{ISTIO_GROUP}/{}", self.as_str())
    }
}

impl fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IstioVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(IstioVersion::V1),
            "v1beta1" => Ok(IstioVersion::V1beta1),
            other => Err(format!("unknown Istio API version {other:?}: use v1 or v1beta1")),
        }
    }
}

/// An Istio kind: what its spec is called in the API.
pub trait IstioKind {
    /// The kind, e.g. `VirtualService`.
    const KIND: &'static str;
    /// The resource's plural, e.g. `virtualservices`.
    const PLURAL: &'static str;
}

/// An Istio object: type, metadata and a spec of kind `S`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IstioObject<S> {
    /// `networking.istio.io/<version>`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// The kind.
    #[serde(default)]
    pub kind: String,
    /// Name, labels, annotations; creation time and resource version from the API server.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: S,
}

impl<S: IstioKind> IstioObject<S> {
    /// An object of this kind in `version`.
    pub fn new(version: IstioVersion, metadata: ObjectMeta, spec: S) -> Self {
        IstioObject { api_version: version.api_version(), kind: S::KIND.to_owned(), metadata, spec }
    }
}

impl<S: IstioKind> kube::Resource for IstioObject<S> {
    type DynamicType = IstioVersion;
    // Dynamic, because the version is: `Api::namespaced_with` takes it at run time.
    type Scope = kube::core::DynamicResourceScope;

    fn kind(_: &IstioVersion) -> Cow<'_, str> {
        Cow::Borrowed(S::KIND)
    }
    fn group(_: &IstioVersion) -> Cow<'_, str> {
        Cow::Borrowed(ISTIO_GROUP)
    }
    fn version(version: &IstioVersion) -> Cow<'_, str> {
        Cow::Borrowed(version.as_str())
    }
    fn plural(_: &IstioVersion) -> Cow<'_, str> {
        Cow::Borrowed(S::PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// An Istio VirtualService.
pub type VirtualService = IstioObject<VirtualServiceSpec>;

impl IstioKind for VirtualServiceSpec {
    const KIND: &'static str = "VirtualService";
    const PLURAL: &'static str = "virtualservices";
}

/// An Istio ServiceEntry: here, a pod IP made routable under a synthetic host.
pub type ServiceEntry = IstioObject<ServiceEntrySpec>;

impl IstioKind for ServiceEntrySpec {
    const KIND: &'static str = "ServiceEntry";
    const PLURAL: &'static str = "serviceentries";
}

/// What a VirtualService routes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VirtualServiceSpec {
    /// Host names the routes apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways the routes are bound to (`name` or `namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// HTTP routes, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Namespaces whose proxies see the object (`.` for its own); empty for Istio's default,
    /// every namespace.
    #[serde(default, rename = "exportTo", skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// One HTTP route of a VirtualService.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpRoute {
    /// A name for logs and stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests matching any of these take this route; none means every request.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Where matching requests go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// How the path is rewritten before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Header changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Conditions on a request; all that are set must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpMatchRequest {
    /// The request path, percent-encoded as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// The `Host` (`:authority`) of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
}

/// How a string is matched. Regexes are RE2 and must match the whole string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with (a raw string prefix, not segment-aware).
    Prefix(String),
    /// Fully matches this RE2 regex.
    Regex(String),
}

/// A destination of a route.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpRouteDestination {
    /// The service.
    pub destination: Destination,
}

/// A service in the mesh's registry, and a port of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Destination {
    /// A Kubernetes service's FQDN or a ServiceEntry host.
    pub host: String,
    /// The port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A port by number.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PortSelector {
    /// The port number.
    pub number: u32,
}

/// Path rewriting.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpRewrite {
    /// Replaces the matched prefix (or, for exact and regex matches, the whole path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Rewrites the path with a regex.
    #[serde(rename = "uriRegexRewrite", default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex rewrite: `match` replaced by `rewrite` (`\1` for groups).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegexRewrite {
    /// RE2 regex.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The replacement.
    pub rewrite: String,
}

/// Header manipulation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Headers {
    /// On responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Header operations.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HeaderOperations {
    /// Headers set, replacing any of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
}

/// What a ServiceEntry adds to the mesh's registry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceEntrySpec {
    /// Host names of the entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `MESH_INTERNAL` or `MESH_EXTERNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `STATIC`: the endpoints are addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// The addresses behind the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Namespaces whose proxies get the entry's cluster and endpoints (`.` for its own); empty
    /// for Istio's default, every namespace.
    #[serde(default, rename = "exportTo", skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// A port of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServicePort {
    /// The port number.
    pub number: u32,
    /// `HTTP`, `HTTPS`, ...
    pub protocol: String,
    /// The port's name.
    pub name: String,
}

/// One endpoint of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkloadEntry {
    /// The IP address.
    pub address: String,
    /// Labels; `security.istio.io/tlsMode: istio` tells the gateway to use mutual TLS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;

    #[test]
    fn urls_follow_the_chosen_version() {
        assert_eq!(
            VirtualService::url_path(&IstioVersion::V1, Some("hub")),
            "/apis/networking.istio.io/v1/namespaces/hub/virtualservices"
        );
        assert_eq!(
            ServiceEntry::url_path(&IstioVersion::V1beta1, Some("hub")),
            "/apis/networking.istio.io/v1beta1/namespaces/hub/serviceentries"
        );
        assert_eq!("v1beta1".parse::<IstioVersion>(), Ok(IstioVersion::V1beta1));
        assert!("v2".parse::<IstioVersion>().unwrap_err().contains("v1 or v1beta1"));
    }

    #[test]
    fn string_matches_serialise_as_istio_spells_them() {
        let m = HttpMatchRequest { uri: Some(StringMatch::Prefix("/user/a/".into())), authority: None };
        assert_eq!(serde_json::to_value(&m).unwrap(), serde_json::json!({"uri": {"prefix": "/user/a/"}}));
        let route: HttpRoute = serde_json::from_value(serde_json::json!({
            "match": [{"uri": {"regex": "/a(/.*)?"}}],
            "route": [{"destination": {"host": "h", "port": {"number": 80}}}],
            "timeout": "10s"
        }))
        .unwrap();
        assert_eq!(route.matches[0].uri, Some(StringMatch::Regex("/a(/.*)?".into())));
    }
}
