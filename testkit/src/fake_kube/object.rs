//! Where objects live, the errors the API answers with, and JSON helpers for objects.

use serde_json::{Map, Value, json};

/// Where an object lives: API group (`""` for the core group), plural, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) group: String,
    pub(super) plural: String,
    pub(super) namespace: String,
    pub(super) name: String,
}

/// A collection a request addresses: one namespace, or all of them.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
    pub(super) namespace: Option<String>,
}

impl Scope {
    pub(super) fn holds(&self, key: &Key) -> bool {
        key.group == self.group
            && key.plural == self.plural
            && self.namespace.as_ref().is_none_or(|ns| *ns == key.namespace)
    }

    pub(super) fn key(&self, name: &str) -> Key {
        Key {
            group: self.group.clone(),
            plural: self.plural.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }

    /// `group/version`, or `version` for the core group.
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub(super) fn resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// A failed request, answered with a `Status`.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    pub(super) code: u16,
    pub(super) reason: String,
    pub(super) message: String,
    pub(super) details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason: reason.to_owned(), message: message.into(), details: None }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub(super) fn about(mut self, scope: &Scope, name: &str) -> ApiError {
        self.details = Some(json!({"name": name, "group": scope.group, "kind": scope.plural}));
        self
    }

    pub(super) fn not_found(scope: &Scope, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} {name:?} not found", scope.resource())).about(scope, name)
    }

    pub(super) fn conflict(scope: &Scope, name: &str, why: impl std::fmt::Display) -> ApiError {
        let message = format!("Operation cannot be fulfilled on {} {name:?}: {why}", scope.resource());
        ApiError::new(409, "Conflict", message).about(scope, name)
    }

    pub(super) fn stale(scope: &Scope, name: &str) -> ApiError {
        let why =
            "the object has been modified; please apply your changes to the latest version and try again";
        ApiError::conflict(scope, name, why)
    }

    /// The `Status` object the API server sends.
    pub(super) fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details.clone().unwrap_or_else(|| json!({})),
            "code": self.code,
        })
    }
}

/// A request body that must be a JSON object (with an object, if any, as `metadata`).
pub(super) fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))?;
    let metadata_ok = value.get("metadata").is_none_or(|m| m.is_object() || m.is_null());
    if !value.is_object() || !metadata_ok {
        return Err(ApiError::bad_request("the body must be a JSON object, with an object as metadata"));
    }
    Ok(value)
}

pub(super) fn check_namespace(scope: &Scope, object: &Value) -> Result<(), ApiError> {
    match (meta_str(object, "namespace"), &scope.namespace) {
        (Some(ns), Some(url_ns)) if !ns.is_empty() && ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

pub(super) fn keep_system_fields(old: &Value, new: &mut Value) {
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(value) => set_meta(new, field, value.clone()),
            None => remove_meta(new, field),
        }
    }
    for field in ["apiVersion", "kind"] {
        if new.get(field).and_then(Value::as_str).is_none_or(str::is_empty)
            && let Some(value) = old.get(field)
        {
            new[field] = value.clone();
        }
    }
}

/// What kube-rs's `*_metadata` calls ask for (`Accept: ...;as=PartialObjectMetadata`): an
/// object's metadata alone, or a list of them.
pub(super) fn partial(value: &Value) -> Value {
    let meta = |object: &Value| {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })
    };
    match value.get("items").and_then(Value::as_array) {
        Some(items) => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": value.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "items": items.iter().map(meta).collect::<Vec<_>>(),
        }),
        None => meta(value),
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub(super) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

pub(super) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

pub(super) fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"][field] = value;
}

pub(super) fn remove_meta(object: &mut Value, field: &str) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        merge(&mut target, &json!({"a": [1]}));
        assert_eq!(target["a"], json!([1]));
    }
}
