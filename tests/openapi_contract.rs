//! The API contract: the OpenAPI document served at /api/v1/openapi.json is valid OpenAPI 3.1,
//! describes exactly the routes the router serves, and says what clients rely on (operation
//! ids, the bearer scheme, the error shape on every error status, the enforced limits).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use serde_json::Value;

use common::TestApp;

/// The OpenAPI 3.1 schema (2022-10-07) of the OpenAPI Initiative.
const OPENAPI_31_SCHEMA: &str = include_str!("contract/openapi-3.1.schema.json");

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

async fn document(app: &TestApp) -> Value {
    let (status, headers, document) = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    document
}

/// (method, path) → operation of every operation in the document.
fn operations(document: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            out.insert((method.to_uppercase(), path.clone()), operation.clone());
        }
    }
    out
}

/// (method, path) of every route of the router, read from the router's own description of
/// its route table (the framework offers no other way to list it).
fn routed(router: &axum::Router) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    // The route table comes first; the fallback router's table after it is not routes.
    let table = text
        .split("fallback_router")
        .next()
        .expect("the router describes its routes");
    let paths: BTreeMap<String, String> = regex::Regex::new(r#"RouteId\((\d+)\): "([^"]*)""#)
        .unwrap()
        .captures_iter(table)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let endpoint = regex::Regex::new(
        r"RouteId\((\d+)\): MethodRouter\(MethodRouter \{ get: (\w+), head: \w+, delete: (\w+), options: \w+, patch: (\w+), post: (\w+), put: (\w+),",
    )
    .unwrap();
    let mut out = BTreeSet::new();
    for c in endpoint.captures_iter(table) {
        let path = paths.get(&c[1]).expect("every route has a path").clone();
        for (method, slot) in [
            ("GET", &c[2]),
            ("DELETE", &c[3]),
            ("PATCH", &c[4]),
            ("POST", &c[5]),
            ("PUT", &c[6]),
        ] {
            if slot != "None" {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    assert_eq!(
        paths.len(),
        endpoint.captures_iter(table).count(),
        "every route of the table was read: {table}"
    );
    out
}

/// A concrete path for a templated one.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "x" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let app = TestApp::new().await;
    let document = document(&app).await;
    let documented: BTreeSet<(String, String)> = operations(&document).into_keys().collect();
    // The console's static files (`/` and `/ui/{file}`) are pages, not part of the API.
    let routed: BTreeSet<(String, String)> = routed(&app.router)
        .into_iter()
        .filter(|(_, path)| path != "/" && !path.starts_with("/ui/"))
        .collect();
    assert!(routed.len() > 40, "read only {} routes", routed.len());
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes not in the document: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    // And the router answers them: every documented operation reaches a route, and every
    // other method on a documented path is a 405.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for path in paths {
        for method in METHODS {
            let key = (method.to_string(), path.clone());
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, _, body) = app
                .request(method.clone(), &concrete(path), None, None)
                .await;
            if documented.contains(&key) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{key:?}: {body}");
                assert_ne!(
                    body["error"]["message"], "no such resource",
                    "{key:?} fell through to the fallback"
                );
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{key:?}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = TestApp::new().await;
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    let schema: Value = serde_json::from_str(OPENAPI_31_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the OpenAPI schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");

    // Every local reference resolves.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match child {
                        Value::String(target) if key == "$ref" => out.push(target.clone()),
                        _ => refs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&document, &mut all);
    assert!(all.len() > 100);
    for target in all {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external reference {target}"));
        assert!(document.pointer(pointer).is_some(), "dangling {target}");
    }
}

#[tokio::test]
async fn every_operation_has_an_id_its_security_and_the_error_shape() {
    let app = TestApp::new().await;
    let document = document(&app).await;
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    );
    let public: BTreeSet<(&str, &str)> = [
        ("POST", "/api/v1/authentication/login"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
    ]
    .into_iter()
    .collect();
    let responses = &document["components"]["responses"];
    let mut ids = BTreeSet::new();
    for ((method, path), operation) in operations(&document) {
        let what = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{what} has no operationId");
        assert!(ids.insert(id.to_string()), "{what}: operationId {id} twice");
        let codes: BTreeSet<&str> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(codes.contains("429"), "{what}");
        assert!(!codes.contains("500"), "{what} documents a server error");
        assert!(!codes.contains("default"), "{what}");
        if public.contains(&(method.as_str(), path.as_str())) {
            assert_eq!(operation["security"], serde_json::json!([{}]), "{what}");
            // Only login (and Prometheus, with `server.metrics_token`) can refuse
            // credentials; no public operation checks a role.
            assert_eq!(
                codes.contains("401"),
                id == "login" || id == "prometheus",
                "{what}"
            );
            assert!(!codes.contains("403"), "{what}");
        } else {
            assert_eq!(
                operation["security"],
                serde_json::json!([{"bearer": []}]),
                "{what}"
            );
            assert!(codes.contains("401") && codes.contains("403"), "{what}");
        }
        if operation.get("requestBody").is_some() {
            assert!(codes.contains("400") && codes.contains("413"), "{what}");
        }
        assert!(
            codes.iter().any(|c| c.starts_with('2')),
            "{what} has no success answer"
        );
        for (code, response) in operation["responses"].as_object().unwrap() {
            if code.starts_with('2') {
                continue;
            }
            let name = response["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/responses/"))
                .unwrap_or_else(|| panic!("{what} {code} is not a shared error response"));
            assert_eq!(
                responses[name]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{what} {code}"
            );
        }
    }
    let error = &document["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    let payload = &document["components"]["schemas"]["ErrorPayload"];
    for field in ["code", "message", "details", "traceId", "timestamp"] {
        assert!(
            payload["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "{field}"
        );
    }
}

#[tokio::test]
async fn the_document_states_the_limits_the_server_enforces() {
    let app = TestApp::new().await;
    let document = document(&app).await;
    let schemas = &document["components"]["schemas"];
    let create = &schemas["ConfigurationCreate"]["allOf"];
    assert_eq!(create[0]["properties"]["name"]["minLength"], 1);
    assert_eq!(create[0]["properties"]["name"]["maxLength"], 128);
    // Content is discriminated by type, one branch per embedded JSON Schema.
    let branches = create[1]["oneOf"].as_array().unwrap();
    assert_eq!(branches.len(), 5);
    for branch in branches {
        let name = branch["properties"]["type"]["const"].as_str().unwrap();
        assert_eq!(
            branch["properties"]["content"]["$ref"],
            format!("#/components/schemas/{name}Content")
        );
        assert_eq!(schemas[format!("{name}Content")]["type"], "object");
    }
    assert_eq!(
        schemas["CacheRuleContent"]["required"],
        serde_json::json!(["pathPattern", "ttl", "cacheControl"])
    );
    assert_eq!(
        schemas["EdgeLocationRequest"]["properties"]["locationId"]["pattern"],
        "^[a-z0-9-]{1,64}$"
    );
    assert_eq!(
        schemas["UserCreate"]["properties"]["password"]["minLength"],
        12
    );
    assert_eq!(create[0]["properties"]["metadata"]["maxProperties"], 64);
    assert_eq!(
        create[0]["properties"]["tags"]["items"]["pattern"],
        "^[A-Za-z0-9._-]{1,64}$"
    );
    let list = &document["paths"]["/api/v1/configurations"]["get"]["parameters"];
    let limit = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit is documented");
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
    let edges = &document["paths"]["/api/v1/edge-locations"]["get"]["parameters"];
    let names: BTreeSet<&str> = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "region",
        "countryCode",
        "type",
        "isActive",
        "isHealthy",
        "limit",
        "offset",
    ] {
        assert!(names.contains(name), "{name} of GET /edge-locations");
    }
}
