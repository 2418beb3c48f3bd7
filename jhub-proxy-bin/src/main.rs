//! `jupyterhub-istio-proxy`: parse the configuration, build the service, serve, drain.

use std::process::ExitCode;
use std::sync::Arc;

use istio_routes::{IstioBackend, KubeStore, MemoryStore, RouteStore};
use jhub_proxy_bin::config::{Command, Config, StoreKind};
use jhub_proxy_bin::health::ReadyCheck;
use jhub_proxy_bin::warmup::Warmup;
use jhub_proxy_bin::{Error, app, render, server};
use proxy_api::{ApiConfig, Backend};

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
    if let Some(Command::Render(args)) = &config.command {
        return match runtime.block_on(render::render(&config, args)) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

async fn run(config: Config) -> Result<(), Error> {
    let (service, store_name) = match config.store {
        StoreKind::Memory => {
            let namespace = config.k8s_namespace.clone().unwrap_or_else(|| "default".to_owned());
            let store = Arc::new(MemoryStore::new());
            let backend = Arc::new(IstioBackend::new(store, config.translation(&namespace)));
            (http_service(backend, &config, Arc::new(|| true)), "memory")
        }
        StoreKind::Kubernetes => {
            let client = kube::Client::try_default().await.map_err(|e| match e {
                kube::Error::InferConfig(_) => Error::Config(
                    "--store (env PROXY_STORE) is 'kubernetes', but there is no in-cluster service account and no kubeconfig \
                     (set KUBECONFIG); use --store memory to try the proxy without Kubernetes"
                        .to_owned(),
                ),
                other => Error::Kubernetes(Box::new(other)),
            })?;
            let namespace =
                config.k8s_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
            let translation = config.translation(&namespace);
            let store = Arc::new(
                KubeStore::start(client, &translation).await.map_err(|e| Error::Kubernetes(Box::new(e)))?,
            );
            tracing::info!(namespace, selector = translation.label_selector(), "watching VirtualServices");
            let ready_store = Arc::clone(&store);
            let ready: ReadyCheck = Arc::new(move || ready_store.is_ready());
            let backend = Arc::new(IstioBackend::new(store, translation));
            (http_service(backend, &config, ready), "kubernetes")
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen { addr: config.listen, source })?;
    tracing::info!(store = store_name, host_routing = config.host_routing, "listening on http://{addr}");
    server::serve(listener, service, server::shutdown_signal(), server::DRAIN_TIMEOUT).await;
    Ok(())
}

/// The service over `backend`, with warm-up in front of it when it is on.
fn http_service<B: Backend>(backend: Arc<B>, config: &Config, ready: ReadyCheck) -> app::HttpService {
    let options = app::AppOptions {
        token: config.token().to_owned(),
        api: ApiConfig { routing_mode: config.routing_mode(), ..ApiConfig::default() },
        request_timeout: config.request_timeout,
        ready,
        ready_wait: config.ready_wait,
    };
    match config.warmup().expect("checked by Config::from_args") {
        Some(warmup) => {
            if config.public_host.is_none()
                && config.sub_domain_host.as_deref().is_none_or(|host| host.contains('*'))
            {
                tracing::warn!(
                    host = warmup.public_host,
                    "warm-up asks the gateway with this Host; set PUBLIC_HOST to the hub's public host name if the gateway does not serve it"
                );
            }
            tracing::info!(url = %warmup.url, host = warmup.public_host, timeout_s = warmup.timeout.as_secs(), strict = warmup.strict, "waiting for warm-up after writes");
            app::service(Arc::new(Warmup::new(backend, warmup)), options)
        }
        None => app::service(backend, options),
    }
}

/// Prints the error, with its causes, as one line, and fails.
fn fail(error: &dyn std::error::Error) -> ExitCode {
    let mut line = format!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors (kube's) already show their causes; say each thing once.
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(&format!(": {text}"));
        }
        source = cause.source();
    }
    eprintln!("{line}");
    ExitCode::FAILURE
}
