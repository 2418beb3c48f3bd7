//! JupyterHub's routes as Kubernetes Gateway API objects, for any conforming gateway (Istio,
//! Envoy Gateway, Cilium, Contour, NGINX Gateway Fabric, cloud gateways).
//!
//! - [`GatewayTranslation`]: a route becomes one HTTPRoute (`PathPrefix`, which matches whole
//!   segments, with the route kept in its annotations), and for a pod-IP target a
//!   selector-less Service with an EndpointSlice; [`GatewayTranslation::read`] turns an
//!   HTTPRoute back into its route.
//! - [`HttpRouteStore`]: what the backend needs from the Kubernetes API;
//!   [`GatewayKubeStore`] keeps them in Kubernetes behind a watch cache ([`kube_routes`]'
//!   machinery, as the Istio store's), [`GatewayMemoryStore`] in memory.
//! - [`GatewayBackend`]: the routes API's [`proxy_api::Backend`] over a store.
//! - [`status`]: what the gateways made of each HTTPRoute (`Accepted`, `ResolvedRefs`).
//! - [`explain`]: where a conforming gateway sends a request through the HTTPRoutes, by the
//!   specification's precedence, and whether that is where configurable-http-proxy would.
//! - [`heal`]: repairs our objects when they drift from what their routes render (edited,
//!   deleted behind our back, orphaned or stray Services and EndpointSlices), driven by the
//!   watches, on [`kube_routes::heal`]'s engine.
//!
//! The object conventions (labels, annotations, route ids) and the errors are
//! [`kube_routes`]', shared with `istio-routes` rather than copied, so both backends' objects
//! read alike. Unlike the Istio backend, nothing here orders objects: the Gateway API gives the longest path
//! prefix precedence by specification.
//!
//! ```
//! use std::sync::Arc;
//! use gateway_routes::{GatewayBackend, GatewayMemoryStore, GatewayTranslation, HttpRouteStore};
//! use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let translation = GatewayTranslation {
//!     parent_refs: vec!["istio-system/jupyterhub".parse().unwrap()],
//!     ..GatewayTranslation::default()
//! };
//! let store = Arc::new(GatewayMemoryStore::new());
//! let backend = GatewayBackend::new(Arc::clone(&store), translation);
//! let spec = RouteSpec::new("/user/alice", RoutingMode::Path).unwrap();
//! let route = Route::new(spec, Target::parse("http://10.0.0.7:8888").unwrap(), Default::default()).unwrap();
//! backend.add(route).await.unwrap();
//!
//! let objects = store.http_routes();
//! let rule = serde_json::to_value(&objects[0].spec.rules[0].matches).unwrap();
//! assert_eq!(rule, serde_json::json!([{"path": {"type": "PathPrefix", "value": "/user/alice"}}]));
//! assert_eq!(store.pod_backends().len(), 1); // the pod IP, as a Service and an EndpointSlice
//! assert_eq!(backend.list().await.unwrap().len(), 1);
//! # });
//! ```
#![deny(missing_docs)]

mod backend;
pub mod explain;
pub mod heal;
mod kube_store;
mod memory;
pub mod resources;
pub mod status;
mod store;
mod translate;

pub use backend::GatewayBackend;
pub use kube_store::GatewayKubeStore;
pub use memory::GatewayMemoryStore;
pub use resources::{HttpRoute, ParentReference};
pub use store::HttpRouteStore;
pub use translate::*;
