//! Safety rules of `RoutingRule` content (SPEC §3): origins, failover, rewrites.
//!
//! Two rules need a definition of their own:
//!
//! * Origin overload. An origin may state its capacity as `maxRequestsPerSec`, and the rule
//!   may state the traffic it expects as `expectedRequestsPerSec`. An origin whose share
//!   (`weight`% of the expected traffic) exceeds its capacity is overloaded; so is an origin
//!   with a positive weight and a capacity of 0, whatever the traffic.
//! * Redirect loop. Edges apply `pathRewrite` and then match routes again (as nginx does with
//!   `rewrite … last`). A rewrite loops when a path it rewrites comes out still matched by
//!   this rule's `pathPattern` and by `from`: it would be rewritten again, without end. The
//!   check probes one path of the pattern (and one built from the literal prefix of `from`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::ValidationReport;
use super::rules::{self, shorten};
use crate::protocol::path_pattern;

const MAX_RETRY_ATTEMPTS: u64 = 10;
const CIRCUIT_BREAKER_MIN_MS: u64 = 1_000;
const CIRCUIT_BREAKER_MAX_MS: u64 = 300_000;
/// A retry delay beyond this holds a client connection longer than any client waits.
const RETRY_DELAY_MAX_MS: u64 = 60_000;
/// Compiled-size cap for `from`, so that a hostile pattern cannot take the server's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Compiled `from` patterns kept for reuse; the cache is emptied when it reaches this size.
const REGEX_CACHE_SIZE: usize = 256;

pub(crate) fn check(content: &Value, report: &mut ValidationReport) {
    rules::check_path_pattern(report, content);
    if let Some(origins) = content.get("origins").and_then(Value::as_array) {
        check_origins(content, origins, report);
    }
    if let Some(policy) = content.get("failoverPolicy") {
        check_failover(policy, report);
    }
    if let Some(host) = content.get("hostHeader").and_then(Value::as_str) {
        let bare = host.rsplit_once(':').map_or(host, |(name, _)| name);
        if !rules::is_hostname(bare) && bare.parse::<std::net::IpAddr>().is_err() {
            report.error(
                "content.hostHeader",
                format!("'{}' is not a valid host name", shorten(host)),
            );
        }
    }
    if let Some(rewrite) = content.get("pathRewrite") {
        check_rewrite(content, rewrite, report);
    }
}

fn check_origins(content: &Value, origins: &[Value], report: &mut ValidationReport) {
    if origins.is_empty() {
        report.error("content.origins", "At least one origin is required");
        return;
    }
    let mut names = HashSet::new();
    let mut weight_sum: i64 = 0;
    let mut weighted = 0usize;
    let expected_rps = content
        .get("expectedRequestsPerSec")
        .and_then(Value::as_f64);
    if let Some(rps) = expected_rps.filter(|rps| *rps < 0.0) {
        report.error(
            "content.expectedRequestsPerSec",
            format!("Expected requests per second must not be negative (got {rps})"),
        );
    }
    for (index, origin) in origins.iter().enumerate() {
        let field = format!("content.origins.{index}");
        if let Some(name) = origin.get("name").and_then(Value::as_str) {
            if !names.insert(name) {
                report.error(
                    format!("{field}.name"),
                    format!("Origin name '{}' is used twice", shorten(name)),
                );
            }
        }
        if let Some(endpoint) = origin.get("endpoint").and_then(Value::as_str) {
            if let Err(reason) = rules::check_http_url(endpoint) {
                report.error(format!("{field}.endpoint"), format!("Endpoint {reason}"));
            } else if let Some(what) = rules::url_host(endpoint).and_then(|h| internal_host(&h)) {
                report.warning(
                    format!("{field}.endpoint"),
                    format!(
                        "Endpoint points at {what}: edges would send this traffic to themselves \
                         or to their cloud's metadata service"
                    ),
                );
            }
        }
        let weight = origin.get("weight").and_then(Value::as_i64);
        if let Some(weight) = weight {
            weighted += 1;
            if !(0..=100).contains(&weight) {
                report.error(
                    format!("{field}.weight"),
                    "Weight must be between 0 and 100",
                );
            }
            weight_sum = weight_sum.saturating_add(weight);
        }
        if let Some(priority) = origin.get("priority").and_then(Value::as_i64) {
            if priority < 0 {
                report.error(format!("{field}.priority"), "Priority must not be negative");
            }
        }
        if let Some(capacity) = origin.get("maxRequestsPerSec").and_then(Value::as_f64) {
            check_capacity(
                &field,
                origin,
                capacity,
                weight.unwrap_or(0),
                expected_rps,
                report,
            );
        }
    }
    if weighted > 0 && weighted < origins.len() {
        report.error(
            "content.origins",
            "Either every origin has a weight or none has",
        );
    } else if weighted > 0 && weight_sum != 100 {
        report.error(
            "content.origins",
            format!("Origin weights must sum to 100 (got {weight_sum})"),
        );
    }
}

fn check_capacity(
    field: &str,
    origin: &Value,
    capacity: f64,
    weight: i64,
    expected_rps: Option<f64>,
    report: &mut ValidationReport,
) {
    let name = origin.get("name").and_then(Value::as_str).unwrap_or("?");
    if capacity < 0.0 {
        report.error(
            format!("{field}.maxRequestsPerSec"),
            "Capacity must not be negative",
        );
        return;
    }
    if weight <= 0 {
        return;
    }
    if capacity == 0.0 {
        report.error(
            format!("{field}.weight"),
            format!(
                "Origin '{}' has weight {weight} but no capacity (maxRequestsPerSec is 0)",
                shorten(name)
            ),
        );
        return;
    }
    if let Some(rps) = expected_rps.filter(|rps| *rps > 0.0) {
        let share = rps * weight as f64 / 100.0;
        if share > capacity {
            report.error(
                format!("{field}.weight"),
                format!(
                    "Origin '{}' would receive {share:.0} requests/s (weight {weight}% of {rps:.0}), beyond its capacity of {capacity:.0}",
                    shorten(name)
                ),
            );
        }
    }
}

fn check_failover(policy: &Value, report: &mut ValidationReport) {
    if let Some(attempts) = policy
        .get("retryAttempts")
        .filter(|v| v.is_i64() || v.is_u64())
    {
        if attempts.as_u64().is_none_or(|n| n > MAX_RETRY_ATTEMPTS) {
            report.error(
                "content.failoverPolicy.retryAttempts",
                format!("Retry attempts must be between 0 and {MAX_RETRY_ATTEMPTS}"),
            );
        }
    }
    if let Some(threshold) = policy.get("failoverThreshold").and_then(Value::as_i64) {
        if threshold < 1 {
            report.error(
                "content.failoverPolicy.failoverThreshold",
                "Failover threshold must be at least 1",
            );
        }
    }
    if let Some(delay) = policy.get("retryDelay") {
        match rules::duration_millis(delay) {
            None => report.error(
                "content.failoverPolicy.retryDelay",
                "Retry delay must be a duration such as 500ms, 2s or PT2S",
            ),
            Some(ms) if ms > RETRY_DELAY_MAX_MS => report.error(
                "content.failoverPolicy.retryDelay",
                "Retry delay must be at most 60s",
            ),
            Some(_) => {}
        }
    }
    if let Some(timeout) = policy.get("circuitBreakerTimeout") {
        let in_range = rules::duration_millis(timeout)
            .is_some_and(|ms| (CIRCUIT_BREAKER_MIN_MS..=CIRCUIT_BREAKER_MAX_MS).contains(&ms));
        if !in_range {
            report.error(
                "content.failoverPolicy.circuitBreakerTimeout",
                "Circuit breaker timeout must be between 1s and 300s",
            );
        }
    }
}

fn check_rewrite(content: &Value, rewrite: &Value, report: &mut ValidationReport) {
    let Some(from) = rewrite.get("from").and_then(Value::as_str) else {
        return;
    };
    let regex = match compile(from) {
        Ok(regex) => regex,
        Err(error) => {
            let reason = error.to_string();
            let last_line = reason.lines().last().unwrap_or("invalid");
            report.error(
                "content.pathRewrite.from",
                format!(
                    "'from' is not a valid regular expression: {}",
                    shorten(last_line)
                ),
            );
            return;
        }
    };
    let Some(to) = rewrite.get("to").and_then(Value::as_str) else {
        return;
    };
    if !to.starts_with('/') && !to.starts_with('$') {
        report.error(
            "content.pathRewrite.to",
            "Rewrite target must start with '/'",
        );
        return;
    }
    let pattern = rules::effective_pattern(content);
    if let Some((before, after)) = find_loop(pattern, &regex, from, to) {
        report.error(
            "content.pathRewrite",
            format!(
                "Path rewrite loops: '{}' becomes '{}', which pathPattern and 'from' match again",
                shorten(&before),
                shorten(&after)
            ),
        );
    }
}

/// What kind of address `host` is when it is one an origin should never be: the edge host
/// itself (loopback, unspecified), a link-local network or a cloud metadata service. Hosts
/// written as numbers the way resolvers read them (`127.1`, `2130706433`, `0x7f.1`) count as
/// the address they name.
fn internal_host(host: &str) -> Option<&'static str> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("a loopback host name");
    }
    if host == "metadata.google.internal" || host == "metadata" {
        return Some("a cloud metadata service");
    }
    let address = match host.parse::<IpAddr>() {
        Ok(address) => address,
        Err(_) => IpAddr::V4(rules::numeric_ipv4(&host)?),
    };
    let v4 = match address {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None if v6 == METADATA_V6 => return Some("a cloud metadata service"),
            None if v6.is_loopback() => return Some("a loopback address"),
            None if v6.is_unspecified() => return Some("the unspecified address"),
            None if v6.is_unicast_link_local() => return Some("a link-local address"),
            None => return None,
        },
    };
    if v4 == METADATA_V4 {
        Some("a cloud metadata service")
    } else if v4.is_loopback() {
        Some("a loopback address")
    } else if v4.is_unspecified() {
        Some("the unspecified address")
    } else if v4.is_link_local() {
        Some("a link-local address")
    } else {
        None
    }
}

/// `from` compiled, from a small process-wide cache: compiling a regex costs far more than
/// every other check of a rule together, and the same rewrites are validated again and again
/// (each update, each conflict check). Errors are not cached.
fn compile(from: &str) -> Result<Regex, regex::Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(regex) = cache.lock().ok().and_then(|map| map.get(from).cloned()) {
        return Ok(regex);
    }
    let regex = RegexBuilder::new(from)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()?;
    if let Ok(mut map) = cache.lock() {
        if map.len() >= REGEX_CACHE_SIZE {
            map.clear();
        }
        map.insert(from.to_owned(), regex.clone());
    }
    Ok(regex)
}

/// A probe path that the rewrite sends back into itself, with what it becomes.
fn find_loop(pattern: &str, regex: &Regex, from: &str, to: &str) -> Option<(String, String)> {
    let literal_prefix: String = from
        .trim_start_matches('^')
        .chars()
        .take_while(|c| !"\\.+*?()|[]{}^$".contains(*c))
        .collect();
    let probes = [
        path_pattern::sample_path(pattern),
        format!("{literal_prefix}x"),
    ];
    probes.into_iter().find_map(|probe| {
        if !path_pattern::matches(pattern, &probe) || !regex.is_match(&probe) {
            return None;
        }
        let rewritten = regex.replace(&probe, to).into_owned();
        (path_pattern::matches(pattern, &rewritten) && regex.is_match(&rewritten))
            .then_some((probe, rewritten))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::model::ConfigType;
    use crate::validate::tests::{Expect, check, with};

    fn valid() -> Value {
        json!({
            "pathPattern": "/api/**",
            "origins": [
                {"name": "primary", "endpoint": "https://origin-1.example.com", "weight": 70, "priority": 1, "maxRequestsPerSec": 5000},
                {"name": "secondary", "endpoint": "http://10.0.0.2:8080/base", "weight": 30, "priority": 2}
            ],
            "failoverPolicy": {"retryAttempts": 3, "retryDelay": "500ms", "failoverThreshold": 5, "circuitBreakerTimeout": "30s"},
            "pathRewrite": {"from": "^/api/v1/(.*)$", "to": "/v1/$1"},
            "hostHeader": "origin.example.com",
            "expectedRequestsPerSec": 1000
        })
    }

    #[test]
    fn routing_rules() {
        let base = valid();
        let cases = [
            (base.clone(), Expect::Valid),
            (
                with(&base, "/failoverPolicy/circuitBreakerTimeout", json!(300)),
                Expect::Valid,
            ),
            (
                with(
                    &base,
                    "/failoverPolicy/circuitBreakerTimeout",
                    json!("PT1S"),
                ),
                Expect::Valid,
            ),
            (
                with(&base, "/origins", json!([])),
                Expect::Error("content.origins", "At least one origin is required"),
            ),
            (
                with(&base, "/origins", Value::Null),
                Expect::Error("content.origins", "'origins' is required"),
            ),
            (
                with(&base, "/origins/1/weight", json!(20)),
                Expect::Error("content.origins", "sum to 100 (got 90)"),
            ),
            (
                with(&base, "/origins/1/weight", Value::Null),
                Expect::Error("content.origins", "every origin has a weight"),
            ),
            (
                with(&base, "/origins/1/name", json!("primary")),
                Expect::Error("content.origins.1.name", "used twice"),
            ),
            (
                with(&base, "/origins/0/endpoint", json!("origin-1.example.com")),
                Expect::Error("content.origins.0.endpoint", "absolute http:// or https://"),
            ),
            (
                with(&base, "/failoverPolicy/retryAttempts", json!(11)),
                Expect::Error("content.failoverPolicy.retryAttempts", "between 0 and 10"),
            ),
            (
                with(&base, "/failoverPolicy/retryAttempts", json!(-1)),
                Expect::Error("content.failoverPolicy.retryAttempts", "between 0 and 10"),
            ),
            (
                with(
                    &base,
                    "/failoverPolicy/circuitBreakerTimeout",
                    json!("301s"),
                ),
                Expect::Error(
                    "content.failoverPolicy.circuitBreakerTimeout",
                    "between 1s and 300s",
                ),
            ),
            (
                with(
                    &base,
                    "/failoverPolicy/circuitBreakerTimeout",
                    json!("500ms"),
                ),
                Expect::Error(
                    "content.failoverPolicy.circuitBreakerTimeout",
                    "between 1s and 300s",
                ),
            ),
            (
                with(&base, "/failoverPolicy/retryDelay", json!("soon")),
                Expect::Error("content.failoverPolicy.retryDelay", "must be a duration"),
            ),
            (
                with(&base, "/failoverPolicy/failoverThreshold", json!(0)),
                Expect::Error("content.failoverPolicy.failoverThreshold", "at least 1"),
            ),
            (
                with(&base, "/pathRewrite/from", json!("^/api/(")),
                Expect::Error("content.pathRewrite.from", "not a valid regular expression"),
            ),
            (
                with(&base, "/pathRewrite/to", json!("/api/v1/v2/$1")),
                Expect::Error("content.pathRewrite", "Path rewrite loops"),
            ),
            (
                with(
                    &base,
                    "/pathRewrite",
                    json!({"from": "^/(.*)$", "to": "/api/$1"}),
                ),
                Expect::Error("content.pathRewrite", "Path rewrite loops"),
            ),
            (
                with(&base, "/hostHeader", json!("bad host")),
                Expect::Error("content.hostHeader", "not a valid host name"),
            ),
            (
                with(&base, "/expectedRequestsPerSec", json!(10_000)),
                Expect::Error("content.origins.0.weight", "beyond its capacity of 5000"),
            ),
            (
                with(&base, "/origins/0/maxRequestsPerSec", json!(0)),
                Expect::Error("content.origins.0.weight", "no capacity"),
            ),
        ];
        for (content, expected) in cases {
            check(ConfigType::RoutingRule, &content, expected);
        }
    }

    #[test]
    fn origins_at_the_edge_itself_or_metadata_services_warn() {
        let base = valid();
        let warned = [
            (
                "http://169.254.169.254/latest/meta-data/",
                "a cloud metadata service",
            ),
            ("http://[fd00:ec2::254]/", "a cloud metadata service"),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                "a cloud metadata service",
            ),
            (
                "http://METADATA.google.internal./",
                "a cloud metadata service",
            ),
            ("http://127.0.0.1:8080", "a loopback address"),
            ("http://127.8.9.10", "a loopback address"),
            ("http://[::1]:80/", "a loopback address"),
            ("http://[::ffff:127.0.0.1]/", "a loopback address"),
            ("http://0.0.0.0/", "the unspecified address"),
            ("http://[::]/", "the unspecified address"),
            ("http://169.254.1.1/", "a link-local address"),
            ("http://[fe80::1]/", "a link-local address"),
            ("http://localhost:3000", "a loopback host name"),
            ("https://api.localhost/", "a loopback host name"),
            ("http://127.1/", "a loopback address"),
            ("http://2130706433/", "a loopback address"),
            ("http://0x7f.0.0.1/", "a loopback address"),
            ("http://0251.0376.0251.0376/", "a cloud metadata service"),
        ];
        for (endpoint, what) in warned {
            check(
                ConfigType::RoutingRule,
                &with(&base, "/origins/1/endpoint", json!(endpoint)),
                Expect::Warning("content.origins.1.endpoint", what),
            );
        }
        for endpoint in [
            "http://10.0.0.2:8080/base",
            "http://192.168.1.10/",
            "https://[2001:db8::1]/",
            "https://origin.example.com",
            "https://localhost.example.com",
            "http://1.2.3.4.5/",
        ] {
            check(
                ConfigType::RoutingRule,
                &with(&base, "/origins/1/endpoint", json!(endpoint)),
                Expect::Valid,
            );
        }
    }
}
