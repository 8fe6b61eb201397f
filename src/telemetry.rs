//! Logs (tracing, text or JSON, optionally to daily files), traces (W3C context, OTLP
//! export) and the Prometheus recorder.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// Keeps the background log-file writer and the trace exporter alive; dropping it sends the
/// spans still queued.
pub struct LogGuard {
    traces: Option<SdkTracerProvider>,
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("edgeplane: traces not all exported at shutdown: {error}");
        }
    }
}

/// The OTLP/HTTP exporter behind a batch processor. The blocking HTTP client must not be
/// built on an async thread, so it is built on a thread of its own.
fn tracer_provider(endpoint: &str, ratio: f64) -> Option<SdkTracerProvider> {
    let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let built = std::thread::spawn(move || {
        use opentelemetry_otlp::WithExportConfig;
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
    })
    .join();
    let exporter = match built {
        Ok(Ok(exporter)) => exporter,
        Ok(Err(error)) => {
            eprintln!("edgeplane: traces are not exported: {error}");
            return None;
        }
        Err(_) => {
            eprintln!("edgeplane: traces are not exported: the exporter could not be built");
            return None;
        }
    };
    Some(
        SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("edgeplane")
                    .build(),
            )
            .build(),
    )
}

/// Installs the global subscriber. Logs go to stderr (stdout carries `listening on ADDR`).
pub fn init_logs(settings: &LogSettings) -> LogGuard {
    let level = || EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = settings
        .otlp_endpoint
        .as_deref()
        .and_then(|endpoint| tracer_provider(endpoint, settings.trace_sample_ratio));
    // Spans are exported whatever the log level: a quiet log must not cut traces short. Only
    // this crate's spans are, so the exporter's own HTTP client never traces itself.
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("edgeplane"))
            .with_filter(Targets::new().with_target("edgeplane", tracing::Level::INFO))
    });
    let (file_writer, guard) = match &settings.directory {
        Some(dir) => {
            let appender = tracing_appender::rolling::daily(dir, "edgeplane.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            (Some(writer), Some(guard))
        }
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(otel);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(json_layer(std::io::stderr).with_filter(level()))
            .with(file_writer.map(|w| json_layer(w).with_filter(level())))
            .try_init(),
        LogFormat::Text => registry
            .with(
                TraceIds
                    .and_then(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                    .with_filter(level()),
            )
            .with(file_writer.map(|w| {
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(w)
                    .with_filter(level())
            }))
            .try_init(),
    };
    // A second init (tests that start several servers in one process) keeps the first.
    let _ = result;
    LogGuard {
        traces,
        _file: guard,
    }
}

/// JSON lines with the current span's fields and the `traceId` of the trace they belong to.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    TraceIds.and_then(
        tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceId(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_writer(writer),
    )
}

/// The span field that carries a W3C trace id into the logs.
pub const TRACE_ID_FIELD: &str = "traceId";

/// Makes `span` part of the trace a W3C `traceparent` value names (a caller's header, or the
/// one a deployment keeps) and records its trace id in the span's `traceId` field. False,
/// and nothing changed, when the value is not a valid `traceparent`.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) -> bool {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let trace_id = {
        let remote = parent.span();
        let context = remote.span_context();
        if !context.is_valid() {
            return false;
        }
        context.trace_id()
    };
    // Fails only when no exporter is installed; the logs still get the caller's trace id.
    let _ = span.set_parent(parent);
    span.record(TRACE_ID_FIELD, tracing::field::display(trace_id));
    true
}

/// Records, in the `traceId` field of a span that starts a trace, the trace id the exporter
/// gave it (nothing when traces are not exported).
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let remote = context.span();
    let span_context = remote.span_context();
    if span_context.is_valid() {
        span.record(
            TRACE_ID_FIELD,
            tracing::field::display(span_context.trace_id()),
        );
    }
}

/// The span's W3C trace context as a `traceparent` value. Without an exporter, a span in a
/// trace a caller started still passes that trace id on (as unsampled, under a span id of
/// its own), so the log lines of a deployment carry it too.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    if let Some(traceparent) = carrier.remove("traceparent") {
        return Some(traceparent);
    }
    let trace_id = span
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            let extensions = span.extensions();
            extensions.get::<LogTraceId>().map(|t| t.0.clone())
        })
        .flatten()?;
    let span_id = rand::random::<u64>().max(1);
    Some(format!("00-{trace_id}-{span_id:016x}-00"))
}

/// The trace id a span carries for the logs, found on it or inherited from its parent.
struct LogTraceId(String);

/// Keeps each span's [`LogTraceId`] so that JSON log lines can carry it.
struct TraceIds;

#[derive(Default)]
struct FindTraceId(Option<String>);

impl Visit for FindTraceId {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == TRACE_ID_FIELD {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == TRACE_ID_FIELD {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            self.0 = Some(text);
        }
    }
}

impl<S> Layer<S> for TraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut found = FindTraceId::default();
        attrs.record(&mut found);
        let trace_id = found.0.or_else(|| {
            span.parent()
                .and_then(|parent| parent.extensions().get::<LogTraceId>().map(|t| t.0.clone()))
        });
        if let Some(trace_id) = trace_id {
            span.extensions_mut().insert(LogTraceId(trace_id));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut found = FindTraceId::default();
        values.record(&mut found);
        if let (Some(trace_id), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().replace(LogTraceId(trace_id));
        }
    }
}

/// A JSON line format that adds the `traceId` of the span the event happens in.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let trace_id = ctx
            .parent_span()
            .and_then(|span| span.extensions().get::<LogTraceId>().map(|t| t.0.clone()));
        let Some(trace_id) = trace_id else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"{TRACE_ID_FIELD}\":{},{rest}",
                serde_json::Value::String(trace_id)
            ),
            None => writer.write_str(&line),
        }
    }
}

/// How long a gauge stays exported without being set.
const GAUGE_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

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
            // A gauge not set for GAUGE_IDLE is dropped from the output: the progress of a
            // finished deployment and the expiry of a deleted certificate go away. Gauges
            // that must stay are set again at least that often (engine turns, housekeeping).
            let builder = builder.map(|b| b.idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE)));
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
        AlertKind::StoreUnavailable,
    ] {
        metrics::counter!("edgeplane_alerts_total", "kind" => kind.as_str()).absolute(0);
    }
    for gauge in [
        "edgeplane_replication_degraded",
        "edgeplane_replication_lag_entries",
        "edgeplane_replication_lag_seconds",
    ] {
        metrics::gauge!(gauge).set(0.0);
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
    // The store's own gauges (writable, free bytes, file size) are set when it opens.
    metrics::counter!("edgeplane_samples_dropped_total", "reason" => "disk_reserve").absolute(0);
    metrics::gauge!("edgeplane_connections_open").set(0.0);
    metrics::counter!("edgeplane_connections_refused_total").absolute(0);
    metrics::counter!("edgeplane_accept_errors_total").absolute(0);
    metrics::gauge!("edgeplane_event_streams_open").set(0.0);
    metrics::gauge!("edgeplane_password_hashes_running").set(0.0);
    metrics::gauge!("edgeplane_edge_tokens_expiring").set(0.0);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn json_lines_inside_a_traced_span_carry_its_trace_id() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let request = tracing::info_span!("request", traceId = tracing::field::Empty);
            assert!(continue_trace(
                &request,
                &format!("00-{TRACE}-00f067aa0ba902b7-01")
            ));
            // With no exporter, the caller's trace still reaches what the request starts.
            let passed = traceparent(&request).expect("a traceparent");
            assert!(passed.starts_with(&format!("00-{TRACE}-")), "{passed}");
            let deployment = tracing::info_span!("deployment", traceId = tracing::field::Empty);
            assert!(continue_trace(&deployment, &passed));
            deployment.in_scope(|| tracing::info!("later"));
            request.in_scope(|| {
                tracing::info!("inside");
                tracing::info_span!("child").in_scope(|| tracing::info!("nested"));
            });
            let untraced = tracing::info_span!("other", traceId = tracing::field::Empty);
            assert!(!continue_trace(&untraced, "00-not-a-trace-01"));
            untraced.in_scope(|| tracing::info!("untraced"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let parsed: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let trace_of = |message: &str| {
            parsed
                .iter()
                .find(|line| line["fields"]["message"] == message)
                .unwrap_or_else(|| panic!("no line {message}: {text}"))
                .get("traceId")
                .cloned()
        };
        assert_eq!(trace_of("outside"), None);
        assert_eq!(trace_of("inside"), Some(Value::from(TRACE)));
        assert_eq!(trace_of("nested"), Some(Value::from(TRACE)));
        assert_eq!(trace_of("untraced"), None);
        assert_eq!(trace_of("later"), Some(Value::from(TRACE)));
    }

    #[test]
    fn a_span_in_a_callers_trace_passes_that_trace_on() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", traceId = tracing::field::Empty);
            assert!(continue_trace(
                &request,
                &format!("00-{TRACE}-00f067aa0ba902b7-01")
            ));
            let push = request.in_scope(|| tracing::info_span!("deployment.push"));
            let passed = traceparent(&push).expect("a traceparent");
            let parts: Vec<&str> = passed.split('-').collect();
            assert_eq!(parts.len(), 4, "{passed}");
            assert_eq!(parts[1], TRACE);
            assert_ne!(
                parts[2], "00f067aa0ba902b7",
                "the push is a span of its own"
            );
            assert_eq!(parts[3], "01");

            // A request without a caller's trace starts one of its own.
            let fresh = tracing::info_span!("request", traceId = tracing::field::Empty);
            let own = traceparent(&fresh).expect("a traceparent");
            assert_ne!(own.split('-').nth(1), Some(TRACE));
        });
    }
}
