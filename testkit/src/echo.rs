//! A server that says who it is and what it was asked: the backend of routing tests whose
//! judge is a real gateway. Every request is answered `200` with the body `<name> <path>`, the
//! path exactly as it arrived (escapes and query kept), so a test reads both where the gateway
//! sent the request and what path it forwarded.
//!
//! ```no_run
//! # async fn run() {
//! let network = testkit::podnet::PodNetwork::new();
//! let listener = network.bind_tokio((network.pod_ip(), 0).into()).unwrap();
//! let server = testkit::echo::EchoServer::serve(listener, "alice");
//! // A gateway's request for /user/alice/lab reaches it: the body is "alice /user/alice/lab".
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// A running echo server, stopped when dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Serves on `listener` as `name`.
    pub fn serve(listener: tokio::net::TcpListener, name: &str) -> EchoServer {
        let addr = listener.local_addr().expect("the listener's address");
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let name = name.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    let body = Full::new(Bytes::from(format!("{name} {path}")));
                    async move { Ok::<_, Infallible>(Response::new(body)) }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EchoServer { addr, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an echo server's answer says: the server's name and the path it was asked for; `None`
/// for a body no echo server wrote.
pub fn read_answer(body: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let (name, path) = text.split_once(' ')?;
    path.starts_with('/').then(|| (name.to_owned(), path.to_owned()))
}
