//! The embedded store: one redb file holding configurations, versions, users, edges, the
//! numbered command log and the audit log.
//!
//! Every change goes through [`Store::apply`]: it checks the command's preconditions, applies
//! it, appends it to the command log (term, index) and writes its audit record, in a durable
//! write transaction it may share with the other commands waiting (`writer.rs`: group
//! commit); it answers only once that transaction is committed. Nothing else opens a write
//! transaction on these tables, which is what the replication log, the audit trail and the
//! crash tests rely on.
//!
//! An I/O error on the store file (a full disk, `EIO`, a failed fsync) poisons redb's handle:
//! every later transaction on it fails. The writer then refuses writes with the cause
//! (`health.rs`), closes the handle and reopens the file in the background with backoff — redb
//! repairs and checks it as after an unclean shutdown — and takes writes again once it is
//! open (and, after a full disk, once space was freed). Reads are served from the reopened
//! handle as soon as it is open. `faults.rs` is the seam that makes those failures on
//! request.

mod apply;
pub mod codec;
pub mod command;
mod counters;
mod deployments;
mod faults;
mod health;
mod patterns;
mod replica;
pub mod ring;
pub mod series;
pub mod snapshot;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

pub use faults::FaultInjector;
pub use health::{Refusal, StoreStatus};

pub use command::{
    Applied, AuditRecord, Command, CommandEnvelope, EdgeChanges, EdgeRecord, Freeze,
    HeartbeatRecord, LogEntry,
};
pub use deployments::DeploymentChanges;
pub use replica::{LeaderRecord, SyncGate};

pub use snapshot::{SnapshotMeta, restore_snapshot, verify_snapshot, write_offline_snapshot};

use crate::model::{Configuration, ConfigurationVersion, Deployment, User};

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const CONFIGS: TableDefinition<&str, &[u8]> = TableDefinition::new("configurations");
pub(crate) const CONFIG_NAMES: TableDefinition<&str, &str> =
    TableDefinition::new("configuration_names");
pub(crate) const VERSIONS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("configuration_versions");
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(crate) const EDGES: TableDefinition<&str, &[u8]> = TableDefinition::new("edge_locations");
pub(crate) const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
/// (locationId, configurationId) → the version that edge should run: what it last acknowledged
/// in a deployment. The reconciler pushes it again where an edge reports otherwise.
pub(crate) const DESIRED: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("desired_versions");
/// configurationId → the id of its one running (not terminal) deployment: the admission
/// preconditions read it instead of decoding every deployment.
pub(crate) const RUNNING: TableDefinition<&str, &str> = TableDefinition::new("running_deployments");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("command_log");

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "edgeplane.redb";

/// redb's page cache. Its default (1 GiB) is what a fleet of 10,000 edges writing metric
/// rings fills, far past the memory the control plane is meant to hold (SPEC §11: under
/// 256 MiB); pages beyond it are read again through the operating system's file cache. With
/// 10,000 edges, deployments to all of them filled 64 MiB and left the server at 290 MiB;
/// at 32 MiB it stays under 250 MiB and API reads keep their p99 under 10 ms.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    /// Refused because a global freeze is in effect.
    #[error("{0}")]
    Frozen(String),
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    /// A write refused because the data directory's filesystem is full; the message says how
    /// full and what to do.
    #[error("{0}")]
    StorageFull(String),
    /// Refused while the store recovers from an I/O error: writes until it has reopened its
    /// file (and, after a full disk, space was freed), reads until the file is open again.
    #[error("{0}")]
    Recovering(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Refused because this node is not the primary (SPEC §9).
    #[error("{0}")]
    NotLeader(String),
}

macro_rules! storage_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(error: $t) -> Self {
                StoreError::Unavailable(error.to_string())
            }
        }
    )*};
}
impl From<series::SeriesError> for StoreError {
    fn from(error: series::SeriesError) -> Self {
        match error {
            series::SeriesError::Storage(error) => StoreError::Unavailable(error.to_string()),
            series::SeriesError::Encoding(error) => StoreError::Corrupt(error.to_string()),
        }
    }
}

storage_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A cheap handle to the store; clones share one database and its writer, which stops once
/// the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Arc<writer::Writer>,
    replication: Arc<replica::Replication>,
}

/// How the store recovers from an I/O error.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// First wait between two attempts to reopen the file; it doubles up to `reopen_backoff_max`.
    pub reopen_backoff: Duration,
    pub reopen_backoff_max: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            reopen_backoff: Duration::from_millis(200),
            reopen_backoff_max: Duration::from_secs(10),
        }
    }
}

/// What the handles and the writer thread share: the database (swapped on reopen), its
/// health and the fault seam.
pub(crate) struct Shared {
    /// `None` while the file is closed between an I/O error and its reopening.
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    faults: FaultInjector,
    health: health::StoreHealth,
    options: StoreOptions,
}

impl Shared {
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                StoreError::Recovering(
                    "the store file is being reopened after an I/O error; retry shortly".into(),
                )
            })
    }

    /// Drops the store's own handle on the database: once readers still in it finish, the
    /// file is closed and can be opened again.
    fn close(&self) {
        self.health.set_readable(false);
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Opens the file again, with redb's integrity check (it was left by a failed write).
    fn reopen(&self) -> Result<(), StoreError> {
        let db = open_database(&self.path, &self.faults, true)?;
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
        self.health.set_readable(true);
        Ok(())
    }
}

/// Opens (or creates) the store file behind the fault seam.
fn open_database(
    path: &Path,
    faults: &FaultInjector,
    check_integrity: bool,
) -> Result<Database, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let backend =
        faults::FaultyBackend::new(redb::backends::FileBackend::new(file)?, faults.clone());
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(check_integrity);
    builder.set_cache_size(CACHE_BYTES);
    Ok(builder.create_with_backend(backend)?)
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
}

impl Store {
    /// Opens (or creates) the store file in `data_dir`, creating every table.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// [`Store::open`] with recovery settings of one's own.
    pub fn open_with(data_dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(STORE_FILE);
        let faults = FaultInjector::default();
        let db = open_database(&path, &faults, false)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(META)?;
            txn.open_table(CONFIGS)?;
            txn.open_table(CONFIG_NAMES)?;
            txn.open_table(VERSIONS)?;
            txn.open_table(USERS)?;
            txn.open_table(EDGES)?;
            txn.open_table(DEPLOYMENTS)?;
            txn.open_table(DESIRED)?;
            txn.open_table(RUNNING)?;
            txn.open_table(patterns::CONFIG_PATTERNS)?;
            txn.open_table(deployments::DEPLOYMENT_EDGES)?;
            txn.open_table(deployments::DEPLOYMENT_EVENTS)?;
            txn.open_table(deployments::DEPLOYMENT_WAVES)?;
            txn.open_table(AUDIT)?;
            txn.open_table(LOG)?;
        }
        deployments::split_whole_records(&txn)?;
        apply::build_indexes(&txn)?;
        series::migrate_legacy(&txn)?;
        let (_, last_index) = apply::last_log_position(&txn)?;
        txn.commit()?;
        let replication = Arc::new(replica::Replication::new(last_index));
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            health: health::StoreHealth::new(data_dir, &path, faults.clone()),
            path,
            faults,
            options,
        });
        Ok(Self {
            writer: Arc::new(writer::Writer::start(shared.clone(), replication.clone())?),
            shared,
            replication,
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The fault seam: makes the store file's writes fail on request (tests, drills).
    pub fn faults(&self) -> &FaultInjector {
        &self.shared.faults
    }

    /// Whether writes are taken, why not, and the disk figures.
    pub fn status(&self) -> StoreStatus {
        self.shared.health.status()
    }

    /// Free space on the data directory's filesystem below which metric samples are no longer
    /// stored, so configuration and deployment writes still fit; 0 keeps none.
    pub fn set_free_space_reserve(&self, bytes: u64) {
        self.shared.health.set_reserve(bytes);
    }

    /// Free space has fallen below the reserve of [`Store::set_free_space_reserve`].
    pub fn below_free_space_reserve(&self) -> bool {
        self.shared.health.below_reserve()
    }

    /// Asks the filesystem for free space and file size now rather than at the next probe.
    pub fn probe_disk(&self) {
        self.shared.health.probe_disk();
    }

    /// Applies one command durably (see the module doc) on the writer thread.
    pub async fn apply(&self, envelope: CommandEnvelope) -> Result<Applied, StoreError> {
        self.check_writable()?;
        self.writer.apply(envelope).await
    }

    /// The synchronous form of [`Store::apply`], for offline commands and tests.
    pub fn apply_blocking(&self, envelope: CommandEnvelope) -> Result<Applied, StoreError> {
        self.check_writable()?;
        self.writer.apply_blocking(envelope)
    }

    /// Applies `envelopes` in order in one durable write transaction, one result each: every
    /// command sees the state the ones before it left, and one that fails is left out whole
    /// while the others commit. Blocking; for callers that hold a batch of their own.
    pub fn apply_batch_blocking(
        &self,
        envelopes: &[CommandEnvelope],
    ) -> Vec<Result<Applied, StoreError>> {
        if !self.is_writable() {
            return envelopes
                .iter()
                .map(|_| self.check_writable())
                .map(|r| r.map(|()| Applied::Nothing))
                .collect();
        }
        let unbounded = apply::BatchLimits {
            max_log_bytes: usize::MAX,
            max_failures: usize::MAX,
        };
        if !self.shared.health.is_writable() {
            let refusal = self.shared.health.refusal_error();
            return envelopes.iter().map(|_| Err(refusal.clone())).collect();
        }
        match self.shared.database() {
            Ok(db) => apply::apply_batch(&db, envelopes, unbounded),
            Err(error) => envelopes.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// Runs a read-only closure on a snapshot, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || {
            let reader = store.reader()?;
            f(&reader)
        })
        .await
    }

    /// A consistent read snapshot.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Ok(Reader {
            txn: self.shared.database()?.begin_read()?,
        })
    }
}

async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

/// A read snapshot of the store.
pub struct Reader {
    txn: redb::ReadTransaction,
}

impl Reader {
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    pub fn configuration(&self, id: &str) -> Result<Option<Configuration>, StoreError> {
        let table = self.txn.open_table(CONFIGS)?;
        table.get(id)?.map(|v| codec::decode(v.value())).transpose()
    }

    pub fn configuration_by_name(&self, name: &str) -> Result<Option<Configuration>, StoreError> {
        let names = self.txn.open_table(CONFIG_NAMES)?;
        match names.get(name)? {
            Some(id) => self.configuration(id.value()),
            None => Ok(None),
        }
    }

    /// The stored configurations of `config_type` whose path pattern could overlap the one of
    /// `content` (every certificate, for a certificate), found through the pattern index.
    pub fn pattern_candidates(
        &self,
        config_type: crate::model::ConfigType,
        content: &serde_json::Value,
    ) -> Result<Vec<Configuration>, StoreError> {
        let index = self.txn.open_table(patterns::CONFIG_PATTERNS)?;
        let key = patterns::IndexKey::of(config_type, content);
        let mut out = Vec::new();
        for (configuration_id, _) in patterns::candidates(&index, &key)? {
            if let Some(configuration) = self.configuration(&configuration_id)? {
                out.push(configuration);
            }
        }
        Ok(out)
    }

    /// Every configuration, in id order.
    pub fn configurations(&self) -> Result<Vec<Configuration>, StoreError> {
        let table = self.txn.open_table(CONFIGS)?;
        let mut out = Vec::with_capacity(table.len()? as usize);
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(codec::decode(value.value())?);
        }
        Ok(out)
    }

    /// Versions of a configuration, oldest first.
    pub fn versions(
        &self,
        configuration_id: &str,
    ) -> Result<Vec<ConfigurationVersion>, StoreError> {
        let table = self.txn.open_table(VERSIONS)?;
        let mut out = Vec::new();
        for entry in table.range((configuration_id, 0)..=(configuration_id, u64::MAX))? {
            let (_, value) = entry?;
            out.push(codec::decode(value.value())?);
        }
        Ok(out)
    }

    pub fn version(
        &self,
        configuration_id: &str,
        version: &str,
    ) -> Result<Option<ConfigurationVersion>, StoreError> {
        Ok(self
            .versions(configuration_id)?
            .into_iter()
            .find(|v| v.version == version))
    }

    pub fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let table = self.txn.open_table(USERS)?;
        table
            .get(username)?
            .map(|v| codec::decode(v.value()))
            .transpose()
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let table = self.txn.open_table(USERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(codec::decode(value.value())?);
        }
        Ok(out)
    }

    pub fn user_count(&self) -> Result<u64, StoreError> {
        Ok(self.txn.open_table(USERS)?.len()?)
    }

    pub fn edge(&self, location_id: &str) -> Result<Option<EdgeRecord>, StoreError> {
        let table = self.txn.open_table(EDGES)?;
        table
            .get(location_id)?
            .map(|v| codec::decode(v.value()))
            .transpose()
    }

    pub fn edges(&self) -> Result<Vec<EdgeRecord>, StoreError> {
        let table = self.txn.open_table(EDGES)?;
        let mut out = Vec::with_capacity(table.len()? as usize);
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(codec::decode(value.value())?);
        }
        Ok(out)
    }

    /// Edges `offset..offset + limit` in id order, out of all of them: only the page is
    /// decoded, so listing a fleet of thousands costs one page, not the fleet.
    pub fn edges_page(&self, offset: usize, limit: usize) -> Result<Page<EdgeRecord>, StoreError> {
        let table = self.txn.open_table(EDGES)?;
        let total = table.len()? as usize;
        let mut items = Vec::with_capacity(limit.min(total.saturating_sub(offset)));
        for entry in table.iter()?.skip(offset).take(limit) {
            let (_, value) = entry?;
            items.push(codec::decode(value.value())?);
        }
        Ok(Page { items, total })
    }

    /// A deployment, its edges and timeline put back together.
    pub fn deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        deployments::read(
            &self.txn.open_table(DEPLOYMENTS)?,
            &self.txn.open_table(deployments::DEPLOYMENT_WAVES)?,
            &self.txn.open_table(deployments::DEPLOYMENT_EDGES)?,
            &self.txn.open_table(deployments::DEPLOYMENT_EVENTS)?,
            id,
        )
    }

    pub fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let table = self.txn.open_table(DEPLOYMENTS)?;
        let waves = self.txn.open_table(deployments::DEPLOYMENT_WAVES)?;
        let edges = self.txn.open_table(deployments::DEPLOYMENT_EDGES)?;
        let events = self.txn.open_table(deployments::DEPLOYMENT_EVENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, _) = entry?;
            if let Some(deployment) =
                deployments::read(&table, &waves, &edges, &events, key.value())?
            {
                out.push(deployment);
            }
        }
        Ok(out)
    }

    /// Every (location, configuration, version) the fleet should be running.
    pub fn desired_versions(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let table = self.txn.open_table(DESIRED)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let (location, config) = key.value();
            out.push((
                location.to_string(),
                config.to_string(),
                value.value().to_string(),
            ));
        }
        Ok(out)
    }

    pub fn freeze(&self) -> Result<Option<Freeze>, StoreError> {
        match self.meta(apply::FREEZE_KEY)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// An edge's metric samples with interval starts in `[from, to)`.
    pub fn series(
        &self,
        edge_id: &str,
        from: crate::model::Timestamp,
        to: crate::model::Timestamp,
        now: crate::model::Timestamp,
    ) -> Result<Vec<(crate::model::Timestamp, crate::model::MetricsSample)>, StoreError> {
        Ok(series::read_range_in(&self.txn, edge_id, from, to, now)?)
    }

    /// The server-wide default RollbackConfig.
    pub fn thresholds(&self) -> Result<crate::model::RollbackConfig, StoreError> {
        match self.meta(apply::THRESHOLDS_KEY)? {
            Some(bytes) => codec::decode(&bytes),
            None => Ok(crate::model::RollbackConfig::default()),
        }
    }

    /// Audit records matching the filter, newest first.
    pub fn audit(
        &self,
        filter: &AuditFilter,
        offset: usize,
        limit: usize,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let table = self.txn.open_table(AUDIT)?;
        let mut matched = Vec::new();
        for entry in table.iter()?.rev() {
            let (_, value) = entry?;
            let record: AuditRecord = codec::decode(value.value())?;
            if filter.matches(&record) {
                matched.push(record);
            }
        }
        let total = matched.len();
        let items = matched.into_iter().skip(offset).take(limit).collect();
        Ok(Page { items, total })
    }

    /// Command log entries from `from_index` on, at most `limit` of them.
    pub fn log_entries(&self, from_index: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let table = self.txn.open_table(LOG)?;
        let mut out = Vec::new();
        for entry in table.range(from_index..)?.take(limit) {
            let (_, value) = entry?;
            out.push(codec::decode(value.value())?);
        }
        Ok(out)
    }

    /// (term, index) of the last log entry, or of the last one compaction dropped; (current
    /// term, 0) for a log that never had one.
    pub fn last_log_position(&self) -> Result<(u64, u64), StoreError> {
        let table = self.txn.open_table(LOG)?;
        let last = table.last()?;
        match last {
            Some((_, value)) => {
                let entry: LogEntry = codec::decode(value.value())?;
                Ok((entry.term, entry.index))
            }
            None => match self.compacted_position()? {
                Some(position) => Ok(position),
                None => Ok((apply::current_term_of(&self.meta(apply::TERM_KEY)?), 0)),
            },
        }
    }
}

/// Filter of GET /api/v1/audit.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Matches the entity id or the entity type.
    pub entity: Option<String>,
    pub user: Option<String>,
    pub since: Option<crate::model::Timestamp>,
}

impl AuditFilter {
    fn matches(&self, record: &AuditRecord) -> bool {
        self.entity
            .as_deref()
            .is_none_or(|e| record.entity_id == e || record.entity_type == e)
            && self.user.as_deref().is_none_or(|u| record.actor == u)
            && self.since.is_none_or(|s| record.at >= s)
    }
}
