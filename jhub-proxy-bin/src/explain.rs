//! `jupyterhub-istio-proxy explain URL` and `GET /api/explain?url=`: where the gateway sends a
//! request, by the routing API's rules ([`istio_routes::explain`] for VirtualServices,
//! [`gateway_routes::explain`] for HTTPRoutes), as text for people or as JSON.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_routes::{GatewayBackend, GatewayKubeStore, HttpRouteStore};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use istio_routes::explain::{Candidate, Explanation};
use istio_routes::{IstioBackend, KubeStore, RouteStore};
use proxy_api::ResponseFuture;
use tower::{Layer, Service};

use crate::config::{Config, ExplainArgs, Routing};
use crate::render::{gateway_memory_backend, memory_backend};
use crate::{Error, Result};

/// The API's path.
pub const PATH: &str = "/api/explain";

/// An explanation by the rules of the routing API in use; its JSON is the routing API's.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Explained {
    /// Istio's gateway, through VirtualServices.
    Istio(Explanation),
    /// A Gateway API implementation, through HTTPRoutes.
    GatewayApi(gateway_routes::explain::Explanation),
}

impl Explained {
    /// The explanation for people.
    pub fn text(&self) -> String {
        match self {
            Explained::Istio(explained) => text(explained),
            Explained::GatewayApi(explained) => gateway_text(explained),
        }
    }
}

/// Explains a URL for the API: the live objects of the serving store.
pub type Explainer =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = proxy_api::Result<Explained>> + Send>> + Send + Sync>;

/// The [`Explainer`] of an Istio routing backend.
pub fn explainer<S: RouteStore>(backend: Arc<IstioBackend<S>>) -> Explainer {
    Arc::new(move |url: String| {
        let backend = Arc::clone(&backend);
        Box::pin(
            async move { backend.explain(&url).await.map(Explained::Istio).map_err(proxy_api::Error::from) },
        )
    })
}

/// The [`Explainer`] of a Gateway API backend.
pub fn gateway_explainer<S: HttpRouteStore>(backend: Arc<GatewayBackend<S>>) -> Explainer {
    Arc::new(move |url: String| {
        let backend = Arc::clone(&backend);
        Box::pin(async move {
            backend.explain(&url).await.map(Explained::GatewayApi).map_err(proxy_api::Error::from)
        })
    })
}

/// The `explain` command: the explanation, as text or JSON.
pub async fn command(config: &Config, args: &ExplainArgs) -> Result<String> {
    kube_routes::explain::Request::parse(&args.url).map_err(|e| Error::Explain(e.to_string()))?;
    let explained = match config.routing {
        Routing::Istio => istio_command(config, args).await?.map(Explained::Istio),
        Routing::GatewayApi => gateway_command(config, args).await?.map(Explained::GatewayApi),
    };
    let explained = explained.map_err(|e| Error::Explain(e.to_string()))?;
    Ok(if args.json {
        format!("{}\n", serde_json::to_string_pretty(&explained).expect("an explanation serialises"))
    } else {
        explained.text()
    })
}

/// Where the objects to explain come from: routes rendered offline, or the live namespace.
enum Source {
    Routes(Vec<proxy_api::Route>),
    Live(kube::Client, String),
}

impl Source {
    async fn of(config: &Config, args: &ExplainArgs) -> Result<Source> {
        Ok(match &args.routes_file {
            Some(path) => {
                let routes = crate::render::routes_file(path, config.routing_mode()).map_err(as_explain)?;
                Source::Routes(routes)
            }
            None => {
                let client = crate::kube_client().await?;
                let namespace =
                    config.k8s_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
                Source::Live(client, namespace)
            }
        })
    }
}

/// A routes file's or a rendering's failure, said as explain's.
fn as_explain(error: Error) -> Error {
    match error {
        Error::Render(message) => Error::Explain(message),
        other => other,
    }
}

/// Istio's gateway through the routes file's VirtualServices, or the namespace's.
async fn istio_command(
    config: &Config,
    args: &ExplainArgs,
) -> Result<istio_routes::explain::Result<Explanation>> {
    Ok(match Source::of(config, args).await? {
        Source::Routes(routes) => {
            memory_backend(config, routes).await.map_err(as_explain)?.explain(&args.url).await
        }
        Source::Live(client, namespace) => {
            let translation = config.translation(&namespace);
            let objects = KubeStore::list_live(client, &translation)
                .await
                .map_err(|e| Error::Kubernetes(Box::new(e)))?;
            istio_routes::explain::explain(&objects, &translation, &args.url)
        }
    })
}

/// A Gateway API implementation through the routes file's HTTPRoutes, or the namespace's.
async fn gateway_command(
    config: &Config,
    args: &ExplainArgs,
) -> Result<gateway_routes::explain::Result<gateway_routes::explain::Explanation>> {
    Ok(match Source::of(config, args).await? {
        Source::Routes(routes) => {
            gateway_memory_backend(config, routes).await.map_err(as_explain)?.explain(&args.url).await
        }
        Source::Live(client, namespace) => {
            let translation = config.gateway_translation(&namespace);
            let objects = GatewayKubeStore::list_live(client, &translation)
                .await
                .map_err(|e| Error::Kubernetes(Box::new(e)))?;
            gateway_routes::explain::explain(&objects, &translation, &args.url)
        }
    })
}

/// The explanation of a Gateway API implementation's choice, for people.
pub fn gateway_text(explained: &gateway_routes::explain::Explanation) -> String {
    let mut out = String::new();
    let request = &explained.request;
    out.push_str(&format!("request: Host {}, path {}\n", request.authority, request.path));
    out.push_str(&format!(
        "{} HTTPRoutes; {} rule matches, in the Gateway API's precedence (hostname, then path, then age):\n",
        explained.http_routes,
        explained.candidates.len()
    ));
    for (n, candidate) in explained.candidates.iter().enumerate() {
        let role = if n == 0 { "WINS" } else { "loses" };
        let matcher = serde_json::to_string(&candidate.matcher).expect("a match serialises");
        let route = candidate.route.as_deref().map_or_else(String::new, |spec| format!(" (route {spec})"));
        out.push_str(&format!(
            "  {}. {role:8} {} rule {}{route} match {matcher}\n",
            n + 1,
            candidate.http_route,
            candidate.rule
        ));
    }
    match &explained.winner {
        Some(winner) => {
            let route = winner.route.as_deref().unwrap_or("(not a route of this proxy)");
            out.push_str(&format!(
                "winner: {} in namespace {}, route {route}\n",
                winner.http_route, winner.namespace
            ));
            let backend = winner.backend.as_deref().unwrap_or("(no backend)");
            out.push_str(&format!("backend: {backend}, path forwarded {}\n", winner.path));
        }
        None => out.push_str("no rule matches: the gateway answers 404\n"),
    }
    let chp = explained.chp_route.as_deref().unwrap_or("no route (404)");
    out.push_str(&format!("configurable-http-proxy would pick: {chp}\n"));
    if let Some(warning) = &explained.warning {
        out.push_str(&format!("\n!!! NOT WHAT CONFIGURABLE-HTTP-PROXY DOES: {warning} !!!\n"));
    }
    out
}

/// The explanation for people: the request, the matching routes in the gateway's order, the
/// winner, and CHP's route, with a warning that stands out when they differ.
pub fn text(explained: &Explanation) -> String {
    let mut out = String::new();
    let request = &explained.request;
    out.push_str(&format!("request: Host {}, path {}\n", request.authority, request.path));
    let Some(virtual_host) = &explained.virtual_host else {
        out.push_str("no VirtualService on the gateway serves this host: the gateway answers 404\n");
        return with_chp(out, explained);
    };
    out.push_str(&format!(
        "gateway virtual host {virtual_host:?}: {} routes; {} match, in the order the gateway tries them:\n",
        explained.routes_in_virtual_host,
        explained.candidates.len()
    ));
    for (n, candidate) in explained.candidates.iter().enumerate() {
        let role = if n == 0 { "WINS" } else { "shadowed" };
        out.push_str(&format!("  {}. {role:8} {}\n", n + 1, describe(candidate)));
    }
    match &explained.winner {
        Some(winner) => {
            let route = winner.route.as_deref().unwrap_or("(not a route of this proxy)");
            out.push_str(&format!(
                "winner: {} in namespace {}, route {route}\n",
                winner.virtual_service, winner.namespace
            ));
            if let Some(to) = &winner.destination {
                let port = to.port.map_or_else(String::new, |p| format!(":{p}"));
                out.push_str(&format!("destination: {}{port}, path forwarded {}\n", to.host, to.path));
            }
        }
        None => out.push_str("no route matches: the gateway answers 404\n"),
    }
    with_chp(out, explained)
}

fn describe(candidate: &Candidate) -> String {
    let matcher = serde_json::to_string(&candidate.matcher).expect("a match serialises");
    let route = candidate.route.as_deref().map_or_else(String::new, |spec| format!(" (route {spec})"));
    format!("#{} {}{route} match {matcher}", candidate.position, candidate.virtual_service)
}

fn with_chp(mut out: String, explained: &Explanation) -> String {
    let chp = explained.chp_route.as_deref().unwrap_or("no route (404)");
    out.push_str(&format!("configurable-http-proxy would pick: {chp}\n"));
    if let Some(warning) = &explained.warning {
        out.push_str(&format!("\n!!! NOT WHAT CONFIGURABLE-HTTP-PROXY DOES: {warning} !!!\n"));
    }
    out
}

/// Answers `GET /api/explain?url=` with an [`Explainer`], in front of the routes API.
#[derive(Clone)]
pub struct ExplainLayer(pub Explainer);

impl std::fmt::Debug for ExplainLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExplainLayer")
    }
}

impl<S> Layer<S> for ExplainLayer {
    type Service = Explain<S>;

    fn layer(&self, inner: S) -> Explain<S> {
        Explain { inner, explainer: Arc::clone(&self.0) }
    }
}

/// The service [`ExplainLayer`] makes.
#[derive(Clone)]
pub struct Explain<S> {
    inner: S,
    explainer: Explainer,
}

impl<S> std::fmt::Debug for Explain<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Explain")
    }
}

impl<S, B> Service<Request<B>> for Explain<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path().trim_end_matches('/') != PATH {
            return Box::pin(self.inner.call(request));
        }
        let explainer = Arc::clone(&self.explainer);
        let method = request.method().clone();
        let query = request.uri().query().map(str::to_owned);
        Box::pin(async move {
            Ok(match answer(&explainer, &method, query.as_deref()).await {
                Ok(explained) => proxy_api::json_response(StatusCode::OK, &explained),
                Err(error) => error.into_response(),
            })
        })
    }
}

async fn answer(explainer: &Explainer, method: &Method, query: Option<&str>) -> proxy_api::Result<Explained> {
    if method != Method::GET {
        return Err(proxy_api::Error::MethodNotAllowed);
    }
    let bad = |reason: String| proxy_api::Error::InvalidQuery { parameter: "url", reason };
    let url = proxy_api::query_param(query, &["url"])
        .map_err(|raw| bad(format!("{raw:?} has a malformed %-escape")))?
        .ok_or_else(|| bad("missing: GET /api/explain?url=http://hub.example.org/user/alice/".to_owned()))?;
    explainer(url).await
}

#[cfg(test)]
mod tests {
    use istio_routes::explain::Request;

    use super::*;

    #[test]
    fn a_disagreement_with_chp_stands_out() {
        let explained = Explanation {
            request: Request::parse("http://hub.org/jhub/user/alice").unwrap(),
            virtual_host: Some("*".into()),
            routes_in_virtual_host: 3,
            candidates: Vec::new(),
            winner: None,
            chp_route: Some("/jhub/user/alice".into()),
            agrees_with_chp: false,
            warning: Some("the gateway answers 404, but ...".into()),
        };
        let out = text(&explained);
        assert!(
            out.contains("\n!!! NOT WHAT CONFIGURABLE-HTTP-PROXY DOES: the gateway answers 404"),
            "{out}"
        );
        assert!(out.contains("no route matches"), "{out}");
        let agreeing = Explanation { agrees_with_chp: true, warning: None, ..explained };
        assert!(!text(&agreeing).contains("!!!"));
    }
}
