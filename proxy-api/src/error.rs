//! The one error type of the API, and how each error is answered.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// A boxed error from a lower layer, kept as the `source` of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of everything in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong answering a request of the routes API.
///
/// Each variant knows its HTTP status ([`Error::status`]); the response body is always
/// `{"error": "<Display of the error>"}`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The route spec in the path cannot be a route.
    #[error("invalid route spec {spec:?}: {reason}")]
    InvalidSpec {
        /// The spec as it arrived (percent-decoded where that was possible).
        spec: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The route's target cannot be routed to.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The target as it arrived.
        target: String,
        /// Why it was refused.
        reason: String,
    },

    /// The body of a POST is not a route.
    #[error("invalid request body: {reason}")]
    InvalidBody {
        /// What is wrong with it.
        reason: String,
    },

    /// A query parameter is missing or cannot be used.
    #[error("invalid query parameter {parameter}: {reason}")]
    InvalidQuery {
        /// The parameter.
        parameter: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// `inactive_since` is not a timestamp. The wording is configurable-http-proxy's.
    #[error("Invalid datestamp '{0}' must be ISO8601.")]
    InvalidDatestamp(String),

    /// The request body is larger than the proxy accepts.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },

    /// The request body did not arrive in time: its stream failed with
    /// [`std::io::ErrorKind::TimedOut`], as a server's deadline on slow bodies makes it fail.
    #[error("the request body did not arrive in time")]
    BodyTimeout(#[source] BoxError),

    /// The request body could not be read (the client went away, or sent a broken body).
    #[error("could not read the request body")]
    BodyRead(#[source] BoxError),

    /// No `Authorization: token <token>` header with the right token.
    #[error("missing or wrong token: send the header 'Authorization: token <CONFIGPROXY_AUTH_TOKEN>'")]
    Unauthenticated,

    /// No such route, or no such endpoint.
    #[error("Not Found")]
    NotFound,

    /// The endpoint exists but not with this method.
    #[error("Method not supported")]
    MethodNotAllowed,

    /// The backend refused the route as invalid, for a reason our own checks did not see
    /// (the Kubernetes API server's validation): retrying the same request cannot succeed.
    #[error("{message}")]
    Refused {
        /// Why it was refused, in the backend's words.
        message: String,
        /// The underlying refusal.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend cannot be reached or is not ready yet; the client should retry.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable, for the operator.
        message: String,
        /// When to retry, sent as `Retry-After`.
        retry_after: Option<Duration>,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend refused the operation for lack of permission.
    #[error("{message}")]
    Forbidden {
        /// Which permission is missing.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend failed in a way retrying will not fix.
    #[error("{message}")]
    Internal {
        /// What failed.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// The HTTP status this error is answered with.
    ///
    /// JupyterHub retries statuses of 500 and above and raises at once on other 4xx, so only
    /// failures that may pass on their own are 5xx.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidSpec { .. }
            | Error::InvalidTarget { .. }
            | Error::InvalidBody { .. }
            | Error::InvalidQuery { .. }
            | Error::InvalidDatestamp(_)
            | Error::Refused { .. }
            | Error::BodyRead(_) => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unauthenticated | Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response for this error: its status, `{"error": "..."}`, and `Retry-After` where
    /// the backend said when to come back.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json_response(self.status(), &serde_json::json!({ "error": self.to_string() }));
        if let Error::Unavailable { retry_after: Some(after), .. } = &self {
            // Round up: `Retry-After: 0` would invite a busy loop.
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// A response with a JSON body; JupyterHub 6 refuses JSON sent under any other content type.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    // Serialising our own values into memory cannot fail.
    let bytes = serde_json::to_vec(body).expect("JSON values serialise");
    json_bytes_response(status, bytes)
}

/// A response whose body is already serialised JSON.
pub(crate) fn json_bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body_json(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_error_is_json_with_its_message() {
        let error = Error::InvalidDatestamp("yesterday".into());
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"error": "Invalid datestamp 'yesterday' must be ISO8601."})
        );
    }

    #[test]
    fn unavailable_sends_retry_after_rounded_up() {
        let error = Error::Unavailable {
            message: "not synced".into(),
            retry_after: Some(Duration::from_millis(1500)),
            source: None,
        };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn statuses_tell_jupyterhub_what_to_retry() {
        let retried = |e: Error| e.status().is_server_error();
        assert!(retried(Error::Unavailable { message: String::new(), retry_after: None, source: None }));
        assert!(retried(Error::Internal { message: String::new(), source: None }));
        assert!(!retried(Error::Forbidden { message: String::new(), source: None }));
        assert!(!retried(Error::InvalidBody { reason: String::new() }));
        assert!(!retried(Error::Refused { message: String::new(), source: None }));
        assert_eq!(Error::BodyTooLarge { limit: 1 }.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(Error::MethodNotAllowed.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(Error::Unauthenticated.status(), StatusCode::FORBIDDEN);
    }
}
