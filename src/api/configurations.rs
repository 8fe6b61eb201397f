//! Configurations, their versions, tags, diffs, validation, approval and conflicts
//! (SPEC §5, configuration rows).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::{Json, OptionalJson, PageQuery, Path, Principal, Query};
use super::middleware::current_trace_id;
use super::openapi::{Conflict, NotFound};
use super::state::ApiState;
use super::views::{
    ConfigurationList, ConflictsAnswer, DiffAnswer, ValidationAnswer, VersionList, VersionSummary,
};
use crate::model::{
    Bump, ConfigStatus, ConfigType, Configuration, ConfigurationVersion, Role, Timestamp,
};
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
        // Metadata travels with every push to the edges, like content.
        if key.chars().chain(value.chars()).any(validate::is_control) {
            return Err(ApiError::invalid_field(
                format!("metadata.{key}"),
                "metadata keys and values must not contain control characters",
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

/// A new configuration; its `content` must satisfy the schema of its `type`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ConfigurationCreate)]
pub struct CreateBody {
    /// Unique; surrounding blanks are trimmed.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 128)]
    name: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = ConfigType, required = true)]
    config_type: Option<String>,
    #[schema(value_type = String, max_length = 4096)]
    description: Option<String>,
    /// At most 1 MiB as JSON.
    #[schema(value_type = Object, required = true)]
    content: Option<Value>,
    /// The only schema version is `1.0`.
    #[schema(value_type = String, pattern = "^1\\.0$")]
    schema_version: Option<String>,
    /// At most 32 tags of 1–64 letters, digits, `-`, `_` and `.`.
    #[schema(value_type = Vec<String>, max_items = 32)]
    tags: Option<Vec<String>>,
    /// At most 64 entries; keys 1–128 bytes, values at most 4096 bytes.
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Option<BTreeMap<String, String>>,
}

fn parse_type(text: Option<&str>) -> Result<ConfigType, ApiError> {
    let text = text.ok_or_else(|| ApiError::invalid_field("type", "type is required"))?;
    text.parse()
        .map_err(|e: String| ApiError::invalid_field("type", e))
}

/// Create a configuration (Draft, 1.0.0).
#[utoipa::path(
    post,
    path = "/configurations",
    operation_id = "createConfiguration",
    tag = "configurations",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The configuration", body = Configuration,
            headers(("Location" = String, description = "The configuration's URL"))),
        (status = 409, response = Conflict),
    ),
)]
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

/// Filters of the configuration list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    /// Only configurations of this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<ConfigType>)]
    config_type: Option<String>,
    /// Only configurations in this status.
    #[param(value_type = Option<ConfigStatus>)]
    status: Option<String>,
    /// Comma-separated tags, all of which a configuration must have.
    tags: Option<String>,
    /// Part of the name, any case.
    name: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// List configurations, newest first.
#[utoipa::path(
    get,
    path = "/configurations",
    operation_id = "listConfigurations",
    tag = "configurations",
    params(ListFilter, PageQuery),
    responses((status = 200, description = "A page of configurations", body = ConfigurationList)),
)]
pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    Query(filter): Query<ListFilter>,
) -> Result<axum::Json<ConfigurationList>, ApiError> {
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
    Ok(axum::Json(ConfigurationList::page(views, page)))
}

/// Get a configuration; its ETag is the current version.
#[utoipa::path(
    get,
    path = "/configurations/{id}",
    operation_id = "getConfiguration",
    tag = "configurations",
    params(("id" = String, Path, description = "The configurationId")),
    responses(
        (status = 200, description = "The configuration", body = Configuration,
            headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 404, response = NotFound),
    ),
)]
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

/// A new version of a configuration's content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ConfigurationUpdate)]
pub struct UpdateBody {
    /// At most 1 MiB as JSON; it must satisfy the schema of the configuration's type.
    #[schema(value_type = Object, required = true)]
    content: Option<Value>,
    #[schema(value_type = String, max_length = 4096)]
    change_description: Option<String>,
    #[schema(value_type = String)]
    description: Option<String>,
    /// Which part of the version to raise (default `minor`).
    #[schema(value_type = Bump)]
    bump: Option<String>,
    /// At most 64 entries; keys 1–128 bytes, values at most 4096 bytes.
    #[schema(value_type = BTreeMap<String, String>)]
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

/// Update: a new immutable version, back to Draft.
#[utoipa::path(
    put,
    path = "/configurations/{id}",
    operation_id = "updateConfiguration",
    tag = "configurations",
    params(
        ("id" = String, Path, description = "The configurationId"),
        ("If-Match" = Option<String>, Header, description = "The version the change is based on; another current version is a 409"),
    ),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The configuration at its new version", body = Configuration,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
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

/// Delete a configuration (409 while deployed).
#[utoipa::path(
    delete,
    path = "/configurations/{id}",
    operation_id = "deleteConfiguration",
    tag = "configurations",
    params(("id" = String, Path, description = "The configurationId")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
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

fn report_body(configuration_id: Option<&str>, report: ValidationReport) -> ValidationAnswer {
    ValidationAnswer {
        is_valid: report.is_valid(),
        configuration_id: configuration_id.map(str::to_string),
        validated_at: Timestamp::now(),
        errors: report.errors,
        warnings: report.warnings,
    }
}

/// A configuration to validate without saving it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ValidateRequest)]
pub struct ValidateBody {
    #[serde(rename = "type")]
    #[schema(value_type = ConfigType, required = true)]
    config_type: Option<String>,
    #[schema(value_type = Object, required = true)]
    content: Option<Value>,
}

/// Validate an unsaved configuration.
#[utoipa::path(
    post,
    path = "/configurations/validate",
    operation_id = "validateConfiguration",
    tag = "configurations",
    request_body = ValidateBody,
    responses((status = 200, description = "The findings; an invalid body is still a 200", body = ValidationAnswer)),
)]
pub async fn validate_unsaved(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<ValidateBody>,
) -> Result<axum::Json<ValidationAnswer>, ApiError> {
    principal.require(Role::Developer)?;
    let config_type = parse_type(body.config_type.as_deref())?;
    let content = check_content(&body.content)?;
    let report = state
        .configurations()
        .validate_unsaved(config_type, &content)
        .await?;
    Ok(axum::Json(report_body(None, report)))
}

/// Validate a stored configuration against today's other configurations.
#[utoipa::path(
    post,
    path = "/configurations/{id}/validate",
    operation_id = "validateStoredConfiguration",
    tag = "configurations",
    params(("id" = String, Path, description = "The configurationId")),
    responses(
        (status = 200, description = "The findings", body = ValidationAnswer),
        (status = 404, response = NotFound),
    ),
)]
pub async fn validate_stored(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ValidationAnswer>, ApiError> {
    principal.require(Role::Developer)?;
    let report = state.configurations().validate_stored(&id).await?;
    Ok(axum::Json(report_body(Some(&id), report)))
}

/// An approval; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApproveRequest)]
pub struct ApproveBody {
    #[schema(value_type = String)]
    notes: Option<String>,
    /// The version to approve (default: the latest).
    #[schema(value_type = String)]
    version: Option<String>,
}

/// Approve a version (four-eyes).
#[utoipa::path(
    post,
    path = "/configurations/{id}/approve",
    operation_id = "approveConfiguration",
    tag = "configurations",
    params(("id" = String, Path, description = "The configurationId")),
    request_body(content = Option<ApproveBody>, description = "May be left out"),
    responses(
        (status = 200, description = "The configuration", body = Configuration),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
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

/// What the version list includes beyond the versions' metadata.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct VersionListQuery {
    /// `true` to include each version's content (default `false`).
    #[param(value_type = Option<bool>)]
    include_content: Option<String>,
}

/// List versions, newest first, without their content unless `includeContent=true`.
#[utoipa::path(
    get,
    path = "/configurations/{id}/versions",
    operation_id = "listVersions",
    tag = "configurations",
    params(
        ("id" = String, Path, description = "The configurationId"),
        PageQuery,
        VersionListQuery,
    ),
    responses(
        (status = 200, description = "A page of versions", body = VersionList),
        (status = 404, response = NotFound),
    ),
)]
pub async fn versions(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
    Query(options): Query<VersionListQuery>,
) -> Result<axum::Json<VersionList>, ApiError> {
    principal.require(Role::Viewer)?;
    let page = page.check()?;
    let include_content = match options.include_content.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "includeContent",
                "includeContent must be true or false",
            ));
        }
    };
    let configuration = load(&state, id.clone()).await?;
    let mut versions = state.store().read(move |r| r.versions(&id)).await?;
    versions.reverse();
    let total = versions.len();
    let views: Vec<VersionSummary> = versions
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|v| VersionSummary::of(version_view(configuration.config_type, v), include_content))
        .collect();
    Ok(axum::Json(VersionList::of(views, total, page)))
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

/// Get one version.
#[utoipa::path(
    get,
    path = "/configurations/{id}/versions/{version}",
    operation_id = "getVersion",
    tag = "configurations",
    params(
        ("id" = String, Path, description = "The configurationId"),
        ("version" = String, Path, description = "MAJOR.MINOR.PATCH"),
    ),
    responses(
        (status = 200, description = "The version", body = ConfigurationVersion),
        (status = 404, response = NotFound),
    ),
)]
pub async fn version(
    State(state): State<ApiState>,
    principal: Principal,
    Path((id, version)): Path<(String, String)>,
) -> Result<axum::Json<ConfigurationVersion>, ApiError> {
    principal.require(Role::Viewer)?;
    let (configuration, found) = load_version(&state, id, version).await?;
    Ok(axum::Json(version_view(configuration.config_type, found)))
}

/// Move a tag onto a version.
#[utoipa::path(
    put,
    path = "/configurations/{id}/versions/{version}/tags/{tag}",
    operation_id = "tagVersion",
    tag = "configurations",
    params(
        ("id" = String, Path, description = "The configurationId"),
        ("version" = String, Path, description = "MAJOR.MINOR.PATCH"),
        ("tag" = String, Path, description = "1–64 letters, digits, '-', '_' and '.'",
            pattern = "^[A-Za-z0-9._-]{1,64}$"),
    ),
    responses(
        (status = 200, description = "The tagged version", body = ConfigurationVersion),
        (status = 404, response = NotFound),
    ),
)]
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

/// The two versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// Default: the version before `to`.
    from: Option<String>,
    /// Default: the latest version.
    to: Option<String>,
}

/// Diff two versions.
#[utoipa::path(
    get,
    path = "/configurations/{id}/diff",
    operation_id = "diffVersions",
    tag = "configurations",
    params(("id" = String, Path, description = "The configurationId"), DiffQuery),
    responses(
        (status = 200, description = "The changes, breaking ones counted", body = DiffAnswer),
        (status = 404, response = NotFound),
    ),
)]
pub async fn diff(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<axum::Json<DiffAnswer>, ApiError> {
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
    let mut result = validate::diff::diff(&old, &new, config_type);
    // Secrets may be compared, never shown.
    for change in &mut result.changes {
        if change.field.ends_with("/privateKey") {
            for value in [&mut change.old_value, &mut change.new_value] {
                if value.as_ref().is_some_and(|v| !v.is_null()) {
                    *value = Some(Value::String("[REDACTED]".into()));
                }
            }
        }
    }
    Ok(axum::Json(DiffAnswer {
        configuration_id: configuration.configuration_id.clone(),
        from_version: from.version.clone(),
        to_version: to.version.clone(),
        changes: result.changes,
        summary: result.summary,
    }))
}

/// The conflict layer alone.
#[utoipa::path(
    get,
    path = "/configurations/{id}/conflicts",
    operation_id = "getConflicts",
    tag = "configurations",
    params(("id" = String, Path, description = "The configurationId")),
    responses(
        (status = 200, description = "Overlaps and contradictions with other configurations", body = ConflictsAnswer),
        (status = 404, response = NotFound),
    ),
)]
pub async fn conflicts(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ConflictsAnswer>, ApiError> {
    principal.require(Role::Viewer)?;
    let report = state.configurations().conflicts(&id).await?;
    Ok(axum::Json(ConflictsAnswer {
        configuration_id: id,
        has_conflicts: !report.errors.is_empty() || !report.warnings.is_empty(),
        errors: report.errors,
        warnings: report.warnings,
    }))
}

/// The JSON Schema (draft 2020-12) of a configuration type.
#[utoipa::path(
    get,
    path = "/schemas/{type}",
    operation_id = "getSchema",
    tag = "schemas",
    params(("type" = String, Path, description = "A configuration type, any case")),
    responses(
        (status = 200, description = "The schema", content_type = "application/schema+json", body = Object),
        (status = 404, response = NotFound),
    ),
)]
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
