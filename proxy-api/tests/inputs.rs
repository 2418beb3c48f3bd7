//! Arbitrary input, thrown by machines at everything that reads a request: the spec decoder,
//! the target parser, the wire format and the API as a whole. Never a panic; every refusal is a
//! JSON error with a 4xx status, and a refused request changes nothing.
//!
//! Failures proptest finds are kept in `proptest-regressions/` and run first on every run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use proxy_api::{ApiConfig, Backend, Route, RouteSpec, RoutesApi, RoutingMode, Target, wire};

/// Routes in a map: the smallest backend, so that a test sees every write.
#[derive(Debug, Default)]
struct Routes(Mutex<BTreeMap<String, Arc<Route>>>);

impl Routes {
    fn snapshot(&self) -> Vec<(String, String)> {
        let routes = self.0.lock().unwrap();
        routes.iter().map(|(spec, route)| (spec.clone(), route.wire_json().to_owned())).collect()
    }
}

#[async_trait]
impl Backend for Routes {
    async fn list(&self) -> proxy_api::Result<Vec<Arc<Route>>> {
        Ok(self.0.lock().unwrap().values().cloned().collect())
    }

    async fn get(&self, spec: &RouteSpec) -> proxy_api::Result<Option<Arc<Route>>> {
        Ok(self.0.lock().unwrap().get(spec.as_str()).cloned())
    }

    async fn add(&self, route: Route) -> proxy_api::Result<()> {
        self.0.lock().unwrap().insert(route.spec().as_str().to_owned(), Arc::new(route));
        Ok(())
    }

    async fn delete(&self, spec: &RouteSpec) -> proxy_api::Result<bool> {
        Ok(self.0.lock().unwrap().remove(spec.as_str()).is_some())
    }
}

/// Strings that look like what they are parsed as, with hostile characters mixed in.
fn near(prefixes: &'static [&'static str]) -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("/".to_owned()),
        Just("%".to_owned()),
        Just(".".to_owned()),
        Just(":".to_owned()),
        Just("@".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        "%[0-9a-fA-FzZ]{0,2}",
        "[0-9]{1,4}",
        "0x[0-9a-f]{0,3}",
        "[a-zA-Z0-9_~-]{1,6}",
        any::<char>().prop_map(String::from),
    ];
    (proptest::sample::select(prefixes), proptest::collection::vec(pieces, 0..12))
        .prop_map(|(prefix, pieces)| format!("{prefix}{}", pieces.concat()))
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (near(&["http://", "https://", "HTTP://", "", "ftp://"]), "[a-z_]{0,8}", any::<i64>()).prop_map(
            |(target, key, number)| {
                serde_json::json!({"target": target, key: number, "jupyterhub": true})
                    .to_string()
                    .into_bytes()
            }
        ),
        near(&["{\"target\":", "{", "[", "\"", ""]).prop_map(String::into_bytes),
    ]
}

fn mode() -> impl Strategy<Value = RoutingMode> {
    prop_oneof![Just(RoutingMode::Path), Just(RoutingMode::Host)]
}

/// The API's answer, and its body as JSON (`Null` when empty).
async fn answer(api: &RoutesApi<Routes>, request: Request<Full<Bytes>>) -> (StatusCode, serde_json::Value) {
    let response = api.handle(request).await;
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"))
    };
    (status, body)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn targets_parse_or_say_why(raw in prop_oneof![any::<String>(), near(&["http://", "https://", "http://[", "http:"])]) {
        match Target::parse(&raw) {
            Ok(target) => {
                prop_assert_eq!(target.as_str(), raw.as_str());
                prop_assert!(raw.contains(target.host()));
                prop_assert!(target.port() > 0);
                // A host ending in a number is an IPv4 address, as a browser reads it.
                let last = target.host().rsplit('.').next().unwrap_or_default();
                if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
                    prop_assert!(target.ip().is_some(), "{}", raw);
                }
            }
            Err(error) => {
                prop_assert_eq!(error.status(), StatusCode::BAD_REQUEST);
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    #[test]
    fn specs_decode_or_say_why(raw in prop_oneof![any::<String>(), near(&["/", "/user/", "host/", "%2F", ""])], mode in mode()) {
        for parsed in [RouteSpec::from_encoded(&raw, mode), RouteSpec::new(&raw, mode)] {
            match parsed {
                Ok(spec) => {
                    prop_assert!(spec.as_str().starts_with('/') || mode == RoutingMode::Host);
                    // What a spec decodes to decodes to itself again.
                    let again = RouteSpec::new(spec.as_str(), mode);
                    prop_assert_eq!(again.as_ref().map(RouteSpec::as_str).ok(), Some(spec.as_str()));
                }
                Err(error) => prop_assert!(error.status().is_client_error(), "{error}"),
            }
        }
    }

    #[test]
    fn bodies_become_routes_or_say_why(body in bodies()) {
        let spec = RouteSpec::new("/user/alice", RoutingMode::Path).unwrap();
        match wire::route_from_body(spec, &body) {
            Ok(route) => {
                let listed = wire::route_table_json(&[Arc::new(route)]);
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&listed).is_ok());
            }
            Err(error) => prop_assert!(error.status().is_client_error(), "{error}"),
        }
    }

    #[test]
    fn requests_are_answered_and_refusals_change_nothing(
        method in proptest::sample::select(vec![Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::PATCH]),
        path in near(&["/api/routes", "/api/routes/", "/api/routes/user/", "/api/", "/"]),
        query in proptest::option::of(near(&["inactive_since=", "", "inactive_since=2026-"])),
        body in bodies(),
        mode in mode(),
    ) {
        let uri = match &query {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        // What a client cannot send, the server never sees.
        let Ok(request) = Request::builder().method(method).uri(&uri).body(Full::new(Bytes::from(body))) else {
            return Ok(());
        };
        let backend = Arc::new(Routes::default());
        let seed = Route::new(
            RouteSpec::new("/user/seed", mode).unwrap_or_else(|_| RouteSpec::new("seed.org/user/seed", mode).unwrap()),
            Target::parse("http://10.0.0.1:8888").unwrap(),
            Default::default(),
        ).unwrap();
        block_on(backend.add(seed)).unwrap();
        let before = backend.snapshot();
        let api = RoutesApi::new(Arc::clone(&backend), ApiConfig { routing_mode: mode, ..ApiConfig::default() });
        let (status, json) = block_on(answer(&api, request));
        prop_assert!(!status.is_server_error(), "{uri}: {status} {json}");
        if status.is_client_error() {
            prop_assert!(json.get("error").is_some_and(serde_json::Value::is_string), "{uri}: {status} {json}");
            prop_assert_eq!(backend.snapshot(), before, "a refused request wrote");
        }
    }
}

/// Runs a future on a current-thread runtime: proptest's cases are plain functions.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}
