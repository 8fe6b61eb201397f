//! The primary's duties: the background work only a primary does (the deployment engine, the
//! reconciler), taken up each time the node becomes primary and put down the moment it stops
//! being one. One task follows the node's role for all of them.
//!
//! Stepping down fences the store and the edge transport at once (`Cluster::step_down`); the
//! duties are put down right after, so nothing that still ran in memory acts on a state the
//! new primary has moved past. Taken up again after a promotion, they start from the store as
//! it is then: the engine resumes the unfinished deployments from the replicated state.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::{Cluster, NodeRole};
use crate::rollout::engine::Engine;

/// Work a node does only while it is primary.
pub trait Duty: Send + Sync + 'static {
    /// What the log calls it.
    fn name(&self) -> &'static str;
    /// Starts it, from the store as it is now. Taking up a duty that runs changes nothing.
    fn take_up(&self);
    /// Stops it: nothing more of it reaches an edge or the store, and it keeps nothing in
    /// memory that a later `take_up` would act on.
    fn put_down(&self);
}

/// The deployment engine of a node with peers ([`Engine::start_idle`]).
impl Duty for Engine {
    fn name(&self) -> &'static str {
        "deployment engine"
    }

    fn take_up(&self) {
        Engine::take_up(self);
    }

    fn put_down(&self) {
        Engine::put_down(self);
    }
}

/// A task started when the duty is taken up and aborted when it is put down.
pub struct TaskDuty {
    name: &'static str,
    start: Box<dyn Fn() -> JoinHandle<()> + Send + Sync>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TaskDuty {
    /// `start` spawns the task (it is called again at each promotion).
    pub fn new(
        name: &'static str,
        start: impl Fn() -> JoinHandle<()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            start: Box::new(start),
            task: Mutex::new(None),
        }
    }
}

impl Duty for TaskDuty {
    fn name(&self) -> &'static str {
        self.name
    }

    fn take_up(&self) {
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        *task = Some((self.start)());
    }

    fn put_down(&self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl Drop for TaskDuty {
    fn drop(&mut self) {
        self.put_down();
    }
}

impl Cluster {
    /// Starts the one task that takes `duties` up, in order, each time this node becomes
    /// primary, and puts them down, in reverse order, the moment it stops being primary.
    /// Call it once the node has asked its peers at start ([`Cluster::check_peers_at_start`]),
    /// so an old primary restarted with its old settings never takes its duties up. A promotion that
    /// follows a step-down too closely for the role change to be seen still restarts them:
    /// each term the node is primary at is a new taking up. Needs a Tokio runtime; the task
    /// ends with it.
    pub fn supervise(&self, duties: Vec<Arc<dyn Duty>>) -> JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut roles = cluster.roles();
            // The term the duties were taken up at; `None` while they are down.
            let mut taken_at: Option<u64> = None;
            let mut told_down = false;
            loop {
                let primary = *roles.borrow_and_update() == NodeRole::Primary;
                if primary {
                    let term = match cluster.store().read(|reader| reader.current_term()).await {
                        Ok(term) => term,
                        Err(error) => {
                            // The role says primary, so its duties run; only a new term
                            // cannot be told from the one they run at.
                            tracing::warn!(%error, "cannot read this node's term");
                            taken_at.unwrap_or(0)
                        }
                    };
                    if taken_at != Some(term) {
                        if taken_at.is_some() {
                            put_down(&duties, term);
                        }
                        for duty in &duties {
                            duty.take_up();
                        }
                        tracing::info!(
                            term,
                            duties = ?names(&duties),
                            "primary: background duties taken up"
                        );
                        taken_at = Some(term);
                        told_down = false;
                    }
                } else if taken_at.is_some() || !told_down {
                    put_down(&duties, taken_at.unwrap_or(0));
                    taken_at = None;
                    told_down = true;
                }
                if roles.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

fn names(duties: &[Arc<dyn Duty>]) -> Vec<&'static str> {
    duties.iter().map(|d| d.name()).collect()
}

fn put_down(duties: &[Arc<dyn Duty>], term: u64) {
    for duty in duties.iter().rev() {
        duty.put_down();
    }
    tracing::info!(
        term,
        duties = ?names(duties),
        "background duties put down"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::cluster::wire::LogQuery;
    use crate::config::ClusterSettings;
    use crate::store::Store;

    /// Counts the duty's tasks alive: up when one starts, down when it is dropped (aborted).
    struct Alive(Arc<watch::Sender<i32>>);

    impl Alive {
        fn new(alive: Arc<watch::Sender<i32>>) -> Self {
            alive.send_modify(|n| *n += 1);
            Self(alive)
        }
    }

    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.send_modify(|n| *n -= 1);
        }
    }

    async fn until(alive: &mut watch::Receiver<i32>, n: i32, what: &str) {
        tokio::time::timeout(Duration::from_secs(20), alive.wait_for(|v| *v == n))
            .await
            .unwrap_or_else(|_| panic!("never happened: {what}"))
            .expect("counter");
    }

    #[tokio::test]
    async fn a_task_duty_runs_only_while_the_node_is_primary() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let settings = ClusterSettings {
            // A peer that never answers: the node stays the primary of its settings.
            peers: vec!["http://127.0.0.1:9".into()],
            secret: "cluster-secret".into(),
            ..ClusterSettings::default()
        };
        let cluster = Cluster::new(&settings, dir.path(), store).unwrap();
        let (counter, mut alive) = watch::channel(0);
        let counter = Arc::new(counter);
        let starts = Arc::new(AtomicUsize::new(0));
        let duty = {
            let starts = starts.clone();
            TaskDuty::new("test", move || {
                starts.fetch_add(1, Ordering::SeqCst);
                let guard = Alive::new(counter.clone());
                tokio::spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                })
            })
        };
        let _supervisor = cluster.supervise(vec![Arc::new(duty)]);
        until(&mut alive, 1, "the primary takes its duty up").await;

        // A peer asks for the log at a higher term: the node steps down.
        cluster
            .serve_log(LogQuery {
                from: 1,
                prev_term: 0,
                term: 99,
                node_id: "newer".into(),
                url: String::new(),
                wait_ms: 0,
            })
            .await
            .unwrap();
        until(&mut alive, 0, "the stepped-down node puts its duty down").await;

        cluster.promote().await.unwrap();
        until(&mut alive, 1, "the promoted node takes it up again").await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }
}
