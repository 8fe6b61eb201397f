//! Whether the store takes writes, why not, and the disk figures behind it: free bytes on the
//! data directory's filesystem and the size of the store file, as `/ready`, the Prometheus
//! gauges and the metric-sample reserve read them.
//!
//! The writer thread owns the changes (it stops writes on an I/O error and resumes them once
//! the database is reopened); everyone else reads a snapshot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::StoreError;
use super::faults::FaultInjector;
use crate::model::Timestamp;

/// Why writes are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The data directory's filesystem is full (`ENOSPC`, `EDQUOT`): 507 to writers.
    NoSpace,
    /// Any other I/O failure of the store file (`EIO`, a failed fsync): 503 to writers.
    Io,
}

/// What the store can do right now, for `/ready` and the console.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreStatus {
    pub writable: bool,
    /// Reads are answered (the database is open).
    pub readable: bool,
    pub refusal: Option<Refusal>,
    /// Why writes are refused, in words an operator can act on; `None` while writable.
    pub reason: Option<String>,
    /// The failure as the filesystem reported it (for the log, not for answers).
    pub cause: Option<String>,
    /// Since when writes have been refused.
    pub since: Option<Timestamp>,
    /// Free bytes on the data directory's filesystem (for an unprivileged process).
    pub free_bytes: Option<u64>,
    /// Size of the store file.
    pub database_bytes: Option<u64>,
}

struct Refused {
    refusal: Refusal,
    /// The failure as the filesystem reported it.
    cause: String,
    since: Timestamp,
}

/// Shared by the store's handles and its writer thread.
pub(crate) struct StoreHealth {
    data_dir: PathBuf,
    file: PathBuf,
    faults: FaultInjector,
    writable: AtomicBool,
    readable: AtomicBool,
    refused: Mutex<Option<Refused>>,
    free_bytes: AtomicU64,
    database_bytes: AtomicU64,
    reserve_bytes: AtomicU64,
    /// Free space was below the reserve at the last look (logged on each crossing).
    below_reserve: AtomicBool,
    probed_at: Mutex<Option<Instant>>,
}

/// `u64::MAX` stands for "unknown" in the atomics.
const UNKNOWN: u64 = u64::MAX;

/// How stale the disk figures may get before a reader asks the filesystem again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

impl StoreHealth {
    pub(crate) fn new(data_dir: &Path, file: &Path, faults: FaultInjector) -> Self {
        let health = Self {
            data_dir: data_dir.to_path_buf(),
            file: file.to_path_buf(),
            faults,
            writable: AtomicBool::new(true),
            readable: AtomicBool::new(true),
            refused: Mutex::new(None),
            free_bytes: AtomicU64::new(UNKNOWN),
            database_bytes: AtomicU64::new(UNKNOWN),
            reserve_bytes: AtomicU64::new(0),
            below_reserve: AtomicBool::new(false),
            probed_at: Mutex::new(None),
        };
        metrics::gauge!("edgeplane_store_writable").set(1.0);
        health.probe_disk();
        health
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    pub(crate) fn set_reserve(&self, bytes: u64) {
        self.reserve_bytes.store(bytes, Ordering::Relaxed);
        metrics::gauge!("edgeplane_store_free_space_reserve_bytes").set(bytes as f64);
    }

    /// Free space has fallen below the reserve kept for configuration and deployment writes.
    pub(crate) fn below_reserve(&self) -> bool {
        let reserve = self.reserve_bytes.load(Ordering::Relaxed);
        if reserve == 0 {
            return false;
        }
        self.probe_disk_if_stale();
        let free = self.free_bytes.load(Ordering::Relaxed);
        let below = free != UNKNOWN && free < reserve;
        if self.below_reserve.swap(below, Ordering::Relaxed) != below {
            if below {
                tracing::warn!(
                    free_bytes = free,
                    reserve_bytes = reserve,
                    "free space on the data directory's filesystem ({}) is below the reserve \
                     ({}): metric samples are no longer stored",
                    bytes(free),
                    bytes(reserve)
                );
            } else {
                tracing::info!(
                    free_bytes = free,
                    "free space is above the reserve again: metric samples are stored"
                );
            }
        }
        below
    }

    /// Writes stop, for `refusal`; answers whether they were running until now (the caller
    /// logs the change once).
    pub(crate) fn refuse(&self, refusal: Refusal, cause: String) -> bool {
        let was_writable = self.writable.swap(false, Ordering::AcqRel);
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match refused.as_ref() {
            Some(previous) if !was_writable => previous.since,
            _ => Timestamp::now(),
        };
        *refused = Some(Refused {
            refusal,
            cause,
            since,
        });
        metrics::gauge!("edgeplane_store_writable").set(0.0);
        was_writable
    }

    pub(crate) fn set_readable(&self, readable: bool) {
        self.readable.store(readable, Ordering::Release);
    }

    /// Writes run again; answers since when they had been refused.
    pub(crate) fn resume(&self) -> Option<Timestamp> {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.readable.store(true, Ordering::Release);
        self.writable.store(true, Ordering::Release);
        metrics::gauge!("edgeplane_store_writable").set(1.0);
        refused.map(|r| r.since)
    }

    pub(crate) fn refusal(&self) -> Option<Refusal> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.refusal)
    }

    /// The error a write gets while writes are refused.
    pub(crate) fn refusal_error(&self) -> StoreError {
        let refusal = self.refusal().unwrap_or(Refusal::Io);
        match refusal {
            Refusal::NoSpace => StoreError::StorageFull(format!(
                "{}; reads are still served",
                self.no_space_message()
            )),
            Refusal::Io => StoreError::Recovering(
                "writes are suspended after an I/O error on the store file and resume by \
                 themselves once it is reopened; reads are still served; retry shortly"
                    .into(),
            ),
        }
    }

    fn no_space_message(&self) -> String {
        format!(
            "the data directory's filesystem is full ({} free; the store file is {}): free \
             space on it and writes resume by themselves, no restart needed",
            bytes(self.free_bytes.load(Ordering::Relaxed)),
            bytes(self.database_bytes.load(Ordering::Relaxed)),
        )
    }

    pub(crate) fn status(&self) -> StoreStatus {
        self.probe_disk_if_stale();
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let known = |value: u64| (value != UNKNOWN).then_some(value);
        let reason = refused.as_ref().map(|r| match r.refusal {
            Refusal::NoSpace => self.no_space_message(),
            Refusal::Io => "writes are suspended after an I/O error on the store file (the \
                            server log has the cause); it is being reopened"
                .to_string(),
        });
        StoreStatus {
            writable: self.is_writable(),
            readable: self.readable.load(Ordering::Acquire),
            refusal: refused.as_ref().map(|r| r.refusal),
            reason,
            cause: refused.as_ref().map(|r| r.cause.clone()),
            since: refused.as_ref().map(|r| r.since),
            free_bytes: known(self.free_bytes.load(Ordering::Relaxed)),
            database_bytes: known(self.database_bytes.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn free_bytes(&self) -> Option<u64> {
        match self.free_bytes.load(Ordering::Relaxed) {
            UNKNOWN => None,
            free => Some(free),
        }
    }

    fn probe_disk_if_stale(&self) {
        let due = {
            let probed_at = self
                .probed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            probed_at.is_none_or(|at| at.elapsed() >= PROBE_EVERY)
        };
        if due {
            self.probe_disk();
        }
    }

    /// Asks the filesystem for its free space and the store file's size, and sets the gauges.
    pub(crate) fn probe_disk(&self) {
        *self
            .probed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let free = self
            .faults
            .free_bytes()
            .or_else(|| filesystem_free_bytes(&self.data_dir));
        let size = std::fs::metadata(&self.file).ok().map(|m| m.len());
        self.free_bytes
            .store(free.unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.database_bytes
            .store(size.unwrap_or(UNKNOWN), Ordering::Relaxed);
        if let Some(free) = free {
            metrics::gauge!("edgeplane_store_free_bytes").set(free as f64);
        }
        if let Some(size) = size {
            metrics::gauge!("edgeplane_store_database_bytes").set(size as f64);
        }
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `dir`.
fn filesystem_free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// A byte count for people: `12.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    if n == UNKNOWN {
        return "an unknown amount".into();
    }
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(bytes(1023), "1023 bytes");
        assert_eq!(bytes(16 * 1024 * 1024), "16.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(UNKNOWN), "an unknown amount");
    }

    #[test]
    fn the_reserve_is_crossed_when_free_space_falls_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::default();
        let health = StoreHealth::new(dir.path(), &dir.path().join("f"), faults.clone());
        assert!(!health.below_reserve(), "no reserve set");
        health.set_reserve(1000);
        faults.report_free_bytes(Some(999));
        health.probe_disk();
        assert!(health.below_reserve());
        faults.report_free_bytes(Some(1000));
        health.probe_disk();
        assert!(!health.below_reserve());
    }
}
