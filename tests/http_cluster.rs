//! The HTTP front over a shared PostgreSQL store (features `http` and `postgres`): two instances,
//! each serving its own router on loopback as a service behind a load balancer would, and a real
//! HTTP client that sends each request to either. A job started through one is read, long-polled,
//! canceled and answered from the request cache through the other; another user is refused
//! there too; and with the database gone, the other instance answers 503 with a reason.
//!
//! The server comes from `tests/pg` (`ASYNCJOBS_PG_URL`, else a throwaway one).
#![cfg(all(feature = "http", feature = "postgres"))]

mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncjobs::http::{AsyncJobApi, UserHeader, JOB_REUSED};
use asyncjobs::postgres::PostgresStore;
use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use axum::http::StatusCode;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use tokio::sync::Notify;

const ALICE: u64 = 11;
const BOB: u64 = 12;

/// The longest any one wait may take: far beyond what the store promises.
const PATIENCE: Duration = Duration::from_secs(20);

/// One instance of the service: its registry and the base URL of its router.
struct Instance {
    registry: JobRegistry,
    base: String,
}

/// An instance on `url`, serving the test's job kinds. `gate` lets each `test.Gated` job take
/// one step per notification.
async fn instance(url: &str, gate: &Arc<Notify>) -> Instance {
    let store = PostgresStore::builder(url)
        .flush_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect a store to the test database");
    let registry = JobRegistry::builder()
        .store(store)
        .cancel_grace(Duration::from_secs(5))
        .build();
    let gate = gate.clone();
    let router = AsyncJobApi::new(registry.clone(), UserHeader::new("X-User-Id"))
        .max_wait(Duration::from_secs(10))
        .job("test.Gated", move |body: Value, job: JobHandle| {
            let gate = gate.clone();
            async move {
                let steps = body["steps"].as_u64().unwrap_or(1);
                for done in 1..=steps {
                    gate.notified().await;
                    job.set_progress(done, steps, format!("step {done} of {steps}"));
                }
                Ok::<_, std::io::Error>(json!({"concreteType": "test.GatedResponse"}))
            }
        })
        .job(
            "test.UntilCanceled",
            |_: Value, job: JobHandle| async move {
                job.set_progress(0, 1, "waiting to be canceled");
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("stopped on request"))
            },
        )
        .job_with(
            "test.Query",
            JobRequest::cacheable,
            |query: Value, _job: JobHandle| async move {
                Ok::<_, std::io::Error>(json!({"concreteType": "test.QueryResult", "query": query}))
            },
        )
        .into_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Instance { registry, base }
}

fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

impl Instance {
    async fn get(&self, http: &Client, user: u64, path: &str) -> Response {
        http.get(format!("{}{path}", self.base))
            .header("X-User-Id", user.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, http: &Client, user: u64, path: &str, body: &Value) -> Response {
        http.post(format!("{}{path}", self.base))
            .header("X-User-Id", user.to_string())
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Starts a job through `POST /async/start`; its token.
    async fn start(&self, http: &Client, user: u64, body: Value) -> (String, bool) {
        let response = self.post(http, user, "/async/start", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "start {body}");
        let reused = response
            .headers()
            .get(JOB_REUSED)
            .is_some_and(|v| v == "true");
        let token: Value = response.json().await.unwrap();
        (token["token"].as_str().unwrap().to_owned(), reused)
    }
}

/// `probe` every 20 ms until it returns `Some`, for at most [`PATIENCE`].
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_on_one_instance_is_served_by_the_other() {
    let test = pg::fresh_db().await;
    let gate = Arc::new(Notify::new());
    let a = instance(&test.url, &gate).await;
    let b = instance(&test.url, &gate).await;
    let http = client();

    // Started on A, read on B: 202 and the status while PROCESSING.
    let (token, reused) = a
        .start(
            &http,
            ALICE,
            json!({"concreteType": "test.Gated", "steps": 2}),
        )
        .await;
    assert!(!reused);
    let response = b.get(&http, ALICE, &format!("/async/get/{token}")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["jobId"], json!(token));
    assert_eq!(status["jobState"], json!("PROCESSING"));
    assert_eq!(status["startedByUserId"], json!(ALICE));

    // Another user is refused on B as on A.
    for instance in [&a, &b] {
        let response = instance
            .get(&http, BOB, &format!("/asynchronous/job/{token}"))
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body: Value = response.json().await.unwrap();
        assert!(body["reason"].is_string(), "{body}");
    }

    // A long-poll on B for a change of A's job wakes when A's job moves.
    let etag = status["etag"].as_str().unwrap().to_owned();
    let poll = {
        let (http, base, token) = (http.clone(), b.base.clone(), token.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http
                .get(format!(
                    "{base}/asynchronous/job/{token}?wait=10&etag={etag}"
                ))
                .header("X-User-Id", ALICE.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body, started.elapsed())
        })
    };
    // The poll is under way on B before A's job moves (it answers at once if it already had).
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.notify_one();
    let (code, moved, took) = tokio::time::timeout(PATIENCE, poll).await.unwrap().unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(moved["progressCurrent"], json!(1), "{moved}");
    assert!(
        took < Duration::from_secs(10),
        "woken by the change, not the wait's end: {took:?}"
    );

    // Finished on A: B answers 200 with the response body.
    gate.notify_one();
    let done = eventually("B answers A's finished job", async || {
        let response = b.get(&http, ALICE, &format!("/async/get/{token}")).await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let body: Value = done.json().await.unwrap();
    assert_eq!(body, json!({"concreteType": "test.GatedResponse"}));

    // Listed on B with the caller's other jobs.
    let list: Value = b
        .get(&http, ALICE, "/asynchronous/job")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["page"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["jobId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&token.as_str()), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_the_other_instance_stops_the_job() {
    let test = pg::fresh_db().await;
    let gate = Arc::new(Notify::new());
    let a = instance(&test.url, &gate).await;
    let b = instance(&test.url, &gate).await;
    let http = client();

    let (token, _) = a
        .start(&http, ALICE, json!({"concreteType": "test.UntilCanceled"}))
        .await;
    let refused = b
        .post(
            &http,
            BOB,
            &format!("/asynchronous/job/{token}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let asked = Instant::now();
    let response = b
        .post(
            &http,
            ALICE,
            &format!("/asynchronous/job/{token}/cancel"),
            &json!({}),
        )
        .await;
    // Answered once A applied the cancel: 202 if the job is still winding down, 200 if it has
    // already ended (this one ends as soon as it hears it).
    let code = response.status();
    let answered: Value = response.json().await.unwrap();
    assert!(
        code == StatusCode::ACCEPTED || code == StatusCode::OK,
        "{code} {answered}"
    );
    assert_eq!(answered["jobCanceling"], json!(true), "{answered}");
    let id = token.parse().unwrap();
    let done = tokio::time::timeout(PATIENCE, a.registry.wait(&id))
        .await
        .unwrap()
        .unwrap();
    println!(
        "a cancel sent to B stopped A's job in {:?}",
        asked.elapsed()
    );
    assert!(done.job_canceling);
    // B then answers Synapse's 409 for a canceled job, with a reason.
    let response = eventually("B answers the canceled job's end", async || {
        let response = b.get(&http, ALICE, &format!("/async/get/{token}")).await;
        (response.status() == StatusCode::CONFLICT).then_some(response)
    })
    .await;
    let body: Value = response.json().await.unwrap();
    assert!(body["reason"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equal_request_sent_to_the_other_instance_reuses_the_job() {
    let test = pg::fresh_db().await;
    let gate = Arc::new(Notify::new());
    let a = instance(&test.url, &gate).await;
    let b = instance(&test.url, &gate).await;
    let http = client();
    let query = json!({"concreteType": "test.Query", "sql": "select 1"});

    let (first, reused) = a.start(&http, ALICE, query.clone()).await;
    assert!(!reused);
    let (again, reused) = b.start(&http, ALICE, query.clone()).await;
    assert!(reused, "B answers with A's job, and says so");
    assert_eq!(again, first);
    // The generic launch on B too.
    let response = b.post(&http, ALICE, "/asynchronous/job", &query).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[JOB_REUSED], "true");
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["jobId"], json!(first));
    // Another user's equal request is a job of its own.
    let (bobs, reused) = b.start(&http, BOB, query).await;
    assert!(!reused);
    assert_ne!(bobs, first);
}

/// The status events of an open `GET /asynchronous/job/events` stream, in order.
struct Events {
    response: Response,
    buffer: String,
}

impl Events {
    async fn open(instance: &Instance, http: &Client, user: u64) -> Events {
        let response = instance.get(http, user, "/asynchronous/job/events").await;
        assert_eq!(response.status(), StatusCode::OK);
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next status event's status (comments skipped).
    async fn status(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return serde_json::from_str(&data.join("\n")).unwrap();
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event within the patience")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Statuses until one of job `token` for which `done` holds, for at most [`PATIENCE`];
    /// panics on a job of `never`.
    async fn until(&mut self, token: &str, never: &str, done: impl Fn(&Value) -> bool) -> Value {
        let wait = async {
            loop {
                let status = self.status().await;
                assert_ne!(
                    status["jobId"],
                    json!(never),
                    "another user's job: {status}"
                );
                if status["jobId"] == json!(token) && done(&status) {
                    return status;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no such status of job {token} within {PATIENCE:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_of_either_instance_carries_every_instance_s_jobs() {
    let test = pg::fresh_db().await;
    let gate = Arc::new(Notify::new());
    let a = instance(&test.url, &gate).await;
    let b = instance(&test.url, &gate).await;
    let http = client();
    let mut events = Events::open(&b, &http, ALICE).await;

    // Bob's job on A never shows on Alice's stream.
    let (bobs, _) = a
        .start(&http, BOB, json!({"concreteType": "test.UntilCanceled"}))
        .await;
    // Alice's job on A: its start, each step and its end reach B's stream.
    let (token, _) = a
        .start(
            &http,
            ALICE,
            json!({"concreteType": "test.Gated", "steps": 2}),
        )
        .await;
    let first = events
        .until(&token, &bobs, |s| s["jobState"] == json!("PROCESSING"))
        .await;
    assert_eq!(first["startedByUserId"], json!(ALICE));
    let mut last = first;
    for step in 1..=2u64 {
        let asked = Instant::now();
        gate.notify_one();
        let seen = events
            .until(&token, &bobs, |s| s["progressCurrent"] == json!(step))
            .await;
        println!(
            "step {step} of A's job on B's stream after {:?}",
            asked.elapsed()
        );
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
        last = seen;
    }
    if last["jobState"] != json!("COMPLETE") {
        events
            .until(&token, &bobs, |s| s["jobState"] == json!("COMPLETE"))
            .await;
    }
    // A cacheable job of A (recorded by the request cache's claim, which notifies as every
    // write does), however quickly it ends.
    let (cached, _) = a
        .start(
            &http,
            ALICE,
            json!({"concreteType": "test.Query", "sql": "on A"}),
        )
        .await;
    events
        .until(&cached, &bobs, |s| s["jobState"] == json!("COMPLETE"))
        .await;

    // B's own jobs come as before.
    let (own, _) = b
        .start(
            &http,
            ALICE,
            json!({"concreteType": "test.Query", "sql": "local"}),
        )
        .await;
    let done = events
        .until(&own, &bobs, |s| s["jobState"] == json!("COMPLETE"))
        .await;
    assert_eq!(done["requestBody"]["sql"], json!("local"));
}

/// The list's `names` (which the dashboard shows) carries the names of other instances' jobs,
/// which the store keeps, also once the instance that ran them is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_names_other_instances_jobs() {
    let test = pg::fresh_db().await;
    let gate = Arc::new(Notify::new());
    let a = instance(&test.url, &gate).await;
    let b = instance(&test.url, &gate).await;
    let http = client();

    let alice = b.registry.as_user(ALICE);
    let named = alice
        .spawn(
            JobRequest::new(json!({"concreteType": "test.Export"})).name("weekly export"),
            |_job| async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap();
    let unnamed = alice
        .spawn(
            JobRequest::new(json!({"concreteType": "test.Export"})),
            |_job| async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap();
    alice.wait(&named).await.unwrap();
    alice.wait(&unnamed).await.unwrap();

    let list = |instance: &Instance| {
        let http = http.clone();
        let base = instance.base.clone();
        async move {
            let list: Value = http
                .get(format!("{base}/asynchronous/job"))
                .header("X-User-Id", ALICE.to_string())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            list
        }
    };
    let on_a = list(&a).await;
    assert_eq!(on_a["page"].as_array().unwrap().len(), 2, "{on_a}");
    assert_eq!(
        on_a["names"],
        json!({named.to_string(): "weekly export"}),
        "{on_a}"
    );

    // B goes away; a new instance (as after a restart) holds neither job.
    b.registry.shutdown(Duration::from_secs(5)).await;
    let c = instance(&test.url, &gate).await;
    let on_c = list(&c).await;
    assert_eq!(
        on_c["names"],
        json!({named.to_string(): "weekly export"}),
        "{on_c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_gone_the_other_instance_answers_503_with_a_reason() {
    let server = pg::private_server();
    let test = server.fresh_db().await;
    let gate = Arc::new(Notify::new());
    let a = instance(&test.url, &gate).await;
    let b = instance(&test.url, &gate).await;
    let http = client();

    let (token, _) = a
        .start(
            &http,
            ALICE,
            json!({"concreteType": "test.Gated", "steps": 1}),
        )
        .await;
    let response = b
        .get(&http, ALICE, &format!("/asynchronous/job/{token}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // A stream on B, open across the outage.
    let mut events = Events::open(&b, &http, ALICE).await;

    tokio::task::block_in_place(|| server.stop());
    // A still answers for its own job, from memory.
    let response = a
        .get(&http, ALICE, &format!("/asynchronous/job/{token}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // B cannot, and says why, as a 503 that a client may retry.
    let response = b
        .get(&http, ALICE, &format!("/asynchronous/job/{token}"))
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&server.port().to_string()),
        "the reason names the database server: {body}"
    );
    // New jobs still start on B: its own jobs do not need the database to run.
    let (own, _) = b
        .start(
            &http,
            ALICE,
            json!({"concreteType": "test.Query", "sql": "select 2"}),
        )
        .await;
    let response = b
        .get(&http, ALICE, &format!("/asynchronous/job/{own}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    tokio::task::block_in_place(|| server.start_again());
    gate.notify_one();
    eventually(
        "B reads A's finished job once the database is back",
        async || {
            let response = b.get(&http, ALICE, &format!("/async/get/{token}")).await;
            (response.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
    // The stream on B got A's end too, whether its notice came or was lost in the reconnect.
    let end = events
        .until(&token, "none", |s| s["jobState"] == json!("COMPLETE"))
        .await;
    assert_eq!(end["progressCurrent"], json!(1));
}
