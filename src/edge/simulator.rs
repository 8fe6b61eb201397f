//! A fleet of simulated edges in one process (`edgeplane simulate`, SPEC §7.6): each edge has
//! its own loopback listener, answers the edge protocol through the same door as the agent,
//! registers itself with the control plane, heartbeats, and reports metrics from a seeded
//! model that a pushed version can degrade through its `simulate.*` metadata.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::http::{EdgeService, router, shutdown_signal};
use super::leader::{ControlPlanes, send_heartbeat};
use crate::model::metrics::LATENCY_BUCKETS_MS;
use crate::model::{ConfigType, EdgeHealth, LatencyHistogram, MetricsSample, Timestamp};
use crate::protocol::{
    ActiveConfiguration, ActiveConfigurations, EdgeRegistration, Heartbeat, PushMode, PushReply,
    PushRequest, RollbackRequest, http_client,
};

/// Settings of a simulated fleet.
#[derive(Clone, Debug)]
pub struct SimulateOptions {
    /// Base URL of the control plane, without `/api/v1`.
    pub control_plane: String,
    /// The other control-plane nodes' base URLs (a primary and its standby): registration
    /// and heartbeats go to whichever is primary, each edge following it through a failover.
    pub other_control_planes: Vec<String>,
    /// Admin token used to register the edges.
    pub admin_token: String,
    pub edges: usize,
    pub heartbeat_interval: Duration,
    pub seed: u64,
    /// Delay before each edge answers a push.
    pub push_latency: Duration,
    /// Probability (0..=1) that an edge NACKs a push.
    pub nack_rate: f64,
    /// Edges that start down.
    pub down: Vec<String>,
    pub listen_host: IpAddr,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        Self {
            control_plane: "http://127.0.0.1:8080".into(),
            other_control_planes: Vec::new(),
            admin_token: String::new(),
            edges: 9,
            heartbeat_interval: Duration::from_secs(10),
            seed: 1,
            push_latency: Duration::ZERO,
            nack_rate: 0.0,
            down: Vec::new(),
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Where a simulated edge answers and the token pushes to it must bear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEndpoint {
    pub location_id: String,
    pub region: String,
    pub endpoint: String,
    pub token: String,
}

#[derive(Clone, Debug)]
struct EdgeSpec {
    location_id: String,
    name: String,
    region: String,
    country_code: String,
    city: String,
}

/// The nine POPs of SPEC §4.3.
const POPS: [(&str, &str, &str, &str, &str); 9] = [
    (
        "us-east-1",
        "US East (Virginia)",
        "North America",
        "US",
        "Virginia",
    ),
    (
        "us-west-1",
        "US West (California)",
        "North America",
        "US",
        "California",
    ),
    (
        "us-central-1",
        "US Central (Texas)",
        "North America",
        "US",
        "Texas",
    ),
    ("eu-west-1", "EU West (London)", "Europe", "GB", "London"),
    (
        "eu-central-1",
        "EU Central (Frankfurt)",
        "Europe",
        "DE",
        "Frankfurt",
    ),
    (
        "eu-north-1",
        "EU North (Stockholm)",
        "Europe",
        "SE",
        "Stockholm",
    ),
    (
        "ap-east-1",
        "AP East (Tokyo)",
        "Asia Pacific",
        "JP",
        "Tokyo",
    ),
    (
        "ap-south-1",
        "AP South (Mumbai)",
        "Asia Pacific",
        "IN",
        "Mumbai",
    ),
    (
        "ap-southeast-1",
        "AP Southeast (Singapore)",
        "Asia Pacific",
        "SG",
        "Singapore",
    ),
];

/// Regions of larger fleets: id prefix, region, and the places edges are spread over.
/// (country code, city).
type Place = (&'static str, &'static str);

const REGIONS: [(&str, &str, &[Place]); 3] = [
    (
        "na",
        "North America",
        &[
            ("US", "Ashburn"),
            ("US", "San Jose"),
            ("US", "Dallas"),
            ("CA", "Toronto"),
            ("MX", "Mexico City"),
        ],
    ),
    (
        "eu",
        "Europe",
        &[
            ("GB", "London"),
            ("DE", "Frankfurt"),
            ("SE", "Stockholm"),
            ("FR", "Paris"),
            ("NL", "Amsterdam"),
        ],
    ),
    (
        "ap",
        "Asia Pacific",
        &[
            ("JP", "Tokyo"),
            ("IN", "Mumbai"),
            ("SG", "Singapore"),
            ("AU", "Sydney"),
            ("KR", "Seoul"),
        ],
    ),
];

fn fleet_specs(n: usize) -> Vec<EdgeSpec> {
    if n == 9 {
        return POPS
            .iter()
            .map(|(id, name, region, country, city)| EdgeSpec {
                location_id: (*id).into(),
                name: (*name).into(),
                region: (*region).into(),
                country_code: (*country).into(),
                city: (*city).into(),
            })
            .collect();
    }
    (0..n)
        .map(|i| {
            let (prefix, region, places) = REGIONS[i % REGIONS.len()];
            let number = i / REGIONS.len() + 1;
            let (country, city) = places[(number - 1) % places.len()];
            EdgeSpec {
                location_id: format!("sim-{prefix}-{number:04}"),
                name: format!("Simulated {city} {number}"),
                region: region.into(),
                country_code: country.into(),
                city: city.into(),
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
struct SimVersion {
    version: String,
    config_type: ConfigType,
    checksum: String,
    metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
struct SimConfig {
    active: Option<SimVersion>,
    activated_at: Option<Timestamp>,
    staged: Option<SimVersion>,
    history: Vec<SimVersion>,
}

#[derive(Default)]
struct SimState {
    configs: BTreeMap<String, SimConfig>,
    /// (configurationId, version) of every version this edge ever made active, in order.
    ran: Vec<(String, String)>,
}

#[derive(Clone, Copy)]
struct Knobs {
    push_latency: Duration,
    nack_rate: f64,
}

/// The figures a simulated edge reports, as rates (0..=1) and milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Profile {
    cache_hit_rate: f64,
    error_rate: f64,
    p99_latency_ms: f64,
}

const BASELINE: Profile = Profile {
    cache_hit_rate: 0.92,
    error_rate: 0.002,
    p99_latency_ms: 40.0,
};

struct SimEdge {
    spec: EdgeSpec,
    endpoint: String,
    token: RwLock<String>,
    down: AtomicBool,
    knobs: Mutex<Knobs>,
    rng: Mutex<StdRng>,
    state: Mutex<SimState>,
    requests_per_sec: f64,
    started_at: Timestamp,
    heartbeats_sent: AtomicU64,
    terms: super::term::TermGuard,
    control_planes: ControlPlanes,
    verified: Arc<VerifiedContent>,
}

/// The content the fleet last checksummed, shared by its edges. A push to a thousand
/// simulated edges carries the same content a thousand times; canonicalising and hashing it
/// a thousand times in one process would measure the simulator, not the control plane. Each
/// edge still checks that what it got is what was hashed, and the pushed checksum against it.
#[derive(Default)]
struct VerifiedContent(Mutex<Option<(serde_json::Value, String)>>);

impl VerifiedContent {
    fn checksum(&self, content: &serde_json::Value) -> String {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((verified, checksum)) = last.as_ref()
            && verified == content
        {
            return checksum.clone();
        }
        let checksum = crate::protocol::checksum(content);
        *last = Some((content.clone(), checksum.clone()));
        checksum
    }
}

impl SimEdge {
    fn knobs(&self) -> Knobs {
        *self.knobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn roll(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .random::<f64>()
    }

    /// The figures of the worst `simulate.*` metadata among the active versions.
    fn profile(&self) -> Profile {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut profile = BASELINE;
        for version in state.configs.values().filter_map(|c| c.active.as_ref()) {
            let figure = |key: &str| {
                version
                    .metadata
                    .get(key)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
            };
            if let Some(rate) = figure("simulate.errorRate") {
                profile.error_rate = profile.error_rate.max((rate / 100.0).min(1.0));
            }
            if let Some(rate) = figure("simulate.cacheHitRate") {
                profile.cache_hit_rate = profile.cache_hit_rate.min((rate / 100.0).min(1.0));
            }
            if let Some(ms) = figure("simulate.p99LatencyMs") {
                profile.p99_latency_ms = profile.p99_latency_ms.max(ms);
            }
        }
        profile
    }

    fn active_versions(&self) -> BTreeMap<String, String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .configs
            .iter()
            .filter_map(|(id, c)| Some((id.clone(), c.active.as_ref()?.version.clone())))
            .collect()
    }

    fn apply_push(&self, configuration_id: &str, request: PushRequest) -> PushReply {
        let incoming = SimVersion {
            version: request.version.clone(),
            config_type: request.config_type,
            checksum: request.checksum.to_ascii_lowercase(),
            metadata: request.metadata,
        };
        if request.mode != PushMode::Activate {
            if request.content.is_null() {
                return nacked("content is required");
            }
            let checksum = self.verified.checksum(&request.content);
            if !checksum.eq_ignore_ascii_case(&request.checksum) {
                return nacked(&format!(
                    "checksum mismatch: content hashes to {checksum}, push says {}",
                    request.checksum
                ));
            }
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let SimState { configs, ran } = &mut *state;
        let config = configs.entry(configuration_id.to_owned()).or_default();
        let to_activate = match request.mode {
            PushMode::Stage => {
                config.staged = Some(incoming);
                return PushReply::Acked {
                    version: request.version,
                };
            }
            PushMode::Apply => incoming,
            PushMode::Activate => match config.staged.take() {
                Some(staged) if staged.version == request.version => staged,
                Some(other) => {
                    let reason = format!(
                        "staged version is {}, not {}",
                        other.version, request.version
                    );
                    config.staged = Some(other);
                    return nacked(&reason);
                }
                None => return nacked("nothing staged to activate"),
            },
        };
        if config.active.as_ref().map(|a| &a.version) == Some(&to_activate.version) {
            return PushReply::Acked {
                version: request.version,
            };
        }
        if let Some(previous) = config.active.take() {
            config.history.push(previous);
        }
        ran.push((configuration_id.to_owned(), to_activate.version.clone()));
        config.active = Some(to_activate);
        config.activated_at = Some(Timestamp::now());
        PushReply::Acked {
            version: request.version,
        }
    }

    fn apply_rollback(&self, configuration_id: &str, request: RollbackRequest) -> PushReply {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let SimState { configs, ran } = &mut *state;
        let Some(config) = configs.get_mut(configuration_id) else {
            if request.deactivate_if_none && request.to_version.is_none() {
                return PushReply::Acked {
                    version: String::new(),
                };
            }
            return nacked("no earlier version in local history");
        };
        let position = match &request.to_version {
            Some(wanted) => config.history.iter().rposition(|v| v.version == *wanted),
            None => config.history.len().checked_sub(1),
        };
        let Some(position) = position else {
            if request.to_version.is_none() && request.deactivate_if_none {
                config.active = None;
                config.activated_at = Some(Timestamp::now());
                return PushReply::Acked {
                    version: String::new(),
                };
            }
            if request.to_version.is_some()
                && request.to_version.as_ref() == config.active.as_ref().map(|a| &a.version)
            {
                return PushReply::Acked {
                    version: request.to_version.unwrap_or_default(),
                };
            }
            return nacked("no earlier version in local history");
        };
        let target = config.history[position].clone();
        config.history.truncate(position);
        ran.push((configuration_id.to_owned(), target.version.clone()));
        let version = target.version.clone();
        config.active = Some(target);
        config.activated_at = Some(Timestamp::now());
        PushReply::Acked { version }
    }

    fn heartbeat(&self, interval: Duration) -> Heartbeat {
        let profile = self.profile();
        let metrics = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            sample_metrics(&mut rng, interval, self.requests_per_sec, profile)
        };
        let health = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            EdgeHealth {
                is_healthy: true,
                cpu_usage: 20.0 + rng.random::<f64>() * 15.0,
                memory_usage: 40.0 + rng.random::<f64>() * 10.0,
                disk_usage: 30.0 + rng.random::<f64>() * 5.0,
                bandwidth_utilization: 10.0 + rng.random::<f64>() * 10.0,
                active_connections: 800 + rng.random_range(0..400),
            }
        };
        Heartbeat {
            health,
            active_configurations: self.active_versions(),
            metrics: Some(metrics),
            started_at: self.started_at,
            sent_at: Timestamp::now(),
        }
    }
}

fn nacked(reason: &str) -> PushReply {
    PushReply::Nacked {
        reason: reason.to_owned(),
    }
}

impl EdgeService for SimEdge {
    fn token(&self) -> String {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn terms(&self) -> &super::term::TermGuard {
        &self.terms
    }

    fn control_planes(&self) -> &ControlPlanes {
        &self.control_planes
    }

    async fn push(&self, configuration_id: String, request: PushRequest) -> PushReply {
        let knobs = self.knobs();
        if !knobs.push_latency.is_zero() {
            tokio::time::sleep(knobs.push_latency).await;
        }
        if knobs.nack_rate > 0.0 && self.roll() < knobs.nack_rate {
            return nacked("simulated NACK: test command failed");
        }
        self.apply_push(&configuration_id, request)
    }

    async fn rollback(&self, configuration_id: String, request: RollbackRequest) -> PushReply {
        let knobs = self.knobs();
        if !knobs.push_latency.is_zero() {
            tokio::time::sleep(knobs.push_latency).await;
        }
        self.apply_rollback(&configuration_id, request)
    }

    async fn active(&self) -> ActiveConfigurations {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let configurations = state
            .configs
            .iter()
            .filter_map(|(id, c)| {
                let active = c.active.as_ref()?;
                Some(ActiveConfiguration {
                    configuration_id: id.clone(),
                    version: active.version.clone(),
                    config_type: active.config_type,
                    checksum: active.checksum.clone(),
                    activated_at: c.activated_at.unwrap_or(self.started_at),
                    staged_version: c.staged.as_ref().map(|s| s.version.clone()),
                })
            })
            .collect();
        ActiveConfigurations {
            location_id: self.spec.location_id.clone(),
            configurations,
        }
    }
}

/// Standard normal draw (Box–Muller), enough for count noise.
fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Binomial(n, p) by its normal approximation: counts here are in the thousands.
fn binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    let mean = n as f64 * p;
    let spread = (n as f64 * p * (1.0 - p)).sqrt();
    (mean + spread * gaussian(rng)).round().clamp(0.0, n as f64) as u64
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26, error below 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Spread of log-latency; with it p99 is about 4× the median.
const LOG_SIGMA: f64 = 0.6;
/// z of the 99th percentile.
const Z99: f64 = 2.326_347_9;

/// One interval's metrics. Latencies are log-normal with the profile's p99; rather than
/// drawing every request, each bucket's count is drawn from its expected share, so a sample
/// costs the same for 10 requests or 10 million.
fn sample_metrics(
    rng: &mut StdRng,
    interval: Duration,
    requests_per_sec: f64,
    profile: Profile,
) -> MetricsSample {
    let seconds = interval.as_secs_f64();
    let expected = (requests_per_sec * seconds).max(1.0);
    let requests = (expected * (1.0 + 0.03 * gaussian(rng))).round().max(1.0) as u64;
    let cache_hits = binomial(rng, requests, profile.cache_hit_rate);
    let errors = binomial(rng, requests, profile.error_rate);
    let errors4xx = errors / 4;
    let median = profile.p99_latency_ms / (Z99 * LOG_SIGMA).exp();
    let mut latency = LatencyHistogram::default();
    let mut previous_cdf = 0.0;
    let mut assigned = 0u64;
    for (slot, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
        let cdf = normal_cdf((bound / median).ln() / LOG_SIGMA);
        let share = (cdf - previous_cdf).max(0.0);
        previous_cdf = cdf;
        let count = binomial(rng, requests, share).min(requests - assigned);
        latency.counts[slot] = count;
        assigned += count;
    }
    // Whatever the bucket draws left over lands past the last bound or is taken back from the
    // fullest bucket, so the histogram always counts exactly `requests`.
    let last = LATENCY_BUCKETS_MS.len();
    latency.counts[last] = requests - assigned;
    let expected_tail = ((1.0 - previous_cdf) * requests as f64 * 3.0).ceil() as u64 + 1;
    if latency.counts[last] > expected_tail {
        let surplus = latency.counts[last] - expected_tail;
        latency.counts[last] = expected_tail;
        if let Some(fullest) = (0..last).max_by_key(|slot| latency.counts[*slot]) {
            latency.counts[fullest] += surplus;
        }
    }
    MetricsSample {
        interval_seconds: seconds.round() as u32,
        requests,
        cache_hits,
        cache_misses: requests - cache_hits,
        errors4xx,
        errors5xx: errors - errors4xx,
        bytes_sent: requests * 24_000,
        bytes_received: requests * 600,
        latency,
    }
}

/// A running simulated fleet. Dropping it without `shutdown` leaves its tasks to the runtime.
pub struct Fleet {
    edges: Vec<Arc<SimEdge>>,
    index: HashMap<String, usize>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Binds every edge's listener, registers the edges (creating them, or rotating their
    /// token and updating their endpoint when they exist), then starts heartbeats.
    pub async fn start(opts: SimulateOptions) -> anyhow::Result<Fleet> {
        if opts.edges == 0 {
            bail!("a fleet needs at least one edge");
        }
        let budget = super::fd_limit::raise_for(opts.edges)?;
        if !budget.keep_alive {
            tracing::info!(
                edges = opts.edges,
                open_files = budget.limit,
                "too few open files to keep a connection per edge: edges close after answering"
            );
        }
        let control_planes: Vec<String> = std::iter::once(opts.control_plane.clone())
            .chain(opts.other_control_planes.iter().cloned())
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect();
        let (stop, stop_rx) = watch::channel(false);
        let mut edges = Vec::with_capacity(opts.edges);
        let mut tasks = Vec::with_capacity(opts.edges * 2);
        let verified = Arc::new(VerifiedContent::default());
        for (i, spec) in fleet_specs(opts.edges).into_iter().enumerate() {
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(opts.listen_host, 0))
                .await
                .with_context(|| format!("binding a listener for {}", spec.location_id))?;
            let address = listener.local_addr()?;
            let mut rng =
                StdRng::seed_from_u64(opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64);
            let requests_per_sec = 1000.0 * (0.8 + 0.4 * rng.random::<f64>());
            let edge = Arc::new(SimEdge {
                down: AtomicBool::new(opts.down.contains(&spec.location_id)),
                endpoint: format!("http://{address}"),
                token: RwLock::new(String::new()),
                knobs: Mutex::new(Knobs {
                    push_latency: opts.push_latency,
                    nack_rate: opts.nack_rate,
                }),
                rng: Mutex::new(rng),
                state: Mutex::new(SimState::default()),
                requests_per_sec,
                started_at: Timestamp::now(),
                heartbeats_sent: AtomicU64::new(0),
                terms: super::term::TermGuard::in_memory(),
                control_planes: ControlPlanes::new(&spec.location_id, control_planes.clone()),
                verified: verified.clone(),
                spec,
            });
            let mut stop_rx = stop_rx.clone();
            let app = if budget.keep_alive {
                router(edge.clone())
            } else {
                router(edge.clone()).layer(axum::middleware::map_response(close_connection))
            };
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop_rx.wait_for(|stopped| *stopped).await;
                };
                if let Err(error) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::warn!(%error, "simulated edge listener failed");
                }
            }));
            edges.push(edge);
        }
        let mut fleet = Fleet {
            index: edges
                .iter()
                .enumerate()
                .map(|(i, e)| (e.spec.location_id.clone(), i))
                .collect(),
            edges,
            stop,
            tasks,
        };
        // Every edge heartbeats the one control plane: enough idle connections that a busy
        // second does not open (and leave in TIME_WAIT) a new one per heartbeat.
        let idle = opts.edges.clamp(2, 64);
        let client =
            http_client(Duration::from_secs(10), idle, None).map_err(anyhow::Error::msg)?;
        // Registration is a write: it goes to the primary, found the way heartbeats find it.
        let registrar = ControlPlanes::new("registration", control_planes);
        let registered: Vec<anyhow::Result<()>> = futures_util::stream::iter(fleet.edges.clone())
            .map(|edge| register(&client, &registrar, &opts.admin_token, edge))
            .buffer_unordered(32)
            .collect()
            .await;
        if let Some(Err(error)) = registered.into_iter().find(|r| r.is_err()) {
            fleet.shutdown().await;
            return Err(error);
        }
        let primary = registrar.current();
        for (i, edge) in fleet.edges.iter().enumerate() {
            edge.control_planes.start_at(&primary);
            let offset = {
                let mut rng = StdRng::seed_from_u64(opts.seed ^ (i as u64).rotate_left(17));
                opts.heartbeat_interval.mul_f64(rng.random::<f64>())
            };
            fleet.tasks.push(tokio::spawn(heartbeat_loop(
                edge.clone(),
                client.clone(),
                opts.heartbeat_interval,
                offset,
                stop_rx.clone(),
            )));
        }
        Ok(fleet)
    }

    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Every edge's id, region, endpoint and current agent token.
    pub fn endpoints(&self) -> Vec<SimEndpoint> {
        self.edges
            .iter()
            .map(|e| SimEndpoint {
                location_id: e.spec.location_id.clone(),
                region: e.spec.region.clone(),
                endpoint: e.endpoint.clone(),
                token: e.token(),
            })
            .collect()
    }

    fn edge(&self, location_id: &str) -> Option<&Arc<SimEdge>> {
        self.index.get(location_id).map(|i| &self.edges[*i])
    }

    /// A down edge answers 503 to pushes and stops heartbeating. False for an unknown id.
    pub fn set_down(&self, location_id: &str, down: bool) -> bool {
        self.edge(location_id)
            .map(|e| e.down.store(down, Ordering::Relaxed))
            .is_some()
    }

    pub fn set_nack_rate(&self, rate: f64) {
        for edge in &self.edges {
            edge.knobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .nack_rate = rate;
        }
    }

    pub fn set_edge_nack_rate(&self, location_id: &str, rate: f64) -> bool {
        self.edge(location_id)
            .map(|e| e.knobs.lock().unwrap_or_else(|p| p.into_inner()).nack_rate = rate)
            .is_some()
    }

    pub fn set_push_latency(&self, latency: Duration) {
        for edge in &self.edges {
            edge.knobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_latency = latency;
        }
    }

    pub fn set_edge_push_latency(&self, location_id: &str, latency: Duration) -> bool {
        self.edge(location_id)
            .map(|e| {
                e.knobs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_latency = latency
            })
            .is_some()
    }

    /// The highest cluster term the edge has seen on a push or rollback (0 before any).
    pub fn term_seen(&self, location_id: &str) -> Option<u64> {
        Some(self.edge(location_id)?.terms.highest())
    }

    /// The control-plane URL the edge heartbeats now.
    pub fn control_plane(&self, location_id: &str) -> Option<String> {
        Some(self.edge(location_id)?.control_planes.current())
    }

    /// The version of `configuration_id` the edge runs now.
    pub fn active_version(&self, location_id: &str, configuration_id: &str) -> Option<String> {
        self.edge(location_id)?
            .active_versions()
            .get(configuration_id)
            .cloned()
    }

    /// Forgets every active and staged configuration of the edge, as an agent whose state
    /// directory was wiped comes back empty. Its next heartbeat reports nothing active. False
    /// for an unknown id.
    pub fn wipe(&self, location_id: &str) -> bool {
        self.edge(location_id)
            .map(|e| {
                e.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .configs
                    .clear()
            })
            .is_some()
    }

    /// Every (configurationId, version) the edge ever made active, in order.
    pub fn history(&self, location_id: &str) -> Vec<(String, String)> {
        self.edge(location_id)
            .map(|e| {
                e.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .ran
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Heartbeats the edge has had accepted by the control plane.
    pub fn heartbeats_sent(&self, location_id: &str) -> u64 {
        self.edge(location_id)
            .map(|e| e.heartbeats_sent.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Stops listeners and heartbeats and waits (bounded) for their tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("simulated fleet did not stop within 10s");
        }
    }
}

/// Registers one edge: create it, or on 409 rotate its token and update its endpoint.
/// Rate limiting and passing failures are retried a few times.
async fn register(
    client: &reqwest::Client,
    planes: &ControlPlanes,
    admin_token: &str,
    edge: Arc<SimEdge>,
) -> anyhow::Result<()> {
    let id = &edge.spec.location_id;
    let mut body = EdgeRegistration {
        location_id: Some(id.clone()),
        name: edge.spec.name.clone(),
        region: edge.spec.region.clone(),
        country_code: edge.spec.country_code.clone(),
        city: edge.spec.city.clone(),
        edge_type: "EdgePOP".into(),
        endpoint: edge.endpoint.clone(),
        metadata: BTreeMap::from([("simulated".to_owned(), "true".to_owned())]),
    };
    let created = call(
        client,
        planes,
        reqwest::Method::POST,
        "/api/v1/edge-locations",
        admin_token,
        Some(&body),
    )
    .await?;
    let token = match created.0 {
        201 | 200 => agent_token(&created.1)?,
        409 => {
            let rotated = call::<()>(
                client,
                planes,
                reqwest::Method::POST,
                &format!("/api/v1/edge-locations/{id}/token"),
                admin_token,
                None,
            )
            .await?;
            if rotated.0 != 200 {
                bail!(
                    "rotating the token of {id}: HTTP {}: {}",
                    rotated.0,
                    rotated.1
                );
            }
            body.location_id = None;
            let updated = call(
                client,
                planes,
                reqwest::Method::PUT,
                &format!("/api/v1/edge-locations/{id}"),
                admin_token,
                Some(&body),
            )
            .await?;
            if updated.0 != 200 {
                bail!("updating {id}: HTTP {}: {}", updated.0, updated.1);
            }
            agent_token(&rotated.1)?
        }
        status => bail!("registering {id}: HTTP {status}: {}", created.1),
    };
    *edge.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    Ok(())
}

fn agent_token(body: &str) -> anyhow::Result<String> {
    let value: serde_json::Value =
        serde_json::from_str(body).context("registration reply is not JSON")?;
    value
        .get("agentToken")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .context("registration reply has no agentToken")
}

/// Calls `path` on the control-plane node `planes` reports to, following a `NOT_LEADER`
/// answer to the node it names (at once) and moving to the next node after a failure.
async fn call<B: serde::Serialize>(
    client: &reqwest::Client,
    planes: &ControlPlanes,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&B>,
) -> anyhow::Result<(u16, String)> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let base = planes.current();
        let url = &format!("{base}{path}");
        let mut request = client.request(method.clone(), url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let leader = response
                    .headers()
                    .get(crate::protocol::term::LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::protocol::term::parse_leader_url);
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let text = response.text().await.unwrap_or_default();
                let followed = match leader {
                    Some(leader) if status == 503 && leader != base => {
                        planes.follow(&leader, "the node answered NOT_LEADER naming the primary")
                    }
                    _ if status >= 500 => {
                        planes.rotate_from(&base);
                        false
                    }
                    _ => false,
                };
                if followed && attempt < 6 {
                    Err(Duration::ZERO)
                } else if (status == 429 || status >= 500) && attempt < 6 {
                    Err(Duration::from_secs(retry_after.unwrap_or(1).min(10)))
                } else {
                    Ok((status, text))
                }
            }
            Err(error) if attempt < 6 => {
                tracing::warn!(%error, url, "control plane call failed; retrying");
                planes.rotate_from(&base);
                Err(Duration::from_millis(200 << attempt))
            }
            Err(error) => return Err(error).with_context(|| format!("calling {url}")),
        };
        match outcome {
            Ok(reply) => return Ok(reply),
            Err(wait) => tokio::time::sleep(wait).await,
        }
    }
}

async fn heartbeat_loop(
    edge: Arc<SimEdge>,
    client: reqwest::Client,
    interval: Duration,
    offset: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // The traffic of a heartbeat no node stored, carried into the next one.
    let mut unsent: Option<MetricsSample> = None;
    let mut wait = offset;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        // ±10% jitter keeps a fleet that started together from beating together.
        wait = interval.mul_f64(0.9 + 0.2 * edge.roll());
        if edge.down.load(Ordering::Relaxed) {
            continue;
        }
        let mut heartbeat = edge.heartbeat(interval);
        if let (Some(carried), Some(sample)) = (unsent.take(), heartbeat.metrics.as_mut()) {
            sample.add(&carried);
        }
        let sent = send_heartbeat(
            &client,
            &edge.control_planes,
            &edge.spec.location_id,
            &edge.token(),
            &heartbeat,
            Some(interval.min(Duration::from_secs(10))),
        )
        .await;
        // Only a heartbeat surely not stored hands its traffic on, so none is counted twice.
        let not_stored = match &sent {
            Ok(response) => matches!(response.status().as_u16(), 429 | 503),
            Err(error) => error.is_connect(),
        };
        if not_stored {
            unsent = heartbeat.metrics.take();
        }
        match sent {
            Ok(response) if response.status().is_success() => {
                edge.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => {
                tracing::debug!(edge = %edge.spec.location_id, status = %response.status(), "heartbeat refused")
            }
            Err(error) => {
                tracing::debug!(edge = %edge.spec.location_id, %error, "heartbeat failed")
            }
        }
    }
}

/// Asks the caller to close the connection after this answer (see [`super::fd_limit`]).
async fn close_connection(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// `edgeplane simulate`: runs a fleet until SIGTERM or ctrl-c.
pub async fn run(opts: SimulateOptions) -> anyhow::Result<()> {
    let n = opts.edges;
    let fleet = Fleet::start(opts).await?;
    println!("simulating {n} edges");
    shutdown_signal().await;
    fleet.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(verified: &Arc<VerifiedContent>) -> SimEdge {
        let spec = fleet_specs(1).remove(0);
        SimEdge {
            control_planes: ControlPlanes::new(
                &spec.location_id,
                vec!["http://127.0.0.1:9".into()],
            ),
            spec,
            endpoint: "http://127.0.0.1:9".into(),
            token: RwLock::new("token".into()),
            down: AtomicBool::new(false),
            knobs: Mutex::new(Knobs {
                push_latency: Duration::ZERO,
                nack_rate: 0.0,
            }),
            rng: Mutex::new(StdRng::seed_from_u64(1)),
            state: Mutex::new(SimState::default()),
            requests_per_sec: 1000.0,
            started_at: Timestamp(0),
            heartbeats_sent: AtomicU64::new(0),
            terms: crate::edge::term::TermGuard::in_memory(),
            verified: verified.clone(),
        }
    }

    fn push_of(content: serde_json::Value, checksum: String) -> PushRequest {
        PushRequest {
            version: "1.0.0".into(),
            config_type: ConfigType::CacheRule,
            checksum,
            content,
            metadata: BTreeMap::new(),
            mode: PushMode::Apply,
        }
    }

    #[test]
    fn edges_sharing_a_verified_checksum_still_refuse_a_wrong_one() {
        let verified = Arc::new(VerifiedContent::default());
        let (first, second) = (edge(&verified), edge(&verified));
        let content = serde_json::json!({"pathPattern": "/a/*", "ttl": 60});
        let other = serde_json::json!({"pathPattern": "/a/*", "ttl": 61});
        let right = crate::protocol::checksum(&content);
        let acked = first.apply_push("c", push_of(content.clone(), right.clone()));
        assert!(matches!(acked, PushReply::Acked { .. }), "{acked:?}");
        // The same content under another checksum, and other content under this one.
        let wrong = crate::protocol::checksum(&other);
        for refused in [
            second.apply_push("c", push_of(content.clone(), wrong)),
            second.apply_push("c", push_of(other, right.clone())),
        ] {
            assert!(
                matches!(&refused, PushReply::Nacked { reason } if reason.starts_with("checksum mismatch")),
                "{refused:?}"
            );
        }
        let acked = second.apply_push("c", push_of(content, right.to_uppercase()));
        assert!(matches!(acked, PushReply::Acked { .. }), "{acked:?}");
    }

    #[test]
    fn nine_edges_are_the_nine_pops() {
        let specs = fleet_specs(9);
        let ids: Vec<&str> = specs.iter().map(|s| s.location_id.as_str()).collect();
        assert_eq!(ids, POPS.iter().map(|p| p.0).collect::<Vec<_>>());
        assert_eq!(specs[3].country_code, "GB");
    }

    #[test]
    fn larger_fleets_spread_over_three_regions() {
        let specs = fleet_specs(300);
        assert_eq!(specs[0].location_id, "sim-na-0001");
        assert_eq!(specs[1].location_id, "sim-eu-0001");
        assert_eq!(specs[2].location_id, "sim-ap-0001");
        assert_eq!(specs[299].location_id, "sim-ap-0100");
        let ids: std::collections::HashSet<_> = specs.iter().map(|s| &s.location_id).collect();
        assert_eq!(ids.len(), 300);
    }

    #[test]
    fn metrics_follow_the_profile() {
        let mut rng = StdRng::seed_from_u64(7);
        let sample = sample_metrics(&mut rng, Duration::from_secs(10), 1000.0, BASELINE);
        assert_eq!(sample.latency.total(), sample.requests);
        let hit = sample.cache_hits as f64 / sample.requests as f64;
        assert!((0.90..0.94).contains(&hit), "{hit}");
        let p99 = sample.latency.quantile(0.99).unwrap();
        assert!((30.0..=50.0).contains(&p99), "{p99}");
        let bad = Profile {
            cache_hit_rate: 0.5,
            error_rate: 0.09,
            p99_latency_ms: 300.0,
        };
        let sample = sample_metrics(&mut rng, Duration::from_secs(10), 1000.0, bad);
        let errors = (sample.errors4xx + sample.errors5xx) as f64 / sample.requests as f64;
        assert!((0.07..0.11).contains(&errors), "{errors}");
        let p99 = sample.latency.quantile(0.99).unwrap();
        assert!((200.0..=500.0).contains(&p99), "{p99}");
    }
}
