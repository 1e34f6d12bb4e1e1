//! Model-based test of the scheduler: proptest generates registries (a global limit, a per-user
//! limit, the fair order or not) and sequences of spawns (by several users and with no user, at
//! several priorities), finishes, cancels and a final shutdown, and applies each to a registry
//! and to a reference model written here from the documented rules. After every step, what a
//! client can observe must agree: which jobs have started and in what order, each job's state,
//! its `Queued:` message word for word, its etag (exactly one new etag per change: every move in a
//! queue is one), `counts()` with queued and running apart, and `counts_for` each user.
//!
//! The model keeps no queue per group: it recomputes a group's waiting jobs from scratch (sorted by
//! priority, then spawn order) whenever it needs them. Only the round-robin ring is state, since
//! the rule is stated as one: the groups that can take a slot, in the order they became able to
//! or last took a turn.
//!
//! Jobs run on a current-thread runtime and start, finish and stop only when told, so every step
//! settles to one outcome. `PROPTEST_CASES` sets the number of cases (default 128).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asyncjobs::{
    AsynchJobState, CancelOutcome, Error, JobCounts, JobHandle, JobId, JobRegistry, JobRequest,
};
use proptest::prelude::*;
use serde_json::json;
use tokio::sync::oneshot;

const FIRST_ID: u64 = 1;

#[derive(Debug, Clone, Copy)]
struct Config {
    max: Option<usize>,
    per_user: Option<usize>,
    fair: bool,
    shutdown_at_end: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Spawn {
        user: Option<u64>,
        priority: i32,
    },
    /// Tells a running job to complete (nothing if the model says it does not run). The job is
    /// the number modulo the jobs spawned so far.
    Finish(usize),
    Cancel(usize),
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(None), (1..=3usize).prop_map(Some)],
        prop_oneof![Just(None), (1..=2usize).prop_map(Some)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(max, per_user, fair, shutdown_at_end)| Config {
            // Some limit, or nothing ever waits.
            max: if max.is_none() && per_user.is_none() {
                Some(1)
            } else {
                max
            },
            per_user,
            fair,
            shutdown_at_end,
        })
}

fn op() -> impl Strategy<Value = Op> {
    // User 1 spawns most, so that its queue grows past the exact places.
    let user = prop_oneof![
        6 => Just(Some(1)),
        1 => Just(Some(2)),
        1 => Just(Some(3)),
        1 => Just(None),
    ];
    prop_oneof![
        6 => (user, prop_oneof![4 => Just(0), 1 => Just(1), 1 => Just(-1)])
            .prop_map(|(user, priority)| Op::Spawn { user, priority }),
        3 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Running,
    Complete,
    Failed,
}

#[derive(Debug)]
struct MJob {
    user: Option<u64>,
    priority: i32,
    stage: Stage,
    canceling: bool,
    message: Option<String>,
    version: u64,
}

/// A group: the user with the fair order, everyone without it.
type Group = Option<Option<u64>>;

struct Model {
    cfg: Config,
    fair: bool,
    jobs: Vec<MJob>,
    ring: VecDeque<Group>,
    started: Vec<usize>,
    shut_down: bool,
}

impl Model {
    fn new(cfg: Config) -> Self {
        Model {
            cfg,
            fair: cfg.fair || cfg.per_user.is_some(),
            jobs: Vec::new(),
            ring: VecDeque::new(),
            started: Vec::new(),
            shut_down: false,
        }
    }

    fn group(&self, j: usize) -> Group {
        self.fair.then_some(self.jobs[j].user)
    }

    fn running(&self) -> usize {
        self.jobs
            .iter()
            .filter(|m| m.stage == Stage::Running)
            .count()
    }

    fn group_running(&self, g: Group) -> usize {
        (0..self.jobs.len())
            .filter(|&j| self.jobs[j].stage == Stage::Running && self.group(j) == g)
            .count()
    }

    /// A group's waiting jobs, in the order they will start: higher priority, then spawn order.
    fn waiting(&self, g: Group) -> Vec<usize> {
        let mut waiting: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| self.jobs[j].stage == Stage::Waiting && self.group(j) == g)
            .collect();
        waiting.sort_by_key(|&j| (-self.jobs[j].priority, j));
        waiting
    }

    fn at_limit(&self, g: Group) -> bool {
        self.cfg
            .per_user
            .is_some_and(|per| self.group_running(g) >= per)
    }

    fn slot_free(&self) -> bool {
        self.cfg.max.is_none_or(|max| self.running() < max)
    }

    fn able(&self, g: Group) -> bool {
        !self.waiting(g).is_empty() && !self.at_limit(g)
    }

    fn join_ring_if_able(&mut self, g: Group) {
        if self.able(g) && !self.ring.contains(&g) {
            self.ring.push_back(g);
        }
    }

    fn start(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        job.stage = Stage::Running;
        if job.message.take().is_some() {
            // Leaving the queue is a change.
            job.version += 1;
        }
        self.started.push(j);
    }

    /// Free slots go to the groups in the ring, in turn.
    fn dispatch(&mut self) {
        while self.slot_free() && !self.shut_down {
            let Some(g) = self.ring.pop_front() else {
                return;
            };
            let first = self.waiting(g)[0];
            self.start(first);
            self.join_ring_if_able(g);
        }
    }

    fn spawn(&mut self, user: Option<u64>, priority: i32) -> Result<usize, Error> {
        if self.shut_down {
            return Err(Error::ShutDown);
        }
        let j = self.jobs.len();
        self.jobs.push(MJob {
            user,
            priority,
            stage: Stage::Waiting,
            canceling: false,
            message: None,
            version: 1,
        });
        let g = self.group(j);
        if self.slot_free() && !self.at_limit(g) {
            self.jobs[j].stage = Stage::Running;
            self.started.push(j);
        } else {
            // Shown its place from the start: not a change.
            self.jobs[j].message = Some(String::new());
            self.join_ring_if_able(g);
        }
        Ok(j)
    }

    /// A running job ended: its slot goes on.
    fn release(&mut self, g: Group) {
        self.join_ring_if_able(g);
        self.dispatch();
    }

    fn finish(&mut self, j: usize) -> bool {
        if self.jobs[j].stage != Stage::Running {
            return false;
        }
        let job = &mut self.jobs[j];
        job.stage = Stage::Complete;
        job.message = Some("Complete".to_owned());
        job.version += 1;
        let g = self.group(j);
        self.release(g);
        true
    }

    fn cancel(&mut self, j: usize) -> CancelOutcome {
        let g = self.group(j);
        let job = &mut self.jobs[j];
        match job.stage {
            Stage::Complete | Stage::Failed => return CancelOutcome::AlreadyFinished,
            Stage::Waiting => {
                job.canceling = true;
                job.stage = Stage::Failed;
                job.version += 2; // the flag, then the end
                if self.waiting(g).is_empty() {
                    self.ring.retain(|&r| r != g);
                }
            }
            Stage::Running => {
                // The job stops on its token and returns its error.
                job.canceling = true;
                job.stage = Stage::Failed;
                job.version += 2;
                self.release(g);
            }
        }
        CancelOutcome::Requested
    }

    /// Every job ends; no waiting job starts. Returns how many were PROCESSING.
    fn shutdown(&mut self) -> usize {
        self.shut_down = true;
        let mut processing = 0;
        for job in &mut self.jobs {
            if matches!(job.stage, Stage::Waiting | Stage::Running) {
                processing += 1;
                job.canceling = true;
                job.stage = Stage::Failed;
                job.version += 2;
            }
        }
        self.ring.clear();
        processing
    }

    /// Sets every waiting job's message from its place; a message that changes is one change.
    fn show_places(&mut self) {
        let groups: Vec<Group> = (0..self.jobs.len()).map(|j| self.group(j)).collect();
        let mut seen = Vec::new();
        for g in groups {
            if seen.contains(&g) {
                continue;
            }
            seen.push(g);
            let at_limit = self.at_limit(g);
            for (rank, j) in self.waiting(g).into_iter().enumerate() {
                let message = self.message(self.jobs[j].user, rank, at_limit);
                let job = &mut self.jobs[j];
                match &job.message {
                    Some(m) if m.is_empty() => job.message = Some(message),
                    Some(m) if *m == message => {}
                    _ => {
                        job.message = Some(message);
                        job.version += 1;
                    }
                }
            }
        }
    }

    /// The documented messages, written out here rather than taken from the crate.
    fn message(&self, user: Option<u64>, rank: usize, at_limit: bool) -> String {
        let slot = match self.cfg.max {
            Some(1) => "a free slot (1 job runs at a time)".to_owned(),
            Some(max) => format!("a free slot (at most {max} jobs run at once)"),
            None => "a free slot".to_owned(),
        };
        if !self.fair {
            return format!("Queued: waiting for {slot}");
        }
        let limit = match self.cfg.per_user {
            Some(1) => "limit of 1 running job".to_owned(),
            Some(n) => format!("limit of {n} running jobs"),
            None => "no limit".to_owned(), // never shown: no group is at it
        };
        let step = [5, 10, 20, 50, 100].into_iter().rev().find(|&s| s <= rank);
        match (user, rank, step) {
            (Some(_), 0, _) if at_limit => {
                format!("Queued: next of your jobs; your {limit} is reached")
            }
            (Some(_), 0, _) => format!("Queued: next of your jobs, waiting for {slot}"),
            (Some(_), _, None) => format!("Queued: {rank} of your jobs ahead"),
            (Some(_), _, Some(step)) => format!("Queued: {step} or more of your jobs ahead"),
            (None, 0, _) if at_limit => {
                format!("Queued: next of the jobs with no user; their {limit} is reached")
            }
            (None, 0, _) => format!("Queued: next of the jobs with no user, waiting for {slot}"),
            (None, 1, _) => "Queued: 1 job with no user ahead".to_owned(),
            (None, _, None) => format!("Queued: {rank} jobs with no user ahead"),
            (None, _, Some(step)) => format!("Queued: {step} or more jobs with no user ahead"),
        }
    }

    fn counts(&self, user: Option<Option<u64>>) -> JobCounts {
        let mut counts = JobCounts::default();
        for job in self
            .jobs
            .iter()
            .filter(|m| user.is_none_or(|u| m.user == u))
        {
            match job.stage {
                Stage::Waiting => counts.queued += 1,
                Stage::Running => counts.running += 1,
                Stage::Complete => counts.complete += 1,
                Stage::Failed => counts.failed += 1,
            }
        }
        counts.processing = counts.queued + counts.running;
        counts
    }
}

// ---------------------------------------------------------------------------------------------
// The registry side.

struct Harness {
    registry: JobRegistry,
    model: Model,
    finish: Vec<Option<oneshot::Sender<()>>>,
    started: Arc<Mutex<Vec<usize>>>,
}

impl Harness {
    fn id(j: usize) -> JobId {
        JobId::from_u64(FIRST_ID + j as u64)
    }

    async fn settle(&self) {
        for _ in 0..(4 * self.model.jobs.len() + 16) {
            tokio::task::yield_now().await;
        }
    }

    fn spawn(&mut self, user: Option<u64>, priority: i32) {
        let j = self.model.jobs.len();
        let (finish, finished) = oneshot::channel::<()>();
        let started = self.started.clone();
        let mut request = JobRequest::new(json!({"job": j})).priority(priority);
        if let Some(user) = user {
            request = request.started_by(user);
        }
        let got = self
            .registry
            .local()
            .spawn(request, move |job: JobHandle| async move {
                started.lock().unwrap().push(j);
                tokio::select! {
                    biased;
                    () = job.cancelled() => Err("canceled"),
                    _ = finished => Ok(json!(j)),
                }
            });
        let expected = self.model.spawn(user, priority).map(Self::id);
        assert_eq!(got, expected, "spawn {j}");
        if got.is_ok() {
            self.finish.push(Some(finish));
        }
    }

    async fn apply(&mut self, op: &Op) {
        let jobs = self.model.jobs.len();
        match op {
            Op::Spawn { user, priority } => self.spawn(*user, *priority),
            Op::Finish(n) if jobs > 0 => {
                let j = n % jobs;
                if self.model.finish(j) {
                    self.finish[j].take().unwrap().send(()).unwrap();
                }
            }
            Op::Cancel(n) if jobs > 0 => {
                let j = n % jobs;
                let got = self.registry.cancel(&Self::id(j)).await;
                assert_eq!(got, Ok(self.model.cancel(j)), "cancel {j}");
            }
            Op::Finish(_) | Op::Cancel(_) => {}
        }
        self.settle().await;
        self.model.show_places();
        self.compare(&format!("after {op:?}"));
    }

    fn compare(&self, step: &str) {
        assert_eq!(
            *self.started.lock().unwrap(),
            self.model.started,
            "{step}: the jobs started, in order"
        );
        for (j, m) in self.model.jobs.iter().enumerate() {
            let s = self.registry.local().status(&Self::id(j)).unwrap();
            let state = match m.stage {
                Stage::Waiting | Stage::Running => AsynchJobState::Processing,
                Stage::Complete => AsynchJobState::Complete,
                Stage::Failed => AsynchJobState::Failed,
            };
            assert_eq!(
                (
                    s.job_state,
                    s.job_canceling,
                    s.progress_message.as_deref(),
                    s.etag.to_string()
                ),
                (
                    state,
                    m.canceling,
                    m.message.as_deref(),
                    m.version.to_string()
                ),
                "{step}: job {j} ({m:?})"
            );
        }
        assert_eq!(
            self.registry.local().counts(),
            self.model.counts(None),
            "{step}"
        );
        for user in [1, 2, 3] {
            assert_eq!(
                self.registry.as_user(user).local().counts(),
                self.model.counts(Some(Some(user))),
                "{step}: user {user}"
            );
        }
    }
}

fn run(cfg: Config, ops: Vec<Op>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut builder = JobRegistry::builder().first_job_id(FIRST_ID);
        if let Some(max) = cfg.max {
            builder = builder.max_running(max);
        }
        if let Some(per_user) = cfg.per_user {
            builder = builder.max_running_per_user(per_user);
        }
        if cfg.fair {
            builder = builder.fair_queue();
        }
        let mut h = Harness {
            registry: builder.build(),
            model: Model::new(cfg),
            finish: Vec::new(),
            started: Arc::default(),
        };
        for op in &ops {
            h.apply(op).await;
        }
        if cfg.shutdown_at_end {
            let summary = h.registry.shutdown(Duration::from_secs(1)).await;
            assert_eq!(summary.running, h.model.shutdown(), "shutdown summary");
            h.settle().await;
            h.compare("after the shutdown");
            assert_eq!(h.registry.local().counts().processing, 0);
        }
    });
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_scheduler_behaves_as_the_model(
        cfg in config(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(cfg, ops);
    }
}

/// A case written out: one user floods, two others and the no-user group each get their turn,
/// and priority reorders only the flooding user's own jobs.
#[test]
fn a_flood_and_three_others_take_turns() {
    let cfg = Config {
        max: Some(1),
        per_user: None,
        fair: true,
        shutdown_at_end: true,
    };
    let mut ops: Vec<Op> = (0..25)
        .map(|_| Op::Spawn {
            user: Some(1),
            priority: 0,
        })
        .collect();
    ops.extend([
        Op::Spawn {
            user: Some(2),
            priority: 0,
        },
        Op::Spawn {
            user: None,
            priority: 0,
        },
        Op::Spawn {
            user: Some(1),
            priority: 1,
        },
        Op::Spawn {
            user: Some(3),
            priority: -1,
        },
    ]);
    // Finish whatever runs, ten times over.
    for _ in 0..10 {
        for j in 0..29 {
            ops.push(Op::Finish(j));
        }
    }
    run(cfg, ops);
}
