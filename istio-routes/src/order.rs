//! The order Istio gives our VirtualServices, and what keeps it the order CHP routes by.
//!
//! configurable-http-proxy sends a request to the route with the longest matching prefix in
//! whole segments. Istio appends every VirtualService's routes to one list per host, ordered
//! by creation time (1-second resolution), then name, moves only catch-all routes (`prefix: /`)
//! to the end, and Envoy takes the first match (`docs/istio.md`, "How Istio routes these objects").
//!
//! With one VirtualService per route, matches that respect segments overlap only between a
//! route and its ancestors (`/user/alice` and `/user/alice/foo`). So the invariant is: **every
//! route's VirtualService sorts before those of its ancestors.** Names begin with `99 - depth`,
//! so a deeper route wins a tie of creation times; and when a new route sorts after an
//! ancestor, the ancestor is created again, newer, under its next generation. The root route
//! is exempt: Istio sorts the catch-all last by itself.

use std::cmp::Ordering;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proxy_api::RouteSpec;

use crate::resources::VirtualService;

/// The number of path segments of a spec, not counting a host: `/` is 0, `/user/alice` is 2.
pub fn depth(spec: &RouteSpec) -> usize {
    match spec.path() {
        "/" => 0,
        path => path.matches('/').count(),
    }
}

/// Whether the spec is the root route, whose `prefix: /` match Istio sorts last by itself.
pub fn is_catch_all(spec: &RouteSpec) -> bool {
    spec.is_root()
}

/// The routes that would also match a request for `spec` in Istio: its proper prefixes in
/// whole segments, on the same host, deepest first. The catch-all root is left out.
pub fn ancestors(spec: &RouteSpec) -> Vec<RouteSpec> {
    let key = spec.as_str();
    // Under host routing, the host-only route (`/host`, path `/`) is the last ancestor.
    let host_end = spec.host().map_or(0, |host| 1 + host.len());
    let mut ancestors = Vec::new();
    let mut end = key.len();
    while let Some(slash) = key[..end].rfind('/') {
        if slash < host_end || slash == 0 {
            break;
        }
        end = slash;
        // A prefix of a valid spec, cut at a '/', is a valid spec.
        ancestors.push(spec_prefix(spec, end));
    }
    ancestors
}

fn spec_prefix(spec: &RouteSpec, end: usize) -> RouteSpec {
    let mode =
        if spec.host().is_some() { proxy_api::RoutingMode::Host } else { proxy_api::RoutingMode::Path };
    RouteSpec::new(&spec.as_str()[..end], mode).expect("a segment prefix of a spec is a spec")
}

/// Where Istio places a VirtualService among the others on its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `metadata.creationTimestamp`; `None` before the API server has assigned one.
    pub created: Option<Time>,
    /// `metadata.name`.
    pub name: String,
}

impl Placement {
    /// The placement of an object.
    pub fn of(object: &VirtualService) -> Placement {
        Placement {
            created: object.metadata.creation_timestamp.clone(),
            name: object.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl Ord for Placement {
    fn cmp(&self, other: &Self) -> Ordering {
        // An object not yet created sorts after every created one.
        let created = match (&self.created, &other.created) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        created.then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for Placement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use proxy_api::RoutingMode;

    use super::*;

    fn spec(s: &str, mode: RoutingMode) -> RouteSpec {
        RouteSpec::new(s, mode).unwrap()
    }

    fn strings(specs: Vec<RouteSpec>) -> Vec<String> {
        specs.into_iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn depth_counts_path_segments() {
        assert_eq!(depth(&spec("/", RoutingMode::Path)), 0);
        assert_eq!(depth(&spec("/user/alice", RoutingMode::Path)), 2);
        assert_eq!(depth(&spec("/h.org", RoutingMode::Host)), 0);
        assert_eq!(depth(&spec("/h.org/user/alice", RoutingMode::Host)), 2);
    }

    #[test]
    fn ancestors_are_segment_prefixes_deepest_first() {
        let path = ancestors(&spec("/jhub/user/alice/foo", RoutingMode::Path));
        assert_eq!(strings(path), ["/jhub/user/alice", "/jhub/user", "/jhub"]);
        assert!(ancestors(&spec("/jhub", RoutingMode::Path)).is_empty());
        assert!(ancestors(&spec("/", RoutingMode::Path)).is_empty());
        let host = ancestors(&spec("/h.org/user/alice", RoutingMode::Host));
        assert_eq!(strings(host), ["/h.org/user", "/h.org"]);
        assert!(ancestors(&spec("/h.org", RoutingMode::Host)).is_empty());
    }

    #[test]
    fn placement_orders_by_creation_then_name() {
        use k8s_openapi::jiff::Timestamp;
        let at = |secs: i64, name: &str| Placement {
            created: Some(Time(Timestamp::from_second(secs).unwrap())),
            name: name.into(),
        };
        assert!(at(1, "z") < at(2, "a"));
        assert!(at(1, "jupyter-97-x") < at(1, "jupyter-98-y"));
        assert!(at(5, "a") < Placement { created: None, name: "a".into() });
    }
}
