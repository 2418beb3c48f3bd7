//! Several proxy processes on one Kubernetes API server, testkit's fake and the real one,
//! taking overlapping routes at once from concurrent clients: one object per route, nothing
//! left behind, and Istio's gateway (its pilot, `testkit::oracle`, given the objects read back
//! from the API server) routes every probe as configurable-http-proxy would.

use std::path::PathBuf;
use std::sync::Arc;

use istio_routes::Translation;
use istio_routes::resources::{IstioVersion, ServiceEntry, VirtualService};
use kube::Api;
use kube_routes::MANAGED_BY;
use testkit::apiserver::ApiServer;
use testkit::chp::ChpTable;
use testkit::client::ApiClient;
use testkit::fake_kube::FakeKube;
use testkit::oracle::{Request, Scenario};
use testkit::process::ProxyProcess;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "replicas-token";
const GATEWAY: &str = "istio-system/jupyterhub-gateway";

/// The API server the replicas share.
enum Cluster {
    Fake { fake: FakeKube, kubeconfig: PathBuf },
    Real { server: &'static ApiServer, namespace: String },
}

impl Cluster {
    async fn fake() -> Cluster {
        let fake = FakeKube::start().await;
        fake.set_clock(1_700_000_000);
        let kubeconfig = std::env::temp_dir().join(format!("jhub-proxy-replicas-{}", std::process::id()));
        fake.write_kubeconfig(&kubeconfig, "hub");
        Cluster::Fake { fake, kubeconfig }
    }

    async fn real() -> Cluster {
        let server = ApiServer::shared().await;
        Cluster::Real { server, namespace: server.new_namespace("replicas").await }
    }

    async fn replica(&self) -> ProxyProcess {
        let (kubeconfig, namespace) = match self {
            Cluster::Fake { kubeconfig, .. } => (kubeconfig.as_path(), "hub"),
            Cluster::Real { server, namespace } => (server.kubeconfig_path(), namespace.as_str()),
        };
        ProxyProcess::start_kubernetes(BIN, kubeconfig, namespace, TOKEN, &["--istio-gateway", GATEWAY]).await
    }

    /// Lets a second pass on the fake's clock; the real server's is the machine's.
    fn tick(&self) {
        if let Cluster::Fake { fake, .. } = self {
            fake.advance_clock(1);
        }
    }

    async fn virtual_services(&self) -> Vec<Arc<VirtualService>> {
        match self {
            Cluster::Fake { fake, .. } => fake
                .objects("virtualservices")
                .into_iter()
                .map(|value| Arc::new(serde_json::from_value(value).unwrap()))
                .collect(),
            Cluster::Real { server, namespace } => {
                let api: Api<VirtualService> =
                    Api::namespaced_with(server.client(), namespace, &IstioVersion::V1);
                api.list(&Default::default()).await.unwrap().items.into_iter().map(Arc::new).collect()
            }
        }
    }

    async fn service_entries(&self) -> Vec<serde_json::Value> {
        match self {
            Cluster::Fake { fake, .. } => fake.objects("serviceentries"),
            Cluster::Real { server, namespace } => {
                let api: Api<ServiceEntry> =
                    Api::namespaced_with(server.client(), namespace, &IstioVersion::V1);
                let items = api.list(&Default::default()).await.unwrap().items;
                items.iter().map(|o| serde_json::to_value(o).unwrap()).collect()
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Cluster::Fake { kubeconfig, .. } = self {
            let _ = std::fs::remove_file(kubeconfig);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_writing_overlapping_routes_at_once() {
    three_replicas(Cluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_the_real_api_server() {
    three_replicas(Cluster::real().await).await;
}

async fn three_replicas(cluster: Cluster) {
    let replicas = [cluster.replica().await, cluster.replica().await, cluster.replica().await];
    let clients: Vec<ApiClient> = replicas.iter().map(|r| ApiClient::new(r.addr(), Some(TOKEN))).collect();

    // A hub under a base URL, users, named servers, a service; every route written twice,
    // through different replicas, with the second target winning or the first: either is a
    // valid state, a mix is not.
    let specs =
        ["/jhub", "/jhub/user/alice", "/jhub/user/alice/foo", "/jhub/user/bob", "/jhub/services/x", "/"];
    for round in 0..3u8 {
        let posts =
            specs.iter().enumerate().flat_map(|(i, spec)| (0..2u8).map(move |writer| (i, *spec, writer)));
        let tasks: Vec<_> = posts
            .map(|(i, spec, writer)| {
                let client = clients[(i + usize::from(writer) + usize::from(round)) % clients.len()].clone();
                let body =
                    format!(r#"{{"target": "http://10.{round}.{writer}.{i}:8888", "jupyterhub": true}}"#);
                let path = format!("/api/routes{spec}");
                tokio::spawn(async move { client.post(&path, &body).await.status })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 201);
        }
        cluster.tick();
    }

    // One object per route: no duplicates, no orphans.
    let objects = cluster.virtual_services().await;
    assert_eq!(
        objects.len(),
        specs.len(),
        "{:#?}",
        objects.iter().map(|o| &o.metadata.name).collect::<Vec<_>>()
    );
    assert!(
        objects
            .iter()
            .all(|o| o.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"] == MANAGED_BY)
    );
    let entries = cluster.service_entries().await;
    assert_eq!(entries.len(), specs.len(), "each pod IP route has its ServiceEntry");

    // Every replica lists what the API server holds, once its watch has delivered the other
    // replicas' writes (a replica sees its own at once).
    let stored = |spec: &str| {
        let object = objects
            .iter()
            .find(|o| o.metadata.annotations.as_ref().unwrap()["jupyterhub-istio-proxy/route-spec"] == spec);
        let route: serde_json::Value = serde_json::from_str(
            &object.unwrap().metadata.annotations.as_ref().unwrap()["jupyterhub-istio-proxy/route"],
        )
        .unwrap();
        route["target"].as_str().unwrap().to_owned()
    };
    for (i, spec) in specs.iter().enumerate() {
        let target = stored(spec);
        assert!(
            target == format!("http://10.2.0.{i}:8888") || target == format!("http://10.2.1.{i}:8888"),
            "{spec}: {target}"
        );
    }
    for client in &clients {
        let mut converged = false;
        let mut last = serde_json::Value::Null;
        for _ in 0..200 {
            let listing = client.get("/api/routes").await.json();
            last = listing.clone();
            let listing = listing.as_object().unwrap().clone();
            converged = listing.len() == specs.len()
                && specs.iter().all(|spec| listing[*spec]["target"] == stored(spec));
            if converged {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let held: Vec<(String, String)> = specs.iter().map(|s| (s.to_string(), stored(s))).collect();
        assert!(
            converged,
            "a replica still lists other targets than the API server holds after 5 s:\n{last:#}\nheld: {held:?}"
        );
    }

    // And Istio routes as CHP would, to the cluster of the route's pod IP.
    let translation = Translation::default();
    let mut chp = ChpTable::new(false);
    specs.iter().for_each(|spec| chp.add(spec));
    let paths = [
        "/jhub/user/alice/foo/lab",
        "/jhub/user/alice/",
        "/jhub/user/alice2",
        "/jhub/user/bob/x",
        "/jhub/hub/login",
        "/jhub/services/x",
        "/",
    ];
    let istio_objects = std::iter::once(testkit::oracle::gateway(GATEWAY, &["*"]))
        .chain(objects.iter().map(|o| serde_json::to_value(&**o).unwrap()))
        .chain(entries)
        .collect();
    let requests = paths.iter().map(|path| Request::new("hub.example.org", path)).collect();
    let outcome = testkit::oracle::route_one(&Scenario { objects: istio_objects, requests });
    assert_eq!(outcome.rejected, Vec::<String>::new(), "Istio accepts every object");
    for (path, answer) in paths.iter().zip(outcome.answers) {
        let answer = answer.unwrap_or_else(|| panic!("Istio does not route {path}"));
        let object = objects
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(answer.virtual_service_name()))
            .unwrap();
        let chosen = translation.read(object).unwrap().unwrap().route.spec().to_string();
        assert_eq!(Some(chosen), chp.route("hub.example.org", path), "{path}");
        assert!(answer.cluster_known, "{path}: the gateway has no cluster {}", answer.cluster);
    }
}

/// What a replica's `/metrics` says.
async fn scrape(replica: &ProxyProcess) -> testkit::metrics::Scrape {
    let response = ApiClient::new(replica.addr(), None).get("/metrics").await;
    testkit::metrics::Scrape::parse(std::str::from_utf8(&response.body).unwrap())
}

/// Three binaries healing one namespace (`--heal`, the default): a VirtualService deleted
/// behind their backs is restored by one of them, which says so in its log and metrics; with
/// `--heal=false` it stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restore_a_deleted_virtual_service_once_unless_told_not_to() {
    const REPAIRED: &str = "jupyterhub_istio_proxy_route_drift_repaired_total";
    for heal in [true, false] {
        let server = ApiServer::shared().await;
        let namespace = server.new_namespace("replicas-heal").await;
        let flag = format!("--heal={heal}");
        let mut replicas = Vec::new();
        for _ in 0..3 {
            let args = ["--istio-gateway", GATEWAY, flag.as_str()];
            replicas.push(
                ProxyProcess::start_kubernetes(BIN, server.kubeconfig_path(), &namespace, TOKEN, &args).await,
            );
        }
        let client = ApiClient::new(replicas[0].addr(), Some(TOKEN));
        let answer = client.post("/api/routes/user/alice", r#"{"target": "http://10.0.0.7:8888"}"#).await;
        assert_eq!(answer.status, 201, "{}", answer.error());
        let api: Api<VirtualService> = Api::namespaced_with(server.client(), &namespace, &IstioVersion::V1);
        let name = api.list(&Default::default()).await.unwrap().items[0].metadata.name.clone().unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;

        api.delete(&name, &Default::default()).await.unwrap();
        // Longer than the jitter and the back-off after a repair.
        tokio::time::sleep(std::time::Duration::from_secs(7)).await;
        let restored = api.get_opt(&name).await.unwrap().is_some();
        assert_eq!(restored, heal, "--heal={heal}: restored or left deleted");
        let mut repairs = 0.0;
        for replica in &replicas {
            let scrape = scrape(replica).await;
            repairs += scrape.sum(REPAIRED, &[("resource", "virtualservices"), ("kind", "deleted")]);
            let logged =
                replica.log().contains("repaired an object that drifted") && replica.log().contains(&name);
            assert_eq!(logged, scrape.sum(REPAIRED, &[]) > 0.0, "a log line names each repair");
        }
        assert_eq!(repairs, if heal { 1.0 } else { 0.0 }, "--heal={heal}: repaired by one replica");
    }
}
