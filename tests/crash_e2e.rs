//! The real binary, run the way an operator runs it: acknowledged writes survive `kill -9`,
//! bad config files stop start-up, offline user and token commands, graceful SIGTERM and the
//! generated first admin password.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeplane::store::{Command as StoreCommand, Store};

mod common;
use common::process::{DEADLINE, client, edgeplane, get, login, serve, stored, wait_bounded};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "e2e-admin-password";

fn cache_rule(path: &str, ttl: u64) -> Value {
    json!({"pathPattern": path, "ttl": ttl, "cacheControl": "public"})
}

/// What the writers were told: name → every acknowledged version → the TTL it was written
/// with.
type Acked = Arc<Mutex<BTreeMap<String, BTreeMap<semver::Version, u64>>>>;

/// Creates configurations and updates each twice, recording every acknowledgement, until
/// the server goes away.
async fn write_until_killed(
    client: reqwest::Client,
    base: String,
    token: String,
    writer: String,
    acked: Acked,
    acks: tokio::sync::mpsc::UnboundedSender<()>,
) {
    for n in 0.. {
        let name = format!("{writer}-{n}");
        let path = format!("/{name}/*");
        let Ok(response) = client
            .post(format!("{base}/api/v1/configurations"))
            .bearer_auth(&token)
            .json(&json!({"name": name, "type": "CacheRule", "content": cache_rule(&path, 60)}))
            .send()
            .await
        else {
            return;
        };
        if response.status() != 201 {
            return;
        }
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        acked
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_default()
            .insert(semver::Version::new(1, 0, 0), 60);
        let _ = acks.send(());
        let id = body["configurationId"].as_str().unwrap().to_string();
        for ttl in [120, 180] {
            let Ok(response) = client
                .put(format!("{base}/api/v1/configurations/{id}"))
                .bearer_auth(&token)
                .json(&json!({"content": cache_rule(&path, ttl)}))
                .send()
                .await
            else {
                return;
            };
            if response.status() != 200 {
                return;
            }
            let Ok(body) = response.json::<Value>().await else {
                return;
            };
            let version = semver::Version::parse(body["version"].as_str().unwrap()).unwrap();
            acked
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_default()
                .insert(version, ttl);
            let _ = acks.send(());
        }
    }
}

/// The store a killed server left behind: the command log numbered 1, 2, 3, … without a gap,
/// no configuration half-written (its versions, the commands logged for it and its current
/// version and content agree), each history in increasing version order, and every
/// acknowledged write in it: that version, with the content it was written with.
fn check_store_left_behind(data_dir: &Path, round: usize, acked: &Acked) {
    let store = Store::open(data_dir).expect("open the store left behind");
    let reader = store.reader().unwrap();
    let log = reader.log_entries(1, usize::MAX).unwrap();
    let mut writes: BTreeMap<String, usize> = BTreeMap::new();
    for (position, entry) in log.iter().enumerate() {
        assert_eq!(
            entry.index,
            position as u64 + 1,
            "round {round}: the log has a gap before index {}",
            entry.index
        );
        match &entry.envelope.command {
            StoreCommand::CreateConfiguration { configuration, .. } => {
                *writes
                    .entry(configuration.configuration_id.clone())
                    .or_default() += 1;
            }
            StoreCommand::UpdateConfiguration {
                configuration_id, ..
            } => *writes.entry(configuration_id.clone()).or_default() += 1,
            _ => {}
        }
    }
    let configurations = reader.configurations().unwrap();
    assert_eq!(
        configurations.len(),
        writes.len(),
        "round {round}: one stored configuration per logged create"
    );
    for configuration in configurations {
        let id = &configuration.configuration_id;
        let versions = reader.versions(id).unwrap();
        assert_eq!(
            Some(&versions.len()),
            writes.get(id),
            "round {round}: {id} has one version per logged write"
        );
        let last = versions.last().unwrap();
        assert_eq!(last.version, configuration.version, "round {round}: {id}");
        assert_eq!(last.content, configuration.content, "round {round}: {id}");
        let numbers: Vec<semver::Version> = versions
            .iter()
            .map(|v| semver::Version::parse(&v.version).unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|pair| pair[0] < pair[1]),
            "round {round}: {id} versions out of order: {numbers:?}"
        );
    }
    let by_name: BTreeMap<String, String> = reader
        .configurations()
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.configuration_id))
        .collect();
    for (name, writes) in acked.lock().unwrap().iter() {
        let id = by_name
            .get(name)
            .unwrap_or_else(|| panic!("round {round}: acknowledged {name} is lost"));
        let versions = reader.versions(id).unwrap();
        for (version, ttl) in writes {
            let stored = versions
                .iter()
                .find(|v| semver::Version::parse(&v.version).unwrap() == *version)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {name} {version} is lost"));
            assert_eq!(
                stored.content["ttl"], *ttl,
                "round {round}: {name} {version} holds other content"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let client = client();
    let acked: Acked = Arc::default();
    // Where the kills fall is random; the seed is printed so a failure can be replayed with
    // EDGEPLANE_CRASH_SEED.
    let seed = std::env::var("EDGEPLANE_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    // 20 rounds in the test suite; tests/ops/crash_loop.sh runs longer loops.
    let rounds: usize = std::env::var("EDGEPLANE_CRASH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(20);
    eprintln!(
        "acknowledged_writes_survive_sigkill: EDGEPLANE_CRASH_SEED={seed} EDGEPLANE_CRASH_ROUNDS={rounds}"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..rounds {
        let server = serve(dir.path(), Some(ADMIN_PASSWORD));
        let token = login(&client, &server.base, "admin", ADMIN_PASSWORD).await;

        // Everything acknowledged before the last kill is there, at least at that version
        // (an update in flight at the kill may or may not have landed).
        let found = stored(&client, &server.base, &token).await;
        for (name, writes) in acked.lock().unwrap().iter() {
            let version = writes.keys().next_back().unwrap();
            let (_, stored_version) = found
                .get(name)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {name} is lost"));
            let stored_version = semver::Version::parse(stored_version).unwrap();
            assert!(
                stored_version >= *version,
                "round {round}: {name} at {stored_version}, acknowledged {version}"
            );
        }

        // Kill right after a random acknowledgement, with the other writers in flight (their
        // commands share commits).
        let n_acks_wanted: usize = rng.random_range(1..=8);
        let (acks, mut ack_events) = tokio::sync::mpsc::unbounded_channel();
        let writers: Vec<_> = (0..8)
            .map(|w| {
                tokio::spawn(write_until_killed(
                    client.clone(),
                    server.base.clone(),
                    token.clone(),
                    format!("r{round}w{w}"),
                    acked.clone(),
                    acks.clone(),
                ))
            })
            .collect();
        drop(acks);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        for _ in 0..n_acks_wanted {
            let event = tokio::time::timeout_at(deadline, ack_events.recv()).await;
            assert!(
                matches!(event, Ok(Some(()))),
                "round {round}: writes were not acknowledged"
            );
        }
        server.kill_hard();
        for writer in writers {
            writer.await.unwrap();
        }
        check_store_left_behind(dir.path(), round, &acked);
    }
    // Every round's first acknowledgement is of a configuration created in that round.
    let rounds_acked: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .keys()
        .filter_map(|name| name.split_once('w').map(|(round, _)| round.to_string()))
        .collect();
    assert_eq!(
        rounds_acked.len(),
        rounds,
        "rounds with an acknowledged create: {rounds_acked:?}"
    );
    // A last start checks the writes of the final round.
    let server = serve(dir.path(), Some(ADMIN_PASSWORD));
    let token = login(&client, &server.base, "admin", ADMIN_PASSWORD).await;
    let found = stored(&client, &server.base, &token).await;
    for name in acked.lock().unwrap().keys() {
        assert!(found.contains_key(name), "acknowledged {name} is lost");
    }
    server.kill_hard();
}

#[test]
fn a_bad_config_file_exits_2_naming_the_key() {
    // Keys that `edgeplane()` sets in the environment would beat the file: use others.
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str, key: &str| {
        let file = dir.path().join("edgeplane.toml");
        std::fs::write(&file, text).unwrap();
        let mut child = edgeplane(&[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let status = wait_bounded(&mut child);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{text}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr:?}");
        assert!(lines[0].contains(key), "{stderr:?} names {key}");
    };
    check("[server]\nlisen = \"127.0.0.1:1\"\n", "server.lisen");
    check(
        "[limits]\nheartbeats_per_second = \"many\"\n",
        "limits.heartbeats_per_second",
    );
    check("[auth]\ntoken_ttl = \"forever\"\n", "auth.token_ttl");
    assert!(
        !dir.path()
            .join("data")
            .join("initial-admin-password")
            .exists(),
        "no half-started server"
    );
}

#[tokio::test]
async fn offline_user_add_then_serve_and_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut add = edgeplane(&[
        "user",
        "add",
        "ops",
        "--role",
        "Operator",
        "--password-stdin",
        "--data-dir",
        data_dir,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"operator-password-1\n")
        .unwrap();
    assert!(wait_bounded(&mut add).success());

    let server = serve(dir.path(), Some(ADMIN_PASSWORD));
    let client = client();
    let token = login(&client, &server.base, "ops", "operator-password-1").await;
    let (status, _) = get(&client, &server.base, "/api/v1/configurations", &token).await;
    assert_eq!(status, 200);
    let (status, _) = get(&client, &server.base, "/api/v1/users", &token).await;
    assert_eq!(status, 403, "an Operator is no Admin");
    server.kill_hard();
}

#[tokio::test]
async fn sigterm_exits_0_and_an_offline_token_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), Some(ADMIN_PASSWORD));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "graceful exit on SIGTERM");

    let output = edgeplane(&[
        "token",
        "--user",
        "admin",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ])
    .stderr(Stdio::null())
    .output()
    .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");

    let server = serve(dir.path(), None);
    let client = client();
    let (status, body) = get(&client, &server.base, "/api/v1/users", &token).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(&client, &server.base, "/api/v1/users", "not-a-token").await;
    assert_eq!(status, 401);
    assert_eq!(server.terminate().code(), Some(0));
}

#[tokio::test]
async fn first_start_without_a_password_writes_one_only_the_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), None);
    let file = dir.path().join("initial-admin-password");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 12);
    let client = client();
    let token = login(&client, &server.base, "admin", &password).await;
    let (status, _) = get(&client, &server.base, "/api/v1/users", &token).await;
    assert_eq!(status, 200);
    server.kill_hard();
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), Some(ADMIN_PASSWORD));
    let token = login(&client(), &server.base, "admin", ADMIN_PASSWORD).await;
    let address = server.base.trim_start_matches("http://").to_string();

    // A create sent with `Expect: 100-continue`: the server answers 100 only once the handler
    // reads the body, so the SIGTERM comes while the request is in flight, not before the
    // server has read it.
    let body = json!({"name": "in-flight", "type": "CacheRule",
                      "content": cache_rule("/in-flight/*", 60)})
    .to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/v1/configurations HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(DEADLINE, stream.read_u8())
            .await
            .expect("100 Continue in time")
            .expect("100 Continue read");
        interim.push(byte);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    // The server has begun shutting down once it refuses new connections.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(&address).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response))
        .await
        .expect("response in time")
        .expect("response read");
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the request in flight completes: {response}"
    );
    assert_eq!(wait_bounded(&mut server.child).code(), Some(0));

    // What it acknowledged is there after a restart.
    let server = serve(dir.path(), Some(ADMIN_PASSWORD));
    let client = client();
    let token = login(&client, &server.base, "admin", ADMIN_PASSWORD).await;
    assert!(
        stored(&client, &server.base, &token)
            .await
            .contains_key("in-flight")
    );
    server.kill_hard();
}
