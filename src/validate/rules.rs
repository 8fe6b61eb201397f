//! Checks shared by several configuration types: header names, durations, URLs, host names.

use serde_json::Value;

use super::ValidationReport;

/// Whether `name` is an HTTP field name: an RFC 7230 `token` (RFC 9110 §5.1).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether `value` may be sent as a header value: visible characters, spaces and tabs only,
/// so that no CR/LF can split the response (RFC 9110 §5.5).
pub(crate) fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// The items of an array field as `(index, text)` for those that are strings; items of other
/// types were already reported by the schema layer.
pub(crate) fn strings(value: Option<&Value>) -> impl Iterator<Item = (usize, &str)> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, item)| item.as_str().map(|text| (index, text)))
}

/// Checks each string of an array field to be a header name.
pub(crate) fn check_header_names(
    report: &mut ValidationReport,
    field: &str,
    value: Option<&Value>,
) {
    for (index, name) in strings(value) {
        if !is_header_name(name) {
            report.error(
                format!("{field}.{index}"),
                format!("'{}' is not a valid header name", shorten(name)),
            );
        }
    }
}

/// Checks an optional `pathPattern`: absolute, and free of characters no path can hold.
pub(crate) fn check_path_pattern(report: &mut ValidationReport, content: &Value) {
    let Some(pattern) = content.get("pathPattern").and_then(Value::as_str) else {
        return;
    };
    if !pattern.starts_with('/') {
        report.error("content.pathPattern", "Path pattern must start with '/'");
    } else if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        report.error(
            "content.pathPattern",
            "Path pattern must not contain whitespace or control characters",
        );
    }
}

/// The pattern a rule applies to, `/*` (every path) when it names none.
pub(crate) fn effective_pattern(content: &Value) -> &str {
    content
        .get("pathPattern")
        .and_then(Value::as_str)
        .unwrap_or("/*")
}

/// A duration in milliseconds from an integer (whole seconds) or text in the product's one
/// duration syntax (`500ms`, `30s`, `PT30S`, a bare number of seconds). `None` for anything
/// else, negative values included.
pub(crate) fn duration_millis(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64()?.checked_mul(1000),
        Value::String(text) => crate::model::parse_duration(text)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok()),
        _ => None,
    }
}

/// Whether `host` is a DNS name (letters, digits, hyphens; labels of 1–63; 253 in all).
pub(crate) fn is_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Checks that `text` is an absolute `http`/`https` URL with a valid host and port; the reason
/// when not.
pub(crate) fn check_http_url(text: &str) -> Result<(), &'static str> {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &text[8..]
    } else if lower.starts_with("http://") {
        &text[7..]
    } else {
        return Err("must be an absolute http:// or https:// URL");
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if tail.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    if authority.contains('@') {
        return Err("must not contain credentials");
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let close = bracketed
            .find(']')
            .ok_or("has an unterminated IPv6 address")?;
        let address = &bracketed[..close];
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has an invalid IPv6 address");
        }
        let after = &bracketed[close + 1..];
        if after.is_empty() {
            (None, None)
        } else {
            (
                None,
                Some(after.strip_prefix(':').ok_or("has an invalid port")?),
            )
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("has no host");
        }
        if host.parse::<std::net::Ipv4Addr>().is_err() && !is_hostname(host) {
            return Err("has an invalid host");
        }
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err("has an invalid port"),
        }
    }
    Ok(())
}

/// The host of an `http`/`https` URL that [`check_http_url`] accepts, without brackets or
/// port; `None` for anything else.
pub(crate) fn url_host(text: &str) -> Option<String> {
    check_http_url(text).ok()?;
    let rest = text.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => &bracketed[..bracketed.find(']')?],
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    Some(host.to_owned())
}

/// An IPv4 address written the way `inet_aton` (and so most resolvers) reads it: one to four
/// dot-separated numbers, each decimal, octal (leading `0`) or hex (`0x`), the last filling
/// the remaining bytes (`127.1` is 127.0.0.1, `2130706433` too).
pub(crate) fn numeric_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in &parts {
        let lower = part.to_ascii_lowercase();
        let number = if let Some(hex) = lower.strip_prefix("0x") {
            if hex.is_empty() {
                0
            } else {
                u32::from_str_radix(hex, 16).ok()?
            }
        } else if lower.len() > 1 && lower.starts_with('0') {
            u32::from_str_radix(&lower[1..], 8).ok()?
        } else {
            lower.parse::<u32>().ok()?
        };
        numbers.push(number);
    }
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|&n| n > 255) {
        return None;
    }
    let remaining_bits = 8 * (4 - leading.len() as u32);
    if remaining_bits < 32 && u64::from(*last) >= 1u64 << remaining_bits {
        return None;
    }
    let mut address: u32 = 0;
    for (index, &n) in leading.iter().enumerate() {
        address |= n << (24 - 8 * index as u32);
    }
    Some(std::net::Ipv4Addr::from(address | last))
}

/// `text` cut to a length fit for a message, on a character boundary.
pub(crate) fn shorten(text: &str) -> String {
    const LIMIT: usize = 80;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_names() {
        for good in ["Accept-Encoding", "x-cache", "X_Custom!", "a"] {
            assert!(is_header_name(good), "{good}");
        }
        for bad in ["", "Bad Header", "x:y", "naïve", "a\r\nb", "(x)"] {
            assert!(!is_header_name(bad), "{bad}");
        }
        assert!(is_header_value("max-age=60, public"));
        assert!(!is_header_value("a\r\nSet-Cookie: x"));
    }

    #[test]
    fn durations() {
        let cases = [
            (json!(30), Some(30_000)),
            (json!("30s"), Some(30_000)),
            (json!("30"), Some(30_000)),
            (json!("500ms"), Some(500)),
            (json!("5m"), Some(300_000)),
            (json!("1h"), Some(3_600_000)),
            (json!("PT30S"), Some(30_000)),
            (json!("PT1M30S"), Some(90_000)),
            (json!("PT0.5S"), Some(500)),
            (json!("PT"), None),
            (json!("P1D"), Some(86_400_000)),
            (json!("-5s"), None),
            (json!(-5), None),
            (json!("5 parsecs"), None),
            (json!(true), None),
        ];
        for (value, expected) in cases {
            assert_eq!(duration_millis(&value), expected, "{value}");
        }
    }

    #[test]
    fn numeric_hosts_read_like_resolvers_read_them() {
        let cases = [
            ("127.0.0.1", Some([127, 0, 0, 1])),
            ("127.1", Some([127, 0, 0, 1])),
            ("10.1.2", Some([10, 1, 0, 2])),
            ("2130706433", Some([127, 0, 0, 1])),
            ("0x7f.1", Some([127, 0, 0, 1])),
            ("0177.0.0.01", Some([127, 0, 0, 1])),
            ("0", Some([0, 0, 0, 0])),
            ("256.1", None),
            ("1.2.3.256", None),
            ("1.2.65536", None),
            ("1.2.3.4.5", None),
            ("08.1.1.1", None),
            ("example.com", None),
            ("", None),
        ];
        for (host, expected) in cases {
            assert_eq!(
                numeric_ipv4(host),
                expected.map(std::net::Ipv4Addr::from),
                "{host}"
            );
        }
        assert_eq!(url_host("http://[::1]:80/x").as_deref(), Some("::1"));
        assert_eq!(
            url_host("HTTPS://Example.com:8443?q").as_deref(),
            Some("Example.com")
        );
        assert_eq!(url_host("ftp://example.com"), None);
    }

    #[test]
    fn urls() {
        for good in [
            "https://origin.example.com",
            "http://10.0.0.1:8080/base",
            "https://[2001:db8::1]:443/",
            "HTTPS://Example.com?x=1",
        ] {
            assert_eq!(check_http_url(good), Ok(()), "{good}");
        }
        for bad in [
            "origin.example.com",
            "ftp://example.com",
            "https://",
            "https://exa mple.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://user:pw@example.com",
            "https://[zz::1]/",
        ] {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
    }
}
