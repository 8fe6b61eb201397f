//! `edgeplane edges list`: the fleet as a table — health, last heartbeat, what each edge
//! runs, quarantine.

use serde_json::Value;

use super::http::{Api, ClientError};
use super::output::{self, Output, Ui, print_json, table, text};

/// `edges list [--region R]`.
pub async fn list(api: &Api, region: Option<String>, ui: Ui) -> Result<(), ClientError> {
    let mut query = vec![("limit", "100".to_string())];
    if let Some(region) = region {
        query.push(("region", region));
    }
    let page = api.get(&["edge-locations"], &query).await?;
    if ui.output == Output::Json {
        print_json(&page);
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Vec<String>> = page
        .get("edgeLocations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|edge| row(edge, now))
        .collect();
    if rows.is_empty() {
        println!("no edge locations");
        return Ok(());
    }
    let rendered = table(
        &[
            "LOCATION",
            "REGION",
            "CITY",
            "HEALTH",
            "HEARTBEAT",
            "CONFIGURATIONS",
            "STATE",
        ],
        &rows,
    );
    let paint = ui.paint;
    for (i, line) in rendered.lines().enumerate() {
        let line = if i == 0 {
            paint.bold(line)
        } else if line.contains("  unhealthy  ") {
            line.replacen(
                "  unhealthy  ",
                &format!("  {}  ", paint.red("unhealthy")),
                1,
            )
        } else {
            line.replacen("  healthy  ", &format!("  {}  ", paint.green("healthy")), 1)
        };
        println!("{line}");
    }
    if page.get("hasMore").and_then(Value::as_bool) == Some(true) {
        println!("… {} in all; narrow with --region", text(&page, "total"));
    }
    Ok(())
}

fn row(edge: &Value, now: time::OffsetDateTime) -> Vec<String> {
    let healthy = edge.pointer("/health/isHealthy").and_then(Value::as_bool) == Some(true);
    let n_configurations = edge
        .get("activeConfigurations")
        .and_then(Value::as_object)
        .map_or(0, |c| c.len());
    let state = if edge.get("isQuarantined").and_then(Value::as_bool) == Some(true) {
        "quarantined"
    } else if edge.get("isActive").and_then(Value::as_bool) == Some(false) {
        "inactive"
    } else {
        "active"
    };
    vec![
        text(edge, "locationId"),
        text(edge, "region"),
        format!("{}, {}", text(edge, "city"), text(edge, "countryCode")),
        if healthy { "healthy" } else { "unhealthy" }.to_string(),
        output::age(edge.get("lastHeartbeat"), now),
        n_configurations.to_string(),
        state.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_says_health_heartbeat_and_state() {
        let now = time::macros::datetime!(2026-01-01 12:00:00 UTC);
        let edge = json!({
            "locationId": "eu-west-1", "region": "Europe", "city": "London",
            "countryCode": "GB", "health": {"isHealthy": true},
            "lastHeartbeat": "2026-01-01T11:59:58Z",
            "activeConfigurations": {"config-1": "1.0.0"},
            "isActive": true, "isQuarantined": true,
        });
        assert_eq!(
            row(&edge, now),
            vec![
                "eu-west-1",
                "Europe",
                "London, GB",
                "healthy",
                "2s ago",
                "1",
                "quarantined"
            ]
        );
    }
}
