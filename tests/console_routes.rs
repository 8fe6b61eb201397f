//! The console's routes inside the whole router: served without a token and with its
//! security headers, while unknown paths beside it keep the API's 404 error shape.

mod common;

use axum::http::{Method, StatusCode, header};

use common::{TestApp, assert_error};

#[tokio::test]
async fn the_console_is_served_without_a_token_under_its_policy() {
    let app = TestApp::new().await;
    for path in ["/", "/ui/app.js", "/ui/console.css"] {
        let (status, headers, body) = app.request(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(
            policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert!(headers.contains_key("x-request-id"), "{path}");
    }
    let (_, headers, body) = app.request(Method::GET, "/", None, None).await;
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html")),
        "{headers:?}"
    );
    assert!(
        body.as_str()
            .is_some_and(|html| html.contains("/ui/app.js")),
        "{body}"
    );
}

#[tokio::test]
async fn paths_beside_the_console_keep_the_error_shape() {
    let app = TestApp::new().await;
    for path in [
        "/nope",
        "/ui/nope.js",
        "/ui/",
        "/ui/app.js/more",
        "/api/v1/nope",
    ] {
        let answer = app.request(Method::GET, path, None, None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let answer = app.request(Method::POST, "/", None, None).await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    // The API itself still wants its token.
    let answer = app
        .request(Method::GET, "/api/v1/configurations", None, None)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, _, _) = app.request(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
}
