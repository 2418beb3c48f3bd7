//! Serving HTTP/1 and HTTP/2 on a listener, and draining on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Service;

/// How long in-flight requests may take to finish after shutdown begins. Kubernetes' default
/// termination grace period is 30 s; this leaves room inside it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// The most bytes an HTTP/1 request's head (request line and headers) may take; a larger one is
/// answered 431 and the connection closed. JupyterHub sends well under 1 KiB; Node's (and so
/// configurable-http-proxy's) limit is 16 KiB too. It is hyper's read buffer, whose least is 8 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most headers an HTTP/1 request may have (hyper's default, set on purpose); more is 431.
pub const MAX_HEADERS: usize = 100;

/// The most bytes of headers an HTTP/2 request may have (`SETTINGS_MAX_HEADER_LIST_SIZE`); a
/// larger one is answered 431.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// The most HTTP/2 streams a client may have open at once on one connection. JupyterHub runs
/// at most 10 requests at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;

/// How many HTTP/2 streams a client may open and reset before the server has even accepted
/// them, before the connection is closed with `ENHANCE_YOUR_CALM`: the "rapid reset" attack.
pub const MAX_PENDING_RESET_STREAMS: usize = 20;

/// How many HTTP/2 streams the server may reset for a client's errors on one connection before
/// it closes it ("MadeYouReset").
pub const MAX_LOCAL_ERROR_RESETS: usize = 256;

/// How often an idle HTTP/2 connection is pinged, and how long an answer may take before the
/// connection is closed as dead.
pub const HTTP2_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(10));

/// The limits a listener puts on its clients (docs/configuration.md, "Limits on clients").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's headers; an idle HTTP/1 connection is
    /// closed after as long. (The app gives a request's body as long again, answering 408.)
    pub client_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { client_timeout: Duration::from_secs(10) }
    }
}

impl Limits {
    /// hyper's connection builder, HTTP/1 and HTTP/2, with these limits.
    pub fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.client_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_pending_accept_reset_streams(MAX_PENDING_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
            .keep_alive_interval(HTTP2_KEEP_ALIVE.0)
            .keep_alive_timeout(HTTP2_KEEP_ALIVE.1);
        builder
    }
}

/// Serves `service` on `listener` with `limits` until `shutdown` resolves, then stops accepting
/// and waits up to `drain` for open connections to finish their requests.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = std::sync::Arc::new(limits.builder());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The API's answers are small; don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (builder, service, watcher) = (builder.clone(), service.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper waits for the first bytes, to tell HTTP/1 from HTTP/2, without a time limit:
            // a connection that sends nothing would stay open for good.
            // (A peek, as `readable()` reports a fresh connection readable before any byte.)
            let first_byte = tokio::time::timeout(limits.client_timeout, stream.peek(&mut [0u8; 1])).await;
            if first_byte.is_err() {
                return tracing::debug!(%peer, "closing a connection that sent nothing");
            }
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "shutting down: draining open connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain timed out; closing the remaining connections"),
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
}

/// A request body that fails with [`std::io::ErrorKind::TimedOut`] when it has not arrived
/// whole by a deadline, so that a client sending its body slowly holds nothing for long: the
/// routes API answers such a request 408.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    within: Duration,
}

impl<B> DeadlineBody<B> {
    /// `inner`, to arrive within `within` from now.
    pub fn new(inner: B, within: Duration) -> Self {
        DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(within)), within }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let message =
                    format!("the request body did not arrive within {} s", self.within.as_secs_f64());
                Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, message).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
