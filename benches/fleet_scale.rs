//! Figure: how a direct deployment and the control plane's memory grow with the fleet
//! (SPEC §11, issue #12): for fleets of 10, 100 and 1,000 simulated edges (and 10,000 with
//! `--large`), the real `edgeplane serve` in its own process, the simulated fleet heartbeating
//! every 10 s, as many configurations stored as there are edges, then Direct deployments to
//! the whole fleet.
//!
//! Propagation is read from the server's own record: from the deployment's `createdAt` to
//! the latest `ackedAt` of its edges. "Reads Completed" is when the deployment's event stream
//! delivers `Completed` (published only after the final state is durable), measured from that
//! last ack on the same clock (the bench and the server share the machine), over the runs
//! whose stream opened before the end (a small fleet is often done before it opens). RSS is the
//! server process's `VmRSS`: with the fleet and catalogue in place, after each run (so growth
//! across deployments shows) and after the last, with its anonymous part from `smaps_rollup`.
//! The figures go to stdout and, as a chart of propagation and RSS against fleet size, to
//! `docs/fleet-scale.svg`.
//!
//! `cargo bench --bench fleet_scale [-- --large]` (env: `FLEET_RUNS`, default 21 runs per
//! size; `FLEET_LARGE_RUNS`, default 5 at 10,000 edges; `FLEET_CHART`, the SVG path;
//! `FLEET_SIZES`, e.g. `10000`, measures only those sizes and draws no chart;
//! `FLEET_SERVER_WRAPPER`, e.g. `heaptrack -o /tmp/fleet`, runs the server under a profiler,
//! which is given SIGTERM at the end so that it can finish its output). The server inherits
//! the bench's environment, so `_RJEM_MALLOC_CONF` and the like reach it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeplane::edge::{Fleet, SimulateOptions};
use edgeplane::model::Timestamp;
use futures_util::StreamExt;
use serde_json::{Value, json};

use common::{Client, PASSWORD, REGIONS};

const HEARTBEAT: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(600);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The control plane in its own process, so its memory is its own.
struct Server {
    child: Child,
    /// The server's own process: the child, or under a wrapper the wrapper's child.
    pid: u32,
    wrapped: bool,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let wrapper = std::env::var("FLEET_SERVER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(env!("CARGO_BIN_EXE_edgeplane"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_edgeplane")),
        };
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
            .env("EDGEPLANE_SERVER_ALLOW_SELF_APPROVAL", "true")
            .env("EDGEPLANE_LIMITS_READS_PER_MINUTE", "100000000")
            .env("EDGEPLANE_LIMITS_WRITES_PER_MINUTE", "100000000")
            .env("EDGEPLANE_LIMITS_VALIDATE_PER_MINUTE", "100000000")
            .env(
                "EDGEPLANE_LIMITS_DEPLOYMENT_ACTIONS_PER_MINUTE",
                "100000000",
            )
            .env("EDGEPLANE_LIMITS_HEARTBEATS_PER_SECOND", "100000000")
            .env("EDGEPLANE_LIMITS_PUBLIC_PER_MINUTE", "100000000")
            .env("EDGEPLANE_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut address = String::new();
        for line in lines.by_ref() {
            if let Some(rest) = line?.strip_prefix("listening on ") {
                address = rest.trim().to_string();
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        anyhow::ensure!(!address.is_empty(), "the server did not start");
        let wrapped = !wrapper.trim().is_empty();
        let pid = if wrapped {
            server_under(child.id())
                .ok_or_else(|| anyhow::anyhow!("no server under the wrapper"))?
        } else {
            child.id()
        };
        Ok(Server {
            child,
            pid,
            wrapped,
            base: format!("http://{address}"),
            _dir: dir,
        })
    }

    fn rss_mib(&self) -> f64 {
        self.proc_kib("status", "VmRSS:") / 1024.0
    }

    /// The resident memory that is the process's own heap and stacks, not mapped files.
    fn anonymous_mib(&self) -> f64 {
        self.proc_kib("smaps_rollup", "Anonymous:") / 1024.0
    }

    /// A `key: n kB` line of one of the server's `/proc` files.
    fn proc_kib(&self, file: &str, key: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.pid))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.wrapped {
            // The server shuts down on SIGTERM and the wrapper then ends by itself.
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The `edgeplane` process among a wrapper's children.
fn server_under(wrapper: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "edgeplane")
        })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One fleet size's figures.
struct SizeFigures {
    edges: usize,
    configurations: usize,
    runs: usize,
    propagation_ms: Vec<f64>,
    completed_after_ack_ms: Vec<f64>,
    rss_fleet_mib: f64,
    /// After each run, in order.
    rss_runs_mib: Vec<f64>,
    rss_after_mib: f64,
    anonymous_after_mib: f64,
}

async fn measure(edges: usize, runs: usize) -> anyhow::Result<SizeFigures> {
    let server = Server::start()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let login: Value = http
        .post(format!("{}/api/v1/authentication/login", server.base))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let client = Client {
        http,
        base: server.base.clone(),
        token: login["token"].as_str().unwrap_or_default().to_string(),
    };
    let started = Instant::now();
    let fleet = Fleet::start(SimulateOptions {
        control_plane: server.base.clone(),
        admin_token: client.token.clone(),
        edges,
        heartbeat_interval: HEARTBEAT,
        ..SimulateOptions::default()
    })
    .await?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let page = client
            .call(
                reqwest::Method::GET,
                "/edge-locations?isHealthy=true&limit=1",
                None,
            )
            .await;
        if page["total"].as_u64() == Some(edges as u64) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the fleet never became healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{edges} edges registered and healthy in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // As many configurations as edges: the catalogue the §11 memory target names.
    let configurations = edges;
    let started = Instant::now();
    futures_util::stream::iter(1..configurations)
        .map(|i| {
            let client = client.clone();
            async move {
                client
                    .call(
                        reqwest::Method::POST,
                        "/configurations",
                        Some(json!({
                            "name": format!("catalogue-{i}"),
                            "type": "CacheRule",
                            "content": {"pathPattern": format!("/catalogue/{i}/*"), "ttl": 60, "cacheControl": "public, max-age=60"},
                        })),
                    )
                    .await
            }
        })
        .buffer_unordered(8)
        .for_each(|_| async {})
        .await;
    eprintln!(
        "{configurations} configurations stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let rss_fleet_mib = server.rss_mib();

    let created = client
        .call(
            reqwest::Method::POST,
            "/configurations",
            Some(json!({
                "name": "bench-cache",
                "type": "CacheRule",
                "content": {"pathPattern": "/bench/*", "ttl": 60, "cacheControl": "public, max-age=60"},
            })),
        )
        .await;
    let configuration_id = created["configurationId"]
        .as_str()
        .expect("configurationId")
        .to_string();
    let path = format!("/configurations/{configuration_id}");
    let mut propagation_ms = Vec::with_capacity(runs);
    let mut completed_after_ack_ms = Vec::with_capacity(runs);
    let mut rss_runs_mib = Vec::with_capacity(runs);
    for run in 0..runs {
        let ttl = 60 + run;
        let version = if run == 0 {
            created["version"].as_str().expect("version").to_string()
        } else {
            let updated = client
                .call(
                    reqwest::Method::PUT,
                    &path,
                    Some(json!({
                        "content": {"pathPattern": "/bench/*", "ttl": ttl, "cacheControl": format!("public, max-age={ttl}")},
                        "changeDescription": "bench",
                    })),
                )
                .await;
            updated["version"].as_str().expect("version").to_string()
        };
        client
            .call(
                reqwest::Method::POST,
                &format!("{path}/approve"),
                Some(json!({})),
            )
            .await;
        let deployment = client
            .call(
                reqwest::Method::POST,
                "/deployments",
                Some(json!({
                    "configurationId": configuration_id,
                    "configurationVersion": version,
                    "strategy": "DirectDeployment",
                    "targetRegions": REGIONS,
                })),
            )
            .await;
        let deployment_id = deployment["deploymentId"]
            .as_str()
            .expect("deploymentId")
            .to_string();
        let (read_completed, live) = client.completed(&deployment_id).await;
        let record = client
            .call(
                reqwest::Method::GET,
                &format!("/deployments/{deployment_id}"),
                None,
            )
            .await;
        let created_at = record["createdAt"]
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
            .expect("createdAt");
        let acked: Vec<Timestamp> = record["edges"]
            .as_object()
            .expect("edges")
            .values()
            .filter_map(|e| e["ackedAt"].as_str().and_then(Timestamp::parse_rfc3339))
            .collect();
        anyhow::ensure!(
            acked.len() == edges,
            "run {run}: {} of {edges} edges acked",
            acked.len()
        );
        let last_ack = acked.iter().max().copied().expect("an ack");
        propagation_ms.push(last_ack.millis_since(created_at) as f64);
        if live {
            completed_after_ack_ms.push(read_completed.millis_since(last_ack).max(0) as f64);
        }
        rss_runs_mib.push(server.rss_mib());
    }
    let rss_after_mib = server.rss_mib();
    let anonymous_after_mib = server.anonymous_mib();
    fleet.shutdown().await;
    propagation_ms.sort_by(f64::total_cmp);
    completed_after_ack_ms.sort_by(f64::total_cmp);
    Ok(SizeFigures {
        edges,
        configurations,
        runs,
        propagation_ms,
        completed_after_ack_ms,
        rss_fleet_mib,
        rss_runs_mib,
        rss_after_mib,
        anonymous_after_mib,
    })
}

fn report(figures: &[SizeFigures]) {
    println!(
        "| edges | configurations | runs | propagation p50 | p90 | max | reads Completed after last ack, p50 / max (runs timed live) | RSS with fleet | RSS after runs | of which anonymous |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in figures {
        println!(
            "| {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} / {:.0} ms ({}) | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
            f.edges,
            f.configurations,
            f.runs,
            percentile(&f.propagation_ms, 50.0),
            percentile(&f.propagation_ms, 90.0),
            percentile(&f.propagation_ms, 100.0),
            percentile(&f.completed_after_ack_ms, 50.0),
            percentile(&f.completed_after_ack_ms, 100.0),
            f.completed_after_ack_ms.len(),
            f.rss_fleet_mib,
            f.rss_after_mib,
            f.anonymous_after_mib,
        );
    }
    for f in figures {
        let runs: Vec<String> = f.rss_runs_mib.iter().map(|m| format!("{m:.0}")).collect();
        println!(
            "RSS at {} edges after each run (MiB): {}",
            f.edges,
            runs.join(", ")
        );
    }
    if let (Some(first), Some(thousand)) =
        (figures.first(), figures.iter().find(|f| f.edges == 1000))
    {
        println!(
            "propagation p50 at 1,000 edges is {:.1}x that at {} edges",
            percentile(&thousand.propagation_ms, 50.0)
                / percentile(&first.propagation_ms, 50.0).max(1.0),
            first.edges
        );
    }
}

/// Propagation (p50 and max) and RSS against fleet size, on logarithmic fleet axes.
fn chart(figures: &[SizeFigures], path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(480);
    let sizes: Vec<f64> = figures.iter().map(|f| f.edges as f64).collect();
    let x_range = (sizes.first().copied().unwrap_or(10.0) * 0.7)
        ..(sizes.last().copied().unwrap_or(1000.0) * 1.4);

    let p50: Vec<(f64, f64)> = figures
        .iter()
        .map(|f| (f.edges as f64, percentile(&f.propagation_ms, 50.0).max(1.0)))
        .collect();
    let max: Vec<(f64, f64)> = figures
        .iter()
        .map(|f| {
            (
                f.edges as f64,
                percentile(&f.propagation_ms, 100.0).max(1.0),
            )
        })
        .collect();
    let top = max.iter().map(|p| p.1).fold(250.0, f64::max) * 1.5;
    let mut propagation = ChartBuilder::on(&left)
        .caption(
            "Direct deployment: createdAt to last ack",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range.clone().log_scale(), (1.0..top).log_scale())?;
    propagation
        .configure_mesh()
        .x_desc("edges")
        .y_desc("ms")
        .draw()?;
    propagation
        .draw_series(LineSeries::new(p50.clone(), BLUE.stroke_width(2)))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
    propagation.draw_series(p50.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    propagation
        .draw_series(LineSeries::new(max.clone(), RED.stroke_width(2)))?
        .label("max")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
    propagation.draw_series(max.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
    propagation.draw_series(LineSeries::new(
        vec![(x_range.start, 250.0), (x_range.end, 250.0)],
        BLACK.mix(0.4),
    ))?;
    propagation
        .configure_series_labels()
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE)
        .draw()?;

    let rss: Vec<(f64, f64)> = figures
        .iter()
        .map(|f| (f.edges as f64, f.rss_after_mib))
        .collect();
    let rss_top = rss.iter().map(|p| p.1).fold(256.0, f64::max) * 1.2;
    let mut memory = ChartBuilder::on(&right)
        .caption(
            "Control plane RSS (as many configurations as edges)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range.clone().log_scale(), 0.0..rss_top)?;
    memory
        .configure_mesh()
        .x_desc("edges")
        .y_desc("MiB")
        .draw()?;
    memory.draw_series(LineSeries::new(rss.clone(), GREEN.stroke_width(2)))?;
    memory.draw_series(rss.iter().map(|p| Circle::new(*p, 4, GREEN.filled())))?;
    memory.draw_series(LineSeries::new(
        vec![(x_range.start, 256.0), (x_range.end, 256.0)],
        BLACK.mix(0.4),
    ))?;
    root.present()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let large = std::env::args().any(|a| a == "--large");
    let runs = env_number("FLEET_RUNS", 21);
    let large_runs = env_number("FLEET_LARGE_RUNS", 5);
    let only: Option<Vec<usize>> = std::env::var("FLEET_SIZES").ok().map(|list| {
        list.split(',')
            .filter_map(|n| n.trim().replace('_', "").parse().ok())
            .collect()
    });
    let sizes: Vec<(usize, usize)> = match &only {
        Some(list) => list
            .iter()
            .map(|&edges| (edges, if edges >= 10_000 { large_runs } else { runs }))
            .collect(),
        None if large => vec![(10, runs), (100, runs), (1000, runs), (10_000, large_runs)],
        None => vec![(10, runs), (100, runs), (1000, runs)],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut figures = Vec::new();
    for (edges, runs) in sizes {
        figures.push(runtime.block_on(measure(edges, runs))?);
    }
    report(&figures);
    if only.is_some() {
        return Ok(());
    }
    let path = std::env::var("FLEET_CHART").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fleet-scale.svg"),
        std::path::PathBuf::from,
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    chart(&figures, &path)?;
    println!("chart written to {}", path.display());
    Ok(())
}
