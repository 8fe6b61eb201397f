//! What the nodes of a cluster say to each other over HTTP: the log request and its batch,
//! a node's status, and the cluster-secret check.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::LogEntry;

/// Header carrying the cluster secret on requests between nodes.
pub const SECRET_HEADER: &str = "x-edgeplane-cluster-secret";
/// Most entries one answer carries.
pub const MAX_BATCH_ENTRIES: usize = 2_000;
/// Longest a log request waits for new entries before answering with none.
pub const MAX_WAIT_MS: u64 = 5_000;

/// `GET /api/v1/cluster/log`: what a standby asks of the primary. Sending `from` also says
/// that every entry before it is held durably (the acknowledgement sync replication waits on).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// First index wanted.
    pub from: u64,
    /// Term of the standby's entry at `from - 1` (0 for none), to find where logs part.
    pub prev_term: u64,
    /// The standby's current term: a primary behind it steps down.
    pub term: u64,
    pub node_id: String,
    pub url: String,
    /// How long to wait for a new entry when there is none (milliseconds).
    pub wait_ms: u64,
}

/// The answer to a [`LogQuery`] (postcard): entries from `from` on, maybe none.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogBatch {
    pub term: u64,
    pub leader_id: String,
    pub leader_url: String,
    pub commit_index: u64,
    pub entries: Vec<LogEntry>,
}

/// `GET /api/v1/cluster/log/status`: who a node is and what it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub node_id: String,
    pub url: String,
    pub role: super::NodeRole,
    pub term: u64,
    /// First index the log still holds (entries before were compacted).
    pub first_index: u64,
    pub last_index: u64,
}

/// The at-rest encryption key, handed to a standby on first contact.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    /// Base64 of the 32-byte key.
    pub key: String,
}

/// Whether `presented` is the cluster secret, in time that does not depend on where they
/// differ. An empty configured secret matches nothing.
pub fn secret_matches(configured: &str, presented: &str) -> bool {
    if configured.is_empty() {
        return false;
    }
    let a = Sha256::digest(configured.as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_secret_matches() {
        assert!(secret_matches(
            "a-long-cluster-secret",
            "a-long-cluster-secret"
        ));
        assert!(!secret_matches(
            "a-long-cluster-secret",
            "a-long-cluster-secreT"
        ));
        assert!(!secret_matches("a-long-cluster-secret", ""));
        assert!(!secret_matches("", ""));
    }
}
