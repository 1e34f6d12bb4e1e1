//! The cost of the fair scheduler, against the one global FIFO queue of `max_running` alone (the
//! queue every registry had before per-user limits, and still the default).
//!
//! - `spawn_queued`: spawning N jobs (10,000 by default) of 100 users into a registry whose
//!   slots are all taken, so every one of them queues: the spawn path with the scheduler on. The
//!   fair variant also computes each job's place and its message; a job queued last moves no one.
//! - `drain`: spawning N jobs of 100 users under `max_running(4)` and running them all to their
//!   end: every start moves a queue, and with the fair order rewrites the messages of the jobs
//!   whose place changed (at most 10 plus one per step of the queue's length, per start).
//!
//! Variants, each in the same group so the ratio is visible: `fifo` (`max_running(4)`), `fair`
//! (`max_running(4).max_running_per_user(2)`: round-robin over the users, places shown) and, for
//! the spawn path, `fair_one_user` (every job of one user, so one queue of N). Target: the fair
//! spawn path within 1.2x of the FIFO one.
//!
//! What is timed: only the spawns (`spawn_queued`, the registry and its 4 slot-holding jobs built
//! before the clock starts, shut down after it stops), or spawns until the last job has counted
//! down a shared latch (`drain`, as in `lifecycle`). Spawning runs on a task on a 2-worker
//! runtime, as a request handler would; the runtime is built once. N is `BENCH_SCHEDULING_JOBS`.

use std::time::{Duration, Instant};

use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod common;
use common::{env_usize, runtime, Latch};

const USERS: u64 = 100;
const SLOTS: usize = 4;

fn registry(variant: &str) -> JobRegistry {
    let builder = JobRegistry::builder()
        .max_running(SLOTS)
        .keep_finished_at_most(usize::MAX);
    match variant {
        "fifo" => builder,
        _ => builder.max_running_per_user(2),
    }
    .build()
}

fn user_of(variant: &str, i: usize) -> u64 {
    match variant {
        "fair_one_user" => 0,
        _ => i as u64 % USERS,
    }
}

fn scheduling(c: &mut Criterion) {
    let n = env_usize("BENCH_SCHEDULING_JOBS", 10_000);
    let rt = runtime(2);
    let mut group = c.benchmark_group("scheduling");
    group
        .throughput(Throughput::Elements(n as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    for variant in ["fifo", "fair", "fair_one_user"] {
        group.bench_function(
            BenchmarkId::new(format!("spawn_queued/{variant}"), n),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let registry = registry(variant);
                        let (elapsed, registry) = rt
                            .block_on(rt.spawn(async move {
                                // Every slot taken, by users of their own.
                                for holder in 0..SLOTS as u64 {
                                    registry
                                        .spawn(
                                            JobRequest::default().started_by(1_000 + holder),
                                            |job: JobHandle| async move {
                                                job.cancelled().await;
                                                Err::<(), _>("canceled")
                                            },
                                        )
                                        .await
                                        .unwrap();
                                }
                                let requests: Vec<JobRequest> = (0..n)
                                    .map(|i| JobRequest::default().started_by(user_of(variant, i)))
                                    .collect();
                                let start = Instant::now();
                                for request in requests {
                                    registry
                                        .spawn(request, |_job| async { Ok::<_, &str>(()) })
                                        .await
                                        .unwrap();
                                }
                                let elapsed = start.elapsed();
                                assert_eq!(registry.local().counts().queued, n);
                                (elapsed, registry)
                            }))
                            .unwrap();
                        total += elapsed;
                        rt.block_on(registry.shutdown(Duration::ZERO));
                    }
                    total
                });
            },
        );
    }

    for variant in ["fifo", "fair"] {
        group.bench_function(BenchmarkId::new(format!("drain/{variant}"), n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let registry = registry(variant);
                    let latch = Latch::new(n);
                    let (elapsed, registry) = rt
                        .block_on(rt.spawn(async move {
                            let requests: Vec<JobRequest> = (0..n)
                                .map(|i| JobRequest::default().started_by(user_of(variant, i)))
                                .collect();
                            let start = Instant::now();
                            for request in requests {
                                let latch = latch.clone();
                                registry
                                    .spawn(request, move |job: JobHandle| async move {
                                        job.set_progress(1, 1, "done");
                                        latch.count_down();
                                        Ok::<_, &str>(())
                                    })
                                    .await
                                    .unwrap();
                            }
                            latch.wait().await;
                            (start.elapsed(), registry)
                        }))
                        .unwrap();
                    total += elapsed;
                    drop(registry);
                }
                total
            });
        });
    }

    group.finish();
}

criterion_group!(benches, scheduling);
criterion_main!(benches);
