//! JupyterHub's routes, kept where Istio can act on them.
//!
//! Today this crate holds the in-memory store; the translation of routes into Istio
//! VirtualServices and the Kubernetes store come next, behind the same [`proxy_api::Backend`].
//!
//! ```
//! use istio_routes::MemoryStore;
//! use proxy_api::{Backend, Route, RouteSpec, Target};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let route = Route::new(RouteSpec::root(), Target::parse("http://hub:8081").unwrap(), Default::default()).unwrap();
//! store.add(route).await.unwrap();
//! assert_eq!(store.list().await.unwrap().len(), 1);
//! # });
//! ```
#![deny(missing_docs)]

mod memory;

pub use memory::MemoryStore;
