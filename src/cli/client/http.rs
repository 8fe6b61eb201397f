//! The command-line client's one door to the HTTP API: a reqwest client with rustls, the
//! bearer token, path segments escaped, the SPEC §5 error body turned into a readable error,
//! and the server-sent events of a deployment read line by line.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// How long one ordinary request may take before the client gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client command failed. The exit code follows the kind: usage 2, everything else 1.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad flags, an unreadable file, nothing to log in with.
    #[error("{0}")]
    Usage(String),
    /// Nothing by that name (found by listing, so not an API error).
    #[error("{0}")]
    NotFound(String),
    /// The API answered with an error body.
    #[error("{0}")]
    Api(Box<ApiFailure>),
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {reason}")]
    Connection { url: String, reason: String },
    /// Anything else: an answer that is not what the API promises, a local I/O failure.
    #[error("{0}")]
    Other(String),
}

/// An error answer of the API (SPEC §5), kept in the words the server chose.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// `(field, message)` pairs.
    pub details: Vec<(String, String)>,
    pub trace_id: Option<String>,
    pub retry_after: Option<String>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)?;
        for (field, message) in &self.details {
            if field.is_empty() {
                write!(f, "\n  {message}")?;
            } else if *message != self.message || self.details.len() > 1 {
                write!(f, "\n  {field}: {message}")?;
            }
        }
        if self.status == 401 {
            write!(f, "\n  (log in again with `edgeplane login`)")?;
        }
        if let Some(after) = &self.retry_after {
            write!(f, "\n  retry after {after} s")?;
        }
        if let Some(trace_id) = &self.trace_id {
            write!(f, "\n  trace id: {trace_id}")?;
        }
        Ok(())
    }
}

impl ApiFailure {
    /// Reads the error body; a body that is not the SPEC §5 shape (a proxy's page, say) still
    /// gives the status and the first of its text.
    pub fn from_answer(status: StatusCode, request_id: Option<String>, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        match error {
            Some(error) if error.get("code").is_some_and(Value::is_string) => ApiFailure {
                status: status.as_u16(),
                code: text(error, "code"),
                message: text(error, "message"),
                details: error
                    .get("details")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|d| (text(d, "field"), text(d, "message")))
                    .collect(),
                trace_id: error
                    .get("traceId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or(request_id),
                retry_after: None,
            },
            _ => {
                let shown: String = String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(200)
                    .collect();
                ApiFailure {
                    status: status.as_u16(),
                    code: format!("HTTP_{}", status.as_u16()),
                    message: if shown.is_empty() {
                        status
                            .canonical_reason()
                            .unwrap_or("unexpected answer")
                            .to_string()
                    } else {
                        shown
                    },
                    details: Vec::new(),
                    trace_id: request_id,
                    retry_after: None,
                }
            }
        }
    }
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The innermost causes of a reqwest failure, without the URL (the caller names it once).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut causes: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let message = cause.to_string();
        if !causes.iter().any(|c| c.contains(&message)) {
            causes.push(message);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        // No cause: the top error is all there is; drop its URL, which the caller shows.
        let shown = error.to_string();
        return match error.url() {
            Some(url) => shown.replace(&format!(" ({url})"), ""),
            None => shown,
        };
    }
    causes.join(": ")
}

/// A client of one control plane, with or without a token (login has none).
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// Builds the reqwest client: roots from `ca_file` only when given, else the system's, else
/// none (plain HTTP still works, and an https URL then says what is missing).
fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("edgeplane-cli/", env!("CARGO_PKG_VERSION")))
    };
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Usage(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Usage(format!("the CA file {} is not PEM: {e}", path.display()))
            })?;
            if roots.is_empty() {
                return Err(ClientError::Usage(format!(
                    "the CA file {} holds no certificate",
                    path.display()
                )));
            }
            builder()
                .tls_certs_only(roots)
                .build()
                .map_err(|e| ClientError::Other(format!("http client: {e}")))
        }
        None => match builder().build() {
            Ok(client) => Ok(client),
            Err(_) => builder()
                .tls_certs_only(Vec::new())
                .build()
                .map_err(|e| ClientError::Other(format!("http client: {e}"))),
        },
    }
}

/// Checks a control plane URL and drops a trailing `/` or `/api/v1`.
pub fn normalize_url(text: &str) -> Result<Url, ClientError> {
    let trimmed = text.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
    let url = Url::parse(trimmed)
        .map_err(|e| ClientError::Usage(format!("'{text}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ClientError::Usage(format!(
            "'{text}' is not an http:// or https:// URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Usage(format!(
            "'{text}': the control plane URL takes no query or fragment"
        )));
    }
    Ok(url)
}

impl Api {
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Api, ClientError> {
        Ok(Api {
            http: http_client(ca_file)?,
            base: normalize_url(base)?,
            token,
        })
    }

    /// The control plane's base URL, without `/api/v1`.
    pub fn base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// `{base}/api/v1/{segments…}?{query}`, each segment escaped.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends one request and answers its JSON (`Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Value, ClientError> {
        let url = self.url(segments, query);
        let mut request = self.request(method, url.clone()).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(version) = if_match {
            request = request.header(reqwest::header::IF_MATCH, format!("\"{version}\""));
        }
        let response = request.send().await.map_err(|e| connection(&url, &e))?;
        let status = response.status();
        let request_id = header(&response, "x-request-id");
        let retry_after = header(&response, "retry-after");
        let bytes = response.bytes().await.map_err(|e| connection(&url, &e))?;
        if !status.is_success() {
            let mut failure = ApiFailure::from_answer(status, request_id, &bytes);
            failure.retry_after = retry_after;
            return Err(ClientError::Api(Box::new(failure)));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Other(format!(
                "{url} answered {status} with a body that is not JSON: {e}"
            ))
        })
    }

    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        self.call(Method::GET, segments, query, None, None).await
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, segments, &[], Some(body), None)
            .await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, ClientError> {
        self.call(Method::DELETE, segments, &[], None, None).await
    }

    /// Every item of a paged list (SPEC §5: `{plural: [...], hasMore, nextOffset}`).
    pub async fn list_all(
        &self,
        segments: &[&str],
        plural: &str,
        filters: &[(&str, String)],
    ) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut offset = 0u64;
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", "100".to_string()));
            query.push(("offset", offset.to_string()));
            let page = self.get(segments, &query).await?;
            let batch = page
                .get(plural)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let n_items = batch.len() as u64;
            items.extend(batch);
            let has_more = page.get("hasMore").and_then(Value::as_bool) == Some(true);
            if !has_more || n_items == 0 {
                return Ok(items);
            }
            offset = page
                .get("nextOffset")
                .and_then(Value::as_u64)
                .unwrap_or(offset + n_items);
        }
    }

    /// Opens a GET whose body the caller reads as it arrives (not JSON), once its status
    /// says it succeeded.
    pub async fn get_stream(&self, segments: &[&str]) -> Result<reqwest::Response, ClientError> {
        let url = self.url(segments, &[]);
        let response = self
            .request(Method::GET, url.clone())
            .send()
            .await
            .map_err(|e| connection(&url, &e))?;
        let status = response.status();
        if !status.is_success() {
            let request_id = header(&response, "x-request-id");
            let bytes = response.bytes().await.map_err(|e| connection(&url, &e))?;
            return Err(ClientError::Api(Box::new(ApiFailure::from_answer(
                status, request_id, &bytes,
            ))));
        }
        Ok(response)
    }

    /// Opens a server-sent event stream.
    pub async fn events(&self, segments: &[&str]) -> Result<EventStream, ClientError> {
        let url = self.url(segments, &[]);
        let response = self
            .request(Method::GET, url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| connection(&url, &e))?;
        let status = response.status();
        if !status.is_success() {
            let request_id = header(&response, "x-request-id");
            let bytes = response.bytes().await.map_err(|e| connection(&url, &e))?;
            return Err(ClientError::Api(Box::new(ApiFailure::from_answer(
                status, request_id, &bytes,
            ))));
        }
        Ok(EventStream {
            url,
            response,
            parser: SseParser::default(),
            ready: std::collections::VecDeque::new(),
        })
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn connection(url: &Url, error: &reqwest::Error) -> ClientError {
    let mut shown = url.clone();
    shown.set_query(None);
    ClientError::Connection {
        url: shown.to_string(),
        reason: describe(error),
    }
}

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// An open event stream; [`EventStream::next`] answers `None` when the server ends it.
pub struct EventStream {
    url: Url,
    response: reqwest::Response,
    parser: SseParser,
    ready: std::collections::VecDeque<SseMessage>,
}

impl EventStream {
    /// The next event; an error if nothing, not even a keep-alive, arrives for `idle`.
    pub async fn next(&mut self, idle: Duration) -> Result<Option<SseMessage>, ClientError> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Ok(Some(message));
            }
            let chunk = tokio::time::timeout(idle, self.response.chunk())
                .await
                .map_err(|_| ClientError::Connection {
                    url: self.url.to_string(),
                    reason: format!("no event or keep-alive for {}s", idle.as_secs()),
                })?
                .map_err(|e| connection(&self.url, &e))?;
            match chunk {
                Some(bytes) => self.ready.extend(self.parser.feed(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

/// The text/event-stream format: `field: value` lines, an empty line ends an event, lines
/// starting with `:` are comments (keep-alives). Bytes are buffered until a whole line is
/// in, so a character split across chunks is not mangled.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    let mut message = std::mem::take(&mut self.current);
                    if message.data.ends_with('\n') {
                        message.data.pop();
                    }
                    out.push(message);
                } else {
                    self.current = SseMessage::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "event" => self.current.event = value.to_string(),
                "data" => {
                    self.current.data.push_str(value);
                    self.current.data.push('\n');
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_on_blank_lines_whatever_the_chunking() {
        let stream = b": keep-alive\n\nid: 0\nevent: Created\ndata: {\"a\":1}\n\r\nid: 1\nevent: EdgeAcked\ndata: {\"b\":\"\xc3\xa9\"}\n\n";
        let expected = vec![
            SseMessage {
                event: "Created".into(),
                data: "{\"a\":1}".into(),
                id: Some("0".into()),
            },
            SseMessage {
                event: "EdgeAcked".into(),
                data: "{\"b\":\"é\"}".into(),
                id: Some("1".into()),
            },
        ];
        for chunk_size in [1, 2, 3, 7, stream.len()] {
            let mut parser = SseParser::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(chunk_size) {
                got.extend(parser.feed(chunk));
            }
            assert_eq!(got, expected, "chunks of {chunk_size}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_and_an_unfinished_event_waits() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: one\ndata: two\n").is_empty());
        let got = parser.feed(b"\n");
        assert_eq!(got[0].data, "one\ntwo");
    }

    #[test]
    fn error_bodies_keep_the_servers_words_and_trace_id() {
        let body = br#"{"error":{"code":"NOT_FOUND","message":"configuration 'x' not found","details":[],"traceId":"abc-123","timestamp":"2026-01-01T00:00:00Z"}}"#;
        let failure = ApiFailure::from_answer(StatusCode::NOT_FOUND, None, body);
        assert_eq!(failure.code, "NOT_FOUND");
        assert_eq!(failure.trace_id.as_deref(), Some("abc-123"));
        let shown = failure.to_string();
        assert!(shown.contains("configuration 'x' not found"), "{shown}");
        assert!(shown.contains("trace id: abc-123"), "{shown}");

        let odd = ApiFailure::from_answer(
            StatusCode::BAD_GATEWAY,
            Some("req-1".into()),
            b"<html>bad gateway</html>",
        );
        assert_eq!(odd.code, "HTTP_502");
        assert_eq!(odd.trace_id.as_deref(), Some("req-1"));
        assert!(odd.message.contains("bad gateway"));
    }

    #[test]
    fn validation_details_are_listed_by_field() {
        let body = br#"{"error":{"code":"VALIDATION_ERROR","message":"invalid","details":[{"field":"content.ttl","message":"must be positive"}],"traceId":"t"}}"#;
        let shown = ApiFailure::from_answer(StatusCode::BAD_REQUEST, None, body).to_string();
        assert!(shown.contains("content.ttl: must be positive"), "{shown}");
    }

    #[test]
    fn urls_are_checked_and_trimmed() {
        assert_eq!(
            normalize_url("http://127.0.0.1:8080/api/v1/")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/"
        );
        assert!(normalize_url("ftp://host").is_err());
        assert!(normalize_url("not a url").is_err());
        assert!(normalize_url("http://host/?a=b").is_err());
    }

    #[test]
    fn path_segments_are_escaped() {
        let api = Api::new("https://cp.example.com/prefix", None, None).unwrap();
        let url = api.url(&["configurations", "a/b c"], &[("name", "x&y".to_string())]);
        assert_eq!(
            url.as_str(),
            "https://cp.example.com/prefix/api/v1/configurations/a%2Fb%20c?name=x%26y"
        );
    }
}
