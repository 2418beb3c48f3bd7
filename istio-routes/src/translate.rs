//! Routes to Istio objects, and back.
//!
//! Each route becomes one VirtualService (and, for a pod-IP target, one ServiceEntry). Its
//! annotations keep the route's spec, target and data exactly, so a listing rebuilds the routes
//! JupyterHub added. How the objects are named decides how Istio orders them; see
//! [`crate::order`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_routes::{
    MAX_ROUTE_ANNOTATION_BYTES, PROXY_ID_HEADER, ROUTE_ANNOTATION, ROUTE_LABEL, SPEC_ANNOTATION, encode_path,
    instance_labels, instance_selector, revision, route_id,
};
use proxy_api::{Route, RouteSpec, RoutingMode, Scheme, Target};

use crate::order::depth;
use crate::resources::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRewrite, HttpRoute, HttpRouteDestination,
    IstioVersion, PortSelector, RegexRewrite, ServiceEntry, ServiceEntrySpec, ServicePort, StringMatch,
    VirtualService, VirtualServiceSpec, WorkloadEntry,
};
use kube_routes::{PodAddressError, check_pod_address};

/// Why a loopback target is refused, and what to do on one machine.
const LOOPBACK: &str = "is not an address Istio's gateway can reach the server at; \
    with JupyterHub and the proxy on one machine (no gateway), start the proxy with \
    --allow-loopback-targets (ALLOW_LOOPBACK_TARGETS=true)";

/// The deepest route, in path segments; the depth is part of object names.
pub const MAX_DEPTH: usize = 99;

/// How routes become objects: the proxy's configuration of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// Namespace of the objects (`K8S_NAMESPACE`).
    pub namespace: String,
    /// Istio API version.
    pub version: IstioVersion,
    /// Gateways the routes bind to (`ISTIO_GATEWAY`); empty means the mesh's sidecars.
    pub gateways: Vec<String>,
    /// The VirtualServices' hosts (`SUB_DOMAIN_HOST`; `*` when unset).
    pub hosts: Vec<String>,
    /// Prefix of object names and value of [`INSTANCE_LABEL`](kube_routes::INSTANCE_LABEL) (`VIRTUAL_SERVICE_PREFIX`).
    pub prefix: String,
    /// The cluster's DNS domain (`CLUSTER_DOMAIN`).
    pub cluster_domain: String,
    /// Whether specs start with a host.
    pub routing_mode: RoutingMode,
    /// Label pod-IP endpoints for mutual TLS (their pods run Istio sidecars).
    pub ip_target_mtls: bool,
    /// Accept loopback targets (127.0.0.1, `localhost`), which only a gateway on the same
    /// machine as the servers can reach: for running everything on one machine.
    pub allow_loopback_targets: bool,
    /// The objects' `exportTo` (`ISTIO_EXPORT_TO`): the namespaces whose Istio proxies see
    /// them; empty for every namespace. [`default_export_to`] gives the gateway's.
    pub export_to: Vec<String>,
}

impl Default for Translation {
    fn default() -> Self {
        Translation {
            namespace: "default".to_owned(),
            version: IstioVersion::V1,
            gateways: Vec::new(),
            hosts: vec!["*".to_owned()],
            prefix: "jupyter".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            routing_mode: RoutingMode::Path,
            ip_target_mtls: true,
            allow_loopback_targets: false,
            export_to: Vec::new(),
        }
    }
}

/// Where the Istio installs the Go proxy documents run their gateway's pods by default.
pub const ISTIO_SYSTEM: &str = "istio-system";

/// The `exportTo` that lets the gateway's pods, and no sidecar elsewhere, see the objects of
/// a proxy writing to `namespace` for `gateways`.
///
/// What counts is the namespace the gateway's *pods* run in, which a Gateway reference does not
/// say. A Gateway in another namespace (`istio-system/jupyterhub-gateway`) sits, as Istio
/// advises, beside its pods: export there. A Gateway in the hub's own namespace (a bare name,
/// as in the Go proxy's documented Deployment) may select Istio's default ingress pods in
/// `istio-system` or pods deployed beside the hub: export to both. Without a gateway the
/// routes are for the mesh's sidecars, so everyone sees them (empty: Istio's default).
pub fn default_export_to(namespace: &str, gateways: &[String]) -> Vec<String> {
    let mut export = Vec::new();
    let mut add = |ns: &str| {
        let ns = if ns == namespace { "." } else { ns };
        if !export.iter().any(|e| e == ns) {
            export.push(ns.to_owned());
        }
    };
    for gateway in gateways {
        match gateway.split_once('/') {
            Some((ns, _)) if ns != namespace => add(ns),
            _ => {
                add(".");
                add(ISTIO_SYSTEM);
            }
        }
    }
    export
}

/// The objects of one route.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The VirtualService.
    pub virtual_service: VirtualService,
    /// The ServiceEntry that makes a pod-IP target routable.
    pub service_entry: Option<ServiceEntry>,
}

impl Translation {
    /// The labels every object of this proxy instance carries.
    pub fn instance_labels(&self) -> BTreeMap<String, String> {
        instance_labels(&self.prefix)
    }

    /// The label selector for this instance's objects.
    pub fn label_selector(&self) -> String {
        instance_selector(&self.prefix)
    }

    /// The VirtualService name of a route's `generation`. Deeper routes get smaller depth
    /// digits, so when two creation times tie, the deeper route sorts first (see `order`).
    pub fn virtual_service_name(&self, spec: &RouteSpec, generation: u32) -> String {
        self.virtual_service_name_of(spec, &route_id(spec), generation)
    }

    /// The ServiceEntry name of a route.
    pub fn service_entry_name(&self, spec: &RouteSpec) -> String {
        self.service_entry_name_of(&route_id(spec))
    }

    /// The synthetic host a pod-IP target is reached by.
    pub fn service_entry_host(&self, spec: &RouteSpec) -> String {
        self.service_entry_host_of(&route_id(spec))
    }

    // The names of a route whose id (`route_id`, a hash) is known: a rendering computes it once.

    fn virtual_service_name_of(&self, spec: &RouteSpec, id: &str, generation: u32) -> String {
        format!("{}-{:02}-{id}-{generation}", self.prefix, MAX_DEPTH - depth(spec))
    }

    pub(crate) fn service_entry_name_of(&self, id: &str) -> String {
        format!("{}-{id}", self.prefix)
    }

    fn service_entry_host_of(&self, id: &str) -> String {
        format!("{}.{}.jupyterhub-istio-proxy.internal", self.service_entry_name_of(id), self.namespace)
    }

    /// The objects for `route`, as generation `generation` of its VirtualService.
    ///
    /// Fails with [`proxy_api::Error::InvalidTarget`] when the target cannot be routed by Istio,
    /// and [`proxy_api::Error::InvalidSpec`]/[`proxy_api::Error::InvalidBody`] when the route
    /// cannot be stored as an object.
    pub fn render(&self, route: &Route, generation: u32) -> proxy_api::Result<Rendered> {
        let spec = route.spec();
        if depth(spec) > MAX_DEPTH {
            return Err(proxy_api::Error::InvalidSpec {
                spec: spec.to_string(),
                reason: "routes deeper than 99 path segments are not supported",
            });
        }
        let wire = route.wire_json();
        if wire.len() > MAX_ROUTE_ANNOTATION_BYTES {
            return Err(proxy_api::Error::InvalidBody {
                reason: format!(
                    "the route's target and data take {} bytes; at most {MAX_ROUTE_ANNOTATION_BYTES} fit in a Kubernetes object",
                    wire.len()
                ),
            });
        }
        let id = route_id(spec);
        let (destination, service_entry) = self.destination(route, &id)?;
        let virtual_service = VirtualService::new(
            self.version,
            self.metadata(spec, &id, self.virtual_service_name_of(spec, &id, generation), Some(wire)),
            VirtualServiceSpec {
                hosts: self.hosts.clone(),
                gateways: self.gateways.clone(),
                http: self.http_routes(route, destination),
                export_to: self.export_to.clone(),
            },
        );
        Ok(Rendered { virtual_service, service_entry })
    }

    /// The ServiceEntry rendered for a route of `spec` to `target`, if it needs one: what
    /// [`render`](Self::render) gives as [`Rendered::service_entry`], without the VirtualService.
    pub(crate) fn render_service_entry(&self, spec: &RouteSpec, target: &Target) -> Option<ServiceEntry> {
        let ip = target.ip()?;
        let id = route_id(spec);
        Some(self.service_entry(spec, &id, target, ip, &self.service_entry_host_of(&id)))
    }

    fn metadata(&self, spec: &RouteSpec, id: &str, name: String, wire: Option<&str>) -> ObjectMeta {
        let mut labels = self.instance_labels();
        labels.insert(ROUTE_LABEL.to_owned(), id.to_owned());
        let mut annotations = BTreeMap::from([(SPEC_ANNOTATION.to_owned(), spec.to_string())]);
        if let Some(wire) = wire {
            annotations.insert(ROUTE_ANNOTATION.to_owned(), wire.to_owned());
        }
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    }

    /// The mesh destination of a target, and the ServiceEntry it needs, if any.
    ///
    /// A loopback target is what a JupyterHub on a laptop sends first, so its error names the
    /// way out.
    fn destination(&self, route: &Route, id: &str) -> proxy_api::Result<(Destination, Option<ServiceEntry>)> {
        let target = route.target();
        let unroutable =
            |reason: String| proxy_api::Error::InvalidTarget { target: target.to_string(), reason };
        let port = Some(PortSelector { number: u32::from(target.port()) });
        if let Some(ip) = target.ip() {
            match check_pod_address(ip, self.allow_loopback_targets) {
                Ok(()) => {}
                Err(PodAddressError::Loopback) => return Err(unroutable(format!("{ip} {LOOPBACK}"))),
                Err(error) => return Err(unroutable(format!("{ip} {error}"))),
            }
            let host = self.service_entry_host_of(id);
            let entry = self.service_entry(route.spec(), id, target, ip, &host);
            return Ok((Destination { host, port }, Some(entry)));
        }
        let host = self.service_host(target)?;
        Ok((Destination { host, port }, None))
    }

    /// The mesh host requests of `route` go to: its ServiceEntry's host for a pod-IP target, the
    /// service's fully qualified name otherwise. Istio's metrics name it in `destination_service`.
    pub fn destination_host(&self, route: &Route) -> proxy_api::Result<String> {
        match route.target().ip() {
            Some(_) => Ok(self.service_entry_host(route.spec())),
            None => self.service_host(route.target()),
        }
    }

    /// The fully qualified host of a target named by DNS.
    fn service_host(&self, target: &Target) -> proxy_api::Result<String> {
        let unroutable =
            |reason: String| proxy_api::Error::InvalidTarget { target: target.to_string(), reason };
        let host = target.host().to_ascii_lowercase();
        let valid_dns = host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if !valid_dns {
            return Err(unroutable(format!(
                "{host:?} is not a DNS name of a Kubernetes service ('_' and empty labels cannot be)"
            )));
        }
        if host == "localhost" && !self.allow_loopback_targets {
            return Err(unroutable(format!("localhost {LOOPBACK}")));
        }
        let cluster_suffix = format!(".svc.{}", self.cluster_domain);
        Ok(match host.split('.').count() {
            // `svc`: a service in our namespace.
            1 => format!("{host}.{}{cluster_suffix}", self.namespace),
            // `svc.ns`: a service in another namespace.
            2 => format!("{host}{cluster_suffix}"),
            // `svc.ns.svc`: cluster-local, without the domain.
            3 if host.ends_with(".svc") => format!("{host}.{}", self.cluster_domain),
            // A full name: a service FQDN, or a host some ServiceEntry registers.
            _ => host,
        })
    }

    fn service_entry(
        &self,
        spec: &RouteSpec,
        id: &str,
        target: &Target,
        ip: IpAddr,
        host: &str,
    ) -> ServiceEntry {
        let (name, protocol) = match target.scheme() {
            Scheme::Http => ("http", "HTTP"),
            Scheme::Https => ("https", "HTTPS"),
        };
        let mut labels = BTreeMap::new();
        if self.ip_target_mtls {
            labels.insert("security.istio.io/tlsMode".to_owned(), "istio".to_owned());
        }
        ServiceEntry::new(
            self.version,
            self.metadata(spec, id, self.service_entry_name_of(id), None),
            ServiceEntrySpec {
                hosts: vec![host.to_owned()],
                location: Some("MESH_INTERNAL".to_owned()),
                resolution: Some("STATIC".to_owned()),
                ports: vec![ServicePort {
                    number: u32::from(target.port()),
                    protocol: protocol.to_owned(),
                    name: name.to_owned(),
                }],
                endpoints: vec![WorkloadEntry { address: ip.to_string(), labels }],
                export_to: self.export_to.clone(),
            },
        )
    }

    /// The HTTP routes of a route: requests for its path, whole segments only, go to `destination`.
    fn http_routes(&self, route: &Route, destination: Destination) -> Vec<HttpRoute> {
        let spec = route.spec();
        let authority =
            spec.host().map(|host| StringMatch::Regex(format!("(?i){}(:[0-9]+)?", regex_escape(host))));
        let headers = Some(Headers {
            response: Some(HeaderOperations {
                set: BTreeMap::from([(PROXY_ID_HEADER.to_owned(), revision(route))]),
            }),
        });
        let base = route.target().path();
        let name = Some(route_id(spec));
        let entry = |uri: StringMatch, rewrite: Option<HttpRewrite>| HttpRoute {
            name: name.clone(),
            matches: vec![HttpMatchRequest { uri: Some(uri), authority: authority.clone() }],
            route: vec![HttpRouteDestination { destination: destination.clone() }],
            rewrite,
            headers: headers.clone(),
        };
        let path = spec.path();
        let encoded = encode_path(path);
        if path == "/" {
            // The root of the path space: the catch-all (or, under host routing, the host's).
            let rewrite = (!base.is_empty())
                .then(|| HttpRewrite { uri: Some(format!("{base}/")), uri_regex_rewrite: None });
            return vec![entry(StringMatch::Prefix("/".to_owned()), rewrite)];
        }
        if needs_regex(&encoded) {
            // `@` and `%40`, and either case of hex digits, are one path to configurable-http-proxy.
            let pattern = format!("{}(/.*)?", path_regex(&encoded));
            let rewrite = (!base.is_empty()).then(|| HttpRewrite {
                uri: None,
                uri_regex_rewrite: Some(RegexRewrite {
                    pattern: "^(.*)$".to_owned(),
                    rewrite: format!("{base}\\1"),
                }),
            });
            return vec![entry(StringMatch::Regex(pattern), rewrite)];
        }
        let exact = StringMatch::Exact(encoded.clone());
        let prefix = StringMatch::Prefix(format!("{encoded}/"));
        if base.is_empty() {
            let mut both = entry(exact, None);
            both.matches.push(HttpMatchRequest { uri: Some(prefix), authority: authority.clone() });
            return vec![both];
        }
        // A rewrite replaces what a prefix matched, but the whole path of an exact match, so
        // each needs its own route.
        let rewrite = |uri: String| Some(HttpRewrite { uri: Some(uri), uri_regex_rewrite: None });
        vec![
            entry(exact, rewrite(format!("{base}{encoded}"))),
            entry(prefix, rewrite(format!("{base}{encoded}/"))),
        ]
    }
}

fn needs_regex(encoded: &str) -> bool {
    encoded.contains('%') || encoded.contains('@')
}

/// An RE2 pattern for an encoded path that also accepts `%40` for `@` and lower-case hex.
fn path_regex(encoded: &str) -> String {
    let mut pattern = String::new();
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                pattern.push('%');
                for hex in chars.by_ref().take(2) {
                    if hex.is_ascii_alphabetic() {
                        pattern.push_str(&format!(
                            "[{}{}]",
                            hex.to_ascii_uppercase(),
                            hex.to_ascii_lowercase()
                        ));
                    } else {
                        pattern.push(hex);
                    }
                }
            }
            '@' => pattern.push_str("(@|%40)"),
            c => pattern.push_str(&regex_escape(&c.to_string())),
        }
    }
    pattern
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use kube_routes::{INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
    use proxy_api::wire::route_from_body;

    use super::*;

    fn route(spec: &str, target: &str) -> Route {
        route_in(RoutingMode::Path, spec, target)
    }

    fn route_in(mode: RoutingMode, spec: &str, target: &str) -> Route {
        let spec = RouteSpec::new(spec, mode).unwrap();
        route_from_body(spec, format!(r#"{{"target": "{target}", "jupyterhub": true}}"#).as_bytes()).unwrap()
    }

    fn translation() -> Translation {
        Translation {
            namespace: "hub".into(),
            gateways: vec!["istio-system/jupyterhub-gateway".into()],
            hosts: vec!["hub.example.org".into()],
            ..Translation::default()
        }
    }

    fn destination_host(target: &str) -> String {
        let rendered = translation().render(&route("/user/a", target), 0).unwrap();
        rendered.virtual_service.spec.http[0].route[0].destination.host.clone()
    }

    fn unroutable(target: &str) -> String {
        match translation().render(&route("/user/a", target), 0) {
            Err(proxy_api::Error::InvalidTarget { reason, .. }) => reason,
            other => panic!("expected {target} to be refused, got {other:?}"),
        }
    }

    #[test]
    fn the_default_export_reaches_where_the_gateways_pods_run() {
        let export = |gateways: &[&str]| {
            default_export_to("hub", &gateways.iter().map(|g| g.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(export(&["istio-system/jupyterhub-gateway"]), ["istio-system"]);
        assert_eq!(export(&["gateways/public"]), ["gateways"]);
        // Beside the hub, or Istio's default ingress pods: both.
        assert_eq!(export(&["jupyterhub-gateway"]), [".", "istio-system"]);
        assert_eq!(export(&["hub/jupyterhub-gateway"]), [".", "istio-system"]);
        assert_eq!(export(&["a/x", "b/y", "a/z"]), ["a", "b"]);
        assert!(export(&[]).is_empty(), "mesh routes: every sidecar");
        assert_eq!(default_export_to("istio-system", &["gw".to_owned()]), ["."]);
    }

    #[test]
    fn both_objects_are_exported_as_configured() {
        let exported = Translation { export_to: vec!["istio-system".into()], ..translation() };
        let rendered = exported.render(&route("/user/a", "http://10.0.0.7:8888"), 0).unwrap();
        assert_eq!(rendered.virtual_service.spec.export_to, ["istio-system"]);
        assert_eq!(rendered.service_entry.unwrap().spec.export_to, ["istio-system"]);
        let yaml = serde_json::to_value(
            &exported.render(&route("/user/a", "http://a:1"), 0).unwrap().virtual_service,
        )
        .unwrap();
        assert_eq!(yaml["spec"]["exportTo"], serde_json::json!(["istio-system"]));
        let public = translation().render(&route("/user/a", "http://a:1"), 0).unwrap().virtual_service;
        assert!(serde_json::to_value(&public).unwrap()["spec"].get("exportTo").is_none());
    }

    #[test]
    fn service_names_become_cluster_fqdns() {
        assert_eq!(destination_host("http://jupyter-alice:8888"), "jupyter-alice.hub.svc.cluster.local");
        assert_eq!(destination_host("http://hub.other:8081"), "hub.other.svc.cluster.local");
        assert_eq!(destination_host("http://hub.other.svc:8081"), "hub.other.svc.cluster.local");
        assert_eq!(
            destination_host("http://hub.other.svc.cluster.local:8081"),
            "hub.other.svc.cluster.local"
        );
        assert_eq!(destination_host("http://Jupyter-Alice:8888"), "jupyter-alice.hub.svc.cluster.local");
        assert_eq!(destination_host("http://notebooks.example.org"), "notebooks.example.org");
    }

    #[test]
    fn ports_come_from_the_url_or_its_scheme() {
        let port = |target: &str| {
            let rendered = translation().render(&route("/user/a", target), 0).unwrap();
            rendered.virtual_service.spec.http[0].route[0].destination.port.clone().unwrap().number
        };
        assert_eq!(port("http://a:8888"), 8888);
        assert_eq!(port("http://a"), 80);
        assert_eq!(port("https://a"), 443);
    }

    #[test]
    fn ip_targets_get_a_service_entry_named_after_the_route() {
        let rendered = translation().render(&route("/user/a", "http://10.1.2.3:8888"), 0).unwrap();
        let entry = rendered.service_entry.expect("a ServiceEntry");
        let spec = RouteSpec::new("/user/a", RoutingMode::Path).unwrap();
        assert_eq!(entry.metadata.name.as_deref(), Some(translation().service_entry_name(&spec).as_str()));
        assert_eq!(entry.spec.location.as_deref(), Some("MESH_INTERNAL"));
        assert_eq!(entry.spec.resolution.as_deref(), Some("STATIC"));
        assert_eq!(entry.spec.endpoints[0].address, "10.1.2.3");
        assert_eq!(entry.spec.endpoints[0].labels["security.istio.io/tlsMode"], "istio");
        assert_eq!(entry.spec.ports[0].number, 8888);
        let host = &rendered.virtual_service.spec.http[0].route[0].destination.host;
        assert_eq!(&entry.spec.hosts[0], host);

        let plain = Translation { ip_target_mtls: false, ..translation() };
        let entry =
            plain.render(&route("/user/a", "http://[fd00::7]:8888"), 0).unwrap().service_entry.unwrap();
        assert_eq!(entry.spec.endpoints[0].address, "fd00::7");
        assert!(entry.spec.endpoints[0].labels.is_empty());
        assert!(translation().render(&route("/user/a", "http://a:1"), 0).unwrap().service_entry.is_none());
    }

    #[test]
    fn unroutable_targets_say_why() {
        assert!(
            unroutable("http://127.0.0.1:8888").contains("cannot reach")
                || unroutable("http://127.0.0.1:8888").contains("gateway")
        );
        assert!(unroutable("http://localhost:8888").contains("gateway"));
        assert!(unroutable("http://0.0.0.0:8888").contains("unspecified"));
        assert!(unroutable("http://[::1]:8888").contains("gateway"));
        // The way out for a JupyterHub on the same machine, and only where it helps.
        for loopback in ["http://127.0.0.1:8888", "http://localhost:8888", "http://[::1]:8888"] {
            assert!(unroutable(loopback).contains("--allow-loopback-targets"), "{loopback}");
        }
        assert!(!unroutable("http://0.0.0.0:8888").contains("--allow-loopback-targets"));
        assert!(unroutable("http://under_score:8888").contains("DNS name"));
        let local = Translation { allow_loopback_targets: true, ..translation() };
        let rendered = local.render(&route("/user/a", "http://127.0.0.1:8888"), 0).unwrap();
        assert_eq!(rendered.service_entry.unwrap().spec.endpoints[0].address, "127.0.0.1");
        assert!(local.render(&route("/user/a", "http://0.0.0.0:8888"), 0).is_err());
        assert!(unroutable("http://a..b:8888").contains("DNS name"));
        // What Kubernetes refuses as a pod's address, refused as the Gateway API backend does.
        assert!(unroutable("http://169.254.1.1:8888").contains("link-local"));
        assert!(unroutable("http://[fe80::1]:8888").contains("link-local"));
        assert!(unroutable("http://[::ffff:10.0.0.7]:8888").contains("send 10.0.0.7"));
    }

    #[test]
    fn matches_respect_segments() {
        let rendered = translation().render(&route("/user/alice", "http://a:1"), 0).unwrap();
        let http = &rendered.virtual_service.spec.http;
        assert_eq!(http.len(), 1);
        let uris: Vec<_> = http[0].matches.iter().map(|m| m.uri.clone().unwrap()).collect();
        assert_eq!(
            uris,
            [StringMatch::Exact("/user/alice".into()), StringMatch::Prefix("/user/alice/".into())]
        );
        assert!(http[0].rewrite.is_none());
    }

    #[test]
    fn the_root_route_is_the_catch_all() {
        let rendered = translation().render(&route("/", "http://hub:8081"), 0).unwrap();
        let http = &rendered.virtual_service.spec.http;
        assert_eq!(http[0].matches[0].uri, Some(StringMatch::Prefix("/".into())));
        assert!(http[0].matches[0].authority.is_none());
    }

    #[test]
    fn target_paths_rewrite_the_matched_prefix() {
        let rendered = translation().render(&route("/user/alice", "http://a:1/base/"), 0).unwrap();
        let http = &rendered.virtual_service.spec.http;
        assert_eq!(http.len(), 2);
        assert_eq!(http[0].matches[0].uri, Some(StringMatch::Exact("/user/alice".into())));
        assert_eq!(http[0].rewrite.as_ref().unwrap().uri.as_deref(), Some("/base/user/alice"));
        assert_eq!(http[1].matches[0].uri, Some(StringMatch::Prefix("/user/alice/".into())));
        assert_eq!(http[1].rewrite.as_ref().unwrap().uri.as_deref(), Some("/base/user/alice/"));

        let root = translation().render(&route("/", "http://hub:8081/hub"), 0).unwrap();
        assert_eq!(root.virtual_service.spec.http[0].rewrite.as_ref().unwrap().uri.as_deref(), Some("/hub/"));
    }

    #[test]
    fn encoded_paths_match_as_sent_with_at_and_hex_case_variants() {
        assert_eq!(encode_path("/has space/foo"), "/has%20space/foo");
        assert_eq!(encode_path("/user/秀樹"), "/user/%E7%A7%80%E6%A8%B9");
        assert_eq!(encode_path("/user/~x/a@b"), "/user/~x/a@b");
        let rendered = translation().render(&route("/user/a@b c", "http://a:1/base"), 0).unwrap();
        let http = &rendered.virtual_service.spec.http;
        assert_eq!(http.len(), 1);
        assert_eq!(http[0].matches[0].uri, Some(StringMatch::Regex("/user/a(@|%40)b%20c(/.*)?".into())));
        let unicode = translation().render(&route("/user/ü", "http://a:1"), 0).unwrap();
        assert_eq!(
            unicode.virtual_service.spec.http[0].matches[0].uri,
            Some(StringMatch::Regex("/user/%[Cc]3%[Bb][Cc](/.*)?".into()))
        );
        let rewrite = http[0].rewrite.as_ref().unwrap().uri_regex_rewrite.as_ref().unwrap();
        assert_eq!((rewrite.pattern.as_str(), rewrite.rewrite.as_str()), ("^(.*)$", "/base\\1"));
    }

    #[test]
    fn host_routes_match_the_authority() {
        let mode = RoutingMode::Host;
        let rendered = Translation { routing_mode: mode, ..translation() }
            .render(&route_in(mode, "/alice.hub.example.org/user/alice", "http://a:1"), 0)
            .unwrap();
        let first = &rendered.virtual_service.spec.http[0].matches[0];
        assert_eq!(
            first.authority,
            Some(StringMatch::Regex("(?i)alice\\.hub\\.example\\.org(:[0-9]+)?".into()))
        );
        assert_eq!(first.uri, Some(StringMatch::Exact("/user/alice".into())));
        assert_eq!(rendered.virtual_service.spec.hosts, ["hub.example.org"]);
    }

    #[test]
    fn objects_carry_labels_and_the_route_exactly() {
        let route = route("/has space", "http://a:1");
        let rendered = translation().render(&route, 3).unwrap();
        let meta = &rendered.virtual_service.metadata;
        let spec = route.spec();
        assert_eq!(meta.name.as_deref(), Some(format!("jupyter-98-{}-3", route_id(spec)).as_str()));
        assert_eq!(meta.namespace.as_deref(), Some("hub"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[INSTANCE_LABEL], "jupyter");
        assert_eq!(labels[ROUTE_LABEL], route_id(spec));
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations[SPEC_ANNOTATION], "/has space");
        assert_eq!(annotations[ROUTE_ANNOTATION], route.wire_json());
        assert_eq!(rendered.virtual_service.api_version, "networking.istio.io/v1");
        assert_eq!(rendered.virtual_service.spec.gateways, ["istio-system/jupyterhub-gateway"]);
    }

    #[test]
    fn the_proxy_id_changes_with_the_target_only() {
        let id = |route: &Route| {
            let rendered = translation().render(route, 0).unwrap();
            rendered.virtual_service.spec.http[0].headers.clone().unwrap().response.unwrap().set
                [PROXY_ID_HEADER]
                .clone()
        };
        assert_eq!(id(&route("/user/a", "http://a:1")), id(&route("/user/a", "http://a:1")));
        assert_ne!(id(&route("/user/a", "http://a:1")), id(&route("/user/a", "http://a:2")));
    }

    #[test]
    fn oversized_data_is_refused_before_the_api_server_sees_it() {
        let spec = RouteSpec::new("/user/a", RoutingMode::Path).unwrap();
        let body =
            format!(r#"{{"target": "http://a:1", "blob": "{}"}}"#, "x".repeat(MAX_ROUTE_ANNOTATION_BYTES));
        let route = route_from_body(spec, body.as_bytes()).unwrap();
        assert!(matches!(translation().render(&route, 0), Err(proxy_api::Error::InvalidBody { .. })));
    }
}
