//! What replication asks of the store: a primary's log entries applied at their own (term,
//! index), the log's applied prefix dropped, a snapshot's content taken in place, a digest of
//! the content, the fence that keeps a node that is not primary from writing, and the gate
//! that holds acknowledgements until the standby holds a batch (sync replication). The
//! writes of replication run on the store's writer thread, so a failing disk is recovered
//! from on a standby as on a primary.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::apply::{
    COMPACTED_KEY, LEADER_KEY, TERM_KEY, append_log_and_audit_at, apply_in, compacted_position_of,
    current_term_of, last_log_position,
};
use super::snapshot::{TABLES, with_table};
use super::{LOG, LogEntry, META, Reader, STORE_FILE, Store, StoreError, codec};

/// The node that became primary at a term, as its promotion recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub term: u64,
    pub node_id: String,
    pub url: String,
}

/// Replication state every clone of a [`Store`] shares.
pub(crate) struct Replication {
    /// False on a standby and on a primary that learnt of a higher term: `apply` refuses.
    writable: AtomicBool,
    /// Index of the last log entry committed by the writer.
    commits: watch::Sender<u64>,
    pub(crate) gate: SyncGate,
}

impl Replication {
    pub(crate) fn new(last_index: u64) -> Self {
        let gate = SyncGate::default();
        gate.committed(last_index);
        Self {
            writable: AtomicBool::new(true),
            commits: watch::channel(last_index).0,
            gate,
        }
    }

    pub(crate) fn committed(&self, index: u64) {
        self.commits.send_if_modified(|last| {
            let newer = index > *last;
            if newer {
                *last = index;
            }
            newer
        });
        self.gate.committed(index);
    }
}

/// Holds the answers to a committed batch until the standby acknowledges its last index, or
/// `timeout` passes; after a timeout the primary goes on alone (degraded) until the standby
/// has caught up with everything committed.
#[derive(Default)]
pub struct SyncGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    enabled: bool,
    timeout: Duration,
    acked: u64,
    committed: u64,
    degraded: bool,
}

impl SyncGate {
    /// Turns waiting on (sync replication on a primary) or off. Turned on, it waits only
    /// once the standby has caught up: until then the primary goes on alone (degraded).
    pub fn configure(&self, enabled: bool, timeout: Duration) {
        if let Ok(mut state) = self.state.lock() {
            state.enabled = enabled;
            state.timeout = timeout;
            state.degraded = enabled && state.acked < state.committed;
        }
        self.changed.notify_all();
    }

    /// The standby holds every entry up to `index` durably.
    pub fn ack(&self, index: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.acked = state.acked.max(index);
            if state.degraded && state.acked >= state.committed {
                state.degraded = false;
                tracing::info!(index, "the standby caught up: writes wait for it again");
            }
        }
        self.changed.notify_all();
    }

    /// The index the standby last acknowledged.
    pub fn acked(&self) -> u64 {
        self.state.lock().map(|s| s.acked).unwrap_or(0)
    }

    /// Whether the primary is going on without its standby.
    pub fn is_degraded(&self) -> bool {
        self.state.lock().map(|s| s.degraded).unwrap_or(false)
    }

    fn committed(&self, index: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.committed = state.committed.max(index);
        }
    }

    /// Whether answers must wait at all: sync replication on and the standby not given up.
    pub(crate) fn holds(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.enabled && !s.degraded)
            .unwrap_or(false)
    }

    /// Blocks until `index` is acknowledged, the timeout passes (then degraded) or waiting is
    /// turned off.
    pub(crate) fn wait(&self, index: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let deadline = Instant::now() + state.timeout;
        while state.enabled && !state.degraded && state.acked < index {
            let now = Instant::now();
            if now >= deadline {
                state.degraded = true;
                tracing::warn!(
                    index,
                    acked = state.acked,
                    "the standby did not acknowledge within cluster.sync_timeout: going on alone"
                );
                break;
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(_) => return,
            };
        }
    }
}

impl Store {
    /// Lets `apply` through (primary) or refuses it with `NotLeader` (standby, stepped down).
    pub fn set_writable(&self, writable: bool) {
        self.replication.writable.store(writable, Ordering::SeqCst);
    }

    pub fn is_writable(&self) -> bool {
        self.replication.writable.load(Ordering::SeqCst)
    }

    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        if self.is_writable() {
            Ok(())
        } else {
            Err(StoreError::NotLeader(
                "this node is not the primary".to_string(),
            ))
        }
    }

    /// Index of the last log entry committed, changing as the writer commits.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.replication.commits.subscribe()
    }

    /// The sync-replication gate of this store's writer.
    pub fn sync_gate(&self) -> &SyncGate {
        &self.replication.gate
    }

    /// Applies a primary's log entries in order at their own (term, index), in one durable
    /// write transaction, so this log stays identical to the primary's. The first entry must
    /// follow this log's last; an entry whose command fails here means the two stores
    /// differ, and nothing of the batch is kept. Answers the new last (term, index).
    ///
    /// It runs on the writer thread: an I/O error stops writes and reopens the file as for a
    /// command, the batch is answered with the refusal (`Recovering`, `StorageFull`) and
    /// nothing of it is kept, so the log, and what the standby acknowledges, never goes past
    /// what is durable. The caller applies it again once writes resume.
    pub fn apply_replicated(&self, entries: Vec<LogEntry>) -> Result<(u64, u64), StoreError> {
        let position = self
            .writer
            .run_alone(move |db| apply_entries(db, &entries))?;
        self.replication.committed(position.1);
        Ok(position)
    }

    /// Drops the log entries up to `up_to` (never past the last one) and remembers the
    /// (term, index) of the last one dropped. Answers how many were dropped. On the writer
    /// thread, like [`Store::apply_replicated`].
    pub fn compact_log(&self, up_to: u64) -> Result<u64, StoreError> {
        self.writer.run_alone(move |db| compact(db, up_to))
    }

    /// Replaces this store's whole content with that of the store restored in `source_dir`
    /// (a snapshot of the primary whose last log entry is `position`), in one durable
    /// transaction: a reader sees the old content or the new, never a mix. The log goes on
    /// after `position`; entries this store had beyond it are dropped. On the writer thread,
    /// like [`Store::apply_replicated`].
    pub fn install_from(&self, source_dir: &Path, position: (u64, u64)) -> Result<(), StoreError> {
        let source_dir = source_dir.to_path_buf();
        self.writer
            .run_alone(move |db| install(db, &source_dir, position))?;
        self.replication.committed(position.1);
        Ok(())
    }

    /// SHA-256 of every table's content but the command log (whose retained part depends on
    /// when each node compacted it) and the node's own log bookkeeping: two nodes that applied
    /// the same log have the same digest. [`Store::content_digest`] covers the log too, so it
    /// tells a backup from its source, not a standby from its primary.
    pub fn replicated_content_digest(&self) -> Result<String, StoreError> {
        let txn = self.shared.database()?.begin_read()?;
        let mut hasher = Sha256::new();
        for name in TABLES {
            if *name == LOG.name() || *name == META.name() {
                continue;
            }
            with_table!(*name, hash_table(&txn, &mut hasher))?;
        }
        let meta = txn.open_table(META)?;
        hasher.update(META.name().as_bytes());
        for entry in meta.iter()? {
            let (key, value) = entry?;
            if key.value() == COMPACTED_KEY {
                continue;
            }
            hasher.update(key.value().as_bytes());
            hasher.update(value.value());
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// [`Store::apply_replicated`]'s transaction.
fn apply_entries(db: &redb::Database, entries: &[LogEntry]) -> Result<(u64, u64), StoreError> {
    let txn = db.begin_write()?;
    let (_, mut last) = last_log_position(&txn)?;
    for entry in entries {
        if entry.index != last + 1 {
            return Err(StoreError::Invalid(format!(
                "log entry {} does not follow entry {last}",
                entry.index
            )));
        }
        {
            let mut meta = txn.open_table(META)?;
            let raw = meta.get(TERM_KEY)?.map(|v| v.value().to_vec());
            if entry.term > current_term_of(&raw) {
                meta.insert(TERM_KEY, entry.term.to_be_bytes().as_slice())?;
            }
        }
        apply_in(&txn, &entry.envelope).map_err(|error| match error {
            // The disk failed, not the entry: the batch is tried again once writes resume.
            StoreError::Unavailable(_) => error,
            error => StoreError::Corrupt(format!(
                "replicated log entry {} (term {}) does not apply here: {error}",
                entry.index, entry.term
            )),
        })?;
        append_log_and_audit_at(&txn, &entry.envelope, entry.term, entry.index)?;
        last = entry.index;
    }
    let position = last_log_position(&txn)?;
    txn.commit()?;
    Ok(position)
}

/// [`Store::compact_log`]'s transaction.
fn compact(db: &redb::Database, up_to: u64) -> Result<u64, StoreError> {
    let txn = db.begin_write()?;
    let dropped = {
        let mut log = txn.open_table(LOG)?;
        let Some(first) = log.first()?.map(|(k, _)| k.value()) else {
            return Ok(0);
        };
        let last = log.last()?.map(|(k, _)| k.value()).unwrap_or(first);
        let up_to = up_to.min(last);
        if up_to < first {
            return Ok(0);
        }
        let term = match log.get(up_to)? {
            Some(value) => codec::decode::<LogEntry>(value.value())?.term,
            None => return Ok(0),
        };
        log.retain_in(first..=up_to, |_, _| false)?;
        let mut position = [0u8; 16];
        position[..8].copy_from_slice(&term.to_be_bytes());
        position[8..].copy_from_slice(&up_to.to_be_bytes());
        txn.open_table(META)?
            .insert(COMPACTED_KEY, position.as_slice())?;
        up_to - first + 1
    };
    txn.commit()?;
    Ok(dropped)
}

/// [`Store::install_from`]'s transaction.
fn install(db: &redb::Database, source_dir: &Path, position: (u64, u64)) -> Result<(), StoreError> {
    let source = redb::Database::open(source_dir.join(STORE_FILE))?;
    let from = source.begin_read()?;
    let txn = db.begin_write()?;
    for name in TABLES {
        if *name == LOG.name() {
            continue;
        }
        with_table!(*name, copy_table(&from, &txn))?;
    }
    txn.open_table(LOG)?.retain(|_, _| false)?;
    {
        let mut meta = txn.open_table(META)?;
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&position.0.to_be_bytes());
        raw[8..].copy_from_slice(&position.1.to_be_bytes());
        meta.insert(COMPACTED_KEY, raw.as_slice())?;
        let term = meta.get(TERM_KEY)?.map(|v| v.value().to_vec());
        if current_term_of(&term) < position.0 {
            meta.insert(TERM_KEY, position.0.to_be_bytes().as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    table: TableDefinition<K, V>,
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
) -> Result<(), StoreError> {
    let mut target = to.open_table(table)?;
    target.retain(|_, _| false)?;
    let source = match from.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
    }
    Ok(())
}

fn hash_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    table: TableDefinition<K, V>,
    txn: &ReadTransaction,
    hasher: &mut Sha256,
) -> Result<(), StoreError> {
    hasher.update(table.name().as_bytes());
    let source = match txn.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for entry in source.iter()? {
        let (key, value) = entry?;
        let (key, value) = (key.value(), value.value());
        let key_bytes = K::as_bytes(&key);
        let value_bytes = V::as_bytes(&value);
        hasher.update((key_bytes.as_ref().len() as u64).to_be_bytes());
        hasher.update(key_bytes.as_ref());
        hasher.update((value_bytes.as_ref().len() as u64).to_be_bytes());
        hasher.update(value_bytes.as_ref());
    }
    Ok(())
}

impl Reader {
    /// The term this node knows as the newest.
    pub fn current_term(&self) -> Result<u64, StoreError> {
        Ok(current_term_of(&self.meta(TERM_KEY)?))
    }

    /// The node promoted at the newest term, if any promotion is in the log.
    pub fn leader(&self) -> Result<Option<LeaderRecord>, StoreError> {
        self.meta(LEADER_KEY)?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
    }

    /// (term, index) of the last entry compaction dropped.
    pub fn compacted_position(&self) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(compacted_position_of(self.meta(COMPACTED_KEY)?.as_deref()))
    }

    /// Term of the entry at `index`, if this log still knows it (index 0: before the log).
    pub fn term_at(&self, index: u64) -> Result<Option<u64>, StoreError> {
        if index == 0 {
            return Ok(Some(0));
        }
        if let Some((term, compacted)) = self.compacted_position()?
            && compacted == index
        {
            return Ok(Some(term));
        }
        let table = self.txn.open_table(LOG)?;
        table
            .get(index)?
            .map(|v| codec::decode::<LogEntry>(v.value()).map(|e| e.term))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, Timestamp, User};
    use crate::store::{Command, CommandEnvelope};

    fn create_user(username: &str) -> CommandEnvelope {
        let at = Timestamp::from_millis(1_700_000_000_000);
        CommandEnvelope {
            actor: "test".into(),
            trace_id: String::new(),
            at,
            command: Command::CreateUser {
                user: User {
                    username: username.into(),
                    role: Role::Developer,
                    password_hash: "hash".into(),
                    created_at: at,
                    updated_at: at,
                },
            },
        }
    }

    #[test]
    fn a_replica_applying_the_log_has_the_primarys_log_and_content() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let primary = Store::open(a.path()).unwrap();
        let replica = Store::open(b.path()).unwrap();
        for name in ["ann", "bob", "cy"] {
            primary.apply_blocking(create_user(name)).unwrap();
        }
        assert!(primary.apply_blocking(create_user("bob")).is_err());
        let entries = primary.reader().unwrap().log_entries(1, 100).unwrap();
        assert_eq!(
            replica.apply_replicated(entries[..2].to_vec()).unwrap(),
            (1, 2)
        );
        // An entry that does not follow the last one is refused whole.
        assert!(replica.apply_replicated(entries[..1].to_vec()).is_err());
        assert_eq!(
            replica.apply_replicated(entries[2..].to_vec()).unwrap(),
            (1, 3)
        );
        assert_eq!(
            replica.reader().unwrap().log_entries(1, 100).unwrap(),
            entries
        );
        assert_eq!(
            primary.replicated_content_digest().unwrap(),
            replica.replicated_content_digest().unwrap()
        );
        replica.apply_blocking(create_user("dee")).unwrap();
        assert_ne!(
            primary.replicated_content_digest().unwrap(),
            replica.replicated_content_digest().unwrap()
        );
    }

    #[test]
    fn a_fenced_store_refuses_commands_but_takes_replicated_entries() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let primary = Store::open(a.path()).unwrap();
        let replica = Store::open(b.path()).unwrap();
        replica.set_writable(false);
        assert!(matches!(
            replica.apply_blocking(create_user("ann")),
            Err(StoreError::NotLeader(_))
        ));
        primary.apply_blocking(create_user("ann")).unwrap();
        let entries = primary.reader().unwrap().log_entries(1, 100).unwrap();
        replica.apply_replicated(entries).unwrap();
        assert!(replica.reader().unwrap().user("ann").unwrap().is_some());
    }

    #[test]
    fn a_replicated_batch_the_disk_fails_is_not_kept_and_applies_once_writes_resume() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let primary = Store::open(a.path()).unwrap();
        let replica = Store::open_with(
            b.path(),
            crate::store::StoreOptions {
                reopen_backoff: Duration::from_millis(5),
                reopen_backoff_max: Duration::from_millis(50),
            },
        )
        .unwrap();
        replica.set_writable(false);
        for name in ["ann", "bob", "cy"] {
            primary.apply_blocking(create_user(name)).unwrap();
        }
        let entries = primary.reader().unwrap().log_entries(1, 100).unwrap();
        replica.apply_replicated(entries[..1].to_vec()).unwrap();

        // The commit fails, then the first attempt to reopen the file.
        replica.faults().fail_writes(2, std::io::ErrorKind::Other);
        let refused = replica.apply_replicated(entries[1..].to_vec());
        assert!(
            matches!(refused, Err(StoreError::Recovering(_))),
            "{refused:?}"
        );
        // What `/ready` reports, and nothing acknowledged past what is durable.
        let status = replica.status();
        assert!(!status.writable, "{status:?}");
        assert_eq!(status.refusal, Some(crate::store::Refusal::Io));
        assert_eq!(*replica.commits().borrow(), 1);

        let deadline = Instant::now() + Duration::from_secs(20);
        while !replica.status().writable {
            assert!(Instant::now() < deadline, "writes never resumed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let reader = replica.reader().unwrap();
        assert_eq!(reader.last_log_position().unwrap(), (1, 1));
        assert!(reader.user("bob").unwrap().is_none());
        drop(reader);
        assert_eq!(
            replica.apply_replicated(entries[1..].to_vec()).unwrap(),
            (1, 3)
        );
        assert_eq!(*replica.commits().borrow(), 3);
        assert_eq!(
            primary.replicated_content_digest().unwrap(),
            replica.replicated_content_digest().unwrap()
        );
    }

    #[test]
    fn a_replicated_batch_on_a_full_disk_is_refused_as_full_until_space_is_freed() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let primary = Store::open(a.path()).unwrap();
        let replica = Store::open(b.path()).unwrap();
        replica.set_writable(false);
        primary.apply_blocking(create_user("ann")).unwrap();
        let entries = primary.reader().unwrap().log_entries(1, 100).unwrap();
        replica.faults().fill();
        let refused = replica.apply_replicated(entries.clone());
        assert!(
            matches!(refused, Err(StoreError::StorageFull(_))),
            "{refused:?}"
        );
        // Refused at once while the disk stays full.
        assert!(matches!(
            replica.apply_replicated(entries.clone()),
            Err(StoreError::StorageFull(_))
        ));
        replica.faults().clear();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !replica.status().writable {
            assert!(Instant::now() < deadline, "writes never resumed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(replica.apply_replicated(entries).unwrap(), (1, 1));
    }

    #[test]
    fn compaction_keeps_the_numbering_and_installing_takes_the_content() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let primary = Store::open(a.path()).unwrap();
        for name in ["ann", "bob", "cy"] {
            primary.apply_blocking(create_user(name)).unwrap();
        }
        assert_eq!(primary.compact_log(2).unwrap(), 2);
        let reader = primary.reader().unwrap();
        assert_eq!(reader.compacted_position().unwrap(), Some((1, 2)));
        assert_eq!(reader.term_at(2).unwrap(), Some(1));
        assert_eq!(reader.term_at(1).unwrap(), None);
        assert_eq!(reader.log_entries(0, 10).unwrap().len(), 1);
        // Compacting everything still numbers the next entry after the last.
        assert_eq!(primary.compact_log(u64::MAX).unwrap(), 1);
        let applied = primary.apply_blocking(create_user("dee"));
        assert!(applied.is_ok());
        assert_eq!(
            primary.reader().unwrap().last_log_position().unwrap(),
            (1, 4)
        );

        // A replica installs the primary's content and goes on from its position.
        drop(reader);
        let replica = Store::open(b.path()).unwrap();
        replica.apply_blocking(create_user("other")).unwrap();
        let mut copy = Vec::new();
        let meta = primary.write_snapshot(&mut copy).unwrap();
        assert_eq!((meta.log_term, meta.index), (1, 4));
        let restored = tempfile::tempdir().unwrap();
        let restored = restored.path().join("copy");
        crate::store::restore_snapshot(&restored, &mut copy.as_slice()).unwrap();
        replica
            .install_from(&restored, (meta.log_term, meta.index))
            .unwrap();
        assert_eq!(
            primary.replicated_content_digest().unwrap(),
            replica.replicated_content_digest().unwrap()
        );
        assert!(replica.reader().unwrap().user("other").unwrap().is_none());
        primary.apply_blocking(create_user("eve")).unwrap();
        let next = primary.reader().unwrap().log_entries(5, 10).unwrap();
        assert_eq!(replica.apply_replicated(next).unwrap(), (1, 5));
        assert_eq!(
            primary.replicated_content_digest().unwrap(),
            replica.replicated_content_digest().unwrap()
        );
    }

    #[test]
    fn a_new_term_must_be_higher_and_names_the_leader() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let promote = |term| {
            CommandEnvelope::new(
                "test",
                "",
                Command::NewTerm {
                    term,
                    node_id: "b".into(),
                    url: "http://b".into(),
                },
            )
        };
        store.apply_blocking(promote(2)).unwrap();
        assert!(matches!(
            store.apply_blocking(promote(2)),
            Err(StoreError::Conflict(_))
        ));
        let reader = store.reader().unwrap();
        assert_eq!(reader.current_term().unwrap(), 2);
        assert_eq!(reader.leader().unwrap().unwrap().node_id, "b");
        // The promotion's own entry carries the new term.
        assert_eq!(reader.last_log_position().unwrap(), (2, 1));
    }

    #[test]
    fn the_gate_holds_until_acknowledged_and_gives_up_after_the_timeout() {
        let gate = std::sync::Arc::new(SyncGate::default());
        gate.committed(5);
        gate.configure(true, Duration::from_secs(30));
        // A standby that has not caught up yet is not waited for.
        assert!(gate.is_degraded());
        gate.ack(5);
        assert!(!gate.is_degraded());
        gate.committed(5);
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait(5))
        };
        gate.ack(5);
        waiter.join().unwrap();
        assert!(!gate.is_degraded());

        gate.configure(true, Duration::from_millis(1));
        gate.committed(6);
        gate.wait(6);
        assert!(gate.is_degraded());
        assert!(!gate.holds());
        gate.ack(6);
        assert!(!gate.is_degraded());
    }
}
