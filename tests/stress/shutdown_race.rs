//! Shutdowns racing queued jobs under a concurrency limit (`max_running`), while std threads
//! spawn into the registry (built with `.runtime(handle)`) before, during and after the shutdown,
//! many with a slow closure: synchronous setup of random length before it returns the future,
//! during which the job already exists and the shutdown may end it.
//!
//! Each round builds a registry and shuts it down at a random moment. Half the rounds are *held*:
//! every slot is taken by a job that runs until it is canceled, and is running before anything
//! else is spawned, so nothing but the shutdown can free a slot; the other rounds *churn*: jobs
//! finish by themselves all along and the queue moves. Every job's body records what it saw of
//! itself: whether it ran at all, whether its status was already final when it started or later
//! while it ran, whether its token had fired when it started, and whether it returned `Ok`. A
//! checker thread watches every job's own token and status meanwhile.
//!
//! What must hold:
//!
//! - held rounds: no job queued behind the held slots ever runs its body. The shutdown is all
//!   that frees a slot, and it fires every token before it frees any, so it never starts a queued
//!   job; only the jobs already running ran;
//! - a job seen still queued after its own token fired never runs its body (the checker);
//! - a job's body never starts once its status is final, nor after `shutdown` returned, and never
//!   runs on after its status became final (its code looks after every `.await`);
//! - a job whose body saw its token fired ends with `jobCanceling`;
//! - every job the shutdown ends is FAILED with `jobCanceling` set: a job still unfinished when
//!   the shutdown has fired every token (after its first poll) ends with `jobCanceling`, FAILED
//!   unless its body returned `Ok` after its last look at the token; a job whose body never ran
//!   ends FAILED, `asyncjobs::JobCanceled`;
//! - a spawn that starts after `is_shut_down()` is `Err(ShutDown)`; one that starts after the test
//!   decided to shut down (right before calling `shutdown`) is `Err(ShutDown)`, or gives an id
//!   whose job ends FAILED canceling, or whose body started before its token fired (it was
//!   admitted before the shutdown fired the tokens);
//! - once `shutdown` has returned, no job is PROCESSING, but one whose spawn was still under way
//!   (it ends as soon as that spawn sees the shutdown); once those spawns have returned, none;
//! - `ShutdownSummary::still_running` is 0 (every body yields), and its counts add up.
//!
//! This test found two library bugs. One is fixed (a queued job whose spawn's closure was still
//! in its setup when a slot reached it after its token fired started anyway; now a slot never
//! goes to a job whose token fired, and
//! [`a_queued_job_whose_closure_is_slow_never_starts_after_a_shutdown`] checks it). The other is
//! narrowed: a spawn under way near the end of the shutdown no longer starts a task for a job
//! that is already final, but one whose job the shutdown ends between that check and the task's
//! start is still counted in `still_running` (it returns at once). The test counts that and
//! prints it rather than fail, unless `ASYNCJOBS_STRESS_STRICT` is set.
//!
//! Scaled by `ASYNCJOBS_STRESS_JOBS` (default 20,000: 8 rounds of a few thousand jobs each).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, Error, JobFilter, JobHandle, JobId,
    JobRegistry, JobRequest, ShutdownSummary,
};
use serde_json::{json, Value};

use crate::{env_or, quiet_planned_panics, seed, Rng, DEFAULT_JOBS, PANIC_PREFIX};

/// Jobs that `ASYNCJOBS_STRESS_JOBS` (default 20,000) asks for make `jobs / JOBS_PER_ROUND`
/// rounds, at least [`MIN_ROUNDS`]; each round's main spawner adds about this many jobs, and
/// the spawning threads add their own.
const JOBS_PER_ROUND: usize = 2_500;
const MIN_ROUNDS: usize = 8;
const SPAWNING_THREADS: usize = 2;
/// Threads started right before each shutdown: two in three spawn one job with a slow closure
/// (up to longer than a whole shutdown), the others one job after another until refused.
const RACERS: usize = 6;
/// Set (to anything) to fail on the known hole below rather than count it.
const STRICT: &str = "ASYNCJOBS_STRESS_STRICT";
const CANCELED_WHILE_QUEUED: &str = "job was canceled while queued, before it started";
/// What a blocker returns when its token fires.
const STOPPED: &str = "stopped when canceled";

/// What one job does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Runs until its token fires, then returns its own error.
    Blocker,
    /// Never stops by itself: stopped after its cancel grace, or by the shutdown.
    Stubborn,
    /// A few steps, each after a yield or a short sleep, looking at its token before each; then
    /// ends as `end` says.
    Work { steps: u64, pause_us: u64, end: End },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Ok,
    Err,
    Panic,
}

fn pick_work(rng: &mut Rng) -> Kind {
    Kind::Work {
        steps: 1 + rng.below(4),
        pause_us: if rng.chance(50) { 0 } else { rng.below(1_500) },
        end: match rng.below(10) {
            0..=5 => End::Ok,
            6..=7 => End::Err,
            _ => End::Panic,
        },
    }
}

/// Any kind of job; one in `one_in` runs until canceled (half of those ignore the cancel).
fn pick_kind(rng: &mut Rng, one_in: u64) -> Kind {
    match rng.below(2 * one_in) {
        0 => Kind::Blocker,
        1 => Kind::Stubborn,
        _ => pick_work(rng),
    }
}

/// How long a spawn's closure takes before it returns the job's future: mostly no time, often a
/// little, sometimes longer than a whole shutdown.
fn pick_setup(rng: &mut Rng) -> Duration {
    match rng.below(10) {
        0..=4 => Duration::ZERO,
        5..=7 => Duration::from_micros(rng.below(300)),
        _ => Duration::from_micros(1_000 + rng.below(5_000)),
    }
}

/// What one job's body saw of itself, and what the checker saw of it.
#[derive(Default)]
struct Log {
    /// Stashed by the spawn's closure, before its setup: the checker reads the job through it.
    handle: OnceLock<JobHandle>,
    entered: AtomicBool,
    /// The body started after the test set `began` (informational: in a churn round a job may
    /// be admitted, and start, between then and the moment the shutdown fires the tokens).
    entered_after_began: AtomicBool,
    /// The body started after `shutdown` had returned.
    entered_after_shutdown: AtomicBool,
    /// The job's status was final when its body started.
    entered_final: AtomicBool,
    /// The job's token had fired when its body started.
    entered_canceled: AtomicBool,
    /// The status the body saw when it started.
    entered_status: OnceLock<AsynchronousJobStatus>,
    /// The body was polled again after its status had become final.
    ran_after_final: AtomicBool,
    /// The body returned `Ok`.
    returned_ok: AtomicBool,
    /// The body saw its token fired and returned its error.
    stopped_on_token: AtomicBool,
    /// The checker saw the job still queued after its token had fired.
    queued_after_token: AtomicBool,
}

/// The job's body: `kind`'s work, recording what it sees of itself in `log`.
async fn body(
    i: usize,
    kind: Kind,
    job: JobHandle,
    log: Arc<Log>,
    phase: Arc<Phase>,
) -> Result<Value, String> {
    log.entered.store(true, Ordering::SeqCst);
    if phase.began.load(Ordering::SeqCst) {
        log.entered_after_began.store(true, Ordering::SeqCst);
    }
    if phase.returned.load(Ordering::SeqCst) {
        log.entered_after_shutdown.store(true, Ordering::SeqCst);
    }
    let status = job.status();
    if status.is_terminal() {
        log.entered_final.store(true, Ordering::SeqCst);
    }
    let _ = log.entered_status.set(status);
    if job.is_canceling() {
        log.entered_canceled.store(true, Ordering::SeqCst);
    }
    // After every `.await`: is this code running although the job's status is final?
    let still_mine = || {
        if job.status().is_terminal() {
            log.ran_after_final.store(true, Ordering::SeqCst);
        }
    };
    match kind {
        Kind::Blocker => {
            job.cancelled().await;
            still_mine();
            log.stopped_on_token.store(true, Ordering::SeqCst);
            Err(STOPPED.to_owned())
        }
        Kind::Stubborn => loop {
            // Wakes now and then, so that running after the final status would be seen.
            tokio::time::sleep(Duration::from_millis(1)).await;
            still_mine();
        },
        Kind::Work {
            steps,
            pause_us,
            end,
        } => {
            for step in 1..=steps {
                if job.is_canceling() {
                    log.stopped_on_token.store(true, Ordering::SeqCst);
                    return Err(format!("job {i} stopped"));
                }
                job.set_progress(step, steps, format!("job {i} step {step}"));
                if pause_us == 0 {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_micros(pause_us)).await;
                }
                still_mine();
            }
            if job.is_canceling() {
                log.stopped_on_token.store(true, Ordering::SeqCst);
                return Err(format!("job {i} stopped"));
            }
            match end {
                End::Ok => {
                    log.returned_ok.store(true, Ordering::SeqCst);
                    Ok(json!(i))
                }
                End::Err => Err(format!("job {i} failed")),
                End::Panic => panic!("{PANIC_PREFIX} {i}"),
            }
        }
    }
}

/// Who spawned a job, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    /// One of the jobs that hold every slot in a held round, running before anything else.
    Holder,
    /// The round's main spawner, before the shutdown.
    Main,
    /// A spawning thread.
    Thread,
    /// A thread started right before the shutdown: one spawn with a slow closure, or a burst.
    Racer,
}

/// One spawn call as the test knows it.
struct Spawned {
    i: usize,
    kind: Kind,
    setup: Duration,
    origin: Origin,
    log: Arc<Log>,
    /// The spawn started after the test set `began`.
    after_began: bool,
    /// The spawn started after `registry.is_shut_down()` said so.
    after_shut_down: bool,
    /// The spawn returned after the test set `began`.
    returned_after_began: bool,
    /// The spawn returned after `shutdown` had returned.
    returned_after_shutdown: bool,
    result: Result<JobId, Error>,
}

/// Where a round's shutdown is, as the test sees it.
#[derive(Default)]
struct Phase {
    /// Set right before `shutdown` is called.
    began: AtomicBool,
    /// Set right after `shutdown` returned.
    returned: AtomicBool,
}

/// What a round's spawners and checker share.
struct Round {
    seed: u64,
    round: usize,
    held: bool,
    registry: JobRegistry,
    phase: Arc<Phase>,
    /// Every job's log, in spawn order, for the checker.
    logs: Mutex<Vec<Arc<Log>>>,
    next: AtomicUsize,
}

impl Round {
    /// Spawns one job as `origin`, recording the call.
    fn spawn(&self, kind: Kind, origin: Origin, setup: Duration) -> Spawned {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        let log = Arc::new(Log::default());
        self.logs.lock().unwrap().push(log.clone());
        let after_began = self.phase.began.load(Ordering::SeqCst);
        let after_shut_down = self.registry.is_shut_down();
        let (job_log, phase) = (log.clone(), self.phase.clone());
        // From threads racing the shutdown: the synchronous, this-instance call.
        let result = self.registry.local().spawn(
            JobRequest::new(json!({"round": self.round, "job": i})),
            move |job: JobHandle| {
                let _ = job_log.handle.set(job.clone());
                if !setup.is_zero() {
                    std::thread::sleep(setup);
                }
                body(i, kind, job, job_log, phase)
            },
        );
        Spawned {
            i,
            kind,
            setup,
            origin,
            log,
            after_began,
            after_shut_down,
            returned_after_began: self.phase.began.load(Ordering::SeqCst),
            returned_after_shutdown: self.phase.returned.load(Ordering::SeqCst),
            result,
        }
    }

    fn fail(&self, what: std::fmt::Arguments<'_>) -> ! {
        panic!(
            "seed {} round {} ({}): {what}",
            self.seed,
            self.round,
            if self.held { "held" } else { "churn" }
        )
    }
}

/// A spawning thread: spawns until the registry has refused it a few times.
fn spawning_thread(round: Arc<Round>, mut rng: Rng) -> Vec<Spawned> {
    let mut spawned = Vec::new();
    let mut refused = 0;
    while refused < 3 && spawned.len() < 4 * JOBS_PER_ROUND {
        // In a churn round, jobs that hold their slot until the shutdown are rare, or the queue
        // would stop moving.
        let kind = pick_kind(&mut rng, if round.held { 10 } else { 200 });
        let s = round.spawn(kind, Origin::Thread, pick_setup(&mut rng));
        if s.result == Err(Error::ShutDown) {
            refused += 1;
        }
        spawned.push(s);
        // Leave the two cores to the runtime's workers most of the time; in a churn round,
        // spawn more slowly than the slots drain, so that the queue can empty.
        let pause = if round.held { 200 } else { 4_000 };
        std::thread::sleep(Duration::from_micros(rng.below(pause)));
    }
    spawned
}

/// Watches every job through its own handle: a job still queued after its token fired is
/// marked, and must never run. Reads the token first, then the status: a queued status read
/// after the token fired shows that the job was not admitted before it fired.
fn checker(round: Arc<Round>, stop: Arc<AtomicBool>) -> u64 {
    let mut marked = 0;
    while !stop.load(Ordering::SeqCst) {
        let logs: Vec<Arc<Log>> = round.logs.lock().unwrap().clone();
        for log in logs {
            let Some(job) = log.handle.get() else {
                continue;
            };
            if log.queued_after_token.load(Ordering::Relaxed) || !job.is_canceling() {
                continue;
            }
            let s = job.status();
            if is_queued(&s) {
                log.queued_after_token.store(true, Ordering::SeqCst);
                marked += 1;
            }
        }
        std::thread::yield_now();
    }
    marked
}

fn is_queued(s: &AsynchronousJobStatus) -> bool {
    s.job_state == AsynchJobState::Processing
        && s.progress_message
            .as_deref()
            .is_some_and(|m| m.starts_with("Queued:"))
}

/// What the rounds add up to, printed at the end.
#[derive(Debug, Default)]
struct Tally {
    rounds: usize,
    held_rounds: usize,
    spawned: usize,
    refused: usize,
    ran: usize,
    ran_after_began: usize,
    /// Spawns that began before the shutdown and returned after it had begun.
    straddled_began: usize,
    /// Of those, jobs that had a slot (not queued), so their body would have run.
    straddled_admitted: usize,
    /// Spawns that started after the test set `began` and still gave an id.
    began_but_spawned: usize,
    ended_by_shutdown: usize,
    queued_after_token: u64,
    processing_after_shutdown: usize,
    /// Queued jobs that started after their token fired (the known hole; 0 when strict).
    started_after_token: usize,
    /// `still_running` counted tasks that a spawn under way started late (the second known hole;
    /// 0 when strict).
    late_tasks_counted: usize,
}

/// What a round did, for [`check_round`].
struct Outcome {
    /// Every spawn call, in no particular order.
    spawned: Vec<Spawned>,
    summary: ShutdownSummary,
    /// Every job, read right after the shutdown's first poll, when every token had fired.
    first_poll: Vec<AsynchronousJobStatus>,
    /// The PROCESSING jobs read right after `shutdown` returned.
    processing_after: Vec<AsynchronousJobStatus>,
    /// Jobs the checker saw queued after their token fired.
    marked: u64,
}

/// Polls `future` once: the shutdown does everything but its waiting on its first poll.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))).await
}

/// Builds a registry, spawns into it from the test and from threads, shuts it down at a random
/// moment while racers spawn, and waits for every spawn and task to end.
fn run_round(
    runtime: &tokio::runtime::Runtime,
    seed: u64,
    r: usize,
    rng: &mut Rng,
) -> (Arc<Round>, Outcome) {
    let held = rng.chance(50);
    let max_running = if held {
        1 + rng.below(4) as usize
    } else {
        2 + rng.below(11) as usize
    };
    let cancel_grace = Duration::from_millis(2 + rng.below(20));
    let grace = Duration::from_millis(rng.below(25));
    // Held: a long queue, which only grows. Churn: what the slots drain in a few hundred
    // milliseconds, so that the queue sometimes empties before the shutdown.
    let main_jobs = match held {
        true => JOBS_PER_ROUND / 2 + rng.below(JOBS_PER_ROUND as u64) as usize,
        false => max_running * (50 + rng.below(250) as usize),
    };
    let registry = JobRegistry::builder()
        .max_running(max_running)
        .cancel_grace(cancel_grace)
        .keep_finished_at_most(usize::MAX)
        .runtime(runtime.handle().clone())
        .first_job_id(1 + (r as u64) * 1_000_000)
        .build();
    let round = Arc::new(Round {
        seed,
        round: r,
        held,
        registry: registry.clone(),
        phase: Arc::default(),
        logs: Mutex::new(Vec::new()),
        next: AtomicUsize::new(0),
    });
    let mut spawned = Vec::new();

    // Held: every slot taken by a job that runs until canceled, running before anything else.
    if held {
        for _ in 0..max_running {
            let kind = if rng.chance(50) {
                Kind::Blocker
            } else {
                Kind::Stubborn
            };
            spawned.push(round.spawn(kind, Origin::Holder, Duration::ZERO));
        }
        let waited = Instant::now();
        while !spawned.iter().all(|s| s.log.entered.load(Ordering::SeqCst)) {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "seed {seed} round {r}: the holders never started"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    let stop_checker = Arc::new(AtomicBool::new(false));
    let checker = {
        let (round, stop) = (round.clone(), stop_checker.clone());
        std::thread::spawn(move || checker(round, stop))
    };
    let threads: Vec<_> = (0..SPAWNING_THREADS)
        .map(|_| {
            let (round, rng) = (round.clone(), Rng::new(rng.next()));
            std::thread::spawn(move || spawning_thread(round, rng))
        })
        .collect();

    let (summary, first_poll, processing_after) = runtime.block_on(async {
        for k in 0..main_jobs {
            let kind = if held {
                pick_kind(rng, 10)
            } else {
                pick_work(rng)
            };
            spawned.push(round.spawn(kind, Origin::Main, Duration::ZERO));
            if k % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Churn: anywhere from "the queue is full" to "the queue has drained and a slot is
        // free" (the threads' jobs still coming), so that the racers below are queued or admitted;
        // held: the queue only grows.
        let (finished, drained) = match held {
            true => (0, false),
            false => (rng.below(main_jobs as u64 + 1) as usize, rng.chance(40)),
        };
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(1) {
            let c = registry.local().counts();
            if c.complete + c.failed >= finished && (!drained || c.processing < max_running) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Racers: spawns whose closures are mid-way through their setup when the shutdown
        // begins, and may still be when it ends; and bursts of spawns, one after another until
        // refused, so that some start while the shutdown lists and cancels the jobs.
        let racers: Vec<_> = (0..RACERS)
            .map(|k| {
                let round = round.clone();
                let mut rng = Rng::new(rng.next());
                std::thread::spawn(move || {
                    if k % 3 != 0 {
                        let setup = Duration::from_micros(500 + rng.below(30_000));
                        return vec![round.spawn(pick_work(&mut rng), Origin::Racer, setup)];
                    }
                    let mut burst = Vec::new();
                    loop {
                        let s = round.spawn(pick_work(&mut rng), Origin::Racer, Duration::ZERO);
                        let refused = s.result == Err(Error::ShutDown);
                        burst.push(s);
                        if refused {
                            return burst;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_micros(rng.below(2_000))).await;

        round.phase.began.store(true, Ordering::SeqCst);
        let mut shutdown = std::pin::pin!(registry.shutdown(grace));
        let first = poll_once(&mut shutdown).await;
        // Every token has fired: each job read now as unfinished is one the shutdown ends.
        let first_poll = registry
            .local()
            .list(&JobFilter::new().limit(usize::MAX))
            .jobs;
        let summary = match first {
            Poll::Ready(summary) => summary,
            Poll::Pending => shutdown.await,
        };
        round.phase.returned.store(true, Ordering::SeqCst);
        let processing_after = registry
            .local()
            .list(&JobFilter::new().state(AsynchJobState::Processing))
            .jobs;
        spawned.extend(racers.into_iter().flat_map(|racer| racer.join().unwrap()));
        (summary, first_poll, processing_after)
    });

    for thread in threads {
        spawned.extend(thread.join().unwrap());
    }
    // Every spawn has returned: the jobs of those that straddled the shutdown's end have ended.
    let processing = registry
        .local()
        .list(&JobFilter::new().state(AsynchJobState::Processing))
        .jobs;
    if !processing.is_empty() || registry.local().counts().processing != 0 {
        round.fail(format_args!(
            "PROCESSING after shutdown and every spawn returned: {processing:#?}"
        ));
    }
    // Let any task still on the runtime end (a job's task spawned after its status was final
    // returns at once) before reading what the bodies recorded.
    let waited = Instant::now();
    while runtime.metrics().num_alive_tasks() > 0 {
        if waited.elapsed() > Duration::from_secs(10) {
            round.fail(format_args!(
                "{} tasks still alive after the shutdown",
                runtime.metrics().num_alive_tasks()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop_checker.store(true, Ordering::SeqCst);
    let marked = checker.join().unwrap();
    let outcome = Outcome {
        spawned,
        summary,
        first_poll,
        processing_after,
        marked,
    };
    (round, outcome)
}

/// Checks what a round did against every invariant, adding it to `tally`.
fn check_round(round: &Round, outcome: &Outcome, strict: bool, tally: &mut Tally) {
    let Outcome {
        spawned,
        summary,
        first_poll,
        processing_after,
        marked,
    } = outcome;
    let (registry, held) = (&round.registry, round.held);
    // The second known hole: a spawn whose closure was still running while the shutdown ran
    // starts the job's task afterwards; the task ends at once (the job is final, or its code
    // returns at its first look at the token), but the summary may count it as still running.
    let under_way: Vec<&Spawned> = spawned
        .iter()
        .filter(|s| s.returned_after_began && s.result.is_ok())
        .collect();
    if summary.still_running != 0 {
        let straddling: Vec<String> = under_way
            .iter()
            .map(|s| {
                let last = s.result.as_ref().ok().map(|id| registry.local().status(id));
                format!(
                    "#{} {:?} setup {:?} spawn began after shutdown began {}, returned after \
                     shutdown returned {}, body ran {} -> {:?}",
                    s.i,
                    s.origin,
                    s.setup,
                    s.after_began,
                    s.returned_after_shutdown,
                    s.log.entered.load(Ordering::SeqCst),
                    last.map(|l| l.map(|l| (l.job_state, l.job_canceling, l.error_message)))
                )
            })
            .collect();
        if strict || summary.still_running > under_way.len() {
            round.fail(format_args!(
                "code still running after shutdown: {summary}; spawns under way: {straddling:#?}"
            ));
        }
        tally.late_tasks_counted += summary.still_running;
    }
    if summary.running != summary.finished_within_grace + summary.stopped {
        round.fail(format_args!("summary does not add up: {summary:?}"));
    }

    let unfinished_at_first_poll: std::collections::HashSet<JobId> = first_poll
        .iter()
        .filter(|s| !s.is_terminal())
        .map(|s| s.job_id)
        .collect();
    let straddled: std::collections::HashSet<JobId> = spawned
        .iter()
        .filter(|s| s.returned_after_shutdown)
        .filter_map(|s| s.result.clone().ok())
        .collect();
    for s in processing_after {
        if !straddled.contains(&s.job_id) {
            round.fail(format_args!(
                "PROCESSING after shutdown returned, though its spawn had returned before: {s:#?}"
            ));
        }
    }

    for s in spawned {
        let log = &s.log;
        let job = |what: std::fmt::Arguments<'_>| -> ! {
            round.fail(format_args!(
                "job #{} ({:?}, {:?}, setup {:?}, spawn {:?}, began {}/{}; at entry {:?}, \
                 token fired {}): {what}",
                s.i,
                s.kind,
                s.origin,
                s.setup,
                s.result,
                s.after_began,
                s.returned_after_began,
                s.log.entered_status.get(),
                s.log.entered_canceled.load(Ordering::SeqCst)
            ))
        };
        let id = match &s.result {
            Ok(id) => *id,
            Err(Error::ShutDown) if s.returned_after_began => {
                tally.refused += 1;
                continue;
            }
            Err(e) => job(format_args!("spawn failed: {e}")),
        };
        tally.spawned += 1;
        let entered = log.entered.load(Ordering::SeqCst);
        tally.ran += usize::from(entered);
        tally.ran_after_began += usize::from(log.entered_after_began.load(Ordering::SeqCst));
        let last = registry
            .local()
            .status(&id)
            .unwrap_or_else(|e| job(format_args!("status after shutdown: {e}")));
        if !last.is_terminal() {
            job(format_args!("not final after shutdown: {last:#?}"));
        }
        if !s.after_began && s.returned_after_began {
            tally.straddled_began += 1;
            tally.straddled_admitted +=
                usize::from(last.error_message.as_deref() != Some(CANCELED_WHILE_QUEUED));
        }
        // Once a hole (fixed: a slot no longer goes to a queued job whose token fired, see
        // `a_queued_job_whose_closure_is_slow_never_starts_after_a_shutdown`): never tolerated.
        let queued_but_ran = log.queued_after_token.load(Ordering::SeqCst) && entered;
        if queued_but_ran {
            tally.started_after_token += 1;
            job(format_args!(
                "ran, though it was still queued when its token fired: {last:#?}"
            ));
        } else if held && s.origin != Origin::Holder && entered {
            job(format_args!(
                "ran, though every slot was held until the shutdown: {last:#?}"
            ));
        }
        if log.entered_after_shutdown.load(Ordering::SeqCst) {
            job(format_args!(
                "its body started after shutdown returned: {last:#?}"
            ));
        }
        if log.entered_final.load(Ordering::SeqCst) {
            job(format_args!(
                "its body started after its status was final: {last:#?}"
            ));
        }
        if log.ran_after_final.load(Ordering::SeqCst) {
            job(format_args!(
                "its body ran on after its status was final: {last:#?}"
            ));
        }
        if s.after_shut_down {
            job(format_args!(
                "spawn after is_shut_down() was not refused: {last:#?}"
            ));
        }
        let failed_canceling = last.job_state == AsynchJobState::Failed && last.job_canceling;
        tally.began_but_spawned += usize::from(s.after_began);
        let admitted_before_tokens = entered && !log.entered_canceled.load(Ordering::SeqCst);
        if s.after_began && !failed_canceling && !admitted_before_tokens {
            job(format_args!(
                "spawned after the shutdown began, it neither ended FAILED canceling nor started \
                 before its token fired: {last:#?}"
            ));
        }
        // A token never un-fires: a job that saw its own fired says so in its final status.
        if (log.stopped_on_token.load(Ordering::SeqCst)
            || log.entered_canceled.load(Ordering::SeqCst))
            && !last.job_canceling
        {
            job(format_args!(
                "its body saw its token fired, but it ended without jobCanceling: {last:#?}"
            ));
        }
        let ended_by_shutdown = unfinished_at_first_poll.contains(&id);
        tally.ended_by_shutdown += usize::from(ended_by_shutdown);
        if ended_by_shutdown
            && !(last.job_canceling
                && (last.job_state == AsynchJobState::Failed
                    || log.returned_ok.load(Ordering::SeqCst)))
        {
            job(format_args!(
                "ended by the shutdown, but not FAILED with jobCanceling: {last:#?}"
            ));
        }
        // Nothing but the shutdown ends a job before it runs here.
        let canceled = failed_canceling && last.exception.as_deref() == Some(exception::CANCELED);
        if !entered && !canceled {
            job(format_args!(
                "never ran, but did not end FAILED canceled: {last:#?}"
            ));
        }
        if last.job_state == AsynchJobState::Complete && !log.returned_ok.load(Ordering::SeqCst) {
            job(format_args!("COMPLETE, but its body never returned Ok"));
        }
    }
    tally.rounds += 1;
    tally.held_rounds += usize::from(held);
    tally.queued_after_token += *marked;
    tally.processing_after_shutdown += processing_after.len();
}

#[test]
fn shutdowns_racing_queued_jobs_and_spawns() {
    let jobs: usize = env_or("ASYNCJOBS_STRESS_JOBS", DEFAULT_JOBS);
    let rounds = (jobs / JOBS_PER_ROUND).max(MIN_ROUNDS);
    let seed = seed();
    let strict = std::env::var_os(STRICT).is_some();
    println!(
        "shutdown race: {rounds} rounds, seed {seed} (rerun with ASYNCJOBS_STRESS_SEED={seed})"
    );
    quiet_planned_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let started = Instant::now();
    for r in 0..rounds {
        let (round, outcome) = run_round(&runtime, seed, r, &mut rng);
        check_round(&round, &outcome, strict, &mut tally);
    }
    println!("shutdown race: {tally:?} in {:?}", started.elapsed());
    if tally.started_after_token > 0 || tally.late_tasks_counted > 0 {
        println!(
            "shutdown race: KNOWN LIBRARY BUGS: {} queued jobs started after their token fired \
             (and stopped at once); {} tasks started late by spawns under way counted as \
             still running; {STRICT}=1 fails on them",
            tally.started_after_token, tally.late_tasks_counted
        );
    }
}

/// Reduced from `shutdown_race`, where it was found: a queued job whose spawn's closure was still
/// running when the shutdown fired every token, and that a slot freed after that reached before
/// the shutdown canceled it, runs its body when its closure returns.
#[test]
fn a_queued_job_whose_closure_is_slow_never_starts_after_a_shutdown() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut ran_in = Vec::new();
    for trial in 0..5 {
        let registry = JobRegistry::builder()
            .max_running(2)
            .cancel_grace(Duration::from_secs(60))
            .runtime(runtime.handle().clone())
            .build();
        let started = Arc::new(AtomicUsize::new(0));
        // Two slots: one job that stops when canceled (it frees its slot as soon as the shutdown
        // fires the tokens), one that ignores the cancel (it keeps the shutdown waiting).
        for stops in [true, false] {
            let started = started.clone();
            registry
                .local()
                .spawn(JobRequest::default(), move |job: JobHandle| async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    if stops {
                        job.cancelled().await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                    Err::<(), _>("stopped")
                })
                .unwrap();
        }
        while started.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // First in the queue: a job whose closure is still running when the shutdown starts.
        let ran = Arc::new(AtomicBool::new(false));
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let slow = {
            let (registry, ran) = (registry.clone(), ran.clone());
            std::thread::spawn(move || {
                registry
                    .local()
                    .spawn(JobRequest::new(json!("slow")), move |_job| {
                        wait.recv().ok();
                        async move {
                            ran.store(true, Ordering::SeqCst);
                            Ok::<_, &str>(())
                        }
                    })
            })
        };
        while registry.local().len() < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Behind it, enough queued jobs that the shutdown takes a while to cancel them one by one.
        for _ in 0..20_000 {
            registry
                .local()
                .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
                .unwrap();
        }
        runtime.block_on(async {
            let mut shutdown = std::pin::pin!(registry.shutdown(Duration::from_millis(300)));
            // The first poll fires every token and cancels every job; then the closure returns.
            let first = std::future::poll_fn(|cx| Poll::Ready(shutdown.as_mut().poll(cx))).await;
            go.send(()).unwrap();
            let id = slow.join().unwrap().unwrap();
            if first.is_pending() {
                shutdown.await;
            }
            if ran.load(Ordering::SeqCst) {
                ran_in.push((trial, registry.status(&id).await.unwrap()));
            }
        });
    }
    assert!(
        ran_in.is_empty(),
        "a queued job ran after the shutdown fired every token: {ran_in:#?}"
    );
}
