//! A job's whole life, in bulk: spawn, 10 progress reports, complete, and a wait for the job;
//! a batch of N jobs per iteration on a 2-worker multi-thread runtime, timed from the first spawn
//! until the last wait has returned.
//!
//! Against: the raw floor (`tokio::spawn`, progress in an `AtomicU64`, waited for through its
//! `JoinHandle`) and the lean registry (see `common`: a `TaskTracker` spawn, a child token, a
//! status in one `Mutex<HashMap>`, waited for through its `JoinHandle` and then read, as our
//! `wait` returns the final status). Guard: at most 1.3x the lean registry (benches/README.md).
//!
//! N defaults to 10,000 so a sample takes milliseconds; `BENCH_JOBS=100000 cargo bench --bench
//! lifecycle` gives the 100k-job figure.
//!
//! What is timed, and why it is fair:
//! - Every variant spawns from a task on a worker (as a request handler would), and every job
//!   body is the same: 10 reports with preformatted messages, no `.await` between them (so the
//!   figure is our overhead at its most visible, not the scheduler's), then the same small JSON
//!   response, built by the job and handed back (the floor's through its `JoinHandle`).
//! - No variant takes a request body (the lean registry keeps none).
//! - Every variant waits for each job in spawn order: the floor and lean through the
//!   `JoinHandle`, ours with the public API, `registry.wait(&id)`, which returns the final status.
//! - `raw_floor+token` is the floor with what cancellation needs (a `TaskTracker` spawn and a
//!   child `CancellationToken` per job): how much of the gap between floor and lean that is.
//! - A fresh registry per batch, built before and dropped after the clock, with
//!   `keep_finished_at_most(N)`, so that retention never evicts inside the measurement (a
//!   long-running registry does evict, one old status per spawn, at the cost of a `Drop`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;
use common::{env_usize, response_body, runtime, Lean, RawFloor, STEPS};

async fn ours_body(job: JobHandle) -> Result<Value, std::io::Error> {
    for (i, message) in STEPS.iter().enumerate() {
        job.set_progress(i as u64 + 1, STEPS.len() as u64, *message);
    }
    Ok(response_body())
}

/// Runs `batch` on a worker `iters` times and sums the times it reports; `setup` and the
/// teardown of what `batch` hands back run outside the clock.
fn timed<S, T, Fut>(
    rt: &Runtime,
    iters: u64,
    mut setup: impl FnMut() -> S,
    batch: impl Fn(S) -> Fut,
) -> Duration
where
    Fut: std::future::Future<Output = (Duration, T)> + Send + 'static,
    T: Send + 'static,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let state = setup();
        let (elapsed, rest) = rt.block_on(rt.spawn(batch(state))).unwrap();
        total += elapsed;
        drop(rest);
    }
    total
}

fn lifecycle(c: &mut Criterion) {
    let n = env_usize("BENCH_JOBS", 10_000);
    let rt = runtime(2);
    let mut group = c.benchmark_group("lifecycle");
    group
        .throughput(Throughput::Elements(n as u64))
        .sample_size(if n > 20_000 { 10 } else { 20 })
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.bench_function(BenchmarkId::new("raw_floor", n), |b| {
        b.iter_custom(|iters| {
            timed(
                &rt,
                iters,
                || (),
                |()| async move {
                    let start = Instant::now();
                    let floor = RawFloor::new();
                    let mut tasks = Vec::with_capacity(n);
                    for _ in 0..n {
                        let (_job, task) = floor.spawn(|job| async move {
                            for i in 0..STEPS.len() as u64 {
                                job.set_progress(i + 1);
                            }
                            response_body()
                        });
                        tasks.push(task);
                    }
                    for task in tasks {
                        black_box(task.await.unwrap());
                    }
                    (start.elapsed(), ())
                },
            )
        });
    });

    group.bench_function(BenchmarkId::new("raw_floor+token", n), |b| {
        b.iter_custom(|iters| {
            timed(
                &rt,
                iters,
                || (TaskTracker::new(), CancellationToken::new()),
                |(tracker, root)| async move {
                    let start = Instant::now();
                    let mut tasks = Vec::with_capacity(n);
                    for _ in 0..n {
                        let token = root.child_token();
                        let progress = std::sync::atomic::AtomicU64::new(0);
                        tasks.push(tracker.spawn(async move {
                            for i in 0..STEPS.len() as u64 {
                                progress.store(i + 1, std::sync::atomic::Ordering::Release);
                            }
                            black_box(token.is_cancelled());
                            response_body()
                        }));
                    }
                    for task in tasks {
                        black_box(task.await.unwrap());
                    }
                    (start.elapsed(), (tracker, root))
                },
            )
        });
    });

    group.bench_function(BenchmarkId::new("lean", n), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, Lean::new, |lean| async move {
                let start = Instant::now();
                let mut tasks = Vec::with_capacity(n);
                for _ in 0..n {
                    tasks.push(lean.spawn(None, |job| async move {
                        for (i, message) in STEPS.iter().enumerate() {
                            job.set_progress(i as u64 + 1, STEPS.len() as u64, message);
                        }
                        Ok(response_body())
                    }));
                }
                for (id, task) in tasks {
                    task.await.unwrap();
                    black_box(lean.status(id).unwrap());
                }
                let elapsed = start.elapsed();
                assert_eq!(lean.len(), n);
                (elapsed, lean)
            })
        });
    });

    group.bench_function(BenchmarkId::new("ours", n), |b| {
        b.iter_custom(|iters| {
            timed(
                &rt,
                iters,
                || JobRegistry::builder().keep_finished_at_most(n).build(),
                |registry| async move {
                    let start = Instant::now();
                    let mut ids = Vec::with_capacity(n);
                    for _ in 0..n {
                        ids.push(
                            registry
                                .spawn(JobRequest::default(), ours_body)
                                .await
                                .unwrap(),
                        );
                    }
                    for id in &ids {
                        black_box(registry.wait(id).await.unwrap());
                    }
                    (start.elapsed(), registry)
                },
            )
        });
    });

    group.finish();
}

criterion_group! {
    name = benches;
    // Plots would take most of a run's time, and no figure is read from them.
    config = Criterion::default().without_plots();
    targets = lifecycle
}
criterion_main!(benches);
