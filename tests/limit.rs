//! The concurrency limit: at most N jobs run; the rest wait in FIFO order, PROCESSING and queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asyncjobs::{
    exception, AsynchJobState, CancelOutcome, JobFilter, JobHandle, JobRegistry, JobRequest,
};

mod common;

#[tokio::test(start_paused = true)]
async fn at_most_n_jobs_run_and_the_rest_start_in_submission_order() {
    let registry = JobRegistry::builder().max_running(3).build();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut ids = Vec::new();
    for i in 0..20u64 {
        let (running, most, order) = (running.clone(), most.clone(), order.clone());
        let id = registry
            .spawn(JobRequest::default(), move |job: JobHandle| async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                order.lock().unwrap().push(i);
                job.set_progress(0, 1, "running");
                tokio::time::sleep(Duration::from_millis(100 + (i % 4) * 30)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, &str>(i)
            })
            .await
            .unwrap();
        ids.push(id);
    }
    let queued = registry.status(&ids[10]).await.unwrap();
    assert_eq!(
        queued.job_state,
        AsynchJobState::Processing,
        "queued jobs are PROCESSING"
    );
    assert_eq!(
        queued.progress_message.as_deref(),
        Some("Queued: waiting for a free slot (at most 3 jobs run at once)")
    );
    assert_eq!(
        (queued.progress_current, queued.progress_total),
        (None, None)
    );
    assert_eq!(registry.local().counts().processing, 20);

    tokio::time::sleep(Duration::from_millis(150)).await;
    let started_late = registry.status(&ids[3]).await.unwrap();
    assert_eq!(started_late.progress_message.as_deref(), Some("running"));
    // startedOn is submission time (read from the wall clock at spawn), not when the job began
    // to run: the job waited 100 ms (paused clock) for a slot before its first change.
    assert!(
        started_late.changed_on - started_late.started_on >= chrono::Duration::milliseconds(100)
    );
    assert_eq!(started_late.runtime_ms, 150);

    for id in &ids {
        assert_eq!(
            registry.wait(id).await.unwrap().job_state,
            AsynchJobState::Complete
        );
    }
    assert_eq!(most.load(Ordering::SeqCst), 3);
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>(), "FIFO");
}

#[tokio::test(start_paused = true)]
async fn a_queued_job_canceled_ends_at_once_without_running() {
    let registry = JobRegistry::builder().max_running(1).build();
    let ran = Arc::new(AtomicUsize::new(0));
    let blocker = registry
        .spawn(JobRequest::default(), |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    let queued: Vec<_> = (0..3)
        .map(|_| {
            let ran = ran.clone();
            registry
                .local()
                .spawn(JobRequest::default(), move |_| async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, &str>(())
                })
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        registry.cancel(&queued[1]).await,
        Ok(CancelOutcome::Requested)
    );
    let canceled = registry.wait(&queued[1]).await.unwrap();
    assert_eq!(canceled.job_state, AsynchJobState::Failed);
    assert!(canceled.job_canceling);
    assert_eq!(canceled.exception.as_deref(), Some(exception::CANCELED));
    assert_eq!(
        canceled.error_message.as_deref(),
        Some("job was canceled while queued, before it started")
    );
    assert_eq!(
        canceled.runtime_ms, 1000,
        "ended at the cancel, not after the grace"
    );
    assert_eq!(
        registry.status(&blocker).await.unwrap().job_state,
        AsynchJobState::Processing
    );

    registry.wait(&blocker).await.unwrap();
    for id in [queued[0], queued[2]] {
        assert_eq!(
            registry.wait(&id).await.unwrap().job_state,
            AsynchJobState::Complete
        );
    }
    assert_eq!(ran.load(Ordering::SeqCst), 2, "the canceled job never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_holds_under_concurrent_spawns_cancels_and_failures() {
    let registry = JobRegistry::builder()
        .max_running(4)
        .cancel_grace(Duration::from_secs(5))
        .build();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let spawners: Vec<_> = (0..4)
        .map(|t| {
            let (registry, running, most) = (registry.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..250u64 {
                    let (running, most) = (running.clone(), most.clone());
                    let id = registry
                        .spawn(JobRequest::default(), move |_| async move {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            match i % 3 {
                                0 => Ok(()),
                                1 => Err("failed"),
                                _ => panic!("planned panic"),
                            }
                        })
                        .await
                        .unwrap();
                    if (i + t) % 5 == 0 {
                        registry.cancel(&id).await.unwrap();
                    }
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    common::quiet_planned_panics(|info| common::panic_message(info) == Some("planned panic"));
    for s in spawners {
        for id in s.await.unwrap() {
            assert!(registry.wait(&id).await.unwrap().is_terminal());
        }
    }
    assert!(
        most.load(Ordering::SeqCst) <= 4,
        "{} ran at once",
        most.load(Ordering::SeqCst)
    );
    assert!(registry
        .local()
        .list(&JobFilter::new().state(AsynchJobState::Processing))
        .jobs
        .is_empty());
    // A count moves just after its job's status: on another worker it may lag by an instant.
    while registry.local().counts().processing != 0 {
        tokio::task::yield_now().await;
    }
    // The slots all came back: a new job runs at once.
    let id = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    assert_eq!(
        registry.wait(&id).await.unwrap().job_state,
        AsynchJobState::Complete
    );
}

#[tokio::test(start_paused = true)]
async fn a_queued_job_canceled_before_it_is_polled_never_runs_even_when_a_slot_frees() {
    let registry = JobRegistry::builder().max_running(1).build();
    let ran = Arc::new(AtomicUsize::new(0));
    let spawn = |ran: Arc<AtomicUsize>| {
        registry
            .local()
            .spawn(JobRequest::default(), move |job: JobHandle| async move {
                ran.fetch_add(1, Ordering::SeqCst);
                job.cancelled().await;
                Err::<(), _>("canceled")
            })
            .unwrap()
    };
    let a = spawn(ran.clone());
    let b = spawn(ran.clone());
    // Neither task has run yet: cancel the running one, then the queued one.
    registry.cancel(&a).await.unwrap();
    registry.cancel(&b).await.unwrap();
    for id in [a, b] {
        assert_eq!(
            registry.wait(&id).await.unwrap().job_state,
            AsynchJobState::Failed
        );
    }
    assert_eq!(
        registry.status(&b).await.unwrap().error_message.as_deref(),
        Some("job was canceled while queued, before it started")
    );
    assert!(ran.load(Ordering::SeqCst) <= 1, "the queued job never ran");
    // Both slots accounted for: the next job runs at once.
    let c = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    assert_eq!(
        registry.wait(&c).await.unwrap().job_state,
        AsynchJobState::Complete
    );
}
