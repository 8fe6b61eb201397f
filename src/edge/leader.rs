//! Which control-plane node an edge reports to (SPEC §9 failover). An edge is given one URL
//! or one per node; its heartbeats go to the node it believes is primary. It learns a new
//! primary three ways: a `NOT_LEADER` answer naming one (followed at once), a push, rollback
//! or announcement admitted at a term at least the highest it has seen (the sender names
//! itself), and, when its node stops answering, by trying the next URL it knows.
//!
//! The agent and the simulated edges share this, so a simulated fleet fails over exactly as
//! real edges do.

use std::sync::Mutex;
use std::time::Duration;

use crate::protocol::Heartbeat;
use crate::protocol::term::{LEADER_HEADER, parse_leader_url};

/// A `NOT_LEADER` answer is followed at most this often per heartbeat: from a standby to the
/// primary it names, and once more if that one has just stepped down. Past that the
/// heartbeat waits for the next interval, so two nodes naming each other cannot loop.
const MAX_REDIRECTS: usize = 2;

/// The control-plane nodes an edge knows and the one it reports to.
pub(crate) struct ControlPlanes {
    /// For log lines.
    location_id: String,
    /// The configured base URLs, in order, without trailing `/`.
    configured: Vec<String>,
    choice: Mutex<Choice>,
}

struct Choice {
    current: String,
    /// The last primary learned that is not configured (an address the operator did not
    /// list, e.g. a node that replaced one): tried in turn with the configured ones.
    learned: Option<String>,
}

impl ControlPlanes {
    /// Starts on the first configured URL. `configured` is never empty (the settings and
    /// the command line refuse that); an empty list reports nowhere until a primary names
    /// itself.
    pub(crate) fn new(location_id: &str, configured: Vec<String>) -> Self {
        let configured: Vec<String> = configured
            .into_iter()
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect();
        Self {
            location_id: location_id.to_owned(),
            choice: Mutex::new(Choice {
                current: configured.first().cloned().unwrap_or_default(),
                learned: None,
            }),
            configured,
        }
    }

    fn choice(&self) -> std::sync::MutexGuard<'_, Choice> {
        self.choice.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The base URL heartbeats go to now.
    pub(crate) fn current(&self) -> String {
        self.choice().current.clone()
    }

    /// Starts reporting to `url`, one of the configured URLs found to be the primary before
    /// the edge's first heartbeat (no log line: nothing changed for anyone yet).
    pub(crate) fn start_at(&self, url: &str) {
        if self.configured.iter().any(|known| known == url) {
            self.choice().current = url.to_owned();
        }
    }

    /// Reports to `url` from now on (already checked to be an http(s) URL). True when that
    /// changed the node.
    pub(crate) fn follow(&self, url: &str, reason: &'static str) -> bool {
        let url = url.trim_end_matches('/');
        let mut choice = self.choice();
        if choice.current == url {
            return false;
        }
        if !self.configured.iter().any(|known| known == url) {
            choice.learned = Some(url.to_owned());
        }
        let previous = std::mem::replace(&mut choice.current, url.to_owned());
        drop(choice);
        tracing::info!(
            location_id = %self.location_id,
            from = %previous,
            to = %url,
            reason,
            "edge now reports to another control-plane node"
        );
        true
    }

    /// `failed` did not take a heartbeat (no connection, or a 5xx): the next known URL
    /// (configured ones, then the last learned primary) is tried on the next heartbeat.
    /// Nothing changes when another path (a push naming the primary) already moved the edge
    /// off `failed`, or when there is no other URL.
    pub(crate) fn rotate_from(&self, failed: &str) {
        let next = {
            let choice = self.choice();
            if choice.current != failed {
                return;
            }
            let mut candidates: Vec<&String> = self.configured.iter().collect();
            if let Some(learned) = &choice.learned
                && !candidates.contains(&learned)
            {
                candidates.push(learned);
            }
            let position = candidates.iter().position(|url| **url == failed);
            let next = match position {
                Some(at) => candidates[(at + 1) % candidates.len()],
                None => match candidates.first() {
                    Some(first) => *first,
                    None => return,
                },
            };
            next.clone()
        };
        if next != failed {
            self.follow(&next, "the node did not take the heartbeat");
        }
    }
}

/// Posts `heartbeat` to the node the edge reports to. A `NOT_LEADER` answer naming another
/// node (an http(s) URL only) is followed and the same heartbeat sent there at once; a
/// connection failure or a 5xx moves the edge to the next known node for the next heartbeat.
/// The answer (or error) returned is the last node's, for the caller's own handling (rate
/// limits, metrics carried over).
pub(crate) async fn send_heartbeat(
    client: &reqwest::Client,
    planes: &ControlPlanes,
    location_id: &str,
    token: &str,
    heartbeat: &Heartbeat,
    timeout: Option<Duration>,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut redirects = 0;
    loop {
        let base = planes.current();
        let mut request = client
            .post(format!(
                "{base}/api/v1/edge-locations/{location_id}/heartbeat"
            ))
            .bearer_auth(token)
            .json(heartbeat);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let sent = request.send().await;
        match &sent {
            Ok(response) if response.status().as_u16() == 503 => {
                let named = response
                    .headers()
                    .get(LEADER_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(parse_leader_url);
                match named {
                    Some(leader) if leader != base && redirects < MAX_REDIRECTS => {
                        redirects += 1;
                        planes.follow(&leader, "the node answered NOT_LEADER naming the primary");
                        continue;
                    }
                    _ => planes.rotate_from(&base),
                }
            }
            Ok(response) if response.status().is_server_error() => planes.rotate_from(&base),
            Ok(_) => {}
            Err(_) => planes.rotate_from(&base),
        }
        return sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::IntoResponse;

    /// A control-plane node that answers every heartbeat with `status` (naming `leader` in
    /// `X-Edgeplane-Leader` when given) and counts them.
    async fn node(status: StatusCode, leader: Option<&str>) -> (String, Arc<AtomicUsize>) {
        let received = Arc::new(AtomicUsize::new(0));
        let count = received.clone();
        let leader = leader.map(|l| HeaderValue::from_str(l).unwrap());
        let app = axum::Router::new().route(
            "/api/v1/edge-locations/{id}/heartbeat",
            axum::routing::post(move || {
                count.fetch_add(1, Ordering::SeqCst);
                let mut headers = HeaderMap::new();
                if let Some(leader) = leader.clone() {
                    headers.insert(LEADER_HEADER, leader);
                }
                async move { (status, headers).into_response() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, received)
    }

    /// A URL nothing listens on.
    async fn dead_node() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            health: Default::default(),
            active_configurations: Default::default(),
            metrics: None,
            started_at: crate::model::Timestamp(0),
            sent_at: crate::model::Timestamp(0),
        }
    }

    async fn beat(planes: &ControlPlanes) -> Option<u16> {
        let client = crate::protocol::http_client(Duration::from_secs(2), 1, None).unwrap();
        send_heartbeat(&client, planes, "edge-1", "token", &heartbeat(), None)
            .await
            .ok()
            .map(|response| response.status().as_u16())
    }

    #[tokio::test]
    async fn a_not_leader_answer_is_followed_at_once() {
        let (primary, at_primary) = node(StatusCode::OK, None).await;
        let (standby, at_standby) = node(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&format!("{primary}/")),
        )
        .await;
        let planes = ControlPlanes::new("edge-1", vec![standby.clone(), primary.clone()]);
        assert_eq!(beat(&planes).await, Some(200));
        assert_eq!(planes.current(), primary);
        assert_eq!(at_standby.load(Ordering::SeqCst), 1);
        assert_eq!(
            at_primary.load(Ordering::SeqCst),
            1,
            "the same heartbeat, resent"
        );
        assert_eq!(beat(&planes).await, Some(200));
        assert_eq!(at_standby.load(Ordering::SeqCst), 1, "no detour once known");
    }

    #[tokio::test]
    async fn a_not_leader_answer_naming_no_url_moves_on_to_the_next_node() {
        for named in [None, Some("ftp://elsewhere/"), Some("not a url")] {
            let (primary, at_primary) = node(StatusCode::OK, None).await;
            let (standby, _) = node(StatusCode::SERVICE_UNAVAILABLE, named).await;
            let planes = ControlPlanes::new("edge-1", vec![standby.clone(), primary.clone()]);
            assert_eq!(beat(&planes).await, Some(503), "{named:?}");
            assert_eq!(planes.current(), primary, "{named:?}");
            assert_eq!(
                at_primary.load(Ordering::SeqCst),
                0,
                "not before the next beat"
            );
            assert_eq!(beat(&planes).await, Some(200), "{named:?}");
        }
    }

    #[tokio::test]
    async fn nodes_naming_each_other_do_not_loop() {
        let (first, at_first) = node(StatusCode::SERVICE_UNAVAILABLE, None).await;
        let (second, _) = node(StatusCode::SERVICE_UNAVAILABLE, Some(&first)).await;
        let planes = ControlPlanes::new("edge-1", vec![second.clone(), first.clone()]);
        assert_eq!(beat(&planes).await, Some(503));
        assert_eq!(at_first.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_node_that_does_not_answer_hands_over_to_the_next() {
        let dead = dead_node().await;
        let (alive, at_alive) = node(StatusCode::OK, None).await;
        let planes = ControlPlanes::new("edge-1", vec![dead.clone(), alive.clone()]);
        assert_eq!(beat(&planes).await, None);
        assert_eq!(planes.current(), alive);
        assert_eq!(beat(&planes).await, Some(200));
        assert_eq!(at_alive.load(Ordering::SeqCst), 1);

        let (failing, _) = node(StatusCode::INTERNAL_SERVER_ERROR, None).await;
        let planes = ControlPlanes::new("edge-1", vec![failing, alive.clone()]);
        assert_eq!(beat(&planes).await, Some(500));
        assert_eq!(planes.current(), alive);
    }

    fn planes(urls: &[&str]) -> ControlPlanes {
        ControlPlanes::new("edge-1", urls.iter().map(|u| (*u).to_owned()).collect())
    }

    #[test]
    fn one_url_stays_the_only_node() {
        let planes = planes(&["http://cp-a:8080/"]);
        assert_eq!(planes.current(), "http://cp-a:8080");
        planes.rotate_from("http://cp-a:8080");
        assert_eq!(planes.current(), "http://cp-a:8080");
    }

    #[test]
    fn a_failed_node_hands_over_to_the_next_in_turn() {
        let planes = planes(&["http://cp-a", "http://cp-b", "http://cp-c"]);
        planes.rotate_from("http://cp-a");
        assert_eq!(planes.current(), "http://cp-b");
        planes.rotate_from("http://cp-b");
        assert_eq!(planes.current(), "http://cp-c");
        planes.rotate_from("http://cp-c");
        assert_eq!(planes.current(), "http://cp-a");
    }

    #[test]
    fn a_failure_reported_late_does_not_undo_a_newer_choice() {
        let planes = planes(&["http://cp-a", "http://cp-b"]);
        assert!(planes.follow("http://cp-b", "a push named it"));
        planes.rotate_from("http://cp-a");
        assert_eq!(planes.current(), "http://cp-b");
    }

    #[test]
    fn a_learned_primary_joins_the_rotation() {
        let planes = planes(&["http://cp-a", "http://cp-b"]);
        assert!(planes.follow("http://cp-new:8080/", "a push named it"));
        assert_eq!(planes.current(), "http://cp-new:8080");
        assert!(!planes.follow("http://cp-new:8080", "again"), "no change");
        planes.rotate_from("http://cp-new:8080");
        assert_eq!(planes.current(), "http://cp-a");
        planes.rotate_from("http://cp-a");
        planes.rotate_from("http://cp-b");
        assert_eq!(planes.current(), "http://cp-new:8080");
    }
}
