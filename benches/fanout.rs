//! One change, many listeners: what open feeds cost a change, and how fast many waiters wake.
//!
//! Feeds are indexed by the user they follow, so a change must cost O(feeds interested in its
//! job), not O(all feeds). Each case runs in a registry of its own whose job is user 1's, with:
//! - `feeds_0`: no feed open;
//! - `other_users_100`, `other_users_10000`: one `as_user(u).watch_all()` feed for each of 100 or
//!   10,000 other users (2, 3, ...); none of them hears the job; compare with `feeds_0`.
//! - `own_user_100`: 100 feeds of user 1, which all hear the job: the cost that O(interested)
//!   allows, per interested feed. The feeds are never read; a feed keeps one entry per job
//!   however often it changes, and a job dropped by retention leaves it, so they stay small.
//!
//! Group `fanout_set_progress`: one `set_progress` (new current, same message) of a running job.
//! `lean` (see `common`; it has no feeds) is there for scale.
//!
//! Group `fanout_finish`: a job's start and end (spawn of a job that returns at once, its
//! created, finished and, through retention, removed events), per job, in chunks of 1,000 jobs
//! each waited for with one latch, on a current-thread runtime; `keep_finished_at_most(1,000)`,
//! so each spawn also drops an old status, as in a long-running registry. `lean` spawns the same
//! jobs (its finish has no listeners to tell).
//!
//! Group `wait_for_change`: the time from a change to the moment the last of 1,000 waiters on
//! that job has its new status, on a 2-worker runtime, the change made from a worker. The waiters
//! are spawned and registered before the clock starts. Against:
//! - `raw_floor`: 1,000 tasks on one `tokio::sync::Notify` woken by `notify_waiters()`, each
//!   reading an atomic;
//! - `lean+watch`: what a lean registry would add for long-polling: a `tokio::sync::watch` of the
//!   job's etag, each waiter then reading the lean status (lock + clone);
//! - `ours`: `registry.wait_for_change(&id, &etag)`, which returns the status.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::{Duration, Instant};

use asyncjobs::{JobHandle, JobRegistry, JobRequest, StatusFeed};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::sync::{watch, Notify};

mod common;
use common::{env_usize, runtime, Latch, Lean};

const TOTAL: u64 = 1 << 40;
const CHUNK: u64 = 1_000;
const USER: u64 = 1;

/// The feed configurations, by name: how many feeds, and whether they are the job's user's.
const FEEDS: [(&str, usize, bool); 4] = [
    ("feeds_0", 0, false),
    ("other_users_100", 100, false),
    ("other_users_10000", 10_000, false),
    ("own_user_100", 100, true),
];

fn open_feeds(registry: &JobRegistry, count: usize, own: bool) -> Vec<StatusFeed> {
    (0..count as u64)
        .map(|k| {
            let user = if own { USER } else { USER + 1 + k };
            registry.as_user(user).watch_all()
        })
        .collect()
}

/// A job of user 1 that never finishes, and its handle.
fn pending_job(registry: &JobRegistry) -> JobHandle {
    let (tx, rx) = mpsc::channel();
    registry
        .local()
        .spawn(
            JobRequest::default().started_by(USER),
            move |job: JobHandle| {
                tx.send(job).unwrap();
                std::future::pending::<Result<(), std::io::Error>>()
            },
        )
        .unwrap();
    rx.recv().unwrap()
}

fn set_progress(c: &mut Criterion) {
    let rt = runtime(1);
    let _entered = rt.enter();

    let lean = Lean::new();
    let theirs = lean.insert(Some(USER));

    let mut group = c.benchmark_group("fanout_set_progress");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("lean", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(theirs.set_progress(black_box(i), TOTAL, black_box("copying rows")))
        });
    });
    for (name, count, own) in FEEDS {
        let registry = JobRegistry::new();
        let feeds = open_feeds(&registry, count, own);
        let job = pending_job(&registry);
        group.bench_function(BenchmarkId::new("ours", name), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                black_box(job.set_progress(black_box(i), TOTAL, black_box("copying rows")))
            });
        });
        // Only the job's own user's feeds heard it: one pending entry each.
        let heard: usize = feeds.iter().map(StatusFeed::pending).sum();
        assert_eq!(heard, if own { count } else { 0 });
        drop((feeds, job, registry));
    }
    group.finish();
}

/// Spawns `iters` jobs that return at once, `CHUNK` at a time, waiting for each chunk.
async fn spawn_chunks(iters: u64, mut spawn: impl FnMut(Latch)) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(CHUNK);
        let latch = Latch::new(chunk as usize);
        for _ in 0..chunk {
            spawn(latch.clone());
        }
        latch.wait().await;
        left -= chunk;
    }
    start.elapsed()
}

fn finish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    // The first jobs of a process grow the allocator's arenas and tokio's task structures; without
    // this, whichever case runs first pays for it.
    let warm = JobRegistry::builder()
        .keep_finished_at_most(CHUNK as usize)
        .build();
    rt.block_on(spawn_chunks(100 * CHUNK, |latch| {
        warm.local()
            .spawn(JobRequest::default(), |_job| async move {
                latch.count_down();
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
    }));
    drop(warm);

    let mut group = c.benchmark_group("fanout_finish");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("lean", |b| {
        let lean = Lean::new();
        b.iter_custom(|iters| {
            rt.block_on(spawn_chunks(iters, |latch| {
                drop(lean.spawn(Some(USER), |_job| async move {
                    latch.count_down();
                    Ok(serde_json::Value::Null)
                }));
            }))
        });
    });
    for (name, count, own) in FEEDS {
        let registry = JobRegistry::builder()
            .keep_finished_at_most(CHUNK as usize)
            .build();
        let feeds = open_feeds(&registry, count, own);
        let view = registry.as_user(USER);
        group.bench_function(BenchmarkId::new("ours", name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(spawn_chunks(iters, |latch| {
                    view.local()
                        .spawn(JobRequest::default(), |_job| async move {
                            latch.count_down();
                            Ok::<_, std::io::Error>(())
                        })
                        .unwrap();
                }))
            });
        });
        // Retention keeps what the feeds hold bounded: at most one entry per retained job.
        let heard: usize = feeds.iter().map(StatusFeed::pending).sum();
        assert!(heard <= count * (CHUNK as usize + 1));
        if !own {
            assert_eq!(heard, 0);
        }
        drop((feeds, view, registry));
    }
    group.finish();
}

/// How many tasks wait for one change.
fn waiters() -> usize {
    env_usize("BENCH_WAITERS", 1_000)
}

/// Polls `future` once, then says it is registered, then waits for it.
async fn registered<F: Future>(future: F, ready: &Latch) -> F::Output {
    let mut future = pin!(future);
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    ready.count_down();
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => future.await,
    }
}

fn wait_for_change(c: &mut Criterion) {
    let count = waiters();
    let rt = runtime(2);
    let mut group = c.benchmark_group("wait_for_change");
    group
        .throughput(Throughput::Elements(count as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    // Each iteration: spawn the waiters, wait until all are registered, then (timed) make one
    // change and wait until every waiter has its result.
    group.bench_function(BenchmarkId::new("raw_floor", count), |b| {
        let notify = Arc::new(Notify::new());
        let progress = Arc::new(AtomicU64::new(0));
        b.iter_custom(|iters| {
            let (notify, progress) = (notify.clone(), progress.clone());
            rt.block_on(rt.spawn(async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (ready, done) = (Latch::new(count), Latch::new(count));
                    for _ in 0..count {
                        let (notify, progress) = (notify.clone(), progress.clone());
                        let (ready, done) = (ready.clone(), done.clone());
                        tokio::spawn(async move {
                            let notified = notify.notified();
                            registered(notified, &ready).await;
                            black_box(progress.load(Ordering::Acquire));
                            done.count_down();
                        });
                    }
                    ready.wait().await;
                    let start = Instant::now();
                    progress.fetch_add(1, Ordering::Release);
                    notify.notify_waiters();
                    done.wait().await;
                    total += start.elapsed();
                }
                total
            }))
            .unwrap()
        });
    });

    group.bench_function(BenchmarkId::new("lean+watch", count), |b| {
        let lean = Lean::new();
        let job = lean.insert(Some(USER));
        let (tx, rx) = watch::channel(1u64);
        let tx = Arc::new(tx);
        b.iter_custom(|iters| {
            let (lean, job, tx, rx) = (lean.clone(), job.clone(), tx.clone(), rx.clone());
            rt.block_on(rt.spawn(async move {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let (ready, done) = (Latch::new(count), Latch::new(count));
                    for _ in 0..count {
                        let (lean, mut rx) = (lean.clone(), rx.clone());
                        let (ready, done) = (ready.clone(), done.clone());
                        let id = job.id;
                        tokio::spawn(async move {
                            rx.borrow_and_update();
                            registered(rx.changed(), &ready).await.unwrap();
                            black_box(lean.status(id).unwrap());
                            done.count_down();
                        });
                    }
                    ready.wait().await;
                    let start = Instant::now();
                    if job.set_progress(i + 1, TOTAL, "copying rows") {
                        tx.send_modify(|etag| *etag += 1);
                    }
                    done.wait().await;
                    total += start.elapsed();
                }
                total
            }))
            .unwrap()
        });
    });

    group.bench_function(BenchmarkId::new("ours", count), |b| {
        let registry = JobRegistry::new();
        let job = {
            let _entered = rt.enter();
            pending_job(&registry)
        };
        let id = job.id();
        b.iter_custom(|iters| {
            let (registry, job) = (registry.clone(), job.clone());
            rt.block_on(rt.spawn(async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let seen = registry.status(&id).await.unwrap();
                    let (etag, current) = (seen.etag, seen.progress_current);
                    let (ready, done) = (Latch::new(count), Latch::new(count));
                    for _ in 0..count {
                        let (registry, etag) = (registry.clone(), etag.clone());
                        let (ready, done) = (ready.clone(), done.clone());
                        tokio::spawn(async move {
                            let changed = registry.wait_for_change(&id, &etag);
                            black_box(registered(changed, &ready).await.unwrap());
                            done.count_down();
                        });
                    }
                    ready.wait().await;
                    let start = Instant::now();
                    job.set_progress(current.unwrap_or(0) + 1, TOTAL, "copying rows");
                    done.wait().await;
                    total += start.elapsed();
                }
                total
            }))
            .unwrap()
        });
    });

    group.finish();
}

criterion_group! {
    name = benches;
    // Plots would take most of a run's time, and no figure is read from them.
    config = Criterion::default().without_plots();
    targets = set_progress, finish, wait_for_change
}
criterion_main!(benches);
