//! `--watch`: follows a deployment's event stream (`GET /deployments/{id}/events`) to its
//! end and shows it as it goes — one bar per wave on a terminal, one line per event
//! otherwise, the events' own JSON with `--output json` — then the final state, whose exit
//! code scripts act on: 0 Completed, 3 RolledBack, 1 Failed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::http::{Api, ClientError, SseMessage};
use super::output::{Output, Paint, Ui, clock};

/// The server sends a keep-alive every 15 s; this long without a byte means the connection
/// is gone.
const IDLE: Duration = Duration::from_secs(60);
/// Reconnections in a row without a new event before giving up.
const MAX_RECONNECTS: u32 = 5;

/// Exit code of a watched deployment's final status (SPEC §12.1).
pub fn exit_code(status: &str) -> u8 {
    match status {
        "Completed" => 0,
        "RolledBack" => 3,
        _ => 1,
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "Completed" | "Failed" | "RolledBack")
}

/// One wave's bar: how many of its targets run the new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveBar {
    pub index: u32,
    pub label: String,
    pub acked: u64,
    pub targets: u64,
    pub rolled_back: u64,
    pub failed: u64,
}

/// What the watch knows of a deployment, from its record and the events seen so far.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub deployment_id: String,
    pub status: String,
    edge_wave: BTreeMap<String, u32>,
    edge_state: BTreeMap<String, String>,
    wave_names: BTreeMap<u32, String>,
    /// The latest verdict, as a line.
    pub verdict: Option<String>,
    /// Index of the next event not yet applied (the stream replays the history first).
    next_index: u64,
}

impl Progress {
    pub fn new(deployment: &Value) -> Progress {
        let mut progress = Progress {
            deployment_id: field(deployment, "deploymentId"),
            status: field(deployment, "status"),
            ..Progress::default()
        };
        progress.learn(deployment);
        progress
    }

    /// Takes the wave of every edge from the deployment record (`edges`), and the state of
    /// those no event has told about yet.
    pub fn learn(&mut self, deployment: &Value) {
        let Some(edges) = deployment.get("edges").and_then(Value::as_object) else {
            return;
        };
        for (location, edge) in edges {
            let wave = edge
                .get("wave")
                .and_then(Value::as_u64)
                .and_then(|w| u32::try_from(w).ok())
                .unwrap_or(0);
            self.edge_wave.insert(location.clone(), wave);
            if let Some(state) = edge.get("state").and_then(Value::as_str) {
                self.edge_state
                    .entry(location.clone())
                    .or_insert_with(|| state.to_string());
            }
        }
    }

    /// Whether the record must be read again to place this event's edge in a wave.
    pub fn needs_record(&self, event: &Value) -> bool {
        match event.get("locationId").and_then(Value::as_str) {
            Some(location) => !self.edge_wave.contains_key(location),
            None => field(event, "kind") == "StepStarted" && self.edge_wave.is_empty(),
        }
    }

    /// Applies one event of the stream; false for one already applied (a replay after a
    /// reconnection).
    pub fn apply(&mut self, index: Option<u64>, event: &Value) -> bool {
        if let Some(index) = index {
            if index < self.next_index {
                return false;
            }
            self.next_index = index + 1;
        }
        if let Some(status) = event.get("status").and_then(Value::as_str) {
            self.status = status.to_string();
        }
        let kind = field(event, "kind");
        let message = field(event, "message");
        if let Some(location) = event.get("locationId").and_then(Value::as_str) {
            let state = match kind.as_str() {
                "EdgePushed" | "EdgeFailed" => Some("Pushed"),
                "EdgeAcked" => Some("Acked"),
                "EdgeNacked" => Some("Nacked"),
                "EdgeTimedOut" => Some("TimedOut"),
                "EdgeRolledBack" => Some("RolledBack"),
                "EdgeRollbackFailed" if message.starts_with("rollback not confirmed") => {
                    Some("RollbackFailed")
                }
                "Skipped" => Some("Skipped"),
                _ => None,
            };
            if let Some(state) = state {
                self.edge_state
                    .insert(location.to_string(), state.to_string());
            }
        }
        match kind.as_str() {
            "StepStarted" => {
                if let Some((index, name)) = wave_of_step(&message) {
                    self.wave_names.insert(index, name);
                }
            }
            "Verdict" => self.verdict = Some(verdict_line(event)),
            _ => {}
        }
        true
    }

    /// One bar per wave that has edges, in wave order.
    pub fn bars(&self) -> Vec<WaveBar> {
        let mut bars: BTreeMap<u32, WaveBar> = BTreeMap::new();
        for (location, wave) in &self.edge_wave {
            let bar = bars.entry(*wave).or_insert_with(|| WaveBar {
                index: *wave,
                label: self
                    .wave_names
                    .get(wave)
                    .map(|name| format!("{} {name}", wave + 1))
                    .unwrap_or_else(|| format!("wave {}", wave + 1)),
                acked: 0,
                targets: 0,
                rolled_back: 0,
                failed: 0,
            });
            match self.edge_state.get(location).map(String::as_str) {
                Some("Skipped") => continue,
                Some("Acked") => bar.acked += 1,
                Some("RolledBack") => bar.rolled_back += 1,
                Some("Nacked" | "TimedOut" | "RollbackFailed") => bar.failed += 1,
                _ => {}
            }
            bar.targets += 1;
        }
        bars.into_values().collect()
    }
}

fn field(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `wave 2 'Europe': Apply to 3 edge(s)` → (1, "Europe").
fn wave_of_step(message: &str) -> Option<(u32, String)> {
    let rest = message.strip_prefix("wave ")?;
    let (number, rest) = rest.split_once(' ')?;
    let number: u32 = number.parse().ok()?;
    let name = rest.strip_prefix('\'')?.split_once('\'')?.0;
    Some((number.checked_sub(1)?, name.to_string()))
}

/// A verdict with the figures behind it, canary against baseline.
pub fn verdict_line(event: &Value) -> String {
    let message = field(event, "message");
    let data = event.get("data").and_then(Value::as_object);
    let figure = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // The outcome and the figures first, the reason last: on a terminal the line is cut to
    // its width, and the figures are what an operator reads.
    let (outcome, reason) = match message.split_once(": ") {
        Some((outcome, reason)) => (outcome.to_string(), Some(reason.to_string())),
        None => (message.clone(), None),
    };
    let mut parts = vec![format!("verdict: {outcome}")];
    let pairs = [
        ("errors", "canaryErrorRate", "baselineErrorRate", "%"),
        (
            "hit rate",
            "canaryCacheHitRate",
            "baselineCacheHitRate",
            "%",
        ),
        ("p99", "canaryP99LatencyMs", "baselineP99LatencyMs", " ms"),
    ];
    // A last wave has no baseline left: its figures are all zero, and showing them as a
    // comparison would mislead.
    let has_baseline = figure("baselineP99LatencyMs")
        .and_then(|p99| p99.parse::<f64>().ok())
        .is_some_and(|p99| p99 > 0.0);
    for (name, canary, baseline, unit) in pairs {
        if let Some(canary) = figure(canary) {
            let baseline = figure(baseline)
                .filter(|_| has_baseline)
                .map(|b| format!(" (baseline {b}{unit})"))
                .unwrap_or_default();
            parts.push(format!("{name} {canary}{unit}{baseline}"));
        }
    }
    if let Some(requests) = figure("canaryRequests") {
        parts.push(format!("{requests} canary requests"));
    }
    let mut line = parts.join(" · ");
    if let Some(reason) = reason {
        line.push_str(" — ");
        line.push_str(&reason);
    }
    line
}

/// One event as one plain line: time, status, kind, edge, message and figures.
pub fn event_line(event: &Value) -> String {
    let kind = field(event, "kind");
    let status = field(event, "status");
    let at = clock(event.get("at"));
    let subject = match event.get("locationId").and_then(Value::as_str) {
        Some(location) => format!("{location}: "),
        None => String::new(),
    };
    let body = if kind == "Verdict" {
        verdict_line(event)
    } else {
        field(event, "message")
    };
    format!("{at} [{status}] {kind} {subject}{body}")
}

/// Events worth a line above the bars on a terminal; per-edge progress is in the bars.
fn is_notable(kind: &str) -> bool {
    !matches!(
        kind,
        "EdgePushed" | "EdgeAcked" | "EdgeRolledBack" | "Verdict"
    )
}

/// The closing line: the final status, why, and how long it took.
pub fn final_line(deployment: &Value, paint: Paint) -> String {
    let status = field(deployment, "status");
    let mut line = format!(
        "deployment {} {}",
        field(deployment, "deploymentId"),
        paint.status(&status)
    );
    let progress = deployment.get("progress");
    let count = |key: &str| progress.and_then(|p| p.get(key)).and_then(Value::as_u64);
    if let (Some(acked), Some(targets)) = (count("acked"), count("targets")) {
        line.push_str(&format!(": {acked}/{targets} edges on the new version"));
    }
    if let Some(seconds) = deployment.get("durationSeconds").and_then(Value::as_u64) {
        line.push_str(&format!(" after {seconds}s"));
    }
    let reason = deployment
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|errors| errors.last())
        .and_then(Value::as_str);
    if let Some(reason) = reason.filter(|_| status != "Completed") {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

/// The terminal view: a header, a bar per wave and the latest verdict, with notable events
/// printed above them.
struct Bars {
    multi: indicatif::MultiProgress,
    header: indicatif::ProgressBar,
    verdict: indicatif::ProgressBar,
    waves: BTreeMap<u32, indicatif::ProgressBar>,
    paint: Paint,
}

impl Bars {
    fn new(paint: Paint) -> Bars {
        use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let line_style = ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let header = multi.add(ProgressBar::new_spinner().with_style(line_style.clone()));
        header.enable_steady_tick(Duration::from_millis(120));
        let verdict = multi.add(
            ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("  {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        );
        Bars {
            multi,
            header,
            verdict,
            waves: BTreeMap::new(),
            paint,
        }
    }

    fn sync(&mut self, progress: &Progress) {
        use indicatif::{ProgressBar, ProgressStyle};
        self.header.set_message(format!(
            "deployment {}  {}",
            progress.deployment_id,
            self.paint.status(&progress.status)
        ));
        for bar in progress.bars() {
            let shown = self.waves.entry(bar.index).or_insert_with(|| {
                let style = ProgressStyle::with_template(
                    "  {prefix:<24} [{bar:30}] {pos}/{len} acked {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                self.multi
                    .insert_before(&self.verdict, ProgressBar::new(bar.targets))
                    .with_style(style)
            });
            shown.set_prefix(bar.label.clone());
            shown.set_length(bar.targets);
            shown.set_position(bar.acked);
            let mut notes = Vec::new();
            if bar.rolled_back > 0 {
                notes.push(
                    self.paint
                        .yellow(&format!("{} rolled back", bar.rolled_back)),
                );
            }
            if bar.failed > 0 {
                notes.push(self.paint.red(&format!("{} failed", bar.failed)));
            }
            shown.set_message(notes.join(", "));
        }
        if let Some(verdict) = &progress.verdict {
            self.verdict.set_message(verdict.clone());
        }
    }

    fn note(&self, line: String) {
        let _ = self.multi.println(line);
    }

    /// Leaves the bars as they stand (`finish` would fill them, which a rollback is not).
    fn finish(&self) {
        self.header.abandon();
        for bar in self.waves.values() {
            bar.abandon();
        }
        self.verdict.abandon();
    }
}

enum View {
    Json,
    Lines,
    Bars(Box<Bars>),
}

impl View {
    fn event(&mut self, progress: &Progress, message: &SseMessage, event: &Value) {
        match self {
            View::Json => println!("{}", message.data),
            View::Lines => println!("{}", event_line(event)),
            View::Bars(bars) => {
                let kind = field(event, "kind");
                if is_notable(&kind) {
                    bars.note(event_line(event));
                }
                bars.sync(progress);
            }
        }
    }
}

/// Follows the deployment until it ends and answers its final record. Reconnects when the
/// stream breaks or the server says this reader lagged; the replayed history is skipped.
pub async fn follow(api: &Api, deployment_id: &str, ui: Ui) -> Result<Value, ClientError> {
    let record = api.get(&["deployments", deployment_id], &[]).await?;
    let mut progress = Progress::new(&record);
    let mut view = match (ui.output, ui.terminal) {
        (Output::Json, _) => View::Json,
        (Output::Table, true) => View::Bars(Box::new(Bars::new(ui.paint))),
        (Output::Table, false) => View::Lines,
    };
    if let View::Bars(bars) = &mut view {
        bars.sync(&progress);
    }
    let segments = ["deployments", deployment_id, "events"];
    let mut failures = 0u32;
    loop {
        match api.events(&segments).await {
            Ok(mut stream) => loop {
                match stream.next(IDLE).await {
                    Ok(Some(message)) if message.event == "lagged" => break,
                    Ok(Some(message)) => {
                        let Ok(event) = serde_json::from_str::<Value>(&message.data) else {
                            continue;
                        };
                        let index = message.id.as_deref().and_then(|i| i.parse().ok());
                        if progress.needs_record(&event)
                            && let Ok(record) = api.get(&["deployments", deployment_id], &[]).await
                        {
                            progress.learn(&record);
                        }
                        if progress.apply(index, &event) {
                            failures = 0;
                            view.event(&progress, &message, &event);
                        }
                    }
                    Ok(None) => break,
                    Err(ClientError::Connection { .. }) => break,
                    Err(error) => return Err(error),
                }
            },
            Err(ClientError::Connection { url, reason }) => {
                if failures >= MAX_RECONNECTS {
                    return Err(ClientError::Connection { url, reason });
                }
            }
            Err(error) => return Err(error),
        }
        // The stream ended: done if the deployment is, else it broke and is opened again.
        let record = match api.get(&["deployments", deployment_id], &[]).await {
            Ok(record) => Some(record),
            Err(ClientError::Connection { .. }) if failures < MAX_RECONNECTS => None,
            Err(error) => return Err(error),
        };
        if let Some(record) = record
            && is_terminal(&field(&record, "status"))
        {
            // Events the stream may not have delivered before it closed.
            if let Some(events) = record.get("events").and_then(Value::as_array) {
                for (index, event) in events.iter().enumerate() {
                    let mut event = event.clone();
                    event["status"] = record["status"].clone();
                    let message = SseMessage {
                        event: field(&event, "kind"),
                        data: event.to_string(),
                        id: Some(index.to_string()),
                    };
                    if progress.apply(Some(index as u64), &event) {
                        view.event(&progress, &message, &event);
                    }
                }
            }
            progress.learn(&record);
            if let View::Bars(bars) = &mut view {
                bars.sync(&progress);
                bars.finish();
            }
            return Ok(record);
        }
        failures += 1;
        if failures > MAX_RECONNECTS {
            return Err(ClientError::Other(format!(
                "the event stream of deployment {deployment_id} keeps ending before the deployment does"
            )));
        }
        let backoff = Duration::from_secs(1 << failures.min(3));
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, location: Option<&str>, message: &str, status: &str) -> Value {
        json!({
            "at": "2026-01-01T10:00:00Z", "kind": kind, "actor": "system",
            "message": message, "locationId": location, "version": "1.0.0",
            "data": {}, "status": status,
        })
    }

    fn record() -> Value {
        json!({
            "deploymentId": "deploy-1",
            "status": "InProgress",
            "edges": {
                "us-east-1": {"wave": 0, "state": "Pushed"},
                "eu-west-1": {"wave": 1, "state": "Pending"},
                "ap-east-1": {"wave": 1, "state": "Pending"},
                "ap-south-1": {"wave": 1, "state": "Skipped"},
            }
        })
    }

    #[test]
    fn bars_count_acks_per_wave_and_leave_skipped_edges_out() {
        let mut progress = Progress::new(&record());
        let events = [
            event(
                "StepStarted",
                None,
                "wave 1 'canary 10%': Apply to 1 edge(s)",
                "Canary",
            ),
            event("EdgeAcked", Some("us-east-1"), "acked in 3 ms", "Canary"),
            event(
                "StepStarted",
                None,
                "wave 2 'canary 100%': Apply to 2 edge(s)",
                "InProgress",
            ),
            event(
                "EdgeAcked",
                Some("eu-west-1"),
                "acked in 4 ms",
                "InProgress",
            ),
        ];
        for (i, e) in events.iter().enumerate() {
            assert!(progress.apply(Some(i as u64), e));
        }
        let bars = progress.bars();
        assert_eq!(bars.len(), 2);
        assert_eq!((bars[0].acked, bars[0].targets), (1, 1));
        assert_eq!(bars[0].label, "1 canary 10%");
        assert_eq!((bars[1].acked, bars[1].targets), (1, 2));
        assert_eq!(progress.status, "InProgress");
    }

    #[test]
    fn rollbacks_take_edges_off_the_bar_and_replays_are_ignored() {
        let mut progress = Progress::new(&record());
        let acked = event("EdgeAcked", Some("us-east-1"), "acked", "Canary");
        assert!(progress.apply(Some(0), &acked));
        assert!(progress.apply(
            Some(1),
            &event(
                "EdgeRolledBack",
                Some("us-east-1"),
                "back on none",
                "RolledBack"
            )
        ));
        // The history replayed after a reconnection does not move the bars backwards.
        assert!(!progress.apply(Some(0), &acked));
        let bar = &progress.bars()[0];
        assert_eq!((bar.acked, bar.rolled_back), (0, 1));
        assert_eq!(progress.status, "RolledBack");
    }

    #[test]
    fn an_edge_outside_the_known_waves_asks_for_the_record() {
        let progress = Progress::new(&json!({"deploymentId": "d", "status": "Pending"}));
        assert!(progress.needs_record(&event("EdgeAcked", Some("x"), "", "InProgress")));
        assert!(progress.needs_record(&event("StepStarted", None, "wave 1 'a': x", "InProgress")));
        let known = Progress::new(&record());
        assert!(!known.needs_record(&event("EdgeAcked", Some("us-east-1"), "", "Canary")));
    }

    #[test]
    fn verdicts_show_canary_and_baseline_figures() {
        let mut verdict = event("Verdict", None, "fail: ErrorRate AboveThreshold", "Canary");
        verdict["data"] = json!({
            "verdict": "{…}",
            "canaryErrorRate": "9.012", "baselineErrorRate": "0.201",
            "canaryRequests": "5000",
        });
        let line = verdict_line(&verdict);
        assert_eq!(
            line,
            "verdict: fail · errors 9.012% · 5000 canary requests — ErrorRate AboveThreshold"
        );
        verdict["data"]["baselineP99LatencyMs"] = json!("38.5");
        verdict["data"]["canaryP99LatencyMs"] = json!("40.1");
        assert_eq!(
            verdict_line(&verdict),
            "verdict: fail · errors 9.012% (baseline 0.201%) · p99 40.1 ms (baseline 38.5 ms) · 5000 canary requests — ErrorRate AboveThreshold"
        );
        let plain = event_line(&verdict);
        assert!(
            plain.starts_with("10:00:00 [Canary] Verdict verdict: fail"),
            "{plain}"
        );
    }

    #[test]
    fn plain_lines_name_the_edge_and_the_status() {
        let line = event_line(&event(
            "EdgeNacked",
            Some("eu-west-1"),
            "nacked: bad",
            "Canary",
        ));
        assert_eq!(line, "10:00:00 [Canary] EdgeNacked eu-west-1: nacked: bad");
    }

    #[test]
    fn exit_codes_follow_the_final_status() {
        assert_eq!(exit_code("Completed"), 0);
        assert_eq!(exit_code("RolledBack"), 3);
        assert_eq!(exit_code("Failed"), 1);
        assert_eq!(exit_code("Paused"), 1);
    }

    #[test]
    fn the_final_line_gives_the_reason_of_a_rollback() {
        let done = json!({
            "deploymentId": "deploy-1", "status": "RolledBack", "durationSeconds": 12,
            "progress": {"acked": 0, "targets": 9},
            "errors": ["analysis failed: ErrorRate AboveThreshold"],
        });
        assert_eq!(
            final_line(&done, Paint { enabled: false }),
            "deployment deploy-1 RolledBack: 0/9 edges on the new version after 12s — analysis failed: ErrorRate AboveThreshold"
        );
    }
}
