//! Configuration use cases: create, update, delete, validate, approve, tag, and the conflict
//! layer's view. Validation reads only the configurations the pattern index names as
//! candidates; the store re-checks the rules that races could break (a taken name, an
//! identical pattern with other content, a lost update) inside the write transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tracing::Instrument;

use super::Caller;
use crate::model::{
    Bump, ConfigStatus, ConfigType, Configuration, ConfigurationVersion, Timestamp, new_id,
};
use crate::secrets::SecretBox;
use crate::store::{Applied, Command, Store, StoreError};
use crate::validate::{self, Finding, OtherConfiguration, ValidationReport, Validator};

#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("{0} not found")]
    NotFound(String),
    /// The content fails validation; the findings say where.
    #[error("{message}")]
    Invalid {
        message: String,
        findings: Vec<Finding>,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A stored secret cannot be opened: the store and its key disagree.
    #[error("cannot open a sealed secret: {0}")]
    Sealed(String),
    /// The store answered a command with something else than the command produces.
    #[error("{0}")]
    Internal(String),
}

/// A configuration to create, as the caller gave it (already parsed).
#[derive(Clone, Debug)]
pub struct NewConfiguration {
    pub name: String,
    pub config_type: ConfigType,
    pub description: String,
    pub content: Value,
    pub schema_version: String,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A new version of a stored configuration.
#[derive(Clone, Debug)]
pub struct NewVersion {
    pub content: Value,
    pub change_description: String,
    pub description: Option<String>,
    pub bump: Bump,
    pub metadata: BTreeMap<String, String>,
    /// `If-Match`: the version the caller based its change on.
    pub expected_version: Option<String>,
}

/// The configuration use cases; cheap to clone.
#[derive(Clone)]
pub struct Configurations {
    store: Store,
    secrets: SecretBox,
    validator: Arc<Validator>,
    allow_self_approval: bool,
}

fn rejected(message: String, report: ValidationReport) -> ConfigurationError {
    ConfigurationError::Invalid {
        message,
        findings: report.errors,
    }
}

impl Configurations {
    pub fn new(
        store: Store,
        secrets: SecretBox,
        validator: Arc<Validator>,
        allow_self_approval: bool,
    ) -> Self {
        Self {
            store,
            secrets,
            validator,
            allow_self_approval,
        }
    }

    async fn load(&self, id: &str) -> Result<Configuration, ConfigurationError> {
        let lookup = id.to_string();
        self.store
            .read(move |r| r.configuration(&lookup))
            .await?
            .ok_or_else(|| ConfigurationError::NotFound(format!("configuration '{id}'")))
    }

    /// All three validation layers, the conflict layer against the stored configurations
    /// the pattern index names as candidates (`skip`: the configuration itself).
    pub async fn report(
        &self,
        config_type: ConfigType,
        content: &Value,
        skip: Option<&str>,
    ) -> Result<ValidationReport, ConfigurationError> {
        let span = tracing::info_span!(
            "configuration.validate",
            config_type = ?config_type,
            candidates = tracing::field::Empty,
            errors = tracing::field::Empty,
            warnings = tracing::field::Empty,
        );
        let candidates = self
            .candidates(config_type, content)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| {
            let others = other_refs(&candidates, skip);
            let report = self
                .validator
                .validate(config_type, content, &others, Timestamp::now());
            span.record("candidates", candidates.len());
            span.record("errors", report.errors.len());
            span.record("warnings", report.warnings.len());
            Ok(report)
        })
    }

    async fn candidates(
        &self,
        config_type: ConfigType,
        content: &Value,
    ) -> Result<Vec<Configuration>, ConfigurationError> {
        let content = content.clone();
        Ok(self
            .store
            .read(move |r| r.pattern_candidates(config_type, &content))
            .await?)
    }

    /// Content as stored, with its secrets opened (for validation and diffs).
    pub fn opened(
        &self,
        config_type: ConfigType,
        content: &Value,
    ) -> Result<Value, ConfigurationError> {
        let mut content = content.clone();
        validate::open_secrets(config_type, &mut content, &self.secrets)
            .map_err(|e| ConfigurationError::Sealed(e.to_string()))?;
        Ok(content)
    }

    pub async fn create(
        &self,
        caller: &Caller,
        new: NewConfiguration,
    ) -> Result<Configuration, ConfigurationError> {
        let span = tracing::info_span!(
            "configuration.create",
            config_type = ?new.config_type,
            configuration_id = tracing::field::Empty,
        );
        self.create_in_span(caller, new).instrument(span).await
    }

    async fn create_in_span(
        &self,
        caller: &Caller,
        new: NewConfiguration,
    ) -> Result<Configuration, ConfigurationError> {
        let mut content = new.content;
        let report = self.report(new.config_type, &content, None).await?;
        if !report.is_valid() {
            return Err(rejected(
                format!(
                    "the configuration is invalid: {} error(s)",
                    report.errors.len()
                ),
                report,
            ));
        }
        validate::seal_secrets(new.config_type, &mut content, &self.secrets);
        let now = Timestamp::now();
        let configuration_id = new_id("config");
        tracing::Span::current().record("configuration_id", configuration_id.as_str());
        let configuration = Configuration {
            configuration_id: configuration_id.clone(),
            name: new.name,
            config_type: new.config_type,
            description: new.description,
            content: content.clone(),
            schema_version: new.schema_version.clone(),
            version: "1.0.0".into(),
            tags: new.tags,
            status: ConfigStatus::Draft,
            created_by: caller.actor.clone(),
            created_at: now,
            updated_at: now,
            approved_by: None,
            approved_at: None,
            is_deployed: false,
            deployed_locations: Vec::new(),
            metadata: new.metadata.clone(),
        };
        let version = ConfigurationVersion {
            version_id: new_id("ver"),
            configuration_id,
            version: "1.0.0".into(),
            content,
            schema_version: new.schema_version,
            change_description: "Initial version".into(),
            created_by: caller.actor.clone(),
            created_at: now,
            status: ConfigStatus::Draft,
            approved_by: None,
            approved_at: None,
            approval_notes: None,
            is_deployed: false,
            metadata: new.metadata,
            tags: Vec::new(),
        };
        let applied = self
            .store
            .apply(caller.envelope(Command::CreateConfiguration {
                configuration,
                version,
            }))
            .await?;
        match applied {
            Applied::Configuration(configuration, _) => Ok(*configuration),
            _ => Err(ConfigurationError::Internal(
                "create applied without a configuration".into(),
            )),
        }
    }

    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        change: NewVersion,
    ) -> Result<Configuration, ConfigurationError> {
        let current = self.load(id).await?;
        let mut content = change.content;
        let report = self.report(current.config_type, &content, Some(id)).await?;
        if !report.is_valid() {
            return Err(rejected(
                format!(
                    "the configuration is invalid: {} error(s)",
                    report.errors.len()
                ),
                report,
            ));
        }
        validate::seal_secrets(current.config_type, &mut content, &self.secrets);
        let now = Timestamp::now();
        let applied = self
            .store
            .apply(caller.envelope(Command::UpdateConfiguration {
                configuration_id: id.to_string(),
                expected_version: change.expected_version,
                bump: change.bump,
                version_id: new_id("ver"),
                content,
                change_description: change.change_description,
                description: change.description,
                metadata: change.metadata,
                actor: caller.actor.clone(),
                at: now,
            }))
            .await?;
        match applied {
            Applied::Configuration(configuration, _) => Ok(*configuration),
            _ => Err(ConfigurationError::Internal(
                "update applied without a configuration".into(),
            )),
        }
    }

    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ConfigurationError> {
        self.store
            .apply(caller.envelope(Command::DeleteConfiguration {
                configuration_id: id.to_string(),
            }))
            .await?;
        Ok(())
    }

    /// Validates content that is not stored.
    pub async fn validate_unsaved(
        &self,
        config_type: ConfigType,
        content: &Value,
    ) -> Result<ValidationReport, ConfigurationError> {
        self.report(config_type, content, None).await
    }

    /// Validates the latest version of a stored configuration against today's others.
    pub async fn validate_stored(&self, id: &str) -> Result<ValidationReport, ConfigurationError> {
        let configuration = self.load(id).await?;
        let content = self.opened(configuration.config_type, &configuration.content)?;
        self.report(configuration.config_type, &content, Some(id))
            .await
    }

    /// Approves a version (default: the latest). Only a valid version can be approved;
    /// validation is re-run against today's configurations, since conflicts may have appeared
    /// since it was written.
    pub async fn approve(
        &self,
        caller: &Caller,
        id: &str,
        version: Option<String>,
        notes: Option<String>,
    ) -> Result<Configuration, ConfigurationError> {
        let configuration = self.load(id).await?;
        let wanted = version.unwrap_or_else(|| configuration.version.clone());
        let (lookup_id, lookup_version) = (id.to_string(), wanted.clone());
        let found = self
            .store
            .read(move |reader| reader.version(&lookup_id, &lookup_version))
            .await?
            .ok_or_else(|| ConfigurationError::NotFound(format!("version {wanted} of '{id}'")))?;
        let content = self.opened(configuration.config_type, &found.content)?;
        let report = self
            .report(configuration.config_type, &content, Some(id))
            .await?;
        if !report.is_valid() {
            return Err(rejected(
                format!(
                    "the configuration is invalid: {} error(s)",
                    report.errors.len()
                ),
                report,
            ));
        }
        let applied = self
            .store
            .apply(caller.envelope(Command::ApproveVersion {
                configuration_id: id.to_string(),
                version: Some(wanted),
                approver: caller.actor.clone(),
                notes,
                allow_self_approval: self.allow_self_approval,
                at: Timestamp::now(),
            }))
            .await?;
        match applied {
            Applied::Configuration(configuration, _) => Ok(*configuration),
            _ => Err(ConfigurationError::Internal(
                "approve applied without a configuration".into(),
            )),
        }
    }

    /// Moves a tag onto a version; answers the version and its configuration's type.
    pub async fn tag(
        &self,
        caller: &Caller,
        id: &str,
        version: String,
        tag: String,
    ) -> Result<(ConfigType, ConfigurationVersion), ConfigurationError> {
        let configuration = self.load(id).await?;
        let applied = self
            .store
            .apply(caller.envelope(Command::TagVersion {
                configuration_id: id.to_string(),
                version,
                tag,
            }))
            .await?;
        match applied {
            Applied::Version(version) => Ok((configuration.config_type, *version)),
            _ => Err(ConfigurationError::Internal(
                "tag applied without a version".into(),
            )),
        }
    }

    /// The conflict layer alone, for a stored configuration.
    pub async fn conflicts(&self, id: &str) -> Result<ValidationReport, ConfigurationError> {
        let configuration = self.load(id).await?;
        let candidates = self
            .candidates(configuration.config_type, &configuration.content)
            .await?;
        Ok(self.validator.conflicts(
            Some(id),
            configuration.config_type,
            &configuration.content,
            &other_refs(&candidates, Some(id)),
        ))
    }
}

fn other_refs<'a>(all: &'a [Configuration], skip: Option<&str>) -> Vec<OtherConfiguration<'a>> {
    all.iter()
        .filter(|c| Some(c.configuration_id.as_str()) != skip)
        .map(|c| OtherConfiguration {
            configuration_id: &c.configuration_id,
            name: &c.name,
            config_type: c.config_type,
            content: &c.content,
        })
        .collect()
}
