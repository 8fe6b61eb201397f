//! Logins and sessions that cannot be turned against their users: login budgets per
//! (username, address), tokens that end when a password or role changes, the current
//! password for one's own change, case-insensitive usernames, common passwords refused,
//! bounded password hashing, token lifetimes, and caps on event streams.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use common::{TestApp, USER_PASSWORD, assert_error, unique};
use edgeplane::config::LimitSettings;
use edgeplane::model::{Role, Timestamp, User};
use edgeplane::store::{Command, CommandEnvelope};

const LOGIN: &str = "/api/v1/authentication/login";

/// A login from the client address `from`.
async fn login_from(
    app: &TestApp,
    from: &str,
    username: &str,
    password: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(LOGIN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap();
    let address: SocketAddr = format!("{from}:40000").parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(address));
    app.send(request).await
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn set_password(app: &TestApp, token: &str, username: &str, body: Value) -> StatusCode {
    app.request(
        Method::PUT,
        &format!("/api/v1/users/{username}/password"),
        Some(token),
        Some(body),
    )
    .await
    .0
}

#[tokio::test]
async fn guessing_from_one_address_does_not_lock_the_owner_out_from_another() {
    let app = TestApp::with_limits(LimitSettings {
        login_attempts_per_minute: 10,
        ..common::generous_limits()
    })
    .await;
    let alice = app.create_user("Operator").await;
    for _ in 0..10 {
        let wrong = login_from(&app, "192.0.2.10", &alice, "wrong-password-123").await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    // Address A is limited now, even with the right password and another spelling.
    let limited = login_from(&app, "192.0.2.10", &alice.to_uppercase(), USER_PASSWORD).await;
    assert_error(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMIT_EXCEEDED",
    );
    assert!(limited.1.contains_key(header::RETRY_AFTER));
    // Alice from address B gets in.
    let (status, _, body) = login_from(&app, "198.51.100.7", &alice, USER_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["username"], alice.as_str());
}

#[tokio::test]
async fn a_users_tokens_end_when_the_password_or_role_changes() {
    let app = TestApp::new().await;
    let alice = app.create_user("Developer").await;
    let first = app.login(&alice, USER_PASSWORD).await;
    let second = app.login(&alice, USER_PASSWORD).await;
    let configurations = "/api/v1/configurations";
    assert_eq!(app.get(configurations, &first).await.0, StatusCode::OK);

    // Her own change, with the current password: every earlier token is refused after it.
    let changed = "a-freshly-chosen-password";
    let status = set_password(
        &app,
        &first,
        &alice,
        json!({"password": changed, "currentPassword": USER_PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for old in [&first, &second] {
        let refused = app.get(configurations, old).await;
        assert_error(&refused, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let third = app.login(&alice, changed).await;
    assert_eq!(app.get(configurations, &third).await.0, StatusCode::OK);

    // An Admin's reset ends her sessions too.
    let status = set_password(&app, &app.admin, &alice, json!({"password": USER_PASSWORD})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let refused = app.get(configurations, &third).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // A role change (the user removed and made again with another role) ends them too.
    let fourth = app.login(&alice, USER_PASSWORD).await;
    let (status, _, _) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/users/{alice}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = app
        .request(
            Method::POST,
            "/api/v1/users",
            Some(&app.admin),
            Some(json!({"username": alice, "password": USER_PASSWORD, "role": "Admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let refused = app.get("/api/v1/users", &fourth).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(
        refused.2["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("token revoked"),
        "{}",
        refused.2
    );
}

#[tokio::test]
async fn an_admin_changing_their_own_password_gives_the_current_one() {
    let app = TestApp::new().await;
    let admin = app.create_user("Admin").await;
    let token = app.login(&admin, USER_PASSWORD).await;
    let new_password = "an-admins-new-passphrase";
    let without = app
        .request(
            Method::PUT,
            &format!("/api/v1/users/{admin}/password"),
            Some(&token),
            Some(json!({"password": new_password})),
        )
        .await;
    assert_error(&without, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(without.2["error"]["details"][0]["field"], "currentPassword");
    // Another spelling of the own name is still one's own account.
    let status = set_password(
        &app,
        &token,
        &admin.to_uppercase(),
        json!({"password": new_password, "currentPassword": "not-the-password-at-all"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let status = set_password(
        &app,
        &token,
        &admin,
        json!({"password": new_password, "currentPassword": USER_PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.login(&admin, new_password).await;
    // Resetting someone else's needs no current password.
    let other = app.create_user("Viewer").await;
    let admin_token = app.login(&admin, new_password).await;
    let status = set_password(
        &app,
        &admin_token,
        &other,
        json!({"password": "a-reset-by-an-admin"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn usernames_are_one_user_in_any_case_and_older_capitalised_users_keep_working() {
    let app = TestApp::new().await;
    let users = "/api/v1/users";
    let name = unique("Carol");
    let (status, _, created) = app
        .request(
            Method::POST,
            users,
            Some(&app.admin),
            Some(json!({"username": name, "password": USER_PASSWORD, "role": "Viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["username"], name.to_lowercase());
    let taken = app
        .request(
            Method::POST,
            users,
            Some(&app.admin),
            Some(
                json!({"username": name.to_uppercase(), "password": USER_PASSWORD, "role": "Admin"}),
            ),
        )
        .await;
    assert_error(&taken, StatusCode::CONFLICT, "CONFLICT");
    let token = app.login(&name.to_uppercase(), USER_PASSWORD).await;
    assert_eq!(claims(&token)["sub"], name.to_lowercase());

    // A user stored with capitals before names were normalised.
    let legacy = unique("Dave");
    let now = Timestamp::now();
    app.state
        .store()
        .apply(CommandEnvelope::new(
            "admin",
            "",
            Command::CreateUser {
                user: User {
                    username: legacy.clone(),
                    role: Role::Viewer,
                    password_hash: edgeplane::auth::hash_password(USER_PASSWORD).unwrap(),
                    created_at: now,
                    updated_at: now,
                },
            },
        ))
        .await
        .unwrap();
    let token = app.login(&legacy.to_lowercase(), USER_PASSWORD).await;
    assert_eq!(claims(&token)["sub"], legacy.as_str());
    assert_eq!(
        app.get("/api/v1/configurations", &token).await.0,
        StatusCode::OK
    );
    let taken = app
        .request(
            Method::POST,
            users,
            Some(&app.admin),
            Some(json!({"username": legacy.to_lowercase(), "password": USER_PASSWORD, "role": "Admin"})),
        )
        .await;
    assert_error(&taken, StatusCode::CONFLICT, "CONFLICT");
    let (status, _, _) = app
        .request(
            Method::DELETE,
            &format!("{users}/{}", legacy.to_uppercase()),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn common_passwords_are_refused_with_a_clear_400() {
    let app = TestApp::new().await;
    for weak in ["password1234", "qwertyuiop123", "123456789012"] {
        let name = unique("erin");
        let refused = app
            .request(
                Method::POST,
                "/api/v1/users",
                Some(&app.admin),
                Some(json!({"username": name, "password": weak, "role": "Viewer"})),
            )
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        let detail = &refused.2["error"]["details"][0];
        assert_eq!(detail["field"], "password", "{weak}");
        assert!(
            detail["message"].as_str().unwrap().contains("too common"),
            "{weak}: {detail}"
        );
    }
    let name = app.create_user("Viewer").await;
    let refused = app
        .request(
            Method::PUT,
            &format!("/api/v1/users/{name}/password"),
            Some(&app.admin),
            Some(json!({"password": format!("{name}{name}")})),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

#[tokio::test]
async fn logins_beyond_the_hashing_slots_wait_or_get_429_never_an_error() {
    let app = TestApp::with_settings(|settings| {
        settings.auth.max_concurrent_hashes = 1;
        settings.auth.hash_queue_timeout = Duration::from_millis(1);
    })
    .await;
    let name = app.create_user("Viewer").await;
    let answers = futures_util::future::join_all((0..12).map(|n| {
        let (app, name) = (&app, &name);
        async move {
            let password = if n % 2 == 0 {
                USER_PASSWORD
            } else {
                "wrong-password-123"
            };
            let user = if n % 3 == 0 { "nobody-at-all" } else { name };
            login_from(app, &format!("192.0.2.{n}"), user, password).await
        }
    }))
    .await;
    for answer in &answers {
        match answer.0 {
            StatusCode::OK | StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert_error(answer, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED");
                assert!(answer.1.contains_key(header::RETRY_AFTER));
            }
            other => panic!("{other}: {}", answer.2),
        }
    }
}

#[tokio::test]
async fn token_lifetimes_are_capped_and_edge_tokens_last_the_configured_time() {
    let app = TestApp::with_settings(|settings| {
        settings.auth.token_ttl = Duration::from_secs(2 * 3600);
        settings.auth.edge_token_ttl = Duration::from_secs(3 * 24 * 3600);
    })
    .await;
    let token = app
        .login(&app.create_user("Viewer").await, USER_PASSWORD)
        .await;
    let login = claims(&token);
    assert_eq!(
        login["exp"].as_i64().unwrap() - login["iat"].as_i64().unwrap(),
        2 * 3600
    );

    let location = unique("tok");
    let (_, edge_token) = app.create_edge(&location).await;
    let edge = claims(&edge_token);
    assert_eq!(
        edge["exp"].as_i64().unwrap() - edge["iat"].as_i64().unwrap(),
        3 * 24 * 3600
    );
    // Rotation gives a fresh token of the same lifetime and ends the old one.
    let (status, _, rotated) = app
        .request(
            Method::POST,
            &format!("/api/v1/edge-locations/{location}/token"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let fresh = rotated["agentToken"].as_str().expect("agentToken");
    let fresh = claims(fresh);
    assert_eq!(
        fresh["exp"].as_i64().unwrap() - fresh["iat"].as_i64().unwrap(),
        3 * 24 * 3600
    );
    let heartbeat = format!("/api/v1/edge-locations/{location}/heartbeat");
    let old = app
        .request(Method::POST, &heartbeat, Some(&edge_token), Some(json!({})))
        .await;
    assert_error(&old, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // A login lifetime beyond the maximum does not start.
    let error = edgeplane::config::Settings::load(
        None,
        [
            ("EDGEPLANE_AUTH_TOKEN_TTL".to_string(), "90d".to_string()),
            (
                "EDGEPLANE_AUTH_MAX_TOKEN_TTL".to_string(),
                "30d".to_string(),
            ),
        ],
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("auth.token_ttl"), "{error}");
}

#[test]
fn offline_tokens_are_capped_by_the_maximum_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = edgeplane::config::Settings::default();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.auth.max_token_ttl = Duration::from_secs(24 * 3600);
    edgeplane::cli::users::add(&settings, "Robot", Role::Operator, "a-robot-passphrase-1").unwrap();
    let error =
        edgeplane::cli::users::token(&settings, "robot", Duration::from_secs(1_000_000 * 86_400))
            .unwrap_err()
            .to_string();
    assert!(error.contains("auth.max_token_ttl"), "{error}");
    let token =
        edgeplane::cli::users::token(&settings, "ROBOT", Duration::from_secs(3600)).unwrap();
    let minted = claims(&token);
    assert_eq!(minted["sub"], "robot");
    assert!(minted["stm"].is_string(), "stamped like a login: {minted}");
}

/// A deployment the engine never hears of: it stays Pending, so its event stream stays open.
async fn pending_deployment(app: &TestApp) -> String {
    use edgeplane::model::{CreateDeployment, RollbackConfig};
    let configuration_id = unique("config-streams");
    common::store_cache_rule(
        app.state.store(),
        &configuration_id,
        &format!("/{configuration_id}/*"),
        "1.0.0",
        Timestamp::now(),
    )
    .unwrap();
    let deployment_id = unique("deploy-streams");
    let deployment = CreateDeployment {
        configuration_id,
        target_locations: vec!["nowhere-1".into()],
        ..CreateDeployment::default()
    }
    .into_deployment(
        deployment_id.clone(),
        "1.0.0".into(),
        "admin".into(),
        Timestamp::now(),
        &RollbackConfig::default(),
    )
    .unwrap();
    app.state
        .store()
        .apply(CommandEnvelope::new(
            "admin",
            "",
            Command::CreateDeployment {
                deployment: Box::new(deployment),
                max_concurrent: 100,
            },
        ))
        .await
        .unwrap();
    deployment_id
}

#[tokio::test]
async fn event_streams_are_capped_per_user_and_in_all_and_given_back_when_clients_leave() {
    use tower::ServiceExt;
    let app = TestApp::with_settings(|settings| {
        settings.server.max_event_streams = 3;
        settings.server.max_event_streams_per_user = 2;
    })
    .await;
    let deployment = pending_deployment(&app).await;
    let path = format!("/api/v1/deployments/{deployment}/events");
    let open = |token: String| {
        let (router, path) = (app.router.clone(), path.clone());
        async move {
            let request = Request::builder()
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            router.oneshot(request).await.unwrap()
        }
    };
    let viewer = app.user_token("Viewer").await;
    let first = open(viewer.clone()).await;
    let second = open(viewer.clone()).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = app.get(&path, &viewer).await;
    assert_error(&third, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED");
    let other = app.user_token("Viewer").await;
    let other_first = open(other.clone()).await;
    assert_eq!(other_first.status(), StatusCode::OK);
    let full = app.get(&path, &other).await;
    assert_error(
        &full,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );

    // The clients leave: their streams' tasks notice at once, with no event to send.
    drop((first, second, other_first));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.state.event_streams().count("").0 > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "streams were not given back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.state.event_streams().subjects(), 0);
    let again = open(viewer).await;
    assert_eq!(again.status(), StatusCode::OK);
}
