//! `edgeplane serve` as an operator starts it: variables meant for other commands are a warning
//! in the log, a mistyped settings key is a refusal that names it (exit 2), and the INFO log
//! shows changes and errors, not the edges' routine heartbeats.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a start on a loaded machine; a hang fails instead of blocking.
const DEADLINE: Duration = Duration::from_secs(30);

const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// `edgeplane serve` on a fresh data dir and port 0, with only the given `EDGEPLANE_*`
/// variables.
fn serve(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env(
            "EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD",
            "admin-password-for-tests",
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgeplane serve")
}

/// Drains a child's stream on a thread; the thread's result is everything it wrote.
fn drain(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stream).read_to_string(&mut text);
        text
    })
}

/// Waits (bounded) for the `listening on ADDR` line and answers ADDR; `None` if it never came.
fn listening_address(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    // Drains stdout for the life of the process, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).ok()?;
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            return Some(address.to_string());
        }
    }
}

/// The log's text with its terminal colour codes (`ESC [ ... m`) taken out.
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for code in chars.by_ref() {
                if code == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn variables_of_other_commands_are_logged_not_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = serve(
        dir.path(),
        &[
            ("EDGEPLANE_SIMULATE_TOKEN", "token-of-the-simulator"),
            ("EDGEPLANE_URL", "http://127.0.0.1:8080"),
            ("EDGEPLANE_TOKEN", "token-of-the-client"),
        ],
    );
    let stderr = drain(child.stderr.take().expect("stderr"));
    let listening = listening_address(&mut child).is_some();
    let _ = child.kill();
    let _ = child.wait();
    let log = without_colours(&stderr.join().expect("stderr thread"));
    assert!(listening, "serve did not start: {log}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("EDGEPLANE_SIMULATE_TOKEN")),
        "no warning about EDGEPLANE_SIMULATE_TOKEN: {log}"
    );
    // The client's URL and token are not settings at all (SPEC §12.1): serve says nothing.
    for name in ["EDGEPLANE_URL", "EDGEPLANE_TOKEN"] {
        assert!(!log.contains(name), "{name} is the client's: {log}");
    }
    assert!(
        !log.contains("token-of-the-"),
        "values of other commands' variables stay out of the log: {log}"
    );
}

#[test]
fn an_unknown_key_in_a_known_section_stops_serve_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = serve(dir.path(), &[("EDGEPLANE_SERVER_LISTN", "127.0.0.1:1")]);
    let stderr = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started despite an unknown settings key");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let message = stderr.join().expect("stderr thread");
    assert_eq!(status.code(), Some(2), "{message}");
    assert!(message.contains("server.listn"), "{message}");
}

#[tokio::test]
async fn heartbeats_stay_out_of_the_info_log_and_changes_do_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = serve(dir.path(), &[("EDGEPLANE_LOG_LEVEL", "info")]);
    let stderr = drain(child.stderr.take().expect("stderr"));
    let address = listening_address(&mut child);
    let exchange = async {
        let base = format!("http://{}/api/v1", address.as_deref()?);
        let http = reqwest::Client::new();
        let login: serde_json::Value = http
            .post(format!("{base}/authentication/login"))
            .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let token = login["token"].as_str()?.to_string();
        let created = http
            .post(format!("{base}/edge-locations"))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "locationId": "eu-central-1", "name": "Frankfurt", "region": "Europe",
                "countryCode": "DE", "city": "Frankfurt", "endpoint": "http://127.0.0.1:9/",
            }))
            .send()
            .await
            .ok()?
            .status();
        let mut statuses = vec![created.as_u16()];
        for location in ["eu-central-1", "eu-central-1", "eu-central-1", "nowhere-1"] {
            let status = http
                .post(format!("{base}/edge-locations/{location}/heartbeat"))
                .bearer_auth(&token)
                .json(&serde_json::json!({}))
                .send()
                .await
                .ok()?
                .status();
            statuses.push(status.as_u16());
        }
        Some(statuses)
    };
    let statuses = exchange.await;
    let _ = child.kill();
    let _ = child.wait();
    let log = without_colours(&stderr.join().expect("stderr thread"));
    assert_eq!(statuses, Some(vec![201, 200, 200, 200, 404]), "{log}");
    let requests: Vec<&str> = log.lines().filter(|l| l.contains(" request ")).collect();
    assert!(
        !requests
            .iter()
            .any(|l| l.contains("/heartbeat") && l.contains("status=200")),
        "accepted heartbeats at INFO: {log}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("/heartbeat") && l.contains("status=404")),
        "a refused heartbeat is an error worth a line: {log}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("/edge-locations") && l.contains("status=201")),
        "a change is at INFO: {log}"
    );
}
