//! Deployment admission as the store decides it: the running slot a deployment holds until it
//! finishes, the freeze, and a deployment admitted just before a restart that the engine had
//! not started yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use edgeplane::model::{CreateDeployment, Deployment, DeploymentStatus, RollbackConfig, Timestamp};
use edgeplane::rollout::engine::{
    AlertSink, EdgeAnswer, EdgeTarget, EdgeTransport, Engine, EngineSettings, PushContent,
    SystemClock,
};
use edgeplane::rollout::machine::AlertKind;
use edgeplane::secrets::SecretBox;

mod common;
use common::HealthOnlyAnalysis;

/// Alerts go nowhere: these tests look at the store.
struct NoAlerts;

impl AlertSink for NoAlerts {
    fn alert(&self, _: &Deployment, _: AlertKind, _: &str) {}
}
use edgeplane::store::{Command, CommandEnvelope, Freeze, Store, StoreError};

fn apply(store: &Store, command: Command) -> Result<(), StoreError> {
    store
        .apply_blocking(CommandEnvelope::new("admin", "", command))
        .map(|_| ())
}

/// Stores a draft cache rule on its own pattern.
fn configuration(store: &Store, id: &str) {
    common::store_cache_rule(store, id, &format!("/{id}/*"), "1.0.0", Timestamp::now())
        .expect("configuration stored");
}

fn deployment(id: &str, configuration_id: &str) -> Deployment {
    CreateDeployment {
        configuration_id: configuration_id.into(),
        target_locations: vec!["nowhere-1".into()],
        ..CreateDeployment::default()
    }
    .into_deployment(
        id.into(),
        "1.0.0".into(),
        "admin".into(),
        Timestamp::now(),
        &RollbackConfig::default(),
    )
    .expect("valid request")
}

fn create(store: &Store, deployment: &Deployment, max_concurrent: u64) -> Result<(), StoreError> {
    apply(
        store,
        Command::CreateDeployment {
            deployment: Box::new(deployment.clone()),
            max_concurrent,
        },
    )
}

#[test]
fn a_deployment_holds_its_slot_until_it_finishes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    configuration(&store, "config-a");
    configuration(&store, "config-b");
    let mut first = deployment("deploy-1", "config-a");
    create(&store, &first, 1).expect("first admitted");
    assert!(matches!(
        create(&store, &deployment("deploy-2", "config-a"), 10),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        create(&store, &deployment("deploy-3", "config-b"), 1),
        Err(StoreError::Conflict(_))
    ));
    first.status = DeploymentStatus::Completed;
    apply(
        &store,
        Command::SaveDeployment {
            deployment: Box::new(first),
            edge_versions: Vec::new(),
        },
    )
    .expect("finished");
    create(&store, &deployment("deploy-4", "config-b"), 1).expect("the slot is free again");
    create(&store, &deployment("deploy-5", "config-a"), 2).expect("so is the configuration");
}

#[test]
fn a_freeze_refuses_new_deployments_until_it_is_lifted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    configuration(&store, "config-a");
    let freeze = Freeze {
        reason: "holiday".into(),
        frozen_by: "admin".into(),
        frozen_at: Timestamp::now(),
    };
    apply(
        &store,
        Command::SetFreeze {
            freeze: Some(freeze),
        },
    )
    .expect("frozen");
    let refused = create(&store, &deployment("deploy-1", "config-a"), 10);
    assert!(
        matches!(&refused, Err(StoreError::Frozen(message)) if message.contains("holiday")),
        "{refused:?}"
    );
    apply(&store, Command::SetFreeze { freeze: None }).expect("lifted");
    create(&store, &deployment("deploy-1", "config-a"), 10).expect("admitted");
}

/// Edges that are never reached: the deployment below has no deployable target.
struct Unreachable;

impl EdgeTransport for Unreachable {
    fn push(&self, _: EdgeTarget, _: PushContent) -> BoxFuture<'static, EdgeAnswer> {
        Box::pin(async {
            EdgeAnswer::Failed {
                error: "unreachable".into(),
            }
        })
    }

    fn rollback(
        &self,
        _: EdgeTarget,
        _: String,
        _: Option<String>,
    ) -> BoxFuture<'static, EdgeAnswer> {
        Box::pin(async {
            EdgeAnswer::Failed {
                error: "unreachable".into(),
            }
        })
    }
}

#[tokio::test]
async fn a_deployment_admitted_before_a_restart_is_started_by_the_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    configuration(&store, "config-a");
    create(&store, &deployment("deploy-1", "config-a"), 10).expect("admitted");
    let _engine = Engine::start(
        store.clone(),
        SecretBox::new([7; 32]),
        Arc::new(Unreachable),
        Arc::new(HealthOnlyAnalysis),
        Arc::new(NoAlerts),
        Arc::new(SystemClock),
        EngineSettings::default(),
    )
    .expect("engine starts");
    // Its only target is unknown, so starting it ends it at once, which frees the slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let stored = store
            .read(|r| r.deployment("deploy-1"))
            .await
            .expect("read")
            .expect("stored");
        if stored.started_at.is_some() || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(started.status, DeploymentStatus::Failed, "{started:?}");
    assert!(started.started_at.is_some());
    create(&store, &deployment("deploy-2", "config-a"), 1).expect("the slot is free again");
}
