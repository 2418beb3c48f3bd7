//! Routes to Gateway API objects, and back.
//!
//! Each route becomes one HTTPRoute, named after the route and never renamed: the Gateway API
//! orders matches by their specificity (`PathPrefix` over whole segments, the longest first), so
//! the creation order that the Istio backend must manage does not matter here. A pod-IP target
//! also gets a selector-less Service and an EndpointSlice holding the IP, which every
//! implementation routes to, both owned by the HTTPRoute. The HTTPRoute's annotations keep the
//! route's spec, target and data exactly, as the Istio backend's VirtualServices do, so a
//! listing rebuilds the routes JupyterHub added.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_routes::{
    INSTANCE_LABEL, MAX_ROUTE_ANNOTATION_BYTES, PROXY_ID_HEADER, PodAddressError, ROUTE_ANNOTATION,
    ROUTE_LABEL, SPEC_ANNOTATION, check_pod_address, encode_path, instance_labels, instance_selector,
    revision, route_id,
};
use proxy_api::{Route, RouteSpec, RoutingMode, Scheme, Target, wire};
use serde_json::{Map, Value};

use crate::resources::{
    BackendRef, GATEWAY_GROUP, GATEWAY_VERSION, HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRule,
    HttpRouteSpec, PATH_PREFIX, ParentReference, PathMatch,
};

/// The Gateway API's limit on a path match's value.
pub const MAX_PATH_MATCH_BYTES: usize = 1024;
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that keeps Kubernetes' EndpointSlice controller off the slices we write.
pub const ENDPOINT_SLICE_MANAGER_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`ENDPOINT_SLICE_MANAGER_LABEL`].
pub const ENDPOINT_SLICE_MANAGER: &str = "jupyterhub-istio-proxy";

/// Why a loopback target is refused, and what to do on one machine.
const LOOPBACK: &str = "is not an address a gateway can reach the server at; with JupyterHub \
    and the proxy on one machine (no gateway), start the proxy with --allow-loopback-targets \
    (ALLOW_LOOPBACK_TARGETS=true)";

/// How routes become Gateway API objects: the proxy's configuration of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTranslation {
    /// Namespace of the objects (`K8S_NAMESPACE`).
    pub namespace: String,
    /// Prefix of object names and value of the instance label (`VIRTUAL_SERVICE_PREFIX`).
    pub prefix: String,
    /// The Gateways the routes attach to (`--parent-ref`, `GATEWAY_API_PARENT`).
    pub parent_refs: Vec<ParentReference>,
    /// The hostnames of path-routed routes (`SUB_DOMAIN_HOST`); empty for every host.
    pub hostnames: Vec<String>,
    /// The cluster's DNS domain (`CLUSTER_DOMAIN`), to read full Service names.
    pub cluster_domain: String,
    /// Whether specs start with a host.
    pub routing_mode: RoutingMode,
    /// Accept loopback targets, which only a gateway on the same machine can reach.
    pub allow_loopback_targets: bool,
}

impl Default for GatewayTranslation {
    fn default() -> Self {
        GatewayTranslation {
            namespace: "default".to_owned(),
            prefix: "jupyter".to_owned(),
            parent_refs: Vec::new(),
            hostnames: Vec::new(),
            cluster_domain: "cluster.local".to_owned(),
            routing_mode: RoutingMode::Path,
            allow_loopback_targets: false,
        }
    }
}

/// A Gateway, as `--parent-ref` names it: `[namespace/]name[/section]`.
impl FromStr for ParentReference {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let (namespace, name, section) = match parts[..] {
            [name] => (None, name, None),
            [namespace, name] => (Some(namespace), name, None),
            [namespace, name, section] => (Some(namespace), name, Some(section)),
            _ => return Err(format!("{text:?} is not [namespace/]name[/section]")),
        };
        // A Gateway's name may hold dots (a DNS subdomain); a namespace and a listener may not.
        let label = |part: &&str| is_dns_label(part, false);
        let bad = namespace
            .filter(|part| !label(part))
            .or((!name.split('.').all(|part| label(&part))).then_some(name))
            .or(section.filter(|part| !label(part)));
        if let Some(part) = bad {
            return Err(format!(
                "{text:?}: {part:?} is not a Kubernetes name (lower-case letters, digits and '-', at most 63 between dots)"
            ));
        }
        Ok(ParentReference {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            section_name: section.map(str::to_owned),
        })
    }
}

impl fmt::Display for ParentReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(namespace) = &self.namespace {
            write!(f, "{namespace}/")?;
        }
        f.write_str(&self.name)?;
        if let Some(section) = &self.section_name {
            write!(f, "/{section}")?;
        }
        Ok(())
    }
}

/// The objects of one route.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The HTTPRoute.
    pub http_route: HttpRoute,
    /// For a pod-IP target, the Service and EndpointSlice that make the IP a backend.
    pub pod_backend: Option<PodBackend>,
}

/// A selector-less Service and the EndpointSlice that gives it a pod IP.
#[derive(Debug, Clone, PartialEq)]
pub struct PodBackend {
    /// The Service the HTTPRoute's backendRef names.
    pub service: Service,
    /// The pod IP and port.
    pub endpoint_slice: EndpointSlice,
}

impl PodBackend {
    /// Makes both objects owned by `route` (which the API server has given a uid), so that
    /// deleting the HTTPRoute deletes them too, in a cluster that collects garbage.
    pub fn owned_by(mut self, route: &HttpRoute) -> Self {
        let owner = OwnerReference {
            api_version: format!("{GATEWAY_GROUP}/{GATEWAY_VERSION}"),
            kind: HttpRoute::KIND.to_owned(),
            name: route.metadata.name.clone().unwrap_or_default(),
            uid: route.metadata.uid.clone().unwrap_or_default(),
            block_owner_deletion: None,
            controller: None,
        };
        self.service.metadata.owner_references = Some(vec![owner.clone()]);
        self.endpoint_slice.metadata.owner_references = Some(vec![owner]);
        self
    }
}

impl GatewayTranslation {
    /// The labels every object of this proxy instance carries.
    pub fn instance_labels(&self) -> BTreeMap<String, String> {
        instance_labels(&self.prefix)
    }

    /// The label selector for this instance's objects.
    pub fn label_selector(&self) -> String {
        instance_selector(&self.prefix)
    }

    /// The name of a route's HTTPRoute, and of its Service and EndpointSlice.
    pub fn object_name(&self, spec: &RouteSpec) -> String {
        self.object_name_of(&route_id(spec))
    }

    /// The name of the objects of the route whose id is `id`.
    pub fn object_name_of(&self, id: &str) -> String {
        format!("{}-{id}", self.prefix)
    }

    /// The objects for `route`.
    ///
    /// Fails with [`proxy_api::Error::InvalidTarget`] when the target is not one a Gateway API
    /// backend can name, and [`proxy_api::Error::InvalidSpec`] or
    /// [`proxy_api::Error::InvalidBody`] when the route cannot be written as an HTTPRoute.
    pub fn render(&self, route: &Route) -> proxy_api::Result<Rendered> {
        let spec = route.spec();
        let wire = route.wire_json();
        if wire.len() > MAX_ROUTE_ANNOTATION_BYTES {
            return Err(proxy_api::Error::InvalidBody {
                reason: format!(
                    "the route's target and data take {} bytes; at most {MAX_ROUTE_ANNOTATION_BYTES} fit in a Kubernetes object",
                    wire.len()
                ),
            });
        }
        let hostnames = self.hostnames_of(spec)?;
        let (backend_ref, pod_backend) = self.backend(route)?;
        let name = self.object_name(spec);
        let mut annotations = BTreeMap::from([(SPEC_ANNOTATION.to_owned(), spec.to_string())]);
        annotations.insert(ROUTE_ANNOTATION.to_owned(), wire.to_owned());
        let http_route = HttpRoute::new(
            ObjectMeta { annotations: Some(annotations), ..self.metadata(spec, &name) },
            HttpRouteSpec {
                parent_refs: self.parent_refs.clone(),
                hostnames,
                rules: self.rules(route, backend_ref)?,
            },
        );
        Ok(Rendered { http_route, pod_backend })
    }

    fn metadata(&self, spec: &RouteSpec, name: &str) -> ObjectMeta {
        let mut labels = self.instance_labels();
        labels.insert(ROUTE_LABEL.to_owned(), route_id(spec));
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        }
    }

    /// The route's `hostnames`: its host under host routing (the host-less root route takes
    /// every host), `SUB_DOMAIN_HOST` under path routing.
    fn hostnames_of(&self, spec: &RouteSpec) -> proxy_api::Result<Vec<String>> {
        let Some(host) = spec.host() else {
            return Ok(self.hostnames.clone());
        };
        let host = host.to_ascii_lowercase();
        let valid =
            host.parse::<IpAddr>().is_err() && host.split('.').all(|label| is_dns_label(label, false));
        if !valid {
            return Err(proxy_api::Error::InvalidSpec {
                spec: spec.to_string(),
                reason: "the host is not a DNS name the Gateway API can match (an HTTPRoute's hostnames cannot be IP addresses)",
            });
        }
        Ok(vec![host])
    }

    /// The backendRef of a route, and for a pod IP the objects it names.
    fn backend(&self, route: &Route) -> proxy_api::Result<(BackendRef, Option<PodBackend>)> {
        let target = route.target();
        let unroutable =
            |reason: String| proxy_api::Error::InvalidTarget { target: target.to_string(), reason };
        if target.scheme() == Scheme::Https {
            return Err(unroutable(
                "an https target needs a BackendTLSPolicy, which the Gateway API backend does not write: \
                 use http targets, or --routing istio"
                    .to_owned(),
            ));
        }
        let port = Some(i32::from(target.port()));
        if let Some(ip) = target.ip() {
            match check_pod_address(ip, self.allow_loopback_targets) {
                Ok(()) => {}
                Err(PodAddressError::Loopback) => return Err(unroutable(format!("{ip} {LOOPBACK}"))),
                Err(error) => return Err(unroutable(format!("{ip} {error}"))),
            }
            let name = self.object_name(route.spec());
            let backend = self.pod_backend(route.spec(), &name, target, ip);
            return Ok((BackendRef { name, namespace: None, port }, Some(backend)));
        }
        let (name, namespace) = self.service_of(target)?;
        let namespace = (namespace != self.namespace).then_some(namespace);
        Ok((BackendRef { name, namespace, port }, None))
    }

    /// The cluster-local host of the Service a route's requests go to: its own Service for a
    /// pod IP, else the one its target names. What a gateway's metrics name the destination by
    /// (Istio's `destination_service`), for activity.
    pub fn destination_host(&self, route: &Route) -> proxy_api::Result<String> {
        let (name, namespace) = match route.target().ip() {
            Some(_) => (self.object_name(route.spec()), self.namespace.clone()),
            None => self.service_of(route.target())?,
        };
        Ok(format!("{name}.{namespace}.svc.{}", self.cluster_domain))
    }

    /// The Service (name, namespace) a target names: `svc`, `svc.ns`, `svc.ns.svc` or
    /// `svc.ns.svc.<cluster domain>`. Other names are not Services, which is all the Gateway
    /// API's core support routes to.
    fn service_of(&self, target: &Target) -> proxy_api::Result<(String, String)> {
        let host = target.host().to_ascii_lowercase();
        if host == "localhost" && !self.allow_loopback_targets {
            return Err(proxy_api::Error::InvalidTarget {
                target: target.to_string(),
                reason: format!("localhost {LOOPBACK}"),
            });
        }
        let labels: Vec<&str> = host.split('.').collect();
        let domain: Vec<&str> = self.cluster_domain.split('.').collect();
        let service = match labels[..] {
            [name] => Some((name, self.namespace.as_str())),
            [name, namespace] => Some((name, namespace)),
            [name, namespace, "svc", ref rest @ ..] if rest.is_empty() || rest == domain => {
                Some((name, namespace))
            }
            _ => None,
        };
        match service {
            Some((name, namespace)) if is_dns_label(name, true) && is_dns_label(namespace, false) => {
                Ok((name.to_owned(), namespace.to_owned()))
            }
            _ => Err(proxy_api::Error::InvalidTarget {
                target: target.to_string(),
                reason: format!(
                    "{host:?} is not a Kubernetes Service: the Gateway API routes to Services, named \
                     `name`, `name.namespace` or `name.namespace.svc.{}`, or to pod IPs",
                    self.cluster_domain
                ),
            }),
        }
    }

    fn pod_backend(&self, spec: &RouteSpec, name: &str, target: &Target, ip: IpAddr) -> PodBackend {
        let port = i32::from(target.port());
        let service = Service {
            metadata: self.metadata(spec, name),
            spec: Some(ServiceSpec {
                // No selector: the EndpointSlice below is the Service's only endpoint.
                ports: Some(vec![ServicePort {
                    name: Some("http".to_owned()),
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".to_owned()),
                    app_protocol: Some("http".to_owned()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let mut slice_meta = self.metadata(spec, name);
        let labels = slice_meta.labels.get_or_insert_default();
        labels.insert(SERVICE_NAME_LABEL.to_owned(), name.to_owned());
        labels.insert(ENDPOINT_SLICE_MANAGER_LABEL.to_owned(), ENDPOINT_SLICE_MANAGER.to_owned());
        let endpoint_slice = EndpointSlice {
            metadata: slice_meta,
            address_type: if ip.is_ipv4() { "IPv4" } else { "IPv6" }.to_owned(),
            endpoints: vec![Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions { ready: Some(true), ..EndpointConditions::default() }),
                ..Endpoint::default()
            }],
            ports: Some(vec![EndpointPort {
                name: Some("http".to_owned()),
                port: Some(port),
                protocol: Some("TCP".to_owned()),
                app_protocol: Some("http".to_owned()),
            }]),
        };
        PodBackend { service, endpoint_slice }
    }

    /// The rules of a route: requests whose path starts with the route's, in whole segments,
    /// go to `backend_ref`, with the response header warm-up waits for, and the target's path
    /// put in front as configurable-http-proxy forwards it.
    fn rules(&self, route: &Route, backend_ref: BackendRef) -> proxy_api::Result<Vec<HttpRouteRule>> {
        let spec = route.spec();
        let matches = path_matches(spec.path());
        if matches.iter().any(|m| m.value.len() > MAX_PATH_MATCH_BYTES) {
            return Err(proxy_api::Error::InvalidSpec {
                spec: spec.to_string(),
                reason: "the path takes more than the 1024 bytes a Gateway API path match holds",
            });
        }
        let header = HttpRouteFilter::set_response_header(PROXY_ID_HEADER, revision(route));
        let rule = |matches: Vec<HttpRouteMatch>, filters: Vec<HttpRouteFilter>| HttpRouteRule {
            matches,
            filters,
            backend_refs: vec![backend_ref.clone()],
        };
        let base = route.target().path();
        if base.is_empty() {
            let matches = matches.into_iter().map(|path| HttpRouteMatch { path: Some(path) }).collect();
            return Ok(vec![rule(matches, vec![header])]);
        }
        // A prefix rewrite needs a rule with exactly one PathPrefix match (a CEL rule of the
        // CRD), so each spelling of the path gets its own rule. A regular expression cannot be
        // rewritten: see [`path_matches`].
        Ok(matches
            .into_iter()
            .filter(|path| path.kind == PATH_PREFIX)
            .map(|path| {
                let prefix = &path.value;
                let replacement = if prefix == "/" { base.to_owned() } else { format!("{base}{prefix}") };
                let rewrite = HttpRouteFilter::replace_prefix_match(replacement);
                rule(vec![HttpRouteMatch { path: Some(path) }], vec![header.clone(), rewrite])
            })
            .collect())
    }

    /// The route an HTTPRoute holds: `None` when it is not one of this instance's; an error
    /// naming the object when it is one but cannot be read.
    pub fn read(&self, object: &HttpRoute) -> Option<Result<Arc<Route>, String>> {
        let meta = &object.metadata;
        let ours = meta.labels.as_ref().and_then(|l| l.get(INSTANCE_LABEL)) == Some(&self.prefix);
        let annotations = meta.annotations.as_ref().filter(|_| ours)?;
        let (spec, route) = (annotations.get(SPEC_ANNOTATION)?, annotations.get(ROUTE_ANNOTATION)?);
        let name = meta.name.as_deref().unwrap_or_default();
        Some((|| {
            let spec = RouteSpec::new(spec, self.routing_mode).map_err(|e| format!("{name}: {e}"))?;
            let object: Map<String, Value> =
                serde_json::from_str(route).map_err(|e| format!("{name}: route annotation: {e}"))?;
            let route = wire::route_from_object(spec, object).map_err(|e| format!("{name}: {e}"))?;
            Ok(Arc::new(route))
        })())
    }
}

/// The path matches of a decoded path: a `PathPrefix` for each of [`path_prefixes`]' spellings,
/// and for each of them as an implementation that decodes escapes before matching sees it.
///
/// Traefik matches a request's path with the escapes of characters that RFC 3986 does not
/// reserve decoded (upper-case hex only is kept for the reserved: `%40` stays, `%2a` is `*`):
/// JupyterHub's `/user/%C3%BC` is matched as `/user/ü`, which the CRD allows in no `PathPrefix`.
/// So where a spelling decodes to something else, that is matched too: as a `PathPrefix` when
/// the CRD allows its characters, else as a `RegularExpression` for the path and what lies below
/// it in whole segments, its characters escaped so that the pattern is ASCII (RE2's `\x{..}`,
/// which Envoy and Go share). Each only matches requests that configurable-http-proxy, which
/// decodes the whole path, sends to the same route; and a deeper route's matches are always
/// longer, which is how Traefik ranks both kinds. Implementations that match the path as sent
/// (Istio's) never see a raw non-ASCII path, so the expression does not change what they route.
/// A rule that rewrites the path for a target with a path takes a `PathPrefix` only (the
/// Gateway API rewrites nothing else), so such a route gets no expression; see
/// docs/gateway-api.md.
pub fn path_matches(path: &str) -> Vec<PathMatch> {
    let mut matches: Vec<PathMatch> = path_prefixes(path).into_iter().map(PathMatch::prefix).collect();
    for spelling in path_prefixes(path) {
        let decoded = decode_unreserved(&spelling);
        let alternative = if decoded.bytes().all(allowed_in_path_prefix) {
            PathMatch::prefix(decoded)
        } else {
            PathMatch::regex(format!("^{}(/.*)?$", regex_literal(decoded.trim_end_matches('/'))))
        };
        if !matches.contains(&alternative) {
            matches.push(alternative);
        }
    }
    matches
}

/// The `PathPrefix` values of a decoded path: JupyterHub's spelling (`quote(path,
/// safe='@/~')`), and the spellings configurable-http-proxy treats as the same path and a
/// client may send: `%40` for `@`, and lower-case hex digits. A path mixing spellings
/// (`/user/a@b%40c`) is not matched; see docs/gateway-api.md.
pub fn path_prefixes(path: &str) -> Vec<String> {
    let encoded = encode_path(path);
    let mut prefixes = vec![encoded.clone()];
    let mut add = |prefix: String| {
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    };
    let at_encoded = encoded.replace('@', "%40");
    add(at_encoded.clone());
    add(lower_hex(&encoded));
    add(lower_hex(&at_encoded));
    prefixes
}

/// The escapes Traefik keeps when it decodes a path for matching: RFC 3986's reserved
/// characters and `%` itself, spelled with upper-case hex.
const KEPT_ESCAPES: &[&str] = &[
    "%3A", "%2F", "%3F", "%23", "%5B", "%5D", "%40", "%21", "%24", "%26", "%27", "%28", "%29", "%2A", "%2B",
    "%2C", "%3B", "%3D", "%25",
];

/// `encoded` with every escape but [`KEPT_ESCAPES`] decoded, as Traefik matches a request's
/// path; `encoded` itself when the decoded bytes are not UTF-8.
fn decode_unreserved(encoded: &str) -> String {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        let escape = rest.get(..3).and_then(|e| std::str::from_utf8(e).ok());
        let value = escape.filter(|_| first == b'%').and_then(|e| u8::from_str_radix(&e[1..], 16).ok());
        match (escape, value) {
            (Some(escape), Some(value)) if !KEPT_ESCAPES.contains(&escape) => {
                bytes.push(value);
                rest = &rest[3..];
            }
            _ => {
                bytes.push(first);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|_| encoded.to_owned())
}

/// The bytes the CRD allows in a `PathPrefix` besides escapes: RFC 3986's `pchar` and `/`.
fn allowed_in_path_prefix(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@%".contains(&byte)
}

/// A regular expression matching `text` literally, in ASCII: a backslash before RE2's (and
/// Go's) metacharacters, `\x{..}` for a space, a control character or anything not ASCII.
fn regex_literal(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            pattern.push('\\');
            pattern.push(c);
        } else if c.is_ascii_graphic() {
            pattern.push(c);
        } else {
            pattern.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    pattern
}

/// `encoded` with every percent-escape's hex digits in lower case.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut escape = 0;
    for c in encoded.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// An RFC 1123 label (lower-case letters, digits, `-` inside, at most 63), which must start
/// with a letter when `rfc1035` (Service names).
fn is_dns_label(label: &str, rfc1035: bool) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && (!rfc1035 || bytes[0].is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(spec: &str, target: &str) -> Route {
        route_in(RoutingMode::Path, spec, target)
    }

    fn route_in(mode: RoutingMode, spec: &str, target: &str) -> Route {
        let data = Map::from_iter([("user".to_owned(), json!("alice"))]);
        Route::new(RouteSpec::new(spec, mode).unwrap(), Target::parse(target).unwrap(), data).unwrap()
    }

    fn translation() -> GatewayTranslation {
        GatewayTranslation {
            namespace: "hub".to_owned(),
            parent_refs: vec!["istio-system/jupyterhub".parse().unwrap()],
            ..GatewayTranslation::default()
        }
    }

    fn rules(rendered: &Rendered) -> Value {
        serde_json::to_value(&rendered.http_route.spec.rules).unwrap()
    }

    #[test]
    fn a_pod_ip_route_is_a_path_prefix_to_a_service_of_its_own() {
        let route = route("/user/alice", "http://10.0.0.7:8888");
        let rendered = translation().render(&route).unwrap();
        let name = translation().object_name(route.spec());
        assert_eq!(
            rules(&rendered),
            json!([{
                "matches": [{"path": {"type": "PathPrefix", "value": "/user/alice"}}],
                "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier":
                    {"set": [{"name": "jupyter-proxy-id", "value": revision(&route)}]}}],
                "backendRefs": [{"name": name, "port": 8888}],
            }])
        );
        let object = serde_json::to_value(&rendered.http_route).unwrap();
        assert_eq!(object["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            object["spec"]["parentRefs"],
            json!([{"namespace": "istio-system", "name": "jupyterhub"}])
        );
        assert!(object["spec"].get("hostnames").is_none(), "every host: {object}");
        let backend = rendered.pod_backend.unwrap();
        let service = serde_json::to_value(&backend.service).unwrap();
        assert_eq!(service["metadata"]["name"], json!(name));
        assert!(service["spec"].get("selector").is_none());
        assert_eq!(service["spec"]["ports"][0]["port"], 8888);
        let slice = serde_json::to_value(&backend.endpoint_slice).unwrap();
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["endpoints"][0]["addresses"], json!(["10.0.0.7"]));
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], json!(name));
        assert_eq!(slice["metadata"]["labels"][ENDPOINT_SLICE_MANAGER_LABEL], "jupyterhub-istio-proxy");
        let v6 = translation().render(&route_in(RoutingMode::Path, "/a", "http://[fd00::7]:80")).unwrap();
        assert_eq!(v6.pod_backend.unwrap().endpoint_slice.address_type, "IPv6");
    }

    #[test]
    fn a_target_path_is_put_in_front_as_chp_forwards_it() {
        let rendered = translation().render(&route("/user/alice", "http://10.0.0.7:8888/base/")).unwrap();
        let rule = &rules(&rendered)[0];
        assert_eq!(
            rule["filters"][1],
            json!({"type": "URLRewrite", "urlRewrite": {"path":
                {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/base/user/alice"}}})
        );
        let root = translation().render(&route("/", "http://hub:8081/hub")).unwrap();
        assert_eq!(rules(&root)[0]["matches"], json!([{"path": {"type": "PathPrefix", "value": "/"}}]));
        assert_eq!(rules(&root)[0]["filters"][1]["urlRewrite"]["path"]["replacePrefixMatch"], "/hub");
    }

    #[test]
    fn every_spelling_chp_takes_for_a_path_is_matched() {
        assert_eq!(path_prefixes("/user/alice"), ["/user/alice"]);
        assert_eq!(path_prefixes("/user/a@b"), ["/user/a@b", "/user/a%40b"]);
        assert_eq!(path_prefixes("/user/ä"), ["/user/%C3%A4", "/user/%c3%a4"]);
        assert_eq!(path_prefixes("/user/a@ä").len(), 4);
        // A rewrite allows one PathPrefix per rule: one rule per spelling.
        let rendered = translation().render(&route("/user/a@b", "http://10.0.0.7:8888/base")).unwrap();
        let replacements: Vec<Value> = rules(&rendered)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["filters"][1]["urlRewrite"].clone())
            .collect();
        assert_eq!(replacements.len(), 2);
        assert_eq!(replacements[1]["path"]["replacePrefixMatch"], "/base/user/a%40b");
        let plain = translation().render(&route("/user/a@b", "http://10.0.0.7:8888")).unwrap();
        assert_eq!(rules(&plain)[0]["matches"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn spellings_are_matched_as_a_decoding_gateway_sees_them_too() {
        let values = |path: &str| -> Vec<(String, String)> {
            path_matches(path).into_iter().map(|m| (m.kind, m.value)).collect()
        };
        let prefix = |value: &str| (PATH_PREFIX.to_owned(), value.to_owned());
        let regex = |value: &str| ("RegularExpression".to_owned(), value.to_owned());
        assert_eq!(values("/user/alice"), [prefix("/user/alice")]);
        assert_eq!(values("/"), [prefix("/")]);
        // Traefik matches /user/%C3%BC as /user/ü, which no PathPrefix may hold.
        assert_eq!(
            values("/user/ü"),
            [prefix("/user/%C3%BC"), prefix("/user/%c3%bc"), regex(r"^/user/\x{FC}(/.*)?$")]
        );
        // Reserved characters keep their upper-case escapes; lower-case ones are decoded.
        assert_eq!(values("/user/a*b"), [prefix("/user/a%2Ab"), prefix("/user/a%2ab"), prefix("/user/a*b")]);
        assert_eq!(values("/user/x@y"), [prefix("/user/x@y"), prefix("/user/x%40y")]);
        assert_eq!(values("/a b/c.d"), [prefix("/a%20b/c.d"), regex(r"^/a\x{20}b/c\.d(/.*)?$")]);
        assert_eq!(values("/ü@x").len(), 6, "{:?}", values("/ü@x"));
        // A rewrite takes a PathPrefix only: no expression for a target with a path.
        let rewritten = translation().render(&route("/user/ü", "http://10.0.0.7:8888/base")).unwrap();
        let kinds: Vec<Value> = rules(&rewritten)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["matches"][0]["path"]["type"].clone())
            .collect();
        assert_eq!(kinds, [json!(PATH_PREFIX), json!(PATH_PREFIX)]);
    }

    #[test]
    fn service_targets_are_backend_refs_and_other_names_are_refused() {
        let backend = |target: &str| {
            let rendered = translation().render(&route("/user/alice", target))?;
            assert!(rendered.pod_backend.is_none());
            Ok::<_, proxy_api::Error>(rules(&rendered)[0]["backendRefs"][0].clone())
        };
        assert_eq!(
            backend("http://jupyter-alice:8888").unwrap(),
            json!({"name": "jupyter-alice", "port": 8888})
        );
        assert_eq!(
            backend("http://jupyter-alice.hub").unwrap(),
            json!({"name": "jupyter-alice", "port": 80})
        );
        let other = json!({"name": "nb", "namespace": "users", "port": 8888});
        assert_eq!(backend("http://nb.users:8888").unwrap(), other);
        assert_eq!(backend("http://nb.users.svc:8888").unwrap(), other);
        assert_eq!(backend("http://nb.users.svc.cluster.local:8888").unwrap(), other);
        for (target, says) in [
            ("http://www.example.org:8888", "is not a Kubernetes Service"),
            ("http://nb.users.svc.other.domain:8888", "is not a Kubernetes Service"),
            ("http://1nb:8888", "is not a Kubernetes Service"),
            ("https://nb:8888", "BackendTLSPolicy"),
            ("http://127.0.0.1:8888", "--allow-loopback-targets"),
            ("http://localhost:8888", "--allow-loopback-targets"),
            ("http://0.0.0.0:8888", "unspecified"),
            // What the API server refuses in an EndpointSlice, refused before anything is written.
            ("http://169.254.1.1:8888", "link-local"),
            ("http://[fe80::1]:8888", "link-local"),
            ("http://[::ffff:10.0.0.7]:8888", "send 10.0.0.7"),
        ] {
            let error = backend(target).unwrap_err();
            assert!(matches!(error, proxy_api::Error::InvalidTarget { .. }), "{target}: {error}");
            assert!(error.to_string().contains(says), "{target}: {error}");
        }
        let loopback = GatewayTranslation { allow_loopback_targets: true, ..translation() };
        assert!(loopback.render(&route("/user/alice", "http://127.0.0.1:8888")).is_ok());
    }

    #[test]
    fn hosts_become_hostnames() {
        let hostnames = |translation: &GatewayTranslation, route: &Route| {
            translation.render(route).map(|r| r.http_route.spec.hostnames)
        };
        let host = GatewayTranslation { routing_mode: RoutingMode::Host, ..translation() };
        let user = route_in(RoutingMode::Host, "/Alice.Hub.example.org/user/alice", "http://10.0.0.7:8888");
        assert_eq!(hostnames(&host, &user).unwrap(), ["alice.hub.example.org"]);
        assert_eq!(rules(&host.render(&user).unwrap())[0]["matches"][0]["path"]["value"], "/user/alice");
        let root = route_in(RoutingMode::Host, "/", "http://hub:8081");
        assert!(hostnames(&host, &root).unwrap().is_empty(), "the root route takes every host");
        for bad in ["/10.1.2.3/user/alice", "/under_score.example.org/user/alice"] {
            let route = route_in(RoutingMode::Host, bad, "http://10.0.0.7:8888");
            assert!(matches!(hostnames(&host, &route), Err(proxy_api::Error::InvalidSpec { .. })), "{bad}");
        }
        let sub = GatewayTranslation { hostnames: vec!["hub.example.org".to_owned()], ..translation() };
        assert_eq!(
            hostnames(&sub, &route("/user/alice", "http://10.0.0.7:8888")).unwrap(),
            ["hub.example.org"]
        );
    }

    #[test]
    fn what_a_gateway_api_object_cannot_hold_is_refused() {
        let long = format!("/user/{}", "a".repeat(1100));
        let error = translation().render(&route(&long, "http://10.0.0.7:8888")).unwrap_err();
        assert!(error.to_string().contains("1024"), "{error}");
        let data = Map::from_iter([("big".to_owned(), json!("x".repeat(MAX_ROUTE_ANNOTATION_BYTES)))]);
        let spec = RouteSpec::new("/user/alice", RoutingMode::Path).unwrap();
        let big = Route::new(spec, Target::parse("http://10.0.0.7:8888").unwrap(), data).unwrap();
        assert!(matches!(translation().render(&big), Err(proxy_api::Error::InvalidBody { .. })));
    }

    #[test]
    fn an_object_reads_back_as_the_route_it_was_rendered_from() {
        for route in [
            route("/user/alice", "http://10.0.0.7:8888/base"),
            route("/", "http://hub:8081"),
            route("/user/ä@b", "http://nb.users:8888"),
        ] {
            let rendered = translation().render(&route).unwrap();
            let read = translation().read(&rendered.http_route).unwrap().unwrap();
            assert_eq!(*read, route);
        }
        let object = translation().render(&route("/user/alice", "http://10.0.0.7:8888")).unwrap().http_route;
        let other = GatewayTranslation { prefix: "other".to_owned(), ..translation() };
        assert!(other.read(&object).is_none(), "another instance's object is not ours");
        let mut broken = object;
        broken.metadata.annotations.as_mut().unwrap().insert(ROUTE_ANNOTATION.to_owned(), "{".to_owned());
        let error = translation().read(&broken).unwrap().unwrap_err();
        assert!(error.starts_with(
            &translation().object_name(&RouteSpec::new("/user/alice", RoutingMode::Path).unwrap())
        ));
    }

    #[test]
    fn parent_refs_read_as_namespace_name_and_section() {
        for text in ["gw", "istio-system/gw", "istio-system/gw.v1/https"] {
            let parent: ParentReference = text.parse().unwrap();
            assert_eq!(parent.to_string(), text);
        }
        let parent: ParentReference = "ns/gw/web".parse().unwrap();
        assert_eq!((parent.namespace.as_deref(), parent.section_name.as_deref()), (Some("ns"), Some("web")));
        for bad in ["", "a/b/c/d", "Gateway", "ns/-gw", "a.b/gw", "ns/gw/a.b"] {
            assert!(bad.parse::<ParentReference>().is_err(), "{bad:?}");
        }
    }
}
