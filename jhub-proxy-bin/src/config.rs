//! Command-line flags and environment variables.
//!
//! Every option is a flag and an environment variable. The Go jupyterhub-istio-proxy's
//! variables keep their names and meanings, so a Deployment written for it keeps working.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use gateway_routes::{GatewayTranslation, ParentReference};
use istio_routes::Translation;
use istio_routes::resources::IstioVersion;
use proxy_api::RoutingMode;

use crate::chp::{ChpFlags, EVERY_INTERFACE, InertFlags};
use crate::logging::{LogFormat, LogLevel};
use crate::{Error, Result};

/// Where routes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The routing objects `--routing` names, through the Kubernetes API.
    Kubernetes,
    /// This process's memory: for trying the proxy out; nothing reaches a gateway.
    Memory,
}

/// Which routing API the routes are written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Routing {
    /// Istio VirtualServices (and ServiceEntries for pod IPs), for Istio Gateways.
    Istio,
    /// Gateway API HTTPRoutes (and a Service and EndpointSlice for pod IPs), for any
    /// conforming gateway.
    GatewayApi,
}

/// The proxy's configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "jupyterhub-istio-proxy",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("JHUB_PROXY_BUILD_COMMIT"), ")"),
    about = "configurable-http-proxy's REST API for JupyterHub, served by writing Istio VirtualServices or Gateway API HTTPRoutes"
)]
pub struct Config {
    /// What to do; without a command, serve the API.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The token JupyterHub sends as `Authorization: token <token>`. Required to serve.
    #[arg(long, env = "CONFIGPROXY_AUTH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub auth_token: Option<Secret>,

    /// A file holding the token instead, such as a mounted Secret: read at start and again
    /// every second, so that a rotated Secret is taken without a restart.
    #[arg(long, env = "CONFIGPROXY_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub auth_token_file: Option<std::path::PathBuf>,

    /// Where routes are kept.
    #[arg(long, env = "PROXY_STORE", value_enum, default_value_t = StoreKind::Kubernetes)]
    pub store: StoreKind,

    /// Which routing API the routes are written as: `istio` or `gateway-api`.
    #[arg(long, env = "PROXY_ROUTING", value_enum, default_value_t = Routing::Istio)]
    pub routing: Routing,

    /// The Gateway the routes attach to, `[namespace/]name[/section]`; repeat (or separate by
    /// commas) for several. Required with `--routing gateway-api`.
    #[arg(long = "parent-ref", env = "GATEWAY_API_PARENT", value_delimiter = ',', value_name = "GATEWAY")]
    pub parent_refs: Vec<ParentReference>,

    /// Address the API listens on (configurable-http-proxy's `--api-ip` and `--api-port`
    /// replace its parts). After [`Config::from_args`], the address with those applied.
    #[arg(long, env = "PROXY_LISTEN", default_value = "0.0.0.0:8000", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Read the first segment of every route spec as a host (JupyterHub's `subdomain_host`).
    #[arg(long, env = "HOST_ROUTING", value_parser = BoolishValueParser::new(), default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub host_routing: bool,

    /// Kubernetes namespace the routing objects are written to.
    #[arg(long, env = "K8S_NAMESPACE", value_name = "NAMESPACE")]
    pub k8s_namespace: Option<String>,

    /// Istio gateway the routes are bound to: `name` or `namespace/name`.
    #[arg(long, env = "ISTIO_GATEWAY", value_name = "GATEWAY")]
    pub istio_gateway: Option<String>,

    /// Host name JupyterHub is served at, or `*`: the host the routing objects match.
    #[arg(long, env = "SUB_DOMAIN_HOST", value_name = "HOST")]
    pub sub_domain_host: Option<String>,

    /// Prefix of the names of the routing objects this proxy writes.
    #[arg(long, env = "VIRTUAL_SERVICE_PREFIX", default_value = "jupyter", value_name = "PREFIX")]
    pub virtual_service_prefix: String,

    /// After writing a route, wait until the gateway serves it before answering.
    #[arg(long, env = "WAIT_FOR_WARMUP", value_parser = BoolishValueParser::new(), default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub wait_for_warmup: bool,

    /// The gateway's plain-HTTP address, polled for warm-up (default: Istio's ingress gateway
    /// Service, `http://istio-ingressgateway.istio-system.svc.<CLUSTER_DOMAIN>`).
    #[arg(long, env = "WARMUP_URL", value_name = "URL")]
    pub warmup_url: Option<String>,

    /// The `Host` sent when polling a route without a host of its own (default: SUB_DOMAIN_HOST
    /// when it is not a wildcard).
    #[arg(long, env = "PUBLIC_HOST", value_name = "HOST")]
    pub public_host: Option<String>,

    /// Seconds to wait for the gateway to serve a new route.
    #[arg(long, env = "WARMUP_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = parse_seconds)]
    pub warmup_timeout: Duration,

    /// Answer 503 instead of 201 when the gateway does not serve a route in time.
    #[arg(long, env = "WARMUP_STRICT", value_parser = BoolishValueParser::new(), default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub warmup_strict: bool,

    /// Prometheus's base URL (`http://...`): read routes' `last_activity` from the requests the
    /// gateway reports there (Istio's `istio_requests_total`). Off when unset.
    #[arg(long, env = "ACTIVITY_PROMETHEUS_URL", value_name = "URL")]
    pub activity_prometheus_url: Option<String>,

    /// The `reporter` of the series that count as activity: `source`, the gateway's own report
    /// of the requests it sends.
    #[arg(long, env = "ACTIVITY_REPORTER", default_value = "source", value_name = "REPORTER")]
    pub activity_reporter: String,

    /// The gateway's workload, the series' `source_workload`.
    #[arg(
        long,
        env = "ACTIVITY_GATEWAY_WORKLOAD",
        default_value = "istio-ingressgateway",
        value_name = "WORKLOAD"
    )]
    pub activity_gateway_workload: String,

    /// The gateway's namespace, the series' `source_workload_namespace`.
    #[arg(
        long,
        env = "ACTIVITY_GATEWAY_NAMESPACE",
        default_value = "istio-system",
        value_name = "NAMESPACE"
    )]
    pub activity_gateway_namespace: String,

    /// Seconds between queries of Prometheus, and the resolution of `last_activity`.
    #[arg(long, env = "ACTIVITY_INTERVAL", default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    pub activity_interval: Duration,

    /// Seconds a replica that knows nothing yet (just started, or after Prometheus was down)
    /// looks back for activity.
    #[arg(long, env = "ACTIVITY_LOOKBACK", default_value = "86400", value_name = "SECONDS", value_parser = parse_seconds)]
    pub activity_lookback: Duration,

    /// Seconds one query of Prometheus may take before it counts as failed.
    #[arg(long, env = "ACTIVITY_TIMEOUT", default_value = "30", value_name = "SECONDS", value_parser = parse_seconds)]
    pub activity_timeout: Duration,

    /// The cluster's DNS domain, for service host names.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,

    /// Istio's networking API version: `v1`, or `v1beta1` for Istio older than 1.22.
    #[arg(long, env = "ISTIO_API_VERSION", default_value = "v1", value_name = "VERSION")]
    pub istio_api_version: IstioVersion,

    /// Label pod-IP endpoints for Istio mutual TLS; turn off when user pods run without sidecars.
    #[arg(long, env = "IP_TARGET_MTLS", value_parser = BoolishValueParser::new(), default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ip_target_mtls: bool,

    /// Repair our objects when they drift from what their routes render (edited, deleted
    /// behind our back, stray or orphaned), with either routing API; the Kubernetes store
    /// only.
    #[arg(long, env = "PROXY_HEAL", value_parser = BoolishValueParser::new(), default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub heal: bool,

    /// Namespaces whose Istio proxies see the routing objects (their `exportTo`), comma-separated:
    /// `.` is K8S_NAMESPACE, `*` every namespace. Default: where the gateway's pods run (the
    /// namespace of ISTIO_GATEWAY; for a gateway in K8S_NAMESPACE, it and istio-system).
    #[arg(long, env = "ISTIO_EXPORT_TO", value_delimiter = ',', value_name = "NAMESPACES")]
    pub istio_export_to: Option<Vec<String>>,

    /// Accept loopback targets (127.0.0.1, localhost), which a gateway reaches only when it runs
    /// on the same machine as the servers: for development and tests on one machine.
    #[arg(long, env = "ALLOW_LOOPBACK_TARGETS", value_parser = BoolishValueParser::new(), default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_loopback_targets: bool,

    /// Seconds an API request waits, after start, for the route cache's first sync before it is
    /// answered 503.
    #[arg(long, env = "PROXY_READY_WAIT", default_value = "10", value_name = "SECONDS", value_parser = parse_seconds)]
    pub ready_wait: Duration,

    /// Seconds a request of the routes API may take before it is answered 504.
    #[arg(long, env = "PROXY_REQUEST_TIMEOUT", default_value = "30", value_name = "SECONDS",
          value_parser = parse_seconds)]
    pub request_timeout: Duration,

    /// Seconds a client may take to send a request's headers, and then its body (else 408); an
    /// idle HTTP/1 connection is closed after as long.
    #[arg(long, env = "PROXY_CLIENT_TIMEOUT", default_value = "10", value_name = "SECONDS",
          value_parser = parse_seconds)]
    pub client_timeout: Duration,

    /// Serve Prometheus metrics (`GET /metrics`) on this address only, instead of on the API's.
    #[arg(long, env = "METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// How log lines look: `text` for people, `json` (one object per line) for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The least severe level logged. RUST_LOG, when set, takes precedence: its directives can
    /// set levels per module (e.g. `info,kube=debug`).
    #[arg(long, env = "LOG_LEVEL", value_enum, ignore_case = true, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// configurable-http-proxy's flags that say where to listen.
    #[command(flatten)]
    pub chp: ChpFlags,

    /// configurable-http-proxy's flags that do not apply here, as given.
    #[command(flatten)]
    pub chp_inert: InertFlags,

    /// Warm-up's settings, derived from the options above and checked once, by
    /// [`Config::from_args`]; read them with [`Config::warmup`].
    #[arg(skip)]
    warmup: Option<crate::warmup::WarmupOptions>,

    /// Activity's settings, likewise; read them with [`Config::activity`].
    #[arg(skip)]
    activity: Option<crate::activity::ActivityOptions>,
}

/// Commands besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print the objects the proxy would write for some routes, as YAML, without a cluster.
    ///
    /// VirtualServices and ServiceEntries, or with `--routing gateway-api` HTTPRoutes, Services
    /// and EndpointSlices, from the translation options (namespace, gateway, hosts, prefix, host
    /// routing...) given before `render`.
    Render(RenderArgs),
    /// Explain where the gateway sends a request for a URL, by the routing API's rules.
    ///
    /// The objects that match it in the order the gateway tries them (Istio's, or the Gateway
    /// API's precedence), the winner, its route and destination, and whether
    /// configurable-http-proxy would pick the same route. Reads the live objects through the
    /// Kubernetes API, or routes from `--routes-file` offline.
    Explain(ExplainArgs),
}

/// The request to explain, and where the objects come from.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The URL a browser requests, e.g. `http://hub.example.org/user/alice/lab`.
    #[arg(value_name = "URL")]
    pub url: String,

    /// A JSON file of routes as `GET /api/routes` lists them (`-` for standard input), e.g.
    /// the listing of a running configurable-http-proxy.
    #[arg(long = "routes-file", value_name = "FILE")]
    pub routes_file: Option<std::path::PathBuf>,

    /// Print the explanation as JSON, as `GET /api/explain` answers it.
    #[arg(long)]
    pub json: bool,
}

/// The routes to render.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// A route as `SPEC=TARGET`, e.g. `/user/alice/=http://10.0.0.7:8888`; repeatable.
    #[arg(long = "route", value_name = "SPEC=TARGET")]
    pub routes: Vec<String>,

    /// A JSON file of routes as `GET /api/routes` lists them (`-` for standard input), e.g.
    /// the listing of a running configurable-http-proxy.
    #[arg(long = "routes-file", value_name = "FILE")]
    pub routes_file: Option<std::path::PathBuf>,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err("expected a whole number of seconds, at least 1".to_owned()),
    }
}

impl Config {
    /// Reads the configuration from these arguments (the first is the program name) and the
    /// environment, and checks it.
    ///
    /// `--help` and `--version` come back as [`Error::Clap`], to be printed by the caller.
    pub fn from_args<I, T>(args: I) -> Result<Config>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let clap_error = |error: clap::Error| match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Error::Clap(error),
            _ => Error::Config(one_line(&error)),
        };
        let matches = Config::command().try_get_matches_from(args).map_err(clap_error)?;
        let mut config = Config::from_arg_matches(&matches).map_err(clap_error)?;
        config.apply_chp_addresses(&matches)?;
        config.check()?;
        config.warmup = config.checked_warmup()?;
        config.activity = config.checked_activity()?;
        Ok(config)
    }

    /// Folds configurable-http-proxy's `--api-ip`/`--api-port` into `listen` and
    /// `--metrics-ip`/`--metrics-port` into `metrics_listen`. They are flags, so they win over
    /// `PROXY_LISTEN` and `METRICS_LISTEN`; given with `--listen` or `--metrics-listen` on the
    /// command line they are an error, as one of the two would be ignored.
    fn apply_chp_addresses(&mut self, matches: &clap::ArgMatches) -> Result<()> {
        let on_command_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        let chp = &self.chp;
        if let Some(refused) = self.chp_inert.refused.first() {
            return Err(Error::Config(format!(
                "--{} (configurable-http-proxy's) is not supported: {}",
                refused.name, refused.why
            )));
        }
        if chp.api_ip.is_some() || chp.api_port.is_some() {
            if on_command_line("listen") {
                return Err(Error::Config(
                    "--listen and --api-ip/--api-port (configurable-http-proxy's) both set the API's address; give one".to_owned(),
                ));
            }
            self.listen = SocketAddr::new(
                chp.api_ip.unwrap_or(self.listen.ip()),
                chp.api_port.unwrap_or(self.listen.port()),
            );
        }
        if let Some(port) = chp.metrics_port {
            if on_command_line("metrics_listen") {
                return Err(Error::Config(
                    "--metrics-listen and --metrics-port (configurable-http-proxy's) both set the metrics' address; give one".to_owned(),
                ));
            }
            self.metrics_listen = Some(SocketAddr::new(chp.metrics_ip.unwrap_or(EVERY_INTERFACE), port));
        } else if chp.metrics_ip.is_some() {
            // As in configurable-http-proxy: without a port there is no metrics server to place.
            self.chp_inert.not_applying.push("--metrics-ip".to_owned());
        }
        match (&chp.ssl_key, &chp.ssl_cert) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Config(
                    "--ssl-key and --ssl-cert (configurable-http-proxy's) go together".to_owned(),
                ));
            }
            // Without a probe listener there is nothing here to serve over HTTPS.
            (Some(_), Some(_)) if self.probe_listen().is_none() => {
                self.chp_inert.not_applying.extend(["--ssl-key".to_owned(), "--ssl-cert".to_owned()]);
            }
            _ => {}
        }
        Ok(())
    }

    /// The certificate and key the probe listener serves HTTPS with, if it does
    /// (configurable-http-proxy's `--ssl-cert` and `--ssl-key`, with `--port`).
    pub fn probe_tls(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        self.probe_listen()?;
        Some((self.chp.ssl_cert.as_deref()?, self.chp.ssl_key.as_deref()?))
    }

    /// Where the probes and metrics get a listener of their own: configurable-http-proxy's
    /// `--ip` and `--port` (every interface when only `--port` is given, as in it; port 8000 when
    /// only `--ip` is).
    pub fn probe_listen(&self) -> Option<SocketAddr> {
        match (self.chp.ip, self.chp.port) {
            (None, None) => None,
            (ip, port) => Some(SocketAddr::new(ip.unwrap_or(EVERY_INTERFACE), port.unwrap_or(8000))),
        }
    }

    /// Whether `GET /metrics` is served on the API's listener: when it has no listener of its
    /// own (`--metrics-listen`) and there is no probe listener (`--port`) to serve it on.
    pub fn metrics_on_api(&self) -> bool {
        self.metrics_listen.is_none() && self.probe_listen().is_none()
    }

    fn check(&self) -> Result<()> {
        check_prefix(&self.virtual_service_prefix)?;
        self.check_routing()?;
        if let Some(export_to) = &self.istio_export_to {
            check_export_to(export_to)?;
        }
        // Port 0 picks a free port for each, so they differ.
        if self.metrics_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(Error::Config(
                "--metrics-listen (env METRICS_LISTEN) must differ from --listen (env PROXY_LISTEN); leave it unset to serve metrics on the API's address".to_owned(),
            ));
        }
        if let Some(probes) = self.probe_listen().filter(|probes| probes.port() != 0) {
            let taken = [Some(self.listen), self.metrics_listen];
            if taken.iter().flatten().any(|addr| addr.port() == probes.port()) {
                return Err(Error::Config(format!(
                    "--port (configurable-http-proxy's) {} is the port of the API or of the metrics; the probes need their own",
                    probes.port()
                )));
            }
        }
        if self.command.is_some() {
            return Ok(());
        }
        let token = match (&self.auth_token, &self.auth_token_file) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "--auth-token (env CONFIGPROXY_AUTH_TOKEN) and --auth-token-file (env CONFIGPROXY_AUTH_TOKEN_FILE) both give the token; give one".to_owned(),
                ));
            }
            (None, None) => {
                return Err(Error::Config(
                    "--auth-token (env CONFIGPROXY_AUTH_TOKEN) or --auth-token-file (env CONFIGPROXY_AUTH_TOKEN_FILE) is required".to_owned(),
                ));
            }
            // The file is read when serving starts (crate::token), which says what is wrong with it.
            (None, Some(_)) => return Ok(()),
            (Some(token), None) => token,
        };
        if token.expose().trim().is_empty() {
            return Err(Error::Config(
                "--auth-token (env CONFIGPROXY_AUTH_TOKEN) is empty; JupyterHub's proxy token is required"
                    .to_owned(),
            ));
        }
        if token.expose().chars().any(char::is_whitespace) {
            return Err(Error::Config(
                "--auth-token (env CONFIGPROXY_AUTH_TOKEN) contains white space, which the Authorization header cannot carry".to_owned(),
            ));
        }
        Ok(())
    }

    /// The options that belong to one routing API only, and those it needs.
    fn check_routing(&self) -> Result<()> {
        if self.routing == Routing::Istio && !self.parent_refs.is_empty() {
            return Err(Error::Config(
                "--parent-ref (env GATEWAY_API_PARENT) names a Gateway API Gateway; it needs --routing gateway-api (env PROXY_ROUTING)".to_owned(),
            ));
        }
        if self.routing == Routing::Istio {
            return Ok(());
        }
        let istio_only = [
            (
                self.istio_gateway.is_some(),
                "--istio-gateway (env ISTIO_GATEWAY); name the Gateway with --parent-ref",
            ),
            (self.istio_export_to.is_some(), "--istio-export-to (env ISTIO_EXPORT_TO)"),
        ];
        if let Some((_, option)) = istio_only.iter().find(|(given, _)| *given) {
            return Err(Error::Config(format!(
                "{option}: Istio routing only, not with --routing gateway-api"
            )));
        }
        if self.parent_refs.is_empty() && self.command.is_none() {
            return Err(Error::Config(
                "--routing gateway-api needs the Gateway the routes attach to: --parent-ref [namespace/]name[/section] (env GATEWAY_API_PARENT)".to_owned(),
            ));
        }
        Ok(())
    }

    /// How routes become Gateway API objects, from the options.
    pub fn gateway_translation(&self, namespace: &str) -> GatewayTranslation {
        // A host-routed root route takes every host; SUB_DOMAIN_HOST narrows path routing only.
        let hostnames = match (&self.sub_domain_host, self.host_routing) {
            (Some(host), false) if host != "*" => vec![host.clone()],
            _ => Vec::new(),
        };
        GatewayTranslation {
            namespace: namespace.to_owned(),
            prefix: self.virtual_service_prefix.clone(),
            parent_refs: self.parent_refs.clone(),
            hostnames,
            cluster_domain: self.cluster_domain.clone(),
            routing_mode: self.routing_mode(),
            allow_loopback_targets: self.allow_loopback_targets,
        }
    }

    /// How to warm routes up, when `--wait-for-warmup` is on.
    pub fn warmup(&self) -> Option<&crate::warmup::WarmupOptions> {
        self.warmup.as_ref()
    }

    /// Warm-up's settings from the options, or why they do not go together.
    fn checked_warmup(&self) -> Result<Option<crate::warmup::WarmupOptions>> {
        if !self.wait_for_warmup {
            return Ok(None);
        }
        let url = self.warmup_url.clone().unwrap_or_else(|| {
            format!("http://istio-ingressgateway.istio-system.svc.{}", self.cluster_domain)
        });
        let invalid = |why: &str| Error::Config(format!("--warmup-url (env WARMUP_URL) {url:?} {why}"));
        let uri: http::Uri = url.parse().map_err(|_| invalid("is not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(invalid("must be an http:// URL of the gateway (its plain-HTTP port)"));
        }
        // A Host the VirtualServices' hosts accept. The Go proxy asked for `*` literally, which
        // no gateway serves; a name under the wildcard, or any name for `*`, does.
        let public_host = match (&self.public_host, self.sub_domain_host.as_deref()) {
            (Some(host), _) => host.clone(),
            (None, Some(host)) if !host.contains('*') => host.to_owned(),
            (None, Some(wildcard)) if wildcard.starts_with("*.") => {
                format!("jupyterhub-istio-proxy-warmup{}", &wildcard[1..])
            }
            _ => uri.host().unwrap_or_default().to_owned(),
        };
        if self.warmup_timeout >= self.request_timeout {
            return Err(Error::Config(
                "--warmup-timeout (env WARMUP_TIMEOUT) must be shorter than --request-timeout (env PROXY_REQUEST_TIMEOUT)"
                    .to_owned(),
            ));
        }
        Ok(Some(crate::warmup::WarmupOptions {
            url: uri,
            public_host,
            timeout: self.warmup_timeout,
            strict: self.warmup_strict,
        }))
    }

    /// Where and how to read routes' activity, when `--activity-prometheus-url` is set.
    pub fn activity(&self) -> Option<&crate::activity::ActivityOptions> {
        self.activity.as_ref()
    }

    /// Activity's settings from the options, or why they do not go together.
    fn checked_activity(&self) -> Result<Option<crate::activity::ActivityOptions>> {
        let Some(url) = &self.activity_prometheus_url else { return Ok(None) };
        let invalid = |why: &str| {
            Error::Config(format!("--activity-prometheus-url (env ACTIVITY_PROMETHEUS_URL) {url:?} {why}"))
        };
        let uri: http::Uri = url.parse().map_err(|_| invalid("is not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.query().is_some() {
            return Err(invalid("must be Prometheus's http:// base URL, without a query"));
        }
        if self.activity_lookback < self.activity_interval {
            return Err(Error::Config(
                "--activity-lookback (env ACTIVITY_LOOKBACK) must be at least --activity-interval (env ACTIVITY_INTERVAL)"
                    .to_owned(),
            ));
        }
        Ok(Some(crate::activity::ActivityOptions {
            url: uri,
            query: istio_routes::activity::ActivityQuery {
                reporter: self.activity_reporter.clone(),
                source_workload: self.activity_gateway_workload.clone(),
                source_workload_namespace: self.activity_gateway_namespace.clone(),
                step: self.activity_interval,
            },
            interval: self.activity_interval,
            lookback: self.activity_lookback,
            timeout: self.activity_timeout,
        }))
    }

    /// The token to serve with: the one given, or the one in `--auth-token-file`, read now and
    /// again every `poll` (an error names what is wrong with the file). Needs a tokio runtime.
    pub fn tokens(
        &self,
        poll: Duration,
        metrics: crate::metrics::AuthMetrics,
    ) -> Result<crate::token::Tokens> {
        match (&self.auth_token, &self.auth_token_file) {
            (_, Some(path)) => crate::token::Tokens::from_file(path, poll, metrics),
            (token, None) => {
                Ok(crate::token::Tokens::fixed(token.as_ref().map(Secret::expose).unwrap_or_default()))
            }
        }
    }
}

impl Config {
    /// The limits every listener puts on its clients.
    pub fn limits(&self) -> crate::server::Limits {
        crate::server::Limits { client_timeout: self.client_timeout }
    }

    /// Whether route specs start with a host.
    pub fn routing_mode(&self) -> RoutingMode {
        if self.host_routing { RoutingMode::Host } else { RoutingMode::Path }
    }

    /// How routes become Istio objects, from the options.
    pub fn translation(&self, namespace: &str) -> Translation {
        Translation {
            namespace: namespace.to_owned(),
            version: self.istio_api_version,
            gateways: self.istio_gateway.iter().cloned().collect(),
            hosts: vec![self.sub_domain_host.clone().unwrap_or_else(|| "*".to_owned())],
            prefix: self.virtual_service_prefix.clone(),
            cluster_domain: self.cluster_domain.clone(),
            routing_mode: self.routing_mode(),
            ip_target_mtls: self.ip_target_mtls,
            allow_loopback_targets: self.allow_loopback_targets,
            export_to: self.export_to(namespace),
        }
    }

    /// The objects' `exportTo`: as configured, or where the gateway's pods run.
    pub fn export_to(&self, namespace: &str) -> Vec<String> {
        match &self.istio_export_to {
            Some(export_to) => export_to.clone(),
            None => istio_routes::default_export_to(
                namespace,
                &self.istio_gateway.iter().cloned().collect::<Vec<_>>(),
            ),
        }
    }
}

/// `exportTo` as Istio validates it: namespace names, `.`, or `*` alone; an object nobody
/// may see (`~`, or nothing) routes nothing, so it is refused.
fn check_export_to(export_to: &[String]) -> Result<()> {
    let invalid = |why: String| Error::Config(format!("--istio-export-to (env ISTIO_EXPORT_TO) {why}"));
    for namespace in export_to {
        let name = namespace.len() <= 63
            && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && namespace.starts_with(|c: char| c.is_ascii_alphanumeric())
            && namespace.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !(name || namespace == "." || namespace == "*") {
            return Err(invalid(format!(
                "{namespace:?} is not a namespace name, '.' (K8S_NAMESPACE) or '*' (every namespace)"
            )));
        }
    }
    if export_to.is_empty() || export_to.iter().all(String::is_empty) {
        return Err(invalid("is empty: no gateway would see the routes".to_owned()));
    }
    if export_to.len() > 1 && export_to.iter().any(|n| n == "*") {
        return Err(invalid("takes '*' alone: it already means every namespace".to_owned()));
    }
    Ok(())
}

/// The prefix starts object names and is a label value: a DNS label, short enough to leave
/// room for what follows it in names.
fn check_prefix(prefix: &str) -> Result<()> {
    let valid = (1..=40).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && !prefix.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--virtual-service-prefix (env VIRTUAL_SERVICE_PREFIX) {prefix:?} must be 1 to 40 lower-case letters, digits and '-', starting with a letter"
        )))
    }
}

/// clap's error as one line that names the flag and its environment variable.
fn one_line(error: &clap::Error) -> String {
    let command = Config::command();
    let describe = |flag: &str| {
        let long = flag.split_whitespace().next().unwrap_or(flag).trim_start_matches('-');
        let env = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long))
            .and_then(|arg| arg.get_env())
            .map(|env| format!(" (env {})", env.to_string_lossy()))
            .unwrap_or_default();
        format!("--{long}{env}")
    };
    let context = |kind| error.get(kind);
    match (error.kind(), context(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(flag))) => {
            let hint = match context(ContextKind::SuggestedArg) {
                Some(ContextValue::String(nearest)) => format!("; did you mean {nearest}?"),
                _ => String::new(),
            };
            format!("unknown flag {flag}{hint} (--help lists them)")
        }
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(flags))) => {
            let flags: Vec<String> = flags.iter().map(|f| describe(f)).collect();
            format!("{} is required", flags.join(", "))
        }
        (_, Some(ContextValue::String(flag))) if flag.starts_with("--") => {
            let value = match context(ContextKind::InvalidValue) {
                Some(ContextValue::String(value)) => format!(" '{value}'"),
                _ => String::new(),
            };
            let reason = first_line(error);
            let reason = reason.rsplit_once("': ").map_or(reason.as_str(), |(_, why)| why);
            format!("invalid value{value} for {}: {reason}", describe(flag))
        }
        _ => first_line(error),
    }
}

fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        Config::from_args(std::iter::once("jupyterhub-istio-proxy").chain(args.iter().copied()))
    }

    fn message(args: &[&str]) -> String {
        match parse(args) {
            Err(Error::Config(message)) => message,
            other => panic!("expected a configuration error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_gateway_api_needs_a_parent_and_no_istio_options() {
        let gateway = |extra: &[&str]| {
            parse(&[&["--auth-token", "t", "--store", "memory", "--routing", "gateway-api"], extra].concat())
        };
        let config = gateway(&["--parent-ref", "istio-system/gw", "--parent-ref", "web/gw/https"]).unwrap();
        assert_eq!(config.routing, Routing::GatewayApi);
        let parents: Vec<String> = config.parent_refs.iter().map(ToString::to_string).collect();
        assert_eq!(parents, ["istio-system/gw", "web/gw/https"]);
        let translation = config.gateway_translation("hub");
        assert_eq!((translation.namespace.as_str(), translation.parent_refs.len()), ("hub", 2));
        assert!(
            message(&["--auth-token", "t", "--store", "memory", "--routing", "gateway-api"])
                .contains("--parent-ref")
        );
        for (extra, says) in [
            (&["--istio-gateway", "gw"][..], "--istio-gateway"),
            (&["--istio-export-to", "."][..], "--istio-export-to"),
        ] {
            let args =
                [&["--auth-token", "t", "--routing", "gateway-api", "--parent-ref", "gw"], extra].concat();
            let said = message(&args);
            assert!(said.contains(says) && said.contains("Istio routing only"), "{said}");
        }
        let istio = message(&["--auth-token", "t", "--parent-ref", "gw"]);
        assert!(istio.contains("--routing gateway-api"), "{istio}");
        let bad = message(&["--auth-token", "t", "--routing", "gateway-api", "--parent-ref", "Not/A/Name/x"]);
        assert!(bad.contains("--parent-ref") && bad.contains("[namespace/]name[/section]"), "{bad}");
        // Path routing keeps SUB_DOMAIN_HOST as the routes' hostname; host routing's root takes every host.
        let sub = gateway(&["--parent-ref", "gw", "--sub-domain-host", "hub.example.org"]).unwrap();
        assert_eq!(sub.gateway_translation("hub").hostnames, ["hub.example.org"]);
        let host = gateway(&["--parent-ref", "gw", "--sub-domain-host", "hub.example.org", "--host-routing"])
            .unwrap();
        assert!(host.gateway_translation("hub").hostnames.is_empty());
    }

    #[test]
    fn a_mistyped_flag_is_unknown_and_the_nearest_one_is_suggested() {
        assert_eq!(
            message(&["--stroe", "memory"]),
            "unknown flag --stroe; did you mean --store? (--help lists them)"
        );
        assert_eq!(message(&["--no-such-flag"]), "unknown flag --no-such-flag (--help lists them)");
    }

    #[test]
    fn defaults_match_the_go_proxy() {
        let config = parse(&["--auth-token", "t", "--store", "memory"]).unwrap();
        assert_eq!(config.virtual_service_prefix, "jupyter");
        assert_eq!(config.cluster_domain, "cluster.local");
        assert_eq!(config.listen, "0.0.0.0:8000".parse().unwrap());
        assert!(!config.wait_for_warmup);
        assert!(!config.host_routing);
        assert_eq!((config.log_format, config.log_level), (LogFormat::Text, LogLevel::Info));
        assert_eq!(config.metrics_listen, None);
        assert!(config.heal, "healing is on unless turned off");
        let off = parse(&["--auth-token", "t", "--store", "memory", "--heal=false"]).unwrap();
        assert!(!off.heal);
    }

    #[test]
    fn observability_options_are_checked() {
        let base = ["--auth-token", "t", "--store", "memory"];
        let with = |extra: &[&'static str]| base.iter().chain(extra).copied().collect::<Vec<_>>();
        let config = parse(&with(&["--log-format", "json", "--log-level", "debug"])).unwrap();
        assert_eq!((config.log_format, config.log_level), (LogFormat::Json, LogLevel::Debug));
        let format = message(&with(&["--log-format", "yaml"]));
        assert!(format.contains("--log-format (env LOG_FORMAT)") && format.contains("'yaml'"), "{format}");
        let level = message(&with(&["--log-level", "loud"]));
        assert!(level.contains("--log-level (env LOG_LEVEL)"), "{level}");
        let same = message(&with(&["--listen", "127.0.0.1:9000", "--metrics-listen", "127.0.0.1:9000"]));
        assert!(same.contains("--metrics-listen (env METRICS_LISTEN) must differ"), "{same}");
        let other = parse(&with(&["--metrics-listen", "127.0.0.1:9090"])).unwrap();
        assert_eq!(other.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn boolean_flags_take_go_style_values() {
        assert!(parse(&["--auth-token", "t", "--store", "memory", "--host-routing"]).unwrap().host_routing);
        for (value, expected) in [("true", true), ("1", true), ("yes", true), ("false", false), ("0", false)]
        {
            let config =
                parse(&["--auth-token", "t", "--store", "memory", &format!("--wait-for-warmup={value}")])
                    .unwrap();
            assert_eq!(config.wait_for_warmup, expected, "{value}");
        }
    }

    #[test]
    fn errors_are_one_line_naming_flag_and_variable() {
        // The environment is not cleared here; these flags have no variable set in tests.
        let missing = message(&["--store", "memory", "--auth-token"]);
        assert!(missing.contains("--auth-token"), "{missing}");
        let listen = message(&["--auth-token", "t", "--store", "memory", "--listen", "nowhere"]);
        assert!(listen.contains("--listen (env PROXY_LISTEN)") && listen.contains("'nowhere'"), "{listen}");
        let store = message(&["--auth-token", "t", "--store", "etcd"]);
        assert!(store.contains("--store (env PROXY_STORE)"), "{store}");
        let timeout = message(&["--auth-token", "t", "--store", "memory", "--request-timeout", "0"]);
        assert!(timeout.contains("--request-timeout (env PROXY_REQUEST_TIMEOUT)"), "{timeout}");
        for text in [missing, listen, store, timeout] {
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn the_prefix_must_fit_names_and_labels() {
        for bad in ["", "Jupyter", "9lives", "hub-", "a_b", &"x".repeat(41)] {
            let text = message(&["--auth-token", "t", "--store", "memory", "--virtual-service-prefix", bad]);
            assert!(text.contains("VIRTUAL_SERVICE_PREFIX"), "{bad}: {text}");
        }
        assert!(
            parse(&["--auth-token", "t", "--store", "memory", "--virtual-service-prefix", "hub-2"]).is_ok()
        );
    }

    #[test]
    fn translation_follows_the_options() {
        let config = parse(&[
            "--auth-token",
            "t",
            "--store",
            "memory",
            "--istio-gateway",
            "istio-system/gw",
            "--sub-domain-host",
            "hub.example.org",
            "--istio-api-version",
            "v1beta1",
            "--ip-target-mtls=false",
        ])
        .unwrap();
        let translation = config.translation("hub");
        assert_eq!(translation.gateways, ["istio-system/gw"]);
        assert_eq!(translation.hosts, ["hub.example.org"]);
        assert_eq!(translation.version, IstioVersion::V1beta1);
        assert!(!translation.ip_target_mtls);
        assert_eq!(
            parse(&["--auth-token", "t", "--store", "memory"]).unwrap().translation("hub").hosts,
            ["*"]
        );
        assert_eq!(translation.export_to, ["istio-system"], "where the gateway's pods run");
    }

    #[test]
    fn the_export_is_configurable_and_checked() {
        let base = ["--auth-token", "t", "--store", "memory", "--istio-gateway", "gw"];
        let with = |extra: &[&str]| parse(&base.iter().chain(extra).copied().collect::<Vec<_>>());
        assert_eq!(with(&[]).unwrap().translation("hub").export_to, [".", "istio-system"]);
        let set = with(&["--istio-export-to", "gateways,."]).unwrap();
        assert_eq!(set.translation("hub").export_to, ["gateways", "."]);
        assert_eq!(with(&["--istio-export-to", "*"]).unwrap().translation("hub").export_to, ["*"]);
        for bad in ["Istio_System", "*,hub", "", "~"] {
            let error = with(&["--istio-export-to", bad]).unwrap_err().to_string();
            assert!(error.contains("--istio-export-to (env ISTIO_EXPORT_TO)"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn warm_up_needs_a_gateway_url_and_a_host_to_ask_for() {
        let base = ["--auth-token", "t", "--store", "memory", "--wait-for-warmup"];
        fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
            base.iter().chain(extra).copied().collect()
        }
        let with = |extra: &[&'static str]| with(&base, extra);
        let host =
            |extra: &[&'static str]| parse(&with(extra)).unwrap().warmup().unwrap().public_host.clone();
        assert_eq!(host(&["--sub-domain-host", "*.hub.org"]), "jupyterhub-istio-proxy-warmup.hub.org");
        assert_eq!(host(&["--sub-domain-host", "*"]), "istio-ingressgateway.istio-system.svc.cluster.local");
        assert_eq!(host(&["--sub-domain-host", "*", "--public-host", "hub.org"]), "hub.org");
        let https = message(&with(&["--public-host", "hub.org", "--warmup-url", "https://gw"]));
        assert!(https.contains("--warmup-url (env WARMUP_URL)") && https.contains("http://"), "{https}");
        let slow = message(&with(&["--public-host", "hub.org", "--warmup-timeout", "30"]));
        assert!(slow.contains("--warmup-timeout (env WARMUP_TIMEOUT)"), "{slow}");

        let config = parse(&with(&["--sub-domain-host", "hub.org"])).unwrap();
        let warmup = config.warmup().unwrap();
        assert_eq!(warmup.url, "http://istio-ingressgateway.istio-system.svc.cluster.local");
        assert_eq!(warmup.public_host, "hub.org");
        assert!(parse(&["--auth-token", "t", "--store", "memory"]).unwrap().warmup().is_none());
    }

    #[test]
    fn empty_or_spaced_tokens_are_refused() {
        assert!(message(&["--auth-token", " ", "--store", "memory"]).contains("CONFIGPROXY_AUTH_TOKEN"));
        assert!(message(&["--auth-token", "a b", "--store", "memory"]).contains("white space"));
    }

    #[test]
    fn configurable_http_proxys_addresses_place_the_api_probes_and_metrics() {
        // Zero to JupyterHub 4.x's command line (jhub-proxy-bin/tests/fixtures/z2jh-4.4.0.yaml).
        let z2jh = [
            "--ip=",
            "--api-ip=",
            "--api-port=8001",
            "--default-target=http://hub:8081",
            "--error-target=http://hub:8081/hub/error",
            "--port=8000",
            "--log-level=debug",
        ];
        let config = parse(&[&["--auth-token", "t", "--store", "memory"][..], &z2jh[..]].concat()).unwrap();
        assert_eq!(config.listen, "[::]:8001".parse().unwrap());
        assert_eq!(config.probe_listen(), Some("[::]:8000".parse().unwrap()));
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.chp_inert.not_applying, ["--default-target", "--error-target"]);
        assert!(!config.metrics_on_api(), "metrics go with the probes");

        let base = ["--auth-token", "t", "--store", "memory"];
        let with = |extra: &[&'static str]| base.iter().chain(extra).copied().collect::<Vec<_>>();
        // Each part replaces that of --listen's default; --ip alone keeps chp's port 8000.
        assert_eq!(parse(&with(&["--api-port", "9001"])).unwrap().listen, "0.0.0.0:9001".parse().unwrap());
        assert_eq!(
            parse(&with(&["--api-ip", "localhost"])).unwrap().listen,
            "127.0.0.1:8000".parse().unwrap()
        );
        let ip_only = parse(&with(&["--ip", "10.0.0.1", "--api-port", "8001"])).unwrap();
        assert_eq!(ip_only.probe_listen(), Some("10.0.0.1:8000".parse().unwrap()));
        let clash = message(&with(&["--ip", "10.0.0.1"]));
        assert!(clash.contains("--port (configurable-http-proxy's) 8000 is the port of the API"), "{clash}");
        assert_eq!(parse(&with(&[])).unwrap().probe_listen(), None);
        assert!(parse(&with(&[])).unwrap().metrics_on_api());
        let metrics = parse(&with(&["--metrics-port", "9090"])).unwrap();
        assert_eq!(metrics.metrics_listen, Some("[::]:9090".parse().unwrap()));
        let ip_only = parse(&with(&["--metrics-ip", "127.0.0.1"])).unwrap();
        assert_eq!(
            (ip_only.metrics_listen, &ip_only.chp_inert.not_applying[..]),
            (None, &["--metrics-ip".to_owned()][..])
        );
        assert_eq!(parse(&with(&["--log-level", "WARN"])).unwrap().log_level, LogLevel::Warn);

        let both = message(&with(&["--listen", "127.0.0.1:9000", "--api-port", "8001"]));
        assert!(both.contains("--listen and --api-ip/--api-port"), "{both}");
        let both = message(&with(&["--metrics-listen", "127.0.0.1:9090", "--metrics-port", "9091"]));
        assert!(both.contains("--metrics-listen and --metrics-port"), "{both}");
        let same = message(&with(&["--api-port", "8001", "--port", "8001"]));
        assert!(same.contains("--port (configurable-http-proxy's) 8001"), "{same}");
        let ip = message(&with(&["--api-ip", "hub.example.org"]));
        assert!(ip.contains("--api-ip") && ip.contains("hub.example.org"), "{ip}");
    }

    #[test]
    fn configurable_http_proxys_other_flags_are_accepted_refused_or_unknown() {
        let base = ["--auth-token", "t", "--store", "memory"];
        let mut args: Vec<String> = base.iter().map(|arg| arg.to_string()).collect();
        for flag in crate::chp::NOT_APPLYING {
            args.push(format!("--{}", flag.name));
            if flag.takes == crate::chp::Takes::Value {
                args.push("x".to_owned());
            }
        }
        args.extend(["--custom-header".to_owned(), "k2:v2".to_owned()]);
        let config = parse(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let every: Vec<String> =
            crate::chp::NOT_APPLYING.iter().map(|flag| format!("--{}", flag.name)).collect();
        assert_eq!(config.chp_inert.not_applying, every);
        // As configurable-http-proxy takes them: `--flag=value` too.
        let config = parse(&[&base[..], &["--ssl-ciphers=HIGH", "--insecure"][..]].concat()).unwrap();
        assert_eq!(config.chp_inert.not_applying, ["--ssl-ciphers", "--insecure"]);
        // --ssl-key/--ssl-cert: HTTPS for the probes on --port; without it, nothing to serve.
        let tls = ["--ssl-key=/etc/chp/tls/tls.key", "--ssl-cert=/etc/chp/tls/tls.crt"];
        let config = parse(&[&base[..], &tls[..], &["--port=8443"][..]].concat()).unwrap();
        let paths = |config: &Config| config.probe_tls().map(|(cert, key)| (cert.to_owned(), key.to_owned()));
        assert_eq!(paths(&config), Some(("/etc/chp/tls/tls.crt".into(), "/etc/chp/tls/tls.key".into())));
        assert!(config.chp_inert.not_applying.is_empty());
        let config = parse(&[&base[..], &tls[..]].concat()).unwrap();
        assert_eq!(
            (paths(&config), &config.chp_inert.not_applying[..]),
            (None, &["--ssl-key".to_owned(), "--ssl-cert".to_owned()][..])
        );
        let alone = message(&[&base[..], &tls[..1], &["--port=8443"][..]].concat());
        assert!(alone.contains("--ssl-key and --ssl-cert"), "{alone}");

        for flag in crate::chp::REFUSED {
            let name = format!("--{}", flag.name);
            let mut args = base.to_vec();
            args.push(&name);
            if flag.takes == crate::chp::Takes::Value {
                args.push("/run/chp.sock");
            }
            let refused = message(&args);
            assert!(
                refused.contains(&format!("{name} (configurable-http-proxy's) is not supported")),
                "{refused}"
            );
        }
        let unknown = message(&[&base[..], &["--no-such-flag", "--port=8000"][..]].concat());
        assert!(unknown.contains("--no-such-flag") && !unknown.contains('\n'), "{unknown}");
    }

    #[test]
    fn the_token_comes_from_a_value_or_a_file_never_both() {
        let both = message(&["--auth-token", "t", "--auth-token-file", "/run/token", "--store", "memory"]);
        assert!(both.contains("both give the token; give one"), "{both}");
        assert!(both.contains("CONFIGPROXY_AUTH_TOKEN_FILE"), "{both}");
        let config = parse(&["--auth-token-file", "/run/token", "--store", "memory"]).unwrap();
        assert_eq!(config.auth_token_file.as_deref(), Some(std::path::Path::new("/run/token")));
        let neither = message(&["--store", "memory"]);
        assert!(
            neither.contains("--auth-token (env CONFIGPROXY_AUTH_TOKEN) or --auth-token-file"),
            "{neither}"
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let config = parse(&["--auth-token", "s3cr3t-token", "--store", "memory"]).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t-token"));
    }

    #[test]
    fn activity_is_off_by_default_and_its_url_is_checked() {
        let base = ["--auth-token", "t", "--store", "memory"];
        assert!(parse(&base).unwrap().activity().is_none());
        let with = |extra: &[&'static str]| base.iter().chain(extra).copied().collect::<Vec<_>>();
        let options = parse(&with(&["--activity-prometheus-url", "http://prometheus:9090"]))
            .unwrap()
            .activity()
            .unwrap()
            .clone();
        assert_eq!(options.query, istio_routes::activity::ActivityQuery::default());
        assert_eq!(options.interval, Duration::from_secs(60));
        let https = message(&with(&["--activity-prometheus-url", "https://prometheus"]));
        assert!(https.contains("--activity-prometheus-url (env ACTIVITY_PROMETHEUS_URL)"), "{https}");
        let short =
            message(&with(&["--activity-prometheus-url", "http://prometheus", "--activity-lookback", "30"]));
        assert!(short.contains("--activity-lookback (env ACTIVITY_LOOKBACK) must be at least"), "{short}");
    }
}
