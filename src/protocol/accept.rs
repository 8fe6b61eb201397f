//! Accepting TCP connections without spinning: when the process is out of file descriptors
//! (or the kernel out of memory for sockets), `accept` fails at once every time it is
//! called, so a loop that retries straight away burns a core and writes a log line per try.
//! [`accept`] backs off instead, doubling its wait up to a second, and logs once when the
//! episode starts and once when it ends. Both listeners use it: the API's and the agent's.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const LONGEST_BACKOFF: Duration = Duration::from_secs(1);

/// Whether an accept error says the process or the host ran out of something that only
/// time (connections closing) gives back.
fn is_exhaustion(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The state of one listener's accept loop across calls.
#[derive(Debug, Default)]
pub struct AcceptLoop {
    /// Set while accepting fails for want of resources: the current wait.
    backoff: Option<Duration>,
}

impl AcceptLoop {
    /// The next connection. Errors that concern one connection (reset before it was
    /// accepted) are skipped; exhaustion waits and tries again.
    pub async fn accept(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    if self.backoff.take().is_some() {
                        tracing::info!("accepting connections again");
                    }
                    return accepted;
                }
                Err(error) if is_exhaustion(&error) => {
                    metrics::counter!("edgeplane_accept_errors_total").increment(1);
                    let wait = match self.backoff {
                        None => {
                            tracing::warn!(
                                %error,
                                "cannot accept connections; waiting for some to close (raise the file descriptor limit or lower server.max_connections)"
                            );
                            FIRST_BACKOFF
                        }
                        Some(wait) => (wait * 2).min(LONGEST_BACKOFF),
                    };
                    self.backoff = Some(wait);
                    tokio::time::sleep(wait).await;
                }
                Err(error) => {
                    tracing::debug!(%error, "accept failed for one connection");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_exhaustion_backs_off() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_exhaustion(&std::io::Error::from_raw_os_error(code)));
        }
        for code in [libc::ECONNABORTED, libc::EPERM, libc::EINTR] {
            assert!(!is_exhaustion(&std::io::Error::from_raw_os_error(code)));
        }
    }
}
