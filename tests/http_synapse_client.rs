//! A client that polls as Synapse's Python client does, against the HTTP front on a loopback
//! port, on tokio's paused clock (its sleeps of up to 20 s take no time).
//!
//! The model, from synapseclient: `async/get` is polled with a sleep that starts at 0.2 s and
//! grows ×1.1 up to 20 s, back to 0.2 s whenever progress changes, giving up after a while
//! without progress. Each request is retried (after 1 ms doubling, up to 10 s between tries,
//! for up to 20 minutes) when it is answered 429, 500, 502, 503 or 504, or any other error whose
//! `reason` says "timeout", "timed out", "try again", "slow down", …; any other 4xx raises.
//!
//! What it checks: every way a job can fail reaches that client as an error at its first poll
//! after the job ended (never as a retry loop), a completed job's body is an object, and the
//! server's own trouble (a 5xx) is what it waits through.
#![cfg(feature = "http")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asyncjobs::http::{AsyncJobApi, Rejection, UserHeader};
use asyncjobs::{exception, JobHandle, JobId, JobRegistry, JobRequest};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Router;
use reqwest::Client;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

const ALICE: u64 = 3_350_396;

/// The statuses synapseclient retries.
const RETRY_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];

/// synapseclient's `RETRYABLE_CONNECTION_ERRORS`: an error whose reason contains one is retried
/// whatever its status.
const RETRY_PHRASES: [&str; 9] = [
    "proxy error",
    "slow down",
    "timeout",
    "timed out",
    "connection reset by peer",
    "unknown ssl protocol error",
    "couldn't connect to host",
    "slowdown",
    "try again",
];

/// How long the client retries one request before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(20 * 60);

/// How long the client waits without progress before it gives up on a job.
const PATIENCE: Duration = Duration::from_secs(600);

/// How a poll ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The response body of a COMPLETE job.
    Complete(Value),
    /// An error the client raises: the status and the `reason`.
    Raised(StatusCode, String),
    /// No progress for [`PATIENCE`].
    GaveUp,
}

/// Every request the client made, when, and how it was answered; and how it ended.
#[derive(Debug)]
struct Trace {
    requests: Vec<(Instant, StatusCode)>,
    retries: usize,
    outcome: Outcome,
}

struct SynapseClient {
    http: Client,
    base: String,
}

impl SynapseClient {
    fn new(base: String) -> Self {
        let http = Client::builder().no_proxy().build().unwrap();
        SynapseClient { http, base }
    }

    async fn start(&self, body: Value) -> JobId {
        let response = self
            .http
            .post(format!("{}/async/start", self.base))
            .header("X-User-Id", ALICE.to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let token: Value = response.json().await.unwrap();
        token["token"].as_str().unwrap().parse().unwrap()
    }

    /// `_waitForAsync`: polls `async/get/{token}` until the job is no longer PROCESSING.
    async fn wait_for_async(&self, token: JobId) -> Trace {
        let mut trace = Trace {
            requests: Vec::new(),
            retries: 0,
            outcome: Outcome::GaveUp,
        };
        let mut sleep_for = Duration::from_millis(200);
        let mut last_progress = (Value::Null, Value::Null);
        let mut progressed_at = Instant::now();
        loop {
            let (status, body) = self
                .rest_get(&format!("/async/get/{token}"), &mut trace)
                .await;
            if !status.is_success() {
                let reason = body["reason"].as_str().unwrap_or_default().to_owned();
                trace.outcome = Outcome::Raised(status, reason);
                return trace;
            }
            // The client reads fields of the body: it must be an object.
            let result = body.as_object().expect("a JSON object");
            if result.get("jobState") != Some(&json!("PROCESSING")) {
                trace.outcome = Outcome::Complete(body);
                return trace;
            }
            let progress = (
                body["progressCurrent"].clone(),
                body["progressMessage"].clone(),
            );
            if progress != last_progress {
                last_progress = progress;
                progressed_at = Instant::now();
                sleep_for = Duration::from_millis(200);
            }
            if progressed_at.elapsed() >= PATIENCE {
                return trace;
            }
            sleep(sleep_for).await;
            sleep_for = sleep_for.mul_f64(1.1).min(Duration::from_secs(20));
        }
    }

    /// `restGET` under `with_retry_async`.
    async fn rest_get(&self, path: &str, trace: &mut Trace) -> (StatusCode, Value) {
        let mut waited = Duration::ZERO;
        let mut retries = 0;
        loop {
            let response = self
                .http
                .get(format!("{}{path}", self.base))
                .header("X-User-Id", ALICE.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status();
            trace.requests.push((Instant::now(), status));
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let reason = body["reason"].as_str().unwrap_or_default().to_lowercase();
            let retry = RETRY_STATUSES.contains(&status.as_u16())
                || (!status.is_success() && RETRY_PHRASES.iter().any(|p| reason.contains(p)));
            if !retry || waited >= RETRY_FOR {
                return (status, body);
            }
            let backoff = Duration::from_millis(1)
                .saturating_mul(1 << retries.min(20))
                .min(Duration::from_secs(10));
            sleep(backoff).await;
            waited += backoff;
            retries += 1;
            trace.retries += 1;
        }
    }
}

/// An error type of the application's own.
#[derive(Debug)]
struct NoSuchTable;

impl std::fmt::Display for NoSuchTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no such table: syn123")
    }
}

impl std::error::Error for NoSuchTable {}

/// Every kind of job the failure test needs: each runs a second, or until asked to stop.
fn api(registry: &JobRegistry) -> AsyncJobApi {
    let second = || sleep(Duration::from_secs(1));
    AsyncJobApi::new(registry.clone(), UserHeader::new("X-User-Id"))
        .job("test.Fail", move |_: Value, _job: JobHandle| async move {
            second().await;
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .job(
            "test.NoSuchTable",
            move |_: Value, _job: JobHandle| async move {
                second().await;
                Err::<(), _>(NoSuchTable)
            },
        )
        .job("test.Panic", move |_: Value, _job: JobHandle| async move {
            second().await;
            if true {
                panic!("index out of bounds");
            }
            Ok::<(), std::io::Error>(())
        })
        .job(
            "test.Unserializable",
            move |_: Value, _job: JobHandle| async move {
                second().await;
                Ok::<_, std::io::Error>(std::collections::HashMap::from([((1, 2), 3)]))
            },
        )
        .job_with(
            "test.TooLong",
            |request: JobRequest| request.time_limit(Duration::from_secs(3)),
            |_: Value, job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("gave up"))
            },
        )
        .job_with(
            "test.Stalls",
            |request: JobRequest| request.stall_limit(Duration::from_secs(5)),
            |_: Value, job: JobHandle| async move {
                job.set_progress(1, 10, "started");
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("gave up"))
            },
        )
        // Stops by itself when canceled.
        .job(
            "test.UntilCanceled",
            |_: Value, job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("export canceled"))
            },
        )
        // Ignores a cancel: stopped by the registry after the grace.
        .job("test.Stubborn", |_: Value, _job: JobHandle| async move {
            std::future::pending::<()>().await;
            Ok::<(), std::io::Error>(())
        })
        .job("test.Unit", move |_: Value, _job: JobHandle| async move {
            second().await;
            Ok::<(), std::io::Error>(())
        })
        .job("test.Steps", |_: Value, job: JobHandle| async move {
            for step in 0..5 {
                job.set_progress(step, 5, format!("step {step} of 5"));
                sleep(Duration::from_secs(30)).await;
            }
            Ok::<_, std::io::Error>(json!({"concreteType": "test.StepsResponse", "steps": 5}))
        })
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// Follows job `id` with the client, noting when the job ended, and checks that the client
/// raised `expected` with the job's error message at its first poll after the end, without a
/// retry.
async fn assert_raised_at_next_poll(
    client: &SynapseClient,
    registry: &JobRegistry,
    id: JobId,
    expected: StatusCode,
    what: &str,
) {
    let ended = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let status = registry.wait(&id).await.unwrap();
            (Instant::now(), status)
        })
    };
    let trace = client.wait_for_async(id).await;
    let (ended, status) = ended.await.unwrap();
    let message = status
        .error_message
        .as_deref()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        trace.outcome,
        Outcome::Raised(expected, message),
        "{what}: {trace:?}"
    );
    assert_eq!(trace.retries, 0, "{what}: {trace:?}");
    let (last, polls) = trace.requests.split_last().unwrap();
    assert!(
        polls.iter().all(|(_, s)| *s == StatusCode::ACCEPTED),
        "{what}: every poll before the last saw PROCESSING: {trace:?}"
    );
    assert!(last.0 >= ended, "{what}: {trace:?}");
    assert!(
        polls.last().is_none_or(|(at, _)| *at <= ended),
        "{what}: the poll before the last came before the end: {trace:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_failure_reaches_the_client_as_an_error_at_its_next_poll() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(2))
        .max_running(1)
        .build();
    let router = api(&registry)
        .exception_status(std::any::type_name::<NoSuchTable>(), StatusCode::NOT_FOUND)
        .into_router();
    let client = SynapseClient::new(serve(router).await);

    for (kind, exception, expected) in [
        (
            "test.Fail",
            "std::io::error::Error",
            StatusCode::BAD_REQUEST,
        ),
        (
            "test.NoSuchTable",
            std::any::type_name::<NoSuchTable>(),
            StatusCode::NOT_FOUND,
        ),
        ("test.Panic", exception::PANICKED, StatusCode::BAD_REQUEST),
        (
            "test.Unserializable",
            exception::RESPONSE_NOT_SERIALIZABLE,
            StatusCode::BAD_REQUEST,
        ),
        (
            "test.TooLong",
            exception::TIMED_OUT,
            StatusCode::BAD_REQUEST,
        ),
        ("test.Stalls", exception::TIMED_OUT, StatusCode::BAD_REQUEST),
    ] {
        let id = client.start(json!({ "concreteType": kind })).await;
        assert_raised_at_next_poll(&client, &registry, id, expected, kind).await;
        let status = registry.status(&id).await.unwrap();
        assert_eq!(status.exception.as_deref(), Some(exception), "{kind}");
    }

    // Canceled while it runs: stopping by itself, or stopped after the grace.
    for (kind, exception) in [
        ("test.UntilCanceled", "std::io::error::Error"),
        ("test.Stubborn", exception::CANCELED),
    ] {
        let id = client.start(json!({ "concreteType": kind })).await;
        let canceler = {
            let registry = registry.clone();
            tokio::spawn(async move {
                sleep(Duration::from_secs(3)).await;
                registry.as_user(ALICE).cancel(&id).await.unwrap();
            })
        };
        assert_raised_at_next_poll(&client, &registry, id, StatusCode::CONFLICT, kind).await;
        canceler.await.unwrap();
        let status = registry.status(&id).await.unwrap();
        assert_eq!(status.exception.as_deref(), Some(exception), "{kind}");
        assert!(status.job_canceling);
    }

    // Canceled while queued behind another job (the registry runs one at a time).
    let blocker = client.start(json!({"concreteType": "test.Stubborn"})).await;
    let queued = client.start(json!({"concreteType": "test.Unit"})).await;
    assert!(registry
        .status(&queued)
        .await
        .unwrap()
        .progress_message
        .is_some_and(|m| m.starts_with("Queued")));
    let canceler = {
        let registry = registry.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(2)).await;
            registry.cancel(&queued).await.unwrap();
        })
    };
    assert_raised_at_next_poll(&client, &registry, queued, StatusCode::CONFLICT, "queued").await;
    canceler.await.unwrap();
    registry.cancel(&blocker).await.unwrap();
    registry.wait(&blocker).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_runtime_went_away_reaches_the_client_as_an_error() {
    // The jobs run on a runtime of their own, which goes away under a running job.
    let jobs_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = JobRegistry::builder()
        .runtime(jobs_runtime.handle().clone())
        .build();
    let client = SynapseClient::new(serve(api(&registry).into_router()).await);
    let id = client.start(json!({"concreteType": "test.Stubborn"})).await;
    let dropper = tokio::spawn(async move {
        sleep(Duration::from_secs(5)).await;
        jobs_runtime.shutdown_background();
    });
    assert_raised_at_next_poll(&client, &registry, id, StatusCode::BAD_REQUEST, "aborted").await;
    dropper.await.unwrap();
    let status = registry.status(&id).await.unwrap();
    assert_eq!(status.exception.as_deref(), Some(exception::ABORTED));
}

#[tokio::test(start_paused = true)]
async fn completed_jobs_reach_the_client_as_objects() {
    let registry = JobRegistry::new();
    let client = SynapseClient::new(serve(api(&registry).into_router()).await);

    let steps = client.start(json!({"concreteType": "test.Steps"})).await;
    let started = Instant::now();
    let trace = client.wait_for_async(steps).await;
    assert_eq!(
        trace.outcome,
        Outcome::Complete(json!({"concreteType": "test.StepsResponse", "steps": 5}))
    );
    assert_eq!(trace.retries, 0);
    // Five steps of 30 s: the client's sleep grows from 0.2 s, and starts over at each step.
    assert!(trace.requests.len() > 5 * 10, "{}", trace.requests.len());
    assert!(started.elapsed() < Duration::from_secs(5 * 30 + 20));

    let unit = client.start(json!({"concreteType": "test.Unit"})).await;
    let trace = client.wait_for_async(unit).await;
    assert_eq!(
        trace.outcome,
        Outcome::Complete(json!({"concreteType": "asyncjobs.EmptyResponse"}))
    );
}

#[tokio::test(start_paused = true)]
async fn the_servers_own_trouble_is_a_5xx_the_client_waits_through() {
    let registry = JobRegistry::new();
    // The service cannot tell users apart for three minutes (its token service is down).
    let down = Arc::new(AtomicBool::new(false));
    let identify = {
        let down = down.clone();
        move |request: &Parts| {
            if down.load(Ordering::SeqCst) {
                return Err(Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "identity service unavailable",
                ));
            }
            request
                .headers
                .get("X-User-Id")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .ok_or_else(|| Rejection::unauthorized("who is asking?"))
        }
    };
    let router = AsyncJobApi::new(registry.clone(), identify)
        .job("test.Unit", |_: Value, _job: JobHandle| async move {
            sleep(Duration::from_secs(60)).await;
            Ok::<(), std::io::Error>(())
        })
        .into_router();
    let client = SynapseClient::new(serve(router).await);
    let id = client.start(json!({"concreteType": "test.Unit"})).await;
    let outage = {
        let down = down.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(10)).await;
            down.store(true, Ordering::SeqCst);
            sleep(Duration::from_secs(180)).await;
            down.store(false, Ordering::SeqCst);
        })
    };
    let trace = client.wait_for_async(id).await;
    outage.await.unwrap();
    assert_eq!(
        trace.outcome,
        Outcome::Complete(json!({"concreteType": "asyncjobs.EmptyResponse"}))
    );
    assert!(trace.retries > 10, "{}", trace.retries);
    assert!(trace
        .requests
        .iter()
        .any(|(_, status)| *status == StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test(start_paused = true)]
async fn a_failure_mapped_to_a_5xx_keeps_the_client_waiting_for_nothing() {
    // What the default avoids: the same failure, answered 500, is retried for 20 minutes.
    let registry = JobRegistry::new();
    let router = api(&registry)
        .exception_status(exception::PANICKED, StatusCode::INTERNAL_SERVER_ERROR)
        .into_router();
    let client = SynapseClient::new(serve(router).await);
    let id = client.start(json!({"concreteType": "test.Panic"})).await;
    registry.wait(&id).await.unwrap();
    let asked = Instant::now();
    let trace = client.wait_for_async(id).await;
    assert_eq!(
        trace.outcome,
        Outcome::Raised(
            StatusCode::INTERNAL_SERVER_ERROR,
            "index out of bounds".into()
        )
    );
    assert!(asked.elapsed() >= RETRY_FOR, "{:?}", asked.elapsed());
    assert!(trace.retries > 100, "{}", trace.retries);
}
