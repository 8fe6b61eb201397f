//! `edgeplane serve` and the environment it starts in: variables meant for other commands are
//! a warning in the log, a mistyped settings key is a refusal that names it (exit 2).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a start on a loaded machine; a hang fails instead of blocking.
const DEADLINE: Duration = Duration::from_secs(30);

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
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("listening on ") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = stderr.join().expect("stderr thread");
    assert!(listening, "serve did not start: {log}");
    for name in [
        "EDGEPLANE_SIMULATE_TOKEN",
        "EDGEPLANE_URL",
        "EDGEPLANE_TOKEN",
    ] {
        assert!(
            log.lines().any(|l| l.contains("WARN") && l.contains(name)),
            "no warning about {name}: {log}"
        );
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
