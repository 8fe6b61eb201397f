//! The one door: applies commands in order, appends each to the command log and writes its
//! audit record, a whole batch in one durable write transaction (group commit).

use redb::{Database, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::Serialize;

use super::command::{Applied, AuditRecord, Command, CommandEnvelope, EdgeRecord, Freeze};
use super::deployments::DeploymentChanges;
use super::patterns::{self, CONFIG_PATTERNS, IndexKey};
use super::{
    AUDIT, CONFIG_NAMES, CONFIGS, DEPLOYMENTS, DESIRED, EDGES, LOG, META, RUNNING, StoreError,
    USERS, VERSIONS, codec,
};
use crate::model::{
    ConfigStatus, ConfigType, Configuration, ConfigurationVersion, Deployment, User,
};

pub(crate) const TERM_KEY: &str = "term";
pub(crate) const JWT_SECRET_KEY: &str = "jwt_secret";
pub(crate) const FREEZE_KEY: &str = "freeze";
pub(crate) const THRESHOLDS_KEY: &str = "thresholds";

pub(crate) fn current_term_of(raw: &Option<Vec<u8>>) -> u64 {
    raw.as_deref()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(1)
}

/// How much one group commit may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Once the log entries written so far reach this many bytes, the commands after are left
    /// for the next batch.
    pub(crate) max_log_bytes: usize,
    /// Failed commands a batch absorbs before the commands after the last failure are left for
    /// the next batch: every failure re-applies the batch's good commands, so this bounds the
    /// work one batch can cost.
    pub(crate) max_failures: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_log_bytes: 8 * 1024 * 1024,
            max_failures: 8,
        }
    }
}

/// Applies `envelopes` in order in one write transaction and commits them with one fsync.
///
/// Each command is checked against the state the commands before it left, and gets its own
/// log index and audit record. A command that fails is left out whole: redb can only take a
/// savepoint before a transaction touches a table, so there is no point to roll back to in
/// the middle of a batch; instead the transaction is aborted and the batch applied again
/// without it. Commands are deterministic in the stored state, so the ones before it succeed
/// again with the same results, and the log has no gap where it would have been.
///
/// Returns one result per command taken, in order: fewer than `envelopes` when a bound of
/// `limits` was reached, and the caller offers the rest again. A command is taken whole or
/// not at all, and the first is always taken. If the transaction cannot begin or commit,
/// every command taken gets that error: nothing of the batch is durable.
pub(crate) fn apply_batch(
    db: &Database,
    envelopes: &[CommandEnvelope],
    limits: BatchLimits,
) -> Vec<Result<Applied, StoreError>> {
    apply_batch_with(db, envelopes, limits, apply_in)
}

/// [`apply_batch`] over any per-command change, so tests can make a command fail after it
/// has written.
fn apply_batch_with(
    db: &Database,
    envelopes: &[CommandEnvelope],
    limits: BatchLimits,
    apply_one: impl Fn(&WriteTransaction, &CommandEnvelope) -> Result<Applied, StoreError>,
) -> Vec<Result<Applied, StoreError>> {
    let mut failures: Vec<Option<StoreError>> = envelopes.iter().map(|_| None).collect();
    let mut n_failed = 0;
    let mut taken = envelopes.len();
    'attempt: loop {
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(error) => return every_one_fails(taken, &StoreError::from(error)),
        };
        let mut applied: Vec<Option<Applied>> = Vec::with_capacity(taken);
        let mut log_bytes = 0;
        for (i, envelope) in envelopes.iter().enumerate().take(taken) {
            if failures[i].is_some() {
                applied.push(None);
                continue;
            }
            let outcome = apply_one(&txn, envelope)
                .and_then(|result| Ok((result, append_log_and_audit(&txn, envelope)?)));
            match outcome {
                Ok((result, bytes)) => {
                    applied.push(Some(result));
                    log_bytes += bytes;
                    if log_bytes >= limits.max_log_bytes {
                        taken = i + 1;
                        break;
                    }
                }
                Err(error) => {
                    failures[i] = Some(error);
                    n_failed += 1;
                    if n_failed >= limits.max_failures {
                        taken = i + 1;
                    }
                    // Dropping the transaction aborts it: nothing of this attempt remains.
                    drop(txn);
                    continue 'attempt;
                }
            }
        }
        if let Err(error) = txn.commit() {
            return every_one_fails(taken, &StoreError::from(error));
        }
        return applied
            .into_iter()
            .zip(failures)
            .map(|(applied, failure)| match (applied, failure) {
                (Some(applied), _) => Ok(applied),
                (None, Some(failure)) => Err(failure),
                (None, None) => Err(StoreError::Unavailable("command was not applied".into())),
            })
            .collect();
    }
}

fn every_one_fails(n: usize, error: &StoreError) -> Vec<Result<Applied, StoreError>> {
    let message = match error {
        StoreError::Unavailable(message) => message.clone(),
        other => other.to_string(),
    };
    (0..n)
        .map(|_| Err(StoreError::Unavailable(message.clone())))
        .collect()
}

/// The stored form of a [`LogEntry`](super::LogEntry), written from a borrowed envelope (postcard lays out a
/// struct as its fields in order, so the bytes are the same).
#[derive(Serialize)]
struct LogEntryRef<'a> {
    term: u64,
    index: u64,
    envelope: &'a CommandEnvelope,
}

/// Appends the command to the log and writes its audit record; returns the log entry's size.
fn append_log_and_audit(
    txn: &WriteTransaction,
    envelope: &CommandEnvelope,
) -> Result<usize, StoreError> {
    let term = {
        let meta = txn.open_table(META)?;
        let raw = meta.get(TERM_KEY)?.map(|v| v.value().to_vec());
        current_term_of(&raw)
    };
    let index = last_log_index(txn)? + 1;
    append_log_and_audit_at(txn, envelope, term, index)
}

/// Index of the last log entry, or of the last one compaction dropped; 0 for none.
fn last_log_index(txn: &WriteTransaction) -> Result<u64, StoreError> {
    if let Some((key, _)) = txn.open_table(LOG)?.last()? {
        return Ok(key.value());
    }
    let meta = txn.open_table(META)?;
    let compacted = meta.get(COMPACTED_KEY)?.map(|v| v.value().to_vec());
    Ok(compacted_position_of(compacted.as_deref()).map_or(0, |(_, index)| index))
}

/// (term, index) of the last log entry, or of the last one compaction dropped; (current
/// term, 0) for a log that never had one.
pub(crate) fn last_log_position(txn: &WriteTransaction) -> Result<(u64, u64), StoreError> {
    let log = txn.open_table(LOG)?;
    if let Some((_, value)) = log.last()? {
        let entry: super::LogEntry = codec::decode(value.value())?;
        return Ok((entry.term, entry.index));
    }
    let meta = txn.open_table(META)?;
    let compacted = meta.get(COMPACTED_KEY)?.map(|v| v.value().to_vec());
    match compacted_position_of(compacted.as_deref()) {
        Some(position) => Ok(position),
        None => {
            let raw = meta.get(TERM_KEY)?.map(|v| v.value().to_vec());
            Ok((current_term_of(&raw), 0))
        }
    }
}

/// Meta key of the (term, index) of the last log entry compaction dropped.
pub(crate) const COMPACTED_KEY: &str = "log_compacted";
/// Meta key of the node that became primary at the current term ([`Command::NewTerm`]).
pub(crate) const LEADER_KEY: &str = "leader";

pub(crate) fn compacted_position_of(raw: Option<&[u8]>) -> Option<(u64, u64)> {
    let bytes = <[u8; 16]>::try_from(raw?).ok()?;
    let (term, index) = bytes.split_at(8);
    Some((
        u64::from_be_bytes(term.try_into().ok()?),
        u64::from_be_bytes(index.try_into().ok()?),
    ))
}

/// [`append_log_and_audit`] at a given (term, index): a replicated entry keeps the place it
/// had in the primary's log.
pub(crate) fn append_log_and_audit_at(
    txn: &WriteTransaction,
    envelope: &CommandEnvelope,
    term: u64,
    index: u64,
) -> Result<usize, StoreError> {
    let mut log = txn.open_table(LOG)?;
    let audit_target = envelope.command.audit_target();
    let summary = envelope.command.audit_summary();
    let (actor, trace_id, at) = (
        envelope.actor.clone(),
        envelope.trace_id.clone(),
        envelope.at,
    );
    let entry = codec::encode(&LogEntryRef {
        term,
        index,
        envelope,
    })?;
    log.insert(index, entry.as_slice())?;
    if let Some((action, entity_type, entity_id)) = audit_target {
        let mut audit = txn.open_table(AUDIT)?;
        let audit_index = audit.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        let record = AuditRecord {
            index: audit_index,
            at,
            actor,
            action: action.into(),
            entity_type: entity_type.into(),
            entity_id,
            summary,
            trace_id,
            log_index: index,
        };
        audit.insert(audit_index, codec::encode(&record)?.as_slice())?;
    }
    Ok(entry.len())
}

fn get<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    table
        .get(key)?
        .map(|v| codec::decode(v.value()))
        .transpose()
}

pub(crate) fn apply_in(
    txn: &WriteTransaction,
    envelope: &CommandEnvelope,
) -> Result<Applied, StoreError> {
    match &envelope.command {
        Command::InitCluster { jwt_secret } => {
            let mut meta = txn.open_table(META)?;
            if meta.get(JWT_SECRET_KEY)?.is_some() {
                return Err(StoreError::Conflict("cluster already initialised".into()));
            }
            meta.insert(JWT_SECRET_KEY, jwt_secret.as_bytes())?;
            meta.insert(TERM_KEY, 1u64.to_be_bytes().as_slice())?;
            Ok(Applied::Nothing)
        }
        Command::NewTerm { term, node_id, url } => {
            let mut meta = txn.open_table(META)?;
            let raw = meta.get(TERM_KEY)?.map(|v| v.value().to_vec());
            let current = current_term_of(&raw);
            if *term <= current {
                return Err(StoreError::Conflict(format!(
                    "term {term} is not above the current term {current}"
                )));
            }
            meta.insert(TERM_KEY, term.to_be_bytes().as_slice())?;
            let leader = super::LeaderRecord {
                term: *term,
                node_id: node_id.clone(),
                url: url.clone(),
            };
            meta.insert(LEADER_KEY, codec::encode(&leader)?.as_slice())?;
            Ok(Applied::Nothing)
        }
        Command::CreateUser { user } => {
            let mut users = txn.open_table(USERS)?;
            // Usernames are unique without case: `Alice` taken means `alice` is too.
            let mut taken = users.get(user.username.as_str())?.is_some();
            for entry in users.iter()? {
                taken |= entry?.0.value().eq_ignore_ascii_case(&user.username);
            }
            if taken {
                return Err(StoreError::Conflict(format!(
                    "user '{}' already exists",
                    user.username
                )));
            }
            users.insert(user.username.as_str(), codec::encode(user)?.as_slice())?;
            Ok(Applied::User(user.clone()))
        }
        Command::SetPassword {
            username,
            password_hash,
            at,
        } => {
            let mut users = txn.open_table(USERS)?;
            let mut user: User = get(&users, username)?
                .ok_or_else(|| StoreError::NotFound(format!("user '{username}'")))?;
            user.password_hash = password_hash.clone();
            user.updated_at = *at;
            users.insert(username.as_str(), codec::encode(&user)?.as_slice())?;
            Ok(Applied::User(user))
        }
        Command::DeleteUser { username } => {
            let mut users = txn.open_table(USERS)?;
            let user: User = get(&users, username)?
                .ok_or_else(|| StoreError::NotFound(format!("user '{username}'")))?;
            if user.role == crate::model::Role::Admin {
                let admins = users
                    .iter()?
                    .filter_map(|e| e.ok())
                    .filter_map(|(_, v)| codec::decode::<User>(v.value()).ok())
                    .filter(|u| u.role == crate::model::Role::Admin)
                    .count();
                if admins <= 1 {
                    return Err(StoreError::Conflict(
                        "cannot delete the last Admin user".into(),
                    ));
                }
            }
            users.remove(username.as_str())?;
            Ok(Applied::Nothing)
        }
        Command::CreateConfiguration {
            configuration,
            version,
        } => {
            let mut names = txn.open_table(CONFIG_NAMES)?;
            if names.get(configuration.name.as_str())?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a configuration named '{}' already exists",
                    configuration.name
                )));
            }
            names.insert(
                configuration.name.as_str(),
                configuration.configuration_id.as_str(),
            )?;
            let mut configs = txn.open_table(CONFIGS)?;
            let key = IndexKey::of(configuration.config_type, &configuration.content);
            refuse_contradiction(
                txn,
                &configs,
                &key,
                configuration.config_type,
                &configuration.content,
                &configuration.configuration_id,
            )?;
            patterns::insert(txn, &configuration.configuration_id, &key)?;
            configs.insert(
                configuration.configuration_id.as_str(),
                codec::encode(configuration)?.as_slice(),
            )?;
            let mut versions = txn.open_table(VERSIONS)?;
            versions.insert(
                (configuration.configuration_id.as_str(), 1u64),
                codec::encode(version)?.as_slice(),
            )?;
            Ok(Applied::Configuration(
                Box::new(configuration.clone()),
                Box::new(version.clone()),
            ))
        }
        Command::UpdateConfiguration {
            configuration_id,
            expected_version,
            bump,
            version_id,
            content,
            change_description,
            description,
            metadata,
            actor,
            at,
        } => {
            let mut configs = txn.open_table(CONFIGS)?;
            let mut config: Configuration = get(&configs, configuration_id)?.ok_or_else(|| {
                StoreError::NotFound(format!("configuration '{configuration_id}'"))
            })?;
            if let Some(expected) = expected_version
                && *expected != config.version
            {
                return Err(StoreError::Conflict(format!(
                    "configuration is at version {}, not {expected} (If-Match): reload and retry",
                    config.version
                )));
            }
            let old_key = IndexKey::of(config.config_type, &config.content);
            let new_key = IndexKey::of(config.config_type, content);
            refuse_contradiction(
                txn,
                &configs,
                &new_key,
                config.config_type,
                content,
                configuration_id,
            )?;
            patterns::remove(txn, configuration_id, &old_key)?;
            patterns::insert(txn, configuration_id, &new_key)?;
            let next = bump.apply(&config.version).ok_or_else(|| {
                StoreError::Corrupt(format!("stored version '{}' is not semver", config.version))
            })?;
            let mut versions = txn.open_table(VERSIONS)?;
            let seq = versions
                .range((configuration_id.as_str(), 0)..=(configuration_id.as_str(), u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1 + 1)
                .unwrap_or(1);
            let version = ConfigurationVersion {
                version_id: version_id.clone(),
                configuration_id: configuration_id.clone(),
                version: next.clone(),
                content: content.clone(),
                schema_version: config.schema_version.clone(),
                change_description: change_description.clone(),
                created_by: actor.clone(),
                created_at: *at,
                status: ConfigStatus::Draft,
                approved_by: None,
                approved_at: None,
                approval_notes: None,
                is_deployed: false,
                metadata: metadata.clone(),
                tags: Vec::new(),
            };
            versions.insert(
                (configuration_id.as_str(), seq),
                codec::encode(&version)?.as_slice(),
            )?;
            config.version = next;
            config.content = content.clone();
            config.status = ConfigStatus::Draft;
            config.approved_by = None;
            config.approved_at = None;
            config.updated_at = *at;
            if let Some(description) = description {
                config.description = description.clone();
            }
            for (k, v) in metadata {
                config.metadata.insert(k.clone(), v.clone());
            }
            configs.insert(
                configuration_id.as_str(),
                codec::encode(&config)?.as_slice(),
            )?;
            Ok(Applied::Configuration(Box::new(config), Box::new(version)))
        }
        Command::DeleteConfiguration { configuration_id } => {
            let mut configs = txn.open_table(CONFIGS)?;
            let config: Configuration = get(&configs, configuration_id)?.ok_or_else(|| {
                StoreError::NotFound(format!("configuration '{configuration_id}'"))
            })?;
            if config.is_deployed {
                return Err(StoreError::Conflict(format!(
                    "configuration '{configuration_id}' is deployed at {} location(s); roll it back first",
                    config.deployed_locations.len()
                )));
            }
            if let Some(deployment_id) = txn.open_table(RUNNING)?.get(configuration_id.as_str())? {
                return Err(StoreError::Conflict(format!(
                    "configuration '{configuration_id}' is being deployed by '{}'",
                    deployment_id.value()
                )));
            }
            configs.remove(configuration_id.as_str())?;
            patterns::remove(
                txn,
                configuration_id,
                &IndexKey::of(config.config_type, &config.content),
            )?;
            txn.open_table(CONFIG_NAMES)?.remove(config.name.as_str())?;
            let mut versions = txn.open_table(VERSIONS)?;
            versions.retain_in(
                (configuration_id.as_str(), 0)..=(configuration_id.as_str(), u64::MAX),
                |_, _| false,
            )?;
            Ok(Applied::Nothing)
        }
        Command::ApproveVersion {
            configuration_id,
            version,
            approver,
            notes,
            allow_self_approval,
            at,
        } => {
            let mut configs = txn.open_table(CONFIGS)?;
            let mut config: Configuration = get(&configs, configuration_id)?.ok_or_else(|| {
                StoreError::NotFound(format!("configuration '{configuration_id}'"))
            })?;
            let wanted = version.clone().unwrap_or_else(|| config.version.clone());
            let (key, mut target) = find_version(txn, configuration_id, &wanted)?;
            if target.created_by == *approver && !allow_self_approval {
                return Err(StoreError::Forbidden(format!(
                    "version {wanted} was written by '{approver}'; another Admin must approve it (four-eyes)"
                )));
            }
            if target.status == ConfigStatus::Approved {
                return Err(StoreError::Conflict(format!(
                    "version {wanted} is already approved"
                )));
            }
            target.status = ConfigStatus::Approved;
            target.approved_by = Some(approver.clone());
            target.approved_at = Some(*at);
            target.approval_notes = notes.clone();
            txn.open_table(VERSIONS)?.insert(
                (configuration_id.as_str(), key),
                codec::encode(&target)?.as_slice(),
            )?;
            if config.version == wanted {
                config.status = ConfigStatus::Approved;
                config.approved_by = Some(approver.clone());
                config.approved_at = Some(*at);
                config.updated_at = *at;
                configs.insert(
                    configuration_id.as_str(),
                    codec::encode(&config)?.as_slice(),
                )?;
            }
            Ok(Applied::Configuration(Box::new(config), Box::new(target)))
        }
        Command::TagVersion {
            configuration_id,
            version,
            tag,
        } => {
            let (key, mut target) = find_version(txn, configuration_id, version)?;
            let mut versions = txn.open_table(VERSIONS)?;
            // A tag names at most one version: take it off every other version first.
            let mut moved = Vec::new();
            for entry in versions
                .range((configuration_id.as_str(), 0)..=(configuration_id.as_str(), u64::MAX))?
            {
                let (k, v) = entry?;
                let mut other: ConfigurationVersion = codec::decode(v.value())?;
                if k.value().1 != key && other.tags.iter().any(|t| t == tag) {
                    other.tags.retain(|t| t != tag);
                    moved.push((k.value().1, other));
                }
            }
            for (k, other) in moved {
                versions.insert(
                    (configuration_id.as_str(), k),
                    codec::encode(&other)?.as_slice(),
                )?;
            }
            if !target.tags.iter().any(|t| t == tag) {
                target.tags.push(tag.clone());
            }
            versions.insert(
                (configuration_id.as_str(), key),
                codec::encode(&target)?.as_slice(),
            )?;
            Ok(Applied::Version(Box::new(target)))
        }
        Command::CreateEdge { record } => {
            let mut edges = txn.open_table(EDGES)?;
            let id = record.location.location_id.as_str();
            if edges.get(id)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "edge location '{id}' already exists"
                )));
            }
            edges.insert(id, codec::encode(record)?.as_slice())?;
            Ok(Applied::Edge(Box::new(record.clone())))
        }
        Command::UpdateEdge {
            location_id,
            changes,
        } => update_edge(txn, location_id, |record| {
            let location = &mut record.location;
            location.name = changes.name.clone();
            location.region = changes.region.clone();
            location.country_code = changes.country_code.clone();
            location.city = changes.city.clone();
            location.edge_type = changes.edge_type;
            location.endpoint = changes.endpoint.clone();
            location.capacity = changes.capacity.clone();
            location.is_active = changes.is_active;
            location.metadata = changes.metadata.clone();
        }),
        Command::RotateEdgeToken {
            location_id,
            token_id,
            token_sealed,
        } => update_edge(txn, location_id, |record| {
            record.token_id = token_id.clone();
            record.token_sealed = token_sealed.clone();
        }),
        Command::SetEdgeQuarantine {
            location_id,
            quarantined,
        } => {
            if !*quarantined {
                super::counters::forget_nacks(txn, location_id)?;
            }
            update_edge(txn, location_id, |record| {
                record.location.is_quarantined = *quarantined;
            })
        }
        Command::DeleteEdge { location_id } => {
            let mut edges = txn.open_table(EDGES)?;
            if edges.remove(location_id.as_str())?.is_none() {
                return Err(StoreError::NotFound(format!(
                    "edge location '{location_id}'"
                )));
            }
            super::series::delete_edge(txn, location_id)?;
            super::counters::forget_nacks(txn, location_id)?;
            let mut desired = txn.open_table(DESIRED)?;
            let keys: Vec<String> = desired
                .range((location_id.as_str(), "")..)?
                .filter_map(Result::ok)
                .map(|(key, _)| {
                    let (location, config) = key.value();
                    (location.to_string(), config.to_string())
                })
                .take_while(|(location, _)| location == location_id)
                .map(|(_, config)| config)
                .collect();
            for config in keys {
                desired.remove((location_id.as_str(), config.as_str()))?;
            }
            Ok(Applied::Nothing)
        }
        Command::RecordHeartbeats { beats } => {
            // The samples go into the per-edge rings, stamped with the start of the interval
            // they cover.
            let samples: Vec<_> = beats
                .iter()
                .filter_map(|beat| {
                    let sample = beat.metrics.clone()?;
                    let interval_ms = i64::from(sample.interval_seconds.max(1)) * 1000;
                    Some((
                        beat.location_id.clone(),
                        beat.received_at.plus_millis(-interval_ms),
                        sample,
                    ))
                })
                .collect();
            if !samples.is_empty() {
                super::series::write_samples(txn, &samples, envelope.at)?;
            }
            let mut edges = txn.open_table(EDGES)?;
            for beat in beats {
                // An edge deleted while its heartbeat was queued is simply gone.
                let Some(mut record) = get::<EdgeRecord>(&edges, &beat.location_id)? else {
                    continue;
                };
                let location = &mut record.location;
                location.health = beat.health.clone();
                location.active_configurations = beat.active_configurations.clone();
                location.last_heartbeat = Some(beat.received_at);
                if beat.started_at.is_some() {
                    location.started_at = beat.started_at;
                }
                if beat.metrics.is_some() {
                    location.metrics = beat.metrics.clone();
                }
                edges.insert(
                    beat.location_id.as_str(),
                    codec::encode(&record)?.as_slice(),
                )?;
            }
            Ok(Applied::Nothing)
        }
        Command::SaveDeployment {
            deployment,
            edge_versions,
        } => {
            super::deployments::write(txn, &DeploymentChanges::whole(deployment))?;
            track_running(txn, deployment)?;
            if deployment.status.is_terminal() {
                super::counters::forget_breaches(txn, &deployment.deployment_id)?;
            }
            if !edge_versions.is_empty() {
                record_edge_versions(txn, &deployment.configuration_id, edge_versions)?;
            }
            Ok(Applied::Deployment(deployment.clone()))
        }
        Command::CreateDeployment {
            deployment,
            max_concurrent,
        } => {
            admit(txn, deployment, *max_concurrent)?;
            super::deployments::write(txn, &DeploymentChanges::whole(deployment))?;
            track_running(txn, deployment)?;
            Ok(Applied::Deployment(deployment.clone()))
        }
        Command::SaveDeploymentChanges {
            changes,
            edge_versions,
        } => {
            super::deployments::write(txn, changes)?;
            track_running(txn, &changes.header)?;
            if !edge_versions.is_empty() {
                record_edge_versions(txn, &changes.header.configuration_id, edge_versions)?;
            }
            Ok(Applied::Nothing)
        }
        Command::SetThresholds { thresholds } => {
            txn.open_table(META)?
                .insert(THRESHOLDS_KEY, codec::encode(thresholds)?.as_slice())?;
            Ok(Applied::Nothing)
        }
        Command::RecordNack {
            location_id,
            configuration_id,
            version,
            quarantine_after,
        } => super::counters::record_nack(
            txn,
            location_id,
            configuration_id,
            version,
            *quarantine_after,
        ),
        Command::SaveBreaches {
            deployment_id,
            breaches,
        } => super::counters::save_breaches(txn, deployment_id, breaches),
        Command::SetFreeze { freeze } => {
            let mut meta = txn.open_table(META)?;
            match freeze {
                Some(freeze) => {
                    meta.insert(FREEZE_KEY, codec::encode(freeze)?.as_slice())?;
                }
                None => {
                    meta.remove(FREEZE_KEY)?;
                }
            }
            Ok(Applied::Nothing)
        }
    }
}

/// The admission rules of a new deployment (SPEC §7, common rules): no freeze in effect, no
/// other running deployment of its configuration, fewer than `max_concurrent` running.
fn admit(
    txn: &WriteTransaction,
    deployment: &Deployment,
    max_concurrent: u64,
) -> Result<(), StoreError> {
    if let Some(raw) = txn.open_table(META)?.get(FREEZE_KEY)? {
        let freeze: Freeze = codec::decode(raw.value())?;
        return Err(StoreError::Frozen(format!(
            "rollouts are frozen by {}: {}",
            freeze.frozen_by, freeze.reason
        )));
    }
    let configuration_id = deployment.configuration_id.as_str();
    if txn.open_table(CONFIGS)?.get(configuration_id)?.is_none() {
        return Err(StoreError::NotFound(format!(
            "configuration '{configuration_id}'"
        )));
    }
    if txn
        .open_table(DEPLOYMENTS)?
        .get(deployment.deployment_id.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict(format!(
            "deployment '{}' already exists",
            deployment.deployment_id
        )));
    }
    let running = txn.open_table(RUNNING)?;
    if let Some(other) = running.get(configuration_id)? {
        return Err(StoreError::Conflict(format!(
            "configuration '{configuration_id}' is already being deployed by '{}'",
            other.value()
        )));
    }
    let n_running = running.len()?;
    if n_running >= max_concurrent {
        return Err(StoreError::Conflict(format!(
            "{n_running} deployments are running, the most allowed at once"
        )));
    }
    Ok(())
}

/// Keeps the running table true to a deployment's status: a terminal deployment leaves it.
/// An unfinished one not yet listed is added, so a log written before the table existed
/// replays to the same table.
fn track_running(txn: &WriteTransaction, deployment: &Deployment) -> Result<(), StoreError> {
    let mut running = txn.open_table(RUNNING)?;
    let configuration_id = deployment.configuration_id.as_str();
    let listed = running
        .get(configuration_id)?
        .map(|id| id.value().to_string());
    if deployment.status.is_terminal() {
        if listed.as_deref() == Some(deployment.deployment_id.as_str()) {
            running.remove(configuration_id)?;
        }
    } else if listed.is_none() {
        running.insert(configuration_id, deployment.deployment_id.as_str())?;
    }
    Ok(())
}

/// Refuses a configuration whose path pattern is identical to another's of its type with
/// different content (SPEC §3, layer 3), decoding only those the index says share it.
fn refuse_contradiction(
    txn: &WriteTransaction,
    configs: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &IndexKey,
    config_type: ConfigType,
    content: &serde_json::Value,
    configuration_id: &str,
) -> Result<(), StoreError> {
    let identical = patterns::same_pattern(&txn.open_table(CONFIG_PATTERNS)?, key)?;
    for other_id in identical {
        if other_id == configuration_id {
            continue;
        }
        let Some(other) = get::<Configuration>(configs, &other_id)? else {
            continue;
        };
        if other.config_type == config_type
            && crate::validate::contradicts(config_type, content, &other.content)
        {
            return Err(StoreError::Conflict(format!(
                "Path pattern is identical to existing configuration '{other_id}' ({}), with different content",
                other.name
            )));
        }
    }
    Ok(())
}

/// Meta key holding the [`INDEX_VERSION`] the derived index tables were built with.
const INDEXES_KEY: &str = "indexes";
/// Layout of the derived index tables. Change it whenever their keys change meaning (for
/// instance what `validate::literal_prefix` cuts), so that stores built before are rebuilt.
const INDEX_VERSION: u8 = 1;

/// Builds the derived index tables from the records they index, for a store written before
/// they existed or with another [`INDEX_VERSION`]; from then on the commands keep them.
pub(crate) fn build_indexes(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta
        .get(INDEXES_KEY)?
        .is_some_and(|built| built.value() == [INDEX_VERSION].as_slice())
    {
        return Ok(());
    }
    txn.open_table(CONFIG_PATTERNS)?.retain(|_, _| false)?;
    txn.open_table(RUNNING)?.retain(|_, _| false)?;
    let configurations: Vec<Configuration> = {
        let configs = txn.open_table(CONFIGS)?;
        let mut out = Vec::new();
        for entry in configs.iter()? {
            out.push(codec::decode(entry?.1.value())?);
        }
        out
    };
    for configuration in &configurations {
        patterns::insert(
            txn,
            &configuration.configuration_id,
            &IndexKey::of(configuration.config_type, &configuration.content),
        )?;
    }
    let deployments: Vec<Deployment> = {
        let table = txn.open_table(DEPLOYMENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(codec::decode(entry?.1.value())?);
        }
        out
    };
    for deployment in &deployments {
        track_running(txn, deployment)?;
    }
    meta.insert(INDEXES_KEY, [INDEX_VERSION].as_slice())?;
    Ok(())
}

/// Keeps the desired versions, each edge's reported view, and the configuration's
/// `isDeployed` / `deployedLocations` (and each version's `isDeployed`) true to the acks.
fn record_edge_versions(
    txn: &WriteTransaction,
    configuration_id: &str,
    edge_versions: &[(String, Option<String>)],
) -> Result<(), StoreError> {
    let mut desired = txn.open_table(DESIRED)?;
    let mut edges = txn.open_table(EDGES)?;
    for (location, version) in edge_versions {
        match version {
            Some(version) => {
                desired.insert((location.as_str(), configuration_id), version.as_str())?;
            }
            None => {
                desired.remove((location.as_str(), configuration_id))?;
            }
        }
        if let Some(mut record) = get::<EdgeRecord>(&edges, location)? {
            match version {
                Some(version) => {
                    record
                        .location
                        .active_configurations
                        .insert(configuration_id.to_string(), version.clone());
                }
                None => {
                    record
                        .location
                        .active_configurations
                        .remove(configuration_id);
                }
            }
            edges.insert(location.as_str(), codec::encode(&record)?.as_slice())?;
        }
    }
    // Recompute the configuration's deployment view from the desired table.
    let mut running: std::collections::BTreeMap<String, String> = Default::default();
    for entry in desired.iter()? {
        let (key, value) = entry?;
        let (location, config) = key.value();
        if config == configuration_id {
            running.insert(location.to_string(), value.value().to_string());
        }
    }
    let mut configs = txn.open_table(CONFIGS)?;
    if let Some(mut config) = get::<Configuration>(&configs, configuration_id)? {
        config.deployed_locations = running.keys().cloned().collect();
        config.is_deployed = !running.is_empty();
        configs.insert(configuration_id, codec::encode(&config)?.as_slice())?;
    }
    let mut versions = txn.open_table(VERSIONS)?;
    let mut changed = Vec::new();
    for entry in versions.range((configuration_id, 0)..=(configuration_id, u64::MAX))? {
        let (key, value) = entry?;
        let mut version: ConfigurationVersion = codec::decode(value.value())?;
        let deployed = running.values().any(|v| *v == version.version);
        if version.is_deployed != deployed {
            version.is_deployed = deployed;
            changed.push((key.value().1, version));
        }
    }
    for (seq, version) in changed {
        versions.insert((configuration_id, seq), codec::encode(&version)?.as_slice())?;
    }
    Ok(())
}

fn update_edge(
    txn: &WriteTransaction,
    location_id: &str,
    change: impl FnOnce(&mut EdgeRecord),
) -> Result<Applied, StoreError> {
    let mut edges = txn.open_table(EDGES)?;
    let mut record: EdgeRecord = get(&edges, location_id)?
        .ok_or_else(|| StoreError::NotFound(format!("edge location '{location_id}'")))?;
    change(&mut record);
    edges.insert(location_id, codec::encode(&record)?.as_slice())?;
    Ok(Applied::Edge(Box::new(record)))
}

fn find_version(
    txn: &WriteTransaction,
    configuration_id: &str,
    version: &str,
) -> Result<(u64, ConfigurationVersion), StoreError> {
    let versions = txn.open_table(VERSIONS)?;
    for entry in versions.range((configuration_id, 0)..=(configuration_id, u64::MAX))? {
        let (k, v) = entry?;
        let candidate: ConfigurationVersion = codec::decode(v.value())?;
        if candidate.version == version {
            return Ok((k.value().1, candidate));
        }
    }
    Err(StoreError::NotFound(format!(
        "version {version} of configuration '{configuration_id}'"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, Timestamp};
    use crate::store::{Store, command::LogEntry};

    fn create_user(username: &str) -> CommandEnvelope {
        let now = Timestamp::now();
        CommandEnvelope::new(
            "test",
            format!("trace-{username}"),
            Command::CreateUser {
                user: User {
                    username: username.into(),
                    role: Role::Developer,
                    password_hash: "hash".into(),
                    created_at: now,
                    updated_at: now,
                },
            },
        )
    }

    fn delete_user(username: &str) -> CommandEnvelope {
        CommandEnvelope::new(
            "test",
            "",
            Command::DeleteUser {
                username: username.into(),
            },
        )
    }

    /// The whole command log, checked to be numbered 1, 2, 3, … with no gap.
    fn log_without_gaps(store: &Store) -> Vec<LogEntry> {
        let log = store.reader().unwrap().log_entries(1, usize::MAX).unwrap();
        for (position, entry) in log.iter().enumerate() {
            assert_eq!(entry.index, position as u64 + 1, "log: {log:?}");
        }
        log
    }

    fn usernames(store: &Store) -> Vec<String> {
        let users = store.reader().unwrap().users().unwrap();
        users.into_iter().map(|u| u.username).collect()
    }

    #[test]
    fn a_command_failing_its_precondition_in_a_batch_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch = [
            create_user("alice"),
            // Conflicts with the create just before it in the same batch.
            create_user("alice"),
            create_user("bob"),
            // Sees alice, created earlier in the batch.
            delete_user("alice"),
            // Sees that alice is gone again.
            create_user("alice"),
            delete_user("carol"),
            create_user("dave"),
        ];
        let outcomes = store.apply_batch_blocking(&batch);
        let failed: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, true, false, false, false, true, false]);
        assert!(matches!(outcomes[1], Err(StoreError::Conflict(_))));
        assert!(matches!(outcomes[5], Err(StoreError::NotFound(_))));
        assert_eq!(usernames(&store), ["alice", "bob", "dave"]);

        // One log entry and one audit record per command that committed, in batch order.
        let log = log_without_gaps(&store);
        let committed: Vec<&CommandEnvelope> = batch
            .iter()
            .zip(&failed)
            .filter(|(_, failed)| !**failed)
            .map(|(envelope, _)| envelope)
            .collect();
        let logged: Vec<&CommandEnvelope> = log.iter().map(|entry| &entry.envelope).collect();
        assert_eq!(logged, committed);
        let audit = store
            .reader()
            .unwrap()
            .audit(&Default::default(), 0, 100)
            .unwrap();
        let mut audited: Vec<u64> = audit.items.iter().map(|r| r.log_index).collect();
        audited.sort_unstable();
        assert_eq!(audited, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_log_position_moves_only_with_commands_that_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let position = |store: &Store| store.reader().unwrap().last_log_position().unwrap();
        let audited = |store: &Store| {
            let audit = store.reader().unwrap().audit(&Default::default(), 0, 100);
            audit.unwrap().items.len()
        };
        assert_eq!(position(&store), (1, 0), "an empty log in the first term");
        let mut expected_index = 0;
        for (envelope, commits) in [
            (create_user("alice"), true),
            (create_user("alice"), false),
            (delete_user("carol"), false),
            (create_user("bob"), true),
            (delete_user("alice"), true),
            (delete_user("alice"), false),
        ] {
            let outcome = store.apply_batch_blocking(std::slice::from_ref(&envelope));
            assert_eq!(outcome[0].is_ok(), commits, "{envelope:?}: {outcome:?}");
            if commits {
                expected_index += 1;
            }
            // A refused command takes no index and leaves no audit record.
            assert_eq!(position(&store), (1, expected_index), "{envelope:?}");
            assert_eq!(audited(&store), expected_index as usize, "{envelope:?}");
        }
        let log = log_without_gaps(&store);
        assert!(log.iter().all(|entry| entry.term == 1), "{log:?}");
    }

    #[test]
    fn a_command_failing_after_it_wrote_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Writes its user, then fails: the user must not survive.
        let fails_late = |txn: &WriteTransaction, envelope: &CommandEnvelope| {
            let applied = apply_in(txn, envelope)?;
            if envelope.trace_id == "trace-mallory" {
                return Err(StoreError::Invalid("refused after writing".into()));
            }
            Ok(applied)
        };
        let batch = [
            create_user("alice"),
            create_user("mallory"),
            create_user("bob"),
        ];
        let outcomes = apply_batch_with(
            &store.shared.database().unwrap(),
            &batch,
            BatchLimits::default(),
            fails_late,
        );
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
        assert!(matches!(outcomes[1], Err(StoreError::Invalid(_))));
        assert_eq!(usernames(&store), ["alice", "bob"]);
        let log = log_without_gaps(&store);
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].envelope, batch[2]);
        let audit = store
            .reader()
            .unwrap()
            .audit(&Default::default(), 0, 100)
            .unwrap();
        let mut audited: Vec<u64> = audit.items.iter().map(|r| r.log_index).collect();
        audited.sort_unstable();
        assert_eq!(
            audited,
            [1, 2],
            "no audit record of the command that failed"
        );
    }

    #[test]
    fn a_batch_past_its_bounds_leaves_the_rest_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch = [create_user("a"), create_user("b"), create_user("c")];
        // Every log entry is over one byte: each batch takes exactly one command.
        let one_byte = BatchLimits {
            max_log_bytes: 1,
            max_failures: usize::MAX,
        };
        assert_eq!(
            apply_batch(&store.shared.database().unwrap(), &batch, one_byte).len(),
            1
        );
        assert_eq!(
            apply_batch(&store.shared.database().unwrap(), &batch[1..], one_byte).len(),
            1
        );

        // After its one allowed failure the batch stops at the failed command.
        let one_failure = BatchLimits {
            max_log_bytes: usize::MAX,
            max_failures: 1,
        };
        let batch = [
            create_user("c"),
            create_user("a"),
            create_user("d"),
            create_user("e"),
        ];
        let outcomes = apply_batch(&store.shared.database().unwrap(), &batch, one_failure);
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(StoreError::Conflict(_))));
        assert_eq!(usernames(&store), ["a", "b", "c"]);
        assert_eq!(log_without_gaps(&store).len(), 3);
    }
}
