//! configurable-http-proxy's REST API, as JupyterHub speaks it, with no storage in it.
//!
//! - [`RouteSpec`]: route keys, percent-decoded and normalised, in path or host routing mode.
//! - [`Target`]: validated `http`/`https` targets, kept byte-for-byte.
//! - [`Route`] and [`wire`]: routes and their JSON form, both ways.
//! - [`Error`]: every failure, with its status and JSON body.
//! - [`RoutesApi`]: the API as a tower `Service` over a [`Backend`], which keeps the routes.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use bytes::Bytes;
//! use http::{Request, StatusCode};
//! use http_body_util::Full;
//! use proxy_api::{ApiConfig, Backend, Result, Route, RouteSpec, RoutesApi};
//!
//! /// A backend that keeps routes in a list.
//! #[derive(Default)]
//! struct Routes(Mutex<Vec<Arc<Route>>>);
//!
//! #[async_trait::async_trait]
//! impl Backend for Routes {
//!     async fn list(&self) -> Result<Vec<Arc<Route>>> {
//!         Ok(self.0.lock().unwrap().clone())
//!     }
//!     async fn get(&self, spec: &RouteSpec) -> Result<Option<Arc<Route>>> {
//!         Ok(self.0.lock().unwrap().iter().find(|r| r.spec() == spec).cloned())
//!     }
//!     async fn add(&self, route: Route) -> Result<()> {
//!         self.delete(route.spec()).await?;
//!         Ok(self.0.lock().unwrap().push(Arc::new(route)))
//!     }
//!     async fn delete(&self, spec: &RouteSpec) -> Result<bool> {
//!         let mut routes = self.0.lock().unwrap();
//!         let before = routes.len();
//!         routes.retain(|r| r.spec() != spec);
//!         Ok(routes.len() < before)
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let api = RoutesApi::new(Arc::new(Routes::default()), ApiConfig::default());
//! let post = Request::post("/api/routes/user/alice/")
//!     .body(Full::new(Bytes::from(r#"{"target": "http://10.0.0.7:8888", "jupyterhub": true}"#)))
//!     .unwrap();
//! assert_eq!(api.handle(post).await.status(), StatusCode::CREATED);
//!
//! let get = Request::get("/api/routes/user/alice").body(Full::new(Bytes::new())).unwrap();
//! assert_eq!(api.handle(get).await.status(), StatusCode::OK);
//! # });
//! ```
#![deny(missing_docs)]

mod api;
mod backend;
mod error;
mod route;
mod spec;
mod target;
pub mod wire;

pub use api::{ApiConfig, ROUTES_PATH, ResponseFuture, RoutesApi, query_param};
pub use backend::Backend;
pub use error::{BoxError, Error, Result, json_response};
pub use route::Route;
pub use spec::{RouteSpec, RoutingMode};
pub use target::{Scheme, Target};
