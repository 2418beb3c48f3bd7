//! `jupyterhub-istio-proxy`: parse the configuration, build the service, serve, drain.

use std::process::ExitCode;
use std::sync::Arc;

use istio_routes::IstioBackend;
use jhub_proxy_bin::config::{Config, StoreKind};
use jhub_proxy_bin::{Error, app, server};
use proxy_api::ApiConfig;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(Error::Clap(help)) => help.exit(),
        Err(error) => return fail(&error),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

async fn run(config: Config) -> Result<(), Error> {
    let namespace = config
        .k8s_namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let backend = match config.store {
        StoreKind::Memory => {
            let store = Arc::new(istio_routes::MemoryStore::new());
            Arc::new(IstioBackend::new(store, config.translation(&namespace)))
        }
        StoreKind::Kubernetes => unreachable!("refused by Config::from_args"),
    };
    let options = app::AppOptions {
        token: config.auth_token.expose().to_owned(),
        api: ApiConfig {
            routing_mode: config.routing_mode(),
            ..ApiConfig::default()
        },
        request_timeout: config.request_timeout,
        ready: Arc::new(|| true),
    };
    let service = app::service(backend, options);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    tracing::info!(store = ?config.store, host_routing = config.host_routing, "listening on http://{addr}");
    server::serve(
        listener,
        service,
        server::shutdown_signal(),
        server::DRAIN_TIMEOUT,
    )
    .await;
    Ok(())
}

/// Prints the error, with its causes, as one line, and fails.
fn fail(error: &dyn std::error::Error) -> ExitCode {
    let mut line = format!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    eprintln!("{line}");
    ExitCode::FAILURE
}
