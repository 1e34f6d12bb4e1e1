//! Every bad input to the registry's API, and what it gets. Each row is one test below. Bad input
//! to the wire format (status JSON, id and etag text) has its own table, in
//! `tests/wire_format/main.rs`.
//!
//! | Bad input | What it gets | Test |
//! |---|---|---|
//! | Unknown id (never started here, or dropped by retention) | `Error::UnknownJob(id)` from `status`, `cancel`, `wait`, `wait_for_change` and `watch`, on the registry and on every `UserView` (before any ownership check); `list` leaves it out | [`an_unknown_id_is_unknown_everywhere`] |
//! | Another user's id (or a job started with no user) through a `UserView` | `Error::NotYourJob(id)` from `status`, `cancel`, `wait`, `wait_for_change` and `watch`; `list` and `watch_all` leave it out; the job is untouched | [`another_users_job_is_refused_and_untouched`] |
//! | Cancel twice | `Requested`, then `AlreadyRequested`; the second changes nothing, not even the etag | [`cancel_twice_changes_nothing_the_second_time`] |
//! | Cancel after the job finished | `AlreadyFinished`; the status stays as it ended | [`cancel_after_finish_changes_nothing`] |
//! | Progress with `current > total`, with `total == 0`, with `u64::MAX` | Stored as given (e.g. 7 of 5, 3 of 0); on completion `progressCurrent` becomes `progressTotal` | [`progress_is_stored_as_given`] |
//! | A 10 MB progress message | Cut to `MAX_MESSAGE_CHARS` characters on a character boundary; the same report again changes nothing; no quadratic work | [`a_10_mb_progress_message_is_capped`] |
//! | A 10 MB error: a 2 MB first line and an 8 MB `source()` chain; a 10 MB panic message | `errorMessage`: the first line, cut to `MAX_MESSAGE_CHARS` characters; `errorDetails`: the chain, cut to at most `MAX_ERROR_DETAILS_BYTES` bytes on a character boundary; a panic message cut like a message | [`a_10_mb_error_is_capped`] |
//! | A result that is not JSON (a map with non-string keys, a failing `Serialize`) | FAILED with exception `asyncjobs::ResponseNotSerializable` and `errorMessage` `job result could not be serialized: <serde's reason>` | [`a_result_that_is_not_json_fails_the_job`] |
//! | A result that serde_json writes as `null` (`f64::NAN`, infinities, `()`) | COMPLETE, with no `responseBody` | [`a_result_that_is_not_json_fails_the_job`] |
//! | An etag that is not this job's (a Synapse UUID, `"007"`, `""`, a future version) to `wait_for_change` | Answered at once with the current status | [`a_foreign_etag_is_answered_at_once`] |
//! | Zero and unreachable limits: `max_running(0)`, `time_limit(0)`, `cancel_grace(0)`, `first_job_id(u64::MAX)` | One job runs at a time; the job times out at its first wait; a canceled job is stopped at its first wait; ids start at `u64::MAX / 2` | [`zero_and_extreme_limits_are_taken_as_documented`] |
//! | `spawn` after `shutdown`, or outside a runtime | `Error::ShutDown`, `Error::NoRuntime`; the job's closure is not called | [`spawn_refused_when_shut_down_or_without_a_runtime`] |

use std::collections::HashMap;
use std::time::{Duration, Instant};

use asyncjobs::{
    exception, AsynchJobState, CancelOutcome, Error, Etag, JobFilter, JobHandle, JobId,
    JobRegistry, JobRequest, MAX_ERROR_DETAILS_BYTES, MAX_MESSAGE_CHARS,
};
use serde_json::json;

mod common;
use common::{gated, NO_BLOWUP, TEN_MB};

#[tokio::test(start_paused = true)]
async fn an_unknown_id_is_unknown_everywhere() {
    let registry = JobRegistry::builder()
        .first_job_id(100)
        .keep_finished_at_most(0)
        .build();
    let never = JobId::from_u64(99);
    let dropped = registry
        .spawn(JobRequest::default().started_by(1), |_| async {
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let alice = registry.as_user(1);
    for id in [
        never,
        dropped,
        JobId::from_u64(u64::MAX),
        JobId::from_u64(0),
    ] {
        let unknown = Err(Error::UnknownJob(id));
        let etag: Etag = "1".parse().unwrap();
        assert_eq!(registry.status(&id).await, unknown);
        assert_eq!(registry.cancel(&id).await, Err(Error::UnknownJob(id)));
        assert_eq!(registry.wait(&id).await, unknown);
        assert_eq!(registry.wait_for_change(&id, &etag).await, unknown);
        assert_eq!(registry.watch(&id).await.err(), Some(Error::UnknownJob(id)));
        assert_eq!(alice.status(&id).await, unknown, "unknown before not-yours");
        assert_eq!(alice.cancel(&id).await, Err(Error::UnknownJob(id)));
        assert_eq!(alice.wait(&id).await, unknown);
        assert_eq!(alice.wait_for_change(&id, &etag).await, unknown);
        assert_eq!(alice.watch(&id).await.err(), Some(Error::UnknownJob(id)));
    }
    assert!(registry.local().list(&JobFilter::new()).jobs.is_empty());
    assert_eq!(registry.local().counts().total(), 0);
    assert_eq!(
        Error::UnknownJob(never).to_string(),
        "unknown job 99",
        "short, lowercase"
    );
}

#[tokio::test(start_paused = true)]
async fn another_users_job_is_refused_and_untouched() {
    let registry = JobRegistry::new();
    let (alices, alice_job, go) = gated(&registry, JobRequest::default().started_by(1));
    let (nobodys, _nobody_job, go_too) = gated(&registry, JobRequest::default());
    let bob = registry.as_user(2);
    let bobs_feed = bob.watch_all();
    let before = registry.status(&alices).await.unwrap();
    for id in [alices, nobodys] {
        let refused = Err(Error::NotYourJob(id));
        assert_eq!(bob.status(&id).await, refused);
        assert_eq!(bob.cancel(&id).await, Err(Error::NotYourJob(id)));
        assert_eq!(bob.wait(&id).await, refused);
        assert_eq!(bob.wait_for_change(&id, &before.etag).await, refused);
        assert_eq!(bob.watch(&id).await.err(), Some(Error::NotYourJob(id)));
    }
    assert!(bob.local().list(&JobFilter::new()).jobs.is_empty());
    assert!(
        bob.local()
            .list(&JobFilter::new().started_by(1))
            .jobs
            .is_empty(),
        "a view ignores the user named in a filter"
    );
    alice_job.set_progress(1, 2, "changed");
    assert_eq!(bobs_feed.pending(), 0, "another user's changes are not fed");
    assert!(
        !registry.status(&alices).await.unwrap().job_canceling,
        "a refused cancel did nothing"
    );
    assert_eq!(
        Error::NotYourJob(alices).to_string(),
        format!("job {alices} was started by another user")
    );
    go.send(()).unwrap();
    go_too.send(()).unwrap();
    assert!(registry.wait(&alices).await.unwrap().is_terminal());
    assert_eq!(bob.status(&alices).await, Err(Error::NotYourJob(alices)));
}

#[tokio::test(start_paused = true)]
async fn cancel_twice_changes_nothing_the_second_time() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(60))
        .build();
    let (id, _job, go) = gated(&registry, JobRequest::default().started_by(1));
    assert_eq!(registry.cancel(&id).await, Ok(CancelOutcome::Requested));
    let first = registry.status(&id).await.unwrap();
    assert!(first.job_canceling);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        registry.cancel(&id).await,
        Ok(CancelOutcome::AlreadyRequested)
    );
    assert_eq!(
        registry.as_user(1).cancel(&id).await,
        Ok(CancelOutcome::AlreadyRequested)
    );
    let second = registry.status(&id).await.unwrap();
    assert_eq!(
        (&second.etag, second.changed_on),
        (&first.etag, first.changed_on)
    );
    go.send(()).unwrap();
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(
        (done.job_state, done.job_canceling),
        (AsynchJobState::Complete, true),
        "it finished its work anyway"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_after_finish_changes_nothing() {
    let registry = JobRegistry::new();
    let ok = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(1) })
        .await
        .unwrap();
    let failed = registry
        .spawn(JobRequest::default(), |_| async { Err::<(), _>("no") })
        .await
        .unwrap();
    for id in [ok, failed] {
        let done = registry.wait(&id).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            registry.cancel(&id).await,
            Ok(CancelOutcome::AlreadyFinished)
        );
        assert_eq!(
            registry.cancel(&id).await,
            Ok(CancelOutcome::AlreadyFinished)
        );
        assert_eq!(registry.status(&id).await.unwrap(), done);
        assert!(!done.job_canceling);
    }
}

#[tokio::test(start_paused = true)]
async fn progress_is_stored_as_given() {
    let registry = JobRegistry::new();
    for (current, total) in [(7, 5), (3, 0), (0, 0), (u64::MAX, 1), (1, u64::MAX)] {
        let (id, job, go) = gated(&registry, JobRequest::default());
        assert!(job.set_progress(current, total, "odd"));
        let s = registry.status(&id).await.unwrap();
        assert_eq!(
            (s.progress_current, s.progress_total),
            (Some(current), Some(total))
        );
        assert_eq!(
            serde_json::to_value(&s).unwrap()["progressCurrent"],
            json!(current),
            "as given on the wire too"
        );
        assert!(!job.set_progress(current, total, "odd"), "no change");
        go.send(()).unwrap();
        let done = registry.wait(&id).await.unwrap();
        assert_eq!(
            (done.progress_current, done.progress_total),
            (Some(total), Some(total)),
            "complete: current = total"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_10_mb_progress_message_is_capped() {
    let registry = JobRegistry::new();
    let (id, job, go) = gated(&registry, JobRequest::default());
    // Multi-byte characters throughout, so that any cut by bytes would split one.
    let huge: String = "é✓🦀a".repeat(TEN_MB / 10);
    assert!(huge.len() >= TEN_MB);
    let expected: String = huge.chars().take(MAX_MESSAGE_CHARS).collect();

    let started = Instant::now();
    assert!(job.set_progress(1, 2, &huge));
    assert!(!job.set_progress(1, 2, &huge), "the same report again");
    assert!(
        !job.set_progress(1, 2, format!("{huge}, and more")),
        "the same once cut"
    );
    assert!(job.set_progress(2, 2, huge.clone()), "owned, and a change");
    assert!(started.elapsed() < NO_BLOWUP, "{:?}", started.elapsed());

    let s = registry.status(&id).await.unwrap();
    assert_eq!(s.progress_message.as_deref(), Some(expected.as_str()));
    assert_eq!(
        serde_json::to_value(&s).unwrap()["progressMessage"],
        json!(expected)
    );
    // Exactly at the cap: kept whole; one over: cut.
    let at_cap: String = "ü".repeat(MAX_MESSAGE_CHARS);
    job.set_progress(1, 2, &at_cap);
    assert_eq!(
        registry
            .status(&id)
            .await
            .unwrap()
            .progress_message
            .as_deref(),
        Some(at_cap.as_str())
    );
    job.set_progress(1, 2, format!("{at_cap}!"));
    assert_eq!(
        registry
            .status(&id)
            .await
            .unwrap()
            .progress_message
            .as_deref(),
        Some(at_cap.as_str())
    );
    go.send(()).unwrap();
    registry.wait(&id).await.unwrap();
}

/// One link of an error chain with a given message.
#[derive(Debug)]
struct Link {
    message: String,
    source: Option<Box<Link>>,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Link {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

#[tokio::test(start_paused = true)]
async fn a_10_mb_error_is_capped() {
    // A 2 MB first line of three-byte characters (a second line follows), then eight 1 MB causes.
    let first = format!("{}\nsecond line", "日".repeat(2 * 1024 * 1024 / 3));
    let mut error: Option<Link> = None;
    for i in (0..8).rev() {
        error = Some(Link {
            message: format!("cause {i}: {}", "x".repeat(1024 * 1024)),
            source: error.map(Box::new),
        });
    }
    let error = Link {
        message: first.clone(),
        source: error.map(Box::new),
    };
    let registry = JobRegistry::new();
    let started = Instant::now();
    let id = registry
        .spawn(
            JobRequest::default(),
            |_| async move { Err::<(), _>(error) },
        )
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    let ten_mb_panic = registry
        .spawn(JobRequest::default(), |_| async {
            std::panic::resume_unwind(Box::new("p".repeat(TEN_MB))) as Result<(), &str>
        })
        .await
        .unwrap();
    let p = registry.wait(&ten_mb_panic).await.unwrap();
    assert!(started.elapsed() < NO_BLOWUP, "{:?}", started.elapsed());

    assert_eq!(s.job_state, AsynchJobState::Failed);
    let message = s.error_message.as_deref().unwrap();
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    assert!(message.chars().all(|c| c == '日'), "the first line only");
    let details = s.error_details.as_deref().unwrap();
    // The longest prefix of the chain that fits, on a character boundary: 21,845 whole
    // three-byte characters are 65,535 bytes.
    assert_eq!(details.len(), MAX_ERROR_DETAILS_BYTES / 3 * 3);
    assert!(first.starts_with(details));
    assert_eq!(s.exception.as_deref(), Some(std::any::type_name::<Link>()));

    assert_eq!(p.exception.as_deref(), Some(exception::PANICKED));
    assert_eq!(
        p.error_message.as_deref(),
        Some("p".repeat(MAX_MESSAGE_CHARS).as_str())
    );
}

/// A result whose `Serialize` refuses.
struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no JSON for this"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_result_that_is_not_json_fails_the_job() {
    let registry = JobRegistry::new();
    let tuple_keys = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(3, 4, "nearly");
            Ok::<_, &str>(HashMap::from([((1u8, 2u8), "a")]))
        })
        .await
        .unwrap();
    let s = registry.wait(&tuple_keys).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(
        s.exception.as_deref(),
        Some(exception::RESPONSE_NOT_SERIALIZABLE)
    );
    assert_eq!(
        s.error_message.as_deref(),
        Some("job result could not be serialized: key must be a string")
    );
    assert_eq!((s.response_body, s.error_details), (None, None));
    assert_eq!(
        (s.progress_current, s.progress_message.as_deref()),
        (Some(3), Some("nearly"))
    );

    let refused = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(Refuses) })
        .await
        .unwrap();
    let s = registry.wait(&refused).await.unwrap();
    assert_eq!(
        (s.job_state, s.exception.as_deref()),
        (
            AsynchJobState::Failed,
            Some(exception::RESPONSE_NOT_SERIALIZABLE)
        )
    );
    assert_eq!(
        s.error_message.as_deref(),
        Some("job result could not be serialized: no JSON for this")
    );

    let unit = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    let s = registry.wait(&unit).await.unwrap();
    assert_eq!(
        (s.job_state, s.response_body),
        (AsynchJobState::Complete, None)
    );
    for nothing in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let id = registry
            .spawn(JobRequest::default(), move |_| async move {
                Ok::<_, &str>(nothing)
            })
            .await
            .unwrap();
        let s = registry.wait(&id).await.unwrap();
        assert_eq!(
            (s.job_state, s.response_body),
            (AsynchJobState::Complete, None),
            "{nothing} is written as null"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_foreign_etag_is_answered_at_once() {
    let registry = JobRegistry::new();
    let (id, job, go) = gated(&registry, JobRequest::default());
    job.set_progress(1, 3, "one");
    let now = registry.status(&id).await.unwrap();
    assert_eq!(now.etag, "2");
    for foreign in [
        "6a0b5b8c-9f67-4c2a-8f1e-0c5f1e0d3a11",
        "002",
        "",
        "1",
        "99",
        "-2",
    ] {
        let etag: Etag = foreign.parse().unwrap();
        let answer =
            tokio::time::timeout(Duration::from_secs(1), registry.wait_for_change(&id, &etag))
                .await
                .unwrap_or_else(|_| panic!("{foreign:?} waited"));
        assert_eq!(answer, Ok(now.clone()), "{foreign:?}");
    }
    let same = tokio::time::timeout(
        Duration::from_secs(1),
        registry.wait_for_change(&id, &now.etag),
    )
    .await;
    assert!(same.is_err(), "its own etag waits for a change");
    go.send(()).unwrap();
    registry.wait(&id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn zero_and_extreme_limits_are_taken_as_documented() {
    let registry = JobRegistry::builder()
        .max_running(0)
        .cancel_grace(Duration::ZERO)
        .first_job_id(u64::MAX)
        .build();
    let (first, _job, go) = gated(&registry, JobRequest::default());
    assert_eq!(first, JobId::from_u64(u64::MAX / 2));
    let (second, _job2, go2) = gated(&registry, JobRequest::default());
    assert_eq!(second, JobId::from_u64(u64::MAX / 2 + 1));
    let queued = registry.status(&second).await.unwrap();
    assert_eq!(
        queued.progress_message.as_deref(),
        Some("Queued: waiting for a free slot (1 job runs at a time)"),
        "a limit of 0 is 1"
    );
    go.send(()).unwrap();
    go2.send(()).unwrap();
    registry.wait(&second).await.unwrap();

    let timed = registry
        .spawn(
            JobRequest::default().time_limit(Duration::ZERO),
            |_| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, &str>(())
            },
        )
        .await
        .unwrap();
    let s = registry.wait(&timed).await.unwrap();
    assert_eq!(s.exception.as_deref(), Some(exception::TIMED_OUT));
    assert_eq!(
        s.error_message.as_deref(),
        Some("job exceeded its time limit of 0ns")
    );
    assert_eq!(s.runtime_ms, 0);

    let stubborn = registry
        .spawn(JobRequest::default(), |_| async {
            std::future::pending::<Result<(), &str>>().await
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    registry.cancel(&stubborn).await.unwrap();
    let s = registry.wait(&stubborn).await.unwrap();
    assert_eq!(s.exception.as_deref(), Some(exception::CANCELED));
    assert_eq!(s.runtime_ms, 0, "no grace at all");
}

#[test]
fn spawn_refused_when_shut_down_or_without_a_runtime() {
    let called = std::sync::atomic::AtomicBool::new(false);
    let registry = JobRegistry::new();
    let job = |_| {
        called.store(true, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, &str>(()) }
    };
    assert_eq!(
        registry.local().spawn(JobRequest::default(), job),
        Err(Error::NoRuntime)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(registry.shutdown(Duration::from_secs(1)));
    let _entered = runtime.enter();
    assert_eq!(
        registry.local().spawn(JobRequest::default(), job),
        Err(Error::ShutDown)
    );
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    assert!(registry.local().is_empty());
}

/// No progress message, error or name shows a NUL character, which PostgreSQL cannot store: it is
/// shown as U+FFFD, with or without a store, so every instance shows the same. (Request bodies
/// are made safe at the HTTP door, tests/http.rs; a store stores any other NUL as U+FFFD.)
#[tokio::test]
async fn a_nul_character_is_shown_as_a_replacement_character() {
    #[derive(Debug)]
    struct NulError;
    impl std::fmt::Display for NulError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bad\u{0}input")
        }
    }
    impl std::error::Error for NulError {}

    let registry = JobRegistry::new();
    let request = JobRequest::default().name("export\u{0}");
    let (go, gate) = tokio::sync::oneshot::channel::<()>();
    let failing = registry
        .spawn(request, |job: asyncjobs::JobHandle| async move {
            job.set_progress(1, 2, "row\u{0}1");
            gate.await.ok();
            Err::<(), _>(NulError)
        })
        .await
        .unwrap();
    let started = registry.status(&failing).await.unwrap();
    let running = match started.progress_message {
        Some(_) => started,
        None => registry
            .wait_for_change(&failing, &started.etag)
            .await
            .unwrap(),
    };
    assert_eq!(running.progress_message.as_deref(), Some("row\u{FFFD}1"));
    assert_eq!(
        registry.job_name(&failing).await.unwrap().as_deref(),
        Some("export\u{FFFD}")
    );
    go.send(()).unwrap();
    let failed = registry.wait(&failing).await.unwrap();
    assert_eq!(failed.error_message.as_deref(), Some("bad\u{FFFD}input"));
    assert!(!failed.error_details.as_deref().unwrap().contains('\u{0}'));
}
