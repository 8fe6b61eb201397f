//! The push client against edges that misbehave: every failure ends, has the right kind, and
//! is retried only when retrying can help.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgeplane::fleet::{PushClient, PushError, PushOptions, PushOutcome};
use edgeplane::model::ConfigType;
use edgeplane::protocol::PushRequest;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_millis(300);
const RETRIES: u32 = 2;

fn client() -> PushClient {
    PushClient::new(PushOptions {
        timeout: TIMEOUT,
        retries: RETRIES,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        ..PushOptions::default()
    })
    .unwrap()
}

fn request() -> PushRequest {
    PushRequest::apply(
        "1.0.0",
        ConfigType::CacheRule,
        json!({"pathPattern": "/static/*", "ttl": 3600, "cacheControl": "public"}),
        Default::default(),
    )
}

/// Guards against a push that never ends; no assertion depends on how long a push takes.
const HANG_GUARD: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Behaviour {
    /// Accept and never answer.
    Stall,
    /// Read the request and close without answering.
    Close,
    /// Answer correctly, but only once the test opens the gate, after the push gave up.
    Slow,
    /// Answer bytes that are not HTTP.
    NotHttp,
    /// Answer HTTP 200 whose body is not JSON.
    NotJson,
    /// Answer 503.
    Unavailable,
    /// Answer 422 nacked.
    Nack,
    /// Answer 409 STALE_TERM, having seen term 9.
    StaleTerm,
}

/// A raw TCP edge with the given behaviour; returns its endpoint, a connection counter and
/// the gate that lets a `Slow` edge answer.
async fn edge(behaviour: Behaviour) -> (String, Arc<AtomicUsize>, watch::Sender<bool>) {
    let (gate, gate_rx) = watch::channel(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            if let Behaviour::Stall = behaviour {
                held.push(socket);
                continue;
            }
            let mut gate = gate_rx.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buffer).await;
                let reply = |status: &str, body: &str| {
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let answer = match behaviour {
                    Behaviour::Stall | Behaviour::Close => return,
                    Behaviour::Slow => {
                        if gate.wait_for(|open| *open).await.is_err() {
                            return;
                        }
                        reply("200 OK", r#"{"status":"acked","version":"1.0.0"}"#)
                    }
                    Behaviour::NotHttp => "SSH-2.0-OpenSSH_9.6\r\nnonsense\r\n\r\n".to_string(),
                    Behaviour::NotJson => reply("200 OK", "<html>hello</html>"),
                    Behaviour::Unavailable => reply("503 Service Unavailable", "{}"),
                    Behaviour::Nack => reply(
                        "422 Unprocessable Entity",
                        r#"{"status":"nacked","reason":"test command failed"}"#,
                    ),
                    Behaviour::StaleTerm => "HTTP/1.1 409 Conflict\r\nx-edgeplane-term: 9\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_string(),
                };
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (endpoint, connections, gate)
}

/// Pushes to an edge with the given behaviour; returns the result and how many connections
/// the edge saw by the time the push ended. A `Slow` edge is let answer only afterwards.
async fn push_to(behaviour: Behaviour) -> (Result<PushOutcome, PushError>, usize) {
    let (endpoint, connections, gate) = edge(behaviour).await;
    let result = tokio::time::timeout(
        HANG_GUARD,
        client().push(&endpoint, "token", "config-1", &request()),
    )
    .await
    .expect("the push ends on its own");
    let seen = connections.load(Ordering::SeqCst);
    gate.send_replace(true);
    (result, seen)
}

#[tokio::test]
async fn a_stalled_edge_times_out_after_every_retry() {
    let (result, connections) = push_to(Behaviour::Stall).await;
    assert!(
        matches!(result, Err(PushError::Timeout { attempts: 3, .. })),
        "{result:?}"
    );
    assert_eq!(connections, 3);
}

#[tokio::test]
async fn a_dropped_connection_is_a_retried_connect_error() {
    let (result, connections) = push_to(Behaviour::Close).await;
    assert!(
        matches!(result, Err(PushError::Connect { attempts: 3, .. })),
        "{result:?}"
    );
    assert_eq!(connections, 3);
}

#[tokio::test]
async fn a_slow_edge_times_out() {
    let (result, connections) = push_to(Behaviour::Slow).await;
    assert!(
        matches!(result, Err(PushError::Timeout { attempts: 3, .. })),
        "{result:?}"
    );
    assert_eq!(connections, 3);
}

#[tokio::test]
async fn a_non_http_answer_is_a_protocol_error_not_retried() {
    let (result, connections) = push_to(Behaviour::NotHttp).await;
    assert!(
        matches!(result, Err(PushError::Protocol { .. })),
        "{result:?}"
    );
    assert_eq!(connections, 1);
}

#[tokio::test]
async fn a_non_json_answer_is_a_protocol_error_not_retried() {
    let (result, connections) = push_to(Behaviour::NotJson).await;
    assert!(
        matches!(result, Err(PushError::Protocol { .. })),
        "{result:?}"
    );
    assert_eq!(connections, 1);
}

#[tokio::test]
async fn a_5xx_is_retried_then_reported_with_its_status() {
    let (result, connections) = push_to(Behaviour::Unavailable).await;
    assert!(
        matches!(
            result,
            Err(PushError::Status {
                status: 503,
                attempts: 3,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(connections, 3);
}

#[tokio::test]
async fn a_nack_is_final() {
    let (result, connections) = push_to(Behaviour::Nack).await;
    assert_eq!(
        result.unwrap(),
        PushOutcome::Nacked {
            reason: "test command failed".into()
        }
    );
    assert_eq!(connections, 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error_naming_the_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let result = tokio::time::timeout(
        HANG_GUARD,
        client().push(&endpoint, "token", "config-1", &request()),
    )
    .await
    .expect("the push ends on its own");
    let error = result.unwrap_err();
    assert_eq!(error.kind(), "connect", "{error}");
    assert!(error.to_string().contains(&endpoint), "{error}");
}

#[tokio::test]
async fn a_stale_term_answer_is_its_own_outcome_and_is_not_retried() {
    let (endpoint, connections, _gate) = edge(Behaviour::StaleTerm).await;
    let client = client();
    client.set_term(4);
    let mut seen_terms = client.seen_terms();
    let result = tokio::time::timeout(
        HANG_GUARD,
        client.push(&endpoint, "token", "config-1", &request()),
    )
    .await
    .expect("the push ends on its own");
    assert!(
        matches!(
            result,
            Err(PushError::StaleTerm {
                ours: 4,
                seen: 9,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1, "never retried");
    assert_eq!(*seen_terms.borrow_and_update(), 9);

    let rollback = client.rollback(&endpoint, "token", "config-1", None).await;
    assert!(
        matches!(rollback, Err(PushError::StaleTerm { seen: 9, .. })),
        "{rollback:?}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}
