//! Waiting for a change, watching one job, following all jobs, listing and counting.

use std::time::Duration;

use asyncjobs::{
    AsynchJobState, Error, JobCounts, JobFilter, JobHandle, JobId, JobRegistry, JobRequest,
};
use tokio::sync::oneshot;

/// A job whose handle the test holds, finishing when told.
fn controlled(
    registry: &JobRegistry,
    request: JobRequest,
) -> (JobId, JobHandle, oneshot::Sender<Result<(), String>>) {
    let (finish, finished) = oneshot::channel::<Result<(), String>>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let id = registry
        .local()
        .spawn(request, move |job: JobHandle| {
            handle_tx.send(job).unwrap();
            async move { finished.await.unwrap_or(Ok(())) }
        })
        .unwrap();
    (id, handle_rx.recv().unwrap(), finish)
}

#[tokio::test(start_paused = true)]
async fn wait_for_change_resolves_on_the_next_change() {
    let registry = JobRegistry::new();
    let (id, job, finish) = controlled(&registry, JobRequest::default());
    let seen = registry.status(&id).await.unwrap();

    // A different etag, even a foreign one: at once.
    let now = registry
        .wait_for_change(&id, &"6a0b5b8c-uuid".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(now.etag, seen.etag);

    // The same etag: waits; an unchanged report does not wake it.
    let waiter = {
        let registry = registry.clone();
        let etag = seen.etag.clone();
        tokio::spawn(async move { registry.wait_for_change(&id, &etag).await })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiter.is_finished());
    job.set_progress(1, 4, "one");
    assert!(!job.set_progress(1, 4, "one"));
    let changed = waiter.await.unwrap().unwrap();
    assert_ne!(changed.etag, seen.etag);
    assert_eq!(changed.progress_current, Some(1));

    // A poller that times out sees "nothing new".
    let timed = tokio::time::timeout(
        Duration::from_secs(30),
        registry.wait_for_change(&id, &changed.etag),
    )
    .await;
    assert!(timed.is_err());

    finish.send(Ok(())).unwrap();
    let done = registry.wait_for_change(&id, &changed.etag).await.unwrap();
    assert_eq!(done.job_state, AsynchJobState::Complete);
    let unknown = JobId::from_u64(1);
    assert_eq!(
        registry.wait_for_change(&unknown, &done.etag).await,
        Err(Error::UnknownJob(unknown))
    );
}

#[tokio::test(start_paused = true)]
async fn many_pollers_each_wake_once_per_change() {
    let registry = JobRegistry::new();
    let (id, job, finish) = controlled(&registry, JobRequest::default());
    let etag = registry.status(&id).await.unwrap().etag;
    let pollers: Vec<_> = (0..100)
        .map(|_| {
            let (registry, etag) = (registry.clone(), etag.clone());
            tokio::spawn(async move { registry.wait_for_change(&id, &etag).await.unwrap() })
        })
        .collect();
    tokio::task::yield_now().await;
    job.set_progress(5, 10, "half");
    for p in pollers {
        assert_eq!(p.await.unwrap().progress_current, Some(5));
    }
    finish.send(Ok(())).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_watch_sees_the_latest_status_after_each_change_and_ends() {
    let registry = JobRegistry::new();
    let (id, job, finish) = controlled(&registry, JobRequest::default());
    let mut watch = registry.watch(&id).await.unwrap();

    let first = watch.next().await.unwrap();
    assert_eq!(first.etag, "1");

    // Many changes while the watcher is slow: it gets the latest, not a backlog.
    for i in 1..=1000 {
        job.set_progress(i, 1000, "counting");
    }
    let latest = watch.next().await.unwrap();
    assert_eq!(latest.progress_current, Some(1000));
    assert_eq!(latest.etag, "1001");

    let pending = tokio::spawn(async move { (watch.next().await, watch) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pending.is_finished(), "no change, no status");
    finish.send(Err("failed at the end".into())).unwrap();
    let (last, mut watch) = pending.await.unwrap();
    let last = last.unwrap();
    assert_eq!(last.job_state, AsynchJobState::Failed);
    assert_eq!(watch.next().await, None, "nothing after the final status");
    assert_eq!(watch.latest(), last);
}

#[tokio::test(start_paused = true)]
async fn a_feed_conflates_changes_per_job_and_stays_bounded() {
    let registry = JobRegistry::new();
    let mut feed = registry.watch_all();
    let (a, job_a, finish_a) = controlled(&registry, JobRequest::default());
    let (b, job_b, finish_b) = controlled(&registry, JobRequest::default());
    assert_eq!(feed.pending(), 2, "a feed reports jobs as they start");
    assert_eq!(feed.next().await.unwrap().etag, "1");
    assert_eq!(feed.next().await.unwrap().etag, "1");

    for i in 0..10_000 {
        job_a.set_progress(i, 10_000, "a");
        job_b.set_progress(i, 10_000, "b");
    }
    assert_eq!(feed.pending(), 2, "one entry per job however many changes");
    let first = feed.next().await.unwrap();
    let second = feed.next().await.unwrap();
    assert_eq!(
        (first.job_id, second.job_id),
        (a, b),
        "in order of first unread change"
    );
    assert_eq!(first.progress_current, Some(9_999));
    assert_eq!(feed.pending(), 0);

    let reader = tokio::spawn(async move {
        let s = feed.next().await.unwrap();
        (s, feed)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!reader.is_finished());
    finish_b.send(Ok(())).unwrap();
    let (s, mut feed) = reader.await.unwrap();
    assert_eq!((s.job_id, s.job_state), (b, AsynchJobState::Complete));

    finish_a.send(Ok(())).unwrap();
    assert_eq!(feed.next().await.unwrap().job_id, a);
    registry.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        feed.next().await,
        None,
        "ends after shutdown once every job finished"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_feed_forgets_jobs_dropped_by_retention() {
    let registry = JobRegistry::builder().keep_finished_at_most(10).build();
    let feed = registry.watch_all();
    for _ in 0..1000 {
        let id = registry
            .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
            .await
            .unwrap();
        registry.wait(&id).await.unwrap();
    }
    assert!(
        feed.pending() <= 11,
        "bounded by what the registry holds: {}",
        feed.pending()
    );
}

#[tokio::test(start_paused = true)]
async fn a_users_feed_sees_only_that_users_jobs() {
    let registry = JobRegistry::new();
    let mut alices = registry.as_user(1).watch_all();
    let (_, bob_job, _fb) = controlled(&registry, JobRequest::default().started_by(2));
    let (alice_id, alice_job, _fa) = controlled(&registry, JobRequest::default().started_by(1));
    bob_job.set_progress(1, 2, "bob");
    alice_job.set_progress(1, 2, "alice");
    assert_eq!(alices.pending(), 1);
    let seen = alices.next().await.unwrap();
    assert_eq!((seen.job_id, seen.progress_current), (alice_id, Some(1)));
    assert_eq!(alices.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn list_filters_by_state_and_user_and_counts_add_up() {
    let registry = JobRegistry::new();
    assert_eq!(registry.local().counts(), JobCounts::default());
    let (running, _job, _finish) = controlled(&registry, JobRequest::default().started_by(1));
    let ok = registry
        .spawn(JobRequest::default().started_by(1), |_| async {
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    let bad = registry
        .spawn(JobRequest::default().started_by(2), |_| async {
            Err::<(), _>("no")
        })
        .await
        .unwrap();
    registry.wait(&ok).await.unwrap();
    registry.wait(&bad).await.unwrap();

    let ids = |filter: JobFilter| {
        registry
            .local()
            .list(&filter)
            .jobs
            .iter()
            .map(|s| s.job_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(JobFilter::new()), [bad, ok, running], "newest first");
    assert_eq!(
        ids(JobFilter::new().state(AsynchJobState::Processing)),
        [running]
    );
    assert_eq!(ids(JobFilter::new().state(AsynchJobState::Complete)), [ok]);
    assert_eq!(ids(JobFilter::new().state(AsynchJobState::Failed)), [bad]);
    assert_eq!(ids(JobFilter::new().started_by(1)), [ok, running]);
    assert_eq!(
        ids(JobFilter::new()
            .started_by(2)
            .state(AsynchJobState::Complete)),
        []
    );
    assert_eq!(ids(JobFilter::new().started_by(3)), []);

    // Through a user's view: only that user's jobs, whatever the filter says.
    let view_ids: Vec<_> = registry
        .as_user(2)
        .local()
        .list(&JobFilter::new().started_by(1))
        .jobs
        .iter()
        .map(|s| s.job_id)
        .collect();
    assert_eq!(view_ids, [bad]);

    let counts = registry.local().counts();
    assert_eq!(
        (counts.processing, counts.complete, counts.failed),
        (1, 1, 1)
    );
    assert_eq!(counts.total(), registry.local().len());
}

#[tokio::test(start_paused = true)]
async fn counts_follow_retention() {
    let registry = JobRegistry::builder()
        .keep_finished_for(Duration::from_secs(10))
        .keep_finished_at_most(5)
        .build();
    for i in 0..8 {
        let id = registry
            .spawn(JobRequest::default(), move |_| async move {
                if i % 2 == 0 {
                    Ok(())
                } else {
                    Err("odd")
                }
            })
            .await
            .unwrap();
        registry.wait(&id).await.unwrap();
    }
    let counts = registry.local().counts();
    assert_eq!(counts.total(), 5);
    assert_eq!(
        (counts.complete, counts.failed),
        (2, 3),
        "jobs 3..8 are kept: 4 and 6 complete; 3, 5 and 7 failed"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    // The next lookup (or spawn) sweeps.
    assert!(
        registry.local().list(&JobFilter::new()).jobs.is_empty(),
        "expired statuses are not listed"
    );
    let _ = registry.local().status(&JobId::from_u64(0));
    registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    assert_eq!(
        registry.local().counts().processing
            + registry.local().counts().complete
            + registry.local().counts().failed,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_feed_never_returns_the_same_status_twice() {
    let registry = JobRegistry::new();
    let mut feed = registry.watch_all();
    let ids: Vec<_> = (0..200u64)
        .map(|i| {
            registry
                .local()
                .spawn(JobRequest::default(), move |job: JobHandle| async move {
                    for step in 0..(i % 5) {
                        job.set_progress(step, 5, "step");
                        tokio::task::yield_now().await;
                    }
                    Ok::<_, &str>(i)
                })
                .unwrap()
        })
        .collect();
    let mut seen: std::collections::HashMap<JobId, Vec<u64>> = std::collections::HashMap::new();
    let mut finished = 0;
    while finished < ids.len() {
        let s = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("a change arrives")
            .unwrap();
        let version: u64 = s.etag.to_string().parse().unwrap();
        let versions = seen.entry(s.job_id).or_default();
        assert!(
            versions.last().is_none_or(|&last| version > last),
            "job {}: {version} after {versions:?}",
            s.job_id
        );
        versions.push(version);
        if s.is_terminal() {
            finished += 1;
        }
    }
    assert_eq!(seen.len(), ids.len());
}

/// A job's name is for people: its handle has it, and lists filter by it.
#[tokio::test]
async fn lists_filter_by_name_and_a_handle_knows_its_name() {
    use asyncjobs::JobFilter;
    let registry = JobRegistry::new();
    let export: std::sync::Arc<str> = "csv-export".into();
    let mut exports = Vec::new();
    for i in 0..4u64 {
        let request = if i % 2 == 0 {
            JobRequest::default().name(export.clone())
        } else {
            JobRequest::default().name("reindex")
        };
        let id = registry
            .spawn(request.started_by(i % 2 + 1), |job: JobHandle| async move {
                Ok::<_, std::io::Error>(job.name().map(str::to_owned))
            })
            .await
            .unwrap();
        let done = registry.wait(&id).await.unwrap();
        let own_name = done
            .response_body
            .as_deref()
            .and_then(|v| v.as_str().map(str::to_owned));
        if i % 2 == 0 {
            assert_eq!(own_name.as_deref(), Some("csv-export"));
            exports.push(id);
        }
    }
    let listed: Vec<_> = registry
        .local()
        .list(&JobFilter::new().named("csv-export"))
        .jobs
        .into_iter()
        .map(|s| s.job_id)
        .collect();
    exports.reverse();
    assert_eq!(listed, exports, "newest first");
    assert!(
        registry
            .as_user(2)
            .local()
            .list(&JobFilter::new().named("csv-export"))
            .jobs
            .is_empty(),
        "user 2 has only reindexes"
    );
    assert_eq!(
        registry
            .local()
            .list(&JobFilter::new().named("nothing"))
            .jobs
            .len(),
        0
    );
}

/// Counts serialize for a dashboard's endpoint.
#[test]
fn counts_serialize_as_a_json_object() {
    let counts = JobRegistry::new().local().counts();
    assert_eq!(
        serde_json::to_value(counts).unwrap(),
        serde_json::json!({"processing": 0, "running": 0, "queued": 0, "complete": 0, "failed": 0})
    );
}
