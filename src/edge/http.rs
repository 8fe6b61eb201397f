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

use super::leader::ControlPlanes;
use super::term::{TermGuard, TermRefusal};
use crate::protocol::term::{
    LEADER_HEADER, LEADER_PATH, STALE_TERM, TERM_HEADER, parse_leader_url, parse_term,
};
use crate::protocol::{
    ActiveConfigurations, LeaderAnnouncement, PushReply, PushRequest, RollbackRequest,
};

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
    /// The control-plane nodes the edge heartbeats; a sender admitted at its term names the
    /// primary.
    fn control_planes(&self) -> &ControlPlanes;
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
        .route(LEADER_PATH, post(leader_handler::<S>))
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
/// (an operator's own call) is not fenced. An admitted sender that names itself in
/// `X-Edgeplane-Leader` (an http(s) URL; anything else is ignored) becomes the node the edge
/// heartbeats.
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
    let leader = headers
        .get(LEADER_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_leader_url);
    admit_term(service, term, leader)
}

/// Admits `term` (see [`check_term`]), following `leader` once it is admitted.
fn admit_term<S: EdgeService>(service: &S, term: u64, leader: Option<String>) -> Option<Response> {
    let admitted = service.terms().admit_then(term, || {
        if let Some(url) = &leader {
            service
                .control_planes()
                .follow(url, "the primary named itself at the edge's highest term");
        }
    });
    match admitted {
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

/// `POST /edge/v1/leader` `{term, url}`: a node that became primary announces itself. The
/// body's term is fenced like a push's (409 `STALE_TERM` below the highest seen) and, once
/// admitted, its URL is where heartbeats go. Answers the same shape with the edge's highest
/// term and the node it reports to.
async fn leader_handler<S: EdgeService>(
    State(service): State<Arc<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = gate(service.as_ref(), &headers) {
        return refusal;
    }
    let announcement = match serde_json::from_slice::<LeaderAnnouncement>(&body) {
        Ok(announcement) => announcement,
        Err(error) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "the body must be {\"term\": N, \"url\": URL}".into(),
                ("body", error.to_string()),
            );
        }
    };
    if announcement.term == 0 {
        return error_body(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "term must be at least 1".into(),
            ("term", "must be at least 1".into()),
        );
    }
    let Some(url) = parse_leader_url(&announcement.url) else {
        return error_body(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "url must be an http or https base URL".into(),
            ("url", "must be an http or https base URL".into()),
        );
    };
    if let Some(refusal) = admit_term(service.as_ref(), announcement.term, Some(url)) {
        return refusal;
    }
    axum::Json(LeaderAnnouncement {
        term: service.terms().highest(),
        url: service.control_planes().current(),
    })
    .into_response()
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
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// An edge that acks everything, behind the real door.
    struct Acking {
        terms: TermGuard,
        planes: ControlPlanes,
    }

    impl EdgeService for Acking {
        fn token(&self) -> String {
            "edge-token".into()
        }
        async fn push(&self, _: String, request: PushRequest) -> PushReply {
            PushReply::Acked {
                version: request.version,
            }
        }
        async fn rollback(&self, _: String, _: RollbackRequest) -> PushReply {
            PushReply::Acked {
                version: "1".into(),
            }
        }
        async fn active(&self) -> ActiveConfigurations {
            ActiveConfigurations {
                location_id: "edge-1".into(),
                configurations: Vec::new(),
            }
        }
        fn terms(&self) -> &TermGuard {
            &self.terms
        }
        fn control_planes(&self) -> &ControlPlanes {
            &self.planes
        }
    }

    fn edge() -> Arc<Acking> {
        Arc::new(Acking {
            terms: TermGuard::in_memory(),
            planes: ControlPlanes::new(
                "edge-1",
                vec!["http://cp-a:8080".into(), "http://cp-b:8080".into()],
            ),
        })
    }

    async fn send(
        edge: &Arc<Acking>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, "Bearer edge-token")
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router(edge.clone())
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    async fn push(edge: &Arc<Acking>, headers: &[(&str, &str)]) -> StatusCode {
        let body = serde_json::to_value(PushRequest::apply(
            "1.0.0",
            crate::model::ConfigType::CacheRule,
            serde_json::json!({"pathPattern": "/a/*"}),
            Default::default(),
        ))
        .unwrap();
        send(edge, "PUT", "/edge/v1/configurations/c1", headers, body)
            .await
            .0
    }

    #[tokio::test]
    async fn a_push_admitted_at_its_term_moves_heartbeats_to_its_sender() {
        let edge = edge();
        let from_b = [(TERM_HEADER, "2"), (LEADER_HEADER, "http://cp-b:8080/")];
        assert_eq!(push(&edge, &from_b).await, StatusCode::OK);
        assert_eq!(edge.planes.current(), "http://cp-b:8080");

        // A lower term is refused and names nobody.
        let from_a = [(TERM_HEADER, "1"), (LEADER_HEADER, "http://cp-a:8080")];
        assert_eq!(push(&edge, &from_a).await, StatusCode::CONFLICT);
        assert_eq!(edge.planes.current(), "http://cp-b:8080");

        // A header that is not an http(s) URL is ignored; the push itself is taken.
        for bad in ["ftp://cp-a/", "cp-a:8080", "http://u:p@cp-a/"] {
            let headers = [(TERM_HEADER, "2"), (LEADER_HEADER, bad)];
            assert_eq!(push(&edge, &headers).await, StatusCode::OK, "{bad}");
            assert_eq!(edge.planes.current(), "http://cp-b:8080", "{bad}");
        }

        // Without a term (an operator's own call) the header names nobody.
        assert_eq!(
            push(&edge, &[(LEADER_HEADER, "http://cp-a:8080")]).await,
            StatusCode::OK
        );
        assert_eq!(edge.planes.current(), "http://cp-b:8080");

        // The same term from another sender (a node that took over the URL) is followed.
        let from_c = [(TERM_HEADER, "2"), (LEADER_HEADER, "https://cp-c")];
        assert_eq!(push(&edge, &from_c).await, StatusCode::OK);
        assert_eq!(edge.planes.current(), "https://cp-c");
    }

    #[tokio::test]
    async fn a_new_primary_announces_itself() {
        let edge = edge();
        let announce =
            |term: serde_json::Value, url: &str| serde_json::json!({"term": term, "url": url});
        let (status, body) = send(
            &edge,
            "POST",
            LEADER_PATH,
            &[],
            announce(3.into(), "http://cp-b:8080"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"term": 3, "url": "http://cp-b:8080"})
        );
        assert_eq!(edge.terms.highest(), 3, "the old primary is fenced");

        let (status, body) = send(
            &edge,
            "POST",
            LEADER_PATH,
            &[],
            announce(2.into(), "http://cp-a:8080"),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], STALE_TERM);
        assert_eq!(edge.planes.current(), "http://cp-b:8080");

        for (bad, field) in [
            (announce(4.into(), "ftp://cp-a"), "url"),
            (announce(0.into(), "http://cp-a"), "term"),
            (announce((-1).into(), "http://cp-a"), "body"),
            (serde_json::json!({"term": 4}), "body"),
            (serde_json::json!([]), "body"),
        ] {
            let (status, body) = send(&edge, "POST", LEADER_PATH, &[], bad.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{bad}");
            assert_eq!(body["error"]["details"][0]["field"], field, "{bad}");
        }
        assert_eq!(edge.terms.highest(), 3);
        assert_eq!(edge.planes.current(), "http://cp-b:8080");

        let unauthorized = router(edge.clone())
            .oneshot(
                Request::post(LEADER_PATH)
                    .body(Body::from(
                        announce(9.into(), "http://cp-a:8080").to_string(),
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(edge.terms.highest(), 3);
    }

    #[test]
    fn tokens_compare_by_value() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("", "abc"));
        assert!(!token_matches("", ""));
    }
}
