//! `edgeplane deploy NAME[@VERSION]`: builds the deployment request from a few flags (the
//! API's own request type, so names cannot drift), shows a dry run's plan, or starts the
//! deployment and optionally follows it to its end.

use serde_json::Value;

use super::configurations::{find, split_version};
use super::http::{Api, ClientError};
use super::output::{Output, Paint, Ui, print_json, table, text};
use super::watch;
use crate::model::deployment::{CreateDeployment, FailureAction, RollbackConfig, Span, Strategy};

/// `--strategy`, in the words operators use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// RegionalCanary: 10%, 50%, 100% with analysis between steps.
    #[default]
    Canary,
    /// DirectDeployment: every target at once.
    Direct,
    /// BlueGreenDeployment: stage everywhere, then switch.
    BlueGreen,
    /// RollingRegional: region by region.
    Rolling,
    /// GeographicWave: each region at its local deployment time.
    Wave,
}

impl StrategyArg {
    pub fn strategy(self) -> Strategy {
        match self {
            StrategyArg::Canary => Strategy::RegionalCanary,
            StrategyArg::Direct => Strategy::DirectDeployment,
            StrategyArg::BlueGreen => Strategy::BlueGreenDeployment,
            StrategyArg::Rolling => Strategy::RollingRegional,
            StrategyArg::Wave => Strategy::GeographicWave,
        }
    }
}

/// `--failure-action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureArg {
    Rollback,
    Pause,
}

/// What `deploy` was asked for, flags parsed.
#[derive(Clone, Debug, Default)]
pub struct DeployOptions {
    pub strategy: StrategyArg,
    pub regions: Vec<String>,
    pub locations: Vec<String>,
    pub acknowledge_warnings: bool,
    /// How long each step is watched: the canary's `monitorDuration`, blue-green's
    /// `testDuration`, rolling's `regionDelay`, a wave's `monitorDuration`.
    pub monitor_duration: Option<Span>,
    pub steps: Option<Vec<u32>>,
    pub min_samples: Option<u64>,
    pub require_approval: bool,
    pub manual_promote: bool,
    pub failure_action: Option<FailureArg>,
}

pub fn parse_span(text: &str) -> Result<Span, String> {
    Span::parse(text)
}

/// The request body for `options`; `thresholds` are the server-wide defaults, needed only
/// when one of them is overridden.
pub fn request(
    configuration_id: &str,
    version: Option<&str>,
    options: &DeployOptions,
    thresholds: Option<RollbackConfig>,
) -> Result<CreateDeployment, ClientError> {
    let strategy = options.strategy.strategy();
    let mut request = CreateDeployment {
        configuration_id: configuration_id.to_string(),
        configuration_version: version.map(str::to_string),
        strategy,
        target_regions: options.regions.clone(),
        target_locations: options.locations.clone(),
        acknowledge_warnings: options.acknowledge_warnings,
        ..CreateDeployment::default()
    };
    let only_for = |flag: &str, wanted: Strategy| {
        if strategy == wanted {
            Ok(())
        } else {
            Err(ClientError::Usage(format!(
                "{flag} applies to the {wanted:?} strategy only"
            )))
        }
    };
    if let Some(span) = options.monitor_duration {
        match strategy {
            Strategy::RegionalCanary => request.canary_config.monitor_duration = span,
            Strategy::BlueGreenDeployment => request.test_duration = span,
            Strategy::RollingRegional => request.region_delay = span,
            Strategy::GeographicWave => request.monitor_duration = span,
            Strategy::DirectDeployment => {
                return Err(ClientError::Usage(
                    "--monitor-duration: a direct deployment has no watch".into(),
                ));
            }
        }
    }
    if let Some(steps) = &options.steps {
        only_for("--steps", Strategy::RegionalCanary)?;
        let first = steps
            .first()
            .ok_or_else(|| ClientError::Usage("--steps needs at least one step".into()))?;
        request.canary_config.initial_percentage = f64::from(*first);
        request.canary_config.promotion_steps = steps.clone();
    }
    if options.manual_promote {
        only_for("--manual-promote", Strategy::RegionalCanary)?;
        request.canary_config.auto_promote = false;
    }
    if options.require_approval {
        only_for("--require-approval", Strategy::RollingRegional)?;
        request.require_approval = true;
    }
    if let Some(action) = options.failure_action {
        request.failure_action = match action {
            FailureArg::Rollback => FailureAction::Rollback,
            FailureArg::Pause => FailureAction::Pause,
        };
    }
    if let Some(min_samples) = options.min_samples {
        let mut rollback = thresholds.unwrap_or_default();
        rollback.min_samples = min_samples;
        request.rollback_config = Some(rollback);
    }
    Ok(request)
}

/// Every region that has edges, in name order.
async fn all_regions(api: &Api) -> Result<Vec<String>, ClientError> {
    let edges = api
        .list_all(&["edge-locations"], "edgeLocations", &[])
        .await?;
    let mut regions: Vec<String> = edges
        .iter()
        .filter_map(|e| e.get("region").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    regions.sort();
    regions.dedup();
    if regions.is_empty() {
        return Err(ClientError::Usage(
            "no edge location is registered; nothing to deploy to".into(),
        ));
    }
    Ok(regions)
}

/// `deploy`; answers the exit code (with `--watch`, that of the final status).
pub async fn deploy(
    api: &Api,
    spec: &str,
    mut options: DeployOptions,
    dry_run: bool,
    watch_it: bool,
    ui: Ui,
) -> Result<u8, ClientError> {
    let Ui { output, paint, .. } = ui;
    let (name, version) = split_version(spec);
    let configuration = find(api, name).await?;
    let configuration_id = text(&configuration, "configurationId");
    if options.regions.is_empty() && options.locations.is_empty() {
        options.regions = all_regions(api).await?;
    }
    let thresholds = match options.min_samples {
        Some(_) => {
            let answer = api.get(&["metrics", "thresholds"], &[]).await?;
            Some(serde_json::from_value(answer).map_err(|e| {
                ClientError::Other(format!("the server's thresholds are not readable: {e}"))
            })?)
        }
        None => None,
    };
    let body = request(&configuration_id, version, &options, thresholds)?;
    let body = serde_json::to_value(&body)
        .map_err(|e| ClientError::Other(format!("cannot encode the request: {e}")))?;
    let version_shown = version
        .map(str::to_string)
        .unwrap_or_else(|| "latest approved".to_string());

    if dry_run {
        let plan = api
            .call(
                reqwest::Method::POST,
                &["deployments"],
                &[("dryRun", "true".to_string())],
                Some(&body),
                None,
            )
            .await?;
        match output {
            Output::Json => print_json(&plan),
            Output::Table => print!("{}", render_plan(name, &plan, paint)),
        }
        return Ok(0);
    }

    let started = api.post(&["deployments"], &body).await?;
    let deployment_id = text(&started, "deploymentId");
    match (output, watch_it) {
        (Output::Json, true) => println!("{started}"),
        (Output::Json, false) => print_json(&started),
        (Output::Table, _) => println!(
            "deployment {deployment_id} started: {:?} of {name}@{version_shown} to {}",
            options.strategy.strategy(),
            targets(&options)
        ),
    }
    if !watch_it {
        if output == Output::Table {
            println!("follow it with: edgeplane rollout status {deployment_id} --watch");
        }
        return Ok(0);
    }
    let done = watch::follow(api, &deployment_id, ui).await?;
    if output == Output::Table {
        println!("{}", watch::final_line(&done, paint));
    }
    Ok(watch::exit_code(&text(&done, "status")))
}

fn targets(options: &DeployOptions) -> String {
    let mut parts = Vec::new();
    if !options.regions.is_empty() {
        parts.push(options.regions.join(", "));
    }
    if !options.locations.is_empty() {
        parts.push(options.locations.join(", "));
    }
    parts.join("; ")
}

/// A dry run's plan: the waves with their edges and watches, what would be skipped, and
/// when it would end.
pub fn render_plan(name: &str, answer: &Value, paint: Paint) -> String {
    let plan = answer.get("plan").cloned().unwrap_or(Value::Null);
    let mut out = format!(
        "{} {} of {name}@{} — nothing was pushed\n",
        paint.bold("dry run:"),
        text(answer, "strategy"),
        text(answer, "configurationVersion"),
    );
    let rows: Vec<Vec<String>> = plan
        .get("waves")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|wave| {
            let locations: Vec<&str> = wave
                .get("locations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let watch = wave
                .get("watchMs")
                .and_then(Value::as_u64)
                .map(|ms| Span(ms).to_string())
                .unwrap_or_else(|| "-".into());
            let index = wave.get("index").and_then(Value::as_u64).unwrap_or(0);
            vec![
                (index + 1).to_string(),
                text(wave, "name"),
                locations.len().to_string(),
                watch,
                if wave.get("gate").and_then(Value::as_bool) == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                text(wave, "notBefore"),
                locations.join(","),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "WAVE",
            "NAME",
            "EDGES",
            "WATCH",
            "APPROVAL",
            "NOT BEFORE",
            "LOCATIONS",
        ],
        &rows,
    ));
    out.push('\n');
    for skipped in plan
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
    out.push_str(&format!(
        "expected finish: {}\n",
        text(&plan, "expectedFinish")
    ));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flags_land_in_the_fields_of_each_strategy() {
        let options = |strategy: StrategyArg| DeployOptions {
            strategy,
            regions: vec!["Europe".into()],
            monitor_duration: Some(Span::from_secs(10)),
            ..DeployOptions::default()
        };
        let canary = request("c", Some("1.0.0"), &options(StrategyArg::Canary), None).unwrap();
        assert_eq!(canary.strategy, Strategy::RegionalCanary);
        assert_eq!(canary.canary_config.monitor_duration, Span::from_secs(10));
        assert_eq!(canary.configuration_version.as_deref(), Some("1.0.0"));
        let blue_green = request("c", None, &options(StrategyArg::BlueGreen), None).unwrap();
        assert_eq!(blue_green.test_duration, Span::from_secs(10));
        let rolling = request("c", None, &options(StrategyArg::Rolling), None).unwrap();
        assert_eq!(rolling.region_delay, Span::from_secs(10));
        let wave = request("c", None, &options(StrategyArg::Wave), None).unwrap();
        assert_eq!(wave.monitor_duration, Span::from_secs(10));
        assert!(request("c", None, &options(StrategyArg::Direct), None).is_err());
        for built in [canary, blue_green, rolling, wave] {
            assert!(built.validate().is_empty(), "{:?}", built.validate());
        }
    }

    #[test]
    fn steps_min_samples_and_gates_keep_the_servers_other_thresholds() {
        let options = DeployOptions {
            regions: vec!["Europe".into()],
            steps: Some(vec![20, 100]),
            min_samples: Some(100),
            manual_promote: true,
            ..DeployOptions::default()
        };
        let server = RollbackConfig {
            error_rate_threshold: 2.5,
            ..RollbackConfig::default()
        };
        let built = request("c", None, &options, Some(server)).unwrap();
        assert_eq!(built.canary_config.promotion_steps, vec![20, 100]);
        assert_eq!(built.canary_config.initial_percentage, 20.0);
        assert!(!built.canary_config.auto_promote);
        let rollback = built.rollback_config.clone().expect("rollback config");
        assert_eq!(rollback.min_samples, 100);
        assert_eq!(rollback.error_rate_threshold, 2.5);
        assert!(built.validate().is_empty());

        let gate_on_canary = DeployOptions {
            require_approval: true,
            ..options
        };
        assert!(request("c", None, &gate_on_canary, None).is_err());
    }

    #[test]
    fn the_body_is_what_the_api_reads() {
        let options = DeployOptions {
            strategy: StrategyArg::BlueGreen,
            locations: vec!["us-east-1".into()],
            ..DeployOptions::default()
        };
        let body = serde_json::to_value(request("c", None, &options, None).unwrap()).unwrap();
        assert_eq!(body["strategy"], "BlueGreenDeployment");
        assert_eq!(body["targetLocations"], json!(["us-east-1"]));
        assert_eq!(body["configurationId"], "c");
    }

    #[test]
    fn a_plan_lists_its_waves_and_skipped_edges() {
        let answer = json!({
            "dryRun": true, "strategy": "RegionalCanary", "configurationVersion": "1.0.0",
            "plan": {
                "waves": [
                    {"index": 0, "name": "canary 10%", "locations": ["us-east-1"], "watchMs": 10000, "gate": false},
                    {"index": 1, "name": "canary 100%", "locations": ["eu-west-1", "ap-east-1"], "watchMs": 10000, "gate": false},
                ],
                "skipped": [{"locationId": "ap-south-1", "reason": "unhealthy"}],
                "expectedFinish": "2026-01-01T10:00:20Z",
            }
        });
        let rendered = render_plan("static", &answer, Paint { enabled: false });
        assert!(
            rendered.contains("1     canary 10%   1      10s"),
            "{rendered}"
        );
        assert!(rendered.contains("eu-west-1,ap-east-1"), "{rendered}");
        assert!(
            rendered.contains("skipped ap-south-1: unhealthy"),
            "{rendered}"
        );
        assert!(
            rendered.contains("expected finish: 2026-01-01T10:00:20Z"),
            "{rendered}"
        );
    }
}
