//! An HTTP client for the routes API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl ApiResponse {
    /// The body as JSON; panics, naming the body, when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` message of a JSON error body; panics when there is none.
    pub fn error(&self) -> String {
        match self.json().get("error").and_then(|e| e.as_str()) {
            Some(message) => message.to_owned(),
            None => panic!("no error message in {:?}", String::from_utf8_lossy(&self.body)),
        }
    }

    /// The keys of a JSON object body, in order: the route specs of a listing.
    pub fn keys(&self) -> Vec<String> {
        match self.json() {
            serde_json::Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not a JSON object: {other}"),
        }
    }

    /// The `Content-Type` header, or "" when there is none.
    pub fn content_type(&self) -> &str {
        self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

/// A client for one proxy, sending `Authorization: token <token>` when it has one.
#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl ApiClient {
    /// A client for the proxy at `addr`.
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        ApiClient { addr, token: token.map(str::to_owned), client, timeout: Duration::from_secs(10) }
    }

    /// The same client, waiting up to `timeout` for an answer instead of 10 s: for a benchmark
    /// whose requests may queue.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        ApiClient { timeout, ..self.clone() }
    }

    /// The same client with another token, or none.
    pub fn with_token(&self, token: Option<&str>) -> Self {
        ApiClient { token: token.map(str::to_owned), ..self.clone() }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> ApiResponse {
        self.send(Method::GET, path, &[], &[]).await
    }

    /// `POST path` with a body.
    pub async fn post(&self, path: &str, body: &str) -> ApiResponse {
        self.send(Method::POST, path, &[], body.as_bytes()).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> ApiResponse {
        self.send(Method::DELETE, path, &[], &[]).await
    }

    /// Any request, with extra headers. Panics when the proxy does not answer within 10 s
    /// (unless [`with_timeout`](Self::with_timeout) said otherwise): a hang is a failure, never
    /// a wait.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> ApiResponse {
        let mut request = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("token {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::copy_from_slice(body))).expect("a valid request");
        let call = async {
            let response = self.client.request(request).await.expect("the proxy answers");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("the body arrives").to_bytes();
            ApiResponse { status: parts.status, headers: parts.headers, body }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| panic!("no answer within {:?} from {path}", self.timeout))
    }
}

/// Sends raw bytes on a fresh connection and returns everything the server answers until it
/// closes the connection or 10 s pass, for requests a proper client would not send.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
