//! The edge protocol's HTTP door, shared by the agent and the simulated edges so both
//! authenticate, parse and answer the same way.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use sha2::{Digest, Sha256};

use super::term::{TermGuard, TermRefusal};
use crate::protocol::term::{STALE_TERM, TERM_HEADER, parse_term};
use crate::protocol::{ActiveConfigurations, PushReply, PushRequest, RollbackRequest};

/// What an edge does behind the door. The seam the agent (files and commands) and the
/// simulator (memory) implement.
pub(crate) trait EdgeService: Send + Sync + 'static {
    /// The token pushes must bear; read per request because a simulated edge's token is
    /// rotated after its listener is already up.
    fn token(&self) -> String;
    /// A down edge answers 503 to everything.
    fn is_down(&self) -> bool {
        false
    }
    fn push(
        &self,
        configuration_id: String,
        request: PushRequest,
    ) -> impl Future<Output = PushReply> + Send;
    fn rollback(
        &self,
        configuration_id: String,
        request: RollbackRequest,
    ) -> impl Future<Output = PushReply> + Send;
    fn active(&self) -> impl Future<Output = ActiveConfigurations> + Send;
    /// The highest cluster term seen; pushes and rollbacks from a lower one are refused.
    fn terms(&self) -> &TermGuard;
}

pub(crate) fn router<S: EdgeService>(service: Arc<S>) -> Router {
    Router::new()
        .route(
            "/edge/v1/configurations/{configuration_id}",
            put(push_handler::<S>),
        )
        .route(
            "/edge/v1/configurations/{configuration_id}/rollback",
            post(rollback_handler::<S>),
        )
        .route("/edge/v1/active-configurations", get(active_handler::<S>))
        .with_state(service)
}

/// Compares digests so the time taken does not depend on where the tokens differ, nor on
/// the length of the expected one.
pub(crate) fn token_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && !expected.is_empty()
}

fn gate<S: EdgeService>(service: &S, headers: &HeaderMap) -> Option<Response> {
    if service.is_down() {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "edge is down").into_response());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(presented, &service.token()) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({"status": "unauthorized"})),
            )
                .into_response(),
        )
    }
}

/// An error in the SPEC §5 shape, for answers that are not a push reply.
fn error_body(status: StatusCode, code: &str, message: String, detail: (&str, String)) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "details": [{"field": detail.0, "message": detail.1}],
            "traceId": uuid::Uuid::new_v4().simple().to_string(),
            "timestamp": crate::model::Timestamp::now().to_rfc3339(),
        }
    });
    (status, axum::Json(body)).into_response()
}

/// Admits the request's `X-Edgeplane-Term`, or answers why not: 409 `STALE_TERM` naming the
/// highest term seen (in the header too) when it is lower. A request without the header
/// (an operator's own call) is not fenced.
fn check_term<S: EdgeService>(service: &S, headers: &HeaderMap) -> Option<Response> {
    let value = headers.get(TERM_HEADER)?;
    let Some(term) = value.to_str().ok().and_then(parse_term) else {
        return Some(error_body(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "X-Edgeplane-Term must be a decimal number".into(),
            ("X-Edgeplane-Term", "not a decimal number".into()),
        ));
    };
    match service.terms().admit(term) {
        Ok(()) => None,
        Err(TermRefusal::Stale { seen }) => {
            tracing::warn!(term, seen, "refused a request from a stale term");
            let mut response = error_body(
                StatusCode::CONFLICT,
                STALE_TERM,
                format!("the request carries term {term}, but this edge has seen term {seen}"),
                ("X-Edgeplane-Term", format!("highest term seen: {seen}")),
            );
            response
                .headers_mut()
                .insert(TERM_HEADER, axum::http::HeaderValue::from(seen));
            Some(response)
        }
        Err(TermRefusal::Unrecorded(error)) => {
            tracing::error!(term, %error, "cannot record a new term");
            Some(error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "the edge cannot record the new term".into(),
                ("X-Edgeplane-Term", error),
            ))
        }
    }
}

fn reply(reply: PushReply) -> Response {
    let status = match reply {
        PushReply::Acked { .. } => StatusCode::OK,
        PushReply::Nacked { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, axum::Json(reply)).into_response()
}

fn malformed(error: serde_json::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(PushReply::Nacked {
            reason: format!("malformed request body: {error}"),
        }),
    )
        .into_response()
}

async fn push_handler<S: EdgeService>(
    State(service): State<Arc<S>>,
    Path(configuration_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = gate(service.as_ref(), &headers) {
        return refusal;
    }
    if let Some(refusal) = check_term(service.as_ref(), &headers) {
        return refusal;
    }
    match serde_json::from_slice::<PushRequest>(&body) {
        Ok(request) => reply(service.push(configuration_id, request).await),
        Err(error) => malformed(error),
    }
}

async fn rollback_handler<S: EdgeService>(
    State(service): State<Arc<S>>,
    Path(configuration_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = gate(service.as_ref(), &headers) {
        return refusal;
    }
    if let Some(refusal) = check_term(service.as_ref(), &headers) {
        return refusal;
    }
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        match serde_json::from_slice::<RollbackRequest>(&body) {
            Ok(request) => request,
            Err(error) => return malformed(error),
        }
    };
    reply(service.rollback(configuration_id, request).await)
}

async fn active_handler<S: EdgeService>(
    State(service): State<Arc<S>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = gate(service.as_ref(), &headers) {
        return refusal;
    }
    axum::Json(service.active().await).into_response()
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves; handshakes are done by
/// `acceptor` (which SIGHUP reloads).
pub(crate) async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: crate::protocol::tls::Acceptor,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    struct TlsListener {
        incoming: tokio::sync::mpsc::Receiver<(
            tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
            std::net::SocketAddr,
        )>,
        local: std::net::SocketAddr,
    }
    impl axum::serve::Listener for TlsListener {
        type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
        type Addr = std::net::SocketAddr;
        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.incoming.recv().await {
                Some(accepted) => accepted,
                // The accept loop only ends once this receiver is gone.
                None => std::future::pending().await,
            }
        }
        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            Ok(self.local)
        }
    }
    let local = listener.local_addr()?;
    let listener = TlsListener {
        incoming: acceptor.incoming(listener),
        local,
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on ctrl-c or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("", "abc"));
        assert!(!token_matches("", ""));
    }
}
