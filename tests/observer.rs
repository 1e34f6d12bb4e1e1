//! The observer hook and the seam behind it: every event of a job's life, in etag order, from
//! every thread, with panicking and re-entrant observers, and no feed left holding a removed job.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use asyncjobs::{
    AsynchJobState, CancelOutcome, JobEvent, JobEventKind, JobHandle, JobRegistry, JobRequest,
};

mod common;
use common::{panic_message, quiet_planned_panics};

type Log = Arc<Mutex<Vec<(u64, JobEventKind, u64, AsynchJobState)>>>;

/// An observer that records every event, and the log it writes.
fn recorder() -> (Log, impl Fn(&JobEvent<'_>) + Send + Sync + 'static) {
    let log: Log = Arc::default();
    let sink = log.clone();
    let observer = move |event: &JobEvent<'_>| {
        sink.lock().unwrap().push((
            event.job_id().as_u64(),
            event.kind(),
            event.version(),
            event.state(),
        ));
    };
    (log, observer)
}

#[tokio::test]
async fn an_observer_hears_every_event_of_a_jobs_life_in_order() {
    let (log, observer) = recorder();
    // Keep no finished status, so the job is also removed.
    let registry = JobRegistry::builder()
        .keep_finished_at_most(0)
        .observe(observer)
        .build();
    let id = registry
        .spawn(
            JobRequest::default().started_by(9),
            |job: JobHandle| async move {
                job.set_progress(1, 2, "half");
                job.set_progress(1, 2, "half"); // no change: no event
                job.set_progress(2, 2, "all");
                Ok::<_, std::io::Error>(())
            },
        )
        .await
        .unwrap();
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.etag.to_string(), "4");
    use AsynchJobState::{Complete, Processing};
    use JobEventKind::{Changed, Created, Finished, Removed};
    let id = id.as_u64();
    assert_eq!(
        *log.lock().unwrap(),
        [
            (id, Created, 1, Processing),
            (id, Changed, 2, Processing),
            (id, Changed, 3, Processing),
            (id, Finished, 4, Complete),
            (id, Removed, 4, Complete),
        ]
    );
}

#[tokio::test]
async fn an_event_carries_the_user_and_its_status_is_the_status_as_of_the_event() {
    // (user, the event's etag, the etag of the status it gives)
    type Seen = Vec<(Option<u64>, String, String)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let registry = JobRegistry::builder()
        .observe(move |event: &JobEvent<'_>| {
            let status = event.status();
            sink.lock().unwrap().push((
                event.started_by(),
                event.etag().to_string(),
                status.etag.to_string(),
            ));
        })
        .build();
    let alice = registry.as_user(5);
    let id = alice
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            for i in 0..10u64 {
                job.set_progress(i, 10, format!("step {i}"));
                tokio::task::yield_now().await;
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    alice.wait(&id).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 12, "created, ten changes, finished");
    for (user, event_etag, status_etag) in seen.iter() {
        assert_eq!(*user, Some(5));
        assert_eq!(event_etag, status_etag);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_jobs_events_arrive_in_etag_order_while_many_threads_change_it() {
    let (log, observer) = recorder();
    let registry = JobRegistry::builder().observe(observer).build();
    let mut ids = Vec::new();
    for _ in 0..200 {
        let id = registry
            .spawn(JobRequest::default(), |job: JobHandle| async move {
                for i in 0..50u64 {
                    if job.is_canceling() {
                        return Err(std::io::Error::other("canceled"));
                    }
                    job.set_progress(i, 50, "working");
                    tokio::task::yield_now().await;
                }
                Ok(())
            })
            .await
            .unwrap();
        ids.push(id);
    }
    // Cancels race the jobs' own progress and completion, from other tasks.
    let cancels: Vec<_> = ids
        .iter()
        .step_by(2)
        .map(|&id| {
            let registry = registry.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                registry.cancel(&id).await.unwrap()
            })
        })
        .collect();
    for cancel in cancels {
        cancel.await.unwrap();
    }
    for id in &ids {
        registry.wait(id).await.unwrap();
    }
    let log = log.lock().unwrap();
    let mut per_job: HashMap<u64, Vec<(JobEventKind, u64)>> = HashMap::new();
    for &(id, kind, version, _) in log.iter() {
        per_job.entry(id).or_default().push((kind, version));
    }
    assert_eq!(per_job.len(), ids.len());
    for (id, events) in per_job {
        let versions: Vec<u64> = events.iter().map(|e| e.1).collect();
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected, "job {id}: every etag once, in order");
        assert_eq!(events[0].0, JobEventKind::Created);
        assert_eq!(events.last().unwrap().0, JobEventKind::Finished, "job {id}");
        let finished = events
            .iter()
            .filter(|e| e.0 == JobEventKind::Finished)
            .count();
        assert_eq!(finished, 1, "job {id}");
    }
}

#[tokio::test]
async fn a_panicking_observer_changes_nothing_for_the_job_or_the_other_observers() {
    quiet_planned_panics(|info| panic_message(info).is_some_and(|m| m.starts_with("planned:")));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let registry = JobRegistry::builder()
        .observe(|event: &JobEvent<'_>| {
            if event.kind() == JobEventKind::Changed {
                panic!("planned: an observer that panics");
            }
        })
        .observe(move |_: &JobEvent<'_>| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 2, "half");
            Ok::<_, std::io::Error>(serde_json::json!({"ok": true}))
        })
        .await
        .unwrap();
    let done = registry.wait(&id).await.unwrap();
    assert_eq!(done.job_state, AsynchJobState::Complete);
    assert_eq!(done.progress_current, Some(2));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "created, changed, finished"
    );
    assert_eq!(registry.local().counts().complete, 1);
}

#[tokio::test]
async fn an_observer_may_cancel_the_job_it_is_told_about_without_deadlock() {
    let registry_cell: Arc<OnceLock<JobRegistry>> = Arc::default();
    let cell = registry_cell.clone();
    let outcome: Arc<Mutex<Option<CancelOutcome>>> = Arc::default();
    let recorded = outcome.clone();
    let registry = JobRegistry::builder()
        .observe(move |event: &JobEvent<'_>| {
            // Cancel on the first progress report, from inside the delivery.
            if event.kind() == JobEventKind::Changed && event.version() == 2 {
                let registry = cell.get().expect("set before any job starts");
                *recorded.lock().unwrap() = Some(registry.local().cancel(&event.job_id()).unwrap());
            }
        })
        .build();
    registry_cell.set(registry.clone()).unwrap();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 10, "started");
            if job.is_canceling() {
                return Err(std::io::Error::other("canceled by the observer"));
            }
            Ok(())
        })
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), registry.wait(&id))
        .await
        .expect("no deadlock")
        .unwrap();
    assert_eq!(*outcome.lock().unwrap(), Some(CancelOutcome::Requested));
    assert_eq!(done.job_state, AsynchJobState::Failed);
    assert!(done.job_canceling);
    assert_eq!(
        done.error_message.as_deref(),
        Some("canceled by the observer")
    );
}

#[tokio::test]
async fn changes_made_inside_an_observer_reach_every_observer_after_the_event_being_told() {
    let registry_cell: Arc<OnceLock<JobRegistry>> = Arc::default();
    let cell = registry_cell.clone();
    // The first observer cancels on the first progress report and then reports more progress;
    // the second records what it hears, and must hear it in etag order.
    let (log, recorder) = recorder();
    let outcome: Arc<Mutex<Option<CancelOutcome>>> = Arc::default();
    let recorded = outcome.clone();
    let registry = JobRegistry::builder()
        .observe(move |event: &JobEvent<'_>| {
            if event.kind() == JobEventKind::Changed && event.version() == 2 {
                let registry = cell.get().expect("set before any job starts");
                // Recorded, not asserted here: a panic in an observer is caught.
                *recorded.lock().unwrap() = registry.local().cancel(&event.job_id()).ok();
            }
        })
        .observe(recorder)
        .build();
    registry_cell.set(registry.clone()).unwrap();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 10, "started");
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("stopped"))
        })
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), registry.wait(&id))
        .await
        .expect("no deadlock")
        .unwrap();
    assert_eq!(*outcome.lock().unwrap(), Some(CancelOutcome::Requested));
    assert_eq!(done.etag.to_string(), "4");
    let heard: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|&(_, kind, version, _)| (kind, version))
        .collect();
    assert_eq!(
        heard,
        [
            (JobEventKind::Created, 1),
            (JobEventKind::Changed, 2),
            (JobEventKind::Changed, 3),
            (JobEventKind::Finished, 4),
        ],
        "the cancel (3), made while 2 was being told, comes after 2 for every observer"
    );
}

/// Counts the removals an observer hears. A job leaves the table before its removal is announced
/// (an observer told of it finds it gone), so an empty registry does not yet mean every feed was
/// told; feeds are told before observers, so once this has heard every removal, every feed has.
fn removal_counter() -> (
    Arc<AtomicUsize>,
    impl Fn(&JobEvent<'_>) + Send + Sync + 'static,
) {
    let removals = Arc::new(AtomicUsize::new(0));
    let heard = removals.clone();
    let observer = move |event: &JobEvent<'_>| {
        if event.kind() == JobEventKind::Removed {
            heard.fetch_add(1, Ordering::SeqCst);
        }
    };
    (removals, observer)
}

/// Waits (30 s at most) until `removals` reaches `jobs`.
async fn all_removed(removals: &AtomicUsize, jobs: usize) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while removals.load(Ordering::SeqCst) < jobs {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every finished job is dropped");
}

/// Feeds never keep entries for jobs that retention dropped: a change is delivered to a feed only
/// in the job's turn, and removal takes the turn too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_feed_holds_no_job_that_retention_dropped() {
    let (removals, counter) = removal_counter();
    let registry = JobRegistry::builder()
        .keep_finished_at_most(0)
        .observe(counter)
        .build();
    let feed = registry.watch_all();
    let user_feed = registry.as_user(1).watch_all();
    let mut ids = Vec::new();
    for i in 0..20_000u64 {
        let id = registry
            .spawn(
                JobRequest::default().started_by(i % 3),
                |job: JobHandle| async move {
                    job.set_progress(1, 2, "half");
                    tokio::task::yield_now().await;
                    job.set_progress(2, 2, "done");
                    Ok::<_, std::io::Error>(())
                },
            )
            .await
            .unwrap();
        ids.push(id);
    }
    for id in &ids {
        // Dropped at once when finished; waiting on a dropped job is an error, which is fine.
        let _ = registry.wait(id).await;
    }
    // A job counts as finished before its task retires it (and retention drops it): wait for that.
    all_removed(&removals, ids.len()).await;
    assert!(registry.local().is_empty());
    assert_eq!(feed.pending(), 0, "the admin feed holds ghosts");
    assert_eq!(user_feed.pending(), 0, "a user's feed holds ghosts");
}

/// Wakes the job's task, then dawdles: whoever fired the job's token (a cancel) is held up after
/// the job can already run, finish and be dropped on another thread.
struct SlowWaker(std::task::Waker);

impl std::task::Wake for SlowWaker {
    fn wake(self: Arc<Self>) {
        self.0.wake_by_ref();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for the job's cancellation through a [`SlowWaker`].
async fn cancelled_slowly(job: &JobHandle) {
    let token = job.cancellation_token();
    let mut cancelled = std::pin::pin!(token.cancelled());
    std::future::poll_fn(|cx| {
        let slow = std::task::Waker::from(Arc::new(SlowWaker(cx.waker().clone())));
        cancelled
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&slow))
    })
    .await;
}

/// The same with a cancel racing the end: the cancel's announcement, made by the canceling thread
/// after it fired the token, must not reach a feed after the job ended and was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_announced_late_leaves_no_ghost_in_a_feed() {
    let (removals, counter) = removal_counter();
    let registry = JobRegistry::builder()
        .keep_finished_at_most(0)
        .observe(counter)
        .build();
    let feed = registry.watch_all();
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut ids = Vec::new();
    for _ in 0..100 {
        let waiting = waiting.clone();
        let id = registry
            .spawn(JobRequest::default(), |job: JobHandle| async move {
                waiting.fetch_add(1, Ordering::SeqCst);
                cancelled_slowly(&job).await;
                Err::<(), _>(std::io::Error::other("canceled"))
            })
            .await
            .unwrap();
        ids.push(id);
    }
    // Let every job reach its wait, then cancel from outside the runtime, so the woken job runs
    // on a worker while the canceling thread still dawdles in the waker.
    tokio::time::timeout(Duration::from_secs(30), async {
        while waiting.load(Ordering::SeqCst) < ids.len() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    tokio::task::yield_now().await;
    let canceler = {
        let registry = registry.clone();
        let ids = ids.clone();
        std::thread::spawn(move || {
            for id in &ids {
                let _ = registry.local().cancel(id);
            }
        })
    };
    tokio::task::spawn_blocking(move || canceler.join().unwrap())
        .await
        .unwrap();
    all_removed(&removals, ids.len()).await;
    assert!(registry.local().is_empty());
    assert_eq!(feed.pending(), 0, "the feed holds ghosts of dropped jobs");
}
