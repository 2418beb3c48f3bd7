//! For any routes and any order of adds, deletes and re-adds (several in one second, spread over
//! several replicas), the route Istio's gateway picks for a request is the one
//! configurable-http-proxy would pick: the longest prefix in whole segments.
//!
//! The gateway is Istio's own: `testkit::oracle` runs Istio's pilot on the objects the store
//! holds after every step (one oracle run per case, a pilot per step) and routes the probes
//! through the route configuration it generates, as Envoy would. `testkit::istio_model`, the
//! fast model, checks every step too (it fails fast, with the step), and a test of its own
//! checks that it answers as the oracle does on every probe of a corpus drawn from the same
//! strategies. `istio_routes::explain`, asked for every probe as a URL, must name the oracle's
//! winner and CHP's route. CHP is `testkit::chp`. Probes are the routes' paths as browsers send them (encoded,
//! `@` raw or as `%40`, hex in either case), below them, beside them (`/user/alice2`) and above
//! them.

use std::sync::Arc;

use istio_routes::resources::VirtualService;
use istio_routes::{IstioBackend, ManualClock, MemoryStore, RouteStore, Translation, explain};
use kube_routes::encode_path;
use proptest::prelude::*;
use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
use testkit::chp::{ChpTable, lower_hex, paths_around};
use testkit::istio_model::{Gateway, Routed};
use testkit::oracle::{Answer, Request, Scenario};

const GATEWAY: &str = "istio-system/jupyterhub-gateway";
const REPLICAS: usize = 3;
/// Segments chosen to overlap: hubs under a base URL, users, named servers, encoded names.
const SEGMENTS: &[&str] = &["jhub", "user", "alice", "a", "foo", "a b", "ü", "x@y", "~t"];
const HOSTS: &[&str] = &["a.hub.org", "b.hub.org"];

#[derive(Debug, Clone)]
enum Step {
    /// Add (or re-add) a route through one replica, to one of a few targets.
    Add { replica: usize, spec: String, target: usize },
    /// Delete a route through one replica.
    Delete { replica: usize, spec: String },
    /// Let the clock run: 0 keeps the next steps in the same second.
    Wait(i64),
}

fn path_spec() -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(prop::sample::select(SEGMENTS), 0..=4)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn host_spec() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        1 => Just("/".to_owned()),
        6 => (prop::sample::select(HOSTS), prop::collection::vec(prop::sample::select(SEGMENTS), 0..=3))
            .prop_map(|(host, segments)| if segments.is_empty() { format!("/{host}") } else { format!("/{host}/{}", segments.join("/")) }),
    ]
}

fn steps(spec: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (0..REPLICAS, spec.clone(), 0..4usize).prop_map(|(replica, spec, target)| Step::Add { replica, spec, target }),
        2 => (0..REPLICAS, spec).prop_map(|(replica, spec)| Step::Delete { replica, spec }),
        3 => (0..3i64).prop_map(Step::Wait),
    ];
    prop::collection::vec(step, 1..30)
}

/// Targets of every kind the translation handles: pod IPs, services, target paths.
fn target(n: usize) -> &'static str {
    [
        "http://10.0.0.7:8888",
        "http://jupyter-x:8888",
        "http://hub.other:8081/base",
        "http://10.0.0.9:8000/srv/x",
    ][n]
}

struct World {
    store: Arc<MemoryStore>,
    clock: ManualClock,
    replicas: Vec<IstioBackend<MemoryStore>>,
    chp: ChpTable,
    translation: Translation,
    /// Every spec the steps named, to probe around.
    seen: std::collections::BTreeSet<RouteSpec>,
    /// What each step left, for the oracle.
    snapshots: Vec<Snapshot>,
}

/// The objects after a step, the probes, and what CHP and the model answered.
struct Snapshot {
    objects: Vec<Arc<VirtualService>>,
    scenario: Scenario,
    expected: Vec<Option<String>>,
    modelled: Vec<Option<Routed>>,
    /// The VirtualService `explain` named the winner.
    explained: Vec<Option<String>>,
    /// The steps so far, for failure messages.
    steps: usize,
}

impl World {
    fn new(mode: RoutingMode) -> World {
        let clock = ManualClock::at(1_700_000_000);
        let translation = Translation {
            namespace: "hub".into(),
            gateways: vec![GATEWAY.into()],
            hosts: vec!["*".into()],
            routing_mode: mode,
            export_to: istio_routes::default_export_to("hub", &[GATEWAY.to_owned()]),
            ..Translation::default()
        };
        let store = Arc::new(MemoryStore::with_clock(translation.clone(), clock.clock()));
        let replicas =
            (0..REPLICAS).map(|_| IstioBackend::new(Arc::clone(&store), translation.clone())).collect();
        World {
            store,
            clock,
            replicas,
            chp: ChpTable::new(mode == RoutingMode::Host),
            translation,
            seen: Default::default(),
            snapshots: Vec::new(),
        }
    }

    async fn step(&mut self, step: &Step) {
        let mode = self.translation.routing_mode;
        match step {
            Step::Add { replica, spec, target: n } => {
                let spec = RouteSpec::new(spec, mode).unwrap();
                let route =
                    Route::new(spec.clone(), Target::parse(target(*n)).unwrap(), Default::default()).unwrap();
                self.replicas[*replica].add(route).await.unwrap();
                self.chp.add(spec.as_str());
                self.seen.insert(spec);
            }
            Step::Delete { replica, spec } => {
                let spec = RouteSpec::new(spec, mode).unwrap();
                self.replicas[*replica].delete(&spec).await.unwrap();
                self.chp.delete(spec.as_str());
            }
            Step::Wait(seconds) => self.clock.advance(*seconds),
        }
    }

    /// Requests around every spec seen: (Host header, path as sent).
    fn probes(&self) -> std::collections::BTreeSet<(String, String)> {
        let mut probes = std::collections::BTreeSet::from([
            ("c.hub.org".to_owned(), "/".to_owned()),
            ("a.hub.org".to_owned(), "/other".to_owned()),
        ]);
        for spec in &self.seen {
            let host = spec.host().unwrap_or("hub.org").to_owned();
            for probe in paths_around(&encode_path(spec.path())) {
                probes.insert((host.clone(), probe.clone()));
                probes.insert((host.clone(), probe.replace('@', "%40")));
                probes.insert((host.clone(), lower_hex(&probe)));
                probes.insert(("c.hub.org".to_owned(), probe));
            }
        }
        probes
    }

    /// Checks every probe: Istio's choice is CHP's, and the path forwarded is the target's
    /// path followed by the request's (CHP keeps the prefix).
    /// The model checks every step at once; the step is kept for the oracle ([`World::judge`]).
    async fn check(&mut self, history: &[Step]) {
        let objects = self.store.virtual_services();
        let gateway = Gateway::build(&objects, GATEWAY, &["*"]);
        let mut snapshot = Snapshot {
            scenario: Scenario { objects: self.istio_objects(&objects), requests: Vec::new() },
            objects,
            expected: Vec::new(),
            modelled: Vec::new(),
            explained: Vec::new(),
            steps: history.len(),
        };
        let explainer = explain::Explainer::new(&snapshot.objects, &self.translation);
        let mut explained_winners = Vec::new();
        for (host, path) in self.probes() {
            let expected = self.chp.route(&host, &path);
            let routed = gateway.route(&host, &path);
            let got = routed.as_ref().map(|r| self.route_of(&snapshot.objects, &r.virtual_service));
            let context = || format!("the model: Host: {host}, path {path}\nafter {history:#?}");
            self.assert_routes_as_chp(
                got,
                routed.as_ref().map(|r| r.path.as_str()),
                &expected,
                &path,
                &snapshot.objects,
                context,
            );
            let url = format!("http://{host}{path}");
            let explained = explainer.explain(&url).unwrap();
            assert_eq!(explained.chp_route, expected, "explain's CHP route for {url}");
            assert_eq!(
                explained.agrees_with_chp,
                explained.winner.as_ref().and_then(|w| w.route.clone()) == expected
            );
            explained_winners.push(explained.winner.map(|w| w.virtual_service));
            snapshot.scenario.requests.push(Request::new(&host, &path));
            snapshot.expected.push(expected);
            snapshot.modelled.push(routed);
        }
        snapshot.explained = explained_winners;
        // A step that changed nothing (a wait, a repeated add) needs no second pilot.
        let last = self.snapshots.last();
        if last.is_none_or(|l| l.scenario != snapshot.scenario || l.expected != snapshot.expected) {
            self.snapshots.push(snapshot);
        }
        // And the API lists exactly CHP's routes.
        let listed: Vec<String> =
            self.replicas[0].list().await.unwrap().iter().map(|r| r.spec().to_string()).collect();
        let expected: Vec<String> = self.chp.specs().map(str::to_owned).collect();
        assert_eq!(listed, expected);
    }
}

impl World {
    /// The route whose VirtualService is `name`.
    fn route_of(&self, objects: &[Arc<VirtualService>], name: &str) -> Arc<Route> {
        let object = objects.iter().find(|o| o.metadata.name.as_deref() == Some(name)).unwrap();
        self.translation.read(object).unwrap().unwrap().route
    }

    /// The route chosen is CHP's, and the path forwarded is the target's path followed by the
    /// request's (CHP keeps the prefix).
    fn assert_routes_as_chp(
        &self,
        got: Option<Arc<Route>>,
        forwarded: Option<&str>,
        expected: &Option<String>,
        path: &str,
        objects: &[Arc<VirtualService>],
        context: impl Fn() -> String,
    ) {
        let got_spec = got.as_ref().map(|route| route.spec().to_string());
        assert_eq!(&got_spec, expected, "{}\nobjects in Istio's order: {:#?}", context(), names(objects));
        if let (Some(route), Some(forwarded)) = (got, forwarded) {
            assert_eq!(forwarded, format!("{}{path}", route.target().path()), "rewrite by {}", route.spec());
        }
    }

    /// The Gateway, the VirtualServices and the ServiceEntries, as the API server lists them.
    fn istio_objects(&self, objects: &[Arc<VirtualService>]) -> Vec<serde_json::Value> {
        let services = objects.iter().map(|o| serde_json::to_value(&**o).unwrap());
        let entries = self.store.service_entries().into_iter().map(|o| serde_json::to_value(&*o).unwrap());
        std::iter::once(testkit::oracle::gateway(GATEWAY, &["*"])).chain(services).chain(entries).collect()
    }

    /// Every step of the case through Istio's pilot, in one oracle run: Istio routes every
    /// probe as CHP does.
    fn judge(&self, history: &[Step]) {
        let scenarios: Vec<Scenario> = self.snapshots.iter().map(|s| s.scenario.clone()).collect();
        let outcomes = testkit::oracle::route(&scenarios);
        for (snapshot, outcome) in self.snapshots.iter().zip(outcomes) {
            assert_eq!(outcome.rejected, Vec::<String>::new(), "Istio refused objects we wrote");
            let probes = snapshot.scenario.requests.iter().zip(&snapshot.expected).zip(&snapshot.modelled);
            let probes = probes.zip(&snapshot.explained);
            for ((((request, expected), model), explained), answer) in probes.zip(&outcome.answers) {
                let context = || {
                    let steps = &history[..snapshot.steps];
                    format!("Istio: Host: {}, path {}\nafter {steps:#?}", request.authority, request.path)
                };
                let got = answer.as_ref().map(|a| self.route_of(&snapshot.objects, a.virtual_service_name()));
                let forwarded = answer.as_ref().map(|a| a.path.as_str());
                self.assert_routes_as_chp(
                    got,
                    forwarded,
                    expected,
                    &request.path,
                    &snapshot.objects,
                    context,
                );
                assert_model_agrees(model.as_ref(), answer.as_ref(), &context);
                let istio = answer.as_ref().map(|a| a.virtual_service_name().to_owned());
                assert_eq!(explained, &istio, "explain's winner is not Istio's\n{}", context());
            }
        }
    }
}

/// `testkit::istio_model` answers as Istio does: the same VirtualService, cluster, forwarded
/// path and response headers, or a 404 alike.
fn assert_model_agrees(model: Option<&Routed>, istio: Option<&Answer>, context: &impl Fn() -> String) {
    let model = model.map(|r| {
        let port = r.port.map_or_else(String::new, |p| p.to_string());
        (
            r.virtual_service.clone(),
            format!("outbound|{port}||{}", r.host),
            r.path.clone(),
            r.response_headers.clone(),
        )
    });
    let istio = istio.map(|a| {
        (a.virtual_service_name().to_owned(), a.cluster.clone(), a.path.clone(), a.response_headers.clone())
    });
    assert_eq!(
        model,
        istio,
        "testkit::istio_model disagrees with Istio (the oracle is right)\n{}",
        context()
    );
}

fn names(objects: &[Arc<VirtualService>]) -> Vec<String> {
    let mut objects: Vec<_> = objects.iter().collect();
    objects.sort_by_key(|o| istio_routes::order::Placement::of(o));
    objects
        .iter()
        .map(|o| {
            format!(
                "{} @{}",
                o.metadata.name.as_deref().unwrap_or_default(),
                o.metadata.creation_timestamp.as_ref().unwrap().0.as_second()
            )
        })
        .collect()
}

/// Replays the steps, checking every step with the model; the world keeps each step for the
/// oracle.
fn simulate(mode: RoutingMode, steps: &[Step]) -> World {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut world = World::new(mode);
        for (i, step) in steps.iter().enumerate() {
            world.step(step).await;
            world.check(&steps[..=i]).await;
        }
        world
    })
}

fn run(mode: RoutingMode, steps: &[Step]) {
    simulate(mode, steps).judge(steps);
}

/// Cases per mode of the corpus the model is held to.
const CORPUS_CASES: usize = 64;

/// `testkit::istio_model` answers every probe of every step as Istio's pilot does (the oracle
/// is right), on a corpus drawn from the property tests' strategies with a fixed seed, in one
/// oracle run.
#[test]
fn the_model_answers_as_istio_does_on_the_corpus() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut cases = Vec::new();
    for (mode, strategy) in
        [(RoutingMode::Path, steps(path_spec()).boxed()), (RoutingMode::Host, steps(host_spec()).boxed())]
    {
        for _ in 0..CORPUS_CASES {
            let steps = strategy.new_tree(&mut runner).unwrap().current();
            cases.push((simulate(mode, &steps), steps));
        }
    }
    let scenarios: Vec<Scenario> =
        cases.iter().flat_map(|(world, _)| world.snapshots.iter().map(|s| s.scenario.clone())).collect();
    let mut outcomes = testkit::oracle::route(&scenarios).into_iter();
    let mut probes = 0;
    for (world, history) in &cases {
        for (snapshot, outcome) in world.snapshots.iter().zip(outcomes.by_ref()) {
            let requests = snapshot.scenario.requests.iter().zip(&snapshot.modelled);
            for ((request, model), answer) in requests.zip(&outcome.answers) {
                let context = || {
                    let steps = &history[..snapshot.steps];
                    format!("Host: {}, path {}\nafter {steps:#?}", request.authority, request.path)
                };
                assert_model_agrees(model.as_ref(), answer.as_ref(), &context);
                probes += 1;
            }
        }
    }
    assert!(probes >= 2 * CORPUS_CASES, "every case probes: {probes} probes");
}

proptest! {
    // 128 cases per mode: every distinct step of each goes through Istio's pilot, about a
    // second of the oracle's time per case.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn path_routes_route_as_chp_does(steps in steps(path_spec())) {
        run(RoutingMode::Path, &steps);
    }

    #[test]
    fn host_routes_route_as_chp_does(steps in steps(host_spec())) {
        run(RoutingMode::Host, &steps);
    }
}

/// The Go proxy's bug, as a fixed case: a hub under a base URL added first, users after.
#[test]
fn a_hub_under_a_base_url_does_not_shadow_its_users() {
    run(
        RoutingMode::Path,
        &[
            Step::Add { replica: 0, spec: "/jhub".into(), target: 1 },
            Step::Wait(1),
            Step::Add { replica: 1, spec: "/jhub/user/alice".into(), target: 0 },
            Step::Add { replica: 2, spec: "/jhub/user/alice/foo".into(), target: 3 },
            Step::Wait(2),
            Step::Delete { replica: 0, spec: "/jhub/user/alice".into() },
            Step::Add { replica: 1, spec: "/jhub/user/alice".into(), target: 2 },
        ],
    );
}
