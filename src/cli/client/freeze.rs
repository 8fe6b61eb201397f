//! `edgeplane freeze on|off|status`: the global stop of rollouts (SPEC §7).

use serde_json::{Value, json};

use super::http::{Api, ClientError};
use super::output::{Output, Paint, Ui, print_json, text};

/// What to do with the freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeAction {
    On,
    Off,
    Status,
}

pub async fn freeze(
    api: &Api,
    action: FreezeAction,
    reason: Option<String>,
    ui: Ui,
) -> Result<(), ClientError> {
    let answer = match action {
        FreezeAction::On => {
            let mut body = json!({});
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            api.post(&["freeze"], &body).await?
        }
        FreezeAction::Off | FreezeAction::Status if reason.is_some() => {
            return Err(ClientError::Usage(
                "--reason goes with `freeze on` only".into(),
            ));
        }
        FreezeAction::Off => api.delete(&["freeze"]).await?,
        FreezeAction::Status => api.get(&["freeze"], &[]).await?,
    };
    match ui.output {
        Output::Json => print_json(&answer),
        Output::Table => println!("{}", describe(&answer, ui.paint)),
    }
    Ok(())
}

fn describe(answer: &Value, paint: Paint) -> String {
    if answer.get("frozen").and_then(Value::as_bool) == Some(true) {
        format!(
            "rollouts are {} by {} since {}: {}",
            paint.red("frozen"),
            text(answer, "frozenBy"),
            text(answer, "frozenAt"),
            text(answer, "reason")
        )
    } else {
        format!("rollouts are {}", paint.green("not frozen"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_freeze_is_told_with_who_when_and_why() {
        let plain = Paint { enabled: false };
        let frozen = json!({"frozen": true, "frozenBy": "admin", "frozenAt": "2026-01-01T10:00:00Z", "reason": "incident 42"});
        assert_eq!(
            describe(&frozen, plain),
            "rollouts are frozen by admin since 2026-01-01T10:00:00Z: incident 42"
        );
        assert_eq!(
            describe(&json!({"frozen": false}), plain),
            "rollouts are not frozen"
        );
    }
}
