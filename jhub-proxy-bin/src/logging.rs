//! Logs through `tracing`, to standard error: human-readable text, or one JSON object per line
//! for log collectors.
//!
//! The level is `--log-level` unless `RUST_LOG` is set: its directives are richer (levels per
//! module, `info,kube=debug`), so whoever sets it means it.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

use crate::{Error, Result};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (`message` and the
    /// event's own), and `span`, the fields of the span it happened in (a request's `method`
    /// and `path`).
    Json,
}

/// The least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what may become one.
    Warn,
    /// One line per API request, and what the proxy does.
    Info,
    /// Also probes, scrapes and the libraries' details.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The filter: `rust_log` (the variable's value) when set and not empty, else `level`.
pub fn filter(rust_log: Option<&str>, level: LogLevel) -> Result<EnvFilter> {
    match rust_log.map(str::trim).filter(|directives| !directives.is_empty()) {
        Some(directives) => EnvFilter::builder().parse(directives).map_err(|error| {
            Error::Config(format!("RUST_LOG {directives:?} is not a valid log filter: {error}"))
        }),
        None => Ok(EnvFilter::new(level.directive())),
    }
}

/// Installs the global subscriber, writing to standard error.
pub fn init(format: LogFormat, level: LogLevel) -> Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(rust_log.as_deref(), level)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        // The event's fields under `fields`, not flattened: a field called `target` (a route's)
        // would collide with the event's own `target`.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    installed.map_err(|error| Error::Config(format!("cannot set up logging: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_takes_precedence_over_the_level() {
        assert_eq!(filter(None, LogLevel::Debug).unwrap().to_string(), "debug");
        assert_eq!(filter(Some(" "), LogLevel::Warn).unwrap().to_string(), "warn");
        let directives = filter(Some("info,kube=debug"), LogLevel::Error).unwrap().to_string();
        assert!(directives.contains("kube=debug") && !directives.contains("error"), "{directives}");
    }

    #[test]
    fn a_bad_rust_log_is_a_clear_error() {
        let Err(Error::Config(message)) = filter(Some("kube=loud"), LogLevel::Info) else {
            panic!("accepted a bad RUST_LOG");
        };
        assert!(message.starts_with("RUST_LOG \"kube=loud\" is not a valid log filter"), "{message}");
    }
}
