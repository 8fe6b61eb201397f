//! No control characters in content: every key and string of a configuration may end up in a
//! header value, a path, a rewrite target, a regex replacement or a proxy directive at the
//! edges, where a CR, LF or NUL would split or end what the edge generates.
//!
//! Refused everywhere: C0 (U+0000–U+001F, tab, CR and LF included), DEL (U+007F) and C1
//! (U+0080–U+009F). The one exception is PEM text (`certificate`, `privateKey`,
//! `certificateChain` of an `SSLCertificate`), which is written to files, never into a
//! directive, and is made of lines: there line breaks (LF, CR) are allowed, the rest is not.

use std::collections::HashSet;

use serde_json::Value;

use super::ValidationReport;
use super::rules::shorten;
use crate::model::ConfigType;

/// Top-level fields whose text is PEM: lines, written to a file of its own.
const PEM_FIELDS: &[&str] = &["certificate", "privateKey", "certificateChain"];

/// Whether `c` is a C0 or C1 control character or DEL.
pub fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// The first control character of `text` (line breaks allowed when `lines`).
fn first_control(text: &str, lines: bool) -> Option<char> {
    text.chars()
        .find(|&c| is_control(c) && !(lines && (c == '\n' || c == '\r')))
}

fn message(what: &str, c: char) -> String {
    format!(
        "{what} must not contain control characters (found U+{:04X})",
        u32::from(c)
    )
}

/// Reports every key and string of `content` that holds a control character, by its dotted
/// field. Returns the fields reported, so that other layers' findings about the same value
/// (which would only restate the problem in their own words) can be left out.
pub(crate) fn check(
    config_type: ConfigType,
    content: &Value,
    report: &mut ValidationReport,
) -> HashSet<String> {
    let mut flagged = HashSet::new();
    let Some(map) = content.as_object() else {
        return flagged;
    };
    for (key, value) in map {
        let lines = config_type == ConfigType::SslCertificate && PEM_FIELDS.contains(&&**key);
        walk_entry(key, value, "content", lines, report, &mut flagged);
    }
    flagged
}

fn walk(
    value: &Value,
    field: String,
    lines: bool,
    report: &mut ValidationReport,
    flagged: &mut HashSet<String>,
) {
    match value {
        Value::String(text) => {
            if let Some(c) = first_control(text, lines) {
                report.error(&field, message("Value", c));
                flagged.insert(field);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, format!("{field}.{index}"), lines, report, flagged);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                walk_entry(key, item, &field, lines, report, flagged);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// One member of an object: its key (a header name, a map key) is checked like a value.
fn walk_entry(
    key: &str,
    value: &Value,
    parent: &str,
    lines: bool,
    report: &mut ValidationReport,
    flagged: &mut HashSet<String>,
) {
    let field = format!("{parent}.{key}");
    if let Some(c) = first_control(key, false) {
        report.error(&field, message(&format!("Key '{}'", escaped(key)), c));
        flagged.insert(field);
        return;
    }
    walk(value, field, lines, report, flagged);
}

/// A key as it can be shown in a message: control characters escaped, cut to length.
fn escaped(key: &str) -> String {
    shorten(&key.escape_debug().to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Expect, check as check_case, report_for, with};
    use super::*;
    use serde_json::json;

    fn cache_rule() -> Value {
        json!({"pathPattern": "/static/*", "ttl": 60, "cacheControl": "public, max-age=60"})
    }

    fn routing_rule() -> Value {
        json!({
            "pathPattern": "/api/*",
            "origins": [{"name": "a", "endpoint": "https://origin.example.com", "weight": 100}],
            "failoverPolicy": {"retryAttempts": 2},
            "pathRewrite": {"from": "^/api/(.*)$", "to": "/v2/$1"},
            "hostHeader": "origin.example.com"
        })
    }

    fn response_rule() -> Value {
        json!({"pathPattern": "/*", "addHeaders": {"X-Frame-Options": "DENY"}})
    }

    #[test]
    fn control_characters_are_refused_where_edges_would_use_them() {
        let injection = "public\r\nSet-Cookie: a=b";
        let cases: Vec<(ConfigType, Value, &str, &str)> = vec![
            (
                ConfigType::CacheRule,
                with(&cache_rule(), "/cacheControl", json!(injection)),
                "content.cacheControl",
                "U+000D",
            ),
            (
                ConfigType::CacheRule,
                with(&cache_rule(), "/cacheKey", json!(["$uri", "$args\n"])),
                "content.cacheKey.1",
                "U+000A",
            ),
            (
                ConfigType::CacheRule,
                with(&cache_rule(), "/pathPattern", json!("/static/\u{0}*")),
                "content.pathPattern",
                "U+0000",
            ),
            (
                ConfigType::RoutingRule,
                with(&routing_rule(), "/pathRewrite/to", json!("/v2/$1\r\nX: y")),
                "content.pathRewrite.to",
                "U+000D",
            ),
            (
                ConfigType::RoutingRule,
                with(&routing_rule(), "/pathRewrite/from", json!("^/api/\t(.*)$")),
                "content.pathRewrite.from",
                "U+0009",
            ),
            (
                ConfigType::RoutingRule,
                with(
                    &routing_rule(),
                    "/hostHeader",
                    json!("origin.example.com\u{7f}"),
                ),
                "content.hostHeader",
                "U+007F",
            ),
            (
                ConfigType::RoutingRule,
                with(
                    &routing_rule(),
                    "/origins/0/endpoint",
                    json!("https://origin.example.com/\u{85}"),
                ),
                "content.origins.0.endpoint",
                "U+0085",
            ),
            (
                ConfigType::RoutingRule,
                with(&routing_rule(), "/origins/0/name", json!("a\u{9f}")),
                "content.origins.0.name",
                "U+009F",
            ),
            (
                ConfigType::ResponseModification,
                with(
                    &response_rule(),
                    "/addHeaders/X-Frame-Options",
                    json!("DENY\r\n"),
                ),
                "content.addHeaders.X-Frame-Options",
                "U+000D",
            ),
            (
                ConfigType::ResponseModification,
                json!({"addHeaders": {"X-A\r\nSet-Cookie": "1"}}),
                "content.addHeaders.X-A\r\nSet-Cookie",
                "Key 'X-A\\r\\nSet-Cookie'",
            ),
            (
                ConfigType::SecurityRule,
                json!({"waf": {"enabled": true, "rules": ["OWASP-CRS-4.0\u{1b}"], "mode": "block"}}),
                "content.waf.rules.0",
                "U+001B",
            ),
            (
                ConfigType::CacheRule,
                with(&cache_rule(), "/x\u{1}", json!(1)),
                "content.x\u{1}",
                "Key 'x\\u{1}'",
            ),
        ];
        for (config_type, content, field, fragment) in cases {
            check_case(
                config_type,
                &content,
                Expect::Error(field, "must not contain control characters"),
            );
            let report = report_for(config_type, &content);
            assert!(
                report.errors[0].message.contains(fragment),
                "{field}: {report:?}"
            );
        }
    }

    #[test]
    fn ordinary_text_passes() {
        check_case(ConfigType::CacheRule, &cache_rule(), Expect::Valid);
        check_case(ConfigType::RoutingRule, &routing_rule(), Expect::Valid);
        check_case(
            ConfigType::ResponseModification,
            &with(
                &response_rule(),
                "/addHeaders/X-Note",
                json!("naïve – ünïcode ✓"),
            ),
            Expect::Valid,
        );
    }

    #[test]
    fn pem_text_may_have_line_breaks_but_nothing_else() {
        let mut report = ValidationReport::default();
        let content = json!({
            "domains": ["a.example"],
            "certificate": "-----BEGIN CERTIFICATE-----\r\nAAAA\n-----END CERTIFICATE-----\n",
            "privateKey": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "certificateChain": ["-----BEGIN CERTIFICATE-----\nAAAA\u{0}\n"],
            "provider": "acme\n",
        });
        let flagged = check(ConfigType::SslCertificate, &content, &mut report);
        let mut flagged: Vec<String> = flagged.into_iter().collect();
        flagged.sort();
        assert_eq!(
            flagged,
            vec!["content.certificateChain.0", "content.provider"],
            "{report:?}"
        );
        // Line breaks are PEM's only where the type is SSLCertificate.
        let mut other = ValidationReport::default();
        check(
            ConfigType::CacheRule,
            &json!({"certificate": "a\nb"}),
            &mut other,
        );
        assert_eq!(other.errors.len(), 1);
    }
}
