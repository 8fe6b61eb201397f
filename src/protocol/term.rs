//! Terms on the edge protocol (SPEC §9 fencing): every push and rollback carries the sender's
//! cluster term in `X-Edgeplane-Term`; an edge that has seen a higher term refuses it with
//! 409 `STALE_TERM` and names the term it has seen in the same header, so a deposed primary
//! learns it must step down.

/// The header carrying a term: the sender's on a push or rollback, the edge's highest seen
/// on a `STALE_TERM` refusal.
pub const TERM_HEADER: &str = "x-edgeplane-term";

/// Error code of the refusal of a push from a lower term than the edge has seen.
pub const STALE_TERM: &str = "STALE_TERM";

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
}
