//! `jupyterhub-istio-proxy`: parse the configuration, build the service, serve, drain.

use std::process::ExitCode;

use jhub_proxy_bin::build::{self, Built};
use jhub_proxy_bin::config::{Command, Config};
use jhub_proxy_bin::metrics::Metrics;
use jhub_proxy_bin::{Error, explain, logging, render, server, token};

/// mimalloc rather than glibc's allocator: after a spawn storm's routes are deleted it gives
/// their memory back, where glibc's keeps it, and it allocates faster (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(Error::Clap(help)) => help.exit(),
        Err(error) => return fail(&error),
    };
    if let Err(error) = logging::init(config.log_format, config.log_level) {
        return fail(&error);
    }
    if !config.chp_inert.not_applying.is_empty() {
        tracing::info!(
            flags = config.chp_inert.not_applying.join(" "),
            "configurable-http-proxy's flags that do not apply to a proxy carrying no traffic: ignored"
        );
    }
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let printed = match &config.command {
        Some(Command::Render(args)) => Some(runtime.block_on(render::render(&config, args))),
        Some(Command::Explain(args)) => Some(runtime.block_on(explain::command(&config, args))),
        None => None,
    };
    if let Some(printed) = printed {
        return match printed {
            Ok(text) => {
                print!("{text}");
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
    let metrics = Metrics::new();
    // First, so that a bad token file stops the proxy before it calls the Kubernetes API.
    let tokens = config.tokens(token::FILE_POLL, metrics.auth().clone())?;
    // `_healing` runs until the server has drained.
    let Built { service, store, healing: _healing } = build::build(&config, tokens, metrics).await?;
    let (listener, addr) = build::bind(config.listen, "--listen, env PROXY_LISTEN").await?;
    tracing::info!(store, routing = ?config.routing, host_routing = config.host_routing, "listening on http://{addr}");
    server::serve(listener, service, config.limits(), server::shutdown_signal(), server::DRAIN_TIMEOUT).await;
    Ok(())
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
