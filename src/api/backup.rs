//! Online backup (SPEC §9): `GET /api/v1/cluster/snapshot` streams a consistent snapshot of
//! the store while the server keeps serving.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::extract::Principal;
use super::state::ApiState;
use crate::model::Role;

/// Header with the store's term at the snapshot.
pub const TERM_HEADER: &str = "x-edgeplane-term";
/// Header with the index of the last command log entry in the snapshot.
pub const INDEX_HEADER: &str = "x-edgeplane-index";

/// Chunks in flight between the snapshot thread and the connection: a slow client holds the
/// snapshot's read transaction open, not the server's memory.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Hands what the snapshot writes to the response body.
struct ChannelWriter {
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chunks
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A consistent snapshot of the whole store, for `edgeplane restore`.
#[utoipa::path(
    get,
    path = "/cluster/snapshot",
    operation_id = "getSnapshot",
    tag = "cluster",
    responses((
        status = 200,
        description = "The snapshot stream (checksummed; a cut-off transfer fails its check on restore)",
        content_type = "application/octet-stream",
        body = Vec<u8>,
        headers(
            ("X-Edgeplane-Term" = u64, description = "The store's term at the snapshot"),
            ("X-Edgeplane-Index" = u64, description = "Index of the last command log entry it holds"),
        ),
    )),
)]
pub async fn snapshot(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let store = state.store().clone();
    let pending = tokio::task::spawn_blocking(move || store.begin_snapshot())
        .await
        .map_err(|e| ApiError::Unavailable(format!("snapshot task failed: {e}")))??;
    let (term, index) = (pending.term(), pending.index());
    let (chunks, body) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let subject = principal.subject.clone();
    tokio::task::spawn_blocking(move || {
        let failed = chunks.clone();
        match pending.write_to(&mut ChannelWriter { chunks }) {
            Ok(meta) => tracing::info!(
                term = meta.term,
                index = meta.index,
                bytes = meta.bytes,
                by = %subject,
                "snapshot streamed"
            ),
            Err(error) => {
                tracing::warn!(%error, by = %subject, "snapshot stream ended early");
                // The client sees a broken body rather than a short one that looks whole.
                let _ = failed.blocking_send(Err(std::io::Error::other(error.to_string())));
            }
        }
    });
    let mut response = Body::from_stream(ReceiverStream::new(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(TERM_HEADER, HeaderValue::from(term));
    headers.insert(INDEX_HEADER, HeaderValue::from(index));
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"edgeplane-{term}-{index}.snapshot\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}
