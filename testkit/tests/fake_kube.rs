//! The fake Kubernetes API server, driven by kube-rs itself.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use http::Method;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use testkit::eventually;
use testkit::fake_kube::{Answer, FailureRule, FakeKube};

const NS: &str = "jhub";
const GROUP: &str = "networking.istio.io";

fn resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(GROUP, "v1", "VirtualService");
    ApiResource::from_gvk_with_plural(&gvk, "virtualservices")
}

async fn setup() -> (FakeKube, Api<DynamicObject>) {
    let fake = FakeKube::start().await;
    let client = Client::try_from(fake.kubeconfig(NS)).expect("a client");
    let api = Api::default_namespaced_with(client, &resource());
    (fake, api)
}

fn vs(name: &str, labels: Value, host: &str) -> DynamicObject {
    let mut object = DynamicObject::new(name, &resource()).data(json!({"spec": {"hosts": [host]}}));
    object.metadata.labels = serde_json::from_value(labels).expect("labels");
    object
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn hosts(store: &Store<DynamicObject>) -> Vec<String> {
    let mut hosts: Vec<String> = store
        .state()
        .iter()
        .map(|o| o.data["spec"]["hosts"][0].as_str().unwrap_or_default().to_owned())
        .collect();
    hosts.sort();
    hosts
}

/// A reflector over the objects labelled `app=jhub`, driven in a task.
fn reflect(
    api: &Api<DynamicObject>,
    config: watcher::Config,
) -> (Store<DynamicObject>, tokio::task::JoinHandle<()>) {
    let writer = reflector::store::Writer::new(resource());
    let store = writer.as_reader();
    let stream = watcher(api.clone(), config).default_backoff().reflect(writer);
    let task = tokio::spawn(stream.for_each(|_| async {}));
    (store, task)
}

fn lists(fake: &FakeKube) -> usize {
    fake.requests().iter().filter(|r| r.is_list()).count()
}

#[tokio::test]
async fn create_get_apply_replace_delete() {
    let (fake, api) = setup().await;
    fake.set_clock(1_700_000_000);

    let created =
        api.create(&PostParams::default(), &vs("a", json!({"app": "jhub"}), "a.example")).await.unwrap();
    assert_eq!(json!(created.metadata.creation_timestamp), json!("2023-11-14T22:13:20Z"));
    assert_eq!(created.namespace().as_deref(), Some(NS));
    let uid = created.uid().unwrap();
    let rv = created.resource_version().unwrap();
    let stored = fake.object("virtualservices", NS, "a").unwrap();
    assert_eq!(stored["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");

    let again = api_error(api.create(&PostParams::default(), &vs("a", json!({}), "x")).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert!(again.is_already_exists());

    assert_eq!(api.get("a").await.unwrap().data["spec"]["hosts"][0], "a.example");
    let missing = api_error(api.get("nope").await);
    assert!(missing.is_not_found(), "{missing:?}");
    assert_eq!(missing.code, 404);
    assert!(api.get_opt("nope").await.unwrap().is_none());

    // Server-side apply updates in place, replacing labels and spec.
    fake.advance_clock(60);
    let apply = PatchParams::apply("test").force();
    let applied =
        api.patch("a", &apply, &Patch::Apply(vs("a", json!({"v": "2"}), "b.example"))).await.unwrap();
    assert_eq!(applied.uid().unwrap(), uid);
    assert_eq!(applied.metadata.creation_timestamp, created.metadata.creation_timestamp);
    assert_ne!(applied.resource_version().unwrap(), rv);
    assert_eq!(applied.labels().len(), 1);
    assert_eq!(applied.labels()["v"], "2");
    assert_eq!(applied.data["spec"]["hosts"][0], "b.example");
    // A no-op apply is no write.
    let before = fake.resource_version();
    let same = api.patch("a", &apply, &Patch::Apply(vs("a", json!({"v": "2"}), "b.example"))).await.unwrap();
    assert_eq!(same.resource_version(), applied.resource_version());
    assert_eq!(fake.resource_version(), before);
    // Apply creates, too.
    let fresh = api.patch("b", &apply, &Patch::Apply(vs("b", json!({}), "c.example"))).await.unwrap();
    assert!(fresh.uid().is_some_and(|u| u != uid));
    // Apply without a field manager is refused.
    let no_manager =
        api_error(api.patch("b", &PatchParams::default(), &Patch::Apply(vs("b", json!({}), "x"))).await);
    assert_eq!(no_manager.code, 400);

    // Merge patch adds a label to what is there; it needs the object to exist.
    let merged = api
        .patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"owner": "us"}}})))
        .await
        .unwrap();
    assert_eq!(merged.labels().get("owner").map(String::as_str), Some("us"));
    assert_eq!(merged.labels().get("v").map(String::as_str), Some("2"));
    let patch_missing = api_error(api.patch("nope", &PatchParams::default(), &Patch::Merge(json!({}))).await);
    assert!(patch_missing.is_not_found());

    // Replace needs the current resourceVersion.
    let mut stale = applied.clone();
    stale.data["spec"]["hosts"] = json!(["stale.example"]);
    let conflict = api_error(api.replace("a", &PostParams::default(), &stale).await);
    assert!(conflict.is_conflict(), "{conflict:?}");
    assert_eq!(conflict.reason, "Conflict");
    let mut current = api.get("a").await.unwrap();
    current.data["spec"]["hosts"] = json!(["d.example"]);
    let replaced = api.replace("a", &PostParams::default(), &current).await.unwrap();
    assert_eq!(replaced.data["spec"]["hosts"][0], "d.example");
    assert_eq!(replaced.uid().unwrap(), uid);
    let replace_missing =
        api_error(api.replace("nope", &PostParams::default(), &vs("nope", json!({}), "x")).await);
    assert!(replace_missing.is_not_found());

    // Delete, with preconditions.
    let stale_delete = DeleteParams::default()
        .preconditions(kube::api::Preconditions { resource_version: Some(rv.clone()), uid: None });
    let precondition = api_error(api.delete("a", &stale_delete).await);
    assert_eq!((precondition.code, precondition.reason.as_str()), (409, "Conflict"));
    let wrong_uid = DeleteParams::default()
        .preconditions(kube::api::Preconditions { resource_version: None, uid: Some("other".to_owned()) });
    assert!(api_error(api.delete("a", &wrong_uid).await).is_conflict());
    let current_delete = DeleteParams::default().preconditions(kube::api::Preconditions {
        resource_version: replaced.resource_version(),
        uid: Some(uid.clone()),
    });
    let deleted = api.delete("a", &current_delete).await.unwrap();
    // As the real server answers a custom resource's delete: a Status, no object.
    let status = deleted.right().expect("a Status");
    assert_eq!(status.details.map(|d| (d.name, d.uid)), Some(("a".to_owned(), uid.clone())));
    assert!(api_error(api.delete("a", &DeleteParams::default()).await).is_not_found());
    assert_eq!(fake.objects("virtualservices").len(), 1);
}

#[tokio::test]
async fn list_with_selector_and_pages() {
    let (fake, api) = setup().await;
    for i in 0..7 {
        let labels =
            if i % 2 == 0 { json!({"app": "jhub", "n": i.to_string()}) } else { json!({"app": "other"}) };
        api.create(&PostParams::default(), &vs(&format!("vs-{i}"), labels, "h")).await.unwrap();
    }
    fake.insert(
        GROUP,
        "v1",
        "virtualservices",
        "elsewhere",
        json!({"metadata": {"name": "far", "labels": {"app": "jhub"}}}),
    );

    let names = |list: &kube::core::ObjectList<DynamicObject>| {
        list.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
    };
    let mine = api.list(&ListParams::default().labels("app=jhub")).await.unwrap();
    assert_eq!(names(&mine), ["vs-0", "vs-2", "vs-4", "vs-6"]);
    assert_eq!(mine.metadata.resource_version, Some(fake.resource_version().to_string()));
    assert_eq!(mine.types.kind, "VirtualServiceList");
    assert_eq!(names(&api.list(&ListParams::default().labels("app!=jhub")).await.unwrap()).len(), 3);
    assert_eq!(
        names(&api.list(&ListParams::default().labels("n,n notin (0,2)")).await.unwrap()),
        ["vs-4", "vs-6"]
    );
    assert_eq!(names(&api.list(&ListParams::default().labels("!n")).await.unwrap()).len(), 3);
    let bad = api_error(api.list(&ListParams::default().labels("a b c")).await);
    assert_eq!(bad.code, 400);

    let mut pages = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = api.list(&params).await.unwrap();
        pages.push(names(&page));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, [vec!["vs-0", "vs-1", "vs-2"], vec!["vs-3", "vs-4", "vs-5"], vec!["vs-6"]]);

    let all: Api<DynamicObject> = Api::all_with(api.clone().into_client(), &resource());
    assert_eq!(names(&all.list(&ListParams::default().labels("app=jhub")).await.unwrap()).len(), 5);
}

#[tokio::test]
async fn reflector_follows_creates_updates_and_deletes() {
    let (fake, api) = setup().await;
    api.create(&PostParams::default(), &vs("before", json!({"app": "jhub"}), "before")).await.unwrap();
    let (store, task) = reflect(&api, watcher::Config::default().labels("app=jhub"));
    store.wait_until_ready().await.unwrap();
    assert_eq!(hosts(&store), ["before"]);

    let apply = PatchParams::apply("test");
    api.patch("a", &apply, &Patch::Apply(vs("a", json!({"app": "jhub"}), "a1"))).await.unwrap();
    api.create(&PostParams::default(), &vs("other", json!({"app": "other"}), "other")).await.unwrap();
    eventually("a is seen", || async { hosts(&store) == ["a1", "before"] }).await;

    api.patch("a", &apply, &Patch::Apply(vs("a", json!({"app": "jhub"}), "a2"))).await.unwrap();
    eventually("a is updated", || async { hosts(&store) == ["a2", "before"] }).await;

    api.delete("before", &DeleteParams::default()).await.unwrap();
    eventually("before is gone", || async { hosts(&store) == ["a2"] }).await;

    // Relabelled out of the selector: DELETED for this watch; back in: ADDED.
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})))
        .await
        .unwrap();
    eventually("a left the selector", || async { hosts(&store).is_empty() }).await;
    api.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "jhub"}}})),
    )
    .await
    .unwrap();
    eventually("other joined the selector", || async { hosts(&store) == ["other"] }).await;
    assert_eq!(lists(&fake), 1, "one list, then watches only");
    task.abort();
}

#[tokio::test]
async fn watches_resume_after_a_break_and_relist_after_compaction() {
    let (fake, api) = setup().await;
    let (store, task) = reflect(&api, watcher::Config::default().labels("app=jhub"));
    store.wait_until_ready().await.unwrap();
    api.create(&PostParams::default(), &vs("a", json!({"app": "jhub"}), "a")).await.unwrap();
    eventually("a is seen", || async { hosts(&store) == ["a"] }).await;

    // A broken watch resumes from its resourceVersion: no new list.
    let watches = |fake: &FakeKube| fake.requests().iter().filter(|r| r.is_watch()).count();
    let watches_before = watches(&fake);
    fake.break_watches();
    eventually("the watch is reopened", || async { watches(&fake) > watches_before }).await;
    api.create(&PostParams::default(), &vs("b", json!({"app": "jhub"}), "b")).await.unwrap();
    eventually("b is seen", || async { hosts(&store) == ["a", "b"] }).await;
    assert_eq!(lists(&fake), 1);

    // The next watch comes after a write and a compaction: 410, so the watcher lists again.
    fake.fail_next(FailureRule::new(Answer::Delay(Duration::from_millis(500))).watch(true));
    fake.break_watches();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &vs("c", json!({"app": "jhub"}), "c")).await.unwrap();
    fake.compact();
    eventually("the store converges", || async { hosts(&store) == ["b", "c"] }).await;
    assert_eq!(lists(&fake), 2, "{:#?}", fake.requests());
    task.abort();
}

#[tokio::test]
async fn held_watch_events_arrive_one_by_one_in_order_when_released() {
    let (fake, api) = setup().await;
    let (store, task) = reflect(&api, watcher::Config::default().labels("app=jhub"));
    store.wait_until_ready().await.unwrap();
    fake.hold_watch_events();
    api.create(&PostParams::default(), &vs("a", json!({"app": "jhub"}), "a")).await.unwrap();
    api.create(&PostParams::default(), &vs("b", json!({"app": "jhub"}), "b")).await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1, "lists are not held");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hosts(&store).is_empty(), "a held event arrived");

    fake.release_watch_events(1);
    eventually("a's creation arrives", || async { hosts(&store) == ["a"] }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hosts(&store), ["a"], "only one event was released");
    assert_eq!(fake.release_watch_events(usize::MAX), fake.resource_version());
    eventually("the rest arrives", || async { hosts(&store) == ["b"] }).await;
    task.abort();
}

#[tokio::test]
async fn streaming_lists_and_watch_timeouts() {
    let (fake, api) = setup().await;
    api.create(&PostParams::default(), &vs("a", json!({"app": "jhub"}), "a")).await.unwrap();
    let (store, task) = reflect(&api, watcher::Config::default().labels("app=jhub").streaming_lists());
    store.wait_until_ready().await.unwrap();
    assert_eq!(hosts(&store), ["a"]);
    api.create(&PostParams::default(), &vs("b", json!({"app": "jhub"}), "b")).await.unwrap();
    eventually("b is seen", || async { hosts(&store) == ["a", "b"] }).await;
    assert_eq!(lists(&fake), 0);
    task.abort();

    // A raw watch from resourceVersion 0 gets the current objects, then ends at its timeout.
    let started = Instant::now();
    let events: Vec<WatchEvent<DynamicObject>> =
        api.watch(&WatchParams::default().timeout(1), "0").await.unwrap().try_collect().await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    let added = events.iter().filter(|e| matches!(e, WatchEvent::Added(_))).count();
    assert_eq!(added, 2);
    assert!(events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))));

    // From an old resourceVersion: the history since, in order.
    let first_rv: u64 = api.get("a").await.unwrap().resource_version().unwrap().parse().unwrap();
    let events: Vec<WatchEvent<DynamicObject>> = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &first_rv.to_string())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(matches!(&events[..], [WatchEvent::Added(b)] if b.name_any() == "b"), "{events:?}");

    // From before a compaction: 410 Expired.
    fake.compact();
    let mut stream = api.watch(&WatchParams::default(), &first_rv.to_string()).await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_failures() {
    let (fake, api) = setup().await;
    api.create(&PostParams::default(), &vs("a", json!({}), "a")).await.unwrap();

    fake.fail_next(FailureRule::new(Answer::status(500, "InternalError")).method(Method::GET));
    let failed = api_error(api.get("a").await);
    assert_eq!((failed.code, failed.reason.as_str()), (500, "InternalError"));
    assert!(api.get("a").await.is_ok(), "a rule answers once");

    fake.fail_next(
        FailureRule::new(Answer::status(403, "Forbidden")).path_contains("/virtualservices").times(2),
    );
    assert!(api_error(api.list(&ListParams::default()).await).is_forbidden());
    assert!(api_error(api.get("a").await).is_forbidden());
    assert!(api.get("a").await.is_ok());

    // kube-rs retries a 503 itself.
    fake.clear_requests();
    fake.fail_next(FailureRule::new(Answer::status(503, "ServiceUnavailable")));
    assert!(api.get("a").await.is_ok());
    assert_eq!(fake.requests().len(), 2);

    // A resource that is not served: a 404 that is not a NotFound Status.
    fake.fail_next(FailureRule::new(Answer::NotServed));
    let not_served = api_error(api.get("a").await);
    assert_eq!(not_served.code, 404);
    assert!(!not_served.is_not_found(), "{not_served:?}");
    assert!(api.get_opt("a").await.unwrap().is_some());

    // Non-watch rules leave watches alone, and the reverse.
    fake.fail_next(FailureRule::new(Answer::status(500, "InternalError")).watch(true));
    assert!(api.get("a").await.is_ok());
    assert_eq!(api_error(api.watch(&WatchParams::default(), "0").await.map(|_| ())).code, 500);

    fake.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    api.get("a").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    fake.set_latency(Duration::ZERO);

    fake.fail_next(FailureRule::new(Answer::Delay(Duration::from_millis(200))).method(Method::GET));
    let started = Instant::now();
    api.get("a").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn an_outage_keeps_the_objects() {
    let (fake, api) = setup().await;
    api.create(&PostParams::default(), &vs("a", json!({"app": "jhub"}), "a")).await.unwrap();
    let (store, task) = reflect(&api, watcher::Config::default().labels("app=jhub"));
    store.wait_until_ready().await.unwrap();

    fake.stop().await;
    assert!(api.get("a").await.is_err());
    fake.insert(
        GROUP,
        "v1",
        "virtualservices",
        NS,
        json!({"metadata": {"name": "b", "labels": {"app": "jhub"}}, "spec": {"hosts": ["b"]}}),
    );
    fake.restart().await;
    assert_eq!(api.get("a").await.unwrap().name_any(), "a");
    eventually("the reflector catches up", || async { hosts(&store) == ["a", "b"] }).await;
    task.abort();
}

#[tokio::test]
async fn seeded_objects_and_the_kubeconfig_file() {
    let fake = FakeKube::start().await;
    let seeded = fake.insert(
        GROUP,
        "v1",
        "virtualservices",
        NS,
        json!({"metadata": {"name": "old", "uid": "u-1", "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": {}}),
    );
    assert_eq!(seeded["apiVersion"], "networking.istio.io/v1");
    assert_eq!(seeded["kind"], "VirtualService");
    assert_eq!(seeded["metadata"]["uid"], "u-1");
    assert_eq!(seeded["metadata"]["resourceVersion"], "1");

    let dir = std::env::temp_dir().join(format!("fake-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    fake.write_kubeconfig(&path, NS);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    assert_eq!(config.default_namespace, NS);
    let client = Client::try_from(config).unwrap();
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");
    let api: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &resource());
    let old = api.get("old").await.unwrap();
    assert_eq!(json!(old.metadata.creation_timestamp), json!("2020-01-01T00:00:00Z"));
    let resources = client.list_api_group_resources("networking.istio.io/v1").await.unwrap();
    assert_eq!(resources.resources[0].kind, "VirtualService");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn typed_istio_objects() {
    use istio_routes::resources::{IstioVersion, VirtualService, VirtualServiceSpec};

    let fake = FakeKube::start().await;
    let client = Client::try_from(fake.kubeconfig(NS)).unwrap();
    for version in [IstioVersion::V1, IstioVersion::V1beta1] {
        let api: Api<VirtualService> = Api::namespaced_with(client.clone(), NS, &version);
        let metadata = kube::api::ObjectMeta { name: Some(format!("route-{version}")), ..Default::default() };
        let spec = VirtualServiceSpec { hosts: vec!["*".to_owned()], ..Default::default() };
        let object = VirtualService::new(version, metadata, spec);
        let params = PatchParams::apply("jupyterhub-istio-proxy").force();
        let stored = api.patch(&object.name_any(), &params, &Patch::Apply(&object)).await.unwrap();
        assert_eq!(stored.spec.hosts, ["*"]);
        assert_eq!(stored.api_version, version.api_version());
        assert!(stored.metadata.creation_timestamp.is_some());
    }
    assert_eq!(fake.objects("virtualservices").len(), 2);
}

#[tokio::test]
async fn broken_watches_end_mid_body_and_timed_out_ones_cleanly() {
    let fake = FakeKube::start().await;
    let path = "/apis/networking.istio.io/v1/namespaces/jhub/virtualservices";
    let request = move |query: &str| {
        format!("GET {path}?{query} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n").into_bytes()
    };

    let timed_out = testkit::client::raw_request(fake.addr(), &request("watch=1&timeoutSeconds=1")).await;
    assert!(timed_out.starts_with("HTTP/1.1 200"), "{timed_out}");
    assert!(timed_out.ends_with("0\r\n\r\n"), "{timed_out:?}");

    let addr = fake.addr();
    let open = tokio::spawn(async move { testkit::client::raw_request(addr, &request("watch=true")).await });
    eventually("the watch is open", || async { fake.requests().len() == 2 }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.insert(GROUP, "v1", "virtualservices", NS, json!({"metadata": {"name": "a"}}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.break_watches();
    let broken = open.await.unwrap();
    assert!(broken.contains(r#"{"type":"ADDED""#), "{broken}");
    assert!(!broken.ends_with("0\r\n\r\n"), "{broken:?}");

    let bad = testkit::client::raw_request(fake.addr(), &request("watch=true&resourceVersion=x")).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let not_served = testkit::client::raw_request(
        fake.addr(),
        b"GET /apis/x HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        not_served.starts_with("HTTP/1.1 404") && not_served.ends_with("404 page not found\n"),
        "{not_served}"
    );
}

#[tokio::test]
async fn metadata_only_reads() {
    let (_fake, api) = setup().await;
    for name in ["a", "b"] {
        api.create(&PostParams::default(), &vs(name, json!({"app": "jhub"}), name)).await.unwrap();
    }
    let page = api.list_metadata(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name_any(), "a");
    assert_eq!(page.types.kind, "PartialObjectMetadataList");
    assert!(page.metadata.continue_.is_some());
    let one = api.get_metadata("b").await.unwrap();
    assert_eq!(one.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
    let events: Vec<_> = api
        .watch_metadata(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(o) => Some(o.name_any()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
}
