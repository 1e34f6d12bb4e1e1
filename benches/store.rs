//! What the PostgreSQL store costs the job's hot path (feature `postgres`): one
//! `JobHandle::set_progress` on a registry with a `PostgresStore`, beside the same call on one
//! without. Target: at most 1.1x without. `set_progress` never waits on the database: the store's
//! observer marks the job changed, and a flush loop writes the latest status of every changed
//! job every `flush_interval` (250 ms, the default) in one statement, on the runtime's worker
//! threads, while the bench loop runs.
//!
//! The server is a real PostgreSQL: `ASYNCJOBS_PG_URL`, else a throwaway one that
//! `tests/pg` starts (as the tests do; included by `#[path]`, not copied). Run with
//! `cargo bench --features postgres --bench store`.
//!
//! Cases, each registry holding 1,000 other live jobs:
//! - `no_store/…` and `store/…`: `same_message` (`current` moves, the message stays) and
//!   `changing_message` (both change on every call), as in the `progress` bench;
//! - `store_flushed_each/same_message`: a store flushing every 10 ms (its lowest), so that the
//!   job is written, and leaves the changed set, all the time: the worst case of the mark.
//!
//! The figures include the flush loop's work only where it contends with the caller's thread
//! (the runtime here has one worker, and the bench loop runs on the main thread): reading each
//! changed job's status under its lock, once per flush.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use asyncjobs::postgres::PostgresStore;
use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;
#[path = "../tests/pg/mod.rs"]
mod pg;

use common::{request_body, runtime, STEPS};

const OTHER_JOBS: usize = 1_000;
const TOTAL: u64 = 1 << 40;

/// A job of `registry` that never finishes, and its handle.
fn pending_job(registry: &JobRegistry) -> JobHandle {
    let (tx, rx) = mpsc::channel();
    registry
        .local()
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

/// `registry` with [`OTHER_JOBS`] other live jobs, and a job of its own.
fn filled(registry: &JobRegistry) -> JobHandle {
    for _ in 0..OTHER_JOBS {
        drop(pending_job(registry));
    }
    pending_job(registry)
}

fn set_progress_with_store(c: &mut Criterion) {
    let rt = runtime(1);
    let _entered = rt.enter();
    let test = rt.block_on(pg::fresh_db());
    let connect = |flush: Duration| {
        let store = rt
            .block_on(
                PostgresStore::builder(&test.url)
                    .flush_interval(flush)
                    .connect(),
            )
            .expect("connect a store to the bench database");
        JobRegistry::builder().store(store).build()
    };

    let plain = JobRegistry::new();
    let ours = filled(&plain);
    let stored = connect(asyncjobs::postgres::DEFAULT_FLUSH_INTERVAL);
    let with_store = filled(&stored);
    let busy = connect(Duration::from_millis(10));
    let with_busy_store = filled(&busy);

    let mut group = c.benchmark_group("set_progress_store");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (name, job) in [
        ("no_store", &ours),
        ("store", &with_store),
        ("store_flushed_each", &with_busy_store),
    ] {
        group.bench_function(format!("{name}/same_message"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                black_box(job.set_progress(black_box(i), TOTAL, black_box("copying rows")))
            });
        });
    }
    for (name, job) in [("no_store", &ours), ("store", &with_store)] {
        group.bench_function(format!("{name}/changing_message"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let message = STEPS[(i % STEPS.len() as u64) as usize];
                black_box(job.set_progress(black_box(i), TOTAL, black_box(message)))
            });
        });
    }
    group.finish();

    // The store wrote what it was given: another instance reads a late step from the database.
    let read = rt
        .block_on(async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            busy.status(&with_store.id()).await
        })
        .expect("the bench job's status");
    assert!(
        read.progress_current.unwrap_or(0) > 1,
        "the store wrote the bench job's progress: {read:?}"
    );
    let _summaries = rt.block_on(async {
        tokio::join!(
            plain.shutdown(Duration::ZERO),
            stored.shutdown(Duration::ZERO),
            busy.shutdown(Duration::ZERO)
        )
    });
}

criterion_group!(benches, set_progress_with_store);
criterion_main!(benches);
