//! The path-pattern index: `(type, literal prefix, configuration id) → pattern`, kept by the
//! configuration commands, so that the conflict layer and the identical-pattern precondition
//! read only the configurations a pattern could overlap instead of the whole catalogue.
//!
//! Two patterns can only match a common path when one's literal prefix (the text before its
//! first wildcard) is a prefix of the other's: every matched path starts with both. So the
//! candidates of a pattern with prefix `p` are the entries whose prefix is `p` cut short
//! somewhere (one point lookup per length) or starts with `p` (one range). Certificates have
//! no pattern; they are indexed under the empty prefix, which makes every certificate a
//! candidate of every other, as the shared-domain check needs.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::StoreError;
use crate::model::ConfigType;
use crate::validate::{literal_prefix, path_pattern};

pub(crate) const CONFIG_PATTERNS: TableDefinition<(&str, &str, &str), &str> =
    TableDefinition::new("configuration_patterns");

/// Where a configuration sits in the index: its type's name, literal prefix and pattern.
pub(crate) struct IndexKey {
    config_type: String,
    prefix: String,
    pattern: String,
}

impl IndexKey {
    pub(crate) fn of(config_type: ConfigType, content: &serde_json::Value) -> Self {
        let pattern = path_pattern(config_type, content).unwrap_or_default();
        Self {
            config_type: config_type.to_string(),
            prefix: literal_prefix(pattern).to_string(),
            pattern: pattern.to_string(),
        }
    }
}

pub(crate) fn insert(
    txn: &WriteTransaction,
    configuration_id: &str,
    key: &IndexKey,
) -> Result<(), StoreError> {
    txn.open_table(CONFIG_PATTERNS)?.insert(
        (
            key.config_type.as_str(),
            key.prefix.as_str(),
            configuration_id,
        ),
        key.pattern.as_str(),
    )?;
    Ok(())
}

pub(crate) fn remove(
    txn: &WriteTransaction,
    configuration_id: &str,
    key: &IndexKey,
) -> Result<(), StoreError> {
    txn.open_table(CONFIG_PATTERNS)?.remove((
        key.config_type.as_str(),
        key.prefix.as_str(),
        configuration_id,
    ))?;
    Ok(())
}

/// The ids of the indexed configurations of `key`'s type with exactly `key`'s pattern: they
/// share its literal prefix, so this reads one run of the index.
pub(crate) fn same_pattern(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
    key: &IndexKey,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range((key.config_type.as_str(), key.prefix.as_str(), "")..)? {
        let (stored, pattern) = entry?;
        let (stored_type, stored_prefix, id) = stored.value();
        if stored_type != key.config_type || stored_prefix != key.prefix {
            break;
        }
        if crate::validate::same_pattern(pattern.value(), &key.pattern) {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// `(configuration id, pattern)` of every indexed configuration of `key`'s type whose pattern
/// could overlap `key`'s, in no particular order.
pub(crate) fn candidates(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
    key: &IndexKey,
) -> Result<Vec<(String, String)>, StoreError> {
    let config_type = key.config_type.as_str();
    let prefix = key.prefix.as_str();
    let mut out = Vec::new();
    // Entries whose prefix is a proper prefix of ours: one exact prefix per length.
    let shorter = prefix
        .char_indices()
        .map(|(at, _)| &prefix[..at])
        .collect::<Vec<_>>();
    for shorter in shorter {
        for entry in table.range((config_type, shorter, "")..)? {
            let (stored, pattern) = entry?;
            let (stored_type, stored_prefix, id) = stored.value();
            if stored_type != config_type || stored_prefix != shorter {
                break;
            }
            out.push((id.to_string(), pattern.value().to_string()));
        }
    }
    // Entries whose prefix starts with ours (ours included).
    for entry in table.range((config_type, prefix, "")..)? {
        let (stored, pattern) = entry?;
        let (stored_type, stored_prefix, id) = stored.value();
        if stored_type != config_type || !stored_prefix.starts_with(prefix) {
            break;
        }
        out.push((id.to_string(), pattern.value().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn key(config_type: ConfigType, pattern: Option<&str>) -> IndexKey {
        let content = match pattern {
            Some(pattern) => json!({"pathPattern": pattern}),
            None => json!({"domains": ["example.com"]}),
        };
        IndexKey::of(config_type, &content)
    }

    /// Indexes `stored` (id, type, pattern) and answers the ids that are candidates of each
    /// query.
    fn check(
        stored: &[(&str, ConfigType, Option<&str>)],
        queries: &[(ConfigType, Option<&str>, &[&str])],
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = redb::Database::create(dir.path().join("index.redb")).expect("database");
        let txn = db.begin_write().expect("write");
        for (id, config_type, pattern) in stored {
            insert(&txn, id, &key(*config_type, *pattern)).expect("insert");
        }
        for (config_type, pattern, expected) in queries {
            let table = txn.open_table(CONFIG_PATTERNS).expect("table");
            let found: BTreeSet<String> = candidates(&table, &key(*config_type, *pattern))
                .expect("candidates")
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(found, expected, "candidates of {config_type} {pattern:?}");
        }
    }

    #[test]
    fn candidates_are_the_patterns_whose_literal_prefixes_extend_one_another() {
        use ConfigType::*;
        let stored = [
            ("all", CacheRule, Some("/**")),
            ("default", CacheRule, None),
            ("static", CacheRule, Some("/static/*")),
            ("static-js", CacheRule, Some("/static/js/*.js")),
            ("static-exact", CacheRule, Some("/static/logo.png")),
            ("api", CacheRule, Some("/api/**")),
            ("api-routing", RoutingRule, Some("/api/**")),
            ("bare", CacheRule, Some("**")),
        ];
        let queries: [(ConfigType, Option<&str>, &[&str]); 7] = [
            // A pattern's candidates: shorter prefixes it extends, longer ones extending it.
            (
                CacheRule,
                Some("/static/*.css"),
                &[
                    "all",
                    "default",
                    "static",
                    "static-js",
                    "static-exact",
                    "bare",
                ],
            ),
            (
                CacheRule,
                Some("/static/js/app.js"),
                &["all", "default", "static", "static-js", "bare"],
            ),
            (
                CacheRule,
                Some("/api/v1/*"),
                &["all", "default", "api", "bare"],
            ),
            (CacheRule, Some("/images/*"), &["all", "default", "bare"]),
            // Everything of its type is a candidate of `**`; other types never are.
            (
                CacheRule,
                Some("**"),
                &[
                    "all",
                    "default",
                    "static",
                    "static-js",
                    "static-exact",
                    "api",
                    "bare",
                ],
            ),
            (RoutingRule, Some("/api/users"), &["api-routing"]),
            (SecurityRule, Some("/**"), &[]),
        ];
        check(&stored, &queries);
    }

    #[test]
    fn every_certificate_is_a_candidate_of_every_other() {
        use ConfigType::*;
        let stored = [
            ("cert-a", SslCertificate, None),
            ("cert-b", SslCertificate, None),
            ("cache", CacheRule, Some("/**")),
        ];
        check(&stored, &[(SslCertificate, None, &["cert-a", "cert-b"])]);
    }

    #[test]
    fn a_removed_configuration_is_no_longer_a_candidate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = redb::Database::create(dir.path().join("index.redb")).expect("database");
        let txn = db.begin_write().expect("write");
        let static_key = key(ConfigType::CacheRule, Some("/static/*"));
        insert(&txn, "static", &static_key).expect("insert");
        insert(
            &txn,
            "other",
            &key(ConfigType::CacheRule, Some("/static/a")),
        )
        .expect("insert");
        remove(&txn, "static", &static_key).expect("remove");
        let table = txn.open_table(CONFIG_PATTERNS).expect("table");
        let found =
            candidates(&table, &key(ConfigType::CacheRule, Some("/static/*"))).expect("candidates");
        assert_eq!(found, vec![("other".to_string(), "/static/a".to_string())]);
    }

    #[test]
    fn same_pattern_finds_only_the_identical_pattern_of_the_type() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = redb::Database::create(dir.path().join("index.redb")).expect("database");
        let txn = db.begin_write().expect("write");
        let stored = [
            ("a", ConfigType::CacheRule, "/static/*"),
            ("b", ConfigType::CacheRule, "/static/*.js"),
            ("c", ConfigType::CacheRule, "/static/*"),
            ("d", ConfigType::RoutingRule, "/static/*"),
            ("e", ConfigType::CacheRule, "/stat*"),
        ];
        for (id, config_type, pattern) in stored {
            insert(&txn, id, &key(config_type, Some(pattern))).expect("insert");
        }
        let table = txn.open_table(CONFIG_PATTERNS).expect("table");
        let found = same_pattern(&table, &key(ConfigType::CacheRule, Some("/static/*")))
            .expect("same pattern");
        assert_eq!(found, vec!["a".to_string(), "c".to_string()]);
    }

    #[test]
    fn the_index_is_built_from_the_records_when_missing_or_of_another_version() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = redb::Database::create(dir.path().join("index.redb")).expect("database");
        let txn = db.begin_write().expect("write");
        let now = crate::model::Timestamp::now();
        let configuration = crate::model::Configuration {
            configuration_id: "config-a".into(),
            name: "a".into(),
            config_type: ConfigType::CacheRule,
            description: String::new(),
            content: json!({"pathPattern": "/static/*"}),
            schema_version: "1.0".into(),
            version: "1.0.0".into(),
            tags: Vec::new(),
            status: crate::model::ConfigStatus::Draft,
            created_by: "admin".into(),
            created_at: now,
            updated_at: now,
            approved_by: None,
            approved_at: None,
            is_deployed: false,
            deployed_locations: Vec::new(),
            metadata: Default::default(),
        };
        txn.open_table(super::super::CONFIGS)
            .expect("configs")
            .insert(
                "config-a",
                super::super::codec::encode(&configuration)
                    .expect("encode")
                    .as_slice(),
            )
            .expect("insert");
        let query = key(ConfigType::CacheRule, Some("/static/*.js"));
        let found = |txn: &WriteTransaction| {
            candidates(&txn.open_table(CONFIG_PATTERNS).expect("table"), &query)
                .expect("candidates")
        };
        super::super::apply::build_indexes(&txn).expect("built");
        let indexed = vec![("config-a".to_string(), "/static/*".to_string())];
        assert_eq!(found(&txn), indexed);
        // A stale entry left by an index of another version is dropped by the rebuild.
        insert(
            &txn,
            "config-gone",
            &key(ConfigType::CacheRule, Some("/static/x")),
        )
        .expect("insert");
        txn.open_table(super::super::META)
            .expect("meta")
            .insert("indexes", [0u8].as_slice())
            .expect("marker");
        super::super::apply::build_indexes(&txn).expect("rebuilt");
        assert_eq!(found(&txn), indexed);
    }
}
