//! JupyterHub's routes as Istio routing objects.
//!
//! What every routing API needs of Kubernetes (the watch cache, the overlay, errors, metrics,
//! labels and route ids) is `kube_routes`'; this crate is what is Istio's.
//!
//! - [`Translation`]: a route becomes a VirtualService (and a ServiceEntry for a pod-IP
//!   target), labelled for this proxy instance, with the route kept in its annotations;
//!   [`Translation::read`] turns objects, ours or the Go proxy's, back into routes.
//! - [`order`]: why one VirtualService per route routes as configurable-http-proxy does, and
//!   what keeps it so.
//! - [`RouteStore`]: what the backend needs from the Kubernetes API, with `MockRouteStore`
//!   (feature `mock`) for tests; [`KubeStore`] keeps the objects in Kubernetes behind a watch
//!   cache, and [`MemoryStore`] keeps them in memory.
//! - [`IstioBackend`]: the routes API's [`proxy_api::Backend`] over a store.
//! - [`explain`]: where Istio's gateway sends a request through the objects, and whether that
//!   is where configurable-http-proxy would send it.
//! - [`heal`]: repairs our objects when they drift from what their routes render (edited,
//!   deleted behind our back, stray generations, orphaned ServiceEntries), driven by the watch.
//! - [`activity`]: when requests last reached each route's destination, from the gateway's
//!   standard Istio metrics in Prometheus.
//!
//! ```
//! use std::sync::Arc;
//! use istio_routes::{IstioBackend, MemoryStore, RouteStore, Translation};
//! use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::new(Translation::default()));
//! let backend = IstioBackend::new(Arc::clone(&store), Translation::default());
//! let spec = RouteSpec::new("/user/alice", RoutingMode::Path).unwrap();
//! let route = Route::new(spec, Target::parse("http://10.0.0.7:8888").unwrap(), Default::default()).unwrap();
//! backend.add(route).await.unwrap();
//!
//! let objects = store.virtual_services();
//! let match_ = &objects[0].spec.http[0].matches[0];
//! assert_eq!(serde_json::to_value(match_).unwrap(), serde_json::json!({"uri": {"exact": "/user/alice"}}));
//! assert_eq!(store.service_entries().len(), 1); // the pod IP, made routable
//! assert_eq!(backend.list().await.unwrap().len(), 1);
//! # });
//! ```
//!
//! With the `mock` feature, `MockRouteStore` lets a test say what the API server holds and
//! check what the backend writes, with no server at all:
//!
//! ```
//! # #[cfg(feature = "mock")] {
//! use std::sync::Arc;
//! use istio_routes::{IstioBackend, MockRouteStore, Translation};
//! use proxy_api::{Backend, Route, RouteSpec, RoutingMode, Target};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut store = MockRouteStore::new();
//! store.expect_is_ready().return_const(true);
//! store.expect_virtual_services_of().returning(|_| Vec::new()); // nothing there yet
//! store.expect_apply_virtual_service().times(1).returning(|object| Ok(Arc::new(object)));
//! store.expect_apply_service_entry().never(); // a service target needs none
//! let backend = IstioBackend::new(Arc::new(store), Translation::default());
//! let spec = RouteSpec::new("/user/alice", RoutingMode::Path).unwrap();
//! let target = Target::parse("http://jupyter-alice:8888").unwrap();
//! backend.add(Route::new(spec, target, Default::default()).unwrap()).await.unwrap();
//! # });
//! # }
//! ```
#![deny(missing_docs)]

pub mod activity;
mod backend;
pub mod explain;
pub mod heal;
mod kube_store;
mod memory;
pub mod order;
mod read;
pub mod resources;
mod store;
mod translate;
pub mod yaml;

pub use backend::IstioBackend;
pub use kube_store::KubeStore;
pub use memory::{Clock, ManualClock, MemoryStore};
pub use read::{Origin, StoredRoute};
#[cfg(any(test, feature = "mock"))]
pub use store::MockRouteStore;
pub use store::RouteStore;
pub use translate::*;

// A store's failures are the API server's answers, as every routing API's are.
use kube_routes::{Error, Result};
