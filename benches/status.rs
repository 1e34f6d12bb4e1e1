//! Reading: `registry.local().status(&id)`, and a user's `list()`.
//!
//! Against: the lean registry (see `common`: lock + SipHash get + clone of a small status; it
//! keeps no request body) and, for large bodies only, `BodyCloning`, a registry that stores each
//! request body in its status and deep-clones it on every read. The raw floor has no status to
//! read. Ids are drawn beforehand with a xorshift RNG, and each returned status is dropped inside
//! the measurement, as a caller would drop it.
//!
//! Group `status`: 10,000 live (PROCESSING) jobs (`BENCH_LIVE_JOBS`), each with some progress.
//! Guard (benches/README.md): at most 3x lean; and the same cost for a 1 MB body as for a 1 KB one.
//! - `random`: random ids among all of them. Ours hold a 1 KB request body each (shared, not
//!   copied, by a snapshot), the lean registry none.
//! - `1KB_16` and `1MB_16`: random ids among 16 jobs with a 1 KB, and 16 with a 1 MB body (all
//!   among the same 10,000; 10,000 distinct 1 MB bodies would need gigabytes). Ours against
//!   `BodyCloning`.
//!
//! Group `status_retained`: a registry of N finished jobs (each COMPLETE with a small response,
//! no request body) and one running job, N = 1,000 and N = `BENCH_RETAINED` (1,000,000):
//! - `running`: the one running job, every time (a poller's loop: the fixed cost of a read);
//! - `finished`: one finished job, every time;
//! - `finished_random`: random finished jobs (what the memory hierarchy adds at size N).
//!
//! Group `list_user`: `list()` of one user's 100 jobs in the same registries (job `i` is user
//! `i % (N / 100)`'s), ours through `as_user(u).local().list().jobs` and its per-user index, lean by scanning
//! its map (it has no index). Ours is also compared with 100 of its own `status()` reads.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use asyncjobs::{JobFilter, JobHandle, JobId, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use tokio::runtime::Runtime;

mod common;
use common::{
    env_usize, request_body, response_body, runtime, BodyCloning, Lean, LeanJob, XorShift,
};

const BIG_JOBS: usize = 16;
const DRAWS: usize = 1 << 12;
const PER_USER: usize = 100;
const CHUNK: usize = 10_000;

/// A job of `registry` that never finishes, and its handle.
fn pending_job(registry: &JobRegistry, request: JobRequest) -> (JobId, JobHandle) {
    let (tx, rx) = mpsc::channel();
    let id = registry
        .local()
        .spawn(request, move |job: JobHandle| {
            tx.send(job).unwrap();
            std::future::pending::<Result<(), std::io::Error>>()
        })
        .unwrap();
    (id, rx.recv().unwrap())
}

fn draws(rng: &mut XorShift, from: usize, len: usize) -> Vec<usize> {
    (0..DRAWS).map(|_| from + rng.below(len)).collect()
}

fn status(c: &mut Criterion) {
    let live = env_usize("BENCH_LIVE_JOBS", 10_000).max(2 * BIG_JOBS + 1);
    let rt = runtime(1);
    let _entered = rt.enter();

    let small = request_body(1024);
    let big = request_body(1024 * 1024);
    let size = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
    eprintln!(
        "status: {live} live jobs; bodies of {} and {} bytes of JSON",
        size(&small),
        size(&big)
    );
    let body = |i: usize| {
        if i < BIG_JOBS {
            big.clone()
        } else {
            small.clone()
        }
    };

    let registry = JobRegistry::builder().keep_finished_at_most(live).build();
    let mut handles = Vec::with_capacity(live);
    let ours: Vec<JobId> = (0..live)
        .map(|i| {
            let (id, job) = pending_job(&registry, JobRequest::new(body(i)));
            job.set_progress(i as u64, live as u64, "exporting rows");
            handles.push(job);
            id
        })
        .collect();

    let lean = Lean::new();
    let theirs: Vec<u64> = (0..live)
        .map(|i| {
            let job = lean.insert(None);
            job.set_progress(i as u64, live as u64, "exporting rows");
            job.id
        })
        .collect();

    let cloning = BodyCloning::new();
    let cloned: Vec<u64> = (0..2 * BIG_JOBS)
        .map(|i| cloning.insert(body(i), i as u64, live as u64, "exporting rows"))
        .collect();

    let mut rng = XorShift::new(0x5eed);
    let random = draws(&mut rng, 0, live);
    let big_draws = draws(&mut rng, 0, BIG_JOBS);
    // As many 1 KB jobs as there are 1 MB ones, so that the body size is the only difference.
    let small_draws = draws(&mut rng, BIG_JOBS, BIG_JOBS);

    let mut group = c.benchmark_group("status");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    group.bench_function("lean/random", |b| {
        let mut n = 0;
        b.iter(|| {
            n += 1;
            black_box(lean.status(theirs[random[n % DRAWS]]))
        });
    });
    group.bench_function("ours/random", |b| {
        let mut n = 0;
        b.iter(|| {
            n += 1;
            black_box(registry.local().status(&ours[random[n % DRAWS]]))
        });
    });
    for (label, draws) in [("1KB_16", &small_draws), ("1MB_16", &big_draws)] {
        group.bench_function(BenchmarkId::new("body_cloning", label), |b| {
            let mut n = 0;
            b.iter(|| {
                n += 1;
                black_box(cloning.status(cloned[draws[n % DRAWS]]))
            });
        });
        group.bench_function(BenchmarkId::new("ours", label), |b| {
            let mut n = 0;
            b.iter(|| {
                n += 1;
                black_box(registry.local().status(&ours[draws[n % DRAWS]]))
            });
        });
    }
    group.finish();
    drop((handles, registry, lean, cloning));
}

/// Ours with `n` finished jobs and one running one; the finished jobs' ids, the running job's.
fn ours_retained(rt: &Runtime, n: usize, users: u64) -> (JobRegistry, Vec<JobId>, JobId) {
    let registry = JobRegistry::builder().keep_finished_at_most(n).build();
    let mut ids = Vec::with_capacity(n);
    rt.block_on(async {
        while ids.len() < n {
            let chunk: Vec<JobId> = (ids.len()..n.min(ids.len() + CHUNK))
                .map(|i| {
                    registry
                        .local()
                        .spawn(
                            JobRequest::default().started_by(i as u64 % users),
                            |_job: JobHandle| async { Ok::<_, std::io::Error>(response_body()) },
                        )
                        .unwrap()
                })
                .collect();
            for id in &chunk {
                black_box(registry.wait(id).await.unwrap());
            }
            ids.extend(chunk);
        }
    });
    let _entered = rt.enter();
    let (running, job) = pending_job(&registry, JobRequest::default().started_by(users));
    job.set_progress(1, 2, "exporting rows");
    // The running job never finishes; its handle may go.
    drop(job);
    (registry, ids, running)
}

/// The lean registry with `n` finished jobs and one running one, as [`ours_retained`].
fn lean_retained(n: usize, users: u64) -> (Lean, Vec<u64>, LeanJob) {
    let lean = Lean::new();
    let ids = (0..n)
        .map(|i| {
            let job = lean.insert(Some(i as u64 % users));
            job.finish(Ok(response_body()));
            job.id
        })
        .collect();
    let running = lean.insert(Some(users));
    running.set_progress(1, 2, "exporting rows");
    (lean, ids, running)
}

fn status_retained(c: &mut Criterion) {
    let big = env_usize("BENCH_RETAINED", 1_000_000).max(PER_USER);
    let rt = runtime(2);
    let mut rng = XorShift::new(0xfeed);

    let mut sizes = Vec::new();
    for n in [1_000.min(big), big] {
        let started = Instant::now();
        let users = (n / PER_USER).max(1) as u64;
        let (ours, ours_ids, ours_running) = ours_retained(&rt, n, users);
        let (lean, lean_ids, lean_running) = lean_retained(n, users);
        assert_eq!(ours.local().len(), n + 1);
        eprintln!(
            "status_retained: {n} finished jobs, {users} users, built in {:.1?}",
            started.elapsed()
        );
        sizes.push((
            n,
            users,
            ours,
            ours_ids,
            ours_running,
            lean,
            lean_ids,
            lean_running,
        ));
    }

    let mut group = c.benchmark_group("status_retained");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for (n, _, ours, ours_ids, ours_running, lean, lean_ids, lean_running) in &sizes {
        let n = *n;
        group.bench_function(BenchmarkId::new("lean/running", n), |b| {
            b.iter(|| black_box(lean.status(black_box(lean_running.id))));
        });
        group.bench_function(BenchmarkId::new("ours/running", n), |b| {
            b.iter(|| black_box(ours.local().status(black_box(ours_running))));
        });
        let (lean_one, ours_one) = (lean_ids[n / 2], ours_ids[n / 2]);
        group.bench_function(BenchmarkId::new("lean/finished", n), |b| {
            b.iter(|| black_box(lean.status(black_box(lean_one))));
        });
        group.bench_function(BenchmarkId::new("ours/finished", n), |b| {
            b.iter(|| black_box(ours.local().status(black_box(&ours_one))));
        });
        let picks = draws(&mut rng, 0, n);
        group.bench_function(BenchmarkId::new("lean/finished_random", n), |b| {
            let mut k = 0;
            b.iter(|| {
                k += 1;
                black_box(lean.status(lean_ids[picks[k % DRAWS]]))
            });
        });
        group.bench_function(BenchmarkId::new("ours/finished_random", n), |b| {
            let mut k = 0;
            b.iter(|| {
                k += 1;
                black_box(ours.local().status(&ours_ids[picks[k % DRAWS]]))
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("list_user");
    group
        .throughput(Throughput::Elements(PER_USER as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for (n, users, ours, _, _, lean, _, _) in &sizes {
        let (n, users) = (*n, *users);
        let user = users / 2;
        let view = ours.as_user(user);
        assert_eq!(
            view.local().list(&JobFilter::new()).jobs.len(),
            PER_USER.min(n)
        );
        assert_eq!(lean.list_of(user).len(), PER_USER.min(n));
        let mine: Vec<JobId> = view
            .local()
            .list(&JobFilter::new())
            .jobs
            .iter()
            .map(|s| s.job_id)
            .collect();
        group.bench_function(BenchmarkId::new("lean/scan", n), |b| {
            b.iter(|| black_box(lean.list_of(black_box(user))));
        });
        group.bench_function(BenchmarkId::new("ours/list", n), |b| {
            b.iter(|| black_box(view.local().list(&JobFilter::new()).jobs));
        });
        group.bench_function(BenchmarkId::new("ours/100_status", n), |b| {
            b.iter(|| {
                for id in &mine {
                    black_box(view.local().status(id).unwrap());
                }
            });
        });
    }
    group.finish();
    drop(sizes);
}

criterion_group! {
    name = benches;
    // Plots would take most of a run's time, and no figure is read from them.
    config = Criterion::default().without_plots();
    targets = status, status_retained
}
criterion_main!(benches);
