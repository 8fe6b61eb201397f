//! Request extractors that fail with the SPEC §5 error shape: the caller's identity, JSON
//! bodies, query strings and paths.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::AuthError;
use crate::model::Role;

/// Who is calling, established from a verified token by the request middleware.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// For edge tokens, the location they speak for.
    pub location: Option<String>,
}

impl Principal {
    /// Refuses the request unless the caller's role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.at_least(needed) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this action needs the {needed} role; you are {}",
                self.role
            )))
        }
    }
}

/// Why the middleware could not establish a principal.
#[derive(Debug, Clone)]
pub struct AuthFailure(pub AuthError);

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let failure = parts
            .extensions
            .get::<AuthFailure>()
            .map(|f| f.0.clone())
            .unwrap_or(AuthError::Missing);
        Err(failure.into())
    }
}

/// A JSON body: `Content-Type: application/json`, valid UTF-8, within the size limit,
/// nested at most serde_json's recursion limit deep.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::validation(
                "the request body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit: body_limit(),
                    }
                } else {
                    ApiError::validation(format!("cannot read the request body: {rejection}"))
                }
            })?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body that may be left out entirely (an empty body gives `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
            || (request.headers().get(CONTENT_TYPE).is_none()
                && request
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .is_none()
                && request
                    .headers()
                    .get(axum::http::header::TRANSFER_ENCODING)
                    .is_none());
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        Json::<T>::from_request(request, state)
            .await
            .map(|j| OptionalJson(j.0))
    }
}

/// Parses a JSON body with an error that says where it went wrong: the field (a dotted path
/// such as `content.origins.0.weight`, or `body` for the body as a whole) is in the details.
///
/// An object that names a key twice is refused, wherever it is: serde_json keeps the last
/// value, so a reviewer reading the first one and an edge running the second one would see two
/// different configurations.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::validation("the request body is not valid UTF-8"));
    }
    let found = std::cell::RefCell::new(Found::default());
    let mut checker = serde_json::Deserializer::from_slice(bytes);
    let checked = serde::de::DeserializeSeed::deserialize(
        UniqueKeys {
            path: String::new(),
            found: &found,
        },
        &mut checker,
    )
    .and_then(|()| checker.end());
    let found = found.into_inner();
    if let Some((field, key)) = found.duplicate {
        return Err(ApiError::invalid_field(
            field,
            format!(
                "duplicate key '{}' in the request body",
                key.escape_debug().take(80).collect::<String>()
            ),
        ));
    }
    if let Err(e) = checked {
        let message = format!("malformed JSON: {e}");
        return Err(match found.error_at.filter(|field| !field.is_empty()) {
            Some(field) => ApiError::invalid_field(field, message),
            None => ApiError::validation(message),
        });
    }
    // Every body of the API is an object; serde would also read a struct from an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid_field(
            "body",
            "the request body must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    match parsed {
        // The checker above read the same bytes to their end.
        Ok(value) => Ok(value),
        Err(error) => {
            let field = dotted(error.path());
            let inner = error.into_inner();
            let message = match inner.classify() {
                serde_json::error::Category::Data => format!("invalid request body: {inner}"),
                _ => format!("malformed JSON: {inner}"),
            };
            Err(ApiError::invalid_field(field, message))
        }
    }
}

/// A serde path as the API names fields: `content.origins.0.weight`, `body` when empty.
fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let segments: Vec<String> = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect();
    if segments.is_empty() {
        "body".to_owned()
    } else {
        segments.join(".")
    }
}

/// What [`UniqueKeys`] found where it stopped.
#[derive(Default)]
struct Found {
    /// The dotted path of a key named twice, and the key.
    duplicate: Option<(String, String)>,
    /// The dotted path of the innermost value that could not be read (a number out of range,
    /// a truncated string), "" for the document as a whole.
    error_at: Option<String>,
}

/// Walks a JSON document and stops at the first object that names a key twice or the first
/// value that cannot be read, recording where.
struct UniqueKeys<'a> {
    path: String,
    found: &'a std::cell::RefCell<Found>,
}

impl UniqueKeys<'_> {
    fn child(&self, segment: &str) -> Self {
        let path = if self.path.is_empty() {
            segment.to_owned()
        } else {
            format!("{}.{segment}", self.path)
        };
        UniqueKeys {
            path,
            found: self.found,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let found = self.found;
        let path = self.path.clone();
        deserializer.deserialize_any(self).inspect_err(|_| {
            // The innermost value fails first; the values around it keep its place.
            found.borrow_mut().error_at.get_or_insert(path);
        })
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        while seq
            .next_element_seed(self.child(&index.to_string()))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                self.found.borrow_mut().duplicate = Some((self.child(&key).path, key));
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(self.child(&key))?;
            seen.insert(key);
        }
        Ok(())
    }
}

static BODY_LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Records the configured body limit for error messages.
pub fn set_body_limit(limit: usize) {
    let _ = BODY_LIMIT.set(limit);
}

fn body_limit() -> usize {
    BODY_LIMIT.get().copied().unwrap_or(2 * 1024 * 1024)
}

/// A query string; a malformed one is a 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::validation(format!("invalid query string: {}", e.body_text())))
    }
}

/// Path parameters; an undecodable one is a 400.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::validation(format!("invalid path: {}", e.body_text())))
    }
}

/// `limit` and `offset` of list endpoints, as given.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Items to skip (default 0).
    #[param(value_type = Option<u64>, minimum = 0)]
    pub offset: Option<String>,
}

/// A checked page request: limit 1–100 (default 20), offset ≥ 0.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: usize,
    pub offset: usize,
}

impl PageQuery {
    pub fn check(&self) -> Result<PageRequest, ApiError> {
        let limit = match &self.limit {
            None => 20,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid_field(
                        "limit",
                        "limit must be a whole number from 1 to 100",
                    ));
                }
            },
        };
        let offset = match &self.offset {
            None => 0,
            Some(text) => text.parse::<usize>().map_err(|_| {
                ApiError::invalid_field("offset", "offset must be a whole number, 0 or more")
            })?,
        };
        Ok(PageRequest { limit, offset })
    }
}
