//! The job's hot path: one `JobHandle::set_progress` call, from the job's own thread, with no
//! reader around (see `contention` for readers).
//!
//! Against: the raw floor's progress report (one atomic store) and the hand-rolled registry's
//! (global lock, map lookup, `Utc::now()`, a new etag, the message copied into its `String`).
//! Targets: at most 0.5x hand-rolled, and no allocation when the message is unchanged (counted
//! in the `memory` bench, which has a counting allocator; this one keeps the system allocator so
//! that timings are not skewed by counting).
//!
//! Cases, each against the same case of the hand-rolled registry:
//! - `same_message`: `current` moves on every call, the message stays: the common case.
//! - `changing_message`: `current` and the message both change on every call; messages come from
//!   a set of preformatted `&str`s, so formatting is not measured.
//! - `unchanged`: the very same report again, which must change nothing (no new etag).
//!
//! Each registry holds 1,000 other live jobs, so the lookup is not of a one-entry map.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;
use common::{request_body, runtime, HandRolled, RawFloor, STEPS};

const OTHER_JOBS: usize = 1_000;
const TOTAL: u64 = 1 << 40;

/// A job of `registry` that never finishes, and its handle.
fn pending_job(registry: &JobRegistry) -> JobHandle {
    let (tx, rx) = mpsc::channel();
    registry
        .spawn(
            JobRequest::new(request_body(1024)),
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

    let registry = JobRegistry::new();
    for _ in 0..OTHER_JOBS {
        drop(pending_job(&registry));
    }
    let ours = pending_job(&registry);

    let hand_rolled = HandRolled::new();
    for _ in 0..OTHER_JOBS {
        hand_rolled.insert(request_body(1024));
    }
    let theirs = hand_rolled.insert(request_body(1024));

    let floor = RawFloor::new();
    let raw = floor.spawn(|_job| std::future::pending::<()>());

    let mut group = c.benchmark_group("set_progress");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("raw_floor", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            raw.set_progress(black_box(i));
        });
    });

    group.bench_function("hand_rolled/same_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            theirs.set_progress(black_box(i), TOTAL, black_box("copying rows"));
        });
    });
    group.bench_function("ours/same_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(ours.set_progress(black_box(i), TOTAL, black_box("copying rows")))
        });
    });

    group.bench_function("hand_rolled/changing_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let message = STEPS[(i % STEPS.len() as u64) as usize];
            theirs.set_progress(black_box(i), TOTAL, black_box(message));
        });
    });
    group.bench_function("ours/changing_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let message = STEPS[(i % STEPS.len() as u64) as usize];
            black_box(ours.set_progress(black_box(i), TOTAL, black_box(message)))
        });
    });

    group.bench_function("hand_rolled/unchanged", |b| {
        b.iter(|| theirs.set_progress(black_box(7), TOTAL, black_box("copying rows")));
    });
    group.bench_function("ours/unchanged", |b| {
        ours.set_progress(7, TOTAL, "copying rows");
        b.iter(|| black_box(ours.set_progress(black_box(7), TOTAL, black_box("copying rows"))));
    });

    group.finish();
    drop(registry);
}

criterion_group!(benches, set_progress);
criterion_main!(benches);
