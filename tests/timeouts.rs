//! Per-request time limits: a total limit and a stall limit, distinct from a user's cancel.

use std::time::Duration;

use asyncjobs::{exception, AsynchJobState, JobHandle, JobRegistry, JobRequest};

#[tokio::test(start_paused = true)]
async fn a_job_over_its_time_limit_is_canceled_and_named_so() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(2))
        .build();
    let id = registry
        .spawn(JobRequest::default().time_limit(Duration::from_secs(10)), |job: JobHandle| async move {
            let mut i = 0;
            loop {
                i += 1;
                job.set_progress(i, 1000, "busy");
                tokio::select! {
                    () = job.cancelled() => return Err::<(), _>(std::io::Error::other("stopped early")),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
        .await.unwrap();
    tokio::time::sleep(Duration::from_millis(9_500)).await;
    assert!(!registry.status(&id).await.unwrap().job_canceling);
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.job_state, AsynchJobState::Failed);
    assert!(done.job_canceling);
    assert_eq!(done.exception.as_deref(), Some(exception::TIMED_OUT));
    assert_eq!(
        done.error_message.as_deref(),
        Some("job exceeded its time limit of 10s")
    );
    assert_eq!(
        done.error_details.as_deref(),
        Some("job exceeded its time limit of 10s; then: stopped early")
    );
    assert_eq!(
        done.runtime_ms, 10_000,
        "it stopped as soon as its token fired"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_ignoring_its_time_limit_is_stopped_after_the_grace() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(2))
        .build();
    let id = registry
        .spawn(
            JobRequest::default().time_limit(Duration::from_secs(5)),
            |_| async {
                std::future::pending::<()>().await;
                Ok::<_, &str>(())
            },
        )
        .await
        .unwrap();
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.exception.as_deref(), Some(exception::TIMED_OUT));
    assert_eq!(
        done.error_message.as_deref(),
        Some("job exceeded its time limit of 5s")
    );
    assert_eq!(done.runtime_ms, 7_000, "5 s limit + 2 s grace");
}

#[tokio::test(start_paused = true)]
async fn a_stall_limit_fires_only_without_progress() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(1))
        .build();
    let id = registry
        .spawn(
            JobRequest::default().stall_limit(Duration::from_secs(3)),
            |job: JobHandle| async move {
                // Progress every 2 s for 20 s: never stalled.
                for i in 0..10 {
                    job.set_progress(i, 10, "steady");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                // Then silence.
                std::future::pending::<()>().await;
                Ok::<_, &str>(())
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        !registry.status(&id).await.unwrap().job_canceling,
        "steady progress is no stall"
    );
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.exception.as_deref(), Some(exception::TIMED_OUT));
    assert_eq!(
        done.error_message.as_deref(),
        Some("job made no progress for 3s, its stall limit")
    );
    // Last progress at 18 s; stalled at 21 s; stopped after 1 s of grace.
    assert_eq!(done.runtime_ms, 22_000);
}

#[tokio::test(start_paused = true)]
async fn a_user_cancel_is_not_a_timeout_and_ok_after_a_timeout_is_complete() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(1))
        .build();
    let canceled = registry
        .spawn(
            JobRequest::default().time_limit(Duration::from_secs(10)),
            |job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>("canceled by user")
            },
        )
        .await
        .unwrap();
    tokio::task::yield_now().await;
    registry.cancel(&canceled).await.unwrap();
    let s = registry.wait(&canceled).await.unwrap();
    assert_eq!(s.error_message.as_deref(), Some("canceled by user"));
    assert_eq!(s.exception.as_deref(), Some("&str"));

    let finished_anyway = registry
        .spawn(
            JobRequest::default().time_limit(Duration::from_secs(1)),
            |job: JobHandle| async move {
                job.cancelled().await;
                Ok::<_, &str>("partial result")
            },
        )
        .await
        .unwrap();
    let s = registry.wait(&finished_anyway).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Complete);
    assert!(s.job_canceling);
}

#[tokio::test(start_paused = true)]
async fn time_limits_count_from_the_start_of_running_not_from_the_queue() {
    let registry = JobRegistry::builder().max_running(1).build();
    let first = registry
        .spawn(JobRequest::default(), |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    let second = registry
        .spawn(
            JobRequest::default().time_limit(Duration::from_secs(10)),
            |_| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, &str>(())
            },
        )
        .await
        .unwrap();
    registry.wait(&first).await.unwrap();
    let s = registry.wait(&second).await.unwrap();
    assert_eq!(
        s.job_state,
        AsynchJobState::Complete,
        "30 s queued + 5 s running is within a 10 s limit"
    );
    assert_eq!(
        s.runtime_ms, 35_000,
        "runtime counts from submission, as startedOn"
    );
}
