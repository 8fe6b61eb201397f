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
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::model::{
        Capacity, ConfigStatus, ConfigurationVersion, Deployment, EdgeHealth, EdgeLocation,
        EdgeType, Timestamp,
    };
    use crate::store::{Command, EdgeRecord};

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

    /// Content as the API may store it: any JSON, numbers of every kind included.
    fn content() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map("\\PC{0,4}", inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("\\PC{0,6}", value, 0..6)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    fn text_map() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map("\\PC{0,6}", "\\PC{0,6}", 0..4)
    }

    fn version() -> impl Strategy<Value = ConfigurationVersion> {
        (
            (
                "\\PC{0,12}",
                "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
                content(),
            ),
            ("\\PC{0,40}", any::<i64>(), 0usize..5),
            (
                proptest::option::of("\\PC{0,8}"),
                proptest::option::of(any::<i64>()),
                any::<bool>(),
                text_map(),
                prop::collection::vec("\\PC{0,8}", 0..3),
            ),
        )
            .prop_map(
                |(
                    (id, version, content),
                    (description, created, status),
                    (approved_by, approved_at, is_deployed, metadata, tags),
                )| ConfigurationVersion {
                    version_id: format!("ver-{id}"),
                    configuration_id: format!("config-{id}"),
                    version,
                    content,
                    schema_version: "1.0".into(),
                    change_description: description,
                    created_by: "admin".into(),
                    created_at: Timestamp::from_millis(created),
                    status: [
                        ConfigStatus::Draft,
                        ConfigStatus::PendingApproval,
                        ConfigStatus::Approved,
                        ConfigStatus::Deprecated,
                        ConfigStatus::Archived,
                    ][status],
                    approval_notes: approved_by.clone(),
                    approved_by,
                    approved_at: approved_at.map(Timestamp::from_millis),
                    is_deployed,
                    metadata,
                    tags,
                },
            )
    }

    fn percentage() -> impl Strategy<Value = f64> {
        any::<f64>().prop_filter("finite", |f| f.is_finite())
    }

    fn edge() -> impl Strategy<Value = EdgeRecord> {
        (
            ("[a-z0-9-]{1,16}", "\\PC{0,12}", "\\PC{0,12}", 0usize..3),
            (any::<bool>(), percentage(), percentage(), any::<u64>()),
            (
                proptest::option::of(any::<i64>()),
                any::<bool>(),
                text_map(),
                text_map(),
            ),
        )
            .prop_map(
                |(
                    (location_id, name, region, edge_type),
                    (is_healthy, cpu_usage, memory_usage, active_connections),
                    (last_heartbeat, is_quarantined, active_configurations, metadata),
                )| EdgeRecord {
                    location: EdgeLocation {
                        location_id,
                        name,
                        region,
                        country_code: "DE".into(),
                        city: String::new(),
                        edge_type: [EdgeType::EdgePop, EdgeType::Shield, EdgeType::Origin]
                            [edge_type],
                        endpoint: "http://127.0.0.1:9/".into(),
                        capacity: Capacity::default(),
                        health: EdgeHealth {
                            is_healthy,
                            cpu_usage,
                            memory_usage,
                            disk_usage: cpu_usage,
                            bandwidth_utilization: memory_usage,
                            active_connections,
                        },
                        metrics: None,
                        last_heartbeat: last_heartbeat.map(Timestamp::from_millis),
                        started_at: None,
                        is_active: is_healthy,
                        active_configurations,
                        metadata,
                        is_quarantined,
                    },
                    token_id: "jti".into(),
                    token_sealed: "enc:v1:x".into(),
                },
            )
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(300))]

        /// What is written is what is read back, content (stored as JSON text) included.
        #[test]
        fn stored_values_read_back_as_written(version in version(), edge in edge()) {
            let bytes = encode(&version).unwrap();
            prop_assert_eq!(decode::<ConfigurationVersion>(&bytes).unwrap(), version);
            let bytes = encode(&edge).unwrap();
            prop_assert_eq!(decode::<EdgeRecord>(&bytes).unwrap(), edge);
        }

        /// A damaged or foreign record is an error, never a panic, whatever its bytes.
        #[test]
        fn any_bytes_decode_to_a_value_or_an_error(
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = vec![SCHEMA_VERSION];
            bytes.extend_from_slice(&body);
            for record in [&body[..], &bytes[..]] {
                let _ = decode::<ConfigurationVersion>(record);
                let _ = decode::<EdgeRecord>(record);
                let _ = decode::<Deployment>(record);
                let _ = decode::<Command>(record);
            }
        }
    }
}
