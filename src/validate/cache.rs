//! Safety rules of `CacheRule` content (SPEC §3).

use serde_json::Value;

use super::ValidationReport;
use super::rules::{self, shorten, strings};

/// One year, the longest TTL an edge accepts.
const MAX_TTL_SECONDS: i64 = 31_536_000;

pub(crate) fn check(content: &Value, report: &mut ValidationReport) {
    rules::check_path_pattern(report, content);

    if let Some(ttl) = content.get("ttl").filter(|v| v.is_i64() || v.is_u64()) {
        let in_range = ttl
            .as_i64()
            .is_some_and(|seconds| (0..=MAX_TTL_SECONDS).contains(&seconds));
        if !in_range {
            report.error(
                "content.ttl",
                format!("TTL must be between 0 and {MAX_TTL_SECONDS} seconds"),
            );
        }
    }

    for (index, item) in strings(content.get("cacheKey")) {
        if !is_cache_key_item(item) {
            report.error(
                format!("content.cacheKey.{index}"),
                format!(
                    "'{}' is not a cache key variable: use $uri, $args, $host, $scheme or $http_<name>",
                    shorten(item)
                ),
            );
        }
    }

    rules::check_header_names(report, "content.varyHeaders", content.get("varyHeaders"));
    if strings(content.get("varyHeaders")).any(|(_, name)| name == "*") {
        // `Vary: *` makes every response unique, i.e. nothing is ever served from cache.
        report.warning(
            "content.varyHeaders",
            "'*' in varyHeaders disables caching for this rule",
        );
    }

    for (index, pattern) in strings(content.get("purgePatterns")) {
        if !pattern.starts_with('/') {
            report.error(
                format!("content.purgePatterns.{index}"),
                "Purge pattern must start with '/'",
            );
        }
    }

    if let Some(bypass) = content.get("bypassConditions") {
        for (index, name) in strings(bypass.get("cookies")) {
            if name.is_empty() || name.contains([';', '=', ' ', ',']) {
                report.error(
                    format!("content.bypassConditions.cookies.{index}"),
                    format!("'{}' is not a valid cookie name", shorten(name)),
                );
            }
        }
        for (index, name) in strings(bypass.get("queryParams")) {
            if name.is_empty() || name.contains(['&', '=', '#', ' ']) {
                report.error(
                    format!("content.bypassConditions.queryParams.{index}"),
                    format!("'{}' is not a valid query parameter name", shorten(name)),
                );
            }
        }
    }
}

/// `$uri`, `$args`, `$host`, `$scheme`, or `$http_<name>` where `<name>` is a request header
/// in the edge's variable form (lower case, `-` written `_`).
fn is_cache_key_item(item: &str) -> bool {
    match item {
        "$uri" | "$args" | "$host" | "$scheme" => true,
        _ => item.strip_prefix("$http_").is_some_and(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::model::ConfigType;
    use crate::validate::tests::{Expect, check, with};

    fn valid() -> Value {
        json!({
            "pathPattern": "/static/*",
            "ttl": 86400,
            "cacheControl": "public, max-age=86400",
            "cacheKey": ["$uri", "$args", "$http_accept_encoding"],
            "varyHeaders": ["Accept-Encoding"],
            "purgePatterns": ["/static/**"],
            "bypassConditions": {"cookies": ["session_id"], "queryParams": ["nocache"]}
        })
    }

    #[test]
    fn cache_rules() {
        let base = valid();
        let cases = [
            (base.clone(), Expect::Valid),
            (with(&base, "/ttl", json!(0)), Expect::Valid),
            (with(&base, "/ttl", json!(31_536_000)), Expect::Valid),
            (
                with(&base, "/ttl", json!(31_536_001)),
                Expect::Error("content.ttl", "TTL must be between 0 and 31536000 seconds"),
            ),
            (
                with(&base, "/ttl", json!(-1)),
                Expect::Error("content.ttl", "TTL must be between 0 and 31536000 seconds"),
            ),
            (
                with(&base, "/ttl", json!(1.5)),
                Expect::Error("content.ttl", "integer"),
            ),
            (
                with(&base, "/ttl", Value::Null),
                Expect::Error("content.ttl", "'ttl' is required"),
            ),
            (
                with(&base, "/pathPattern", json!("static/*")),
                Expect::Error("content.pathPattern", "must start with '/'"),
            ),
            (
                with(&base, "/cacheKey", json!(["$uri", "$cookie_x"])),
                Expect::Error("content.cacheKey.1", "not a cache key variable"),
            ),
            (
                with(&base, "/cacheKey", json!(["$http_"])),
                Expect::Error("content.cacheKey.0", "not a cache key variable"),
            ),
            (
                with(&base, "/varyHeaders", json!(["Accept Encoding"])),
                Expect::Error("content.varyHeaders.0", "not a valid header name"),
            ),
            (
                with(&base, "/varyHeaders", json!(["*"])),
                Expect::Warning("content.varyHeaders", "disables caching"),
            ),
            (
                with(&base, "/purgePatterns", json!(["static"])),
                Expect::Error("content.purgePatterns.0", "must start with '/'"),
            ),
            (
                with(&base, "/bypassConditions/cookies", json!(["a=b"])),
                Expect::Error("content.bypassConditions.cookies.0", "cookie name"),
            ),
            (
                with(&base, "/bypassConditions/queryParams", json!([""])),
                Expect::Error("content.bypassConditions.queryParams.0", "query parameter"),
            ),
        ];
        for (content, expected) in cases {
            check(ConfigType::CacheRule, &content, expected);
        }
    }
}
