//! TLS for both sides of the wire (SPEC §1 "Transport security"): loading the PEM files a
//! listener is configured with, a server config that is rebuilt on SIGHUP and used per
//! accepted connection, the handshake of one connection, and the agent's accept loop that
//! hands finished handshakes to its server.
//!
//! Client certificates: with a client CA the server asks every client for a certificate,
//! verifies one when presented and lets a connection without one through; what needs a
//! certificate (an edge's requests) is refused later, by the one who knows the request. A
//! listener whose every client must present one (the agent's) refuses the handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// A handshake that has not finished by then is dropped, so a silent client holds no slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of one TLS listener and the settings section they come from (`server`,
/// `agent`), which every error names.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerTls {
    pub section: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// With a client CA: refuse the handshake of a client without a certificate (the
    /// agent, whose only client is the control plane) instead of letting the request
    /// decide (the API, where people log in without one).
    pub require_client_cert: bool,
}

fn read(section: &str, key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{section}.{key}: cannot read {}: {e}", path.display()))
}

/// The certificates of a PEM file, in order; Err names the setting.
pub(crate) fn certificates(
    section: &str,
    key: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(section, key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{section}.{key}: {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{section}.{key}: no certificate in {}",
            path.display()
        ));
    }
    Ok(certs)
}

fn private_key(section: &str, key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(section, key, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{section}.{key}: no private key in {}: {e}", path.display()))
}

impl ListenerTls {
    /// Reads the files and builds the server config (HTTP/2 and HTTP/1.1 offered).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let section = self.section;
        let chain = certificates(section, "tls_cert", &self.cert)?;
        let key = private_key(section, "tls_key", &self.key)?;
        let builder = ServerConfig::builder();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(section, "tls_client_ca", path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{section}.tls_client_ca: {}: {e}", path.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("{section}.tls_client_ca: {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("{section}.tls_key: does not fit {section}.tls_cert: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The server config in use, swapped whole on reload: each accepted connection takes the
/// one current at its handshake, so connections already open keep theirs.
#[derive(Clone)]
pub struct Acceptor {
    files: ListenerTls,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Acceptor {
    /// Loads the files once; Err names the setting at fault.
    pub fn new(files: ListenerTls) -> Result<Self, String> {
        let config = files.server_config()?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Whether clients are asked for certificates signed by a configured CA.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again; on failure the config in use stays and Err says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = self.files.server_config()?;
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// Reloads the certificates on every SIGHUP for the life of the process.
    pub fn reload_on_sighup(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP; certificates are not reloaded");
            return;
        };
        let acceptor = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match acceptor.reload() {
                    Ok(()) => tracing::info!(
                        section = acceptor.files.section,
                        "TLS certificates reloaded"
                    ),
                    Err(error) => {
                        tracing::error!(%error, "TLS certificates not reloaded; keeping the old ones")
                    }
                }
            }
        });
    }

    /// Accepts TCP connections on `listener` and does each handshake in its own task; the
    /// finished ones come out of the receiver. A failed handshake (plain HTTP on the TLS
    /// port, an untrusted client certificate) closes that connection only. The loop ends
    /// when the receiver is dropped.
    pub fn incoming(
        self,
        listener: TcpListener,
    ) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut accepting = crate::protocol::accept::AcceptLoop::default();
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = accepting.accept(&listener) => accepted,
                    _ = sender.closed() => return,
                };
                let handshake = self.handshake(stream, peer, HANDSHAKE_TIMEOUT);
                let sender = sender.clone();
                tokio::spawn(async move {
                    if let Some(tls) = handshake.await {
                        let _ = sender.send((tls, peer)).await;
                    }
                });
            }
        });
        receiver
    }

    /// The TLS handshake of one accepted connection with the config current now; None when
    /// it failed (plain HTTP on the TLS port, an untrusted client certificate) or did not
    /// finish within `timeout`, so a silent client holds no slot.
    pub fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Option<TlsStream<TcpStream>>> + Send + 'static {
        let _ = stream.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
        async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        }
    }
}

/// Whether the client of a TLS connection presented a certificate the server verified.
pub fn client_certified(stream: &TlsStream<TcpStream>) -> bool {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|certs| !certs.is_empty())
}

/// A client certificate and its key for outgoing connections, from the files named by the
/// settings `cert_key` and `key_key` (e.g. `edges.client_cert`), which errors name.
pub(crate) fn client_identity(
    (cert_key, cert): (&str, &Path),
    (key_key, key): (&str, &Path),
) -> Result<reqwest::Identity, String> {
    let mut pem = std::fs::read(cert)
        .map_err(|e| format!("{cert_key}: cannot read {}: {e}", cert.display()))?;
    let key_pem =
        std::fs::read(key).map_err(|e| format!("{key_key}: cannot read {}: {e}", key.display()))?;
    // Parsed here first so that a wrong file is named by its setting.
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert_key}: {} is not PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{cert_key}: no certificate in {}", cert.display()));
    }
    PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{key_key}: no private key in {}: {e}", key.display()))?;
    pem.push(b'\n');
    pem.extend(key_pem);
    reqwest::Identity::from_pem(&pem).map_err(|e| format!("{cert_key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> ListenerTls {
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        ListenerTls {
            section: "server",
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
            require_client_cert: false,
        }
    }

    #[test]
    fn errors_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.pem();
        let key = certified.signing_key.serialize_pem();

        let good = files(dir.path(), &cert, &key);
        assert!(good.server_config().is_ok());

        let missing = ListenerTls {
            cert: dir.path().join("absent.pem"),
            ..good.clone()
        };
        let error = missing.server_config().unwrap_err();
        assert!(error.starts_with("server.tls_cert: cannot read"), "{error}");

        let error = files(dir.path(), &cert, "not a key")
            .server_config()
            .unwrap_err();
        assert!(error.starts_with("server.tls_key:"), "{error}");

        let error = files(dir.path(), "nothing here", &key)
            .server_config()
            .unwrap_err();
        assert!(error.starts_with("server.tls_cert:"), "{error}");

        let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        let error = files(dir.path(), &cert, &other.signing_key.serialize_pem())
            .server_config()
            .unwrap_err();
        assert!(error.starts_with("server.tls_key:"), "{error}");

        let with_ca = ListenerTls {
            client_ca: Some(dir.path().join("absent-ca.pem")),
            ..files(dir.path(), &cert, &key)
        };
        let error = with_ca.server_config().unwrap_err();
        assert!(error.starts_with("server.tls_client_ca:"), "{error}");
    }
}
