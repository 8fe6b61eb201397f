//! The edge-token expiry gauges: how many edges' agent tokens expire within 30 days, and
//! when the first one does, so that an alert asks for a rotation
//! (`POST /edge-locations/{id}/token`) before an edge is locked out of its heartbeats.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::secrets::SecretBox;
use crate::store::{Store, StoreError};

/// Warn this long before an agent token expires.
pub const EXPIRING_WITHIN_SECONDS: i64 = 30 * 24 * 3600;

/// The `exp` claim of a token, read without checking the signature (the store's own token,
/// opened from its seal); None when it has none.
fn expires_at(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

/// Expiry (seconds since the epoch) of every edge's agent token that can be read.
pub fn expiries(store: &Store, secrets: &SecretBox) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(store
        .reader()?
        .edges()?
        .into_iter()
        .filter_map(|edge| {
            let token = secrets.open(&edge.token_sealed).ok()?;
            Some((edge.location.location_id, expires_at(&token)?))
        })
        .collect())
}

/// (tokens expiring within [`EXPIRING_WITHIN_SECONDS`] of `now_seconds`, or already
/// expired; the earliest expiry).
pub fn summarise(expiries: &[(String, i64)], now_seconds: i64) -> (usize, Option<i64>) {
    let expiring = expiries
        .iter()
        .filter(|(_, expires)| *expires <= now_seconds + EXPIRING_WITHIN_SECONDS)
        .count();
    (expiring, expiries.iter().map(|(_, e)| *e).min())
}

/// Sets `edgeplane_edge_tokens_expiring` and `edgeplane_edge_token_next_expiry_timestamp_seconds`.
pub async fn publish(store: Store, secrets: SecretBox) {
    match tokio::task::spawn_blocking(move || expiries(&store, &secrets)).await {
        Ok(Ok(list)) => {
            let now = crate::model::Timestamp::now().millis() / 1000;
            let (expiring, first) = summarise(&list, now);
            metrics::gauge!("edgeplane_edge_tokens_expiring").set(expiring as f64);
            if let Some(first) = first {
                metrics::gauge!("edgeplane_edge_token_next_expiry_timestamp_seconds")
                    .set(first as f64);
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot read edge tokens for their expiry"),
        Err(error) => tracing::warn!(%error, "edge token expiry task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_due_within_thirty_days_are_counted() {
        let day = 24 * 3600;
        let now = 1_000_000_000;
        let list = vec![
            ("far".to_string(), now + 300 * day),
            ("soon".to_string(), now + 29 * day),
            ("gone".to_string(), now - day),
        ];
        assert_eq!(summarise(&list, now), (2, Some(now - day)));
        assert_eq!(summarise(&[], now), (0, None));
        let token = format!(
            "h.{}.s",
            URL_SAFE_NO_PAD.encode(br#"{"sub":"edge:x","exp":1234}"#)
        );
        assert_eq!(expires_at(&token), Some(1234));
        assert_eq!(expires_at("not a token"), None);
    }
}
