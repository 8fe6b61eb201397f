//! Concurrent requests that only one may win: each race fires 50 requests at once through the
//! in-process router and finds exactly one success, because the rule is checked inside the
//! store's write transaction rather than before it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use serde_json::{Value, json};

use common::{TestApp, cache_rule, unique};

const RACERS: usize = 50;

/// One request: method, path, an extra header, JSON body.
type Racer = (Method, String, Option<(&'static str, String)>, Value);

/// Fires every request at once; answers their statuses and bodies.
async fn race(app: &Arc<TestApp>, requests: Vec<Racer>) -> Vec<(StatusCode, Value)> {
    let tasks = requests.into_iter().map(|(method, path, header, body)| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut builder = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {}", app.admin))
                .header("content-type", "application/json");
            if let Some((name, value)) = header {
                builder = builder.header(name, value);
            }
            let request = builder
                .body(axum::body::Body::from(body.to_string()))
                .expect("request");
            let (status, _, body) = app.send(request).await;
            (status, body)
        })
    });
    join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("request task"))
        .collect()
}

/// Asserts exactly one answer has `winner` and every other one is a 4xx error with the SPEC §5
/// shape and one of `losers`' codes.
fn exactly_one_winner(answers: &[(StatusCode, Value)], winner: StatusCode, losers: &[&str]) {
    let winners = answers.iter().filter(|(s, _)| *s == winner).count();
    assert_eq!(winners, 1, "winners among {answers:#?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != winner) {
        assert!(status.is_client_error(), "{status}: {body}");
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(losers.contains(&code), "{status}: {body}");
    }
}

async fn app_with(adjust: impl FnOnce(&mut edgeplane::config::Settings)) -> Arc<TestApp> {
    Arc::new(
        TestApp::with_settings(|settings| {
            settings.server.allow_self_approval = true;
            // Pushes to the silent edge below wait this long, so deployments stay running.
            settings.edges.push_timeout = Duration::from_secs(600);
            adjust(settings);
        })
        .await,
    )
}

fn create(name: &str, content: Value) -> Racer {
    (
        Method::POST,
        "/api/v1/configurations".into(),
        None,
        json!({"name": name, "type": "CacheRule", "content": content}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_many_creates_with_the_same_name_wins() {
    let app = app_with(|_| {}).await;
    let name = unique("raced-name");
    let requests = (0..RACERS)
        .map(|_| create(&name, cache_rule(&format!("/{}/*", unique("name-race")))))
        .collect();
    let answers = race(&app, requests).await;
    exactly_one_winner(&answers, StatusCode::CREATED, &["CONFLICT"]);
    let (_, _, listed) = app
        .get(&format!("/api/v1/configurations?name={name}"), &app.admin)
        .await;
    assert_eq!(listed["total"], 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_many_identical_patterns_with_other_content_wins() {
    let app = app_with(|_| {}).await;
    let pattern = format!("/{}/*", unique("pattern-race"));
    let requests = (0..RACERS)
        .map(|i| {
            let mut content = cache_rule(&pattern);
            content["ttl"] = json!(60 + i);
            create(&unique("pattern-racer"), content)
        })
        .collect();
    let answers = race(&app, requests).await;
    // A loser that read the winner already fails validation; one that raced it is refused by
    // the store.
    exactly_one_winner(
        &answers,
        StatusCode::CREATED,
        &["CONFIG_VALIDATION_ERROR", "CONFLICT"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_many_updates_with_the_same_if_match_wins() {
    let app = app_with(|_| {}).await;
    let pattern = format!("/{}/*", unique("update-race"));
    let created = app
        .create_config(&app.admin, "CacheRule", cache_rule(&pattern))
        .await;
    let id = created["configurationId"].as_str().expect("id").to_string();
    let requests = (0..RACERS)
        .map(|i| {
            let mut content = cache_rule(&pattern);
            content["ttl"] = json!(100 + i);
            (
                Method::PUT,
                format!("/api/v1/configurations/{id}"),
                Some(("if-match", "\"1.0.0\"".to_string())),
                json!({"content": content, "changeDescription": format!("racer {i}")}),
            )
        })
        .collect();
    let answers = race(&app, requests).await;
    exactly_one_winner(&answers, StatusCode::OK, &["CONFLICT"]);
    let (_, _, versions) = app
        .get(&format!("/api/v1/configurations/{id}/versions"), &app.admin)
        .await;
    assert_eq!(versions["total"], 2, "{versions}");
}

/// A registered, healthy edge whose endpoint accepts connections and never answers, so that a
/// deployment to it stays running; the listener must outlive the test.
async fn silent_edge(app: &TestApp) -> (String, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let location_id = unique("silent");
    let mut body = common::edge_body(&location_id);
    body["endpoint"] = json!(format!("http://{address}/"));
    let (status, _, created) = app
        .request(
            Method::POST,
            "/api/v1/edge-locations",
            Some(&app.admin),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["agentToken"].as_str().expect("agentToken");
    let (status, _, beat) = app
        .request(
            Method::POST,
            &format!("/api/v1/edge-locations/{location_id}/heartbeat"),
            Some(token),
            Some(json!({"health": {"isHealthy": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    (location_id, listener)
}

/// Creates and approves a configuration on its own pattern; answers its id.
async fn approved_configuration(app: &TestApp) -> String {
    let created = app
        .create_config(
            &app.admin,
            "CacheRule",
            cache_rule(&format!("/{}/*", unique("deployable"))),
        )
        .await;
    let id = created["configurationId"].as_str().expect("id").to_string();
    let (status, _, body) = app
        .request(
            Method::POST,
            &format!("/api/v1/configurations/{id}/approve"),
            Some(&app.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

fn deploy(configuration_id: &str, location_id: &str) -> Racer {
    (
        Method::POST,
        "/api/v1/deployments".into(),
        None,
        json!({
            "configurationId": configuration_id,
            "strategy": "DirectDeployment",
            "targetLocations": [location_id],
        }),
    )
}

/// The deployments the store lists as not finished.
async fn unfinished(app: &TestApp) -> usize {
    let deployments = app
        .state
        .store()
        .read(|r| r.deployments())
        .await
        .expect("deployments");
    deployments
        .iter()
        .filter(|d| !d.status.is_terminal())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_many_deployments_fits_a_limit_of_one() {
    let app = app_with(|settings| settings.rollout.max_concurrent_deployments = 1).await;
    let (location_id, _listener) = silent_edge(&app).await;
    let mut requests = Vec::new();
    for _ in 0..RACERS {
        let id = approved_configuration(&app).await;
        requests.push(deploy(&id, &location_id));
    }
    let answers = race(&app, requests).await;
    exactly_one_winner(&answers, StatusCode::ACCEPTED, &["CONFLICT"]);
    assert_eq!(unfinished(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_many_deployments_of_one_configuration_wins() {
    let app = app_with(|_| {}).await;
    let (location_id, _listener) = silent_edge(&app).await;
    let id = approved_configuration(&app).await;
    let requests = (0..RACERS).map(|_| deploy(&id, &location_id)).collect();
    let answers = race(&app, requests).await;
    exactly_one_winner(&answers, StatusCode::ACCEPTED, &["CONFLICT"]);
    assert_eq!(unfinished(&app).await, 1);
}
