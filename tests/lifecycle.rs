//! Every state transition, the etag rules, and what ends up in a finished status.

use std::fmt;
use std::time::Duration;

use asyncjobs::{
    exception, AsynchJobState, Error, JobHandle, JobRegistry, JobRequest, MAX_ERROR_DETAILS_BYTES,
    MAX_MESSAGE_CHARS,
};
use serde_json::json;

mod common;
use common::gated;

#[tokio::test(start_paused = true)]
async fn processing_from_the_moment_spawn_returns() {
    let registry = JobRegistry::new();
    let (id, _job, go) = gated(&registry, JobRequest::default());
    let s = registry.status(&id).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Processing);
    assert_eq!(s.job_id, id);
    assert!(!s.job_canceling);
    assert_eq!(s.etag, "1");
    assert_eq!(s.started_on, s.changed_on);
    assert_eq!(s.runtime_ms, 0);
    assert_eq!(
        (s.progress_current, s.progress_total, s.progress_message),
        (None, None, None)
    );
    go.send(()).unwrap();
    assert_eq!(
        registry.wait(&id).await.unwrap().job_state,
        AsynchJobState::Complete
    );
}

#[tokio::test(start_paused = true)]
async fn progress_changes_the_etag_only_when_something_changed() {
    let registry = JobRegistry::new();
    let (id, job, go) = gated(&registry, JobRequest::default());
    let first = registry.status(&id).await.unwrap();

    tokio::time::advance(Duration::from_millis(10)).await;
    assert!(job.set_progress(1, 10, "reading"));
    let second = registry.status(&id).await.unwrap();
    assert_ne!(second.etag, first.etag);
    assert_eq!(
        second.changed_on - first.changed_on,
        chrono::Duration::milliseconds(10)
    );
    assert_eq!(
        (second.progress_current, second.progress_total),
        (Some(1), Some(10))
    );
    assert_eq!(second.progress_message.as_deref(), Some("reading"));

    // The same report again, later, from a String: nothing changes.
    tokio::time::advance(Duration::from_millis(10)).await;
    assert!(!job.set_progress(1, 10, String::from("reading")));
    let third = registry.status(&id).await.unwrap();
    assert_eq!(third.etag, second.etag);
    assert_eq!(third.changed_on, second.changed_on);
    assert_eq!(
        third.runtime_ms, 20,
        "runtime is live even when nothing changed"
    );

    // Each field alone is a change.
    let mut seen = vec![first.etag, second.etag];
    for (current, total, message) in [
        (2, 10, "reading"),
        (2, 11, "reading"),
        (2, 11, "writing"),
        (2, 11, ""),
    ] {
        assert!(job.set_progress(current, total, message));
        let etag = registry.status(&id).await.unwrap().etag;
        assert!(!seen.contains(&etag), "etag {etag} repeated");
        seen.push(etag);
    }
    assert_eq!(
        registry
            .status(&id)
            .await
            .unwrap()
            .progress_message
            .as_deref(),
        Some("")
    );

    go.send(()).unwrap();
    let done = registry.wait(&id).await.unwrap();
    assert!(!seen.contains(&done.etag), "finishing is a change");
    assert_eq!(done.progress_current, Some(11));
    assert_eq!(done.progress_total, Some(11));
    assert_eq!(done.progress_message.as_deref(), Some("Complete"));

    // After the end, progress is ignored and the status never changes again.
    assert!(!job.set_progress(5, 5, "late"));
    tokio::time::advance(Duration::from_secs(5)).await;
    let later = registry.status(&id).await.unwrap();
    assert_eq!(later, done);
    assert_eq!(job.status(), done, "the handle sees the same status");
}

#[tokio::test(start_paused = true)]
async fn runtime_is_live_then_fixed() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_job| async {
            tokio::time::sleep(Duration::from_millis(1234)).await;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    tokio::task::yield_now().await; // let the job start its sleep
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(registry.status(&id).await.unwrap().runtime_ms, 600);
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.runtime_ms, 1234);
    assert_eq!(
        done.response_body, None,
        "() serializes to null: no responseBody"
    );
    assert_eq!(done.progress_current, None, "never reported: stays absent");
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(registry.status(&id).await.unwrap().runtime_ms, 1234);
    assert_eq!(
        done.changed_on - done.started_on,
        chrono::Duration::milliseconds(1234)
    );
}

#[derive(Debug)]
struct Layer {
    message: String,
    source: Option<Box<Layer>>,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

fn chain(messages: &[&str]) -> Layer {
    let mut error: Option<Layer> = None;
    for m in messages.iter().rev() {
        error = Some(Layer {
            message: m.to_string(),
            source: error.map(Box::new),
        });
    }
    error.unwrap()
}

#[tokio::test]
async fn errors_keep_their_message_source_chain_and_type_name() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(7, 9, "exporting");
            Err::<(), _>(chain(&[
                "export failed",
                "could not write part 3",
                "disk full",
            ]))
        })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(s.error_message.as_deref(), Some("export failed"));
    assert_eq!(
        s.error_details.as_deref(),
        Some("export failed\ncaused by: could not write part 3\ncaused by: disk full")
    );
    assert_eq!(s.exception.as_deref(), Some("lifecycle::Layer"));
    assert_eq!(s.response_body, None);
    assert_eq!(
        (s.progress_current, s.progress_message.as_deref()),
        (Some(7), Some("exporting")),
        "a failure keeps the last progress"
    );
}

#[tokio::test]
async fn boxed_and_string_errors_are_accepted() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_job| async {
            Err::<(), _>("plain text error")
        })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(s.error_message.as_deref(), Some("plain text error"));
    assert_eq!(s.exception.as_deref(), Some("&str"));
}

#[tokio::test]
async fn long_multibyte_messages_are_cut_on_character_boundaries() {
    let registry = JobRegistry::new();
    // 'é' is two bytes, '✓' three, '🦀' four: every cut point is inside some character's bytes.
    let long: String = "é✓🦀a".repeat(1000); // 4000 characters
    let expected: String = long.chars().take(MAX_MESSAGE_CHARS).collect();
    let progress = long.clone();
    let id = registry
        .spawn(JobRequest::default(), move |job: JobHandle| async move {
            job.set_progress(1, 2, &progress);
            assert!(
                !job.set_progress(1, 2, &progress),
                "the same long message again is no change"
            );
            let s = job.status();
            assert_eq!(
                s.progress_message.as_deref().map(|m| m.chars().count()),
                Some(MAX_MESSAGE_CHARS)
            );
            Err::<(), _>(chain(&[&progress, &"ü".repeat(MAX_ERROR_DETAILS_BYTES)]))
        })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(s.error_message.as_deref(), Some(expected.as_str()));
    let details = s.error_details.as_deref().unwrap();
    assert!(details.len() <= MAX_ERROR_DETAILS_BYTES);
    assert!(
        details.len() > MAX_ERROR_DETAILS_BYTES - 4,
        "filled up to the cap"
    );
    assert!(
        details.starts_with(&long),
        "the whole first message is kept in the details"
    );
    assert!(details.ends_with('ü'));
}

/// An error whose chain never ends: `source()` returns itself.
#[derive(Debug)]
struct Loop;

impl fmt::Display for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("loop")
    }
}

impl std::error::Error for Loop {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self)
    }
}

#[tokio::test]
async fn a_cyclic_source_chain_is_cut() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_job| async { Err::<(), _>(Loop) })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    let details = s.error_details.as_deref().unwrap();
    assert_eq!(
        details.lines().count(),
        66,
        "the error, 64 causes and a note"
    );
    assert!(details.ends_with("(more causes not shown)"));
}

#[tokio::test]
async fn a_panicking_job_fails_with_the_panic_message_and_the_registry_goes_on() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 3, "about to panic");
            let n: Option<u32> = None;
            if n.is_none() {
                panic!("index {} out of range", 7);
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(s.error_message.as_deref(), Some("index 7 out of range"));
    assert_eq!(s.exception.as_deref(), Some(exception::PANICKED));

    let id = registry
        .spawn(JobRequest::default(), |_job| async {
            std::panic::panic_any(42_u8) as Result<(), &str>
        })
        .await
        .unwrap();
    assert_eq!(
        registry.wait(&id).await.unwrap().error_message.as_deref(),
        Some("job panicked")
    );

    // The closure itself panicking (before it returns a future) is caught the same way.
    let id = registry
        .spawn(
            JobRequest::default(),
            |_job| -> std::future::Ready<Result<(), &'static str>> { panic!("closure panicked") },
        )
        .await
        .unwrap();
    let s = registry.status(&id).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(s.error_message.as_deref(), Some("closure panicked"));

    let id = registry
        .spawn(JobRequest::default(), |_job| async { Ok::<_, &str>(5) })
        .await
        .unwrap();
    assert_eq!(
        registry.wait(&id).await.unwrap().response_body.as_deref(),
        Some(&json!(5))
    );
}

struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no JSON for you"))
    }
}

#[tokio::test]
async fn a_result_that_cannot_be_serialized_fails_the_job() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_job| async {
            Ok::<_, &str>(Unserializable)
        })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(
        s.exception.as_deref(),
        Some(exception::RESPONSE_NOT_SERIALIZABLE)
    );
    assert_eq!(
        s.error_message.as_deref(),
        Some("job result could not be serialized: no JSON for you")
    );
    assert_eq!(s.response_body, None);
}

#[tokio::test]
async fn unknown_ids_are_errors() {
    let registry = JobRegistry::new();
    let id: asyncjobs::JobId = "123".parse().unwrap();
    assert_eq!(registry.status(&id).await, Err(Error::UnknownJob(id)));
    assert_eq!(registry.cancel(&id).await, Err(Error::UnknownJob(id)));
    assert_eq!(registry.wait(&id).await, Err(Error::UnknownJob(id)));
    assert_eq!(Error::UnknownJob(id).to_string(), "unknown job 123");
    assert_eq!(
        "12x".parse::<asyncjobs::JobId>().unwrap_err().to_string(),
        "malformed job id: expected 1 to 20 ascii digits"
    );
}

#[tokio::test]
async fn ids_count_up_from_the_first() {
    let registry = JobRegistry::builder().first_job_id(1000).build();
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            registry
                .local()
                .spawn(JobRequest::default(), |_job| async { Ok::<_, &str>(()) })
                .unwrap()
                .as_u64()
        })
        .collect();
    assert_eq!(ids, [1000, 1001, 1002]);

    // By default ids start from the clock, so they do not repeat across restarts.
    let a = JobRegistry::new()
        .spawn(JobRequest::default(), |_job| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    assert!(
        a.as_u64() / 1000 <= now_ms && a.as_u64() / 1000 + 60_000 > now_ms,
        "{a}"
    );
}
