//! A job service with Synapse's asynchronous-job REST API:
//! `cargo run --example http_service --features http`.
//!
//! Two job kinds: `org.example.CsvExportRequest` exports `rows` rows, reporting progress and
//! stopping when canceled; `org.example.WordCountRequest` counts the words of `text`, and an equal
//! request from the same user is answered with the earlier job (a cacheable request). The caller is
//! the user named by the `X-User-Id` header, as an authenticating proxy in front would set it.
//!
//! From a terminal it serves on `127.0.0.1:3000` (`HTTP_SERVICE_ADDR` to change) until Ctrl-C;
//! the README's "HTTP front" section has `curl` commands to try. Without a terminal (as in CI), or
//! with `HTTP_SERVICE_DEMO=1`, it serves on a free loopback port, runs a short client against
//! itself, prints what it sees and exits (`HTTP_SERVICE_DEMO=0` serves regardless).

use std::io::IsTerminal;
use std::time::Duration;

use asyncjobs::http::{AsyncJobApi, UserHeader};
use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use axum::http::{header, StatusCode};
use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// `{"concreteType": "org.example.CsvExportRequest", "rows": 40}`
#[derive(Deserialize)]
struct CsvExportRequest {
    rows: u64,
}

/// `{"concreteType": "org.example.WordCountRequest", "text": "…"}`
#[derive(Deserialize)]
struct WordCountRequest {
    text: String,
}

/// The most rows an export may have: more fail the job, to show a failure.
const MAX_ROWS: u64 = 10_000;

fn api(registry: &JobRegistry) -> AsyncJobApi {
    AsyncJobApi::new(registry.clone(), UserHeader::new("X-User-Id"))
        .job(
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
                Ok(json!({"concreteType": "org.example.CsvExportResponse", "rows": request.rows}))
            },
        )
        .job_with(
            "org.example.WordCountRequest",
            |request: JobRequest| request.cacheable().time_limit(Duration::from_secs(60)),
            |request: WordCountRequest, _job: JobHandle| async move {
                let words = request.text.split_whitespace().count();
                Ok::<_, std::io::Error>(
                    json!({"concreteType": "org.example.WordCountResponse", "words": words}),
                )
            },
        )
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
    } else {
        let addr = std::env::var("HTTP_SERVICE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let listener = TcpListener::bind(&addr).await?;
        println!("serving on http://{addr}; Ctrl-C to stop. Try:");
        println!(
            "  curl -i -H 'X-User-Id: 1' -d '{{\"concreteType\": \"org.example.CsvExportRequest\", \"rows\": 200}}' http://{addr}/async/start"
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
    }
    let summary = registry.shutdown(Duration::from_secs(5)).await;
    println!("\nshut down: {summary:?}");
    Ok(())
}

/// A client against the service: every endpoint once, checking each answer.
async fn self_test(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let http = Client::builder().no_proxy().build()?;
    let (alice, bob) = ("3350396", "273950");
    let post =
        |user: &str, path: &str| http.post(format!("{base}{path}")).header("X-User-Id", user);
    let get = |user: &str, path: &str| http.get(format!("{base}{path}")).header("X-User-Id", user);
    let export = |rows: u64| json!({"concreteType": "org.example.CsvExportRequest", "rows": rows});

    // Start an export; follow it by long-polling, each answer as soon as something changed.
    let started = expect(
        "POST /async/start (8-row export)",
        post(alice, "/async/start").json(&export(8)),
        &[StatusCode::CREATED],
    )
    .await?;
    let token = token_of(&started)?;
    let mut etag = String::new();
    loop {
        let path = format!("/asynchronous/job/{token}?wait=5");
        let response = get(alice, &path)
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            continue; // nothing new within the wait: ask again
        }
        if response.status() != StatusCode::OK {
            return Err(format!("GET {path}: {}", response.status()).into());
        }
        etag = response.headers()[header::ETAG].to_str()?.to_owned();
        let status: Value = response.json().await?;
        let state = status["jobState"].as_str().unwrap_or_default();
        let message = status["progressMessage"].as_str().unwrap_or_default();
        show(
            &format!("GET {path}"),
            &format!("200 ETag {etag:<4} {state:<10} {message}"),
        );
        if state != "PROCESSING" {
            break;
        }
    }
    let get_path = format!("/async/get/{token}");
    expect(
        &format!("GET {get_path}"),
        get(alice, &get_path),
        &[StatusCode::OK],
    )
    .await?;
    expect(
        &format!("GET {get_path} (as Bob)"),
        get(bob, &get_path),
        &[StatusCode::FORBIDDEN],
    )
    .await?;

    // A cacheable request: the same one again is answered with the same job.
    let count =
        json!({"concreteType": "org.example.WordCountRequest", "text": "to be or not to be"});
    let first = expect(
        "POST /async/start (word count)",
        post(alice, "/async/start").json(&count),
        &[StatusCode::CREATED],
    )
    .await?;
    let again = expect(
        "POST /async/start (the same word count)",
        post(alice, "/async/start").json(&count),
        &[StatusCode::CREATED],
    )
    .await?;
    if first != again {
        return Err(format!("a cacheable request started a second job: {first} {again}").into());
    }

    // Cancel a long export: 202 while it stops, then async/get answers 409 with the reason.
    let long = token_of(
        &expect(
            "POST /async/start (5000-row export)",
            post(alice, "/async/start").json(&export(5000)),
            &[StatusCode::CREATED],
        )
        .await?,
    )?;
    let cancel_path = format!("/asynchronous/job/{long}/cancel");
    expect(
        &format!("POST {cancel_path}"),
        post(alice, &cancel_path),
        &[StatusCode::ACCEPTED, StatusCode::OK],
    )
    .await?;
    let long_path = format!("/async/get/{long}?wait=5");
    wait_while_processing(&get(alice, &long_path)).await?;
    expect(
        &format!("GET {long_path}"),
        get(alice, &long_path),
        &[StatusCode::CONFLICT],
    )
    .await?;

    // A failing export, and requests that start nothing.
    let failing = token_of(
        &expect(
            "POST /async/start (too many rows)",
            post(alice, "/async/start").json(&export(1_000_000)),
            &[StatusCode::CREATED],
        )
        .await?,
    )?;
    let failing_path = format!("/async/get/{failing}?wait=5");
    wait_while_processing(&get(alice, &failing_path)).await?;
    expect(
        &format!("GET {failing_path}"),
        get(alice, &failing_path),
        &[StatusCode::BAD_REQUEST],
    )
    .await?;
    expect(
        "POST /async/start (unknown concreteType)",
        post(alice, "/async/start").json(&json!({"concreteType": "org.example.Nope"})),
        &[StatusCode::BAD_REQUEST],
    )
    .await?;
    expect(
        "GET /asynchronous/job/42",
        get(alice, "/asynchronous/job/42"),
        &[StatusCode::NOT_FOUND],
    )
    .await?;
    expect(
        "GET /asynchronous/job/forty-two",
        get(alice, "/asynchronous/job/forty-two"),
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
    show(what, &format!("{} {body}", got.as_u16()));
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
    println!("{request:<48} -> {answer}");
}
