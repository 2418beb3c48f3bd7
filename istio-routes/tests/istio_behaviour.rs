//! What Istio does with VirtualServices, one rule per test, checked on Istio's own pilot
//! (`testkit::oracle`): each rule is one the design relies on (`docs/istio.md`, "How Istio
//! routes these objects"), so an Istio upgrade that changes one fails here, by name.
//!
//! The objects are written by hand, not by our translation: these tests are about Istio.

use serde_json::{Value, json};
use testkit::oracle::{Answer, Outcome, Request, Scenario};

const GATEWAY: &str = "istio-system/jupyterhub-gateway";

/// A VirtualService `hub/name` on the gateway for `*`, created at second `created` of a day.
fn virtual_service(name: &str, created: u32, http: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": name,
            "namespace": "hub",
            "creationTimestamp": format!("2026-01-01T00:00:{created:02}Z"),
        },
        "spec": {"hosts": ["*"], "gateways": [GATEWAY], "http": http},
    })
}

/// An http route with the given matches, to `host` port 8888.
fn http(matches: Value, host: &str) -> Value {
    json!({"match": matches, "route": [{"destination": {"host": host, "port": {"number": 8888}}}]})
}

fn prefix(prefix: &str) -> Value {
    json!([{"uri": {"prefix": prefix}}])
}

/// Routes `requests` (Host, path) through the gateway with `objects`.
fn route(objects: Vec<Value>, requests: &[(&str, &str)]) -> Outcome {
    let objects = std::iter::once(testkit::oracle::gateway(GATEWAY, &["*"])).chain(objects).collect();
    let requests = requests.iter().map(|(host, path)| Request::new(host, path)).collect();
    let outcome = testkit::oracle::route_one(&Scenario { objects, requests });
    assert_eq!(outcome.rejected, Vec::<String>::new(), "Istio accepted every object");
    outcome
}

/// The destination host each request went to (`-` for none), from its cluster's name.
fn hosts(outcome: &Outcome) -> Vec<String> {
    outcome.answers.iter().map(|a| a.as_ref().map_or("-".into(), host)).collect()
}

fn host(answer: &Answer) -> String {
    answer
        .cluster
        .rsplit("||")
        .next()
        .unwrap_or_default()
        .trim_end_matches(".hub.svc.cluster.local")
        .to_owned()
}

#[test]
fn overlapping_routes_are_tried_oldest_virtual_service_first() {
    let objects = vec![
        virtual_service("z-older", 1, json!([http(prefix("/jhub/"), "hub")])),
        virtual_service("a-newer", 2, json!([http(prefix("/jhub/user/alice/"), "alice")])),
    ];
    let outcome = route(objects, &[("hub.org", "/jhub/user/alice/lab")]);
    assert_eq!(hosts(&outcome), ["hub"], "the older, shorter prefix wins: creation time, not length");
}

#[test]
fn virtual_services_created_in_the_same_second_are_tried_by_name() {
    let objects = vec![
        virtual_service("b", 1, json!([http(prefix("/a/"), "second")])),
        virtual_service("a", 1, json!([http(prefix("/a/"), "first")])),
    ];
    assert_eq!(hosts(&route(objects, &[("hub.org", "/a/x")])), ["first"]);
}

#[test]
fn a_catch_all_is_tried_last_whatever_its_age() {
    let objects = vec![
        virtual_service("root", 1, json!([http(prefix("/"), "hub")])),
        virtual_service("alice", 2, json!([http(prefix("/user/alice/"), "alice")])),
    ];
    let outcome = route(objects, &[("hub.org", "/user/alice/lab"), ("hub.org", "/other")]);
    assert_eq!(hosts(&outcome), ["alice", "hub"]);
}

#[test]
fn only_prefix_slash_without_conditions_is_a_catch_all() {
    // `/` with an authority condition keeps its place: it shadows the newer user route.
    let with_authority = json!([{"uri": {"prefix": "/"}, "authority": {"exact": "hub.org"}}]);
    let objects = vec![
        virtual_service("root", 1, json!([http(with_authority, "hub")])),
        virtual_service("alice", 2, json!([http(prefix("/user/alice/"), "alice")])),
    ];
    assert_eq!(hosts(&route(objects, &[("hub.org", "/user/alice/lab")])), ["hub"]);
}

#[test]
fn routes_after_a_catch_all_in_one_virtual_service_are_dropped() {
    let objects =
        vec![virtual_service("hub", 1, json!([http(prefix("/"), "hub"), http(prefix("/after/"), "after")]))];
    let outcome = route(objects, &[("hub.org", "/after/x")]);
    assert_eq!(hosts(&outcome), ["hub"]);
    assert_eq!(outcome.answers[0].as_ref().unwrap().route_index, 0, "one route left");
}

#[test]
fn each_match_is_its_own_route_in_order() {
    let matches = json!([{"uri": {"exact": "/user/alice"}}, {"uri": {"prefix": "/user/alice/"}}]);
    let objects = vec![virtual_service("alice", 1, json!([http(matches, "alice")]))];
    let outcome = route(
        objects,
        &[("hub.org", "/user/alice"), ("hub.org", "/user/alice/x"), ("hub.org", "/user/alice2")],
    );
    assert_eq!(hosts(&outcome), ["alice", "alice", "-"], "exact, prefix with its slash, nothing beside");
    let indexes: Vec<_> = outcome.answers.iter().flatten().map(|a| a.route_index).collect();
    assert_eq!(indexes, [0, 1]);
}

#[test]
fn a_prefix_is_a_raw_string_prefix_and_case_sensitive() {
    let objects = vec![virtual_service("alice", 1, json!([http(prefix("/user/alice"), "alice")]))];
    let outcome = route(
        objects,
        &[("hub.org", "/user/alicex"), ("hub.org", "/user/Alice"), ("hub.org", "/user/alice?x")],
    );
    assert_eq!(hosts(&outcome), ["alice", "-", "alice"]);
}

#[test]
fn authority_matches_see_the_host_as_sent_beside_host_less_routes() {
    let exact = json!([{"uri": {"prefix": "/user/alice/"}, "authority": {"exact": "alice.hub.org"}}]);
    let regex =
        json!([{"uri": {"prefix": "/user/bob/"}, "authority": {"regex": "(?i)bob\\.hub\\.org(:[0-9]+)?"}}]);
    let objects = vec![
        virtual_service("root", 1, json!([http(prefix("/"), "hub")])),
        virtual_service("alice", 2, json!([http(exact, "alice")])),
        virtual_service("bob", 3, json!([http(regex, "bob")])),
    ];
    let outcome = route(
        objects,
        &[
            ("alice.hub.org", "/user/alice/lab"),
            ("alice.hub.org:80", "/user/alice/lab"),
            ("Alice.hub.org", "/user/alice/lab"),
            ("BOB.hub.org:80", "/user/bob/lab"),
            ("other.hub.org", "/user/bob/lab"),
        ],
    );
    // The virtual host is chosen without the port, but the authority match sees it, and case.
    assert_eq!(hosts(&outcome), ["alice", "hub", "hub", "bob", "hub"]);
}

#[test]
fn regexes_match_the_whole_encoded_path() {
    let matches = json!([{"uri": {"regex": "/has%20space/(%[Cc]3%[Bb][Cc])(/.*)?"}}]);
    let objects = vec![virtual_service("encoded", 1, json!([http(matches, "encoded")]))];
    let outcome = route(
        objects,
        &[
            ("hub.org", "/has%20space/%C3%BC/lab"),
            ("hub.org", "/has%20space/%c3%bc"),
            ("hub.org", "/has space/ü"),
            ("hub.org", "/has%20space/%C3%BC2"),
            ("hub.org", "/x/has%20space/%C3%BC"),
        ],
    );
    assert_eq!(hosts(&outcome), ["encoded", "encoded", "-", "-", "-"], "as sent, anchored at both ends");
}

#[test]
fn a_pod_ip_is_reached_through_a_service_entry_host() {
    let entry = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "alice", "namespace": "hub"},
        "spec": {
            "hosts": ["alice.hub.jupyterhub-istio-proxy.internal"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": 8888, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": "10.0.0.7"}],
        },
    });
    let objects = vec![
        virtual_service(
            "alice",
            1,
            json!([http(prefix("/user/alice/"), "alice.hub.jupyterhub-istio-proxy.internal")]),
        ),
        virtual_service("bob", 1, json!([http(prefix("/user/bob/"), "jupyter-bob")])),
        entry,
    ];
    let outcome = route(objects, &[("hub.org", "/user/alice/"), ("hub.org", "/user/bob/")]);
    let [alice, bob] = [0, 1].map(|i| outcome.answers[i].clone().unwrap());
    assert_eq!(alice.cluster, "outbound|8888||alice.hub.jupyterhub-istio-proxy.internal");
    assert!(alice.cluster_known, "the ServiceEntry gives the gateway a cluster");
    // A short host gets the cluster domain, but with no Service behind it there is no cluster.
    assert_eq!(bob.cluster, "outbound|8888||jupyter-bob.hub.svc.cluster.local");
    assert!(!bob.cluster_known, "a route to a host nobody registered is a 503");
}

#[test]
fn an_ip_as_a_destination_host_is_refused() {
    let objects = vec![
        testkit::oracle::gateway(GATEWAY, &["*"]),
        virtual_service("ip", 1, json!([http(prefix("/user/alice/"), "10.0.0.7")])),
    ];
    let requests = vec![Request::new("hub.org", "/user/alice/")];
    let outcome = testkit::oracle::route_one(&Scenario { objects, requests });
    assert_eq!(outcome.rejected.len(), 1, "{:?}", outcome.rejected);
    assert!(outcome.answers[0].is_none());
}

/// `virtual_service` exported to `namespaces`.
fn exported(mut object: Value, namespaces: &[&str]) -> Value {
    object["spec"]["exportTo"] = json!(namespaces);
    object
}

#[test]
fn a_virtual_service_not_exported_to_the_gateways_namespace_is_not_routed() {
    let objects = vec![
        exported(virtual_service("private", 1, json!([http(prefix("/a/"), "private")])), &["."]),
        exported(virtual_service("exported", 1, json!([http(prefix("/b/"), "exported")])), &["istio-system"]),
    ];
    let outcome = route(objects, &[("hub.org", "/a/x"), ("hub.org", "/b/x")]);
    assert_eq!(hosts(&outcome), ["-", "exported"], "the gateway's pods run in istio-system");
}

#[test]
fn virtual_services_exported_to_the_gateways_namespace_are_tried_before_public_ones() {
    // The older public VirtualService would win by creation time; the exported one comes first.
    let objects = vec![
        virtual_service("public", 1, json!([http(prefix("/a/"), "public")])),
        exported(virtual_service("exported", 2, json!([http(prefix("/a/"), "exported")])), &["istio-system"]),
    ];
    assert_eq!(hosts(&route(objects, &[("hub.org", "/a/x")])), ["exported"]);
}

#[test]
fn virtual_services_of_one_second_and_name_are_tried_by_namespace() {
    let mut other = virtual_service("same", 1, json!([http(prefix("/a/"), "first.alpha.svc.cluster.local")]));
    other["metadata"]["namespace"] = json!("alpha");
    other["spec"]["gateways"] = json!([GATEWAY]);
    let objects = vec![virtual_service("same", 1, json!([http(prefix("/a/"), "second")])), other];
    let outcome = route(objects, &[("hub.org", "/a/x")]);
    assert_eq!(outcome.answers[0].as_ref().unwrap().virtual_service, "alpha/same");
}

#[test]
fn a_regex_matching_everything_is_a_catch_all_too() {
    let everything = json!([{"uri": {"regex": ".*"}}]);
    let objects = vec![
        virtual_service("root", 1, json!([http(everything, "hub")])),
        virtual_service("alice", 2, json!([http(prefix("/user/alice/"), "alice")])),
    ];
    assert_eq!(hosts(&route(objects, &[("hub.org", "/user/alice/lab")])), ["alice"]);
}
