//! The new primary's announcement to the fleet (SPEC §9 failover): a node that became primary
//! tells every registered edge its term and URL (`POST {endpoint}/edge/v1/leader`), so the
//! edges move their heartbeats to it and refuse the old primary's pushes even when no
//! deployment is running to push them.
//!
//! It runs beside promotion, never in its way: a bounded number of edges at a time, each
//! through the push client (its timeout, retries and backoff), each failure logged; an edge
//! that missed it still finds the primary through its heartbeats (`NOT_LEADER` answers and
//! its other URLs).

use futures_util::StreamExt;

use super::push::{PushClient, PushError};
use crate::protocol::LeaderAnnouncement;
use crate::secrets::SecretBox;
use crate::store::Store;

/// Edges told at once; the push client bounds its own in-flight requests below this too.
const MAX_IN_FLIGHT: usize = 32;

/// What one announcement did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceReport {
    /// Edges that took the announcement.
    pub told: usize,
    /// `(location, why)` of edges that did not.
    pub failed: Vec<(String, String)>,
    /// Edges not told because this node stopped being primary meanwhile.
    pub skipped: usize,
}

/// Tells every registered edge that this node is primary at `term`, reachable at `url`.
/// `still_primary` is asked before each edge, so a node that steps down mid-way stops.
pub async fn announce_leader(
    store: &Store,
    secrets: &SecretBox,
    push: &PushClient,
    announcement: LeaderAnnouncement,
    still_primary: impl Fn() -> bool,
) -> AnnounceReport {
    let mut report = AnnounceReport::default();
    let records = match store.read(|reader| reader.edges()).await {
        Ok(records) => records,
        Err(error) => {
            tracing::error!(%error, "cannot read the edges to announce the new primary to");
            return report;
        }
    };
    let mut targets = Vec::with_capacity(records.len());
    for record in records {
        let location_id = record.location.location_id;
        match secrets.open(&record.token_sealed) {
            Ok(token) => targets.push((location_id, record.location.endpoint, token)),
            Err(error) => {
                tracing::warn!(%location_id, %error, "cannot open the edge's token to announce the new primary");
                report.failed.push((
                    location_id,
                    format!("cannot open the edge's token: {error}"),
                ));
            }
        }
    }
    let announcement = &announcement;
    let still_primary = &still_primary;
    let answers: Vec<(String, Option<Result<LeaderAnnouncement, PushError>>)> =
        futures_util::stream::iter(targets)
            .map(|(location_id, endpoint, token)| async move {
                if !still_primary() {
                    return (location_id, None);
                }
                let answer = push.announce(&endpoint, &token, announcement).await;
                (location_id, Some(answer))
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
    for (location_id, answer) in answers {
        match answer {
            Some(Ok(_)) => report.told += 1,
            Some(Err(error)) => {
                tracing::warn!(
                    %location_id,
                    kind = error.kind(),
                    %error,
                    "the edge was not told of the new primary"
                );
                report.failed.push((location_id, error.to_string()));
            }
            None => report.skipped += 1,
        }
    }
    tracing::info!(
        term = announcement.term,
        url = %announcement.url,
        told = report.told,
        failed = report.failed.len(),
        skipped = report.skipped,
        "announced the new primary to the edges"
    );
    report
}
