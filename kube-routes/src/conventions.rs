//! How our objects say what they are, whichever routing API wrote them: the labels that select
//! a proxy instance's objects and group a route's, the annotations that keep the route exactly
//! as JupyterHub sent it, and the spelling of paths in matches.
//!
//! ```
//! use kube_routes::{ROUTE_LABEL, instance_labels, instance_selector, route_id};
//! use proxy_api::{RouteSpec, RoutingMode};
//!
//! let spec = RouteSpec::new("/user/alice", RoutingMode::Path).unwrap();
//! let id = route_id(&spec);
//! assert_eq!(id.len(), 16); // stable: every replica labels the route's objects alike
//! assert_eq!(ROUTE_LABEL, "jupyterhub-istio-proxy/route");
//! assert_eq!(instance_labels("jupyter")["jupyterhub-istio-proxy/instance"], "jupyter");
//! assert_eq!(
//!     instance_selector("jupyter"),
//!     "app.kubernetes.io/managed-by=jupyterhub-istio-proxy,jupyterhub-istio-proxy/instance=jupyter"
//! );
//! ```

use std::collections::BTreeMap;

use proxy_api::{Route, RouteSpec};
use sha2::{Digest, Sha256};

/// The field manager of our server-side applies.
pub const FIELD_MANAGER: &str = "jupyterhub-istio-proxy";
/// `app.kubernetes.io/managed-by`: who wrote the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "jupyterhub-istio-proxy";
/// The proxy instance (its `VIRTUAL_SERVICE_PREFIX`), so two hubs in one namespace never
/// touch each other's objects.
pub const INSTANCE_LABEL: &str = "jupyterhub-istio-proxy/instance";
/// The route an object belongs to: [`route_id`] of its spec.
pub const ROUTE_LABEL: &str = "jupyterhub-istio-proxy/route";
/// The route spec, decoded, as JupyterHub lists it.
pub const SPEC_ANNOTATION: &str = "jupyterhub-istio-proxy/route-spec";
/// The route in configurable-http-proxy's wire format: `{"target": ..., <data>...}`.
pub const ROUTE_ANNOTATION: &str = "jupyterhub-istio-proxy/route";
/// The response header whose value changes whenever a route changes; warm-up waits for it.
pub const PROXY_ID_HEADER: &str = "jupyter-proxy-id";
/// Kubernetes allows 256 KiB of annotations per object; leave room for others' annotations.
pub const MAX_ROUTE_ANNOTATION_BYTES: usize = 200 * 1024;

/// A short, stable id of a spec: 16 hex digits of its SHA-256.
pub fn route_id(spec: &RouteSpec) -> String {
    let digest = Sha256::digest(spec.as_str().as_bytes());
    hex(&digest[..8])
}

/// The labels every object of the proxy instance `prefix` carries, whichever routing API it
/// writes.
pub fn instance_labels(prefix: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (INSTANCE_LABEL.to_owned(), prefix.to_owned()),
    ])
}

/// The label selector for the objects of the proxy instance `prefix`.
pub fn instance_selector(prefix: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={prefix}")
}

/// The value of [`PROXY_ID_HEADER`]: changes whenever the route's spec or target changes,
/// and is the same on every replica.
pub fn revision(route: &Route) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.spec().as_str().as_bytes());
    hasher.update([0]);
    hasher.update(route.target().as_str().as_bytes());
    hex(&hasher.finalize()[..8])
}

/// `bytes` as lower-case hex digits. Route ids are made several times per write; a `format!`
/// per byte showed in the write path's profile.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// A decoded path as browsers and JupyterHub send it: percent-encoded except unreserved
/// characters, `/`, `@` and `~` (JupyterHub's `quote(path, safe='@/~')`), hex in upper case.
pub fn encode_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/' | b'@') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
    }
}
