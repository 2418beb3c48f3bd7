//! The routes API over HTTP, behaviour by behaviour of configurable-http-proxy's REST API
//! (<https://github.com/jupyterhub/configurable-http-proxy#using-the-rest-api>).

mod common;

use common::{TOKEN, memory};
use http::{Method, StatusCode};
use proxy_api::RoutingMode;
use serde_json::{Value, json};
use testkit::client::raw_request;

const ALICE: &str =
    r#"{"target": "http://10.0.0.7:8888", "jupyterhub": true, "user": "alice", "server_name": ""}"#;

#[tokio::test]
async fn listing_is_json_keyed_by_decoded_spec_with_no_invented_last_activity() {
    let proxy = memory(RoutingMode::Path).await;
    assert_eq!(proxy.api.post("/api/routes/user/alice/", ALICE).await.status, StatusCode::CREATED);
    assert_eq!(
        proxy.api.post("/api/routes/has%20space/foo/", r#"{"target":"http://a:1"}"#).await.status,
        201
    );
    assert_eq!(
        proxy.api.post("/api/routes/user/%E7%A7%80%E6%A8%B9", r#"{"target":"http://b:2"}"#).await.status,
        201
    );

    for path in ["/api/routes", "/api/routes/"] {
        let listing = proxy.api.get(path).await;
        assert_eq!(listing.status, StatusCode::OK);
        assert_eq!(listing.content_type(), "application/json");
        assert_eq!(
            listing.json(),
            json!({
                "/user/alice": {"target": "http://10.0.0.7:8888", "jupyterhub": true, "user": "alice", "server_name": ""},
                "/has space/foo": {"target": "http://a:1"},
                "/user/秀樹": {"target": "http://b:2"},
            })
        );
    }
}

#[tokio::test]
async fn get_one_route_or_404() {
    let proxy = memory(RoutingMode::Path).await;
    proxy.api.post("/api/routes/user/alice", ALICE).await;
    for path in ["/api/routes/user/alice", "/api/routes/user/alice/", "/api/routes/user/alice%2F"] {
        let found = proxy.api.get(path).await;
        assert_eq!(found.status, StatusCode::OK, "{path}");
        assert_eq!(found.content_type(), "application/json");
        assert_eq!(found.json(), serde_json::from_str::<Value>(ALICE).unwrap());
    }
    let missing = proxy.api.get("/api/routes/user/alice2").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "Not Found");
}

#[tokio::test]
async fn post_replaces_the_whole_route_and_no_path_is_the_root() {
    let proxy = memory(RoutingMode::Path).await;
    let created = proxy.api.post("/api/routes/user/alice/", ALICE).await;
    assert_eq!((created.status, created.body.len()), (StatusCode::CREATED, 0));
    proxy.api.post("/api/routes/user/alice", r#"{"target": "http://10.0.0.8:8888", "extra": 1}"#).await;
    assert_eq!(
        proxy.api.get("/api/routes/user/alice").await.json(),
        json!({"target": "http://10.0.0.8:8888", "extra": 1})
    );

    for path in ["/api/routes", "/api/routes/"] {
        let body = format!(r#"{{"target": "http://hub:8081", "via": "{path}"}}"#);
        assert_eq!(proxy.api.post(path, &body).await.status, StatusCode::CREATED);
        assert_eq!(proxy.api.get("/api/routes").await.json()["/"]["via"], path);
    }
}

#[tokio::test]
async fn delete_is_204_then_404_and_never_hangs() {
    let proxy = memory(RoutingMode::Path).await;
    proxy.api.post("/api/routes/user/alice", ALICE).await;
    let deleted = proxy.api.delete("/api/routes/user/alice/").await;
    assert_eq!((deleted.status, deleted.body.len()), (StatusCode::NO_CONTENT, 0));
    assert_eq!(proxy.api.delete("/api/routes/user/alice").await.status, StatusCode::NOT_FOUND);

    // configurable-http-proxy hangs on these two; we answer.
    assert_eq!(proxy.api.delete("/api/routes").await.status, StatusCode::NOT_FOUND);
    let malformed = proxy.api.delete("/api/routes/user/%zz").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.error().contains("percent-escape"), "{}", malformed.error());

    proxy.api.post("/api/routes/", r#"{"target": "http://hub:8081"}"#).await;
    assert_eq!(proxy.api.delete("/api/routes").await.status, StatusCode::NO_CONTENT);
    assert_eq!(proxy.api.get("/api/routes").await.json(), json!({}));
}

#[tokio::test]
async fn other_methods_are_405_and_other_paths_404() {
    let proxy = memory(RoutingMode::Path).await;
    for method in [Method::PUT, Method::PATCH, Method::HEAD, Method::OPTIONS] {
        for path in ["/api/routes", "/api/routes/user/alice"] {
            let response = proxy.api.send(method.clone(), path, &[], b"").await;
            assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if method != Method::HEAD {
                assert_eq!(response.error(), "Method not supported");
            }
        }
    }
    for path in ["/", "/api", "/api/routesx", "/hub/api", "/api/route"] {
        let response = proxy.api.get(path).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.error(), "Not Found");
    }
}

#[tokio::test]
async fn bad_bodies_are_400_and_store_nothing() {
    let proxy = memory(RoutingMode::Path).await;
    for (body, says) in [
        ("", "empty"),
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        (r#"["http://a:1"]"#, "JSON object"),
        ("{}", "no \"target\""),
        (r#"{"data": 1}"#, "no \"target\""),
        (r#"{"target": 7}"#, "must be a string"),
        (r#"{"target": ["http://a"]}"#, "must be a string"),
        (r#"{"target": "not a url"}"#, "http:// or https://"),
        (r#"{"target": "http://"}"#, "no host"),
        (r#"{"target": "http://a:70000"}"#, "port"),
    ] {
        let response = proxy.api.post("/api/routes/user/alice", body).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(response.error().contains(says), "{body}: {}", response.error());
    }
    for (path, says) in
        [("/api/routes/user/..", "'..'"), ("/api/routes/a%0Ab", "control"), ("/api/routes/a//b", "empty")]
    {
        let response = proxy.api.post(path, ALICE).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(response.error().contains(says), "{path}: {}", response.error());
    }
    assert_eq!(proxy.api.get("/api/routes").await.json(), json!({}));
}

#[tokio::test]
async fn request_content_type_is_ignored() {
    let proxy = memory(RoutingMode::Path).await;
    for (i, content_type) in
        ["text/plain; charset=utf-8", "application/x-www-form-urlencoded", "application/json"]
            .into_iter()
            .enumerate()
    {
        let path = format!("/api/routes/r{i}");
        let response =
            proxy.api.send(Method::POST, &path, &[("content-type", content_type)], ALICE.as_bytes()).await;
        assert_eq!(response.status, StatusCode::CREATED, "{content_type}");
    }
    assert_eq!(proxy.api.get("/api/routes").await.json().as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn inactive_since_filters_on_recorded_activity_and_refuses_garbage() {
    let proxy = memory(RoutingMode::Path).await;
    proxy
        .api
        .post("/api/routes/old", r#"{"target": "http://a:1", "last_activity": "2020-01-01T00:00:00.000Z"}"#)
        .await;
    proxy
        .api
        .post("/api/routes/new", r#"{"target": "http://a:1", "last_activity": "2030-01-01T00:00:00.000Z"}"#)
        .await;
    proxy.api.post("/api/routes/unknown", r#"{"target": "http://a:1"}"#).await;
    for param in ["inactive_since", "inactiveSince"] {
        let response = proxy.api.get(&format!("/api/routes?{param}=2025-06-01T00:00:00Z")).await;
        assert_eq!(response.status, StatusCode::OK);
        let keys: Vec<String> = response.keys();
        assert_eq!(keys, ["/old"], "{param}");
    }
    let garbage = proxy.api.get("/api/routes?inactive_since=not-a-date").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert_eq!(garbage.error(), "Invalid datestamp 'not-a-date' must be ISO8601.");
}

#[tokio::test]
async fn host_routing_keys_start_with_the_host() {
    let proxy = memory(RoutingMode::Host).await;
    assert_eq!(proxy.api.post("/api/routes/alice.hub.example.org/user/alice/", ALICE).await.status, 201);
    assert_eq!(proxy.api.post("/api/routes/", r#"{"target": "http://hub:8081"}"#).await.status, 201);
    let keys: Vec<String> = proxy.api.get("/api/routes").await.keys();
    assert_eq!(keys, ["/", "/alice.hub.example.org/user/alice"]);
    let bad = proxy.api.post("/api/routes/host:8000/user/alice", ALICE).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.error().contains("host name"), "{}", bad.error());
}

#[tokio::test]
async fn auth_needs_the_chp_token_header() {
    let proxy = memory(RoutingMode::Path).await;
    let wrong = format!("{TOKEN}x");
    let headers: [&[(&str, &str)]; 6] = [
        &[],
        &[("authorization", "Bearer test-token-4f1d")],
        &[("authorization", "test-token-4f1d")],
        &[("authorization", "token")],
        &[("authorization", "token test-token-4f1")],
        &[("authorization", &format!("token {wrong}"))],
    ];
    let anonymous = proxy.api.with_token(None);
    for header in headers {
        for (method, path) in
            [(Method::GET, "/api/routes"), (Method::POST, "/api/routes/x"), (Method::DELETE, "/api/routes/x")]
        {
            let response = anonymous.send(method.clone(), path, header, ALICE.as_bytes()).await;
            assert_eq!(response.status, StatusCode::FORBIDDEN, "{method} {path} with {header:?}");
            assert!(response.error().contains("Authorization: token"));
        }
    }
    // Nothing was written by the refused POSTs.
    assert_eq!(proxy.api.get("/api/routes").await.json(), json!({}));
    let spaced = anonymous
        .send(Method::GET, "/api/routes", &[("authorization", "token   test-token-4f1d ")], b"")
        .await;
    assert_eq!(spaced.status, StatusCode::OK);
    // Unknown paths are refused before they are looked up: no probing without the token.
    assert_eq!(anonymous.get("/secret").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn probes_need_no_token() {
    let proxy = memory(RoutingMode::Path).await;
    let anonymous = proxy.api.with_token(None);
    let ping = anonymous.get("/ping").await;
    assert_eq!((ping.status, ping.json()), (StatusCode::OK, json!({"message": "pong"})));
    assert_eq!(anonymous.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(anonymous.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413_declared_or_streamed() {
    let proxy = memory(RoutingMode::Path).await;
    let padding = "x".repeat(1024 * 1024);
    let big = format!(r#"{{"target": "http://a:1", "padding": "{padding}"}}"#);
    let response = proxy.api.post("/api/routes/big", &big).await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.error().contains("1048576"), "{}", response.error());

    // Chunked, so no Content-Length warns the server in advance.
    let chunk = "y".repeat(64 * 1024);
    let mut request = format!(
        "POST /api/routes/streamed HTTP/1.1\r\nhost: x\r\nauthorization: token {TOKEN}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for _ in 0..20 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let answer = raw_request(proxy.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(200)]);

    // Under the body limit, but more than a Kubernetes object's annotations hold: a 400 that
    // says so, not the API server's refusal later.
    let unstorable = format!(r#"{{"target": "http://a:1", "padding": "{}"}}"#, "x".repeat(1024 * 1024 - 64));
    let response = proxy.api.post("/api/routes/unstorable", &unstorable).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.error().contains("fit in a Kubernetes object"), "{}", response.error());

    let fits = format!(r#"{{"target": "http://a:1", "padding": "{}"}}"#, "x".repeat(150 * 1024));
    assert_eq!(proxy.api.post("/api/routes/fits", &fits).await.status, StatusCode::CREATED);
    let keys: Vec<String> = proxy.api.get("/api/routes").await.keys();
    assert_eq!(keys, ["/fits"]);
}

#[tokio::test]
async fn a_malformed_escape_in_a_raw_request_is_answered() {
    let proxy = memory(RoutingMode::Path).await;
    let request = format!(
        "GET /api/routes/%E7%A7 HTTP/1.1\r\nhost: x\r\nauthorization: token {TOKEN}\r\nconnection: close\r\n\r\n"
    );
    let answer = raw_request(proxy.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("UTF-8"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_posts_of_distinct_routes_all_land() {
    let proxy = memory(RoutingMode::Path).await;
    let posts = (0..100).map(|i| {
        let api = proxy.api.clone();
        tokio::spawn(async move {
            let body = format!(r#"{{"target": "http://10.0.{}.{}:8888", "user": "u{i}"}}"#, i / 250, i % 250);
            api.post(&format!("/api/routes/user/u{i}/"), &body).await.status
        })
    });
    for post in posts.collect::<Vec<_>>() {
        assert_eq!(post.await.unwrap(), StatusCode::CREATED);
    }
    let listing = proxy.api.get("/api/routes").await.json();
    let listing = listing.as_object().unwrap();
    assert_eq!(listing.len(), 100);
    for i in 0..100 {
        assert_eq!(listing[&format!("/user/u{i}")]["user"], format!("u{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_concurrent_posts_of_one_route_leave_exactly_one_whole_winner() {
    let proxy = memory(RoutingMode::Path).await;
    let posts = (0..30).map(|i| {
        let api = proxy.api.clone();
        tokio::spawn(async move {
            let body = format!(r#"{{"target": "http://10.0.0.{i}:8888", "writer": {i}}}"#);
            api.post("/api/routes/user/shared", &body).await.status
        })
    });
    for post in posts.collect::<Vec<_>>() {
        assert_eq!(post.await.unwrap(), StatusCode::CREATED);
    }
    let listing = proxy.api.get("/api/routes").await.json();
    assert_eq!(listing.as_object().unwrap().len(), 1);
    let winner = &listing["/user/shared"];
    let writer = winner["writer"].as_u64().expect("a writer's data");
    assert!(writer < 30);
    // Target and data come from the same POST: no mix of two writers.
    assert_eq!(winner["target"], format!("http://10.0.0.{writer}:8888"));
}

/// `GET /api/explain?url=`: behind the token, JSON naming the winner, its route and
/// destination, and CHP's route; bad input is a JSON 400 saying why.
#[tokio::test]
async fn explain_names_the_winner_and_chps_route_and_refuses_bad_urls() {
    let proxy = memory(RoutingMode::Path).await;
    assert_eq!(proxy.api.post("/api/routes/", r#"{"target": "http://hub:8081"}"#).await.status, 201);
    assert_eq!(proxy.api.post("/api/routes/user/alice/", ALICE).await.status, 201);

    let url = "/api/explain?url=http%3A%2F%2Fhub.example.org%2Fuser%2Falice%2Flab%3Fx%3D1";
    let explained = proxy.api.get(url).await;
    assert_eq!(explained.status, StatusCode::OK);
    assert_eq!(explained.content_type(), "application/json");
    let body = explained.json();
    assert_eq!(body["request"]["path"], "/user/alice/lab");
    assert_eq!(body["winner"]["route"], "/user/alice");
    assert_eq!(body["winner"]["match"], json!({"uri": {"prefix": "/user/alice/"}}));
    assert_eq!(body["winner"]["destination"]["port"], 8888);
    assert_eq!(body["candidates"].as_array().unwrap().len(), 2, "alice's route, then the hub's catch-all");
    assert_eq!(body["candidates"][1]["route"], "/");
    assert_eq!(
        (&body["chp_route"], &body["agrees_with_chp"], &body["warning"]),
        (&json!("/user/alice"), &json!(true), &Value::Null)
    );

    assert_eq!(proxy.api.with_token(None).get(url).await.status, StatusCode::FORBIDDEN);
    for (query, says) in [
        ("", "missing"),
        ("?url=", "give the URL"),
        ("?url=/user/alice", "absolute URL"),
        ("?url=garbage", "no scheme"),
        ("?url=http://exa%20mple.org/", "not a URL"),
        ("?url=%zz", "malformed"),
    ] {
        let refused = proxy.api.get(&format!("/api/explain{query}")).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(refused.content_type(), "application/json");
        assert!(
            refused.error().contains("url") && refused.error().contains(says),
            "{query}: {}",
            refused.error()
        );
    }
    assert_eq!(proxy.api.post("/api/explain?url=http://h/", "").await.status, StatusCode::METHOD_NOT_ALLOWED);
}
