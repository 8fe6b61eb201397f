//! What an operator installs around the binary, checked against the real binary: every metric
//! and label the Grafana dashboards and Prometheus rules use is exported (SPEC §13), counters
//! are there at 0 from start-up, systemd hears `READY=1` and `WATCHDOG=1`, and a configured
//! log directory receives JSON lines.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use edgeplane::edge::{Fleet, SimulateOptions};
use serde_json::{Value, json};

use common::{ADMIN_PASSWORD, cache_rule, ssl_certificate, unique};

const BINARY: &str = env!("CARGO_BIN_EXE_edgeplane");
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// A running `edgeplane serve` on a loopback port.
struct Server {
    child: Child,
    base: String,
    lines: Receiver<String>,
}

impl Drop for Server {
    /// A failed test leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `serve` on `data_dir` with the extra environment `env`, and waits (bounded) for
    /// `listening on ADDR`.
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let data_dir = data_dir.to_str().expect("utf-8 path");
        let args = ["serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"];
        Server::run(&args, env)
    }

    /// Runs the binary with `args` and `env` until it prints `listening on ADDR`.
    fn run(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BINARY);
        command.args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("EDGEPLANE_") || name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC"
            {
                command.env_remove(name);
            }
        }
        command
            .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("EDGEPLANE_LOG_LEVEL", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start edgeplane");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
            lines,
        };
        let address = server.wait_line("listening on ");
        server.base = format!("http://{address}");
        server
    }

    /// Waits (bounded) for a stdout line starting with `prefix`; returns the rest.
    fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(prefix) {
                        return rest.to_string();
                    }
                }
                Err(_) => panic!("edgeplane printed no '{prefix}' line in time"),
            }
        }
    }

    /// SIGTERM, then waits (bounded) for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

// ---------------------------------------------------------------------------------------
// The Prometheus text format, as far as the checks need it.

/// Samples of one scrape: metric name → the label sets it was exported with.
type Scrape = BTreeMap<String, Vec<BTreeMap<String, String>>>;

fn parse_exposition(text: &str) -> Scrape {
    let mut scrape = Scrape::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        if line[name_end..].starts_with('{') {
            let mut chars = line[name_end + 1..].chars().peekable();
            loop {
                let key: String = chars
                    .by_ref()
                    .take_while(|c| *c != '=')
                    .collect::<String>()
                    .trim_start_matches(',')
                    .trim()
                    .to_string();
                if key.is_empty() || key.starts_with('}') {
                    break;
                }
                assert_eq!(chars.next(), Some('"'), "label value of {key} in {line}");
                let mut value = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                if chars.peek() == Some(&'}') {
                    break;
                }
            }
        }
        scrape.entry(name).or_default().push(labels);
    }
    scrape
}

// ---------------------------------------------------------------------------------------
// PromQL, as far as names go: metric selectors with their label matchers, and the labels of
// `by (...)` clauses.

/// A label matcher: (label, operator, value).
type Matcher = (String, String, String);

#[derive(Debug, Default)]
struct Uses {
    /// Metric names with their label matchers.
    selectors: Vec<(String, Vec<Matcher>)>,
    /// Labels grouped by, which some selector of the same expression must carry.
    grouped_by: Vec<String>,
}

/// Operators, and aggregations (which may come before their parenthesis: `sum by (x) (...)`).
const KEYWORDS: [&str; 18] = [
    "and", "or", "unless", "bool", "offset", "inf", "nan", "sum", "min", "max", "avg", "count",
    "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
];
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn promql_uses(expr: &str) -> Uses {
    let chars: Vec<char> = expr.chars().collect();
    let mut uses = Uses::default();
    let mut i = 0;
    let skip_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers, including exponents and durations after `offset`.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(i);
            if LABEL_LISTS.contains(&word.as_str()) {
                if chars.get(next) == Some(&'(') {
                    let close = chars[next..]
                        .iter()
                        .position(|c| *c == ')')
                        .map_or(chars.len(), |p| next + p);
                    let list: String = chars[next + 1..close].iter().collect();
                    uses.grouped_by.extend(
                        list.split(',')
                            .map(|l| l.trim().to_string())
                            .filter(|l| !l.is_empty()),
                    );
                    i = close + 1;
                }
            } else if chars.get(next) == Some(&'(')
                || KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
            {
                // A function or an aggregation, or an operator keyword.
            } else {
                let mut matchers = Vec::new();
                if chars.get(next) == Some(&'{') {
                    let close = chars[next..]
                        .iter()
                        .position(|c| *c == '}')
                        .map_or(chars.len(), |p| next + p);
                    let body: String = chars[next + 1..close].iter().collect();
                    for matcher in body.split(',').filter(|m| !m.trim().is_empty()) {
                        let op_start = matcher.find(['=', '!']).expect("matcher operator");
                        let label = matcher[..op_start].trim().to_string();
                        let rest = &matcher[op_start..];
                        let op_len = if ["=~", "!~", "!="].iter().any(|op| rest.starts_with(op)) {
                            2
                        } else {
                            1
                        };
                        let value = rest[op_len..].trim().trim_matches('"').to_string();
                        matchers.push((label, rest[..op_len].to_string(), value));
                    }
                    i = close + 1;
                }
                uses.selectors.push((word, matchers));
            }
        } else {
            i += 1;
        }
    }
    uses
}

#[test]
fn promql_names_are_found_and_keywords_are_not() {
    let uses = promql_uses(
        r#"histogram_quantile(0.99, sum by (location, le) (rate(edgeplane_x_bucket{location=~"$location", class="5xx"}[5m]))) / on (location) edgeplane:rec > 1e3 and time() - up offset 5m"#,
    );
    let names: Vec<&str> = uses.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["edgeplane_x_bucket", "edgeplane:rec", "up"]);
    assert_eq!(
        uses.selectors[0].1,
        [
            ("location".into(), "=~".into(), "$location".into()),
            ("class".into(), "=".into(), "5xx".into())
        ]
    );
    assert_eq!(uses.grouped_by, ["location", "le", "location"]);
}

// ---------------------------------------------------------------------------------------
// What the shipped dashboards and rules use.

/// Every PromQL expression in the Grafana dashboards (panel targets and variable queries),
/// with the file it came from.
fn dashboard_expressions() -> Vec<(String, String)> {
    fn walk(value: &Value, file: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("expr", Value::String(expr)) => out.push((file.into(), expr.clone())),
                        ("query" | "definition", Value::String(query))
                            if query.starts_with("label_values(") =>
                        {
                            out.push((file.into(), label_values_as_promql(query)))
                        }
                        _ => walk(inner, file, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, file, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana"))
        .expect("config/grafana")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("dashboard");
            let dashboard: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            assert!(
                dashboard["title"].is_string() && dashboard["panels"].is_array(),
                "{} is not a dashboard",
                path.display()
            );
            walk(&dashboard, &path.display().to_string(), &mut out);
            files += 1;
        }
    }
    assert!(files >= 3, "the three dashboards of SPEC §13");
    out
}

/// `label_values(metric, label)` needs `metric` to carry `label`: as PromQL, `x by (label)`.
fn label_values_as_promql(query: &str) -> String {
    let inner = query
        .trim_start_matches("label_values(")
        .trim_end_matches(')');
    match inner.rsplit_once(',') {
        Some((selector, label)) => format!("sum by ({}) ({})", label.trim(), selector.trim()),
        None => inner.to_string(),
    }
}

/// The rule files' expressions, and the names their recording rules define.
fn rule_expressions() -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut expressions = Vec::new();
    let mut recorded = BTreeSet::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus"))
        .expect("config/prometheus")
    {
        let path = entry.expect("entry").path();
        if !path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            continue;
        }
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("rules");
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim_start();
            let indent = lines[i].len() - line.len();
            if let Some(name) = line.strip_prefix("- record:") {
                recorded.insert(name.trim().to_string());
            } else if let Some(expr) = line.strip_prefix("expr:") {
                let expr = expr.trim();
                if expr == "|" || expr == ">" {
                    let mut block = String::new();
                    while i + 1 < lines.len() {
                        let next = lines[i + 1];
                        let next_indent = next.len() - next.trim_start().len();
                        if !next.trim().is_empty() && next_indent <= indent {
                            break;
                        }
                        block.push_str(next.trim());
                        block.push(' ');
                        i += 1;
                    }
                    expressions.push((file.clone(), block));
                } else {
                    expressions.push((file.clone(), expr.to_string()));
                }
            }
            i += 1;
        }
    }
    assert!(!expressions.is_empty(), "no rules found");
    (expressions, recorded)
}

/// What `expressions` use that `scrape` lacks: metric names, label names of matchers and of
/// `by (...)` clauses; or, with `values_only`, the literal values of `=` matchers on the
/// metrics that are exported.
fn missing(
    expressions: &[(String, String)],
    recorded: &BTreeSet<String>,
    scrape: &Scrape,
    values_only: bool,
) -> Vec<String> {
    let mut missing = Vec::new();
    for (file, expr) in expressions {
        let uses = promql_uses(expr);
        let mut exported = Vec::new();
        for (name, matchers) in &uses.selectors {
            // Recording rules' outputs, and `up`, which Prometheus writes itself.
            if recorded.contains(name) || name == "up" {
                continue;
            }
            let Some(samples) = scrape.get(name) else {
                if !values_only {
                    missing.push(format!("{file}: metric {name} in `{expr}`"));
                }
                continue;
            };
            exported.push(samples);
            for (label, op, value) in matchers {
                if !samples.iter().any(|s| s.contains_key(label)) {
                    if !values_only {
                        missing.push(format!("{file}: label {label} of {name} in `{expr}`"));
                    }
                } else if values_only
                    && op == "="
                    && !value.contains('$')
                    && !samples.iter().any(|s| s.get(label) == Some(value))
                {
                    missing.push(format!("{file}: {name}{{{label}=\"{value}\"}} in `{expr}`"));
                }
            }
        }
        if exported.is_empty() || values_only {
            continue;
        }
        for label in &uses.grouped_by {
            let carried = exported
                .iter()
                .any(|samples| samples.iter().any(|s| s.contains_key(label)));
            if !carried {
                missing.push(format!("{file}: grouping label {label} in `{expr}`"));
            }
        }
    }
    missing
}

async fn scrape(http: &reqwest::Client, base: &str) -> Scrape {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert!(response.status().is_success(), "GET /metrics");
    parse_exposition(&response.text().await.expect("metrics body"))
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> (reqwest::StatusCode, Value) {
    let response = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_and_rules_name_only_what_the_binary_exports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("EDGEPLANE_SERVER_ALLOW_SELF_APPROVAL", "true"),
            ("EDGEPLANE_ROLLOUT_ANALYSIS_INTERVAL", "100ms"),
            ("EDGEPLANE_LOG_LEVEL", "warn"),
            // The Edge Location Performance dashboard reads the opt-in per-edge series.
            ("EDGEPLANE_METRICS_PER_EDGE_SERIES", "true"),
        ],
    );
    let http = client();
    let base = server.base.clone();
    let mut expressions = dashboard_expressions();
    let (rules, recorded) = rule_expressions();
    expressions.extend(rules);

    // At start-up, before any event: the counters and gauges that alerts and panels read
    // without a per-edge or per-deployment label are there, at 0, with the label values
    // the rules select.
    let at_start = scrape(&http, &base).await;
    for name in [
        "edgeplane_alerts_total",
        "edgeplane_analysis_verdicts_total",
        "edgeplane_deployments_finished_total",
        "edgeplane_deployments_in_progress",
        "edgeplane_reconcile_pushes_total",
    ] {
        assert!(
            at_start.contains_key(name),
            "{name} is not exported at start-up"
        );
    }
    let wrong_values = missing(&expressions, &recorded, &at_start, true);
    assert!(
        wrong_values.is_empty(),
        "label values the rules select are not exported:\n{}",
        wrong_values.join("\n")
    );

    // A fleet, a certificate and one deployment, so every kind of series exists.
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/authentication/login"),
        "",
        json!({"username": "admin", "password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "login: {body}");
    let admin = body["token"].as_str().expect("token").to_string();
    let fleet = Fleet::start(SimulateOptions {
        control_plane: base.clone(),
        admin_token: admin.clone(),
        edges: 9,
        heartbeat_interval: Duration::from_millis(200),
        ..SimulateOptions::default()
    })
    .await
    .expect("fleet starts");
    let (certificate, _) = ssl_certificate(&format!("{}.example.com", unique("ops")));
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/configurations"),
        &admin,
        json!({"name": unique("ops-cert"), "type": "SSLCertificate", "content": certificate}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "certificate: {body}");
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/configurations"),
        &admin,
        json!({"name": unique("ops"), "type": "CacheRule", "content": cache_rule("/ops/*")}),
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::CREATED,
        "configuration: {body}"
    );
    let configuration_id = body["configurationId"].as_str().expect("id").to_string();
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/configurations/{configuration_id}/approve"),
        &admin,
        json!({}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "approve: {body}");
    // The edges register asynchronously; a deployment needs them healthy.
    let deadline = Instant::now() + DEADLINE;
    let deployment_id = loop {
        let (status, body) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/api/v1/deployments"),
            &admin,
            json!({
                "configurationId": configuration_id,
                "configurationVersion": "1.0.0",
                "strategy": "DirectDeployment",
                "targetRegions": ["North America", "Europe", "Asia Pacific"],
            }),
        )
        .await;
        if status == reqwest::StatusCode::ACCEPTED {
            break body["deploymentId"].as_str().expect("id").to_string();
        }
        assert!(Instant::now() < deadline, "deployment refused: {body}");
        tokio::time::sleep(POLL).await;
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let response = http
            .get(format!("{base}/api/v1/deployments/{deployment_id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("deployment");
        let body: Value = response.json().await.expect("deployment body");
        if body["status"] == "Completed" {
            break;
        }
        assert!(
            body["status"] != "Failed" && body["status"] != "RolledBack",
            "deployment: {body}"
        );
        assert!(
            Instant::now() < deadline,
            "deployment never completed: {body}"
        );
        tokio::time::sleep(POLL).await;
    }

    // The fleet and certificate gauges are refreshed every 10 s: wait for them, bounded.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = scrape(&http, &base).await;
        let absent = missing(&expressions, &recorded, &now, false);
        if absent.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "used by config/grafana or config/prometheus but not exported:\n{}",
            absent.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(fleet);
    drop(server);
}

// ---------------------------------------------------------------------------------------
// systemd and logs.

/// Waits (bounded) for a datagram on `socket` containing `line`; returns every datagram read.
fn receive_until(socket: &UnixDatagram, line: &str) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {line} within {DEADLINE:?}; got {seen:?}"
        );
        socket.set_read_timeout(Some(left)).expect("timeout");
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let found = message.lines().any(|l| l == line);
                seen.push(message);
                if found {
                    return seen;
                }
            }
            Err(error) => panic!("no {line} on the notify socket: {error}; got {seen:?}"),
        }
    }
}

#[test]
fn systemd_hears_ready_once_listening_and_watchdog_keepalives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let mut server = Server::start(
        &dir.path().join("data"),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")),
            // Keep-alives every 100 ms.
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let before_ready = receive_until(&socket, "READY=1");
    // READY=1 is sent after `listening on`, so the server accepts requests by then.
    let health = std::net::TcpStream::connect(server.base.trim_start_matches("http://"));
    assert!(health.is_ok(), "not accepting after READY=1");
    assert_eq!(
        before_ready.len(),
        1,
        "READY=1 comes first: {before_ready:?}"
    );
    receive_until(&socket, "WATCHDOG=1");
    receive_until(&socket, "WATCHDOG=1");
    assert_eq!(server.terminate().code(), Some(0));
    receive_until(&socket, "STOPPING=1");
}

#[test]
fn the_agent_tells_systemd_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlocation_id = \"ops-1\"\nlisten = \"127.0.0.1:0\"\n\
             control_plane = \"http://127.0.0.1:9\"\ntoken = \"t\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .expect("agent config");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let mut agent = Server::run(
        &["agent", "--config", config.to_str().expect("utf-8 path")],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let before_ready = receive_until(&socket, "READY=1");
    assert_eq!(
        before_ready.len(),
        1,
        "READY=1 comes first: {before_ready:?}"
    );
    receive_until(&socket, "WATCHDOG=1");
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_log_directory_receives_json_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("logs");
    let mut server = Server::start(
        &dir.path().join("data"),
        &[
            ("EDGEPLANE_LOG_FORMAT", "json"),
            (
                "EDGEPLANE_LOG_DIRECTORY",
                logs.to_str().expect("utf-8 path"),
            ),
        ],
    );
    // The file writer is flushed when the process exits.
    assert_eq!(server.terminate().code(), Some(0));
    let files: Vec<_> = std::fs::read_dir(&logs)
        .expect("log directory created")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one daily file: {files:?}");
    let name = files[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("edgeplane.log."), "daily file name {name}");
    let text = std::fs::read_to_string(&files[0]).expect("log file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "a JSON log line has a timestamp and a level: {line}"
        );
    }
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"edgeplane control plane started"),
        "start-up line in the file: {messages:?}"
    );
    assert!(
        messages.contains(&"stopped"),
        "shutdown line in the file: {messages:?}"
    );
}
