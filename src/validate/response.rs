//! Safety rules of `ResponseModification` content (SPEC §3): headers, compression, CORS.

use serde_json::Value;

use super::ValidationReport;
use super::rules::{self, shorten, strings};

const COMPRESSION_ALGORITHMS: &[&str] = &["gzip", "br", "zstd"];
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

pub(crate) fn check(content: &Value, report: &mut ValidationReport) {
    rules::check_path_pattern(report, content);
    if let Some(headers) = content.get("addHeaders").and_then(Value::as_object) {
        for (name, value) in headers {
            let field = format!("content.addHeaders.{name}");
            if !rules::is_header_name(name) {
                report.error(
                    field.clone(),
                    format!("'{}' is not a valid header name", shorten(name)),
                );
            }
            if let Some(text) = value.as_str() {
                if !rules::is_header_value(text) {
                    report.error(
                        field,
                        "Header value must not contain control characters (CR, LF, NUL)",
                    );
                }
            }
        }
    }
    rules::check_header_names(
        report,
        "content.removeHeaders",
        content.get("removeHeaders"),
    );
    if let Some(compression) = content.get("compression") {
        check_compression(compression, report);
    }
    if let Some(cors) = content.get("cors") {
        check_cors(cors, report);
    }
}

fn check_compression(compression: &Value, report: &mut ValidationReport) {
    for (index, algorithm) in strings(compression.get("algorithms")) {
        if !COMPRESSION_ALGORITHMS.contains(&algorithm) {
            report.error(
                format!("content.compression.algorithms.{index}"),
                format!(
                    "Unknown compression algorithm '{}' (use gzip, br or zstd)",
                    shorten(algorithm)
                ),
            );
        }
    }
    if let Some(min_size) = compression.get("minSize").filter(|v| v.is_i64()) {
        if min_size.as_i64().is_some_and(|n| n < 0) {
            report.error(
                "content.compression.minSize",
                "minSize must be 0 or more bytes",
            );
        }
    }
}

fn check_cors(cors: &Value, report: &mut ValidationReport) {
    let mut any_origin = false;
    for (index, origin) in strings(cors.get("allowOrigins")) {
        if origin == "*" {
            any_origin = true;
        } else if !is_origin(origin) {
            report.error(
                format!("content.cors.allowOrigins.{index}"),
                format!(
                    "'{}' is not an origin (scheme://host[:port], or '*')",
                    shorten(origin)
                ),
            );
        }
    }
    if any_origin && cors.get("allowCredentials").and_then(Value::as_bool) == Some(true) {
        report.error(
            "content.cors.allowCredentials",
            "CORS cannot allow credentials for any origin ('*'); list the origins instead",
        );
    }
    for (index, method) in strings(cors.get("allowMethods")) {
        if method != "*" && !HTTP_METHODS.contains(&method) {
            report.error(
                format!("content.cors.allowMethods.{index}"),
                format!("'{}' is not an HTTP method", shorten(method)),
            );
        }
    }
    for key in ["allowHeaders", "exposeHeaders"] {
        let field = format!("content.cors.{key}");
        for (index, name) in strings(cors.get(key)) {
            if name != "*" && !rules::is_header_name(name) {
                report.error(
                    format!("{field}.{index}"),
                    format!("'{}' is not a valid header name", shorten(name)),
                );
            }
        }
    }
    if let Some(max_age) = cors.get("maxAge").filter(|v| v.is_i64()) {
        if max_age.as_i64().is_some_and(|n| n < 0) {
            report.error("content.cors.maxAge", "maxAge must be 0 or more seconds");
        }
    }
}

/// `scheme://host[:port]` with no path, as browsers send in `Origin`.
fn is_origin(text: &str) -> bool {
    let Some((_, after_scheme)) = text.split_once("://") else {
        return false;
    };
    !after_scheme.contains(['/', '?', '#']) && rules::check_http_url(text).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::model::ConfigType;
    use crate::validate::tests::{Expect, check, with};

    fn valid() -> Value {
        json!({
            "pathPattern": "/api/**",
            "addHeaders": {"X-Frame-Options": "DENY", "Strict-Transport-Security": "max-age=31536000"},
            "removeHeaders": ["Server", "X-Powered-By"],
            "compression": {"enabled": true, "algorithms": ["br", "gzip", "zstd"], "minSize": 1024},
            "cors": {
                "enabled": true,
                "allowOrigins": ["https://app.example.com", "http://localhost:3000"],
                "allowMethods": ["GET", "POST", "OPTIONS"],
                "allowHeaders": ["Content-Type", "Authorization"],
                "allowCredentials": true,
                "maxAge": 600
            }
        })
    }

    #[test]
    fn response_modifications() {
        let base = valid();
        let cases = [
            (base.clone(), Expect::Valid),
            (json!({}), Expect::Valid),
            (
                with(&base, "/cors/allowCredentials", json!(false)),
                Expect::Valid,
            ),
            (
                with(&base, "/cors/allowOrigins", json!(["*"])),
                Expect::Error("content.cors.allowCredentials", "any origin ('*')"),
            ),
            (
                with(&base, "/addHeaders/Bad Header", json!("x")),
                Expect::Error("content.addHeaders.Bad Header", "not a valid header name"),
            ),
            (
                with(
                    &base,
                    "/addHeaders/X-Frame-Options",
                    json!("DENY\r\nSet-Cookie: a=b"),
                ),
                Expect::Error("content.addHeaders.X-Frame-Options", "control characters"),
            ),
            (
                with(&base, "/addHeaders/X-Count", json!(3)),
                Expect::Error("content.addHeaders.X-Count", "string"),
            ),
            (
                with(&base, "/removeHeaders", json!(["Server", "X:Bad"])),
                Expect::Error("content.removeHeaders.1", "not a valid header name"),
            ),
            (
                with(&base, "/compression/algorithms", json!(["gzip", "deflate"])),
                Expect::Error("content.compression.algorithms.1", "'deflate'"),
            ),
            (
                with(&base, "/compression/minSize", json!(-1)),
                Expect::Error("content.compression.minSize", "0 or more"),
            ),
            (
                with(&base, "/cors/allowMethods", json!(["GET", "FETCH"])),
                Expect::Error("content.cors.allowMethods.1", "not an HTTP method"),
            ),
            (
                with(
                    &base,
                    "/cors/allowOrigins",
                    json!(["https://app.example.com/path"]),
                ),
                Expect::Error("content.cors.allowOrigins.0", "not an origin"),
            ),
            (
                with(&base, "/cors/allowHeaders", json!(["Content Type"])),
                Expect::Error("content.cors.allowHeaders.0", "not a valid header name"),
            ),
            (
                with(&base, "/cors/maxAge", json!(-5)),
                Expect::Error("content.cors.maxAge", "0 or more"),
            ),
            (
                with(&base, "/pathPattern", json!("api")),
                Expect::Error("content.pathPattern", "must start with '/'"),
            ),
        ];
        for (content, expected) in cases {
            check(ConfigType::ResponseModification, &content, expected);
        }
    }
}
