//! The job's hot path: one `JobHandle::set_progress` call, from the job's own thread, with no
//! reader around (see `contention` for readers, `fanout` for feeds and waiters).
//!
//! Against: the raw floor's progress report (one atomic store) and the lean registry's (see
//! `common`: global `std::sync::Mutex`, a SipHash lookup, a `u64` etag, `SystemTime::now()`, the
//! message copied only when it changed). Guard (benches/README.md): at most 1.3x lean; and no
//! allocation when the message is unchanged (counted in the `memory` bench, which has a counting allocator; this one
//! keeps the system allocator so that timings are not skewed by counting).
//!
//! Cases, each against the same case of the lean registry:
//! - `same_message`: `current` moves on every call, the message stays: the common case.
//! - `changing_message`: `current` and the message both change on every call; messages come from
//!   a set of preformatted `&str`s, so formatting is not measured.
//! - `unchanged`: the very same report again, which must change nothing (no new etag).
//!
//! Listeners, each against `ours/same_message` (nobody listens). A heard change makes an event
//! and goes through the job's outbox (its status lock a second time), so these show what being
//! heard costs; read, not targeted.
//! - `observed_atomic/same_message`: an observer that only records "changed" (it stores the
//!   event's version into an `AtomicU64`): the least any observer does, so the figure is the
//!   seam's own cost.
//! - `observed_dirty_set/same_message`: what a store mirror would do: mark the job dirty in a
//!   sharded `Mutex<HashMap<JobId, u64>>`, keeping the highest version, for a flusher to write
//!   out later. No flusher runs here; between two flushes a busy job is already dirty, so the
//!   steady state measured is "lock a shard, find the job, raise its version".
//!
//! Feeds (of other users, of the job's own user) are in the `fanout` bench.
//!
//! Each registry holds 1,000 other live jobs, so the lookup is not of a one-entry map.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use asyncjobs::{JobEvent, JobHandle, JobId, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;
use common::{request_body, runtime, Lean, RawFloor, STEPS};

const OTHER_JOBS: usize = 1_000;
const TOTAL: u64 = 1 << 40;

/// A job of `registry` that never finishes, and its handle.
fn pending_job(registry: &JobRegistry) -> JobHandle {
    pending_job_of(registry, JobRequest::new(request_body(1024)))
}

/// A job of `registry`, spawned from `request`, that never finishes, and its handle.
fn pending_job_of(registry: &JobRegistry, request: JobRequest) -> JobHandle {
    let (tx, rx) = mpsc::channel();
    registry
        .local()
        .spawn(request, move |job: JobHandle| {
            tx.send(job).unwrap();
            std::future::pending::<Result<(), std::io::Error>>()
        })
        .unwrap();
    rx.recv().unwrap()
}

/// `registry` with [`OTHER_JOBS`] other live jobs, and a job of its own for `user`.
fn filled(registry: JobRegistry, user: u64) -> (JobRegistry, JobHandle) {
    for _ in 0..OTHER_JOBS {
        drop(pending_job(&registry));
    }
    let job = pending_job_of(
        &registry,
        JobRequest::new(request_body(1024)).started_by(user),
    );
    (registry, job)
}

/// What a store mirror keeps between flushes: the jobs changed since the last flush, each with
/// the highest version seen. Events of one job come in order, so the max matters only for a
/// flusher that puts back an entry whose write failed: it must not hide a newer change. Sharded
/// by the id's low bits, which for sequential ids spread evenly, so that jobs on different
/// threads rarely share a lock.
struct DirtySet {
    shards: Box<[Mutex<HashMap<JobId, u64>>]>,
}

impl DirtySet {
    const SHARDS: usize = 16;

    fn new() -> Self {
        DirtySet {
            shards: (0..Self::SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn mark(&self, event: &JobEvent<'_>) {
        let id = event.job_id();
        let shard = &self.shards[id.as_u64() as usize % Self::SHARDS];
        let mut dirty = shard.lock().unwrap();
        let version = dirty.entry(id).or_insert(0);
        *version = (*version).max(event.version());
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

fn set_progress(c: &mut Criterion) {
    let rt = runtime(1);
    let _entered = rt.enter();

    let registry = JobRegistry::new();
    for _ in 0..OTHER_JOBS {
        drop(pending_job(&registry));
    }
    let ours = pending_job(&registry);

    let lean = Lean::new();
    for _ in 0..OTHER_JOBS {
        lean.insert(None);
    }
    let theirs = lean.insert(None);

    let (raw, _task) = RawFloor::new().spawn(|_job| std::future::pending::<()>());

    let last_version = Arc::new(AtomicU64::new(0));
    let store = last_version.clone();
    let (atomic_registry, atomic_observed) = filled(
        JobRegistry::builder()
            .observe(move |event: &JobEvent<'_>| {
                store.store(event.version(), Ordering::Relaxed);
            })
            .build(),
        1,
    );

    let dirty = Arc::new(DirtySet::new());
    let mark = dirty.clone();
    let (dirty_registry, dirty_observed) = filled(
        JobRegistry::builder()
            .observe(move |event: &JobEvent<'_>| mark.mark(event))
            .build(),
        1,
    );

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

    group.bench_function("lean/same_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(theirs.set_progress(black_box(i), TOTAL, black_box("copying rows")))
        });
    });
    group.bench_function("ours/same_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(ours.set_progress(black_box(i), TOTAL, black_box("copying rows")))
        });
    });

    group.bench_function("observed_atomic/same_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(atomic_observed.set_progress(black_box(i), TOTAL, black_box("copying rows")))
        });
    });
    group.bench_function("observed_dirty_set/same_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(dirty_observed.set_progress(black_box(i), TOTAL, black_box("copying rows")))
        });
    });

    group.bench_function("lean/changing_message", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let message = STEPS[(i % STEPS.len() as u64) as usize];
            black_box(theirs.set_progress(black_box(i), TOTAL, black_box(message)))
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

    group.bench_function("lean/unchanged", |b| {
        theirs.set_progress(7, TOTAL, "copying rows");
        b.iter(|| black_box(theirs.set_progress(black_box(7), TOTAL, black_box("copying rows"))));
    });
    group.bench_function("ours/unchanged", |b| {
        ours.set_progress(7, TOTAL, "copying rows");
        b.iter(|| black_box(ours.set_progress(black_box(7), TOTAL, black_box("copying rows"))));
    });

    group.finish();

    // The listeners heard what they were meant to.
    assert!(last_version.load(Ordering::Relaxed) > 0);
    assert_eq!(dirty.len(), OTHER_JOBS + 1);
    drop((registry, atomic_registry, dirty_registry));
}

criterion_group! {
    name = benches;
    // Plots would take most of a run's time, and no figure is read from them.
    config = Criterion::default().without_plots();
    targets = set_progress
}
criterion_main!(benches);
