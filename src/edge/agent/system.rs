//! What the agent measures for its heartbeats: CPU, memory and disk use of the machine, and
//! the proxy's own metrics sample when it writes one.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::model::{EdgeHealth, MetricsSample};

pub(super) async fn read_metrics(path: Option<&Path>, since: SystemTime) -> Option<MetricsSample> {
    let path = path?;
    let modified = tokio::fs::metadata(path).await.ok()?.modified().ok()?;
    if modified <= since {
        return None;
    }
    let bytes = tokio::fs::read(path).await.ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(sample) => Some(sample),
        Err(error) => {
            tracing::warn!(%error, "metrics file is not a MetricsSample");
            None
        }
    }
}

/// CPU usage between two heartbeats, from `/proc/stat`.
#[derive(Default)]
pub(super) struct CpuSampler {
    previous: Option<(u64, u64)>,
}

impl CpuSampler {
    fn sample(&mut self, stat: &str) -> f64 {
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return 0.0;
        };
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let usage = match self.previous {
            Some((prev_total, prev_idle)) if total > prev_total => {
                let busy = (total - prev_total).saturating_sub(idle.saturating_sub(prev_idle));
                busy as f64 * 100.0 / (total - prev_total) as f64
            }
            _ => 0.0,
        };
        self.previous = Some((total, idle));
        usage
    }
}

fn memory_usage(meminfo: &str) -> f64 {
    let field = |name: &str| -> Option<f64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(total), Some(available)) if total > 0.0 => (total - available) * 100.0 / total,
        _ => 0.0,
    }
}

/// Disk usage of the filesystem holding `dir`, from `df -P` (portable output).
async fn disk_usage(dir: &Path) -> f64 {
    let output = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::process::Command::new("df")
            .arg("-P")
            .arg(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let Ok(Ok(output)) = output else {
        return 0.0;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(4))
        .and_then(|pct| pct.trim_end_matches('%').parse().ok())
        .unwrap_or(0.0)
}

pub(super) async fn health(state_dir: &Path, cpu: &mut CpuSampler) -> EdgeHealth {
    let stat = tokio::fs::read_to_string("/proc/stat")
        .await
        .unwrap_or_default();
    let meminfo = tokio::fs::read_to_string("/proc/meminfo")
        .await
        .unwrap_or_default();
    let disk = disk_usage(state_dir).await;
    EdgeHealth {
        // A nearly full disk means the next push cannot be written durably.
        is_healthy: disk < 98.0,
        cpu_usage: cpu.sample(&stat),
        memory_usage: memory_usage(&meminfo),
        disk_usage: disk,
        bandwidth_utilization: 0.0,
        active_connections: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_usage_comes_from_deltas() {
        let mut sampler = CpuSampler::default();
        assert_eq!(sampler.sample("cpu  100 0 100 800 0 0 0 0\n"), 0.0);
        let usage = sampler.sample("cpu  150 0 150 900 0 0 0 0\n");
        assert!((usage - 50.0).abs() < 1e-9, "{usage}");
        assert!((memory_usage("MemTotal: 1000 kB\nMemAvailable: 250 kB\n") - 75.0).abs() < 1e-9);
    }
}
