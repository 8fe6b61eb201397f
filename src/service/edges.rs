//! Edge-location use cases: registering an edge with its agent token, changing and removing
//! it, rotating its token, clearing its quarantine, and taking in its heartbeats.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::Instrument;

use super::Caller;
use crate::auth::{AuthError, TokenIssuer};
use crate::fleet::HeartbeatIntake;
use crate::model::{EdgeHealth, EdgeLocation, Role, Timestamp};
use crate::rollout::engine::Engine;
use crate::secrets::SecretBox;
use crate::store::{Applied, Command, EdgeChanges, EdgeRecord, HeartbeatRecord, Store, StoreError};

/// Agent tokens live long (`auth.edge_token_ttl`) and are renewed by rotation before they
/// expire; `edgeplane_edge_tokens_expiring` counts those due within 30 days.
const DEFAULT_AGENT_TOKEN_TTL_SECONDS: i64 = 365 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The store answered a command with something else than the command produces.
    #[error("{0}")]
    Internal(String),
}

/// The edge-location use cases; cheap to clone.
#[derive(Clone)]
pub struct Edges {
    store: Store,
    tokens: Arc<TokenIssuer>,
    secrets: SecretBox,
    engine: Engine,
    heartbeats: HeartbeatIntake,
    agent_token_ttl_seconds: i64,
}

fn edge_of(applied: Applied) -> Result<EdgeLocation, EdgeError> {
    match applied {
        Applied::Edge(record) => Ok(record.location),
        _ => Err(EdgeError::Internal(
            "edge command applied without a record".into(),
        )),
    }
}

impl Edges {
    pub fn new(
        store: Store,
        tokens: Arc<TokenIssuer>,
        secrets: SecretBox,
        engine: Engine,
        heartbeats: HeartbeatIntake,
    ) -> Self {
        Self {
            store,
            tokens,
            secrets,
            engine,
            heartbeats,
            agent_token_ttl_seconds: DEFAULT_AGENT_TOKEN_TTL_SECONDS,
        }
    }

    /// Agent tokens minted from now on live `ttl`.
    pub fn with_agent_token_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.agent_token_ttl_seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        self
    }

    /// A fresh agent token for an edge: (token id, token, token sealed for the store).
    fn mint_agent_token(&self, location_id: &str) -> Result<(String, String, String), EdgeError> {
        let (token, claims) = self.tokens.issue(
            &format!("edge:{location_id}"),
            Role::Edge,
            Some(location_id),
            Timestamp::now(),
            self.agent_token_ttl_seconds,
        )?;
        let sealed = self.secrets.seal(&token);
        Ok((claims.jti, token, sealed))
    }

    /// Registers an edge; answers it with its agent token, shown this once.
    pub async fn create(
        &self,
        caller: &Caller,
        location_id: String,
        changes: EdgeChanges,
    ) -> Result<(EdgeLocation, String), EdgeError> {
        let (token_id, token, token_sealed) = self.mint_agent_token(&location_id)?;
        let location = EdgeLocation {
            location_id,
            name: changes.name,
            region: changes.region,
            country_code: changes.country_code,
            city: changes.city,
            edge_type: changes.edge_type,
            endpoint: changes.endpoint,
            capacity: changes.capacity,
            health: EdgeHealth {
                is_healthy: false,
                ..EdgeHealth::default()
            },
            metrics: None,
            last_heartbeat: None,
            started_at: None,
            is_active: changes.is_active,
            active_configurations: BTreeMap::new(),
            metadata: changes.metadata,
            is_quarantined: false,
        };
        let applied = self
            .store
            .apply(caller.envelope(Command::CreateEdge {
                record: EdgeRecord {
                    location,
                    token_id,
                    token_sealed,
                },
            }))
            .await?;
        Ok((edge_of(applied)?, token))
    }

    pub async fn update(
        &self,
        caller: &Caller,
        location_id: String,
        changes: EdgeChanges,
    ) -> Result<EdgeLocation, EdgeError> {
        let applied = self
            .store
            .apply(caller.envelope(Command::UpdateEdge {
                location_id,
                changes,
            }))
            .await?;
        edge_of(applied)
    }

    /// Removes an edge, unless a deployment in progress targets it.
    pub async fn delete(&self, caller: &Caller, location_id: String) -> Result<(), EdgeError> {
        if let Some((deployment_id, _)) = self
            .engine
            .running()
            .into_iter()
            .find(|(_, running)| running.targets.contains(&location_id))
        {
            return Err(EdgeError::Conflict(format!(
                "deployment '{deployment_id}' in progress targets edge location '{location_id}'"
            )));
        }
        self.store
            .apply(caller.envelope(Command::DeleteEdge { location_id }))
            .await?;
        Ok(())
    }

    /// A new agent token; the old one stops working at once.
    pub async fn rotate_token(
        &self,
        caller: &Caller,
        location_id: String,
    ) -> Result<String, EdgeError> {
        let (token_id, token, token_sealed) = self.mint_agent_token(&location_id)?;
        self.store
            .apply(caller.envelope(Command::RotateEdgeToken {
                location_id,
                token_id,
                token_sealed,
            }))
            .await?;
        Ok(token)
    }

    /// Lets a quarantined edge back into deployments.
    pub async fn clear_quarantine(
        &self,
        caller: &Caller,
        location_id: String,
    ) -> Result<EdgeLocation, EdgeError> {
        let applied = self
            .store
            .apply(caller.envelope(Command::SetEdgeQuarantine {
                location_id,
                quarantined: false,
            }))
            .await?;
        edge_of(applied)
    }

    /// Records a heartbeat once it is durable. `known`: the caller has already established
    /// that the edge exists (an edge token is checked against it); otherwise it is looked up,
    /// since the intake silently drops heartbeats of unknown edges.
    pub async fn heartbeat(&self, beat: HeartbeatRecord, known: bool) -> Result<(), EdgeError> {
        let span = tracing::info_span!("edge.heartbeat", location_id = %beat.location_id, known);
        self.take_heartbeat(beat, known).instrument(span).await
    }

    async fn take_heartbeat(&self, beat: HeartbeatRecord, known: bool) -> Result<(), EdgeError> {
        if !known {
            let lookup = beat.location_id.clone();
            if self.store.read(move |r| r.edge(&lookup)).await?.is_none() {
                return Err(EdgeError::NotFound(format!(
                    "edge location '{}'",
                    beat.location_id
                )));
            }
        }
        self.heartbeats.submit(beat).await?;
        Ok(())
    }
}
