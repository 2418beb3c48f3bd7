//! What the API server answers, as [`Error`]s and as the metrics' outcomes, and the start-up
//! checks that turn a missing CRD or grant into a message saying what to do.

use kube::Resource;
use kube::api::{Api, ListParams};
use kube::core::Status;

use crate::metrics::{KubeMetrics, Verb};
use crate::throttle::retry_throttled;
use crate::{Error, Result};

/// The class of a failed call: the metrics' outcome, and which [`Error`] it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    NotFound,
    Forbidden,
    AlreadyExists,
    Conflict,
    Invalid,
    /// 410: a watch asked for history the API server no longer keeps; routine, it relists.
    Expired,
    /// A 404 that is not about an object: the resource type itself is not served.
    NotInstalled,
    /// No answer or a 5xx: the server may be back soon.
    Unavailable,
    /// 429: the API server's priority and fairness turned the request away unprocessed; it
    /// is tried again after the wait the server asks for.
    Throttled,
    Other,
}

impl Failure {
    pub(crate) fn of(error: &kube::Error) -> Failure {
        match error {
            kube::Error::Api(status) => Failure::of_status(status),
            // The connection failed, timed out, or the client's stack did.
            _ => Failure::Unavailable,
        }
    }

    pub(crate) fn of_status(status: &Status) -> Failure {
        let code = status.code;
        if status.is_forbidden() {
            Failure::Forbidden
        } else if status.is_already_exists() {
            Failure::AlreadyExists
        } else if status.is_conflict() {
            Failure::Conflict
        } else if status.is_invalid() {
            Failure::Invalid
        } else if status.reason == "NotFound" {
            Failure::NotFound
        } else if code == 404 {
            Failure::NotInstalled
        } else if code == 410 {
            Failure::Expired
        } else if code == 429 {
            Failure::Throttled
        } else if code >= 500 {
            Failure::Unavailable
        } else {
            Failure::Other
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Failure::NotFound => "not_found",
            Failure::Forbidden => "forbidden",
            Failure::AlreadyExists => "already_exists",
            Failure::Conflict => "conflict",
            Failure::Invalid => "invalid",
            Failure::Expired => "expired",
            Failure::NotInstalled => "not_installed",
            Failure::Unavailable => "unavailable",
            Failure::Throttled => "throttled",
            Failure::Other => "error",
        }
    }
}

/// Our error for what the API server answered about `resource` (`plural.group`, as RBAC names
/// it): a permission it lacks, a name taken, a conflict, an invalid object, a type not served,
/// an outage. Writes never look for a missing object, so any 404 means the type is not served.
pub fn classify_resource(
    error: kube::Error,
    verb: &'static str,
    name: &str,
    namespace: &str,
    resource: &'static str,
) -> Error {
    let failure = Failure::of(&error);
    let status = match error {
        kube::Error::Api(status) => status,
        other => return Error::Unavailable(Box::new(other)),
    };
    let name = name.to_owned();
    // NamespaceLifecycle admission: before the verb or the kind, the namespace itself.
    if let Some(details) = status.details.as_ref().filter(|_| !namespace.is_empty()) {
        if failure == Failure::NotFound && details.kind == "namespaces" && details.name == namespace {
            return Error::NamespaceNotFound { namespace: namespace.to_owned() };
        }
        if failure == Failure::Forbidden && details.causes.iter().any(|c| c.reason == "NamespaceTerminating")
        {
            return Error::NamespaceTerminating { namespace: namespace.to_owned() };
        }
    }
    match failure {
        Failure::Forbidden => Error::Forbidden {
            verb: denied_verb(&status.message).unwrap_or(verb),
            resource,
            namespace: namespace.to_owned(),
            source: status,
        },
        Failure::AlreadyExists => Error::AlreadyExists { name },
        Failure::Conflict => Error::Conflict { name },
        Failure::Invalid => Error::Invalid { name, message: status.message.clone() },
        // Writes never look for a missing object: any 404 means the type is not served.
        Failure::NotFound | Failure::NotInstalled => Error::NotInstalled { resource, install: String::new() },
        Failure::Unavailable | Failure::Throttled => Error::Unavailable(status),
        Failure::Expired | Failure::Other => {
            Error::Api { code: status.code, name, message: status.message.clone() }
        }
    }
}

/// The verb RBAC denied, from its message (`User "u" cannot create resource "..."`), which can
/// be another than the call's: a server-side apply is a patch, and also needs `create` when
/// the object does not exist yet.
fn denied_verb(message: &str) -> Option<&'static str> {
    const VERBS: [&str; 8] =
        ["get", "list", "watch", "create", "patch", "update", "delete", "deletecollection"];
    let denied = message.split(" cannot ").nth(1)?.split(' ').next()?;
    VERBS.into_iter().find(|verb| *verb == denied)
}

/// Fails start-up, with what to do, when the API does not serve `resource` (`plural.group`) to
/// us in `namespace`: a 404 says to install `install`, a 403 names the verb. One list of at
/// most one object's metadata.
pub async fn check_kind_served<K>(
    api: &Api<K>,
    plural: &'static str,
    resource: &'static str,
    namespace: &str,
    install: &str,
    metrics: &KubeMetrics,
) -> Result<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let params = ListParams::default().limit(1);
    match retry_throttled(|| metrics.time(Verb::List, plural, api.list_metadata(&params))).await {
        Ok(_) => Ok(()),
        Err(error) => Err(match classify_resource(error, "list", "", namespace, resource) {
            Error::NotInstalled { resource, .. } => {
                Error::NotInstalled { resource, install: install.to_owned() }
            }
            other => other,
        }),
    }
}

/// The API server's current resource version, from a list of at most one object of `api`:
/// what a delete that the server answers without one (a custom resource's) is known to be no
/// older than, for the overlay's tombstone.
pub async fn server_version<K>(api: &Api<K>, plural: &'static str, metrics: &KubeMetrics) -> Option<String>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let params = ListParams::default().limit(1);
    let list = retry_throttled(|| metrics.time(Verb::List, plural, api.list_metadata(&params))).await;
    list.ok()?.metadata.resource_version
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "virtualservices.networking.istio.io";

    fn api_error(status: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(status).expect("a Status")))
    }

    /// What NamespaceLifecycle admission answers (k8s.io/apiserver's
    /// plugin/namespace/lifecycle): the namespace's own NotFound, and a Forbidden with the
    /// NamespaceTerminating cause.
    #[test]
    fn the_namespaces_own_answers_name_the_namespace_not_a_verb_or_a_crd() {
        let missing = api_error(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound",
            "message": "namespaces \"hub\" not found",
            "details": {"name": "hub", "kind": "namespaces"},
        }));
        let error = classify_resource(missing, "patch", "vs", "hub", VS);
        assert!(matches!(&error, Error::NamespaceNotFound { namespace } if namespace == "hub"), "{error:?}");
        let answered = proxy_api::Error::from(error);
        assert_eq!(answered.status(), 500, "the operator's configuration, not JupyterHub's input");
        assert!(answered.to_string().contains("set K8S_NAMESPACE"), "{answered}");

        let terminating = api_error(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "virtualservices.networking.istio.io \"vs\" is forbidden: unable to create new content in namespace hub because it is being terminated",
            "details": {"name": "vs", "group": "networking.istio.io", "kind": "virtualservices", "causes": [
                {"reason": "NamespaceTerminating", "message": "namespace hub is being terminated", "field": "metadata.namespace"},
            ]},
        }));
        let error = classify_resource(terminating, "patch", "vs", "hub", VS);
        assert!(
            matches!(&error, Error::NamespaceTerminating { namespace } if namespace == "hub"),
            "{error:?}"
        );
        assert_eq!(proxy_api::Error::from(error).status(), 500);

        // Any other 404 on a write still means the kind is not served, and any other 403 a
        // missing grant.
        let crd = api_error(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound", "message": "the server could not find the requested resource",
            "details": {"group": "networking.istio.io", "kind": "virtualservices"},
        }));
        assert!(matches!(classify_resource(crd, "patch", "vs", "hub", VS), Error::NotInstalled { .. }));
        let denied = api_error(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden", "message": "forbidden",
            "details": {"name": "vs", "group": "networking.istio.io", "kind": "virtualservices"},
        }));
        assert!(matches!(
            classify_resource(denied, "patch", "vs", "hub", VS),
            Error::Forbidden { verb: "patch", .. }
        ));
    }

    /// A server-side apply of an object that does not exist yet needs `create` as well as
    /// `patch`: the error names the verb RBAC denied, not the call's.
    #[test]
    fn a_denied_apply_names_the_verb_rbac_denied() {
        let denied = api_error(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "serviceentries.networking.istio.io \"se\" is forbidden: User \"system:serviceaccount:hub:proxy\" cannot create resource \"serviceentries\" in API group \"networking.istio.io\" in the namespace \"hub\"",
            "details": {"name": "se", "group": "networking.istio.io", "kind": "serviceentries"},
        }));
        let error = classify_resource(denied, "patch", "se", "hub", VS);
        assert!(matches!(error, Error::Forbidden { verb: "create", .. }), "{error:?}");
        assert_eq!(denied_verb("User \"u\" cannot frobnicate resource"), None);
    }
}
