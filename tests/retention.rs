//! Finished statuses are kept for a time and up to a count, then dropped; running jobs never are.

use std::time::Duration;

use asyncjobs::{
    AsynchJobState, Error, JobHandle, JobRegistry, JobRequest, DEFAULT_KEEP_FINISHED_AT_MOST,
    DEFAULT_KEEP_FINISHED_FOR,
};

mod common;
use common::quick;

#[tokio::test(start_paused = true)]
async fn finished_statuses_expire_after_the_retention_time() {
    assert_eq!(DEFAULT_KEEP_FINISHED_FOR, Duration::from_secs(3600));
    let registry = JobRegistry::builder()
        .keep_finished_for(Duration::from_secs(60))
        .build();
    let done = quick(&registry).unwrap();
    let long = registry
        .spawn(JobRequest::default(), |_job| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    registry.wait(&done).await.unwrap();

    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        registry.status(&done).await.unwrap().job_state,
        AsynchJobState::Complete
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(registry.status(&done).await, Err(Error::UnknownJob(done)));
    assert_eq!(registry.cancel(&done).await, Err(Error::UnknownJob(done)));
    assert_eq!(
        registry.local().len(),
        1,
        "the expired status was dropped, not just hidden"
    );

    // A running job is never dropped, however old.
    tokio::time::advance(Duration::from_secs(500)).await;
    assert_eq!(
        registry.status(&long).await.unwrap().job_state,
        AsynchJobState::Processing
    );
    let final_status = registry.wait(&long).await.unwrap();
    assert_eq!(final_status.runtime_ms, 600_000);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        registry.status(&long).await.unwrap(),
        final_status,
        "kept for the time after it finished"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(registry.status(&long).await, Err(Error::UnknownJob(long)));
    assert!(registry.local().is_empty());
}

#[tokio::test(start_paused = true)]
async fn at_most_the_configured_count_of_finished_statuses_is_kept() {
    assert_eq!(DEFAULT_KEEP_FINISHED_AT_MOST, 10_000);
    let registry = JobRegistry::builder().keep_finished_at_most(3).build();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let running = registry
        .spawn(JobRequest::default(), |_job| async move {
            wait.await.ok();
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    let mut finished = Vec::new();
    for _ in 0..10 {
        let id = quick(&registry).unwrap();
        registry.wait(&id).await.unwrap();
        finished.push(id);
    }
    assert_eq!(registry.local().len(), 4, "3 finished and the running one");
    for id in &finished[..7] {
        assert_eq!(
            registry.status(id).await,
            Err(Error::UnknownJob(*id)),
            "oldest dropped first"
        );
    }
    for id in &finished[7..] {
        assert!(registry.status(id).await.is_ok());
    }
    assert_eq!(
        registry.status(&running).await.unwrap().job_state,
        AsynchJobState::Processing
    );
    go.send(()).unwrap();
    registry.wait(&running).await.unwrap();
    assert_eq!(registry.local().len(), 3);
    assert_eq!(
        registry.status(&finished[7]).await,
        Err(Error::UnknownJob(finished[7]))
    );
}

#[tokio::test(start_paused = true)]
async fn keeping_none_drops_at_once_but_a_waiter_still_gets_the_final_status() {
    let registry = JobRegistry::builder().keep_finished_at_most(0).build();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 1, "done");
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, &str>(7)
        })
        .await
        .unwrap();
    let final_status = registry.wait(&id).await.unwrap();
    assert_eq!(
        final_status.response_body.as_deref(),
        Some(&serde_json::json!(7))
    );
    assert_eq!(registry.status(&id).await, Err(Error::UnknownJob(id)));
    assert!(registry.local().is_empty());
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_by_the_limits_not_the_job_count() {
    let registry = JobRegistry::builder().keep_finished_at_most(100).build();
    for _ in 0..20 {
        let ids: Vec<_> = (0..500).map(|_| quick(&registry).unwrap()).collect();
        for id in ids.iter().rev().take(1) {
            registry.wait(id).await.unwrap();
        }
        tokio::task::yield_now().await;
        assert!(
            registry.local().len() <= 100 + 500,
            "{}",
            registry.local().len()
        );
    }
    // Let every job finish.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(registry.local().len(), 100);
}
