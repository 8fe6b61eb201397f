//! `edgeplane demo` as a user meets it: nine healthy POPs, both demo configurations approved,
//! the printed password logs in, the printed client commands name them, and stopping removes
//! the data dir.

use std::net::SocketAddr;

use edgeplane::cli::demo::{self, DemoOptions};
use serde_json::{Value, json};

async fn get(client: &reqwest::Client, url: String, token: &str) -> Value {
    let response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_nine_healthy_edges_and_two_approved_configurations() {
    let demo = demo::start(
        DemoOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            run_scenario: false,
        },
        edgeplane::app::build_for_demo,
    )
    .await
    .expect("demo starts");
    let data_dir = demo.data_dir().to_path_buf();
    assert!(data_dir.is_dir());
    let api = format!("{}/api/v1", demo.base_url);
    let client = reqwest::Client::new();

    let login = client
        .post(format!("{api}/authentication/login"))
        .json(&json!({"username": demo.admin_username, "password": demo.admin_password}))
        .send()
        .await
        .expect("login request");
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    let login: Value = login.json().await.expect("login answer");
    let token = login["token"].as_str().expect("token").to_string();

    let healthy = get(
        &client,
        format!("{api}/edge-locations?isHealthy=true"),
        &token,
    )
    .await;
    assert_eq!(healthy["total"], 9, "{healthy}");

    for (id, name) in [
        (&demo.good_configuration_id, demo::GOOD_CONFIGURATION),
        (&demo.bad_configuration_id, demo::BAD_CONFIGURATION),
    ] {
        let configuration = get(&client, format!("{api}/configurations/{id}"), &token).await;
        assert_eq!(configuration["name"], name, "{configuration}");
        assert_eq!(configuration["status"], "Approved", "{configuration}");
    }

    // The bad change carries the degradation marker the simulated edges act on (SPEC §7.6).
    let bad_version = get(
        &client,
        format!(
            "{api}/configurations/{}/versions/1.0.0",
            demo.bad_configuration_id
        ),
        &token,
    )
    .await;
    assert_eq!(
        bad_version["metadata"]["simulate.errorRate"], "9.0",
        "{bad_version}"
    );

    // The printed deployment requests are accepted as they are (dry run: nothing starts).
    for id in [&demo.good_configuration_id, &demo.bad_configuration_id] {
        let answer = client
            .post(format!("{api}/deployments?dryRun=true"))
            .bearer_auth(&token)
            .json(&demo::canary_request(id))
            .send()
            .await
            .expect("dry run");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "dry run of {id}: {status}: {body}");
    }

    let printed = demo::instructions(&demo);
    let console = format!("{}/", demo.base_url);
    let login = format!(
        "edgeplane login --url {} --username {}",
        demo.base_url, demo.admin_username
    );
    let good = format!(
        "edgeplane deploy {} --strategy canary",
        demo::GOOD_CONFIGURATION
    );
    let bad = format!(
        "edgeplane deploy {} --strategy canary",
        demo::BAD_CONFIGURATION
    );
    for needle in [
        demo.admin_password.as_str(),
        console.as_str(),
        "/metrics",
        login.as_str(),
        good.as_str(),
        bad.as_str(),
        "--watch",
    ] {
        assert!(
            printed.contains(needle),
            "instructions lack {needle}: {printed}"
        );
    }
    assert!(
        !printed.contains("curl"),
        "the client replaces curl: {printed}"
    );

    demo.stop().await;
    assert!(!data_dir.exists(), "the demo's data dir is removed on stop");
}
