//! A simulated fleet of the nine POPs against a fake control plane: registration (create, or
//! rotate and update when the edge exists), heartbeats, degradation by pushed metadata, and
//! down edges.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use edgeplane::edge::{Fleet, SimulateOptions};
use edgeplane::fleet::{PushClient, PushError, PushOptions, PushOutcome};
use edgeplane::model::ConfigType;
use edgeplane::protocol::{Heartbeat, PushRequest};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token";

#[derive(Default)]
struct ControlPlane {
    created: Mutex<Vec<Value>>,
    updated: Mutex<Vec<(String, Value)>>,
    /// Edges that exist before the fleet starts.
    existing: Vec<String>,
    tokens: Mutex<HashMap<String, String>>,
    heartbeats: Mutex<Vec<(String, Heartbeat)>>,
}

type Shared = Arc<ControlPlane>;

fn is_admin(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer admin-token")
}

async fn create(
    State(cp): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    if !is_admin(&headers) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({})));
    }
    let id = body["locationId"].as_str().unwrap_or_default().to_owned();
    if cp.existing.contains(&id) {
        let error = json!({"error": {"code": "CONFLICT", "message": "exists"}});
        return (StatusCode::CONFLICT, axum::Json(error));
    }
    cp.created.lock().unwrap().push(body.clone());
    let token = format!("created-{id}");
    cp.tokens.lock().unwrap().insert(id, token.clone());
    let mut reply = body;
    reply["agentToken"] = json!(token);
    (StatusCode::CREATED, axum::Json(reply))
}

async fn rotate(
    State(cp): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    if !is_admin(&headers) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({})));
    }
    let token = format!("rotated-{id}");
    cp.tokens.lock().unwrap().insert(id.clone(), token.clone());
    (
        StatusCode::OK,
        axum::Json(json!({"locationId": id, "agentToken": token})),
    )
}

async fn update(
    State(cp): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    if !is_admin(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    cp.updated.lock().unwrap().push((id, body));
    StatusCode::OK
}

async fn heartbeat(
    State(cp): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(beat): axum::Json<Heartbeat>,
) -> StatusCode {
    let expected = cp
        .tokens
        .lock()
        .unwrap()
        .get(&id)
        .map(|t| format!("Bearer {t}"));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != expected.as_deref() {
        return StatusCode::UNAUTHORIZED;
    }
    cp.heartbeats.lock().unwrap().push((id, beat));
    StatusCode::OK
}

async fn control_plane(existing: &[&str]) -> (String, Shared) {
    let cp = Arc::new(ControlPlane {
        existing: existing.iter().map(|s| s.to_string()).collect(),
        ..ControlPlane::default()
    });
    let app = axum::Router::new()
        .route("/api/v1/edge-locations", post(create))
        .route("/api/v1/edge-locations/{id}", put(update))
        .route("/api/v1/edge-locations/{id}/token", post(rotate))
        .route("/api/v1/edge-locations/{id}/heartbeat", post(heartbeat))
        .with_state(cp.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, cp)
}

fn error_rate(beat: &Heartbeat) -> Option<f64> {
    let m = beat.metrics.as_ref()?;
    Some((m.errors4xx + m.errors5xx) as f64 * 100.0 / m.requests as f64)
}

fn hit_rate(beat: &Heartbeat) -> Option<f64> {
    let m = beat.metrics.as_ref()?;
    Some(m.cache_hits as f64 * 100.0 / m.requests as f64)
}

/// Polls `cp`'s heartbeats until one matches, within a bounded deadline.
async fn wait_for_heartbeat(cp: &Shared, what: &str, matches: impl Fn(&str, &Heartbeat) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if cp
            .heartbeats
            .lock()
            .unwrap()
            .iter()
            .any(|(id, b)| matches(id, b))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no heartbeat: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn nine_pops_register_heartbeat_degrade_and_go_down() {
    let (url, cp) = control_plane(&["eu-west-1"]).await;
    let fleet = Fleet::start(SimulateOptions {
        control_plane: url,
        admin_token: ADMIN.into(),
        edges: 9,
        heartbeat_interval: Duration::from_millis(200),
        seed: 42,
        down: vec!["ap-south-1".into()],
        ..SimulateOptions::default()
    })
    .await
    .unwrap();

    // Eight created, the existing one had its token rotated and its endpoint updated.
    let created = cp.created.lock().unwrap().clone();
    let mut ids: Vec<&str> = created
        .iter()
        .filter_map(|b| b["locationId"].as_str())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "ap-east-1",
            "ap-south-1",
            "ap-southeast-1",
            "eu-central-1",
            "eu-north-1",
            "us-central-1",
            "us-east-1",
            "us-west-1"
        ]
    );
    let frankfurt = created
        .iter()
        .find(|b| b["locationId"] == "eu-central-1")
        .unwrap();
    assert_eq!(frankfurt["countryCode"], "DE");
    assert_eq!(frankfurt["region"], "Europe");
    assert_eq!(frankfurt["city"], "Frankfurt");
    assert_eq!(frankfurt["type"], "EdgePOP");
    let endpoints: BTreeMap<String, _> = fleet
        .endpoints()
        .into_iter()
        .map(|e| (e.location_id.clone(), e))
        .collect();
    assert_eq!(endpoints.len(), 9);
    let london = &endpoints["eu-west-1"];
    assert_eq!(london.token, "rotated-eu-west-1");
    let updated = cp.updated.lock().unwrap().clone();
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].0, "eu-west-1");
    assert_eq!(updated[0].1["endpoint"], london.endpoint.as_str());
    assert!(updated[0].1.get("locationId").is_none());

    // Baseline metrics from a healthy edge.
    wait_for_heartbeat(&cp, "baseline from eu-west-1", |id, b| {
        id == "eu-west-1" && error_rate(b).is_some_and(|e| e < 1.0)
    })
    .await;

    // A version carrying degradation metadata makes the edge that runs it report it.
    let client = PushClient::new(PushOptions {
        timeout: Duration::from_secs(2),
        retries: 0,
        ..PushOptions::default()
    })
    .unwrap();
    let bad = PushRequest::apply(
        "2.0.0",
        ConfigType::CacheRule,
        json!({"pathPattern": "/", "ttl": 0, "cacheControl": "no-store"}),
        BTreeMap::from([
            ("simulate.errorRate".to_owned(), "9.0".to_owned()),
            ("simulate.cacheHitRate".to_owned(), "50.0".to_owned()),
        ]),
    );
    let virginia = &endpoints["us-east-1"];
    let outcome = client
        .push(&virginia.endpoint, &virginia.token, "config-a", &bad)
        .await
        .unwrap();
    assert!(matches!(outcome, PushOutcome::Acked { ref version, .. } if version == "2.0.0"));
    assert_eq!(
        fleet.active_version("us-east-1", "config-a").as_deref(),
        Some("2.0.0")
    );
    wait_for_heartbeat(&cp, "degraded us-east-1", |id, b| {
        id == "us-east-1"
            && b.active_configurations.get("config-a").map(String::as_str) == Some("2.0.0")
            && error_rate(b).is_some_and(|e| e > 6.0)
            && hit_rate(b).is_some_and(|h| h < 60.0)
    })
    .await;
    assert_eq!(
        fleet.history("us-east-1"),
        vec![("config-a".to_owned(), "2.0.0".to_owned())]
    );
    assert!(fleet.history("us-west-1").is_empty());

    // The edge protocol's auth rule holds on simulated edges too.
    let refused = client
        .push(&virginia.endpoint, &london.token, "config-a", &bad)
        .await;
    assert!(
        matches!(refused, Err(PushError::Unauthorized { .. })),
        "{refused:?}"
    );

    // A down edge refuses pushes and sends no heartbeats.
    let mumbai = &endpoints["ap-south-1"];
    let refused = client
        .push(&mumbai.endpoint, &mumbai.token, "config-a", &bad)
        .await;
    assert!(
        matches!(refused, Err(PushError::Status { status: 503, .. })),
        "{refused:?}"
    );
    assert_eq!(fleet.heartbeats_sent("ap-south-1"), 0);
    assert!(
        !cp.heartbeats
            .lock()
            .unwrap()
            .iter()
            .any(|(id, _)| id == "ap-south-1")
    );

    // Brought back up, it takes the push.
    assert!(fleet.set_down("ap-south-1", false));
    let outcome = client
        .push(&mumbai.endpoint, &mumbai.token, "config-a", &bad)
        .await
        .unwrap();
    assert!(matches!(outcome, PushOutcome::Acked { .. }));

    // A fleet-wide NACK rate of 1 refuses everything, and rollback goes back.
    fleet.set_nack_rate(1.0);
    let good = PushRequest::apply(
        "2.1.0",
        ConfigType::CacheRule,
        json!({"ttl": 1}),
        BTreeMap::new(),
    );
    let outcome = client
        .push(&virginia.endpoint, &virginia.token, "config-a", &good)
        .await
        .unwrap();
    assert!(matches!(outcome, PushOutcome::Nacked { .. }), "{outcome:?}");
    fleet.set_nack_rate(0.0);
    assert!(matches!(
        client
            .push(&virginia.endpoint, &virginia.token, "config-a", &good)
            .await,
        Ok(PushOutcome::Acked { .. })
    ));
    let back = client
        .rollback(&virginia.endpoint, &virginia.token, "config-a", None)
        .await
        .unwrap();
    assert!(
        matches!(back, PushOutcome::Acked { ref version, .. } if version == "2.0.0"),
        "{back:?}"
    );
    let listed = client
        .active(&virginia.endpoint, &virginia.token)
        .await
        .unwrap();
    assert_eq!(listed.location_id, "us-east-1");
    assert_eq!(listed.versions()["config-a"], "2.0.0");

    fleet.shutdown().await;
}

#[tokio::test]
async fn a_simulated_edge_refuses_pushes_and_rollbacks_from_a_lower_term() {
    let (url, _cp) = control_plane(&[]).await;
    let fleet = Fleet::start(SimulateOptions {
        control_plane: url,
        admin_token: ADMIN.into(),
        edges: 1,
        heartbeat_interval: Duration::from_secs(3600),
        ..SimulateOptions::default()
    })
    .await
    .unwrap();
    let edge = fleet.endpoints().remove(0);
    let client = PushClient::new(PushOptions {
        timeout: Duration::from_secs(2),
        retries: 2,
        ..PushOptions::default()
    })
    .unwrap();
    let mut seen_terms = client.seen_terms();
    let push = |version: &str| {
        PushRequest::apply(
            version,
            ConfigType::CacheRule,
            json!({"pathPattern": "/", "ttl": 60, "cacheControl": "public"}),
            BTreeMap::new(),
        )
    };

    client.set_term(3);
    let outcome = client
        .push(&edge.endpoint, &edge.token, "config-a", &push("1.0.0"))
        .await;
    assert!(
        matches!(outcome, Ok(PushOutcome::Acked { .. })),
        "{outcome:?}"
    );
    assert_eq!(fleet.term_seen(&edge.location_id), Some(3));

    // A deposed primary (term 2) is refused, push and rollback alike, and learns term 3.
    client.set_term(2);
    let refused = client
        .push(&edge.endpoint, &edge.token, "config-a", &push("1.1.0"))
        .await;
    assert!(
        matches!(
            refused,
            Err(PushError::StaleTerm {
                ours: 2,
                seen: 3,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(refused.unwrap_err().kind(), "stale_term");
    assert!(seen_terms.has_changed().unwrap());
    assert_eq!(*seen_terms.borrow_and_update(), 3);
    let refused = client
        .rollback(&edge.endpoint, &edge.token, "config-a", None)
        .await;
    assert!(
        matches!(refused, Err(PushError::StaleTerm { seen: 3, .. })),
        "{refused:?}"
    );
    assert_eq!(
        fleet
            .active_version(&edge.location_id, "config-a")
            .as_deref(),
        Some("1.0.0"),
        "nothing of a refused push is applied"
    );

    // The new primary's higher term goes through.
    client.set_term(4);
    let outcome = client
        .push(&edge.endpoint, &edge.token, "config-a", &push("1.2.0"))
        .await;
    assert!(
        matches!(outcome, Ok(PushOutcome::Acked { .. })),
        "{outcome:?}"
    );
    assert_eq!(fleet.term_seen(&edge.location_id), Some(4));
    fleet.shutdown().await;
}
