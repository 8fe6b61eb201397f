//! Inputs that could inject or overwhelm: control characters in content, duplicate JSON keys,
//! origins at the edge's own or metadata addresses, impossible heartbeat values, the size of
//! the version list, and `/metrics` closed with a token.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use common::{TestApp, assert_error, cache_rule, routing_rule, unique};

const CONFIGS: &str = "/api/v1/configurations";

/// `body` sent as it is (so that it may hold what `serde_json::Value` cannot: a key twice).
fn raw_json(token: &str, method: Method, path: &str, body: String) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// Asserts a 400 with `code` whose details name `field` with a message containing `fragment`.
fn assert_field(
    response: &(StatusCode, axum::http::HeaderMap, Value),
    code: &str,
    field: &str,
    fragment: &str,
) {
    assert_error(response, StatusCode::BAD_REQUEST, code);
    let details = response.2["error"]["details"].as_array().expect("details");
    assert!(
        details
            .iter()
            .any(|d| d["field"] == field
                && d["message"].as_str().is_some_and(|m| m.contains(fragment))),
        "expected {field} ({fragment}): {}",
        response.2
    );
}

#[tokio::test]
async fn control_characters_in_content_are_refused_naming_the_field() {
    let app = TestApp::new().await;
    let injected = "public\r\nSet-Cookie: a=b";
    let mut cache = cache_rule(&unique("/inject"));
    cache["cacheControl"] = json!(injected);
    let mut routing = routing_rule(&unique("/inject"));
    routing["pathRewrite"] = json!({"from": "^/old/(.*)$", "to": "/new/$1\r\nX-Injected: 1"});
    let mut routing_header = routing_rule(&unique("/inject"));
    routing_header["hostHeader"] = json!("origin.example.com\u{0}");
    let cases = [
        ("CacheRule", cache, "content.cacheControl"),
        ("RoutingRule", routing, "content.pathRewrite.to"),
        ("RoutingRule", routing_header, "content.hostHeader"),
        (
            "ResponseModification",
            json!({"addHeaders": {"X-Note": "a\nb"}}),
            "content.addHeaders.X-Note",
        ),
    ];
    for (config_type, content, field) in cases {
        let body = json!({"name": unique("inject"), "type": config_type, "content": content});
        let response = app
            .request(Method::POST, CONFIGS, Some(&app.admin), Some(body.clone()))
            .await;
        assert_field(
            &response,
            "CONFIG_VALIDATION_ERROR",
            field,
            "must not contain control characters",
        );
        let (status, _, report) = app
            .request(
                Method::POST,
                &format!("{CONFIGS}/validate"),
                Some(&app.admin),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["isValid"], false, "{report}");
    }
    // Metadata travels with every push too.
    let body = json!({"name": unique("inject"), "type": "CacheRule",
        "content": cache_rule(&unique("/meta")), "metadata": {"note": "a\r\nX-Injected: 1"}});
    let response = app
        .request(Method::POST, CONFIGS, Some(&app.admin), Some(body))
        .await;
    assert_field(
        &response,
        "VALIDATION_ERROR",
        "metadata.note",
        "must not contain control characters",
    );
    let (_, _, list) = app.get(CONFIGS, &app.admin).await;
    assert_eq!(list["total"], 0, "nothing was stored: {list}");
}

#[tokio::test]
async fn duplicate_keys_are_refused_wherever_they_are() {
    let app = TestApp::new().await;
    let (_, edge_token) = app.create_edge(&unique("dup-edge")).await;
    let name = unique("dup");
    let login = "/api/v1/authentication/login";
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "top-level key",
            CONFIGS,
            format!(
                r#"{{"name":"{name}","type":"CacheRule","name":"other","content":{}}}"#,
                cache_rule("/dup-a/*")
            ),
            "name",
        ),
        (
            "key inside content",
            CONFIGS,
            format!(
                r#"{{"name":"{name}","type":"CacheRule","content":{{"pathPattern":"/dup-b/*","ttl":60,"cacheControl":"public","ttl":0}}}}"#
            ),
            "content.ttl",
        ),
        (
            "header name inside a map",
            CONFIGS,
            format!(
                r#"{{"name":"{name}","type":"ResponseModification","content":{{"addHeaders":{{"X-A":"1","X-B":"2","X-A":"3"}}}}}}"#
            ),
            "content.addHeaders.X-A",
        ),
        (
            "key inside an array item",
            CONFIGS,
            format!(
                r#"{{"name":"{name}","type":"RoutingRule","content":{{"pathPattern":"/dup-c/*","origins":[{{"name":"a","endpoint":"https://a.example.com","name":"b"}}],"failoverPolicy":{{}}}}}}"#
            ),
            "content.origins.0.name",
        ),
        (
            "login body",
            login,
            r#"{"username":"admin","password":"x","password":"y"}"#.to_string(),
            "password",
        ),
    ];
    for (what, path, body, field) in cases {
        let response = app
            .send(raw_json(&app.admin, Method::POST, path, body))
            .await;
        let key = field.rsplit('.').next().unwrap();
        assert_field(
            &response,
            "VALIDATION_ERROR",
            field,
            &format!("duplicate key '{key}'"),
        );
        assert!(!response.0.is_server_error(), "{what}");
    }
    let heartbeat = app
        .send(raw_json(
            &edge_token,
            Method::POST,
            "/api/v1/edge-locations/nowhere/heartbeat",
            r#"{"health":{"cpuUsage":1,"cpuUsage":2}}"#.to_string(),
        ))
        .await;
    assert_field(
        &heartbeat,
        "VALIDATION_ERROR",
        "health.cpuUsage",
        "duplicate key",
    );
    let (_, _, list) = app.get(CONFIGS, &app.admin).await;
    assert_eq!(list["total"], 0, "nothing was stored: {list}");
}

#[tokio::test]
async fn an_origin_at_a_metadata_address_deploys_only_when_acknowledged() {
    let app = TestApp::with_settings(|s| s.server.allow_self_approval = true).await;
    let location = unique("meta-edge");
    app.create_edge(&location).await;
    let mut content = routing_rule(&unique("/meta"));
    content["origins"][1]["endpoint"] = json!("http://169.254.169.254/latest/meta-data/");
    let created = app.create_config(&app.admin, "RoutingRule", content).await;
    let id = created["configurationId"].as_str().unwrap().to_string();

    let (status, _, report) = app
        .request(
            Method::POST,
            &format!("{CONFIGS}/{id}/validate"),
            Some(&app.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["isValid"], true, "a warning, not an error: {report}");
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["field"] == "content.origins.1.endpoint"
                && w["message"].as_str().unwrap().contains("metadata")),
        "{report}"
    );
    let (status, _, approved) = app
        .request(
            Method::POST,
            &format!("{CONFIGS}/{id}/approve"),
            Some(&app.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");

    let mut deployment = json!({
        "configurationId": id,
        "strategy": "DirectDeployment",
        "targetLocations": [location],
    });
    let plan = "/api/v1/deployments?dryRun=true";
    let refused = app
        .request(
            Method::POST,
            plan,
            Some(&app.admin),
            Some(deployment.clone()),
        )
        .await;
    assert_field(
        &refused,
        "CONFIG_VALIDATION_ERROR",
        "content.origins.1.endpoint",
        "a cloud metadata service",
    );
    deployment["acknowledgeWarnings"] = json!(true);
    let (status, _, planned) = app
        .request(Method::POST, plan, Some(&app.admin), Some(deployment))
        .await;
    assert_eq!(status, StatusCode::OK, "acknowledged: {planned}");
}

#[tokio::test]
async fn impossible_heartbeat_values_are_400_naming_the_field() {
    let app = TestApp::new().await;
    let location = unique("beat");
    let (_, token) = app.create_edge(&location).await;
    let path = format!("/api/v1/edge-locations/{location}/heartbeat");
    let sample = |field: &str, value: Value| {
        let mut metrics = json!({
            "intervalSeconds": 10, "requests": 1000, "cacheHits": 900, "cacheMisses": 100,
            "errors4xx": 3, "errors5xx": 1, "bytesSent": 1000000, "bytesReceived": 20000,
            "latency": {"boundsMs": [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0],
                        "counts": [0, 0, 100, 400, 300, 100, 50, 30, 10, 5, 3, 1, 1, 0, 0, 0]},
        });
        if !field.is_empty() {
            *metrics.pointer_mut(field).unwrap() = value;
        }
        json!({"health": {"isHealthy": true, "cpuUsage": 10.0}, "metrics": metrics})
    };
    let health = |field: &str, value: Value| {
        let mut body =
            json!({"health": {"isHealthy": true, "cpuUsage": 10.0, "memoryUsage": 20.0}});
        body["health"][field] = value;
        body
    };
    let counts_too_short = json!([1, 2, 3]);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "negative CPU",
            health("cpuUsage", json!(-1)).to_string(),
            "health.cpuUsage",
        ),
        (
            "CPU over 100",
            health("cpuUsage", json!(100.5)).to_string(),
            "health.cpuUsage",
        ),
        (
            "memory 1e308",
            health("memoryUsage", json!(1e308)).to_string(),
            "health.memoryUsage",
        ),
        (
            "disk 101",
            health("diskUsage", json!(101)).to_string(),
            "health.diskUsage",
        ),
        (
            "bandwidth negative",
            health("bandwidthUtilization", json!(-0.1)).to_string(),
            "health.bandwidthUtilization",
        ),
        (
            "connections negative",
            health("activeConnections", json!(-5)).to_string(),
            "health.activeConnections",
        ),
        (
            "connections 1e308",
            health("activeConnections", json!(1e308)).to_string(),
            "health.activeConnections",
        ),
        (
            "connections beyond any edge",
            health("activeConnections", json!(u64::MAX)).to_string(),
            "health.activeConnections",
        ),
        (
            "CPU infinite",
            r#"{"health":{"cpuUsage":1e400}}"#.to_string(),
            "health.cpuUsage",
        ),
        (
            "CPU as text",
            r#"{"health":{"cpuUsage":"NaN"}}"#.to_string(),
            "health.cpuUsage",
        ),
        (
            "negative requests",
            sample("/requests", json!(-1)).to_string(),
            "metrics.requests",
        ),
        (
            "requests beyond any edge",
            sample("/requests", json!(u64::MAX)).to_string(),
            "metrics.requests",
        ),
        (
            "negative bytes",
            sample("/bytesSent", json!(-1)).to_string(),
            "metrics.bytesSent",
        ),
        (
            "latency count beyond any edge",
            sample("/latency/counts/3", json!(u64::MAX)).to_string(),
            "metrics.latency.counts.3",
        ),
        (
            "latency without the fixed buckets",
            sample("/latency/counts", counts_too_short).to_string(),
            "metrics.latency.counts",
        ),
        (
            "latency with other bounds",
            sample("/latency/boundsMs", json!([1, 2, 3])).to_string(),
            "metrics.latency.boundsMs",
        ),
        (
            "interval of a year",
            sample("/intervalSeconds", json!(31_536_000)).to_string(),
            "metrics.intervalSeconds",
        ),
        ("body an array", "[]".to_string(), "body"),
        ("body a number", "42".to_string(), "body"),
        ("body a string", r#""healthy""#.to_string(), "body"),
        ("body null", "null".to_string(), "body"),
    ];
    for (what, body, field) in cases {
        let response = app.send(raw_json(&token, Method::POST, &path, body)).await;
        assert_eq!(
            response.0,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            response.2
        );
        assert_error(&response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        let details = response.2["error"]["details"].as_array().expect("details");
        assert!(
            details.iter().any(|d| d["field"] == field),
            "{what}: expected {field}: {}",
            response.2
        );
    }
    // The edge was never heard from: no case was recorded.
    let (_, _, edge) = app
        .get(&format!("/api/v1/edge-locations/{location}"), &app.admin)
        .await;
    assert_eq!(edge["lastHeartbeat"], Value::Null, "{edge}");

    // A plausible heartbeat still passes.
    let (status, _, answer) = app
        .request(
            Method::POST,
            &path,
            Some(&token),
            Some(sample("", Value::Null)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn the_version_list_carries_metadata_and_the_single_read_the_content() {
    let app = TestApp::new().await;
    // About 1 MiB of content per version (the limit), in an unknown field: a warning only.
    let big = |n: usize| {
        let mut content = cache_rule("/big/*");
        content["note"] = json!(format!("{n}{}", "x".repeat(1_000_000)));
        content
    };
    let created = app.create_config(&app.admin, "CacheRule", big(0)).await;
    let id = created["configurationId"].as_str().unwrap().to_string();
    for n in 1..20 {
        let (status, _, updated) = app
            .request(
                Method::PUT,
                &format!("{CONFIGS}/{id}"),
                Some(&app.admin),
                Some(json!({"content": big(n), "changeDescription": format!("version {n}")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "update {n}: {updated}");
    }

    let response = get_raw(&app, &format!("{CONFIGS}/{id}/versions")).await;
    println!(
        "version list of 20 versions of about 1 MiB each: {} bytes",
        response.len()
    );
    assert!(response.len() < 64 * 1024, "{} bytes", response.len());
    let list: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(list["total"], 20, "{list}");
    let versions = list["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 20);
    assert!(versions.iter().all(|v| v.get("content").is_none()));
    assert_eq!(versions[0]["version"], "1.19.0");
    assert_eq!(versions[0]["changeDescription"], "version 19");

    let (status, _, one) = app
        .get(&format!("{CONFIGS}/{id}/versions/1.19.0"), &app.admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(one["content"]["note"].as_str().unwrap().starts_with("19x"));

    let (status, _, with_content) = app
        .get(
            &format!("{CONFIGS}/{id}/versions?includeContent=true&limit=2&offset=1"),
            &app.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let page = with_content["versions"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert!(
        page[0]["content"]["note"]
            .as_str()
            .unwrap()
            .starts_with("18x")
    );
    assert_eq!(with_content["nextOffset"], 3);

    let bad = app
        .get(
            &format!("{CONFIGS}/{id}/versions?includeContent=yes"),
            &app.admin,
        )
        .await;
    assert_field(&bad, "VALIDATION_ERROR", "includeContent", "true or false");
}

/// The raw answer of a GET as the admin, to measure its size as sent.
async fn get_raw(app: &TestApp, path: &str) -> bytes::Bytes {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", app.admin))
        .body(Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn metrics_answer_only_the_configured_token_when_one_is_set() {
    let token = "metrics-token-for-tests-0123456789";
    let app = TestApp::with_settings(|s| s.server.metrics_token = Some(token.into())).await;
    let scrape = |authorization: Option<String>| {
        let mut builder = Request::builder().uri("/metrics");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(Body::empty()).unwrap()
    };
    for (what, authorization) in [
        ("no token", None),
        ("another token", Some("Bearer not-the-token".to_string())),
        ("a user's token", Some(format!("Bearer {}", app.admin))),
        ("the token without Bearer", Some(token.to_string())),
    ] {
        let response = app.send(scrape(authorization)).await;
        assert_eq!(response.0, StatusCode::UNAUTHORIZED, "{what}");
        assert_error(&response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let (status, _, body) = app.send(scrape(Some(format!("Bearer {token}")))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str()
            .is_some_and(|text| text.contains("edgeplane_")),
        "{body}"
    );
    // Without a token configured, Prometheus scrapes as before.
    let open = TestApp::new().await;
    let (status, _, _) = open.send(scrape(None)).await;
    assert_eq!(status, StatusCode::OK);
}
