//! The HTTP front, served on a loopback port and driven by a real HTTP client: every endpoint and
//! error, areas, bearer tokens, the generic launch, listing, etags and `304`, long-polling and
//! concurrent clients. The event stream is in `http_events.rs`, a Synapse-style client in
//! `http_synapse_client.rs`.
#![cfg(feature = "http")]

use std::sync::Arc;
use std::time::Duration;

use asyncjobs::http::{
    Area, AsyncJobApi, BearerToken, Rejection, UserHeader, EMPTY_RESPONSE_TYPE, JOB_REUSED,
};
use asyncjobs::{exception, AsynchJobState, JobHandle, JobId, JobRegistry, JobRequest};
use axum::http::{header, StatusCode};
use axum::Router;
use reqwest::{Client, RequestBuilder, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::{sleep, Instant};

const ALICE: u64 = 3_350_396;
const BOB: u64 = 273_950;

/// The longest a request may wait in these tests.
const MAX_WAIT: Duration = Duration::from_millis(300);
const MAX_BODY: usize = 4096;

/// A server on a loopback port, the registry behind it, and a client.
struct Fixture {
    base: String,
    http: Client,
    registry: JobRegistry,
    /// Each notification lets one `test.Gated` job take one step.
    gate: Arc<Notify>,
}

/// The body of a `test.Steps` request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Steps {
    steps: u64,
    step_ms: u64,
}

/// An error type of the application's own, mapped to 404 in these tests.
#[derive(Debug)]
struct NotFound;

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no such table")
    }
}

impl std::error::Error for NotFound {}

fn api(registry: &JobRegistry, gate: &Arc<Notify>) -> AsyncJobApi {
    let gate = gate.clone();
    AsyncJobApi::new(registry.clone(), UserHeader::new("X-User-Id"))
        .max_wait(MAX_WAIT)
        .max_body_bytes(MAX_BODY)
        .exception_status(std::any::type_name::<NotFound>(), StatusCode::NOT_FOUND)
        // Takes `steps` steps of `stepMs` each, reporting progress before each.
        .job("test.Steps", |body: Steps, job: JobHandle| async move {
            for done in 0..body.steps {
                job.set_progress(
                    done,
                    body.steps,
                    format!("step {} of {}", done + 1, body.steps),
                );
                sleep(Duration::from_millis(body.step_ms)).await;
            }
            Ok::<_, std::io::Error>(
                json!({"concreteType": "test.StepsResponse", "steps": body.steps}),
            )
        })
        // Takes one step of `steps` each time the test opens the gate; ignores cancellation.
        .job("test.Gated", move |body: Value, job: JobHandle| {
            let gate = gate.clone();
            async move {
                let steps = body["steps"].as_u64().unwrap_or(1);
                for done in 1..=steps {
                    gate.notified().await;
                    job.set_progress(done, steps, format!("step {done} of {steps}"));
                }
                Ok::<_, std::io::Error>(
                    json!({"concreteType": "test.GatedResponse", "steps": steps}),
                )
            }
        })
        .job(
            "test.UntilCanceled",
            |_: Value, job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("stopped on request"))
            },
        )
        .job("test.Fail", |body: Value, _job: JobHandle| async move {
            let message = body["message"].as_str().unwrap_or("failed").to_owned();
            Err::<(), _>(std::io::Error::other(message))
        })
        .job("test.NotFound", |_: Value, _job: JobHandle| async move {
            Err::<(), _>(NotFound)
        })
        .job("test.Panic", |_: Value, _job: JobHandle| async move {
            if true {
                panic!("the job fell over");
            }
            Ok::<(), std::io::Error>(())
        })
        .job("test.Unit", |_: Value, _job: JobHandle| async move {
            Ok::<(), std::io::Error>(())
        })
        // JSON object keys are strings: this result does not serialize.
        .job(
            "test.Unserializable",
            |_: Value, _job: JobHandle| async move {
                Ok::<_, std::io::Error>(std::collections::HashMap::from([((1, 2), 3)]))
            },
        )
        .job_with(
            "test.Limited",
            |request: JobRequest| request.time_limit(Duration::from_millis(50)),
            |_: Value, job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("gave up"))
            },
        )
        .job_with(
            "test.Query",
            JobRequest::cacheable,
            |query: Value, _job: JobHandle| async move {
                Ok::<_, std::io::Error>(json!({"concreteType": "test.QueryResult", "query": query}))
            },
        )
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

async fn fixture() -> Fixture {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_millis(100))
        .build();
    let gate = Arc::new(Notify::new());
    let base = serve(api(&registry, &gate).into_router()).await;
    Fixture {
        base,
        http: client(),
        registry,
        gate,
    }
}

impl Fixture {
    fn get(&self, user: u64, path: &str) -> RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .header("X-User-Id", user.to_string())
    }

    fn post(&self, user: u64, path: &str) -> RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header("X-User-Id", user.to_string())
    }

    async fn start(&self, user: u64, body: Value) -> String {
        let response = self
            .post(user, "/async/start")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{body}");
        let token = response.json::<Value>().await.unwrap();
        token["token"].as_str().unwrap().to_owned()
    }

    async fn finished(&self, token: &str) -> asyncjobs::AsynchronousJobStatus {
        let id: JobId = token.parse().unwrap();
        self.registry.wait(&id).await.unwrap()
    }
}

fn etag_header(response: &Response) -> String {
    response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned()
}

fn assert_no_store(response: &Response) {
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
}

/// Asserts a refusal: this status, and a JSON `{"reason": …}` body; returns the reason.
async fn refused(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.is_empty(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    reason
}

#[tokio::test]
async fn start_then_get_follows_the_job_to_its_response() {
    let f = fixture().await;
    let response = f
        .post(ALICE, "/async/start")
        .json(&json!({"concreteType": "test.Gated", "steps": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token: Value = response.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    assert!(token.bytes().all(|b| b.is_ascii_digit()), "{token}");

    // PROCESSING: 202 and the whole status, with its etag.
    let response = f
        .get(ALICE, &format!("/async/get/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_no_store(&response);
    let etag = etag_header(&response);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["jobId"], token.as_str());
    assert_eq!(status["jobState"], "PROCESSING");
    assert_eq!(status["startedByUserId"], ALICE);
    assert_eq!(status["requestBody"]["concreteType"], "test.Gated");
    assert_eq!(etag, format!("\"{}\"", status["etag"].as_str().unwrap()));

    f.gate.notify_one();
    let done = loop {
        let response = f
            .get(ALICE, &format!("/async/get/{token}"))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::ACCEPTED {
            break response;
        }
        f.gate.notify_one();
        sleep(Duration::from_millis(5)).await;
    };
    // COMPLETE: 200 and the response body alone.
    assert_eq!(done.status(), StatusCode::OK);
    assert_no_store(&done);
    let final_status = f.finished(&token).await;
    assert_eq!(etag_header(&done), format!("\"{}\"", final_status.etag));
    let body: Value = done.json().await.unwrap();
    assert_eq!(
        body,
        json!({"concreteType": "test.GatedResponse", "steps": 2})
    );
}

#[tokio::test]
async fn the_status_endpoint_answers_in_every_state() {
    let f = fixture().await;
    let running = f.start(ALICE, json!({"concreteType": "test.Gated"})).await;
    let failing = f
        .start(
            ALICE,
            json!({"concreteType": "test.Fail", "message": "disk full"}),
        )
        .await;

    let response = f
        .get(ALICE, &format!("/asynchronous/job/{running}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_no_store(&response);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["jobState"], "PROCESSING");

    f.gate.notify_one();
    f.finished(&running).await;
    let status: Value = f
        .get(ALICE, &format!("/asynchronous/job/{running}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["jobState"], "COMPLETE");
    assert_eq!(status["responseBody"]["concreteType"], "test.GatedResponse");
    assert_eq!(status["progressMessage"], "Complete");

    f.finished(&failing).await;
    let response = f
        .get(ALICE, &format!("/asynchronous/job/{failing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["jobState"], "FAILED");
    assert_eq!(status["errorMessage"], "disk full");
    assert_eq!(status["exception"], "std::io::error::Error");
}

#[tokio::test]
async fn every_failed_job_answers_a_4xx_with_its_error_message() {
    let f = fixture().await;
    // None is a 5xx: a client retries those, and a FAILED status never changes.
    let cases = [
        (
            json!({"concreteType": "test.Fail", "message": "bad column"}),
            "std::io::error::Error",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"concreteType": "test.NotFound"}),
            std::any::type_name::<NotFound>(),
            StatusCode::NOT_FOUND, // mapped by the application
        ),
        (
            json!({"concreteType": "test.Panic"}),
            exception::PANICKED,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"concreteType": "test.Limited"}),
            exception::TIMED_OUT,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"concreteType": "test.Unserializable"}),
            exception::RESPONSE_NOT_SERIALIZABLE,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, exception, expected) in cases {
        let token = f.start(ALICE, body.clone()).await;
        let status = f.finished(&token).await;
        assert_eq!(status.job_state, AsynchJobState::Failed);
        assert_eq!(status.exception.as_deref(), Some(exception), "{body}");
        let response = f
            .get(ALICE, &format!("/async/get/{token}"))
            .send()
            .await
            .unwrap();
        assert_no_store(&response);
        let etag = etag_header(&response);
        assert_eq!(etag, format!("\"{}\"", status.etag));
        let reason = refused(response, expected).await;
        assert_eq!(
            Some(reason.as_str()),
            status.error_message.as_deref(),
            "{body}"
        );
    }

    // Canceled: stopped by the registry after the grace, or stopping with its own error.
    for kind in ["test.Gated", "test.UntilCanceled"] {
        let token = f.start(ALICE, json!({ "concreteType": kind })).await;
        let response = f
            .post(ALICE, &format!("/asynchronous/job/{token}/cancel"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let status = f.finished(&token).await;
        assert!(status.job_canceling);
        let expected_exception = if kind == "test.Gated" {
            exception::CANCELED
        } else {
            "std::io::error::Error"
        };
        assert_eq!(status.exception.as_deref(), Some(expected_exception));
        let response = f
            .get(ALICE, &format!("/async/get/{token}"))
            .send()
            .await
            .unwrap();
        refused(response, StatusCode::CONFLICT).await;
    }
}

#[tokio::test]
async fn failure_statuses_are_configurable() {
    let registry = JobRegistry::new();
    let gate = Arc::new(Notify::new());
    let router = api(&registry, &gate)
        .failed_status(StatusCode::UNPROCESSABLE_ENTITY)
        .canceled_status(StatusCode::GONE)
        .exception_status(exception::TIMED_OUT, StatusCode::REQUEST_TIMEOUT)
        .into_router();
    let f = Fixture {
        base: serve(router).await,
        http: client(),
        registry,
        gate,
    };
    let cases = [
        ("test.Fail", StatusCode::UNPROCESSABLE_ENTITY),
        ("test.Limited", StatusCode::REQUEST_TIMEOUT),
        ("test.NotFound", StatusCode::NOT_FOUND),
    ];
    for (kind, expected) in cases {
        let token = f.start(BOB, json!({ "concreteType": kind })).await;
        f.finished(&token).await;
        let response = f
            .get(BOB, &format!("/async/get/{token}"))
            .send()
            .await
            .unwrap();
        refused(response, expected).await;
    }
    let token = f
        .start(BOB, json!({"concreteType": "test.UntilCanceled"}))
        .await;
    f.registry.cancel(&token.parse().unwrap()).await.unwrap();
    f.finished(&token).await;
    let response = f
        .get(BOB, &format!("/async/get/{token}"))
        .send()
        .await
        .unwrap();
    refused(response, StatusCode::GONE).await;
}

#[tokio::test]
async fn a_job_without_a_result_completes_with_an_empty_response_object() {
    let f = fixture().await;
    let token = f.start(ALICE, json!({"concreteType": "test.Unit"})).await;
    let done = f.finished(&token).await;
    assert_eq!(done.response_body, None, "the status has no responseBody");
    let response = f
        .get(ALICE, &format!("/async/get/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "concreteType": EMPTY_RESPONSE_TYPE }));
    assert_eq!(EMPTY_RESPONSE_TYPE, "asyncjobs.EmptyResponse");
}

#[tokio::test]
async fn cancel_answers_202_while_running_and_200_once_finished() {
    let f = fixture().await;
    let token = f.start(ALICE, json!({"concreteType": "test.Gated"})).await;
    let response = f
        .post(ALICE, &format!("/asynchronous/job/{token}/cancel"))
        .send()
        .await
        .unwrap();
    // The job ignores the cancel: it runs on through the grace.
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_no_store(&response);
    let etag = etag_header(&response);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["jobState"], "PROCESSING");
    assert_eq!(status["jobCanceling"], true);
    assert_eq!(etag, format!("\"{}\"", status["etag"].as_str().unwrap()));

    let done = f.finished(&token).await;
    assert_eq!(done.exception.as_deref(), Some(exception::CANCELED));
    // Synapse's cancel is a GET; both methods work, and a finished job answers 200.
    for response in [
        f.get(ALICE, &format!("/asynchronous/job/{token}/cancel")),
        f.post(ALICE, &format!("/asynchronous/job/{token}/cancel")),
    ] {
        let response = response.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["jobState"], "FAILED");
        assert_eq!(status["etag"], done.etag.to_string());
    }
}

#[tokio::test]
async fn errors_are_json_reasons_with_the_right_status() {
    let f = fixture().await;
    let alices = f.start(ALICE, json!({"concreteType": "test.Gated"})).await;
    let unknown = "12345";
    let job_paths = |id: &str| {
        [
            format!("/async/get/{id}"),
            format!("/asynchronous/job/{id}"),
            format!("/asynchronous/job/{id}/cancel"),
        ]
    };

    for path in job_paths(unknown) {
        let reason = refused(
            f.get(ALICE, &path).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(reason.contains(unknown), "{reason}");
    }
    for bad in ["abc", "-1", "1.5", "123456789012345678901", "%20"] {
        for path in job_paths(bad) {
            let response = f.get(ALICE, &path).send().await.unwrap();
            refused(response, StatusCode::BAD_REQUEST).await;
        }
    }
    for path in job_paths(&alices) {
        refused(
            f.get(BOB, &path).send().await.unwrap(),
            StatusCode::FORBIDDEN,
        )
        .await;
        let response = f.post(BOB, &path).send().await.unwrap();
        if path.ends_with("/cancel") {
            refused(response, StatusCode::FORBIDDEN).await;
        }
    }
    let status = f.registry.status(&alices.parse().unwrap()).await.unwrap();
    assert!(!status.job_canceling, "another user's cancel did nothing");

    // Bodies that start nothing.
    let bodies: [(&str, &[u8], StatusCode); 7] = [
        (
            "unknown concreteType",
            br#"{"concreteType": "test.Nope"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "no concreteType",
            br#"{"steps": 1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "concreteType not a string",
            br#"{"concreteType": 7}"#,
            StatusCode::BAD_REQUEST,
        ),
        ("not an object", b"[1, 2]", StatusCode::BAD_REQUEST),
        (
            "malformed JSON",
            b"{\"concreteType\": ",
            StatusCode::BAD_REQUEST,
        ),
        ("empty", b"", StatusCode::BAD_REQUEST),
        (
            "not what the kind expects",
            br#"{"concreteType": "test.Steps", "steps": "many"}"#,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, body, expected) in bodies {
        let response = f
            .post(ALICE, "/async/start")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let reason = refused(response, expected).await;
        println!("{what}: {reason}");
        if what == "unknown concreteType" {
            assert!(
                reason.contains("test.Nope") && reason.contains("test.Steps"),
                "{reason}"
            );
        }
    }
    let huge = json!({"concreteType": "test.Fail", "message": "x".repeat(MAX_BODY)});
    let response = f
        .post(ALICE, "/async/start")
        .json(&huge)
        .send()
        .await
        .unwrap();
    refused(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        f.registry.local().len(),
        1,
        "no refused request started a job"
    );

    // Who is asking.
    let anonymous = f
        .http
        .get(format!("{}/asynchronous/job/{alices}", f.base))
        .send()
        .await
        .unwrap();
    refused(anonymous, StatusCode::UNAUTHORIZED).await;
    for bad in ["alice", "-3", ""] {
        let response = f
            .http
            .get(format!("{}/asynchronous/job/{alices}", f.base))
            .header("x-user-id", bad)
            .send()
            .await
            .unwrap();
        refused(response, StatusCode::BAD_REQUEST).await;
    }
    let response = f
        .get(ALICE, &format!("/asynchronous/job/{alices}?wait=soon"))
        .send()
        .await
        .unwrap();
    refused(response, StatusCode::BAD_REQUEST).await;

    // A registry that is shut down starts nothing, and still answers for its jobs.
    f.gate.notify_one();
    f.registry.shutdown(Duration::from_secs(1)).await;
    let response = f
        .post(ALICE, "/async/start")
        .json(&json!({"concreteType": "test.Unit"}))
        .send()
        .await
        .unwrap();
    refused(response, StatusCode::SERVICE_UNAVAILABLE).await;
    let response = f
        .get(ALICE, &format!("/asynchronous/job/{alices}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_typed_kind_refuses_a_body_of_another_shape_naming_the_field() {
    let f = fixture().await;
    for (body, reason) in [
        (
            json!({"concreteType": "test.Steps", "steps": "many", "stepMs": 1}),
            r#"request body is not a valid test.Steps: steps: invalid type: string "many", expected u64"#,
        ),
        (
            json!({"concreteType": "test.Steps", "steps": 1}),
            "request body is not a valid test.Steps: missing field `stepMs`",
        ),
    ] {
        let response = f
            .post(ALICE, "/async/start")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(response, StatusCode::BAD_REQUEST).await, reason);
    }
    assert!(f.registry.local().is_empty());
}

#[tokio::test]
async fn an_identity_header_sent_twice_is_refused_as_ambiguous() {
    let f = fixture().await;
    let alices = f.start(ALICE, json!({"concreteType": "test.Gated"})).await;
    // Behind a proxy that appends its header to the one the client sent, the client's comes
    // first: whichever is believed, someone chose their own user.
    for (first, second) in [(ALICE, BOB), (BOB, ALICE), (ALICE, ALICE)] {
        let twice = |request: RequestBuilder| {
            request
                .header("X-User-Id", first.to_string())
                .header("X-User-Id", second.to_string())
        };
        let requests = [
            f.http.get(format!("{}/asynchronous/job/{alices}", f.base)),
            f.http.get(format!("{}/async/get/{alices}", f.base)),
            f.http
                .post(format!("{}/asynchronous/job/{alices}/cancel", f.base)),
            f.http
                .post(format!("{}/async/start", f.base))
                .json(&json!({"concreteType": "test.Unit"})),
        ];
        for request in requests {
            let response = twice(request).send().await.unwrap();
            let reason = refused(response, StatusCode::BAD_REQUEST).await;
            assert!(reason.contains("more than once"), "{reason}");
        }
    }
    assert_eq!(
        f.registry.local().len(),
        1,
        "no ambiguous request started a job"
    );
    let status = f.registry.status(&alices.parse().unwrap()).await.unwrap();
    assert!(!status.job_canceling, "no ambiguous request canceled");
}

#[tokio::test]
async fn a_body_announced_larger_than_the_limit_is_refused_with_413_before_it_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = fixture().await;
    let addr = f.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // 100 GB announced, one byte sent: only the headers can tell the answer.
    let head = format!(
        "POST /async/start HTTP/1.1\r\nHost: {addr}\r\nX-User-Id: {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{{"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), read_answer(&mut socket))
        .await
        .expect("no answer within 2 s: the server is waiting for the announced body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"reason\""), "{answer}");
    assert!(f.registry.local().is_empty());
    // Nor is the rest of the body waited for: the server lets the connection go (end of stream,
    // or a reset).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is still held");
}

/// Reads one HTTP/1.1 answer with a `Content-Length` from a raw socket, without waiting for the
/// server to close it.
async fn read_answer(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;

    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    if name.eq_ignore_ascii_case("content-length") {
                        value.trim().parse::<usize>().ok()
                    } else {
                        None
                    }
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
        let read = socket.read(&mut buf).await.unwrap();
        assert!(read > 0, "closed before a whole answer: {text}");
        answer.extend_from_slice(&buf[..read]);
    }
}

#[tokio::test]
async fn an_oversized_body_of_unknown_length_is_refused_with_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = fixture().await;
    let addr = f.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /async/start HTTP/1.1\r\nHost: {addr}\r\nX-User-Id: {ALICE}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // No length announced: the limit has to be found while reading.
    let chunk = "x".repeat(1024);
    for _ in 0..(MAX_BODY / 1024 + 2) {
        let sent = socket
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await;
        if sent.is_err() {
            break; // the server answered and closed: fine
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"reason\""), "{answer}");
    assert!(f.registry.local().is_empty());
}

#[tokio::test]
async fn a_custom_identify_user_answers_with_its_own_rejection() {
    let registry = JobRegistry::new();
    let router = AsyncJobApi::new(
        registry,
        |request: &axum::http::request::Parts| match request.headers.get(header::AUTHORIZATION) {
            Some(value) if value == "Bearer alice" => Ok(ALICE),
            Some(_) => Err(Rejection::forbidden("unknown token")),
            None => Err(Rejection::unauthorized("sign in first")),
        },
    )
    .job("test.Unit", |_: Value, _job: JobHandle| async move {
        Ok::<(), std::io::Error>(())
    })
    .into_router();
    let base = serve(router).await;
    let http = client();
    let start = |auth: Option<&str>| {
        let mut request = http
            .post(format!("{base}/async/start"))
            .json(&json!({"concreteType": "test.Unit"}));
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.send()
    };
    let reason = refused(start(None).await.unwrap(), StatusCode::UNAUTHORIZED).await;
    assert_eq!(reason, "sign in first");
    refused(
        start(Some("Bearer eve")).await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        start(Some("Bearer alice")).await.unwrap().status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn etags_answer_if_none_match_with_304() {
    let f = fixture().await;
    let token = f
        .start(ALICE, json!({"concreteType": "test.Gated", "steps": 2}))
        .await;
    let path = format!("/asynchronous/job/{token}");
    let first = f.get(ALICE, &path).send().await.unwrap();
    let etag = etag_header(&first);
    let bare = etag.trim_matches('"').to_owned();

    for request in [
        f.get(ALICE, &path).header(header::IF_NONE_MATCH, &etag),
        f.get(ALICE, &path)
            .header(header::IF_NONE_MATCH, format!("W/{etag}")),
        f.get(ALICE, &path)
            .header(header::IF_NONE_MATCH, format!("\"nope\", {etag}")),
        f.get(ALICE, &path).header(header::IF_NONE_MATCH, "*"),
        f.get(ALICE, &format!("{path}?etag={bare}")),
        f.get(ALICE, &format!("/async/get/{token}"))
            .header(header::IF_NONE_MATCH, &etag),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(etag_header(&response), etag);
        assert_no_store(&response);
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let other = f
        .get(ALICE, &path)
        .header(header::IF_NONE_MATCH, "\"999\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);

    // Progress changes the etag: the old one no longer matches.
    f.gate.notify_one();
    let id: JobId = token.parse().unwrap();
    f.registry
        .wait_for_change(&id, &bare.parse().unwrap())
        .await
        .unwrap();
    let response = f
        .get(ALICE, &path)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(etag_header(&response), etag);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["progressCurrent"], 1);
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_the_status_changes() {
    let f = fixture().await;
    let token = f
        .start(ALICE, json!({"concreteType": "test.Gated", "steps": 2}))
        .await;
    let path = format!("/asynchronous/job/{token}?wait=10");
    let etag = etag_header(&f.get(ALICE, &path).send().await.unwrap());

    let held = tokio::spawn(
        f.get(ALICE, &path)
            .header(header::IF_NONE_MATCH, &etag)
            .send(),
    );
    sleep(Duration::from_millis(100)).await;
    assert!(!held.is_finished(), "held while nothing changes");
    let opened = Instant::now();
    f.gate.notify_one();
    let response = held.await.unwrap().unwrap();
    assert!(
        opened.elapsed() < Duration::from_secs(1),
        "{:?}",
        opened.elapsed()
    );
    assert_eq!(response.status(), StatusCode::OK);
    let new_etag = etag_header(&response);
    assert_ne!(new_etag, etag);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["progressCurrent"], 1);
    assert_eq!(status["progressMessage"], "step 1 of 2");

    // async/get long-polls too, to the end.
    let held = tokio::spawn(
        f.get(ALICE, &format!("/async/get/{token}?wait=10"))
            .header(header::IF_NONE_MATCH, &new_etag)
            .send(),
    );
    sleep(Duration::from_millis(50)).await;
    f.gate.notify_one();
    let response = held.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["concreteType"], "test.GatedResponse");
}

#[tokio::test]
async fn a_long_poll_without_change_times_out_with_304_within_the_bound() {
    let f = fixture().await;
    let token = f.start(ALICE, json!({"concreteType": "test.Gated"})).await;
    let path = format!("/asynchronous/job/{token}");
    let etag = etag_header(&f.get(ALICE, &path).send().await.unwrap());

    for (wait, at_least) in [("0.15", Duration::from_millis(150)), ("3600", MAX_WAIT)] {
        let asked = Instant::now();
        let response = f
            .get(ALICE, &format!("{path}?wait={wait}"))
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        let took = asked.elapsed();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "wait={wait}");
        assert_eq!(etag_header(&response), etag);
        assert!(took >= at_least, "wait={wait} took {took:?}");
        assert!(
            took < at_least + Duration::from_millis(500),
            "wait={wait} took {took:?}"
        );
    }

    // Without an etag there is nothing to wait for: the status, at once.
    let asked = Instant::now();
    let response = f
        .get(ALICE, &format!("{path}?wait=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(asked.elapsed() < MAX_WAIT);

    // A finished status never changes: a matching etag is answered 304 at once.
    f.gate.notify_one();
    let done = f.finished(&token).await;
    let asked = Instant::now();
    let response = f
        .get(ALICE, &format!("{path}?wait=10&etag={}", done.etag))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(asked.elapsed() < MAX_WAIT);
}

#[tokio::test]
async fn a_cacheable_kind_answers_an_equal_request_with_the_earlier_token() {
    let f = fixture().await;
    let query = json!({"concreteType": "test.Query", "sql": "select 1", "limit": 5});
    let first = f.start(ALICE, query.clone()).await;
    let reordered = json!({"limit": 5, "sql": "select 1", "concreteType": "test.Query"});
    // Still 201, as Synapse answers, and a header says so.
    let again = f
        .post(ALICE, "/async/start")
        .json(&reordered)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()[JOB_REUSED], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["token"], first.as_str());
    let fresh = f
        .post(ALICE, "/async/start")
        .json(&json!({"concreteType": "test.Query", "sql": "select 3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.headers()[JOB_REUSED], "false");
    assert_ne!(
        f.start(BOB, query.clone()).await,
        first,
        "never across users"
    );
    let other = json!({"concreteType": "test.Query", "sql": "select 2", "limit": 5});
    assert_ne!(f.start(ALICE, other).await, first);
    // Not cacheable: a new job each time.
    let unit = json!({"concreteType": "test.Unit"});
    assert_ne!(
        f.start(ALICE, unit.clone()).await,
        f.start(ALICE, unit).await
    );
}

/// A table query, at `/entity/{entityId}/table/query`: the entity comes from the path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TableQuery {
    entity_id: String,
    sql: String,
}

/// Its result, with its `concreteType` from serde.
#[derive(serde::Serialize)]
#[serde(
    tag = "concreteType",
    rename = "test.TableQueryResult",
    rename_all = "camelCase"
)]
struct TableQueryResult {
    entity_id: String,
    sql: String,
}

/// Three areas as a Synapse-style service has them (two with a path parameter), and the root.
fn areas_api(registry: &JobRegistry) -> AsyncJobApi {
    AsyncJobApi::new(registry.clone(), UserHeader::new("X-User-Id"))
        .area(Area::new("/entity/{entityId}/table/query").job_with(
            "test.TableQuery",
            JobRequest::cacheable,
            |query: TableQuery, _job: JobHandle| async move {
                Ok::<_, std::io::Error>(TableQueryResult {
                    entity_id: query.entity_id,
                    sql: query.sql,
                })
            },
        ))
        .area(Area::new("/entity/{entityId}/table/download/csv").job(
            "test.CsvDownload",
            |body: Value, _job: JobHandle| async move {
                Ok::<_, std::io::Error>(
                    json!({"concreteType": "test.CsvDownloadResult", "entityId": body["entityId"]}),
                )
            },
        ))
        .area(
            Area::new("/file/bulk").job("test.BulkDownload", |_: Value, _job: JobHandle| async {
                Ok::<_, std::io::Error>(json!({"concreteType": "test.BulkDownloadResult"}))
            }),
        )
        .job("test.Unit", |_: Value, _job: JobHandle| async {
            Ok::<(), std::io::Error>(())
        })
}

/// A fixture over [`areas_api`], merged into an application's router with a state of its own.
async fn areas_fixture() -> Fixture {
    #[derive(Clone)]
    struct AppState;
    let registry = JobRegistry::new();
    let app: Router = Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .merge(areas_api(&registry).into_router::<AppState>())
        .with_state(AppState);
    Fixture {
        base: serve(app).await,
        http: client(),
        registry,
        gate: Arc::new(Notify::new()),
    }
}

impl Fixture {
    /// Starts a job at `{area}/async/start`: its token, and whether it was reused.
    async fn start_at(&self, area: &str, body: &Value) -> (String, bool) {
        let response = self
            .post(ALICE, &format!("{area}/async/start"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{area} {body}");
        let reused = response.headers()[JOB_REUSED] == "true";
        let token: Value = response.json().await.unwrap();
        (token["token"].as_str().unwrap().to_owned(), reused)
    }
}

#[tokio::test]
async fn one_api_serves_many_areas_and_one_shared_job_set() {
    let f = areas_fixture().await;
    let query = json!({"concreteType": "test.TableQuery", "sql": "select 1"});
    let syn1 = "/entity/syn1/table/query";
    let (token, reused) = f.start_at(syn1, &query).await;
    assert!(!reused);
    // The path's entity is part of the request: in the job's body, and in the cache key.
    let status = f.finished(&token).await;
    assert_eq!(
        status.request_body.as_deref(),
        Some(&json!({"concreteType": "test.TableQuery", "sql": "select 1", "entityId": "syn1"}))
    );
    assert_eq!(f.start_at(syn1, &query).await, (token.clone(), true));
    let explicit =
        json!({"concreteType": "test.TableQuery", "sql": "select 1", "entityId": "syn1"});
    assert_eq!(f.start_at(syn1, &explicit).await, (token.clone(), true));
    let (other_table, reused) = f.start_at("/entity/syn2/table/query", &query).await;
    assert!(
        !reused,
        "the same query on another table is another request"
    );
    assert_ne!(other_table, token);
    let contradicting =
        json!({"concreteType": "test.TableQuery", "sql": "select 1", "entityId": "syn9"});
    let response = f
        .post(ALICE, &format!("{syn1}/async/start"))
        .json(&contradicting)
        .send()
        .await
        .unwrap();
    let reason = refused(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        reason,
        r#"entityId in the request body ("syn9") differs from the path's ("syn1")"#
    );

    // Each area answers for its own jobs.
    let response = f
        .get(ALICE, &format!("{syn1}/async/get/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"concreteType": "test.TableQueryResult", "entityId": "syn1", "sql": "select 1"})
    );
    for elsewhere in [
        "/entity/syn2/table/query",
        "/entity/syn1/table/download/csv",
        "/file/bulk",
        "",
    ] {
        let response = f
            .get(ALICE, &format!("{elsewhere}/async/get/{token}"))
            .send()
            .await
            .unwrap();
        let reason = refused(response, StatusCode::NOT_FOUND).await;
        assert_eq!(
            reason,
            format!(
                "job {token} was not started at this path; /asynchronous/job/{token} answers for it"
            ),
            "{elsewhere}"
        );
    }

    // A kind is started in its own area only, and the refusal says where.
    let csv = json!({"concreteType": "test.CsvDownload"});
    let response = f
        .post(ALICE, &format!("{syn1}/async/start"))
        .json(&csv)
        .send()
        .await
        .unwrap();
    let reason = refused(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        reason,
        "test.CsvDownload is not started here but at \
         /entity/{entityId}/table/download/csv/async/start; this endpoint starts: test.TableQuery"
    );
    let (csv_token, _) = f.start_at("/entity/syn3/table/download/csv", &csv).await;
    let (bulk_token, _) = f
        .start_at("/file/bulk", &json!({"concreteType": "test.BulkDownload"}))
        .await;
    let (root_token, _) = f.start_at("", &json!({"concreteType": "test.Unit"})).await;
    for (area, token, expected) in [
        (
            "/entity/syn3/table/download/csv",
            &csv_token,
            json!({"concreteType": "test.CsvDownloadResult", "entityId": "syn3"}),
        ),
        (
            "/file/bulk",
            &bulk_token,
            json!({"concreteType": "test.BulkDownloadResult"}),
        ),
        (
            "",
            &root_token,
            json!({ "concreteType": EMPTY_RESPONSE_TYPE }),
        ),
    ] {
        f.finished(token).await;
        let response = f
            .get(ALICE, &format!("{area}/async/get/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{area}");
        assert_eq!(response.json::<Value>().await.unwrap(), expected);
        // One shared set of /asynchronous/job endpoints answers for every area's jobs.
        let response = f
            .get(ALICE, &format!("/asynchronous/job/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let health = f.get(ALICE, "/health").send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn the_generic_launch_starts_a_kind_of_any_area_with_201_and_its_status() {
    let f = areas_fixture().await;
    let body = json!({"concreteType": "test.TableQuery", "entityId": "syn1", "sql": "select 2"});
    let response = f
        .post(ALICE, "/asynchronous/job")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_no_store(&response);
    assert_eq!(response.headers()[JOB_REUSED], "false");
    let etag = etag_header(&response);
    let status: Value = response.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", status["etag"].as_str().unwrap()));
    assert_eq!(status["startedByUserId"], ALICE);
    assert_eq!(status["requestBody"], body);
    assert!(
        ["PROCESSING", "COMPLETE"].contains(&status["jobState"].as_str().unwrap()),
        "{status}"
    );
    let id = status["jobId"].as_str().unwrap().to_owned();

    // Cacheable: the same request again is answered with the same job, 201 all the same.
    let response = f
        .post(ALICE, "/asynchronous/job")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[JOB_REUSED], "true");
    let again: Value = response.json().await.unwrap();
    assert_eq!(again["jobId"], id.as_str());
    // The same request through its area is the same request.
    let through_area = json!({"concreteType": "test.TableQuery", "sql": "select 2"});
    assert_eq!(
        f.start_at("/entity/syn1/table/query", &through_area).await,
        (id.clone(), true)
    );

    for (body, reason) in [
        (
            json!({"concreteType": "test.Nope"}),
            r#"unknown concreteType "test.Nope"; this service starts: test.BulkDownload, test.CsvDownload, test.TableQuery, test.Unit"#,
        ),
        (
            json!({"concreteType": "test.TableQuery", "sql": "select 3"}),
            "request body is not a valid test.TableQuery: missing field `entityId`",
        ),
        (
            json!([1, 2]),
            "request body must be a JSON object with a string concreteType",
        ),
    ] {
        let response = f
            .post(ALICE, "/asynchronous/job")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(response, StatusCode::BAD_REQUEST).await, reason);
    }
    assert_eq!(
        f.registry.local().len(),
        1,
        "no refused request started a job"
    );
}

#[tokio::test]
async fn bearer_tokens_map_to_users_through_the_applications_lookup() {
    let registry = JobRegistry::new();
    let auth = BearerToken::new(|token: String| async move {
        // As a token table in a database would answer: later.
        tokio::task::yield_now().await;
        match token.as_str() {
            "alice-t0ken" => Ok(Some(ALICE)),
            "bob-t0ken" => Ok(Some(BOB)),
            "unreachable" => Err(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token table unreachable",
            )),
            _ => Ok(None),
        }
    });
    let router = AsyncJobApi::new(registry.clone(), auth)
        .job("test.Unit", |_: Value, _job: JobHandle| async move {
            Ok::<(), std::io::Error>(())
        })
        .into_router();
    let base = serve(router).await;
    let http = client();
    let start = |authorization: &[&str]| {
        let mut request = http
            .post(format!("{base}/async/start"))
            .json(&json!({"concreteType": "test.Unit"}));
        for value in authorization {
            request = request.header(header::AUTHORIZATION, *value);
        }
        request.send()
    };

    for (authorization, status, reason, challenge) in [
        (&[][..], 401, "missing bearer token", Some("Bearer")),
        (
            &["Basic YWxpY2U6cHc="][..],
            401,
            "authorization is not a bearer token",
            Some("Bearer"),
        ),
        (
            &["Bearer"][..],
            401,
            "malformed bearer token",
            Some("Bearer"),
        ),
        (
            &["Bearer eve"][..],
            401,
            "unknown or expired bearer token",
            Some("Bearer error=\"invalid_token\""),
        ),
        (
            &["Bearer unreachable"][..],
            503,
            "token table unreachable",
            None,
        ),
        (
            &["Bearer alice-t0ken", "Bearer bob-t0ken"][..],
            400,
            "authorization header appeared more than once: the user is ambiguous",
            None,
        ),
    ] {
        let response = start(authorization).await.unwrap();
        assert_eq!(
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap()),
            challenge,
            "{authorization:?}"
        );
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(refused(response, status).await, reason, "{authorization:?}");
    }
    assert!(
        registry.local().is_empty(),
        "no refused request started a job"
    );

    let response = start(&["bearer alice-t0ken"]).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token: Value = response.json().await.unwrap();
    let token = token["token"].as_str().unwrap();
    let id: JobId = token.parse().unwrap();
    assert_eq!(
        registry.status(&id).await.unwrap().started_by_user_id,
        Some(ALICE)
    );
    let read = |auth: &'static str| {
        http.get(format!("{base}/asynchronous/job/{token}"))
            .header(header::AUTHORIZATION, auth)
            .send()
    };
    assert_eq!(
        read("Bearer alice-t0ken").await.unwrap().status(),
        StatusCode::OK
    );
    refused(
        read("Bearer bob-t0ken").await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test]
async fn cancel_can_be_post_only() {
    let registry = JobRegistry::new();
    let gate = Arc::new(Notify::new());
    let f = Fixture {
        base: serve(api(&registry, &gate).cancel_by_get(false).into_router()).await,
        http: client(),
        registry,
        gate,
    };
    let token = f.start(ALICE, json!({"concreteType": "test.Gated"})).await;
    let path = format!("/asynchronous/job/{token}/cancel");
    let response = f.get(ALICE, &path).send().await.unwrap();
    assert_eq!(response.headers()[header::ALLOW], "POST");
    let reason = refused(response, StatusCode::METHOD_NOT_ALLOWED).await;
    assert!(reason.contains("POST"), "{reason}");
    let id: JobId = token.parse().unwrap();
    assert!(!f.registry.status(&id).await.unwrap().job_canceling);
    let response = f.post(ALICE, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(f.registry.status(&id).await.unwrap().job_canceling);
}

/// A mistyped URL (404) or a method its path does not take (405) is refused as every other
/// error is: JSON `{"reason": …}`, with `Allow` on a 405; also with the router merged into an
/// application's.
#[tokio::test]
async fn unknown_paths_and_methods_are_refused_as_json() {
    let f = fixture().await;
    for path in [
        "/asynchronous/jobs",
        "/asynchronous/job/1/cancle",
        "/async/strat",
        "/",
    ] {
        let response = f.get(ALICE, path).send().await.unwrap();
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let reason = refused(response, StatusCode::NOT_FOUND).await;
        assert!(reason.contains(path), "{path}: {reason}");
    }
    let wrong_method = |f: &Fixture, method: reqwest::Method, path: &str| {
        f.http
            .request(method, format!("{}{path}", f.base))
            .header("X-User-Id", ALICE.to_string())
            .send()
    };
    for (method, path, allowed) in [
        (reqwest::Method::DELETE, "/asynchronous/job/1", "GET"),
        (reqwest::Method::PUT, "/asynchronous/job", "POST"),
        (reqwest::Method::POST, "/asynchronous/job/events", "GET"),
        (
            reqwest::Method::DELETE,
            "/asynchronous/job/1/cancel",
            "POST",
        ),
        (reqwest::Method::GET, "/async/start", "POST"),
        (reqwest::Method::POST, "/async/get/1", "GET"),
    ] {
        let response = wrong_method(&f, method.clone(), path).await.unwrap();
        let allow = response.headers()[header::ALLOW]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            allow.split(',').any(|m| m == allowed),
            "{method} {path}: Allow {allow}"
        );
        let reason = refused(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(
            reason.contains(method.as_str()) && reason.contains(path),
            "{reason}"
        );
    }

    // Merged into an application's router, which has no fallback of its own: the
    // application's routes still answer, unknown paths are refused as JSON.
    let f = areas_fixture().await;
    let health = f.get(ALICE, "/health").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    refused(
        f.get(ALICE, "/file/bulk/async/strat").send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let response = f.get(ALICE, "/file/bulk/async/start").send().await.unwrap();
    assert_eq!(response.headers()[header::ALLOW], "POST");
    refused(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

/// One page of `GET /asynchronous/job`: the job ids, the next page's token and the counts.
async fn page(f: &Fixture, user: u64, query: &str) -> (Vec<String>, Option<String>, Value) {
    let response = f
        .get(user, &format!("/asynchronous/job{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    assert_no_store(&response);
    let list: Value = response.json().await.unwrap();
    let ids = list["page"]
        .as_array()
        .unwrap()
        .iter()
        .map(|status| {
            assert_eq!(status["startedByUserId"], user, "only the caller's jobs");
            status["jobId"].as_str().unwrap().to_owned()
        })
        .collect();
    let next = list["nextPageToken"].as_str().map(str::to_owned);
    (ids, next, list["counts"].clone())
}

/// Names are not status fields (those are Synapse's): the list carries them beside the page, for
/// the page's jobs that have one, and only the caller's.
#[tokio::test]
async fn the_list_names_the_callers_named_jobs() {
    let f = fixture().await;
    let named = f
        .registry
        .as_user(ALICE)
        .spawn(
            JobRequest::new(json!({"concreteType": "test.Export"})).name("weekly export"),
            |_job| async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap();
    let unnamed = f
        .registry
        .as_user(ALICE)
        .spawn(
            JobRequest::new(json!({"concreteType": "test.Export"})),
            |_job| async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap();
    let bobs = f
        .registry
        .as_user(BOB)
        .spawn(
            JobRequest::new(json!({"concreteType": "test.Export"})).name("bob's export"),
            |_job| async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap();

    let list: Value = f
        .get(ALICE, "/asynchronous/job")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["names"],
        json!({named.to_string(): "weekly export"}),
        "{list}"
    );
    let ids: Vec<&str> = list["page"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [unnamed.to_string(), named.to_string()]);
    // Statuses keep Synapse's fields: no name among them.
    assert!(list["page"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s.get("name").is_none()));
    // A page without named jobs has no `names` at all.
    let list: Value = f
        .get(ALICE, "/asynchronous/job?limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.get("names").is_none(), "{list}");
    let list: Value = f
        .get(BOB, "/asynchronous/job")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["names"], json!({bobs.to_string(): "bob's export"}));
}

#[tokio::test]
async fn the_list_pages_the_callers_jobs_newest_first_with_filters_and_counts() {
    let f = fixture().await;
    let mut started = Vec::new();
    for kind in [
        "test.Gated",
        "test.Unit",
        "test.Gated",
        "test.Fail",
        "test.Unit",
        "test.Gated",
    ] {
        let token = f.start(ALICE, json!({ "concreteType": kind })).await;
        if kind != "test.Gated" {
            f.finished(&token).await;
        }
        started.push((token, kind));
        f.start(BOB, json!({"concreteType": "test.Unit"})).await;
    }
    let newest_first: Vec<String> = started.iter().rev().map(|(t, _)| t.clone()).collect();
    let of = |kind: &str| -> Vec<String> {
        started
            .iter()
            .rev()
            .filter(|(_, k)| *k == kind)
            .map(|(t, _)| t.clone())
            .collect()
    };
    let all_counts = json!({"PROCESSING": 3, "COMPLETE": 2, "FAILED": 1});

    let (ids, next, counts) = page(&f, ALICE, "").await;
    assert_eq!(
        (ids, next, counts),
        (newest_first.clone(), None, all_counts.clone())
    );

    // Pages of 4: the second picks up where the first stopped, also after a new job started.
    let (first, next, _) = page(&f, ALICE, "?limit=4").await;
    assert_eq!(first, newest_first[..4]);
    let next = next.expect("a second page");
    let newer = f.start(ALICE, json!({"concreteType": "test.Gated"})).await;
    let (second, after, counts) = page(&f, ALICE, &format!("?limit=4&nextPageToken={next}")).await;
    assert_eq!(second, newest_first[4..]);
    assert_eq!(after, None);
    assert_eq!(counts, json!({"PROCESSING": 4, "COMPLETE": 2, "FAILED": 1}));

    // By state: the counts stay those of every state (a UI's tabs).
    let processing: Vec<String> = std::iter::once(newer).chain(of("test.Gated")).collect();
    let (ids, next, _) = page(&f, ALICE, "?jobState=PROCESSING&limit=3").await;
    assert_eq!(ids, processing[..3]);
    let (ids, next, _) = page(
        &f,
        ALICE,
        &format!(
            "?jobState=PROCESSING&limit=3&nextPageToken={}",
            next.unwrap()
        ),
    )
    .await;
    assert_eq!((ids, next), (processing[3..].to_vec(), None));
    let (ids, _, _) = page(&f, ALICE, "?jobState=FAILED").await;
    assert_eq!(ids, of("test.Fail"));

    // By kind: the counts are that kind's.
    let (ids, _, counts) = page(&f, ALICE, "?concreteType=test.Unit").await;
    assert_eq!(ids, of("test.Unit"));
    assert_eq!(counts, json!({"PROCESSING": 0, "COMPLETE": 2, "FAILED": 0}));

    let (ids, _, counts) = page(&f, BOB, "").await;
    assert_eq!(ids.len(), 6);
    assert_eq!(counts, json!({"PROCESSING": 0, "COMPLETE": 6, "FAILED": 0}));

    for (query, reason) in [
        (
            "?jobState=DONE",
            r#"jobState must be PROCESSING, COMPLETE or FAILED, not "DONE""#,
        ),
        ("?limit=0", "limit must be at least 1"),
        (
            "?limit=ten",
            r#"limit must be a whole number from 1, not "ten""#,
        ),
        (
            "?nextPageToken=abc",
            "malformed nextPageToken: pass back the one a page answered",
        ),
    ] {
        let response = f
            .get(ALICE, &format!("/asynchronous/job{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(response, StatusCode::BAD_REQUEST).await, reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_follow_their_own_jobs() {
    let f = Arc::new(fixture().await);
    let clients = (0..12u64).map(|n| {
        let f = f.clone();
        tokio::spawn(async move {
            let user = 1000 + n;
            let token = f
                .start(
                    user,
                    json!({"concreteType": "test.Steps", "steps": 3, "stepMs": 10 + n}),
                )
                .await;
            // Long-poll on the status with the last etag seen, until the job is done.
            let mut etag = String::new();
            let mut seen = Vec::new();
            loop {
                let response = f
                    .get(user, &format!("/asynchronous/job/{token}?wait=1"))
                    .header(header::IF_NONE_MATCH, &etag)
                    .send()
                    .await
                    .unwrap();
                if response.status() == StatusCode::NOT_MODIFIED {
                    continue;
                }
                assert_eq!(response.status(), StatusCode::OK);
                etag = etag_header(&response);
                let status: Value = response.json().await.unwrap();
                assert_eq!(status["startedByUserId"], user);
                seen.push(status["etag"].as_str().unwrap().to_owned());
                if status["jobState"] != "PROCESSING" {
                    assert_eq!(status["jobState"], "COMPLETE");
                    break;
                }
            }
            assert!(
                seen.windows(2).all(|w| w[0] != w[1]),
                "each answer was news: {seen:?}"
            );
            let response = f
                .get(user, &format!("/async/get/{token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["steps"], 3);
            // Another client's job is not this one's to read.
            let neighbour = if n == 0 { 1001 } else { 1000 };
            let response = f
                .get(neighbour, &format!("/asynchronous/job/{token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            token
        })
    });
    let mut tokens = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        tokens.push(client.await.unwrap());
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 12);
    assert_eq!(f.registry.local().counts().complete, 12);
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<AsyncJobApi>();
    send_sync::<Area>();
    send_sync::<UserHeader>();
    send_sync::<Rejection>();
    let lookup = |_: String| async { Ok::<_, Rejection>(Some(1)) };
    fn send_sync_of<T: Send + Sync + 'static>(_: &T) {}
    send_sync_of(&BearerToken::new(lookup));
}

/// A NUL character in a request body (as `\u0000` in the JSON) is made safe at the door: the
/// status shows U+FFFD, as a PostgreSQL store would store it (issue 23, defect 1).
#[tokio::test]
async fn a_nul_in_a_request_body_is_shown_as_a_replacement_character() {
    let f = fixture().await;
    let response = f
        .post(ALICE, "/async/start")
        .header("content-type", "application/json")
        .body(r#"{"concreteType": "test.Gated", "steps": 1, "note\u0000": "a\u0000b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token: Value = response.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let status: Value = f
        .get(ALICE, &format!("/asynchronous/job/{token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["requestBody"]["note\u{FFFD}"], "a\u{FFFD}b");
    assert!(!status.to_string().contains("\\u0000"));
    f.gate.notify_one();
}
