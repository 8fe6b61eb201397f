//! The API's side of TLS connections: a listener that yields finished handshakes, and the
//! per-connection service that gives each request its client's address and certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::PeerCertificate;
use crate::protocol::tls::client_certified;

pub(super) struct TlsListener {
    pub(super) incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    pub(super) local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends once this receiver is gone; nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Makes one [`WithPeer`] per accepted connection.
#[derive(Clone)]
pub(super) struct PerConnection {
    pub(super) router: Router,
    pub(super) required_for_edges: bool,
}

impl<'a> tower::Service<IncomingStream<'a, TlsListener>> for PerConnection {
    type Response = WithPeer;
    type Error = Infallible;
    type Future = std::future::Ready<Result<WithPeer, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'a, TlsListener>) -> Self::Future {
        std::future::ready(Ok(WithPeer {
            router: self.router.clone(),
            address: *incoming.remote_addr(),
            peer: PeerCertificate {
                presented: client_certified(incoming.io()),
                required_for_edges: self.required_for_edges,
            },
        }))
    }
}

/// The router for one connection: every request carries the connection's facts.
#[derive(Clone)]
pub(super) struct WithPeer {
    router: Router,
    address: SocketAddr,
    peer: PeerCertificate,
}

impl tower::Service<Request> for WithPeer {
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as tower::Service<Request>>::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.address));
        request.extensions_mut().insert(self.peer);
        self.router.call(request)
    }
}
