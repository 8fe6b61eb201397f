//! The reconciler (SPEC §6): an edge whose reported active versions differ from what the
//! control plane wants it to run is pushed again, so an edge that restarts or missed a push
//! converges without an operator.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::drift::{ReconcileAction, plan};
use crate::model::{EdgeLocation, Timestamp};
use crate::rollout::engine::{
    EdgeAnswer, EdgeTarget, EdgeTransport, Engine, PushContent, load_content,
};
use crate::secrets::SecretBox;
use crate::store::{EdgeRecord, Store};

/// Pushes in flight at once in one pass; the transport bounds each push's time.
const MAX_IN_FLIGHT: usize = 16;

/// What one pass did: `(location, configuration, version)` pushed and acknowledged, and
/// those whose push failed with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub pushed: Vec<(String, String, String)>,
    pub failed: Vec<(String, String, String, String)>,
}

/// The background reconciler.
pub struct Reconciler;

impl Reconciler {
    /// Runs [`reconcile_once`] every `interval` until the returned task is aborted.
    pub fn start(
        store: Store,
        secrets: SecretBox,
        transport: Arc<dyn EdgeTransport>,
        engine: Engine,
        interval: Duration,
        healthy_within_ms: i64,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            // A slow pass must not be followed by a burst of catch-up passes.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; edges have not heartbeated yet after a start.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let report =
                    reconcile_once(&store, &secrets, &transport, &engine, healthy_within_ms).await;
                if !report.pushed.is_empty() || !report.failed.is_empty() {
                    tracing::info!(
                        pushed = report.pushed.len(),
                        failed = report.failed.len(),
                        "reconciliation pass"
                    );
                }
            }
        })
    }
}

/// One `(location, configuration, version)` push the reconciler should make.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WantedPush {
    pub location_id: String,
    pub configuration_id: String,
    pub version: String,
}

/// Pure selection: the pushes that bring every eligible edge to its desired versions.
/// Eligible: active, not quarantined, healthy at `now`. Configurations in `busy` (a running
/// deployment is changing them) are left to that deployment.
pub fn wanted_pushes(
    edges: &[EdgeLocation],
    desired: &[(String, String, String)],
    busy: &BTreeSet<String>,
    now: Timestamp,
    healthy_within_ms: i64,
) -> Vec<WantedPush> {
    let mut desired_by_edge: HashMap<&str, BTreeMap<String, String>> = HashMap::new();
    for (location_id, configuration_id, version) in desired {
        if busy.contains(configuration_id) {
            continue;
        }
        desired_by_edge
            .entry(location_id.as_str())
            .or_default()
            .insert(configuration_id.clone(), version.clone());
    }
    let mut out = Vec::new();
    for edge in edges {
        if !edge.is_deployable_at(now, healthy_within_ms) {
            continue;
        }
        let Some(wanted) = desired_by_edge.get(edge.location_id.as_str()) else {
            continue;
        };
        for action in plan(wanted, &edge.active_configurations) {
            let ReconcileAction::Push {
                configuration_id,
                version,
            } = action;
            out.push(WantedPush {
                location_id: edge.location_id.clone(),
                configuration_id,
                version,
            });
        }
    }
    out
}

/// One pass: reads edges and desired versions, and pushes (mode `apply`) what differs.
/// Never fails as a whole: what cannot be read or pushed is logged and reported.
pub async fn reconcile_once(
    store: &Store,
    secrets: &SecretBox,
    transport: &Arc<dyn EdgeTransport>,
    engine: &Engine,
    healthy_within_ms: i64,
) -> ReconcileReport {
    let mut report = ReconcileReport::default();
    let read = store
        .read(|r| Ok((r.edges()?, r.desired_versions()?)))
        .await;
    let (records, desired) = match read {
        Ok(found) => found,
        Err(error) => {
            tracing::error!(%error, "reconciler cannot read edges and desired versions");
            return report;
        }
    };
    let busy: BTreeSet<String> = engine
        .running()
        .into_values()
        .map(|summary| summary.configuration_id)
        .collect();
    let locations: Vec<EdgeLocation> = records.iter().map(|r| r.location.clone()).collect();
    let wanted = wanted_pushes(
        &locations,
        &desired,
        &busy,
        Timestamp::now(),
        healthy_within_ms,
    );
    if wanted.is_empty() {
        return report;
    }
    let records: HashMap<&str, &EdgeRecord> = records
        .iter()
        .map(|r| (r.location.location_id.as_str(), r))
        .collect();

    // Each (configuration, version) is read and its secrets opened once per pass.
    let mut contents: HashMap<(String, String), Result<PushContent, String>> = HashMap::new();
    let mut jobs = Vec::with_capacity(wanted.len());
    for push in wanted {
        let key = (push.configuration_id.clone(), push.version.clone());
        if !contents.contains_key(&key) {
            let loaded = load_content(store, secrets, &key.0, &key.1)
                .await
                .map_err(|e| e.to_string());
            contents.insert(key.clone(), loaded);
        }
        let content = match &contents[&key] {
            Ok(content) => content.clone(),
            Err(error) => {
                fail(&mut report, push, error.clone());
                continue;
            }
        };
        let target = match records.get(push.location_id.as_str()) {
            Some(record) => match secrets.open(&record.token_sealed) {
                Ok(token) => EdgeTarget {
                    location_id: push.location_id.clone(),
                    endpoint: record.location.endpoint.clone(),
                    token,
                },
                Err(error) => {
                    fail(
                        &mut report,
                        push,
                        format!("cannot open the edge's token: {error}"),
                    );
                    continue;
                }
            },
            None => continue,
        };
        jobs.push((push, target, content));
    }

    let answers: Vec<(WantedPush, EdgeAnswer)> = futures_util::stream::iter(jobs)
        .map(|(push, target, content)| {
            let answer = transport.push(target, content);
            async move { (push, answer.await) }
        })
        .buffer_unordered(MAX_IN_FLIGHT)
        .collect()
        .await;
    for (push, answer) in answers {
        match answer {
            EdgeAnswer::Acked { latency_ms } => {
                metrics::counter!("edgeplane_reconcile_pushes_total", "result" => "acked")
                    .increment(1);
                tracing::debug!(
                    location_id = %push.location_id,
                    configuration_id = %push.configuration_id,
                    version = %push.version,
                    latency_ms,
                    "reconciler pushed the desired version"
                );
                report
                    .pushed
                    .push((push.location_id, push.configuration_id, push.version));
            }
            EdgeAnswer::Nacked { reason } => {
                metrics::counter!("edgeplane_reconcile_pushes_total", "result" => "nacked")
                    .increment(1);
                fail(&mut report, push, format!("nacked: {reason}"));
            }
            EdgeAnswer::Failed { error } => {
                metrics::counter!("edgeplane_reconcile_pushes_total", "result" => "failed")
                    .increment(1);
                fail(&mut report, push, error);
            }
            EdgeAnswer::StaleTerm { seen } => {
                metrics::counter!("edgeplane_reconcile_pushes_total", "result" => "stale_term")
                    .increment(1);
                fail(&mut report, push, format!("the edge has seen term {seen}"));
            }
        }
    }
    report.pushed.sort();
    report.failed.sort();
    report
}

fn fail(report: &mut ReconcileReport, push: WantedPush, error: String) {
    tracing::warn!(
        location_id = %push.location_id,
        configuration_id = %push.configuration_id,
        version = %push.version,
        %error,
        "reconciler push failed"
    );
    report
        .failed
        .push((push.location_id, push.configuration_id, push.version, error));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EdgeHealth;

    const NOW: i64 = 1_000_000;
    const WITHIN: i64 = 30_000;

    fn edge(id: &str, active: &[(&str, &str)]) -> EdgeLocation {
        EdgeLocation {
            location_id: id.into(),
            name: id.into(),
            region: "us-east".into(),
            country_code: "US".into(),
            city: "Ashburn".into(),
            edge_type: Default::default(),
            endpoint: format!("http://{id}.invalid"),
            capacity: Default::default(),
            health: EdgeHealth::default(),
            metrics: None,
            last_heartbeat: Some(Timestamp::from_millis(NOW - 1_000)),
            started_at: None,
            is_active: true,
            active_configurations: active
                .iter()
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect(),
            metadata: BTreeMap::new(),
            is_quarantined: false,
        }
    }

    fn desired(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        rows.iter()
            .map(|(l, c, v)| (l.to_string(), c.to_string(), v.to_string()))
            .collect()
    }

    fn wanted(edges: &[EdgeLocation], rows: &[(&str, &str, &str)], busy: &[&str]) -> Vec<String> {
        let busy = busy.iter().map(|b| b.to_string()).collect();
        wanted_pushes(
            edges,
            &desired(rows),
            &busy,
            Timestamp::from_millis(NOW),
            WITHIN,
        )
        .into_iter()
        .map(|p| format!("{}/{}@{}", p.location_id, p.configuration_id, p.version))
        .collect()
    }

    #[test]
    fn edges_in_sync_get_no_push() {
        let edges = [edge("a", &[("c1", "1.0.0")]), edge("b", &[("c1", "1.0.0")])];
        let rows = [("a", "c1", "1.0.0"), ("b", "c1", "1.0.0")];
        assert!(wanted(&edges, &rows, &[]).is_empty());
    }

    #[test]
    fn a_wiped_or_stale_edge_is_pushed_its_desired_version() {
        let edges = [edge("a", &[]), edge("b", &[("c1", "0.9.0")])];
        let rows = [("a", "c1", "1.0.0"), ("b", "c1", "1.0.0")];
        assert_eq!(wanted(&edges, &rows, &[]), ["a/c1@1.0.0", "b/c1@1.0.0"]);
    }

    #[test]
    fn ineligible_edges_and_busy_configurations_are_left_alone() {
        let mut stale = edge("stale", &[]);
        stale.last_heartbeat = Some(Timestamp::from_millis(NOW - WITHIN - 1));
        let mut sick = edge("sick", &[]);
        sick.health.is_healthy = false;
        let mut inactive = edge("inactive", &[]);
        inactive.is_active = false;
        let mut quarantined = edge("quarantined", &[]);
        quarantined.is_quarantined = true;
        let never = {
            let mut e = edge("never", &[]);
            e.last_heartbeat = None;
            e
        };
        let edges = [stale, sick, inactive, quarantined, never, edge("ok", &[])];
        let rows: Vec<(&str, &str, &str)> = ["stale", "sick", "inactive", "quarantined", "never"]
            .into_iter()
            .map(|l| (l, "c1", "1.0.0"))
            .chain([("ok", "c1", "1.0.0"), ("ok", "moving", "2.0.0")])
            .collect();
        assert_eq!(wanted(&edges, &rows, &["moving"]), ["ok/c1@1.0.0"]);
    }
}
