//! Watch streams: newline-delimited JSON events, replayed from the history and then streamed
//! as writes happen.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Shared;
use super::object::{Scope, partial, set_meta};
use super::selector::Selector;
use super::store::Change;

/// How often an idle watch with `allowWatchBookmarks=true` gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

/// What a watch request asks for.
#[derive(Debug)]
pub(super) struct WatchParams {
    /// Changes after this resourceVersion; `None` (or `0`) means the current objects first.
    pub(super) resource_version: Option<u64>,
    pub(super) send_initial_events: bool,
    pub(super) bookmarks: bool,
    pub(super) timeout: Option<Duration>,
    /// Send `PartialObjectMetadata` instead of the objects (kube-rs's `watch_metadata`).
    pub(super) metadata_only: bool,
}

/// One open watch: what it has sent and what it waits for.
#[derive(Debug)]
pub(super) struct WatchStream {
    shared: Arc<Shared>,
    signal: watch::Receiver<super::Signal>,
    breaks: u64,
    scope: Scope,
    selector: Selector,
    kind: String,
    cursor: u64,
    pending: VecDeque<Bytes>,
    bookmarks: bool,
    metadata_only: bool,
    started: bool,
    deadline: Option<Instant>,
    ticker: Interval,
    done: bool,
}

impl WatchStream {
    pub(super) fn open(
        shared: Arc<Shared>,
        scope: Scope,
        selector: Selector,
        params: WatchParams,
    ) -> WatchStream {
        let mut signal = shared.signal.subscribe();
        let breaks = signal.borrow_and_update().breaks;
        let mut pending = VecDeque::new();
        let (cursor, kind) = {
            let inner = shared.lock();
            let store = &inner.store;
            let kind = store.kind(&scope.group, &scope.plural);
            let initial = params.send_initial_events || params.resource_version.is_none_or(|rv| rv == 0);
            if initial {
                for (_, object) in store.select(&scope, &selector) {
                    pending.push_back(event("ADDED", object.clone(), params.metadata_only));
                }
                if params.send_initial_events {
                    pending.push_back(bookmark(&scope, &kind, store.rv, true));
                }
                (store.rv, kind)
            } else {
                (params.resource_version.unwrap_or_default(), kind)
            }
        };
        let mut ticker = tokio::time::interval_at(Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        WatchStream {
            shared,
            signal,
            breaks,
            scope,
            selector,
            kind,
            cursor,
            pending,
            bookmarks: params.bookmarks,
            metadata_only: params.metadata_only,
            started: false,
            deadline: params.timeout.map(|t| Instant::now() + t),
            ticker,
            done: false,
        }
    }

    /// The next chunk of the body; an error breaks the connection, as
    /// [`FakeKube::break_watches`](super::FakeKube::break_watches) wants.
    pub(super) async fn next(&mut self) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(Frame::data(chunk)));
            }
            if self.done {
                return None;
            }
            self.scan();
            if !self.started {
                self.started = true;
                if self.bookmarks && !self.done {
                    self.pending.push_back(bookmark(&self.scope, &self.kind, self.cursor, false));
                }
            }
            if !self.pending.is_empty() || self.done {
                continue;
            }
            let deadline = self.deadline;
            let until_deadline = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.signal.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    } else if self.signal.borrow_and_update().breaks != self.breaks {
                        self.done = true;
                        return Some(Err(std::io::Error::other("watch broken on purpose")));
                    }
                }
                () = until_deadline => self.done = true,
                _ = self.ticker.tick(), if self.bookmarks => {
                    self.pending.push_back(bookmark(&self.scope, &self.kind, self.cursor, false));
                }
            }
        }
    }

    /// Queues the events since the cursor, or a 410 Expired when they were compacted away.
    fn scan(&mut self) {
        let inner = self.shared.lock();
        let store = &inner.store;
        let until = inner.watch_hold.unwrap_or(u64::MAX);
        match store.changes_since(self.cursor) {
            Some(changes) => {
                for change in changes.take_while(|c| c.rv <= until) {
                    if let Some((kind, object)) = event_for(change, &self.scope, &self.selector) {
                        self.pending.push_back(event(kind, object, self.metadata_only));
                    }
                }
            }
            None => {
                let message = format!("too old resource version: {} ({})", self.cursor, store.compacted);
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": "Expired", "code": 410,
                });
                self.pending.push_back(line("ERROR", status));
                self.done = true;
            }
        }
        self.cursor = self.cursor.max(store.rv.min(until));
    }
}

/// What a watcher with this scope and selector sees of a change. An object that stops
/// matching is DELETED (its last matching state, at the change's resourceVersion); one that
/// starts matching is ADDED.
fn event_for(change: &Change, scope: &Scope, selector: &Selector) -> Option<(&'static str, Value)> {
    if !scope.holds(&change.key) {
        return None;
    }
    let was = change.old.as_ref().filter(|o| selector.matches(o));
    let is = change.new.as_ref().filter(|n| selector.matches(n));
    match (was, is) {
        (Some(_), Some(new)) => Some(("MODIFIED", new.clone())),
        (None, Some(new)) => Some(("ADDED", new.clone())),
        (Some(old), None) => {
            let mut old = old.clone();
            set_meta(&mut old, "resourceVersion", Value::String(change.rv.to_string()));
            Some(("DELETED", old))
        }
        (None, None) => None,
    }
}

fn bookmark(scope: &Scope, kind: &str, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", json!({"kind": kind, "apiVersion": scope.api_version(), "metadata": metadata}))
}

fn event(kind: &str, object: Value, metadata_only: bool) -> Bytes {
    line(kind, if metadata_only { partial(&object) } else { object })
}

fn line(kind: &str, object: Value) -> Bytes {
    // `type` first, as the real server writes it.
    Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))
}
