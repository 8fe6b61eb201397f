//! Heartbeat intake: many edges' heartbeats become one store command per batch.
//!
//! A thousand edges heartbeating every 10 s would otherwise cost a hundred fsyncs a second.
//! One writer task takes whatever has queued while the previous batch committed and applies
//! it as a single `RecordHeartbeats`; each caller is answered once its beat is durable.
//! Then the edges whose samples the batch stored are handed on (to the deployment engine,
//! which judges a watch as soon as its canary edges report), and their traffic is added to
//! the Prometheus counters: by region always, by edge when `[metrics] per_edge_series` asks.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::model::metrics::LATENCY_BUCKETS_MS;
use crate::model::{MetricsSample, SYSTEM_ACTOR};
use crate::store::{Command, CommandEnvelope, HeartbeatRecord, Store, StoreError};

/// Most heartbeats written in one transaction.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// Handle to the heartbeat writer; clones share it.
#[derive(Clone)]
pub struct HeartbeatIntake {
    queue: mpsc::Sender<(HeartbeatRecord, Reply)>,
}

/// Told, after each committed batch, which edges' samples it stored.
pub type SamplesListener = Box<dyn Fn(Vec<String>) + Send + Sync>;

impl HeartbeatIntake {
    /// Starts the writer task; it ends when every handle is dropped. `per_edge_series` also
    /// exports each edge's traffic under its own `location` label.
    pub fn start(store: Store, per_edge_series: bool, on_samples: SamplesListener) -> Self {
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
                let (mut beats, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                metrics::histogram!("edgeplane_heartbeat_batch_size").record(beats.len() as f64);
                let span = tracing::info_span!("heartbeat.batch", size = beats.len());
                let samples: Vec<_> = beats
                    .iter()
                    .filter_map(|b| b.metrics.clone().map(|m| (b.location_id.clone(), m)))
                    .collect();
                let samples_dropped = store.below_free_space_reserve();
                if samples_dropped {
                    drop_samples(&mut beats);
                }
                let result = store
                    .apply(CommandEnvelope::new(
                        SYSTEM_ACTOR,
                        "",
                        Command::RecordHeartbeats { beats },
                    ))
                    .instrument(span)
                    .await
                    .map(drop);
                if result.is_ok() && !samples.is_empty() {
                    let regions = regions_of(&store, &samples).await;
                    for (location_id, sample) in &samples {
                        let region = regions.get(location_id).map_or("unknown", String::as_str);
                        record_traffic(Family::Region, region, sample);
                        if per_edge_series {
                            record_traffic(Family::Edge, location_id, sample);
                        }
                    }
                }
                // Told before the edges are answered, so whatever an edge does after its
                // heartbeat is answered finds its samples already on their way to the engine.
                if result.is_ok() && !samples.is_empty() && !samples_dropped {
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
    }
}

/// Below the store's free-space reserve the metric samples, the bulk of what heartbeats write,
/// are left out so that configuration and deployment writes still fit; health and versions
/// are still recorded. The edges' traffic counters in Prometheus keep counting.
fn drop_samples(beats: &mut [HeartbeatRecord]) {
    let dropped = beats.iter_mut().filter_map(|b| b.metrics.take()).count();
    if dropped > 0 {
        metrics::counter!("edgeplane_samples_dropped_total", "reason" => "disk_reserve")
            .increment(dropped as u64);
    }
}

/// The regions of the edges of a batch (an edge deleted meanwhile has none).
async fn regions_of(store: &Store, samples: &[(String, MetricsSample)]) -> HashMap<String, String> {
    let ids: Vec<String> = samples.iter().map(|(id, _)| id.clone()).collect();
    store
        .read(move |reader| {
            let mut regions = HashMap::new();
            for id in ids {
                if let Some(record) = reader.edge(&id)? {
                    regions.insert(id, record.location.region);
                }
            }
            Ok(regions)
        })
        .await
        .unwrap_or_default()
}

/// The two families of edge traffic series: by region (always), by edge (opt-in: about 23
/// series an edge).
#[derive(Clone, Copy)]
enum Family {
    Region,
    Edge,
}

impl Family {
    fn label(self) -> &'static str {
        match self {
            Family::Region => "region",
            Family::Edge => "location",
        }
    }

    /// Names of requests, cache hits, cache misses, bytes sent, bytes received, errors and
    /// the latency buckets.
    fn names(self) -> [&'static str; 7] {
        match self {
            Family::Region => [
                "edgeplane_region_requests_total",
                "edgeplane_region_cache_hits_total",
                "edgeplane_region_cache_misses_total",
                "edgeplane_region_bytes_sent_total",
                "edgeplane_region_bytes_received_total",
                "edgeplane_region_errors_total",
                "edgeplane_region_request_duration_seconds_bucket",
            ],
            Family::Edge => [
                "edgeplane_edge_requests_total",
                "edgeplane_edge_cache_hits_total",
                "edgeplane_edge_cache_misses_total",
                "edgeplane_edge_bytes_sent_total",
                "edgeplane_edge_bytes_received_total",
                "edgeplane_edge_errors_total",
                "edgeplane_edge_request_duration_seconds_bucket",
            ],
        }
    }
}

/// Adds an edge's reported interval to one family's traffic counters, so Prometheus sees the
/// CDN's own traffic (requests, hits, errors, bytes, latency buckets) beside the control
/// plane's. Latency buckets are cumulative with an `le` label in seconds, as
/// `histogram_quantile` expects, so percentiles merge across edges instead of averaging.
fn record_traffic(family: Family, label_value: &str, sample: &MetricsSample) {
    let label = family.label();
    let value = label_value.to_string();
    let [requests, hits, misses, sent, received, errors, buckets] = family.names();
    for (name, n) in [
        (requests, sample.requests),
        (hits, sample.cache_hits),
        (misses, sample.cache_misses),
        (sent, sample.bytes_sent),
        (received, sample.bytes_received),
    ] {
        metrics::counter!(name, label => value.clone()).increment(n);
    }
    for (class, n) in [("4xx", sample.errors4xx), ("5xx", sample.errors5xx)] {
        metrics::counter!(errors, label => value.clone(), "class" => class).increment(n);
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
        metrics::counter!(buckets, label => value.clone(), "le" => le).increment(cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::gauges::tests::edge;

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
            record_traffic(Family::Edge, "fra-1", &sample);
            record_traffic(Family::Edge, "fra-1", &sample);
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

    #[test]
    fn traffic_is_exported_by_region_and_by_edge_only_when_asked() {
        for per_edge_series in [false, true] {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _local = metrics::set_default_local_recorder(&recorder);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            runtime.block_on(async {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = Store::open(dir.path()).expect("store");
                for (id, region) in [("fra-1", "Europe"), ("fra-2", "Europe"), ("sin-1", "Asia")] {
                    store
                        .apply_blocking(CommandEnvelope::new(
                            "t",
                            "",
                            Command::CreateEdge {
                                record: edge(id, region),
                            },
                        ))
                        .expect("edge");
                }
                let intake = HeartbeatIntake::start(store, per_edge_series, {
                    let told = told.clone();
                    Box::new(move |locations| told.lock().expect("told").extend(locations))
                });
                for (id, requests) in [("fra-1", 3), ("fra-2", 4), ("sin-1", 5)] {
                    intake
                        .submit(HeartbeatRecord {
                            location_id: id.into(),
                            received_at: crate::model::Timestamp::now(),
                            health: Default::default(),
                            active_configurations: Default::default(),
                            metrics: Some(MetricsSample {
                                interval_seconds: 10,
                                requests,
                                ..MetricsSample::default()
                            }),
                            started_at: None,
                        })
                        .await
                        .expect("stored");
                }
            });
            let text = handle.render();
            for line in [
                r#"edgeplane_region_requests_total{region="Europe"} 7"#,
                r#"edgeplane_region_requests_total{region="Asia"} 5"#,
            ] {
                assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
            }
            assert_eq!(
                text.contains(r#"edgeplane_edge_requests_total{location="fra-1"} 3"#),
                per_edge_series,
                "{text}"
            );
            assert_eq!(text.contains("edgeplane_edge_"), per_edge_series, "{text}");
            let mut told = told.lock().expect("told").clone();
            told.sort();
            assert_eq!(told, ["fra-1", "fra-2", "sin-1"]);
        }
    }
}
