//! A job service with Synapse's asynchronous-job REST API:
//! `cargo run --example http_service --features http`.
//!
//! Two areas, as a Synapse-style client expects them: `/dataset/{datasetId}/export/csv` starts
//! `org.example.CsvExportRequest` (exports `rows` rows of the dataset in the path, reporting
//! progress and stopping when canceled), and `/text/wordcount` starts
//! `org.example.WordCountRequest` (counts the words of `text`; an equal request from the same
//! user is answered with the earlier job). Users sign in with `Authorization: Bearer <token>`,
//! looked up in a token table (here two fixed tokens: `alice-s3cret` and `bob-s3cret`).
//! `GET /asynchronous/job/events` streams each user's job changes, and
//! `/asynchronous/job/dashboard#token=alice-s3cret`, opened in a browser, shows Alice's jobs live.
//!
//! From a terminal it serves on `127.0.0.1:3000` (`HTTP_SERVICE_ADDR` to change) until Ctrl-C;
//! the README's "HTTP front" section has `curl` commands to try. Without a terminal (as in CI), or
//! with `HTTP_SERVICE_DEMO=1`, it serves on a free loopback port, runs a short client against
//! itself, prints what it sees and exits (`HTTP_SERVICE_DEMO=0` serves regardless).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use asyncjobs::http::{Area, AsyncJobApi, BearerToken, JOB_REUSED};
use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use axum::http::{header, StatusCode};
use reqwest::{Client, RequestBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// `{"concreteType": "org.example.CsvExportRequest", "rows": 40}`, at
/// `/dataset/{datasetId}/export/csv/async/start`; `datasetId` comes from the path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CsvExportRequest {
    dataset_id: String,
    rows: u64,
}

#[derive(Serialize)]
#[serde(
    tag = "concreteType",
    rename = "org.example.CsvExportResponse",
    rename_all = "camelCase"
)]
struct CsvExportResponse {
    dataset_id: String,
    rows: u64,
}

/// `{"concreteType": "org.example.WordCountRequest", "text": "…"}`, at
/// `/text/wordcount/async/start`.
#[derive(Deserialize)]
struct WordCountRequest {
    text: String,
}

#[derive(Serialize)]
#[serde(tag = "concreteType", rename = "org.example.WordCountResponse")]
struct WordCountResponse {
    words: usize,
}

/// The most rows an export may have: more fail the job, to show a failure.
const MAX_ROWS: u64 = 10_000;

const ALICE: &str = "alice-s3cret";
const BOB: &str = "bob-s3cret";

fn api(registry: &JobRegistry) -> AsyncJobApi {
    // A token table; a real service would look tokens up in its database or check a JWT here.
    let tokens = Arc::new(HashMap::from([
        (ALICE.to_owned(), 3_350_396_u64),
        (BOB.to_owned(), 273_950),
    ]));
    let auth = BearerToken::new(move |token: String| {
        let tokens = tokens.clone();
        async move { Ok(tokens.get(&token).copied()) }
    });
    let exports = Area::new("/dataset/{datasetId}/export/csv").job(
        "org.example.CsvExportRequest",
        |request: CsvExportRequest, job: JobHandle| async move {
            if request.rows > MAX_ROWS {
                return Err(std::io::Error::other(format!(
                    "an export has at most {MAX_ROWS} rows, not {}",
                    request.rows
                )));
            }
            for row in 0..request.rows {
                if job.is_canceling() {
                    return Err(std::io::Error::other("export canceled"));
                }
                job.set_progress(
                    row,
                    request.rows,
                    format!("exported {row} of {} rows", request.rows),
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok(CsvExportResponse {
                dataset_id: request.dataset_id,
                rows: request.rows,
            })
        },
    );
    let word_counts = Area::new("/text/wordcount").job_with(
        "org.example.WordCountRequest",
        |request: JobRequest| request.cacheable().time_limit(Duration::from_secs(60)),
        |request: WordCountRequest, _job: JobHandle| async move {
            Ok::<_, std::io::Error>(WordCountResponse {
                words: request.text.split_whitespace().count(),
            })
        },
    );
    AsyncJobApi::new(registry.clone(), auth)
        .dashboard(true)
        .area(exports)
        .area(word_counts)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = JobRegistry::new();
    let app = api(&registry).into_router();
    let demo = match std::env::var("HTTP_SERVICE_DEMO").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => !std::io::stdin().is_terminal(),
    };

    if demo {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        println!(
            "serving on {base}; running the self-test client (HTTP_SERVICE_DEMO=0 to serve)\n"
        );
        self_test(&base).await?;
        let summary = registry.shutdown(Duration::from_secs(5)).await;
        println!("\nshut down: {summary:?}");
    } else {
        let addr = std::env::var("HTTP_SERVICE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let listener = TcpListener::bind(&addr).await?;
        println!("serving on http://{addr}; Ctrl-C to stop.");
        println!("Alice's jobs, live, in a browser: http://{addr}/asynchronous/job/dashboard#token={ALICE}");
        println!("Try:");
        println!(
            "  curl -i -H 'Authorization: Bearer {ALICE}' -d '{{\"concreteType\": \"org.example.CsvExportRequest\", \"rows\": 200}}' http://{addr}/dataset/syn42/export/csv/async/start"
        );
        let stopping = registry.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = tokio::signal::ctrl_c().await;
                // First the jobs: that also ends the event streams, which the server's graceful
                // shutdown waits for.
                let summary = stopping.shutdown(Duration::from_secs(5)).await;
                println!("\nshut down: {summary:?}");
            })
            .await?;
    }
    Ok(())
}

/// A client against the service: every endpoint once, checking each answer.
async fn self_test(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let http = Client::builder().no_proxy().build()?;
    let bearer = |token: &str| format!("Bearer {token}");
    let post = |token: &str, path: &str| {
        http.post(format!("{base}{path}"))
            .header(header::AUTHORIZATION, bearer(token))
    };
    let get = |token: &str, path: &str| {
        http.get(format!("{base}{path}"))
            .header(header::AUTHORIZATION, bearer(token))
    };
    let export = |rows: u64| json!({"concreteType": "org.example.CsvExportRequest", "rows": rows});
    let exports = "/dataset/syn42/export/csv";

    expect(
        "POST …/async/start (no token)",
        http.post(format!("{base}{exports}/async/start"))
            .json(&export(8)),
        &[StatusCode::UNAUTHORIZED],
    )
    .await?;

    // Follow Alice's jobs as they change, then start an export.
    let mut events = get(ALICE, "/asynchronous/job/events").send().await?;
    if events.status() != StatusCode::OK {
        return Err(format!("GET /asynchronous/job/events: {}", events.status()).into());
    }
    let started = expect(
        &format!("POST {exports}/async/start (8 rows)"),
        post(ALICE, &format!("{exports}/async/start")).json(&export(8)),
        &[StatusCode::CREATED],
    )
    .await?;
    let token = token_of(&started)?;
    let mut buffer = String::new();
    loop {
        let Some(chunk) = events.chunk().await? else {
            return Err("the event stream ended early".into());
        };
        buffer.push_str(std::str::from_utf8(&chunk)?);
        let mut done = false;
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue; // a heartbeat
            };
            let status: Value = serde_json::from_str(data)?;
            let state = status["jobState"].as_str().unwrap_or_default();
            let message = status["progressMessage"].as_str().unwrap_or_default();
            show(
                "event",
                &format!(
                    "etag {:<3} {state:<10} {message}",
                    status["etag"].as_str().unwrap_or_default()
                ),
            );
            done = status["jobId"] == token.as_str() && state != "PROCESSING";
        }
        if done {
            break;
        }
    }
    drop(events);
    let get_path = format!("{exports}/async/get/{token}");
    expect(
        &format!("GET {get_path}"),
        get(ALICE, &get_path),
        &[StatusCode::OK],
    )
    .await?;
    expect(
        &format!("GET {get_path} (as Bob)"),
        get(BOB, &get_path),
        &[StatusCode::FORBIDDEN],
    )
    .await?;
    expect(
        &format!("GET /dataset/syn7/export/csv/async/get/{token} (another dataset)"),
        get(
            ALICE,
            &format!("/dataset/syn7/export/csv/async/get/{token}"),
        ),
        &[StatusCode::NOT_FOUND],
    )
    .await?;

    // A cacheable request: the same one again is answered with the same job.
    let count =
        json!({"concreteType": "org.example.WordCountRequest", "text": "to be or not to be"});
    let first = expect(
        "POST /text/wordcount/async/start",
        post(ALICE, "/text/wordcount/async/start").json(&count),
        &[StatusCode::CREATED],
    )
    .await?;
    let again = post(ALICE, "/text/wordcount/async/start")
        .json(&count)
        .send()
        .await?;
    let reused = again.headers().get(JOB_REUSED).cloned();
    let again = again.text().await?;
    show(
        "POST /text/wordcount/async/start (again)",
        &format!("201 {again} Job-Reused: {reused:?}"),
    );
    if first != again || reused.as_ref().is_none_or(|r| r != "true") {
        return Err(format!("a cacheable request started a second job: {first} {again}").into());
    }

    // Synapse's generic launch, for a kind of any area: 201 and the status.
    expect(
        "POST /asynchronous/job (word count)",
        post(ALICE, "/asynchronous/job").json(
            &json!({"concreteType": "org.example.WordCountRequest", "text": "launched generically"}),
        ),
        &[StatusCode::CREATED],
    )
    .await?;

    // Cancel a long export: 202 while it stops, then async/get answers 409 with the reason.
    let long = token_of(
        &expect(
            &format!("POST {exports}/async/start (5000 rows)"),
            post(ALICE, &format!("{exports}/async/start")).json(&export(5000)),
            &[StatusCode::CREATED],
        )
        .await?,
    )?;
    let cancel_path = format!("/asynchronous/job/{long}/cancel");
    expect(
        &format!("POST {cancel_path}"),
        post(ALICE, &cancel_path),
        &[StatusCode::ACCEPTED, StatusCode::OK],
    )
    .await?;
    let long_path = format!("{exports}/async/get/{long}?wait=5");
    wait_while_processing(&get(ALICE, &long_path)).await?;
    expect(
        &format!("GET {long_path}"),
        get(ALICE, &long_path),
        &[StatusCode::CONFLICT],
    )
    .await?;

    // A failing export: a 4xx with the job's error message, never a 5xx.
    let failing = token_of(
        &expect(
            &format!("POST {exports}/async/start (too many rows)"),
            post(ALICE, &format!("{exports}/async/start")).json(&export(1_000_000)),
            &[StatusCode::CREATED],
        )
        .await?,
    )?;
    let failing_path = format!("{exports}/async/get/{failing}?wait=5");
    wait_while_processing(&get(ALICE, &failing_path)).await?;
    expect(
        &format!("GET {failing_path}"),
        get(ALICE, &failing_path),
        &[StatusCode::BAD_REQUEST],
    )
    .await?;

    // Alice's failed jobs, for a UI.
    let list = expect(
        "GET /asynchronous/job?jobState=FAILED",
        get(ALICE, "/asynchronous/job?jobState=FAILED"),
        &[StatusCode::OK],
    )
    .await?;
    let list: Value = serde_json::from_str(&list)?;
    if list["counts"]["FAILED"] != 2 || list["page"].as_array().map(Vec::len) != Some(2) {
        return Err(format!("expected two failed jobs: {list}").into());
    }

    expect(
        "POST /text/wordcount/async/start (an export)",
        post(ALICE, "/text/wordcount/async/start").json(&export(1)),
        &[StatusCode::BAD_REQUEST],
    )
    .await?;
    expect(
        "GET /asynchronous/job/42",
        get(ALICE, "/asynchronous/job/42"),
        &[StatusCode::NOT_FOUND],
    )
    .await?;
    expect(
        "GET /asynchronous/job/forty-two",
        get(ALICE, "/asynchronous/job/forty-two"),
        &[StatusCode::BAD_REQUEST],
    )
    .await?;
    Ok(())
}

/// Sends `request`, checks that its status is one of `statuses`, prints both and returns the body.
async fn expect(
    what: &str,
    request: RequestBuilder,
    statuses: &[StatusCode],
) -> Result<String, Box<dyn std::error::Error>> {
    let response = request.send().await?;
    let got = response.status();
    let body = response.text().await?;
    let shown: String = body.chars().take(160).collect();
    show(what, &format!("{} {shown}", got.as_u16()));
    if !statuses.contains(&got) {
        return Err(format!("{what}: expected {statuses:?}, got {got}").into());
    }
    Ok(body)
}

/// Repeats `request` (a long-poll on `async/get`) until it is answered with something but 202.
async fn wait_while_processing(request: &RequestBuilder) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let request = request
            .try_clone()
            .ok_or("a request without a body clones")?;
        if request.send().await?.status() != StatusCode::ACCEPTED {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn token_of(started: &str) -> Result<String, Box<dyn std::error::Error>> {
    let started: Value = serde_json::from_str(started)?;
    Ok(started["token"].as_str().ok_or("no token")?.to_owned())
}

fn show(request: &str, answer: &str) {
    println!("{request:<56} -> {answer}");
}
