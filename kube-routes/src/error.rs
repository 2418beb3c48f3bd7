//! What can go wrong keeping routes in Kubernetes: the API server's answers, as errors.

use std::time::Duration;

/// A store failure. Each maps to the status JupyterHub sees (see the `From` impl below): a
/// store that cannot be reached is a 503, so JupyterHub retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer, or answered 5xx.
    #[error("the Kubernetes API server is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The route cache has not finished its first list yet.
    #[error("the route cache is still loading from the Kubernetes API server")]
    NotReady,

    /// The service account lacks a permission.
    #[error("forbidden: the proxy's service account needs '{verb}' on {resource} in namespace {namespace:?}")]
    Forbidden {
        /// The verb: get, list, watch, create, patch, delete.
        verb: &'static str,
        /// The resource as RBAC names it: `virtualservices.networking.istio.io`,
        /// `httproutes.gateway.networking.k8s.io`, `endpointslices.discovery.k8s.io`...
        resource: &'static str,
        /// The namespace.
        namespace: String,
        /// The API server's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The resource type is unknown to the API server: the CRDs that define it are not installed.
    #[error("{resource} is not served by the Kubernetes API server: install {install}")]
    NotInstalled {
        /// The resource.
        resource: &'static str,
        /// What to install, e.g. `Istio's CRDs (networking.istio.io v1)`.
        install: String,
    },

    /// The namespace the routes are written to does not exist: the operator's configuration,
    /// not JupyterHub's request, is wrong.
    #[error(
        "the namespace {namespace:?} does not exist in the Kubernetes cluster: create it, or set K8S_NAMESPACE (--k8s-namespace) to the namespace the routes belong in"
    )]
    NamespaceNotFound {
        /// The namespace.
        namespace: String,
    },

    /// The namespace the routes are written to is being deleted, and the API server refuses
    /// new objects in it.
    #[error(
        "the namespace {namespace:?} is being deleted, and the Kubernetes API server creates nothing new in it: set K8S_NAMESPACE (--k8s-namespace) to another namespace, or create it again once it is gone"
    )]
    NamespaceTerminating {
        /// The namespace.
        namespace: String,
    },

    /// An object was created meanwhile under the name we meant to create.
    #[error("{name} already exists")]
    AlreadyExists {
        /// The object's name.
        name: String,
    },

    /// An object changed since it was read (a precondition failed).
    #[error("{name} changed meanwhile")]
    Conflict {
        /// The object's name.
        name: String,
    },

    /// The API server refused the object as invalid.
    #[error("the Kubernetes API server refused {name}: {message}")]
    Invalid {
        /// The object's name.
        name: String,
        /// Its reasons.
        message: String,
    },

    /// Any other answer of the API server.
    #[error("the Kubernetes API server answered {code} for {name}: {message}")]
    Api {
        /// The HTTP status.
        code: u16,
        /// The object's name.
        name: String,
        /// The message.
        message: String,
    },
}

/// The result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for proxy_api::Error {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Unavailable(source) => proxy_api::Error::Unavailable {
                message,
                retry_after: Some(Duration::from_secs(1)),
                source: Some(source),
            },
            Error::NotReady => proxy_api::Error::Unavailable {
                message,
                retry_after: Some(Duration::from_secs(1)),
                source: None,
            },
            // A race we lost more often than retrying covers: JupyterHub retries 5xx.
            Error::AlreadyExists { .. } | Error::Conflict { .. } => proxy_api::Error::Unavailable {
                message,
                retry_after: Some(Duration::from_secs(1)),
                source: Some(Box::new(error)),
            },
            Error::Forbidden { .. } => proxy_api::Error::Forbidden { message, source: Some(Box::new(error)) },
            // The input was at fault (the API server answered 422): JupyterHub's retry would
            // be refused again, and the reason is the server's.
            Error::Invalid { .. } => proxy_api::Error::Refused { message, source: Some(Box::new(error)) },
            // The operator's configuration, which JupyterHub's retries will not fix, and which
            // its log shows with this message.
            Error::NamespaceNotFound { .. }
            | Error::NamespaceTerminating { .. }
            | Error::NotInstalled { .. }
            | Error::Api { .. } => proxy_api::Error::Internal { message, source: Some(Box::new(error)) },
        }
    }
}
