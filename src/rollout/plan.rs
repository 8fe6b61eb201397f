//! Turning a deployment and the fleet into waves: which edges, in what order, when, and how
//! long each is watched (SPEC §7). Pure: the clock and the fleet are values.
//!
//! The plan is also the answer of `POST /deployments?dryRun=true`, so it serialises as camelCase.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::deployment::parse_hh_mm;
use crate::model::{Deployment, EdgeLocation, SkippedLocation, Strategy, Timestamp, Wave, Weekday};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// The waves of a deployment, as planned at its start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub waves: Vec<Wave>,
    /// Targets left out, with the reason (unknown, inactive, quarantined, unhealthy).
    pub skipped: Vec<SkippedLocation>,
    /// Start plus every push-free watch and schedule; approval waits are not included.
    pub expected_finish: Timestamp,
    /// locationId → version of this configuration the edge reported before the deployment;
    /// edges absent here had none (or none reported).
    pub previous_versions: BTreeMap<String, String>,
}

/// Plans `deployment` over `edges` as of `now`.
///
/// Targets are the edges in `targetRegions` plus those named in `targetLocations`. Targets
/// that are inactive, quarantined or unhealthy (no heartbeat within `healthy_within_ms`, or a
/// self-reported problem) are skipped with a reason, as are named locations that do not exist.
/// Waves never contain an edge twice and never are empty.
pub fn plan(
    deployment: &Deployment,
    edges: &[EdgeLocation],
    now: Timestamp,
    healthy_within_ms: i64,
) -> Plan {
    let mut skipped = Vec::new();
    let mut eligible: Vec<&EdgeLocation> = Vec::new();
    let mut previous_versions = BTreeMap::new();

    let mut seen = std::collections::BTreeSet::new();
    for edge in edges {
        let targeted = deployment.target_regions.contains(&edge.region)
            || deployment.target_locations.contains(&edge.location_id);
        if !targeted || !seen.insert(edge.location_id.clone()) {
            continue;
        }
        if let Some(version) = edge.active_configurations.get(&deployment.configuration_id) {
            previous_versions.insert(edge.location_id.clone(), version.clone());
        }
        match skip_reason(edge, now, healthy_within_ms) {
            Some(reason) => skipped.push(SkippedLocation {
                location_id: edge.location_id.clone(),
                reason,
            }),
            None => eligible.push(edge),
        }
    }
    for location in &deployment.target_locations {
        if !seen.contains(location) {
            skipped.push(SkippedLocation {
                location_id: location.clone(),
                reason: "unknown edge location".to_string(),
            });
        }
    }
    eligible.sort_by(|a, b| {
        (a.region.as_str(), a.location_id.as_str())
            .cmp(&(b.region.as_str(), b.location_id.as_str()))
    });

    let waves = if eligible.is_empty() {
        Vec::new()
    } else {
        match deployment.strategy {
            Strategy::DirectDeployment => vec![wave(0, "all targets", ids(&eligible), 0, false)],
            Strategy::RegionalCanary => canary_waves(deployment, &eligible),
            Strategy::BlueGreenDeployment => vec![
                wave(0, "stage", ids(&eligible), 0, false),
                wave(
                    1,
                    "activate",
                    ids(&eligible),
                    deployment.test_duration.millis(),
                    false,
                ),
            ],
            Strategy::RollingRegional => rolling_waves(deployment, &eligible),
            Strategy::GeographicWave => geographic_waves(deployment, &eligible, now),
        }
    };

    let mut finish = now;
    for w in &waves {
        if let Some(not_before) = w.not_before {
            finish = finish.max(not_before);
        }
        finish = finish.plus_millis(i64::try_from(w.watch_ms).unwrap_or(i64::MAX));
    }
    Plan {
        waves,
        skipped,
        expected_finish: finish,
        previous_versions,
    }
}

fn skip_reason(edge: &EdgeLocation, now: Timestamp, healthy_within_ms: i64) -> Option<String> {
    if !edge.is_active {
        return Some("inactive".to_string());
    }
    if edge.is_quarantined {
        return Some("quarantined after repeated NACKs".to_string());
    }
    match edge.last_heartbeat {
        None => Some("unhealthy: no heartbeat yet".to_string()),
        Some(seen) if now.millis_since(seen) >= healthy_within_ms => Some(format!(
            "unhealthy: last heartbeat {}s ago",
            now.millis_since(seen) / 1000
        )),
        Some(_) if !edge.health.is_healthy => Some("unhealthy: edge reports unhealthy".to_string()),
        Some(_) => None,
    }
}

fn ids(edges: &[&EdgeLocation]) -> Vec<String> {
    edges.iter().map(|e| e.location_id.clone()).collect()
}

fn wave(index: usize, name: &str, locations: Vec<String>, watch_ms: u64, gate: bool) -> Wave {
    Wave {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        name: name.to_string(),
        locations,
        watch_ms,
        gate,
        not_before: None,
        utc_offset_minutes: 0,
    }
}

/// Edges grouped by region (regions in name order, edges by id within), then dealt one per
/// region in turn, so every prefix of the result is spread across the regions.
fn round_robin(edges: &[&EdgeLocation]) -> Vec<String> {
    let mut by_region: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for edge in edges {
        by_region
            .entry(edge.region.as_str())
            .or_default()
            .push(edge.location_id.as_str());
    }
    let longest = by_region.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(edges.len());
    for i in 0..longest {
        for ids in by_region.values() {
            if let Some(id) = ids.get(i) {
                order.push((*id).to_string());
            }
        }
    }
    order
}

/// Edges covered once `percent` of `n` targets are done: ceil, at least one, at most all.
pub fn canary_count(percent: u32, n: usize) -> usize {
    let wanted = (u64::from(percent) * n as u64).div_ceil(100);
    usize::try_from(wanted)
        .unwrap_or(n)
        .clamp(1, n.max(1))
        .min(n)
}

fn canary_waves(deployment: &Deployment, eligible: &[&EdgeLocation]) -> Vec<Wave> {
    let order = round_robin(eligible);
    let n = order.len();
    let watch = deployment.canary_config.monitor_duration.millis();
    let mut waves = Vec::new();
    let mut done = 0;
    for percent in &deployment.canary_config.promotion_steps {
        let upto = canary_count(*percent, n);
        if upto <= done {
            // A step that adds no edge (tiny fleets) is folded into the next one.
            continue;
        }
        waves.push(wave(
            waves.len(),
            &format!("canary {percent}%"),
            order[done..upto].to_vec(),
            watch,
            !deployment.canary_config.auto_promote,
        ));
        done = upto;
    }
    if done < n {
        // Steps are validated to end at 100; this only guards records written otherwise.
        waves.push(wave(
            waves.len(),
            "canary 100%",
            order[done..].to_vec(),
            watch,
            false,
        ));
    }
    clear_last_gate(&mut waves);
    waves
}

/// A gate holds the deployment before the *next* wave; the last wave has none.
fn clear_last_gate(waves: &mut [Wave]) {
    if let Some(last) = waves.last_mut() {
        last.gate = false;
    }
}

/// Regions in `targetRegions` order, then regions reached only through `targetLocations`, by name.
fn region_order(deployment: &Deployment, eligible: &[&EdgeLocation]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for region in &deployment.target_regions {
        if !order.contains(region) && eligible.iter().any(|e| &e.region == region) {
            order.push(region.clone());
        }
    }
    for edge in eligible {
        if !order.contains(&edge.region) {
            order.push(edge.region.clone());
        }
    }
    let explicit = order
        .iter()
        .take_while(|r| deployment.target_regions.contains(r))
        .count();
    order[explicit..].sort();
    order
}

fn in_region(eligible: &[&EdgeLocation], region: &str) -> Vec<String> {
    eligible
        .iter()
        .filter(|e| e.region == region)
        .map(|e| e.location_id.clone())
        .collect()
}

fn rolling_waves(deployment: &Deployment, eligible: &[&EdgeLocation]) -> Vec<Wave> {
    let mut waves: Vec<Wave> = region_order(deployment, eligible)
        .iter()
        .enumerate()
        .map(|(i, region)| {
            wave(
                i,
                region,
                in_region(eligible, region),
                deployment.region_delay.millis(),
                deployment.require_approval,
            )
        })
        .collect();
    clear_last_gate(&mut waves);
    waves
}

fn geographic_waves(
    deployment: &Deployment,
    eligible: &[&EdgeLocation],
    now: Timestamp,
) -> Vec<Wave> {
    let mut regions: Vec<(i32, String)> = region_order(deployment, eligible)
        .into_iter()
        .map(|region| {
            let offsets: Vec<i64> = eligible
                .iter()
                .filter(|e| e.region == region)
                .map(|e| i64::from(utc_offset_minutes(e)))
                .collect();
            let mean = offsets.iter().sum::<i64>() / offsets.len().max(1) as i64;
            (i32::try_from(mean).unwrap_or(0), region)
        })
        .collect();
    // East to west: the largest offset sees its night first.
    regions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));

    let minute_of_day = parse_hh_mm(&deployment.deployment_time).unwrap_or(120);
    let watch = deployment.monitor_duration.millis();
    let mut earliest = now;
    regions
        .into_iter()
        .enumerate()
        .map(|(i, (offset, region))| {
            let start = next_window(earliest, offset, minute_of_day, &deployment.days);
            earliest = start.plus_millis(i64::try_from(watch).unwrap_or(i64::MAX));
            let mut w = wave(i, &region, in_region(eligible, &region), watch, false);
            w.not_before = Some(start);
            w.utc_offset_minutes = offset;
            w
        })
        .collect()
}

/// Weekday of a local-time instant given as milliseconds since the epoch (a Thursday).
pub fn local_weekday(local_ms: i64) -> Weekday {
    let day_index = local_ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday, index 3 in Monday-first order.
    let slot = usize::try_from((day_index + 3).rem_euclid(7)).unwrap_or(0);
    Weekday::ALL[slot]
}

/// The first instant at or after `earliest` when the local clock (UTC + `offset_minutes`)
/// reads `minute_of_day` on an allowed day (`days` empty: any day).
pub fn next_window(
    earliest: Timestamp,
    offset_minutes: i32,
    minute_of_day: u32,
    days: &[Weekday],
) -> Timestamp {
    let offset_ms = i64::from(offset_minutes) * MINUTE_MS;
    let local = earliest.millis().saturating_add(offset_ms);
    let mut candidate = local.div_euclid(DAY_MS) * DAY_MS + i64::from(minute_of_day) * MINUTE_MS;
    if candidate < local {
        candidate += DAY_MS;
    }
    // Seven more days always reach an allowed day when `days` is non-empty.
    for _ in 0..7 {
        if days.is_empty() || days.contains(&local_weekday(candidate)) {
            break;
        }
        candidate += DAY_MS;
    }
    Timestamp(candidate - offset_ms)
}

/// The edge's offset from UTC in minutes, standard time (daylight saving is ignored: the
/// window moves by an hour in summer, which a low-traffic window tolerates).
///
/// `metadata["utcOffset"]` wins when present (`+09:00`, `-5`, `5.5`). Otherwise a per-country
/// table; countries spanning zones (US, CA, AU, BR, RU, MX) are refined by a city or state
/// name found in the edge's `city` or `name`, else take the zone of their main population.
/// Unknown countries count as UTC.
pub fn utc_offset_minutes(edge: &EdgeLocation) -> i32 {
    if let Some(minutes) = edge.metadata.get("utcOffset").and_then(|t| parse_offset(t)) {
        return minutes;
    }
    let place = format!("{} {}", edge.city, edge.name).to_ascii_lowercase();
    let has = |names: &[&str]| names.iter().any(|n| place.contains(n));
    let hours: f64 = match edge.country_code.to_ascii_uppercase().as_str() {
        "US" => {
            if has(&[
                "california",
                "los angeles",
                "san francisco",
                "san jose",
                "seattle",
                "oregon",
                "portland",
                "nevada",
                "las vegas",
            ]) {
                -8.0
            } else if has(&[
                "denver",
                "colorado",
                "arizona",
                "phoenix",
                "utah",
                "salt lake",
            ]) {
                -7.0
            } else if has(&[
                "texas",
                "dallas",
                "houston",
                "austin",
                "chicago",
                "illinois",
                "minnesota",
                "kansas",
                "missouri",
            ]) {
                -6.0
            } else if has(&["hawaii", "honolulu"]) {
                -10.0
            } else if has(&["alaska", "anchorage"]) {
                -9.0
            } else {
                -5.0
            }
        }
        "CA" => {
            if has(&["vancouver", "british columbia"]) {
                -8.0
            } else if has(&["calgary", "edmonton", "alberta"]) {
                -7.0
            } else if has(&["winnipeg"]) {
                -6.0
            } else {
                -5.0
            }
        }
        "MX" => -6.0,
        "BR" => -3.0,
        "AR" | "UY" => -3.0,
        "CL" => -4.0,
        "CO" | "PE" | "EC" => -5.0,
        "GB" | "IE" | "PT" | "IS" | "MA" | "GH" | "SN" => 0.0,
        "FR" | "DE" | "NL" | "BE" | "LU" | "ES" | "IT" | "CH" | "AT" | "SE" | "NO" | "DK"
        | "PL" | "CZ" | "SK" | "HU" | "HR" | "SI" | "RS" | "NG" | "DZ" | "TN" => 1.0,
        "FI" | "EE" | "LV" | "LT" | "GR" | "RO" | "BG" | "UA" | "IL" | "EG" | "ZA" | "CY" => 2.0,
        "TR" | "SA" | "QA" | "KW" | "KE" | "BY" => 3.0,
        "RU" => {
            if has(&["novosibirsk"]) {
                7.0
            } else if has(&["vladivostok"]) {
                10.0
            } else {
                3.0
            }
        }
        "AE" | "OM" => 4.0,
        "PK" => 5.0,
        "IN" | "LK" => 5.5,
        "BD" => 6.0,
        "TH" | "VN" | "ID" => 7.0,
        "SG" | "MY" | "CN" | "HK" | "TW" | "PH" => 8.0,
        "JP" | "KR" => 9.0,
        "AU" => {
            if has(&["perth"]) {
                8.0
            } else if has(&["adelaide", "darwin"]) {
                9.5
            } else {
                10.0
            }
        }
        "NZ" => 12.0,
        _ => 0.0,
    };
    (hours * 60.0) as i32
}

/// `+09:00`, `-05:30`, `+9`, `-5`, `5.5` → minutes; `None` when unreadable or beyond ±14h.
fn parse_offset(text: &str) -> Option<i32> {
    let text = text.trim();
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let minutes = if let Some((h, m)) = rest.split_once(':') {
        let h: i32 = h.parse().ok()?;
        let m: i32 = m.parse().ok()?;
        if !(0..60).contains(&m) {
            return None;
        }
        h * 60 + m
    } else {
        let hours: f64 = rest.parse().ok()?;
        if !hours.is_finite() {
            return None;
        }
        (hours * 60.0).round() as i32
    };
    (minutes <= 14 * 60).then_some(sign * minutes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Capacity, CreateDeployment, EdgeHealth, EdgeType, RollbackConfig, Span};

    /// The nine POPs of SPEC §4.3: (locationId, region, country, name).
    pub(crate) const POPS: [(&str, &str, &str, &str); 9] = [
        ("us-east-1", "North America", "US", "Virginia"),
        ("us-west-1", "North America", "US", "California"),
        ("us-central-1", "North America", "US", "Texas"),
        ("eu-west-1", "Europe", "GB", "London"),
        ("eu-central-1", "Europe", "DE", "Frankfurt"),
        ("eu-north-1", "Europe", "SE", "Stockholm"),
        ("ap-east-1", "Asia Pacific", "JP", "Tokyo"),
        ("ap-south-1", "Asia Pacific", "IN", "Mumbai"),
        ("ap-southeast-1", "Asia Pacific", "SG", "Singapore"),
    ];

    /// 2026-11-24T12:00:00Z, a Tuesday.
    pub(crate) const NOW: Timestamp = Timestamp(1_763_985_600_000 + 365 * DAY_MS);

    pub(crate) fn edge(id: &str, region: &str, country: &str, name: &str) -> EdgeLocation {
        EdgeLocation {
            location_id: id.to_string(),
            name: name.to_string(),
            region: region.to_string(),
            country_code: country.to_string(),
            city: name.to_string(),
            edge_type: EdgeType::EdgePop,
            endpoint: format!("http://{id}.test"),
            capacity: Capacity::default(),
            health: EdgeHealth::default(),
            metrics: None,
            last_heartbeat: Some(NOW.plus_millis(-5_000)),
            started_at: None,
            is_active: true,
            active_configurations: BTreeMap::from([("config-1".to_string(), "1.0.0".to_string())]),
            metadata: BTreeMap::new(),
            is_quarantined: false,
        }
    }

    pub(crate) fn nine_pops() -> Vec<EdgeLocation> {
        POPS.iter()
            .map(|(id, region, country, name)| edge(id, region, country, name))
            .collect()
    }

    /// `per_region` edges in each of the three regions, ids like `sim-eu-0042`.
    pub(crate) fn fleet(per_region: usize) -> Vec<EdgeLocation> {
        let mut edges = Vec::new();
        for (prefix, region, country, name) in [
            ("na", "North America", "US", "Virginia"),
            ("eu", "Europe", "DE", "Frankfurt"),
            ("ap", "Asia Pacific", "SG", "Singapore"),
        ] {
            for i in 0..per_region {
                edges.push(edge(&format!("sim-{prefix}-{i:04}"), region, country, name));
            }
        }
        edges
    }

    pub(crate) fn deployment(strategy: Strategy, body: serde_json::Value) -> Deployment {
        let mut req: CreateDeployment = serde_json::from_value(body).expect("request parses");
        req.configuration_id = "config-1".into();
        req.strategy = strategy;
        if req.target_regions.is_empty() && req.target_locations.is_empty() {
            req.target_regions = vec![
                "North America".into(),
                "Europe".into(),
                "Asia Pacific".into(),
            ];
        }
        req.into_deployment(
            "deploy-1".into(),
            "2.0.0".into(),
            "alice".into(),
            NOW,
            &RollbackConfig::default(),
        )
        .expect("valid request")
    }

    fn names(p: &Plan) -> Vec<(String, usize)> {
        p.waves
            .iter()
            .map(|w| (w.name.clone(), w.locations.len()))
            .collect()
    }

    #[test]
    fn canary_counts_are_ceil_at_least_one_and_capped() {
        for (percent, n, expected) in [
            (10, 9, 1),
            (50, 9, 5),
            (100, 9, 9),
            (1, 1000, 10),
            (10, 1000, 100),
            (1, 3, 1),
            (33, 3, 1),
            (34, 3, 2),
            (100, 1, 1),
        ] {
            assert_eq!(canary_count(percent, n), expected, "{percent}% of {n}");
        }
    }

    #[test]
    fn canary_waves_are_cumulative_and_spread_across_regions() {
        let d = deployment(Strategy::RegionalCanary, serde_json::json!({}));
        let p = plan(&d, &nine_pops(), NOW, 120_000);
        assert_eq!(
            names(&p),
            vec![
                ("canary 10%".to_string(), 1),
                ("canary 50%".to_string(), 4),
                ("canary 100%".to_string(), 4)
            ]
        );
        // Regions by name: Asia Pacific, Europe, North America, dealt in turn.
        assert_eq!(p.waves[0].locations, vec!["ap-east-1"]);
        assert_eq!(
            p.waves[1].locations,
            vec!["eu-central-1", "us-central-1", "ap-south-1", "eu-north-1"]
        );
        assert!(p.waves.iter().all(|w| w.watch_ms == 300_000 && !w.gate));
        assert_eq!(p.expected_finish, NOW.plus_millis(900_000));
        assert_eq!(
            p.previous_versions.get("us-east-1").map(String::as_str),
            Some("1.0.0")
        );

        let big = plan(&d, &fleet(334), NOW, 120_000);
        let sizes: Vec<usize> = big.waves.iter().map(|w| w.locations.len()).collect();
        assert_eq!(sizes, vec![101, 400, 501]);
        let first = &big.waves[0].locations;
        for prefix in ["sim-na-", "sim-eu-", "sim-ap-"] {
            let n = first.iter().filter(|id| id.starts_with(prefix)).count();
            assert!((33..=34).contains(&n), "{prefix}: {n}");
        }
        let mut all: Vec<&String> = big.waves.iter().flat_map(|w| &w.locations).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1002);

        let gated = deployment(
            Strategy::RegionalCanary,
            serde_json::json!({"canaryConfig": {"autoPromote": false}}),
        );
        let gates: Vec<bool> = plan(&gated, &nine_pops(), NOW, 120_000)
            .waves
            .iter()
            .map(|w| w.gate)
            .collect();
        assert_eq!(gates, vec![true, true, false]);
    }

    #[test]
    fn tiny_fleets_fold_empty_steps() {
        let d = deployment(
            Strategy::RegionalCanary,
            serde_json::json!({"targetLocations": ["us-east-1", "eu-west-1"], "targetRegions": []}),
        );
        let p = plan(&d, &nine_pops(), NOW, 120_000);
        assert_eq!(
            names(&p),
            vec![
                ("canary 10%".to_string(), 1),
                ("canary 100%".to_string(), 1)
            ]
        );
    }

    #[test]
    fn unhealthy_inactive_quarantined_and_unknown_targets_are_skipped() {
        let mut edges = nine_pops();
        edges[0].last_heartbeat = Some(NOW.plus_millis(-300_000));
        edges[1].is_active = false;
        edges[2].is_quarantined = true;
        edges[3].health.is_healthy = false;
        edges[4].last_heartbeat = None;
        let d = deployment(
            Strategy::DirectDeployment,
            serde_json::json!({"targetLocations": ["nowhere-1"],
                "targetRegions": ["North America", "Europe", "Asia Pacific"]}),
        );
        let p = plan(&d, &edges, NOW, 120_000);
        let skipped: Vec<(&str, &str)> = p
            .skipped
            .iter()
            .map(|s| (s.location_id.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            vec![
                ("us-east-1", "unhealthy: last heartbeat 300s ago"),
                ("us-west-1", "inactive"),
                ("us-central-1", "quarantined after repeated NACKs"),
                ("eu-west-1", "unhealthy: edge reports unhealthy"),
                ("eu-central-1", "unhealthy: no heartbeat yet"),
                ("nowhere-1", "unknown edge location"),
            ]
        );
        assert_eq!(names(&p), vec![("all targets".to_string(), 4)]);
        assert_eq!(p.expected_finish, NOW);
    }

    #[test]
    fn blue_green_stages_then_activates_everything() {
        let d = deployment(Strategy::BlueGreenDeployment, serde_json::json!({}));
        let p = plan(&d, &nine_pops(), NOW, 120_000);
        assert_eq!(
            names(&p),
            vec![("stage".to_string(), 9), ("activate".to_string(), 9)]
        );
        assert_eq!(p.waves[1].watch_ms, 600_000);
    }

    #[test]
    fn rolling_follows_target_region_order_then_location_regions() {
        let d = deployment(
            Strategy::RollingRegional,
            serde_json::json!({"targetRegions": ["Europe", "North America"],
                "targetLocations": ["ap-east-1"], "requireApproval": true, "regionDelay": "PT20M"}),
        );
        let p = plan(&d, &nine_pops(), NOW, 120_000);
        assert_eq!(
            names(&p),
            vec![
                ("Europe".to_string(), 3),
                ("North America".to_string(), 3),
                ("Asia Pacific".to_string(), 1)
            ]
        );
        let gates: Vec<bool> = p.waves.iter().map(|w| w.gate).collect();
        assert_eq!(gates, vec![true, true, false]);
        assert!(p.waves.iter().all(|w| w.watch_ms == 1_200_000));
    }

    #[test]
    fn offsets_come_from_metadata_then_country_and_city() {
        let mut pops = nine_pops();
        let offsets: Vec<i32> = pops.iter().map(utc_offset_minutes).collect();
        assert_eq!(offsets, vec![-300, -480, -360, 0, 60, 60, 540, 330, 480]);
        pops[0].metadata.insert("utcOffset".into(), "+05:45".into());
        assert_eq!(utc_offset_minutes(&pops[0]), 345);
        pops[0].metadata.insert("utcOffset".into(), "-3.5".into());
        assert_eq!(utc_offset_minutes(&pops[0]), -210);
        pops[0].metadata.insert("utcOffset".into(), "banana".into());
        assert_eq!(utc_offset_minutes(&pops[0]), -300);
    }

    #[test]
    fn windows_land_on_local_time_and_allowed_days() {
        // NOW is Tuesday 12:00 UTC.
        assert_eq!(local_weekday(NOW.millis()), Weekday::Tue);
        let two_am = 120;
        let cases: Vec<(i32, Vec<Weekday>, i64)> = vec![
            // Tokyo: local 21:00 Tue → Wed 02:00 JST = Tue 17:00 UTC.
            (540, vec![], 5 * 3_600_000),
            // London: Wed 02:00 UTC.
            (0, vec![], 14 * 3_600_000),
            // Virginia: local 07:00 Tue → Wed 02:00 EST = Wed 07:00 UTC.
            (-300, vec![], 19 * 3_600_000),
            // London, Thursdays only: Thu 02:00 UTC.
            (0, vec![Weekday::Thu], 38 * 3_600_000),
            // London, Tuesdays only: next Tuesday.
            (0, vec![Weekday::Tue], 14 * 3_600_000 + 6 * DAY_MS),
        ];
        for (offset, days, delta) in cases {
            assert_eq!(
                next_window(NOW, offset, two_am, &days),
                NOW.plus_millis(delta),
                "offset {offset} days {days:?}"
            );
        }
    }

    #[test]
    fn geographic_waves_go_east_to_west_at_local_night() {
        let d = deployment(
            Strategy::GeographicWave,
            serde_json::json!({"monitorDuration": "1h", "days": ["Wed", "Thu"]}),
        );
        let p = plan(&d, &nine_pops(), NOW, 120_000);
        assert_eq!(
            names(&p),
            vec![
                ("Asia Pacific".to_string(), 3),
                ("Europe".to_string(), 3),
                ("North America".to_string(), 3)
            ]
        );
        // Asia Pacific mean offset (540+330+480)/3 = 450 min: 02:00 local = 18:30 UTC Tue,
        // but that local day is Wednesday, which is allowed.
        let starts: Vec<Timestamp> = p.waves.iter().filter_map(|w| w.not_before).collect();
        assert_eq!(starts[0], NOW.plus_millis(6 * 3_600_000 + 30 * MINUTE_MS));
        for (w, start) in p.waves.iter().zip(&starts) {
            let local = start.millis() + i64::from(w.utc_offset_minutes) * MINUTE_MS;
            assert_eq!(local.rem_euclid(DAY_MS), 2 * 3_600_000, "{}", w.name);
            assert!(d.days.contains(&local_weekday(local)), "{}", w.name);
        }
        assert!(starts.windows(2).all(|s| s[0] < s[1]));
        assert_eq!(
            p.expected_finish,
            starts[2].plus_millis(Span::from_mins(60).as_i64())
        );
    }
}
