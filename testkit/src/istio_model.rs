//! How an Istio ingress gateway routes a request through VirtualServices: the library's
//! [`istio_routes::explain`], which `explain` answers with.
//!
//! The tests route through the library's rules rather than a second copy of them: Istio's own
//! pilot (`testkit::oracle`) is the independent judge, and the routing property tests
//! (`istio-routes/tests/routing_properties.rs`) check these rules against it on every probe.

pub use istio_routes::explain::{Gateway, Routed};
