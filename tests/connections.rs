//! The API's connections over real sockets: a cap with a clean 503 above it, the server
//! holding no more than the cap however many connect, slow or silent clients closed by the
//! header timeout, and an over-the-cap TLS connection closed before its handshake.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::TestApp;

/// Serves `app` on a loopback port; the server stops when the returned sender is dropped.
async fn serve(app: &TestApp) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = app.state.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        edgeplane::api::serve(listener, state, shutdown).await
    });
    (address, stop)
}

/// Reads until the server closes the connection; Err when it stays open past `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut received)).await;
    match read {
        Ok(Ok(_)) => Ok(received),
        // A reset is a close too.
        Ok(Err(_)) => Ok(received),
        Err(_) => Err(format!(
            "still open; received {:?}",
            String::from_utf8_lossy(&received)
        )),
    }
}

/// One `GET /health` on a fresh connection; its status line.
async fn health(address: std::net::SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: edgeplane\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let answer = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&answer).to_string();
    text.lines().next().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_cap_get_a_503_and_health_answers_once_one_leaves() {
    let app = TestApp::with_settings(|settings| {
        settings.server.max_connections = 4;
        settings.server.header_read_timeout = Duration::from_secs(600);
        settings.server.idle_timeout = Duration::from_secs(600);
    })
    .await;
    let (address, _stop) = serve(&app).await;

    // Four silent clients fill the cap; the server accepts them in the order they came.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(address).await.unwrap());
    }
    // Everyone after them is answered 503 in the error shape and closed at once, however
    // many come: the server holds no more than four.
    for n in 0..20 {
        let mut extra = TcpStream::connect(address).await.unwrap();
        let answer = read_to_close(&mut extra, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("connection {n} above the cap: {e}"));
        let text = String::from_utf8_lossy(&answer).to_string();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.to_lowercase().contains("retry-after: 1"), "{text}");
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE", "{body}");
        assert!(body["error"]["traceId"].is_string() && body["error"]["details"].is_array());
        assert!(common::is_rfc3339(
            body["error"]["timestamp"].as_str().unwrap()
        ));
    }
    // The held ones are still open: the cap refuses newcomers, it does not drop the held.
    let mut probe = [0u8; 1];
    for stream in &mut held {
        let read = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe)).await;
        assert!(read.is_err(), "a held connection was closed: {read:?}");
    }

    // One silent client leaves; its place is given back and /health answers.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match health(address).await.as_deref() {
            Some("HTTP/1.1 200 OK") => break,
            other => assert!(
                Instant::now() < deadline,
                "health never answered after a place came free: {other:?}"
            ),
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_closed_by_the_header_timeout() {
    let app = TestApp::with_settings(|settings| {
        settings.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let (address, _stop) = serve(&app).await;

    // Slowloris: a request head that is never finished.
    let mut slow = TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: edgeplane\r\nx-slow: 1\r\n")
        .await
        .unwrap();
    // Silent: connects and sends nothing.
    let mut silent = TcpStream::connect(address).await.unwrap();
    // Kept alive: one request answered, then nothing.
    let mut kept = TcpStream::connect(address).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: edgeplane\r\n\r\n")
        .await
        .unwrap();

    for (what, stream) in [
        ("slow", &mut slow),
        ("silent", &mut silent),
        ("kept alive", &mut kept),
    ] {
        let received = read_to_close(stream, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = String::from_utf8_lossy(&received);
        if what == "kept alive" {
            assert!(text.starts_with("HTTP/1.1 200 OK"), "{what}: {text}");
        } else {
            assert!(!text.contains("200 OK"), "{what}: {text}");
        }
    }
    assert_eq!(health(address).await.as_deref(), Some("HTTP/1.1 200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_above_the_cap_is_closed_before_its_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let app = TestApp::with_settings(move |settings| {
        settings.server.max_connections = 1;
        settings.server.header_read_timeout = Duration::from_secs(600);
        settings.server.tls_cert = Some(cert_path);
        settings.server.tls_key = Some(key_path);
    })
    .await;
    let files = app.state.settings().server.tls().unwrap().unwrap();
    let acceptor = edgeplane::protocol::tls::Acceptor::new(files).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = app.state.clone();
    tokio::spawn(edgeplane::api::serve_tls(
        listener,
        acceptor,
        state,
        std::future::pending(),
    ));
    // One client in the middle of nothing holds the only place.
    let _held = TcpStream::connect(address).await.unwrap();
    let mut extra = TcpStream::connect(address).await.unwrap();
    let received = read_to_close(&mut extra, Duration::from_secs(10))
        .await
        .expect("closed at once");
    assert!(received.is_empty(), "nothing is said before a handshake");
}
