//! The certificate-expiry gauge: when each stored `SSLCertificate` configuration's current
//! certificate expires, so an alert can fire weeks before the edges serve an expired one.

use crate::model::ConfigType;
use crate::store::{Store, StoreError};

/// (configuration id, name, expiry in seconds since the epoch) of every certificate that parses.
pub fn expiries(store: &Store) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(store
        .reader()?
        .configurations()?
        .into_iter()
        .filter(|c| c.config_type == ConfigType::SslCertificate)
        .filter_map(|c| {
            crate::validate::certificate_expires_at(&c.content)
                .map(|expires| (c.configuration_id, c.name, expires))
        })
        .collect())
}

/// Sets `edgeplane_certificate_expiry_timestamp_seconds{configuration_id, name}`.
pub async fn publish(store: Store) {
    match tokio::task::spawn_blocking(move || expiries(&store)).await {
        Ok(Ok(list)) => {
            for (configuration_id, name, expires) in list {
                metrics::gauge!(
                    "edgeplane_certificate_expiry_timestamp_seconds",
                    "configuration_id" => configuration_id,
                    "name" => name
                )
                .set(expires as f64);
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot read certificates for their expiry"),
        Err(error) => tracing::warn!(%error, "certificate expiry task failed"),
    }
}
