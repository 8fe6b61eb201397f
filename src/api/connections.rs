//! How the API holds its connections, over plain HTTP or TLS: at most
//! `server.max_connections` at once (one more is answered 503 with the error shape, or on
//! TLS closed, as soon as it is accepted), a TLS handshake or HTTP/1 request head that does
//! not arrive within `server.header_read_timeout` closes its connection (so does waiting for
//! the next request on a kept-alive one), a connection silent both ways for
//! `server.idle_timeout` is closed, and accepting survives running out of descriptors
//! (`protocol::accept`). Each request sees its client's address and, on TLS, its
//! [`PeerCertificate`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::PeerCertificate;
use crate::config::ServerSettings;
use crate::protocol::accept::AcceptLoop;
use crate::protocol::tls::{Acceptor, client_certified};

/// The connection settings of `[server]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Limits {
    pub(super) fn of(settings: &ServerSettings) -> Self {
        Self {
            // A semaphore holds at most this many permits, far beyond any descriptor limit.
            max_connections: settings.max_connections.clamp(1, u32::MAX as usize),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
        }
    }
}

/// Plain HTTP, or TLS with the acceptor (which SIGHUP reloads).
pub(super) enum Transport {
    Plain,
    Tls(Acceptor),
}

/// A held connection's place under the cap; the gauge follows it.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("edgeplane_connections_open").increment(1.0);
        Slot { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("edgeplane_connections_open").decrement(1.0);
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// every connection finish its requests in flight, and returns once all are closed.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut accepting = AcceptLoop::default();
    let mut at_capacity = false;
    let required_for_edges = match &transport {
        Transport::Tls(acceptor) => acceptor.verifies_clients(),
        Transport::Plain => false,
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            accepted = accepting.accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if !at_capacity {
                at_capacity = true;
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached; refusing new connections until some close"
                );
            }
            refuse(stream, &transport);
            continue;
        };
        if at_capacity {
            at_capacity = false;
            tracing::info!("below the connection limit again");
        }
        let slot = Slot::new(permit);
        let service = WithPeer {
            router: router.clone(),
            address,
            peer: None,
        };
        let stopping = stopping.clone();
        match &transport {
            Transport::Plain => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, service, limits, stopping, slot));
            }
            Transport::Tls(acceptor) => {
                let handshake = acceptor.handshake(stream, address, limits.header_read_timeout);
                tokio::spawn(async move {
                    let Some(tls) = handshake.await else {
                        return;
                    };
                    let service = WithPeer {
                        peer: Some(PeerCertificate {
                            presented: client_certified(&tls),
                            required_for_edges,
                        }),
                        ..service
                    };
                    serve_connection(tls, service, limits, stopping, slot).await;
                });
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection gives its slot back when it closes.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
    Ok(())
}

/// Turns away a connection above the cap at once: on plain HTTP with a 503 in the error
/// shape (one non-blocking write to a fresh socket, which has room for it), on TLS by
/// closing, since nothing can be said before a handshake.
fn refuse(stream: TcpStream, transport: &Transport) {
    metrics::counter!("edgeplane_connections_refused_total").increment(1);
    if let Transport::Plain = transport {
        let _ = stream.try_write(&refusal());
    }
}

fn refusal() -> Vec<u8> {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let body = serde_json::json!({
        "error": {
            "code": "SERVICE_UNAVAILABLE",
            "message": "too many connections; retry shortly",
            "details": [],
            "traceId": trace_id,
            "timestamp": crate::model::Timestamp::now(),
        }
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nx-request-id: {trace_id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one connection until it closes: by the client, by hyper's header timeout, by
/// idleness, or by shutdown (requests in flight finish first).
async fn serve_connection<I>(
    io: I,
    service: WithPeer,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    _slot: Slot,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::default();
    let io = Watched {
        inner: io,
        activity: activity.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let deadline = activity.deadline(limits.header_read_timeout, limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.deadline(limits.header_read_timeout, limits.idle_timeout)
                    > Instant::now()
                {
                    continue;
                }
                if closing || !activity.heard.load(Ordering::Relaxed) {
                    // Silent from the start, or still silent after being asked to close:
                    // drop it.
                    return;
                }
                tracing::debug!("closing an idle connection");
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            changed = stopping.changed(), if !closing => {
                let _ = changed;
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it opened, and whether the
/// client has sent any.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last_ms: Arc<AtomicU64>,
    heard: Arc<AtomicBool>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            heard: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn heard(&self) {
        self.heard.store(true, Ordering::Relaxed);
        self.touch();
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When the connection is to be closed if nothing moves before: `first_bytes` after
    /// opening while the client has said nothing (hyper's header timeout starts only once
    /// the protocol is known from the first bytes), `idle` after the last byte afterwards.
    fn deadline(&self, first_bytes: Duration, idle: Duration) -> Instant {
        if self.heard.load(Ordering::Relaxed) {
            self.last() + idle
        } else {
            self.opened + first_bytes
        }
    }
}

/// A connection's stream that notes every byte read or written in its [`Activity`].
struct Watched<I> {
    inner: I,
    activity: Activity,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.heard();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router for one connection: every request carries the connection's facts.
#[derive(Clone)]
struct WithPeer {
    router: Router,
    address: SocketAddr,
    peer: Option<PeerCertificate>,
}

impl tower::Service<hyper::Request<Incoming>> for WithPeer {
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as tower::Service<Request>>::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(self.address));
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        tower::Service::call(&mut self.router, request)
    }
}
