//! The monitor as the deployment engine sees it: metric analysis of watch periods from the
//! stored time series, and alerts through the notifier.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tracing::Instrument;

use super::aggregate::{WindowStats, WindowTotals, to_snapshot};
use super::alerts::{Alert, AlertKind, Notifier};
use super::analysis::{
    AnalysisInput, BreachState, EdgeWindow, GroupSample, Outcome, Verdict, judge,
};
use crate::model::SYSTEM_ACTOR;
use crate::model::{Deployment, PerformanceSnapshot, Timestamp};
use crate::rollout::engine::{AlertSink, Analysis, AnalysisAnswer, AnalysisRequest};
use crate::rollout::{AlertKind as RolloutAlert, AnalysisOutcome};
use crate::store::{Command, CommandEnvelope, Store, StoreError};

/// Longest stretch of recent data one interval's judgement looks at: recent enough that a
/// regression shows within a couple of heartbeats, long enough to hold several samples.
const JUDGED_WINDOW_MS: i64 = 30_000;

/// Length of one interval of the fine ring.
const FINE_INTERVAL_MS: i64 = 10_000;

/// Window of the snapshot taken before a deployment changes anything.
const SNAPSHOT_WINDOW_MS: i64 = 5 * 60_000;

/// Key under which a verdict's full JSON is kept in the timeline event's data.
pub const VERDICT_KEY: &str = "verdict";

/// The newest sample of each edge of a group that has one: interval start and requests. It
/// changes only when an edge reports, so two analyses with the same evidence judge the same
/// samples.
type Evidence = Vec<(String, Timestamp, u64)>;

/// Reads per-edge totals of `locations` over `[from, to)`, the evidence they rest on, and, with
/// `heartbeats`, when the newest heartbeat among them was received. That costs an edge record
/// per location, which only a canary's verdict needs: a baseline or a snapshot of a thousand
/// edges goes without.
fn group(
    store: &Store,
    locations: &[String],
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
    heartbeats: bool,
) -> Result<(GroupSample, Evidence, Option<Timestamp>), StoreError> {
    let reader = store.reader()?;
    let mut edges = Vec::with_capacity(locations.len());
    let mut evidence = Vec::new();
    let mut newest_heartbeat = None;
    for location in locations {
        let samples = reader.series(location, from, to, now)?;
        if let Some((t, newest)) = samples.last() {
            evidence.push((location.clone(), *t, newest.requests));
        }
        if heartbeats && !samples.is_empty() {
            let received = reader
                .edge(location)?
                .and_then(|record| record.location.last_heartbeat);
            newest_heartbeat = newest_heartbeat.max(received);
        }
        edges.push(EdgeWindow {
            edge_id: location.clone(),
            totals: WindowTotals::from_samples(&samples, from, to),
        });
    }
    Ok((GroupSample { edges }, evidence, newest_heartbeat))
}

/// Breach persistence of one deployment as this process last counted it.
#[derive(Clone)]
struct Counted {
    /// The counters after the last analysis that saw new canary samples.
    state: BreachState,
    /// The counters before it, to judge the same samples again without counting them twice.
    before: BreachState,
    evidence: Evidence,
}

/// Metric analysis of watch periods (SPEC §8.3), keeping breach persistence per deployment.
///
/// Persistence counts analyses that saw new samples of the canary: an analysis asked for by
/// the interval while no canary edge reported judges the same samples as the one before and
/// gives the same verdict, so one breaching heartbeat cannot count twice.
pub struct MetricsAnalysis {
    store: Store,
    breaches: Arc<Mutex<HashMap<String, Counted>>>,
}

impl MetricsAnalysis {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            breaches: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Key of the verdict's figure: when the newest canary heartbeat it judged was received
/// (server time), the start of the SPEC §11 rollback figure.
pub const JUDGED_HEARTBEAT_KEY: &str = "canaryHeartbeatReceivedAt";

fn answer(verdict: &Verdict, newest_heartbeat: Option<Timestamp>) -> AnalysisAnswer {
    let headline = verdict
        .reasons
        .iter()
        .map(|f| {
            let baseline = f
                .baseline_value
                .map(|v| format!(" vs baseline {v:.2}"))
                .unwrap_or_default();
            format!(
                "{:?} {:?}: canary {:.2}{baseline} (threshold {:.2}{})",
                f.metric,
                f.kind,
                f.canary_value,
                f.threshold,
                if f.severe { ", severe" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut data = BTreeMap::new();
    data.insert(
        VERDICT_KEY.to_string(),
        serde_json::to_string(verdict).unwrap_or_default(),
    );
    let canary = &verdict.canary;
    let mut figures = vec![
        ("canaryRequests", canary.requests_total.to_string()),
        ("canaryErrorRate", format!("{:.3}", canary.error_rate)),
        (
            "canaryCacheHitRate",
            format!("{:.2}", canary.cache_hit_rate),
        ),
        (
            "canaryP99LatencyMs",
            format!("{:.1}", canary.p99_latency_ms),
        ),
    ];
    match &verdict.baseline {
        Some(baseline) => figures.extend([
            ("baselineErrorRate", format!("{:.3}", baseline.error_rate)),
            (
                "baselineCacheHitRate",
                format!("{:.2}", baseline.cache_hit_rate),
            ),
            (
                "baselineP99LatencyMs",
                format!("{:.1}", baseline.p99_latency_ms),
            ),
        ]),
        None => figures.push(("baseline", verdict.note.clone().unwrap_or_default())),
    }
    for (key, value) in figures {
        data.insert(key.to_string(), value);
    }
    if let Some(received) = newest_heartbeat {
        data.insert(JUDGED_HEARTBEAT_KEY.to_string(), received.to_rfc3339());
    }
    let outcome = match verdict.outcome {
        Outcome::Pass => AnalysisOutcome::Pass,
        Outcome::Fail => AnalysisOutcome::Fail { reason: headline },
        Outcome::Inconclusive => AnalysisOutcome::Inconclusive {
            reason: format!(
                "too little traffic: {} canary requests",
                verdict.canary.requests_total
            ),
        },
        Outcome::Warn => AnalysisOutcome::Warn { message: headline },
    };
    AnalysisAnswer { outcome, data }
}

/// No verdict when the metrics cannot be read: inconclusive, which never passes.
fn unavailable(error: &str) -> AnalysisAnswer {
    AnalysisAnswer {
        outcome: AnalysisOutcome::Inconclusive {
            reason: format!("metrics unavailable: {error}"),
        },
        data: BTreeMap::new(),
    }
}

impl Analysis for MetricsAnalysis {
    fn analyze(&self, request: AnalysisRequest) -> BoxFuture<'static, AnalysisAnswer> {
        let store = self.store.clone();
        let breaches = self.breaches.clone();
        let span = tracing::info_span!(
            "analysis.judge",
            deployment_id = %request.deployment_id,
            canary = request.canary.len(),
            baseline = request.baseline.len(),
            outcome = tracing::field::Empty,
        );
        let work = async move {
            let now = request.now;
            // The fine ring keeps 10-second intervals: start at the interval holding `since`,
            // so the first samples after a push count at once (breach persistence absorbs
            // the few seconds of the old version they may still hold).
            let start = request.since.millis().max(now.millis() - JUDGED_WINDOW_MS);
            let from = Timestamp(start - start.rem_euclid(FINE_INTERVAL_MS));
            let read = {
                let store = store.clone();
                let canary = request.canary.clone();
                let baseline = request.baseline.clone();
                tokio::task::spawn_blocking(move || {
                    Ok::<_, StoreError>((
                        group(&store, &canary, from, now, now, true)?,
                        group(&store, &baseline, from, now, now, false)?.0,
                    ))
                })
                .await
            };
            let ((canary, evidence, newest_heartbeat), baseline) = match read {
                Ok(Ok(groups)) => groups,
                Ok(Err(error)) => return unavailable(&error.to_string()),
                Err(error) => return unavailable(&error.to_string()),
            };
            let input = AnalysisInput {
                thresholds: request.rollback_config.clone(),
                canary,
                baseline,
                before: request.pre_deployment.clone(),
            };
            let known = breaches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&request.deployment_id)
                .cloned();
            if let Some(counted) = known.as_ref().filter(|c| c.evidence == evidence) {
                let mut again = counted.before.clone();
                let verdict = judge(&input, &mut again, now);
                tracing::Span::current().record("outcome", tracing::field::debug(&verdict.outcome));
                metrics::counter!("edgeplane_analysis_verdicts_total", "outcome" => format!("{:?}", verdict.outcome))
                    .increment(1);
                return answer(&verdict, newest_heartbeat);
            }
            // A deployment this process has not judged yet may have a breach pending from
            // before a restart.
            let mut state = match known {
                Some(counted) => counted.state,
                None => {
                    let id = request.deployment_id.clone();
                    match store.read(move |r| r.breaches(&id)).await {
                        Ok(state) => state,
                        Err(error) => return unavailable(&error.to_string()),
                    }
                }
            };
            let before = state.clone();
            let verdict = judge(&input, &mut state, now);
            tracing::Span::current().record("outcome", tracing::field::debug(&verdict.outcome));
            if state != before {
                let saved = store
                    .apply(CommandEnvelope::new(
                        SYSTEM_ACTOR,
                        "",
                        Command::SaveBreaches {
                            deployment_id: request.deployment_id.clone(),
                            breaches: state.clone(),
                        },
                    ))
                    .await;
                if let Err(error) = saved {
                    tracing::error!(
                        deployment_id = %request.deployment_id,
                        %error,
                        "cannot keep the pending breach counters"
                    );
                }
            }
            breaches.lock().unwrap_or_else(|p| p.into_inner()).insert(
                request.deployment_id.clone(),
                Counted {
                    state,
                    before,
                    evidence,
                },
            );
            metrics::counter!("edgeplane_analysis_verdicts_total", "outcome" => format!("{:?}", verdict.outcome))
                .increment(1);
            answer(&verdict, newest_heartbeat)
        };
        Box::pin(work.instrument(span))
    }

    fn snapshot(
        &self,
        locations: Vec<String>,
        now: Timestamp,
    ) -> BoxFuture<'static, Option<PerformanceSnapshot>> {
        let store = self.store.clone();
        Box::pin(async move {
            let from = Timestamp(now.millis() - SNAPSHOT_WINDOW_MS);
            let totals = tokio::task::spawn_blocking(move || {
                group(&store, &locations, from, now, now, false).map(|(g, ..)| g.aggregate())
            })
            .await
            .ok()?
            .ok()?;
            let stats: WindowStats = totals.stats();
            (stats.requests_total > 0).then(|| to_snapshot(&stats, now))
        })
    }
}

fn alert_kind(kind: RolloutAlert, deployment: &Deployment) -> AlertKind {
    match kind {
        RolloutAlert::RolledBack
            if deployment
                .engine
                .rollback_reason
                .as_deref()
                .is_some_and(|r| !r.starts_with("manual")) =>
        {
            AlertKind::AutoRollback
        }
        RolloutAlert::RolledBack => AlertKind::Warning,
        RolloutAlert::Warning => AlertKind::Warning,
        RolloutAlert::Stuck => AlertKind::StuckDeployment,
        RolloutAlert::Inconclusive => AlertKind::InconclusivePause,
        RolloutAlert::Quarantined => AlertKind::Quarantine,
        RolloutAlert::StoreUnavailable => AlertKind::StoreUnavailable,
        RolloutAlert::WaveFailed | RolloutAlert::RollbackIncomplete | RolloutAlert::NoTargets => {
            AlertKind::DeploymentFailed
        }
    }
}

impl AlertSink for Notifier {
    fn alert(&self, deployment: &Deployment, kind: RolloutAlert, message: &str) {
        self.notify(deployment_alert(deployment, kind, None, message));
    }

    fn edge_alert(
        &self,
        deployment: &Deployment,
        kind: RolloutAlert,
        location: &str,
        message: &str,
    ) {
        self.notify(deployment_alert(deployment, kind, Some(location), message));
    }
}

/// The alert of a deployment's event, with the verdict behind it when there is one.
fn deployment_alert(
    deployment: &Deployment,
    kind: RolloutAlert,
    location: Option<&str>,
    message: &str,
) -> Alert {
    // The latest verdict on the timeline is the evidence behind an automatic action.
    let verdict = deployment
        .events
        .iter()
        .rev()
        .find_map(|e| e.data.get(VERDICT_KEY))
        .and_then(|text| serde_json::from_str::<Verdict>(text).ok());
    Alert {
        kind: alert_kind(kind, deployment),
        deployment_id: Some(deployment.deployment_id.clone()),
        configuration_id: Some(deployment.configuration_id.clone()),
        edge_id: location.map(str::to_string),
        message: message.to_string(),
        verdict,
        at: Timestamp::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EdgeHealth, LatencyHistogram, MetricsSample, RollbackConfig};
    use crate::rollout::AnalysisOutcome;
    use crate::store::HeartbeatRecord;

    /// One 10-second heartbeat of `location` ending at `at`, with `error_rate` percent errors.
    fn beat(location: &str, at: Timestamp, error_rate: f64) -> HeartbeatRecord {
        let requests = 5_000u64;
        let errors = (requests as f64 * error_rate / 100.0).round() as u64;
        let hits = requests * 92 / 100;
        let mut latency = LatencyHistogram::default();
        for _ in 0..requests {
            latency.record(12.0);
        }
        HeartbeatRecord {
            location_id: location.to_string(),
            received_at: at,
            health: EdgeHealth::default(),
            active_configurations: Default::default(),
            metrics: Some(MetricsSample {
                interval_seconds: 10,
                requests,
                cache_hits: hits,
                cache_misses: requests - hits,
                errors4xx: 0,
                errors5xx: errors,
                bytes_sent: 0,
                bytes_received: 0,
                latency,
            }),
            started_at: None,
        }
    }

    fn request(deployment_id: &str, now: Timestamp) -> AnalysisRequest {
        AnalysisRequest {
            deployment_id: deployment_id.to_string(),
            configuration_id: "config-1".into(),
            version: "1.1.0".into(),
            rollback_config: RollbackConfig {
                min_samples: 100,
                ..RollbackConfig::default()
            },
            canary: vec!["canary-0".into(), "canary-1".into(), "canary-2".into()],
            baseline: vec!["base-0".into(), "base-1".into(), "base-2".into()],
            since: now.plus_millis(-20_000),
            now,
            pre_deployment: None,
        }
    }

    #[tokio::test]
    async fn a_pending_breach_survives_a_restart_of_the_analysis() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = Timestamp::now();
        {
            let store = Store::open(dir.path()).expect("store");
            // The canary's errors (1.5 %) breach the 1 % limit, not yet for two intervals.
            let beats = ["canary-0", "canary-1", "canary-2"]
                .iter()
                .map(|l| beat(l, now, 1.5))
                .chain(
                    ["base-0", "base-1", "base-2"]
                        .iter()
                        .map(|l| beat(l, now, 0.2)),
                )
                .collect();
            store
                .apply(CommandEnvelope::new(
                    SYSTEM_ACTOR,
                    "",
                    Command::RecordHeartbeats { beats },
                ))
                .await
                .expect("heartbeats stored");
            let analysis = MetricsAnalysis::new(store);
            let first = analysis.analyze(request("deploy-1", now)).await;
            assert!(
                matches!(first.outcome, AnalysisOutcome::Warn { .. }),
                "{:?}",
                first.outcome
            );
        }
        // A new control plane over the same data dir: the second breaching interval counts.
        let store = Store::open(dir.path()).expect("reopened");
        let analysis = MetricsAnalysis::new(store);
        let second = analysis.analyze(request("deploy-1", now)).await;
        assert!(
            matches!(second.outcome, AnalysisOutcome::Fail { .. }),
            "{:?}",
            second.outcome
        );
        // Another deployment has no breach pending.
        let other = analysis.analyze(request("deploy-2", now)).await;
        assert!(
            matches!(other.outcome, AnalysisOutcome::Warn { .. }),
            "{:?}",
            other.outcome
        );
    }

    async fn record(store: &Store, beats: Vec<HeartbeatRecord>) {
        store
            .apply(CommandEnvelope::new(
                SYSTEM_ACTOR,
                "",
                Command::RecordHeartbeats { beats },
            ))
            .await
            .expect("heartbeats stored");
    }

    fn beats(at: Timestamp, canary_error_rate: f64) -> Vec<HeartbeatRecord> {
        ["canary-0", "canary-1", "canary-2"]
            .iter()
            .map(|l| beat(l, at, canary_error_rate))
            .chain(
                ["base-0", "base-1", "base-2"]
                    .iter()
                    .map(|l| beat(l, at, 0.2)),
            )
            .collect()
    }

    #[tokio::test]
    async fn one_breaching_heartbeat_counts_once_however_often_it_is_judged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = Timestamp::now();
        let store = Store::open(dir.path()).expect("store");
        record(&store, beats(now, 1.5)).await;
        let analysis = MetricsAnalysis::new(store.clone());
        // The interval asks again with no new canary samples: the breach is still pending,
        // not persistent.
        for _ in 0..3 {
            let answer = analysis.analyze(request("deploy-1", now)).await;
            assert!(
                matches!(answer.outcome, AnalysisOutcome::Warn { .. }),
                "{:?}",
                answer.outcome
            );
        }
        // The next breaching heartbeat is the second interval of the breach.
        let later = now.plus_millis(FINE_INTERVAL_MS);
        record(&store, beats(later, 1.5)).await;
        let answer = analysis.analyze(request("deploy-1", later)).await;
        assert!(
            matches!(answer.outcome, AnalysisOutcome::Fail { .. }),
            "{:?}",
            answer.outcome
        );
    }
}
