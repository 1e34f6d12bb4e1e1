//! Soak: everything at once, for as long as asked, with registries shut down and rebuilt all
//! along. `ASYNCJOBS_SOAK_MINUTES=10 cargo test --release --test stress soak -- --nocapture`
//! runs it for ten minutes (a fraction like `0.5` works too); without the variable it runs for a
//! few seconds, so that CI exercises it.
//!
//! Two registry slots each go through generations: a registry is built (with or without a
//! concurrency limit, with short retention so that statuses are dropped while they are read, with
//! an observer), fed by spawning tasks and a std thread whose closures are sometimes slow, read and
//! canceled for a few seconds, then shut down while the spawners still spawn, checked, and
//! replaced. Jobs have every outcome: complete, fail, panic, slow work, time and stall limits
//! (stopping or not), canceled before they start, while they run, or ignoring the cancel until
//! the grace ends, and queued under the limit. Meanwhile, across generations: status pollers,
//! list and counts pollers, a long-poller, a canceller; per generation, a feed of every job and
//! one user's feed (`watch_all`), and a watch on one job in eight.
//!
//! Checked all along, and counted:
//!
//! - **lost**: every id a spawn returned ends in a final status (its registry's observer is told
//!   exactly once), or is known dropped by retention (the observer was told it was removed, after
//!   it finished); nothing finishes that no spawn returned; a job that a read called unknown was
//!   removed;
//! - **stuck**: after its registry's shutdown (and the spawns racing it) no job is PROCESSING, and
//!   every watch and feed of it ends;
//! - **repeated etags**: one etag of a job is one status, whoever read it (pollers, lists,
//!   long-polls, watches, feeds);
//! - **etag regressions**: each watcher (a watch, a feed, the observer, a poller) sees a job's
//!   etags strictly increase across statuses, a final status never change, the canceling flag
//!   never cleared;
//! - **implausible**: a final status is one its job's plan allows (its plan is in its request).
//!
//! At the end it prints jobs run, lost, stuck, repeated etags and peak RSS (`VmHWM`), and fails
//! if any count but the first is not zero.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, Error, JobEvent, JobEventKind, JobFilter,
    JobHandle, JobId, JobRegistry, JobRequest, StatusFeed,
};
use serde_json::{json, Value};

use crate::{quiet_planned_panics, seed, version, Fingerprint, Rng, PANIC_PREFIX};

const MINUTES: &str = "ASYNCJOBS_SOAK_MINUTES";
/// How long the soak runs without [`MINUTES`].
const SHORT_RUN: Duration = Duration::from_secs(4);
/// Registries alive at once, each rebuilt after its shutdown.
const SLOTS: usize = 2;
/// Spawners wait while a registry has this many jobs PROCESSING.
const MAX_PROCESSING: usize = 2_000;
const USERS: u64 = 3;
/// Readers and cancellers pick among each registry's last this many jobs.
const RECENT: usize = 4_096;
/// How long a watch or feed may take to end after its registry's shutdown.
const END_WITHIN: Duration = Duration::from_secs(10);

/// What a job does; named in its request, so that its final status can be judged from itself.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Complete,
    Error,
    Panic,
    /// Completes after a few milliseconds of sleeps: long enough for shutdowns to interrupt.
    Slow,
    /// Canceled right after its spawn returns, before its first poll (or while queued).
    CancelBeforeStart,
    /// Canceled a little later, and stops when it sees it.
    CancelWhileRunning,
    /// Canceled a little later, and never stops by itself: stopped after the grace.
    IgnoresCancel,
    /// Runs past its time limit; stops when its token fires, or waits for the grace.
    TimeLimit {
        cooperative: bool,
    },
    /// Reports progress, then goes silent past its stall limit.
    StallLimit {
        cooperative: bool,
    },
}

impl Plan {
    const NAMES: [&'static str; 11] = [
        "complete",
        "error",
        "panic",
        "slow",
        "cancel-before-start",
        "cancel-while-running",
        "ignores-cancel",
        "time-limit",
        "time-limit-ignored",
        "stall-limit",
        "stall-limit-ignored",
    ];

    fn pick(rng: &mut Rng) -> Plan {
        match rng.below(44) {
            0..=9 => Plan::Complete,
            10..=13 => Plan::Error,
            14..=17 => Plan::Panic,
            18..=21 => Plan::Slow,
            22..=24 => Plan::CancelBeforeStart,
            25..=29 => Plan::CancelWhileRunning,
            30..=32 => Plan::IgnoresCancel,
            33..=38 => Plan::TimeLimit {
                cooperative: rng.chance(50),
            },
            _ => Plan::StallLimit {
                cooperative: rng.chance(50),
            },
        }
    }

    fn name(self) -> &'static str {
        let i = match self {
            Plan::Complete => 0,
            Plan::Error => 1,
            Plan::Panic => 2,
            Plan::Slow => 3,
            Plan::CancelBeforeStart => 4,
            Plan::CancelWhileRunning => 5,
            Plan::IgnoresCancel => 6,
            Plan::TimeLimit { cooperative: true } => 7,
            Plan::TimeLimit { cooperative: false } => 8,
            Plan::StallLimit { cooperative: true } => 9,
            Plan::StallLimit { cooperative: false } => 10,
        };
        Self::NAMES[i]
    }

    fn watches_token(self) -> bool {
        matches!(
            self,
            Plan::CancelBeforeStart
                | Plan::CancelWhileRunning
                | Plan::TimeLimit { cooperative: true }
                | Plan::StallLimit { cooperative: true }
        )
    }

    fn request(self, n: u64, user: u64, rng: &mut Rng) -> JobRequest {
        let request = JobRequest::new(json!({"plan": self.name(), "n": n})).started_by(user);
        let limit = Duration::from_millis(1 + rng.below(5));
        match self {
            Plan::TimeLimit { .. } => request.time_limit(limit),
            Plan::StallLimit { .. } => request.stall_limit(limit),
            _ => request,
        }
    }
}

async fn body(n: u64, plan: Plan, steps: u64, job: JobHandle) -> Result<Value, String> {
    for step in 1..=steps {
        if plan.watches_token() && job.is_canceling() {
            return Err(format!("job {n} stopped"));
        }
        job.set_progress(step, steps, format!("job {n} step {step}"));
        if plan == Plan::Slow {
            tokio::time::sleep(Duration::from_millis(1 + n % 4)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    match plan {
        Plan::Complete | Plan::Slow => Ok(json!(n)),
        Plan::Error => Err(format!("job {n} failed")),
        Plan::Panic => panic!("{PANIC_PREFIX} {n}"),
        _ if plan.watches_token() => {
            job.cancelled().await;
            Err(format!("job {n} stopped"))
        }
        _ => std::future::pending().await,
    }
}

/// Whether a final status is one that its plan allows, judged from the status alone.
fn plausible(s: &AsynchronousJobStatus) -> bool {
    let Some(request) = s.request_body.as_deref() else {
        return false;
    };
    let (Some(plan), Some(n)) = (request["plan"].as_str(), request["n"].as_u64()) else {
        return false;
    };
    let own = |text: String| {
        s.error_message.as_deref() == Some(text.as_str())
            && s.exception.as_deref() == Some(std::any::type_name::<String>())
    };
    let timed = plan.starts_with("time-limit") || plan.starts_with("stall-limit");
    let watches = matches!(
        plan,
        "cancel-before-start" | "cancel-while-running" | "time-limit" | "stall-limit"
    );
    match (s.job_state, s.job_canceling) {
        (AsynchJobState::Complete, _) => {
            matches!(plan, "complete" | "slow") && s.response_body.as_deref() == Some(&json!(n))
        }
        (AsynchJobState::Failed, false) => match plan {
            "error" => own(format!("job {n} failed")),
            "panic" => {
                s.exception.as_deref() == Some(exception::PANICKED)
                    && s.error_message.as_deref() == Some(format!("{PANIC_PREFIX} {n}").as_str())
            }
            _ => false,
        },
        (AsynchJobState::Failed, true) => match s.exception.as_deref() {
            Some(exception::CANCELED) => true,
            Some(exception::TIMED_OUT) => timed,
            Some(exception::PANICKED) => plan == "panic",
            _ => {
                (plan == "error" && own(format!("job {n} failed")))
                    || (watches && own(format!("job {n} stopped")))
            }
        },
        (AsynchJobState::Processing, _) => false,
    }
}

/// A growable bitset over a generation's job ids.
#[derive(Default)]
struct Bits(Mutex<Vec<u64>>);

impl Bits {
    /// Sets bit `i`; returns whether it was set already.
    fn set(&self, i: usize) -> bool {
        let mut words = self.0.lock().unwrap();
        if words.len() <= i / 64 {
            words.resize(i / 64 + 1, 0);
        }
        let bit = 1 << (i % 64);
        let was = words[i / 64] & bit != 0;
        words[i / 64] |= bit;
        was
    }

    fn get(&self, i: usize) -> bool {
        let words = self.0.lock().unwrap();
        words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn count(&self) -> usize {
        let words = self.0.lock().unwrap();
        words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// One past the highest index that may be set.
    fn bound(&self) -> usize {
        self.0.lock().unwrap().len() * 64
    }
}

/// The counts the soak reports; all but `jobs` and the informational ones must end at zero.
#[derive(Default)]
struct Checks {
    lost: AtomicU64,
    stuck: AtomicU64,
    repeated_etags: AtomicU64,
    etag_regressions: AtomicU64,
    implausible: AtomicU64,
    other: AtomicU64,
    /// The first few violations, in words.
    first: Mutex<Vec<String>>,
}

impl Checks {
    fn violation(&self, count: &AtomicU64, what: String) {
        count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap();
        if first.len() < 20 {
            first.push(what);
        }
    }

    fn total(&self) -> u64 {
        [
            &self.lost,
            &self.stuck,
            &self.repeated_etags,
            &self.etag_regressions,
            &self.implausible,
            &self.other,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// What is known of one registry's jobs: what the spawners got, what its observer was told,
/// and every status that anyone read.
struct Book {
    first: u64,
    checks: Arc<Checks>,
    spawned: Bits,
    created: Bits,
    finished: Bits,
    removed: Bits,
    unknown_read: Bits,
    /// The observer's last etag per job, until the job is removed.
    versions: Mutex<HashMap<JobId, u64>>,
    /// Every status read, by etag, until the job is removed: one etag, one status.
    seen: Mutex<HashMap<JobId, Vec<(u64, Fingerprint)>>>,
}

impl Book {
    fn index(&self, id: JobId) -> usize {
        (id.as_u64() - self.first) as usize
    }

    /// The observer: told of every event of every job, one job's in etag order.
    fn on_event(&self, event: &JobEvent<'_>) {
        let (id, v) = (event.job_id(), event.version());
        let i = self.index(id);
        {
            let mut versions = self.versions.lock().unwrap();
            let last = versions.insert(id, v);
            if event.kind() != JobEventKind::Removed && last.is_some_and(|last| last >= v) {
                self.checks.violation(
                    &self.checks.etag_regressions,
                    format!("observer: job {id} etag {v} after {last:?}"),
                );
            }
            if event.kind() == JobEventKind::Removed {
                versions.remove(&id);
            }
        }
        match event.kind() {
            JobEventKind::Created => {
                let twice = self.created.set(i);
                if twice {
                    self.checks
                        .violation(&self.checks.other, format!("job {id} created twice"));
                }
            }
            JobEventKind::Changed => {}
            JobEventKind::Finished => {
                if self.finished.set(i) {
                    self.checks
                        .violation(&self.checks.lost, format!("job {id} finished twice"));
                }
                let s = event.status();
                if !plausible(&s) {
                    self.checks.violation(
                        &self.checks.implausible,
                        format!("final status not allowed by its plan: {s:?}"),
                    );
                }
                self.record(&s);
            }
            JobEventKind::Removed => {
                if !self.finished.get(i) {
                    self.checks.violation(
                        &self.checks.lost,
                        format!("job {id} dropped by retention before it finished"),
                    );
                }
                self.removed.set(i);
                self.seen.lock().unwrap().remove(&id);
            }
            _ => {}
        }
    }

    /// One etag, one status: checks `s` against every status read before with its etag.
    fn record(&self, s: &AsynchronousJobStatus) {
        let v = version(s);
        let fp = Fingerprint::of(s);
        let mut seen = self.seen.lock().unwrap();
        let versions = seen.entry(s.job_id).or_default();
        match versions.iter().find(|(seen_v, _)| *seen_v == v) {
            Some((_, first)) if *first != fp => self.checks.violation(
                &self.checks.repeated_etags,
                format!(
                    "job {} etag {v} was two statuses: {first:?} and {fp:?}",
                    s.job_id
                ),
            ),
            Some(_) => {}
            None => versions.push((v, fp)),
        }
    }
}

/// One registry, from build to shutdown.
struct Gen {
    number: u64,
    registry: JobRegistry,
    book: Arc<Book>,
    recent: Mutex<VecDeque<JobId>>,
    /// Spawn calls under way, each until its id is recorded.
    in_flight: AtomicUsize,
    /// Watches still following their job.
    watches: AtomicUsize,
}

impl Gen {
    fn random_job(&self, rng: &mut Rng) -> Option<JobId> {
        let recent = self.recent.lock().unwrap();
        match recent.len() {
            0 => None,
            n => recent.get(rng.below(n as u64) as usize).copied(),
        }
    }

    /// Spawns one job of a random plan; `None` once the registry refuses.
    fn spawn(&self, rng: &mut Rng, n: u64, setup: Duration) -> Option<(JobId, Plan)> {
        let plan = Plan::pick(rng);
        let steps = 1 + rng.below(4);
        let user = n % USERS;
        let request = plan.request(n, user, rng);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let job = move |job: JobHandle| {
            if !setup.is_zero() {
                std::thread::sleep(setup);
            }
            body(n, plan, steps, job)
        };
        // Called from spawner threads as well as tasks: the synchronous call.
        let spawned = if rng.chance(50) {
            self.registry.local().spawn(request, job)
        } else {
            self.registry.as_user(user).local().spawn(request, job)
        };
        let id = match spawned {
            Ok(id) => id,
            Err(Error::ShutDown) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            Err(e) => {
                self.book.checks.violation(
                    &self.book.checks.other,
                    format!("gen {}: spawn: {e}", self.number),
                );
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
        };
        if self.book.spawned.set(self.book.index(id)) {
            self.book
                .checks
                .violation(&self.book.checks.other, format!("id {id} given twice"));
        }
        {
            let mut recent = self.recent.lock().unwrap();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(id);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Some((id, plan))
    }
}

/// Everything the soak's tasks share.
struct Soak {
    seed: u64,
    deadline: Instant,
    checks: Arc<Checks>,
    slots: [RwLock<Option<Arc<Gen>>>; SLOTS],
    /// Set once every slot has shut its last registry down: the readers stop.
    done: AtomicBool,
    generations: AtomicU64,
    jobs: AtomicU64,
    dropped: AtomicU64,
    reads: AtomicU64,
    watched: AtomicU64,
    fed: AtomicU64,
    cancels: AtomicU64,
    /// `ShutdownSummary::still_running` summed: tasks that spawns under way started late (the
    /// known hole described in `shutdown_race`), never code that does not yield.
    late_tasks: AtomicU64,
    next_gen: AtomicU64,
}

impl Soak {
    fn random_gen(&self, rng: &mut Rng) -> Option<Arc<Gen>> {
        self.slots[rng.below(SLOTS as u64) as usize]
            .read()
            .unwrap()
            .clone()
    }
}

/// What one reader saw last of each job, checked read by read.
#[derive(Default)]
struct Reader {
    last: HashMap<JobId, AsynchronousJobStatus>,
}

impl Reader {
    fn read(
        &mut self,
        soak: &Soak,
        gen: &Gen,
        id: JobId,
        read: Result<AsynchronousJobStatus, Error>,
    ) {
        soak.reads.fetch_add(1, Ordering::Relaxed);
        match read {
            Ok(s) => self.observe(soak, gen, s),
            Err(Error::UnknownJob(unknown)) if unknown == id => {
                gen.book.unknown_read.set(gen.book.index(id));
                self.last.remove(&id);
            }
            Err(e) => soak
                .checks
                .violation(&soak.checks.other, format!("reading job {id}: {e}")),
        }
    }

    fn observe(&mut self, soak: &Soak, gen: &Gen, s: AsynchronousJobStatus) {
        gen.book.record(&s);
        if let Some(last) = self.last.get(&s.job_id) {
            let regressed = version(&s) < version(last)
                || (last.is_terminal() && s != *last)
                || (last.job_canceling && !s.job_canceling);
            if regressed {
                soak.checks.violation(
                    &soak.checks.etag_regressions,
                    format!("a reader saw {last:?} then {s:?}"),
                );
            }
        }
        // Bounded: a reader forgets what it saw now and then.
        if self.last.len() > 4_096 {
            self.last.clear();
        }
        self.last.insert(s.job_id, s);
    }
}

/// Follows one job from its spawn to its end: etags strictly increase, nothing after the final
/// status, and the watch ends.
async fn follow(soak: &Soak, gen: &Gen, id: JobId) {
    let mut watch = match gen.registry.watch(&id).await {
        Ok(watch) => watch,
        Err(e) => {
            // Already dropped by retention: checked at the end to have been removed.
            let mut reader = Reader::default();
            reader.read(soak, gen, id, Err(e));
            return;
        }
    };
    let mut last: Option<AsynchronousJobStatus> = None;
    while let Some(s) = watch.next().await {
        soak.watched.fetch_add(1, Ordering::Relaxed);
        if let Some(last) = &last {
            if version(&s) <= version(last) || last.is_terminal() {
                soak.checks.violation(
                    &soak.checks.etag_regressions,
                    format!("a watch returned {s:?} after {last:?}"),
                );
            }
        }
        gen.book.record(&s);
        last = Some(s);
    }
    if !last.is_some_and(|s| s.is_terminal()) {
        soak.checks.violation(
            &soak.checks.stuck,
            format!("the watch of job {id} ended before its final status"),
        );
    }
}

/// Reads a feed until it ends: per job, etags strictly increase and nothing follows a final status.
async fn feed_reader(soak: Arc<Soak>, gen: Arc<Gen>, user: Option<u64>, mut feed: StatusFeed) {
    let mut last: HashMap<JobId, (u64, bool)> = HashMap::new();
    while let Some(s) = feed.next().await {
        soak.fed.fetch_add(1, Ordering::Relaxed);
        if user.is_some() && s.started_by_user_id != user {
            soak.checks.violation(
                &soak.checks.other,
                format!("user {user:?}'s feed showed {s:?}"),
            );
        }
        let v = version(&s);
        if let Some(&(prev, final_)) = last.get(&s.job_id) {
            if v <= prev || final_ {
                soak.checks.violation(
                    &soak.checks.etag_regressions,
                    format!("a feed returned job {} at etag {v} after {prev}", s.job_id),
                );
            }
        }
        gen.book.record(&s);
        if s.is_terminal() {
            // Finished: forget it, but remember that it finished, in case the feed goes on.
            last.insert(s.job_id, (v, true));
        } else {
            last.insert(s.job_id, (v, false));
        }
        if last.len() > 50_000 {
            last.retain(|_, (_, final_)| !*final_);
        }
    }
}

/// Spawns into a registry until it refuses; cancels and watches some of the jobs.
async fn spawner(soak: Arc<Soak>, gen: Arc<Gen>, mut rng: Rng, first_n: u64) {
    let mut n = first_n;
    loop {
        if gen.registry.local().counts().processing >= MAX_PROCESSING {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        n += 1;
        let Some((id, plan)) = gen.spawn(&mut rng, n, Duration::ZERO) else {
            return;
        };
        match plan {
            Plan::CancelBeforeStart => {
                let _ = gen.registry.local().cancel(&id);
            }
            Plan::CancelWhileRunning | Plan::IgnoresCancel => {
                let (gen, delay) = (gen.clone(), rng.below(4));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let _ = gen.registry.local().cancel(&id);
                });
            }
            _ => {}
        }
        if rng.chance(12) {
            // Counted until it ends; not joined, so that a finished watch frees its memory.
            gen.watches.fetch_add(1, Ordering::SeqCst);
            let (soak, gen) = (soak.clone(), gen.clone());
            tokio::spawn(async move {
                follow(&soak, &gen, id).await;
                gen.watches.fetch_sub(1, Ordering::SeqCst);
            });
        }
        if n % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// Spawns from a std thread, through the registry's runtime handle, often with a slow closure.
fn thread_spawner(gen: Arc<Gen>, mut rng: Rng, first_n: u64) {
    let mut n = first_n;
    loop {
        n += 1;
        let setup = match rng.below(4) {
            0 => Duration::from_micros(rng.below(2_000)),
            _ => Duration::ZERO,
        };
        if gen.spawn(&mut rng, n, setup).is_none() {
            return;
        }
        std::thread::sleep(Duration::from_micros(rng.below(500)));
    }
}

/// Reads random jobs' statuses, through the registry and through user views.
async fn status_poller(soak: Arc<Soak>, mut rng: Rng) {
    let mut reader = Reader::default();
    while !soak.done.load(Ordering::Acquire) {
        if let Some(gen) = soak.random_gen(&mut rng) {
            for _ in 0..16 {
                let Some(id) = gen.random_job(&mut rng) else {
                    break;
                };
                let read = match rng.below(2) {
                    0 => gen.registry.status(&id).await,
                    _ => match gen.registry.status(&id).await {
                        Ok(s) => {
                            gen.registry
                                .as_user(s.started_by_user_id.unwrap())
                                .status(&id)
                                .await
                        }
                        Err(e) => Err(e),
                    },
                };
                reader.read(&soak, &gen, id, read);
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Lists whole registries, by state, and counts them.
async fn list_poller(soak: Arc<Soak>, mut rng: Rng) {
    let mut reader = Reader::default();
    while !soak.done.load(Ordering::Acquire) {
        if let Some(gen) = soak.random_gen(&mut rng) {
            let filter = match rng.below(3) {
                0 => JobFilter::new(),
                1 => JobFilter::new().state(AsynchJobState::Processing),
                _ => JobFilter::new().started_by(rng.below(USERS)),
            };
            let list = gen.registry.local().list(&filter.limit(usize::MAX)).jobs;
            if list.windows(2).any(|pair| pair[0].job_id <= pair[1].job_id) {
                soak.checks
                    .violation(&soak.checks.other, "a list not newest first".into());
            }
            for s in list {
                reader.observe(&soak, &gen, s);
            }
            let _ = gen.registry.local().counts();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Long-polls random jobs: an answer is a newer status, or the final one at once.
async fn long_poller(soak: Arc<Soak>, mut rng: Rng) {
    let mut reader = Reader::default();
    while !soak.done.load(Ordering::Acquire) {
        let Some(gen) = soak.random_gen(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let Some(id) = gen.random_job(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let seen = match gen.registry.status(&id).await {
            Ok(s) => s,
            Err(e) => {
                reader.read(&soak, &gen, id, Err(e));
                continue;
            }
        };
        reader.observe(&soak, &gen, seen.clone());
        let wait = gen.registry.wait_for_change(&id, &seen.etag);
        match tokio::time::timeout(Duration::from_millis(5), wait).await {
            Ok(Ok(s)) => {
                let answered_without_change = if seen.is_terminal() {
                    s != seen
                } else {
                    version(&s) <= version(&seen)
                };
                if answered_without_change {
                    soak.checks.violation(
                        &soak.checks.etag_regressions,
                        format!("a long-poll from {seen:?} answered {s:?}"),
                    );
                }
                reader.observe(&soak, &gen, s);
            }
            Ok(Err(e)) => reader.read(&soak, &gen, id, Err(e)),
            Err(_elapsed) => {}
        }
    }
}

/// Cancels random jobs, through the registry or their user's view.
async fn canceller(soak: Arc<Soak>, mut rng: Rng) {
    while !soak.done.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_micros(300)).await;
        let Some(gen) = soak.random_gen(&mut rng) else {
            continue;
        };
        let Some(id) = gen.random_job(&mut rng) else {
            continue;
        };
        let outcome = match rng.below(2) {
            0 => gen.registry.cancel(&id).await,
            _ => match gen.registry.status(&id).await {
                Ok(s) => {
                    gen.registry
                        .as_user(s.started_by_user_id.unwrap())
                        .cancel(&id)
                        .await
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(_) => {
                soak.cancels.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::UnknownJob(_)) => {
                gen.book.unknown_read.set(gen.book.index(id));
            }
            Err(e) => soak
                .checks
                .violation(&soak.checks.other, format!("cancel {id}: {e}")),
        }
    }
}

/// Waits for `handle` to end within `limit`; false if it did not.
async fn ended_within(limit: Duration, handle: tokio::task::JoinHandle<()>) -> bool {
    match tokio::time::timeout(limit, handle).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_elapsed) => false,
    }
}

/// One registry slot: generation after generation until the deadline.
async fn slot(soak: Arc<Soak>, k: usize, mut rng: Rng, short: bool) {
    let handle = tokio::runtime::Handle::current();
    while Instant::now() < soak.deadline {
        let number = soak.next_gen.fetch_add(1, Ordering::Relaxed);
        let first = (number + 1) << 32;
        let book = Arc::new(Book {
            first,
            checks: soak.checks.clone(),
            spawned: Bits::default(),
            created: Bits::default(),
            finished: Bits::default(),
            removed: Bits::default(),
            unknown_read: Bits::default(),
            versions: Mutex::default(),
            seen: Mutex::default(),
        });
        let mut builder = JobRegistry::builder()
            .first_job_id(first)
            .runtime(handle.clone())
            .cancel_grace(Duration::from_millis(5 + rng.below(45)))
            .keep_finished_at_most(200 + rng.below(5_000) as usize)
            .keep_finished_for(Duration::from_millis(50 + rng.below(2_000)));
        if rng.chance(50) {
            builder = builder.max_running(2 + rng.below(63) as usize);
        }
        let observer = book.clone();
        let registry = builder
            .observe(move |event: &JobEvent<'_>| observer.on_event(event))
            .build();
        let gen = Arc::new(Gen {
            number,
            registry,
            book,
            recent: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
        });

        // Feeds first: they see every job from its start.
        let feeds = [
            tokio::spawn(feed_reader(
                soak.clone(),
                gen.clone(),
                None,
                gen.registry.watch_all(),
            )),
            tokio::spawn(feed_reader(
                soak.clone(),
                gen.clone(),
                Some(1),
                gen.registry.as_user(1).watch_all(),
            )),
        ];
        *soak.slots[k].write().unwrap() = Some(gen.clone());
        let spawners: Vec<_> = (0..2u64)
            .map(|s| {
                tokio::spawn(spawner(
                    soak.clone(),
                    gen.clone(),
                    Rng::new(rng.next()),
                    s << 40,
                ))
            })
            .collect();
        let thread = {
            let (gen, rng) = (gen.clone(), Rng::new(rng.next()));
            std::thread::spawn(move || thread_spawner(gen, rng, 2 << 40))
        };

        let life = match short {
            true => Duration::from_millis(200 + rng.below(600)),
            false => Duration::from_millis(2_000 + rng.below(18_000)),
        };
        let left = soak.deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(life.min(left)).await;

        // Shut down while the spawners still spawn: they stop when refused.
        let summary = gen
            .registry
            .shutdown(Duration::from_millis(rng.below(100)))
            .await;
        soak.late_tasks
            .fetch_add(summary.still_running as u64, Ordering::Relaxed);
        for spawner in spawners {
            spawner.await.unwrap();
        }
        while !thread.is_finished() || gen.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        thread.join().unwrap();
        check_after_shutdown(&soak, &gen, feeds).await;
        *soak.slots[k].write().unwrap() = None;
        soak.generations.fetch_add(1, Ordering::Relaxed);
    }
}

/// After a registry's shutdown and every spawn into it: nothing PROCESSING, every watch and feed
/// ended, and every job accounted for.
async fn check_after_shutdown(soak: &Soak, gen: &Gen, feeds: [tokio::task::JoinHandle<()>; 2]) {
    let checks = &soak.checks;
    let processing = gen
        .registry
        .local()
        .list(&JobFilter::new().state(AsynchJobState::Processing))
        .jobs;
    if !processing.is_empty() || gen.registry.local().counts().processing != 0 {
        checks.violation(
            &checks.stuck,
            format!(
                "gen {}: {} PROCESSING after shutdown, e.g. {:?}",
                gen.number,
                processing.len(),
                processing.first()
            ),
        );
    }
    for feed in feeds {
        if !ended_within(END_WITHIN, feed).await {
            checks.violation(
                &checks.stuck,
                format!("gen {}: a feed did not end after shutdown", gen.number),
            );
        }
    }
    let waited = Instant::now();
    while gen.watches.load(Ordering::SeqCst) > 0 {
        if waited.elapsed() > END_WITHIN {
            checks.violation(
                &checks.stuck,
                format!(
                    "gen {}: {} watches did not end after shutdown",
                    gen.number,
                    gen.watches.load(Ordering::SeqCst)
                ),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let book = &gen.book;
    let bound = [
        &book.spawned,
        &book.finished,
        &book.unknown_read,
        &book.removed,
    ]
    .iter()
    .map(|bits| bits.bound())
    .max()
    .unwrap_or(0);
    for i in 0..bound {
        let id = JobId::from_u64(book.first + i as u64);
        let (spawned, finished) = (book.spawned.get(i), book.finished.get(i));
        if spawned && !finished {
            match gen.registry.status(&id).await {
                Ok(s) if !s.is_terminal() => checks.violation(
                    &checks.stuck,
                    format!("gen {}: PROCESSING after shutdown: {s:?}", gen.number),
                ),
                Ok(s) => checks.violation(
                    &checks.lost,
                    format!(
                        "gen {}: final, but its observer was never told: {s:?}",
                        gen.number
                    ),
                ),
                Err(e) => checks.violation(
                    &checks.lost,
                    format!("gen {}: job {id} never finished, and now: {e}", gen.number),
                ),
            }
        }
        if finished && !spawned {
            checks.violation(
                &checks.lost,
                format!(
                    "gen {}: job {id} finished, but no spawn returned its id",
                    gen.number
                ),
            );
        }
        if book.unknown_read.get(i) && !book.removed.get(i) {
            checks.violation(
                &checks.lost,
                format!(
                    "gen {}: job {id} was unknown, but never removed",
                    gen.number
                ),
            );
        }
        if spawned && !book.created.get(i) {
            checks.violation(
                &checks.other,
                format!("gen {}: job {id}'s creation was never observed", gen.number),
            );
        }
    }
    soak.jobs
        .fetch_add(book.spawned.count() as u64, Ordering::Relaxed);
    soak.dropped
        .fetch_add(book.removed.count() as u64, Ordering::Relaxed);
}

/// The process's peak resident set, from `/proc/self/status` (`VmHWM`), in kB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn soak() {
    let minutes: Option<f64> = std::env::var(MINUTES).ok().and_then(|m| m.parse().ok());
    let run = minutes.map_or(SHORT_RUN, |m| Duration::from_secs_f64(m * 60.0));
    let seed = seed();
    println!(
        "soak: {run:?}, seed {seed} (rerun with ASYNCJOBS_STRESS_SEED={seed}; \
         set {MINUTES} to soak longer)"
    );
    quiet_planned_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let soak = Arc::new(Soak {
        seed,
        deadline: started + run,
        checks: Arc::default(),
        slots: Default::default(),
        done: AtomicBool::new(false),
        generations: AtomicU64::new(0),
        jobs: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        watched: AtomicU64::new(0),
        fed: AtomicU64::new(0),
        cancels: AtomicU64::new(0),
        late_tasks: AtomicU64::new(0),
        next_gen: AtomicU64::new(0),
    });
    let mut rng = Rng::new(seed);
    runtime.block_on(async {
        let mut readers = Vec::new();
        for _ in 0..3 {
            readers.push(tokio::spawn(status_poller(
                soak.clone(),
                Rng::new(rng.next()),
            )));
        }
        readers.push(tokio::spawn(list_poller(
            soak.clone(),
            Rng::new(rng.next()),
        )));
        readers.push(tokio::spawn(long_poller(
            soak.clone(),
            Rng::new(rng.next()),
        )));
        readers.push(tokio::spawn(canceller(soak.clone(), Rng::new(rng.next()))));
        let slots: Vec<_> = (0..SLOTS)
            .map(|k| {
                tokio::spawn(slot(
                    soak.clone(),
                    k,
                    Rng::new(rng.next()),
                    minutes.is_none(),
                ))
            })
            .collect();
        // Progress, in a long soak.
        let progress = minutes.map(|_| {
            let soak = soak.clone();
            tokio::spawn(async move {
                while !soak.done.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    println!(
                        "soak: {:>4}s: {} jobs in {} finished generations, {} violations, \
                         RSS {} kB",
                        started.elapsed().as_secs(),
                        soak.jobs.load(Ordering::Relaxed),
                        soak.generations.load(Ordering::Relaxed),
                        soak.checks.total(),
                        rss_kb().unwrap_or(0)
                    );
                }
            })
        });
        for slot in slots {
            slot.await.unwrap();
        }
        soak.done.store(true, Ordering::Release);
        for reader in readers {
            reader.await.unwrap();
        }
        if let Some(progress) = progress {
            progress.abort();
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));

    let checks = &soak.checks;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let peak_mb = peak_rss_kb().map_or("unknown".to_owned(), |kb| {
        format!("{:.1} MB", kb as f64 / 1024.0)
    });
    println!(
        "soak: {} jobs run, {} lost, {} stuck, {} repeated etags, peak RSS {peak_mb}; in {:?} \
         ({} registries shut down and rebuilt; {} dropped by retention; {} reads, {} watched \
         statuses, {} feed statuses, {} cancels; {} etag regressions, {} implausible, {} other; \
         {} late tasks counted as still running)",
        load(&soak.jobs),
        load(&checks.lost),
        load(&checks.stuck),
        load(&checks.repeated_etags),
        started.elapsed(),
        load(&soak.generations),
        load(&soak.dropped),
        load(&soak.reads),
        load(&soak.watched),
        load(&soak.fed),
        load(&soak.cancels),
        load(&checks.etag_regressions),
        load(&checks.implausible),
        load(&checks.other),
        load(&soak.late_tasks),
    );
    assert!(
        checks.total() == 0,
        "seed {}: soak found violations: {:#?}",
        soak.seed,
        checks.first.lock().unwrap()
    );
    assert!(
        load(&soak.generations) >= SLOTS as u64,
        "every slot shut down a registry"
    );
}
