//! `edgeplane serve` out of file descriptors, as an operator would meet it: started under a
//! low descriptor limit and flooded with silent connections, it keeps running, says so once
//! per episode instead of once per failed accept, and answers `/health` again once the
//! silent connections have been closed by the header timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// One `GET /health` on a fresh connection; true when it answered 200.
fn health(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: edgeplane\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn out_of_descriptors_the_server_backs_off_logs_once_per_episode_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // The shell lowers the limit for the server alone, then becomes it.
    let mut command = Command::new("sh");
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    let mut server = command
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env(
            "EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD",
            "admin-password-for-tests",
        )
        .env("EDGEPLANE_SERVER_HEADER_READ_TIMEOUT", "500ms")
        .env("EDGEPLANE_LIMITS_PUBLIC_PER_MINUTE", "100000")
        .env("EDGEPLANE_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgeplane serve");
    let stderr = server.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let stdout = server.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let address = loop {
        let line = lines.recv_timeout(DEADLINE).expect("listening on ...");
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            break address.to_string();
        }
    };

    // More silent connections than the server has descriptors for.
    let silent: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    assert!(silent.len() >= 100, "only {} connected", silent.len());

    let deadline = Instant::now() + DEADLINE;
    while !health(&address) {
        assert!(
            Instant::now() < deadline,
            "the server never answered /health again"
        );
    }
    drop(silent);
    let _ = server.kill();
    let _ = server.wait();
    let log = log.join().unwrap();
    let exhausted = log
        .lines()
        .filter(|l| l.contains("cannot accept connections"))
        .count();
    let recovered = log
        .lines()
        .filter(|l| l.contains("accepting connections again"))
        .count();
    assert!(exhausted >= 1, "the episode was not logged:\n{log}");
    assert!(
        exhausted <= recovered + 1,
        "{exhausted} warnings for {recovered} recoveries: logged per attempt, not per episode"
    );
    assert!(
        log.contains("Too many open files"),
        "the warning names the cause:\n{log}"
    );
}
