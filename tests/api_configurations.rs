//! The configuration endpoints as a client sees them: status codes, body shapes, versions,
//! tags, diffs, validation, four-eyes approval, conflicts, schemas, deletion and secrets.

mod common;

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use common::{
    TestApp, assert_error, cache_rule, is_rfc3339, routing_rule, ssl_certificate, typical_contents,
    unique,
};

const CONFIGS: &str = "/api/v1/configurations";

async fn update(app: &TestApp, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = app
        .request(
            Method::PUT,
            &format!("{CONFIGS}/{id}"),
            Some(token),
            Some(body),
        )
        .await;
    (status, body)
}

fn id_of(body: &Value) -> String {
    body["configurationId"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn create_answers_201_draft_1_0_0_with_location_for_every_type() {
    let app = TestApp::new().await;
    let developer_name = app.create_user("Developer").await;
    let developer = app.login(&developer_name, common::USER_PASSWORD).await;
    for (config_type, content) in typical_contents() {
        let name = unique("create");
        let response = app
            .request(
                Method::POST,
                CONFIGS,
                Some(&developer),
                Some(
                    json!({"name": name, "type": config_type, "content": content, "tags": ["web"]}),
                ),
            )
            .await;
        let (status, headers, body) = &response;
        assert_eq!(*status, StatusCode::CREATED, "{config_type}: {body}");
        let id = id_of(body);
        assert!(id.starts_with("config-"), "{id}");
        assert_eq!(body["version"], "1.0.0");
        assert_eq!(body["status"], "Draft");
        assert_eq!(body["type"], config_type);
        assert_eq!(body["name"], name);
        assert_eq!(body["createdBy"], developer_name.as_str());
        assert!(is_rfc3339(body["createdAt"].as_str().unwrap()));
        assert_eq!(
            headers.get(header::LOCATION).unwrap(),
            &format!("{CONFIGS}/{id}")
        );

        let (status, _, got) = app.get(&format!("{CONFIGS}/{id}"), &developer).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["configurationId"], id.as_str());
        assert_eq!(got["tags"], json!(["web"]));

        // The name is taken now, whatever the content.
        let taken = app
            .request(
                Method::POST,
                CONFIGS,
                Some(&developer),
                Some(json!({"name": name, "type": "CacheRule", "content": cache_rule(&unique("/taken"))})),
            )
            .await;
        assert_error(&taken, StatusCode::CONFLICT, "CONFLICT");
    }
    let missing = app.get(&format!("{CONFIGS}/config-nope"), &developer).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let app = TestApp::new().await;
    let token = app.admin.clone();
    let prefix = unique("listed");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (config_type, content) = if i < 3 {
            ("CacheRule", cache_rule(&format!("/{prefix}/{i}/*")))
        } else {
            ("RoutingRule", routing_rule(&format!("/{prefix}/{i}/*")))
        };
        let tags = if i % 2 == 0 {
            json!(["prod", "eu"])
        } else {
            json!(["prod"])
        };
        let (status, _, body) = app
            .request(
                Method::POST,
                CONFIGS,
                Some(&token),
                Some(json!({"name": format!("{prefix}-{i}"), "type": config_type, "content": content, "tags": tags})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(id_of(&body));
    }
    let other = app
        .create_config(&token, "CacheRule", cache_rule(&unique("/unlisted")))
        .await;

    let names = |body: &Value| -> Vec<String> {
        body["configurations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let check = |query: &str, expected: &[usize]| {
        let query = query.to_string();
        let expected: Vec<String> = expected.iter().map(|i| format!("{prefix}-{i}")).collect();
        let app = &app;
        let token = &token;
        async move {
            let (status, _, body) = app.get(&format!("{CONFIGS}?{query}"), token).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            let mut found = names(&body);
            found.sort();
            assert_eq!(found, expected, "{query}");
            assert_eq!(body["total"], expected.len(), "{query}");
        }
    };
    check(&format!("name={prefix}"), &[0, 1, 2, 3, 4]).await;
    check(&format!("name={prefix}&type=RoutingRule"), &[3, 4]).await;
    check(&format!("name={prefix}&type=CacheRule&tags=eu"), &[0, 2]).await;
    check(&format!("name={prefix}&tags=prod,eu"), &[0, 2, 4]).await;
    check(&format!("name={prefix}&status=Approved"), &[]).await;
    check(
        &format!("name={prefix}&status=Draft&tags=prod"),
        &[0, 1, 2, 3, 4],
    )
    .await;

    // Pagination envelope over all six.
    let (status, _, page) = app.get(&format!("{CONFIGS}?limit=4"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["configurations"].as_array().unwrap().len(), 4);
    assert_eq!(page["total"], 6);
    assert_eq!(page["limit"], 4);
    assert_eq!(page["offset"], 0);
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["nextOffset"], 4);
    let (_, _, last) = app
        .get(&format!("{CONFIGS}?limit=4&offset=4"), &token)
        .await;
    assert_eq!(last["configurations"].as_array().unwrap().len(), 2);
    assert_eq!(last["hasMore"], false);
    assert_eq!(last["nextOffset"], Value::Null);
    let mut seen: Vec<String> = page["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .chain(last["configurations"].as_array().unwrap())
        .map(id_of)
        .collect();
    seen.sort();
    let mut all = ids.clone();
    all.push(id_of(&other));
    all.sort();
    assert_eq!(seen, all, "the two pages cover every configuration once");

    for bad in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "offset=-1",
        "type=Nope",
        "status=Nope",
    ] {
        let response = app.get(&format!("{CONFIGS}?{bad}"), &token).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }
}

#[tokio::test]
async fn updates_make_new_versions_with_bumps_and_if_match() {
    let app = TestApp::new().await;
    let author = app.user_token("Developer").await;
    let path = unique("/updated");
    let created = app
        .create_config(&author, "CacheRule", cache_rule(&format!("{path}/*")))
        .await;
    let id = id_of(&created);

    // Approve, so that an update visibly returns the configuration to Draft.
    let (status, _, approved) = app
        .request(
            Method::POST,
            &format!("{CONFIGS}/{id}/approve"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "Approved");

    let mut content = cache_rule(&format!("{path}/*"));
    let mut check = |bump: Option<&str>, expected: &str| {
        content["ttl"] = json!(content["ttl"].as_u64().unwrap() + 1);
        let mut body = json!({"content": content.clone(), "changeDescription": "ttl up"});
        if let Some(bump) = bump {
            body["bump"] = json!(bump);
        }
        let expected = expected.to_string();
        let (app, author, id) = (&app, &author, &id);
        async move {
            let (status, updated) = update(app, author, id, body).await;
            assert_eq!(status, StatusCode::OK, "{updated}");
            assert_eq!(updated["version"], expected.as_str());
            assert_eq!(updated["status"], "Draft");
        }
    };
    check(None, "1.1.0").await;
    check(Some("major"), "2.0.0").await;
    check(Some("patch"), "2.0.1").await;
    check(Some("minor"), "2.1.0").await;

    let bad_bump = app
        .request(
            Method::PUT,
            &format!("{CONFIGS}/{id}"),
            Some(&author),
            Some(json!({"content": cache_rule(&format!("{path}/*")), "bump": "huge"})),
        )
        .await;
    assert_error(&bad_bump, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    // If-Match: a stale version is a lost update; the current one goes through.
    let (_, headers, _) = app.get(&format!("{CONFIGS}/{id}"), &author).await;
    assert_eq!(headers.get(header::ETAG).unwrap(), "\"2.1.0\"");
    let send_if_match = |version: &str| {
        let request = axum::http::Request::builder()
            .method(Method::PUT)
            .uri(format!("{CONFIGS}/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {author}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::IF_MATCH, format!("\"{version}\""))
            .body(axum::body::Body::from(
                json!({"content": cache_rule(&format!("{path}/*"))}).to_string(),
            ))
            .unwrap();
        app.send(request)
    };
    let stale = send_if_match("2.0.1").await;
    assert_error(&stale, StatusCode::CONFLICT, "CONFLICT");
    let (status, _, current) = send_if_match("2.1.0").await;
    assert_eq!(status, StatusCode::OK, "{current}");
    assert_eq!(current["version"], "2.2.0");

    // Versions, newest first; each one readable on its own and unchanged.
    let (status, _, versions) = app.get(&format!("{CONFIGS}/{id}/versions"), &author).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["2.2.0", "2.1.0", "2.0.1", "2.0.0", "1.1.0", "1.0.0"]
    );
    let (status, _, first) = app
        .get(&format!("{CONFIGS}/{id}/versions/1.0.0"), &author)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["content"]["ttl"], 86400);
    assert_eq!(first["configurationId"], id.as_str());
    assert!(first["versionId"].as_str().unwrap().starts_with("ver-"));
    let missing = app
        .get(&format!("{CONFIGS}/{id}/versions/9.9.9"), &author)
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn a_tag_names_at_most_one_version() {
    let app = TestApp::new().await;
    let operator = app.user_token("Operator").await;
    let path = unique("/tagged");
    let id = id_of(
        &app.create_config(&operator, "CacheRule", cache_rule(&format!("{path}/*")))
            .await,
    );
    let (status, _) = update(
        &app,
        &operator,
        &id,
        json!({"content": cache_rule(&format!("{path}/*"))}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let tags_of = |version: &str| {
        let path = format!("{CONFIGS}/{id}/versions/{version}");
        let (app, operator) = (&app, &operator);
        async move { app.get(&path, operator).await.2["tags"].clone() }
    };
    let tag = |version: &str| {
        let path = format!("{CONFIGS}/{id}/versions/{version}/tags/production");
        let (app, operator) = (&app, &operator);
        async move { app.request(Method::PUT, &path, Some(operator), None).await }
    };
    let (status, _, tagged) = tag("1.0.0").await;
    assert_eq!(status, StatusCode::OK, "{tagged}");
    assert_eq!(tagged["tags"], json!(["production"]));
    assert_eq!(tags_of("1.0.0").await, json!(["production"]));

    let (status, _, _) = tag("1.1.0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tags_of("1.1.0").await, json!(["production"]));
    assert_eq!(tags_of("1.0.0").await, json!([]), "the tag moved");

    let bad = app
        .request(
            Method::PUT,
            &format!("{CONFIGS}/{id}/versions/1.0.0/tags/bad%20tag"),
            Some(&operator),
            None,
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

#[tokio::test]
async fn diff_names_fields_by_json_pointer_and_counts_breaking_changes() {
    let app = TestApp::new().await;
    let token = app.admin.clone();
    let path = unique("/diffed");
    let mut content = cache_rule(&format!("{path}/*"));
    let id = id_of(
        &app.create_config(&token, "CacheRule", content.clone())
            .await,
    );
    content["cacheControl"] = json!("public, max-age=60");
    assert_eq!(
        update(&app, &token, &id, json!({"content": content.clone()}))
            .await
            .0,
        StatusCode::OK
    );
    content["ttl"] = json!(0);
    assert_eq!(
        update(&app, &token, &id, json!({"content": content.clone()}))
            .await
            .0,
        StatusCode::OK
    );

    let change = |diff: &Value, field: &str| -> Value {
        diff["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["field"] == field)
            .cloned()
            .unwrap_or_else(|| panic!("no change at {field}: {diff}"))
    };

    // Default: the latest version against the one before it.
    let (status, _, latest) = app.get(&format!("{CONFIGS}/{id}/diff"), &token).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest["fromVersion"], "1.1.0");
    assert_eq!(latest["toVersion"], "1.2.0");
    let ttl = change(&latest, "/ttl");
    assert_eq!(ttl["oldValue"], 86400);
    assert_eq!(ttl["newValue"], 0);
    assert_eq!(ttl["changeType"], "Modified");
    assert_eq!(latest["summary"]["totalChanges"], 1);
    assert_eq!(latest["summary"]["breakingChanges"], 1, "TTL lowered to 0");

    let (status, _, span) = app
        .get(&format!("{CONFIGS}/{id}/diff?from=1.0.0&to=1.1.0"), &token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        change(&span, "/cacheControl")["newValue"],
        "public, max-age=60"
    );
    assert_eq!(span["summary"]["totalChanges"], 1);
    assert_eq!(span["summary"]["breakingChanges"], 0);

    let missing = app
        .get(&format!("{CONFIGS}/{id}/diff?from=7.0.0"), &token)
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn diff_counts_a_removed_origin_as_breaking() {
    let app = TestApp::new().await;
    let token = app.admin.clone();
    let mut content = routing_rule(&format!("{}/*", unique("/origins")));
    let id = id_of(
        &app.create_config(&token, "RoutingRule", content.clone())
            .await,
    );
    content["origins"] = json!([{"name": "primary", "endpoint": "https://origin-1.example.com", "weight": 100, "priority": 1}]);
    assert_eq!(
        update(&app, &token, &id, json!({"content": content}))
            .await
            .0,
        StatusCode::OK
    );
    let (_, _, diff) = app.get(&format!("{CONFIGS}/{id}/diff"), &token).await;
    assert!(
        diff["summary"]["breakingChanges"].as_u64().unwrap() >= 1,
        "{diff}"
    );
}

#[tokio::test]
async fn validation_of_stored_and_unsaved_configurations() {
    let app = TestApp::new().await;
    let developer = app.user_token("Developer").await;
    let id = id_of(
        &app.create_config(&developer, "CacheRule", cache_rule(&unique("/valid")))
            .await,
    );
    let (status, _, stored) = app
        .request(
            Method::POST,
            &format!("{CONFIGS}/{id}/validate"),
            Some(&developer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["isValid"], true);
    assert_eq!(stored["configurationId"], id.as_str());
    assert!(is_rfc3339(stored["validatedAt"].as_str().unwrap()));
    assert!(stored["errors"].as_array().unwrap().is_empty());
    assert!(stored["warnings"].is_array());

    let mut bad = cache_rule(&unique("/invalid"));
    bad["ttl"] = json!(31_536_001);
    let (status, _, unsaved) = app
        .request(
            Method::POST,
            &format!("{CONFIGS}/validate"),
            Some(&developer),
            Some(json!({"type": "CacheRule", "content": bad})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{unsaved}");
    assert_eq!(unsaved["isValid"], false);
    assert_eq!(unsaved["configurationId"], Value::Null);
    let errors = unsaved["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["field"] == "content.ttl"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("TTL must be between 0 and 31536000 seconds")),
        "{unsaved}"
    );

    // The same content is refused on create, with the findings as details.
    let refused = app
        .request(
            Method::POST,
            CONFIGS,
            Some(&developer),
            Some(json!({"name": unique("bad"), "type": "CacheRule", "content": bad})),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "CONFIG_VALIDATION_ERROR");
    assert!(
        refused.2["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["field"] == "content.ttl"),
        "{}",
        refused.2
    );
}

#[tokio::test]
async fn approval_is_four_eyes_and_per_version() {
    let app = TestApp::new().await;
    let author_admin = app.user_token("Admin").await;
    let approver_name = app.create_user("Admin").await;
    let other_admin = app.login(&approver_name, common::USER_PASSWORD).await;
    let path = unique("/approved");
    let id = id_of(
        &app.create_config(&author_admin, "CacheRule", cache_rule(&format!("{path}/*")))
            .await,
    );
    let (status, _) = update(
        &app,
        &author_admin,
        &id,
        json!({"content": cache_rule(&format!("{path}/*"))}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let approve = |token: &str, body: Option<Value>| {
        let path = format!("{CONFIGS}/{id}/approve");
        let token = token.to_string();
        let app = &app;
        async move { app.request(Method::POST, &path, Some(&token), body).await }
    };
    let version_status = |version: &str| {
        let path = format!("{CONFIGS}/{id}/versions/{version}");
        let (app, token) = (&app, &other_admin);
        async move { app.get(&path, token).await.2["status"].clone() }
    };

    let own = approve(&author_admin, None).await;
    assert_error(&own, StatusCode::FORBIDDEN, "FORBIDDEN");

    // `version` approves an older version; the configuration follows its latest version.
    let (status, _, older) = approve(&other_admin, Some(json!({"version": "1.0.0"}))).await;
    assert_eq!(status, StatusCode::OK, "{older}");
    assert_eq!(older["status"], "Draft");
    assert_eq!(version_status("1.0.0").await, "Approved");
    assert_eq!(version_status("1.1.0").await, "Draft");
    let again = approve(&other_admin, Some(json!({"version": "1.0.0"}))).await;
    assert_error(&again, StatusCode::CONFLICT, "CONFLICT");

    let (status, _, approved) = approve(&other_admin, Some(json!({"notes": "looks fine"}))).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "Approved");
    assert_eq!(approved["version"], "1.1.0");
    assert_eq!(approved["approvedBy"], approver_name.as_str());
    assert!(is_rfc3339(approved["approvedAt"].as_str().unwrap()));

    // A new version puts the configuration back to Draft; approvals stay on their versions.
    let (status, updated) = update(
        &app,
        &author_admin,
        &id,
        json!({"content": cache_rule(&format!("{path}/*"))}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["status"], "Draft");
    assert_eq!(version_status("1.1.0").await, "Approved");

    let unknown = approve(&other_admin, Some(json!({"version": "3.0.0"}))).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");
    let operator = app.user_token("Operator").await;
    let not_admin = approve(&operator, None).await;
    assert_error(&not_admin, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn conflicts_name_the_overlapping_configuration() {
    let app = TestApp::new().await;
    let token = app.admin.clone();
    let base = unique("/overlap");
    let first = app
        .create_config(&token, "CacheRule", cache_rule(&format!("{base}/*")))
        .await;
    let second = app
        .create_config(&token, "CacheRule", cache_rule(&format!("{base}/images/*")))
        .await;
    let (status, _, report) = app
        .get(&format!("{CONFIGS}/{}/conflicts", id_of(&second)), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["hasConflicts"], true);
    let first_id = id_of(&first);
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains(&first_id)),
        "{report}"
    );

    let lone = app
        .create_config(&token, "CacheRule", cache_rule(&unique("/alone")))
        .await;
    let (_, _, quiet) = app
        .get(&format!("{CONFIGS}/{}/conflicts", id_of(&lone)), &token)
        .await;
    assert_eq!(quiet["hasConflicts"], false, "{quiet}");
}

#[tokio::test]
async fn schemas_are_json_schema_2020_12_per_type() {
    let app = TestApp::new().await;
    let viewer = app.user_token("Viewer").await;
    let (status, _, index) = app.get("/api/v1/schemas", &viewer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(index["schemas"].as_array().unwrap().len(), 5);
    for config_type in [
        "CacheRule",
        "RoutingRule",
        "SecurityRule",
        "SSLCertificate",
        "ResponseModification",
    ] {
        let (status, headers, schema) = app
            .get(&format!("/api/v1/schemas/{config_type}"), &viewer)
            .await;
        assert_eq!(status, StatusCode::OK, "{config_type}");
        assert!(
            headers
                .get(header::CONTENT_TYPE)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("json")
        );
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{config_type}"
        );
        assert!(
            jsonschema::draft202012::meta::is_valid(&schema),
            "{config_type}"
        );
    }
    let unknown = app.get("/api/v1/schemas/Nope", &viewer).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn delete_answers_204_then_404_and_keeps_the_audit_trail() {
    let app = TestApp::new().await;
    let id = id_of(
        &app.create_config(&app.admin, "CacheRule", cache_rule(&unique("/deleted")))
            .await,
    );
    let path = format!("{CONFIGS}/{id}");
    let (status, _, body) = app
        .request(Method::DELETE, &path, Some(&app.admin), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert_error(
        &app.get(&path, &app.admin).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_error(
        &app.request(Method::DELETE, &path, Some(&app.admin), None)
            .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    let (status, _, audit) = app
        .get(&format!("/api/v1/audit?entity={id}"), &app.admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"create"), "{audit}");
    assert!(actions.contains(&"delete"), "{audit}");
}

#[tokio::test]
async fn the_private_key_is_never_returned_and_is_sealed_at_rest() {
    let app = TestApp::new().await;
    let token = app.admin.clone();
    let domain = format!("{}.example.com", unique("tls"));
    let (content, key) = ssl_certificate(&domain);
    let created = app.create_config(&token, "SSLCertificate", content).await;
    let id = id_of(&created);
    // A new certificate for the same domain, so the diff has a key change to hide.
    let (new_content, new_key) = ssl_certificate(&domain);
    let (status, updated) = update(&app, &token, &id, json!({"content": new_content})).await;
    assert_eq!(status, StatusCode::OK, "{updated}");

    let key_line = key.lines().nth(1).unwrap().to_string();
    let new_key_line = new_key.lines().nth(1).unwrap().to_string();
    let check = |what: &str, body: &Value| {
        let text = body.to_string();
        assert!(
            !text.contains(&key_line) && !text.contains(&new_key_line),
            "{what} shows the private key"
        );
        assert!(!text.contains("PRIVATE KEY"), "{what}: {text}");
        assert!(!text.contains("enc:v1:"), "{what} shows the sealed key");
    };
    check("create", &created);
    assert_eq!(created["content"]["privateKey"], "[REDACTED]");
    check("update", &updated);
    for (what, path) in [
        ("get", format!("{CONFIGS}/{id}")),
        ("list", CONFIGS.to_string()),
        ("versions", format!("{CONFIGS}/{id}/versions")),
        (
            "versions with content",
            format!("{CONFIGS}/{id}/versions?includeContent=true"),
        ),
        ("version", format!("{CONFIGS}/{id}/versions/1.0.0")),
        ("diff", format!("{CONFIGS}/{id}/diff")),
    ] {
        let (status, _, body) = app.get(&path, &token).await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        check(what, &body);
    }
    let (_, _, diff) = app.get(&format!("{CONFIGS}/{id}/diff"), &token).await;
    assert!(diff.to_string().contains("[REDACTED]"), "{diff}");

    let stored = app
        .state
        .store()
        .reader()
        .unwrap()
        .configuration(&id)
        .unwrap()
        .unwrap();
    let sealed = stored.content["privateKey"].as_str().unwrap();
    assert!(sealed.starts_with("enc:v1:"), "stored as {sealed:.20}");
    for version in app.state.store().reader().unwrap().versions(&id).unwrap() {
        assert!(
            version.content["privateKey"]
                .as_str()
                .unwrap()
                .starts_with("enc:v1:")
        );
    }

    // Stored validation opens the sealed key: the certificate still matches it.
    let (_, _, report) = app
        .request(
            Method::POST,
            &format!("{CONFIGS}/{id}/validate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(report["isValid"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_cannot_both_win() {
    let app = TestApp::new().await;
    let token = app.admin.clone();

    // Ten creates of one name at once: exactly one gets it.
    let name = unique("race");
    let creates = (0..10).map(|i| {
        let body = json!({"name": name, "type": "CacheRule", "content": cache_rule(&format!("/race-{i}/*"))});
        app.request(Method::POST, CONFIGS, Some(&token), Some(body))
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(creates)
        .await
        .into_iter()
        .map(|(status, _, _)| status)
        .collect();
    let n_created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let n_conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((n_created, n_conflicts), (1, 9), "{statuses:?}");

    // Ten updates that all saw version 1.0.0: exactly one lands, the others are lost
    // updates refused with 409.
    let path = unique("/contended");
    let id = id_of(
        &app.create_config(&token, "CacheRule", cache_rule(&format!("{path}/*")))
            .await,
    );
    let updates = (0..10).map(|ttl| {
        let mut content = cache_rule(&format!("{path}/*"));
        content["ttl"] = json!(ttl);
        let request = axum::http::Request::builder()
            .method(Method::PUT)
            .uri(format!("{CONFIGS}/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::IF_MATCH, "\"1.0.0\"")
            .body(axum::body::Body::from(
                json!({"content": content}).to_string(),
            ))
            .unwrap();
        app.send(request)
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(updates)
        .await
        .into_iter()
        .map(|(status, _, _)| status)
        .collect();
    let n_updated = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(n_updated, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let (_, _, versions) = app.get(&format!("{CONFIGS}/{id}/versions"), &token).await;
    assert_eq!(versions["total"], 2);
}

#[tokio::test]
async fn a_deleted_name_can_be_used_again_and_redacted_keys_are_refused() {
    let app = TestApp::new().await;
    let token = app.admin.clone();
    let name = unique("reused");
    let create = |content: Value| {
        let body = json!({"name": name, "type": "CacheRule", "content": content});
        app.request(Method::POST, CONFIGS, Some(&token), Some(body))
    };
    let (status, _, first) = create(cache_rule(&unique("/reused"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = app
        .request(
            Method::DELETE,
            &format!("{CONFIGS}/{}", id_of(&first)),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, second) = create(cache_rule(&unique("/reused"))).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_ne!(id_of(&first), id_of(&second));

    // Sending back what GET shows (a redacted key) is refused, not stored.
    let (content, _) = ssl_certificate(&format!("{}.example.com", unique("echo")));
    let tls = app.create_config(&token, "SSLCertificate", content).await;
    let (_, _, shown) = app.get(&format!("{CONFIGS}/{}", id_of(&tls)), &token).await;
    let echoed = app
        .request(
            Method::PUT,
            &format!("{CONFIGS}/{}", id_of(&tls)),
            Some(&token),
            Some(json!({"content": shown["content"]})),
        )
        .await;
    assert_error(&echoed, StatusCode::BAD_REQUEST, "CONFIG_VALIDATION_ERROR");
    assert!(
        echoed.2["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["field"] == "content.privateKey"),
        "{}",
        echoed.2
    );
}
