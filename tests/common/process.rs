//! The real binary as a child process in end-to-end tests: started with no `EDGEPLANE_*`
//! variable of the caller's, its `listening on ADDR` line awaited under a deadline, killed
//! when dropped so that a failing test leaves nothing running.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long a process may take to say it listens.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running `edgeplane` process.
pub(crate) struct Running {
    pub(crate) child: Child,
    /// What followed `listening on `: `ADDR`, or `https://ADDR` over TLS.
    pub(crate) address: String,
    /// Its later stdout lines.
    pub(crate) lines: Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// `http://ADDR` (or the `https://` address as printed).
    pub(crate) fn url(&self) -> String {
        if self.address.starts_with("https://") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        }
    }
}

/// Runs `edgeplane ARGS` with `env` on top of a caller environment stripped of
/// `EDGEPLANE_*` and systemd's variables, and waits for `listening on ADDR`.
pub(crate) fn start_binary<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") || name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC" {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start edgeplane");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    // Drains stdout for the life of the process, so that printing never blocks it.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "edgeplane {:?} did not print 'listening on' in time",
                command_line(args)
            );
        };
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            return Running {
                child,
                address: address.to_string(),
                lines,
            };
        }
    }
}

fn command_line<S: AsRef<OsStr>>(args: &[S]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}
