//! Cancellation is real: the flag shows at once, the token fires, and a job that ignores it is
//! stopped after the grace period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asyncjobs::{
    exception, AsynchJobState, CancelOutcome, JobHandle, JobRegistry, JobRequest,
    DEFAULT_CANCEL_GRACE,
};

#[tokio::test(start_paused = true)]
async fn a_cooperative_job_stops_and_fails_with_its_own_error() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 100, "working");
            job.cancelled().await;
            assert!(job.is_canceling());
            Err::<(), _>(std::io::Error::other("stopped at a safe point"))
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let before = registry.status(&id).await.unwrap();

    assert_eq!(registry.cancel(&id).await, Ok(CancelOutcome::Requested));
    let flagged = registry.status(&id).await.unwrap();
    assert!(flagged.job_canceling, "the flag shows at once");
    assert_eq!(flagged.job_state, AsynchJobState::Processing);
    assert_ne!(flagged.etag, before.etag, "setting the flag is a change");
    assert_eq!(
        registry.cancel(&id).await,
        Ok(CancelOutcome::AlreadyRequested)
    );
    assert_eq!(
        registry.status(&id).await.unwrap().etag,
        flagged.etag,
        "a second cancel changes nothing"
    );

    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.job_state, AsynchJobState::Failed);
    assert!(done.job_canceling);
    assert_eq!(
        done.error_message.as_deref(),
        Some("stopped at a safe point")
    );
    assert_eq!(done.exception.as_deref(), Some("std::io::error::Error"));
    assert_eq!(
        done.runtime_ms, 0,
        "it stopped at once, well within the grace"
    );
    assert_eq!(
        registry.cancel(&id).await,
        Ok(CancelOutcome::AlreadyFinished)
    );
    assert_eq!(
        registry.status(&id).await.unwrap(),
        done,
        "cancelling a finished job changes nothing"
    );
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_that_ignores_cancel_is_stopped_after_the_grace() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(5))
        .build();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = SetOnDrop(dropped.clone());
    let id = registry
        .spawn(JobRequest::default(), |_job| async move {
            let _guard = guard;
            // Never looks at the token.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(registry.cancel(&id).await, Ok(CancelOutcome::Requested));

    tokio::time::sleep(Duration::from_millis(4900)).await;
    let s = registry.status(&id).await.unwrap();
    assert_eq!(
        s.job_state,
        AsynchJobState::Processing,
        "still within the grace"
    );
    assert!(!dropped.load(Ordering::SeqCst));

    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.job_state, AsynchJobState::Failed);
    assert!(done.job_canceling);
    assert_eq!(done.exception.as_deref(), Some(exception::CANCELED));
    assert_eq!(
        done.error_message.as_deref(),
        Some("job was canceled and did not stop within its 5s grace period, so it was stopped")
    );
    assert_eq!(done.runtime_ms, 6000, "1 s of work + 5 s of grace");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the job's future was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_grace_is_thirty_seconds() {
    assert_eq!(DEFAULT_CANCEL_GRACE, Duration::from_secs(30));
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_job| async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    registry.cancel(&id).await.unwrap();
    assert_eq!(registry.wait(&id).await.unwrap().runtime_ms, 30_000);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_completes_despite_cancel_is_complete() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.cancelled().await;
            // Already done with the real work: the result stands.
            Ok::<_, std::io::Error>(serde_json::json!({"rows": 3}))
        })
        .await
        .unwrap();
    registry.cancel(&id).await.unwrap();
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.job_state, AsynchJobState::Complete);
    assert!(done.job_canceling);
    assert_eq!(
        done.response_body.as_deref(),
        Some(&serde_json::json!({"rows": 3}))
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_before_the_job_first_runs() {
    let registry = JobRegistry::builder().cancel_grace(Duration::ZERO).build();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            if job.is_canceling() {
                return Err("canceled before it began");
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(registry.cancel(&id).await, Ok(CancelOutcome::Requested));
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(
        done.error_message.as_deref(),
        Some("canceled before it began"),
        "the job's first poll sees the token"
    );
}

#[tokio::test(start_paused = true)]
async fn a_child_token_of_the_job_is_canceled_with_it() {
    let registry = JobRegistry::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| {
            let sub = job.cancellation_token().child_token();
            async move {
                let worker = tokio::spawn(async move {
                    sub.cancelled().await;
                    "sub-task saw the cancel"
                });
                let said = worker.await.unwrap();
                tx.send(said).unwrap();
                Err::<(), _>("canceled")
            }
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    registry.cancel(&id).await.unwrap();
    assert_eq!(rx.await.unwrap(), "sub-task saw the cancel");
    assert_eq!(
        registry.wait(&id).await.unwrap().job_state,
        AsynchJobState::Failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_completion_ends_each_job_exactly_once() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_millis(50))
        .build();
    let mut ids = Vec::new();
    for i in 0..500u64 {
        let id = registry
            .spawn(JobRequest::default(), move |job: JobHandle| async move {
                for step in 0..(i % 7) {
                    job.set_progress(step, 7, "step");
                    tokio::task::yield_now().await;
                }
                if i % 3 == 0 && job.is_canceling() {
                    return Err("canceled");
                }
                Ok(i)
            })
            .await
            .unwrap();
        ids.push(id);
    }
    let cancels: Vec<_> = ids
        .iter()
        .map(|&id| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.cancel(&id).await.unwrap() })
        })
        .collect();
    for c in cancels {
        c.await.unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let s = registry.wait(id).await.unwrap();
        match s.job_state {
            AsynchJobState::Complete => {
                assert_eq!(s.response_body.as_deref(), Some(&serde_json::json!(i)))
            }
            AsynchJobState::Failed => {
                assert!(s.job_canceling, "only a canceled job fails here");
                assert_eq!(s.error_message.as_deref(), Some("canceled"));
            }
            AsynchJobState::Processing => unreachable!("wait returns a final status"),
        }
        // A finished job's status is final: a late cancel changes nothing.
        assert_eq!(
            registry.cancel(id).await,
            Ok(CancelOutcome::AlreadyFinished)
        );
        assert_eq!(registry.status(id).await.unwrap(), s);
    }
}

/// A job, and the final status of a failure the registry makes, can tell what asked the job to
/// stop: a request, the shutdown, or a time limit.
#[tokio::test(start_paused = true)]
async fn the_cause_of_a_cancel_is_visible_to_the_job_and_in_the_final_status() {
    use asyncjobs::CancelCause;
    use std::sync::{Arc, Mutex};

    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(1))
        .build();
    // What each job saw as the cause once canceled; each then ignores the cancel.
    type Seen = Vec<(u8, Option<CancelCause>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let stubborn = |n: u8| {
        let seen = seen.clone();
        move |job: JobHandle| async move {
            assert_eq!(job.cancel_cause(), None, "nothing asked yet");
            job.cancelled().await;
            seen.lock().unwrap().push((n, job.cancel_cause()));
            std::future::pending::<Result<(), std::io::Error>>().await
        }
    };
    let requested = registry
        .spawn(JobRequest::default(), stubborn(1))
        .await
        .unwrap();
    let timed = registry
        .spawn(
            JobRequest::default().time_limit(Duration::from_secs(5)),
            stubborn(2),
        )
        .await
        .unwrap();
    let at_shutdown = registry
        .spawn(JobRequest::default(), stubborn(3))
        .await
        .unwrap();
    tokio::task::yield_now().await;
    registry.cancel(&requested).await.unwrap();
    let ended = registry.wait(&requested).await.unwrap();
    assert_eq!(
        ended.error_message.as_deref(),
        Some("job was canceled and did not stop within its 1s grace period, so it was stopped")
    );
    // The message stays Synapse-plain; the cause is in the details.
    assert_eq!(ended.error_details.as_deref(), Some("canceled on request"));
    let ended = registry.wait(&timed).await.unwrap();
    assert_eq!(ended.exception.as_deref(), Some(exception::TIMED_OUT));
    registry.shutdown(Duration::from_secs(10)).await;
    let ended = registry.status(&at_shutdown).await.unwrap();
    assert_eq!(ended.exception.as_deref(), Some(exception::CANCELED));
    assert_eq!(
        ended.error_details.as_deref(),
        Some("canceled by the registry's shutdown")
    );
    assert!(ended.job_canceling);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|(n, _)| *n);
    assert_eq!(
        seen,
        [
            (1, Some(CancelCause::Requested)),
            (2, Some(CancelCause::TimeLimit)),
            (3, Some(CancelCause::Shutdown)),
        ]
    );
}

/// A queued job canceled by a shutdown says so.
#[tokio::test(start_paused = true)]
async fn a_queued_job_canceled_says_by_what() {
    let registry = JobRegistry::builder().max_running(1).build();
    let first = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("stopped"))
        })
        .await
        .unwrap();
    let queued = registry
        .spawn(JobRequest::default(), |_| async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    let second_queued = registry
        .spawn(JobRequest::default(), |_| async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    registry.cancel(&queued).await.unwrap();
    let canceled = registry.status(&queued).await.unwrap();
    assert_eq!(
        canceled.error_message.as_deref(),
        Some("job was canceled while queued, before it started")
    );
    assert_eq!(
        canceled.error_details.as_deref(),
        Some("canceled on request")
    );
    registry.shutdown(Duration::from_secs(1)).await;
    let canceled = registry.status(&second_queued).await.unwrap();
    assert_eq!(
        canceled.error_details.as_deref(),
        Some("canceled by the registry's shutdown")
    );
    assert!(registry.status(&first).await.unwrap().job_canceling);
}
