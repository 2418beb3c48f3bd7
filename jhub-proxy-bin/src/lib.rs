//! The parts of the `jupyterhub-istio-proxy` binary, so that tests can assemble them:
//!
//! - [`config`]: flags and environment variables; [`chp`]: configurable-http-proxy's flags;
//! - [`build`]: the service from the configuration (store, routing API, healing, activity,
//!   warm-up), which `main.rs` serves;
//! - [`app`]: the routes API behind its tower layers ([`requests`], [`auth`], [`health`],
//!   [`gate`], timeout);
//! - [`metrics`]: the Prometheus registry and `/metrics`; [`logging`]: the tracing subscriber;
//! - [`server`]: hyper serving, and draining on SIGTERM; [`tls`]: HTTPS for the probe listener;
//! - [`token`]: the token, given or read from a file and read again when it changes;
//! - [`render`]: the `render` command, objects for routes without a cluster;
//! - [`explain`]: the `explain` command and `GET /api/explain`, where the gateway sends a URL;
//! - [`warmup`]: waiting until the gateway serves a new route (`WAIT_FOR_WARMUP`);
//! - [`activity`]: routes' `last_activity` from the gateway's traffic, read from Prometheus.
//!
//! ```no_run
//! use std::sync::Arc;
//! use jhub_proxy_bin::{app, server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let options = app::AppOptions {
//!     tokens: jhub_proxy_bin::token::Tokens::fixed("secret"),
//!     api: proxy_api::ApiConfig::default(),
//!     request_timeout: std::time::Duration::from_secs(30),
//!     client_timeout: std::time::Duration::from_secs(10),
//!     ready: jhub_proxy_bin::health::Readiness::ready(),
//!     ready_wait: std::time::Duration::from_secs(10),
//!     metrics: Arc::new(jhub_proxy_bin::metrics::Metrics::new()),
//!     serve_metrics: true,
//!     explain: None,
//! };
//! let translation = istio_routes::Translation::default();
//! let store = Arc::new(istio_routes::MemoryStore::new(translation.clone()));
//! let backend = istio_routes::IstioBackend::new(store, translation);
//! let service = app::service(Arc::new(backend), options);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! let limits = server::Limits::default();
//! server::serve(listener, service, limits, server::shutdown_signal(), server::DRAIN_TIMEOUT).await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod activity;
pub mod app;
pub mod auth;
pub mod build;
pub mod chp;
pub mod config;
pub mod explain;
pub mod gate;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod render;
pub mod requests;
pub mod server;
pub mod tls;
pub mod token;
pub mod warmup;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit this binary was built from (`git rev-parse --short HEAD`, or `JHUB_PROXY_COMMIT`
/// at build time), or `unknown`.
pub const COMMIT: &str = env!("JHUB_PROXY_BUILD_COMMIT");

/// Why the proxy could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong; the message is one line naming the flag and its variable.
    #[error("{0}")]
    Config(String),

    /// `--help` or `--version`: not a failure, but clap's text to print.
    #[error(transparent)]
    Clap(clap::Error),

    /// The Kubernetes API could not be used: no configuration, CRDs missing, no permission.
    #[error("cannot use the Kubernetes API")]
    Kubernetes(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// `render` could not render what it was given.
    #[error("cannot render: {0}")]
    Render(String),

    /// The token file (`--auth-token-file`) gave no token at start. (While serving, such a
    /// failure keeps the last good token and is logged instead.)
    #[error("--auth-token-file (env CONFIGPROXY_AUTH_TOKEN_FILE) {} {problem}", path.display())]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: token::FileProblem,
        /// The error reading it, if reading failed.
        #[source]
        source: Option<std::io::Error>,
    },

    /// `explain` could not explain the URL it was given.
    #[error("cannot explain: {0}")]
    Explain(String),

    /// Prometheus gave no activity: unreachable, too slow, or an answer that is not one.
    #[error("cannot read activity from Prometheus: {0}")]
    Prometheus(String),

    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({option})")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The option that gave it: `--listen, env PROXY_LISTEN` or `--metrics-listen, env METRICS_LISTEN`.
        option: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The result of starting and running the proxy.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client of the Kubernetes API: in-cluster, or from `KUBECONFIG`; without either, an error
/// that says how to do without.
pub async fn kube_client() -> Result<kube::Client> {
    let mut config = kube::Config::infer().await.map_err(|_| {
        Error::Config(
            "--store (env PROXY_STORE) is 'kubernetes', but there is no in-cluster service account and no kubeconfig \
             (set KUBECONFIG); use --store memory to try the proxy without Kubernetes"
                .to_owned(),
        )
    })?;
    // The store retries what is worth retrying, bounded and counted (see `KubeStore::start`);
    // kube's own policy would hold a request for minutes on a struggling API server.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| Error::Kubernetes(Box::new(e)))
}
