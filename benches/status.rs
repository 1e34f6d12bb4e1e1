//! Reading a status: `registry.status(&id)` of random ids among 10,000 live (PROCESSING) jobs,
//! with a 1 KB and with a 1 MB request body.
//!
//! Against: the hand-rolled registry's lock + get + clone of its `Status` with the same bodies
//! (the raw floor has no status to read). Targets: at most 0.7x hand-rolled, and the same cost
//! for a 1 MB body as for a 1 KB one.
//!
//! The registries hold 10,000 jobs (`BENCH_LIVE_JOBS`): all but 16 have a 1 KB body, and those
//! 16 have a 1 MB body (10,000 distinct 1 MB bodies would need gigabytes, since each job owns
//! its body). Cases, all looking up in the same 10,000-entry tables:
//! - `1KB/any`: random ids among all the 1 KB jobs (the working set misses the CPU caches);
//! - `1KB/16`: random ids among 16 of the 1 KB jobs;
//! - `1MB/16`: random ids among the 16 1 MB jobs. Compare it with `1KB/16`, which differs only
//!   in the body size; `1KB/any` against `1KB/16` shows what cache misses cost.
//!
//! Ids are drawn beforehand with a xorshift RNG, and each returned status is dropped inside the
//! measurement, as a caller would drop it.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use asyncjobs::{JobHandle, JobId, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;

mod common;
use common::{env_usize, request_body, runtime, HandRolled, XorShift};

const BIG_JOBS: usize = 16;
const DRAWS: usize = 1 << 12;

fn status(c: &mut Criterion) {
    let live = env_usize("BENCH_LIVE_JOBS", 10_000).max(BIG_JOBS + 1);
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
            let (tx, rx) = mpsc::channel();
            let id = registry
                .spawn(JobRequest::new(body(i)), move |job: JobHandle| {
                    tx.send(job).unwrap();
                    std::future::pending::<Result<(), std::io::Error>>()
                })
                .unwrap();
            let job: JobHandle = rx.recv().unwrap();
            job.set_progress(i as u64, live as u64, "exporting rows");
            handles.push(job);
            id
        })
        .collect();

    let hand_rolled = HandRolled::new();
    let theirs: Vec<u64> = (0..live)
        .map(|i| {
            let job = hand_rolled.insert(body(i));
            job.set_progress(i as u64, live as u64, "exporting rows");
            job.id
        })
        .collect();

    let mut rng = XorShift::new(0x5eed);
    let small_draws: Vec<usize> = (0..DRAWS)
        .map(|_| BIG_JOBS + rng.below(live - BIG_JOBS))
        .collect();
    let big_draws: Vec<usize> = (0..DRAWS).map(|_| rng.below(BIG_JOBS)).collect();
    // As many 1 KB jobs as there are 1 MB ones, so that the body size is the only difference.
    let small_few_draws: Vec<usize> = (0..DRAWS).map(|_| BIG_JOBS + rng.below(BIG_JOBS)).collect();

    let mut group = c.benchmark_group("status");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (label, draws) in [
        ("1KB/any", &small_draws),
        ("1KB/16", &small_few_draws),
        ("1MB/16", &big_draws),
    ] {
        group.bench_function(BenchmarkId::new("hand_rolled", label), |b| {
            let mut n = 0;
            b.iter(|| {
                n += 1;
                black_box(hand_rolled.status(theirs[draws[n % DRAWS]]))
            });
        });
        group.bench_function(BenchmarkId::new("ours", label), |b| {
            let mut n = 0;
            b.iter(|| {
                n += 1;
                black_box(registry.status(&ours[draws[n % DRAWS]]))
            });
        });
    }

    group.finish();
    drop(handles);
}

criterion_group! {
    name = benches;
    // Plots would take most of a run's time, and no figure is read from them.
    config = Criterion::default().without_plots();
    targets = status
}
criterion_main!(benches);
