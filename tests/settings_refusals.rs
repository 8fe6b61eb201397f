//! The settings an operator may get wrong: every value check refuses its value with one line
//! naming the key, and the value at the edge of what is allowed still loads, so `serve` stops
//! at start-up on a mistake instead of running with a setting that cannot work.

use std::path::Path;

use edgeplane::config::{ConfigError, Overrides, Settings};

fn load_file(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgeplane.toml");
    std::fs::write(&path, text).unwrap();
    Settings::load(Some(&path), Vec::new(), &Overrides::default())
}

/// `refused` is refused naming `key`; `accepted`, the nearest allowed value, loads.
fn check(refused: &str, accepted: &str, key: &str) {
    match load_file(refused) {
        Ok(_) => panic!("{refused:?} was accepted"),
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains(key), "{message:?} should name {key}");
            assert!(!message.contains('\n'), "one line: {message:?}");
        }
    }
    if let Err(error) = load_file(accepted) {
        panic!("{accepted:?} was refused: {error}");
    }
}

#[test]
fn every_value_check_names_its_key_and_lets_the_bound_through() {
    for section_key in [
        "limits.writes_per_minute",
        "limits.reads_per_minute",
        "limits.validate_per_minute",
        "limits.deployment_actions_per_minute",
        "limits.metrics_reads_per_minute",
        "limits.heartbeats_per_second",
        "limits.public_per_minute",
        "limits.login_attempts_per_minute",
        "auth.max_concurrent_hashes",
        "auth.login_attempts_per_user_per_hour",
        "server.max_connections",
        "server.max_event_streams",
        "server.max_event_streams_per_user",
        "rollout.max_concurrent_deployments",
        "rollout.max_push_attempts",
        "edges.push_concurrency",
        "cluster.max_log_entries",
    ] {
        let (section, key) = section_key.split_once('.').unwrap();
        check(
            &format!("[{section}]\n{key} = 0\n"),
            &format!("[{section}]\n{key} = 1\n"),
            section_key,
        );
    }
    for section_key in [
        "server.header_read_timeout",
        "server.idle_timeout",
        "cluster.sync_timeout",
    ] {
        let (section, key) = section_key.split_once('.').unwrap();
        check(
            &format!("[{section}]\n{key} = \"0s\"\n"),
            &format!("[{section}]\n{key} = \"1s\"\n"),
            section_key,
        );
    }
    check(
        "[server]\nmax_body_bytes = 1023\n",
        "[server]\nmax_body_bytes = 1024\n",
        "server.max_body_bytes",
    );
    check(
        "[log]\ntrace_sample_ratio = -0.1\n",
        "[log]\ntrace_sample_ratio = 0.0\n",
        "log.trace_sample_ratio",
    );
    check(
        "[auth]\ntoken_ttl = \"0s\"\n",
        "[auth]\ntoken_ttl = \"1s\"\n",
        "auth.token_ttl",
    );
    check(
        "[auth]\ntoken_ttl = \"31d\"\n",
        "[auth]\ntoken_ttl = \"30d\"\n",
        "auth.token_ttl",
    );
    check(
        "[auth]\nedge_token_ttl = \"23h\"\n",
        "[auth]\nedge_token_ttl = \"24h\"\n",
        "auth.edge_token_ttl",
    );
    check(
        "[alerts]\nwebhooks = [\"https://hooks.example.com/a\", \"ftp://hooks.example.com\"]\n",
        "[alerts]\nwebhooks = [\"https://hooks.example.com/a\", \"http://127.0.0.1:9/b\"]\n",
        "alerts.webhooks[1]",
    );
    check(
        "[store]\nfree_space_reserve = \"12 parsecs\"\n",
        "[store]\nfree_space_reserve = \"12 MB\"\n",
        "store.free_space_reserve",
    );
}

#[test]
fn cluster_settings_that_cannot_replicate_are_refused() {
    const SECRET: &str = "secret = \"a-cluster-secret-of-16+\"\n";
    check(
        &format!("[cluster]\npeers = [\"standby:8080\"]\n{SECRET}"),
        &format!("[cluster]\npeers = [\"http://standby:8080\"]\n{SECRET}"),
        "cluster.peers[0]",
    );
    check(
        "[cluster]\nadvertise_url = \"primary:8080\"\n",
        "[cluster]\nadvertise_url = \"https://primary:8080\"\n",
        "cluster.advertise_url",
    );
    check(
        "[cluster]\npeers = [\"http://standby:8080\"]\nsecret = \"fifteen-chars!!\"\n",
        "[cluster]\npeers = [\"http://standby:8080\"]\nsecret = \"sixteen-chars!!!\"\n",
        "cluster.secret",
    );
    check(
        "[cluster]\nrole = \"standby\"\n",
        &format!("[cluster]\nrole = \"standby\"\npeers = [\"http://primary:8080\"]\n{SECRET}"),
        "cluster.peers",
    );
    check(
        &format!("[cluster]\nnode_id = \"{}\"\n", "n".repeat(65)),
        &format!("[cluster]\nnode_id = \"{}\"\n", "n".repeat(64)),
        "cluster.node_id",
    );
    check(
        "[cluster]\nnode_id = \"eu west\"\n",
        "[cluster]\nnode_id = \"eu-west_1.a\"\n",
        "cluster.node_id",
    );
}

#[test]
fn an_edge_client_certificate_needs_its_key_and_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let missing = |name: &str| dir.path().join(name).display().to_string();
    check(
        &format!("[edges]\nclient_cert = \"{}\"\n", missing("edge.crt")),
        "[edges]\n",
        "edges.client_key",
    );
    check(
        &format!("[edges]\nclient_key = \"{}\"\n", missing("edge.key")),
        "[edges]\n",
        "edges.client_cert",
    );
    // Both given but unreadable: the message names the file's setting.
    let error = load_file(&format!(
        "[edges]\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        missing("edge.crt"),
        missing("edge.key")
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("edges.client_"), "{error}");
}

#[test]
fn an_unreadable_settings_file_is_named() {
    let error = Settings::load(
        Some(Path::new("/nonexistent/edgeplane.toml")),
        Vec::new(),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&error, ConfigError::Unreadable { path, .. } if path == "/nonexistent/edgeplane.toml"),
        "{error}"
    );
}
