//! The request metrics cannot be blown up from outside: labels are the matched route template,
//! a fixed set of methods and the status, whatever methods and paths callers invent. (A file
//! of its own: the Prometheus recorder is process-wide, and other tests would add series.)

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use common::TestApp;

/// The series of the request metrics in the exposition: one line per label set of the
/// counter, and the histogram's count line per label set.
fn request_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            line.starts_with("edgeplane_http_requests_total{")
                || line.starts_with("edgeplane_http_request_duration_seconds_count{")
        })
        .map(|line| {
            line.rsplit_once(' ')
                .map_or(line, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

/// A request with an arbitrary method and path, as an outside caller may send.
fn invented(method: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn invented_methods_and_paths_add_no_series() {
    let app = TestApp::new().await;
    // Each kind of request once, so that its series exist: unmatched paths with known and
    // unknown methods, a matched route with an unknown method, one without a token.
    let kinds = |i: usize| {
        vec![
            invented("GET", &format!("/probe-{i}/a/b/c")),
            invented(&format!("BREW{i}"), &format!("/probe-{i}/{i}")),
            invented(&format!("BREW{i}"), "/health"),
            invented("GET", &format!("/api/v1/configurations/config-{i}")),
            invented(
                "GET",
                &format!("/api/v1/configurations/config-{i}/nothing/{i}"),
            ),
            invented(
                &format!("X-{i}"),
                &format!("/api/v1/edge-locations/e-{i}/heartbeat"),
            ),
        ]
    };
    for request in kinds(0) {
        app.send(request).await;
    }
    let before = request_series(&app.state.prometheus().render());
    assert!(
        before.iter().any(|s| s.contains(r#"route="unmatched""#)),
        "{before:#?}"
    );
    assert!(
        before
            .iter()
            .any(|s| s.contains(r#"method="other""#) && s.contains(r#"route="/health""#)),
        "{before:#?}"
    );
    assert!(
        before
            .iter()
            .any(|s| s.contains(r#"route="/api/v1/configurations/{id}""#)),
        "{before:#?}"
    );

    // 100 rounds of the six kinds: 600 requests, each with a method or path not seen before.
    for i in 1..=100 {
        for request in kinds(i) {
            app.send(request).await;
        }
    }
    let after = request_series(&app.state.prometheus().render());
    let added: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        added.is_empty(),
        "600 invented requests added series: {added:#?}"
    );
}
