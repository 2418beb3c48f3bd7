//! The routes API as a tower [`Service`].
//!
//! Statuses and bodies follow configurable-http-proxy's REST API (its README and
//! `lib/configproxy.js`, <https://github.com/jupyterhub/configurable-http-proxy>), with
//! its rough edges filed off: every error is JSON, bodies are bounded, malformed escapes are a
//! 400, and `DELETE /api/routes` answers instead of hanging.
//!
//! Logging is the server's: a POST records the new route's target as the field `target` of
//! the [`tracing`] span it runs in, if that span declares one, so that the server's one line
//! per request names it; routes added and deleted are logged at DEBUG besides.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower::Service;

use crate::spec::percent_decode_strict;
use crate::wire;
use crate::{Backend, BoxError, Error, Result, RouteSpec, RoutingMode};

/// The path every endpoint of the API lives under.
pub const ROUTES_PATH: &str = "/api/routes";

/// How the API reads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConfig {
    /// Whether specs start with a host.
    pub routing_mode: RoutingMode,
    /// The largest request body accepted; larger ones are answered 413. (A body whose stream
    /// fails with [`std::io::ErrorKind::TimedOut`] is answered 408: the server's deadline for slow
    /// clients is a body wrapper in front of the API.)
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { routing_mode: RoutingMode::Path, max_body_bytes: 1024 * 1024 }
    }
}

/// The future of [`RoutesApi`] and of every tower layer in front of it: one boxed future with
/// one name, because each answers from an async block, and infallible, because every failure
/// is an answer too (a JSON error with its status). `B` is the response body.
pub type ResponseFuture<B = Full<Bytes>> =
    Pin<Box<dyn Future<Output = std::result::Result<Response<B>, Infallible>> + Send>>;

/// configurable-http-proxy's routes API over a [`Backend`].
///
/// It answers every request itself (its error type is [`Infallible`]); authentication is a
/// layer in front of it.
#[derive(Debug)]
pub struct RoutesApi<B> {
    backend: Arc<B>,
    config: ApiConfig,
}

impl<B> Clone for RoutesApi<B> {
    fn clone(&self) -> Self {
        RoutesApi { backend: Arc::clone(&self.backend), config: self.config }
    }
}

impl<B: Backend> RoutesApi<B> {
    /// The API over `backend`.
    pub fn new(backend: Arc<B>, config: ApiConfig) -> Self {
        RoutesApi { backend, config }
    }

    /// Answers one request.
    pub async fn handle<ReqBody>(&self, request: Request<ReqBody>) -> Response<Full<Bytes>>
    where
        ReqBody: Body,
        ReqBody::Error: Into<BoxError>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        match self.dispatch(request).await {
            Ok(response) => response,
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(%method, %path, error = %ErrorChain(&error), "request failed");
                }
                error.into_response()
            }
        }
    }

    async fn dispatch<ReqBody>(&self, request: Request<ReqBody>) -> Result<Response<Full<Bytes>>>
    where
        ReqBody: Body,
        ReqBody::Error: Into<BoxError>,
    {
        let Some(rest) = request.uri().path().strip_prefix(ROUTES_PATH) else {
            return Err(Error::NotFound);
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(Error::NotFound);
        }
        let is_listing = rest.is_empty() || rest == "/";
        match *request.method() {
            Method::GET if is_listing => self.list(request.uri().query()).await,
            Method::GET => {
                let spec = self.spec(rest)?;
                let route = self.backend.get(&spec).await?.ok_or(Error::NotFound)?;
                let json = route.wire_json().as_bytes().to_vec();
                Ok(crate::error::json_bytes_response(StatusCode::OK, json))
            }
            Method::POST => {
                let spec = self.spec(rest)?;
                let body = self.read_body(request).await?;
                let route = wire::route_from_body(spec, &body)?;
                // Into the request's own log line, when the server's span has the field: one
                // line per request, whatever it is (see the module's docs).
                tracing::Span::current().record("target", tracing::field::display(route.target()));
                tracing::debug!(spec = %route.spec(), target = %route.target(), "adding route");
                self.backend.add(route).await?;
                Ok(empty(StatusCode::CREATED))
            }
            Method::DELETE => {
                let spec = self.spec(rest)?;
                if !self.backend.delete(&spec).await? {
                    return Err(Error::NotFound);
                }
                tracing::debug!(%spec, "deleted route");
                Ok(empty(StatusCode::NO_CONTENT))
            }
            _ => Err(Error::MethodNotAllowed),
        }
    }

    fn spec(&self, encoded: &str) -> Result<RouteSpec> {
        RouteSpec::from_encoded(encoded, self.config.routing_mode)
    }

    async fn list(&self, query: Option<&str>) -> Result<Response<Full<Bytes>>> {
        let since = inactive_since_param(query)?.map(|t| wire::parse_datestamp(&t)).transpose()?;
        let mut routes = self.backend.list().await?;
        if let Some(since) = since {
            routes.retain(|route| wire::inactive_since(route, since));
        }
        // Sorted keys make the listing stable between calls and replicas.
        routes.sort_unstable_by(|a, b| a.spec().cmp(b.spec()));
        Ok(crate::error::json_bytes_response(StatusCode::OK, wire::route_table_json(&routes)))
    }

    async fn read_body<ReqBody>(&self, request: Request<ReqBody>) -> Result<Bytes>
    where
        ReqBody: Body,
        ReqBody::Error: Into<BoxError>,
    {
        let limit = self.config.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(Error::BodyTooLarge { limit });
        }
        match Limited::new(request.into_body(), limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<LengthLimitError>() => Err(Error::BodyTooLarge { limit }),
            Err(error) if timed_out(&*error) => Err(Error::BodyTimeout(error)),
            Err(error) => Err(Error::BodyRead(error)),
        }
    }
}

/// Whether a body's error, or one of its causes, is an I/O time-out: the server gave up on a
/// slow client, which is the client's fault (408), not a broken body (400).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cause = error.source();
    }
    false
}

impl<B, ReqBody> Service<Request<ReqBody>> for RoutesApi<B>
where
    B: Backend,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move { Ok(api.handle(request).await) })
    }
}

/// The value of `inactive_since` (or CHP's other spelling, `inactiveSince`), decoded.
fn inactive_since_param(query: Option<&str>) -> Result<Option<String>> {
    // A literal '+' stays a '+', so an unencoded offset like +02:00 still parses.
    query_param(query, &["inactive_since", "inactiveSince"])
        .map_err(|raw| Error::InvalidDatestamp(raw.to_owned()))
}

/// The first value of a query parameter under any of `names`, percent-decoded ('+' kept);
/// `Err` with the raw value when it has a malformed escape.
pub fn query_param<'q>(query: Option<&'q str>, names: &[&str]) -> Result<Option<String>, &'q str> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if names.contains(&key) {
            return percent_decode_strict(value).map(Some).map_err(|_| value);
        }
    }
    Ok(None)
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

/// Displays an error with its chain of sources, for logs.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::eq;
    use serde_json::{Value, json};

    use super::*;
    use crate::backend::MockBackend;
    use crate::{Route, Target};

    fn api(backend: MockBackend) -> RoutesApi<MockBackend> {
        RoutesApi::new(Arc::new(backend), ApiConfig::default())
    }

    fn request(method: Method, uri: &str, body: &str) -> Request<Full<Bytes>> {
        Request::builder().method(method).uri(uri).body(Full::new(Bytes::from(body.to_owned()))).unwrap()
    }

    async fn answer(api: &RoutesApi<MockBackend>, request: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let response = api.handle(request).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, body)
    }

    fn route(spec: &str, target: &str) -> Arc<Route> {
        let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
        Arc::new(Route::new(spec, Target::parse(target).unwrap(), Default::default()).unwrap())
    }

    #[tokio::test]
    async fn backend_unavailable_is_503_with_retry_after() {
        let mut backend = MockBackend::new();
        backend.expect_list().returning(|| {
            Err(Error::Unavailable {
                message: "the Kubernetes API server is unreachable".into(),
                retry_after: Some(std::time::Duration::from_secs(2)),
                source: None,
            })
        });
        let response = api(backend).handle(request(Method::GET, "/api/routes", "")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[tokio::test]
    async fn backend_errors_keep_their_status_and_message() {
        let mut backend = MockBackend::new();
        backend.expect_add().returning(|_| {
            Err(Error::Forbidden {
                message: "cannot patch virtualservices in namespace hub".into(),
                source: None,
            })
        });
        backend.expect_delete().returning(|_| Err(Error::Internal { message: "boom".into(), source: None }));
        let api = api(backend);
        let (status, body) =
            answer(&api, request(Method::POST, "/api/routes/x", r#"{"target":"http://a"}"#)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, json!({"error": "cannot patch virtualservices in namespace hub"}));
        let (status, _) = answer(&api, request(Method::DELETE, "/api/routes/x", "")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn invalid_requests_never_reach_the_backend() {
        // A MockBackend with no expectations panics on any call.
        let api = api(MockBackend::new());
        for (method, uri, body, status) in [
            (Method::POST, "/api/routes/x", "{}", StatusCode::BAD_REQUEST),
            (Method::POST, "/api/routes/x", r#"{"target":"nope"}"#, StatusCode::BAD_REQUEST),
            (Method::POST, "/api/routes/%zz", r#"{"target":"http://a"}"#, StatusCode::BAD_REQUEST),
            (Method::DELETE, "/api/routes/a/../b", "", StatusCode::BAD_REQUEST),
            (Method::GET, "/api/routes/%", "", StatusCode::BAD_REQUEST),
            (Method::GET, "/api/routes?inactive_since=soon", "", StatusCode::BAD_REQUEST),
            (Method::PUT, "/api/routes/x", "", StatusCode::METHOD_NOT_ALLOWED),
            (Method::GET, "/api/routesx", "", StatusCode::NOT_FOUND),
            (Method::GET, "/api", "", StatusCode::NOT_FOUND),
        ] {
            let (got, body) = answer(&api, request(method.clone(), uri, body)).await;
            assert_eq!(got, status, "{method} {uri}");
            assert!(body["error"].is_string(), "{method} {uri}: {body}");
        }
    }

    /// A body whose first frame is an I/O error of this kind.
    struct FailingBody(std::io::ErrorKind);

    impl Body for FailingBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            std::task::Poll::Ready(Some(Err(std::io::Error::new(self.0, "gone").into())))
        }
    }

    #[tokio::test]
    async fn a_body_that_times_out_is_408_and_one_that_breaks_is_400() {
        let api = api(MockBackend::new());
        for (kind, status) in [
            (std::io::ErrorKind::TimedOut, StatusCode::REQUEST_TIMEOUT),
            (std::io::ErrorKind::ConnectionReset, StatusCode::BAD_REQUEST),
        ] {
            let request = Request::post("/api/routes/x").body(FailingBody(kind)).unwrap();
            let response = api.handle(request).await;
            assert_eq!(response.status(), status, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn posts_pass_the_decoded_spec_and_whole_route() {
        let mut backend = MockBackend::new();
        backend
            .expect_add()
            .withf(|route| {
                route.spec().as_str() == "/user/秀樹"
                    && route.target().as_str() == "http://10.0.0.1:8888"
                    && route.data() == *json!({"jupyterhub": true, "user": "秀樹"}).as_object().unwrap()
            })
            .times(1)
            .returning(|_| Ok(()));
        let body = r#"{"target":"http://10.0.0.1:8888","jupyterhub":true,"user":"秀樹"}"#;
        let (status, body) =
            answer(&api(backend), request(Method::POST, "/api/routes/user/%E7%A7%80%E6%A8%B9/", body)).await;
        assert_eq!((status, body), (StatusCode::CREATED, Value::Null));
    }

    #[tokio::test]
    async fn delete_of_missing_route_is_404_and_without_path_is_the_root() {
        let mut backend = MockBackend::new();
        backend.expect_delete().with(eq(RouteSpec::root())).times(2).returning(|_| Ok(false));
        let api = api(backend);
        for uri in ["/api/routes", "/api/routes/"] {
            let (status, _) = answer(&api, request(Method::DELETE, uri, "")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn listing_is_sorted_and_filtered_by_inactive_since() {
        let mut backend = MockBackend::new();
        backend.expect_list().returning(|| {
            let old = RouteSpec::new("/old", RoutingMode::Path).unwrap();
            let data = json!({"last_activity": "2020-01-01T00:00:00Z"}).as_object().unwrap().clone();
            let old = Arc::new(Route::new(old, Target::parse("http://o").unwrap(), data).unwrap());
            Ok(vec![route("/z", "http://z"), old, route("/a", "http://a")])
        });
        let api = api(backend);
        let response = api.handle(request(Method::GET, "/api/routes", "")).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.find("\"/a\"").unwrap() < text.find("\"/old\"").unwrap());
        assert!(text.find("\"/old\"").unwrap() < text.find("\"/z\"").unwrap());

        for param in ["inactive_since", "inactiveSince"] {
            let uri = format!("/api/routes?{param}=2021-01-01T00:00:00%2B00:00");
            let (status, body) = answer(&api, request(Method::GET, &uri, "")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["/old"], "{param}");
        }
    }
}
