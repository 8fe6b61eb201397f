//! Configurations, their versions, tags, diffs, validation, approval and conflicts
//! (SPEC §5, configuration rows).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Json, OptionalJson, PageQuery, Path, Principal, Query, page_body};
use super::middleware::current_trace_id;
use super::state::ApiState;
use crate::model::{Bump, ConfigStatus, ConfigType, Configuration, ConfigurationVersion, Role};
use crate::service::Caller;
use crate::service::configurations::{NewConfiguration, NewVersion};
use crate::validate::{self, ValidationReport};

/// Largest configuration content, as serialized JSON.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

fn caller(principal: &Principal) -> Caller {
    Caller::new(principal.subject.clone(), current_trace_id())
}

/// The configuration as the API shows it: secrets redacted.
fn view(mut configuration: Configuration) -> Configuration {
    validate::redact_secrets(configuration.config_type, &mut configuration.content);
    configuration
}

fn version_view(
    config_type: ConfigType,
    mut version: ConfigurationVersion,
) -> ConfigurationVersion {
    validate::redact_secrets(config_type, &mut version.content);
    version
}

async fn load(state: &ApiState, id: String) -> Result<Configuration, ApiError> {
    super::find(state, "configuration", id, |r, id| r.configuration(id)).await
}

fn check_content(content: &Option<Value>) -> Result<Value, ApiError> {
    let content = content
        .clone()
        .ok_or_else(|| ApiError::invalid_field("content", "content is required"))?;
    if !content.is_object() {
        return Err(ApiError::invalid_field(
            "content",
            "content must be a JSON object",
        ));
    }
    let size = serde_json::to_vec(&content)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if size > MAX_CONTENT_BYTES {
        return Err(ApiError::invalid_field(
            "content",
            format!("content is {size} bytes; the limit is {MAX_CONTENT_BYTES}"),
        ));
    }
    Ok(content)
}

pub(super) fn check_metadata(
    metadata: &Option<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let metadata = metadata.clone().unwrap_or_default();
    if metadata.len() > 64 {
        return Err(ApiError::invalid_field(
            "metadata",
            "at most 64 metadata entries",
        ));
    }
    for (key, value) in &metadata {
        if key.is_empty() || key.len() > 128 || value.len() > 4096 {
            return Err(ApiError::invalid_field(
                format!("metadata.{key}"),
                "metadata keys are 1–128 bytes and values at most 4096 bytes",
            ));
        }
    }
    Ok(metadata)
}

fn check_tag(tag: &str, field: &str) -> Result<(), ApiError> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            field,
            "tags are 1–64 characters of letters, digits, '-', '_' and '.'",
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    name: Option<String>,
    #[serde(rename = "type")]
    config_type: Option<String>,
    description: Option<String>,
    content: Option<Value>,
    schema_version: Option<String>,
    tags: Option<Vec<String>>,
    metadata: Option<BTreeMap<String, String>>,
}

fn parse_type(text: Option<&str>) -> Result<ConfigType, ApiError> {
    let text = text.ok_or_else(|| ApiError::invalid_field("type", "type is required"))?;
    text.parse()
        .map_err(|e: String| ApiError::invalid_field("type", e))
}

pub async fn create(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    principal.require(Role::Developer)?;
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::invalid_field(
            "name",
            "name must be 1 to 128 characters",
        ));
    }
    let config_type = parse_type(body.config_type.as_deref())?;
    let content = check_content(&body.content)?;
    let metadata = check_metadata(&body.metadata)?;
    let tags = body.tags.clone().unwrap_or_default();
    if tags.len() > 32 {
        return Err(ApiError::invalid_field("tags", "at most 32 tags"));
    }
    for (i, tag) in tags.iter().enumerate() {
        check_tag(tag, &format!("tags.{i}"))?;
    }
    let schema_version = body.schema_version.clone().unwrap_or_else(|| "1.0".into());
    if schema_version != "1.0" {
        return Err(ApiError::invalid_field(
            "schemaVersion",
            "the only schema version is \"1.0\"",
        ));
    }
    let description = body.description.clone().unwrap_or_default();
    if description.len() > 4096 {
        return Err(ApiError::invalid_field("description", "at most 4096 bytes"));
    }

    let configuration = state
        .configurations()
        .create(
            &caller(&principal),
            NewConfiguration {
                name,
                config_type,
                description,
                content,
                schema_version,
                tags,
                metadata,
            },
        )
        .await?;
    let location = format!("/api/v1/configurations/{}", configuration.configuration_id);
    let mut response = (StatusCode::CREATED, axum::Json(view(configuration))).into_response();
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct ListFilter {
    #[serde(rename = "type")]
    config_type: Option<String>,
    status: Option<String>,
    tags: Option<String>,
    name: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    Query(filter): Query<ListFilter>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let page = filter.page.check()?;
    let config_type = match filter.config_type.as_deref() {
        Some(t) => Some(
            t.parse::<ConfigType>()
                .map_err(|e| ApiError::invalid_field("type", e))?,
        ),
        None => None,
    };
    let status = match filter.status.as_deref() {
        Some(s) => Some(
            s.parse::<ConfigStatus>()
                .map_err(|e| ApiError::invalid_field("status", e))?,
        ),
        None => None,
    };
    let tags: Vec<String> = filter
        .tags
        .as_deref()
        .map(|t| {
            t.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let name = filter.name.clone().map(|n| n.to_lowercase());
    let mut all = state.store().read(|reader| reader.configurations()).await?;
    all.retain(|c| {
        config_type.is_none_or(|t| c.config_type == t)
            && status.is_none_or(|s| c.status == s)
            && tags.iter().all(|t| c.tags.contains(t))
            && name
                .as_deref()
                .is_none_or(|n| c.name.to_lowercase().contains(n))
    });
    all.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(a.configuration_id.cmp(&b.configuration_id))
    });
    let views: Vec<Configuration> = all.into_iter().map(view).collect();
    Ok(axum::Json(page_body("configurations", views, page)))
}

pub async fn get(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    let configuration = load(&state, id).await?;
    let etag = format!("\"{}\"", configuration.version);
    let mut response = axum::Json(view(configuration)).into_response();
    if let Ok(value) = etag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateBody {
    content: Option<Value>,
    change_description: Option<String>,
    description: Option<String>,
    bump: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::invalid_field("If-Match", "If-Match must be ASCII"))?
                .trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string();
            if text == "*" {
                Ok(None)
            } else {
                Ok(Some(text))
            }
        }
    }
}

pub async fn update(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateBody>,
) -> Result<Response, ApiError> {
    principal.require(Role::Developer)?;
    let expected_version = if_match(&headers)?;
    let content = check_content(&body.content)?;
    let metadata = check_metadata(&body.metadata)?;
    let bump = match body.bump.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("minor") => Bump::Minor,
        Some("major") => Bump::Major,
        Some("patch") => Bump::Patch,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "bump",
                "bump must be major, minor or patch",
            ));
        }
    };
    let change_description = body.change_description.clone().unwrap_or_default();
    if change_description.len() > 4096 {
        return Err(ApiError::invalid_field(
            "changeDescription",
            "at most 4096 bytes",
        ));
    }
    let configuration = state
        .configurations()
        .update(
            &caller(&principal),
            &id,
            NewVersion {
                content,
                change_description,
                description: body.description.clone(),
                bump,
                metadata,
                expected_version,
            },
        )
        .await?;
    let etag = format!("\"{}\"", configuration.version);
    let mut response = axum::Json(view(configuration)).into_response();
    if let Ok(value) = etag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

pub async fn delete(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    state
        .configurations()
        .delete(&caller(&principal), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn report_body(configuration_id: Option<&str>, report: &ValidationReport) -> Value {
    json!({
        "isValid": report.is_valid(),
        "configurationId": configuration_id,
        "validatedAt": crate::model::Timestamp::now(),
        "errors": report.errors,
        "warnings": report.warnings,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateBody {
    #[serde(rename = "type")]
    config_type: Option<String>,
    content: Option<Value>,
}

/// POST /configurations/validate: validates a body without saving it.
pub async fn validate_unsaved(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<ValidateBody>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Developer)?;
    let config_type = parse_type(body.config_type.as_deref())?;
    let content = check_content(&body.content)?;
    let report = state
        .configurations()
        .validate_unsaved(config_type, &content)
        .await?;
    Ok(axum::Json(report_body(None, &report)))
}

pub async fn validate_stored(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Developer)?;
    let report = state.configurations().validate_stored(&id).await?;
    Ok(axum::Json(report_body(Some(&id), &report)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApproveBody {
    notes: Option<String>,
    version: Option<String>,
}

pub async fn approve(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ApproveBody>,
) -> Result<axum::Json<Configuration>, ApiError> {
    principal.require(Role::Admin)?;
    let configuration = state
        .configurations()
        .approve(
            &caller(&principal),
            &id,
            body.version.clone(),
            body.notes.clone(),
        )
        .await?;
    Ok(axum::Json(view(configuration)))
}

pub async fn versions(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let page = page.check()?;
    let configuration = load(&state, id.clone()).await?;
    let mut versions = state.store().read(move |r| r.versions(&id)).await?;
    versions.reverse();
    let views: Vec<ConfigurationVersion> = versions
        .into_iter()
        .map(|v| version_view(configuration.config_type, v))
        .collect();
    Ok(axum::Json(page_body("versions", views, page)))
}

async fn load_version(
    state: &ApiState,
    id: String,
    version: String,
) -> Result<(Configuration, ConfigurationVersion), ApiError> {
    let configuration = load(state, id.clone()).await?;
    let shown = format!("version {version} of configuration '{id}' not found");
    let found = state
        .store()
        .read(move |r| r.version(&id, &version))
        .await?
        .ok_or(ApiError::NotFound(shown))?;
    Ok((configuration, found))
}

pub async fn version(
    State(state): State<ApiState>,
    principal: Principal,
    Path((id, version)): Path<(String, String)>,
) -> Result<axum::Json<ConfigurationVersion>, ApiError> {
    principal.require(Role::Viewer)?;
    let (configuration, found) = load_version(&state, id, version).await?;
    Ok(axum::Json(version_view(configuration.config_type, found)))
}

pub async fn tag(
    State(state): State<ApiState>,
    principal: Principal,
    Path((id, version, tag)): Path<(String, String, String)>,
) -> Result<axum::Json<ConfigurationVersion>, ApiError> {
    principal.require(Role::Operator)?;
    check_tag(&tag, "tag")?;
    let (config_type, version) = state
        .configurations()
        .tag(&caller(&principal), &id, version, tag)
        .await?;
    Ok(axum::Json(version_view(config_type, version)))
}

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

pub async fn diff(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let configuration = load(&state, id.clone()).await?;
    let versions = state.store().read(move |r| r.versions(&id)).await?;
    let find = |wanted: &str, field: &str| {
        versions
            .iter()
            .find(|v| v.version == wanted)
            .ok_or_else(|| ApiError::NotFound(format!("{field} version {wanted} not found")))
    };
    let to = match &query.to {
        Some(v) => find(v, "to")?,
        None => versions
            .last()
            .ok_or_else(|| ApiError::NotFound("no versions".into()))?,
    };
    let from = match &query.from {
        Some(v) => find(v, "from")?,
        None => {
            let position = versions
                .iter()
                .position(|v| v.version == to.version)
                .unwrap_or(0);
            &versions[position.saturating_sub(1)]
        }
    };
    let config_type = configuration.config_type;
    let old = state.configurations().opened(config_type, &from.content)?;
    let new = state.configurations().opened(config_type, &to.content)?;
    let mut result = serde_json::to_value(validate::diff::diff(&old, &new, config_type))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Secrets may be compared, never shown.
    if let Some(changes) = result.get_mut("changes").and_then(Value::as_array_mut) {
        for change in changes {
            let secret = change
                .get("field")
                .and_then(Value::as_str)
                .is_some_and(|f| f.ends_with("/privateKey"));
            if secret {
                for key in ["oldValue", "newValue"] {
                    if change.get(key).is_some_and(|v| !v.is_null()) {
                        change[key] = Value::String("[REDACTED]".into());
                    }
                }
            }
        }
    }
    if let Some(object) = result.as_object_mut() {
        object.insert(
            "configurationId".into(),
            configuration.configuration_id.clone().into(),
        );
        object.insert("fromVersion".into(), from.version.clone().into());
        object.insert("toVersion".into(), to.version.clone().into());
    }
    Ok(axum::Json(result))
}

pub async fn conflicts(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let report = state.configurations().conflicts(&id).await?;
    Ok(axum::Json(json!({
        "configurationId": id,
        "hasConflicts": !report.errors.is_empty() || !report.warnings.is_empty(),
        "errors": report.errors,
        "warnings": report.warnings,
    })))
}

pub async fn schema(
    principal: Principal,
    Path(config_type): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    let config_type: ConfigType = config_type
        .parse()
        .map_err(|e: String| ApiError::NotFound(e))?;
    let schema = crate::validate::schema(config_type);
    Ok((
        [(header::CONTENT_TYPE, "application/schema+json")],
        schema.to_string(),
    )
        .into_response())
}
