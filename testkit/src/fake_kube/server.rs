//! The HTTP side: accepting connections, routing paths, answering with JSON.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::object::{ApiError, Scope, partial};
use super::selector::Selector;
use super::watch::{WatchParams, WatchStream};
use super::{Answer, SeenRequest, Shared};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Accepts connections until the task is aborted; aborting drops every connection with it.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| handle(shared.clone(), request));
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query().unwrap_or_default());
    let (answer, latency) = {
        let mut inner = shared.lock();
        inner.requests.push(SeenRequest {
            method: method.clone(),
            path: path.clone(),
            query: request.uri().query().unwrap_or_default().to_owned(),
        });
        let watch = query.flag("watch");
        let answer = inner.rules.iter().position(|rule| rule.matches(&method, &path, watch)).map(|i| {
            let answer = inner.rules[i].answer.clone();
            inner.rules[i].times -= 1;
            if inner.rules[i].times == 0 {
                inner.rules.remove(i);
            }
            answer
        });
        (answer, inner.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match answer {
        Some(Answer::Status { code, reason }) => {
            let error = ApiError::new(code, &reason, format!("injected failure: {code} {reason}"));
            return Ok(error_response(&error));
        }
        Some(Answer::NotServed) => return Ok(not_served()),
        Some(Answer::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let metadata_only = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!("unreadable body: {e}"))));
        }
    };
    let call = Call { method, query, content_type, metadata_only, body };
    Ok(route(&shared, &path, &call).unwrap_or_else(|e| error_response(&e)))
}

/// A request, read.
struct Call {
    method: Method,
    query: Query,
    content_type: String,
    /// `Accept: application/json;as=PartialObjectMetadata[List]`.
    metadata_only: bool,
    body: Bytes,
}

fn route(shared: &Arc<Shared>, path: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["version"] if call.method == Method::GET => Ok(json_response(200, &version())),
        ["apis"] if call.method == Method::GET => Ok(json_response(200, &groups(shared))),
        ["apis", group, version] if call.method == Method::GET => {
            Ok(resources(shared, group, version).map_or_else(not_served, |list| json_response(200, &list)))
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            resource(shared, group, version, rest, call)
        }
        ["api", version, rest @ ..] if !rest.is_empty() => resource(shared, "", version, rest, call),
        _ => Ok(not_served()),
    }
}

/// `namespaces/{ns}/{plural}[/{name}]`, or `{plural}` for every namespace, in a group version.
fn resource(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    call: &Call,
) -> Result<Response<Body>, ApiError> {
    let scope = |plural: &str, namespace: Option<&str>| Scope {
        group: group.to_owned(),
        version: version.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
    };
    match rest {
        ["namespaces", ns, plural] => collection(shared, &scope(plural, Some(ns)), call),
        ["namespaces", ns, plural, name] => item(shared, &scope(plural, Some(ns)), name, call),
        [plural] => collection(shared, &scope(plural, None), call),
        _ => Ok(not_served()),
    }
}

fn collection(shared: &Arc<Shared>, scope: &Scope, call: &Call) -> Result<Response<Body>, ApiError> {
    let selector = Selector::parse(call.query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
    match call.method {
        Method::GET if call.query.flag("watch") => watch(shared, scope, selector, call),
        Method::GET => {
            let limit = match call.query.get("limit") {
                None | Some("") => 0,
                Some(limit) => {
                    limit.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?
                }
            };
            let token = call.query.get("continue").filter(|t| !t.is_empty());
            let name = name_field(call.query.get("fieldSelector").unwrap_or_default())?;
            let mut list = shared.lock().store.list(scope, &selector, limit, token)?;
            if let (Some(name), Some(items)) = (name, list["items"].as_array_mut()) {
                items.retain(|item| item["metadata"]["name"] == name);
            }
            Ok(object_response(call, 200, &list))
        }
        Method::POST if scope.namespace.is_some() => {
            written(call, shared.write(|store| store.create(scope, &call.body)))
        }
        Method::DELETE if scope.namespace.is_some() => {
            written(call, shared.write(|store| store.delete_collection(scope, &selector)))
        }
        _ => Err(method_not_allowed(&call.method)),
    }
}

/// The one field selector the fake serves, `metadata.name=NAME` (what the store asks for);
/// others are refused as the API server refuses a field it does not index.
fn name_field(selector: &str) -> Result<Option<&str>, ApiError> {
    if selector.is_empty() {
        return Ok(None);
    }
    match selector.strip_prefix("metadata.name=") {
        Some(name) => Ok(Some(name.strip_prefix('=').unwrap_or(name))),
        None => Err(ApiError::bad_request(format!("field label not supported: {selector}"))),
    }
}

fn item(shared: &Arc<Shared>, scope: &Scope, name: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    match call.method {
        Method::GET => Ok(object_response(call, 200, shared.lock().store.get(scope, name)?)),
        Method::PUT => written(call, shared.write(|store| store.replace(scope, name, &call.body))),
        Method::DELETE => written(call, shared.write(|store| store.delete(scope, name, &call.body))),
        Method::PATCH => match call.content_type.as_str() {
            "application/apply-patch+yaml" => {
                let manager = call.query.get("fieldManager");
                written(call, shared.write(|store| store.apply(scope, name, &call.body, manager)))
            }
            "application/merge-patch+json" => {
                written(call, shared.write(|store| store.merge_patch(scope, name, &call.body)))
            }
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                ),
            )),
        },
        _ => Err(method_not_allowed(&call.method)),
    }
}

fn watch(
    shared: &Arc<Shared>,
    scope: &Scope,
    selector: Selector,
    call: &Call,
) -> Result<Response<Body>, ApiError> {
    let query = &call.query;
    let resource_version = match query.get("resourceVersion") {
        None | Some("") => None,
        Some(rv) => {
            Some(rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?)
        }
    };
    let timeout = match query.get("timeoutSeconds") {
        None | Some("") => None,
        Some(t) => Some(Duration::from_secs(
            t.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        )),
    };
    let params = WatchParams {
        resource_version,
        send_initial_events: query.flag("sendInitialEvents"),
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout,
        metadata_only: call.metadata_only,
    };
    let stream = WatchStream::open(shared.clone(), scope.clone(), selector, params);
    let frames = futures::stream::unfold(stream, |mut stream| async move {
        let frame = stream.next().await?;
        Some((frame, stream))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .unwrap_or_else(|_| not_served()))
}

fn written(call: &Call, result: Result<(u16, Value), ApiError>) -> Result<Response<Body>, ApiError> {
    result.map(|(code, object)| object_response(call, code, &object))
}

/// An object or a list, or only their metadata when the client asked for that.
fn object_response(call: &Call, code: u16, value: &Value) -> Response<Body> {
    if call.metadata_only { json_response(code, &partial(value)) } else { json_response(code, value) }
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
    )
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /apis`: the groups and versions objects were written through.
fn groups(shared: &Shared) -> Value {
    let inner = shared.lock();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (group, version, _) in inner.store.served.iter().filter(|(g, _, _)| !g.is_empty()) {
        match groups.last_mut() {
            Some((last, versions)) if last == group => {
                if !versions.contains(version) {
                    versions.push(version.clone());
                }
            }
            _ => groups.push((group.clone(), vec![version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}/{version}`: the resources written through it, or `None` (404).
fn resources(shared: &Shared, group: &str, version: &str) -> Option<Value> {
    let inner = shared.lock();
    let resources: Vec<Value> = inner
        .store
        .served
        .iter()
        .filter(|(g, v, _)| g == group && v == version)
        .map(|(_, _, plural)| {
            let kind = inner.store.kind(group, plural);
            json!({
                "name": plural, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    (!resources.is_empty()).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources})
    })
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

/// What the API server says for a path nothing serves, such as a CRD not installed: plain
/// text, not a `Status`.
fn not_served() -> Response<Body> {
    let mut response = Response::new(full("404 page not found\n".to_owned()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// Query parameters, decoded. Empty pairs (kube-rs sends `?&watch=true`) are skipped.
#[derive(Debug)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(text: &str) -> Query {
        let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        Query(
            text.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(key), decode(value))
                })
                .collect(),
        )
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `true` or `1`.
    pub(super) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}
