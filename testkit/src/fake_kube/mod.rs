//! A fake Kubernetes API server for namespaced custom resources, fast enough for unit tests of
//! a kube-rs client and real enough for kube-runtime's `watcher` and `reflector`.
//!
//! [`FakeKube::start`] listens on a free loopback port (plain HTTP/1.1, no TLS, no
//! authentication) and serves, for any group, version and plural:
//!
//! - `/apis/{group}/{version}/namespaces/{ns}/{plural}`: list (`labelSelector`, `limit` and
//!   `continue`), watch (`watch=true`), create (POST) and delete-collection;
//! - `.../{plural}/{name}`: get, replace (PUT, with the stored `resourceVersion`), delete (with
//!   `preconditions`), server-side apply (`application/apply-patch+yaml`, a JSON body) and JSON
//!   merge patch (`application/merge-patch+json`);
//! - `/apis/{group}/{version}/{plural}`: list and watch across namespaces; `/api/v1/...` the
//!   same for the core group; `/version`; and `/apis`, `/apis/{group}/{version}` discovery of
//!   what has been written;
//!
//! and answers anything else with the plain-text `404 page not found` of a path nothing
//! serves. Errors are JSON `Status` objects with the real server's `reason`s (`NotFound`,
//! `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `Expired`, ...). A client sending
//! `Accept: application/json;as=PartialObjectMetadata[List]` (kube-rs's `list_metadata`,
//! `get_metadata`, `watch_metadata`) gets the objects' metadata only.
//!
//! Like etcd, one resourceVersion counter orders every write; objects get `uid`,
//! `creationTimestamp` (second resolution, from a clock tests can set) and `resourceVersion`.
//! Watches replay the history since the resourceVersion asked for, then stream writes as they
//! happen, with BOOKMARKs; a watch from before [`FakeKube::compact`] gets a 410 `Expired`
//! ERROR event. An object that stops matching a watch's label selector is DELETED for it.
//! A write that changes nothing is not a write: no new resourceVersion, no event.
//!
//! Tests can inject failures ([`FakeKube::fail_next`]), slow every answer
//! ([`FakeKube::set_latency`]), hold watch events back and let them through one by one
//! ([`FakeKube::hold_watch_events`]), break watch connections ([`FakeKube::break_watches`]), stop
//! and restart the server on the same port ([`FakeKube::stop`], [`FakeKube::restart`]), and
//! see the requests it served ([`FakeKube::requests`]).
//!
//! What it does not model: admission, defaulting and schema validation (any JSON object is
//! stored as sent), field ownership (server-side apply is simplified to one manager: the
//! applied object's labels, annotations and top-level fields replace the stored ones, so
//! `force` changes nothing and there are no apply conflicts; no `managedFields`), version
//! conversion (objects keep the `apiVersion` they were written with), finalizers and
//! graceful deletion (a delete is immediate), `dryRun`, field selectors, subresources
//! (`/status`, `/scale`), strategic merge and JSON patches (415), cluster-scoped resources,
//! and `resourceVersion`/`resourceVersionMatch` on lists (a list is always the current state).
//!
//! ```no_run
//! use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
//! use testkit::fake_kube::FakeKube;
//!
//! # async fn run() {
//! let fake = FakeKube::start().await;
//! let client = kube::Client::try_from(fake.kubeconfig("jhub")).unwrap();
//! let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
//! let resource = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
//! let api: Api<DynamicObject> = Api::default_namespaced_with(client, &resource);
//! assert!(api.get_opt("missing").await.unwrap().is_none());
//! # }
//! ```

mod object;
mod selector;
mod server;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use object::Scope;
use store::Store;

/// A fake Kubernetes API server on `127.0.0.1`, stopped when dropped.
#[derive(Debug)]
pub struct FakeKube {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

/// A canned answer for [`FakeKube::fail_next`] to give instead of the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A JSON `Status` with this HTTP code and `reason`, e.g. 403 `Forbidden`, 409 `Conflict`,
    /// 500 `InternalError`, 503 `ServiceUnavailable`. (kube-rs retries 429, 503 and 504 itself.)
    Status {
        /// The HTTP status code, also the Status's `code`.
        code: u16,
        /// The Status's `reason`.
        reason: String,
    },
    /// A plain-text `404 page not found`, not a `Status`: what the API server says for a
    /// resource it does not serve, such as a CRD that is not installed.
    NotServed,
    /// Waits this long, then answers normally.
    Delay(Duration),
}

impl Answer {
    /// A JSON `Status` answer.
    pub fn status(code: u16, reason: &str) -> Answer {
        Answer::Status { code, reason: reason.to_owned() }
    }
}

/// Which requests get a canned [`Answer`], and how many times.
#[derive(Debug, Clone)]
pub struct FailureRule {
    /// Only requests with this method; `None` for any.
    pub method: Option<Method>,
    /// Only requests whose path (without the query) contains this; `None` for any.
    pub path_contains: Option<String>,
    /// Only watch requests (`Some(true)`), only other requests (`Some(false)`), or any.
    pub watch: Option<bool>,
    /// The answer.
    pub answer: Answer,
    /// How many requests get it; the rule is dropped after that.
    pub times: usize,
}

impl FailureRule {
    /// `answer` to the next request, whatever it is; narrow it with the builder methods.
    pub fn new(answer: Answer) -> FailureRule {
        FailureRule { method: None, path_contains: None, watch: None, answer, times: 1 }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: Method) -> FailureRule {
        self.method = Some(method);
        self
    }

    /// Only requests whose path contains `text`.
    pub fn path_contains(mut self, text: &str) -> FailureRule {
        self.path_contains = Some(text.to_owned());
        self
    }

    /// Only watch requests (`true`) or only the others (`false`).
    pub fn watch(mut self, watch: bool) -> FailureRule {
        self.watch = Some(watch);
        self
    }

    /// The next `times` matching requests, not just one.
    pub fn times(mut self, times: usize) -> FailureRule {
        self.times = times;
        self
    }

    fn matches(&self, method: &Method, path: &str, watch: bool) -> bool {
        self.times > 0
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self.watch.is_none_or(|w| w == watch)
    }
}

/// A request the server received, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The method.
    pub method: Method,
    /// The path, as sent (percent-encoded).
    pub path: String,
    /// The query string without the `?`, as sent; empty when there is none.
    pub query: String,
}

impl SeenRequest {
    /// A query parameter, decoded; `None` when absent.
    pub fn param(&self, name: &str) -> Option<String> {
        server::Query::parse(&self.query).get(name).map(str::to_owned)
    }

    /// Whether it is a watch (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        server::Query::parse(&self.query).flag("watch")
    }

    /// Whether it is a list: a GET of a collection that is not a watch.
    pub fn is_list(&self) -> bool {
        let segments = self.path.split('/').filter(|s| !s.is_empty()).count();
        let collection = match self.path.split('/').nth(1) {
            Some("apis") => segments == 6 || segments == 4,
            Some("api") => segments == 5 || segments == 3,
            _ => false,
        };
        self.method == Method::GET && collection && !self.is_watch()
    }
}

/// What the server's tasks and the [`FakeKube`] handle share.
#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Tells open watches about writes and [`FakeKube::break_watches`].
    signal: tokio::sync::watch::Sender<Signal>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    rules: Vec<FailureRule>,
    latency: Duration,
    requests: Vec<SeenRequest>,
    /// While set, watches deliver no event past this resourceVersion.
    watch_hold: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Signal {
    rv: u64,
    breaks: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a write on the store, then wakes the watches if it wrote anything.
    fn write<T>(&self, write: impl FnOnce(&mut Store) -> T) -> T {
        let (result, rv) = {
            let mut inner = self.lock();
            let before = inner.store.rv;
            let result = write(&mut inner.store);
            (result, (inner.store.rv != before).then_some(inner.store.rv))
        };
        if let Some(rv) = rv {
            self.signal.send_modify(|signal| signal.rv = rv);
        }
        result
    }
}

impl FakeKube {
    /// Starts serving on a free port of `127.0.0.1`, on the current Tokio runtime. Panics when
    /// it cannot listen.
    pub async fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the listener's address");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                store: Store::new(),
                rules: Vec::new(),
                latency: Duration::ZERO,
                requests: Vec::new(),
                watch_hold: None,
            }),
            signal: tokio::sync::watch::Sender::new(Signal::default()),
        });
        let server = tokio::spawn(server::serve(listener, shared.clone()));
        FakeKube { shared, addr, server: Mutex::new(Some(server)) }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client configuration for this server, with `namespace` as the default namespace.
    pub fn kubeconfig(&self, namespace: &str) -> kube::Config {
        let url = self.url().parse().expect("a loopback URL is a valid URI");
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_owned();
        config
    }

    /// Writes a kubeconfig file for this server (one cluster, context and user, no
    /// credentials, `namespace` as the context's namespace), for a process started with
    /// `KUBECONFIG=path`. Panics when the file cannot be written.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>, namespace: &str) {
        // A JSON string is a valid YAML double-quoted scalar.
        let quote = |s: &str| Value::String(s.to_owned()).to_string();
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake-kube\n  cluster:\n    server: {server}\n\
             contexts:\n- name: fake-kube\n  context:\n    cluster: fake-kube\n    user: fake-kube\n    namespace: {namespace}\n\
             current-context: fake-kube\nusers:\n- name: fake-kube\n  user: {{}}\npreferences: {{}}\n",
            server = quote(&self.url()),
            namespace = quote(namespace),
        );
        let path = path.as_ref();
        std::fs::write(path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Stores `object` (a JSON object with at least `metadata.name`) as if a client had
    /// written it through `/apis/{group}/{version}/namespaces/{namespace}/{plural}` (`group`
    /// `""` for the core group), and tells the watches. Missing `apiVersion`, `kind`, `uid`,
    /// `creationTimestamp` and `resourceVersion` are filled in; given ones are kept. Replaces
    /// an object of the same name. Returns what was stored. Panics on an object without a name.
    pub fn insert(&self, group: &str, version: &str, plural: &str, namespace: &str, object: Value) -> Value {
        assert!(
            object
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty()),
            "FakeKube::insert needs a JSON object with metadata.name, not {object}"
        );
        let scope = Scope {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            namespace: Some(namespace.to_owned()),
        };
        self.shared.write(|store| store.insert(&scope, object))
    }

    /// The stored objects of a plural (of any group, in any namespace), by namespace and name.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.shared.lock().store.objects_of(plural)
    }

    /// One stored object of a plural (of any group), if there is one.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.objects(plural).into_iter().find(|o| {
            object::meta_str(o, "namespace") == Some(namespace) && object::meta_str(o, "name") == Some(name)
        })
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.rv
    }

    /// The requests received so far (whatever their answer), oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Answers the next requests that `rule` matches with its answer. Rules are tried in the
    /// order they were added; a request uses up at most one.
    pub fn fail_next(&self, rule: FailureRule) {
        self.shared.lock().rules.push(rule);
    }

    /// Delays every answer (a watch's first byte, not its events) by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Holds back every watch event from now on, as a watch lagging behind the writes would:
    /// writes are answered as usual, and lists show them, but open and new watches deliver
    /// nothing after the current resourceVersion until
    /// [`release_watch_events`](Self::release_watch_events) lets events through, still in
    /// resourceVersion order.
    pub fn hold_watch_events(&self) {
        let mut inner = self.shared.lock();
        inner.watch_hold = Some(inner.store.rv);
    }

    /// Lets the next `count` held-back changes through to the watches (all of them with
    /// `usize::MAX`, and the hold then ends). Answers the resourceVersion watches may now
    /// deliver up to.
    pub fn release_watch_events(&self, count: usize) -> u64 {
        let released = {
            let mut inner = self.shared.lock();
            let Some(held) = inner.watch_hold else {
                return inner.store.rv;
            };
            if count == usize::MAX {
                inner.watch_hold = None;
                inner.store.rv
            } else {
                let released = inner.store.nth_change_after(held, count).unwrap_or(inner.store.rv);
                inner.watch_hold = Some(released);
                released
            }
        };
        self.shared.signal.send_modify(|signal| signal.rv = signal.rv.max(released));
        released
    }

    /// Stops the clock at `unix_second`, for `creationTimestamp`s. It runs in real time
    /// until this or [`advance_clock`](Self::advance_clock) is called.
    pub fn set_clock(&self, unix_second: i64) {
        self.shared.lock().store.set_clock(unix_second);
    }

    /// Moves the clock on by `seconds` (and stops it there).
    pub fn advance_clock(&self, seconds: i64) {
        self.shared.lock().store.advance_clock(seconds);
    }

    /// Forgets the event history, like an etcd compaction: a watch asking for an older
    /// resourceVersion than the current one, or a list continuing an older page, gets 410
    /// `Expired` and must list again.
    pub fn compact(&self) {
        self.shared.lock().store.compact();
    }

    /// Closes every open watch connection abruptly (mid-body), as a network failure would.
    pub fn break_watches(&self) {
        self.shared.signal.send_modify(|signal| signal.breaks += 1);
    }

    /// Stops listening and drops every connection; the objects are kept for
    /// [`restart`](Self::restart).
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port, with the same objects. Panics when the port is taken.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("listen again on {}: {e}", self.addr));
        let server = tokio::spawn(server::serve(listener, self.shared.clone()));
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap_or_else(PoisonError::into_inner).take() {
            server.abort();
        }
    }
}
