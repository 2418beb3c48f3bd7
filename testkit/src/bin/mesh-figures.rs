//! Prints what a hub's routes cost the mesh, measured on Istio's pilot (`testkit::oracle`):
//! ours with the default `exportTo`, ours exported everywhere (`ISTIO_EXPORT_TO=*`), and the Go
//! proxy's objects for the same routes. `bench/mesh.sh` runs it; usage:
//! `mesh-figures [ROUTES...]` (default 1000 10000).

use istio_routes::Translation;
use testkit::mesh::{Written, go_proxy, hub_routes, ours, translation};
use testkit::oracle::{MeshScenario, ProxyFigures, gateway, measure};

fn main() {
    let sizes: Vec<usize> = match std::env::args().skip(1).map(|a| a.parse()).collect::<Result<Vec<_>, _>>() {
        Ok(sizes) if !sizes.is_empty() => sizes,
        Ok(_) => vec![1_000, 10_000],
        Err(e) => panic!("usage: mesh-figures [ROUTES...]: {e}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let public = Translation { export_to: Vec::new(), ..translation() };
    let mut rows: Vec<(String, Written)> = Vec::new();
    for &routes in &sizes {
        // `routes` user routes, beside the hub's.
        let (root, jhub) = (hub_routes("/", routes), hub_routes("/jhub/", routes));
        let (ours_root, ours_jhub, ours_public) = runtime.block_on(async {
            (ours(&translation(), &root).await, ours(&translation(), &jhub).await, ours(&public, &root).await)
        });
        rows.push((format!("{routes} | ours, hub at /"), ours_root));
        rows.push((format!("{routes} | ours, hub at /jhub/"), ours_jhub));
        rows.push((format!("{routes} | ours, exportTo *"), ours_public));
        rows.push((format!("{routes} | Go proxy, hub at /"), go_proxy(&root)));
    }
    let scenario = |objects: Vec<serde_json::Value>, writes: Vec<serde_json::Value>| MeshScenario {
        objects,
        gateway_namespace: "istio-system".into(),
        sidecars: vec!["other".into(), testkit::mesh::NAMESPACE.into()],
        writes,
    };
    let mut scenarios = vec![scenario(vec![gateway(testkit::mesh::GATEWAY, &["*"])], Vec::new())];
    scenarios.extend(rows.iter().map(|(_, w)| scenario(w.objects.clone(), w.writes.clone())));
    let started = std::time::Instant::now();
    let outcomes = measure(&scenarios);
    eprintln!("the oracle took {:.1} s", started.elapsed().as_secs_f64());
    let empty = &outcomes[0];
    println!(
        "| user routes | objects | gateway: routes | gateway: clusters | sidecar elsewhere: clusters | sidecar elsewhere: endpoints | sidecar in the hub's namespace: clusters / endpoints | objects written by one server start | pushes it causes: gateway / sidecar elsewhere |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let less = |a: &ProxyFigures, b: &ProxyFigures| {
        (a.routes - b.routes, a.clusters - b.clusters, a.endpoints - b.endpoints)
    };
    for ((label, written), outcome) in rows.iter().zip(&outcomes[1..]) {
        assert!(outcome.rejected.is_empty(), "{label}: Istio refused {:?}", outcome.rejected);
        let (routes, clusters, _) = less(&outcome.gateway, &empty.gateway);
        let (_, other_clusters, other_endpoints) = less(&outcome.sidecars[0], &empty.sidecars[0]);
        let (_, hub_clusters, hub_endpoints) = less(&outcome.sidecars[1], &empty.sidecars[1]);
        println!(
            "| {label} | {routes} | {clusters} | {other_clusters} | {other_endpoints} | {hub_clusters} / {hub_endpoints} | {} | {} / {} |",
            written.writes.len(),
            outcome.gateway.pushes,
            outcome.sidecars[0].pushes,
        );
    }
    println!(
        "\n(figures are what the objects add to a pod with no objects of ours: {} routes, {} clusters on the gateway; {} clusters on a sidecar)",
        empty.gateway.routes, empty.gateway.clusters, empty.sidecars[0].clusters
    );
}
