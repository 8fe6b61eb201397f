//! Compact, versioned encoding of stored values: one schema-version byte, then postcard.
//!
//! The version byte lets a later release read records written by an earlier one and migrate
//! them on read; a record from a newer release than this binary is refused, never guessed at.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Version of the record layout this binary writes.
pub const SCHEMA_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![SCHEMA_VERSION];
    let body = postcard::to_stdvec(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))?;
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => postcard::from_bytes(body)
            .map_err(|e| StoreError::Corrupt(format!("cannot decode record: {e}"))),
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "record written with schema version {version}, this binary reads {SCHEMA_VERSION}"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_versions() {
        let bytes = encode(&("edge", 42u64)).unwrap();
        assert_eq!(bytes[0], SCHEMA_VERSION);
        assert_eq!(
            decode::<(String, u64)>(&bytes).unwrap(),
            ("edge".into(), 42)
        );
        let mut future = bytes.clone();
        future[0] = SCHEMA_VERSION + 1;
        assert!(matches!(
            decode::<(String, u64)>(&future),
            Err(StoreError::Corrupt(_))
        ));
        assert!(decode::<(String, u64)>(&[]).is_err());
    }
}
