//! How a conforming Gateway API implementation routes a request through HTTPRoutes: the
//! specification's precedence rules, as `gateway_routes::explain` writes them (the one copy,
//! which explains requests to operators too).

pub use gateway_routes::explain::{GatewayApi, Routed};
