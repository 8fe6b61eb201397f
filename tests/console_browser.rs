//! The web console in a real browser (SPEC §12.2): the binary serves it beside a simulated
//! fleet of the nine POPs, and headless Chromium, driven over WebDriver, signs in, sees the
//! fleet, approves with four-eyes, starts a canary that reaches 100%, starts a bad change that
//! rolls back with its verdict on screen, and checks what a Viewer may do. Screenshots of every
//! page land in `target/console-screenshots/` for a person to look at.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{ADMIN_PASSWORD, USER_PASSWORD, cache_rule};

/// Long enough for anything the control plane does on loopback, and for a slow browser start
/// on a busy machine; a hang fails instead of blocking.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing behind.
/// Every child starts in a process group of its own, and the whole group is killed: a
/// chromedriver killed alone would leave its Chromium running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with stdout piped, and returns it with the first stdout line for which
/// `wanted` answers something (bounded by [`DEADLINE`]). Later output is drained so the child
/// never blocks on a full pipe.
fn start_and_read<T: Send + 'static>(
    mut command: Command,
    what: &str,
    wanted: impl Fn(&str) -> Option<T>,
) -> (Process, T) {
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let process = Process(child);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{what} did not start in time"));
        if let Some(found) = wanted(&line) {
            return (process, found);
        }
    }
}

fn edgeplane() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    command.env("EDGEPLANE_LOG_LEVEL", "warn");
    command
}

/// The control plane's API as the test's own client sees it.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, answer) = self
            .call(reqwest::Method::POST, path, token, Some(body))
            .await;
        assert!(status.is_success(), "POST {path}: {status} {answer}");
        answer
    }

    async fn login(&self, username: &str, password: &str) -> String {
        let answer = self
            .http
            .post(format!("{}/api/v1/authentication/login", self.base))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(answer.status(), StatusCode::OK, "login of {username}");
        let body: Value = answer.json().await.expect("login body");
        body["token"].as_str().expect("token").to_string()
    }

    async fn wait_all_healthy(&self, token: &str, edges: u64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, body) = self
                .call(
                    reqwest::Method::GET,
                    "/edge-locations?isHealthy=true&limit=100",
                    token,
                    None,
                )
                .await;
            if body["total"].as_u64() == Some(edges) {
                return;
            }
            assert!(Instant::now() < deadline, "edges never all healthy: {body}");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Where the screenshots go: `target/console-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// The browser session and what the test does with it.
struct Browser {
    client: Client,
    base: String,
    shots: PathBuf,
    _driver: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(base: &str) -> Browser {
        let (driver, port) = start_and_read(
            {
                let mut command = Command::new(CHROMEDRIVER);
                command.arg("--port=0");
                command
            },
            "chromedriver",
            |line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
            },
        );
        let profile = tempfile::tempdir().expect("browser profile dir");
        let arguments = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1366,768",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": arguments},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        // A laptop screen: the page itself gets 1366×768, whatever the window's frame takes.
        let inner = client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("viewport");
        let frame = |index: usize, wanted: i64| {
            u32::try_from(2 * wanted - inner[index].as_i64().unwrap_or(wanted)).unwrap_or(768)
        };
        let (width, height) = (frame(0, 1366), frame(1, 768));
        client
            .set_window_size(width, height)
            .await
            .expect("window size");
        Browser {
            client,
            base: base.to_string(),
            shots: screenshot_dir(),
            _driver: driver,
            _profile: profile,
        }
    }

    /// Loads the console afresh (a new page: no session).
    async fn open(&self) {
        self.client
            .goto(&format!("{}/", self.base))
            .await
            .expect("navigate");
    }

    /// Moves within the console the way a link does, keeping the session.
    async fn go(&self, hash: &str) {
        self.client
            .execute("location.hash = arguments[0];", vec![json!(hash)])
            .await
            .expect("navigate");
    }

    /// Follows a link or a button by its CSS selector.
    async fn click(&self, css: &str) {
        self.element(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.element(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn choose(&self, css: &str, value: &str) {
        self.element(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
    }

    /// The visible text of every element matching `css` (an empty list when none).
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
            for element in elements {
                if let Ok(text) = element.text().await {
                    texts.push(text);
                }
            }
        }
        texts
    }

    /// Waits until some element matching `css` shows `wanted`; returns its text.
    async fn wait_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let texts = self.texts(css).await;
            if let Some(text) = texts.iter().find(|t| t.contains(wanted)) {
                return text.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {wanted:?}; it shows {texts:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until exactly `count` elements match `css`.
    async fn wait_count(&self, css: &str, count: usize) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let found = self
                .client
                .find_all(Locator::Css(css))
                .await
                .map(|all| all.len())
                .unwrap_or(0);
            if found == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css}: {found} elements, wanted {count}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|all| all.len())
            .unwrap_or(0)
    }

    async fn scroll_to(&self, css: &str) {
        self.client
            .execute(
                "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});",
                vec![json!(css)],
            )
            .await
            .expect("scroll");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Signs in with the keyboard alone: type, Tab to the password, Enter to submit.
    async fn sign_in(&self, username: &str, password: &str) {
        self.element("#sign-in-form").await;
        self.fill("#username", username).await;
        self.element("#username")
            .await
            .send_keys("\u{E004}")
            .await
            .expect("tab");
        let focused = self
            .client
            .execute("return document.activeElement.id;", vec![])
            .await
            .expect("focus");
        assert_eq!(focused, json!("password"), "Tab leads to the password");
        self.fill("#password", &format!("{password}\u{E007}")).await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.wait_text("#sign-in-error", "signed out").await;
    }
}

/// What the console's progress shows for a deployment, read from the page.
async fn wait_status(browser: &Browser, status: &str) {
    browser.wait_text("#deployment-status", status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        let message = format!(
            "SKIP the_console_in_a_browser: {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install chromium chromium-driver; .ci/run installs them)"
        );
        assert!(
            std::env::var_os("REQUIRE_BROWSER_TEST").is_none(),
            "{message}, and REQUIRE_BROWSER_TEST is set"
        );
        eprintln!("\n!!!!!!!! {message} !!!!!!!!\n");
        println!("\n!!!!!!!! {message} !!!!!!!!\n");
        return;
    }

    // The control plane, from the binary, with short analysis intervals and four-eyes on.
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = dir.path().join("edgeplane.toml");
    std::fs::write(
        &settings,
        "[rollout]\nanalysis_interval = \"100ms\"\n\n\
         [limits]\nwrites_per_minute = 100000\nreads_per_minute = 100000\n\
         validate_per_minute = 100000\ndeployment_actions_per_minute = 100000\n\
         metrics_reads_per_minute = 100000\nheartbeats_per_second = 100000\n\
         public_per_minute = 100000\nlogin_attempts_per_minute = 100000\n",
    )
    .expect("settings file");
    let (_server, address) = start_and_read(
        {
            let mut command = edgeplane();
            command
                .args(["serve", "--config"])
                .arg(&settings)
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--listen", "127.0.0.1:0"])
                .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD);
            command
        },
        "edgeplane serve",
        |line| {
            line.trim()
                .strip_prefix("listening on ")
                .map(str::to_string)
        },
    );
    let api = Api {
        base: format!("http://{address}"),
        http: reqwest::Client::new(),
    };
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    let (_fleet, ()) = start_and_read(
        {
            let mut command = edgeplane();
            command
                .args(["simulate", "--control-plane", &api.base, "--token", &admin])
                .args(["--edges", "9", "--heartbeat-interval", "200ms"]);
            command
        },
        "edgeplane simulate",
        |line| line.contains("simulating 9 edges").then_some(()),
    );
    api.wait_all_healthy(&admin, 9).await;

    // People: a second Admin for four-eyes approvals, and a Viewer.
    for (username, role) in [("alice", "Admin"), ("victor", "Viewer")] {
        api.post(
            "/users",
            &admin,
            json!({"username": username, "password": USER_PASSWORD, "role": role}),
        )
        .await;
    }
    // Written by `admin`: a cache rule with two versions, and a change that hurts.
    let good = api
        .post(
            "/configurations",
            &admin,
            json!({"name": "static-assets", "type": "CacheRule", "content": cache_rule("/static/*")}),
        )
        .await;
    let good_id = good["configurationId"].as_str().expect("id").to_string();
    let mut content = cache_rule("/static/*");
    content["ttl"] = json!(600);
    content["cacheControl"] = json!("public, max-age=600");
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("/configurations/{good_id}"),
            &admin,
            Some(json!({"content": content, "changeDescription": "shorter TTL for static files"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bad = api
        .post(
            "/configurations",
            &admin,
            json!({"name": "bad-change", "type": "CacheRule", "content": cache_rule("/media/*"),
                   "metadata": {"simulate.errorRate": "9.0"}}),
        )
        .await;
    let bad_id = bad["configurationId"].as_str().expect("id").to_string();
    let alice = api.login("alice", USER_PASSWORD).await;
    api.post(
        &format!("/configurations/{bad_id}/approve"),
        &alice,
        json!({}),
    )
    .await;

    let browser = Browser::start(&api.base).await;

    // Sign-in: a wrong password is refused on the page.
    browser.open().await;
    browser.element("#sign-in-form").await;
    browser.screenshot("01-sign-in").await;
    browser.sign_in("admin", "not-the-password").await;
    browser
        .wait_text("#sign-in-error", "Wrong username or password")
        .await;

    // Fleet: the nine POPs, healthy, by region.
    browser.sign_in("admin", ADMIN_PASSWORD).await;
    browser.wait_text("#who-name", "admin (Admin)").await;
    browser
        .wait_count("table.fleet tbody tr[data-location]", 9)
        .await;
    browser.wait_text("#fleet-healthy", "9").await;
    for location in [
        "us-east-1",
        "us-west-1",
        "us-central-1",
        "eu-west-1",
        "eu-central-1",
        "eu-north-1",
        "ap-east-1",
        "ap-south-1",
        "ap-southeast-1",
    ] {
        let row = browser
            .texts(&format!("table.fleet tr[data-location=\"{location}\"]"))
            .await;
        assert!(
            row.first().is_some_and(|r| r.contains("Healthy")),
            "{location}: {row:?}"
        );
    }
    for region in ["North America", "Europe", "Asia Pacific"] {
        browser.wait_text("section.card h2", region).await;
    }
    browser.screenshot("02-fleet").await;

    // Four-eyes: the author's approval is refused with the server's reason.
    browser.click("a[data-page=\"configurations\"]").await;
    browser
        .click("tr[data-configuration=\"static-assets\"] a")
        .await;
    browser.choose("#approve-version", "1.1.0").await;
    browser.click("#approve-submit").await;
    browser.wait_text("#approval-result", "four-eyes").await;
    browser.screenshot("03-four-eyes").await;
    browser.sign_out().await;

    // Another Admin approves, compares and validates.
    browser.sign_in("alice", USER_PASSWORD).await;
    browser.wait_text("#who-name", "alice (Admin)").await;
    browser.wait_text("h1", "static-assets").await;
    // A reload ends the session: the token lived in the tab's memory only.
    browser.client.refresh().await.expect("reload");
    browser.sign_in("alice", USER_PASSWORD).await;
    browser.choose("#approve-version", "1.1.0").await;
    browser.click("#approve-submit").await;
    browser
        .wait_text("tr[data-version=\"1.1.0\"]", "Approved")
        .await;
    browser.choose("#diff-from", "1.0.0").await;
    browser.choose("#diff-to", "1.1.0").await;
    browser.click("#diff-submit").await;
    let diff = browser.wait_text("#diff-result table.diff", "/ttl").await;
    assert!(
        diff.contains("86400") && diff.contains("600"),
        "old and new TTL side by side: {diff}"
    );
    browser.click("#validate").await;
    browser.wait_text("#validation-result", "Valid").await;
    browser.scroll_to("#diff-result").await;
    browser.screenshot("04-configuration").await;

    // A canary started from the console reaches 100%.
    browser.click("a[data-page=\"deployments\"]").await;
    browser.click("#new-deployment").await;
    browser.choose("#deploy-config", &good_id).await;
    browser
        .element("#deploy-version option[value=\"1.1.0\"]")
        .await;
    browser.choose("#deploy-version", "1.1.0").await;
    browser.choose("#deploy-strategy", "RegionalCanary").await;
    browser.fill("#deploy-monitor", "1s").await;
    browser.fill("#deploy-min-samples", "100").await;
    browser.click("#deploy-preview").await;
    browser.wait_text("#deploy-result", "Plan").await;
    browser.screenshot("05-new-deployment").await;
    browser.click("#deploy-submit").await;
    browser.element("#deployment-status").await;
    wait_status(&browser, "Completed").await;
    browser
        .wait_text("#progress-percentage", "100% complete")
        .await;
    browser
        .wait_count("#edges tr[data-state=\"Acked\"]", 9)
        .await;
    browser.wait_text("#timeline", "Completed").await;
    assert_eq!(
        browser.count("#action-pause").await,
        0,
        "no actions once done"
    );
    browser.screenshot("06-canary-completed").await;

    // A long canary that an Operator-level user pauses and resumes from the page.
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/deployments",
            &alice,
            Some(
                json!({"configurationId": good_id, "strategy": "RegionalCanary",
                        "targetRegions": ["North America", "Europe", "Asia Pacific"],
                        "canaryConfig": {"monitorDuration": "1h"},
                        "rollbackConfig": {"minSamples": 100}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let running = body["deploymentId"].as_str().expect("id").to_string();
    browser.go(&format!("#/deployments/{running}")).await;
    wait_status(&browser, "Canary").await;
    browser.click("#action-pause").await;
    wait_status(&browser, "Paused").await;
    browser.click("#action-resume").await;
    wait_status(&browser, "Canary").await;
    browser.sign_out().await;

    // A Viewer watches the same deployment and sees no action; the API refuses one anyway.
    browser.sign_in("victor", USER_PASSWORD).await;
    browser.wait_text("#who-name", "victor (Viewer)").await;
    browser.go(&format!("#/deployments/{running}")).await;
    wait_status(&browser, "Canary").await;
    browser
        .wait_text("#actions", "needs the Operator role")
        .await;
    assert_eq!(
        browser.count("#actions button").await,
        0,
        "a Viewer sees no action buttons"
    );
    browser.screenshot("07-viewer").await;
    let victor = api.login("victor", USER_PASSWORD).await;
    for action in ["pause", "rollback", "promote"] {
        let (status, body) = api
            .call(
                reqwest::Method::POST,
                &format!("/deployments/{running}/{action}"),
                &victor,
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action}: {body}");
        assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
    }

    // A token the server no longer accepts (its user is gone) brings back the sign-in.
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/users/victor", &admin, None)
        .await;
    assert!(status.is_success(), "delete victor: {status}");
    browser.click("a[data-page=\"fleet\"]").await;
    browser.wait_text("#sign-in-error", "sign in again").await;
    browser.screenshot("08-session-ended").await;

    // Back as an Admin, roll the long canary back from the page, with a reason.
    browser.sign_in("alice", USER_PASSWORD).await;
    browser.go(&format!("#/deployments/{running}")).await;
    wait_status(&browser, "Canary").await;
    browser
        .fill(
            "#rollback-reason-input",
            "checked by hand; not needed today",
        )
        .await;
    browser.click("#action-rollback").await;
    wait_status(&browser, "RolledBack").await;
    browser
        .wait_text("#timeline", "checked by hand; not needed today")
        .await;

    // A bad change rolls back by itself, with the verdict's figures on screen.
    browser.go("#/deployments/new").await;
    browser.choose("#deploy-config", &bad_id).await;
    browser
        .element("#deploy-version option[value=\"1.0.0\"]")
        .await;
    browser.fill("#deploy-monitor", "60s").await;
    browser.fill("#deploy-min-samples", "100").await;
    browser.click("#deploy-submit").await;
    browser.element("#deployment-status").await;
    wait_status(&browser, "RolledBack").await;
    browser.wait_text("#rollback-reason", "Rolled back").await;
    // The page shows the figures of the failing verdict the API stored.
    let url = browser.client.current_url().await.expect("url");
    let bad_deployment = url
        .fragment()
        .and_then(|f| f.strip_prefix("/deployments/"))
        .expect("a deployment page")
        .to_string();
    let (_, analysis) = api
        .call(
            reqwest::Method::GET,
            &format!("/metrics/deployments/{bad_deployment}"),
            &admin,
            None,
        )
        .await;
    let failing = analysis["verdicts"]
        .as_array()
        .and_then(|all| all.iter().rev().find(|v| v["verdict"]["outcome"] == "Fail"))
        .unwrap_or_else(|| panic!("a failing verdict: {analysis}"));
    let reason = &failing["verdict"]["reasons"][0];
    assert_eq!(reason["metric"], "ErrorRate", "{failing}");
    let kind = reason["kind"].as_str().expect("kind");
    let row = browser
        .wait_text("#verdict tr[data-metric=\"ErrorRate\"]", kind)
        .await;
    for figure in ["canaryValue", "threshold"] {
        let shown = format!("{:.2}%", reason[figure].as_f64().expect("a figure"));
        assert!(row.contains(&shown), "{figure} {shown} in {row:?}");
    }
    assert!(
        browser.count("#chart-ErrorRate .threshold line").await == 1
            && browser
                .count("#chart-ErrorRate .series.canary circle")
                .await
                >= 1,
        "the error-rate chart draws the canary and the threshold"
    );
    browser.wait_text("#timeline", "RolledBack").await;
    browser.screenshot("09-rolled-back").await;
    browser.scroll_to("#verdict").await;
    browser.screenshot("10-rolled-back-analysis").await;
    browser.scroll_to("#edges").await;
    browser.screenshot("11-rolled-back-edges").await;

    // Metrics per region and per edge over a chosen window.
    browser.click("a[data-page=\"metrics\"]").await;
    browser.choose("#metrics-window", "5m").await;
    browser
        .wait_count("section[data-region] tr[data-location]", 9)
        .await;
    browser
        .wait_text("section[data-region] tr.total", "All of Europe")
        .await;
    browser.screenshot("12-metrics").await;

    let violations = browser
        .client
        .execute("return window.cspViolations;", vec![])
        .await
        .expect("violations");
    assert_eq!(
        violations,
        json!([]),
        "the page breaks none of its own policy"
    );

    browser.client.close().await.expect("close the browser");
}
