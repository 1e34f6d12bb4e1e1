//! Instruction counts of the hot paths, ours beside the same operation of the baselines in
//! `common` (the lean registry and the raw floor). Timings on a shared machine are noisy;
//! instruction counts under callgrind repeat exactly, so they back the timed comparisons of the
//! other benches. `benches/instructions.sh` runs every case under callgrind and prints
//! instructions per operation.
//!
//! Each case runs its operation in a loop inside `measure` (never inlined), after a warm-up
//! outside it, so `valgrind --tool=callgrind --toggle-collect='*measure*'` counts only the loop:
//!
//! ```text
//! <this binary> <case> <iterations>
//! ```
//!
//! Whole jobs run one `block_on` each on a current-thread runtime, so that their count repeats
//! too. Started by `cargo bench` (which passes `--bench`, and any filter or criterion option
//! meant for the other benches), it only lists the cases: it runs one only when called directly.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use asyncjobs::{JobEvent, JobHandle, JobId, JobRegistry, JobRequest, StatusFeed};
use tokio::runtime::Runtime;

mod common;
use common::{request_body, response_body, Lean, RawFloor, STEPS};

/// A total no job reaches, so that every report changes `current`.
const TOTAL: u64 = 1 << 40;

/// Other live jobs in the registry or lean map, so that lookups are not in a near-empty table.
const OTHERS: usize = 1_000;

const CASES: &[(&str, &str)] = &[
    ("raw_progress", "raw floor: a report is an atomic store"),
    (
        "lean_same",
        "lean set_progress, current moves, same message",
    ),
    ("same", "our set_progress, current moves, same message"),
    (
        "lean_changing",
        "lean set_progress, message changes each call",
    ),
    ("changing", "our set_progress, message changes each call"),
    ("lean_identical", "lean set_progress, identical report"),
    ("identical", "our set_progress, identical report"),
    (
        "observed",
        "our set_progress with an observer that records the version",
    ),
    (
        "feeds_other_100",
        "our set_progress with 100 other users' feeds open",
    ),
    ("lean_status_running", "lean status() of a running job"),
    (
        "status_running",
        "our status() of a running job (1 KB request body)",
    ),
    (
        "status_finished",
        "our status() of a finished job with a small response",
    ),
    (
        "raw_lifecycle",
        "raw floor: spawn, 10 reports, return, await the JoinHandle",
    ),
    (
        "lean_lifecycle",
        "lean: spawn, 10 reports, complete, await, status()",
    ),
    ("lifecycle", "ours: spawn, 10 reports, complete, wait()"),
];

#[inline(never)]
fn measure<F: FnMut(u64)>(iterations: u64, mut f: F) {
    for i in 0..iterations {
        f(i);
    }
}

/// Warms `f` up outside `measure`, then measures it.
fn run<F: FnMut(u64)>(iterations: u64, mut f: F) {
    for i in 0..100 {
        f(i + (1 << 50));
    }
    measure(iterations, f);
}

/// A job that waits forever, and its handle.
fn pending(registry: &JobRegistry, request: JobRequest) -> (JobId, JobHandle) {
    let (tx, rx) = mpsc::channel();
    let id = registry
        .local()
        .spawn(request, move |job: JobHandle| {
            tx.send(job).expect("the bench waits for the handle");
            std::future::pending::<Result<(), std::io::Error>>()
        })
        .expect("spawn");
    (id, rx.recv().expect("the job sends its handle"))
}

async fn ours_body(job: JobHandle) -> Result<serde_json::Value, std::io::Error> {
    for (i, message) in STEPS.iter().enumerate() {
        job.set_progress(i as u64 + 1, STEPS.len() as u64, *message);
    }
    Ok(response_body())
}

fn lean_with_others() -> Lean {
    let lean = Lean::new();
    for _ in 0..OTHERS {
        lean.insert(None);
    }
    lean
}

/// Our registry with `OTHERS` live jobs with request bodies, and one more of user 1.
fn ours_with_others(registry: &JobRegistry) -> (JobId, JobHandle) {
    for _ in 0..OTHERS {
        drop(pending(registry, JobRequest::new(request_body(1024))));
    }
    pending(registry, JobRequest::new(request_body(1024)).started_by(1))
}

fn report(job: &JobHandle, i: u64, message: &str) {
    black_box(job.set_progress(black_box(i), TOTAL, black_box(message)));
}

fn case(rt: &Runtime, case: &str, n: u64) {
    match case {
        "raw_progress" => {
            let (raw, _task) = RawFloor::new().spawn(|_job| std::future::pending::<()>());
            run(n, |i| raw.set_progress(black_box(i)));
        }
        "lean_same" | "lean_changing" | "lean_identical" => {
            let lean = lean_with_others();
            let job = lean.insert(None);
            let report = |i: u64, message: &str| {
                black_box(job.set_progress(black_box(i), TOTAL, black_box(message)));
            };
            match case {
                "lean_same" => run(n, |i| report(i, "copying rows")),
                "lean_changing" => run(n, |i| report(i, STEPS[(i % 10) as usize])),
                _ => {
                    report(7, "copying rows");
                    run(n, |_| report(7, "copying rows"));
                }
            }
        }
        "same" | "changing" | "identical" | "feeds_other_100" | "status_running" => {
            let registry = JobRegistry::new();
            let (id, job) = ours_with_others(&registry);
            let _feeds: Vec<StatusFeed> = if case == "feeds_other_100" {
                (0..100u64)
                    .map(|k| registry.as_user(2 + k).watch_all())
                    .collect()
            } else {
                Vec::new()
            };
            match case {
                "changing" => run(n, |i| report(&job, i, STEPS[(i % 10) as usize])),
                "identical" => {
                    report(&job, 7, "copying rows");
                    run(n, |_| report(&job, 7, "copying rows"));
                }
                "status_running" => {
                    report(&job, 7, "exporting rows");
                    run(n, |_| {
                        black_box(registry.local().status(black_box(&id)).expect("known"));
                    });
                }
                _ => run(n, |i| report(&job, i, "copying rows")),
            }
        }
        "observed" => {
            let last = Arc::new(AtomicU64::new(0));
            let seen = last.clone();
            let registry = JobRegistry::builder()
                .observe(move |e: &JobEvent<'_>| seen.store(e.version(), Ordering::Relaxed))
                .build();
            let (_id, job) = ours_with_others(&registry);
            run(n, |i| report(&job, i, "copying rows"));
            assert!(
                last.load(Ordering::Relaxed) > n,
                "the observer heard every report"
            );
        }
        "lean_status_running" => {
            let lean = lean_with_others();
            let job = lean.insert(None);
            job.set_progress(7, TOTAL, "exporting rows");
            run(n, |_| {
                black_box(lean.status(black_box(job.id)).expect("known"));
            });
        }
        "status_finished" => {
            let registry = JobRegistry::new();
            let id = registry
                .local()
                .spawn(JobRequest::default(), |_job| async {
                    Ok::<_, std::io::Error>(response_body())
                })
                .expect("spawn");
            rt.block_on(registry.wait(&id)).expect("known");
            run(n, |_| {
                black_box(registry.local().status(black_box(&id)).expect("known"));
            });
        }
        "lifecycle" => {
            let registry = JobRegistry::builder()
                .keep_finished_at_most(1 << 20)
                .build();
            run(n, |_| {
                rt.block_on(async {
                    let id = registry
                        .spawn(JobRequest::default(), ours_body)
                        .await
                        .expect("spawn");
                    black_box(registry.wait(&id).await.expect("known"));
                });
            });
        }
        "lean_lifecycle" => {
            let lean = Lean::new();
            run(n, |_| {
                rt.block_on(async {
                    let (id, task) = lean.spawn(None, |job| async move {
                        for (i, message) in STEPS.iter().enumerate() {
                            job.set_progress(i as u64 + 1, STEPS.len() as u64, message);
                        }
                        Ok(response_body())
                    });
                    task.await.expect("the job's task");
                    black_box(lean.status(id).expect("known"));
                });
            });
        }
        "raw_lifecycle" => {
            let floor = RawFloor::new();
            run(n, |_| {
                rt.block_on(async {
                    let (_job, task) = floor.spawn(|job| async move {
                        for i in 0..STEPS.len() as u64 {
                            job.set_progress(i + 1);
                        }
                        response_body()
                    });
                    black_box(task.await.expect("the job's task"));
                });
            });
        }
        other => unreachable!("{other} is checked against CASES in main"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` runs every bench binary with `--bench` and the filters and options meant for
    // the criterion benches: none of those is a case here.
    let called_by_cargo = args.iter().any(|arg| arg == "--bench");
    let name = args.first().filter(|_| !called_by_cargo);
    let Some(name) = name else {
        println!("instruction-count cases (run under callgrind: see benches/instructions.sh):");
        for (name, what) in CASES {
            println!("  {name:<20} {what}");
        }
        return;
    };
    if !CASES.iter().any(|(case, _)| case == name) {
        eprintln!("unknown case {name}: run without arguments for the list");
        std::process::exit(2);
    }
    let iterations = match args.get(1).map(|n| n.parse::<u64>()) {
        None => 20_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("iterations must be a positive whole number");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _entered = rt.enter();
    case(&rt, name, iterations);
}
