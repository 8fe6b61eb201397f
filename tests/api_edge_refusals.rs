//! Registering and updating edge locations with fields that cannot work: each is a 400
//! `VALIDATION_ERROR` in the SPEC §5 shape whose detail names the field, and nothing is
//! stored; a bad list filter is refused the same way.

mod common;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{TestApp, assert_error, edge_body};

/// `body` with `field` set to `value` (or removed when `value` is null).
fn with(field: &str, value: Value) -> Value {
    let mut body = edge_body("pop-refused");
    if value.is_null() {
        body.as_object_mut().unwrap().remove(field);
    } else {
        body[field] = value;
    }
    body
}

fn bad_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("locationId", json!("POP_1")),
        ("locationId", json!("")),
        ("locationId", json!("p".repeat(65))),
        ("name", json!("   ")),
        ("name", json!("n".repeat(129))),
        ("name", Value::Null),
        ("region", json!("")),
        ("countryCode", json!("XX")),
        ("countryCode", json!("DEU")),
        ("endpoint", json!("not a url")),
        ("endpoint", json!("ftp://127.0.0.1/")),
        ("endpoint", Value::Null),
        ("type", json!("Satellite")),
    ]
}

#[tokio::test]
async fn a_registration_with_a_bad_field_is_400_naming_it_and_stores_nothing() {
    let app = TestApp::new().await;
    for (field, value) in bad_fields() {
        let answer = app
            .request(
                Method::POST,
                "/api/v1/edge-locations",
                Some(&app.admin),
                Some(with(field, value.clone())),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(
            answer.2["error"]["details"][0]["field"], field,
            "{field} = {value}: {}",
            answer.2
        );
    }
    let (status, _, listed) = app.get("/api/v1/edge-locations", &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["total"], 0, "{listed}");

    // The same body with every field right is taken, so each refusal above was its field's.
    let answer = app
        .request(
            Method::POST,
            "/api/v1/edge-locations",
            Some(&app.admin),
            Some(with("type", json!("Shield"))),
        )
        .await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);
}

#[tokio::test]
async fn an_update_with_a_bad_field_is_400_and_changes_nothing() {
    let app = TestApp::new().await;
    let (created, _) = app.create_edge("pop-kept").await;
    let path = "/api/v1/edge-locations/pop-kept";
    for (field, value) in bad_fields()
        .into_iter()
        .filter(|(field, _)| *field != "locationId")
    {
        let mut body = edge_body("pop-kept");
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value.clone();
        }
        let answer = app
            .request(Method::PUT, path, Some(&app.admin), Some(body))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(
            answer.2["error"]["details"][0]["field"], field,
            "{field} = {value}: {}",
            answer.2
        );
    }
    // The id in the path is the edge's: a body naming another is refused.
    let answer = app
        .request(
            Method::PUT,
            path,
            Some(&app.admin),
            Some(edge_body("pop-other")),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(answer.2["error"]["details"][0]["field"], "locationId");

    let (status, _, stored) = app.get(path, &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    for field in ["name", "region", "countryCode", "endpoint", "type"] {
        assert_eq!(stored[field], created[field], "{field}: {stored}");
    }
}

#[tokio::test]
async fn a_list_filter_that_is_not_a_boolean_is_400_naming_it() {
    let app = TestApp::new().await;
    for field in ["isHealthy", "isActive"] {
        let answer = app
            .get(&format!("/api/v1/edge-locations?{field}=yes"), &app.admin)
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(
            answer.2["error"]["details"][0]["field"], field,
            "{}",
            answer.2
        );
    }
}
