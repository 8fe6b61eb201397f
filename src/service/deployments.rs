//! Deployment admission and the operator's levers: a deployment request becomes a Pending
//! deployment only if its version is approved and still validates, and the store admits it —
//! no freeze, no other running deployment of its configuration, fewer than
//! `max_concurrent_deployments` running — inside the write transaction that creates it, so
//! concurrent requests cannot all pass. The engine then plans and drives it.

use tracing::Instrument;

use super::Caller;
use super::configurations::{ConfigurationError, Configurations};
use crate::model::deployment::CreateDeployment;
use crate::model::{ConfigStatus, Deployment, FieldError, Timestamp, new_id};
use crate::rollout::engine::{Engine, EngineError, TRACEPARENT_METADATA};
use crate::rollout::{OperatorAction, Plan, plan};
use crate::store::{Command, Freeze, Store, StoreError};
use crate::validate::Finding;

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("{0} not found")]
    NotFound(String),
    /// The request itself is malformed; the details name the fields.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<FieldError>,
    },
    /// The version cannot be deployed as it is: it fails validation, or has warnings the
    /// request did not acknowledge.
    #[error("{message}")]
    Rejected {
        message: String,
        findings: Vec<Finding>,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Frozen(String),
    /// The engine has stopped (the server is shutting down).
    #[error("the deployment engine has stopped")]
    Stopped,
    #[error("{0}")]
    Configuration(#[from] ConfigurationError),
    #[error("{0}")]
    Store(StoreError),
}

impl From<StoreError> for DeploymentError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Frozen(message) => DeploymentError::Frozen(message),
            other => DeploymentError::Store(other),
        }
    }
}

impl From<EngineError> for DeploymentError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::NotFound(id) => DeploymentError::NotFound(format!("deployment '{id}'")),
            EngineError::Conflict(message) => DeploymentError::Conflict(message),
            EngineError::Store(error) => error.into(),
            EngineError::Stopped => DeploymentError::Stopped,
        }
    }
}

fn invalid_field(field: &str, message: impl Into<String>) -> DeploymentError {
    let message = message.into();
    DeploymentError::Invalid {
        message: message.clone(),
        details: vec![FieldError {
            field: field.into(),
            message,
        }],
    }
}

/// What an admitted request produced.
#[derive(Debug)]
pub enum Admission {
    /// `dryRun`: the deployment that would start and its plan; nothing was stored.
    DryRun {
        deployment: Box<Deployment>,
        plan: Plan,
    },
    /// The deployment was stored and handed to the engine.
    Started(Box<Deployment>),
}

/// The deployment use cases; cheap to clone.
#[derive(Clone)]
pub struct Deployments {
    store: Store,
    configurations: Configurations,
    engine: Engine,
    max_concurrent: usize,
    healthy_within_ms: i64,
}

impl Deployments {
    pub fn new(
        store: Store,
        configurations: Configurations,
        engine: Engine,
        max_concurrent: usize,
        healthy_within_ms: i64,
    ) -> Self {
        Self {
            store,
            configurations,
            engine,
            max_concurrent,
            healthy_within_ms,
        }
    }

    /// Admits a deployment request (or plans it, with `dry_run`).
    pub async fn start(
        &self,
        caller: &Caller,
        request: CreateDeployment,
        dry_run: bool,
    ) -> Result<Admission, DeploymentError> {
        let span = tracing::info_span!(
            "deployment.start",
            configuration_id = %request.configuration_id,
            deployment_id = tracing::field::Empty,
            dry_run,
        );
        self.admit(caller, request, dry_run).instrument(span).await
    }

    async fn admit(
        &self,
        caller: &Caller,
        request: CreateDeployment,
        dry_run: bool,
    ) -> Result<Admission, DeploymentError> {
        let field_errors = request.validate();
        if !field_errors.is_empty() {
            return Err(DeploymentError::Invalid {
                message: "the deployment request is invalid".into(),
                details: field_errors,
            });
        }
        let configuration_id = request.configuration_id.clone();
        let lookup = configuration_id.clone();
        let (configuration, versions, thresholds) = self
            .store
            .read(move |r| {
                Ok((
                    r.configuration(&lookup)?,
                    r.versions(&lookup)?,
                    r.thresholds()?,
                ))
            })
            .await?;
        let configuration = configuration.ok_or_else(|| {
            DeploymentError::NotFound(format!("configuration '{configuration_id}'"))
        })?;
        let version = match &request.configuration_version {
            Some(wanted) => versions
                .iter()
                .find(|v| &v.version == wanted)
                .ok_or_else(|| {
                    DeploymentError::NotFound(format!("version {wanted} of '{configuration_id}'"))
                })?,
            None => versions
                .iter()
                .rev()
                .find(|v| v.status == ConfigStatus::Approved)
                .ok_or_else(|| {
                    invalid_field(
                        "configurationVersion",
                        "the configuration has no approved version",
                    )
                })?,
        };
        if version.status != ConfigStatus::Approved {
            return Err(invalid_field(
                "configurationVersion",
                format!(
                    "version {} is not approved; only approved versions can be deployed",
                    version.version
                ),
            ));
        }
        let content = self
            .configurations
            .opened(configuration.config_type, &version.content)?;
        let report = self
            .configurations
            .report(configuration.config_type, &content, Some(&configuration_id))
            .await?;
        if !report.is_valid() {
            return Err(DeploymentError::Rejected {
                message: "the version no longer validates".into(),
                findings: report.errors,
            });
        }
        if !report.warnings.is_empty() && !request.acknowledge_warnings {
            return Err(DeploymentError::Rejected {
                message:
                    "the version has validation warnings; deploy with acknowledgeWarnings: true"
                        .into(),
                findings: report.warnings,
            });
        }
        let now = Timestamp::now();
        let mut deployment = request
            .into_deployment(
                new_id("deploy"),
                version.version.clone(),
                caller.actor.clone(),
                now,
                &thresholds,
            )
            .map_err(|e| DeploymentError::Invalid {
                message: e.to_string(),
                details: Vec::new(),
            })?;

        if dry_run {
            let edges: Vec<_> = self
                .store
                .read(|r| r.edges())
                .await?
                .into_iter()
                .map(|r| r.location)
                .collect();
            let planned = plan(&deployment, &edges, now, self.healthy_within_ms);
            return Ok(Admission::DryRun {
                deployment: Box::new(deployment),
                plan: planned,
            });
        }
        let span = tracing::Span::current();
        span.record("deployment_id", deployment.deployment_id.as_str());
        // The engine parents the deployment's waves, pushes and verdicts on this span, across
        // its turns and restarts.
        match crate::telemetry::traceparent(&span) {
            Some(traceparent) => {
                deployment
                    .metadata
                    .insert(TRACEPARENT_METADATA.to_string(), traceparent);
            }
            None => {
                deployment.metadata.remove(TRACEPARENT_METADATA);
            }
        }
        self.store
            .apply(caller.envelope(Command::CreateDeployment {
                deployment: Box::new(deployment.clone()),
                max_concurrent: self.max_concurrent as u64,
            }))
            .await?;
        let started = self.engine.start_deployment(deployment).await?;
        Ok(Admission::Started(Box::new(started)))
    }

    /// An operator's action on a running deployment; answers the persisted result.
    pub async fn act(
        &self,
        caller: &Caller,
        deployment_id: &str,
        action: OperatorAction,
    ) -> Result<Deployment, DeploymentError> {
        Ok(self
            .engine
            .operator(deployment_id, action, &caller.actor)
            .await?)
    }

    /// Freezes rollouts: new deployments are refused and running ones pause.
    pub async fn freeze(&self, caller: &Caller, reason: String) -> Result<Freeze, DeploymentError> {
        let freeze = Freeze {
            reason,
            frozen_by: caller.actor.clone(),
            frozen_at: Timestamp::now(),
        };
        self.store
            .apply(caller.envelope(Command::SetFreeze {
                freeze: Some(freeze.clone()),
            }))
            .await?;
        self.engine.set_frozen(true);
        Ok(freeze)
    }

    /// Lifts a freeze.
    pub async fn lift_freeze(&self, caller: &Caller) -> Result<(), DeploymentError> {
        self.store
            .apply(caller.envelope(Command::SetFreeze { freeze: None }))
            .await?;
        self.engine.set_frozen(false);
        Ok(())
    }
}
