//! The real binary as a child process in end-to-end tests, started the way an operator starts
//! it: no `EDGEPLANE_*` variable of the caller's, its `listening on ADDR` line awaited under a
//! deadline, killed when dropped so that a failing test leaves nothing running. `start_binary`
//! runs any subcommand; `serve` runs the control plane on port 0 with a temp dir.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_edgeplane");
const ADMIN_PASSWORD: &str = "e2e-admin-password";
/// How long a process may take to start or stop before the test gives up on it.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A running `edgeplane serve`.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    _stdout: Receiver<String>,
}

/// A command for the binary with generous request budgets and no inherited settings.
pub(crate) fn edgeplane(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    for key in [
        "WRITES_PER_MINUTE",
        "READS_PER_MINUTE",
        "VALIDATE_PER_MINUTE",
        "PUBLIC_PER_MINUTE",
        "LOGIN_ATTEMPTS_PER_MINUTE",
    ] {
        command.env(format!("EDGEPLANE_LIMITS_{key}"), "100000");
    }
    command.env("EDGEPLANE_LOG_LEVEL", "warn");
    command
}

/// Starts `serve` on `data_dir` at port 0 and waits (bounded) for `listening on ADDR`.
pub(crate) fn serve(data_dir: &Path, bootstrap_password: Option<&str>) -> Server {
    serve_with(data_dir, "127.0.0.1:0", bootstrap_password, &[])
}

/// [`serve`] on `listen` with extra environment (settings as `EDGEPLANE_<SECTION>_<KEY>`).
pub(crate) fn serve_with(
    data_dir: &Path,
    listen: &str,
    bootstrap_password: Option<&str>,
    env: &[(String, String)],
) -> Server {
    let mut command = edgeplane(&[
        "serve",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen",
        listen,
    ]);
    if let Some(password) = bootstrap_password {
        command.env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", password);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start edgeplane serve");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    // Keeps draining stdout for the life of the process, so logging never blocks it.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(address) = line.trim().strip_prefix("listening on ") {
                    return Server {
                        child,
                        base: format!("http://{address}"),
                        _stdout: lines,
                    };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("edgeplane serve did not print 'listening on' in time");
            }
        }
    }
}

/// Waits for `child` to exit, failing the test (and killing it) past the deadline.
pub(crate) fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` to its end with `stdin` on its standard input and returns what it printed,
/// failing the test (and killing it) past the deadline. Output is read while it runs, so a
/// command that prints a lot cannot stall on a full pipe.
pub(crate) fn run_to_end(mut command: Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgeplane");
    {
        // A command refused before it reads its input has closed the pipe: that is its answer.
        let mut input = child.stdin.take().expect("stdin");
        let _ = input.write_all(stdin.as_bytes());
    }
    let pid = child.id().to_string();
    let (done, output) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match output.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{command:?} did not exit in time");
        }
    }
}

impl Drop for Server {
    /// A failed test leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub(crate) fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        wait_bounded(&mut self.child)
    }
}

pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub(crate) async fn login(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> String {
    let response = client
        .post(format!("{base}/api/v1/authentication/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login request");
    assert_eq!(response.status(), 200, "login of {username}");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_string()
}

pub(crate) async fn get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let response = client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every stored configuration: name → (id, version).
pub(crate) async fn stored(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let (status, page) = get(
            client,
            base,
            &format!("/api/v1/configurations?limit=100&offset={offset}"),
            token,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for c in page["configurations"].as_array().unwrap() {
            out.insert(
                c["name"].as_str().unwrap().to_string(),
                (
                    c["configurationId"].as_str().unwrap().to_string(),
                    c["version"].as_str().unwrap().to_string(),
                ),
            );
        }
        match page["nextOffset"].as_u64() {
            Some(next) => offset = next,
            None => return out,
        }
    }
}
