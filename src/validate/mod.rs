//! Validation of configuration content (SPEC §3): schema, safety rules, conflicts; plus the
//! diff between versions and the handling of secrets inside content.
//!
//! Findings name the offending value by a dotted path from the request body: `content.ttl`,
//! `content.origins.0.weight`, `content.cors.allowOrigins.2`. Array items are addressed by
//! index; object keys that themselves contain dots (header names in `addHeaders`) are
//! written as they are. A finding about the content as a whole uses `content`.
//!
//! Everything here is pure: no I/O, and the clock comes in as a value.

mod cache;
mod conflicts;
mod controls;
pub mod diff;
mod response;
mod routing;
mod rules;
mod security;
mod ssl;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ConfigType, Timestamp};
use crate::secrets::{SecretBox, SecretError};

pub use conflicts::{contradicts, literal_prefix, path_pattern, same_pattern};
pub use controls::is_control;
pub use diff::{Change, ChangeType, DiffError, DiffResult, Summary, apply, diff};
pub(crate) use rules::is_header_name;
pub use security::is_country_code;
pub use ssl::expires_at as certificate_expires_at;

/// At most this many errors (and as many warnings) are listed; a last item says how many more
/// there were, so that a hostile body cannot make the report itself huge.
const MAX_FINDINGS: usize = 200;

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Dotted path from the request body, e.g. `content.origins.0.weight`.
    pub field: String,
    pub message: String,
}

/// The outcome of validation: errors make a configuration invalid, warnings do not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    #[serde(skip)]
    dropped_errors: usize,
    #[serde(skip)]
    dropped_warnings: usize,
}

impl ValidationReport {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        push(
            &mut self.errors,
            &mut self.dropped_errors,
            field.into(),
            message.into(),
        );
    }

    pub(crate) fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        push(
            &mut self.warnings,
            &mut self.dropped_warnings,
            field.into(),
            message.into(),
        );
    }

    fn merge(&mut self, other: ValidationReport) {
        for finding in other.errors {
            self.error(finding.field, finding.message);
        }
        for finding in other.warnings {
            self.warning(finding.field, finding.message);
        }
        self.dropped_errors += other.dropped_errors;
        self.dropped_warnings += other.dropped_warnings;
    }

    /// Adds the "N more" notes for findings beyond the cap.
    fn finish(mut self) -> Self {
        if self.dropped_errors > 0 {
            self.errors.push(Finding {
                field: "content".into(),
                message: format!("{} more errors not shown", self.dropped_errors),
            });
        }
        if self.dropped_warnings > 0 {
            self.warnings.push(Finding {
                field: "content".into(),
                message: format!("{} more warnings not shown", self.dropped_warnings),
            });
        }
        self.dropped_errors = 0;
        self.dropped_warnings = 0;
        self
    }
}

fn push(list: &mut Vec<Finding>, dropped: &mut usize, field: String, message: String) {
    if list
        .iter()
        .any(|f| f.field == field && f.message == message)
    {
        return;
    }
    if list.len() >= MAX_FINDINGS {
        *dropped += 1;
        return;
    }
    list.push(Finding { field, message });
}

/// Another stored configuration, as the conflict layer needs to see it.
#[derive(Clone, Copy, Debug)]
pub struct OtherConfiguration<'a> {
    pub configuration_id: &'a str,
    pub name: &'a str,
    pub config_type: ConfigType,
    pub content: &'a Value,
}

/// The embedded JSON Schema (draft 2020-12) of a type, as served at
/// `GET /api/v1/schemas/{type}`.
pub fn schema(config_type: ConfigType) -> &'static str {
    match config_type {
        ConfigType::CacheRule => include_str!("schemas/cache_rule.json"),
        ConfigType::RoutingRule => include_str!("schemas/routing_rule.json"),
        ConfigType::SecurityRule => include_str!("schemas/security_rule.json"),
        ConfigType::SslCertificate => include_str!("schemas/ssl_certificate.json"),
        ConfigType::ResponseModification => include_str!("schemas/response_modification.json"),
    }
}

/// The embedded schema of a type as a JSON value.
pub fn schema_value(config_type: ConfigType) -> Value {
    // The schemas are part of the binary and parsed by a test; `Null` is unreachable.
    serde_json::from_str(schema(config_type)).unwrap_or(Value::Null)
}

/// Validates configuration content. Built once (it compiles the schemas) and shared.
pub struct Validator {
    /// Indexed like `ConfigType::ALL`.
    schemas: Vec<jsonschema::Validator>,
    /// The top-level properties each schema names, indexed like `schemas`.
    known_fields: Vec<Vec<String>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator { .. }")
    }
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    pub fn new() -> Self {
        let mut schemas = Vec::new();
        let mut known_fields = Vec::new();
        for config_type in ConfigType::ALL {
            let value = schema_value(config_type);
            // Embedded constants, compiled by every test run: a failure here is a bug in the
            // build, not something input can cause.
            schemas.push(jsonschema::draft202012::new(&value).expect("embedded schema compiles"));
            known_fields.push(
                value["properties"]
                    .as_object()
                    .map(|properties| properties.keys().cloned().collect())
                    .unwrap_or_default(),
            );
        }
        Self {
            schemas,
            known_fields,
        }
    }

    fn index(config_type: ConfigType) -> usize {
        ConfigType::ALL
            .iter()
            .position(|t| *t == config_type)
            .unwrap_or(0)
    }

    /// Top-level fields the type does not define are kept but do nothing at the edges,
    /// which is most often a typo (`tll`): a warning, not an error, so that content written
    /// for a newer schema still validates.
    fn check_unknown_fields(
        &self,
        config_type: ConfigType,
        content: &Value,
        report: &mut ValidationReport,
    ) {
        let known = &self.known_fields[Self::index(config_type)];
        for key in content.as_object().into_iter().flat_map(|map| map.keys()) {
            if !known.iter().any(|k| k == key) {
                report.warning(
                    format!("content.{key}"),
                    format!("Unknown field '{}' is ignored", rules::shorten(key)),
                );
            }
        }
    }

    /// All three layers: schema, safety rules, conflicts with `others`.
    ///
    /// `others` should not contain the configuration being validated (when it is stored
    /// already); [`Validator::conflicts`] filters by id for callers that cannot ensure that.
    /// A sealed private key (`enc:v1:…`) is not checked against its certificate: validate
    /// before sealing, or open the secrets first.
    pub fn validate(
        &self,
        config_type: ConfigType,
        content: &Value,
        others: &[OtherConfiguration<'_>],
        now: Timestamp,
    ) -> ValidationReport {
        let mut report = ValidationReport::default();
        if !content.is_object() {
            report.error("content", "Content must be a JSON object");
            return report;
        }
        // A control character is the whole story of the value that holds it: other layers'
        // findings about that value would restate it in their own words, so they are dropped.
        let mut control_report = ValidationReport::default();
        let flagged = controls::check(config_type, content, &mut control_report);
        self.check_schema(config_type, content, &mut report);
        self.check_unknown_fields(config_type, content, &mut report);
        // The safety rules read values defensively (a field of the wrong type is skipped,
        // the schema layer has reported it), so they run even when the schema failed and
        // still give precise findings about everything else.
        match config_type {
            ConfigType::CacheRule => cache::check(content, &mut report),
            ConfigType::RoutingRule => routing::check(content, &mut report),
            ConfigType::SecurityRule => security::check(content, &mut report),
            ConfigType::SslCertificate => ssl::check(content, now, &mut report),
            ConfigType::ResponseModification => response::check(content, &mut report),
        }
        report.merge(conflicts::check(None, config_type, content, others));
        report
            .errors
            .retain(|finding| !flagged.contains(&finding.field));
        control_report.merge(report);
        control_report.finish()
    }

    /// The conflict layer alone, skipping `configuration_id` itself among `others`.
    pub fn conflicts(
        &self,
        configuration_id: Option<&str>,
        config_type: ConfigType,
        content: &Value,
        others: &[OtherConfiguration<'_>],
    ) -> ValidationReport {
        conflicts::check(configuration_id, config_type, content, others).finish()
    }

    fn check_schema(
        &self,
        config_type: ConfigType,
        content: &Value,
        report: &mut ValidationReport,
    ) {
        let compiled = &self.schemas[Self::index(config_type)];
        for error in compiled.iter_errors(content) {
            let mut field = String::from("content");
            for segment in error.instance_path().iter() {
                field.push('.');
                field.push_str(&segment.to_string());
            }
            match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    field.push('.');
                    field.push_str(name);
                    report.error(field, format!("'{name}' is required"));
                }
                _ => report.error(field, rules::shorten(&error.to_string())),
            }
        }
    }
}

/// Replaces secrets in content with `[REDACTED]`, for every API answer.
pub fn redact_secrets(config_type: ConfigType, content: &mut Value) {
    if config_type != ConfigType::SslCertificate {
        return;
    }
    if let Some(key) = content.get_mut("privateKey") {
        *key = Value::String("[REDACTED]".into());
    }
}

/// Encrypts secrets in content before it is stored; values already sealed are left alone.
pub fn seal_secrets(config_type: ConfigType, content: &mut Value, sealer: &SecretBox) {
    if config_type != ConfigType::SslCertificate {
        return;
    }
    if let Some(Value::String(key)) = content.get_mut("privateKey") {
        if !SecretBox::is_sealed(key) {
            *key = sealer.seal(key);
        }
    }
}

/// Decrypts secrets sealed by [`seal_secrets`], for pushing content to edges.
pub fn open_secrets(
    config_type: ConfigType,
    content: &mut Value,
    sealer: &SecretBox,
) -> Result<(), SecretError> {
    if config_type != ConfigType::SslCertificate {
        return Ok(());
    }
    if let Some(Value::String(key)) = content.get_mut("privateKey") {
        if SecretBox::is_sealed(key) {
            *key = sealer.open(key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Runs all layers with no other configurations at a fixed time.
    pub(crate) fn report_for(config_type: ConfigType, content: &Value) -> ValidationReport {
        static VALIDATOR: std::sync::OnceLock<Validator> = std::sync::OnceLock::new();
        VALIDATOR
            .get_or_init(Validator::new)
            .validate(config_type, content, &[], now())
    }

    /// 2026-01-01T00:00:00Z, the clock of every test.
    pub(crate) fn now() -> Timestamp {
        Timestamp::from_millis(1_767_225_600_000)
    }

    /// What one table case expects.
    #[derive(Debug)]
    pub(crate) enum Expect {
        /// No errors and no warnings.
        Valid,
        /// Exactly one error, at this field, with a message containing this fragment.
        Error(&'static str, &'static str),
        /// No errors, and a warning at this field containing this fragment.
        Warning(&'static str, &'static str),
    }

    /// The one assertion helper of the validation tables.
    pub(crate) fn check(config_type: ConfigType, content: &Value, expected: Expect) {
        let report = report_for(config_type, content);
        let found = |list: &[Finding], field: &str, fragment: &str| {
            list.iter()
                .any(|f| f.field == field && f.message.contains(fragment))
        };
        match expected {
            Expect::Valid => assert!(
                report.errors.is_empty() && report.warnings.is_empty(),
                "expected valid: {content}\n{report:#?}"
            ),
            Expect::Error(field, fragment) => assert!(
                report.errors.len() == 1 && found(&report.errors, field, fragment),
                "expected one error at {field} ({fragment}): {content}\n{report:#?}"
            ),
            Expect::Warning(field, fragment) => assert!(
                report.errors.is_empty() && found(&report.warnings, field, fragment),
                "expected a warning at {field} ({fragment}): {content}\n{report:#?}"
            ),
        }
    }

    /// `base` with the value at `pointer` set (the parent must exist); `Value::Null` as the
    /// value removes the key instead, which is how tables drop a field.
    pub(crate) fn with(base: &Value, pointer: &str, value: Value) -> Value {
        let mut out = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = out.pointer_mut(parent).unwrap();
        match target {
            Value::Object(map) => {
                if value.is_null() {
                    map.remove(key);
                } else {
                    map.insert(key.to_owned(), value);
                }
            }
            Value::Array(items) => {
                let index: usize = key.parse().unwrap();
                if value.is_null() {
                    items.remove(index);
                } else {
                    items[index] = value;
                }
            }
            _ => panic!("no container at {parent}"),
        }
        out
    }

    #[test]
    fn validator_is_shareable_and_schemas_parse() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Validator>();
        for config_type in ConfigType::ALL {
            let value = schema_value(config_type);
            assert_eq!(value["title"], config_type.as_str());
            assert!(jsonschema::draft202012::meta::is_valid(&value));
        }
    }

    #[test]
    fn non_object_content_is_one_error() {
        let report = report_for(ConfigType::CacheRule, &json!([1, 2]));
        assert_eq!(
            report.errors,
            vec![Finding {
                field: "content".into(),
                message: "Content must be a JSON object".into()
            }]
        );
    }

    #[test]
    fn schema_findings_name_the_field() {
        let report = report_for(
            ConfigType::CacheRule,
            &json!({"pathPattern": "/x", "ttl": "soon"}),
        );
        let fields: Vec<&str> = report.errors.iter().map(|f| f.field.as_str()).collect();
        assert!(fields.contains(&"content.ttl"), "{report:?}");
        assert!(fields.contains(&"content.cacheControl"), "{report:?}");
        let required = report
            .errors
            .iter()
            .find(|f| f.field == "content.cacheControl")
            .unwrap();
        assert_eq!(required.message, "'cacheControl' is required");
    }

    #[test]
    fn unknown_fields_warn() {
        check(
            ConfigType::CacheRule,
            &json!({"pathPattern": "/x", "ttl": 1, "cacheControl": "public", "tll": 5}),
            Expect::Warning("content.tll", "Unknown field 'tll'"),
        );
    }

    #[test]
    fn findings_are_capped() {
        let headers: Vec<String> = (0..500).map(|i| format!("bad header {i}")).collect();
        let report = report_for(
            ConfigType::ResponseModification,
            &json!({"removeHeaders": headers}),
        );
        assert_eq!(report.errors.len(), MAX_FINDINGS + 1);
        assert_eq!(
            report.errors.last().unwrap().message,
            "300 more errors not shown"
        );
    }

    /// Any JSON value, with the strings validators look at most closely: paths, URLs, regexes,
    /// durations, header text and control characters.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = prop_oneof![
            "[ -~]{0,12}",
            "/[a-z*?/]{0,8}",
            "https?://[a-z0-9.:\\[\\]]{0,16}/?[a-z]{0,4}",
            "\\^?/[a-z]{0,3}/?\\(?\\.?\\*?\\)?\\$?",
            "[0-9]{1,3}(ms|s|m|h)?",
            "\\PC{0,6}",
            "[a-z]{0,3}[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}][a-z]{0,3}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-zA-Z-]{0,8}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Typical content of each type (the certificate left to arbitrary values).
    fn typical(config_type: ConfigType) -> Value {
        match config_type {
            ConfigType::CacheRule => json!({
                "pathPattern": "/static/*", "ttl": 3600, "cacheControl": "public, max-age=3600",
                "cacheKey": ["$uri", "$args"], "varyHeaders": ["Accept-Encoding"],
                "bypassConditions": {"cookies": ["session"], "queryParams": ["nocache"]}
            }),
            ConfigType::RoutingRule => json!({
                "pathPattern": "/api/*",
                "origins": [
                    {"name": "a", "endpoint": "https://a.example.com", "weight": 60, "priority": 1, "maxRequestsPerSec": 100},
                    {"name": "b", "endpoint": "http://10.0.0.2:8080", "weight": 40, "priority": 2}
                ],
                "failoverPolicy": {"retryAttempts": 2, "retryDelay": "1s", "failoverThreshold": 3, "circuitBreakerTimeout": "30s"},
                "pathRewrite": {"from": "^/api/(.*)$", "to": "/v1/$1"},
                "hostHeader": "a.example.com", "expectedRequestsPerSec": 50
            }),
            ConfigType::SecurityRule => json!({
                "pathPattern": "/*",
                "waf": {"enabled": true, "rules": ["OWASP-CRS-4.0"], "mode": "block"},
                "rateLimit": {"enabled": true, "limit": 100, "window": "1m", "key": "ip"},
                "geoBlocking": {"enabled": true, "mode": "blocklist", "countries": ["KP"]},
                "ipFiltering": {"allowlist": ["10.0.0.0/8"], "denylist": ["192.0.2.1/32"]}
            }),
            ConfigType::SslCertificate => json!({
                "domains": ["a.example.com"], "certificate": "-----BEGIN CERTIFICATE-----\n",
                "privateKey": "-----BEGIN PRIVATE KEY-----\n", "renewalDays": 30
            }),
            ConfigType::ResponseModification => json!({
                "pathPattern": "/*", "addHeaders": {"X-Frame-Options": "DENY"},
                "removeHeaders": ["Server"],
                "compression": {"enabled": true, "algorithms": ["gzip", "br"], "minSize": 1024},
                "cors": {"enabled": true, "allowOrigins": ["https://a.example.com"], "allowMethods": ["GET"], "allowHeaders": ["X-A"], "maxAge": 600}
            }),
        }
    }

    /// Every JSON pointer of `value`, the root included.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    pointers(item, format!("{at}/{escaped}"), out);
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    pointers(item, format!("{at}/{index}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(300))]

        /// Typical content with one value anywhere in it replaced by anything: validation
        /// answers (it never panics), and the same content read back from its JSON text gets
        /// the same verdict.
        #[test]
        fn validation_answers_anything_and_its_verdict_is_stable(
            type_index in 0..ConfigType::ALL.len(),
            target in proptest::prelude::any::<proptest::sample::Index>(),
            replacement in json_value(),
        ) {
            let config_type = ConfigType::ALL[type_index];
            let mut content = typical(config_type);
            let mut all = Vec::new();
            pointers(&content, String::new(), &mut all);
            let pointer = target.get(&all).clone();
            match content.pointer_mut(&pointer) {
                Some(slot) if !pointer.is_empty() => *slot = replacement,
                _ => content = replacement,
            }
            let report = report_for(config_type, &content);
            let reread: Value = serde_json::from_str(&content.to_string()).unwrap();
            proptest::prop_assert_eq!(report_for(config_type, &reread), report);
        }
    }

    #[test]
    fn secrets_are_sealed_opened_and_redacted() {
        let sealer = SecretBox::new([3; 32]);
        let mut content = json!({"privateKey": "PEM", "domains": ["a.example"]});
        seal_secrets(ConfigType::SslCertificate, &mut content, &sealer);
        let sealed = content["privateKey"].as_str().unwrap().to_owned();
        assert!(SecretBox::is_sealed(&sealed));
        // Sealing twice must not wrap the sealed text again.
        seal_secrets(ConfigType::SslCertificate, &mut content, &sealer);
        assert_eq!(content["privateKey"], sealed.as_str());
        open_secrets(ConfigType::SslCertificate, &mut content, &sealer).unwrap();
        assert_eq!(content["privateKey"], "PEM");
        redact_secrets(ConfigType::SslCertificate, &mut content);
        assert_eq!(content["privateKey"], "[REDACTED]");

        let mut other = json!({"privateKey": "not a secret here"});
        redact_secrets(ConfigType::CacheRule, &mut other);
        assert_eq!(other["privateKey"], "not a secret here");
    }
}
