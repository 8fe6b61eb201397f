//! GET /api/v1/openapi.json: the OpenAPI 3.1 description of the API, generated from one
//! table of operations so that it cannot drift from the route list by omission.

use axum::extract::State;
use serde_json::{Map, Value, json};

use super::state::ApiState;

/// One documented operation: (method, path under /api/v1, summary, roles, success status,
/// request schema).
pub type Operation = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u16,
    Option<&'static str>,
);

#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    (
        "post",
        "/authentication/login",
        "Log in and receive a JWT",
        "none",
        200,
        Some("Login"),
    ),
    (
        "post",
        "/users",
        "Create a user",
        "Admin",
        201,
        Some("UserCreate"),
    ),
    ("get", "/users", "List users", "Admin", 200, None),
    (
        "delete",
        "/users/{username}",
        "Delete a user",
        "Admin",
        204,
        None,
    ),
    (
        "put",
        "/users/{username}/password",
        "Change a password",
        "Admin or self",
        204,
        Some("Password"),
    ),
    (
        "post",
        "/configurations",
        "Create a configuration (Draft, 1.0.0)",
        "Developer, Operator, Admin",
        201,
        Some("ConfigurationCreate"),
    ),
    (
        "get",
        "/configurations",
        "List configurations (filters: type, status, tags, name)",
        "all",
        200,
        None,
    ),
    (
        "post",
        "/configurations/validate",
        "Validate an unsaved configuration",
        "Developer, Operator, Admin",
        200,
        Some("ValidateBody"),
    ),
    (
        "get",
        "/configurations/{id}",
        "Get a configuration",
        "all",
        200,
        None,
    ),
    (
        "put",
        "/configurations/{id}",
        "Update: a new immutable version, back to Draft (If-Match guards lost updates)",
        "Developer, Operator, Admin",
        200,
        Some("ConfigurationUpdate"),
    ),
    (
        "delete",
        "/configurations/{id}",
        "Delete a configuration (409 while deployed)",
        "Admin",
        204,
        None,
    ),
    (
        "post",
        "/configurations/{id}/validate",
        "Validate a stored configuration",
        "Developer, Operator, Admin",
        200,
        None,
    ),
    (
        "post",
        "/configurations/{id}/approve",
        "Approve a version (four-eyes)",
        "Admin",
        200,
        Some("Approve"),
    ),
    (
        "get",
        "/configurations/{id}/versions",
        "List versions, newest first",
        "all",
        200,
        None,
    ),
    (
        "get",
        "/configurations/{id}/versions/{version}",
        "Get one version",
        "all",
        200,
        None,
    ),
    (
        "put",
        "/configurations/{id}/versions/{version}/tags/{tag}",
        "Move a tag onto a version",
        "Operator, Admin",
        200,
        None,
    ),
    (
        "get",
        "/configurations/{id}/diff",
        "Diff two versions (from, to)",
        "all",
        200,
        None,
    ),
    (
        "get",
        "/configurations/{id}/conflicts",
        "The conflict layer alone",
        "all",
        200,
        None,
    ),
    (
        "get",
        "/schemas",
        "Index of the JSON Schemas",
        "all",
        200,
        None,
    ),
    (
        "get",
        "/schemas/{type}",
        "The JSON Schema (draft 2020-12) of a configuration type",
        "all",
        200,
        None,
    ),
    (
        "post",
        "/edge-locations",
        "Register an edge; answers its agent token once",
        "Admin",
        201,
        Some("EdgeLocationBody"),
    ),
    (
        "get",
        "/edge-locations",
        "List edges (filters: region, countryCode, type, isActive, isHealthy)",
        "all",
        200,
        None,
    ),
    (
        "get",
        "/edge-locations/{id}",
        "Get an edge",
        "all",
        200,
        None,
    ),
    (
        "put",
        "/edge-locations/{id}",
        "Update an edge",
        "Admin",
        200,
        Some("EdgeLocationBody"),
    ),
    (
        "delete",
        "/edge-locations/{id}",
        "Delete an edge (409 while a running deployment targets it)",
        "Admin",
        204,
        None,
    ),
    (
        "post",
        "/edge-locations/{id}/heartbeat",
        "Post a heartbeat",
        "Edge (own id), Admin",
        200,
        Some("Heartbeat"),
    ),
    (
        "post",
        "/edge-locations/{id}/token",
        "Rotate the edge's agent token",
        "Admin",
        200,
        None,
    ),
    (
        "delete",
        "/edge-locations/{id}/quarantine",
        "Clear an edge's quarantine",
        "Admin",
        200,
        None,
    ),
    ("get", "/edge-locations/{id}/metrics", "Metrics of one edge (window, from/to, step)", "all", 200, None),
    ("post", "/configurations/{id}/versions/{version}/deploy", "Deploy this version (shorthand for POST /deployments)", "Operator, Admin", 202, Some("DeploymentCreate")),
    ("post", "/deployments", "Start a deployment (202), or plan it with ?dryRun=true", "Operator, Admin", 202, Some("DeploymentCreate")),
    ("get", "/deployments", "List deployments (filters: configurationId, status, strategy)", "all", 200, None),
    ("get", "/deployments/{id}", "A deployment with its timeline and progress", "all", 200, None),
    ("get", "/deployments/{id}/edge-locations", "Per-edge state of a deployment", "all", 200, None),
    ("get", "/deployments/{id}/events", "Server-Sent Events: the timeline, then live events until the end", "all", 200, None),
    ("post", "/deployments/{id}/promote", "Skip the rest of the current wait", "Operator, Admin", 200, None),
    ("post", "/deployments/{id}/pause", "Pause: no new pushes", "Operator, Admin", 200, None),
    ("post", "/deployments/{id}/resume", "Resume where it paused", "Operator, Admin", 200, None),
    ("post", "/deployments/{id}/rollback", "Roll every touched edge back ({reason})", "Operator, Admin", 200, Some("Rollback")),
    ("post", "/deployments/{id}/approve-next-region", "Open the next region's approval gate", "Operator, Admin", 200, None),
    ("post", "/freeze", "Freeze all rollouts ({reason})", "Admin", 200, Some("Freeze")),
    ("get", "/freeze", "The freeze state", "all", 200, None),
    ("delete", "/freeze", "Lift the freeze", "Admin", 200, None),
    ("get", "/metrics/edge-locations/{id}", "Metrics of one edge (window, from/to, step)", "all", 200, None),
    ("get", "/metrics/configurations/{id}", "Metrics of the edges running a configuration, aggregate and per location", "all", 200, None),
    ("get", "/metrics/regions/{region}", "Metrics of a region, aggregate and per location", "all", 200, None),
    ("get", "/metrics/deployments/{id}", "Canary against baseline, with every analysis verdict", "all", 200, None),
    ("get", "/metrics/thresholds", "The server-wide default RollbackConfig", "all", 200, None),
    ("put", "/metrics/thresholds", "Set the server-wide default RollbackConfig", "Admin", 200, Some("RollbackConfig")),
    (
        "get",
        "/audit",
        "The audit log (filters: entity, user, since)",
        "Admin",
        200,
        None,
    ),
    ("get", "/openapi.json", "This document", "none", 200, None),
];

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// Builds the document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, roles, status, body) in OPERATIONS {
        let mut responses = Map::new();
        responses.insert(status.to_string(), json!({"description": "success"}));
        for (code, text) in [
            (
                "400",
                "invalid input (VALIDATION_ERROR, CONFIG_VALIDATION_ERROR)",
            ),
            ("401", "missing or invalid token"),
            ("403", "role not allowed"),
            ("404", "not found"),
            ("409", "conflict"),
            ("413", "body too large"),
            ("429", "rate limited (Retry-After)"),
        ] {
            responses.insert(code.into(), error_response(text));
        }
        let mut operation = json!({
            "summary": summary,
            "description": format!("Roles: {roles}."),
            "parameters": parameters(path),
            "responses": responses,
        });
        if *roles == "none" {
            operation["security"] = json!([]);
        }
        if let Some(schema) = body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
            });
        }
        let entry = paths
            .entry(format!("/api/v1{path}"))
            .or_insert_with(|| Value::Object(Map::new()));
        entry[*method] = operation;
    }
    for (path, summary) in [
        ("/health", "Liveness"),
        ("/ready", "Readiness (503 while starting or draining)"),
        ("/metrics", "Prometheus metrics"),
    ] {
        paths.insert(
            path.into(),
            json!({"get": {"summary": summary, "security": [], "responses": {"200": {"description": "ok"}}}}),
        );
    }
    let open_object = json!({"type": "object", "additionalProperties": true});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "edgeplane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control plane for CDN edge configuration."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message", "details", "traceId", "timestamp"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "details": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
                            "traceId": {"type": "string"},
                            "timestamp": {"type": "string", "format": "date-time"}
                        }
                    }}
                },
                "Login": {"type": "object", "required": ["username", "password"], "properties": {"username": {"type": "string"}, "password": {"type": "string"}}},
                "UserCreate": {"type": "object", "required": ["username", "password", "role"], "properties": {"username": {"type": "string"}, "password": {"type": "string", "minLength": 12}, "role": {"enum": ["Viewer", "Developer", "Operator", "Admin"]}}},
                "Password": {"type": "object", "required": ["password"], "properties": {"password": {"type": "string", "minLength": 12}, "currentPassword": {"type": "string"}}},
                "ConfigurationCreate": {"type": "object", "required": ["name", "type", "content"], "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 128},
                    "type": {"enum": ["CacheRule", "RoutingRule", "SecurityRule", "SSLCertificate", "ResponseModification"]},
                    "description": {"type": "string"}, "content": open_object, "schemaVersion": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}}, "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "ConfigurationUpdate": {"type": "object", "required": ["content"], "properties": {
                    "content": open_object, "changeDescription": {"type": "string"}, "bump": {"enum": ["major", "minor", "patch"]},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "ValidateBody": {"type": "object", "required": ["type", "content"], "properties": {"type": {"type": "string"}, "content": open_object}},
                "Approve": {"type": "object", "properties": {"notes": {"type": "string"}, "version": {"type": "string"}}},
                "EdgeLocationBody": {"type": "object", "required": ["locationId", "name", "region", "countryCode", "endpoint"], "properties": {
                    "locationId": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"}, "name": {"type": "string"}, "region": {"type": "string"},
                    "countryCode": {"type": "string", "pattern": "^[A-Z]{2}$"}, "city": {"type": "string"}, "type": {"enum": ["EdgePOP", "Shield", "Origin"]},
                    "endpoint": {"type": "string", "format": "uri"}, "capacity": {"type": "object"}, "isActive": {"type": "boolean"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "DeploymentCreate": {"type": "object", "required": ["configurationId"], "properties": {
                    "configurationId": {"type": "string"}, "configurationVersion": {"type": "string"},
                    "strategy": {"enum": ["DirectDeployment", "RegionalCanary", "BlueGreenDeployment", "RollingRegional", "GeographicWave"]},
                    "targetRegions": {"type": "array", "items": {"type": "string"}}, "targetLocations": {"type": "array", "items": {"type": "string"}},
                    "canaryConfig": {"type": "object"}, "rollbackConfig": {"$ref": "#/components/schemas/RollbackConfig"},
                    "testDuration": {"type": "string"}, "regionDelay": {"type": "string"}, "requireApproval": {"type": "boolean"},
                    "continueOnFailure": {"type": "boolean"}, "deploymentTime": {"type": "string"}, "days": {"type": "array", "items": {"type": "string"}},
                    "monitorDuration": {"type": "string"}, "failureAction": {"enum": ["rollback", "pause"]}, "acknowledgeWarnings": {"type": "boolean"}}},
                "RollbackConfig": {"type": "object", "properties": {
                    "autoRollback": {"type": "boolean"}, "cacheHitRateThreshold": {"type": "number"}, "errorRateThreshold": {"type": "number"},
                    "p99LatencyThresholdMs": {"type": "number"}, "maxRegression": {"type": "number"}, "minSamples": {"type": "integer"},
                    "breachIntervals": {"type": "integer"}, "maxExtension": {"type": "string"}}},
                "Rollback": {"type": "object", "properties": {"reason": {"type": "string"}}},
                "Freeze": {"type": "object", "properties": {"reason": {"type": "string"}}},
                "Heartbeat": {"type": "object", "properties": {"health": {"type": "object"}, "activeConfigurations": {"type": "object", "additionalProperties": {"type": "string"}}, "metrics": {"type": ["object", "null"]}, "startedAt": {"type": "string"}}}
            }
        }
    })
}

pub async fn document(State(_state): State<ApiState>) -> axum::Json<Value> {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(build).clone())
}
