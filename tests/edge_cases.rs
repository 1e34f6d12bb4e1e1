//! Fixes found in review, each pinned by a test: hostile limits, a runtime without a timer,
//! multi-line errors, long-polling a finished job, queued cancels, sub-task tokens, feeds at
//! shutdown.

use std::time::Duration;

use asyncjobs::{exception, AsynchJobState, CancelOutcome, JobHandle, JobRegistry, JobRequest};

#[tokio::test(start_paused = true)]
async fn limits_too_large_to_reach_are_no_limits() {
    let registry = JobRegistry::builder().cancel_grace(Duration::MAX).build();
    let id = registry
        .spawn(
            JobRequest::default()
                .time_limit(Duration::MAX)
                .stall_limit(Duration::MAX),
            |job: JobHandle| async move {
                job.set_progress(1, 1, "done");
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, &str>(())
            },
        )
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(s.job_state, AsynchJobState::Complete);
}

#[test]
fn a_runtime_without_a_timer_stops_canceled_jobs_instead_of_panicking() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap(); // no enable_time
    runtime.block_on(async {
        let registry = JobRegistry::new();
        let id = registry
            .spawn(JobRequest::default(), |_| async {
                std::future::pending::<()>().await;
                Ok::<_, &str>(())
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        registry.cancel(&id).await.unwrap();
        let s = registry.wait(&id).await.unwrap();
        assert_eq!(s.job_state, AsynchJobState::Failed);
        assert_eq!(s.exception.as_deref(), Some(exception::ABORTED));
        assert!(
            s.error_message.as_deref().unwrap().contains("no timer"),
            "{:?}",
            s.error_message
        );

        let other = registry
            .spawn(JobRequest::default(), |_| async {
                std::future::pending::<()>().await;
                Ok::<_, &str>(())
            })
            .await
            .unwrap();
        let summary = registry.shutdown(Duration::from_secs(1)).await;
        assert_eq!(summary.running, 1);
        assert_eq!(
            registry.status(&other).await.unwrap().job_state,
            AsynchJobState::Failed
        );
    });
}

#[derive(Debug)]
struct MultiLine;

impl std::fmt::Display for MultiLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("query failed\nline 2 of the message\nline 3")
    }
}

impl std::error::Error for MultiLine {}

#[tokio::test]
async fn the_error_message_is_the_first_line_and_the_details_keep_all() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_| async { Err::<(), _>(MultiLine) })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(s.error_message.as_deref(), Some("query failed"));
    assert_eq!(
        s.error_details.as_deref(),
        Some("query failed\nline 2 of the message\nline 3")
    );
}

#[tokio::test(start_paused = true)]
async fn long_polling_a_finished_job_answers_at_once() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    let done = registry.wait(&id).await.unwrap();
    let again = tokio::time::timeout(
        Duration::from_secs(1),
        registry.wait_for_change(&id, &done.etag),
    )
    .await
    .expect("a finished job never changes: no point waiting")
    .unwrap();
    assert_eq!(again, done);
}

#[tokio::test(start_paused = true)]
async fn canceling_a_queued_job_ends_it_before_cancel_returns() {
    let registry = JobRegistry::builder().max_running(1).build();
    let _blocker = registry
        .spawn(JobRequest::default(), |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    let queued = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    assert_eq!(registry.cancel(&queued).await, Ok(CancelOutcome::Requested));
    let s = registry.status(&queued).await.unwrap();
    assert_eq!(
        s.job_state,
        AsynchJobState::Failed,
        "ended at once, not when its task next runs"
    );
    assert!(s.job_canceling);
    assert_eq!(
        registry.cancel(&queued).await,
        Ok(CancelOutcome::AlreadyFinished)
    );
}

#[tokio::test(start_paused = true)]
async fn a_sub_task_token_cancels_the_sub_task_not_the_job() {
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            let sub = job.cancellation_token();
            sub.cancel();
            assert!(!job.is_canceling());
            Ok::<_, &str>("went on")
        })
        .await
        .unwrap();
    let s = registry.wait(&id).await.unwrap();
    assert_eq!(
        (s.job_state, s.job_canceling),
        (AsynchJobState::Complete, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_feed_returns_every_final_status_before_it_ends_at_shutdown() {
    for _ in 0..50 {
        let registry = JobRegistry::new();
        let mut feed = registry.watch_all();
        let ids: Vec<_> = (0..8)
            .map(|_| {
                registry
                    .local()
                    .spawn(JobRequest::default(), |job: JobHandle| async move {
                        job.cancelled().await;
                        Err::<(), _>("canceled")
                    })
                    .unwrap()
            })
            .collect();
        let reader = tokio::spawn(async move {
            let mut finals = std::collections::HashSet::new();
            while let Some(s) = feed.next().await {
                if s.is_terminal() {
                    finals.insert(s.job_id);
                }
            }
            finals
        });
        registry.shutdown(Duration::from_secs(5)).await;
        let finals = reader.await.unwrap();
        assert_eq!(
            finals.len(),
            ids.len(),
            "the feed ended before every final status"
        );
    }
}
