//! Transport security against the real binary (SPEC §1): the API over HTTPS only, client
//! certificates required of edges when a client CA is set, certificates reloaded on SIGHUP
//! while open connections carry on, and the agent's listener over mutual TLS.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeplane::fleet::{PushClient, PushOptions, PushOutcome};
use edgeplane::model::ConfigType;
use edgeplane::protocol::PushRequest;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

/// Long enough for a start on a loaded machine; a hang fails instead of blocking.
const DEADLINE: Duration = Duration::from_secs(30);
const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A certificate authority that signs leaf certificates for `localhost` and 127.0.0.1.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and its key (PEM), usable by servers and clients alike.
    fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA and a leaf into `dir` as `{prefix}-ca.pem`, `{prefix}.pem`,
    /// `{prefix}-key.pem`; answers the three paths.
    fn write(&self, dir: &Path, prefix: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (cert, key) = self.leaf(prefix);
        let paths = (
            dir.join(format!("{prefix}-ca.pem")),
            dir.join(format!("{prefix}.pem")),
            dir.join(format!("{prefix}-key.pem")),
        );
        std::fs::write(&paths.0, &self.pem).expect("write CA");
        std::fs::write(&paths.1, cert).expect("write certificate");
        std::fs::write(&paths.2, key).expect("write key");
        paths
    }
}

struct Process {
    child: Child,
    /// What follows `listening on ` on stdout.
    address: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `args` and `env` and waits (bounded) for `listening on ADDR`.
fn start(args: &[&str], env: &[(&str, &Path)]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(name, path)| (*name, path.as_os_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start edgeplane");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(address) = line.trim().strip_prefix("listening on ") {
                let _ = lines_tx.send(address.to_string());
            }
        }
    });
    let address = lines
        .recv_timeout(DEADLINE)
        .expect("no `listening on` line");
    Process { child, address }
}

fn serve(data_dir: &Path, env: &[(&str, &Path)]) -> Process {
    let data_dir = data_dir.to_str().expect("utf-8 temp dir");
    start(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        env,
    )
}

/// A client trusting only `ca_pem`, presenting `identity` (certificate and key PEM) if given.
fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let roots = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("CA");
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(roots)
        .timeout(Duration::from_secs(10))
        .http1_only()
        .pool_max_idle_per_host(1);
    if let Some((cert, key)) = identity {
        let identity =
            reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).expect("identity");
        builder = builder.identity(identity);
    }
    builder.build().expect("client")
}

async fn health(client: &reqwest::Client, base: &str) -> Result<u16, reqwest::Error> {
    Ok(client
        .get(format!("{base}/health"))
        .send()
        .await?
        .status()
        .as_u16())
}

async fn login(client: &reqwest::Client, base: &str) -> String {
    let response = client
        .post(format!("{base}/api/v1/authentication/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login request");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("login body");
    body["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn the_api_is_served_over_https_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Authority::new("edgeplane test CA");
    let (_, cert, key) = ca.write(dir.path(), "server");
    let server = serve(
        &dir.path().join("data"),
        &[
            ("EDGEPLANE_SERVER_TLS_CERT", &cert),
            ("EDGEPLANE_SERVER_TLS_KEY", &key),
        ],
    );
    let address = server
        .address
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("not an https address: {}", server.address))
        .to_string();
    let base = format!("https://{address}");
    let trusting = client(&ca.pem, None);
    assert_eq!(health(&trusting, &base).await.expect("https health"), 200);
    login(&trusting, &base).await;

    // Plain HTTP on the TLS port is an error, not a hang, and does not hurt the server.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("plain client");
    let error = health(&plain, &format!("http://{address}"))
        .await
        .expect_err("plain HTTP answered on the TLS port");
    assert!(!error.is_timeout(), "plain HTTP hung: {error}");
    assert_eq!(health(&trusting, &base).await.expect("https health"), 200);

    // A client that trusts another CA refuses the server's certificate.
    let stranger = client(&Authority::new("another CA").pem, None);
    let error = health(&stranger, &base)
        .await
        .expect_err("a certificate of an untrusted CA was accepted");
    assert!(error.is_connect(), "{error}");
}

#[tokio::test]
async fn with_a_client_ca_edges_need_a_certificate_and_people_do_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Authority::new("edgeplane test CA");
    let (_, cert, key) = ca.write(dir.path(), "server");
    let clients = Authority::new("edge client CA");
    let (client_ca, _, _) = clients.write(dir.path(), "clients");
    let server = serve(
        &dir.path().join("data"),
        &[
            ("EDGEPLANE_SERVER_TLS_CERT", &cert),
            ("EDGEPLANE_SERVER_TLS_KEY", &key),
            ("EDGEPLANE_SERVER_TLS_CLIENT_CA", &client_ca),
        ],
    );
    let base = server.address.clone();
    let person = client(&ca.pem, None);
    let admin = login(&person, &base).await;
    let created = person
        .post(format!("{base}/api/v1/edge-locations"))
        .bearer_auth(&admin)
        .json(&json!({
            "locationId": "eu-central-1",
            "name": "POP Frankfurt",
            "region": "Europe",
            "countryCode": "DE",
            "city": "Frankfurt",
            "endpoint": "https://127.0.0.1:9/",
        }))
        .send()
        .await
        .expect("create edge");
    assert_eq!(created.status().as_u16(), 201);
    let body: Value = created.json().await.expect("edge body");
    let token = body["agentToken"].as_str().expect("agentToken").to_string();
    let heartbeat = json!({"activeConfigurations": {}});
    let url = format!("{base}/api/v1/edge-locations/eu-central-1/heartbeat");

    let refused = person
        .post(&url)
        .bearer_auth(&token)
        .json(&heartbeat)
        .send()
        .await
        .expect("heartbeat without a certificate");
    assert_eq!(refused.status().as_u16(), 403);
    let error: Value = refused.json().await.expect("error body");
    assert_eq!(error["error"]["code"], "FORBIDDEN", "{error}");

    let (edge_cert, edge_key) = clients.leaf("eu-central-1");
    let edge = client(&ca.pem, Some((&edge_cert, &edge_key)));
    let accepted = edge
        .post(&url)
        .bearer_auth(&token)
        .json(&heartbeat)
        .send()
        .await
        .expect("heartbeat with a certificate");
    assert_eq!(accepted.status().as_u16(), 200);

    // A certificate from a CA the server does not trust ends the handshake.
    let (other_cert, other_key) = Authority::new("not the client CA").leaf("intruder");
    let intruder = client(&ca.pem, Some((&other_cert, &other_key)));
    assert!(health(&intruder, &base).await.is_err());
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_connections_carry_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old_ca = Authority::new("old CA");
    let (_, cert, key) = old_ca.write(dir.path(), "server");
    let server = serve(
        &dir.path().join("data"),
        &[
            ("EDGEPLANE_SERVER_TLS_CERT", &cert),
            ("EDGEPLANE_SERVER_TLS_KEY", &key),
        ],
    );
    let base = server.address.clone();
    // One keep-alive connection, opened under the old certificate.
    let old = client(&old_ca.pem, None);
    assert_eq!(health(&old, &base).await.expect("old certificate"), 200);

    let new_ca = Authority::new("new CA");
    let new = client(&new_ca.pem, None);
    assert!(
        health(&new, &base).await.is_err(),
        "new CA trusted too early"
    );
    let (new_cert, new_key) = new_ca.leaf("server");
    std::fs::write(&cert, new_cert).expect("replace certificate");
    std::fs::write(&key, new_key).expect("replace key");
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());

    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(200) = health(&new, &base).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections never saw the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old client trusts only the old CA: it succeeds only on its open connection.
    assert_eq!(
        health(&old, &base)
            .await
            .expect("the open connection was dropped"),
        200
    );
    let fresh_old = client(&old_ca.pem, None);
    assert!(
        health(&fresh_old, &base).await.is_err(),
        "a new connection still got the old certificate"
    );
}

#[tokio::test]
async fn the_agent_takes_pushes_over_mutual_tls() {
    const TOKEN: &str = "edge-token-eu-west-1";
    let dir = tempfile::tempdir().expect("temp dir");
    let agent_ca = Authority::new("agent CA");
    let (agent_ca_file, agent_cert, agent_key) = agent_ca.write(dir.path(), "agent");
    let control_ca = Authority::new("control plane CA");
    let (control_ca_file, control_cert, control_key) = control_ca.write(dir.path(), "control");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"[agent]
location_id = "eu-west-1"
listen = "127.0.0.1:0"
control_plane = "https://127.0.0.1:9"
token = "{TOKEN}"
state_dir = "{state}"
heartbeat_interval = "1h"
tls_cert = "{cert}"
tls_key = "{key}"
tls_client_ca = "{client_ca}"
ca_file = "{client_ca}"
"#,
            state = dir.path().join("state").display(),
            cert = agent_cert.display(),
            key = agent_key.display(),
            client_ca = control_ca_file.display(),
        ),
    )
    .expect("agent config");
    let config = config.to_str().expect("utf-8 path").to_string();
    let agent = start(&["agent", "--config", &config], &[]);
    assert!(agent.address.starts_with("https://"), "{}", agent.address);

    let request = PushRequest::apply(
        "ver-1",
        ConfigType::CacheRule,
        json!({"pathPattern": "/static/*", "ttl": 60, "cacheControl": "public, max-age=60"}),
        BTreeMap::new(),
    );
    let options = PushOptions {
        timeout: Duration::from_secs(10),
        retries: 0,
        ca_file: Some(agent_ca_file.clone()),
        ..PushOptions::default()
    };
    let pusher = PushClient::new(PushOptions {
        client_cert: Some((control_cert, control_key)),
        ..options.clone()
    })
    .expect("push client");
    match pusher
        .push(&agent.address, TOKEN, "config-1", &request)
        .await
    {
        Ok(PushOutcome::Acked { version, .. }) => assert_eq!(version, "ver-1"),
        other => panic!("expected an ack, got {other:?}"),
    }

    // Without a client certificate the agent ends the handshake.
    let anonymous = PushClient::new(options).expect("push client");
    let refused = anonymous
        .push(&agent.address, TOKEN, "config-1", &request)
        .await;
    assert!(
        refused.is_err(),
        "pushed without a certificate: {refused:?}"
    );
}

#[test]
fn an_unreadable_certificate_stops_serve_with_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.pem");
    let output = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("EDGEPLANE_SERVER_TLS_CERT", &missing)
        .env("EDGEPLANE_SERVER_TLS_KEY", &missing)
        .stdin(Stdio::null())
        .output()
        .expect("run edgeplane serve");
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("server.tls_cert: cannot read"),
        "{message}"
    );
}

/// The log of `edgeplane serve --listen LISTEN` from start to a graceful stop.
fn log_of_plain_serve(listen: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("EDGEPLANE_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgeplane serve");
    let stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let line = lines.recv_timeout(DEADLINE);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = log.join().expect("stderr thread");
    let line = line.unwrap_or_else(|_| panic!("serve did not start: {log}"));
    assert!(
        line.starts_with("listening on ") && !line.contains("https://"),
        "{line}"
    );
    log
}

#[test]
fn plain_http_off_loopback_is_served_with_a_warning() {
    let warning = "serving plain HTTP on a non-loopback address";
    let log = log_of_plain_serve("0.0.0.0:0");
    assert!(
        log.lines()
            .any(|l| l.contains("\"WARN\"") && l.contains(warning)),
        "no warning: {log}"
    );
    let log = log_of_plain_serve("127.0.0.1:0");
    assert!(!log.contains(warning), "warned on loopback: {log}");
}
