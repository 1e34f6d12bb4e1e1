//! The dashboard page (`AsyncJobApi::dashboard`): served as a strict, self-contained page without
//! taking `/asynchronous/job/{jobId}` from job ids, and, in a real headless Chromium driven
//! through chromedriver (WebDriver), showing the caller's jobs live: names, progress that moves
//! as the test lets the job step, a cancel button that cancels, errors, the state filter, the
//! sign-in form, and never another user's jobs. Writes `target/dashboard.png` (and
//! `target/dashboard-narrow.png`) to look at.
//!
//! Needs `chromium` and `chromedriver` on the `PATH` (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them); fails, saying so, without them.
#![cfg(feature = "http")]

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asyncjobs::http::{AsyncJobApi, BearerToken};
use asyncjobs::{AsynchJobState, JobHandle, JobId, JobRegistry, JobRequest};
use axum::http::{header, StatusCode};
use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::{sleep, Instant};

const ALICE: u64 = 3_350_396;
const BOB: u64 = 273_950;
const ALICE_TOKEN: &str = "alice-s3cret";
const BOB_TOKEN: &str = "bob-s3cret";

/// How long to wait for the page to show something: generous, for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(75);

/// Gates by name: each permit added to a gate lets the export job on it take one step.
#[derive(Clone, Default)]
struct Gates(Arc<Mutex<HashMap<String, Arc<Semaphore>>>>);

impl Gates {
    fn get(&self, name: &str) -> Arc<Semaphore> {
        self.0
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(0)))
            .clone()
    }
}

fn app(registry: &JobRegistry, gates: &Gates, dashboard: bool) -> axum::Router {
    let auth = BearerToken::new(|token: String| async move {
        Ok(match token.as_str() {
            ALICE_TOKEN => Some(ALICE),
            BOB_TOKEN => Some(BOB),
            _ => None,
        })
    });
    let gates = gates.clone();
    AsyncJobApi::new(registry.clone(), auth)
        .dashboard(dashboard)
        // `rows` steps, each when the test opens the job's gate; stops when canceled.
        // Named: the page shows the name rather than the request's type.
        .job_with(
            "org.example.ExportRequest",
            |request: JobRequest| request.name("CSV export"),
            move |body: Value, job: JobHandle| {
                let gate = gates.get(body["gate"].as_str().unwrap_or(""));
                async move {
                    let rows = body["rows"].as_u64().unwrap_or(1);
                    for done in 1..=rows {
                        tokio::select! {
                            step = gate.acquire() => step.unwrap().forget(),
                            () = job.cancelled() => {
                                return Err(std::io::Error::other("export canceled"));
                            }
                        }
                        job.set_progress(done, rows, format!("exported {done} of {rows} rows"));
                    }
                    Ok(json!({"concreteType": "org.example.ExportResponse", "rows": rows}))
                }
            },
        )
        .job(
            "org.example.ReportRequest",
            |_: Value, _job: JobHandle| async move {
                Err::<(), _>(std::io::Error::other("disk full: report not written"))
            },
        )
        .job_with(
            "org.example.CleanupRequest",
            |request: JobRequest| request.name("nightly cleanup"),
            |_: Value, job: JobHandle| async move {
                job.set_progress(3, 3, "removed 3 files");
                Ok::<_, std::io::Error>(json!({"concreteType": "org.example.CleanupResponse"}))
            },
        )
        .job(
            "org.example.SecretRequest",
            |_: Value, job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("stopped"))
            },
        )
        .into_router()
}

/// A server on a loopback port.
struct Server {
    base: String,
    http: reqwest::Client,
    registry: JobRegistry,
    gates: Gates,
}

impl Server {
    async fn start(dashboard: bool) -> Server {
        let registry = JobRegistry::new();
        let gates = Gates::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app(&registry, &gates, dashboard);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Server {
            base,
            http: reqwest::Client::new(),
            registry,
            gates,
        }
    }

    fn dashboard_url(&self) -> String {
        format!("{}/asynchronous/job/dashboard", self.base)
    }

    /// Starts a job as the token's user through `POST /asynchronous/job`.
    async fn start_job(&self, token: &str, body: Value) -> JobId {
        let response = self
            .http
            .post(format!("{}/asynchronous/job", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let status: Value = response.json().await.unwrap();
        status["jobId"].as_str().unwrap().parse().unwrap()
    }

    /// Lets the export job on `gate` take one step.
    fn step(&self, gate: &str) {
        self.gates.get(gate).add_permits(1);
    }

    async fn shutdown(self) {
        self.registry.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn the_dashboard_is_opt_in_and_job_ids_keep_their_route() {
    let server = Server::start(false).await;
    let id = server
        .start_job(
            ALICE_TOKEN,
            json!({"concreteType": "org.example.CleanupRequest"}),
        )
        .await;
    server.registry.wait(&id).await.unwrap();

    // Off by default: the path is a (malformed) job id, answered as one.
    let off = server
        .http
        .get(server.dashboard_url())
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), StatusCode::BAD_REQUEST);
    server.shutdown().await;

    let server = Server::start(true).await;
    let id = server
        .start_job(
            ALICE_TOKEN,
            json!({"concreteType": "org.example.CleanupRequest"}),
        )
        .await;
    server.registry.wait(&id).await.unwrap();

    // Served to anyone (a browser opening it sends no token), as a strict page.
    let page = server
        .http
        .get(server.dashboard_url())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    let head = server
        .http
        .head(server.dashboard_url())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // A job id still reaches its status, and the other static route still is the stream.
    let status = server
        .http
        .get(format!("{}/asynchronous/job/{id}", server.base))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let status: Value = status.json().await.unwrap();
    assert_eq!(status["jobId"], id.to_string());
    assert_eq!(status["jobState"], "COMPLETE");
    let malformed = server
        .http
        .get(format!("{}/asynchronous/job/dashboards", server.base))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    server.shutdown().await;
}

/// A TCP proxy in front of the server that can cut every connection and refuse new ones, as a
/// dropped network would, and keeps the head of each request it forwards.
struct Proxy {
    base: String,
    shared: Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyShared {
    down: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
    heads: Mutex<Vec<String>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(ProxyShared::default());
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accepting.down.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                let shared = accepting.clone();
                let task = tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let mut head = vec![0; 16 * 1024];
                    let Ok(read) = client.read(&mut head).await else {
                        return;
                    };
                    let text = String::from_utf8_lossy(&head[..read]).into_owned();
                    shared.heads.lock().unwrap().push(text);
                    if server.write_all(&head[..read]).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accepting
                    .connections
                    .lock()
                    .unwrap()
                    .push(task.abort_handle());
            }
        });
        Proxy { base, shared }
    }

    /// Closes every connection, and every new one until [`restore`](Proxy::restore).
    fn cut(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// The heads of the requests forwarded so far, lowercased.
    fn heads(&self) -> Vec<String> {
        let heads = self.shared.heads.lock().unwrap();
        heads.iter().map(|head| head.to_lowercase()).collect()
    }
}

/// What the page shows for one job, read from its row.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    state: String,
    name: String,
    label: String,
    /// The progress bar's value; `None` while indeterminate.
    value: Option<f64>,
    max: f64,
    amount: String,
    message: String,
    runtime: String,
    error: Option<String>,
    cancel_shown: bool,
    outcome: String,
    displayed: bool,
}

const READ_ROW: &str = r#"
    const row = document.querySelector(`li[data-job-id="${arguments[0]}"]`);
    if (!row) return null;
    const bar = row.querySelector("progress");
    const error = row.querySelector(".error");
    return {
        state: row.dataset.state,
        name: row.querySelector(".name strong").textContent,
        label: row.querySelector(".state").textContent,
        value: bar.hasAttribute("value") ? bar.value : null,
        max: bar.max,
        amount: row.querySelector(".amount").textContent,
        message: row.querySelector(".message").textContent,
        runtime: row.querySelector(".runtime").textContent,
        error: error.hidden ? null : row.querySelector(".error-message").textContent,
        cancelShown: !row.querySelector(".cancel").hidden,
        outcome: row.querySelector(".outcome").textContent,
        displayed: row.getClientRects().length > 0,
    };
"#;

/// The counts on the filter's buttons, by state.
const COUNTS: &str = r#"return Object.fromEntries([...document.querySelectorAll("[data-count]")]
    .map((el) => [el.dataset.count, el.textContent]));"#;

/// chromedriver and the headless Chromium it starts, in a process group of their own that is
/// killed on drop (also when a test fails), and the browser's throwaway profile.
struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
}

/// The path of `program` on the `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start() -> Browser {
        let missing = "this test drives a headless Chromium: install it with `apt-get install -y \
                       chromium chromium-driver` (Debian; .ci/run does), so that `chromium` and \
                       `chromedriver` are on the PATH";
        let chromium = on_path("chromium").unwrap_or_else(|| panic!("no chromium: {missing}"));
        let chromedriver =
            on_path("chromedriver").unwrap_or_else(|| panic!("no chromedriver: {missing}"));

        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let profile = tmp.join(format!("dashboard-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log = tmp.join("dashboard-chromedriver.log");
        let port = free_port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own group, so that Chromium's processes are killed with it.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()))
        };
        let mut browser = Browser {
            client: None,
            driver,
            profile,
        };

        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        while !http
            .get(format!("{url}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port} (see {})",
                log.display()
            );
            sleep(POLL).await;
        }

        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                    format!("--user-data-dir={}", browser.profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver did not start Chromium: {e} (see {})",
                    log.display()
                )
            });
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than `null` or `false`.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.run(script, vec![]).await;
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            sleep(POLL).await;
        }
    }

    /// Polls `script` until it returns `expected`.
    async fn until_eq(&self, what: &str, script: &str, expected: &Value) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.run(script, vec![]).await;
            if value == *expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {value} is not {expected}"
            );
            sleep(POLL).await;
        }
    }

    async fn row(&self, id: JobId) -> Option<Row> {
        let value = self.run(READ_ROW, vec![json!(id.to_string())]).await;
        serde_json::from_value(value).expect("a row reads as a Row")
    }

    /// Polls job `id`'s row until `ready` holds for it.
    async fn until_row(&self, id: JobId, what: &str, ready: impl Fn(&Row) -> bool) -> Row {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let row = self.row(id).await;
            match row {
                Some(row) if ready(&row) => return row,
                _ if Instant::now() >= deadline => {
                    panic!("timed out waiting for job {id}: {what}; the row: {row:?}")
                }
                _ => sleep(POLL).await,
            }
        }
    }

    async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.unwrap();
        // The target directory (git-ignored), next to the test's tmp directory.
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--"])
            .arg(format!("-{}", self.driver.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_jobs_live_and_cancels_one() {
    let started = Instant::now();
    let server = Server::start(true).await;
    // Before the page loads, so they come from the list: one finished each way, and Bob's.
    let report = server
        .start_job(
            ALICE_TOKEN,
            json!({"concreteType": "org.example.ReportRequest"}),
        )
        .await;
    let cleanup = server
        .start_job(
            ALICE_TOKEN,
            json!({"concreteType": "org.example.CleanupRequest"}),
        )
        .await;
    let bobs = server
        .start_job(
            BOB_TOKEN,
            json!({"concreteType": "org.example.SecretRequest"}),
        )
        .await;
    server.registry.wait(&report).await.unwrap();
    server.registry.wait(&cleanup).await.unwrap();

    // The browser goes through a proxy, to be cut off later.
    let proxy = Proxy::start(&server.base).await;
    let page = format!("{}/asynchronous/job/dashboard", proxy.base);
    let browser = Browser::start().await;
    let client = browser.client();
    client
        .goto(&format!("{page}#token={ALICE_TOKEN}"))
        .await
        .unwrap();
    browser
        .until(
            "the stream to be live",
            r#"return document.getElementById("live").dataset.live === "live";"#,
        )
        .await;

    let row = browser
        .until_row(report, "FAILED with its error", |r| r.state == "FAILED")
        .await;
    assert_eq!(row.name, "ReportRequest");
    assert_eq!(row.label, "Failed");
    assert_eq!(row.error.as_deref(), Some("disk full: report not written"));
    assert!(!row.cancel_shown);
    let row = browser
        .until_row(cleanup, "COMPLETE", |r| r.state == "COMPLETE")
        .await;
    assert_eq!(
        (row.name.as_str(), row.value, row.max),
        ("nightly cleanup", Some(3.0), 3.0)
    );
    assert_eq!(row.amount, "3 / 3 (100%)");
    assert_eq!(row.error, None);
    // The token left the address bar for the tab's session storage.
    let kept = browser
        .run(
            r#"return [location.hash, sessionStorage.getItem("asyncjobs.dashboard.token")];"#,
            vec![],
        )
        .await;
    assert_eq!(kept, json!(["", ALICE_TOKEN]));
    // The inline style applies, so its hash in the policy is right (the script's is, or
    // nothing would show).
    let display = browser
        .run(
            r#"return getComputedStyle(document.querySelector("li.job")).display;"#,
            vec![],
        )
        .await;
    assert_eq!(display, "grid");

    // Started while the page is open: it comes from the stream, without progress yet.
    let export = server
        .start_job(
            ALICE_TOKEN,
            json!({"concreteType": "org.example.ExportRequest", "gate": "export", "rows": 4}),
        )
        .await;
    let row = browser
        .until_row(export, "PROCESSING", |r| r.state == "PROCESSING")
        .await;
    assert_eq!(
        row.value, None,
        "indeterminate until the job says how much there is"
    );
    assert!(row.cancel_shown);
    assert!(row.runtime.ends_with('s'), "{row:?}");

    // Its name is not a status field: the page asks the list for it.
    let row = browser
        .until_row(export, "named", |r| r.name == "CSV export")
        .await;
    assert_eq!(row.state, "PROCESSING");

    // Progress moves as the job steps.
    server.step("export");
    let row = browser
        .until_row(export, "1 of 4", |r| r.value == Some(1.0))
        .await;
    assert_eq!((row.max, row.amount.as_str()), (4.0, "1 / 4 (25%)"));
    assert_eq!(row.message, "exported 1 of 4 rows");
    server.step("export");
    let row = browser
        .until_row(export, "2 of 4", |r| r.value == Some(2.0))
        .await;
    assert_eq!(row.amount, "2 / 4 (50%)");
    assert_eq!(row.message, "exported 2 of 4 rows");

    // A second export, left running at 7 of 10 for the screenshot.
    let running = server
        .start_job(
            ALICE_TOKEN,
            json!({"concreteType": "org.example.ExportRequest", "gate": "running", "rows": 10}),
        )
        .await;
    for _ in 0..7 {
        server.step("running");
    }
    browser
        .until_row(running, "7 of 10", |r| r.value == Some(7.0))
        .await;

    // The filter, with its counts.
    let expected = json!({"ALL": "4", "PROCESSING": "2", "COMPLETE": "1", "FAILED": "1"});
    assert_eq!(browser.run(COUNTS, vec![]).await, expected);
    browser.click(r#"nav button[data-filter="FAILED"]"#).await;
    assert!(browser.row(report).await.unwrap().displayed);
    assert!(!browser.row(export).await.unwrap().displayed);
    assert!(!browser.row(cleanup).await.unwrap().displayed);
    browser
        .click(r#"nav button[data-filter="PROCESSING"]"#)
        .await;
    assert!(!browser.row(report).await.unwrap().displayed);
    assert!(browser.row(export).await.unwrap().displayed);
    assert!(browser.row(running).await.unwrap().displayed);
    browser.click(r#"nav button[data-filter=""]"#).await;
    for id in [report, cleanup, export, running] {
        assert!(browser.row(id).await.unwrap().displayed, "{id}");
    }

    // The connection drops; a step happens while the page is cut off; the page reconnects by
    // itself, resuming after the last event it saw, and shows the step.
    proxy.cut();
    browser
        .until(
            "the page to notice the drop",
            r#"return document.getElementById("live").dataset.live === "down";"#,
        )
        .await;
    let etag = server.registry.status(&running).await.unwrap().etag;
    server.step("running");
    let status = server
        .registry
        .wait_for_change(&running, &etag)
        .await
        .unwrap();
    assert_eq!(status.progress_current, Some(8));
    let before = proxy.heads().len();
    proxy.restore();
    let row = browser
        .until_row(running, "8 of 10 after the reconnect", |r| {
            r.value == Some(8.0)
        })
        .await;
    assert_eq!(row.amount, "8 / 10 (80%)");
    browser
        .until(
            "the stream to be live again",
            r#"return document.getElementById("live").dataset.live === "live";"#,
        )
        .await;
    let resumed = proxy.heads()[before..].iter().any(|head| {
        head.starts_with("get /asynchronous/job/events") && head.contains("\r\nlast-event-id: ")
    });
    assert!(
        resumed,
        "no resume with Last-Event-ID in {:?}",
        &proxy.heads()[before..]
    );

    // Cancel by clicking: the job ends FAILED, canceled, in the registry and on the page.
    browser
        .click(&format!(r#"li[data-job-id="{export}"] button.cancel"#))
        .await;
    let row = browser
        .until_row(export, "FAILED after the cancel", |r| r.state == "FAILED")
        .await;
    assert_eq!(row.label, "Canceled");
    assert_eq!(row.error.as_deref(), Some("export canceled"));
    assert_eq!(row.outcome, "cancel requested");
    assert!(!row.cancel_shown);
    assert_eq!(row.value, Some(2.0), "the bar stays where the job stopped");
    let status = server.registry.status(&export).await.unwrap();
    assert_eq!(status.job_state, AsynchJobState::Failed);
    assert!(status.job_canceling);
    assert_eq!(status.error_message.as_deref(), Some("export canceled"));
    let expected = json!({"ALL": "4", "PROCESSING": "1", "COMPLETE": "1", "FAILED": "2"});
    browser
        .until_eq("the counts to follow the cancel", COUNTS, &expected)
        .await;

    // Bob's job is nowhere: four rows, all Alice's.
    assert!(browser.row(bobs).await.is_none());
    let rows = browser
        .run(
            r#"return [...document.querySelectorAll("li.job")].map((r) => r.dataset.jobId);"#,
            vec![],
        )
        .await;
    let mut ids: Vec<String> = serde_json::from_value(rows).unwrap();
    ids.sort();
    let mut alices: Vec<String> = [report, cleanup, export, running]
        .iter()
        .map(ToString::to_string)
        .collect();
    alices.sort();
    assert_eq!(ids, alices);

    let wide = browser.screenshot("dashboard.png").await;
    client.set_window_size(420, 900).await.unwrap();
    let narrow = browser.screenshot("dashboard-narrow.png").await;
    client.set_window_size(1200, 900).await.unwrap();

    // Without a token the page asks for one; a refused one is said so; then the jobs come back.
    browser
        .run(r#"sessionStorage.clear(); return true;"#, vec![])
        .await;
    client.goto(&page).await.unwrap();
    browser
        .until(
            "the sign-in form",
            r#"return !document.getElementById("signin").hidden;"#,
        )
        .await;
    let token = client.find(Locator::Css("#token")).await.unwrap();
    token.send_keys("not-a-token").await.unwrap();
    browser.click(r#"#signin-form button[type="submit"]"#).await;
    browser
        .until(
            "the refusal",
            r#"const p = document.getElementById("signin-reason");
               return !document.getElementById("signin").hidden
                   && p.textContent.includes("did not accept");"#,
        )
        .await;
    token.send_keys(ALICE_TOKEN).await.unwrap();
    browser.click(r#"#signin-form button[type="submit"]"#).await;
    let row = browser
        .until_row(export, "listed again after signing in", |r| {
            r.state == "FAILED"
        })
        .await;
    assert_eq!(row.label, "Canceled");
    let row = browser
        .until_row(running, "still at 8 of 10", |r| r.value == Some(8.0))
        .await;
    assert_eq!(row.amount, "8 / 10 (80%)");
    assert!(browser.row(bobs).await.is_none());

    browser.close().await;
    server.shutdown().await;
    eprintln!(
        "screenshots: {} and {}; the browser test took {:.1} s",
        wide.display(),
        narrow.display(),
        started.elapsed().as_secs_f64()
    );
}
