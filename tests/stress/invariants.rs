//! Invariants under stress: tens of thousands of jobs with random outcomes on a multi-thread
//! runtime, while other tasks read statuses (`status`, `list`, `counts`, `watch`, `watch_all`,
//! `wait_for_change`) and cancel at random. A status must never lie:
//!
//! - every job reaches exactly one terminal state, one its plan allows, and stays there;
//! - no reader ever sees a job go back to PROCESSING, or a finished status change again;
//! - one etag is one status: two reads with the same etag are the same status, and a reader sees
//!   etags (versions) strictly increase across distinct statuses;
//! - `changedOn` and `runtimeMS` never decrease, the canceling flag is never cleared;
//! - a job is unknown only once it has finished (retention drops only finished jobs), and never
//!   comes back;
//! - counts stay within the retention limits, and add up to the jobs retained once quiescent;
//! - after a final shutdown no task is left on the runtime.
//!
//! Scale with `ASYNCJOBS_STRESS_JOBS` (default 20,000; try 100000), reproduce a run's choices
//! with `ASYNCJOBS_STRESS_SEED` (printed by each run). Timing is real and never asserted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, CancelOutcome, Error, JobFilter, JobHandle,
    JobId, JobRegistry, JobRequest, JobWatch,
};
use serde_json::{json, Value};

use crate::{
    env_or, quiet_planned_panics, seed, version, Fingerprint, Rng, DEFAULT_JOBS, PANIC_PREFIX,
};

const GRACE: Duration = Duration::from_millis(20);
/// At most this many jobs run at once in the limited registry.
const MAX_RUNNING: usize = 32;
const USERS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Complete,
    Error,
    Panic,
    /// Canceled right after `spawn` returns, before its first poll (or while queued).
    CancelBeforeStart,
    /// Canceled a little later by a task of its own, and stops when it sees it.
    CancelWhileRunning,
    /// Canceled a little later, and never stops by itself: stopped after the grace.
    IgnoresCancel,
    /// Runs over a time limit; stops when its token fires, or waits for the grace.
    TimeLimit {
        limit_ms: u64,
        cooperative: bool,
    },
    /// Reports progress, then goes silent past its stall limit.
    StallLimit {
        limit_ms: u64,
        cooperative: bool,
    },
}

fn pick_plan(rng: &mut Rng) -> Plan {
    match rng.below(40) {
        0..=7 => Plan::Complete,
        8..=11 => Plan::Error,
        12..=15 => Plan::Panic,
        16..=19 => Plan::CancelBeforeStart,
        20..=25 => Plan::CancelWhileRunning,
        26..=29 => Plan::IgnoresCancel,
        30..=34 => Plan::TimeLimit {
            limit_ms: 1 + rng.below(5),
            cooperative: rng.chance(50),
        },
        _ => Plan::StallLimit {
            limit_ms: 1 + rng.below(5),
            cooperative: rng.chance(50),
        },
    }
}

impl Plan {
    /// Whether the job stops as soon as it sees its token (at its next poll): such a job ends
    /// with its own error, never after the grace.
    fn watches_token(self) -> bool {
        matches!(
            self,
            Plan::CancelBeforeStart
                | Plan::CancelWhileRunning
                | Plan::TimeLimit {
                    cooperative: true,
                    ..
                }
                | Plan::StallLimit {
                    cooperative: true,
                    ..
                }
        )
    }
}

async fn job_body(i: usize, plan: Plan, steps: u64, job: JobHandle) -> Result<Value, String> {
    for step in 1..=steps {
        if plan.watches_token() && job.is_canceling() {
            return Err(format!("job {i} stopped"));
        }
        job.set_progress(step, steps, format!("job {i} step {step}"));
        tokio::task::yield_now().await;
    }
    match plan {
        Plan::Complete => Ok(json!(i)),
        Plan::Error => Err(format!("job {i} failed")),
        Plan::Panic => panic!("{PANIC_PREFIX} {i}"),
        _ if plan.watches_token() => {
            job.cancelled().await;
            Err(format!("job {i} stopped"))
        }
        Plan::CancelBeforeStart
        | Plan::CancelWhileRunning
        | Plan::IgnoresCancel
        | Plan::TimeLimit { .. }
        | Plan::StallLimit { .. } => std::future::pending().await,
    }
}

/// One spawned job as the test knows it.
struct JobRec {
    registry: usize,
    id: JobId,
    user: u64,
    plan: Plan,
    steps: u64,
    /// Reads the job's status even after retention dropped it: used to check that a job the
    /// registry calls unknown had finished.
    probe: JobWatch,
}

/// What every task shares.
struct World {
    seed: u64,
    registries: [JobRegistry; 2],
    jobs: Vec<OnceLock<JobRec>>,
    spawned: AtomicUsize,
    /// Per job, the status seen with each version, by anyone: one etag, one status.
    versions: Vec<Mutex<HashMap<u64, Fingerprint>>>,
    finals: Vec<OnceLock<AsynchronousJobStatus>>,
    done: AtomicBool,
    reads: AtomicU64,
}

impl World {
    fn spawned(&self) -> usize {
        self.spawned.load(Ordering::Acquire)
    }

    fn job(&self, i: usize) -> &JobRec {
        self.jobs[i].get().expect("published before counted")
    }

    fn random_job(&self, rng: &mut Rng) -> Option<usize> {
        match self.spawned() {
            0 => None,
            n => Some(rng.below(n as u64) as usize),
        }
    }

    fn fail(&self, i: usize, what: std::fmt::Arguments<'_>) -> ! {
        let rec = self.job(i);
        panic!(
            "seed {}: job #{i} ({:?}, id {}, registry {}): {what}",
            self.seed, rec.plan, rec.id, rec.registry
        )
    }

    /// A job that a registry calls unknown must have finished, and been retained no more.
    fn check_unknown(&self, i: usize, error: &Error) {
        let rec = self.job(i);
        if *error != Error::UnknownJob(rec.id) {
            self.fail(i, format_args!("unexpected error {error:?}"));
        }
        if !rec.probe.latest().is_terminal() {
            self.fail(i, format_args!("dropped while still PROCESSING"));
        }
    }
}

/// What one reader has seen of each job, checked read by read.
struct Reader {
    last: HashMap<usize, AsynchronousJobStatus>,
    gone: HashSet<usize>,
}

impl Reader {
    fn new() -> Self {
        Reader {
            last: HashMap::new(),
            gone: HashSet::new(),
        }
    }

    fn read(&mut self, world: &World, i: usize, read: Result<AsynchronousJobStatus, Error>) {
        world.reads.fetch_add(1, Ordering::Relaxed);
        match read {
            Ok(s) => self.observe(world, i, s),
            Err(e) => {
                world.check_unknown(i, &e);
                self.gone.insert(i);
            }
        }
    }

    fn observe(&mut self, world: &World, i: usize, s: AsynchronousJobStatus) {
        let rec = world.job(i);
        let v = version(&s);
        if s.job_id != rec.id || s.started_by_user_id != Some(rec.user) {
            world.fail(i, format_args!("someone else's status: {s:?}"));
        }
        if self.gone.contains(&i) {
            world.fail(i, format_args!("known again after it was unknown"));
        }
        {
            let mut seen = world.versions[i].lock().unwrap();
            let fp = Fingerprint::of(&s);
            let first = seen.entry(v).or_insert_with(|| fp.clone());
            if *first != fp {
                world.fail(
                    i,
                    format_args!("etag {v} was two statuses: {first:?} and {fp:?}"),
                );
            }
        }
        if let Some(last) = self.last.get(&i) {
            let lv = version(last);
            if v < lv {
                world.fail(i, format_args!("etag went back from {lv} to {v}"));
            }
            if last.is_terminal() && s != *last {
                world.fail(
                    i,
                    format_args!("a finished status changed: {last:?} then {s:?}"),
                );
            }
            if s.changed_on < last.changed_on {
                world.fail(i, format_args!("changedOn went back"));
            }
            if s.runtime_ms < last.runtime_ms {
                world.fail(
                    i,
                    format_args!(
                        "runtimeMS went back: {} then {}",
                        last.runtime_ms, s.runtime_ms
                    ),
                );
            }
            if last.job_canceling && !s.job_canceling {
                world.fail(i, format_args!("the canceling flag was cleared"));
            }
            if s.started_on != last.started_on {
                world.fail(i, format_args!("startedOn moved"));
            }
        }
        self.last.insert(i, s);
    }
}

/// Whether a final status is one that the job's plan allows, given what the test and the
/// random cancels may have done to it.
fn check_final(world: &World, i: usize, s: &AsynchronousJobStatus) {
    let rec = world.job(i);
    let string_error = std::any::type_name::<String>();
    let own_error = |text: &str| {
        s.job_state == AsynchJobState::Failed
            && s.error_message.as_deref() == Some(text)
            && s.error_details.as_deref() == Some(text)
            && s.exception.as_deref() == Some(string_error)
            && s.response_body.is_none()
    };
    let canceled_queued = s.job_canceling
        && s.job_state == AsynchJobState::Failed
        && s.exception.as_deref() == Some(exception::CANCELED)
        && s.error_message.as_deref() == Some("job was canceled while queued, before it started");
    let grace_message = format!(
        "job was canceled and did not stop within its {GRACE:?} grace period, so it was stopped"
    );
    let stopped_after_grace = s.job_canceling
        && s.job_state == AsynchJobState::Failed
        && s.exception.as_deref() == Some(exception::CANCELED)
        && s.error_message.as_deref() == Some(grace_message.as_str());
    let stopped_text = format!("job {i} stopped");
    let timed_out = |message: &str| {
        let then_own = format!("{message}; then: {stopped_text}");
        let then_stopped = format!("{message}; then: {grace_message}");
        s.job_canceling
            && s.job_state == AsynchJobState::Failed
            && s.exception.as_deref() == Some(exception::TIMED_OUT)
            && s.error_message.as_deref() == Some(message)
            && [then_own.as_str(), then_stopped.as_str()]
                .contains(&s.error_details.as_deref().unwrap_or(""))
    };
    // A random cancel may reach any job, and one that does not watch its token may then be
    // stopped after the grace (or, queued, at once).
    let randomly_canceled = canceled_queued || stopped_after_grace;
    let ok = match rec.plan {
        Plan::Complete => {
            (s.job_state == AsynchJobState::Complete
                && s.response_body.as_deref() == Some(&json!(i))
                && s.progress_current == Some(rec.steps)
                && s.progress_total == Some(rec.steps)
                && s.progress_message.as_deref() == Some("Complete")
                && s.error_message.is_none())
                || randomly_canceled
        }
        Plan::Error => own_error(&format!("job {i} failed")) || randomly_canceled,
        Plan::Panic => {
            (s.job_state == AsynchJobState::Failed
                && s.exception.as_deref() == Some(exception::PANICKED)
                && s.error_message.as_deref() == Some(format!("{PANIC_PREFIX} {i}").as_str()))
                || randomly_canceled
        }
        // It watches its token: it is never stopped after the grace.
        Plan::CancelBeforeStart | Plan::CancelWhileRunning => {
            s.job_canceling && (own_error(&stopped_text) || canceled_queued)
        }
        Plan::IgnoresCancel => stopped_after_grace || canceled_queued,
        Plan::TimeLimit { limit_ms, .. } => {
            timed_out(&format!(
                "job exceeded its time limit of {:?}",
                Duration::from_millis(limit_ms)
            )) || (s.job_canceling && own_error(&stopped_text))
                || randomly_canceled
        }
        Plan::StallLimit { limit_ms, .. } => {
            timed_out(&format!(
                "job made no progress for {:?}, its stall limit",
                Duration::from_millis(limit_ms)
            )) || (s.job_canceling && own_error(&stopped_text))
                || randomly_canceled
        }
    };
    if !ok {
        world.fail(
            i,
            format_args!("final status not allowed by its plan: {s:#?}"),
        );
    }
    let progress_kept = s.job_state == AsynchJobState::Complete
        || s.progress_current.is_none_or(|c| c <= rec.steps);
    if !progress_kept {
        world.fail(
            i,
            format_args!("progress beyond what the job reported: {s:?}"),
        );
    }
}

/// Follows one job from its spawn to its end, as a client holding a watch would.
async fn follow(world: Arc<World>, i: usize, mut watch: JobWatch) {
    let mut reader = Reader::new();
    let mut last: Option<AsynchronousJobStatus> = None;
    while let Some(s) = watch.next().await {
        if let Some(last) = &last {
            if version(&s) <= version(last) {
                world.fail(i, format_args!("a watch returned a status it had returned"));
            }
            if last.is_terminal() {
                world.fail(i, format_args!("a watch went on after the final status"));
            }
        }
        reader.observe(&world, i, s.clone());
        last = Some(s);
    }
    let last = last.expect("a watch returns at least the current status");
    if !last.is_terminal() {
        world.fail(i, format_args!("a watch ended before the final status"));
    }
    check_final(&world, i, &last);
    if world.finals[i].set(last).is_err() {
        world.fail(i, format_args!("finished twice"));
    }
}

async fn spawner(world: Arc<World>, jobs: usize, mut rng: Rng) -> tokio::task::JoinSet<()> {
    let mut followers = tokio::task::JoinSet::new();
    for i in 0..jobs {
        let plan = pick_plan(&mut rng);
        let steps = 1 + rng.below(3);
        let r = rng.below(2) as usize;
        let user = rng.below(USERS);
        let registry = &world.registries[r];
        let mut request = JobRequest::new(json!({"job": i}));
        match plan {
            Plan::TimeLimit { limit_ms, .. } => {
                request = request.time_limit(Duration::from_millis(limit_ms));
            }
            Plan::StallLimit { limit_ms, .. } => {
                request = request.stall_limit(Duration::from_millis(limit_ms));
            }
            _ => {}
        }
        let spawned = if rng.chance(50) {
            registry
                .as_user(user)
                .spawn(request, move |job| job_body(i, plan, steps, job))
                .await
        } else {
            registry
                .spawn(request.started_by(user), move |job| {
                    job_body(i, plan, steps, job)
                })
                .await
        };
        let id = spawned.unwrap_or_else(|e| panic!("seed {}: spawn #{i}: {e}", world.seed));
        // Taken before anything else can finish the job: too few jobs finish after it, however
        // slow this task is, for retention to drop it this early.
        let watch = registry.watch(&id).await.expect("just spawned");
        let probe = registry.watch(&id).await.expect("just spawned");
        if plan == Plan::CancelBeforeStart {
            assert_eq!(
                registry.cancel(&id).await,
                Ok(CancelOutcome::Requested),
                "seed {}",
                world.seed
            );
        }
        let rec = JobRec {
            registry: r,
            id,
            user,
            plan,
            steps,
            probe,
        };
        assert!(world.jobs[i].set(rec).is_ok());
        world.spawned.store(i + 1, Ordering::Release);
        followers.spawn(follow(world.clone(), i, watch));
        if matches!(plan, Plan::CancelWhileRunning | Plan::IgnoresCancel) {
            let (world, delay) = (world.clone(), rng.below(4));
            followers.spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let rec = world.job(i);
                match world.registries[rec.registry].cancel(&rec.id).await {
                    Ok(_) => {}
                    Err(e) => world.check_unknown(i, &e),
                }
            });
        }
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    followers
}

/// Reads random jobs' statuses, through the registry and through user views.
async fn status_poller(world: Arc<World>, mut rng: Rng) -> u64 {
    let mut reader = Reader::new();
    let mut rounds = 0;
    while !world.done.load(Ordering::Acquire) {
        rounds += 1;
        for _ in 0..16 {
            let Some(i) = world.random_job(&mut rng) else {
                break;
            };
            let rec = world.job(i);
            let registry = &world.registries[rec.registry];
            match rng.below(3) {
                0 => reader.read(&world, i, registry.status(&rec.id).await),
                1 => reader.read(&world, i, registry.as_user(rec.user).status(&rec.id).await),
                _ => {
                    let other = (rec.user + 1 + rng.below(USERS - 1)) % USERS;
                    match registry.as_user(other).status(&rec.id).await {
                        Err(Error::NotYourJob(id)) if id == rec.id => {}
                        Err(e) => world.check_unknown(i, &e),
                        Ok(s) => world.fail(i, format_args!("shown to user {other}: {s:?}")),
                    }
                }
            }
        }
        tokio::task::yield_now().await;
    }
    rounds
}

/// Lists whole registries, by state and by user, and checks every listed status.
async fn list_poller(world: Arc<World>, mut rng: Rng) -> u64 {
    let mut reader = Reader::new();
    let mut index: HashMap<(usize, JobId), usize> = HashMap::new();
    let mut lists = 0;
    while !world.done.load(Ordering::Acquire) {
        lists += 1;
        for i in index.len()..world.spawned() {
            let rec = world.job(i);
            index.insert((rec.registry, rec.id), i);
        }
        let r = rng.below(2) as usize;
        let registry = &world.registries[r];
        let (filter, state, user) = match rng.below(3) {
            0 => (JobFilter::new(), None, None),
            1 => {
                let state = [
                    AsynchJobState::Processing,
                    AsynchJobState::Complete,
                    AsynchJobState::Failed,
                ][rng.below(3) as usize];
                (JobFilter::new().state(state), Some(state), None)
            }
            _ => {
                let user = rng.below(USERS);
                (JobFilter::new(), None, Some(user))
            }
        };
        let list = match user {
            Some(user) => {
                registry
                    .as_user(user)
                    .local()
                    .list(&filter.clone().limit(usize::MAX))
                    .jobs
            }
            None => {
                registry
                    .local()
                    .list(&filter.clone().limit(usize::MAX))
                    .jobs
            }
        };
        for pair in list.windows(2) {
            assert!(
                pair[0].job_id > pair[1].job_id,
                "seed {}: a list is newest first, each job once",
                world.seed
            );
        }
        for s in list {
            assert!(state.is_none_or(|state| s.job_state == state));
            assert!(user.is_none_or(|user| s.started_by_user_id == Some(user)));
            // A job spawned after the index was taken may be listed: skip it this time.
            if let Some(&i) = index.get(&(r, s.job_id)) {
                reader.observe(&world, i, s);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lists
}

/// Reads the counts: never more finished jobs than retention keeps, give or take the few jobs
/// that are between finishing and being handed to retention at the instant of the read.
async fn counts_poller(world: Arc<World>, keep: [usize; 2]) -> u64 {
    const IN_FLIGHT: usize = 8;
    let mut reads = 0;
    while !world.done.load(Ordering::Acquire) {
        reads += 1;
        for (r, registry) in world.registries.iter().enumerate() {
            let counts = registry.local().counts();
            assert!(
                counts.complete + counts.failed <= keep[r] + IN_FLIGHT,
                "seed {}: registry {r} counts {counts} over its retention of {}",
                world.seed,
                keep[r]
            );
            assert!(counts.processing <= world.spawned() + IN_FLIGHT);
        }
        tokio::task::yield_now().await;
    }
    reads
}

/// Long-polls random jobs: a change it is answered with is a newer status.
async fn long_poller(world: Arc<World>, mut rng: Rng) -> u64 {
    let mut reader = Reader::new();
    let mut answered = 0;
    while !world.done.load(Ordering::Acquire) {
        let Some(i) = world.random_job(&mut rng) else {
            tokio::task::yield_now().await;
            continue;
        };
        let rec = world.job(i);
        let registry = &world.registries[rec.registry];
        let seen = match registry.status(&rec.id).await {
            Ok(s) => s,
            Err(e) => {
                reader.read(&world, i, Err(e));
                continue;
            }
        };
        reader.observe(&world, i, seen.clone());
        let wait = registry.wait_for_change(&rec.id, &seen.etag);
        match tokio::time::timeout(Duration::from_millis(5), wait).await {
            Ok(Ok(s)) => {
                answered += 1;
                if seen.is_terminal() {
                    assert_eq!(
                        s, seen,
                        "seed {}: a finished job answers at once",
                        world.seed
                    );
                } else if version(&s) <= version(&seen) {
                    world.fail(i, format_args!("answered without a change"));
                }
                reader.observe(&world, i, s);
            }
            Ok(Err(e)) => reader.read(&world, i, Err(e)),
            Err(_elapsed) => {}
        }
    }
    answered
}

/// Cancels random jobs through the registry and through user views, its own and others'.
async fn chaos_canceller(world: Arc<World>, mut rng: Rng) -> u64 {
    let mut requested = 0;
    while !world.done.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_micros(200)).await;
        let Some(i) = world.random_job(&mut rng) else {
            continue;
        };
        let rec = world.job(i);
        let registry = &world.registries[rec.registry];
        let outcome = match rng.below(3) {
            0 => registry.cancel(&rec.id).await,
            1 => registry.as_user(rec.user).cancel(&rec.id).await,
            _ => {
                let other = (rec.user + 1) % USERS;
                match registry.as_user(other).cancel(&rec.id).await {
                    Err(Error::NotYourJob(id)) if id == rec.id => continue,
                    Err(e) => Err(e),
                    Ok(o) => world.fail(i, format_args!("canceled ({o:?}) by user {other}")),
                }
            }
        };
        let after = registry.status(&rec.id).await;
        match (outcome, after) {
            (Err(e), _) => world.check_unknown(i, &e),
            (Ok(_), Err(e)) => world.check_unknown(i, &e),
            (Ok(CancelOutcome::AlreadyFinished), Ok(s)) if !s.is_terminal() => {
                world.fail(i, format_args!("AlreadyFinished but PROCESSING"))
            }
            (Ok(CancelOutcome::Requested | CancelOutcome::AlreadyRequested), Ok(s))
                if !s.job_canceling =>
            {
                world.fail(i, format_args!("cancel requested, flag not set: {s:?}"))
            }
            (Ok(o), Ok(_)) => requested += u64::from(o == CancelOutcome::Requested),
        }
    }
    requested
}

/// Follows every change of a registry (or one user's jobs) through a feed, until the feed ends.
async fn feed_reader(
    world: Arc<World>,
    r: usize,
    user: Option<u64>,
    mut feed: asyncjobs::StatusFeed,
) -> HashMap<JobId, AsynchronousJobStatus> {
    let mut last: HashMap<JobId, AsynchronousJobStatus> = HashMap::new();
    while let Some(s) = feed.next().await {
        assert!(
            user.is_none() || s.started_by_user_id == user,
            "seed {}: a user's feed showed another user's job",
            world.seed
        );
        if let Some(prev) = last.get(&s.job_id) {
            assert!(
                version(&s) > version(prev),
                "seed {}: registry {r}: a feed returned job {} at etag {} after {}",
                world.seed,
                s.job_id,
                s.etag,
                prev.etag
            );
            assert!(!prev.is_terminal(), "a feed went on after a final status");
        }
        last.insert(s.job_id, s);
    }
    last
}

#[test]
fn invariants_hold_under_stress() {
    let jobs: usize = env_or("ASYNCJOBS_STRESS_JOBS", DEFAULT_JOBS);
    let seed = seed();
    println!("stress: {jobs} jobs, seed {seed} (rerun with ASYNCJOBS_STRESS_SEED={seed})");
    quiet_planned_panics();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The unlimited registry keeps a quarter of its jobs, so retention drops statuses while
    // they are read; the limited one keeps them all.
    let keep = [(jobs / 8).max(1), jobs];
    let registries = [
        JobRegistry::builder()
            .cancel_grace(GRACE)
            .keep_finished_at_most(keep[0])
            .first_job_id(1)
            .runtime(runtime.handle().clone())
            .build(),
        JobRegistry::builder()
            .cancel_grace(GRACE)
            .keep_finished_at_most(keep[1])
            .max_running(MAX_RUNNING)
            .first_job_id(1 << 40)
            .runtime(runtime.handle().clone())
            .build(),
    ];
    let world = Arc::new(World {
        seed,
        registries,
        jobs: (0..jobs).map(|_| OnceLock::new()).collect(),
        spawned: AtomicUsize::new(0),
        versions: (0..jobs).map(|_| Mutex::default()).collect(),
        finals: (0..jobs).map(|_| OnceLock::new()).collect(),
        done: AtomicBool::new(false),
        reads: AtomicU64::new(0),
    });
    let mut rng = Rng::new(seed);
    let deadline = Duration::from_secs(60 + jobs as u64 / 100);

    let started = std::time::Instant::now();
    runtime.block_on(async {
        // Feeds first: they see every job from its start.
        let feeds = [
            world.registries[0].watch_all(),
            world.registries[1].watch_all(),
        ];
        let user_feed = world.registries[1].as_user(3).watch_all();
        let mut feed_readers = Vec::new();
        for (r, feed) in feeds.into_iter().enumerate() {
            feed_readers.push(tokio::spawn(feed_reader(world.clone(), r, None, feed)));
        }
        let user_feed_reader = tokio::spawn(feed_reader(world.clone(), 1, Some(3), user_feed));
        let mut readers = Vec::new();
        for k in 0..3 {
            readers.push(tokio::spawn(status_poller(
                world.clone(),
                Rng::new(rng.next() + k),
            )));
        }
        readers.push(tokio::spawn(list_poller(
            world.clone(),
            Rng::new(rng.next()),
        )));
        readers.push(tokio::spawn(counts_poller(world.clone(), keep)));
        readers.push(tokio::spawn(long_poller(
            world.clone(),
            Rng::new(rng.next()),
        )));
        readers.push(tokio::spawn(chaos_canceller(
            world.clone(),
            Rng::new(rng.next()),
        )));

        let run = async {
            let mut followers = spawner(world.clone(), jobs, Rng::new(rng.next())).await;
            while let Some(joined) = followers.join_next().await {
                if let Err(e) = joined {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        };
        if tokio::time::timeout(deadline, run).await.is_err() {
            let stuck: Vec<_> = (0..world.spawned())
                .filter(|&i| world.finals[i].get().is_none())
                .take(10)
                .map(|i| (world.job(i).plan, world.job(i).probe.latest()))
                .collect();
            panic!("seed {seed}: not every job finished within {deadline:?}: {stuck:#?}");
        }
        world.done.store(true, Ordering::Release);
        let mut activity = Vec::new();
        for reader in readers {
            activity.push(reader.await.unwrap());
        }
        println!(
            "stress: {} reads; per reader {activity:?}; {:?} to finish",
            world.reads.load(Ordering::Relaxed),
            started.elapsed()
        );

        // Quiescent: every job finished exactly once, and the registries agree with each other.
        for i in 0..jobs {
            let rec = world.job(i);
            let last = world.finals[i].get().expect("every job finished");
            assert_eq!(&rec.probe.latest(), last, "seed {seed}: job #{i}");
        }
        for (r, registry) in world.registries.iter().enumerate() {
            let mine = (0..jobs).filter(|&i| world.job(i).registry == r).count();
            let counts = registry.local().counts();
            let all = registry
                .local()
                .list(&JobFilter::new().limit(usize::MAX))
                .jobs;
            let complete = registry
                .local()
                .list(
                    &JobFilter::new()
                        .state(AsynchJobState::Complete)
                        .limit(usize::MAX),
                )
                .jobs;
            let failed = registry
                .local()
                .list(
                    &JobFilter::new()
                        .state(AsynchJobState::Failed)
                        .limit(usize::MAX),
                )
                .jobs;
            assert_eq!(counts.processing, 0, "seed {seed}: registry {r}");
            assert_eq!(
                (counts.complete, counts.failed),
                (complete.len(), failed.len()),
                "seed {seed}: registry {r}"
            );
            assert_eq!(counts.total(), all.len(), "seed {seed}: registry {r}");
            assert_eq!(
                registry.local().len(),
                all.len(),
                "seed {seed}: registry {r}"
            );
            assert_eq!(all.len(), mine.min(keep[r]), "seed {seed}: registry {r}");
            let finals: HashMap<JobId, &AsynchronousJobStatus> = (0..jobs)
                .filter(|&i| world.job(i).registry == r)
                .map(|i| (world.job(i).id, world.finals[i].get().unwrap()))
                .collect();
            for s in &all {
                assert_eq!(Some(&s), finals.get(&s.job_id), "seed {seed}: registry {r}");
            }
        }

        let summaries = [
            world.registries[0].shutdown(Duration::from_secs(5)).await,
            world.registries[1].shutdown(Duration::from_secs(5)).await,
        ];
        for summary in summaries {
            assert_eq!(
                (summary.running, summary.stopped),
                (0, 0),
                "seed {seed}: nothing was left running"
            );
        }
        // A feed ends after a shutdown, once it has returned every final status it holds: one
        // for every job still retained.
        for (r, reader) in feed_readers.into_iter().enumerate() {
            let seen = reader.await.unwrap();
            for s in world.registries[r]
                .local()
                .list(&JobFilter::new().limit(usize::MAX))
                .jobs
            {
                assert_eq!(
                    seen.get(&s.job_id),
                    Some(&s),
                    "seed {seed}: registry {r} feed"
                );
            }
        }
        let seen = user_feed_reader.await.unwrap();
        let theirs = world.registries[1]
            .as_user(3)
            .local()
            .list(&JobFilter::new().limit(usize::MAX))
            .jobs;
        assert_eq!(seen.len(), theirs.len(), "seed {seed}: user feed");
        for s in theirs {
            assert_eq!(seen.get(&s.job_id), Some(&s), "seed {seed}: user feed");
        }
    });

    // No job's task, nor any of the test's, is left on the runtime.
    drop(world);
    let metrics = runtime.metrics();
    let waited = std::time::Instant::now();
    while metrics.num_alive_tasks() > 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "seed {seed}: {} tasks still alive",
            metrics.num_alive_tasks()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    println!("stress: done in {:?}", started.elapsed());
}

/// Reduced from the stress test, where it was found: a status read while the job finished could
/// show a runtime beyond the final one (e.g. 42 ms, then a final 39 ms), because the clock was read
/// after the job's lock was released. A race, so this test hammers it: readers on more threads
/// than cores, for up to 3 s (it showed within one before the fix).
#[test]
fn runtime_never_goes_back_when_read_while_the_job_finishes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = JobRegistry::builder()
        .runtime(runtime.handle().clone())
        .build();
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (registry, current, stop) = (registry.clone(), current.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last: Option<AsynchronousJobStatus> = None;
                while !stop.load(Ordering::Relaxed) {
                    let id = JobId::from_u64(current.load(Ordering::Acquire));
                    let Ok(s) = registry.local().status(&id) else {
                        continue;
                    };
                    if let Some(last) = last.as_ref().filter(|l| l.job_id == id) {
                        if s.runtime_ms < last.runtime_ms {
                            return Some((last.clone(), s));
                        }
                    }
                    last = Some(s);
                }
                None
            })
        })
        .collect();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) && !readers.iter().any(|r| r.is_finished()) {
        let id = registry
            .local()
            .spawn(JobRequest::default(), |_| async {
                // Busy for about a millisecond, so reads straddle a millisecond boundary.
                let t = std::time::Instant::now();
                while t.elapsed() < Duration::from_micros(900) {
                    std::hint::spin_loop();
                }
                Ok::<_, &str>(())
            })
            .unwrap();
        current.store(id.as_u64(), Ordering::Release);
        runtime.block_on(registry.wait(&id)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        if let Some((before, after)) = reader.join().unwrap() {
            panic!(
                "runtimeMS went back from {} ({}) to {} ({})",
                before.runtime_ms, before.job_state, after.runtime_ms, after.job_state
            );
        }
    }
}
