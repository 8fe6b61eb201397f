//! Hostile and careless input: every bad request is a 4xx with the SPEC §5 error shape,
//! never a 500, and fields a client may not set are ignored.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use common::{TestApp, assert_error, cache_rule, unique};

const CONFIGS: &str = "/api/v1/configurations";

/// A request to `path` with the admin token and a raw body.
fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", app.admin));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).unwrap()
}

/// A create body with `content` and a fresh name.
fn create_body(content: Value) -> Vec<u8> {
    json!({"name": unique("bad"), "type": "CacheRule", "content": content})
        .to_string()
        .into_bytes()
}

/// One table row: what it is, the request, and the status, code and field expected.
type Case = (
    &'static str,
    Request<Body>,
    StatusCode,
    &'static str,
    Option<&'static str>,
);

/// The one assertion of the tables: status, code, the error shape and, when given, a
/// details entry naming `field`.
async fn check(
    app: &TestApp,
    what: &str,
    request: Request<Body>,
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) {
    let response = app.send(request).await;
    assert!(
        !response.0.is_server_error(),
        "{what}: {} {}",
        response.0,
        response.2
    );
    assert_eq!(response.0, status, "{what}: {}", response.2);
    assert_error(&response, status, code);
    if let Some(field) = field {
        assert!(
            response.2["error"]["details"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["field"] == field),
            "{what}: no details for {field}: {}",
            response.2
        );
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_with_the_error_shape() {
    let app = TestApp::new().await;
    let json = Some("application/json");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        r#"{{"name":"deep","type":"CacheRule","content":{}{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    let mut invalid_utf8 = br#"{"name":"caf"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#"","type":"CacheRule","content":{}}"#);
    let mut huge_content = cache_rule(&unique("/huge"));
    huge_content["purgePatterns"] = json!(vec!["/x".repeat(40); 15_000]);

    let bad = StatusCode::BAD_REQUEST;
    let cases: Vec<Case> = vec![
        ("truncated JSON", raw(&app, Method::POST, CONFIGS, json, r#"{"name":"#), bad, "VALIDATION_ERROR", None),
        ("not JSON at all", raw(&app, Method::POST, CONFIGS, json, "name=x&type=y"), bad, "VALIDATION_ERROR", None),
        ("empty body", raw(&app, Method::POST, CONFIGS, json, ""), bad, "VALIDATION_ERROR", None),
        ("JSON array body", raw(&app, Method::POST, CONFIGS, json, "[]"), bad, "VALIDATION_ERROR", None),
        ("wrongly typed field", raw(&app, Method::POST, CONFIGS, json, r#"{"name":5,"type":"CacheRule","content":{}}"#), bad, "VALIDATION_ERROR", None),
        ("text/plain", raw(&app, Method::POST, CONFIGS, Some("text/plain"), create_body(cache_rule("/a/*"))), bad, "VALIDATION_ERROR", None),
        ("form content type", raw(&app, Method::POST, CONFIGS, Some("application/x-www-form-urlencoded"), create_body(cache_rule("/a/*"))), bad, "VALIDATION_ERROR", None),
        ("no content type", raw(&app, Method::POST, CONFIGS, None, create_body(cache_rule("/a/*"))), bad, "VALIDATION_ERROR", None),
        ("invalid UTF-8", raw(&app, Method::POST, CONFIGS, json, invalid_utf8), bad, "VALIDATION_ERROR", None),
        ("10,000 nested arrays", raw(&app, Method::POST, CONFIGS, json, deep), bad, "VALIDATION_ERROR", None),
        ("10,000 nested objects in content", raw(&app, Method::POST, CONFIGS, json, deep_object.clone()), bad, "VALIDATION_ERROR", None),
        ("nested content to validate", raw(&app, Method::POST, &format!("{CONFIGS}/validate"), json, deep_object), bad, "VALIDATION_ERROR", None),
        ("body over the limit", raw(&app, Method::POST, CONFIGS, json, vec![b' '; 3 * 1024 * 1024]), StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", None),
        ("unknown type", raw(&app, Method::POST, CONFIGS, json, json!({"name": "x", "type": "CacheRules", "content": {}}).to_string()), bad, "VALIDATION_ERROR", Some("type")),
        ("missing type", raw(&app, Method::POST, CONFIGS, json, json!({"name": "x", "content": {}}).to_string()), bad, "VALIDATION_ERROR", Some("type")),
        ("content an array", raw(&app, Method::POST, CONFIGS, json, create_body(json!([1, 2]))), bad, "VALIDATION_ERROR", Some("content")),
        ("content a string", raw(&app, Method::POST, CONFIGS, json, create_body(json!("ttl=5"))), bad, "VALIDATION_ERROR", Some("content")),
        ("content missing", raw(&app, Method::POST, CONFIGS, json, json!({"name": "x", "type": "CacheRule"}).to_string()), bad, "VALIDATION_ERROR", Some("content")),
        ("content over 1 MiB", raw(&app, Method::POST, CONFIGS, json, create_body(huge_content)), bad, "VALIDATION_ERROR", Some("content")),
        ("empty name", raw(&app, Method::POST, CONFIGS, json, json!({"name": " ", "type": "CacheRule", "content": cache_rule("/n/*")}).to_string()), bad, "VALIDATION_ERROR", Some("name")),
        ("name of 129 characters", raw(&app, Method::POST, CONFIGS, json, json!({"name": "n".repeat(129), "type": "CacheRule", "content": cache_rule("/n/*")}).to_string()), bad, "VALIDATION_ERROR", Some("name")),
        ("login with malformed JSON", raw(&app, Method::POST, "/api/v1/authentication/login", json, "{"), bad, "VALIDATION_ERROR", None),
        ("heartbeat with a wrongly typed health", raw(&app, Method::POST, "/api/v1/edge-locations/nowhere/heartbeat", json, r#"{"health":"fine"}"#), bad, "VALIDATION_ERROR", None),
    ];
    for (what, request, status, code, field) in cases {
        check(&app, what, request, status, code, field).await;
    }
    // Nothing of the above was stored.
    let (_, _, list) = app.get(CONFIGS, &app.admin).await;
    assert_eq!(list["total"], 0, "{list}");
}

#[tokio::test]
async fn fields_a_client_may_not_set_are_ignored_on_create() {
    let app = TestApp::new().await;
    let author = app.create_user("Developer").await;
    let token = app.login(&author, common::USER_PASSWORD).await;
    let body = json!({
        "name": unique("mass"),
        "type": "CacheRule",
        "content": cache_rule(&unique("/mass")),
        "configurationId": "config-chosen-by-client",
        "status": "Approved",
        "approvedBy": "admin",
        "approvedAt": "2020-01-01T00:00:00Z",
        "version": "9.9.9",
        "createdBy": "admin",
        "isDeployed": true,
        "deployedLocations": ["us-east-1"],
    });
    let (status, _, created) = app
        .request(Method::POST, CONFIGS, Some(&token), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "Draft");
    assert_eq!(created["version"], "1.0.0");
    assert_eq!(created["createdBy"], author.as_str());
    assert_eq!(created["approvedBy"], Value::Null);
    assert_eq!(created["isDeployed"], false);
    let id = created["configurationId"].as_str().unwrap();
    assert_ne!(id, "config-chosen-by-client");
    assert!(id.starts_with("config-"));
    let chosen = app
        .get(&format!("{CONFIGS}/config-chosen-by-client"), &token)
        .await;
    assert_error(&chosen, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_odd_paths_answer_with_the_shape() {
    let app = TestApp::new().await;
    let get = |path: &str| raw(&app, Method::GET, path, None, Body::empty());
    let long_segment = format!("{CONFIGS}/{}", "x".repeat(20_000));
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "unknown route",
            get("/api/v1/nothing-here"),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "unknown root route",
            get("/wp-admin.php"),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "unknown version",
            get("/api/v2/configurations"),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "PATCH a collection",
            raw(&app, Method::PATCH, CONFIGS, None, Body::empty()),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "DELETE a collection",
            raw(&app, Method::DELETE, CONFIGS, None, Body::empty()),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "POST /health",
            raw(&app, Method::POST, "/health", None, Body::empty()),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "GET a POST-only route",
            get(&format!("{CONFIGS}/validate")),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "percent-encoded NUL",
            get(&format!("{CONFIGS}/%00")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "invalid UTF-8 in a segment",
            get(&format!("{CONFIGS}/%FF%FE")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (
            "encoded slashes",
            get(&format!("{CONFIGS}/..%2F..%2Fusers")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "unicode",
            get(&format!("{CONFIGS}/config-%E2%9C%93")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "quotes and brackets",
            get(&format!("{CONFIGS}/%22%3Cscript%3E")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "a 20,000-character id",
            get(&long_segment),
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
        ),
        (
            "odd version",
            get(&format!("{CONFIGS}/config-x/versions/%20%2F")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "odd edge id",
            get("/api/v1/edge-locations/%F0%9F%92%A5"),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "odd schema",
            get("/api/v1/schemas/%00"),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
    ];
    for (what, request, status, code) in cases {
        check(&app, what, request, status, code, None).await;
    }
}

#[tokio::test]
async fn huge_query_strings_and_headers_are_not_a_server_error() {
    let app = TestApp::new().await;
    let token = app.admin.clone();
    app.create_config(&token, "CacheRule", cache_rule(&unique("/query")))
        .await;

    // Just under the longest request target answered (8 KiB), and far over it: close to the
    // largest URI a client library will send (64 KiB), which gets 414 with the error body.
    let long_name = format!("{CONFIGS}?name={}", "a".repeat(8_000));
    let (status, _, body) = app.get(&long_name, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 0);
    let too_long = format!("{CONFIGS}?name={}", "a".repeat(60_000));
    let response = app.get(&too_long, &token).await;
    assert_error(&response, StatusCode::URI_TOO_LONG, "URI_TOO_LONG");

    let many = format!(
        "{CONFIGS}?{}",
        (0..800)
            .map(|i| format!("x{i}=y"))
            .collect::<Vec<_>>()
            .join("&")
    );
    let (status, _, body) = app.get(&many, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 1);

    let many_tags = format!("{CONFIGS}?tags={}", vec!["t"; 4_000].join(","));
    assert_eq!(app.get(&many_tags, &token).await.0, StatusCode::OK);

    for (what, query) in [
        ("repeated limit", "limit=1&limit=2"),
        ("limit overflow", "limit=99999999999999999999999"),
        ("bad percent encoding", "limit=%ZZ"),
        ("negative offset", "offset=-5"),
    ] {
        let response = app.get(&format!("{CONFIGS}?{query}"), &token).await;
        assert!(!response.0.is_server_error(), "{what}: {}", response.0);
        assert_error(&response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }

    // An offset past everything is an empty last page on every list, not an overflow.
    for list in [
        "/api/v1/configurations",
        "/api/v1/users",
        "/api/v1/edge-locations",
        "/api/v1/audit",
    ] {
        let (status, _, page) = app
            .get(&format!("{list}?offset={}&limit=100", u64::MAX), &token)
            .await;
        assert_eq!(status, StatusCode::OK, "{list}: {page}");
        assert_eq!(page["hasMore"], false, "{list}");
        assert_eq!(page["nextOffset"], Value::Null, "{list}");
    }

    // A huge request id is not echoed; a fresh one is used, and it names the error.
    let request = Request::builder()
        .uri(format!("{CONFIGS}/config-nope"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-request-id", "r".repeat(50_000))
        .header("x-filler", "f".repeat(60_000))
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_error(&response, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert!(response.1["x-request-id"].len() <= 128);

    // A non-ASCII Authorization header is an authentication failure, not a crash.
    let request = Request::builder()
        .uri(CONFIGS)
        .header(
            header::AUTHORIZATION,
            header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_error(&response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn approve_takes_an_empty_body_as_the_defaults() {
    let app = TestApp::new().await;
    let author = app.user_token("Developer").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created = app
            .create_config(&author, "CacheRule", cache_rule(&unique("/empty-approve")))
            .await;
        ids.push(created["configurationId"].as_str().unwrap().to_string());
    }
    // No body and no content type; then a zero-length JSON body.
    let bare = raw(
        &app,
        Method::POST,
        &format!("{CONFIGS}/{}/approve", ids[0]),
        None,
        Body::empty(),
    );
    let zero_length = Request::builder()
        .method(Method::POST)
        .uri(format!("{CONFIGS}/{}/approve", ids[1]))
        .header(header::AUTHORIZATION, format!("Bearer {}", app.admin))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .unwrap();
    for request in [bare, zero_length] {
        let (status, _, body) = app.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "Approved");
        assert_eq!(body["version"], "1.0.0");
    }
}

#[tokio::test]
async fn missing_objects_are_404_with_the_shape() {
    let app = TestApp::new().await;
    let created = app
        .create_config(&app.admin, "CacheRule", cache_rule(&unique("/present")))
        .await;
    let id = created["configurationId"].as_str().unwrap();
    let new_password = json!({"password": "long-enough-password"});
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/api/v1/edge-locations/nowhere/heartbeat".into(),
            Some(json!({"health": {"isHealthy": true}})),
        ),
        (Method::GET, "/api/v1/edge-locations/nowhere".into(), None),
        (
            Method::PUT,
            "/api/v1/edge-locations/nowhere".into(),
            Some(common::edge_body("nowhere")),
        ),
        (
            Method::DELETE,
            "/api/v1/edge-locations/nowhere".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/edge-locations/nowhere/token".into(),
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/edge-locations/nowhere/quarantine".into(),
            None,
        ),
        (Method::DELETE, "/api/v1/users/nobody".into(), None),
        (
            Method::PUT,
            "/api/v1/users/nobody/password".into(),
            Some(new_password),
        ),
        (
            Method::PUT,
            "/api/v1/configurations/config-nope".into(),
            Some(json!({"content": cache_rule(&unique("/absent"))})),
        ),
        (
            Method::POST,
            "/api/v1/configurations/config-nope/approve".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/configurations/config-nope/validate".into(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/configurations/config-nope/versions".into(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/configurations/config-nope/diff".into(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/configurations/config-nope/conflicts".into(),
            None,
        ),
        (
            Method::PUT,
            format!("{CONFIGS}/{id}/versions/9.9.9/tags/production"),
            None,
        ),
        (Method::GET, format!("{CONFIGS}/{id}/diff?to=9.9.9"), None),
    ];
    for (method, path, body) in cases {
        let response = app
            .request(method.clone(), &path, Some(&app.admin), body)
            .await;
        assert_eq!(
            response.0,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            response.2
        );
        assert_error(&response, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}
