//! The real Kubernetes API server stopped under load and started again: while it is gone the
//! proxy answers writes 503 (which JupyterHub retries) and reads from its cache; it resumes
//! by itself; and every route it answered 201 for is in the API server afterwards. Then the
//! API server restarted every few seconds while JupyterHub's own client writes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use http::StatusCode;
use istio_routes::Translation;
use istio_routes::resources::{IstioVersion, ServiceEntry, VirtualService};
use kube::Api;
use proxy_api::{RouteSpec, RoutingMode};
use testkit::apiserver::ApiServer;
use testkit::client::ApiClient;
use testkit::eventually;
use testkit::process::ProxyProcess;
use testkit::python::run_script;
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const TOKEN: &str = "outage-token";
const WRITERS: usize = 3;

/// Where the API server is while a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Phase {
    Up = 0,
    Down = 1,
    Back = 2,
}

impl Phase {
    fn of(value: u8) -> Phase {
        [Phase::Up, Phase::Down, Phase::Back][usize::from(value)]
    }
}

/// One answered POST: the route, the phase when it was sent and when it was answered.
#[derive(Debug)]
struct Answered {
    spec: String,
    sent: Phase,
    received: Phase,
    status: StatusCode,
}

async fn proxy(server: &ApiServer, namespace: &str) -> ProxyProcess {
    let gateway = ["--istio-gateway", "istio-system/jupyterhub-gateway"];
    ProxyProcess::start_kubernetes(BIN, server.kubeconfig_path(), namespace, TOKEN, &gateway).await
}

/// Posts new routes one after another until `stop`, recording every answer.
async fn write_until(
    client: ApiClient,
    writer: usize,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answered>>>,
) {
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let spec = format!("/user/w{writer}-{n}");
        let sent = Phase::of(phase.load(Ordering::SeqCst));
        let body = format!(r#"{{"target": "http://10.1.{writer}.{}:8888", "jupyterhub": true}}"#, n % 250);
        let status = client.post(&format!("/api/routes{spec}"), &body).await.status;
        let received = Phase::of(phase.load(Ordering::SeqCst));
        answers.lock().await.push(Answered { spec, sent, received, status });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_under_load_loses_no_route() {
    let server = ApiServer::start().await;
    let namespace = server.new_namespace("outage").await;
    let first = proxy(&server, &namespace).await;
    let client = ApiClient::new(first.addr(), Some(TOKEN));
    let logs = |proxies: &[&ProxyProcess]| {
        let logs: Vec<String> = proxies.iter().map(|p| p.log()).collect();
        format!("proxy logs:\n{}\nAPI server log (tail):\n{}", logs.join("\n---\n"), tail(&server.log()))
    };

    let phase = Arc::new(AtomicU8::new(Phase::Up as u8));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write_until(client.clone(), w, phase.clone(), stop.clone(), answers.clone())))
        .collect();
    let created = |answers: &[Answered], phase: Phase| -> usize {
        answers.iter().filter(|a| a.sent == phase && a.status == StatusCode::CREATED).count()
    };
    eventually("routes are written before the outage", || async {
        created(&answers.lock().await, Phase::Up) >= 10
    })
    .await;

    server.stop().await;
    phase.store(Phase::Down as u8, Ordering::SeqCst);
    let before: BTreeSet<String> = answers
        .lock()
        .await
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .map(|a| a.spec.clone())
        .collect();
    eventually("writes are answered while the API server is down", || async {
        answers.lock().await.iter().filter(|a| a.sent == Phase::Down).count() >= 5
    })
    .await;
    // Reads come from the cache, with every route answered 201 so far. Readiness stays: all
    // replicas share the API server, and taking every one out of its Service would turn the
    // hub's reads and its clear 503s into connection errors.
    let listing = client.get("/api/routes").await;
    assert_eq!(listing.status, 200, "{}", logs(&[&first]));
    let listed: BTreeSet<String> = listing.keys().into_iter().collect();
    assert!(before.is_subset(&listed), "missing from the cache: {:?}", before.difference(&listed));
    assert_eq!(client.get("/readyz").await.status, 200);
    assert_eq!(client.get(&format!("/api/routes{}", before.first().unwrap())).await.status, 200);

    server.restart().await;
    phase.store(Phase::Back as u8, Ordering::SeqCst);
    eventually("every writer gets a 201 again, from the same proxy process", || async {
        let answers = answers.lock().await;
        (0..WRITERS).all(|w| {
            answers.iter().any(|a| {
                a.sent == Phase::Back
                    && a.status == StatusCode::CREATED
                    && a.spec.starts_with(&format!("/user/w{w}-"))
            })
        })
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    let answers = std::mem::take(&mut *answers.lock().await);
    // While the API server was down from send to answer, no write was acknowledged, and
    // every answer was a 503 JupyterHub retries, not a hang (the client panics after 10 s).
    let down: Vec<&Answered> =
        answers.iter().filter(|a| a.sent == Phase::Down && a.received == Phase::Down).collect();
    assert!(!down.is_empty());
    assert!(down.iter().all(|a| a.status == StatusCode::SERVICE_UNAVAILABLE), "{down:#?}");

    // Every route answered 201 is in the API server, and the proxy lists each of them.
    let acknowledged: BTreeSet<String> =
        answers.iter().filter(|a| a.status == StatusCode::CREATED).map(|a| a.spec.clone()).collect();
    let stored: BTreeSet<String> = stored_specs(&server, &namespace).await.into_iter().collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "routes answered 201 but not in the API server: {lost:?}\n{}", logs(&[&first]));
    let listed: BTreeSet<String> = client.get("/api/routes").await.keys().into_iter().collect();
    assert!(acknowledged.is_subset(&listed), "{:?}", acknowledged.difference(&listed));

    // The watch resumed too: another replica's write reaches the first without a restart.
    let second = proxy(&server, &namespace).await;
    let other = ApiClient::new(second.addr(), Some(TOKEN));
    let body = r#"{"target": "http://10.9.9.9:8888"}"#;
    assert_eq!(other.post("/api/routes/user/after-the-outage", body).await.status, 201);
    eventually("the first proxy's watch delivers the second's write", || async {
        client.get("/api/routes/user/after-the-outage").await.status == 200
    })
    .await;
}

/// JupyterHub's client (`testkit/python/chp_client_writer.py`) adds and deletes routes for a
/// minute while the API server is restarted every few seconds. The client retries every 5xx
/// for 30 s, as JupyterHub does; what it reports done must be what the API server holds: every
/// acknowledged add present once (one VirtualService, one ServiceEntry), every acknowledged
/// delete gone. Readiness answers 200 throughout, as in the outage above: the proxy still
/// serves reads from its cache, and writes answer 503s that JupyterHub retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restarts_every_few_seconds_lose_no_write_of_jupyterhubs_client() {
    let server = ApiServer::start().await;
    let namespace = server.new_namespace("restarts").await;
    let proxy = proxy(&server, &namespace).await;
    let client = ApiClient::new(proxy.addr(), Some(TOKEN));
    eventually("the route cache is synced", || async {
        client.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    let api_url = format!("http://{}", proxy.addr());
    let driver = tokio::task::spawn_blocking(move || {
        run_script("chp_client_writer.py", &["--api-url", &api_url, "--token", TOKEN, "--seconds", "60"])
    });

    // Up for 3 s between restarts, or as long as the last restart took if longer: on a loaded
    // machine a restart takes several seconds, and with 3 s up a write retried for JupyterHub's
    // 30 s could find the server down at every try (seen under `.ci/stress`).
    let (mut restarts, mut not_ready, mut up_for) = (0, Vec::new(), Duration::from_secs(3));
    while !driver.is_finished() {
        let up_since = std::time::Instant::now();
        while up_since.elapsed() < up_for {
            let status = client.get("/readyz").await.status;
            if status != StatusCode::OK {
                not_ready.push(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !driver.is_finished() {
            let restarting = std::time::Instant::now();
            server.restart().await;
            up_for = restarting.elapsed().max(Duration::from_secs(3));
            restarts += 1;
        }
    }
    let (passed, output) = driver.await.unwrap();
    let logs = || {
        format!(
            "driver:\n{output}\nproxy log:\n{}\nAPI server log (tail):\n{}",
            proxy.log(),
            tail(&server.log())
        )
    };
    assert!(passed, "JupyterHub's client gave up:\n{}", logs());
    assert!(restarts >= 3, "only {restarts} restarts in the driver's minute");
    assert!(not_ready.is_empty(), "/readyz answered {not_ready:?}");

    // JupyterHub sends `/user/w0-1/`; the proxy keys the route as `/user/w0-1`.
    let done = |verb: &str| -> BTreeSet<String> {
        output
            .lines()
            .filter_map(|line| line.strip_prefix(verb))
            .map(|s| s.trim_end_matches('/').to_string())
            .collect()
    };
    let (added, deleted) = (done("ADDED "), done("DELETED "));
    assert!(deleted.len() > 5 && added.len() > deleted.len() + 10, "too few writes:\n{}", logs());
    println!("{restarts} restarts; {} routes added, {} of them deleted", added.len(), deleted.len());
    let expected: BTreeSet<String> = added.difference(&deleted).cloned().collect();

    let stored = stored_specs(&server, &namespace).await;
    let unique: BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), unique.len(), "a route has two VirtualServices: {stored:?}");
    assert_eq!(
        unique,
        expected,
        "missing: {:?}, undeleted: {:?}\n{}",
        expected.difference(&unique).collect::<Vec<_>>(),
        unique.difference(&expected).collect::<Vec<_>>(),
        logs()
    );

    let service_entries: Api<ServiceEntry> =
        Api::namespaced_with(server.client(), &namespace, &IstioVersion::V1);
    let wanted: BTreeSet<String> = expected
        .iter()
        .map(|spec| {
            Translation::default().service_entry_name(&RouteSpec::new(spec, RoutingMode::Path).unwrap())
        })
        .collect();
    // Eventually: an add cut short between its ServiceEntry and its VirtualService leaves an
    // orphan that healing deletes after its grace; when the retry's apply of the entry changed
    // nothing, the VirtualService can land after that delete, and healing restores the entry
    // within seconds (docs/istio.md#healing).
    let entries = async || -> BTreeSet<String> {
        let listed = service_entries.list(&Default::default()).await.unwrap().items;
        listed.into_iter().filter_map(|entry| entry.metadata.name).collect()
    };
    eventually("ServiceEntries are one per route", || async { entries().await == wanted }).await;
    eventually("the proxy lists what the API server holds", || async {
        client.get("/api/routes").await.keys().into_iter().collect::<BTreeSet<String>>() == expected
    })
    .await;
}

/// The spec of every route the API server holds a VirtualService of ours for, sorted, one
/// entry per object.
async fn stored_specs(server: &ApiServer, namespace: &str) -> Vec<String> {
    let translation = Translation { namespace: namespace.to_owned(), ..Translation::default() };
    let api: Api<VirtualService> = Api::namespaced_with(server.client(), namespace, &IstioVersion::V1);
    let mut specs: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|object| translation.read(object)?.ok())
        .map(|stored| stored.route.spec().to_string())
        .collect();
    specs.sort();
    specs
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
