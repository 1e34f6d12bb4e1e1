//! Cacheable requests: an equal request by the same user gets the earlier job, never across users
//! and never a failed job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asyncjobs::{AsynchJobState, JobId, JobRegistry, JobRequest};
use serde_json::json;

fn counting(
    registry: &JobRegistry,
    request: JobRequest,
    runs: &Arc<AtomicUsize>,
    fail: bool,
) -> JobId {
    let runs = runs.clone();
    registry
        .local()
        .spawn(request, move |_| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            if fail {
                Err("failed")
            } else {
                Ok(json!({"rows": 3}))
            }
        })
        .unwrap()
}

fn query(user: u64, body: serde_json::Value) -> JobRequest {
    JobRequest::new(body).started_by(user).cacheable()
}

#[tokio::test(start_paused = true)]
async fn an_equal_request_reuses_a_running_or_complete_job() {
    let registry = JobRegistry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let body = json!({"concreteType": "q.Query", "sql": "select 1", "opts": {"a": 1, "b": [1, 2]}});
    let reordered =
        json!({"opts": {"b": [1, 2], "a": 1}, "sql": "select 1", "concreteType": "q.Query"});

    let first = counting(&registry, query(7, body.clone()), &runs, false);
    let while_running = counting(&registry, query(7, reordered.clone()), &runs, false);
    assert_eq!(while_running, first, "key order does not matter");
    registry.wait(&first).await.unwrap();
    let after_complete = counting(&registry, query(7, body.clone()), &runs, false);
    assert_eq!(after_complete, first);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Different user, different body, or not cacheable: a new job each.
    let other_user = counting(&registry, query(8, body.clone()), &runs, false);
    let other_body = counting(
        &registry,
        query(7, json!({"concreteType": "q.Query", "sql": "select 2"})),
        &runs,
        false,
    );
    let not_cacheable = counting(
        &registry,
        JobRequest::new(body.clone()).started_by(7),
        &runs,
        false,
    );
    let ids = [first, other_user, other_body, not_cacheable];
    for (i, a) in ids.iter().enumerate() {
        assert!(!ids[i + 1..].contains(a), "distinct jobs");
    }
    assert_eq!(
        registry
            .status(&other_user)
            .await
            .unwrap()
            .started_by_user_id,
        Some(8)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_is_never_reused() {
    let registry = JobRegistry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let body = json!({"concreteType": "q.Query", "sql": "select broken"});
    let failed = counting(&registry, query(7, body.clone()), &runs, true);
    assert_eq!(
        registry.wait(&failed).await.unwrap().job_state,
        AsynchJobState::Failed
    );
    let retried = counting(&registry, query(7, body.clone()), &runs, false);
    assert_ne!(retried, failed);
    assert_eq!(
        registry.wait(&retried).await.unwrap().job_state,
        AsynchJobState::Complete
    );
    assert_eq!(counting(&registry, query(7, body), &runs, false), retried);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_status_is_not_reused() {
    let registry = JobRegistry::builder()
        .keep_finished_for(Duration::from_secs(60))
        .build();
    let runs = Arc::new(AtomicUsize::new(0));
    let body = json!({"concreteType": "q.Query"});
    let first = counting(&registry, query(7, body.clone()), &runs, false);
    registry.wait(&first).await.unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    let second = counting(&registry, query(7, body), &runs, false);
    assert_ne!(second, first, "the first job's status expired");
    registry.wait(&second).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn equal_requests_at_once_start_one_job() {
    let registry = JobRegistry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (registry, runs) = (registry.clone(), runs.clone());
            tokio::spawn(async move {
                counting(
                    &registry,
                    query(1, json!({"concreteType": "q.Same"})),
                    &runs,
                    false,
                )
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert!(ids.iter().all(|id| *id == ids[0]));
    registry.wait(&ids[0]).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_job_being_canceled_is_not_reused() {
    let registry = JobRegistry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let body = json!({"concreteType": "q.Query", "sql": "select 3"});
    let first = counting(&registry, query(7, body.clone()), &runs, false);
    registry.cancel(&first).await.unwrap();
    let second = counting(&registry, query(7, body), &runs, false);
    assert_ne!(second, first, "a canceling job will not give the answer");
}

/// Bodies equal as JSON values are one request, whatever their text: `0.0` and `-0.0` are equal
/// by serde_json's `==`, and once started two jobs for them.
#[tokio::test(start_paused = true)]
async fn bodies_equal_as_json_start_one_job_even_when_their_numbers_are_written_differently() {
    let registry = JobRegistry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let first = counting(&registry, query(1, json!({"x": 0.0})), &runs, false);
    let second = counting(&registry, query(1, json!({"x": -0.0})), &runs, false);
    assert_eq!(first, second);
    registry.wait(&first).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Unequal numbers stay apart: 1 and 1.0 differ as serde_json values.
    let int = counting(&registry, query(1, json!({"x": 1})), &runs, false);
    let float = counting(&registry, query(1, json!({"x": 1.0})), &runs, false);
    assert_ne!(int, float);
}

/// `submit` says whether a job was started or an earlier one reused; `spawn` gives the same id.
#[tokio::test(start_paused = true)]
async fn submit_tells_a_started_job_from_a_reused_one() {
    use asyncjobs::Spawned;
    let registry = JobRegistry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let body = json!({"concreteType": "q.Query", "sql": "select 2"});
    let job = |runs: Arc<AtomicUsize>| {
        move |_| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, std::io::Error>(json!({"rows": 1}))
        }
    };
    let first = registry
        .submit(query(1, body.clone()), job(runs.clone()))
        .await
        .unwrap();
    let Spawned::Started(id) = first else {
        panic!("the first request starts a job: {first:?}")
    };
    let alice = registry.as_user(1);
    let again = alice
        .submit(JobRequest::new(body.clone()).cacheable(), job(runs.clone()))
        .await
        .unwrap();
    assert_eq!(again, Spawned::Reused(id));
    assert!(again.is_reused() && again.id() == id);
    // Another user's equal request is never reused.
    let other = registry
        .submit(query(2, body.clone()), job(runs.clone()))
        .await
        .unwrap();
    assert!(matches!(other, Spawned::Started(other_id) if other_id != id));
    registry.wait(&id).await.unwrap();
    // COMPLETE and retained: still reused, and `spawn` returns the same id.
    assert_eq!(
        registry
            .spawn(query(1, body), job(runs.clone()))
            .await
            .unwrap(),
        id
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
