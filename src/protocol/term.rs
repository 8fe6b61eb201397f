//! Terms on the edge protocol (SPEC §9 fencing): every push and rollback carries the sender's
//! cluster term in `X-Edgeplane-Term`; an edge that has seen a higher term refuses it with
//! 409 `STALE_TERM` and names the term it has seen in the same header, so a deposed primary
//! learns it must step down.
//!
//! Beside its term a sender names itself: pushes, rollbacks and the new primary's
//! announcement (`POST /edge/v1/leader`) carry `X-Edgeplane-Leader: URL`, the URL edges
//! heartbeat from then on, and a standby's `NOT_LEADER` answer names the primary the same way.

/// The header carrying a term: the sender's on a push or rollback, the edge's highest seen
/// on a `STALE_TERM` refusal.
pub const TERM_HEADER: &str = "x-edgeplane-term";

/// Error code of the refusal of a push from a lower term than the edge has seen.
pub const STALE_TERM: &str = "STALE_TERM";

/// The header naming the primary's base URL: the sender's on a push, rollback or
/// announcement, the primary's on a `NOT_LEADER` answer.
pub const LEADER_HEADER: &str = "x-edgeplane-leader";

/// Path of the new primary's announcement on the edge's router.
pub const LEADER_PATH: &str = "/edge/v1/leader";

/// Reads a leader URL: an absolute `http` or `https` URL with a host and nothing after the
/// path (no credentials, query or fragment), returned in its normal form without its
/// trailing `/`, so two spellings of one node compare equal. Anything
/// else is refused, so an edge never sends its token to a place that is not a control plane
/// URL.
pub fn parse_leader_url(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let url = reqwest::Url::parse(value).ok()?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    usable.then(|| url.as_str().trim_end_matches('/').to_owned())
}

/// A list of control-plane base URLs, one per node, as the agent's `control_plane` and
/// `edgeplane simulate --control-plane` take them: blank entries (a trailing comma) are
/// skipped, each other must be an http(s) base URL (see [`parse_leader_url`]), duplicates
/// are dropped, order is kept. The reason names the entry refused.
pub fn control_plane_urls<'a>(
    entries: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, String> {
    let mut urls: Vec<String> = Vec::new();
    for entry in entries {
        if entry.trim().is_empty() {
            continue;
        }
        let Some(url) = parse_leader_url(entry) else {
            return Err(format!("`{}` is not an http(s) URL", entry.trim()));
        };
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    if urls.is_empty() {
        return Err("needs at least one http(s) URL".into());
    }
    Ok(urls)
}

/// Reads a term header value: a decimal `u64`.
pub fn parse_term(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_plain_decimal_numbers() {
        assert_eq!(parse_term("7"), Some(7));
        assert_eq!(parse_term(" 12 "), Some(12));
        for bad in ["", "-1", "+3", "1e3", "0x10", "99999999999999999999", "two"] {
            assert_eq!(parse_term(bad), None, "{bad}");
        }
    }

    #[test]
    fn url_lists_keep_order_and_name_a_bad_entry() {
        assert_eq!(
            control_plane_urls(["http://a:1/", " https://b ", "", "http://a:1"]),
            Ok(vec!["http://a:1".to_owned(), "https://b".to_owned()])
        );
        assert_eq!(
            control_plane_urls(["http://a:1", "b:2"]),
            Err("`b:2` is not an http(s) URL".to_owned())
        );
        assert!(control_plane_urls(["", " "]).is_err());
    }

    #[test]
    fn leader_urls_are_http_or_https_base_urls() {
        assert_eq!(
            parse_leader_url("http://10.0.0.2:8080/"),
            Some("http://10.0.0.2:8080".into())
        );
        assert_eq!(
            parse_leader_url(" HTTPS://CP-B.example.net/control "),
            Some("https://cp-b.example.net/control".into())
        );
        for bad in [
            "",
            "cp-b:8080",
            "/api/v1",
            "ftp://cp-b/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://user:pw@cp-b/",
            "http://cp-b/?next=elsewhere",
            "http://cp-b/#x",
            "http://cp b/",
        ] {
            assert_eq!(parse_leader_url(bad), None, "{bad}");
        }
    }
}
