//! Shutdown refuses new jobs, cancels every job, waits up to the grace, stops the rest, and leaves
//! every status readable and none PROCESSING.

use std::time::Duration;

use asyncjobs::{exception, AsynchJobState, Error, JobFilter, JobHandle, JobRegistry, JobRequest};

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_waits_then_stops_the_rest() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(3600))
        .max_running(10)
        .build();
    let done = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(1) })
        .await
        .unwrap();
    registry.wait(&done).await.unwrap();
    let polite: Vec<_> = (0..5)
        .map(|_| {
            registry
                .local()
                .spawn(JobRequest::default(), |job: JobHandle| async move {
                    job.cancelled().await;
                    tokio::time::sleep(Duration::from_secs(1)).await; // cleanup takes a while
                    Err::<(), _>("canceled")
                })
                .unwrap()
        })
        .collect();
    let stubborn: Vec<_> = (0..5)
        .map(|_| {
            registry
                .local()
                .spawn(JobRequest::default(), |_| async {
                    std::future::pending::<()>().await;
                    Ok::<_, &str>(())
                })
                .unwrap()
        })
        .collect();
    let queued = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    tokio::task::yield_now().await;

    let summary = registry.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (
            summary.running,
            summary.finished_within_grace,
            summary.stopped
        ),
        (11, 6, 5)
    );
    assert_eq!(summary.still_running, 0, "stopped jobs' code ended too");
    assert!(registry.is_shut_down());
    assert!(
        registry
            .local()
            .list(&JobFilter::new().state(AsynchJobState::Processing))
            .jobs
            .is_empty(),
        "none PROCESSING"
    );
    assert_eq!(registry.local().counts().processing, 0);

    for id in &polite {
        let s = registry.status(id).await.unwrap();
        assert_eq!(
            (s.job_state, s.job_canceling),
            (AsynchJobState::Failed, true)
        );
        assert_eq!(s.error_message.as_deref(), Some("canceled"));
    }
    for id in &stubborn {
        let s = registry.status(id).await.unwrap();
        assert_eq!(s.exception.as_deref(), Some(exception::CANCELED));
        assert_eq!(
            s.error_message.as_deref(),
            Some("job was stopped by the registry's shutdown")
        );
        assert_eq!(s.runtime_ms, 5_000);
    }
    let s = registry.status(&queued).await.unwrap();
    assert_eq!(
        s.error_message.as_deref(),
        Some("job was canceled while queued, before it started")
    );
    assert_eq!(
        registry.status(&done).await.unwrap().job_state,
        AsynchJobState::Complete,
        "finished statuses stay readable"
    );

    let refused = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await;
    assert_eq!(refused, Err(Error::ShutDown));
    assert_eq!(Error::ShutDown.to_string(), "job registry is shut down");
    let again = registry.shutdown(Duration::from_secs(5)).await;
    assert_eq!((again.running, again.stopped), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_under_load_with_pollers_leaves_nothing_processing() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(60))
        .build();
    let spawner = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0u64.. {
                let spawned = registry
                    .spawn(JobRequest::default(), move |job: JobHandle| async move {
                        loop {
                            job.set_progress(i, 0, "spinning");
                            if i % 2 == 0 && job.is_canceling() {
                                return Err::<(), _>("canceled");
                            }
                            tokio::task::yield_now().await;
                        }
                    })
                    .await;
                match spawned {
                    Ok(id) => ids.push(id),
                    Err(e) => return (ids, e),
                }
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            unreachable!()
        })
    };
    let poller = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !registry.is_shut_down() {
                reads += registry.local().list(&JobFilter::new()).jobs.len() as u64;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    while registry.local().len() < 2_000 {
        tokio::task::yield_now().await;
    }
    let summary = registry.shutdown(Duration::from_millis(200)).await;
    let (ids, error) = spawner.await.unwrap();
    assert_eq!(error, Error::ShutDown);
    assert!(poller.await.unwrap() > 0);
    assert!(summary.running >= 2_000);
    assert_eq!(
        summary.running,
        summary.finished_within_grace + summary.stopped
    );
    for id in &ids {
        let s = registry.status(id).await.unwrap();
        assert_eq!(s.job_state, AsynchJobState::Failed);
        assert!(s.job_canceling);
    }
    assert_eq!(registry.local().counts().processing, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_registry_clone_lets_jobs_finish() {
    let registry = JobRegistry::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            tx.send(job.status()).ok();
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    drop(registry);
    let seen_by_the_job = rx.await.unwrap();
    assert_eq!(
        seen_by_the_job.job_state,
        AsynchJobState::Processing,
        "it ran to its end"
    );
}

/// A shutdown closes admission before it cancels anything: a slot freed by a canceled job never
/// starts a queued one (before the fix, hundreds of 2,000 queued jobs ran and ended COMPLETE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_starts_no_queued_job() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let registry = JobRegistry::builder().max_running(1).build();
    let ran = Arc::new(AtomicUsize::new(0));
    let first = registry
        .spawn(JobRequest::default(), |job| async move {
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("stopped when canceled"))
        })
        .await
        .unwrap();
    let mut queued = Vec::new();
    for _ in 0..2_000 {
        let ran = ran.clone();
        let id = registry
            .spawn(JobRequest::default(), move |_job| async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            })
            .await
            .unwrap();
        queued.push(id);
    }
    let summary = registry.shutdown(Duration::from_secs(10)).await;
    assert_eq!(summary.running, 2_001);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "queued jobs ran during the shutdown"
    );
    let first = registry.status(&first).await.unwrap();
    assert_eq!(first.job_state, AsynchJobState::Failed);
    for id in &queued {
        let status = registry.status(id).await.unwrap();
        assert_eq!(status.job_state, AsynchJobState::Failed, "{id}");
        assert!(status.job_canceling, "{id}");
        assert_eq!(
            status.exception.as_deref(),
            Some(exception::CANCELED),
            "{id}"
        );
    }
}

/// A job that a shutdown ended while its spawn's closure was still building the future never
/// starts: before the fix, the closure returned after the shutdown, the task was spawned and the
/// job's body ran although its status was already FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ended_by_a_shutdown_during_its_spawn_never_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    let registry = JobRegistry::builder()
        .runtime(tokio::runtime::Handle::current())
        .build();
    let ran = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let spawner = {
        let registry = registry.clone();
        let ran = ran.clone();
        std::thread::spawn(move || {
            registry.local().spawn(JobRequest::default(), move |_job| {
                // Synchronous setup, still going on while the shutdown runs.
                entered_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                async move {
                    ran.store(true, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(())
                }
            })
        })
    };
    tokio::task::spawn_blocking(move || entered.recv().unwrap())
        .await
        .unwrap();
    let summary = registry.shutdown(Duration::from_secs(1)).await;
    assert_eq!(summary.running, 1);
    go.send(()).unwrap();
    let id = tokio::task::spawn_blocking(move || spawner.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    let ended = registry.status(&id).await.unwrap();
    assert_eq!(ended.job_state, AsynchJobState::Failed);
    assert!(ended.job_canceling);
    // Give a wrongly spawned task every chance to run.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !ran.load(Ordering::SeqCst),
        "the body of a job already FAILED ran"
    );
    assert_eq!(registry.status(&id).await.unwrap(), ended);
}
