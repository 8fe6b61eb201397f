//! Traces end to end: the real binary exporting over OTLP/HTTP to a receiver on loopback, a
//! simulated fleet, and one deployment started with a caller's W3C `traceparent` whose spans
//! (start, waves, pushes, verdicts) arrive as one trace under the caller's trace id; and the
//! `traceparent` header a push carries to the edge.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane::edge::{Fleet, SimulateOptions};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{Value, json};

use common::{ADMIN_PASSWORD, cache_rule, unique};

const API: &str = "/api/v1";
/// Long enough for anything on loopback; a hang fails instead of blocking.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// The caller's trace: its id and the id of the caller's own span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    trace_id: String,
    name: String,
    parent: String,
}

/// An OTLP/HTTP trace receiver on loopback; returns its base URL and what it has received.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.push(Received {
                                trace_id: hex::encode(&span.trace_id),
                                name: span.name,
                                parent: hex::encode(&span.parent_span_id),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{address}"), spans)
}

/// A running `edgeplane serve`; killed when dropped.
struct Binary {
    child: std::process::Child,
    base: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_binary(dir: &std::path::Path, otlp: &str) -> Binary {
    let config = dir.join("edgeplane.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nallow_self_approval = true\n\n\
             [log]\notlp_endpoint = \"{otlp}\"\ntrace_sample_ratio = 1.0\n\n\
             [rollout]\nanalysis_interval = \"100ms\"\n\n\
             [limits]\nwrites_per_minute = 100000\nreads_per_minute = 100000\n\
             validate_per_minute = 100000\ndeployment_actions_per_minute = 100000\n\
             metrics_reads_per_minute = 100000\nheartbeats_per_second = 100000\n\
             public_per_minute = 100000\nlogin_attempts_per_minute = 100000\n"
        ),
    )
    .expect("settings file");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        // A quiet log must not silence the traces.
        .env("EDGEPLANE_LOG_LEVEL", "warn")
        // Batches leave every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start edgeplane serve");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edgeplane serve did not print 'listening on' in time");
        };
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            return Binary {
                child,
                base: format!("http://{address}"),
            };
        }
    }
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
    traceparent: Option<&str>,
) -> (u16, Value) {
    let mut request = http.post(url).bearer_auth(token).json(&body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_is_one_trace_under_the_callers_trace_id() {
    let (otlp, spans) = otlp_receiver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = run_binary(dir.path(), &otlp);
    let base = binary.base.clone();
    let http = reqwest::Client::new();

    let (status, login) = post(
        &http,
        format!("{base}{API}/authentication/login"),
        "",
        json!({"username": "admin", "password": ADMIN_PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 200, "login: {login}");
    let admin = login["token"].as_str().expect("token").to_string();

    let fleet = Fleet::start(SimulateOptions {
        control_plane: base.clone(),
        admin_token: admin.clone(),
        edges: 3,
        heartbeat_interval: Duration::from_millis(200),
        ..SimulateOptions::default()
    })
    .await
    .expect("fleet starts");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let body = get(
            &http,
            format!("{base}{API}/edge-locations?isHealthy=true"),
            &admin,
        )
        .await;
        if body["edgeLocations"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "edges never healthy: {body}");
        tokio::time::sleep(POLL).await;
    }

    let (status, created) = post(
        &http,
        format!("{base}{API}/configurations"),
        &admin,
        json!({"name": unique("traced"), "type": "CacheRule",
               "content": cache_rule(&format!("{}/*", unique("/traced")))}),
        None,
    )
    .await;
    assert_eq!(status, 201, "create: {created}");
    let configuration = created["configurationId"].as_str().expect("id").to_string();
    let (status, approved) = post(
        &http,
        format!("{base}{API}/configurations/{configuration}/approve"),
        &admin,
        json!({}),
        None,
    )
    .await;
    assert_eq!(status, 200, "approve: {approved}");

    let targets: Vec<String> = fleet
        .endpoints()
        .into_iter()
        .map(|e| e.location_id)
        .collect();
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let (status, started) = post(
        &http,
        format!("{base}{API}/deployments"),
        &admin,
        json!({
            "configurationId": configuration,
            "configurationVersion": "1.0.0",
            "strategy": "RegionalCanary",
            "targetLocations": targets,
            "canaryConfig": {"initialPercentage": 34, "promotionSteps": [34, 100], "monitorDuration": "1s", "autoPromote": true},
            "rollbackConfig": {"minSamples": 100},
        }),
        Some(&traceparent),
    )
    .await;
    assert_eq!(status, 202, "deploy: {started}");
    let id = started["deploymentId"].as_str().expect("id").to_string();

    let deadline = Instant::now() + DEADLINE;
    loop {
        let body = get(&http, format!("{base}{API}/deployments/{id}"), &admin).await;
        let status = body["status"].as_str().unwrap_or_default().to_string();
        if status == "Completed" {
            break;
        }
        assert!(
            !["Failed", "RolledBack"].contains(&status.as_str()),
            "deployment ended {status}: {body}"
        );
        assert!(
            Instant::now() < deadline,
            "deployment never completed: {body}"
        );
        tokio::time::sleep(POLL).await;
    }

    let wanted = [
        "request",
        "deployment.start",
        "deployment.wave",
        "deployment.push",
        "deployment.verdict",
    ];
    let deadline = Instant::now() + DEADLINE;
    let in_trace = loop {
        let in_trace: Vec<Received> = spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.trace_id == TRACE_ID)
            .cloned()
            .collect();
        let names: BTreeSet<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
        if wanted.iter().all(|name| names.contains(name)) {
            break in_trace;
        }
        assert!(
            Instant::now() < deadline,
            "the trace never held {wanted:?}: {names:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    // The request that started it is the child of the caller's span.
    let deploy_request = in_trace
        .iter()
        .find(|s| s.name == "request" && s.parent == CALLER_SPAN);
    assert!(deploy_request.is_some(), "{in_trace:?}");
    // Pushes went to every target under this trace.
    let pushes = in_trace
        .iter()
        .filter(|s| s.name == "deployment.push")
        .count();
    assert!(pushes >= 3, "{pushes} pushes in {in_trace:?}");
    drop(fleet);
    drop(binary);
}

#[tokio::test(flavor = "current_thread")]
async fn a_push_in_a_trace_passes_its_context_to_the_edge() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let router = axum::Router::new().route(
        "/edge/v1/configurations/{id}/rollback",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen_tx = seen_tx.clone();
            async move {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let _ = seen_tx.send(traceparent);
                axum::Json(json!({"status": "acked", "version": "1.0.0"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let edge = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
    let client = edgeplane::fleet::PushClient::new(edgeplane::fleet::PushOptions::default())
        .expect("push client");

    let span = tracing::info_span!("deployment.push", traceId = tracing::field::Empty);
    assert!(edgeplane::telemetry::continue_trace(
        &span,
        &format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
    ));
    let outcome = client
        .rollback(&edge, "token", "config-1", None)
        .instrument(span)
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    let traceparent = seen
        .recv()
        .await
        .expect("the edge was called")
        .expect("a traceparent header");
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "{traceparent}"
    );
    assert!(!traceparent.contains(CALLER_SPAN), "{traceparent}");

    // Outside any trace, the edge gets no header.
    let outcome = client.rollback(&edge, "token", "config-1", None).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(seen.recv().await.expect("the edge was called"), None);
}
