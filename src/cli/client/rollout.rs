//! `edgeplane rollout …`: a deployment's status (optionally followed live), the list of
//! deployments, and the operator's actions on one: pause, resume, promote, approve the next
//! region, roll back.

use serde_json::{Value, json};

use super::http::{Api, ClientError};
use super::output::{self, Output, Paint, Ui, fields, print_json, table, text};
use super::watch;

/// An operator action on a running deployment (SPEC §5 deployment rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Promote,
    ApproveNextRegion,
    Rollback,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::ApproveNextRegion => "approve-next-region",
            Action::Rollback => "rollback",
        }
    }
}

/// `rollout status ID [--watch]`; answers the exit code (with `--watch`, that of the final
/// status).
pub async fn status(api: &Api, id: &str, watch_it: bool, ui: Ui) -> Result<u8, ClientError> {
    if watch_it {
        let done = watch::follow(api, id, ui).await?;
        if ui.output == Output::Table {
            println!("{}", watch::final_line(&done, ui.paint));
        }
        return Ok(watch::exit_code(&text(&done, "status")));
    }
    let deployment = api.get(&["deployments", id], &[]).await?;
    match ui.output {
        Output::Json => print_json(&deployment),
        Output::Table => print!("{}", render_status(&deployment, ui.paint)),
    }
    Ok(0)
}

/// A deployment as an operator reads it: where it stands, progress as acked/targets with
/// apply latency, NACKs with the edge's reason, and the last verdict with its figures.
pub fn render_status(deployment: &Value, paint: Paint) -> String {
    let progress = deployment.get("progress").cloned().unwrap_or(Value::Null);
    let number = |value: &Value, key: &str| value.get(key).and_then(Value::as_u64);
    let mut pairs = vec![
        ("deployment", text(deployment, "deploymentId")),
        (
            "configuration",
            format!(
                "{}@{}",
                text(deployment, "configurationId"),
                text(deployment, "configurationVersion")
            ),
        ),
        ("strategy", text(deployment, "strategy")),
        ("status", paint.status(&text(deployment, "status"))),
        (
            "progress",
            format!(
                "{}/{} edges on the new version ({}%), step {}",
                number(&progress, "acked").unwrap_or(0),
                number(&progress, "targets").unwrap_or(0),
                number(deployment, "progressPercentage").unwrap_or(0),
                number(deployment, "currentStep").unwrap_or(0),
            ),
        ),
    ];
    if let (Some(p50), Some(p99)) = (
        number(&progress, "p50ApplyMs"),
        number(&progress, "p99ApplyMs"),
    ) {
        pairs.push(("apply latency", format!("p50 {p50} ms, p99 {p99} ms")));
    }
    pairs.push(("deployed by", text(deployment, "deployedBy")));
    pairs.push(("started", text(deployment, "startedAt")));
    if deployment.get("completedAt").is_some_and(|v| !v.is_null()) {
        pairs.push(("finished", text(deployment, "completedAt")));
    }
    let verdict = deployment
        .get("events")
        .and_then(Value::as_array)
        .and_then(|events| {
            events
                .iter()
                .rev()
                .find(|e| e.get("kind").and_then(Value::as_str) == Some("Verdict"))
        })
        .map(watch::verdict_line);
    if let Some(verdict) = verdict {
        pairs.push((
            "last verdict",
            verdict.trim_start_matches("verdict: ").to_string(),
        ));
    }
    let mut out = fields(&pairs);
    out.push('\n');
    for nack in progress
        .get("nacks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "{} {}: {}\n",
            paint.red("nack"),
            text(nack, "locationId"),
            text(nack, "reason")
        ));
    }
    for skipped in deployment
        .get("skipped")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "{} {}: {}\n",
            paint.yellow("skipped"),
            text(skipped, "locationId"),
            text(skipped, "reason")
        ));
    }
    for error in deployment
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.push_str(&format!("{} {error}\n", paint.red("error")));
    }
    out
}

/// `rollout list`.
pub async fn list(api: &Api, filters: &[(&str, String)], ui: Ui) -> Result<(), ClientError> {
    let mut query = filters.to_vec();
    query.push(("limit", "100".to_string()));
    let page = api.get(&["deployments"], &query).await?;
    if ui.output == Output::Json {
        print_json(&page);
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Vec<String>> = page
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let progress = d.get("progress");
            let count = |key: &str| {
                progress
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            vec![
                text(d, "deploymentId"),
                text(d, "configurationId"),
                text(d, "configurationVersion"),
                text(d, "strategy"),
                text(d, "status"),
                format!("{}/{}", count("acked"), count("targets")),
                output::age(d.get("createdAt"), now),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no deployments");
        return Ok(());
    }
    println!(
        "{}",
        table(
            &[
                "ID",
                "CONFIGURATION",
                "VERSION",
                "STRATEGY",
                "STATUS",
                "ACKED",
                "CREATED"
            ],
            &rows
        )
    );
    Ok(())
}

/// `rollout pause|resume|promote|approve-next-region|rollback ID`.
pub async fn act(
    api: &Api,
    id: &str,
    action: Action,
    reason: Option<String>,
    ui: Ui,
) -> Result<(), ClientError> {
    let body = match (action, reason) {
        (Action::Rollback, Some(reason)) => json!({"reason": reason}),
        (_, Some(_)) => {
            return Err(ClientError::Usage(
                "--reason goes with rollback only".to_string(),
            ));
        }
        _ => json!({}),
    };
    let answer = api.post(&["deployments", id, action.path()], &body).await?;
    match ui.output {
        Output::Json => print_json(&answer),
        Output::Table => println!(
            "deployment {} {}",
            text(&answer, "deploymentId"),
            ui.paint.status(&text(&answer, "status"))
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_progress_nacks_and_the_last_verdict() {
        let deployment = json!({
            "deploymentId": "deploy-1", "configurationId": "config-1",
            "configurationVersion": "1.1.0", "strategy": "RegionalCanary",
            "status": "Canary", "progressPercentage": 11, "currentStep": 1,
            "deployedBy": "admin", "startedAt": "2026-01-01T10:00:00Z",
            "progress": {"acked": 1, "targets": 9, "p50ApplyMs": 3, "p99ApplyMs": 5,
                         "nacks": [{"locationId": "eu-west-1", "reason": "nginx -t failed"}]},
            "events": [
                {"kind": "Verdict", "message": "pass", "data": {"canaryErrorRate": "0.200"}},
            ],
            "errors": [],
        });
        let shown = render_status(&deployment, Paint { enabled: false });
        assert!(
            shown.contains("progress:       1/9 edges on the new version (11%), step 1"),
            "{shown}"
        );
        assert!(
            shown.contains("apply latency:  p50 3 ms, p99 5 ms"),
            "{shown}"
        );
        assert!(shown.contains("nack eu-west-1: nginx -t failed"), "{shown}");
        assert!(
            shown.contains("last verdict:   pass · errors 0.200%"),
            "{shown}"
        );
    }
}
