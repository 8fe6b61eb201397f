//! nginx's JSON access log as heartbeat metrics: a tailer that follows the file across
//! rotation, and the interval's counters that become the `MetricsSample` of a heartbeat.
//!
//! Rotation comes in two kinds, and both are followed. Rename (logrotate's default, then
//! `nginx -s reopen`): the path names a new file (another inode); the old file is read to
//! its end, then the new one from its start. Truncation (`copytruncate`): the file is
//! shorter than what was read; it is read again from its start. Lines written between the
//! last read and a truncation are lost — that is copytruncate's own gap.
//!
//! A line that is not the rendered `log_format` is counted and skipped. An interval without
//! a request gives no sample at all, so the control plane sees no traffic rather than an
//! interval of zeros that looks like a healthy, idle edge. A sample a heartbeat could not
//! deliver is put back, and the next one carries its counts and its seconds.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::model::MetricsSample;

/// Most bytes read in one poll: a heartbeat after a long stall does not read a huge log at
/// once; the rest comes with the next polls.
const READ_LIMIT: u64 = 64 * 1024 * 1024;

/// Follows one log file by path.
pub(crate) struct Tailer {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    offset: u64,
    /// The end of the last read when it stopped inside a line.
    partial: Vec<u8>,
    /// The first open starts at the end: lines from before the agent started are not this
    /// interval's traffic. Files that appear later are read from their start.
    skip_existing: bool,
}

impl Tailer {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            inode: 0,
            offset: 0,
            partial: Vec::new(),
            skip_existing: true,
        }
    }

    /// Every complete line written since the previous poll.
    pub(crate) fn poll(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let opened = self.file.is_some() || self.open();
        self.skip_existing = false;
        if !opened {
            return lines;
        }
        // Twice at most: the old file to its end, then the new one after a rename.
        for _ in 0..2 {
            let Some(file) = self.file.as_mut() else {
                break;
            };
            // Truncated under us: what was read is gone, the file starts again.
            if let Ok(metadata) = file.metadata()
                && metadata.len() < self.offset
            {
                self.offset = 0;
                self.partial.clear();
            }
            let _ = file.seek(SeekFrom::Start(self.offset));
            let mut bytes = Vec::new();
            let read = file
                .take(READ_LIMIT)
                .read_to_end(&mut bytes)
                .unwrap_or_default();
            self.offset += read as u64;
            self.split(&bytes, &mut lines);
            let rotated = match std::fs::metadata(&self.path) {
                Ok(metadata) => metadata.ino() != self.inode,
                // Renamed away and not yet recreated: keep the old file for its last lines.
                Err(_) => false,
            };
            if !rotated || read as u64 == READ_LIMIT {
                break;
            }
            // The old file is read to its end; a line nginx left unfinished there is whole.
            if !self.partial.is_empty() {
                let rest = std::mem::take(&mut self.partial);
                lines.push(String::from_utf8_lossy(&rest).into_owned());
            }
            self.file = None;
            if !self.open() {
                break;
            }
        }
        lines
    }

    fn open(&mut self) -> bool {
        let Ok(file) = File::open(&self.path) else {
            return false;
        };
        let Ok(metadata) = file.metadata() else {
            return false;
        };
        self.inode = metadata.ino();
        self.offset = if self.skip_existing {
            metadata.len()
        } else {
            0
        };
        self.partial.clear();
        self.file = Some(file);
        true
    }

    fn split(&mut self, bytes: &[u8], lines: &mut Vec<String>) {
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..at]);
            let line = std::mem::take(&mut self.partial);
            if !line.is_empty() {
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
            rest = &rest[at + 1..];
        }
        self.partial.extend_from_slice(rest);
    }
}

/// The fields of the rendered `log_format edgeplane_json` the metrics need.
#[derive(Deserialize)]
struct LogLine {
    status: u16,
    request_time: f64,
    #[serde(default)]
    upstream_cache_status: String,
    bytes_sent: u64,
    #[serde(default)]
    request_length: u64,
}

/// Counters of the requests seen since the last sample.
#[derive(Debug, Default)]
pub(crate) struct Interval {
    sample: MetricsSample,
    /// Lines that were not the rendered format, since the last sample.
    pub(crate) bad_lines: u64,
    /// Seconds covered by samples put back, added to the next sample's interval.
    carried_seconds: u32,
}

impl Interval {
    /// Counts one log line; a line in another format only counts as bad.
    pub(crate) fn record(&mut self, line: &str) {
        let Ok(entry) = serde_json::from_str::<LogLine>(line) else {
            self.bad_lines += 1;
            return;
        };
        if !entry.request_time.is_finite() || entry.request_time < 0.0 {
            self.bad_lines += 1;
            return;
        }
        let sample = &mut self.sample;
        sample.requests += 1;
        match entry.status {
            400..=499 => sample.errors4xx += 1,
            500..=599 => sample.errors5xx += 1,
            _ => {}
        }
        // Only requests that looked in the cache count for the hit rate.
        match entry.upstream_cache_status.as_str() {
            "HIT" | "STALE" | "UPDATING" | "REVALIDATED" => sample.cache_hits += 1,
            "MISS" | "EXPIRED" | "BYPASS" => sample.cache_misses += 1,
            _ => {}
        }
        sample.bytes_sent += entry.bytes_sent;
        sample.bytes_received += entry.request_length;
        sample.latency.record(entry.request_time * 1000.0);
    }

    /// The interval's sample, None without traffic; counting starts again.
    pub(crate) fn take(&mut self, interval_seconds: u32) -> Option<MetricsSample> {
        self.bad_lines = 0;
        let carried = std::mem::take(&mut self.carried_seconds);
        let mut sample = std::mem::take(&mut self.sample);
        if sample.requests == 0 {
            return None;
        }
        sample.interval_seconds = interval_seconds.max(1).saturating_add(carried);
        Some(sample)
    }

    /// Adds a taken sample back, for a heartbeat that did not deliver it.
    pub(crate) fn put_back(&mut self, taken: &MetricsSample) {
        let sample = &mut self.sample;
        sample.requests += taken.requests;
        sample.cache_hits += taken.cache_hits;
        sample.cache_misses += taken.cache_misses;
        sample.errors4xx += taken.errors4xx;
        sample.errors5xx += taken.errors5xx;
        sample.bytes_sent += taken.bytes_sent;
        sample.bytes_received += taken.bytes_received;
        sample.latency.merge(&taken.latency);
        self.carried_seconds = self.carried_seconds.saturating_add(taken.interval_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(status: u16, seconds: f64, cache: &str, bytes: u64) -> String {
        format!(
            "{{\"time\":\"2026-01-01T00:00:00+00:00\",\"status\":{status},\"request_time\":{seconds:.3},\"upstream_cache_status\":\"{cache}\",\"bytes_sent\":{bytes},\"request_length\":100,\"upstream_addr\":\"127.0.0.1:9000\"}}\n"
        )
    }

    fn append(path: &std::path::Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_already_there_at_start_are_skipped_and_new_ones_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, &line(200, 0.001, "", 10));
        let mut tailer = Tailer::new(path.clone());
        assert!(tailer.poll().is_empty());
        append(&path, &line(200, 0.002, "", 10));
        append(&path, &line(500, 0.003, "", 10));
        assert_eq!(tailer.poll().len(), 2);
        assert!(tailer.poll().is_empty());
    }

    #[test]
    fn a_log_that_appears_later_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut tailer = Tailer::new(path.clone());
        assert!(tailer.poll().is_empty());
        append(&path, &line(200, 0.001, "", 10));
        assert_eq!(tailer.poll().len(), 1);
    }

    #[test]
    fn a_half_written_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "").unwrap();
        let mut tailer = Tailer::new(path.clone());
        tailer.poll();
        let whole = line(200, 0.001, "HIT", 10);
        let (first, second) = whole.split_at(30);
        append(&path, first);
        assert!(tailer.poll().is_empty());
        append(&path, second);
        assert_eq!(tailer.poll(), [whole.trim_end().to_string()]);
    }

    #[test]
    fn rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "").unwrap();
        let mut tailer = Tailer::new(path.clone());
        tailer.poll();
        append(&path, &line(200, 0.001, "", 1));
        assert_eq!(tailer.poll().len(), 1);
        // Written to the old file after the rename, before nginx reopens.
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        append(&dir.path().join("access.log.1"), &line(201, 0.001, "", 2));
        assert_eq!(tailer.poll().len(), 1, "the renamed file is still followed");
        append(&dir.path().join("access.log.1"), &line(202, 0.001, "", 3));
        append(&path, &line(203, 0.001, "", 4));
        append(&path, &line(204, 0.001, "", 5));
        let lines = tailer.poll();
        let statuses: Vec<bool> = ["202", "203", "204"]
            .iter()
            .zip(&lines)
            .map(|(status, line)| line.contains(&format!("\"status\":{status}")))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(statuses, [true, true, true], "{lines:?}");
        append(&path, &line(205, 0.001, "", 6));
        assert_eq!(tailer.poll().len(), 1);
    }

    #[test]
    fn rotation_by_truncation_starts_again_from_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "").unwrap();
        let mut tailer = Tailer::new(path.clone());
        tailer.poll();
        append(&path, &line(200, 0.001, "", 1));
        append(&path, &line(200, 0.001, "", 1));
        assert_eq!(tailer.poll().len(), 2);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        append(&path, &line(503, 0.001, "", 1));
        let lines = tailer.poll();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("\"status\":503"));
    }

    #[test]
    fn an_interval_counts_statuses_cache_bytes_and_latency() {
        let mut interval = Interval::default();
        for text in [
            line(200, 0.004, "HIT", 1000),
            line(200, 0.040, "MISS", 2000),
            line(404, 0.002, "", 100),
            line(502, 0.300, "EXPIRED", 50),
            line(304, 0.001, "REVALIDATED", 10),
        ] {
            interval.record(text.trim_end());
        }
        interval.record("not json");
        interval.record("{\"status\":200}");
        assert_eq!(interval.bad_lines, 2);
        let sample = interval.take(10).unwrap();
        assert_eq!(sample.interval_seconds, 10);
        assert_eq!(sample.requests, 5);
        assert_eq!(sample.errors4xx, 1);
        assert_eq!(sample.errors5xx, 1);
        assert_eq!(sample.cache_hits, 2);
        assert_eq!(sample.cache_misses, 2);
        assert_eq!(sample.bytes_sent, 3160);
        assert_eq!(sample.bytes_received, 500);
        assert_eq!(sample.latency.total(), 5);
        // 4 ms falls in the (2.5, 5] bucket, 300 ms in (250, 500].
        assert_eq!(sample.latency.counts[2], 1);
        assert_eq!(sample.latency.counts[13], 1);
        assert_eq!(interval.bad_lines, 0);
    }

    #[test]
    fn a_sample_put_back_is_carried_by_the_next_one() {
        let mut interval = Interval::default();
        interval.record(line(200, 0.004, "HIT", 100).trim_end());
        interval.record(line(503, 0.004, "", 100).trim_end());
        let undelivered = interval.take(10).unwrap();
        interval.put_back(&undelivered);
        interval.record(line(200, 0.004, "MISS", 100).trim_end());
        let next = interval.take(10).unwrap();
        assert_eq!(next.interval_seconds, 20);
        assert_eq!(next.requests, 3);
        assert_eq!(next.errors5xx, 1);
        assert_eq!((next.cache_hits, next.cache_misses), (1, 1));
        assert_eq!(next.bytes_sent, 300);
        assert_eq!(next.latency.total(), 3);
        assert_eq!(interval.take(10), None);
    }

    #[test]
    fn an_interval_without_traffic_has_no_sample() {
        let mut interval = Interval::default();
        interval.record("garbage");
        assert_eq!(interval.take(10), None);
        interval.record(line(200, 0.001, "", 1).trim_end());
        assert!(interval.take(10).is_some());
        assert_eq!(interval.take(10), None, "counting starts again");
    }
}
