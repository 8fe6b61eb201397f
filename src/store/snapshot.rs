//! Consistent snapshots of the whole store to a byte stream, their restore into an empty data
//! directory, and a digest of the store's content for comparing two stores.
//!
//! A snapshot is taken in one read transaction, so it is a consistent cut while the writer
//! keeps committing, and it is streamed table by table: nothing holds the whole store in
//! memory, whatever the size of the series rings.
//!
//! Stream format (version 1), all integers big-endian:
//!
//! ```text
//! magic "EDGEPSNP" | format u16 | header length u32 | header (postcard)
//! per table:  0x01 | name length u16 | name
//!             0x02 | key length u32 | key | value length u32 | value      (entries, key order)
//!             0x03 | entry count u64
//! trailer:    0xFF | length u32 | trailer (postcard) | SHA-256 of every byte before it
//! ```
//!
//! Keys and values are the bytes redb stores for them (its own encoding of each table's key
//! and value types), so a restore writes back exactly what was read. The restore writes into
//! a temporary file in the target directory, checks the checksum and the content digest
//! before it commits, and only then renames the file to the store's name: a truncated or
//! altered stream leaves no store behind.
//!
//! The at-rest encryption key (`secret.key` or `[secrets] encryption_key`) is not part of the
//! store and never part of a snapshot: sealed edge tokens and TLS keys travel sealed, and the
//! restored directory needs the same key beside it (`edgeplane restore --secret-key`).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use redb::{
    Database, Key, MultimapTableHandle, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{STORE_FILE, Store, StoreError};
use crate::model::Timestamp;

/// First bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"EDGEPSNP";
/// Version of the stream format this binary writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const TAG_TABLE: u8 = 0x01;
const TAG_ENTRY: u8 = 0x02;
const TAG_TABLE_END: u8 = 0x03;
const TAG_TRAILER: u8 = 0xFF;
/// Larger than any key or value the store writes; a length beyond it is corruption.
const MAX_FIELD: u32 = 256 << 20;
const MAX_HEADER: u32 = 1 << 20;
const IO_BUFFER: usize = 256 << 10;

/// Name of the file a restore writes before it renames it to [`STORE_FILE`].
const RESTORE_TEMP: &str = ".edgeplane.redb.restoring";

/// What a snapshot holds: its log position and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The store's current term when the snapshot was taken.
    pub term: u64,
    /// Index of the last command log entry the snapshot holds (0 for an empty log).
    pub index: u64,
    /// Term of that last entry (the current term for an empty log).
    pub log_term: u64,
    pub format_version: u16,
    pub created_at: Timestamp,
    /// Entries per table, in the order the stream holds them.
    pub tables: Vec<TableCount>,
    /// Bytes of the whole stream.
    pub bytes: u64,
    /// [`Store::content_digest`] of the snapshot's content.
    pub content_digest: [u8; 32],
}

impl SnapshotMeta {
    pub fn entries(&self) -> u64 {
        self.tables.iter().map(|t| t.entries).sum()
    }

    pub fn content_digest_hex(&self) -> String {
        hex::encode(self.content_digest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub name: String,
    pub entries: u64,
}

/// What the stream says before its records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    term: u64,
    index: u64,
    log_term: u64,
    created_at: Timestamp,
}

/// What the stream says after its records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trailer {
    tables: Vec<TableCount>,
    content_digest: [u8; 32],
}

/// Calls `$f(definition, args…)` for the table named `$name`; every table of the store is
/// listed here, in the order snapshots and digests visit them.
macro_rules! with_table {
    ($name:expr, $f:ident ( $($arg:expr),* )) => {
        match $name {
            "meta" => $f(super::META, $($arg),*),
            "configurations" => $f(super::CONFIGS, $($arg),*),
            "configuration_names" => $f(super::CONFIG_NAMES, $($arg),*),
            "configuration_versions" => $f(super::VERSIONS, $($arg),*),
            "users" => $f(super::USERS, $($arg),*),
            "edge_locations" => $f(super::EDGES, $($arg),*),
            "deployments" => $f(super::DEPLOYMENTS, $($arg),*),
            "deployment_edges" => $f(super::deployments::DEPLOYMENT_EDGES, $($arg),*),
            "deployment_events" => $f(super::deployments::DEPLOYMENT_EVENTS, $($arg),*),
            "deployment_waves" => $f(super::deployments::DEPLOYMENT_WAVES, $($arg),*),
            "desired_versions" => $f(super::DESIRED, $($arg),*),
            "running_deployments" => $f(super::RUNNING, $($arg),*),
            "configuration_patterns" => $f(super::patterns::CONFIG_PATTERNS, $($arg),*),
            "nack_counts" => $f(super::counters::NACKS, $($arg),*),
            "pending_breaches" => $f(super::counters::BREACHES, $($arg),*),
            "series_fine" => $f(super::series::SERIES_FINE, $($arg),*),
            "series_minutes" => $f(super::series::SERIES_MINUTES, $($arg),*),
            "audit" => $f(super::AUDIT, $($arg),*),
            "command_log" => $f(super::LOG, $($arg),*),
            other => Err(StoreError::Corrupt(format!("unknown table '{other}'"))),
        }
    };
}

pub(crate) use with_table;

/// Every table of the store, in snapshot order. A table the store holds that is not listed
/// makes a snapshot fail rather than leave it out.
pub const TABLES: &[&str] = &[
    "meta",
    "configurations",
    "configuration_names",
    "configuration_versions",
    "users",
    "edge_locations",
    "deployments",
    "deployment_edges",
    "deployment_events",
    "deployment_waves",
    "desired_versions",
    "running_deployments",
    "configuration_patterns",
    "nack_counts",
    "pending_breaches",
    "series_fine",
    "series_minutes",
    "audit",
    "command_log",
];

/// Receives a store's content in snapshot order.
trait Sink {
    fn table(&mut self, name: &str) -> Result<(), StoreError>;
    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn table_end(&mut self, entries: u64) -> Result<(), StoreError>;
}

/// The content digest: every table's name, entries (length-prefixed) and count, in order.
#[derive(Default)]
struct DigestSink {
    hash: Sha256,
}

impl DigestSink {
    fn finish(self) -> [u8; 32] {
        self.hash.finalize().into()
    }
}

impl Sink for DigestSink {
    fn table(&mut self, name: &str) -> Result<(), StoreError> {
        self.hash.update((name.len() as u64).to_be_bytes());
        self.hash.update(name.as_bytes());
        Ok(())
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.hash.update((key.len() as u64).to_be_bytes());
        self.hash.update(key);
        self.hash.update((value.len() as u64).to_be_bytes());
        self.hash.update(value);
        Ok(())
    }

    fn table_end(&mut self, entries: u64) -> Result<(), StoreError> {
        self.hash.update(entries.to_be_bytes());
        Ok(())
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_error(error: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot write snapshot: {error}"))
}

/// Writes the stream records and the content digest at once.
struct StreamSink<W: Write> {
    out: BufWriter<Hashing<W>>,
    digest: DigestSink,
    tables: Vec<TableCount>,
}

impl<W: Write> StreamSink<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.out.write_all(bytes).map_err(write_error)
    }
}

impl<W: Write> Sink for StreamSink<W> {
    fn table(&mut self, name: &str) -> Result<(), StoreError> {
        self.digest.table(name)?;
        self.put(&[TAG_TABLE])?;
        self.put(&(name.len() as u16).to_be_bytes())?;
        self.put(name.as_bytes())?;
        self.tables.push(TableCount {
            name: name.to_string(),
            entries: 0,
        });
        Ok(())
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.digest.entry(key, value)?;
        for field in [key, value] {
            if field.len() > MAX_FIELD as usize {
                return Err(StoreError::Corrupt(format!(
                    "a stored record of {} bytes is too large for a snapshot",
                    field.len()
                )));
            }
        }
        self.put(&[TAG_ENTRY])?;
        self.put(&(key.len() as u32).to_be_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_be_bytes())?;
        self.put(value)
    }

    fn table_end(&mut self, entries: u64) -> Result<(), StoreError> {
        self.digest.table_end(entries)?;
        if let Some(last) = self.tables.last_mut() {
            last.entries = entries;
        }
        self.put(&[TAG_TABLE_END])?;
        self.put(&entries.to_be_bytes())
    }
}

/// Feeds one table to `sink` in key order; a table never created is empty.
fn visit_table<K: Key + 'static, V: Value + 'static>(
    definition: TableDefinition<'static, K, V>,
    txn: &ReadTransaction,
    name: &str,
    sink: &mut dyn Sink,
) -> Result<(), StoreError> {
    sink.table(name)?;
    let table = match txn.open_table(definition) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return sink.table_end(0),
        Err(error) => return Err(error.into()),
    };
    let mut entries = 0u64;
    for entry in table.iter()? {
        let (key, value) = entry?;
        sink.entry(
            K::as_bytes(&key.value()).as_ref(),
            V::as_bytes(&value.value()).as_ref(),
        )?;
        entries += 1;
    }
    sink.table_end(entries)
}

/// Every table of the store, in [`TABLES`] order; refuses a store holding a table it does
/// not know, so that no snapshot silently leaves one out.
fn visit_all(txn: &ReadTransaction, sink: &mut dyn Sink) -> Result<(), StoreError> {
    for handle in txn.list_tables()? {
        if !TABLES.contains(&handle.name()) {
            return Err(StoreError::Corrupt(format!(
                "table '{}' is not known to snapshots",
                handle.name()
            )));
        }
    }
    if let Some(handle) = txn.list_multimap_tables()?.next() {
        return Err(StoreError::Corrupt(format!(
            "table '{}' is not known to snapshots",
            handle.name()
        )));
    }
    for name in TABLES {
        with_table!(*name, visit_table(txn, name, sink))?;
    }
    Ok(())
}

/// A read transaction held for a snapshot, with its log position known before any byte is
/// written (the API sends it in headers ahead of the stream).
pub struct PendingSnapshot {
    txn: ReadTransaction,
    header: Header,
}

impl PendingSnapshot {
    fn new(txn: ReadTransaction) -> Result<Self, StoreError> {
        let reader = super::Reader { txn };
        let term = reader.current_term()?;
        let (log_term, index) = reader.last_log_position()?;
        Ok(Self {
            txn: reader.txn,
            header: Header {
                term,
                index,
                log_term,
                created_at: Timestamp::now(),
            },
        })
    }

    pub fn term(&self) -> u64 {
        self.header.term
    }

    pub fn index(&self) -> u64 {
        self.header.index
    }

    /// Streams the snapshot into `out` (buffered here); blocking.
    pub fn write_to(self, out: &mut impl Write) -> Result<SnapshotMeta, StoreError> {
        let hashing = Hashing {
            inner: out,
            hash: Sha256::new(),
            bytes: 0,
        };
        let mut sink = StreamSink {
            out: BufWriter::with_capacity(IO_BUFFER, hashing),
            digest: DigestSink::default(),
            tables: Vec::new(),
        };
        let header = postcard::to_stdvec(&self.header)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode snapshot header: {e}")))?;
        sink.put(&MAGIC)?;
        sink.put(&FORMAT_VERSION.to_be_bytes())?;
        sink.put(&(header.len() as u32).to_be_bytes())?;
        sink.put(&header)?;
        visit_all(&self.txn, &mut sink)?;
        let StreamSink {
            out,
            digest,
            tables,
        } = sink;
        let trailer = Trailer {
            tables,
            content_digest: digest.finish(),
        };
        let encoded = postcard::to_stdvec(&trailer)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode snapshot trailer: {e}")))?;
        let mut out = out.into_inner().map_err(|e| write_error(e.into_error()))?;
        out.write_all(&[TAG_TRAILER]).map_err(write_error)?;
        out.write_all(&(encoded.len() as u32).to_be_bytes())
            .map_err(write_error)?;
        out.write_all(&encoded).map_err(write_error)?;
        let checksum: [u8; 32] = out.hash.clone().finalize().into();
        out.inner.write_all(&checksum).map_err(write_error)?;
        out.inner.flush().map_err(write_error)?;
        Ok(meta_of(&self.header, trailer, out.bytes + 32))
    }
}

fn meta_of(header: &Header, trailer: Trailer, bytes: u64) -> SnapshotMeta {
    SnapshotMeta {
        term: header.term,
        index: header.index,
        log_term: header.log_term,
        format_version: FORMAT_VERSION,
        created_at: header.created_at,
        tables: trailer.tables,
        bytes,
        content_digest: trailer.content_digest,
    }
}

impl Store {
    /// Writes a consistent snapshot of every table to `out`, from one read transaction, while
    /// writes go on. Blocking: run it off the async threads.
    pub fn write_snapshot(&self, out: &mut impl Write) -> Result<SnapshotMeta, StoreError> {
        self.begin_snapshot()?.write_to(out)
    }

    /// Opens the read transaction of a snapshot and reads its position; the bytes follow
    /// with [`PendingSnapshot::write_to`].
    pub fn begin_snapshot(&self) -> Result<PendingSnapshot, StoreError> {
        PendingSnapshot::new(self.shared.database()?.begin_read()?)
    }

    /// SHA-256 over every table's content in key order (see [`TABLES`]): two stores with the
    /// same digest hold the same data.
    pub fn content_digest(&self) -> Result<[u8; 32], StoreError> {
        let txn = self.shared.database()?.begin_read()?;
        let mut sink = DigestSink::default();
        visit_all(&txn, &mut sink)?;
        Ok(sink.finish())
    }
}

/// Writes a snapshot of the store in `data_dir` while no server has it open (the offline
/// backup). Refuses while another process holds the store.
pub fn write_offline_snapshot(
    data_dir: &Path,
    out: &mut impl Write,
) -> Result<SnapshotMeta, StoreError> {
    let path = data_dir.join(STORE_FILE);
    if !path.exists() {
        return Err(StoreError::NotFound(format!("store {}", path.display())));
    }
    let db = match ReadOnlyDatabase::open(&path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::Conflict(format!(
                "{} is in use by a running server: back it up through the API \
                 (edgeplane backup --url …) or stop the server first",
                path.display()
            )));
        }
        Err(error) => {
            return Err(StoreError::Unavailable(format!(
                "cannot open {} read-only: {error} (after a crash, start and stop the server \
                 once so that it recovers the store)",
                path.display()
            )));
        }
    };
    PendingSnapshot::new(db.begin_read()?)?.write_to(out)
}

/// A reader that hashes what it hands out and counts it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn read_error(error: std::io::Error) -> StoreError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        StoreError::Corrupt("snapshot is truncated".into())
    } else {
        StoreError::Unavailable(format!("cannot read snapshot: {error}"))
    }
}

fn read_exact<const N: usize>(input: &mut impl Read) -> Result<[u8; N], StoreError> {
    let mut buf = [0u8; N];
    input.read_exact(&mut buf).map_err(read_error)?;
    Ok(buf)
}

/// Reads `len` bytes without trusting `len` for the allocation: a corrupted length on a short
/// stream fails as truncated instead of reserving the memory first.
fn read_field(input: &mut impl Read, len: u32, limit: u32) -> Result<Vec<u8>, StoreError> {
    if len > limit {
        return Err(StoreError::Corrupt(format!(
            "snapshot record of {len} bytes is larger than any the store writes"
        )));
    }
    let mut buf = Vec::new();
    input
        .take(u64::from(len))
        .read_to_end(&mut buf)
        .map_err(read_error)?;
    if buf.len() != len as usize {
        return Err(StoreError::Corrupt("snapshot is truncated".into()));
    }
    Ok(buf)
}

fn read_u32(input: &mut impl Read) -> Result<u32, StoreError> {
    Ok(u32::from_be_bytes(read_exact(input)?))
}

/// Where a restored entry goes: its table, or nowhere when only checking.
type InsertFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// Reads one table's entries up to its end record, handing each to `insert`.
#[allow(clippy::type_complexity)]
fn read_entries(
    input: &mut HashingReader<impl Read>,
    digest: &mut DigestSink,
    insert: &mut InsertFn<'_>,
) -> Result<u64, StoreError> {
    let mut entries = 0u64;
    loop {
        match read_exact::<1>(input)?[0] {
            TAG_ENTRY => {
                let len = read_u32(input)?;
                let key = read_field(input, len, MAX_FIELD)?;
                let len = read_u32(input)?;
                let value = read_field(input, len, MAX_FIELD)?;
                digest.entry(&key, &value)?;
                insert(&key, &value)?;
                entries += 1;
            }
            TAG_TABLE_END => {
                let count = u64::from_be_bytes(read_exact(input)?);
                if count != entries {
                    return Err(StoreError::Corrupt(format!(
                        "snapshot table says {count} entries, holds {entries}"
                    )));
                }
                digest.table_end(entries)?;
                return Ok(entries);
            }
            tag => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected record 0x{tag:02x} in a snapshot table"
                )));
            }
        }
    }
}

/// Loads one table's entries into `txn`, each written back as the bytes redb gave.
fn load_table<K: Key + 'static, V: Value + 'static>(
    definition: TableDefinition<'static, K, V>,
    txn: &WriteTransaction,
    input: &mut HashingReader<impl Read>,
    digest: &mut DigestSink,
) -> Result<u64, StoreError> {
    let mut table = txn.open_table(definition)?;
    read_entries(input, digest, &mut |key, value| {
        table.insert(K::from_bytes(key), V::from_bytes(value))?;
        Ok(())
    })
}

/// Reads a whole snapshot, into `txn` when given, checking its checksum and content
/// digest; the caller commits only when this succeeds.
fn load(txn: Option<&WriteTransaction>, input: impl Read) -> Result<SnapshotMeta, StoreError> {
    let mut input = HashingReader {
        inner: input,
        hash: Sha256::new(),
        bytes: 0,
    };
    let magic: [u8; 8] = read_exact(&mut input)?;
    if magic != MAGIC {
        return Err(StoreError::Invalid("not an edgeplane snapshot".into()));
    }
    let version = u16::from_be_bytes(read_exact(&mut input)?);
    if version != FORMAT_VERSION {
        return Err(StoreError::Invalid(format!(
            "snapshot format {version} is not supported (this binary reads {FORMAT_VERSION})"
        )));
    }
    let len = read_u32(&mut input)?;
    let header: Header = postcard::from_bytes(&read_field(&mut input, len, MAX_HEADER)?)
        .map_err(|e| StoreError::Corrupt(format!("snapshot header: {e}")))?;
    let mut digest = DigestSink::default();
    let mut tables = Vec::new();
    loop {
        match read_exact::<1>(&mut input)?[0] {
            TAG_TABLE => {
                let len = u16::from_be_bytes(read_exact(&mut input)?);
                let name = String::from_utf8(read_field(&mut input, u32::from(len), 1024)?)
                    .map_err(|_| StoreError::Corrupt("snapshot table name".into()))?;
                if !TABLES.contains(&name.as_str()) {
                    return Err(StoreError::Corrupt(format!(
                        "snapshot holds unknown table '{name}'"
                    )));
                }
                if tables.iter().any(|t: &TableCount| t.name == name) {
                    return Err(StoreError::Corrupt(format!(
                        "snapshot holds table '{name}' twice"
                    )));
                }
                digest.table(&name)?;
                let entries = match txn {
                    Some(txn) => {
                        with_table!(name.as_str(), load_table(txn, &mut input, &mut digest))?
                    }
                    None => read_entries(&mut input, &mut digest, &mut |_, _| Ok(()))?,
                };
                tables.push(TableCount { name, entries });
            }
            TAG_TRAILER => break,
            tag => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected record 0x{tag:02x} in a snapshot"
                )));
            }
        }
    }
    let len = read_u32(&mut input)?;
    let trailer: Trailer = postcard::from_bytes(&read_field(&mut input, len, MAX_HEADER)?)
        .map_err(|e| StoreError::Corrupt(format!("snapshot trailer: {e}")))?;
    let computed: [u8; 32] = input.hash.clone().finalize().into();
    let stored: [u8; 32] = read_exact(&mut input.inner)?;
    if computed != stored {
        return Err(StoreError::Corrupt(
            "snapshot checksum does not match: the file is damaged".into(),
        ));
    }
    if trailer.tables != tables || trailer.content_digest != digest.finish() {
        return Err(StoreError::Corrupt(
            "snapshot content does not match its trailer".into(),
        ));
    }
    let mut rest = [0u8; 1];
    if input.inner.read(&mut rest).map_err(read_error)? != 0 {
        return Err(StoreError::Corrupt(
            "snapshot has bytes after its checksum".into(),
        ));
    }
    let bytes = input.bytes + 32;
    Ok(meta_of(&header, trailer, bytes))
}

/// Reads a whole snapshot and checks it (format, checksum, content digest) without
/// restoring it: for a backup just written.
pub fn verify_snapshot(input: &mut impl Read) -> Result<SnapshotMeta, StoreError> {
    load(None, BufReader::with_capacity(IO_BUFFER, input))
}

/// Makes a store in `data_dir` from a snapshot. The directory must be empty or absent; the
/// store appears (by rename) only once the whole stream was read and verified, so a refused
/// snapshot leaves the directory as it was (and removes it when this call created it).
pub fn restore_snapshot(
    data_dir: &Path,
    input: &mut impl Read,
) -> Result<SnapshotMeta, StoreError> {
    let created = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StoreError::Conflict(format!(
                    "{} is not empty: restore needs an empty or new directory",
                    data_dir.display()
                )));
            }
            false
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
            })?;
            true
        }
        Err(error) => {
            return Err(StoreError::Unavailable(format!(
                "cannot read {}: {error}",
                data_dir.display()
            )));
        }
    };
    let temp = data_dir.join(RESTORE_TEMP);
    let result = restore_into(&temp, &data_dir.join(STORE_FILE), data_dir, input);
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
        if created {
            let _ = std::fs::remove_dir(data_dir);
        }
    }
    result
}

fn restore_into(
    temp: &Path,
    target: &Path,
    data_dir: &Path,
    input: &mut impl Read,
) -> Result<SnapshotMeta, StoreError> {
    let meta = {
        let db = Database::create(temp)?;
        let txn = db.begin_write()?;
        let meta = load(Some(&txn), BufReader::with_capacity(IO_BUFFER, input))?;
        txn.commit()?;
        meta
    };
    let io = |e: std::io::Error| StoreError::Unavailable(format!("cannot finish restore: {e}"));
    std::fs::File::open(temp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(temp, target).map_err(io)?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Command, CommandEnvelope};

    fn store_with_users(dir: &Path, users: usize) -> Store {
        let store = Store::open(dir).unwrap();
        store
            .apply_blocking(CommandEnvelope::new(
                "system",
                "",
                Command::InitCluster {
                    jwt_secret: "c2VjcmV0".into(),
                },
            ))
            .unwrap();
        for i in 0..users {
            let now = Timestamp(1_700_000_000_000 + i as i64);
            store
                .apply_blocking(CommandEnvelope::new(
                    "system",
                    "",
                    Command::CreateUser {
                        user: crate::model::User {
                            username: format!("user{i:03}"),
                            role: crate::model::Role::Viewer,
                            password_hash: "hash".into(),
                            created_at: now,
                            updated_at: now,
                        },
                    },
                ))
                .unwrap();
        }
        store
    }

    fn snapshot_of(store: &Store) -> (Vec<u8>, SnapshotMeta) {
        let mut bytes = Vec::new();
        let meta = store.write_snapshot(&mut bytes).unwrap();
        (bytes, meta)
    }

    #[test]
    fn a_restored_store_holds_the_same_content_and_position() {
        let source_dir = tempfile::tempdir().unwrap();
        let store = store_with_users(source_dir.path(), 5);
        let (bytes, meta) = snapshot_of(&store);
        assert_eq!(meta.bytes, bytes.len() as u64);
        assert_eq!(meta.index, 6, "init and five users are six log entries");
        assert_eq!(meta.content_digest, store.content_digest().unwrap());
        assert_eq!(
            meta.tables
                .iter()
                .find(|t| t.name == "users")
                .unwrap()
                .entries,
            5
        );

        let target = tempfile::tempdir().unwrap();
        let restored_dir = target.path().join("restored");
        let restored_meta = restore_snapshot(&restored_dir, &mut bytes.as_slice()).unwrap();
        assert_eq!(restored_meta, meta);
        let restored = Store::open(&restored_dir).unwrap();
        assert_eq!(restored.content_digest().unwrap(), meta.content_digest);
        let reader = restored.reader().unwrap();
        assert_eq!(reader.users().unwrap().len(), 5);
        assert_eq!(reader.last_log_position().unwrap(), (1, 6));
    }

    #[test]
    fn stores_with_different_content_have_different_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), 1);
        let before = store.content_digest().unwrap();
        assert_eq!(before, store.content_digest().unwrap());
        drop(store);
        let store = store_with_users(&dir.path().join("other"), 2);
        assert_ne!(before, store.content_digest().unwrap());
    }

    #[test]
    fn a_snapshot_is_a_consistent_cut_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), 3);
        let pending = store.begin_snapshot().unwrap();
        let digest_at_start = store.content_digest().unwrap();
        store_more(&store);
        let mut bytes = Vec::new();
        let meta = pending.write_to(&mut bytes).unwrap();
        assert_eq!(meta.index, 4);
        assert_eq!(meta.content_digest, digest_at_start);
        assert_ne!(store.content_digest().unwrap(), digest_at_start);
    }

    fn store_more(store: &Store) {
        let now = Timestamp(1_800_000_000_000);
        store
            .apply_blocking(CommandEnvelope::new(
                "system",
                "",
                Command::CreateUser {
                    user: crate::model::User {
                        username: "late".into(),
                        role: crate::model::Role::Viewer,
                        password_hash: "hash".into(),
                        created_at: now,
                        updated_at: now,
                    },
                },
            ))
            .unwrap();
    }

    #[test]
    fn a_non_empty_directory_is_refused_and_left_alone() {
        let source = tempfile::tempdir().unwrap();
        let (bytes, _) = snapshot_of(&store_with_users(source.path(), 1));
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("notes.txt"), "keep").unwrap();
        let error = restore_snapshot(target.path(), &mut bytes.as_slice()).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        assert!(error.to_string().contains("not empty"));
        let names: Vec<_> = std::fs::read_dir(target.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    }

    #[test]
    fn truncated_or_altered_snapshots_leave_nothing() {
        let source = tempfile::tempdir().unwrap();
        let (bytes, _) = snapshot_of(&store_with_users(source.path(), 20));
        let mut damaged = Vec::new();
        for cut in [0, 7, 20, bytes.len() / 2, bytes.len() - 33, bytes.len() - 1] {
            damaged.push(bytes[..cut].to_vec());
        }
        for at in [12, bytes.len() / 3, bytes.len() / 2, bytes.len() - 5] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            damaged.push(flipped);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        damaged.push(longer);
        assert!(verify_snapshot(&mut bytes.as_slice()).is_ok());
        let target = tempfile::tempdir().unwrap();
        for (i, broken) in damaged.iter().enumerate() {
            assert!(verify_snapshot(&mut broken.as_slice()).is_err(), "{i}");
            let dir = target.path().join(format!("attempt-{i}"));
            let result = restore_snapshot(&dir, &mut broken.as_slice());
            assert!(result.is_err(), "damaged snapshot {i} was restored");
            assert!(!dir.exists(), "damaged snapshot {i} left {}", dir.display());
        }
        let empty = target.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let mut half = &bytes[..bytes.len() / 2];
        assert!(restore_snapshot(&empty, &mut half).is_err());
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    }

    #[test]
    fn the_series_rings_travel_with_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), 0);
        let now = Timestamp(1_700_000_000_000);
        let sample = crate::model::MetricsSample {
            interval_seconds: 10,
            requests: 1234,
            ..Default::default()
        };
        let txn = store.shared.database().unwrap().begin_write().unwrap();
        let samples = [(
            "edge-1".to_string(),
            Timestamp(now.0 - 60_000),
            sample.clone(),
        )];
        let outcome = super::super::series::write_samples(&txn, &samples, now).unwrap();
        assert_eq!(outcome.stored, 1);
        txn.commit().unwrap();
        let (bytes, meta) = snapshot_of(&store);
        assert!(
            meta.tables
                .iter()
                .any(|t| t.name == "series_fine" && t.entries > 0)
        );

        let target = tempfile::tempdir().unwrap();
        restore_snapshot(target.path(), &mut bytes.as_slice()).unwrap();
        let restored = Store::open(target.path()).unwrap();
        let read = restored
            .reader()
            .unwrap()
            .series("edge-1", Timestamp(now.0 - 120_000), now, now)
            .unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].1.requests, 1234);
    }

    #[test]
    fn every_table_the_store_creates_is_in_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), 1);
        let txn = store.shared.database().unwrap().begin_read().unwrap();
        for handle in txn.list_tables().unwrap() {
            assert!(TABLES.contains(&handle.name()), "{}", handle.name());
        }
    }

    #[test]
    fn offline_backup_is_refused_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), 2);
        let error = write_offline_snapshot(dir.path(), &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("running server"), "{error}");
        let digest = store.content_digest().unwrap();
        drop(store);
        let mut bytes = Vec::new();
        let meta = write_offline_snapshot(dir.path(), &mut bytes).unwrap();
        assert_eq!(meta.content_digest, digest);
    }
}
