//! configurable-http-proxy's command line, so that this binary starts where a deployment runs
//! `configurable-http-proxy` (Zero to JupyterHub's proxy pod, `docs/zero-to-jupyterhub.md`).
//!
//! Its flags that say where to listen keep their meaning: `--api-ip`/`--api-port` for the API,
//! `--ip`/`--port` for the probes (`/_chp_healthz` and ours) and metrics, since there is no
//! traffic here to listen for, over HTTPS with `--ssl-key`/`--ssl-cert` as Zero to
//! JupyterHub's manual HTTPS probes them; `--metrics-ip`/`--metrics-port` for metrics. Its flags that only
//! matter to a proxy carrying traffic are accepted and named once in the log as not applying
//! ([`NOT_APPLYING`]); the few that would change what JupyterHub talks to (Unix sockets, TLS on
//! the API) are refused. The list follows `bin/configurable-http-proxy` of
//! configurable-http-proxy 5.x.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};

/// The heading of these flags in `--help`.
pub const HEADING: &str = "configurable-http-proxy's flags";

/// configurable-http-proxy's flags that keep a meaning here.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = HEADING)]
pub struct ChpFlags {
    /// Where the probes (`/_chp_healthz`, `/ping`, `/healthz`, `/readyz`) and metrics listen,
    /// with `--port` (configurable-http-proxy's public IP). Empty: every interface.
    #[arg(long, value_name = "IP", value_parser = parse_ip)]
    pub ip: Option<IpAddr>,

    /// The port of `--ip`; given, the probes and metrics get a listener of their own there.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// The IP of the API, replacing that of `--listen` (empty: every interface).
    #[arg(long = "api-ip", value_name = "IP", value_parser = parse_ip)]
    pub api_ip: Option<IpAddr>,

    /// The port of the API, replacing that of `--listen`.
    #[arg(long = "api-port", value_name = "PORT")]
    pub api_port: Option<u16>,

    /// The IP of `--metrics-port` (empty, the default: every interface).
    #[arg(long = "metrics-ip", value_name = "IP", value_parser = parse_ip)]
    pub metrics_ip: Option<IpAddr>,

    /// Serve metrics on this port only, as `--metrics-listen` does.
    #[arg(long = "metrics-port", value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// With `--ssl-cert` and `--port`: serve the probes over HTTPS with this private key (PEM),
    /// as Zero to JupyterHub's manual HTTPS probes them. Carries no traffic.
    #[arg(long = "ssl-key", value_name = "FILE")]
    pub ssl_key: Option<PathBuf>,

    /// With `--ssl-key` and `--port`: the certificate chain (PEM) the probes are served with.
    #[arg(long = "ssl-cert", value_name = "FILE")]
    pub ssl_cert: Option<PathBuf>,
}

/// Every interface, as configurable-http-proxy's empty `--ip`: IPv6's, which takes IPv4 too,
/// falling back to IPv4's where the host has no IPv6 ([`every_interface_fallback`]).
pub const EVERY_INTERFACE: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// chp's `--ip` and `--api-ip`: an IP, `localhost`, or empty for every interface. Every
/// interface is `::`, which takes IPv4 too; where the host has no IPv6, binding falls back to
/// `0.0.0.0` ([`every_interface_fallback`]).
fn parse_ip(text: &str) -> Result<IpAddr, String> {
    match text.trim() {
        "" => Ok(EVERY_INTERFACE),
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ip => ip
            .parse()
            .map_err(|_| "expected an IP address, `localhost`, or nothing for every interface".to_owned()),
    }
}

/// The IPv4 address to bind instead of `addr` when `addr` is IPv6's every-interface address and
/// the host has no IPv6.
pub fn every_interface_fallback(addr: SocketAddr) -> Option<SocketAddr> {
    (addr.ip() == EVERY_INTERFACE).then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port()))
}

/// What a flag of configurable-http-proxy's that this proxy does not act on takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// A value, as `--default-target=URL`; repeatable, as `--custom-header`.
    Value,
    /// Nothing, as `--insecure`.
    Nothing,
}

/// A flag of configurable-http-proxy's that this proxy does not act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inert {
    /// Its long name, without `--`.
    pub name: &'static str,
    /// Whether it takes a value.
    pub takes: Takes,
    /// Why it does not apply (for `--help` and the docs).
    pub why: &'static str,
}

const TRAFFIC: &str = "configurable-http-proxy's; carrying no traffic, this proxy ignores it";
const TLS: &str = "configurable-http-proxy's TLS for traffic; the gateway terminates TLS: ignored";
const TARGET_TLS: &str = "configurable-http-proxy's TLS to targets; the gateway or mesh does that: ignored";

/// configurable-http-proxy's flags that only matter to a proxy carrying traffic: accepted,
/// and named once in the log.
pub const NOT_APPLYING: &[Inert] = &[
    // Targets: JupyterHub adds the root route `/` to the hub itself, which makes the default
    // target moot, and error pages come from the hub through its own routes.
    Inert { name: "default-target", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "error-target", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "error-path", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "redirect-port", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "redirect-to", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "ssl-ca", takes: Takes::Value, why: TLS },
    Inert { name: "ssl-request-cert", takes: Takes::Nothing, why: TLS },
    Inert { name: "ssl-reject-unauthorized", takes: Takes::Nothing, why: TLS },
    Inert { name: "ssl-protocol", takes: Takes::Value, why: TLS },
    Inert { name: "ssl-ciphers", takes: Takes::Value, why: TLS },
    Inert { name: "ssl-allow-rc4", takes: Takes::Nothing, why: TLS },
    Inert { name: "ssl-dhparam", takes: Takes::Value, why: TLS },
    Inert { name: "client-ssl-key", takes: Takes::Value, why: TARGET_TLS },
    Inert { name: "client-ssl-cert", takes: Takes::Value, why: TARGET_TLS },
    Inert { name: "client-ssl-ca", takes: Takes::Value, why: TARGET_TLS },
    Inert { name: "client-ssl-request-cert", takes: Takes::Nothing, why: TARGET_TLS },
    Inert { name: "client-ssl-reject-unauthorized", takes: Takes::Nothing, why: TARGET_TLS },
    Inert { name: "insecure", takes: Takes::Nothing, why: TARGET_TLS },
    Inert { name: "no-x-forward", takes: Takes::Nothing, why: TRAFFIC },
    Inert { name: "no-prepend-path", takes: Takes::Nothing, why: TRAFFIC },
    Inert { name: "no-include-prefix", takes: Takes::Nothing, why: TRAFFIC },
    Inert { name: "auto-rewrite", takes: Takes::Nothing, why: TRAFFIC },
    Inert { name: "change-origin", takes: Takes::Nothing, why: TRAFFIC },
    Inert { name: "protocol-rewrite", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "custom-header", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "timeout", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "proxy-timeout", takes: Takes::Value, why: TRAFFIC },
    Inert { name: "keep-alive-timeout", takes: Takes::Value, why: TRAFFIC },
    Inert {
        name: "storage-backend",
        takes: Takes::Value,
        why: "configurable-http-proxy's route storage; routes live in the routing objects here: ignored",
    },
    Inert {
        name: "pid-file",
        takes: Takes::Value,
        why: "configurable-http-proxy's; this proxy writes no files: ignored",
    },
];

/// configurable-http-proxy's flags that would change how JupyterHub reaches the API, which this
/// proxy cannot do: refused at start with the reason.
pub const REFUSED: &[Inert] = &[
    Inert { name: "socket", takes: Takes::Value, why: "this proxy listens on TCP only: use --ip/--port" },
    Inert {
        name: "api-socket",
        takes: Takes::Value,
        why: "this proxy's API listens on TCP only: use --api-ip/--api-port",
    },
    Inert {
        name: "metrics-socket",
        takes: Takes::Value,
        why: "this proxy serves metrics on TCP only: use --metrics-ip/--metrics-port",
    },
    Inert { name: "api-ssl-key", takes: Takes::Value, why: "this proxy's API does not serve TLS" },
    Inert { name: "api-ssl-cert", takes: Takes::Value, why: "this proxy's API does not serve TLS" },
    Inert { name: "api-ssl-ca", takes: Takes::Value, why: "this proxy's API does not serve TLS" },
    Inert { name: "api-ssl-request-cert", takes: Takes::Nothing, why: "this proxy's API does not serve TLS" },
    Inert {
        name: "api-ssl-reject-unauthorized",
        takes: Takes::Nothing,
        why: "this proxy's API does not serve TLS",
    },
];

/// Which of [`NOT_APPLYING`] and [`REFUSED`] were given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InertFlags {
    /// The flags of [`NOT_APPLYING`] given, as `--name`, in the table's order.
    pub not_applying: Vec<String>,
    /// The flags of [`REFUSED`] given.
    pub refused: Vec<&'static Inert>,
}

impl clap::FromArgMatches for InertFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = InertFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        let given = |flag: &&Inert| matches.value_source(flag.name) == Some(ValueSource::CommandLine);
        self.not_applying =
            NOT_APPLYING.iter().filter(given).map(|flag| format!("--{}", flag.name)).collect();
        self.refused = REFUSED.iter().filter(given).collect();
        Ok(())
    }
}

impl clap::Args for InertFlags {
    fn augment_args(command: clap::Command) -> clap::Command {
        let command = command.next_help_heading(HEADING);
        NOT_APPLYING.iter().chain(REFUSED).fold(command, |command, flag| {
            let arg = Arg::new(flag.name).long(flag.name).help(flag.why);
            command.arg(match flag.takes {
                Takes::Value => arg.action(ArgAction::Append).num_args(1).value_name("VALUE"),
                Takes::Nothing => arg.action(ArgAction::SetTrue),
            })
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_chps_every_interface_localhost_or_literal() {
        assert_eq!(parse_ip(""), Ok(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(parse_ip("localhost"), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_ip("::"), Ok(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(parse_ip("10.0.0.1"), Ok("10.0.0.1".parse().unwrap()));
        assert!(parse_ip("hub.example.org").is_err());
        let every = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8000);
        assert_eq!(every_interface_fallback(every), Some("0.0.0.0:8000".parse().unwrap()));
        assert_eq!(every_interface_fallback("127.0.0.1:8000".parse().unwrap()), None);
    }

    #[test]
    fn no_flag_is_both_ignored_and_refused_or_listed_twice() {
        let mut names: Vec<&str> = NOT_APPLYING.iter().chain(REFUSED).map(|flag| flag.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a flag listed twice");
    }
}
