//! Heartbeat intake: many edges' heartbeats become one store command per batch.
//!
//! A thousand edges heartbeating every 10 s would otherwise cost a hundred fsyncs a second.
//! One writer task takes whatever has queued while the previous batch committed and applies
//! it as a single `RecordHeartbeats`; each caller is answered once its beat is durable.

use tokio::sync::{mpsc, oneshot};

use crate::model::SYSTEM_ACTOR;
use crate::store::{Command, CommandEnvelope, HeartbeatRecord, Store, StoreError};

/// Most heartbeats written in one transaction.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<(), String>>;

/// Handle to the heartbeat writer; clones share it.
#[derive(Clone)]
pub struct HeartbeatIntake {
    queue: mpsc::Sender<(HeartbeatRecord, Reply)>,
}

impl HeartbeatIntake {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: Store) -> Self {
        let (queue, mut receiver) = mpsc::channel::<(HeartbeatRecord, Reply)>(8 * MAX_BATCH);
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (beats, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                metrics::histogram!("edgeplane_heartbeat_batch_size").record(beats.len() as f64);
                let result = store
                    .apply(CommandEnvelope::new(
                        SYSTEM_ACTOR,
                        "",
                        Command::RecordHeartbeats { beats },
                    ))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self { queue }
    }

    /// Queues a heartbeat and waits until it is durable.
    pub async fn submit(&self, beat: HeartbeatRecord) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((beat, reply))
            .await
            .map_err(|_| StoreError::Unavailable("heartbeat writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("heartbeat writer stopped".into()))?
            .map_err(StoreError::Unavailable)
    }
}
