//! Every bad input, and what it gets. Each row is one test below.
//!
//! | Bad input | What it gets | Test |
//! |---|---|---|
//! | Unknown id (never started here, or dropped by retention) | `Error::UnknownJob(id)` from `status`, `cancel`, `wait`, `wait_for_change` and `watch`, on the registry and on every `UserView` (before any ownership check); `list` leaves it out | [`an_unknown_id_is_unknown_everywhere`] |
//! | Malformed id text: empty, signs, spaces, decimals, exponents, hex, `_`, non-ASCII digits, control characters, over 20 digits, over `u64::MAX`, 10 MB of digits | `Error::MalformedId` from `parse::<JobId>()`, at once; a serde error for such a `jobId` in JSON. 1 to 20 ASCII digits that fit in a `u64` parse, leading zeros included (`"007"` is 7) | [`malformed_id_text_is_refused`] |
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
//! | Status JSON nested 100,000 deep | A serde error (`recursion limit exceeded`), never a stack overflow; nesting in an ignored field (`callersContext`) is skipped | [`deeply_nested_status_json_is_refused`] |
//! | Status JSON with huge numbers (`1e400`, 2^64, negative) | A serde error; `runtimeMS` up to below 2^64 as an integer or float is taken (floats rounded) | [`huge_numbers_in_status_json_are_refused`] |
//! | Status JSON with wrong types (a number for a string, a string for a number or a bool, a lower-case state, `CANCELED`) | A serde error naming the type or variant expected; `null` for an optional field, `jobCanceling` or `runtimeMS` reads as absent | [`wrong_types_in_status_json_are_refused`] |
//! | Status JSON with invalid dates (Feb 30, no time zone, a date alone, an offset of 24 h, epoch numbers) | A serde error `expected an RFC 3339 date-time`; RFC 3339's own variants (space for `T`, lower case, offsets, leap second, any fraction) parse, converted to UTC | [`invalid_dates_in_status_json_are_refused`] |
//! | Status JSON with a time that an offset moves outside years 0000–9999 in UTC (`9999-12-31T23:59:59-23:59`) | A serde error `date-time out of range (years 0000 to 9999 in UTC)`: such a time could not be written back as RFC 3339 | [`a_parsed_status_serializes_to_json_that_parses_back`] |
//! | Status JSON with 10 MB strings | Kept as given in a message, details or etag (the caps apply to what the registry records, not to what it parses); refused for an id, a state or a date | [`ten_mb_strings_in_status_json`] |
//! | Not a status: `[]`, `null`, a string, truncated text, a duplicate field, a missing required field | A serde error | [`json_that_is_not_a_status_is_refused`] |
//! | Any JSON value at all (generated, nested, status-shaped or not) as `AsynchronousJobStatus`, `JobId` or `Etag`; any text as a `JobId` or `Etag` | An `Ok` or an `Err`, never a panic; `JobId` text parses exactly when it is 1 to 20 ASCII digits that fit; every text is an etag that prints as itself; a parsed status serializes to JSON that parses to the same status | [`parsing_arbitrary_json_never_panics`], [`any_text_as_an_id_or_etag`] |

use std::collections::HashMap;
use std::time::{Duration, Instant};

use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, CancelOutcome, Error, Etag, JobFilter,
    JobHandle, JobId, JobRegistry, JobRequest, MAX_ERROR_DETAILS_BYTES, MAX_MESSAGE_CHARS,
};
use proptest::prelude::*;
use serde_json::{json, Value};

mod common;
use common::gated;

const TEN_MB: usize = 10 * 1024 * 1024;

/// Generous: linear work on 10 MB takes milliseconds even in a debug build; quadratic work
/// would take hours.
const NO_BLOWUP: Duration = Duration::from_secs(5);

/// A status as Synapse sends it, with `changes` applied (`null` removes a field).
fn status_json(changes: Value) -> Value {
    let mut status = json!({
        "jobId": "9606497",
        "jobState": "PROCESSING",
        "jobCanceling": false,
        "etag": "0e8ba8d4-5a9b-4e4c-9e57-4ec1f1a0b8f2",
        "startedOn": "2024-03-05T17:04:09.417Z",
        "changedOn": "2024-03-05T17:04:10.002Z",
        "startedByUserId": 3350396,
        "progressCurrent": 5,
        "progressTotal": 100,
        "progressMessage": "Querying...",
        "runtimeMS": 585
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            status.as_object_mut().unwrap().remove(key);
        } else {
            status[key] = value.clone();
        }
    }
    status
}

fn parse(value: &Value) -> Result<AsynchronousJobStatus, String> {
    // Both ways in: from a parsed value, and from text.
    let from_value = serde_json::from_value::<AsynchronousJobStatus>(value.clone());
    let from_text = serde_json::from_str::<AsynchronousJobStatus>(&value.to_string());
    assert_eq!(
        from_value.is_ok(),
        from_text.is_ok(),
        "{value}: {from_value:?} / {from_text:?}"
    );
    from_value.map_err(|e| e.to_string())
}

fn parse_error(value: &Value) -> String {
    match parse(value) {
        Ok(s) => panic!("{value} parsed: {s:?}"),
        Err(e) => e,
    }
}

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
        assert_eq!(registry.status(&id), unknown);
        assert_eq!(registry.cancel(&id), Err(Error::UnknownJob(id)));
        assert_eq!(registry.wait(&id).await, unknown);
        assert_eq!(registry.wait_for_change(&id, &etag).await, unknown);
        assert_eq!(registry.watch(&id).err(), Some(Error::UnknownJob(id)));
        assert_eq!(alice.status(&id), unknown, "unknown before not-yours");
        assert_eq!(alice.cancel(&id), Err(Error::UnknownJob(id)));
        assert_eq!(alice.wait(&id).await, unknown);
        assert_eq!(alice.wait_for_change(&id, &etag).await, unknown);
        assert_eq!(alice.watch(&id).err(), Some(Error::UnknownJob(id)));
    }
    assert!(registry.list(&JobFilter::new()).is_empty());
    assert_eq!(registry.counts().total(), 0);
    assert_eq!(
        Error::UnknownJob(never).to_string(),
        "unknown job 99",
        "short, lowercase"
    );
}

#[test]
fn malformed_id_text_is_refused() {
    let ten_mb_of_digits = "1".repeat(TEN_MB);
    let malformed: &[&str] = &[
        "",
        " ",
        " 1",
        "1 ",
        "+1",
        "-1",
        "-0",
        "1.0",
        "1.",
        "1e3",
        "0x10",
        "0b1",
        "1_000",
        "1,000",
        "12a",
        "abc",
        "\u{0}",
        "1\u{0}",
        "1\n",
        "\t1",
        "١٢٣",                   // Arabic-Indic digits
        "１２",                  // full-width digits
        "²",                     // a superscript digit
        "000000000000000000001", // 21 digits, though its value is 1
        "18446744073709551616",  // u64::MAX + 1
        "99999999999999999999",  // 20 digits, over u64::MAX
        "99999999999999999999999",
        &ten_mb_of_digits,
    ];
    let started = Instant::now();
    for text in malformed {
        assert_eq!(
            text.parse::<JobId>(),
            Err(Error::MalformedId),
            "{:?}",
            text.chars().take(30).collect::<String>()
        );
        assert!(
            serde_json::from_value::<JobId>(json!(text)).is_err(),
            "as JSON"
        );
        assert!(parse(&status_json(json!({ "jobId": text }))).is_err());
    }
    assert!(
        started.elapsed() < NO_BLOWUP,
        "refused without reading it all"
    );
    for (text, value) in [
        ("0", 0),
        ("007", 7),
        ("00000000000000000001", 1), // 20 digits
        ("18446744073709551615", u64::MAX),
    ] {
        assert_eq!(text.parse::<JobId>(), Ok(JobId::from_u64(value)), "{text}");
    }
    assert_eq!(
        Error::MalformedId.to_string(),
        "malformed job id: expected 1 to 20 ascii digits"
    );
    // In JSON, an id is a string of digits or a non-negative integer, nothing else.
    assert_eq!(
        serde_json::from_value::<JobId>(json!(77)).unwrap(),
        JobId::from_u64(77)
    );
    for not_an_id in [
        json!(-1),
        json!(1.0),
        json!(1e30),
        json!(true),
        json!(null),
        json!([1]),
    ] {
        assert!(
            serde_json::from_value::<JobId>(not_an_id.clone()).is_err(),
            "{not_an_id}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn another_users_job_is_refused_and_untouched() {
    let registry = JobRegistry::new();
    let (alices, alice_job, go) = gated(&registry, JobRequest::default().started_by(1));
    let (nobodys, _nobody_job, go_too) = gated(&registry, JobRequest::default());
    let bob = registry.as_user(2);
    let bobs_feed = bob.watch_all();
    let before = registry.status(&alices).unwrap();
    for id in [alices, nobodys] {
        let refused = Err(Error::NotYourJob(id));
        assert_eq!(bob.status(&id), refused);
        assert_eq!(bob.cancel(&id), Err(Error::NotYourJob(id)));
        assert_eq!(bob.wait(&id).await, refused);
        assert_eq!(bob.wait_for_change(&id, &before.etag).await, refused);
        assert_eq!(bob.watch(&id).err(), Some(Error::NotYourJob(id)));
    }
    assert!(bob.list(&JobFilter::new()).is_empty());
    assert!(
        bob.list(&JobFilter::new().started_by(1)).is_empty(),
        "a view ignores the user named in a filter"
    );
    alice_job.set_progress(1, 2, "changed");
    assert_eq!(bobs_feed.pending(), 0, "another user's changes are not fed");
    assert!(
        !registry.status(&alices).unwrap().job_canceling,
        "a refused cancel did nothing"
    );
    assert_eq!(
        Error::NotYourJob(alices).to_string(),
        format!("job {alices} was started by another user")
    );
    go.send(()).unwrap();
    go_too.send(()).unwrap();
    assert!(registry.wait(&alices).await.unwrap().is_terminal());
    assert_eq!(bob.status(&alices), Err(Error::NotYourJob(alices)));
}

#[tokio::test(start_paused = true)]
async fn cancel_twice_changes_nothing_the_second_time() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(60))
        .build();
    let (id, _job, go) = gated(&registry, JobRequest::default().started_by(1));
    assert_eq!(registry.cancel(&id), Ok(CancelOutcome::Requested));
    let first = registry.status(&id).unwrap();
    assert!(first.job_canceling);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(registry.cancel(&id), Ok(CancelOutcome::AlreadyRequested));
    assert_eq!(
        registry.as_user(1).cancel(&id),
        Ok(CancelOutcome::AlreadyRequested)
    );
    let second = registry.status(&id).unwrap();
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
        .unwrap();
    let failed = registry
        .spawn(JobRequest::default(), |_| async { Err::<(), _>("no") })
        .unwrap();
    for id in [ok, failed] {
        let done = registry.wait(&id).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(registry.cancel(&id), Ok(CancelOutcome::AlreadyFinished));
        assert_eq!(registry.cancel(&id), Ok(CancelOutcome::AlreadyFinished));
        assert_eq!(registry.status(&id).unwrap(), done);
        assert!(!done.job_canceling);
    }
}

#[tokio::test(start_paused = true)]
async fn progress_is_stored_as_given() {
    let registry = JobRegistry::new();
    for (current, total) in [(7, 5), (3, 0), (0, 0), (u64::MAX, 1), (1, u64::MAX)] {
        let (id, job, go) = gated(&registry, JobRequest::default());
        assert!(job.set_progress(current, total, "odd"));
        let s = registry.status(&id).unwrap();
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

    let s = registry.status(&id).unwrap();
    assert_eq!(s.progress_message.as_deref(), Some(expected.as_str()));
    assert_eq!(
        serde_json::to_value(&s).unwrap()["progressMessage"],
        json!(expected)
    );
    // Exactly at the cap: kept whole; one over: cut.
    let at_cap: String = "ü".repeat(MAX_MESSAGE_CHARS);
    job.set_progress(1, 2, &at_cap);
    assert_eq!(
        registry.status(&id).unwrap().progress_message.as_deref(),
        Some(at_cap.as_str())
    );
    job.set_progress(1, 2, format!("{at_cap}!"));
    assert_eq!(
        registry.status(&id).unwrap().progress_message.as_deref(),
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
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    let ten_mb_panic = registry
        .spawn(JobRequest::default(), |_| async {
            std::panic::resume_unwind(Box::new("p".repeat(TEN_MB))) as Result<(), &str>
        })
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
    let now = registry.status(&id).unwrap();
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
    let queued = registry.status(&second).unwrap();
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
        .unwrap();
    tokio::task::yield_now().await;
    registry.cancel(&stubborn).unwrap();
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
        registry.spawn(JobRequest::default(), job),
        Err(Error::NoRuntime)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(registry.shutdown(Duration::from_secs(1)));
    let _entered = runtime.enter();
    assert_eq!(
        registry.spawn(JobRequest::default(), job),
        Err(Error::ShutDown)
    );
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    assert!(registry.is_empty());
}

#[test]
fn deeply_nested_status_json_is_refused() {
    let depth = 100_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let with = |field: &str| {
        let mut text = status_json(json!({})).to_string();
        text.pop(); // the closing brace
        format!("{text},\"{field}\":{deep}}}")
    };
    let err = serde_json::from_str::<AsynchronousJobStatus>(&with("requestBody")).unwrap_err();
    assert!(
        err.to_string().starts_with("recursion limit exceeded"),
        "{err}"
    );
    let err = serde_json::from_str::<AsynchronousJobStatus>(&with("responseBody")).unwrap_err();
    assert!(
        err.to_string().starts_with("recursion limit exceeded"),
        "{err}"
    );
    let ignored = serde_json::from_str::<AsynchronousJobStatus>(&with("callersContext"));
    assert_eq!(ignored.unwrap().job_id, JobId::from_u64(9_606_497));
    // Nesting within serde_json's limit is fine.
    let mut body = json!(1);
    for _ in 0..100 {
        body = json!([body]);
    }
    assert!(parse(&status_json(json!({ "requestBody": body }))).is_ok());
}

#[test]
fn huge_numbers_in_status_json_are_refused() {
    let refused = [
        ("runtimeMS", r#"1e400"#, "number out of range"),
        (
            "runtimeMS",
            "18446744073709551616",
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            "18446744073709551615.0",
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            "-1",
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            "-0.5",
            "expected a non-negative number of milliseconds",
        ),
        ("progressCurrent", "18446744073709551616", "expected u64"),
        ("progressTotal", "-1", "expected u64"),
        ("startedByUserId", "-3350396", "expected u64"),
        ("jobId", "18446744073709551616", "expected a job id"),
        ("jobId", "-1", "expected a job id"),
    ];
    for (field, number, why) in refused {
        let mut text = status_json(json!({ field: null })).to_string();
        text.pop();
        let text = format!("{text},\"{field}\":{number}}}");
        let err = serde_json::from_str::<AsynchronousJobStatus>(&text).unwrap_err();
        assert!(err.to_string().contains(why), "{field} = {number}: {err}");
    }
    for (number, ms) in [
        (json!(1e19), 10_000_000_000_000_000_000),
        (json!(u64::MAX), u64::MAX),
        (json!(1.5), 2),
        (json!(2.5), 3),
        (json!(-0.0), 0),
        (json!(0.4), 0),
    ] {
        let s = parse(&status_json(json!({ "runtimeMS": number }))).unwrap();
        assert_eq!(s.runtime_ms, ms, "{number}");
    }
}

#[test]
fn wrong_types_in_status_json_are_refused() {
    let refused = [
        ("jobId", json!(true), "expected a job id"),
        ("jobId", json!(1.5), "expected a job id"),
        ("jobState", json!(1), "expected"),
        (
            "jobState",
            json!("processing"),
            "unknown variant `processing`",
        ),
        ("jobState", json!("CANCELED"), "unknown variant `CANCELED`"),
        ("jobState", json!(null), ""),
        ("jobCanceling", json!("true"), "expected a boolean"),
        ("jobCanceling", json!(1), "expected a boolean"),
        ("etag", json!(5), "expected a string"),
        ("etag", json!(null), ""),
        ("startedOn", json!(1709658249417u64), "expected a string"),
        ("changedOn", json!(null), ""),
        ("startedByUserId", json!("3350396"), "expected u64"),
        ("progressCurrent", json!("5"), "expected u64"),
        ("progressCurrent", json!(5.0), "expected u64"),
        ("progressMessage", json!(5), "expected a string"),
        ("progressMessage", json!(["a"]), "expected a string"),
        ("errorMessage", json!({}), "expected a string"),
        ("exception", json!(false), "expected a string"),
        (
            "runtimeMS",
            json!("585"),
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            json!(true),
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            json!([585]),
            "expected a non-negative number of milliseconds",
        ),
    ];
    for (field, value, why) in refused {
        let mut status = status_json(json!({}));
        status[field] = value.clone();
        let err = parse_error(&status);
        assert!(err.contains(why), "{field} = {value}: {err}");
    }
    // Null (or absent) where a value is optional reads as absent.
    let s = parse(&status_json(json!({}))).unwrap();
    let mut nulls = status_json(json!({}));
    for field in [
        "jobCanceling",
        "startedByUserId",
        "progressCurrent",
        "progressTotal",
        "progressMessage",
        "runtimeMS",
        "requestBody",
        "errorMessage",
    ] {
        nulls[field] = Value::Null;
    }
    let n = parse(&nulls).unwrap();
    assert_eq!(
        (
            n.job_canceling,
            n.started_by_user_id,
            n.progress_current,
            n.runtime_ms
        ),
        (false, None, None, 0)
    );
    assert_eq!((n.progress_message, n.request_body), (None, None));
    assert_eq!(s.job_state, AsynchJobState::Processing);
}

#[test]
fn invalid_dates_in_status_json_are_refused() {
    for date in [
        "2024-02-30T17:04:09.417Z",
        "2023-02-29T00:00:00Z",
        "2024-03-05T24:00:01Z",
        "2024-03-05T17:60:09Z",
        "2024-13-05T17:04:09Z",
        "2024-03-05T17:04:09.417",
        "2024-03-05",
        "17:04:09Z",
        "2024-03-05T17:04:09+24:00",
        "2024-03-05T17:04:09 UTC",
        "Tue, 05 Mar 2024 17:04:09 GMT",
        "+12024-03-05T17:04:09Z",
        "-0001-03-05T17:04:09Z",
        "yesterday",
        "",
    ] {
        for field in ["startedOn", "changedOn"] {
            let err = parse_error(&status_json(json!({ field: date })));
            assert!(
                err.contains("expected an RFC 3339 date-time"),
                "{date}: {err}"
            );
        }
    }
    for (date, utc) in [
        ("2024-03-05 17:04:09.417Z", "2024-03-05T17:04:09.417Z"),
        ("2024-03-05t17:04:09.417z", "2024-03-05T17:04:09.417Z"),
        ("2024-03-05T18:04:09.417+01:00", "2024-03-05T17:04:09.417Z"),
        ("2024-03-05T17:04:09.417-00:00", "2024-03-05T17:04:09.417Z"),
        (
            "2024-03-05T17:04:09.1234567891234Z",
            "2024-03-05T17:04:09.123Z",
        ),
        ("2024-03-05T17:04:09Z", "2024-03-05T17:04:09.000Z"),
        ("2016-12-31T23:59:60.000Z", "2016-12-31T23:59:60.000Z"),
        ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ] {
        let s = parse(&status_json(json!({ "startedOn": date }))).unwrap();
        assert_eq!(
            serde_json::to_value(&s).unwrap()["startedOn"],
            json!(utc),
            "{date}"
        );
    }
}

#[test]
fn ten_mb_strings_in_status_json() {
    let huge = "x".repeat(TEN_MB);
    // Parsed from text only: serde_json in a debug build reads 10 MB in a good fraction of a
    // second, and from text is the way such a status would arrive.
    let with = |field: &str, value: &str| {
        let mut text = status_json(json!({ field: null })).to_string();
        text.pop();
        serde_json::from_str::<AsynchronousJobStatus>(&format!("{text},\"{field}\":\"{value}\"}}"))
    };
    let started = Instant::now();
    let s = with("progressMessage", &huge).unwrap();
    assert_eq!(
        s.progress_message.as_deref().map(str::len),
        Some(TEN_MB),
        "kept as given"
    );
    let s = with("errorDetails", &huge).unwrap();
    assert_eq!(
        s.error_details.as_deref().map(str::len),
        Some(TEN_MB),
        "kept as given"
    );
    let s = with("etag", &huge).unwrap();
    assert_eq!(s.etag.to_string().len(), TEN_MB, "kept as given");
    assert!(with("jobId", &"1".repeat(TEN_MB)).is_err());
    assert!(with("startedOn", &huge).is_err());
    assert!(with("jobState", &huge).is_err());
    assert!(started.elapsed() < NO_BLOWUP, "{:?}", started.elapsed());
}

#[test]
fn json_that_is_not_a_status_is_refused() {
    for text in [
        "",
        "null",
        "[]",
        "[1,2,3]",
        "\"PROCESSING\"",
        "42",
        "{",
        r#"{"jobId":"1""#,
        "{}",
        r#"{"jobId":"1","jobId":"2","jobState":"PROCESSING","etag":"1","startedOn":"2024-03-05T17:04:09Z","changedOn":"2024-03-05T17:04:09Z"}"#,
    ] {
        assert!(
            serde_json::from_str::<AsynchronousJobStatus>(text).is_err(),
            "{text}"
        );
    }
    for required in ["jobId", "jobState", "etag", "startedOn", "changedOn"] {
        let err = parse_error(&status_json(json!({ required: null })));
        assert_eq!(err, format!("missing field `{required}`"));
    }
}

/// Found by `parsing_arbitrary_json_never_panics`: a time that an offset moved outside years
/// 0000–9999 in UTC parsed, but the status then wrote it as `+10000-01-01T…` or `-0001-…`, which
/// is not RFC 3339 and which the crate itself refused to parse back. Now refused when parsed.
#[test]
fn a_parsed_status_serializes_to_json_that_parses_back() {
    for date in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59"] {
        for field in ["startedOn", "changedOn"] {
            let err = parse_error(&status_json(json!({ field: date })));
            assert_eq!(
                err, "date-time out of range (years 0000 to 9999 in UTC)",
                "{date}"
            );
        }
    }
    for date in [
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59+23:59",
        "0000-01-01T00:00:00Z",
    ] {
        let written =
            serde_json::to_value(parse(&status_json(json!({ "startedOn": date }))).unwrap())
                .unwrap();
        assert!(
            parse(&written).is_ok(),
            "{date} was written as {}",
            written["startedOn"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary JSON

const FIELDS: &[&str] = &[
    "jobId",
    "jobState",
    "jobCanceling",
    "etag",
    "startedOn",
    "changedOn",
    "startedByUserId",
    "progressCurrent",
    "progressTotal",
    "progressMessage",
    "errorMessage",
    "errorDetails",
    "exception",
    "requestBody",
    "responseBody",
    "runtimeMS",
    "callersContext",
    "concreteType",
];

/// Strings that a field might accept, and near misses.
fn plausible_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "PROCESSING",
            "FAILED",
            "COMPLETE",
            "CANCELED",
            "2024-03-05T17:04:09.417Z",
            "2024-03-05T17:04:09+23:59",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2016-12-31T23:59:60Z",
            "9606497",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "",
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,22}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
        any::<String>(),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        prop::sample::select(vec![0.0, -0.0, 0.5, 1.5, 1e19, 1.8446744073709552e19, -1.0])
            .prop_map(Value::from),
        plausible_string().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// An object with each status field present or not, each with a plausible or an arbitrary
/// value: most of these get deep into the field parsers.
fn status_shaped() -> impl Strategy<Value = Value> {
    let field_value = prop_oneof![3 => json_leaf(), 1 => json_value()];
    prop::collection::vec(
        (
            prop::sample::select(FIELDS.to_vec()),
            prop::option::weighted(0.8, field_value),
        ),
        FIELDS.len(),
    )
    .prop_map(|fields| {
        Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn parsing_arbitrary_json_never_panics(
        value in prop_oneof![json_value(), status_shaped()],
    ) {
        let text = value.to_string();
        let status = serde_json::from_value::<AsynchronousJobStatus>(value.clone());
        let from_text = serde_json::from_str::<AsynchronousJobStatus>(&text);
        prop_assert_eq!(status.is_ok(), from_text.is_ok());
        let _ = serde_json::from_value::<JobId>(value.clone());
        let _ = serde_json::from_str::<JobId>(&text);
        let _ = serde_json::from_value::<Etag>(value.clone());
        let _ = serde_json::from_str::<Etag>(&text);
        let _ = serde_json::from_value::<AsynchJobState>(value.clone());
        if let Ok(status) = status {
            // Written back, it parses again, and is then stable.
            let written = serde_json::to_value(&status).unwrap();
            let again: AsynchronousJobStatus = serde_json::from_value(written.clone()).unwrap();
            prop_assert_eq!(serde_json::to_value(&again).unwrap(), written);
            prop_assert_eq!(again.job_id, status.job_id);
            prop_assert_eq!(&again.etag, &status.etag);
        }
    }

    #[test]
    fn any_text_as_an_id_or_etag(text in prop_oneof![any::<String>(), "[0-9]{0,22}", "[+-]?[0-9 ]{1,4}"]) {
        let is_id = !text.is_empty()
            && text.len() <= 20
            && text.bytes().all(|b| b.is_ascii_digit())
            && text.parse::<u64>().is_ok();
        match text.parse::<JobId>() {
            Ok(id) => {
                prop_assert!(is_id, "{:?} parsed", text);
                prop_assert_eq!(id.as_u64(), text.parse::<u64>().unwrap());
                prop_assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
            }
            Err(e) => {
                prop_assert!(!is_id, "{:?} refused", text);
                prop_assert_eq!(e, Error::MalformedId);
            }
        }
        let etag: Etag = text.parse().unwrap();
        prop_assert_eq!(etag.to_string(), text.clone());
        prop_assert!(etag == *text.as_str());
        let json = serde_json::to_value(&etag).unwrap();
        prop_assert_eq!(&json, &json!(text));
        prop_assert_eq!(serde_json::from_value::<Etag>(json).unwrap(), etag);
    }
}
