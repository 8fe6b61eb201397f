//! Who may do what: the role matrix over every route, every kind of bad token, rate limits,
//! user management and per-object authorization of edge heartbeats.

mod common;

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use common::{TestApp, USER_PASSWORD, assert_error, cache_rule, unique};
use edgeplane::auth::TokenIssuer;
use edgeplane::config::LimitSettings;
use edgeplane::model::{Role, Timestamp};

/// Who calls, in the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Nobody,
    Edge,
    Viewer,
    Developer,
    Operator,
    Admin,
}

/// Who a route lets in.
#[derive(Clone, Copy, Debug)]
enum Allowed {
    /// No token needed.
    Public,
    /// This role or a higher one (Edge tokens never).
    AtLeast(Caller),
    /// The edge the route names, with its own token, and Admins.
    OwnEdgeOrAdmin,
    /// This role or a higher one gets past authorization; the object itself may be missing
    /// or not in a state for the action (a 4xx other than 401/403).
    Reaches(Caller),
    /// Nodes of the cluster, with the cluster secret: every token is refused (401).
    ClusterPeer,
}

impl Allowed {
    fn admits(self, caller: Caller) -> bool {
        let rank = |c: Caller| match c {
            Caller::Viewer => 1,
            Caller::Developer => 2,
            Caller::Operator => 3,
            Caller::Admin => 4,
            Caller::Nobody | Caller::Edge => 0,
        };
        match self {
            Allowed::Public => true,
            Allowed::AtLeast(needed) | Allowed::Reaches(needed) => {
                rank(caller) > 0 && rank(caller) >= rank(needed)
            }
            Allowed::ClusterPeer => false,
            Allowed::OwnEdgeOrAdmin => matches!(caller, Caller::Edge | Caller::Admin),
        }
    }
}

/// Objects made fresh for each case, so that no case depends on another.
struct Fixture {
    configuration_id: String,
    location_id: String,
    edge_token: String,
    victim: String,
}

/// The role matrix: every route of the router against every kind of caller.
#[tokio::test]
async fn every_route_admits_exactly_its_roles() {
    use Allowed::*;
    use Caller::*;
    let app = TestApp::new().await;
    // A separate author, so that the admin approving is not the author (four-eyes).
    let author = app.user_token("Developer").await;
    let viewer = app.user_token("Viewer").await;
    let developer = app.user_token("Developer").await;
    let operator = app.user_token("Operator").await;

    let password = json!({"password": "a-new-password-123"});
    let routes: Vec<(Method, &str, Option<Value>, Allowed)> = vec![
        (Method::GET, "/health", None, Public),
        (Method::GET, "/ready", None, Public),
        (Method::GET, "/metrics", None, Public),
        (Method::GET, "/api/v1/openapi.json", None, Public),
        (
            Method::POST,
            "/api/v1/authentication/login",
            Some(json!({"username": "admin", "password": common::ADMIN_PASSWORD})),
            Public,
        ),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "{new}", "password": USER_PASSWORD, "role": "Viewer"})),
            AtLeast(Admin),
        ),
        (Method::GET, "/api/v1/users", None, AtLeast(Admin)),
        (
            Method::DELETE,
            "/api/v1/users/{victim}",
            None,
            AtLeast(Admin),
        ),
        (
            Method::PUT,
            "/api/v1/users/{victim}/password",
            Some(password),
            AtLeast(Admin),
        ),
        (
            Method::POST,
            "/api/v1/configurations",
            Some(json!({"name": "{new}", "type": "CacheRule", "content": "{content}"})),
            AtLeast(Developer),
        ),
        (Method::GET, "/api/v1/configurations", None, AtLeast(Viewer)),
        (
            Method::POST,
            "/api/v1/configurations/validate",
            Some(json!({"type": "CacheRule", "content": "{content}"})),
            AtLeast(Developer),
        ),
        (
            Method::GET,
            "/api/v1/configurations/{config}",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::PUT,
            "/api/v1/configurations/{config}",
            Some(json!({"content": "{content}"})),
            AtLeast(Developer),
        ),
        (
            Method::DELETE,
            "/api/v1/configurations/{config}",
            None,
            AtLeast(Admin),
        ),
        (
            Method::POST,
            "/api/v1/configurations/{config}/validate",
            None,
            AtLeast(Developer),
        ),
        (
            Method::POST,
            "/api/v1/configurations/{config}/approve",
            None,
            AtLeast(Admin),
        ),
        (
            Method::GET,
            "/api/v1/configurations/{config}/versions",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/configurations/{config}/versions/1.0.0",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::PUT,
            "/api/v1/configurations/{config}/versions/1.0.0/tags/production",
            None,
            AtLeast(Operator),
        ),
        (
            Method::GET,
            "/api/v1/configurations/{config}/diff",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/configurations/{config}/conflicts",
            None,
            AtLeast(Viewer),
        ),
        (Method::GET, "/api/v1/schemas", None, AtLeast(Viewer)),
        (
            Method::GET,
            "/api/v1/schemas/CacheRule",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::POST,
            "/api/v1/edge-locations",
            Some(json!("{edge-body}")),
            AtLeast(Admin),
        ),
        (Method::GET, "/api/v1/edge-locations", None, AtLeast(Viewer)),
        (
            Method::GET,
            "/api/v1/edge-locations/{edge}",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::PUT,
            "/api/v1/edge-locations/{edge}",
            Some(json!("{edge-update}")),
            AtLeast(Admin),
        ),
        (
            Method::DELETE,
            "/api/v1/edge-locations/{edge}",
            None,
            AtLeast(Admin),
        ),
        (
            Method::POST,
            "/api/v1/edge-locations/{edge}/heartbeat",
            Some(json!({"health": {"isHealthy": true}})),
            OwnEdgeOrAdmin,
        ),
        (
            Method::POST,
            "/api/v1/edge-locations/{edge}/token",
            None,
            AtLeast(Admin),
        ),
        (
            Method::DELETE,
            "/api/v1/edge-locations/{edge}/quarantine",
            None,
            AtLeast(Admin),
        ),
        (
            Method::GET,
            "/api/v1/edge-locations/{edge}/metrics",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::POST,
            "/api/v1/configurations/{config}/versions/1.0.0/deploy",
            None,
            Reaches(Operator),
        ),
        (
            Method::POST,
            "/api/v1/deployments",
            Some(
                json!({"configurationId": "{config-id}", "strategy": "DirectDeployment", "targetRegions": ["North America"]}),
            ),
            Reaches(Operator),
        ),
        (Method::GET, "/api/v1/deployments", None, AtLeast(Viewer)),
        (
            Method::GET,
            "/api/v1/deployments/{deployment}",
            None,
            Reaches(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/deployments/{deployment}/edge-locations",
            None,
            Reaches(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/deployments/{deployment}/events",
            None,
            Reaches(Viewer),
        ),
        (
            Method::POST,
            "/api/v1/deployments/{deployment}/promote",
            None,
            Reaches(Operator),
        ),
        (
            Method::POST,
            "/api/v1/deployments/{deployment}/pause",
            None,
            Reaches(Operator),
        ),
        (
            Method::POST,
            "/api/v1/deployments/{deployment}/resume",
            None,
            Reaches(Operator),
        ),
        (
            Method::POST,
            "/api/v1/deployments/{deployment}/rollback",
            Some(json!({"reason": "matrix"})),
            Reaches(Operator),
        ),
        (
            Method::POST,
            "/api/v1/deployments/{deployment}/approve-next-region",
            None,
            Reaches(Operator),
        ),
        (Method::GET, "/api/v1/freeze", None, AtLeast(Viewer)),
        (
            Method::POST,
            "/api/v1/freeze",
            Some(json!({"reason": "matrix"})),
            AtLeast(Admin),
        ),
        (Method::DELETE, "/api/v1/freeze", None, AtLeast(Admin)),
        (
            Method::GET,
            "/api/v1/metrics/edge-locations/{edge}",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/metrics/configurations/{config}",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/metrics/regions/{region}",
            None,
            Reaches(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/metrics/deployments/{deployment}",
            None,
            Reaches(Viewer),
        ),
        (
            Method::GET,
            "/api/v1/metrics/thresholds",
            None,
            AtLeast(Viewer),
        ),
        (
            Method::PUT,
            "/api/v1/metrics/thresholds",
            Some(json!({})),
            AtLeast(Admin),
        ),
        (Method::GET, "/api/v1/audit", None, AtLeast(Admin)),
        (
            Method::GET,
            "/api/v1/cluster/snapshot",
            None,
            AtLeast(Admin),
        ),
        (Method::GET, "/api/v1/cluster", None, AtLeast(Viewer)),
        // A single node is already primary: promote reaches the handler, which refuses.
        (
            Method::POST,
            "/api/v1/cluster/promote",
            None,
            Reaches(Admin),
        ),
        (Method::GET, "/api/v1/cluster/log", None, ClusterPeer),
        (Method::GET, "/api/v1/cluster/log/status", None, ClusterPeer),
        (
            Method::GET,
            "/api/v1/cluster/log/snapshot",
            None,
            ClusterPeer,
        ),
        (
            Method::GET,
            "/api/v1/cluster/log/secret-key",
            None,
            ClusterPeer,
        ),
    ];

    for (method, template, body, allowed) in &routes {
        for caller in [Nobody, Edge, Viewer, Developer, Operator, Admin] {
            let fixture = Fixture {
                configuration_id: app
                    .create_config(&author, "CacheRule", cache_rule(&unique("/matrix")))
                    .await["configurationId"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                location_id: unique("edge"),
                edge_token: String::new(),
                victim: String::new(),
            };
            let (_, edge_token) = app.create_edge(&fixture.location_id).await;
            let victim = if template.contains("{victim}") {
                app.create_user("Viewer").await
            } else {
                String::new()
            };
            let fixture = Fixture {
                edge_token,
                victim,
                ..fixture
            };
            let token = match caller {
                Nobody => None,
                Edge => Some(fixture.edge_token.as_str()),
                Viewer => Some(viewer.as_str()),
                Developer => Some(developer.as_str()),
                Operator => Some(operator.as_str()),
                Admin => Some(app.admin.as_str()),
            };
            let path = template
                .replace("{config}", &fixture.configuration_id)
                .replace("{edge}", &fixture.location_id)
                .replace("{victim}", &fixture.victim)
                .replace("{deployment}", "deploy-missing")
                .replace("{region}", "Nowhere");
            let body = body.as_ref().map(|b| fill(b, &fixture));
            let response = app.request(method.clone(), &path, token, body).await;
            let what = format!("{caller:?} {method} {template}");
            let (status, _, answer) = &response;
            let expected_denial = match (allowed, caller) {
                (Public, _) => None,
                (ClusterPeer, _) | (_, Nobody) => Some((StatusCode::UNAUTHORIZED, "UNAUTHORIZED")),
                _ if allowed.admits(caller) => None,
                _ => Some((StatusCode::FORBIDDEN, "FORBIDDEN")),
            };
            match expected_denial {
                Some((expected, code)) => {
                    assert_eq!(*status, expected, "{what}: {answer}");
                    assert_error(&response, expected, code);
                }
                None if matches!(allowed, Reaches(_)) => assert!(
                    status.is_success()
                        || (status.is_client_error()
                            && *status != StatusCode::UNAUTHORIZED
                            && *status != StatusCode::FORBIDDEN),
                    "{what} should get past authorization, got {status}: {answer}"
                ),
                None => assert!(
                    status.is_success(),
                    "{what} should be allowed, got {status}: {answer}"
                ),
            }
        }
    }

    // The matrix covers every operation the API documents, so a new route cannot slip in
    // without its row.
    let normalize = |path: &str| -> String {
        path.split('/')
            .map(|segment| {
                let fixture = ["1.0.0", "production", "CacheRule"].contains(&segment);
                if fixture || segment.starts_with('{') {
                    "{}"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let covered: std::collections::BTreeSet<(String, String)> = routes
        .iter()
        .map(|(method, path, _, _)| (method.to_string(), normalize(path)))
        .collect();
    let (_, _, document) = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let mut documented = std::collections::BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), normalize(path)));
        }
    }
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without a matrix row: {missing:?}"
    );
    let undocumented: Vec<_> = covered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "matrix rows for routes the API does not document: {undocumented:?}"
    );
}

/// Replaces the placeholders of a matrix body with fresh values.
fn fill(body: &Value, fixture: &Fixture) -> Value {
    match body {
        Value::String(s) if s == "{new}" => json!(unique("new")),
        Value::String(s) if s == "{config-id}" => json!(fixture.configuration_id),
        Value::String(s) if s == "{content}" => cache_rule(&unique("/matrix-body")),
        Value::String(s) if s == "{edge-body}" => common::edge_body(&unique("new-edge")),
        Value::String(s) if s == "{edge-update}" => common::edge_body(&fixture.location_id),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, fixture)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn tamper_payload(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    change(&mut payload);
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    parts.join(".")
}

#[tokio::test]
async fn bad_tokens_are_401_with_the_error_shape() {
    let app = TestApp::new().await;
    let viewer_name = app.create_user("Viewer").await;
    let viewer = app.login(&viewer_name, USER_PASSWORD).await;
    let issuer = |iss: &str, aud: &str| TokenIssuer::new(&common::JWT_SECRET, iss, aud).unwrap();
    let good = issuer("edgeplane", "edgeplane-api");
    let now = Timestamp::now();

    let stored = {
        let name = viewer_name.clone();
        app.state
            .store()
            .read(move |r| r.user(&name))
            .await
            .unwrap()
            .unwrap()
    };
    let (minted, _) = good.issue_session(&stored, now, 600).unwrap();
    // Signed with the right key but without the session stamp that ties it to the user's
    // current password and role.
    let (unstamped, _) = good
        .issue(&viewer_name, Role::Viewer, None, now, 600)
        .unwrap();
    let (expired, _) = good
        .issue(
            &viewer_name,
            Role::Viewer,
            None,
            now.plus_millis(-7_200_000),
            600,
        )
        .unwrap();
    let (wrong_audience, _) = issuer("edgeplane", "someone-else")
        .issue(&viewer_name, Role::Viewer, None, now, 600)
        .unwrap();
    let (wrong_issuer, _) = issuer("not-edgeplane", "edgeplane-api")
        .issue(&viewer_name, Role::Viewer, None, now, 600)
        .unwrap();
    let (other_secret, _) = TokenIssuer::new(&[7u8; 32], "edgeplane", "edgeplane-api")
        .unwrap()
        .issue(&viewer_name, Role::Admin, None, now, 600)
        .unwrap();
    let (ghost, _) = good
        .issue("nobody-here", Role::Admin, None, now, 600)
        .unwrap();
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        viewer.split('.').nth(1).unwrap()
    );
    let raised = tamper_payload(&viewer, |p| p["role"] = json!("Admin"));
    let renamed = tamper_payload(&viewer, |p| p["sub"] = json!("admin"));

    let path = "/api/v1/configurations";
    // The minted token is good: the bad ones fail for what is wrong with them.
    let (status, _, _) = app.get(path, &minted).await;
    assert_eq!(status, StatusCode::OK);

    let check = |what: &'static str, header: Option<String>| {
        let app = &app;
        async move {
            let mut builder = axum::http::Request::builder().uri(path);
            if let Some(header) = header {
                builder = builder.header("authorization", header);
            }
            let response = app
                .send(builder.body(axum::body::Body::empty()).unwrap())
                .await;
            assert_eq!(
                response.0,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                response.2
            );
            assert_error(&response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
            // The library's parse errors never reach the client.
            let message = response.2["error"]["message"].as_str().unwrap().to_string();
            let expected: &[&str] = match what {
                "missing" | "not bearer" => &[],
                "expired" => &["token expired"],
                "unknown user" | "unstamped" | "deleted user" | "deleted user, minted" => {
                    &["token revoked"]
                }
                _ => &["invalid token"],
            };
            for expected in expected {
                assert!(message.starts_with(expected), "{what}: {message}");
            }
            assert!(
                !message.contains("Error")
                    && !message.contains("Base64")
                    && !message.contains("Json"),
                "{what}: {message}"
            );
        }
    };
    check("missing", None).await;
    check("garbage", Some("Bearer garbage".into())).await;
    check("not bearer", Some(format!("Basic {viewer}"))).await;
    check("alg none", Some(format!("Bearer {alg_none}"))).await;
    check("role raised", Some(format!("Bearer {raised}"))).await;
    check("subject changed", Some(format!("Bearer {renamed}"))).await;
    check("expired", Some(format!("Bearer {expired}"))).await;
    check("wrong audience", Some(format!("Bearer {wrong_audience}"))).await;
    check("wrong issuer", Some(format!("Bearer {wrong_issuer}"))).await;
    check("other secret", Some(format!("Bearer {other_secret}"))).await;
    check("unknown user", Some(format!("Bearer {ghost}"))).await;
    check("unstamped", Some(format!("Bearer {unstamped}"))).await;

    // A deleted user's token stops working at once.
    let (status, _, _) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/users/{viewer_name}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    check("deleted user", Some(format!("Bearer {viewer}"))).await;
    check("deleted user, minted", Some(format!("Bearer {minted}"))).await;
}

#[tokio::test]
async fn the_fourth_write_in_a_minute_is_429_and_every_answer_carries_the_budget() {
    let app = TestApp::with_limits(LimitSettings {
        writes_per_minute: 3,
        ..common::generous_limits()
    })
    .await;
    let has_budget = |headers: &axum::http::HeaderMap, what: &str| {
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            let value = headers
                .get(name)
                .unwrap_or_else(|| panic!("{what}: no {name}"));
            assert!(
                value.to_str().unwrap().parse::<u64>().is_ok(),
                "{what}: {name} = {value:?}"
            );
        }
    };
    for i in 0..3 {
        let (status, headers, body) = app
            .request(
                Method::POST,
                "/api/v1/configurations",
                Some(&app.admin),
                Some(json!({"name": unique("limited"), "type": "CacheRule", "content": cache_rule(&unique("/limited"))})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "write {i}: {body}");
        has_budget(&headers, "write");
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(
            headers["x-ratelimit-remaining"].to_str().unwrap(),
            (2 - i).to_string()
        );
    }
    let refused = app
        .request(
            Method::POST,
            "/api/v1/configurations",
            Some(&app.admin),
            Some(json!({"name": unique("limited"), "type": "CacheRule", "content": cache_rule(&unique("/limited"))})),
        )
        .await;
    assert_error(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMIT_EXCEEDED",
    );
    let retry_after: u64 = refused.1["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    has_budget(&refused.1, "refused write");
    assert_eq!(refused.1["x-ratelimit-remaining"], "0");

    // Reads have their own budget, and the headers are on errors and public routes too.
    let (status, headers, _) = app.get("/api/v1/configurations", &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    has_budget(&headers, "read");
    let missing = app
        .get("/api/v1/configurations/config-nope", &app.admin)
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
    has_budget(&missing.1, "404");
    let (status, headers, _) = app.request(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    has_budget(&headers, "/health");
}

#[tokio::test]
async fn login_attempts_are_limited_per_username() {
    let app = TestApp::with_limits(LimitSettings {
        login_attempts_per_minute: 3,
        ..common::generous_limits()
    })
    .await;
    let name = app.create_user("Viewer").await;
    let attempt = |password: &'static str| {
        let (app, name) = (&app, &name);
        async move {
            app.request(
                Method::POST,
                "/api/v1/authentication/login",
                None,
                Some(json!({"username": name, "password": password})),
            )
            .await
        }
    };
    for _ in 0..3 {
        let wrong = attempt("wrong-password-123").await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    // Even the right password waits now: guessing cannot go faster than the budget.
    let limited = attempt(USER_PASSWORD).await;
    assert_error(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMIT_EXCEEDED",
    );
    assert!(limited.1.contains_key("retry-after"));
    // Another user is not locked out by this one's attempts.
    let other = app.create_user("Viewer").await;
    app.login(&other, USER_PASSWORD).await;
}

#[tokio::test]
async fn users_are_managed_by_admins() {
    let app = TestApp::new().await;
    let users = "/api/v1/users";
    let name = unique("alice");
    let (status, _, created) = app
        .request(
            Method::POST,
            users,
            Some(&app.admin),
            Some(json!({"username": name, "password": USER_PASSWORD, "role": "Developer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["username"], name.as_str());
    assert_eq!(created["role"], "Developer");
    assert!(created.get("password").is_none() && created.get("passwordHash").is_none());

    let check = |body: Value, field: &'static str| {
        let app = &app;
        async move {
            let response = app
                .request(Method::POST, users, Some(&app.admin), Some(body))
                .await;
            assert_error(&response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
            assert!(
                response.2["error"]["details"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["field"] == field),
                "{field}: {}",
                response.2
            );
        }
    };
    check(
        json!({"username": unique("bob"), "password": "short", "role": "Viewer"}),
        "password",
    )
    .await;
    check(
        json!({"username": unique("bob"), "password": USER_PASSWORD, "role": "Wizard"}),
        "role",
    )
    .await;
    check(
        json!({"username": unique("bob"), "password": USER_PASSWORD, "role": "Edge"}),
        "role",
    )
    .await;
    check(
        json!({"username": "bad name!", "password": USER_PASSWORD, "role": "Viewer"}),
        "username",
    )
    .await;
    let taken = app
        .request(
            Method::POST,
            users,
            Some(&app.admin),
            Some(json!({"username": name, "password": USER_PASSWORD, "role": "Viewer"})),
        )
        .await;
    assert_error(&taken, StatusCode::CONFLICT, "CONFLICT");

    let (status, _, list) = app.get(users, &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(text.contains(&name));
    assert!(
        !text.contains("argon2") && !text.to_lowercase().contains("hash"),
        "{text}"
    );

    // A non-admin changes their own password only with the current one.
    let token = app.login(&name, USER_PASSWORD).await;
    let own = format!("{users}/{name}/password");
    let new_password = "a-brand-new-password";
    let without = app
        .request(
            Method::PUT,
            &own,
            Some(&token),
            Some(json!({"password": new_password})),
        )
        .await;
    assert_error(&without, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let wrong = app
        .request(
            Method::PUT,
            &own,
            Some(&token),
            Some(json!({"password": new_password, "currentPassword": "not-the-password"})),
        )
        .await;
    assert_error(&wrong, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let (status, _, _) = app
        .request(
            Method::PUT,
            &own,
            Some(&token),
            Some(json!({"password": new_password, "currentPassword": USER_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The change ended the token it was made with: a new login gives a fresh one.
    let stale = app.get(users, &token).await;
    assert_error(&stale, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let token = app.login(&name, new_password).await;
    let someone_else = app
        .request(
            Method::PUT,
            "/api/v1/users/admin/password",
            Some(&token),
            Some(json!({"password": new_password, "currentPassword": new_password})),
        )
        .await;
    assert_error(&someone_else, StatusCode::FORBIDDEN, "FORBIDDEN");
    // An admin resets anyone's password without the current one.
    let (status, _, _) = app
        .request(
            Method::PUT,
            &own,
            Some(&app.admin),
            Some(json!({"password": USER_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.login(&name, USER_PASSWORD).await;

    // The last admin cannot be deleted; with a second admin, the first can go.
    let last = app
        .request(
            Method::DELETE,
            &format!("{users}/admin"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_error(&last, StatusCode::CONFLICT, "CONFLICT");
    let second = app.user_token("Admin").await;
    let (status, _, _) = app
        .request(
            Method::DELETE,
            &format!("{users}/admin"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let gone = app
        .request(
            Method::DELETE,
            &format!("{users}/admin"),
            Some(&second),
            None,
        )
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn an_edge_token_posts_heartbeats_for_its_own_edge_only() {
    let app = TestApp::new().await;
    let (mine, mine_token) = app.create_edge(&unique("edge-a")).await;
    let (theirs, _) = app.create_edge(&unique("edge-b")).await;
    let viewer = app.user_token("Viewer").await;
    let beat = |location: &Value, token: &str| {
        let path = format!(
            "/api/v1/edge-locations/{}/heartbeat",
            location["locationId"].as_str().unwrap()
        );
        let token = token.to_string();
        let app = &app;
        async move {
            app.request(
                Method::POST,
                &path,
                Some(&token),
                Some(json!({"health": {"isHealthy": true, "cpuUsage": 10.0}})),
            )
            .await
        }
    };
    let (status, _, body) = beat(&mine, &mine_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(common::is_rfc3339(body["receivedAt"].as_str().unwrap()));
    assert_error(
        &beat(&theirs, &mine_token).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    assert_error(
        &beat(&mine, &viewer).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    // An edge token is no user token either.
    let reads = app.get("/api/v1/configurations", &mine_token).await;
    assert_error(&reads, StatusCode::FORBIDDEN, "FORBIDDEN");

    // After rotation the old token is dead and the new one works.
    let (status, _, rotated) = app
        .request(
            Method::POST,
            &format!(
                "/api/v1/edge-locations/{}/token",
                mine["locationId"].as_str().unwrap()
            ),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_token = rotated["agentToken"].as_str().unwrap();
    assert_ne!(new_token, mine_token);
    assert_error(
        &beat(&mine, &mine_token).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    );
    assert_eq!(beat(&mine, new_token).await.0, StatusCode::OK);

    // A deleted edge's token ends with it.
    let path = format!(
        "/api/v1/edge-locations/{}",
        mine["locationId"].as_str().unwrap()
    );
    let (status, _, _) = app
        .request(Method::DELETE, &path, Some(&app.admin), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &beat(&mine, new_token).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    );
}

#[tokio::test]
async fn edge_tokens_are_sealed_at_rest() {
    let app = TestApp::new().await;
    let (_, token) = app.create_edge("sealed-edge").await;

    // The record holds the token sealed with the store's key, and only that key opens it.
    let record = app
        .state
        .store()
        .reader()
        .expect("reader")
        .edge("sealed-edge")
        .expect("edge read")
        .expect("edge stored");
    assert!(!record.token_sealed.contains(&token), "{record:?}");
    assert_eq!(
        app.state
            .secrets()
            .open(&record.token_sealed)
            .expect("opens"),
        token
    );

    // Nowhere in the store file (records, command log, audit) is the token in plain text.
    let file = app
        .state
        .settings()
        .server
        .data_dir
        .join(edgeplane::store::STORE_FILE);
    let bytes = std::fs::read(&file).expect("store file");
    let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
    assert!(
        holds(record.token_sealed.as_bytes()),
        "the file read holds the edge record"
    );
    assert!(
        !holds(token.as_bytes()),
        "the agent token is stored in plain text"
    );
}
