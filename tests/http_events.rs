//! `GET /asynchronous/job/events`, read by a real HTTP client on a loopback port: one event per
//! change of the caller's jobs, `Last-Event-ID` resumes, heartbeats, and the end at shutdown.
//! Tests that depend on time run on tokio's paused clock.
#![cfg(feature = "http")]

use std::sync::Arc;
use std::time::Duration;

use asyncjobs::http::{AsyncJobApi, UserHeader};
use asyncjobs::{JobHandle, JobId, JobRegistry, JobRequest};
use axum::http::{header, StatusCode};
use axum::Router;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::{advance, timeout, Instant};

const ALICE: u64 = 3_350_396;
const BOB: u64 = 273_950;

/// The longest a test waits for a message: longer than a heartbeat, which on the paused clock
/// comes at once.
const PATIENCE: Duration = Duration::from_secs(60);

fn api(registry: &JobRegistry) -> AsyncJobApi {
    AsyncJobApi::new(registry.clone(), UserHeader::new("X-User-Id")).job(
        "test.UntilCanceled",
        |_: Value, job: JobHandle| async move {
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("stopped on request"))
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

/// One message of an event stream.
#[derive(Debug, Clone, PartialEq)]
enum Message {
    Event {
        id: Option<String>,
        event: Option<String>,
        data: String,
    },
    Comment(String),
}

/// An open event stream, read message by message.
struct Events {
    response: Response,
    buffer: String,
}

impl Events {
    async fn open(base: &str, user: u64, last_event_id: Option<&str>) -> Events {
        let mut request = client()
            .get(format!("{base}/asynchronous/job/events"))
            .header("X-User-Id", user.to_string());
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next message; `None` when the stream ended.
    async fn message(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = timeout(PATIENCE, self.response.chunk())
                .await
                .expect("a message within the patience")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next status event (heartbeats skipped): its id and its status.
    async fn status(&mut self) -> (String, Value) {
        loop {
            match self.message().await.expect("the stream is open") {
                Message::Comment(_) => continue,
                Message::Event {
                    id,
                    event: None,
                    data,
                } => {
                    let status: Value = serde_json::from_str(&data).unwrap();
                    let id = id.expect("every status event has an id");
                    assert_eq!(
                        id,
                        format!(
                            "{}:{}",
                            status["jobId"].as_str().unwrap(),
                            status["etag"].as_str().unwrap()
                        ),
                        "the id is jobId:etag"
                    );
                    return (id, status);
                }
                other => panic!("expected a status, got {other:?}"),
            }
        }
    }

    /// The ids of the next `n` status events.
    async fn ids(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(self.status().await.0);
        }
        ids
    }
}

fn parse(block: &str) -> Message {
    let block = block.trim_end_matches('\n');
    if let Some(comment) = block.strip_prefix(':') {
        return Message::Comment(comment.strip_prefix(' ').unwrap_or(comment).to_owned());
    }
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => id = Some(value),
            "event" => event = Some(value),
            "data" => data.push(value),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    Message::Event {
        id,
        event,
        data: data.join("\n"),
    }
}

fn id_of(status: &asyncjobs::AsynchronousJobStatus) -> String {
    format!("{}:{}", status.job_id, status.etag)
}

#[tokio::test]
async fn each_change_of_the_callers_jobs_is_one_event() {
    let registry = JobRegistry::new();
    let gate = Arc::new(Notify::new());
    let opened = gate.clone();
    let router = api(&registry)
        .job("test.Gated", move |_: Value, job: JobHandle| {
            let gate = opened.clone();
            async move {
                for step in 1..=2 {
                    gate.notified().await;
                    job.set_progress(step, 2, format!("step {step} of 2"));
                }
                Ok::<_, std::io::Error>(json!({"concreteType": "test.GatedResponse"}))
            }
        })
        .into_router();
    let base = serve(router).await;
    let mut events = Events::open(&base, ALICE, None).await;

    // Bob's jobs are not Alice's business.
    let bobs = registry
        .as_user(BOB)
        .spawn(JobRequest::default(), |_| async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    registry.wait(&bobs).await.unwrap();
    let response = client()
        .post(format!("{base}/async/start"))
        .header("X-User-Id", ALICE.to_string())
        .json(&json!({"concreteType": "test.Gated"}))
        .send()
        .await
        .unwrap();
    let token: Value = response.json().await.unwrap();
    let id: JobId = token["token"].as_str().unwrap().parse().unwrap();

    // Each change is let happen only once the one before was sent: one event each.
    let (first, status) = events.status().await;
    assert_eq!(first, id_of(&registry.status(&id).await.unwrap()));
    assert_eq!(status["jobState"], "PROCESSING");
    assert_eq!(status["startedByUserId"], ALICE);
    gate.notify_one();
    let (second, status) = events.status().await;
    assert_eq!(status["progressCurrent"], 1);
    assert_eq!(status["progressMessage"], "step 1 of 2");
    gate.notify_one();
    let mut ids = vec![first, second];
    loop {
        let (next, status) = events.status().await;
        assert_eq!(status["jobId"], id.to_string(), "only Alice's job");
        ids.push(next);
        if status["jobState"] != "PROCESSING" {
            assert_eq!(status["jobState"], "COMPLETE");
            assert_eq!(status["responseBody"]["concreteType"], "test.GatedResponse");
            break;
        }
    }
    let versions: Vec<u64> = ids
        .iter()
        .map(|id| id.split_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "each event is a newer status: {ids:?}"
    );
    assert_eq!(
        ids.last(),
        Some(&id_of(&registry.status(&id).await.unwrap()))
    );
}

/// Alice's jobs A to F (and one of Bob's), started together, each changed only when a test
/// says, through its handle.
struct Jobs {
    registry: JobRegistry,
    handles: Vec<JobHandle>,
}

impl Jobs {
    fn start(registry: &JobRegistry) -> Jobs {
        let mut handles = Vec::new();
        for user in [ALICE, ALICE, ALICE, ALICE, ALICE, ALICE, BOB] {
            registry
                .as_user(user)
                .local()
                .spawn(JobRequest::default(), |job| {
                    handles.push(job.clone());
                    async move {
                        job.cancelled().await;
                        Ok::<_, std::io::Error>(())
                    }
                })
                .unwrap();
        }
        Jobs {
            registry: registry.clone(),
            handles,
        }
    }

    /// Job `n` (0 is A) reports progress; its event id after that.
    fn step(&self, n: usize) -> String {
        let job = &self.handles[n];
        let now = job.status().progress_current.unwrap_or(0);
        job.set_progress(now + 1, 100, format!("step {}", now + 1));
        id_of(&self.registry.local().status(&job.id()).unwrap())
    }

    fn id(&self, n: usize) -> String {
        id_of(&self.registry.local().status(&self.handles[n].id()).unwrap())
    }
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;
const F: usize = 5;
const BOBS: usize = 6;

#[tokio::test(start_paused = true)]
async fn last_event_id_resumes_with_the_latest_status_of_every_job_changed_since() {
    let registry = JobRegistry::new();
    let base = serve(api(&registry).into_router()).await;
    // Started together, so that their times are comparable to the millisecond on the paused
    // clock (each job anchors its times to the wall clock when it starts).
    let jobs = Jobs::start(&registry);
    advance(Duration::from_secs(5)).await;
    jobs.step(A);
    jobs.step(E);

    let mut first = Events::open(&base, ALICE, None).await;
    advance(Duration::from_secs(5)).await; // t = 10 s
    let b1 = jobs.step(B);
    assert_eq!(first.ids(1).await, [b1.as_str()]);
    advance(Duration::from_millis(14_500 - 10_000)).await;
    let f1 = jobs.step(F);
    advance(Duration::from_millis(500)).await; // t = 15 s
    let c1 = jobs.step(C);
    assert_eq!(first.ids(2).await, [f1.as_str(), c1.as_str()]);
    drop(first);

    // While away: D changes, then B; and Bob's job.
    advance(Duration::from_secs(5)).await; // t = 20 s
    let d1 = jobs.step(D);
    jobs.step(BOBS);
    advance(Duration::from_secs(5)).await; // t = 25 s
    let b2 = jobs.step(B);

    // Back with the last id seen: what changed since, oldest first. F changed 0.5 s before it,
    // within the slack a resume allows for clocks: sent again. A and E are not, nor Bob's.
    let mut resumed = Events::open(&base, ALICE, Some(&c1)).await;
    assert_eq!(
        resumed.ids(3).await,
        [f1.as_str(), d1.as_str(), b2.as_str()]
    );
    // Then the live changes.
    advance(Duration::from_secs(5)).await; // t = 30 s
    let a2 = jobs.step(A);
    assert_eq!(resumed.ids(1).await, [a2.as_str()]);
    drop(resumed);

    // An id whose job changed since: every job changed since that job started, oldest first.
    let e1 = jobs.id(E);
    let everything = [&e1, &f1, &c1, &d1, &b2, &a2].map(String::clone);
    let mut resumed = Events::open(&base, ALICE, Some(&b1)).await;
    assert_eq!(resumed.ids(6).await, everything);
    drop(resumed);

    // An unknown id, or one of someone else's jobs: every job of the caller's.
    let mut resumed = Events::open(&base, ALICE, Some("999999999:1")).await;
    assert_eq!(resumed.ids(6).await, everything);
    advance(Duration::from_secs(1)).await; // t = 31 s
    let c2 = jobs.step(C);
    assert_eq!(resumed.ids(1).await, [c2.as_str()]);
    drop(resumed);
    let mut resumed = Events::open(&base, ALICE, Some(&jobs.id(BOBS))).await;
    assert_eq!(
        resumed.ids(6).await,
        [&e1, &f1, &d1, &b2, &a2, &c2].map(String::clone)
    );
    drop(resumed);

    let response = client()
        .get(format!("{base}/asynchronous/job/events"))
        .header("X-User-Id", ALICE.to_string())
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_quiet_stream_open() {
    let registry = JobRegistry::new();
    let heartbeat = Duration::from_secs(15);
    let base = serve(api(&registry).event_heartbeat(heartbeat).into_router()).await;
    let jobs = Jobs::start(&registry);
    let mut events = Events::open(&base, ALICE, None).await;
    let opened = Instant::now();
    assert_eq!(
        events.message().await,
        Some(Message::Comment("heartbeat".into()))
    );
    let quiet = opened.elapsed();
    assert!(
        quiet >= heartbeat && quiet < heartbeat + Duration::from_secs(1),
        "{quiet:?}"
    );
    // An event resets the silence.
    advance(Duration::from_secs(10)).await;
    let stepped = jobs.step(A);
    assert_eq!(events.ids(1).await, [stepped]);
    let sent = Instant::now();
    assert_eq!(
        events.message().await,
        Some(Message::Comment("heartbeat".into()))
    );
    let quiet = sent.elapsed();
    assert!(
        quiet >= heartbeat && quiet < heartbeat + Duration::from_secs(1),
        "{quiet:?}"
    );
}

#[tokio::test]
async fn a_stream_ends_cleanly_when_the_registry_shuts_down() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(5))
        .build();
    let shutdown = Arc::new(Notify::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // As the README has it: the registry shuts down in the server's graceful-shutdown future,
    // which ends the streams the server then waits for.
    let server = {
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        tokio::spawn(async move {
            axum::serve(listener, api(&registry).into_router())
                .with_graceful_shutdown(async move {
                    shutdown.notified().await;
                    registry.shutdown(Duration::from_secs(5)).await;
                })
                .await
                .unwrap();
        })
    };
    let mut events = Events::open(&base, ALICE, None).await;
    let response = client()
        .post(format!("{base}/async/start"))
        .header("X-User-Id", ALICE.to_string())
        .json(&json!({"concreteType": "test.UntilCanceled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, started) = events.status().await;
    assert_eq!(started["jobState"], "PROCESSING");

    shutdown.notify_one();
    let last = loop {
        let (_, status) = events.status().await;
        if status["jobState"] != "PROCESSING" {
            break status;
        }
    };
    assert_eq!(last["jobState"], "FAILED");
    assert_eq!(last["jobCanceling"], true);
    assert_eq!(last["errorMessage"], "stopped on request");
    assert_eq!(
        events.message().await,
        Some(Message::Event {
            id: None,
            event: Some("end".into()),
            data: r#"{"reason":"the job registry shut down"}"#.into(),
        })
    );
    assert_eq!(events.message().await, None, "then the stream ends");
    timeout(PATIENCE, server)
        .await
        .expect("the server's graceful shutdown ends")
        .unwrap();
}

#[tokio::test]
async fn a_stream_opened_after_shutdown_sends_what_was_missed_and_ends() {
    let registry = JobRegistry::new();
    let base = serve(api(&registry).into_router()).await;
    let jobs = Jobs::start(&registry);
    let unknown = "999999999:1";
    registry.shutdown(Duration::from_secs(1)).await;
    let mut events = Events::open(&base, ALICE, None).await;
    assert!(matches!(
        events.message().await,
        Some(Message::Event { event: Some(end), .. }) if end == "end"
    ));
    assert_eq!(events.message().await, None);

    let mut events = Events::open(&base, ALICE, Some(unknown)).await;
    let mut finals: Vec<String> = (A..=F).map(|n| jobs.id(n)).collect();
    let mut sent = events.ids(6).await;
    finals.sort();
    sent.sort();
    assert_eq!(sent, finals);
    assert!(matches!(
        events.message().await,
        Some(Message::Event { event: Some(end), .. }) if end == "end"
    ));
    assert_eq!(events.message().await, None);
}
