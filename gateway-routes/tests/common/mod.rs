//! What the Gateway API routing tests share: the route specs and targets they draw, and the
//! probes around a table's routes.

use std::collections::BTreeSet;

use kube_routes::encode_path;
use proptest::prelude::*;
use proxy_api::RouteSpec;
use testkit::chp::{lower_hex, paths_around};

/// Segments chosen to overlap: hubs under a base URL, users, named servers, encoded names.
pub(crate) const SEGMENTS: &[&str] = &["jhub", "user", "alice", "a", "foo", "a b", "ü", "x@y", "~t"];
/// The hosts of host-routed specs.
pub(crate) const HOSTS: &[&str] = &["a.hub.org", "b.hub.org"];

/// A path-routed spec.
pub(crate) fn path_spec() -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(prop::sample::select(SEGMENTS), 0..=4)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

/// A host-routed spec: the root `/`, or a host and a path.
pub(crate) fn host_spec() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        1 => Just("/".to_owned()),
        6 => (prop::sample::select(HOSTS), prop::collection::vec(prop::sample::select(SEGMENTS), 0..=3))
            .prop_map(|(host, segments)| if segments.is_empty() { format!("/{host}") } else { format!("/{host}/{}", segments.join("/")) }),
    ]
}

/// Targets of every kind the translation handles: pod IPs, services, target paths.
pub(crate) fn target(n: usize) -> &'static str {
    [
        "http://10.0.0.7:8888",
        "http://jupyter-x:8888",
        "http://hub.other:8081/base",
        "http://10.0.0.9:8000/srv/x",
    ][n]
}

/// Requests around every spec: (Host header, path as sent). The routes' paths as browsers
/// send them (encoded, `@` raw or as `%40`, hex in either case), below them, beside them
/// (`/user/alice2`) and above them, on the spec's host, another host, and with a port.
pub(crate) fn probes<'a>(specs: impl IntoIterator<Item = &'a RouteSpec>) -> BTreeSet<(String, String)> {
    let mut probes = BTreeSet::from([
        ("c.hub.org".to_owned(), "/".to_owned()),
        ("a.hub.org".to_owned(), "/other".to_owned()),
    ]);
    for spec in specs {
        let host = spec.host().unwrap_or("hub.org").to_owned();
        for probe in paths_around(&encode_path(spec.path())) {
            probes.insert((host.clone(), probe.replace('@', "%40")));
            probes.insert((host.clone(), lower_hex(&probe)));
            probes.insert(("c.hub.org".to_owned(), probe.clone()));
            probes.insert((format!("{host}:8443"), probe));
        }
    }
    probes
}
