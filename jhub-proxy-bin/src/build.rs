//! Building the service from the configuration: which store, written as which routing API,
//! with which metrics, healing, activity and warm-up around it. `main.rs` only parses, builds,
//! serves and drains.

use std::sync::Arc;
use std::time::Duration;

use gateway_routes::{GatewayBackend, GatewayKubeStore, GatewayMemoryStore};
use istio_routes::heal;
use istio_routes::{IstioBackend, KubeStore, MemoryStore};
use kube_routes::heal::{HealOptions, Healing};
use kube_routes::{HealMetrics, StoreMetrics};
use proxy_api::{ApiConfig, Backend};

use crate::config::{Config, Routing, StoreKind};
use crate::health::{self, Readiness};
use crate::metrics::{self, Metrics};
use crate::warmup::Warmup;
use crate::{Error, Result, activity, app, chp, explain, server, tls, token};

/// What [`build`] made.
#[derive(Debug)]
pub struct Built {
    /// The routes API behind its layers, to serve on `--listen`.
    pub service: app::HttpService,
    /// The store's name, for the log: `memory` or `kubernetes`.
    pub store: &'static str,
    /// Healing, running until dropped: keep it until the server has drained.
    pub healing: Option<Healing>,
}

/// The routes API's service for `config`: the store `--store` names, written as the routing API
/// `--routing` names, with its metrics registered in `metrics`, healing started (Istio on
/// Kubernetes, `--heal`), and activity and warm-up in front when they are on. Listeners of
/// their own (metrics, probes) start serving at once.
pub async fn build(config: &Config, tokens: token::Tokens, mut metrics: Metrics) -> Result<Built> {
    let (service, store, healing) = match (config.routing, config.store) {
        (Routing::GatewayApi, store) => gateway_api(config, store, tokens, metrics).await?,
        (Routing::Istio, StoreKind::Memory) => {
            let namespace = config.k8s_namespace.clone().unwrap_or_else(|| "default".to_owned());
            let translation = config.translation(&namespace);
            let store = Arc::new(MemoryStore::new(translation.clone()));
            let backend = Arc::new(IstioBackend::new(store, translation.clone()));
            StoreMetrics::new(Arc::clone(&backend), None).register(metrics.registry_mut());
            let explainer = explain::explainer(Arc::clone(&backend));
            let ready = Readiness::ready();
            (
                http_service(backend, config, Arc::new(translation), tokens, ready, metrics, Some(explainer))
                    .await?,
                "memory",
                None,
            )
        }
        (Routing::Istio, StoreKind::Kubernetes) => {
            let client = crate::kube_client().await?;
            let namespace =
                config.k8s_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
            let translation = config.translation(&namespace);
            let store = KubeStore::start_with_metrics(client, &translation, metrics.kube().clone())
                .await
                .map_err(|e| Error::Kubernetes(Box::new(e)))?;
            let store = Arc::new(store);
            tracing::info!(namespace, selector = translation.label_selector(), "watching VirtualServices");
            let ready = Readiness::from_signal(store.readiness());
            let watch = Some(Arc::clone(store.watch_stats()));
            let backend = Arc::new(IstioBackend::new(store, translation.clone()));
            StoreMetrics::new(Arc::clone(&backend), watch).register(metrics.registry_mut());
            let healing = config.heal.then(|| {
                let drift = HealMetrics::default();
                drift.register(metrics.registry_mut());
                tracing::info!("healing objects that drift from their routes (--heal)");
                heal::heal(Arc::clone(&backend), HealOptions::default(), drift)
            });
            let explainer = explain::explainer(Arc::clone(&backend));
            (
                http_service(backend, config, Arc::new(translation), tokens, ready, metrics, Some(explainer))
                    .await?,
                "kubernetes",
                healing,
            )
        }
    };
    Ok(Built { service, store, healing })
}

/// The service over the Gateway API backend, in the store `kind` names.
async fn gateway_api(
    config: &Config,
    kind: StoreKind,
    tokens: token::Tokens,
    mut metrics: Metrics,
) -> Result<(app::HttpService, &'static str, Option<Healing>), Error> {
    match kind {
        StoreKind::Memory => {
            let namespace = config.k8s_namespace.clone().unwrap_or_else(|| "default".to_owned());
            let store = Arc::new(GatewayMemoryStore::new());
            let translation = config.gateway_translation(&namespace);
            let backend = Arc::new(GatewayBackend::new(store, translation.clone()));
            StoreMetrics::new(Arc::clone(&backend), None).register(metrics.registry_mut());
            let destinations = Arc::new(translation);
            let explainer = Some(explain::gateway_explainer(Arc::clone(&backend)));
            let ready = Readiness::ready();
            let service =
                http_service(backend, config, destinations, tokens, ready, metrics, explainer).await?;
            Ok((service, "memory", None))
        }
        StoreKind::Kubernetes => {
            let client = crate::kube_client().await?;
            let namespace =
                config.k8s_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
            let translation = config.gateway_translation(&namespace);
            let store = GatewayKubeStore::start(client, &translation, metrics.kube().clone())
                .await
                .map_err(|e| Error::Kubernetes(Box::new(e)))?;
            tracing::info!(namespace, selector = translation.label_selector(), "watching HTTPRoutes");
            let ready = Readiness::from_signal(store.readiness());
            let watch = Some(Arc::clone(store.watch_stats()));
            let mut backend = GatewayBackend::new(Arc::new(store), translation.clone());
            if let Some(warmup) = config.warmup() {
                // Poll a gateway that has the route: first wait until one accepts it.
                backend = backend.with_acceptance_wait(warmup.timeout);
            }
            let backend = Arc::new(backend);
            StoreMetrics::new(Arc::clone(&backend), watch).register(metrics.registry_mut());
            let healing = config.heal.then(|| {
                let drift = HealMetrics::default();
                drift.register(metrics.registry_mut());
                tracing::info!("healing objects that drift from their routes (--heal)");
                gateway_routes::heal::heal(Arc::clone(&backend), HealOptions::default(), drift)
            });
            let destinations = Arc::new(translation);
            let explainer = Some(explain::gateway_explainer(Arc::clone(&backend)));
            let service =
                http_service(backend, config, destinations, tokens, ready, metrics, explainer).await?;
            Ok((service, "kubernetes", healing))
        }
    }
}

/// Binds `addr`; IPv6's every-interface address falls back to IPv4's where the host has no
/// IPv6, as configurable-http-proxy's empty `--ip` does. `option` names it in the error.
pub async fn bind(
    addr: std::net::SocketAddr,
    option: &'static str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), Error> {
    let listener = match (tokio::net::TcpListener::bind(addr).await, chp::every_interface_fallback(addr)) {
        (Err(error), Some(fallback)) => {
            tracing::debug!(%error, "no IPv6 for {addr}; listening on {fallback}");
            tokio::net::TcpListener::bind(fallback).await
        }
        (bound, _) => bound,
    };
    let listener = listener.map_err(|source| Error::Listen { addr, option, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Listen { addr, option, source })?;
    Ok((listener, bound))
}

/// The service over `backend`, with activity and warm-up in front of it when they are on;
/// metrics served on their own listener when `--metrics-listen` is set, and the probes (with
/// metrics, unless those have their own) when configurable-http-proxy's `--port` is. Those listeners serve
/// until the process ends, so probes and scrapes go on while the API drains.
async fn http_service<B: Backend>(
    backend: Arc<B>,
    config: &Config,
    destinations: Arc<dyn activity::Destinations>,
    tokens: token::Tokens,
    ready: Readiness,
    metrics: Metrics,
    explainer: Option<explain::Explainer>,
) -> Result<app::HttpService, Error> {
    let metrics = Arc::new(metrics);
    if let Some(listen) = config.metrics_listen {
        let (listener, addr) = bind(listen, "--metrics-listen, env METRICS_LISTEN").await?;
        tracing::info!("serving metrics on http://{addr}{}", metrics::PATH);
        let service = app::metrics_service(Arc::clone(&metrics));
        tokio::spawn(server::serve(
            listener,
            service,
            config.limits(),
            std::future::pending(),
            Duration::ZERO,
        ));
    }
    if let Some(listen) = config.probe_listen() {
        let tls = config.probe_tls().map(|(cert, key)| tls::acceptor(cert, key)).transpose()?;
        let (listener, addr) = bind(listen, "--ip/--port, configurable-http-proxy's").await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("serving probes ({}) on {scheme}://{addr}", health::CHP_HEALTHZ);
        let service =
            app::probes_service(ready.clone(), Arc::clone(&metrics), config.metrics_listen.is_none());
        match tls {
            Some(acceptor) => tokio::spawn(tls::serve(listener, acceptor, service, config.limits())),
            None => tokio::spawn(server::serve(
                listener,
                service,
                config.limits(),
                std::future::pending(),
                Duration::ZERO,
            )),
        };
    }
    let options = app::AppOptions {
        tokens,
        api: ApiConfig { routing_mode: config.routing_mode(), ..ApiConfig::default() },
        request_timeout: config.request_timeout,
        client_timeout: config.client_timeout,
        ready,
        ready_wait: config.ready_wait,
        serve_metrics: config.metrics_on_api(),
        metrics: Arc::clone(&metrics),
        explain: explainer,
    };
    Ok(match config.activity().cloned() {
        Some(reading) => {
            let backend = activity::start(backend, destinations, reading, metrics.activity().clone());
            with_warmup(backend, config, &metrics, options)
        }
        None => with_warmup(backend, config, &metrics, options),
    })
}

/// The service over `backend`, with warm-up in front of it when it is on.
fn with_warmup<B: Backend>(
    backend: Arc<B>,
    config: &Config,
    metrics: &Metrics,
    options: app::AppOptions,
) -> app::HttpService {
    match config.warmup().cloned() {
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
            let warmup = Warmup::new(backend, warmup).with_metrics(metrics.warmup().clone());
            app::service(Arc::new(warmup), options)
        }
        None => app::service(backend, options),
    }
}
