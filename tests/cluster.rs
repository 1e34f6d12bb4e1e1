//! Several instances sharing one PostgreSQL store (feature `postgres`): reading, long-polling,
//! waiting for and canceling another instance's job; ids that never collide; user scoping across
//! instances; an instance killed with SIGKILL; a database restart and an outage mid-run; an
//! instance that cannot renew its lease; shutdown; how many statements progress costs; retention
//! in the shared table.
//!
//! A real database means real time: intervals are short (a flush every 250 ms, 2 s leases where
//! a lease must run out), every wait is bounded (`within`, `eventually`) and says what it waited
//! for, and the latencies the store promises are measured, printed and asserted against a bound.
//! Run with `--nocapture` to see the figures.
//!
//! The server comes from `tests/pg` (`ASYNCJOBS_PG_URL`, else a throwaway one); each test has a
//! database of its own, and the fault tests a server of their own.

mod pg;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncjobs::postgres::PostgresStore;
use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, CancelOutcome, Error, JobEvent, JobEventKind,
    JobFilter, JobHandle, JobId, JobPage, JobRegistry, JobRequest,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use AsynchJobState::{Complete, Failed, Processing};

/// How long any single wait may take before the test fails: far beyond every latency the store
/// promises, so that only a real fault trips it.
const PATIENCE: Duration = Duration::from_secs(20);

/// The flush interval of every store here: progress reaches the database at most this late.
const FLUSH: Duration = Duration::from_millis(250);

/// The bound asserted on a change crossing instances (progress seen by a reader, a long-poll
/// woken, a cancel reaching the owner): the store promises about one flush interval, or about
/// 1 s for a cancel; the rest is slack for a loaded 2-core machine.
const CROSSING: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A store on `url` that flushes every [`FLUSH`], with the default lease.
async fn store(url: &str) -> PostgresStore {
    PostgresStore::builder(url)
        .flush_interval(FLUSH)
        .connect()
        .await
        .expect("connect a store to the test database")
}

/// A store on `url` that flushes every [`FLUSH`] and holds a lease of `lease`.
async fn store_with_lease(url: &str, lease: Duration) -> PostgresStore {
    PostgresStore::builder(url)
        .lease(lease)
        .flush_interval(FLUSH)
        .connect()
        .await
        .expect("connect a store to the test database")
}

/// A registry over `store`, with a short cancel grace so that no test waits 30 s for a job.
fn registry(store: PostgresStore) -> JobRegistry {
    JobRegistry::builder()
        .store(store)
        .cancel_grace(Duration::from_secs(5))
        .build()
}

/// `fut`'s output, or a panic naming `what` once [`PATIENCE`] has passed.
async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

/// Calls `probe` every 20 ms until it returns `Ok`, for at most [`PATIENCE`]; the panic names
/// `what` and the last `Err` (what was seen instead).
async fn eventually<T>(what: &str, probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    eventually_within(PATIENCE, what, probe).await
}

/// [`eventually`] with a bound of its own.
async fn eventually_within<T>(
    bound: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + bound;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {bound:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A status as another instance reads it, once the job has finished and every field is final.
async fn final_status_on(reader: &JobRegistry, id: JobId) -> Result<AsynchronousJobStatus, String> {
    match reader.status(&id).await {
        Ok(status) if status.is_terminal() => Ok(status),
        other => Err(format!("{other:?}")),
    }
}

/// A PROCESSING job's `runtimeMS` runs on with the clock, so a copy read from the database
/// differs from the owner's in that field alone; this zeroes it to compare the rest exactly.
fn without_runtime(mut status: AsynchronousJobStatus) -> AsynchronousJobStatus {
    status.runtime_ms = 0;
    status
}

/// The one number `sql` returns, read through a raw connection: counts the crate does not
/// expose.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The database name in a URL or `key=value` string.
fn dbname_of(url: &str) -> String {
    let config: tokio_postgres::Config = url.parse().expect("the harness gives valid URLs");
    config
        .get_dbname()
        .expect("the URL names a database")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Types

/// The store crosses threads, and so does every cluster-wide future (checked at compile time:
/// the function is never called).
#[test]
fn the_store_and_the_cluster_futures_are_send() {
    fn handle<T: Send + Sync + Clone + std::fmt::Debug>() {}
    handle::<PostgresStore>();

    #[allow(dead_code)]
    fn futures(registry: &JobRegistry, id: &JobId, etag: &asyncjobs::Etag, filter: &JobFilter) {
        fn send<T: Send>(_: T) {}
        send(PostgresStore::connect(""));
        send(PostgresStore::builder("").connect());
        send(registry.status(id));
        send(registry.cancel(id));
        send(registry.list(filter));
        send(registry.counts());
        send(registry.wait(id));
        send(registry.wait_for_change(id, etag));
        let user = registry.as_user(1);
        send(user.status(id));
        send(user.cancel(id));
        send(user.list(filter));
        send(user.wait(id));
        send(user.wait_for_change(id, etag));
    }
}

// ---------------------------------------------------------------------------------------------
// Two instances in one process

/// B reads, long-polls, cancels and waits for a job that runs on A, and both end up with the
/// same final status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_reads_follows_cancels_and_waits_for_a_job() {
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);

    // The job reports step 1, then each step the test sends, until its token fires.
    let (steps, mut next_step) = mpsc::unbounded_channel::<u64>();
    let (cancel_seen, saw_cancel) = oneshot::channel::<(Instant, bool)>();
    let request = JobRequest::new(json!({"concreteType": "org.example.Steps"})).started_by(7);
    let spawned = Instant::now();
    let id = a
        .spawn(request, move |job: JobHandle| async move {
            job.set_progress(1, 10, "step 1");
            loop {
                tokio::select! {
                    () = job.cancelled() => {
                        let _ = cancel_seen.send((Instant::now(), job.is_canceling()));
                        return Err::<(), _>(std::io::Error::other("stopped at a safe point"));
                    }
                    Some(step) = next_step.recv() => {
                        job.set_progress(step, 10, format!("step {step}"));
                    }
                }
            }
        })
        .await
        .unwrap();

    // B reads it from the database, progress included, within about one flush.
    let first = eventually("B reads the job at step 1", async || {
        match b.status(&id).await {
            Ok(status) if status.progress_current == Some(1) => Ok(status),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let progress_latency = spawned.elapsed();
    let on_a = a.status(&id).await.unwrap();
    assert_eq!(without_runtime(first.clone()), without_runtime(on_a));
    assert_eq!(first.job_state, Processing);
    assert!(!first.job_canceling);
    assert_eq!(first.started_by_user_id, Some(7));
    assert_eq!(
        (first.progress_current, first.progress_total),
        (Some(1), Some(10))
    );
    assert_eq!(first.progress_message.as_deref(), Some("step 1"));
    assert_eq!(
        first.request_body.as_deref(),
        Some(&json!({"concreteType": "org.example.Steps"}))
    );
    assert!(
        progress_latency <= CROSSING,
        "B saw the first progress {progress_latency:?} after the spawn"
    );

    // B long-polls with the etag it has: nothing new yet, so it must wait...
    let poll = tokio::spawn({
        let b = b.clone();
        let etag = first.etag.clone();
        async move {
            let changed = b.wait_for_change(&id, &etag).await;
            (changed, Instant::now())
        }
    });
    // A negative check needs some time: longer than a flush, in which nothing may wake it.
    tokio::time::sleep(2 * FLUSH).await;
    assert!(!poll.is_finished(), "the long-poll returned with no change");
    // ...and wakes soon after A's next progress.
    let stepped = Instant::now();
    steps.send(2).unwrap();
    let (changed, woke) = within("B's long-poll wakes", poll).await.unwrap();
    let long_poll_latency = woke - stepped;
    let changed = changed.expect("the long-poll returns the new status");
    assert_eq!(changed.progress_current, Some(2));
    assert_eq!(changed.progress_message.as_deref(), Some("step 2"));
    assert_ne!(changed.etag, first.etag);
    assert_eq!(
        without_runtime(changed),
        without_runtime(a.status(&id).await.unwrap())
    );
    assert!(
        long_poll_latency <= CROSSING,
        "B's long-poll woke {long_poll_latency:?} after A's progress"
    );

    // B waits for the end, and cancels; the cancel reaches the job on A through the database.
    let b_waits = tokio::spawn({
        let b = b.clone();
        async move {
            let done = b.wait(&id).await;
            (done, Instant::now())
        }
    });
    let requested = Instant::now();
    assert_eq!(b.cancel(&id).await, Ok(CancelOutcome::Requested));
    let (seen_at, canceling) = within("A's job sees the cancel", saw_cancel)
        .await
        .expect("the job tells when its token fires");
    let cancel_latency = seen_at - requested;
    assert!(canceling, "is_canceling() once the token fired");
    assert!(
        cancel_latency <= CROSSING,
        "A's job saw B's cancel {cancel_latency:?} after it was requested"
    );

    let on_a = within("the job ends on A", a.wait(&id)).await.unwrap();
    let ended = Instant::now();
    assert_eq!(on_a.job_state, Failed);
    assert!(on_a.job_canceling);
    assert_eq!(
        on_a.error_message.as_deref(),
        Some("stopped at a safe point")
    );
    assert_eq!(on_a.exception.as_deref(), Some("std::io::error::Error"));
    assert_eq!(
        (on_a.progress_current, on_a.progress_total),
        (Some(2), Some(10))
    );
    let (on_b, b_woke) = within("B's wait returns", b_waits).await.unwrap();
    assert_eq!(on_b, Ok(on_a.clone()), "B's wait returns A's final status");
    assert_eq!(b.status(&id).await, Ok(on_a.clone()));
    assert_eq!(a.status(&id).await, Ok(on_a.clone()));
    assert_eq!(b.cancel(&id).await, Ok(CancelOutcome::AlreadyFinished));
    println!(
        "cross-instance latencies: first progress read {progress_latency:?} after spawn; \
         long-poll woke {long_poll_latency:?} after the progress; cancel seen by the job \
         {cancel_latency:?} after the request; B's wait returned {:?} after the job ended on A",
        b_woke.saturating_duration_since(ended)
    );
}

/// Ids never collide across instances, even when both start thousands of jobs at once, and
/// each instance reads and lists the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_never_collide_across_instances() {
    const PER_INSTANCE: usize = 5_000;
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);

    // A's jobs are user 1's and B's user 2's, so that a list can pick either instance's.
    let spawn_all = |registry: JobRegistry, user: u64| {
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(PER_INSTANCE);
            for n in 0..PER_INSTANCE {
                let request = JobRequest::new(json!({"n": n})).started_by(user);
                // Thousands at once: started here without waiting for each to be written.
                let id = registry
                    .local()
                    .spawn(request, move |_job| async move {
                        Ok::<_, std::io::Error>(json!({"n": n}))
                    })
                    .unwrap();
                ids.push(id);
                if n % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        })
    };
    let (on_a, on_b) = (spawn_all(a.clone(), 1), spawn_all(b.clone(), 2));
    let on_a = within("A starts its jobs", on_a).await.unwrap();
    let on_b = within("B starts its jobs", on_b).await.unwrap();

    let distinct: HashSet<JobId> = on_a.iter().chain(&on_b).copied().collect();
    assert_eq!(distinct.len(), 2 * PER_INSTANCE, "every id is distinct");

    let mut finals_of_a = BTreeMap::new();
    for (registry, ids) in [(&a, &on_a), (&b, &on_b)] {
        for (n, id) in ids.iter().enumerate() {
            let done = within("a job completes", registry.wait(id)).await.unwrap();
            assert_eq!(done.job_state, Complete);
            assert_eq!(done.response_body.as_deref(), Some(&json!({"n": n})));
            finals_of_a.insert(*id, done);
        }
    }
    finals_of_a.retain(|id, _| on_a.contains(id));

    // B reads some of A's jobs from the database, exactly as A has them.
    for id in on_a.iter().step_by(250) {
        let read = eventually("B reads A's final status", async || {
            final_status_on(&b, *id).await
        })
        .await;
        assert_eq!(read, finals_of_a[id]);
    }
    // B lists all of A's, and counts every job of both.
    let listed = eventually("B lists all of A's jobs", async || {
        match b
            .list(&JobFilter::new().started_by(1).limit(PER_INSTANCE))
            .await
        {
            Ok(page) if page.jobs.len() == PER_INSTANCE && page.next.is_none() => Ok(page.jobs),
            Ok(page) => Err(format!("{} listed", page.jobs.len())),
            Err(e) => Err(format!("{e:?}")),
        }
    })
    .await;
    for status in &listed {
        assert_eq!(Some(status), finals_of_a.get(&status.job_id));
    }
    let counts = eventually("B counts every job of both", async || {
        match b.counts().await {
            Ok(counts) if counts.total() == 2 * PER_INSTANCE => Ok(counts),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        (counts.processing, counts.complete, counts.failed),
        (0, 2 * PER_INSTANCE, 0)
    );
}

/// A user view on one instance sees that user's jobs on another, and refuses other users'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_views_scope_jobs_across_instances() {
    let test = pg::fresh_db().await;
    let raw = pg::connect(&test.url).await.unwrap();
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);

    let id = a
        .as_user(1)
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 2, "waiting");
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("canceled"))
        })
        .await
        .unwrap();
    let seen = eventually("B reads user 1's job", async || match b.status(&id).await {
        Ok(status) if status.progress_current == Some(1) => Ok(status),
        other => Err(format!("{other:?}")),
    })
    .await;

    let intruder = b.as_user(2);
    assert_eq!(intruder.status(&id).await, Err(Error::NotYourJob(id)));
    assert_eq!(intruder.cancel(&id).await, Err(Error::NotYourJob(id)));
    assert_eq!(
        within(
            "a refused long-poll returns at once",
            intruder.wait_for_change(&id, &seen.etag)
        )
        .await,
        Err(Error::NotYourJob(id))
    );
    assert_eq!(
        within("a refused wait returns at once", intruder.wait(&id)).await,
        Err(Error::NotYourJob(id))
    );
    let intruder_list = intruder.list(&JobFilter::new()).await.unwrap().jobs;
    assert_eq!(intruder_list, Vec::new(), "user 2 lists none of user 1's");
    // The refused cancel left no request behind.
    let requested: bool = raw
        .query_one(
            "SELECT cancel_requested FROM asyncjobs_jobs WHERE id = $1",
            &[&i64::try_from(id.as_u64()).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!requested, "a refused cancel requests nothing");
    assert!(!a.status(&id).await.unwrap().job_canceling);

    let owner = b.as_user(1);
    let read = owner.status(&id).await.unwrap();
    assert_eq!(without_runtime(read.clone()), without_runtime(seen.clone()));
    assert_eq!(read.started_by_user_id, Some(1));
    let listed = owner.list(&JobFilter::new()).await.unwrap().jobs;
    assert_eq!(
        listed.iter().map(|s| s.job_id).collect::<Vec<_>>(),
        vec![id]
    );

    // An id no instance ever gave is unknown to everyone, and not "someone else's".
    let unknown = JobId::from_u64(id.as_u64() + 1_000_000_000);
    assert_eq!(b.status(&unknown).await, Err(Error::UnknownJob(unknown)));
    assert_eq!(
        owner.status(&unknown).await,
        Err(Error::UnknownJob(unknown))
    );
    assert_eq!(
        intruder.cancel(&unknown).await,
        Err(Error::UnknownJob(unknown))
    );
    assert_eq!(
        within(
            "a long-poll of an unknown job returns at once",
            owner.wait_for_change(&unknown, &seen.etag)
        )
        .await,
        Err(Error::UnknownJob(unknown))
    );

    // The owner's view may cancel it from B.
    assert_eq!(owner.cancel(&id).await, Ok(CancelOutcome::Requested));
    let done = within("user 1 waits for the end from B", owner.wait(&id))
        .await
        .unwrap();
    assert_eq!(done.job_state, Failed);
    assert!(done.job_canceling);
    assert_eq!(done, a.status(&id).await.unwrap());
}

/// A job's name is kept in the store with its status: another instance's lists filter by it
/// (the registry's and a user's), and so does an instance that starts after the job's instance
/// is gone, for jobs no instance holds any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_kept_in_the_store_and_filter_every_instance_s_jobs() {
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);

    let (release, released) = watch::channel(false);
    let spawn = |user: u64, name: Option<&str>, runs: bool| {
        let mut released = released.clone();
        let request = match name {
            Some(name) => JobRequest::default().name(name),
            None => JobRequest::default(),
        };
        b.as_user(user)
            .local()
            .spawn(request, move |_job: JobHandle| async move {
                if runs {
                    let _ = released.wait_for(|open| *open).await;
                }
                Ok::<_, std::io::Error>(())
            })
            .unwrap()
    };
    let running_export = spawn(7, Some("export"), true);
    let done_export = spawn(7, Some("export"), false);
    let import = spawn(7, Some("import"), false);
    let unnamed = spawn(7, None, false);
    let eights_export = spawn(8, Some("export"), false);
    // A cacheable request's row is first written by its cache claim: with its name too.
    let query = b
        .as_user(7)
        .submit(
            JobRequest::new(json!({"concreteType": "org.example.Query", "q": 1}))
                .name("query")
                .cacheable(),
            |_job: JobHandle| async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap()
        .id();
    for id in [done_export, import, unnamed, eights_export, query] {
        eventually("A reads B's finished job", async || {
            final_status_on(&a, id).await
        })
        .await;
    }

    let ids = |list: Result<JobPage, Error>| -> HashSet<JobId> {
        list.unwrap().jobs.into_iter().map(|s| s.job_id).collect()
    };
    let named = |name: &str| JobFilter::new().named(name);
    assert_eq!(
        ids(a.list(&named("export")).await),
        HashSet::from([running_export, done_export, eights_export]),
        "every user's exports"
    );
    assert_eq!(
        ids(a.as_user(7).list(&named("export")).await),
        HashSet::from([running_export, done_export]),
        "user 7's exports"
    );
    assert_eq!(
        ids(a.as_user(7).list(&named("export").state(Complete)).await),
        HashSet::from([done_export])
    );
    assert_eq!(ids(a.list(&named("import")).await), HashSet::from([import]));
    assert_eq!(ids(a.list(&named("query")).await), HashSet::from([query]));
    assert!(ids(a.list(&named("nothing")).await).is_empty());
    assert_eq!(ids(a.as_user(7).list(&JobFilter::new()).await).len(), 5);

    // B goes away; an instance started afterwards holds none of the jobs, and finds them by name.
    release.send_replace(true);
    b.shutdown(Duration::from_secs(5)).await;
    drop(b);
    let c = registry(store(&test.url).await);
    assert_eq!(
        ids(c.as_user(7).list(&named("export")).await),
        HashSet::from([running_export, done_export]),
        "after a restart"
    );
}

/// A cacheable job that runs until `release` opens, then completes with `result`.
fn gated(
    mut release: watch::Receiver<bool>,
    result: serde_json::Value,
) -> impl FnOnce(
    JobHandle,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, std::io::Error>> + Send>,
> {
    move |job: JobHandle| {
        Box::pin(async move {
            job.set_progress(1, 2, "running");
            release.wait_for(|open| *open).await.ok();
            Ok(result)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_caching_answers_equal_requests_from_any_instance() {
    use asyncjobs::Spawned;
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let query = |sql: &str| {
        JobRequest::new(json!({"concreteType": "org.example.Query", "sql": sql, "limit": 10}))
            .cacheable()
    };
    // The same body with its keys in another order: equal as JSON.
    let reordered = JobRequest::new(
        json!({"limit": 10, "sql": "select 1", "concreteType": "org.example.Query"}),
    )
    .cacheable();
    let (finish, release) = watch::channel(false);

    let first = a
        .as_user(1)
        .submit(query("select 1"), gated(release.clone(), json!(1)))
        .await
        .unwrap();
    let Spawned::Started(id) = first else {
        panic!("the first request starts a job: {first:?}")
    };

    // Running on A: B answers an equal request of the same user with it, and calls no job.
    let never_called = |_job: JobHandle| async {
        panic!("a reused request's job function is never called");
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    };
    assert_eq!(
        b.as_user(1).submit(reordered, never_called).await,
        Ok(Spawned::Reused(id))
    );
    // Another user, another body, or a request not marked cacheable: a job of its own.
    let other_user = b
        .as_user(2)
        .submit(query("select 1"), gated(release.clone(), json!(2)))
        .await
        .unwrap();
    assert!(!other_user.is_reused() && other_user.id() != id);
    let other_body = b
        .as_user(1)
        .submit(query("select 2"), gated(release.clone(), json!(3)))
        .await
        .unwrap();
    assert!(!other_body.is_reused() && other_body.id() != id);
    let not_cacheable = b
        .as_user(1)
        .submit(
            JobRequest::new(
                json!({"concreteType": "org.example.Query", "sql": "select 1", "limit": 10}),
            ),
            gated(release.clone(), json!(4)),
        )
        .await
        .unwrap();
    assert!(!not_cacheable.is_reused() && not_cacheable.id() != id);
    // B's own new job answers B's equal requests from memory, and A's from the store.
    assert_eq!(
        a.as_user(2).submit(query("select 1"), never_called).await,
        Ok(Spawned::Reused(other_user.id()))
    );

    // COMPLETE on A: still reused from B, with A's result.
    finish.send(true).unwrap();
    let done = within("A's job completes", a.wait(&id)).await.unwrap();
    assert_eq!(done.job_state, Complete);
    eventually("B sees A's job COMPLETE", async || {
        final_status_on(&b, id).await
    })
    .await;
    assert_eq!(
        b.as_user(1).submit(query("select 1"), never_called).await,
        Ok(Spawned::Reused(id))
    );
    assert_eq!(
        b.as_user(1)
            .wait(&id)
            .await
            .unwrap()
            .response_body
            .as_deref(),
        Some(&json!(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_caching_skips_failed_and_canceled_jobs_of_other_instances() {
    use asyncjobs::Spawned;
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let request = || {
        JobRequest::new(json!({"export": "all"}))
            .started_by(5)
            .cacheable()
    };

    // Failed on A: B starts anew.
    let failed = a
        .submit(request(), |_job| async {
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .await
        .unwrap();
    let failed = failed.id();
    assert_eq!(
        within("A's job fails", a.wait(&failed))
            .await
            .unwrap()
            .job_state,
        Failed
    );
    eventually("B sees A's job FAILED", async || {
        final_status_on(&b, failed).await
    })
    .await;
    let (finish, release) = watch::channel(false);
    // This one stops when canceled (a job that completes despite a cancel is COMPLETE, and
    // answers equal requests again).
    let second = b
        .submit(request(), |job: JobHandle| async move {
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("canceled"))
        })
        .await
        .unwrap();
    assert!(!second.is_reused() && second.id() != failed, "{second:?}");

    // Being canceled (asked from A, applied by B): A starts anew.
    assert_eq!(a.cancel(&second.id()).await, Ok(CancelOutcome::Requested));
    let third = a
        .submit(request(), gated(release.clone(), json!("third")))
        .await
        .unwrap();
    assert!(!third.is_reused() && third.id() != second.id(), "{third:?}");
    assert_eq!(
        within("B's canceled job ends", b.wait(&second.id()))
            .await
            .unwrap()
            .job_state,
        Failed
    );
    finish.send(true).unwrap();
    assert_eq!(
        within("A's third job completes", a.wait(&third.id()))
            .await
            .unwrap()
            .job_state,
        Complete
    );
    assert_eq!(
        b.submit(request(), |_job| async { Ok::<_, std::io::Error>(()) })
            .await,
        Ok(Spawned::Reused(third.id()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_anywhere_tell_running_from_queued_jobs_of_every_instance() {
    let test = pg::fresh_db().await;
    // A runs one job at a time; B has no limit.
    let a = JobRegistry::builder()
        .store(store(&test.url).await)
        .max_running(1)
        .build();
    let b = registry(store(&test.url).await);
    let (finish, release) = watch::channel(false);
    let on_a: Vec<JobId> = (0..3)
        .map(|n| {
            a.local()
                .spawn(
                    JobRequest::new(json!({"n": n})),
                    gated(release.clone(), json!(n)),
                )
                .unwrap()
        })
        .collect();
    let on_b = b
        .spawn(JobRequest::default(), gated(release.clone(), json!("b")))
        .await
        .unwrap();
    let failed = b
        .spawn(JobRequest::default(), |_job| async {
            Err::<(), _>(std::io::Error::other("no"))
        })
        .await
        .unwrap();
    within("B's failing job ends", b.wait(&failed))
        .await
        .unwrap();

    let counts = eventually("every instance's jobs counted", async || {
        let counts = b.counts().await.map_err(|e| e.to_string())?;
        if counts.processing == 4 && counts.failed == 1 && counts.queued == 2 {
            Ok(counts)
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    assert_eq!((counts.running, counts.queued, counts.complete), (2, 2, 0));
    assert_eq!(counts.processing, counts.running + counts.queued);
    assert_eq!(a.counts().await.unwrap(), counts);

    // Once the queue drains, nothing is counted as waiting.
    finish.send(true).unwrap();
    for id in on_a.iter().chain([&on_b]) {
        within("a job completes", b.wait(id)).await.unwrap();
    }
    let counts = eventually("the finished jobs counted", async || {
        let counts = b.counts().await.map_err(|e| e.to_string())?;
        if counts.complete == 4 {
            Ok(counts)
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    assert_eq!(
        (
            counts.processing,
            counts.running,
            counts.queued,
            counts.failed
        ),
        (0, 0, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_anywhere_follows_another_instance_s_job_to_its_end() {
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let (step, mut steps) = mpsc::unbounded_channel::<()>();
    let id = a
        .as_user(1)
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            for n in 1..=3u64 {
                steps.recv().await;
                job.set_progress(n, 3, format!("step {n}"));
            }
            Ok::<_, std::io::Error>(json!("done"))
        })
        .await
        .unwrap();

    let mut watch = within("B watches A's job", b.as_user(1).watch(&id))
        .await
        .unwrap();
    let first = within("the first status", watch.next()).await.unwrap();
    assert_eq!(
        (first.job_state, first.progress_current),
        (Processing, None)
    );
    assert_eq!(watch.latest(), first, "latest is the status last read");
    for n in 1..=3u64 {
        step.send(()).unwrap();
        let asked = Instant::now();
        // Each change is seen, or a later one (a slow reader skips, as with a local watch).
        let seen = within("the next change", watch.next()).await.unwrap();
        assert!(seen.progress_current >= Some(n), "step {n}: {seen:?}");
        assert!(
            asked.elapsed() < CROSSING,
            "step {n} took {:?}",
            asked.elapsed()
        );
        if seen.is_terminal() {
            break;
        }
        while watch.latest().progress_current < Some(n) {
            let _ = within("catching up", watch.next()).await;
        }
    }
    let mut last = watch.latest();
    while !last.is_terminal() {
        last = within("the final status", watch.next()).await.unwrap();
    }
    assert_eq!(last.job_state, Complete);
    assert_eq!(last.response_body.as_deref(), Some(&json!("done")));
    assert_eq!(within("after the end", watch.next()).await, None);

    // Scoped as every other call, and an unknown id is unknown everywhere.
    assert!(matches!(
        b.as_user(2).watch(&id).await,
        Err(Error::NotYourJob(_))
    ));
    let unknown: JobId = "999".parse().unwrap();
    assert!(matches!(b.watch(&unknown).await, Err(Error::UnknownJob(_))));
    // A's own job through the same call: watched in memory.
    let mut local = a.watch(&id).await.unwrap();
    assert_eq!(local.next().await.unwrap().job_state, Complete);
}

/// Progress nobody on A listens to reaches the store coalesced (the store is told a job is due
/// once per write, not once per report): the last report of a burst is still written, and so is
/// each later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_of_a_burst_of_progress_is_written() {
    const BURST: u64 = 100_000;
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let (more, mut asked) = mpsc::unbounded_channel::<u64>();
    let id = a
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            let mut done = 0;
            while let Some(to) = asked.recv().await {
                while done < to {
                    done += 1;
                    job.set_progress(done, u64::MAX, "counting");
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    for target in [BURST, BURST + 1, 2 * BURST] {
        more.send(target).unwrap();
        eventually_within(
            CROSSING,
            "B reads the burst's last report",
            async || match b.status(&id).await {
                Ok(status) if status.progress_current == Some(target) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
    drop(more);
    within("the job ends", a.wait(&id)).await.unwrap();
}

/// Equal requests sent to two instances at the same moment start one job: every other request
/// is answered with it, wherever it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_requests_racing_on_two_instances_start_one_job() {
    const ROUNDS: u64 = 5;
    const PER_INSTANCE: usize = 8;
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let called = Arc::new(AtomicU64::new(0));
    let (_finish, release) = watch::channel(false);
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(2 * PER_INSTANCE));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..2 * PER_INSTANCE {
            let instance = if n % 2 == 0 { a.clone() } else { b.clone() };
            let (barrier, called, release) = (barrier.clone(), called.clone(), release.clone());
            tasks.spawn(async move {
                barrier.wait().await;
                let request = JobRequest::new(json!({"round": round}))
                    .started_by(9)
                    .cacheable();
                instance
                    .submit(request, move |job| {
                        called.fetch_add(1, Ordering::SeqCst);
                        gated(release, json!(round))(job)
                    })
                    .await
                    .expect("submit")
            });
        }
        let answers: Vec<asyncjobs::Spawned> =
            within("every racing request is answered", tasks.join_all()).await;
        let started: Vec<_> = answers.iter().filter(|s| !s.is_reused()).collect();
        assert_eq!(
            started.len(),
            1,
            "round {round}: one job starts; answers {answers:?}"
        );
        let ids: HashSet<JobId> = answers.iter().map(|s| s.id()).collect();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: every answer names that job: {answers:?}"
        );
    }
    assert_eq!(
        called.load(Ordering::SeqCst),
        ROUNDS,
        "one job function call per round"
    );
}

// ---------------------------------------------------------------------------------------------
// An instance killed with SIGKILL, in a process of its own

/// Carries the database URL to [`child_instance`]; without it, that test does nothing.
const CHILD_URL_VAR: &str = "ASYNCJOBS_CLUSTER_CHILD_URL";
/// Marks the child's line with its instance id.
const CHILD_INSTANCE: &str = "asyncjobs-child-instance: ";
/// Marks each of the child's lines with a job id.
const CHILD_JOB: &str = "asyncjobs-child-job: ";

/// The instance that [`a_killed_instance_s_jobs_fail_with_node_lost`] starts in a process of its
/// own and kills: a 2 s lease, 3 jobs that never end, their ids on stdout, then it waits forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process of a_killed_instance_s_jobs_fail_with_node_lost, which runs it"]
async fn child_instance() {
    use std::io::Write;
    let Ok(url) = std::env::var(CHILD_URL_VAR) else {
        return;
    };
    let store = store_with_lease(&url, Duration::from_secs(2)).await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{CHILD_INSTANCE}{}", store.instance_id()).unwrap();
    let registry = registry(store);
    for n in 0..3 {
        let request = JobRequest::new(json!({"n": n}));
        let id = registry
            .spawn(request, |_job| {
                std::future::pending::<Result<(), std::io::Error>>()
            })
            .await
            .unwrap();
        writeln!(out, "{CHILD_JOB}{id}").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    std::future::pending::<()>().await;
}

/// Another process's instance, killed with SIGKILL while running jobs: once its lease runs
/// out, this instance marks its PROCESSING jobs FAILED with exception NodeLost. This instance's
/// own lease is 60 s: the dead one's 2 s lease, not the survivor's, sets how soon (issue 23,
/// defect 4: a survivor used to look every third of its own lease, here 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_jobs_fail_with_node_lost() {
    let test = pg::fresh_db().await;
    let here = registry(store_with_lease(&test.url, Duration::from_secs(60)).await);

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_instance", "--ignored", "--nocapture"])
        .env(CHILD_URL_VAR, &test.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the test binary again as the child instance");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut instance = None;
    let mut ids = Vec::new();
    within("the child prints its instance and its 3 job ids", async {
        while ids.len() < 3 {
            let line = lines
                .next_line()
                .await
                .expect("read the child's stdout")
                .expect("the child ended before printing its 3 job ids");
            if let Some(number) = line.strip_prefix(CHILD_INSTANCE) {
                instance = Some(number.trim().parse::<u64>().unwrap());
            } else if let Some(number) = line.strip_prefix(CHILD_JOB) {
                ids.push(number.trim().parse::<JobId>().unwrap());
            }
        }
    })
    .await;
    let instance = instance.expect("the child prints its instance first");

    let mut running = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let status = eventually("this instance reads the child's job", async || {
            match here.status(id).await {
                Ok(status) => Ok(status),
                Err(e) => Err(format!("{e:?}")),
            }
        })
        .await;
        assert_eq!(status.job_state, Processing);
        assert_eq!(status.request_body.as_deref(), Some(&json!({"n": n})));
        running.push(status);
    }
    let waits_for_first = tokio::spawn({
        let here = here.clone();
        let id = ids[0];
        async move { here.wait(&id).await }
    });

    child.start_kill().expect("SIGKILL the child"); // `kill` on Unix is SIGKILL
    let killed = Instant::now();
    let exit = within("the child dies", child.wait()).await.unwrap();
    assert_eq!(
        exit.signal(),
        Some(9),
        "the child died of SIGKILL: {exit:?}"
    );

    // The child's lease (2 s) from its last renewal, the reaper's margin, and slack for a
    // loaded machine; far below the 20 s a survivor's own lease would give.
    let bound = Duration::from_secs(8);
    let mut lost = Vec::new();
    for id in &ids {
        lost.push(
            eventually_within(bound, "the killed instance's job is failed", async || {
                final_status_on(&here, *id).await
            })
            .await,
        );
    }
    let detection = killed.elapsed();
    for (status, before) in lost.iter().zip(&running) {
        assert_eq!(status.job_state, Failed);
        assert_eq!(status.exception.as_deref(), Some(exception::NODE_LOST));
        assert_eq!(
            status.error_message.as_deref(),
            Some(
                format!(
                    "job's instance {instance} stopped renewing its lease, so the job was lost"
                )
                .as_str()
            )
        );
        assert!(!status.job_canceling);
        assert_ne!(status.etag, before.etag);
        assert_eq!(status.request_body, before.request_body);
        assert_eq!(status.started_on, before.started_on);
        assert!(status.changed_on >= before.changed_on);
    }
    let waited = within("a wait for the lost job returns", waits_for_first)
        .await
        .unwrap();
    assert_eq!(waited, Ok(lost[0].clone()));
    assert!(detection <= bound);
    println!(
        "NodeLost: all 3 jobs of the killed instance (lease 2 s) were FAILED {detection:?} \
         after SIGKILL"
    );
}

// ---------------------------------------------------------------------------------------------
// Faults: each on a server of its own, which it stops.

/// The server restarts while 20 jobs on A report progress; every final status still reaches
/// the database, where B reads exactly what A has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_loses_no_final_status() {
    const STEPS: u64 = 30;
    let server = pg::private_server();
    let test = server.fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);

    // 30 steps 100 ms apart: about 3 s each.
    let ids: Vec<JobId> = (0..20u64)
        .map(|n| {
            a.local()
                .spawn(
                    JobRequest::new(json!({"n": n})),
                    move |job: JobHandle| async move {
                        for step in 1..=STEPS {
                            job.set_progress(step, STEPS, format!("step {step}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok::<_, std::io::Error>(json!({"job": n}))
                    },
                )
                .unwrap()
        })
        .collect();
    for id in &ids {
        eventually("B reads A's running job", async || {
            match b.status(id).await {
                Ok(status) if status.job_state == Processing => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    let restart = Instant::now();
    tokio::task::block_in_place(|| server.restart());
    let restart_took = restart.elapsed();
    let running_after = ids
        .iter()
        .filter(|id| !a.local().status(id).unwrap().is_terminal())
        .count();

    for (n, id) in ids.iter().enumerate() {
        let done = within("A's job completes", a.wait(id)).await.unwrap();
        assert_eq!(done.job_state, Complete);
        assert_eq!(done.response_body.as_deref(), Some(&json!({"job": n})));
        assert_eq!(
            (done.progress_current, done.progress_total),
            (Some(STEPS), Some(STEPS))
        );
        assert_eq!(done.progress_message.as_deref(), Some("Complete"));
    }
    let written = Instant::now();
    for id in &ids {
        let read = eventually("B reads A's final status after the restart", async || {
            final_status_on(&b, *id).await
        })
        .await;
        assert_eq!(read, a.status(id).await.unwrap());
    }
    println!(
        "restart took {restart_took:?}; {running_after} of 20 jobs were still running after \
         it; B read all final statuses {:?} after the last job ended",
        written.elapsed()
    );
}

/// While the database is down, A's jobs run on and A answers for them; B cannot read, wait for,
/// cancel, list or count them and says so; once the database is back, the latest status of
/// every job reaches it: the final ones, and the latest progress of one still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_local_jobs_running_and_loses_no_final_status() {
    const SURVIVOR_STEPS: u64 = 50;
    let server = pg::private_server();
    let test = server.fresh_db().await;
    // The outage below lasts a few seconds, well within this lease: A must not give up its jobs.
    let a = registry(store_with_lease(&test.url, Duration::from_secs(10)).await);
    let b = registry(store(&test.url).await);

    // Five jobs finish during the outage; the survivor reports progress during it and runs on
    // until the database is back.
    let (go, gate) = watch::channel(false);
    let (release, released) = watch::channel(false);
    let mut ids: Vec<JobId> = (0..5u64)
        .map(|n| {
            let mut gate = gate.clone();
            a.local()
                .spawn(
                    JobRequest::new(json!({"n": n})),
                    move |job: JobHandle| async move {
                        job.set_progress(1, 2, "waiting");
                        gate.wait_for(|open| *open).await.ok();
                        job.set_progress(2, 2, "finishing");
                        Ok::<_, std::io::Error>(json!({"job": n}))
                    },
                )
                .unwrap()
        })
        .collect();
    let survivor = a
        .spawn(JobRequest::new(json!({"survivor": true})), {
            let mut gate = gate.clone();
            let mut released = released.clone();
            move |job: JobHandle| async move {
                job.set_progress(1, SURVIVOR_STEPS, "step 1");
                gate.wait_for(|open| *open).await.ok();
                for step in 2..=SURVIVOR_STEPS {
                    job.set_progress(step, SURVIVOR_STEPS, format!("step {step}"));
                    tokio::task::yield_now().await;
                }
                released.wait_for(|open| *open).await.ok();
                Ok::<_, std::io::Error>(json!({"survivor": true}))
            }
        })
        .await
        .unwrap();
    for id in ids.iter().chain([&survivor]) {
        eventually("B reads A's job at its first step", async || {
            match b.status(id).await {
                Ok(status) if status.progress_current == Some(1) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    tokio::task::block_in_place(|| server.stop());
    let down = Instant::now();

    // A answers for its own jobs from memory, also through the cluster-wide calls.
    for id in ids.iter().chain([&survivor]) {
        let local = a.status(id).await.unwrap();
        assert_eq!(local.job_state, Processing);
        assert_eq!(local.progress_current, Some(1));
        let anywhere = within("A reads its own job", a.status(id)).await.unwrap();
        assert_eq!(without_runtime(anywhere), without_runtime(local));
    }
    // B cannot reach A's jobs, and says why: the store's own error is underneath.
    fn unavailable<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
        match result {
            Err(error @ Error::StoreUnavailable(_)) => {
                let source = std::error::Error::source(&error).expect("the store's error");
                let store = source.downcast_ref::<asyncjobs::postgres::StoreError>();
                assert!(store.is_some(), "B {what}: {source:?} is the store's error");
            }
            other => panic!("B {what} with the database down: {other:?}"),
        }
    }
    let id = ids[0];
    unavailable(within("B reads", b.status(&id)).await, "reads");
    unavailable(within("B waits", b.wait(&id)).await, "waits");
    unavailable(within("B cancels", b.cancel(&id)).await, "cancels");
    unavailable(within("B lists", b.list(&JobFilter::new())).await, "lists");
    unavailable(within("B counts", b.counts()).await, "counts");

    // A's jobs go on and finish, and A starts one more, all while the database is down.
    go.send(true).unwrap();
    for (n, id) in ids.iter().enumerate() {
        let done = within("A's job finishes during the outage", a.wait(id))
            .await
            .unwrap();
        assert_eq!(done.job_state, Complete);
        assert!(!done.job_canceling, "A kept its jobs: its lease still held");
        assert_eq!(done.response_body.as_deref(), Some(&json!({"job": n})));
    }
    // A cacheable request is not refused for want of the store's request cache: it is answered
    // from A's own jobs, as without a store.
    let late_request = || JobRequest::new(json!({"late": true})).cacheable();
    let (go_late, mut late_gate) = watch::channel(false);
    let late = within(
        "A starts a cacheable job without the store",
        a.submit(late_request(), |_job| async move {
            late_gate.wait_for(|open| *open).await.ok();
            Ok::<_, std::io::Error>(json!({"late": true}))
        }),
    )
    .await
    .unwrap();
    assert!(!late.is_reused());
    let again = within(
        "A answers an equal request without the store",
        a.submit(late_request(), |_job| async {
            Ok::<_, std::io::Error>(json!({"again": true}))
        }),
    )
    .await
    .unwrap();
    assert_eq!(again, asyncjobs::Spawned::Reused(late.id()));
    go_late.send(true).unwrap();
    let late = late.id();
    assert_eq!(
        within("the late job completes", a.wait(&late))
            .await
            .unwrap()
            .job_state,
        Complete
    );
    ids.push(late);
    eventually("the survivor reports its last step", async || {
        match a.status(&survivor).await {
            Ok(status) if status.progress_current == Some(SURVIVOR_STEPS) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Held down for several flush intervals, so that the store tries to write all this, and
    // fails, before the database returns.
    tokio::time::sleep(4 * FLUSH).await;
    let outage = down.elapsed();
    assert!(
        outage < Duration::from_secs(6),
        "the outage ({outage:?}) must stay well within A's 10 s lease"
    );

    tokio::task::block_in_place(|| server.start_again());
    let back = Instant::now();
    for id in &ids {
        let read = eventually(
            "B reads A's final status once the database is back",
            async || final_status_on(&b, *id).await,
        )
        .await;
        assert_eq!(read, a.status(id).await.unwrap());
    }
    // The survivor's latest progress, not an earlier one, reaches the database.
    let latest = eventually("B reads the survivor's last step", async || {
        match b.status(&survivor).await {
            Ok(status) if status.progress_current == Some(SURVIVOR_STEPS) => Ok(status),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let written = back.elapsed();
    assert_eq!(
        without_runtime(latest),
        without_runtime(a.status(&survivor).await.unwrap())
    );
    release.send(true).unwrap();
    let done = within("B waits for the survivor", b.wait(&survivor))
        .await
        .unwrap();
    assert_eq!(done.job_state, Complete);
    assert_eq!(done, a.status(&survivor).await.unwrap());
    println!(
        "outage of {outage:?}; every status written and read from B {written:?} after the \
         database came back"
    );
}

/// An instance that cannot renew its lease in time (the database is down for longer than
/// it) cancels its own jobs; once the database is back it works on, and another instance
/// reads its jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_renew_its_lease_cancels_its_jobs() {
    const LEASE: Duration = Duration::from_secs(2);
    let server = pg::private_server();
    let test = server.fresh_db().await;
    let a_store = store_with_lease(&test.url, LEASE).await;
    let a = registry(a_store.clone());
    let b = registry(store_with_lease(&test.url, LEASE).await);

    let (token_fired, fired) = oneshot::channel::<Instant>();
    let id = a
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 2, "waiting");
            job.cancelled().await;
            let _ = token_fired.send(Instant::now());
            Err::<(), _>(std::io::Error::other("canceled"))
        })
        .await
        .unwrap();
    eventually("B reads A's job", async || match b.status(&id).await {
        Ok(status) if status.progress_current == Some(1) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;

    tokio::task::block_in_place(|| server.stop());
    let down = Instant::now();
    let fired = within("A cancels its job once its lease is lost", fired)
        .await
        .expect("the job tells when its token fires");
    let self_cancel = fired - down;
    let on_a = within("the job ends on A", a.wait(&id)).await.unwrap();
    assert_eq!(on_a.job_state, Failed);
    assert!(on_a.job_canceling);
    assert_eq!(on_a.error_message.as_deref(), Some("canceled"));
    // The lease runs out at most a lease after the stop, and is checked every third of it.
    assert!(
        self_cancel <= LEASE + LEASE / 3 + Duration::from_secs(1),
        "A canceled its job {self_cancel:?} after the database went down (lease {LEASE:?})"
    );

    tokio::task::block_in_place(|| server.start_again());
    // The cluster ends the job FAILED: with A's own final status, if A renewed its lease before
    // anyone reaped it, else as lost.
    let read = eventually("B reads the job FAILED", async || {
        final_status_on(&b, id).await
    })
    .await;
    assert_eq!(read.job_state, Failed);
    assert!(
        read == on_a || read.exception.as_deref() == Some(exception::NODE_LOST),
        "B reads {read:?}; A has {on_a:?}"
    );
    // A works on once it holds a live registration again (renewed, or registered anew if it
    // was reaped): a new job is seen and canceled from B. (A job started before that may be
    // written under a registration that was reaped: see
    // `a_job_started_while_the_lease_is_lost_is_not_left_running_unseen`.)
    let raw = pg::connect(&test.url).await.unwrap();
    eventually("A holds a live registration again", async || {
        let live: i64 = raw
            .query_one(
                "SELECT count(*) FROM asyncjobs_instances WHERE id = $1 AND lease_until > now()",
                &[&i64::try_from(a_store.instance_id()).unwrap()],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if live == 1 {
            Ok(())
        } else {
            Err(format!("instance {} not registered", a_store.instance_id()))
        }
    })
    .await;
    let next = a
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("canceled"))
        })
        .await
        .unwrap();
    eventually("B reads A's new job", async || {
        match b.status(&next).await {
            Ok(status) if status.job_state == Processing => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(b.cancel(&next).await, Ok(CancelOutcome::Requested));
    let done = within("B waits for A's new job", b.wait(&next))
        .await
        .unwrap();
    assert_eq!(done.job_state, Failed);
    assert!(done.job_canceling);
    assert_eq!(done, a.status(&next).await.unwrap());
    println!(
        "lease {LEASE:?}: A canceled its job {self_cancel:?} after the database went down; \
         B read it as {}",
        if read == on_a { "A wrote it" } else { "lost" }
    );
}

/// A job started after its instance lost its lease, while the instance's registration still
/// stands, is failed as lost once another instance reaps that registration; its owner must
/// then cancel it, as it canceled the jobs it had when the lease ran out, rather than run it on
/// unseen (the cluster reads it FAILED, its owner runs it and will report another end).
///
/// The database is up throughout; a trigger refuses A's lease renewals (as an outage would,
/// but deterministically), and refuses the reaping of A until the new job's row is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_while_the_lease_is_lost_is_not_left_running_unseen() {
    const LEASE: Duration = Duration::from_secs(2);
    let test = pg::fresh_db().await;
    let raw = pg::connect(&test.url).await.unwrap();
    let a_store = store_with_lease(&test.url, LEASE).await;
    let first_instance = a_store.instance_id();
    let a = registry(a_store.clone());
    let b = registry(store_with_lease(&test.url, LEASE).await);

    let (token_fired, fired) = oneshot::channel::<Instant>();
    let old = a
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.cancelled().await;
            let _ = token_fired.send(Instant::now());
            Err::<(), _>(std::io::Error::other("canceled"))
        })
        .await
        .unwrap();
    eventually("B reads A's first job", async || {
        b.status(&old).await.map_err(|e| format!("{e:?}"))
    })
    .await;

    raw.batch_execute(&format!(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
         CREATE TRIGGER refuse_renewal BEFORE UPDATE ON asyncjobs_instances
             FOR EACH ROW WHEN (OLD.id = {first_instance}) EXECUTE FUNCTION refuse();
         CREATE TRIGGER refuse_reaping BEFORE DELETE ON asyncjobs_instances
             FOR EACH ROW WHEN (OLD.id = {first_instance}) EXECUTE FUNCTION refuse();"
    ))
    .await
    .unwrap();
    let refused = Instant::now();
    let fired = within("A cancels its job once its lease is lost", fired)
        .await
        .unwrap();
    println!(
        "A canceled its jobs {:?} after its renewals were refused (lease {LEASE:?})",
        fired - refused
    );

    // Started after A gave up its jobs; written under A's registration, which still stands.
    let (finish, finished) = oneshot::channel::<()>();
    let next = a
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            tokio::select! {
                () = job.cancelled() => Err(std::io::Error::other("canceled")),
                _ = finished => Ok(json!("done")),
            }
        })
        .await
        .unwrap();
    let owner_of_next = format!("SELECT owner FROM asyncjobs_jobs WHERE id = {next}");
    eventually("A writes its new job", async || {
        match raw.query_opt(&owner_of_next, &[]).await {
            Ok(Some(row)) => Ok(row.get::<_, i64>(0)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Now A's registration may be reaped.
    raw.batch_execute("DROP TRIGGER refuse_reaping ON asyncjobs_instances")
        .await
        .unwrap();
    let lost = eventually("B reads A's new job as lost", async || {
        final_status_on(&b, next).await
    })
    .await;
    assert_eq!(lost.exception.as_deref(), Some(exception::NODE_LOST));
    let read_lost = Instant::now();
    eventually("A registers anew", async || match a_store.instance_id() {
        id if id != first_instance => Ok(()),
        id => Err(format!("still instance {id}")),
    })
    .await;

    // The cluster has declared the job lost: its owner must not run it on.
    let canceled = eventually_within(
        Duration::from_secs(5),
        "A cancels the job the cluster declared lost",
        async || match a.status(&next).await {
            Ok(status) if status.job_canceling || status.is_terminal() => Ok(status),
            other => Err(format!(
                "{other:?} (read as lost {:?} ago)",
                read_lost.elapsed()
            )),
        },
    )
    .await;
    let _ = finish.send(());
    assert!(
        canceled.job_canceling,
        "A ended the job without canceling it: {canceled:?}"
    );
}

/// `shutdown` writes every final status before this instance leaves the cluster, even when a
/// write of the store is under way as it begins: none is left PROCESSING, or marked lost, in the
/// database.
///
/// To make "a write under way" certain rather than likely, a trigger makes the first write of
/// the final statuses take 2 s (as a slow network or a lock wait might).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_every_final_status_before_leaving() {
    const JOBS: u64 = 200;
    let test = pg::fresh_db().await;
    let raw = pg::connect(&test.url).await.unwrap();
    let registry = registry(store(&test.url).await);
    let (go, gate) = watch::channel(false);
    let ids: Vec<JobId> = (0..JOBS)
        .map(|n| {
            let mut gate = gate.clone();
            registry
                .local()
                .spawn(
                    JobRequest::new(json!({"n": n})),
                    move |job: JobHandle| async move {
                        job.set_progress(1, 2, "waiting");
                        gate.wait_for(|open| *open).await.ok();
                        Ok::<_, std::io::Error>(json!({"n": n}))
                    },
                )
                .unwrap()
        })
        .collect();
    let first = i64::try_from(ids[0].as_u64()).unwrap();
    let last = i64::try_from(ids[ids.len() - 1].as_u64()).unwrap();
    let processing = format!(
        "SELECT count(*) FROM asyncjobs_jobs \
         WHERE id BETWEEN {first} AND {last} AND state = 'PROCESSING'"
    );
    eventually("every start is written", async || {
        match rows(&raw, &processing).await {
            n if n == JOBS as i64 => Ok(()),
            n => Err(format!("{n} PROCESSING rows")),
        }
    })
    .await;
    // Nothing is due now, so the next write is the first of the final statuses.
    raw.batch_execute(
        "CREATE SEQUENCE writes_seen;
         CREATE FUNCTION slow_first_write() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN
                 IF nextval('writes_seen') = 1 THEN PERFORM pg_sleep(2); END IF;
                 RETURN NULL;
             END $$;
         CREATE TRIGGER slow_first_write BEFORE INSERT ON asyncjobs_jobs
             FOR EACH STATEMENT EXECUTE FUNCTION slow_first_write();",
    )
    .await
    .unwrap();

    // The jobs finish, and the registry shuts down while the first write of their ends is
    // under way.
    go.send(true).unwrap();
    for id in &ids {
        within("a job completes", registry.wait(id)).await.unwrap();
    }
    eventually(
        "the first write of the final statuses is under way",
        async || match rows(
            &raw,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event = 'PgSleep'",
        )
        .await
        {
            1 => Ok(()),
            n => Err(format!("{n} writes under way")),
        },
    )
    .await;
    registry.shutdown(Duration::from_secs(5)).await;
    // Whatever the store left running in the database has ended before the rows are read.
    eventually("the store's statements end", async || {
        match rows(
            &raw,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'active' \
             AND pid <> pg_backend_pid()",
        )
        .await
        {
            0 => Ok(()),
            n => Err(format!("{n} statements running")),
        }
    })
    .await;

    let stored: BTreeMap<u64, AsynchronousJobStatus> = raw
        .query(
            "SELECT id, status FROM asyncjobs_jobs WHERE id BETWEEN $1 AND $2",
            &[&first, &last],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let id: i64 = row.get(0);
            let status: serde_json::Value = row.get(1);
            (id as u64, serde_json::from_value(status).unwrap())
        })
        .collect();
    let wrong: Vec<String> = ids
        .iter()
        .filter_map(|id| {
            let local = registry.local().status(id).unwrap();
            let stored = stored.get(&id.as_u64());
            (stored != Some(&local)).then(|| {
                format!(
                    "{id}: local {} {:?}, stored {:?}",
                    local.job_state,
                    local.exception,
                    stored.map(|s| (s.job_state, s.exception.clone()))
                )
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {JOBS} final statuses differ in the database after shutdown, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

// ---------------------------------------------------------------------------------------------
// Cost and bounds

/// 1,000 jobs reporting progress as fast as they can cost the database a few batched
/// statements per flush, not one per report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_costs_a_bounded_number_of_statements() {
    const JOBS: u64 = 1_000;
    const RUN: Duration = Duration::from_secs(2);
    // The database is alone on a server of its own, and the counts are read through another
    // database of it, so every transaction counted is the store's.
    let server = pg::private_server();
    let test = server.fresh_db().await;
    let name = dbname_of(&test.url);
    let stats = pg::connect(&server.url_of("postgres")).await.unwrap();
    let transactions = async || -> i64 {
        stats
            .query_one(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0)
    };
    let before = transactions().await;

    let started = Instant::now();
    let registry = registry(store(&test.url).await);
    let reports = Arc::new(AtomicU64::new(0));
    let ids: Vec<JobId> = (0..JOBS)
        .map(|_| {
            let reports = reports.clone();
            registry
                .local()
                .spawn(JobRequest::default(), move |job: JobHandle| async move {
                    let began = Instant::now();
                    let mut n = 0u64;
                    while began.elapsed() < RUN {
                        n += 1;
                        job.set_progress(n, u64::MAX, "counting");
                        if n % 100 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    reports.fetch_add(n, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(n)
                })
                .unwrap()
        })
        .collect();
    let mut finals = Vec::with_capacity(ids.len());
    for id in &ids {
        finals.push(
            within("a counting job ends", registry.wait(id))
                .await
                .unwrap(),
        );
    }
    // Every final status is written (asked through the store: a few statements of its own)
    // before the shutdown, which must then write nothing more (whether it does is
    // `shutdown_writes_every_final_status_before_leaving`'s business).
    eventually("the final statuses are written", async || {
        match registry.counts().await {
            Ok(counts) if counts.complete == JOBS as usize => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    registry.shutdown(Duration::from_secs(5)).await;
    let window = started.elapsed();
    drop(registry);

    // A backend reports its counts at the latest when it exits, else within 10 s of going
    // idle: wait until the store's connections are gone, for at most that long.
    let connections = async || -> i64 {
        stats
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0)
    };
    let closed = tokio::time::timeout(Duration::from_secs(12), async {
        while connections().await > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok();
    let after = transactions().await;
    let spent = after - before;
    let per_second = spent as f64 / window.as_secs_f64();
    let reports = reports.load(Ordering::Relaxed);

    // Every job's latest status is in the database, exactly.
    let raw = pg::connect(&test.url).await.unwrap();
    let stored: BTreeMap<u64, AsynchronousJobStatus> = raw
        .query("SELECT id, status FROM asyncjobs_jobs", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let id: i64 = row.get(0);
            let status: serde_json::Value = row.get(1);
            (id as u64, serde_json::from_value(status).unwrap())
        })
        .collect();
    assert_eq!(stored.len(), finals.len());
    for done in &finals {
        assert_eq!(done.job_state, Complete);
        assert_eq!(stored.get(&done.job_id.as_u64()), Some(done));
    }

    println!(
        "{JOBS} jobs made {reports} progress reports in {window:?}; the store ran {spent} \
         transactions: {per_second:.1} per second (connections closed after shutdown: {closed})"
    );
    assert!(
        per_second < 50.0,
        "{spent} transactions in {window:?} ({per_second:.1}/s) for {reports} progress reports"
    );
}

/// How often the database's retention sweep runs (the first as soon as the store is attached).
const SWEEP_PERIOD: Duration = Duration::from_secs(10);

/// A registry with the retention rules `rules` over a store on `url`, one job that runs until
/// canceled, and 100 jobs that complete at once. Returns the registry, the running job, and
/// when all 100 finished statuses were written.
///
/// Returns once the 100 final statuses have been written to the table (each one's change notice
/// was heard; a sweep may already have deleted some on a loaded machine, so the table is not
/// counted).
async fn retention_run(
    url: &str,
    rules: impl FnOnce(asyncjobs::JobRegistryBuilder) -> asyncjobs::JobRegistryBuilder,
) -> (JobRegistry, JobId, Instant) {
    use asyncjobs::postgres::__db::{Db, Listener, Notice};
    let db = Db::connect(url)
        .await
        .expect("connect to the test database");
    let mut listener = Listener::start(&db)
        .await
        .expect("listen for change notices");
    // Each job's final version, as its Finished event says.
    let finals = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, u64>::new()));
    let recorded = finals.clone();
    let registry = rules(JobRegistry::builder())
        .store(store(url).await)
        .observe(move |event: &asyncjobs::JobEvent<'_>| {
            if event.kind() == asyncjobs::JobEventKind::Finished {
                recorded
                    .lock()
                    .unwrap()
                    .insert(event.job_id().as_u64(), event.version());
            }
        })
        .build();
    let running = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.cancelled().await;
            Err::<(), _>(std::io::Error::other("canceled"))
        })
        .await
        .unwrap();
    for n in 0..100u64 {
        registry
            .spawn(JobRequest::new(json!({"n": n})), move |_job| async move {
                Ok::<_, std::io::Error>(n)
            })
            .await
            .unwrap();
    }
    // The highest version written of each job, from the notices.
    let mut written: BTreeMap<u64, u64> = BTreeMap::new();
    within("the 100 final statuses are written", async {
        loop {
            let all = {
                let finals = finals.lock().unwrap();
                finals.len() == 100
                    && finals
                        .iter()
                        .all(|(id, last)| written.get(id).is_some_and(|v| v >= last))
            };
            if all {
                return;
            }
            match listener.recv().await {
                Some(Notice::Changed { id, version, .. }) => {
                    let seen = written.entry(id).or_default();
                    *seen = (*seen).max(version);
                }
                Some(_) => {}
                None => panic!("the listener stopped"),
            }
        }
    })
    .await;
    (registry, running, Instant::now())
}

const FINISHED_ROWS: &str = "SELECT count(*) FROM asyncjobs_jobs WHERE state <> 'PROCESSING'";
const PROCESSING_ROWS: &str = "SELECT count(*) FROM asyncjobs_jobs WHERE state = 'PROCESSING'";

/// Finished statuses in the shared table are bounded by count, as in memory; running jobs'
/// rows are never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_table_keeps_at_most_the_finished_count() {
    let test = pg::fresh_db().await;
    let raw = pg::connect(&test.url).await.unwrap();
    let (registry, running, written) =
        retention_run(&test.url, |b| b.keep_finished_at_most(10)).await;

    eventually_within(
        SWEEP_PERIOD + PATIENCE,
        "the table keeps 10 finished statuses",
        async || match rows(&raw, FINISHED_ROWS).await {
            10 => Ok(()),
            n => Err(format!("{n} finished rows")),
        },
    )
    .await;
    let trimmed_after = written.elapsed();
    assert_eq!(
        rows(&raw, PROCESSING_ROWS).await,
        1,
        "the running job's row stays"
    );
    assert_eq!(
        registry.status(&running).await.unwrap().job_state,
        Processing
    );
    assert_eq!(
        registry
            .local()
            .list(&JobFilter::new().state(Complete))
            .jobs
            .len(),
        10
    );
    println!("100 finished rows were trimmed to 10 {trimmed_after:?} after they were written");
}

/// Finished statuses in the shared table are deleted once older than the registry keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_table_drops_finished_statuses_after_their_time() {
    let test = pg::fresh_db().await;
    let raw = pg::connect(&test.url).await.unwrap();
    let (registry, running, written) =
        retention_run(&test.url, |b| b.keep_finished_for(Duration::from_secs(2))).await;

    eventually_within(
        SWEEP_PERIOD + PATIENCE,
        "the finished statuses are deleted after 2 s",
        async || match rows(&raw, FINISHED_ROWS).await {
            0 => Ok(()),
            n => Err(format!("{n} finished rows")),
        },
    )
    .await;
    let gone_after = written.elapsed();
    assert_eq!(
        rows(&raw, PROCESSING_ROWS).await,
        1,
        "the running job's row stays"
    );
    assert_eq!(
        registry.status(&running).await.unwrap().job_state,
        Processing
    );
    println!("100 finished rows kept 2 s were gone {gone_after:?} after they were all written");
}

/// `watch_all` with a store follows every instance's jobs in its scope: B's feed of user 5 gets
/// A's job of user 5 (at its latest, up to its final status) and nothing of user 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_all_follows_every_instance_s_jobs_in_scope() {
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let mut feed = b.as_user(5).watch_all();
    let mut everyone = b.watch_all();
    let (go, release) = tokio::sync::oneshot::channel::<()>();
    let other = a
        .as_user(6)
        .spawn(JobRequest::default(), |_job| async {
            Ok::<_, std::io::Error>(json!("not user 5's"))
        })
        .await
        .unwrap();
    let id = a
        .as_user(5)
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(1, 2, "half way");
            release.await.ok();
            Ok::<_, std::io::Error>(json!("done"))
        })
        .await
        .unwrap();
    let first = within("B's feed hears A's job", feed.next()).await.unwrap();
    assert_eq!(first.job_id, id, "user 6's job is not in user 5's feed");
    go.send(()).unwrap();
    let last = within("B's feed hears A's job finish", async {
        let mut last = first;
        while !last.is_terminal() {
            last = feed.next().await.unwrap();
            assert_eq!(last.job_id, id, "user 6's job is not in user 5's feed");
        }
        last
    })
    .await;
    assert_eq!(last.job_state, AsynchJobState::Complete);
    assert_eq!(last.response_body.as_deref(), Some(&json!("done")));
    // The administrator's feed has both.
    let seen = within("B's administrator feed hears both", async {
        let mut seen = HashSet::new();
        while seen.len() < 2 {
            let status = everyone.next().await.unwrap();
            if status.is_terminal() {
                seen.insert(status.job_id);
            }
        }
        seen
    })
    .await;
    assert_eq!(seen, HashSet::from([id, other]));
}

/// No silent cap (issue 23, defect 7): a user with more jobs than the store once listed at most
/// (10,000) gets every one of them from another instance, a page at a time, and counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_listed_and_counted_however_many_a_user_has() {
    const JOBS: usize = 10_050;
    let test = pg::fresh_db().await;
    let keep_all = |store| {
        JobRegistry::builder()
            .store(store)
            .keep_finished_at_most(2 * JOBS)
            .build()
    };
    let a = keep_all(store(&test.url).await);
    let b = keep_all(store(&test.url).await);
    let alice = a.as_user(7);
    let mut started = HashSet::new();
    for n in 0..JOBS {
        let id = alice
            .local()
            .spawn(JobRequest::new(json!({"n": n})), |_job| async {
                Ok::<_, std::io::Error>(json!("done"))
            })
            .unwrap();
        started.insert(id);
    }
    let counts = eventually("B counts all of A's finished jobs", async || {
        match b.as_user(7).counts().await {
            Ok(counts) if counts.complete == JOBS => Ok(counts),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!((counts.processing, counts.failed), (0, 0));

    let mut listed = Vec::new();
    let mut pages = 0;
    let mut filter = Some(JobFilter::new().limit(1_000));
    while let Some(this) = filter {
        let page = within("B lists a page", b.as_user(7).list(&this))
            .await
            .unwrap();
        assert!(page.jobs.len() <= 1_000);
        listed.extend(page.jobs.iter().map(|s| s.job_id));
        filter = page.next;
        pages += 1;
    }
    assert_eq!(pages, 11, "ten full pages and one of 50");
    assert!(
        listed.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first, each job once"
    );
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), started);
}

/// Issue 23, defect 5: a job that finished while its final status could not be written, and that
/// retention dropped from memory at once, still reads COMPLETE (never its stale PROCESSING row)
/// on its own instance, during the outage and after; the other instance reads the same once the
/// database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_status_dropped_from_memory_before_it_is_written_never_reads_backwards() {
    let server = pg::private_server();
    let test = server.fresh_db().await;
    let a = JobRegistry::builder()
        .store(store_with_lease(&test.url, Duration::from_secs(30)).await)
        .keep_finished_at_most(0)
        .build();
    let b = registry(store(&test.url).await);
    let (go, gate) = tokio::sync::oneshot::channel::<()>();
    let id = a
        .spawn(JobRequest::default(), |_job: JobHandle| async move {
            gate.await.ok();
            Ok::<_, std::io::Error>(json!("done"))
        })
        .await
        .unwrap();
    let running = eventually("B reads A's job", async || match b.status(&id).await {
        Ok(status) => Ok(status),
        Err(e) => Err(format!("{e:?}")),
    })
    .await;
    assert_eq!(running.job_state, Processing);

    server.stop();
    let waiting = a.wait(&id);
    go.send(()).unwrap();
    let done = within("the job finishes", waiting).await.unwrap();
    assert_eq!(done.job_state, Complete);
    // Retention keeps no finished status: the job leaves A's memory as its end is recorded.
    eventually(
        "retention drops the job from A's memory",
        async || match a.local().status(&id) {
            Err(Error::UnknownJob(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // A still answers with its final status, though the database is down.
    assert_eq!(
        within("A reads its job", a.status(&id)).await,
        Ok(done.clone())
    );

    server.start_again();
    let on_b = eventually("B reads the final status", async || {
        final_status_on(&b, id).await
    })
    .await;
    assert_eq!(without_runtime(on_b), without_runtime(done.clone()));
    assert_eq!(within("A reads its job", a.status(&id)).await, Ok(done));
}

/// A final status queued behind a slow delivery (an observer still busy with the job's cancel)
/// reaches the store before the job is retired: once retention has dropped the job from memory,
/// its instance reads COMPLETE, never the store's stale row (found by review, with issue 23's
/// defect 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_status_queued_behind_a_slow_observer_never_reads_backwards() {
    let test = pg::fresh_db().await;
    let slow = |event: &JobEvent<'_>| {
        if event.kind() == JobEventKind::Changed && event.job_canceling() {
            std::thread::sleep(Duration::from_millis(1500));
        }
    };
    let a = JobRegistry::builder()
        .store(store(&test.url).await)
        .keep_finished_at_most(0)
        .observe(slow)
        .build();
    let id = a
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.cancelled().await;
            Ok::<_, std::io::Error>(json!("finished anyway"))
        })
        .await
        .unwrap();
    // The canceling thread delivers the cancel's event, and sits in the observer meanwhile.
    let canceler = {
        let a = a.clone();
        std::thread::spawn(move || a.local().cancel(&id))
    };
    eventually(
        "retention drops the finished job from memory",
        async || match a.local().status(&id) {
            Err(Error::UnknownJob(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let read = within("A reads its job", a.status(&id)).await.unwrap();
    assert_eq!(read.job_state, Complete, "{read:?}");
    assert!(read.job_canceling);
    tokio::task::spawn_blocking(move || canceler.join().unwrap())
        .await
        .unwrap()
        .unwrap();
}

/// Values the store cannot keep never hold back its writes (found by review, with issue 23's
/// defect 1): a user id above i64::MAX is refused with a store (nothing starts), and a NUL in a
/// list filter is an empty answer, not an outage; other jobs go on being written and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_store_cannot_keep_are_refused_or_made_safe() {
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let refused = a
        .spawn(JobRequest::default().started_by(u64::MAX), |_job| async {
            Ok::<_, std::io::Error>(())
        })
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "{refused:?}"
    );
    let id = a
        .as_user(1)
        .spawn(JobRequest::default(), |_job| async {
            Ok::<_, std::io::Error>(json!("done"))
        })
        .await
        .unwrap();
    let done = eventually("B reads user 1's job finished", async || {
        final_status_on(&b, id).await
    })
    .await;
    assert_eq!(done.job_state, Complete);
    for filter in [
        JobFilter::new().named("a\u{0}b"),
        JobFilter::new().concrete_type("x\u{0}"),
    ] {
        let page = within("B lists with a NUL in the filter", b.list(&filter))
            .await
            .unwrap();
        assert!(page.jobs.is_empty());
    }
}

/// A list pages through this instance's jobs and the others' together: with jobs of user 7 on
/// both A and B, B's pages (of 1 to 7 jobs) list every job once, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_pages_through_both_instances_jobs_each_once() {
    let test = pg::fresh_db().await;
    let a = registry(store(&test.url).await);
    let b = registry(store(&test.url).await);
    let mut all = HashSet::new();
    for n in 0..12u64 {
        let on = if n % 3 == 0 { &a } else { &b };
        let id = on
            .as_user(7)
            .spawn(JobRequest::new(json!({"n": n})), |_job| async {
                Ok::<_, std::io::Error>(json!("done"))
            })
            .await
            .unwrap();
        all.insert(id);
    }
    for limit in 1..=7 {
        let mut listed = Vec::new();
        let mut filter = Some(JobFilter::new().limit(limit));
        while let Some(this) = filter {
            let page = within("B lists a page", b.as_user(7).list(&this))
                .await
                .unwrap();
            assert!(page.jobs.len() <= limit);
            listed.extend(page.jobs.iter().map(|s| s.job_id));
            filter = page.next;
        }
        assert!(
            listed.windows(2).all(|pair| pair[0] > pair[1]),
            "pages of {limit}: newest first, each job once: {listed:?}"
        );
        assert_eq!(
            listed.iter().copied().collect::<HashSet<_>>(),
            all,
            "pages of {limit}"
        );
    }
}
