//! The difference between two versions' content (SPEC §5, `GET /configurations/{id}/diff`).
//!
//! Changes are computed as an RFC 6902 JSON Patch (json-patch's diff) and reported one
//! operation each: `add` → `Added`, `remove` → `Removed`, `replace` → `Modified`, with the
//! JSON pointer it applies to. The operations are sequential (an array that loses two
//! items past index 0 loses index 1 twice), so each change's `oldValue` is read from the
//! document as it stands when that operation applies, and [`apply`] replays them in order.
//!
//! Breaking changes are counted by meaning rather than by operation, because a patch may
//! express one removed origin as several replaced array items: every origin (by `name`,
//! else `endpoint`) or domain present before and absent after, a TTL lowered to 0 from a
//! positive value, and a WAF mode that becomes `block`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::ConfigType;

/// Documents nested deeper than this are compared as a whole (one root replacement) rather
/// than recursively, so that no input can exhaust the stack.
const MAX_DIFF_DEPTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ChangeType {
    Added,
    Removed,
    Modified,
}

/// One change: the value at `field` (a JSON pointer into the content) was added, removed or
/// replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub field: String,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub change_type: ChangeType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total_changes: usize,
    pub breaking_changes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffResult {
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// Why a diff could not be applied to a document (it was made from another one).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("change at '{field}' does not apply: {reason}")]
    Invalid { field: String, reason: String },
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &Value, new: &Value, config_type: ConfigType) -> DiffResult {
    let operations = if depth(old) > MAX_DIFF_DEPTH || depth(new) > MAX_DIFF_DEPTH {
        if old == new {
            Vec::new()
        } else {
            vec![json_patch::PatchOperation::Replace(
                json_patch::ReplaceOperation {
                    path: json_patch::jsonptr::PointerBuf::new(),
                    value: new.clone(),
                },
            )]
        }
    } else {
        json_patch::diff(old, new).0
    };

    let mut working = old.clone();
    let mut changes = Vec::with_capacity(operations.len());
    for operation in operations {
        let change = match &operation {
            json_patch::PatchOperation::Add(add) => Change {
                field: add.path.to_string(),
                old_value: None,
                new_value: Some(add.value.clone()),
                change_type: ChangeType::Added,
            },
            json_patch::PatchOperation::Remove(remove) => Change {
                field: remove.path.to_string(),
                old_value: working.pointer(remove.path.as_str()).cloned(),
                new_value: None,
                change_type: ChangeType::Removed,
            },
            json_patch::PatchOperation::Replace(replace) => Change {
                field: replace.path.to_string(),
                old_value: working.pointer(replace.path.as_str()).cloned(),
                new_value: Some(replace.value.clone()),
                change_type: ChangeType::Modified,
            },
            // The diff only produces the three operations above.
            _ => continue,
        };
        if json_patch::patch(&mut working, std::slice::from_ref(&operation)).is_err() {
            // Cannot happen for a patch json-patch derived from these very documents; stop
            // rather than report changes that do not follow from each other.
            break;
        }
        changes.push(change);
    }
    let breaking_changes = count_breaking(old, new, config_type);
    DiffResult {
        summary: Summary {
            total_changes: changes.len(),
            breaking_changes,
        },
        changes,
    }
}

/// `old` with the changes of `result` applied, which is the `new` the diff was made from.
pub fn apply(old: &Value, result: &DiffResult) -> Result<Value, DiffError> {
    let mut document = old.clone();
    for change in &result.changes {
        let invalid = |reason: String| DiffError::Invalid {
            field: change.field.clone(),
            reason,
        };
        let path = json_patch::jsonptr::PointerBuf::parse(change.field.as_str())
            .map_err(|error| invalid(error.to_string()))?;
        let operation = match (change.change_type, &change.new_value) {
            (ChangeType::Added, Some(value)) => {
                json_patch::PatchOperation::Add(json_patch::AddOperation {
                    path,
                    value: value.clone(),
                })
            }
            (ChangeType::Modified, Some(value)) => {
                json_patch::PatchOperation::Replace(json_patch::ReplaceOperation {
                    path,
                    value: value.clone(),
                })
            }
            (ChangeType::Removed, _) => {
                json_patch::PatchOperation::Remove(json_patch::RemoveOperation { path })
            }
            (_, None) => return Err(invalid("no new value".into())),
        };
        json_patch::patch(&mut document, &[operation])
            .map_err(|error| invalid(error.to_string()))?;
    }
    Ok(document)
}

/// Nesting depth, computed without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|item| (item, level + 1))),
            _ => {}
        }
    }
    deepest
}

fn count_breaking(old: &Value, new: &Value, config_type: ConfigType) -> usize {
    match config_type {
        ConfigType::RoutingRule => {
            let identity = |origin: &Value| {
                origin
                    .get("name")
                    .or_else(|| origin.get("endpoint"))
                    .cloned()
            };
            let list = |content: &Value| -> Vec<Value> {
                content
                    .get("origins")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(identity)
                    .collect()
            };
            let after = list(new);
            list(old).iter().filter(|id| !after.contains(id)).count()
        }
        ConfigType::CacheRule => {
            let ttl = |content: &Value| content.get("ttl").and_then(Value::as_f64);
            usize::from(ttl(old).is_some_and(|t| t > 0.0) && ttl(new) == Some(0.0))
        }
        ConfigType::SecurityRule => {
            let mode = |content: &Value| {
                content
                    .pointer("/waf/mode")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            usize::from(
                mode(old).as_deref() != Some("block") && mode(new).as_deref() == Some("block"),
            )
        }
        ConfigType::SslCertificate => {
            let domains = |content: &Value| -> Vec<String> {
                content
                    .get("domains")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            };
            let after = domains(new);
            domains(old).iter().filter(|d| !after.contains(d)).count()
        }
        ConfigType::ResponseModification => 0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn check(
        config_type: ConfigType,
        old: Value,
        new: Value,
        changes: &[(&str, ChangeType)],
        breaking: usize,
    ) {
        let result = diff(&old, &new, config_type);
        let got: Vec<(&str, ChangeType)> = result
            .changes
            .iter()
            .map(|c| (c.field.as_str(), c.change_type))
            .collect();
        assert_eq!(got, changes, "{result:#?}");
        assert_eq!(result.summary.total_changes, changes.len());
        assert_eq!(result.summary.breaking_changes, breaking, "{result:#?}");
        assert_eq!(apply(&old, &result).unwrap(), new);
    }

    #[test]
    fn diffs() {
        use ChangeType::*;
        let origins = json!({"origins": [
            {"name": "a", "endpoint": "https://a"},
            {"name": "b", "endpoint": "https://b"}
        ]});
        check(
            ConfigType::RoutingRule,
            origins.clone(),
            origins.clone(),
            &[],
            0,
        );
        check(
            ConfigType::RoutingRule,
            origins.clone(),
            json!({"origins": [{"name": "a", "endpoint": "https://a"}]}),
            &[("/origins/1", Removed)],
            1,
        );
        check(
            ConfigType::RoutingRule,
            origins.clone(),
            json!({"origins": [{"name": "b", "endpoint": "https://b"}]}),
            &[
                ("/origins/0/endpoint", Modified),
                ("/origins/0/name", Modified),
                ("/origins/1", Removed),
            ],
            1,
        );
        check(
            ConfigType::CacheRule,
            json!({"ttl": 3600, "cacheControl": "public"}),
            json!({"ttl": 0, "cacheControl": "public", "cacheKey": ["$uri"]}),
            &[("/cacheKey", Added), ("/ttl", Modified)],
            1,
        );
        check(
            ConfigType::CacheRule,
            json!({"ttl": 3600}),
            json!({"ttl": 60}),
            &[("/ttl", Modified)],
            0,
        );
        check(
            ConfigType::SecurityRule,
            json!({"waf": {"mode": "detect"}}),
            json!({"waf": {"mode": "block"}}),
            &[("/waf/mode", Modified)],
            1,
        );
        check(
            ConfigType::SecurityRule,
            json!({"waf": {"mode": "block"}}),
            json!({"waf": {"mode": "detect"}}),
            &[("/waf/mode", Modified)],
            0,
        );
        check(
            ConfigType::SslCertificate,
            json!({"domains": ["a.example", "b.example"]}),
            json!({"domains": ["b.example"]}),
            &[("/domains/0", Modified), ("/domains/1", Removed)],
            1,
        );
    }

    #[test]
    fn old_values_follow_the_sequence() {
        let old = json!({"list": [1, 2, 3]});
        let new = json!({"list": [1]});
        let result = diff(&old, &new, ConfigType::CacheRule);
        let removed: Vec<Option<Value>> =
            result.changes.iter().map(|c| c.old_value.clone()).collect();
        assert_eq!(removed, vec![Some(json!(2)), Some(json!(3))]);
        let text = serde_json::to_value(&result).unwrap();
        assert_eq!(text["changes"][0]["changeType"], "Removed");
        assert_eq!(text["changes"][0]["oldValue"], 2);
        assert_eq!(text["summary"]["totalChanges"], 2);
        assert_eq!(text["summary"]["breakingChanges"], 0);
    }

    #[test]
    fn deep_documents_are_replaced_whole() {
        // Parsed JSON is at most 128 deep; past MAX_DIFF_DEPTH the diff does not recurse.
        let mut deep = json!(1);
        for _ in 0..1_000 {
            deep = Value::Array(vec![deep]);
        }
        let result = diff(&json!({}), &deep, ConfigType::CacheRule);
        assert_eq!(result.changes.len(), 1);
        assert_eq!(result.changes[0].field, "");
        assert_eq!(result.changes[0].change_type, ChangeType::Modified);
        assert!(apply(&json!({}), &result).unwrap() == deep);
    }

    #[test]
    fn mismatched_diffs_are_errors() {
        let result = diff(
            &json!({"a": [1, 2]}),
            &json!({"a": [1]}),
            ConfigType::CacheRule,
        );
        assert!(apply(&json!({"b": 1}), &result).is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z~/]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map("[a-z~/]{0,3}", inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-z~/]{0,3}", json_value(), 0..6)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    /// Objects of objects and scalars: every leaf has one pointer in both documents.
    fn nested_object() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0i64..4).prop_map(Value::from),
            "[ab]{0,1}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop::collection::btree_map("[ab~/]{1,2}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect()))
        });
        prop::collection::btree_map("[ab~/]{1,2}", value, 0..5)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    /// The pointers of every leaf (scalar or empty object) of `value`.
    fn leaves(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, item) in map {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    leaves(item, format!("{at}/{escaped}"), out);
                }
            }
            _ => out.push(at),
        }
    }

    proptest! {
        #[test]
        fn apply_inverts_diff(a in json_object(), b in json_object()) {
            let result = diff(&a, &b, ConfigType::RoutingRule);
            prop_assert_eq!(apply(&a, &result).unwrap(), b);
        }

        /// Without arrays (whose changes follow the edit sequence), the changes name exactly
        /// the leaves that differ: each change's pointer holds its old value in `a` and its
        /// new value in `b`, and every leaf that differs lies under one of them.
        #[test]
        fn changes_name_exactly_the_changed_leaves(a in nested_object(), b in nested_object()) {
            let result = diff(&a, &b, ConfigType::CacheRule);
            prop_assert_eq!(result.summary.total_changes, result.changes.len());
            for change in &result.changes {
                let (old, new) = (a.pointer(&change.field), b.pointer(&change.field));
                prop_assert_ne!(old, new, "{} does not change", change.field);
                prop_assert_eq!(old, change.old_value.as_ref(), "{}", change.field);
                prop_assert_eq!(new, change.new_value.as_ref(), "{}", change.field);
                let expected = match (old, new) {
                    (None, Some(_)) => ChangeType::Added,
                    (Some(_), None) => ChangeType::Removed,
                    _ => ChangeType::Modified,
                };
                prop_assert_eq!(change.change_type, expected, "{}", change.field);
            }
            let mut all = Vec::new();
            leaves(&a, String::new(), &mut all);
            leaves(&b, String::new(), &mut all);
            for leaf in all {
                if a.pointer(&leaf) != b.pointer(&leaf) {
                    // An empty object that gained members is changed by changes below it.
                    let under = |inner: &str, outer: &str| {
                        inner == outer || inner.starts_with(&format!("{outer}/"))
                    };
                    let covered = result.changes.iter().any(|change| {
                        under(&leaf, &change.field)
                            || (a.pointer(&leaf).is_some_and(|v| v == &json!({}))
                                || b.pointer(&leaf).is_some_and(|v| v == &json!({})))
                                && under(&change.field, &leaf)
                    });
                    prop_assert!(covered, "{} changed but no change names it", leaf);
                }
            }
        }
    }
}
