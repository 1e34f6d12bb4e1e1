//! Memory, and what it costs to read from a big registry.
//!
//! Printed first, measured with a counting global allocator (bytes as requested from the
//! allocator, so the allocator's own per-block overhead, typically 8-16 bytes, comes on top):
//! - bytes per retained finished job, without request or response bodies, at N retained jobs
//!   (`BENCH_MEMORY_JOBS`, default 1,000,000; `keep_finished_at_most(N)`), against the
//!   hand-rolled registry's map of N finished statuses (the raw floor retains nothing). Target:
//!   at most 256 bytes per job besides bodies and strings.
//! - allocations per operation: `set_progress` (same message, changed message, unchanged),
//!   `status()`, and a whole job's life, against the same operations of both baselines. Target:
//!   no allocation for a report whose message is unchanged.
//!
//! Then a criterion group, `status_by_size`: `status()` of random finished jobs in a registry
//! of 1,000 retained jobs against one of N, ours and hand-rolled (lock + get + clone): how the
//! cost grows with the registry, i.e. what cache and TLB misses add. The counting allocator adds a relaxed atomic add or two to
//! each allocation and free, which only the hand-rolled clone does here (ours allocates nothing
//! in `status()`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use asyncjobs::{JobHandle, JobId, JobRegistry, JobRequest};
use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use tokio::runtime::Runtime;

mod common;
use common::{
    env_usize, request_body, response_body, runtime, HandRolled, Latch, RawFloor, XorShift, STEPS,
};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Allocations per call of `f`, over `calls` calls on this thread while the runtime is idle.
fn allocs_per_call(calls: u64, mut f: impl FnMut(u64)) -> f64 {
    let before = allocations();
    for i in 0..calls {
        f(i);
    }
    (allocations() - before) as f64 / calls as f64
}

const CHUNK: usize = 10_000;

/// A registry of `n` finished jobs without bodies, and their ids; prints bytes per job.
fn ours_finished(rt: &Runtime, n: usize) -> (JobRegistry, Vec<JobId>) {
    let registry = JobRegistry::builder().keep_finished_at_most(n).build();
    // Allocated before counting starts, and never grown.
    let mut ids = Vec::with_capacity(n);
    let before = live_bytes();
    rt.block_on(async {
        let mut done = 0;
        while done < n {
            let chunk: Vec<JobId> = (done..n.min(done + CHUNK))
                .map(|_| {
                    registry
                        .spawn(JobRequest::default(), |_job: JobHandle| async {
                            Ok::<(), std::io::Error>(())
                        })
                        .unwrap()
                })
                .collect();
            for id in &chunk {
                black_box(registry.wait(id).await.unwrap());
            }
            done += chunk.len();
            ids.extend(chunk);
        }
    });
    let bytes = live_bytes() - before;
    assert_eq!(registry.len(), n);
    println!(
        "  ours:        {:>7.1} bytes per retained finished job at {n} jobs",
        bytes as f64 / n as f64
    );
    (registry, ids)
}

/// The hand-rolled registry with `n` finished statuses without bodies; prints bytes per job.
fn theirs_finished(n: usize) -> (HandRolled, Vec<u64>) {
    let registry = HandRolled::new();
    let mut ids = Vec::with_capacity(n);
    let before = live_bytes();
    for _ in 0..n {
        let job = registry.insert(Value::Null);
        job.finish(Ok(Value::Null));
        ids.push(job.id);
    }
    let bytes = live_bytes() - before;
    println!(
        "  hand-rolled: {:>7.1} bytes per retained finished job at {n} jobs",
        bytes as f64 / n as f64
    );
    (registry, ids)
}

/// Allocations per operation, ours against both baselines.
fn allocation_report(rt: &Runtime) {
    const CALLS: u64 = 100_000;
    let _entered = rt.enter();

    let registry = JobRegistry::new();
    let (tx, rx) = mpsc::channel();
    let id = registry
        .spawn(
            JobRequest::new(request_body(1024)),
            move |job: JobHandle| {
                tx.send(job).unwrap();
                std::future::pending::<Result<(), std::io::Error>>()
            },
        )
        .unwrap();
    let ours: JobHandle = rx.recv().unwrap();
    let hand_rolled = HandRolled::new();
    let theirs = hand_rolled.insert(request_body(1024));
    let floor = RawFloor::new();
    let raw = floor.spawn(|_job| std::future::pending::<()>());

    println!("allocations per call (over {CALLS} calls):");
    let row = |what: &str, ours: f64, theirs: f64, raw: Option<f64>| {
        let raw = raw.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        println!("  {what:<42} ours {ours:>6.2}   hand-rolled {theirs:>6.2}   raw floor {raw:>5}");
    };

    ours.set_progress(0, 1, "copying rows");
    theirs.set_progress(0, 1, "copying rows");
    row(
        "set_progress, same message",
        allocs_per_call(CALLS, |i| {
            ours.set_progress(i + 1, u64::MAX, "copying rows");
        }),
        allocs_per_call(CALLS, |i| {
            theirs.set_progress(i + 1, u64::MAX, "copying rows");
        }),
        Some(allocs_per_call(CALLS, |i| raw.set_progress(i + 1))),
    );
    row(
        "set_progress, unchanged",
        allocs_per_call(CALLS, |_| {
            ours.set_progress(7, u64::MAX, "copying rows");
        }),
        allocs_per_call(CALLS, |_| {
            theirs.set_progress(7, u64::MAX, "copying rows");
        }),
        Some(allocs_per_call(CALLS, |_| raw.set_progress(7))),
    );
    row(
        "set_progress, message changes each call",
        allocs_per_call(CALLS, |i| {
            ours.set_progress(i, u64::MAX, STEPS[i as usize % STEPS.len()]);
        }),
        allocs_per_call(CALLS, |i| {
            theirs.set_progress(i, u64::MAX, STEPS[i as usize % STEPS.len()]);
        }),
        None,
    );
    row(
        "status() with a 1 KB request body",
        allocs_per_call(CALLS, |_| {
            black_box(registry.status(&id).unwrap());
        }),
        allocs_per_call(CALLS, |_| {
            black_box(hand_rolled.status(theirs.id).unwrap());
        }),
        Some(allocs_per_call(CALLS, |_| {
            black_box(raw.progress());
        })),
    );

    // A whole life: spawn, 10 reports, complete; counted on every thread, bodies included.
    const JOBS: usize = 10_000;
    let per_job = |f: &dyn Fn()| {
        let before = allocations();
        f();
        (allocations() - before) as f64 / JOBS as f64
    };
    let ours_life = per_job(&|| {
        let registry = JobRegistry::builder().keep_finished_at_most(JOBS).build();
        let latch = Latch::new(JOBS);
        rt.block_on(async {
            for _ in 0..JOBS {
                let latch = latch.clone();
                registry
                    .spawn(JobRequest::default(), move |job: JobHandle| async move {
                        for (i, m) in STEPS.iter().enumerate() {
                            job.set_progress(i as u64 + 1, STEPS.len() as u64, *m);
                        }
                        latch.count_down();
                        Ok::<_, std::io::Error>(response_body())
                    })
                    .unwrap();
            }
            latch.wait().await;
        });
    });
    let theirs_life = per_job(&|| {
        let registry = HandRolled::new();
        let latch = Latch::new(JOBS);
        rt.block_on(async {
            for _ in 0..JOBS {
                let latch = latch.clone();
                registry.spawn(Value::Null, move |job| async move {
                    for (i, m) in STEPS.iter().enumerate() {
                        job.set_progress(i as u64 + 1, STEPS.len() as u64, m);
                    }
                    latch.count_down();
                    Ok(response_body())
                });
            }
            latch.wait().await;
            registry.wait_all().await;
        });
    });
    let raw_life = per_job(&|| {
        let floor = RawFloor::new();
        rt.block_on(async {
            for _ in 0..JOBS {
                floor.spawn(|job| async move {
                    for i in 0..STEPS.len() as u64 {
                        job.set_progress(i + 1);
                    }
                });
            }
            floor.wait_all().await;
        });
    });
    println!(
        "  {:<42} ours {ours_life:>6.2}   hand-rolled {theirs_life:>6.2}   raw floor {raw_life:>5.2}",
        "a whole job (spawn, 10 reports, complete)"
    );
    drop(registry);
}

fn main() {
    let n = env_usize("BENCH_MEMORY_JOBS", 1_000_000).max(1);
    let small = 1_000.min(n);
    let rt = runtime(2);

    allocation_report(&rt);

    println!("memory (bytes requested from the allocator; its own overhead is extra):");
    let started = Instant::now();
    let (ours_big, ours_big_ids) = ours_finished(&rt, n);
    let (theirs_big, theirs_big_ids) = theirs_finished(n);
    println!("  (built in {:.1?})", started.elapsed());
    let (ours_small, ours_small_ids) = rt.block_on(async {
        let registry = JobRegistry::builder().keep_finished_at_most(small).build();
        let mut ids = Vec::new();
        for _ in 0..small {
            ids.push(
                registry
                    .spawn(JobRequest::default(), |_job: JobHandle| async {
                        Ok::<(), std::io::Error>(())
                    })
                    .unwrap(),
            );
        }
        for id in &ids {
            registry.wait(id).await.unwrap();
        }
        (registry, ids)
    });
    let (theirs_small, theirs_small_ids) = {
        let registry = HandRolled::new();
        let ids: Vec<u64> = (0..small)
            .map(|_| {
                let job = registry.insert(Value::Null);
                job.finish(Ok(Value::Null));
                job.id
            })
            .collect();
        (registry, ids)
    };

    let mut c = Criterion::default()
        .without_plots()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("status_by_size");
    group.throughput(Throughput::Elements(1));
    let mut rng = XorShift::new(0xfeed);
    let draws = |rng: &mut XorShift, len: usize| -> Vec<usize> {
        (0..1 << 12).map(|_| rng.below(len)).collect()
    };
    for (jobs, ours, ours_ids, theirs, theirs_ids) in [
        (
            small,
            &ours_small,
            &ours_small_ids,
            &theirs_small,
            &theirs_small_ids,
        ),
        (n, &ours_big, &ours_big_ids, &theirs_big, &theirs_big_ids),
    ] {
        let picks = draws(&mut rng, jobs);
        group.bench_function(BenchmarkId::new("hand_rolled", jobs), |b| {
            let mut k = 0;
            b.iter(|| {
                k += 1;
                black_box(theirs.status(theirs_ids[picks[k % picks.len()]]))
            });
        });
        group.bench_function(BenchmarkId::new("ours", jobs), |b| {
            let mut k = 0;
            b.iter(|| {
                k += 1;
                black_box(ours.status(&ours_ids[picks[k % picks.len()]]))
            });
        });
    }
    group.finish();
    c.final_summary();
}
