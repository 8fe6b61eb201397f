//! The store's single writer: one OS thread that takes every command waiting, applies them in
//! order in one write transaction and commits them with one fsync before answering any
//! (group commit).
//!
//! redb admits one write transaction at a time and each durable commit costs an fsync, so
//! callers that each committed on their own waited in line for one fsync apiece; queued here,
//! the commands that arrive during one fsync share the next.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::oneshot;

use super::apply::{self, BatchLimits};
use super::replica::Replication;
use super::{Applied, CommandEnvelope, LOG, StoreError};

/// Most commands one batch takes from the queue.
const MAX_BATCH_COMMANDS: usize = 512;

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

/// A committed batch's answers, held until the standby acknowledges `index`.
struct Held {
    index: u64,
    answers: Vec<(Outcome, Reply)>,
}

/// The handle to the writer thread; dropping it lets the thread finish what is queued, and
/// waits for it.
pub(super) struct Writer {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    release: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(
        db: Arc<Database>,
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
            .spawn(move || run(&db, &queue, &replication, &hold))
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
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { envelope, reply })
            .map_err(|_| stopped())
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

/// Index of the last log entry; `None` when it cannot be read (the caller keeps what it had).
fn last_index(db: &Database) -> Option<u64> {
    use redb::{ReadableDatabase, ReadableTable};
    let txn = db.begin_read().ok()?;
    let log = txn.open_table(LOG).ok()?;
    let last = log.last().ok()?;
    last.map(|(key, _)| key.value())
}

fn run(
    db: &Database,
    queue: &mpsc::Receiver<Request>,
    replication: &Replication,
    hold: &mpsc::Sender<Held>,
) {
    // Commands taken from the queue but not yet applied, oldest first.
    let mut waiting: VecDeque<Request> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queue.recv() {
                Ok(request) => waiting.push_back(request),
                Err(mpsc::RecvError) => return,
            }
        }
        while waiting.len() < MAX_BATCH_COMMANDS {
            match queue.try_recv() {
                Ok(request) => waiting.push_back(request),
                Err(_) => break,
            }
        }
        let n = waiting.len().min(MAX_BATCH_COMMANDS);
        let (envelopes, replies): (Vec<_>, Vec<_>) = waiting
            .drain(..n)
            .map(|request| (request.envelope, request.reply))
            .unzip();
        // A panic in one batch answers that batch with an error and leaves the writer
        // serving the next: the aborted transaction left nothing behind.
        let outcomes = std::panic::catch_unwind(AssertUnwindSafe(|| {
            apply::apply_batch(db, &envelopes, BatchLimits::default())
        }))
        .unwrap_or_else(|_| {
            tracing::error!(commands = n, "the store writer panicked applying a batch");
            (0..n)
                .map(|_| Err(StoreError::Unavailable("the store writer failed".into())))
                .collect()
        });
        let taken = outcomes.len();
        metrics::histogram!("edgeplane_store_commit_batch_size").record(taken as f64);
        let mut replies = replies.into_iter();
        let answers: Vec<(Outcome, Reply)> = outcomes.into_iter().zip(replies.by_ref()).collect();
        let committed = answers.iter().any(|(outcome, _)| outcome.is_ok());
        let index = if committed { last_index(db) } else { None };
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
            waiting.push_front(request);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Role, Timestamp, User};
    use crate::store::{Command, CommandEnvelope, Store};

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
