//! Configurations and their immutable versions (SPEC §2.1, §2.2).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Timestamp;

/// The five kinds of edge configuration (SPEC §3).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum ConfigType {
    CacheRule,
    RoutingRule,
    SecurityRule,
    #[serde(rename = "SSLCertificate")]
    SslCertificate,
    ResponseModification,
}

impl ConfigType {
    pub const ALL: [ConfigType; 5] = [
        ConfigType::CacheRule,
        ConfigType::RoutingRule,
        ConfigType::SecurityRule,
        ConfigType::SslCertificate,
        ConfigType::ResponseModification,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConfigType::CacheRule => "CacheRule",
            ConfigType::RoutingRule => "RoutingRule",
            ConfigType::SecurityRule => "SecurityRule",
            ConfigType::SslCertificate => "SSLCertificate",
            ConfigType::ResponseModification => "ResponseModification",
        }
    }
}

impl fmt::Display for ConfigType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConfigType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ConfigType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!(
                    "unknown configuration type '{text}' (expected one of CacheRule, RoutingRule, SecurityRule, SSLCertificate, ResponseModification)"
                )
            })
    }
}

/// Lifecycle status of a configuration version; a configuration shows its latest version's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ConfigStatus {
    Draft,
    PendingApproval,
    Approved,
    Deprecated,
    Archived,
}

impl ConfigStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigStatus::Draft => "Draft",
            ConfigStatus::PendingApproval => "PendingApproval",
            ConfigStatus::Approved => "Approved",
            ConfigStatus::Deprecated => "Deprecated",
            ConfigStatus::Archived => "Archived",
        }
    }
}

impl FromStr for ConfigStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            ConfigStatus::Draft,
            ConfigStatus::PendingApproval,
            ConfigStatus::Approved,
            ConfigStatus::Deprecated,
            ConfigStatus::Archived,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("unknown status '{text}'"))
    }
}

/// Which part of the semantic version an update raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bump {
    Major,
    #[default]
    Minor,
    Patch,
}

impl Bump {
    /// The version after `current` (which must be `MAJOR.MINOR.PATCH`).
    pub fn apply(self, current: &str) -> Option<String> {
        let mut parsed = semver::Version::parse(current).ok()?;
        match self {
            Bump::Major => {
                parsed.major += 1;
                parsed.minor = 0;
                parsed.patch = 0;
            }
            Bump::Minor => {
                parsed.minor += 1;
                parsed.patch = 0;
            }
            Bump::Patch => parsed.patch += 1,
        }
        Some(parsed.to_string())
    }
}

/// A configuration: the head of its version history (SPEC §2.1).
///
/// `content`, `version`, `status`, `approvedBy` and `approvedAt` mirror the latest version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    pub configuration_id: String,
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    #[serde(rename = "type")]
    pub config_type: ConfigType,
    pub description: String,
    #[serde(with = "super::json")]
    #[schema(value_type = Object)]
    pub content: Value,
    pub schema_version: String,
    pub version: String,
    pub tags: Vec<String>,
    pub status: ConfigStatus,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub approved_by: Option<String>,
    pub approved_at: Option<Timestamp>,
    pub is_deployed: bool,
    pub deployed_locations: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// One immutable version of a configuration's content (SPEC §2.2).
///
/// The content never changes once written; approval, tags and `isDeployed` are annotations
/// kept beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationVersion {
    pub version_id: String,
    pub configuration_id: String,
    pub version: String,
    #[serde(with = "super::json")]
    #[schema(value_type = Object)]
    pub content: Value,
    pub schema_version: String,
    pub change_description: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub status: ConfigStatus,
    pub approved_by: Option<String>,
    pub approved_at: Option<Timestamp>,
    pub approval_notes: Option<String>,
    pub is_deployed: bool,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_follow_semver() {
        assert_eq!(Bump::Minor.apply("1.0.0").as_deref(), Some("1.1.0"));
        assert_eq!(Bump::Minor.apply("1.2.7").as_deref(), Some("1.3.0"));
        assert_eq!(Bump::Major.apply("1.2.7").as_deref(), Some("2.0.0"));
        assert_eq!(Bump::Patch.apply("1.2.7").as_deref(), Some("1.2.8"));
        assert_eq!(Bump::Patch.apply("not-a-version"), None);
    }

    #[test]
    fn type_names_match_the_spec() {
        assert_eq!(
            serde_json::to_string(&ConfigType::SslCertificate).unwrap(),
            "\"SSLCertificate\""
        );
        assert_eq!(
            "sslcertificate".parse::<ConfigType>(),
            Ok(ConfigType::SslCertificate)
        );
        assert!("Nope".parse::<ConfigType>().is_err());
    }
}
