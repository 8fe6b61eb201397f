//! The web console (SPEC §12.2): hand-written HTML, CSS and JavaScript modules embedded in the
//! binary and served as static files under a strict Content-Security-Policy. The page talks to
//! the same `/api/v1` as everyone else, with the user's bearer token.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Scripts, styles, images and connections only from this origin, no inline code of any kind,
/// never framed: the page holds a bearer token, so nothing foreign may run beside it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/ui/`, its media type and its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const INDEX: &[u8] = include_bytes!("assets/index.html");

const ASSETS: &[Asset] = &[
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("fleet.js", JS),
    asset!("configurations.js", JS),
    asset!("deployments.js", JS),
    asset!("metrics.js", JS),
];

/// The console's routes: `GET /` and `GET /ui/{file}`. They need no token (they are the same
/// files for everyone); every API call the page makes carries one.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => file(asset.content_type, asset.body),
        // The API's middleware gives this the error shape like any other unknown path.
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn file(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // The files change with the binary and carry no version in their names.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn fetch(path: &str) -> Response {
        router::<()>()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("the router never fails")
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_type_and_the_policy() {
        let mut paths = vec![("/".to_string(), "text/html; charset=utf-8")];
        paths.extend(
            ASSETS
                .iter()
                .map(|a| (format!("/ui/{}", a.name), a.content_type)),
        );
        for (path, content_type) in paths {
            let response = fetch(&path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            let policy = headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii");
            assert!(policy.contains("default-src 'self'"), "{path}");
            assert!(policy.contains("frame-ancestors 'none'"), "{path}");
            assert!(!policy.contains("unsafe-inline"), "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        }
    }

    #[tokio::test]
    async fn unknown_assets_are_not_found() {
        for path in ["/ui/nope.js", "/ui/..%2Fmod.rs", "/ui/"] {
            assert_eq!(fetch(path).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    /// CSP forbids inline code; the page must not need any.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(INDEX).expect("utf-8");
        assert!(!html.contains("style="), "inline style attribute");
        assert!(!html.contains("<style"), "inline style element");
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(tag.contains("src="), "inline script: <script{tag}>");
        }
        // An attribute such as `onclick=` is inline script too.
        for attribute in html.split(" on").skip(1) {
            let name: String = attribute
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            assert!(
                name.is_empty() || !attribute[name.len()..].starts_with('='),
                "inline event handler on{name}"
            );
        }
    }

    /// The token stays in the tab's memory: no cookie, no web storage, no code from strings.
    #[test]
    fn the_scripts_keep_the_token_in_memory_and_build_no_html_from_strings() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for forbidden in [
                "localStorage",
                "sessionStorage",
                "document.cookie",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "new EventSource",
            ] {
                assert!(!text.contains(forbidden), "{} uses {forbidden}", asset.name);
            }
        }
    }
}
