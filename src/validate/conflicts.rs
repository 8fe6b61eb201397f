//! The conflict layer (SPEC §3, layer 3): a configuration against the others already stored.
//!
//! * Rules with a path pattern (all types but `SSLCertificate`; a rule without `pathPattern`
//!   applies to every path, `/*`) conflict with rules of the same type whose patterns
//!   overlap (some path is matched by both, see `protocol::path_pattern`): a warning naming
//!   the other configuration. The same pattern with different content is an error, since the
//!   edge could apply either; the same pattern with the same content is a warning (a
//!   duplicate).
//! * Certificates conflict when they list the same domain (case-insensitive): a warning,
//!   since the edge must pick one of them.

use serde_json::Value;

use super::rules::{effective_pattern, shorten, strings};
use super::{OtherConfiguration, ValidationReport};
use crate::model::ConfigType;
use crate::protocol::path_pattern;

/// The path pattern a configuration applies to; `None` for certificates, which have none.
pub fn path_pattern(config_type: ConfigType, content: &Value) -> Option<&str> {
    (config_type != ConfigType::SslCertificate).then(|| effective_pattern(content))
}

/// The text of a pattern before its first wildcard. Every path the pattern matches starts with
/// it, so two patterns whose literal prefixes do not extend one another cannot overlap. It must
/// stop at every character `glob` treats as a wildcard.
pub fn literal_prefix(pattern: &str) -> &str {
    pattern
        .find(['*', '?'])
        .map_or(pattern, |at| &pattern[..at])
}

/// Whether two patterns are the same rule: equal once runs of `*` are collapsed, since `**`
/// means what `*` means.
pub fn same_pattern(a: &str, b: &str) -> bool {
    let collapse = |p: &str| {
        let mut out = String::with_capacity(p.len());
        for c in p.chars() {
            if !(c == '*' && out.ends_with('*')) {
                out.push(c);
            }
        }
        out
    };
    a == b || collapse(a) == collapse(b)
}

/// Whether two configurations of one type claim the identical path pattern with different
/// content: the error of the conflict layer, since an edge could apply either.
pub fn contradicts(config_type: ConfigType, content: &Value, other_content: &Value) -> bool {
    match (
        path_pattern(config_type, content),
        path_pattern(config_type, other_content),
    ) {
        (Some(pattern), Some(other_pattern)) => {
            content.is_object()
                && other_content.is_object()
                && same_pattern(pattern, other_pattern)
                && content != other_content
        }
        _ => false,
    }
}

pub(crate) fn check(
    configuration_id: Option<&str>,
    config_type: ConfigType,
    content: &Value,
    others: &[OtherConfiguration<'_>],
) -> ValidationReport {
    let mut report = ValidationReport::default();
    if !content.is_object() {
        return report;
    }
    let candidates = others
        .iter()
        .filter(|other| other.config_type == config_type)
        .filter(|other| Some(other.configuration_id) != configuration_id);
    if config_type == ConfigType::SslCertificate {
        for other in candidates {
            check_domains(content, other, &mut report);
        }
        return report;
    }
    let pattern = effective_pattern(content);
    for other in candidates {
        if !other.content.is_object() {
            continue;
        }
        let other_pattern = effective_pattern(other.content);
        let label = label(other);
        if same_pattern(other_pattern, pattern) {
            if !contradicts(config_type, content, other.content) {
                report.warning(
                    "content.pathPattern",
                    format!("Duplicate of existing configuration {label}"),
                );
            } else {
                report.error(
                    "content.pathPattern",
                    format!(
                        "Path pattern '{}' is identical to existing configuration {label}, with different content",
                        shorten(pattern)
                    ),
                );
            }
        } else if path_pattern::overlaps(pattern, other_pattern) {
            report.warning(
                "content.pathPattern",
                format!(
                    "Path pattern overlaps with existing configuration {label} ('{}')",
                    shorten(other_pattern)
                ),
            );
        }
    }
    report
}

fn label(other: &OtherConfiguration<'_>) -> String {
    format!("'{}' ({})", other.configuration_id, shorten(other.name))
}

fn check_domains(content: &Value, other: &OtherConfiguration<'_>, report: &mut ValidationReport) {
    for (index, domain) in strings(content.get("domains")) {
        let taken = strings(other.content.get("domains"))
            .any(|(_, existing)| existing.eq_ignore_ascii_case(domain));
        if taken {
            report.warning(
                format!("content.domains.{index}"),
                format!(
                    "Domain '{}' is also served by certificate configuration {}",
                    shorten(domain),
                    label(other)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::model::ConfigType;
    use crate::validate::{OtherConfiguration, ValidationReport, Validator};

    fn cache(pattern: &str, ttl: u32) -> Value {
        json!({"pathPattern": pattern, "ttl": ttl, "cacheControl": "public"})
    }

    fn run(
        id: Option<&str>,
        config_type: ConfigType,
        content: &Value,
        stored: &[(&str, ConfigType, Value)],
    ) -> ValidationReport {
        let others: Vec<OtherConfiguration<'_>> = stored
            .iter()
            .map(
                |(configuration_id, config_type, content)| OtherConfiguration {
                    configuration_id,
                    name: "stored",
                    config_type: *config_type,
                    content,
                },
            )
            .collect();
        Validator::new().conflicts(id, config_type, content, &others)
    }

    #[test]
    fn path_conflicts() {
        let stored = [
            ("config-a", ConfigType::CacheRule, cache("/static/*", 3600)),
            ("config-b", ConfigType::CacheRule, cache("/api/**", 60)),
            (
                "config-c",
                ConfigType::RoutingRule,
                json!({"pathPattern": "/images/*"}),
            ),
            (
                "config-d",
                ConfigType::SecurityRule,
                json!({"waf": {"enabled": true}}),
            ),
        ];
        // (content, errors, warnings) — each message fragment names the other configuration.
        let cases: [(ConfigType, Value, &[&str], &[&str]); 8] = [
            (ConfigType::CacheRule, cache("/images/*", 60), &[], &[]),
            (
                ConfigType::CacheRule,
                cache("/static/js/*", 60),
                &[],
                &["Path pattern overlaps with existing configuration 'config-a'"],
            ),
            (
                ConfigType::CacheRule,
                cache("/static/*.js", 60),
                &[],
                &["Path pattern overlaps with existing configuration 'config-a'"],
            ),
            (
                ConfigType::CacheRule,
                cache("/static/*", 60),
                &["identical to existing configuration 'config-a'"],
                &[],
            ),
            (
                ConfigType::CacheRule,
                cache("/static/*", 3600),
                &[],
                &["Duplicate of existing configuration 'config-a'"],
            ),
            (
                ConfigType::CacheRule,
                cache("/**", 60),
                &[],
                &["'config-a'", "'config-b'"],
            ),
            (
                ConfigType::SecurityRule,
                json!({"pathPattern": "/admin/*"}),
                &[],
                &["overlaps with existing configuration 'config-d'"],
            ),
            (
                ConfigType::RoutingRule,
                json!({"pathPattern": "/static/*"}),
                &[],
                &[],
            ),
        ];
        for (config_type, content, errors, warnings) in cases {
            let report = run(None, config_type, &content, &stored);
            assert_eq!(report.errors.len(), errors.len(), "{content}: {report:#?}");
            assert_eq!(
                report.warnings.len(),
                warnings.len(),
                "{content}: {report:#?}"
            );
            for (finding, fragment) in report.errors.iter().zip(errors) {
                assert_eq!(finding.field, "content.pathPattern");
                assert!(finding.message.contains(fragment), "{finding:?}");
            }
            for (finding, fragment) in report.warnings.iter().zip(warnings) {
                assert_eq!(finding.field, "content.pathPattern");
                assert!(finding.message.contains(fragment), "{finding:?}");
            }
        }
    }

    #[test]
    fn a_doubled_star_is_the_same_pattern() {
        assert!(super::same_pattern("/api/**", "/api/*"));
        assert!(super::same_pattern("/a/*/b", "/a/***/b"));
        assert!(!super::same_pattern("/api/*", "/api/?"));
        assert!(!super::same_pattern("/api/*", "/api/"));
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_wildcard() {
        for (pattern, prefix) in [
            ("/static/*.js", "/static/"),
            ("/api/**", "/api/"),
            ("/exact/path", "/exact/path"),
            ("**", ""),
            ("/a*/b/*", "/a"),
            ("/img/?.png", "/img/"),
            ("/v?/*", "/v"),
        ] {
            assert_eq!(
                crate::validate::literal_prefix(pattern),
                prefix,
                "{pattern}"
            );
        }
    }

    #[test]
    fn a_configuration_does_not_conflict_with_itself() {
        let stored = [("config-a", ConfigType::CacheRule, cache("/static/*", 3600))];
        let report = run(
            Some("config-a"),
            ConfigType::CacheRule,
            &cache("/static/*", 60),
            &stored,
        );
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{report:?}"
        );
    }

    #[test]
    fn shared_certificate_domains_warn() {
        let stored = [(
            "config-cert",
            ConfigType::SslCertificate,
            json!({"domains": ["example.com", "www.example.com"]}),
        )];
        let content = json!({"domains": ["api.example.com", "WWW.example.com"]});
        let report = run(None, ConfigType::SslCertificate, &content, &stored);
        assert!(report.errors.is_empty());
        assert_eq!(report.warnings.len(), 1, "{report:?}");
        assert_eq!(report.warnings[0].field, "content.domains.1");
        assert!(report.warnings[0].message.contains("'config-cert'"));
    }
}
