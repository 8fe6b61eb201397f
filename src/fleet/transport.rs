//! The deployment engine's way to the edges: the HTTP push client of the edge protocol.

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::edge::{PushClient, PushMode, PushOutcome, PushRequest};
use crate::rollout::engine::{EdgeAnswer, EdgeTarget, EdgeTransport, PushContent};
use crate::validate::checksum;

fn answer(result: Result<PushOutcome, crate::edge::PushError>) -> EdgeAnswer {
    match result {
        Ok(PushOutcome::Acked { latency, .. }) => EdgeAnswer::Acked {
            latency_ms: latency.as_millis() as u64,
        },
        Ok(PushOutcome::Nacked { reason }) => EdgeAnswer::Nacked { reason },
        Err(error) => EdgeAnswer::Failed {
            error: error.to_string(),
        },
    }
}

impl EdgeTransport for PushClient {
    fn push(&self, target: EdgeTarget, content: PushContent) -> BoxFuture<'static, EdgeAnswer> {
        let client = self.clone();
        Box::pin(async move {
            let body = if content.mode == PushMode::Activate {
                Value::Null
            } else {
                (*content.content).clone()
            };
            let request = PushRequest {
                version: content.version.clone(),
                config_type: content.config_type,
                checksum: checksum(&content.content),
                content: body,
                metadata: content.metadata.clone(),
                mode: content.mode,
            };
            answer(
                client
                    .push(
                        &target.endpoint,
                        &target.token,
                        &content.configuration_id,
                        &request,
                    )
                    .await,
            )
        })
    }

    fn rollback(
        &self,
        target: EdgeTarget,
        configuration_id: String,
        to_version: Option<String>,
    ) -> BoxFuture<'static, EdgeAnswer> {
        let client = self.clone();
        Box::pin(async move {
            answer(
                client
                    .rollback(
                        &target.endpoint,
                        &target.token,
                        &configuration_id,
                        to_version.as_deref(),
                    )
                    .await,
            )
        })
    }
}
