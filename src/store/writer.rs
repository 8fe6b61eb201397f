//! The store's single writer: one OS thread that takes every command waiting, applies them in
//! order in one write transaction and commits them with one fsync before answering any
//! (group commit).
//!
//! redb admits one write transaction at a time and each durable commit costs an fsync, so
//! callers that each committed on their own waited in line for one fsync apiece; queued here,
//! the commands that arrive during one fsync share the next.
//!
//! The store's own writes outside the command log's door (replicated entries on a standby, log
//! compaction, installing a copy) run here too, each alone in its turn, so that an I/O error
//! they meet stops writes and is recovered from exactly as a command's would be.

use std::collections::VecDeque;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::apply::{self, BatchLimits};
use super::health::{Refusal, bytes};
use super::replica::Replication;
use super::{Applied, CommandEnvelope, LOG, Shared, StoreError};

/// Most commands one batch takes from the queue.
const MAX_BATCH_COMMANDS: usize = 512;

/// How often an idle writer refreshes the disk figures (free space, file size).
const PROBE_DISK_EVERY: Duration = Duration::from_secs(5);

/// After a full disk, writes resume once this much more space is free than when it filled:
/// sooner, the next write would fill it again.
const RESUME_MARGIN_BYTES: u64 = 1024 * 1024;

/// After a full disk, writes are tried again after this long even if free space did not
/// grow as measured, provided the filesystem has a margin free (a quota, say, is not in the
/// filesystem's free space); a disk that stays full keeps writes refused.
const RETRY_FULL_AFTER: Duration = Duration::from_secs(30);

type Outcome = Result<Applied, StoreError>;

/// Where a command's outcome goes.
enum Reply {
    Async(oneshot::Sender<Outcome>),
    Blocking(mpsc::SyncSender<Outcome>),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        // A caller that stopped waiting needs no answer: its command stands either way, as it
        // would had the caller waited.
        match self {
            Reply::Async(reply) => {
                let _ = reply.send(outcome);
            }
            Reply::Blocking(reply) => {
                let _ = reply.send(outcome);
            }
        }
    }
}

struct Request {
    envelope: CommandEnvelope,
    reply: Reply,
}

/// Answers a job once the writer knows what its failure means: `Some` replaces the job's own
/// error with the one writes are now refused with.
type Finish = Box<dyn FnOnce(Option<StoreError>) + Send>;

/// Runs a job; answers whether it failed on storage, and how to answer its caller.
type RunJob = Box<dyn FnOnce(&redb::Database) -> (bool, Finish) + Send>;

/// A write transaction of the store's own, run alone on the writer thread.
struct Job {
    run: RunJob,
    /// Answers its caller without running it.
    refuse: Finish,
}

/// What the writer thread is asked to do, in order. Commands stay unboxed: they are nearly
/// all of the traffic, and a box each would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
enum Work {
    Command(Request),
    Job(Job),
}

impl Work {
    fn refuse(self, error: StoreError) {
        match self {
            Work::Command(request) => request.reply.send(Err(error)),
            Work::Job(job) => (job.refuse)(Some(error)),
        }
    }
}

/// A committed batch's answers, held until the standby acknowledges `index`.
struct Held {
    index: u64,
    answers: Vec<(Outcome, Reply)>,
}

/// The handle to the writer thread; dropping it lets the thread finish what is queued, and
/// waits for it.
pub(super) struct Writer {
    requests: Option<mpsc::Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    release: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(
        shared: Arc<Shared>,
        replication: Arc<Replication>,
    ) -> Result<Self, StoreError> {
        let (requests, queue) = mpsc::channel();
        let (hold, held) = mpsc::channel::<Held>();
        let gate = replication.clone();
        // Answers wait for the standby on their own thread, so the writer goes on committing
        // the next batch meanwhile; they are released in commit order.
        let release = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || {
                for batch in held {
                    gate.gate.wait(batch.index);
                    for (outcome, reply) in batch.answers {
                        reply.send(outcome);
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&shared, &queue, &replication, &hold))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
            release: Some(release),
        })
    }

    pub(super) async fn apply(&self, envelope: CommandEnvelope) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.submit(envelope, Reply::Async(reply))?;
        answer.await.map_err(|_| stopped())?
    }

    pub(super) fn apply_blocking(&self, envelope: CommandEnvelope) -> Outcome {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(envelope, Reply::Blocking(reply))?;
        answer.recv().map_err(|_| stopped())?
    }

    fn submit(&self, envelope: CommandEnvelope, reply: Reply) -> Result<(), StoreError> {
        self.send(Work::Command(Request { envelope, reply }))
    }

    fn send(&self, work: Work) -> Result<(), StoreError> {
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(work)
            .map_err(|_| stopped())
    }

    /// Runs `job` in its own write transaction on the writer thread, in order with the
    /// commands, and waits for it. While writes are refused it is refused the same way; an
    /// I/O error it meets stops writes until the file is reopened, and it answers with the
    /// refusal, so its caller tries again once writes resume.
    pub(super) fn run_alone<T: Send + 'static>(
        &self,
        job: impl FnOnce(&redb::Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel::<Result<T, StoreError>>(1);
        let refused = reply.clone();
        let job = Job {
            run: Box::new(move |db| {
                let outcome = job(db);
                let failed = matches!(outcome, Err(StoreError::Unavailable(_)));
                let finish: Finish = Box::new(move |refusal| {
                    let _ = reply.send(match refusal {
                        Some(error) => Err(error),
                        None => outcome,
                    });
                });
                (failed, finish)
            }),
            refuse: Box::new(move |error| {
                let _ = refused.send(Err(error.unwrap_or_else(stopped)));
            }),
        };
        self.send(Work::Job(job))?;
        answer.recv().map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered everything queued.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(release) = self.release.take() {
            let _ = release.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

/// The way back after an I/O error poisoned the database.
struct Recovery {
    refusal: Refusal,
    next_attempt: Instant,
    backoff: Duration,
    /// The file is open again (reads are served); writes may still wait for space.
    reopened: bool,
    /// Free bytes when the disk filled.
    free_at_failure: u64,
    last_write_try: Instant,
    reopen_failures: u32,
}

/// Index of the last log entry; `None` when it cannot be read (the caller keeps what it had).
fn last_index(db: &redb::Database) -> Option<u64> {
    use redb::{ReadableDatabase, ReadableTable};
    let txn = db.begin_read().ok()?;
    let log = txn.open_table(LOG).ok()?;
    let last = log.last().ok()?;
    last.map(|(key, _)| key.value())
}

fn run(
    shared: &Shared,
    queue: &mpsc::Receiver<Work>,
    replication: &Replication,
    hold: &mpsc::Sender<Held>,
) {
    // Work taken from the queue but not yet done, oldest first.
    let mut waiting: VecDeque<Work> = VecDeque::new();
    let mut recovery: Option<Recovery> = None;
    let mut next_probe = Instant::now() + PROBE_DISK_EVERY;
    loop {
        if waiting.is_empty() {
            let wake = recovery
                .as_ref()
                .map_or(next_probe, |r| r.next_attempt.min(next_probe));
            match queue.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(work) => waiting.push_back(work),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if Instant::now() >= next_probe {
            shared.health.probe_disk();
            next_probe = Instant::now() + PROBE_DISK_EVERY;
        }
        if let Some(state) = recovery.as_mut()
            && Instant::now() >= state.next_attempt
            && recover(shared, state)
        {
            recovery = None;
        }
        if waiting.is_empty() {
            continue;
        }
        while waiting.len() < MAX_BATCH_COMMANDS {
            match queue.try_recv() {
                Ok(work) => waiting.push_back(work),
                Err(_) => break,
            }
        }
        if recovery.is_some() {
            // Refused at once rather than queued: a caller should hear now that it must retry.
            let refusal = shared.health.refusal_error();
            for work in waiting.drain(..) {
                work.refuse(refusal.clone());
            }
            continue;
        }
        let db = match shared.database() {
            Ok(db) => db,
            Err(error) => {
                for work in waiting.drain(..) {
                    work.refuse(error.clone());
                }
                continue;
            }
        };
        if let Some(Work::Job(_)) = waiting.front() {
            if let Some(Work::Job(job)) = waiting.pop_front()
                && let Some(state) = run_job(shared, db, job)
            {
                recovery = Some(state);
            }
            continue;
        }
        // The commands up to the next job, at most a batch of them.
        let n = waiting
            .iter()
            .take(MAX_BATCH_COMMANDS)
            .take_while(|work| matches!(work, Work::Command(_)))
            .count();
        let (envelopes, replies): (Vec<_>, Vec<_>) = waiting
            .drain(..n)
            .filter_map(|work| match work {
                Work::Command(request) => Some((request.envelope, request.reply)),
                Work::Job(_) => None,
            })
            .unzip();
        // A panic in one batch answers that batch with an error and leaves the writer
        // serving the next: the aborted transaction left nothing behind.
        let mut outcomes = std::panic::catch_unwind(AssertUnwindSafe(|| {
            apply::apply_batch(&db, &envelopes, BatchLimits::default())
        }))
        .unwrap_or_else(|_| {
            tracing::error!(commands = n, "the store writer panicked applying a batch");
            (0..n)
                .map(|_| Err(StoreError::Unavailable("the store writer failed".into())))
                .collect()
        });
        let storage_failed = outcomes
            .iter()
            .any(|outcome| matches!(outcome, Err(StoreError::Unavailable(_))));
        if storage_failed && poisoned(&db) {
            drop(db);
            let state = stop_writes(shared);
            // What failed with the database fails for the reason writes stopped.
            let refusal = shared.health.refusal_error();
            for outcome in outcomes.iter_mut() {
                if matches!(outcome, Err(StoreError::Unavailable(_))) {
                    *outcome = Err(refusal.clone());
                }
            }
            recovery = Some(state);
        }
        let taken = outcomes.len();
        metrics::histogram!("edgeplane_store_commit_batch_size").record(taken as f64);
        let mut replies = replies.into_iter();
        let answers: Vec<(Outcome, Reply)> = outcomes.into_iter().zip(replies.by_ref()).collect();
        let committed = answers.iter().any(|(outcome, _)| outcome.is_ok());
        let index = match (committed, shared.database()) {
            (true, Ok(db)) => last_index(&db),
            _ => None,
        };
        if let Some(index) = index {
            replication.committed(index);
        }
        match index {
            Some(index) if replication.gate.holds() => {
                if let Err(mpsc::SendError(batch)) = hold.send(Held { index, answers }) {
                    for (outcome, reply) in batch.answers {
                        reply.send(outcome);
                    }
                }
            }
            _ => {
                for (outcome, reply) in answers {
                    reply.send(outcome);
                }
            }
        }
        // What the batch's bounds left out goes first into the next one, in order.
        let rest: Vec<Request> = envelopes
            .into_iter()
            .skip(taken)
            .zip(replies)
            .map(|(envelope, reply)| Request { envelope, reply })
            .collect();
        for request in rest.into_iter().rev() {
            waiting.push_front(Work::Command(request));
        }
    }
}

/// Runs a job alone; answers the recovery to start when its I/O error poisoned the database.
fn run_job(shared: &Shared, db: Arc<redb::Database>, job: Job) -> Option<Recovery> {
    let Job { run, refuse } = job;
    // A panic answers the job with an error and leaves the writer serving: the aborted
    // transaction left nothing behind.
    let Ok((failed, finish)) = std::panic::catch_unwind(AssertUnwindSafe(|| run(&db))) else {
        tracing::error!("the store writer panicked in a write of its own");
        refuse(Some(StoreError::Unavailable(
            "the store writer failed".into(),
        )));
        return None;
    };
    if failed && poisoned(&db) {
        drop(db);
        let state = stop_writes(shared);
        finish(Some(shared.health.refusal_error()));
        return Some(state);
    }
    finish(None);
    None
}

/// Whether an I/O error has left the database refusing every transaction (redb's
/// `PreviousIo`), rather than failing one command.
fn poisoned(db: &redb::Database) -> bool {
    // Beginning a write transaction and dropping it writes nothing.
    db.begin_write().is_err()
}

/// Refuses writes for the failure that poisoned the database, says so once, and closes it.
fn stop_writes(shared: &Shared) -> Recovery {
    let (kind, cause) = shared
        .faults
        .take_last_failure()
        .unwrap_or((io::ErrorKind::Other, "an I/O error".into()));
    let refusal = match kind {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Refusal::NoSpace,
        _ => Refusal::Io,
    };
    shared.health.probe_disk();
    let status = shared.health.status();
    let free = status.free_bytes.unwrap_or(0);
    if shared.health.refuse(refusal, cause.clone()) {
        tracing::error!(
            %cause,
            free_bytes = free,
            database_bytes = status.database_bytes.unwrap_or(0),
            "store writes stopped: {} ({} free on the data directory's filesystem); reads \
             are still served and the store file is reopened in the background",
            match refusal {
                Refusal::NoSpace => "the disk is full",
                Refusal::Io => "an I/O error on the store file",
            },
            bytes(free),
        );
    }
    shared.close();
    Recovery {
        refusal,
        next_attempt: Instant::now(),
        backoff: shared.options.reopen_backoff,
        reopened: false,
        free_at_failure: free,
        last_write_try: Instant::now(),
        reopen_failures: 0,
    }
}

/// One step back to writing: reopen the file, then (after a full disk) wait for space.
/// Answers whether writes run again.
fn recover(shared: &Shared, state: &mut Recovery) -> bool {
    if !state.reopened {
        match shared.reopen() {
            Ok(()) => {
                state.reopened = true;
                tracing::info!("store file reopened after the I/O error; reads are served");
            }
            Err(error) => {
                state.reopen_failures += 1;
                if state.reopen_failures == 1 {
                    tracing::warn!(%error, "cannot reopen the store file yet; retrying with backoff");
                } else {
                    tracing::debug!(%error, attempt = state.reopen_failures, "store reopen failed");
                }
                wait_longer(shared, state);
                return false;
            }
        }
    }
    if state.refusal == Refusal::NoSpace {
        shared.health.probe_disk();
        let free = shared.health.free_bytes().unwrap_or(0);
        let freed = free >= state.free_at_failure.saturating_add(RESUME_MARGIN_BYTES);
        let worth_a_try =
            free >= RESUME_MARGIN_BYTES && state.last_write_try.elapsed() >= RETRY_FULL_AFTER;
        if !freed && !worth_a_try {
            // Free space is cheap to ask for: look again soon rather than backing off.
            state.next_attempt = Instant::now() + shared.options.reopen_backoff;
            return false;
        }
    }
    if let Some(since) = shared.health.resume() {
        let stopped_for = crate::model::Timestamp::now().0.saturating_sub(since.0);
        tracing::info!(
            stopped_for_ms = stopped_for,
            "store writes resumed after {}",
            humantime::format_duration(Duration::from_millis(stopped_for.max(0) as u64))
        );
    }
    true
}

fn wait_longer(shared: &Shared, state: &mut Recovery) {
    state.next_attempt = Instant::now() + state.backoff;
    state.backoff = (state.backoff * 2).min(shared.options.reopen_backoff_max);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io;
    use std::time::{Duration, Instant};

    use crate::model::{Role, Timestamp, User};
    use crate::store::{
        Command, CommandEnvelope, Refusal, Store, StoreError, StoreOptions, StoreStatus,
    };

    fn quick_recovery() -> StoreOptions {
        StoreOptions {
            reopen_backoff: Duration::from_millis(5),
            reopen_backoff_max: Duration::from_millis(50),
        }
    }

    /// Polls `condition` until it holds; panics after a generous bound.
    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The usernames stored, and the log checked for gaps: indices 1..=n in order.
    fn stored_users(store: &Store) -> (BTreeSet<String>, Vec<String>) {
        let reader = store.reader().unwrap();
        let users = reader
            .users()
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        let log = reader.log_entries(1, usize::MAX).unwrap();
        let indexes: Vec<u64> = log.iter().map(|entry| entry.index).collect();
        assert_eq!(indexes, (1..=log.len() as u64).collect::<Vec<u64>>());
        let logged = log
            .into_iter()
            .filter_map(|entry| match entry.envelope.command {
                Command::CreateUser { user } => Some(user.username),
                _ => None,
            })
            .collect();
        (users, logged)
    }

    #[test]
    fn a_failed_commit_stops_writes_until_the_file_is_reopened_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), quick_recovery()).unwrap();
        for n in 0..5 {
            store
                .apply_blocking(create_user(format!("before-{n}")))
                .unwrap();
        }
        // The commit fails, then the first two attempts to reopen the file.
        store.faults().fail_writes(3, io::ErrorKind::Other);
        let refused = store.apply_blocking(create_user("lost".into()));
        assert!(
            matches!(refused, Err(StoreError::Recovering(_))),
            "{refused:?}"
        );
        wait_until("writes resume", || store.status().writable);
        assert_eq!(
            store.status(),
            StoreStatus {
                writable: true,
                readable: true,
                refusal: None,
                reason: None,
                cause: None,
                since: None,
                free_bytes: store.status().free_bytes,
                database_bytes: store.status().database_bytes,
            }
        );
        store.apply_blocking(create_user("after".into())).unwrap();
        let (users, logged) = stored_users(&store);
        let expected: BTreeSet<String> = (0..5)
            .map(|n| format!("before-{n}"))
            .chain(["after".to_string()])
            .collect();
        assert_eq!(users, expected);
        assert_eq!(
            logged.len(),
            6,
            "one log entry per stored command: {logged:?}"
        );
    }

    #[test]
    fn while_the_file_cannot_be_reopened_writes_are_refused_with_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), quick_recovery()).unwrap();
        store.faults().fail_writes(u64::MAX, io::ErrorKind::Other);
        assert!(store.apply_blocking(create_user("a".into())).is_err());
        let status = store.status();
        assert!(!status.writable);
        assert_eq!(status.refusal, Some(Refusal::Io));
        assert_eq!(
            status.cause.as_deref(),
            Some("injected store fault"),
            "{status:?}"
        );
        assert!(
            !status.reason.as_deref().unwrap_or("").contains("injected"),
            "the reason /ready gives names no internals: {status:?}"
        );
        let refused = store.apply_blocking(create_user("b".into()));
        assert!(matches!(refused, Err(StoreError::Recovering(_))));
        store.faults().clear();
        wait_until("writes resume", || store.status().writable);
        store.apply_blocking(create_user("c".into())).unwrap();
        let (users, _) = stored_users(&store);
        assert_eq!(users, BTreeSet::from(["c".to_string()]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_full_disk_loses_no_acknowledged_write_and_leaves_no_gap_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), quick_recovery()).unwrap();
        let n_refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                let n_refused = n_refused.clone();
                tokio::spawn(async move {
                    let (mut acked, mut refused) = (Vec::new(), Vec::new());
                    let mut n = 0;
                    while acked.len() < 40 {
                        let name = format!("u{w}-{n}");
                        n += 1;
                        match store.apply(create_user(name.clone())).await {
                            Ok(_) => acked.push(name),
                            Err(StoreError::StorageFull(message)) => {
                                assert!(message.contains("free"), "{message}");
                                refused.push(name);
                                n_refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                tokio::task::yield_now().await;
                            }
                            Err(other) => panic!("unexpected refusal: {other:?}"),
                        }
                    }
                    (acked, refused)
                })
            })
            .collect();
        let watcher = store.clone();
        tokio::task::spawn_blocking(move || {
            wait_until("some writes commit", || {
                watcher
                    .reader()
                    .is_ok_and(|r| r.user_count().unwrap_or(0) >= 40)
            });
            watcher.faults().fill();
            wait_until("writes are refused", || {
                n_refused.load(std::sync::atomic::Ordering::SeqCst) >= 20
            });
            let status = watcher.status();
            assert_eq!(status.refusal, Some(Refusal::NoSpace));
            assert_eq!(status.free_bytes, Some(0));
            watcher.faults().clear();
        })
        .await
        .unwrap();
        let (mut acked, mut refused) = (BTreeSet::new(), BTreeSet::new());
        for writer in writers {
            let (a, r) = writer.await.unwrap();
            acked.extend(a);
            refused.extend(r);
        }
        assert!(store.status().writable);
        let (users, logged) = stored_users(&store);
        assert!(acked.is_subset(&users), "an acknowledged write is missing");
        assert!(
            users
                .iter()
                .all(|u| acked.contains(u) || refused.contains(u)),
            "a stored user nobody wrote"
        );
        assert_eq!(logged.len(), users.len(), "one log entry per stored user");
        assert_eq!(acked.len(), 8 * 40);
    }

    fn create_user(username: String) -> CommandEnvelope {
        let now = Timestamp::now();
        CommandEnvelope::new(
            "test",
            "",
            Command::CreateUser {
                user: User {
                    username,
                    role: Role::Developer,
                    password_hash: "hash".into(),
                    created_at: now,
                    updated_at: now,
                },
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_all_commit_with_one_log_index_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let writers: Vec<_> = (0..32)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 0..10 {
                        store.apply(create_user(format!("u{w}-{n}"))).await?;
                    }
                    Ok::<_, crate::store::StoreError>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        // A blocking caller shares the same queue.
        store.apply_blocking(create_user("last".into())).unwrap();
        let reader = store.reader().unwrap();
        assert_eq!(reader.user_count().unwrap(), 321);
        let log = reader.log_entries(1, usize::MAX).unwrap();
        let indexes: Vec<u64> = log.iter().map(|entry| entry.index).collect();
        assert_eq!(indexes, (1..=321).collect::<Vec<u64>>());
        // Each writer's commands are logged in the order it sent them.
        for w in 0..32 {
            let prefix = format!("u{w}-");
            let order: Vec<String> = log
                .iter()
                .filter_map(|entry| match &entry.envelope.command {
                    Command::CreateUser { user } if user.username.starts_with(&prefix) => {
                        Some(user.username.clone())
                    }
                    _ => None,
                })
                .collect();
            let sent: Vec<String> = (0..10).map(|n| format!("{prefix}{n}")).collect();
            assert_eq!(order, sent);
        }
    }

    #[test]
    fn dropping_the_last_handle_closes_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clone = store.clone();
        clone.apply_blocking(create_user("a".into())).unwrap();
        drop(store);
        // A handle is still open: the file stays locked.
        assert!(Store::open(dir.path()).is_err());
        drop(clone);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.reader().unwrap().user_count().unwrap(), 1);
        reopened.apply_blocking(create_user("b".into())).unwrap();
    }
}
