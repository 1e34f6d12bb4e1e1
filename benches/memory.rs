//! Memory and allocations, measured with a counting global allocator (bytes as requested from the
//! allocator, so the allocator's own per-block overhead, typically 8-16 bytes, comes on top). It
//! prints figures and times nothing; how reads scale with a registry's size is in `status`
//! (`status_retained`), where no counting allocator skews timings.
//!
//! - bytes per retained finished job, without request or response bodies, at N retained jobs
//!   (`BENCH_MEMORY_JOBS`, default 1,000,000; `keep_finished_at_most(N)`), against the lean
//!   registry's map of N finished statuses (the raw floor retains nothing). Guard
//!   (benches/README.md): at most 300 bytes per job besides bodies.
//! - allocations per operation: `set_progress` (same message, changed message, unchanged),
//!   `status()`, and a whole job's life, against the same operations of both baselines. Target:
//!   no allocation for a report whose message is unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use asyncjobs::{JobHandle, JobId, JobRegistry, JobRequest};
use serde_json::Value;
use tokio::runtime::Runtime;

mod common;
use common::{env_usize, request_body, response_body, runtime, Latch, Lean, RawFloor, STEPS};

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
                        .local()
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
    assert_eq!(registry.local().len(), n);
    println!(
        "  ours:        {:>7.1} bytes per retained finished job at {n} jobs",
        bytes as f64 / n as f64
    );
    (registry, ids)
}

/// The lean registry with `n` finished statuses without bodies; prints bytes per job.
fn theirs_finished(n: usize) -> Lean {
    let registry = Lean::new();
    let before = live_bytes();
    for _ in 0..n {
        registry.insert(None).finish(Ok(Value::Null));
    }
    let bytes = live_bytes() - before;
    println!(
        "  lean:        {:>7.1} bytes per retained finished job at {n} jobs",
        bytes as f64 / n as f64
    );
    registry
}

/// Allocations per operation, ours against both baselines.
fn allocation_report(rt: &Runtime) {
    const CALLS: u64 = 100_000;
    let _entered = rt.enter();

    let registry = JobRegistry::new();
    let (tx, rx) = mpsc::channel();
    let id = registry
        .local()
        .spawn(
            JobRequest::new(request_body(1024)),
            move |job: JobHandle| {
                tx.send(job).unwrap();
                std::future::pending::<Result<(), std::io::Error>>()
            },
        )
        .unwrap();
    let ours: JobHandle = rx.recv().unwrap();
    let lean = Lean::new();
    let theirs = lean.insert(None);
    let (raw, _task) = RawFloor::new().spawn(|_job| std::future::pending::<()>());

    println!("allocations per call (over {CALLS} calls):");
    let row = |what: &str, ours: f64, theirs: f64, raw: Option<f64>| {
        let raw = raw.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        println!("  {what:<42} ours {ours:>6.2}   lean {theirs:>6.2}   raw floor {raw:>5}");
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
        "status() (ours with a 1 KB request body)",
        allocs_per_call(CALLS, |_| {
            black_box(registry.local().status(&id).unwrap());
        }),
        allocs_per_call(CALLS, |_| {
            black_box(lean.status(theirs.id).unwrap());
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
                    .await
                    .unwrap();
            }
            latch.wait().await;
        });
    });
    let theirs_life = per_job(&|| {
        let registry = Lean::new();
        let latch = Latch::new(JOBS);
        rt.block_on(async {
            for _ in 0..JOBS {
                let latch = latch.clone();
                drop(registry.spawn(None, move |job| async move {
                    for (i, m) in STEPS.iter().enumerate() {
                        job.set_progress(i as u64 + 1, STEPS.len() as u64, m);
                    }
                    latch.count_down();
                    Ok(response_body())
                }));
            }
            latch.wait().await;
            registry.wait_all().await;
        });
    });
    let raw_life = per_job(&|| {
        let floor = RawFloor::new();
        rt.block_on(async {
            let mut tasks = Vec::with_capacity(JOBS);
            for _ in 0..JOBS {
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
        });
    });
    println!(
        "  {:<42} ours {ours_life:>6.2}   lean {theirs_life:>6.2}   raw floor {raw_life:>5.2}",
        "a whole job (spawn, 10 reports, complete)"
    );
    drop(registry);
}

fn main() {
    let n = env_usize("BENCH_MEMORY_JOBS", 1_000_000).max(1);
    let rt = runtime(2);

    allocation_report(&rt);

    println!("memory (bytes requested from the allocator; its own overhead is extra):");
    let started = Instant::now();
    let (ours, ids) = ours_finished(&rt, n);
    let theirs = theirs_finished(n);
    println!("  (built in {:.1?})", started.elapsed());
    drop((ours, ids, theirs));
}
