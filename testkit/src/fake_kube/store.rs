//! The objects, the resourceVersion counter, the event history, and the writes the API allows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::object::{
    ApiError, Key, Scope, check_namespace, keep_system_fields, merge, meta_str, parse_object, remove_meta,
    set_meta,
};
use super::selector::Selector;

/// One write, as watchers see it.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) key: Key,
    pub(super) old: Option<Value>,
    pub(super) new: Option<Value>,
}

/// A write's answer: the status code and the object.
pub(super) type Written = Result<(u16, Value), ApiError>;

/// Everything the fake API server stores.
#[derive(Debug)]
pub(super) struct Store {
    /// The last resourceVersion handed out; every write takes the next.
    pub(super) rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// Watches must start at or after this resourceVersion.
    pub(super) compacted: u64,
    kinds: BTreeMap<(String, String), String>,
    /// (group, version, plural) written through, for discovery.
    pub(super) served: BTreeSet<(String, String, String)>,
    clock: Option<i64>,
    uids: u64,
    uid_seed: u64,
}

impl Store {
    pub(super) fn new() -> Store {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        Store {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            kinds: BTreeMap::new(),
            served: BTreeSet::new(),
            clock: None,
            uids: 0,
            uid_seed: (u64::from(nanos) << 32 | u64::from(std::process::id()))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    pub(super) fn set_clock(&mut self, second: i64) {
        self.clock = Some(second);
    }

    pub(super) fn advance_clock(&mut self, seconds: i64) {
        self.clock = Some(self.now() + seconds);
    }

    fn now(&self) -> i64 {
        self.clock.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        })
    }

    fn timestamp(&self) -> String {
        // RFC 3339 in UTC, with whole seconds as the API server writes them.
        jiff::Timestamp::from_second(self.now()).map(|t| t.to_string()).unwrap_or_default()
    }

    fn new_uid(&mut self) -> String {
        self.uids += 1;
        let seed = self.uid_seed;
        format!("{:08x}-{:04x}-4000-8000-{:012x}", seed >> 32 & 0xffff_ffff, seed & 0xffff, self.uids)
    }

    /// The kind of a collection: learned from the objects written, else guessed from the plural.
    pub(super) fn kind(&self, group: &str, plural: &str) -> String {
        if let Some(kind) = self.kinds.get(&(group.to_owned(), plural.to_owned())) {
            return kind.clone();
        }
        let known = [
            ("virtualservices", "VirtualService"),
            ("serviceentries", "ServiceEntry"),
            ("destinationrules", "DestinationRule"),
            ("gateways", "Gateway"),
            ("configmaps", "ConfigMap"),
        ];
        if let Some((_, kind)) = known.iter().find(|(p, _)| *p == plural) {
            return (*kind).to_owned();
        }
        let singular = plural.strip_suffix("ies").map(|s| format!("{s}y"));
        let singular = singular.as_deref().or_else(|| plural.strip_suffix('s')).unwrap_or(plural);
        let mut chars = singular.chars();
        chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
    }

    fn learn(&mut self, scope: &Scope, object: &Value) {
        if let Some(kind) = object.get("kind").and_then(Value::as_str) {
            self.kinds.insert((scope.group.clone(), scope.plural.clone()), kind.to_owned());
        }
        self.served.insert((scope.group.clone(), scope.version.clone(), scope.plural.clone()));
    }

    /// Stores `new` under `key` (or removes the object) at the next resourceVersion, records
    /// the change, and returns what was stored.
    fn commit(&mut self, key: &Key, new: Option<Value>) -> Option<Value> {
        self.rv += 1;
        let rv = self.rv;
        let new = new.map(|mut object| {
            set_meta(&mut object, "resourceVersion", Value::String(rv.to_string()));
            object
        });
        let old = match &new {
            Some(object) => self.objects.insert(key.clone(), object.clone()),
            None => self.objects.remove(key),
        };
        self.history.push_back(Change { rv, key: key.clone(), old, new: new.clone() });
        new
    }

    /// Forgets the history: watches from older resourceVersions get 410 Expired.
    pub(super) fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// The changes after `rv`, or `None` when some of them were compacted away.
    pub(super) fn changes_since(&self, rv: u64) -> Option<impl Iterator<Item = &Change>> {
        (rv >= self.compacted).then(|| self.history.iter().filter(move |c| c.rv > rv))
    }

    /// The resourceVersion of the `count`th change after `rv` (`None` when there are fewer).
    pub(super) fn nth_change_after(&self, rv: u64, count: usize) -> Option<u64> {
        let mut after = self.history.iter().filter(|c| c.rv > rv);
        count.checked_sub(1).and_then(|n| after.nth(n)).map(|c| c.rv)
    }

    pub(super) fn get(&self, scope: &Scope, name: &str) -> Result<&Value, ApiError> {
        self.objects.get(&scope.key(name)).ok_or_else(|| ApiError::not_found(scope, name))
    }

    /// The objects a selector picks, ordered by namespace and name.
    pub(super) fn select<'a>(
        &'a self,
        scope: &'a Scope,
        selector: &'a Selector,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, v)| scope.holds(k) && selector.matches(v))
    }

    pub(super) fn objects_of(&self, plural: &str) -> Vec<Value> {
        self.objects.iter().filter(|(k, _)| k.plural == plural).map(|(_, v)| v.clone()).collect()
    }

    /// A page of a list. A continue token is `rv/namespace/name`: the list's resourceVersion
    /// and the last object sent, so later pages report the first page's resourceVersion.
    pub(super) fn list(
        &self,
        scope: &Scope,
        selector: &Selector,
        limit: usize,
        token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (rv, after) = match token {
            None => (self.rv, None),
            Some(token) => {
                let mut parts = token.splitn(3, '/');
                let (Some(rv), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(ApiError::bad_request(format!("invalid continue token {token:?}")));
                };
                let rv: u64 = rv
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid continue token {token:?}")))?;
                if rv < self.compacted {
                    let message =
                        "The provided continue parameter is too old to display a consistent list result.";
                    return Err(ApiError::new(410, "Expired", message));
                }
                (rv, Some((ns.to_owned(), name.to_owned())))
            }
        };
        let mut items = Vec::new();
        let mut next = None;
        let picked = self
            .select(scope, selector)
            .filter(|(k, _)| after.as_ref().is_none_or(|(ns, name)| (&k.namespace, &k.name) > (ns, name)));
        for (key, object) in picked {
            if limit > 0 && items.len() == limit {
                break;
            }
            items.push(object.clone());
            next = Some(key);
        }
        let more = limit > 0
            && items.len() == limit
            && next.is_some_and(|last| {
                self.select(scope, selector)
                    .any(|(k, _)| (&k.namespace, &k.name) > (&last.namespace, &last.name))
            });
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let (true, Some(last)) = (more, next) {
            metadata["continue"] = Value::String(format!("{rv}/{}/{}", last.namespace, last.name));
        }
        Ok(json!({
            "apiVersion": scope.api_version(),
            "kind": format!("{}List", self.kind(&scope.group, &scope.plural)),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// POST: a new object; 409 AlreadyExists when the name is taken.
    pub(super) fn create(&mut self, scope: &Scope, body: &[u8]) -> Written {
        let mut object = parse_object(body)?;
        let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{:05x}", self.rv + 1),
            _ => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        check_namespace(scope, &object)?;
        if self.objects.contains_key(&scope.key(&name)) {
            let message = format!("{} {name:?} already exists", scope.resource());
            return Err(ApiError::new(409, "AlreadyExists", message).about(scope, &name));
        }
        self.fill_types(scope, &mut object);
        self.stamp_new(scope, &name, &mut object);
        Ok((201, self.commit(&scope.key(&name), Some(object)).unwrap_or_default()))
    }

    /// Server-side apply, for a single field manager: creates the object, or replaces its
    /// labels, annotations and every top-level field but `metadata` and `status` with the
    /// applied object's. Conflicts between managers, and so `force`, do not arise.
    pub(super) fn apply(&mut self, scope: &Scope, name: &str, body: &[u8], manager: Option<&str>) -> Written {
        if manager.is_none_or(str::is_empty) {
            return Err(ApiError::bad_request("fieldManager: Required value: is required for apply patch"));
        }
        let mut applied = parse_object(body)?;
        if meta_str(&applied, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "metadata.name: Invalid value: the name of the object does not match the name on the URL ({name:?})"
            )));
        }
        check_namespace(scope, &applied)?;
        for field in ["apiVersion", "kind"] {
            if applied.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!("{field} must be set")));
            }
        }
        let Some(old) = self.objects.get(&scope.key(name)).cloned() else {
            self.stamp_new(scope, name, &mut applied);
            self.learn(scope, &applied);
            return Ok((201, self.commit(&scope.key(name), Some(applied)).unwrap_or_default()));
        };
        if meta_str(&applied, "resourceVersion")
            .is_some_and(|rv| Some(rv) != meta_str(&old, "resourceVersion"))
        {
            return Err(ApiError::stale(scope, name));
        }
        let mut new = old.clone();
        if let (Some(new_fields), Some(applied_fields)) = (new.as_object_mut(), applied.as_object()) {
            new_fields.retain(|k, _| k == "metadata" || k == "status");
            for (k, v) in applied_fields {
                if k != "metadata" && k != "status" {
                    new_fields.insert(k.clone(), v.clone());
                }
            }
        }
        for field in ["labels", "annotations"] {
            match applied.get("metadata").and_then(|m| m.get(field)) {
                Some(value) => set_meta(&mut new, field, value.clone()),
                None => remove_meta(&mut new, field),
            }
        }
        self.learn(scope, &new);
        Ok((200, self.update(scope, name, old, new)))
    }

    /// JSON merge patch (RFC 7386) of an existing object.
    pub(super) fn merge_patch(&mut self, scope: &Scope, name: &str, body: &[u8]) -> Written {
        let old = self.get(scope, name)?.clone();
        let patch = parse_object(body)?;
        let mut new = old.clone();
        merge(&mut new, &patch);
        for field in ["name", "namespace"] {
            if meta_str(&new, field) != meta_str(&old, field) {
                return Err(ApiError::bad_request(format!("metadata.{field} cannot be changed by a patch")));
            }
        }
        if meta_str(&patch, "resourceVersion").is_some_and(|rv| Some(rv) != meta_str(&old, "resourceVersion"))
        {
            return Err(ApiError::stale(scope, name));
        }
        keep_system_fields(&old, &mut new);
        Ok((200, self.update(scope, name, old, new)))
    }

    /// PUT: replaces an object whose resourceVersion the client names.
    pub(super) fn replace(&mut self, scope: &Scope, name: &str, body: &[u8]) -> Written {
        let old = self.get(scope, name)?.clone();
        let mut new = parse_object(body)?;
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object does not match the name on the URL ({name:?})"
            )));
        }
        check_namespace(scope, &new)?;
        match meta_str(&new, "resourceVersion") {
            None | Some("") => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            Some(rv) if Some(rv) != meta_str(&old, "resourceVersion") => {
                return Err(ApiError::stale(scope, name));
            }
            Some(_) => {}
        }
        keep_system_fields(&old, &mut new);
        self.fill_types(scope, &mut new);
        Ok((200, self.update(scope, name, old, new)))
    }

    /// DELETE: removes the object, checking `preconditions` in the DeleteOptions body.
    pub(super) fn delete(&mut self, scope: &Scope, name: &str, body: &[u8]) -> Written {
        let old = self.get(scope, name)?.clone();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let options: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            let preconditions = options.get("preconditions").cloned().unwrap_or(Value::Null);
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(wanted) = preconditions.get(field).and_then(Value::as_str) {
                    let actual = meta_str(&old, field).unwrap_or_default();
                    if wanted != actual {
                        let why = format!(
                            "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}"
                        );
                        return Err(ApiError::conflict(scope, name, why));
                    }
                }
            }
        }
        self.commit(&scope.key(name), None);
        // As the real server answers for a custom resource: a Status naming what went, with no
        // resourceVersion.
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {
                "name": name, "group": scope.group, "kind": scope.plural,
                "uid": meta_str(&old, "uid").unwrap_or_default(),
            },
        });
        Ok((200, status))
    }

    /// DELETE on a collection: removes what the selector picks; answers with the list removed.
    pub(super) fn delete_collection(&mut self, scope: &Scope, selector: &Selector) -> Written {
        let doomed: Vec<(Key, Value)> =
            self.select(scope, selector).map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, _) in &doomed {
            self.commit(key, None);
        }
        let items: Vec<Value> = doomed.into_iter().map(|(_, v)| v).collect();
        let list = json!({
            "apiVersion": scope.api_version(),
            "kind": format!("{}List", self.kind(&scope.group, &scope.plural)),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        });
        Ok((200, list))
    }

    /// Seeds an object, keeping the uid, creationTimestamp and resourceVersion it carries.
    pub(super) fn insert(&mut self, scope: &Scope, mut object: Value) -> Value {
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        let key = scope.key(&name);
        self.fill_types(scope, &mut object);
        set_meta(&mut object, "namespace", Value::String(key.namespace.clone()));
        let existing = self.objects.get(&key).cloned();
        for field in ["uid", "creationTimestamp"] {
            if meta_str(&object, field).is_none() {
                let value = match (&existing, field) {
                    (Some(old), _) => meta_str(old, field).map(str::to_owned).unwrap_or_default(),
                    (None, "uid") => self.new_uid(),
                    (None, _) => self.timestamp(),
                };
                set_meta(&mut object, field, Value::String(value));
            }
        }
        let given = meta_str(&object, "resourceVersion").map(str::to_owned);
        if let Some(rv) = given.as_deref().and_then(|rv| rv.parse::<u64>().ok()) {
            self.rv = self.rv.max(rv.saturating_sub(1));
        }
        let mut stored = self.commit(&key, Some(object)).unwrap_or_default();
        if let Some(given) = given {
            set_meta(&mut stored, "resourceVersion", Value::String(given));
            self.objects.insert(key, stored.clone());
            if let Some(change) = self.history.back_mut() {
                change.new = Some(stored.clone());
            }
        }
        stored
    }

    /// Stores `new` unless it equals `old`: like the real server, a no-op write keeps the
    /// resourceVersion and tells no watcher.
    fn update(&mut self, scope: &Scope, name: &str, old: Value, new: Value) -> Value {
        if new == old {
            return old;
        }
        self.commit(&scope.key(name), Some(new)).unwrap_or_default()
    }

    fn fill_types(&mut self, scope: &Scope, object: &mut Value) {
        if object.get("apiVersion").and_then(Value::as_str).is_none_or(str::is_empty) {
            object["apiVersion"] = Value::String(scope.api_version());
        }
        if object.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
            object["kind"] = Value::String(self.kind(&scope.group, &scope.plural));
        }
        self.learn(scope, object);
    }

    fn stamp_new(&mut self, scope: &Scope, name: &str, object: &mut Value) {
        let uid = self.new_uid();
        let created = self.timestamp();
        set_meta(object, "name", Value::String(name.to_owned()));
        set_meta(object, "namespace", Value::String(scope.namespace.clone().unwrap_or_default()));
        set_meta(object, "uid", Value::String(uid));
        set_meta(object, "creationTimestamp", Value::String(created));
        remove_meta(object, "resourceVersion");
    }
}
