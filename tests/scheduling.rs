//! Scheduling under the concurrency limits: a per-user limit that holds no one else up, slots in
//! turns across users, priority within a user, and queued messages that say why a job waits and
//! where it stands, moving (with new etags) as it moves up. Cancel, time limits, retention and
//! shutdown treat queued jobs as they do without the fair order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asyncjobs::{
    exception, AsynchJobState, CancelOutcome, JobHandle, JobId, JobRegistry, JobRequest,
};
use tokio::sync::oneshot;

/// Jobs that record when they start and run until told, by name.
#[derive(Default, Clone)]
struct Jobs {
    started: Arc<Mutex<Vec<&'static str>>>,
    go: Arc<Mutex<HashMap<&'static str, oneshot::Sender<()>>>>,
    ids: Arc<Mutex<HashMap<&'static str, JobId>>>,
}

impl Jobs {
    fn spawn(&self, registry: &JobRegistry, name: &'static str, request: JobRequest) -> JobId {
        let (go, wait) = oneshot::channel();
        self.go.lock().unwrap().insert(name, go);
        let started = self.started.clone();
        let id = registry
            .local()
            .spawn(request, move |job: JobHandle| async move {
                started.lock().unwrap().push(name);
                tokio::select! {
                    _ = wait => Ok(()),
                    () = job.cancelled() => Err("canceled"),
                }
            })
            .unwrap();
        self.ids.lock().unwrap().insert(name, id);
        id
    }

    fn by(&self, registry: &JobRegistry, name: &'static str, user: u64) -> JobId {
        self.spawn(registry, name, JobRequest::default().started_by(user))
    }

    /// Lets `name` complete, and lets every task that can run, run.
    async fn finish(&self, registry: &JobRegistry, name: &'static str) {
        self.go
            .lock()
            .unwrap()
            .remove(name)
            .unwrap()
            .send(())
            .unwrap();
        let id = self.ids.lock().unwrap()[name];
        registry.wait(&id).await.unwrap();
        settle().await;
    }

    fn started(&self) -> Vec<&'static str> {
        self.started.lock().unwrap().clone()
    }
}

async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

fn message(registry: &JobRegistry, id: &JobId) -> String {
    registry
        .local()
        .status(id)
        .unwrap()
        .progress_message
        .map(|m| m.to_string())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn a_user_over_their_limit_queues_without_holding_up_others() {
    let registry = JobRegistry::builder()
        .max_running(4)
        .max_running_per_user(2)
        .build();
    let jobs = Jobs::default();
    let a: Vec<JobId> = ["a0", "a1", "a2", "a3", "a4"]
        .into_iter()
        .map(|name| jobs.by(&registry, name, 1))
        .collect();
    jobs.by(&registry, "b0", 2);
    jobs.by(&registry, "b1", 2);
    settle().await;
    assert_eq!(
        jobs.started(),
        ["a0", "a1", "b0", "b1"],
        "user 2 was not held up"
    );
    assert_eq!(
        message(&registry, &a[2]),
        "Queued: next of your jobs; your limit of 2 running jobs is reached"
    );
    assert_eq!(message(&registry, &a[3]), "Queued: 1 of your jobs ahead");
    assert_eq!(message(&registry, &a[4]), "Queued: 2 of your jobs ahead");

    let counts = registry.local().counts();
    assert_eq!(
        (counts.processing, counts.running, counts.queued),
        (7, 4, 3)
    );
    assert_eq!(
        counts.to_string(),
        "7 processing (4 running, 3 queued), 0 complete, 0 failed"
    );
    let user1 = registry.as_user(1).local().counts();
    assert_eq!((user1.running, user1.queued, user1.processing), (2, 3, 5));
    assert_eq!(registry.as_user(1).local().counts(), user1);
    assert_eq!(registry.as_user(2).local().counts().running, 2);
    assert_eq!(registry.as_user(3).local().counts(), Default::default());

    // A slot frees, but user 1 is at their limit: it stays free, and user 3 takes it at once.
    jobs.finish(&registry, "b0").await;
    assert_eq!(jobs.started().len(), 4);
    jobs.by(&registry, "c0", 3);
    settle().await;
    assert_eq!(jobs.started().last(), Some(&"c0"));
    // One of user 1's own ends: their next starts.
    jobs.finish(&registry, "a0").await;
    assert_eq!(jobs.started().last(), Some(&"a2"));
    assert_eq!(
        message(&registry, &a[3]),
        "Queued: next of your jobs; your limit of 2 running jobs is reached"
    );
    assert_eq!(registry.as_user(1).local().counts().complete, 1);
}

#[tokio::test(start_paused = true)]
async fn a_per_user_limit_alone_bounds_each_user_and_nothing_else() {
    let registry = JobRegistry::builder().max_running_per_user(1).build();
    let jobs = Jobs::default();
    let queued = [jobs.by(&registry, "a0", 1), jobs.by(&registry, "a1", 1)][1];
    for (name, user) in [("b0", 2), ("c0", 3), ("d0", 4)] {
        jobs.by(&registry, name, user);
    }
    settle().await;
    assert_eq!(jobs.started(), ["a0", "b0", "c0", "d0"]);
    assert_eq!(
        message(&registry, &queued),
        "Queued: next of your jobs; your limit of 1 running job is reached"
    );
}

#[tokio::test(start_paused = true)]
async fn slots_go_round_robin_across_users_and_in_order_within_one() {
    let registry = JobRegistry::builder().max_running(1).fair_queue().build();
    let jobs = Jobs::default();
    for name in ["a0", "a1", "a2", "a3", "a4"] {
        jobs.by(&registry, name, 1);
    }
    for name in ["b0", "b1"] {
        jobs.by(&registry, name, 2);
    }
    jobs.by(&registry, "c0", 3);
    settle().await;
    for name in ["a0", "a1", "b0", "c0", "a2", "b1", "a3", "a4"] {
        assert_eq!(jobs.started().last(), Some(&name));
        jobs.finish(&registry, name).await;
    }
    assert_eq!(
        jobs.started(),
        ["a0", "a1", "b0", "c0", "a2", "b1", "a3", "a4"],
        "user 1 queued first and most, and gets one turn in three, then in two, then all"
    );
}

#[tokio::test(start_paused = true)]
async fn priority_orders_a_users_own_jobs_and_never_passes_another_users() {
    for fair in [true, false] {
        let mut builder = JobRegistry::builder().max_running(1);
        if fair {
            builder = builder.fair_queue();
        }
        let registry = builder.build();
        let jobs = Jobs::default();
        jobs.by(&registry, "running", 1);
        let a1 = jobs.by(&registry, "a1", 1);
        jobs.by(&registry, "a2", 1);
        jobs.spawn(
            &registry,
            "b-urgent",
            JobRequest::default().started_by(2).priority(100),
        );
        jobs.spawn(
            &registry,
            "a-high",
            JobRequest::default().started_by(1).priority(5),
        );
        jobs.spawn(
            &registry,
            "b-batch",
            JobRequest::default().started_by(2).priority(-5),
        );
        if fair {
            assert_eq!(
                message(&registry, &a1),
                "Queued: 1 of your jobs ahead",
                "a-high passed it"
            );
        }
        settle().await;
        let order = ["running", "a1", "a2", "b-urgent", "a-high", "b-batch"];
        // Finish whichever runs, until all have run.
        for _ in 0..order.len() {
            let last = *jobs.started().last().unwrap();
            jobs.finish(&registry, last).await;
        }
        let expected = if fair {
            // User 1 waited first; each user's jobs by priority; turns alternate whatever the
            // priorities.
            ["running", "a-high", "b-urgent", "a1", "b-batch", "a2"]
        } else {
            // One queue: by priority, then spawn order.
            ["running", "b-urgent", "a-high", "a1", "a2", "b-batch"]
        };
        assert_eq!(jobs.started(), expected, "fair: {fair}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_queued_jobs_message_shows_its_place_and_each_move_is_a_new_etag() {
    let registry = JobRegistry::builder().max_running(1).fair_queue().build();
    let jobs = Jobs::default();
    const NAMES: [&str; 14] = [
        "q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q10", "q11", "q12", "q13",
    ];
    let ids: Vec<JobId> = NAMES.iter().map(|n| jobs.by(&registry, n, 7)).collect();
    settle().await;
    assert_eq!(
        message(&registry, &ids[1]),
        "Queued: next of your jobs, waiting for a free slot (1 job runs at a time)"
    );
    assert_eq!(message(&registry, &ids[4]), "Queued: 3 of your jobs ahead");
    assert_eq!(
        message(&registry, &ids[11]),
        "Queued: 10 or more of your jobs ahead"
    );
    assert_eq!(
        message(&registry, &ids[12]),
        "Queued: 10 or more of your jobs ahead"
    );
    let etag_of = |id: &JobId| registry.local().status(id).unwrap().etag;
    let (etag4, etag12) = (etag_of(&ids[4]), etag_of(&ids[12]));

    // A long-poll on job 4 is answered as soon as it moves up.
    let poll = {
        let (registry, id, etag) = (registry.clone(), ids[4], etag4.clone());
        tokio::spawn(async move { registry.wait_for_change(&id, &etag).await.unwrap() })
    };
    settle().await;
    assert!(!poll.is_finished(), "nothing moved yet");
    tokio::time::advance(Duration::from_secs(5)).await;
    jobs.finish(&registry, "q0").await;
    let moved = poll.await.unwrap();
    assert_eq!(
        moved.progress_message.as_deref(),
        Some("Queued: 2 of your jobs ahead")
    );
    assert_ne!(moved.etag, etag4);
    assert_eq!(moved.job_state, AsynchJobState::Processing);
    assert_eq!(
        (moved.changed_on - moved.started_on).num_milliseconds(),
        5_000,
        "changedOn is the move"
    );
    // Job 12 went from 11 ahead to 10 ahead: the same words, so no change and the same etag.
    assert_eq!(
        message(&registry, &ids[12]),
        "Queued: 10 or more of your jobs ahead"
    );
    assert_eq!(etag_of(&ids[12]), etag12);
    assert_eq!(
        message(&registry, &ids[11]),
        "Queued: 5 or more of your jobs ahead"
    );
    assert_eq!(message(&registry, &ids[5]), "Queued: 3 of your jobs ahead");
    // The job that started shows no queued message.
    assert_eq!(
        registry.status(&ids[1]).await.unwrap().progress_message,
        None
    );
}

#[tokio::test(start_paused = true)]
async fn a_canceled_queued_job_frees_its_place_at_once() {
    let registry = JobRegistry::builder().max_running(1).fair_queue().build();
    let jobs = Jobs::default();
    jobs.by(&registry, "running", 1);
    let a = jobs.by(&registry, "a", 1);
    let b = jobs.by(&registry, "b", 1);
    let c = jobs.by(&registry, "c", 1);
    settle().await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(registry.cancel(&a).await, Ok(CancelOutcome::Requested));
    // Before anything else runs: the job ended, and those behind it moved up.
    let canceled = registry.status(&a).await.unwrap();
    assert_eq!(
        (
            canceled.job_state,
            canceled.job_canceling,
            canceled.exception.as_deref()
        ),
        (AsynchJobState::Failed, true, Some(exception::CANCELED))
    );
    assert_eq!(
        canceled.error_message.as_deref(),
        Some("job was canceled while queued, before it started")
    );
    assert_eq!(canceled.runtime_ms, 2_000);
    assert_eq!(
        message(&registry, &b),
        "Queued: next of your jobs, waiting for a free slot (1 job runs at a time)"
    );
    assert_eq!(message(&registry, &c), "Queued: 1 of your jobs ahead");
    assert_eq!(
        (
            registry.local().counts().queued,
            registry.local().counts().failed
        ),
        (2, 1)
    );
    jobs.finish(&registry, "running").await;
    jobs.finish(&registry, "b").await;
    jobs.finish(&registry, "c").await;
    assert_eq!(
        jobs.started(),
        ["running", "b", "c"],
        "the canceled job never ran"
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_with_no_user_are_one_group_of_their_own() {
    let registry = JobRegistry::builder()
        .max_running(2)
        .max_running_per_user(1)
        .build();
    let jobs = Jobs::default();
    jobs.by(&registry, "user", 1);
    jobs.spawn(&registry, "x", JobRequest::default());
    let y = jobs.spawn(&registry, "y", JobRequest::default());
    let z = jobs.spawn(&registry, "z", JobRequest::default());
    settle().await;
    assert_eq!(jobs.started(), ["user", "x"]);
    assert_eq!(
        message(&registry, &y),
        "Queued: next of the jobs with no user; their limit of 1 running job is reached"
    );
    assert_eq!(message(&registry, &z), "Queued: 1 job with no user ahead");
    // User 1's next job waits for its own limit, not behind the jobs with no user.
    let next = jobs.by(&registry, "user-next", 1);
    jobs.finish(&registry, "user").await;
    assert_eq!(jobs.started().last(), Some(&"user-next"));
    assert_eq!(registry.status(&next).await.unwrap().progress_message, None);
    jobs.finish(&registry, "x").await;
    assert_eq!(jobs.started().last(), Some(&"y"));
}

#[tokio::test(start_paused = true)]
async fn time_limits_count_from_the_start_however_long_the_wait() {
    let registry = JobRegistry::builder()
        .max_running(1)
        .max_running_per_user(1)
        .build();
    let jobs = Jobs::default();
    jobs.by(&registry, "blocker", 1);
    let ahead = jobs.by(&registry, "ahead", 1);
    let limited = registry
        .spawn(
            JobRequest::default()
                .started_by(1)
                .time_limit(Duration::from_secs(3))
                .stall_limit(Duration::from_secs(2)),
            |job: JobHandle| async move {
                for i in 0.. {
                    job.set_progress(i, 10, "working");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(900)) => {}
                        () = job.cancelled() => break,
                    }
                }
                Err::<(), _>("stopped")
            },
        )
        .await
        .unwrap();
    // It waits longer than either limit, and its place moves (a change) 5 s before it starts.
    tokio::time::advance(Duration::from_secs(5)).await;
    registry.cancel(&ahead).await.unwrap();
    assert_eq!(
        message(&registry, &limited),
        "Queued: next of your jobs; your limit of 1 running job is reached"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        registry.status(&limited).await.unwrap().job_state,
        AsynchJobState::Processing
    );
    jobs.finish(&registry, "blocker").await;
    let done = registry.wait(&limited).await.unwrap();
    assert_eq!(done.exception.as_deref(), Some(exception::TIMED_OUT));
    assert_eq!(done.runtime_ms, 13_000, "10 s queued, then its 3 s");
}

#[tokio::test(start_paused = true)]
async fn retention_and_a_shutdown_treat_queued_jobs_as_without_the_fair_order() {
    let registry = JobRegistry::builder()
        .max_running(1)
        .fair_queue()
        .keep_finished_for(Duration::from_secs(10))
        .build();
    let jobs = Jobs::default();
    jobs.by(&registry, "running", 1);
    let waits = jobs.by(&registry, "waits", 2);
    let canceled = jobs.by(&registry, "canceled", 2);
    // Queued for longer than finished statuses are kept: still there.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        registry.status(&waits).await.unwrap().job_state,
        AsynchJobState::Processing
    );
    registry.cancel(&canceled).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(registry.status(&canceled).await.is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        registry.status(&canceled).await.is_err(),
        "dropped after keep_finished_for"
    );

    let summary = registry.shutdown(Duration::from_secs(1)).await;
    assert_eq!((summary.running, summary.stopped), (2, 0));
    let s = registry.status(&waits).await.unwrap();
    assert_eq!(
        (s.job_state, s.job_canceling, s.exception.as_deref()),
        (AsynchJobState::Failed, true, Some(exception::CANCELED))
    );
    assert_eq!(jobs.started(), ["running"]);
}

#[tokio::test(start_paused = true)]
async fn without_the_fair_order_a_queued_job_keeps_one_message_and_its_etag() {
    let registry = JobRegistry::builder().max_running(1).build();
    let jobs = Jobs::default();
    jobs.by(&registry, "running", 1);
    jobs.by(&registry, "first", 1);
    let second = jobs.by(&registry, "second", 2);
    let before = registry.status(&second).await.unwrap();
    jobs.finish(&registry, "running").await;
    let after = registry.status(&second).await.unwrap();
    assert_eq!(
        after.etag, before.etag,
        "moving up is no change without places"
    );
    assert_eq!(
        after.progress_message.as_deref(),
        Some("Queued: waiting for a free slot (1 job runs at a time)")
    );
    assert_eq!(jobs.started(), ["running", "first"]);
}

/// A shutdown fires every token and closes the queues first: not one of thousands of queued jobs
/// of many users starts, and each ends FAILED with `jobCanceling` set (as `tests/shutdown.rs`
/// checks without the fair order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_starts_no_queued_job_of_any_user() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let registry = JobRegistry::builder()
        .max_running(4)
        .max_running_per_user(2)
        .build();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut ids = Vec::new();
    for i in 0..2_000u64 {
        let ran = ran.clone();
        let id = registry
            .spawn(
                JobRequest::default().started_by(i % 8),
                move |job: JobHandle| async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    job.cancelled().await;
                    Err::<(), _>("stopped when canceled")
                },
            )
            .await
            .unwrap();
        ids.push(id);
    }
    while ran.load(Ordering::SeqCst) < 4 {
        tokio::task::yield_now().await;
    }
    let summary = registry.shutdown(Duration::from_secs(10)).await;
    assert_eq!(summary.running, 2_000);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        4,
        "queued jobs ran during the shutdown"
    );
    for id in &ids {
        let s = registry.status(id).await.unwrap();
        assert_eq!(
            (s.job_state, s.job_canceling),
            (AsynchJobState::Failed, true),
            "{id}"
        );
    }
    assert_eq!(registry.local().counts().processing, 0);
}

/// Stress: on a multi-thread runtime one user floods the registry with 2,000 jobs while ten
/// others each start jobs one after another and a third task cancels random queued jobs of the
/// flood. Every other user's job must start within its fair share: at most one start per other
/// user waiting plus the slots in flight, where one FIFO queue would put it behind the flood.
/// The limits hold throughout. Then, with everything paused, every queued job of the flood shows
/// exactly its place: places decided by two threads at once were applied in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_floods_and_the_others_still_start_within_their_fair_share() {
    for per_user in [Some(2), None] {
        flood(per_user).await;
    }
}

async fn flood(per_user: Option<usize>) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use asyncjobs::JobFilter;

    const MAX: usize = 4;
    const FLOOD: usize = 2_000;
    const OTHERS: u64 = 10;
    const EACH: usize = 15;
    const FLOODER: u64 = 0;

    #[derive(Default)]
    struct World {
        starts: AtomicUsize,
        running: AtomicUsize,
        most_running: AtomicUsize,
        per_user: Mutex<HashMap<u64, usize>>,
        most_per_user: AtomicUsize,
        paused: AtomicBool,
        canceled: Mutex<Vec<JobId>>,
        ran: Mutex<Vec<JobId>>,
    }

    let mut builder = JobRegistry::builder().max_running(MAX).fair_queue();
    if let Some(per_user) = per_user {
        builder = builder.max_running_per_user(per_user);
    }
    let registry = builder.build();
    let world = Arc::new(World::default());

    // A job: counts itself in, runs about a millisecond (longer while paused), counts itself out;
    // sends its place in the start order.
    let spawn = {
        let (registry, world) = (registry.clone(), world.clone());
        move |user: u64, started: Option<oneshot::Sender<usize>>| {
            let world = world.clone();
            registry
                .local()
                .spawn(
                    JobRequest::default().started_by(user),
                    move |job: JobHandle| async move {
                        let seq = world.starts.fetch_add(1, Ordering::SeqCst);
                        world.ran.lock().unwrap().push(job.id());
                        let now = world.running.fetch_add(1, Ordering::SeqCst) + 1;
                        world.most_running.fetch_max(now, Ordering::SeqCst);
                        let mine = {
                            let mut per_user = world.per_user.lock().unwrap();
                            let mine = per_user.entry(user).or_default();
                            *mine += 1;
                            *mine
                        };
                        world.most_per_user.fetch_max(mine, Ordering::SeqCst);
                        if let Some(started) = started {
                            started.send(seq).ok();
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        while world.paused.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        *world.per_user.lock().unwrap().get_mut(&user).unwrap() -= 1;
                        world.running.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, &str>(())
                    },
                )
                .unwrap()
        }
    };

    let flood_ids = Arc::new(Mutex::new(Vec::new()));
    let flooder = {
        let (spawn, flood_ids) = (spawn.clone(), flood_ids.clone());
        tokio::spawn(async move {
            for i in 0..FLOOD {
                let id = spawn(FLOODER, None);
                flood_ids.lock().unwrap().push(id);
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let canceler = {
        let (registry, world, flood_ids) = (registry.clone(), world.clone(), flood_ids.clone());
        tokio::spawn(async move {
            for round in 0..200usize {
                let pick = {
                    let ids = flood_ids.lock().unwrap();
                    (!ids.is_empty()).then(|| ids[(round * 7919) % ids.len()])
                };
                if let Some(id) = pick {
                    // Only queued jobs: a canceled running one would also be fine, but this
                    // keeps "a canceled queued job never runs" checkable.
                    let queued = registry
                        .status(&id)
                        .await
                        .is_ok_and(|s| s.progress_message.is_some_and(|m| m.starts_with("Queued")));
                    if queued && registry.cancel(&id).await == Ok(CancelOutcome::Requested) {
                        let s = registry.status(&id).await.unwrap();
                        if s.error_message.as_deref()
                            == Some("job was canceled while queued, before it started")
                        {
                            world.canceled.lock().unwrap().push(id);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        })
    };
    // Let the flood build up a queue first.
    while flood_ids.lock().unwrap().len() < FLOOD / 4 {
        tokio::task::yield_now().await;
    }
    let others: Vec<_> = (1..=OTHERS)
        .map(|user| {
            let (spawn, world) = (spawn.clone(), world.clone());
            tokio::spawn(async move {
                let mut delays = Vec::new();
                for i in 0..EACH {
                    let before = world.starts.load(Ordering::SeqCst);
                    let (started, start) = oneshot::channel();
                    spawn(user, Some(started));
                    let seq = start.await.unwrap();
                    delays.push(seq.saturating_sub(before));
                    tokio::time::sleep(Duration::from_micros(300 * ((user + i as u64) % 5))).await;
                }
                delays
            })
        })
        .collect();
    let mut delays = Vec::new();
    for other in others {
        delays.extend(other.await.unwrap());
    }
    flooder.await.unwrap();
    canceler.await.unwrap();
    let waited_most = *delays.iter().max().unwrap();
    let fair_share = OTHERS as usize + MAX + 4;
    // Measured in real time on a shared machine, a start counted just before a spawn can land a
    // few places late (19 against 18 was seen once under load): twice the share still tells fair
    // turns from the global FIFO, under which a job waits for about 1,300 starts.
    assert!(
        waited_most <= 2 * fair_share,
        "per user {per_user:?}: a job of another user waited for {waited_most} starts (fair share {fair_share}); delays {delays:?}"
    );

    // Pause: no job ends, nothing is spawned or canceled; let the last moves settle.
    world.paused.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let flood_now = registry
        .local()
        .list(
            &JobFilter::new()
                .started_by(FLOODER)
                .state(AsynchJobState::Processing)
                .limit(usize::MAX),
        )
        .jobs;
    // Oldest first: the order they wait in.
    let queued: Vec<_> = flood_now
        .iter()
        .rev()
        .filter(|s| s.progress_message.is_some())
        .collect();
    assert!(
        queued.len() > 100,
        "the flood still queues: {}",
        queued.len()
    );
    assert_eq!(
        registry.as_user(FLOODER).local().counts().queued,
        queued.len()
    );
    let at_limit =
        per_user.is_some_and(|n| registry.as_user(FLOODER).local().counts().running >= n);
    for (rank, s) in queued.iter().enumerate() {
        let expected = match rank {
            0 if at_limit => {
                "Queued: next of your jobs; your limit of 2 running jobs is reached".to_owned()
            }
            0 => "Queued: next of your jobs, waiting for a free slot (at most 4 jobs run at once)"
                .to_owned(),
            1..=4 => format!("Queued: {rank} of your jobs ahead"),
            _ => {
                let step = [5, 10, 20, 50, 100, 200, 500, 1000]
                    .into_iter()
                    .rev()
                    .find(|&s| s <= rank)
                    .unwrap();
                format!("Queued: {step} or more of your jobs ahead")
            }
        };
        assert_eq!(
            s.progress_message.as_deref(),
            Some(&*expected),
            "rank {rank}"
        );
    }

    world.paused.store(false, Ordering::SeqCst);
    let flood_ids = flood_ids.lock().unwrap().clone();
    for id in &flood_ids {
        assert!(registry.wait(id).await.unwrap().is_terminal());
    }
    let most = world.most_running.load(Ordering::SeqCst);
    assert!(most <= MAX, "{most} ran at once");
    let most_one = world.most_per_user.load(Ordering::SeqCst);
    assert!(
        most_one <= per_user.unwrap_or(MAX),
        "{most_one} of one user ran at once"
    );
    {
        let ran = world.ran.lock().unwrap();
        let canceled = world.canceled.lock().unwrap();
        assert!(!canceled.is_empty());
        assert!(
            canceled.iter().all(|id| !ran.contains(id)),
            "a canceled queued job ran"
        );
    }
    while registry.local().counts().processing != 0 {
        tokio::task::yield_now().await;
    }
    let counts = registry.local().counts();
    assert_eq!((counts.queued, counts.running), (0, 0));
    assert_eq!(
        counts.complete + counts.failed,
        FLOOD + OTHERS as usize * EACH
    );
}
