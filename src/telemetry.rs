//! Logs (tracing, text or JSON, optionally to daily files) and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// Keeps the background log-file writer alive; drop it last.
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber. Logs go to stderr (stdout carries `listening on ADDR`).
pub fn init_logs(settings: &LogSettings) -> LogGuard {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (file_writer, guard) = match &settings.directory {
        Some(dir) => {
            let appender = tracing_appender::rolling::daily(dir, "edgeplane.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            (Some(writer), Some(guard))
        }
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .with(file_writer.map(|w| {
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(w)
            }))
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(file_writer.map(|w| {
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(w)
            }))
            .try_init(),
    };
    // A second init (tests that start several servers in one process) keeps the first.
    let _ = result;
    LogGuard { _file: guard }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("edgeplane_heartbeat_batch_size".into()),
                        &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
                    )
                })
                .and_then(|b| {
                    // Deployments take seconds to hours, not the API's milliseconds.
                    b.set_buckets_for_metric(
                        Matcher::Full("edgeplane_deployment_duration_seconds".into()),
                        &[
                            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                            7200.0, 21600.0,
                        ],
                    )
                });
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                register_at_zero();
            }
            handle
        })
        .clone()
}

/// Counters and gauges that dashboards and alert rules read, exported at 0 from start-up: a
/// series that only appears with its first event makes `rate()` and `increase()` miss that
/// event and leaves panels empty instead of showing zero.
fn register_at_zero() {
    use crate::model::DeploymentStatus;
    use crate::monitor::alerts::AlertKind;
    use crate::monitor::analysis::Outcome;
    for kind in [
        AlertKind::AutoRollback,
        AlertKind::Warning,
        AlertKind::StuckDeployment,
        AlertKind::Quarantine,
        AlertKind::InconclusivePause,
        AlertKind::DeploymentFailed,
        AlertKind::ReplicationLag,
    ] {
        metrics::counter!("edgeplane_alerts_total", "kind" => kind.as_str()).absolute(0);
    }
    for outcome in [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Inconclusive,
        Outcome::Warn,
    ] {
        metrics::counter!("edgeplane_analysis_verdicts_total", "outcome" => format!("{outcome:?}"))
            .absolute(0);
    }
    for status in [
        DeploymentStatus::Completed,
        DeploymentStatus::Failed,
        DeploymentStatus::RolledBack,
    ] {
        metrics::counter!("edgeplane_deployments_finished_total", "status" => format!("{status:?}"))
            .absolute(0);
    }
    metrics::gauge!("edgeplane_deployments_in_progress").set(0.0);
    metrics::counter!("edgeplane_alert_webhook_failures_total").absolute(0);
    for result in ["acked", "nacked", "failed"] {
        metrics::counter!("edgeplane_reconcile_pushes_total", "result" => result).absolute(0);
    }
}
