//! Writers, pollers and an admin page at once, on a 2-worker runtime.
//!
//! The registry holds 8 running jobs and 1,000 retained finished ones, each with a 1 KB request
//! body. The 8 running jobs, each its own task, report progress in a loop; 4 poller tasks read
//! the statuses of random running jobs. One side at a time is measured while the others keep
//! going:
//! - `progress_under_reads`: a fixed number of reports, spread over the 8 jobs, pollers running;
//! - `status_under_reports`: a fixed number of reads, spread over the 4 pollers, jobs running;
//! - `list_under_load`: an admin task's `list()` of every job (1,008), jobs and pollers running;
//! - `counts_under_load`: the admin task's `counts()`, jobs and pollers running.
//!
//! Criterion's iteration count is the number of operations of the measured side, so figures are
//! per operation and throughput is operations per second.
//!
//! Against: the lean registry (see `common`), whose one mutex is taken by every report, read,
//! list and count (its `list()` clones every small status under that lock; its `counts()` walks
//! the map; it keeps no request bodies, ours a 1 KB one per job), and, for reports and reads, the
//! raw floor (atomic stores, and an atomic load as its "status"; it has nothing to list or
//! count). The ratio to the lean registry is read, not targeted (benches/README.md, "Guards").
//!
//! Job and poller tasks yield to the scheduler every 16 operations, so they share both workers;
//! a costlier operation on one side takes more of the workers' time and so also slows the
//! other, as it would in a server. The admin task never yields: it holds one worker for its
//! whole run while the jobs and pollers carry on on the other (in parallel, and contending for
//! the same locks), so its figure is the cost of one `list()` or `counts()` under load rather
//! than a scheduling round. Reports move `current` every time and change the message every 16th
//! report.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use asyncjobs::{JobFilter, JobHandle, JobId, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

mod common;
use common::{request_body, response_body, runtime, Lean, LeanJob, RawFloor, RawJob, XorShift};

const JOBS: usize = 8;
const FINISHED: usize = 1_000;
const POLLERS: usize = 4;
const YIELD_EVERY: u64 = 16;
const MESSAGES: [&str; 4] = [
    "reading rows",
    "transforming rows",
    "writing rows",
    "checking rows",
];

fn message(current: u64) -> &'static str {
    MESSAGES[((current / 16) % MESSAGES.len() as u64) as usize]
}

/// One implementation under test: what each kind of task does once.
trait Target: Send + Sync + 'static {
    fn report(&self, job: usize, current: u64);
    fn read(&self, job: usize);
    fn list(&self);
    fn counts(&self);
}

struct Ours {
    registry: JobRegistry,
    ids: Vec<JobId>,
    handles: Vec<JobHandle>,
}

impl Target for Ours {
    fn report(&self, job: usize, current: u64) {
        black_box(self.handles[job].set_progress(current, u64::MAX, message(current)));
    }
    fn read(&self, job: usize) {
        black_box(self.registry.local().status(&self.ids[job]).unwrap());
    }
    fn list(&self) {
        let all = self.registry.local().list(&JobFilter::new()).jobs;
        assert_eq!(all.len(), JOBS + FINISHED);
        black_box(all);
    }
    fn counts(&self) {
        black_box(self.registry.local().counts());
    }
}

struct Theirs {
    registry: Lean,
    jobs: Vec<LeanJob>,
}

impl Target for Theirs {
    fn report(&self, job: usize, current: u64) {
        black_box(self.jobs[job].set_progress(current, u64::MAX, message(current)));
    }
    fn read(&self, job: usize) {
        black_box(self.registry.status(self.jobs[job].id).unwrap());
    }
    fn list(&self) {
        let all = self.registry.list();
        assert_eq!(all.len(), JOBS + FINISHED);
        black_box(all);
    }
    fn counts(&self) {
        black_box(self.registry.counts());
    }
}

struct Floor {
    jobs: Vec<RawJob>,
}

impl Target for Floor {
    fn report(&self, job: usize, current: u64) {
        self.jobs[job].set_progress(current);
    }
    fn read(&self, job: usize) {
        black_box(self.jobs[job].progress());
    }
    fn list(&self) {
        unreachable!("the raw floor keeps no statuses to list");
    }
    fn counts(&self) {
        unreachable!("the raw floor keeps no statuses to count");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Progress,
    Status,
    List,
    Counts,
}

/// `ops` operations split over `tasks` tasks: how many task `k` does.
fn share(ops: u64, tasks: usize, k: usize) -> u64 {
    ops / tasks as u64 + u64::from((k as u64) < ops % tasks as u64)
}

/// A task doing `op` `limit` times, or until `stop`, yielding every `every` operations.
fn looping<T: Target>(
    target: &Arc<T>,
    stop: &Arc<AtomicBool>,
    limit: u64,
    every: u64,
    mut op: impl FnMut(&T, u64) + Send + 'static,
) -> JoinHandle<()> {
    let (target, stop) = (target.clone(), stop.clone());
    tokio::spawn(async move {
        let mut done = 0;
        while done < limit && !stop.load(Ordering::Relaxed) {
            done += 1;
            op(&target, done);
            if done % every == 0 {
                tokio::task::yield_now().await;
            }
        }
    })
}

/// Runs every side at once until the measured side has done `ops` operations; returns how long
/// that took. Writers and pollers always run; the admin task only when it is measured.
fn run<T: Target>(rt: &Runtime, target: &Arc<T>, measured: Side, ops: u64) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        let limit = |side: Side, tasks: usize, k: usize| {
            if side == measured {
                share(ops, tasks, k)
            } else {
                u64::MAX
            }
        };
        let start = Instant::now();
        let mut timed = Vec::new();
        let mut free = Vec::new();
        let mut sort = |side: Side, task: JoinHandle<()>| {
            if side == measured {
                timed.push(task);
            } else {
                free.push(task);
            }
        };
        for job in 0..JOBS {
            let task = looping(
                target,
                &stop,
                limit(Side::Progress, JOBS, job),
                YIELD_EVERY,
                move |t, n| t.report(job, n),
            );
            sort(Side::Progress, task);
        }
        for poller in 0..POLLERS {
            let mut rng = XorShift::new(poller as u64 + 1);
            let task = looping(
                target,
                &stop,
                limit(Side::Status, POLLERS, poller),
                YIELD_EVERY,
                move |t, _| t.read(rng.below(JOBS)),
            );
            sort(Side::Status, task);
        }
        match measured {
            Side::List => sort(
                Side::List,
                looping(target, &stop, ops, u64::MAX, |t, _| t.list()),
            ),
            Side::Counts => sort(
                Side::Counts,
                looping(target, &stop, ops, u64::MAX, |t, _| t.counts()),
            ),
            Side::Progress | Side::Status => {}
        }
        for task in timed {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        for task in free {
            task.await.unwrap();
        }
        elapsed
    })
}

fn contention(c: &mut Criterion) {
    let rt = runtime(2);

    let ours = rt.block_on(async {
        let registry = JobRegistry::builder()
            .keep_finished_at_most(FINISHED)
            .build();
        let mut finished = Vec::new();
        for _ in 0..FINISHED {
            finished.push(
                registry
                    .spawn(
                        JobRequest::new(request_body(1024)),
                        |_job: JobHandle| async { Ok::<_, std::io::Error>(response_body()) },
                    )
                    .await
                    .unwrap(),
            );
        }
        for id in &finished {
            registry.wait(id).await.unwrap();
        }
        let mut ids = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..JOBS {
            let (tx, rx) = mpsc::channel();
            ids.push(
                registry
                    .spawn(
                        JobRequest::new(request_body(1024)),
                        move |job: JobHandle| {
                            tx.send(job).unwrap();
                            std::future::pending::<Result<(), std::io::Error>>()
                        },
                    )
                    .await
                    .unwrap(),
            );
            handles.push(rx.recv().unwrap());
        }
        Arc::new(Ours {
            registry,
            ids,
            handles,
        })
    });
    let theirs = {
        let registry = Lean::new();
        for _ in 0..FINISHED {
            registry.insert(None).finish(Ok(response_body()));
        }
        let jobs = (0..JOBS).map(|_| registry.insert(None)).collect();
        Arc::new(Theirs { registry, jobs })
    };
    let floor = rt.block_on(async {
        let floor = RawFloor::new();
        let jobs = (0..JOBS)
            .map(|_| floor.spawn(|_job| std::future::pending::<()>()).0)
            .collect();
        Arc::new(Floor { jobs })
    });

    let mut group = c.benchmark_group("contention");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (side, name) in [
        (Side::Progress, "progress_under_reads"),
        (Side::Status, "status_under_reports"),
        (Side::List, "list_under_load"),
        (Side::Counts, "counts_under_load"),
    ] {
        if matches!(side, Side::Progress | Side::Status) {
            group.bench_function(BenchmarkId::new("raw_floor", name), |b| {
                b.iter_custom(|ops| run(&rt, &floor, side, ops));
            });
        }
        group.bench_function(BenchmarkId::new("lean", name), |b| {
            b.iter_custom(|ops| run(&rt, &theirs, side, ops));
        });
        group.bench_function(BenchmarkId::new("ours", name), |b| {
            b.iter_custom(|ops| run(&rt, &ours, side, ops));
        });
    }

    group.finish();
}

criterion_group! {
    name = benches;
    // Plots would take most of a run's time, and no figure is read from them.
    config = Criterion::default().without_plots();
    targets = contention
}
criterion_main!(benches);
