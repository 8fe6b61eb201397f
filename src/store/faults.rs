//! The store's fault seam: a storage backend around redb's file backend that fails the writes
//! a [`FaultInjector`] asks it to, and reports the free space it is told to, so the reopen
//! path is exercised through redb's own error handling without a full disk or a bad device.
//!
//! It is always compiled in and always in the path: unarmed it costs one atomic load per file
//! operation, next to the system call it forwards to.

use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use redb::backends::FileBackend;

/// Makes the store's file operations fail on request. Clones share one plan; the store keeps
/// its injector across reopens.
#[derive(Clone, Default)]
pub struct FaultInjector {
    inner: Arc<Faults>,
}

#[derive(Default)]
struct Faults {
    /// Set while any fault is planned: the one thing an unarmed backend reads.
    armed: AtomicBool,
    plan: Mutex<Plan>,
    /// The last write operation that failed, injected or not: what poisoned the database.
    last_failure: Mutex<Option<(io::ErrorKind, String)>>,
}

#[derive(Default)]
struct Plan {
    /// Writes (data writes, length changes, syncs) still to fail; `u64::MAX`: until cleared.
    failing_writes: u64,
    kind: Option<io::ErrorKind>,
    /// Free bytes to report for the data directory's filesystem instead of asking it.
    free_bytes: Option<u64>,
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("armed", &self.inner.armed.load(Ordering::Relaxed))
            .finish()
    }
}

impl FaultInjector {
    /// The next `n` write operations on the store file fail with `kind` (a commit makes
    /// several, and a failed one poisons the database until it is reopened, so `n = 1` fails
    /// one commit and each further one fails a reopen).
    pub fn fail_writes(&self, n: u64, kind: io::ErrorKind) {
        self.update(|plan| {
            plan.failing_writes = n;
            plan.kind = Some(kind);
        });
    }

    /// The disk is full: every write fails with `StorageFull` and the filesystem reports no
    /// free space, until [`FaultInjector::clear`].
    pub fn fill(&self) {
        self.update(|plan| {
            plan.failing_writes = u64::MAX;
            plan.kind = Some(io::ErrorKind::StorageFull);
            plan.free_bytes = Some(0);
        });
    }

    /// Reports `bytes` free on the data directory's filesystem (`None`: ask the filesystem).
    pub fn report_free_bytes(&self, bytes: Option<u64>) {
        self.update(|plan| plan.free_bytes = bytes);
    }

    /// No more faults: writes reach the file and free space is the filesystem's.
    pub fn clear(&self) {
        self.update(|plan| *plan = Plan::default());
    }

    /// The free space to report instead of the filesystem's, if any.
    pub(crate) fn free_bytes(&self) -> Option<u64> {
        if !self.inner.armed.load(Ordering::Acquire) {
            return None;
        }
        self.plan(|plan| plan.free_bytes)
    }

    fn update(&self, change: impl FnOnce(&mut Plan)) {
        let mut plan = self
            .inner
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut plan);
        let armed = plan.failing_writes > 0 || plan.free_bytes.is_some();
        self.inner.armed.store(armed, Ordering::Release);
    }

    fn plan<T>(&self, read: impl FnOnce(&mut Plan) -> T) -> T {
        let mut plan = self
            .inner
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        read(&mut plan)
    }

    /// Takes the last failure of a write operation on the store file, with its kind.
    pub(crate) fn take_last_failure(&self) -> Option<(io::ErrorKind, String)> {
        self.inner
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn note_failure(&self, error: &io::Error) {
        *self
            .inner
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((error.kind(), error.to_string()));
    }

    /// Whether this write fails, and how.
    fn write_fault(&self) -> Option<io::Error> {
        if !self.inner.armed.load(Ordering::Acquire) {
            return None;
        }
        self.plan(|plan| {
            if plan.failing_writes == 0 {
                return None;
            }
            if plan.failing_writes != u64::MAX {
                plan.failing_writes -= 1;
            }
            let kind = plan.kind.unwrap_or(io::ErrorKind::Other);
            Some(io::Error::new(kind, "injected store fault"))
        })
    }
}

/// redb's file backend with the injector's faults in front of its writes; it also notes the
/// kind of every failed write, real or injected, which redb's later `PreviousIo` errors no
/// longer carry.
#[derive(Debug)]
pub(crate) struct FaultyBackend {
    file: FileBackend,
    faults: FaultInjector,
}

impl FaultyBackend {
    pub(crate) fn new(file: FileBackend, faults: FaultInjector) -> Self {
        Self { file, faults }
    }

    fn write_op(&self, op: impl FnOnce(&FileBackend) -> io::Result<()>) -> io::Result<()> {
        let result = match self.faults.write_fault() {
            Some(error) => Err(error),
            None => op(&self.file),
        };
        if let Err(error) = &result {
            self.faults.note_failure(error);
        }
        result
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.write_op(|file| file.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.write_op(|file| file.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_op(|file| file.write(offset, data))
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}
