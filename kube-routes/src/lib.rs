//! What keeping JupyterHub's routes as Kubernetes objects takes, whichever routing API writes
//! them: the machinery `istio-routes` and `gateway-routes` share, so that neither depends on
//! the other.
//!
//! - [`conventions`]: the labels, annotations and route ids every object of ours carries.
//! - [`watch_cache`]: a label-selected watch of our objects, retried with [`watch_backoff`],
//!   with the [`Overlay`] that shows our writes until the watch delivers them
//!   (read-your-writes), and an index by route id ([`LabelIndex`]) kept from its events.
//! - [`heal`]: healing's engine (when to check a route and when to repair it) over what a
//!   routing API says drifted ([`heal::Repairs`]); [`SeenObjects`]: what healing keeps of
//!   objects it only judges (name, route, resource version, spec digest), not the objects.
//! - [`Error`]: the API server's answers ([`classify_resource`]), each mapped to the status
//!   JupyterHub sees; [`check_kind_served`] and [`server_version`] at start-up.
//! - [`KubeMetrics`], [`HealMetrics`], [`StoreMetrics`]: Prometheus metrics of the API calls,
//!   healing and the stores; [`retry_throttled`]: the wait on 429.
//! - [`Listing`] and [`shrink_when_sparse`]: the caches kept between requests, and how they give
//!   memory back when routes go.
//! - [`check_pod_address`]: the addresses Kubernetes takes as a pod's, for either routing API's
//!   pod-IP targets.
//! - [`explain`]: a request as a gateway sees it and configurable-http-proxy's choice, which
//!   each routing API's `explain` compares its gateways' choice with.
//!
//! Reading one route's objects through the overlay and the index, as both stores do:
//!
//! ```
//! use std::sync::Arc;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::runtime::watcher::Event;
//! use kube_routes::{LabelIndex, Overlay, ROUTE_LABEL, Write};
//!
//! let object = |name: &str, version: &str| {
//!     let mut object = ConfigMap::default();
//!     object.metadata.name = Some(name.to_owned());
//!     object.metadata.resource_version = Some(version.to_owned());
//!     object.metadata.labels = Some([(ROUTE_LABEL.to_owned(), "r1".to_owned())].into());
//!     object
//! };
//! let (overlay, index) = (Overlay::default(), LabelIndex::new(ROUTE_LABEL));
//!
//! // Our write returns before the watch shows it: the overlay answers reads meanwhile.
//! overlay.wrote("a", Write::Stored(Arc::new(object("a", "5"))));
//! assert_eq!(overlay.get("a", || None).unwrap().metadata.resource_version.as_deref(), Some("5"));
//!
//! // Its event arrives: the index has it, and the overlay lets go.
//! let event = Event::Apply(object("a", "5"));
//! index.observe(&event);
//! overlay.saw(&event);
//! assert_eq!(index.names("r1"), ["a"]);
//! assert!(overlay.is_empty());
//! ```
#![deny(missing_docs)]

mod answers;
mod caches;
mod calls;
pub mod conventions;
mod error;
pub mod explain;
pub mod heal;
mod index;
mod metrics;
mod overlay;
mod pod_address;
mod seen;
mod throttle;
mod watch;

pub use answers::{check_kind_served, classify_resource, server_version};
pub use caches::{Listing, shrink_when_sparse};
pub use calls::Calls;
pub use conventions::*;
pub use error::{Error, Result};
pub use index::LabelIndex;
pub use metrics::{HealMetrics, KubeMetrics, StoreMetrics, StoreState, Verb};
pub use overlay::{Overlay, Write};
pub use pod_address::{PodAddressError, check_pod_address};
pub use seen::{Seen, SeenObjects};
pub use throttle::retry_throttled;
pub use watch::{WatchCache, WatchStats, count_watch_call, watch_backoff, watch_cache};
