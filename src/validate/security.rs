//! Safety rules of `SecurityRule` content (SPEC §3): WAF, rate limit, geo blocking, IP lists.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::ValidationReport;
use super::rules::{self, shorten, strings};

/// Managed WAF rule sets the edges ship. The OWASP Core Rule Sets by version, and the
/// individual CRS families for operators who enable only some of them.
pub(crate) const KNOWN_WAF_RULE_SETS: &[&str] = &[
    "OWASP-CRS-3.2",
    "OWASP-CRS-3.3",
    "OWASP-CRS-4.0",
    "CRS-SQLI",
    "CRS-XSS",
    "CRS-LFI",
    "CRS-RFI",
    "CRS-RCE",
    "CRS-PHP",
    "CRS-JAVA",
    "CRS-SCANNER-DETECTION",
    "CRS-PROTOCOL-ENFORCEMENT",
    "CRS-SESSION-FIXATION",
    "BOT-PROTECTION",
];

/// Rate-limit windows allowed, in milliseconds: 1 s to 1 h.
const WINDOW_MIN_MS: u64 = 1_000;
const WINDOW_MAX_MS: u64 = 3_600_000;

/// Every ISO 3166-1 alpha-2 code officially assigned (249), sorted for binary search.
/// Reserved and user-assigned codes (`EU`, `UK`, `XK`, …) are not countries to the edges'
/// geo database and are rejected.
const ISO_3166_ALPHA_2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

pub(crate) fn check(content: &Value, report: &mut ValidationReport) {
    rules::check_path_pattern(report, content);
    if let Some(waf) = content.get("waf") {
        check_waf(waf, report);
    }
    if let Some(rate_limit) = content.get("rateLimit") {
        check_rate_limit(rate_limit, report);
    }
    if let Some(geo) = content.get("geoBlocking") {
        check_geo(geo, report);
    }
    if let Some(filtering) = content.get("ipFiltering") {
        check_ip_filtering(filtering, report);
    }
}

fn enabled(section: &Value) -> bool {
    section
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

fn check_waf(waf: &Value, report: &mut ValidationReport) {
    for (index, name) in strings(waf.get("rules")) {
        if !KNOWN_WAF_RULE_SETS.contains(&name) {
            report.error(
                format!("content.waf.rules.{index}"),
                format!(
                    "Unknown WAF rule set '{}' (known: {})",
                    shorten(name),
                    KNOWN_WAF_RULE_SETS.join(", ")
                ),
            );
        }
    }
    if let Some(mode) = waf.get("mode").and_then(Value::as_str) {
        if mode != "block" && mode != "detect" {
            report.error("content.waf.mode", "WAF mode must be 'block' or 'detect'");
        }
    }
    if enabled(waf) && strings(waf.get("rules")).next().is_none() {
        report.warning("content.waf.rules", "WAF is enabled without any rule set");
    }
}

fn check_rate_limit(rate_limit: &Value, report: &mut ValidationReport) {
    if let Some(limit) = rate_limit.get("limit").filter(|v| v.is_i64() || v.is_u64()) {
        if limit.as_u64().is_none_or(|n| n == 0) {
            report.error(
                "content.rateLimit.limit",
                "Rate limit must be greater than 0",
            );
        }
    }
    if let Some(window) = rate_limit.get("window") {
        let in_range = rules::duration_millis(window)
            .is_some_and(|ms| (WINDOW_MIN_MS..=WINDOW_MAX_MS).contains(&ms));
        if !in_range {
            report.error(
                "content.rateLimit.window",
                "Rate limit window must be between 1s and 3600s",
            );
        }
    }
    if enabled(rate_limit) && rate_limit.get("limit").is_none() {
        report.error(
            "content.rateLimit.limit",
            "An enabled rate limit needs a limit",
        );
    }
    if let Some(key) = rate_limit.get("key").and_then(Value::as_str) {
        if key.trim().is_empty() {
            report.error("content.rateLimit.key", "Rate limit key must not be empty");
        }
    }
}

fn check_geo(geo: &Value, report: &mut ValidationReport) {
    if let Some(mode) = geo.get("mode").and_then(Value::as_str) {
        if mode != "allowlist" && mode != "blocklist" {
            report.error(
                "content.geoBlocking.mode",
                "Geo blocking mode must be 'allowlist' or 'blocklist'",
            );
        }
    }
    for (index, code) in strings(geo.get("countries")) {
        if ISO_3166_ALPHA_2.binary_search(&code).is_err() {
            let hint = if ISO_3166_ALPHA_2
                .binary_search(&code.to_ascii_uppercase().as_str())
                .is_ok()
            {
                " (codes are upper case)"
            } else {
                ""
            };
            report.error(
                format!("content.geoBlocking.countries.{index}"),
                format!(
                    "'{}' is not an ISO 3166-1 alpha-2 country code{hint}",
                    shorten(code)
                ),
            );
        }
    }
    let allowlist = geo.get("mode").and_then(Value::as_str) == Some("allowlist");
    if enabled(geo) && allowlist && strings(geo.get("countries")).next().is_none() {
        report.warning(
            "content.geoBlocking.countries",
            "An allowlist without countries blocks every request",
        );
    }
}

/// An address or network as the closed range of addresses it covers.
#[derive(Clone, Copy)]
struct Range {
    v6: bool,
    first: u128,
    last: u128,
    index: usize,
}

fn parse_entry(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn range_of(net: IpNet, index: usize) -> Range {
    match net {
        IpNet::V4(net) => Range {
            v6: false,
            first: u32::from(net.network()).into(),
            last: u32::from(net.broadcast()).into(),
            index,
        },
        IpNet::V6(net) => Range {
            v6: true,
            first: u128::from(net.network()),
            last: u128::from(net.broadcast()),
            index,
        },
    }
}

fn parse_list(filtering: &Value, key: &str, report: &mut ValidationReport) -> Vec<(Range, String)> {
    let mut out = Vec::new();
    for (index, text) in strings(filtering.get(key)) {
        match parse_entry(text) {
            Some(net) => {
                if net.addr() != net.network() {
                    // `10.0.0.5/24` is almost always a typo for one address or the network.
                    report.warning(
                        format!("content.ipFiltering.{key}.{index}"),
                        format!(
                            "'{}' has host bits set; it means {}",
                            shorten(text),
                            net.trunc()
                        ),
                    );
                }
                out.push((range_of(net, index), text.to_owned()));
            }
            None => report.error(
                format!("content.ipFiltering.{key}.{index}"),
                format!("'{}' is not an IPv4/IPv6 address or CIDR", shorten(text)),
            ),
        }
    }
    out
}

/// An address both allowed and denied is an error. Networks are either nested or disjoint,
/// so the allowlist reduces to its outermost networks, sorted and disjoint, and each denied
/// range is looked up by binary search: `O((a + d) log a)` for lists of any size.
fn check_ip_filtering(filtering: &Value, report: &mut ValidationReport) {
    let allow = parse_list(filtering, "allowlist", report);
    let deny = parse_list(filtering, "denylist", report);
    if allow.is_empty() || deny.is_empty() {
        return;
    }
    let mut outer: Vec<&(Range, String)> = allow.iter().collect();
    outer.sort_by(|a, b| {
        (a.0.v6, a.0.first, std::cmp::Reverse(a.0.last)).cmp(&(
            b.0.v6,
            b.0.first,
            std::cmp::Reverse(b.0.last),
        ))
    });
    outer.dedup_by(|later, kept| later.0.v6 == kept.0.v6 && later.0.last <= kept.0.last);
    for (range, text) in &deny {
        // The last outer network starting at or before this range's end.
        let position = outer
            .partition_point(|(allowed, _)| (allowed.v6, allowed.first) <= (range.v6, range.last));
        let Some((allowed, allowed_text)) = position.checked_sub(1).map(|p| outer[p]) else {
            continue;
        };
        if allowed.v6 == range.v6 && allowed.last >= range.first {
            report.error(
                format!("content.ipFiltering.denylist.{}", range.index),
                format!(
                    "'{}' overlaps allowlist entry '{}' (content.ipFiltering.allowlist.{}): an address cannot be both allowed and denied",
                    shorten(text),
                    shorten(allowed_text),
                    allowed.index
                ),
            );
        }
    }
}

/// Whether `code` is an assigned ISO 3166-1 alpha-2 country code (upper case).
pub fn is_country_code(code: &str) -> bool {
    ISO_3166_ALPHA_2.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::ISO_3166_ALPHA_2;
    use crate::model::ConfigType;
    use crate::validate::tests::{Expect, check, with};

    fn valid() -> Value {
        json!({
            "pathPattern": "/api/**",
            "waf": {"enabled": true, "rules": ["OWASP-CRS-3.3", "OWASP-CRS-4.0"], "mode": "block"},
            "rateLimit": {"enabled": true, "limit": 100, "window": "60s", "key": "ip"},
            "geoBlocking": {"enabled": true, "mode": "blocklist", "countries": ["KP", "IR"]},
            "ipFiltering": {
                "allowlist": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"],
                "denylist": ["203.0.113.0/24", "2001:db9::1"]
            }
        })
    }

    #[test]
    fn country_list_is_sorted_and_complete() {
        assert_eq!(ISO_3166_ALPHA_2.len(), 249);
        assert!(ISO_3166_ALPHA_2.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn security_rules() {
        let base = valid();
        let cases = [
            (base.clone(), Expect::Valid),
            (json!({}), Expect::Valid),
            (with(&base, "/rateLimit/window", json!(3600)), Expect::Valid),
            (
                with(&base, "/waf/rules", json!(["OWASP-CRS-9.9"])),
                Expect::Error(
                    "content.waf.rules.0",
                    "Unknown WAF rule set 'OWASP-CRS-9.9'",
                ),
            ),
            (
                with(&base, "/waf/mode", json!("log")),
                Expect::Error("content.waf.mode", "'block' or 'detect'"),
            ),
            (
                with(&base, "/waf/rules", json!([])),
                Expect::Warning("content.waf.rules", "without any rule set"),
            ),
            (
                with(&base, "/rateLimit/window", json!("0s")),
                Expect::Error("content.rateLimit.window", "between 1s and 3600s"),
            ),
            (
                with(&base, "/rateLimit/window", json!(3601)),
                Expect::Error("content.rateLimit.window", "between 1s and 3600s"),
            ),
            (
                with(&base, "/rateLimit/limit", json!(0)),
                Expect::Error("content.rateLimit.limit", "greater than 0"),
            ),
            (
                with(&base, "/geoBlocking/countries", json!(["KP", "XX"])),
                Expect::Error(
                    "content.geoBlocking.countries.1",
                    "'XX' is not an ISO 3166-1",
                ),
            ),
            (
                with(&base, "/geoBlocking/countries", json!(["us"])),
                Expect::Error("content.geoBlocking.countries.0", "upper case"),
            ),
            (
                with(&base, "/geoBlocking/mode", json!("denylist")),
                Expect::Error("content.geoBlocking.mode", "'allowlist' or 'blocklist'"),
            ),
            (
                with(&base, "/ipFiltering/allowlist/1", json!("2001:db8::/129")),
                Expect::Error("content.ipFiltering.allowlist.1", "not an IPv4/IPv6"),
            ),
            (
                with(&base, "/ipFiltering/denylist/0", json!("10.1.2.3")),
                Expect::Error(
                    "content.ipFiltering.denylist.0",
                    "overlaps allowlist entry '10.0.0.0/8'",
                ),
            ),
            (
                with(&base, "/ipFiltering/denylist/1", json!("2001:db8:1::/48")),
                Expect::Error(
                    "content.ipFiltering.denylist.1",
                    "overlaps allowlist entry '2001:db8::/32'",
                ),
            ),
            (
                with(&base, "/ipFiltering/denylist/0", json!("192.0.0.0/16")),
                Expect::Error("content.ipFiltering.denylist.0", "'192.0.2.7'"),
            ),
            (
                with(&base, "/ipFiltering/denylist/0", json!("203.0.113.9/24")),
                Expect::Warning("content.ipFiltering.denylist.0", "host bits set"),
            ),
        ];
        for (content, expected) in cases {
            check(ConfigType::SecurityRule, &content, expected);
        }
    }

    #[test]
    fn large_ip_lists_stay_fast() {
        let allow: Vec<String> = (0..20_000u32)
            .map(|i| std::net::Ipv4Addr::from(0x0A00_0000 + i * 4).to_string())
            .collect();
        let deny: Vec<String> = (0..20_000u32)
            .map(|i| std::net::Ipv4Addr::from(0x0B00_0000 + i).to_string())
            .collect();
        let content = json!({"ipFiltering": {"allowlist": allow, "denylist": deny}});
        check(ConfigType::SecurityRule, &content, Expect::Valid);
    }
}
