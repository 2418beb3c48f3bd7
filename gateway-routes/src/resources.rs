//! The Gateway API's HTTPRoute (`gateway.networking.k8s.io/v1`), with only the fields this proxy
//! writes and reads back. Services and EndpointSlices are core objects, typed by `k8s-openapi`.
//!
//! Fields are named as in the Gateway API's `apis/v1/httproute_types.go`. Fields someone else
//! adds to one of our objects are ignored on read, never an error: the listing must not fail
//! because of an edit, which healing or JupyterHub's next `check_routes` repairs.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The Gateway API's group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The version of it we write: v1, where HTTPRoute is standard since Gateway API 1.0.
pub const GATEWAY_VERSION: &str = "v1";

/// An HTTPRoute: where requests for some hosts and paths go, attached to Gateways.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// `HTTPRoute`.
    #[serde(default)]
    pub kind: String,
    /// Name, labels, annotations; creation time and resource version from the API server.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the route matches and where it sends requests.
    #[serde(default)]
    pub spec: HttpRouteSpec,
    /// What each Gateway made of the route; written by the gateway's controller, never by us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HttpRouteStatus>,
}

impl HttpRoute {
    /// The kind, as the API names it.
    pub const KIND: &'static str = "HTTPRoute";
    /// The resource, for URLs and RBAC.
    pub const PLURAL: &'static str = "httproutes";

    /// An HTTPRoute with this metadata and spec.
    pub fn new(metadata: ObjectMeta, spec: HttpRouteSpec) -> Self {
        HttpRoute {
            api_version: format!("{GATEWAY_GROUP}/{GATEWAY_VERSION}"),
            kind: Self::KIND.to_owned(),
            metadata,
            spec,
            status: None,
        }
    }
}

impl kube::Resource for HttpRoute {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Self::KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GATEWAY_GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GATEWAY_VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Self::PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What an HTTPRoute matches and where it sends requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateways (or their listeners) the route attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// The `Host` headers the route applies to; none means every host its listeners take.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules; a request takes the most specific match among all routes' rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

/// A Gateway, or one listener of it (`sectionName`), that a route attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// The Gateway's namespace; the route's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Gateway's name.
    pub name: String,
    /// One listener of the Gateway, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Requests matching any of `matches` get `filters` applied and go to `backend_refs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Conditions, any of which selects the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Changes to the request or response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Where requests go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

/// A condition on a request: here only its path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpRouteMatch {
    /// The path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (whole `/`-separated segments) or `RegularExpression`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The path, percent-encoded as requests carry it.
    #[serde(default)]
    pub value: String,
}

/// The `PathPrefix` match type: whole segments, a trailing `/` ignored.
pub const PATH_PREFIX: &str = "PathPrefix";
/// The `Exact` match type.
pub const EXACT: &str = "Exact";
/// The `RegularExpression` match type: the syntax and precedence are the implementation's.
pub const REGULAR_EXPRESSION: &str = "RegularExpression";

impl PathMatch {
    /// A `PathPrefix` match of `value`.
    pub fn prefix(value: impl Into<String>) -> Self {
        PathMatch { kind: PATH_PREFIX.to_owned(), value: value.into() }
    }

    /// A `RegularExpression` match of `pattern`.
    pub fn regex(pattern: impl Into<String>) -> Self {
        PathMatch { kind: REGULAR_EXPRESSION.to_owned(), value: pattern.into() }
    }
}

/// A filter; `kind` says which of the other fields holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// `ResponseHeaderModifier`, `URLRewrite`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Headers set on the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// The path rewritten before forwarding.
    #[serde(rename = "urlRewrite", default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
}

impl HttpRouteFilter {
    /// Sets response header `name` to `value`.
    pub fn set_response_header(name: &str, value: String) -> Self {
        HttpRouteFilter {
            kind: "ResponseHeaderModifier".to_owned(),
            response_header_modifier: Some(HeaderModifier {
                set: vec![HttpHeader { name: name.to_owned(), value }],
            }),
            url_rewrite: None,
        }
    }

    /// Replaces the part of the path a `PathPrefix` match matched with `replacement`.
    pub fn replace_prefix_match(replacement: String) -> Self {
        HttpRouteFilter {
            kind: "URLRewrite".to_owned(),
            response_header_modifier: None,
            url_rewrite: Some(UrlRewrite {
                path: Some(PathModifier {
                    kind: "ReplacePrefixMatch".to_owned(),
                    replace_prefix_match: Some(replacement),
                }),
            }),
        }
    }
}

/// Header changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HeaderModifier {
    /// Headers set, replacing any of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
}

/// A header and its value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpHeader {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// A URL rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UrlRewrite {
    /// The path's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A path rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// `ReplacePrefixMatch` (or `ReplaceFullPath`, which we do not write).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// What replaces the matched prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// A backend: a Service and its port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackendRef {
    /// The Service's name.
    pub name: String,
    /// Its namespace; the route's own when unset (another needs a ReferenceGrant there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// What the gateways made of a route.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpRouteStatus {
    /// One entry per parent (Gateway) and controller.
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// What one gateway controller made of a route for one parent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// The parent.
    #[serde(default)]
    pub parent_ref: ParentReference,
    /// The controller, e.g. `istio.io/gateway-controller`.
    #[serde(default)]
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs`, ...
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// A machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// What a person should read.
    #[serde(default)]
    pub message: String,
    /// The route's `metadata.generation` the condition was set for.
    #[serde(rename = "observedGeneration", default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
