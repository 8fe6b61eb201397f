//! Heartbeat intake: many edges' heartbeats become one store command per batch.
//!
//! A thousand edges heartbeating every 10 s would otherwise cost a hundred fsyncs a second.
//! One writer task takes whatever has queued while the previous batch committed and applies
//! it as a single `RecordHeartbeats`; each caller is answered once its beat is durable.
//! Then the edges whose samples the batch stored are handed on (to the deployment engine,
//! which judges a watch as soon as its canary edges report).

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::model::metrics::LATENCY_BUCKETS_MS;
use crate::model::{MetricsSample, SYSTEM_ACTOR};
use crate::store::{Command, CommandEnvelope, HeartbeatRecord, Store, StoreError};

/// Most heartbeats written in one transaction.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<(), String>>;

/// Handle to the heartbeat writer; clones share it.
#[derive(Clone)]
pub struct HeartbeatIntake {
    queue: mpsc::Sender<(HeartbeatRecord, Reply)>,
}

/// Told, after each committed batch, which edges' samples it stored.
pub type SamplesListener = Box<dyn Fn(Vec<String>) + Send + Sync>;

impl HeartbeatIntake {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: Store, on_samples: SamplesListener) -> Self {
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
                let span = tracing::info_span!("heartbeat.batch", size = beats.len());
                let samples: Vec<_> = beats
                    .iter()
                    .filter_map(|b| b.metrics.clone().map(|m| (b.location_id.clone(), m)))
                    .collect();
                let result = store
                    .apply(CommandEnvelope::new(
                        SYSTEM_ACTOR,
                        "",
                        Command::RecordHeartbeats { beats },
                    ))
                    .instrument(span)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
                if result.is_ok() {
                    for (location_id, sample) in &samples {
                        record_traffic(location_id, sample);
                    }
                }
                // Told before the edges are answered, so whatever an edge does after its
                // heartbeat is answered finds its samples already on their way to the engine.
                if result.is_ok() && !samples.is_empty() {
                    on_samples(
                        samples
                            .into_iter()
                            .map(|(location_id, _)| location_id)
                            .collect(),
                    );
                }
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self { queue }
    }

    /// Queues a heartbeat and waits until it is durable.
    pub async fn submit(&self, beat: HeartbeatRecord) -> Result<(), StoreError> {
        let span = tracing::info_span!("heartbeat.submit", location_id = %beat.location_id);
        self.queue_and_wait(beat).instrument(span).await
    }

    async fn queue_and_wait(&self, beat: HeartbeatRecord) -> Result<(), StoreError> {
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

/// Adds an edge's reported interval to the per-edge traffic counters, so Prometheus sees the
/// CDN's own traffic (requests, hits, errors, bytes, latency buckets) beside the control
/// plane's. Latency buckets are cumulative with an `le` label in seconds, as
/// `histogram_quantile` expects, so percentiles merge across edges instead of averaging.
fn record_traffic(location_id: &str, sample: &MetricsSample) {
    let location = location_id.to_string();
    let count = |name: &'static str, n: u64| {
        metrics::counter!(name, "location" => location.clone()).increment(n);
    };
    count("edgeplane_edge_requests_total", sample.requests);
    count("edgeplane_edge_cache_hits_total", sample.cache_hits);
    count("edgeplane_edge_cache_misses_total", sample.cache_misses);
    count("edgeplane_edge_bytes_sent_total", sample.bytes_sent);
    count("edgeplane_edge_bytes_received_total", sample.bytes_received);
    for (class, n) in [("4xx", sample.errors4xx), ("5xx", sample.errors5xx)] {
        metrics::counter!("edgeplane_edge_errors_total", "location" => location.clone(), "class" => class)
            .increment(n);
    }
    if sample.latency.counts.len() != LATENCY_BUCKETS_MS.len() + 1 {
        return;
    }
    let mut cumulative = 0;
    for (slot, n) in sample.latency.counts.iter().enumerate() {
        cumulative += n;
        let le = match LATENCY_BUCKETS_MS.get(slot) {
            Some(bound_ms) => (bound_ms / 1000.0).to_string(),
            None => "+Inf".to_string(),
        };
        metrics::counter!(
            "edgeplane_edge_request_duration_seconds_bucket",
            "location" => location.clone(),
            "le" => le
        )
        .increment(cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_latency_is_exported_as_cumulative_buckets_in_seconds() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut sample = MetricsSample {
            requests: 3,
            cache_hits: 2,
            errors5xx: 1,
            ..MetricsSample::default()
        };
        for latency_ms in [0.5, 20.0, 2000.0] {
            sample.latency.record(latency_ms);
        }
        metrics::with_local_recorder(&recorder, || {
            record_traffic("fra-1", &sample);
            record_traffic("fra-1", &sample);
        });
        let text = handle.render();
        for line in [
            r#"edgeplane_edge_requests_total{location="fra-1"} 6"#,
            r#"edgeplane_edge_cache_hits_total{location="fra-1"} 4"#,
            r#"edgeplane_edge_errors_total{location="fra-1",class="5xx"} 2"#,
            r#"edgeplane_edge_errors_total{location="fra-1",class="4xx"} 0"#,
            r#"edgeplane_edge_request_duration_seconds_bucket{location="fra-1",le="0.001"} 2"#,
            r#"edgeplane_edge_request_duration_seconds_bucket{location="fra-1",le="0.015"} 2"#,
            r#"edgeplane_edge_request_duration_seconds_bucket{location="fra-1",le="0.02"} 4"#,
            r#"edgeplane_edge_request_duration_seconds_bucket{location="fra-1",le="1"} 4"#,
            r#"edgeplane_edge_request_duration_seconds_bucket{location="fra-1",le="+Inf"} 6"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
