//! configurable-http-proxy's wire format, both ways.
//!
//! A route travels as `{"target": "<url>", <data keys>...}`; a listing is an object from route
//! key to route object. This crate never adds `last_activity`: a proxy that sees no traffic has
//! none to report (the binary's `activity` backend fills it in from the gateway's metrics).

use jiff::Timestamp;
use jiff::civil::DateTime;
use serde_json::{Map, Value};

use crate::{Error, Result, Route, RouteSpec, Target};

/// Reads a POST body into a route for `spec`.
///
/// The body must be a JSON object with a string `target`; every other key is route data. The
/// request's `Content-Type` is not consulted: JupyterHub 6 sends JSON as `text/plain`, and 5.x
/// as form-urlencoded.
///
/// ```
/// use proxy_api::{wire, RouteSpec};
/// let route = wire::route_from_body(RouteSpec::root(), br#"{"target": "http://hub:8081", "jupyterhub": true}"#).unwrap();
/// assert_eq!(route.target().as_str(), "http://hub:8081");
/// assert_eq!(route.data()["jupyterhub"], true);
/// ```
pub fn route_from_body(spec: RouteSpec, body: &[u8]) -> Result<Route> {
    let invalid = |reason: &str| Error::InvalidBody { reason: reason.to_owned() };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("the body is empty; send a JSON object with a \"target\""));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidBody { reason: format!("the body is not JSON: {e}") })?;
    let Value::Object(object) = value else {
        return Err(invalid("the body must be a JSON object with a \"target\""));
    };
    route_from_object(spec, object)
}

/// Reads one route object of the wire format (`{"target": ..., ...data}`).
pub fn route_from_object(spec: RouteSpec, mut object: Map<String, Value>) -> Result<Route> {
    let target = match object.remove("target") {
        Some(Value::String(target)) => Target::parse(&target)?,
        Some(_) => {
            return Err(Error::InvalidBody { reason: "\"target\" must be a string".to_owned() });
        }
        None => {
            return Err(Error::InvalidBody { reason: "the body has no \"target\"".to_owned() });
        }
    };
    Route::new(spec, target, object)
}

/// A listing of routes in the wire format: an object from decoded spec to route, in the order
/// given.
///
/// ```
/// use proxy_api::{wire, RouteSpec};
/// let hub = wire::route_from_body(RouteSpec::root(), br#"{"target": "http://hub:8081"}"#).unwrap();
/// assert_eq!(wire::route_table_json(&[hub]), br#"{"/":{"target":"http://hub:8081"}}"#);
/// ```
pub fn route_table_json<R: AsRef<Route>>(routes: &[R]) -> Vec<u8> {
    let size: usize =
        routes.iter().map(|r| r.as_ref().spec().as_str().len() + r.as_ref().wire_json().len() + 4).sum();
    let mut json = Vec::with_capacity(size + 2);
    json.push(b'{');
    for (i, route) in routes.iter().enumerate() {
        let route = route.as_ref();
        if i > 0 {
            json.push(b',');
        }
        serde_json::to_writer(&mut json, route.spec().as_str()).expect("writing to a Vec cannot fail");
        json.push(b':');
        json.extend_from_slice(route.wire_json().as_bytes());
    }
    json.push(b'}');
    json
}

impl AsRef<Route> for Route {
    fn as_ref(&self) -> &Route {
        self
    }
}

/// Parses `inactive_since` the way configurable-http-proxy's `new Date(...)` reads ISO 8601:
/// RFC 3339 with an offset, a date and time without one (taken as UTC), or a bare date.
///
/// ```
/// use proxy_api::wire::parse_datestamp;
/// assert!(parse_datestamp("2026-11-26T10:00:00.123Z").is_ok());
/// assert!(parse_datestamp("2026-11-26").is_ok());
/// assert!(parse_datestamp("last tuesday").is_err());
/// ```
pub fn parse_datestamp(text: &str) -> Result<Timestamp> {
    let trimmed = text.trim();
    let invalid = || Error::InvalidDatestamp(text.to_owned());
    if trimmed.contains(['T', 't']) && has_offset(trimmed) {
        return trimmed.parse::<Timestamp>().map_err(|_| invalid());
    }
    // A civil date and time (or a bare date, at midnight), taken as UTC.
    let civil: DateTime = trimmed.parse().map_err(|_| invalid())?;
    civil.to_zoned(jiff::tz::TimeZone::UTC).map(|zoned| zoned.timestamp()).map_err(|_| invalid())
}

/// Whether an ISO 8601 date and time ends with a UTC offset (`Z`, `+02:00`, `-0500`).
fn has_offset(text: &str) -> bool {
    let time = text.rsplit(['T', 't']).next().unwrap_or_default();
    time.ends_with(['Z', 'z']) || time.contains(['+', '-'])
}

/// Whether a route is known to have been inactive since `since`: its data holds a
/// `last_activity` timestamp older than that. A route without one is never reported inactive,
/// since a proxy that carries no traffic cannot know; reporting it would invite a culler to stop
/// servers that are in use.
pub fn inactive_since(route: &Route, since: Timestamp) -> bool {
    route
        .data()
        .get("last_activity")
        .and_then(Value::as_str)
        .and_then(|stamp| parse_datestamp(stamp).ok())
        .is_some_and(|last| last < since)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::RoutingMode;

    fn spec(s: &str) -> RouteSpec {
        RouteSpec::new(s, RoutingMode::Path).unwrap()
    }

    fn reason(body: &[u8]) -> String {
        match route_from_body(spec("/x"), body) {
            Err(Error::InvalidBody { reason }) => reason,
            other => panic!("expected {:?} to be refused, got {other:?}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn body_round_trips_with_data_kept_exactly() {
        let body = json!({
            "target": "http://10.0.0.7:8888/x",
            "jupyterhub": true,
            "user": "alice",
            "server_name": "",
            "nested": {"a": [1, 2.5, null]}
        });
        let route = route_from_body(spec("/user/alice"), body.to_string().as_bytes()).unwrap();
        assert_eq!(route.target().as_str(), "http://10.0.0.7:8888/x");
        assert!(!route.data().contains_key("target"));
        assert_eq!(serde_json::from_str::<Value>(route.wire_json()).unwrap(), body);
    }

    #[test]
    fn bad_bodies_say_why() {
        assert!(reason(b"").contains("empty"));
        assert!(reason(b"  \n").contains("empty"));
        assert!(reason(b"{").contains("not JSON"));
        assert!(reason(b"target=http://x").contains("not JSON"));
        assert!(reason(b"[]").contains("JSON object"));
        assert!(reason(b"\"http://x\"").contains("JSON object"));
        assert!(reason(b"{}").contains("no \"target\""));
        assert!(reason(br#"{"target": 5}"#).contains("must be a string"));
        assert!(reason(br#"{"target": null}"#).contains("must be a string"));
    }

    #[test]
    fn unroutable_target_in_body_is_a_target_error() {
        let result = route_from_body(spec("/x"), br#"{"target": "not a url"}"#);
        assert!(matches!(result, Err(Error::InvalidTarget { .. })), "{result:?}");
    }

    #[test]
    fn table_is_keyed_by_decoded_spec() {
        let routes = vec![
            route_from_body(spec("/"), br#"{"target": "http://hub:8081", "jupyterhub": true}"#).unwrap(),
            route_from_body(spec("/has space"), br#"{"target": "http://a:1"}"#).unwrap(),
        ];
        let table: Value = serde_json::from_slice(&route_table_json(&routes)).unwrap();
        assert_eq!(
            table,
            json!({
                "/": {"target": "http://hub:8081", "jupyterhub": true},
                "/has space": {"target": "http://a:1"},
            })
        );
        let empty: Vec<Route> = Vec::new();
        assert_eq!(route_table_json(&empty), b"{}");
    }

    #[test]
    fn datestamps() {
        let at = |s| parse_datestamp(s).unwrap().to_string();
        assert_eq!(at("2026-11-26T10:00:00Z"), "2026-11-26T10:00:00Z");
        assert_eq!(at("2026-11-26T12:00:00+02:00"), "2026-11-26T10:00:00Z");
        assert_eq!(at("2026-11-26T12:00:00-0200"), "2026-11-26T14:00:00Z");
        assert_eq!(at("2026-11-26T10:00:00.5"), "2026-11-26T10:00:00.5Z");
        assert_eq!(at("2026-11-26T10:00"), "2026-11-26T10:00:00Z");
        assert_eq!(at("2026-11-26"), "2026-11-26T00:00:00Z");
        for bad in ["", "garbage", "2026-13-01", "1700000000", "2026-11-26 10:00:00 PST", "2026-11-26T25:00"]
        {
            assert!(matches!(parse_datestamp(bad), Err(Error::InvalidDatestamp(s)) if s == bad), "{bad}");
        }
    }

    #[test]
    fn only_routes_with_an_older_last_activity_are_inactive() {
        let since = parse_datestamp("2026-11-26T00:00:00Z").unwrap();
        let route = |data: &str| route_from_body(spec("/x"), data.as_bytes()).unwrap();
        assert!(inactive_since(
            &route(r#"{"target":"http://a","last_activity":"2026-11-25T00:00:00Z"}"#),
            since
        ));
        assert!(!inactive_since(
            &route(r#"{"target":"http://a","last_activity":"2026-11-27T00:00:00Z"}"#),
            since
        ));
        assert!(!inactive_since(&route(r#"{"target":"http://a","last_activity":"nonsense"}"#), since));
        assert!(!inactive_since(&route(r#"{"target":"http://a"}"#), since));
    }
}
