//! Jobs run on the runtime current at spawn, or the one given to the builder; the registry works
//! from any thread.

use std::time::Duration;

use asyncjobs::{exception, AsynchJobState, Error, JobHandle, JobRegistry, JobRequest};

mod common;
use common::quick;

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let registry = JobRegistry::new();
    assert_eq!(quick(&registry), Err(Error::NoRuntime));
    assert!(
        registry.local().is_empty(),
        "a refused spawn leaves nothing behind"
    );
    assert_eq!(
        Error::NoRuntime.to_string(),
        "no tokio runtime to run the job on"
    );
}

#[test]
fn a_registry_with_its_own_runtime_spawns_from_any_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = JobRegistry::builder()
        .runtime(runtime.handle().clone())
        .build();
    let ids: Vec<_> = std::thread::scope(|s| {
        (0..4)
            .map(|_| s.spawn(|| quick(&registry).unwrap()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    });
    for id in ids {
        let s = runtime.block_on(registry.wait(&id)).unwrap();
        assert_eq!(s.job_state, AsynchJobState::Complete);
        // Statuses are read from a plain thread, outside any runtime.
        assert_eq!(registry.local().status(&id).unwrap(), s);
    }
}

#[test]
fn works_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let registry = JobRegistry::new();
        let id = registry
            .spawn(JobRequest::default(), |job: JobHandle| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                job.set_progress(1, 1, "slept");
                Ok::<_, &str>("done")
            })
            .await
            .unwrap();
        let s = registry.wait(&id).await.unwrap();
        assert_eq!(s.response_body.as_deref(), Some(&serde_json::json!("done")));
    });
}

#[test]
fn a_job_whose_runtime_shuts_down_ends_failed() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = JobRegistry::builder()
        .runtime(runtime.handle().clone())
        .build();
    let id = registry
        .local()
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 10, "started");
            std::future::pending::<()>().await;
            Ok::<_, &str>(())
        })
        .unwrap();
    while registry
        .local()
        .status(&id)
        .unwrap()
        .progress_current
        .is_none()
    {
        std::thread::yield_now();
    }
    drop(runtime);
    let s = registry.local().status(&id).unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed, "never left PROCESSING");
    assert_eq!(s.exception.as_deref(), Some(exception::ABORTED));
    assert_eq!(
        s.error_message.as_deref(),
        Some("job was dropped before it finished: its runtime shut down")
    );

    // Spawning on the dead runtime: the task never runs, and the job still ends.
    let id = quick(&registry).unwrap();
    let s = registry.local().status(&id).unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(s.exception.as_deref(), Some(exception::ABORTED));
}
