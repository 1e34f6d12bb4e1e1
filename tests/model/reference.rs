//! The reference model: what a client should see, written from the documented behaviour. Its
//! `pub` items are what the harness drives and compares; the rest is the model's own bookkeeping.

use std::collections::VecDeque;
use std::time::Duration;

use asyncjobs::{exception, AsynchJobState, CancelOutcome, Error, JobCounts, JobId};
use serde_json::{json, Value};

use crate::ops::{Command, Config};
use crate::FIRST_ID;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Limit {
    Total(u64),
    Stall(u64),
}

impl Limit {
    fn message(self) -> String {
        match self {
            Limit::Total(ms) => format!(
                "job exceeded its time limit of {:?}",
                Duration::from_millis(ms)
            ),
            Limit::Stall(ms) => format!(
                "job made no progress for {:?}, its stall limit",
                Duration::from_millis(ms)
            ),
        }
    }
}

/// A job's own error text: two lines, so that a status's message (the first) and details (all)
/// differ.
pub fn own_error(what: &str, j: usize) -> String {
    format!("{what} {j}\nin job {j}")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    pub details: Option<String>,
    pub exception: String,
}

/// `CancelCause`'s texts.
const REQUESTED: &str = "on request";
const SHUTDOWN: &str = "by the registry's shutdown";
const TIME_LIMIT: &str = "by its time limit";
const STALL_LIMIT: &str = "by its stall limit";

impl Failure {
    /// A job's own `Err(String)`: the message is its first line, the details all of it.
    fn own(text: String) -> Self {
        Failure {
            message: text.lines().next().unwrap_or_default().to_owned(),
            details: Some(text),
            exception: std::any::type_name::<String>().to_owned(),
        }
    }

    fn registry(message: &str, exception: &str) -> Self {
        Failure {
            message: message.to_owned(),
            details: None,
            exception: exception.to_owned(),
        }
    }

    /// A failure the registry makes of a canceled job: the cause is in the details.
    fn canceled(message: &str, cause: &str) -> Self {
        Failure {
            details: Some(format!("canceled {cause}")),
            ..Failure::registry(message, exception::CANCELED)
        }
    }
}

#[derive(Debug, Clone)]
pub struct MJob {
    pub id: JobId,
    pub user: Option<u64>,
    stubborn: bool,
    time_limit_ms: Option<u64>,
    stall_limit_ms: Option<u64>,
    pub spawned_at: u64,

    pub state: AsynchJobState,
    pub canceling: bool,
    queued: bool,
    timed_out: Option<Limit>,
    /// What asked the job to cancel, as `CancelCause`'s text.
    cause: Option<&'static str>,
    pub version: u64,
    pub changed_at: u64,
    pub current: Option<u64>,
    pub total: Option<u64>,
    pub message: Option<String>,
    pub failure: Option<Failure>,
    pub response: Option<Value>,
    pub finished_at: Option<u64>,

    /// When its supervisor first ran it (time limits count from here).
    running_since: Option<u64>,
    /// When the cancel grace of a job ignoring its token runs out.
    grace_deadline: Option<u64>,
    /// A command sent while queued: carried out as soon as it runs.
    pending: Option<Command>,
    pub in_table: bool,
}

impl MJob {
    fn terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// Finished jobs that retention holds, in the order they finished. Jobs that finished at one
/// instant within one step form one batch whose inner order the model does not know (tokio runs
/// simultaneous timers in an order of its own); when retention drops only part of a batch, the
/// model asks the registry which members went, and fixes the order from then on.
#[derive(Debug)]
pub struct Batch {
    finished_at: u64,
    pub members: Vec<usize>,
    /// Members dropped by retention, not yet identified.
    pub dropped_unknown: usize,
}

impl Batch {
    fn retained(&self) -> usize {
        self.members.len() - self.dropped_unknown
    }
}

pub struct Model {
    cfg: Config,
    pub now: u64,
    pub jobs: Vec<MJob>,
    slots_taken: usize,
    queue: VecDeque<usize>,
    pub retention: VecDeque<Batch>,
    /// Jobs that finished in the current step, not yet handed to retention.
    finishing: Vec<usize>,
    /// Jobs given a slot, whose supervisor runs them next.
    to_start: VecDeque<usize>,
    pub shut_down: bool,
}

impl Model {
    pub fn new(cfg: Config) -> Self {
        Model {
            cfg,
            now: 0,
            jobs: Vec::new(),
            slots_taken: 0,
            queue: VecDeque::new(),
            retention: VecDeque::new(),
            finishing: Vec::new(),
            to_start: VecDeque::new(),
            shut_down: false,
        }
    }

    fn queued_message(&self) -> String {
        match self.cfg.max_running {
            Some(1) => "Queued: waiting for a free slot (1 job runs at a time)".to_owned(),
            Some(n) => format!("Queued: waiting for a free slot (at most {n} jobs run at once)"),
            None => unreachable!("no queue without a limit"),
        }
    }

    fn grace_failure(&self, j: usize) -> Failure {
        Failure::canceled(
            &format!(
                "job was canceled and did not stop within its {:?} grace period, so it was stopped",
                Duration::from_millis(self.cfg.grace_ms)
            ),
            self.jobs[j].cause.unwrap_or(REQUESTED),
        )
    }

    fn changed(&mut self, j: usize) {
        let now = self.now;
        let job = &mut self.jobs[j];
        job.version += 1;
        job.changed_at = job.changed_at.max(now);
    }

    fn expired(&self, j: usize) -> bool {
        self.jobs[j]
            .finished_at
            .is_some_and(|at| self.now - at >= self.cfg.keep_for_ms)
    }

    pub fn spawn(&mut self, user: Option<u64>, stubborn: bool, tl: Option<u64>, sl: Option<u64>) {
        self.sweep();
        let admitted = match self.cfg.max_running {
            Some(max) if self.slots_taken >= max || !self.queue.is_empty() => false,
            Some(_) => {
                self.slots_taken += 1;
                true
            }
            None => true,
        };
        let j = self.jobs.len();
        let message = (!admitted).then(|| self.queued_message());
        self.jobs.push(MJob {
            id: JobId::from_u64(FIRST_ID + j as u64),
            user,
            stubborn,
            time_limit_ms: tl,
            stall_limit_ms: sl,
            spawned_at: self.now,
            state: AsynchJobState::Processing,
            canceling: false,
            queued: !admitted,
            timed_out: None,
            cause: None,
            version: 1,
            changed_at: self.now,
            current: None,
            total: None,
            message,
            failure: None,
            response: None,
            finished_at: None,
            running_since: None,
            grace_deadline: None,
            pending: None,
            in_table: true,
        });
        if admitted {
            self.to_start.push_back(j);
        } else {
            self.queue.push_back(j);
        }
    }

    /// Its supervisor runs the job for the first time.
    fn start(&mut self, j: usize) {
        self.jobs[j].running_since = Some(self.now);
        if let Some(command) = self.jobs[j].pending.take() {
            self.command(j, command);
        }
    }

    pub fn run_started(&mut self) {
        while let Some(j) = self.to_start.pop_front() {
            if !self.jobs[j].terminal() {
                self.start(j);
            }
        }
    }

    pub fn progress(&mut self, j: usize, current: u64, total: u64, message: &str) -> bool {
        let job = &mut self.jobs[j];
        if job.terminal()
            || (job.message.as_deref() == Some(message)
                && job.current == Some(current)
                && job.total == Some(total))
        {
            return false;
        }
        job.current = Some(current);
        job.total = Some(total);
        job.message = Some(message.to_owned());
        self.changed(j);
        true
    }

    /// A command reaches the job: at once if it runs, when it starts if it is queued.
    pub fn command(&mut self, j: usize, command: Command) {
        let job = &mut self.jobs[j];
        if job.terminal() {
            return;
        }
        if job.queued {
            job.pending.get_or_insert(command);
            return;
        }
        match command {
            Command::Ok => self.complete(j),
            Command::Err => {
                let failure = self.rewrite(j, Failure::own(own_error("error", j)));
                self.fail(j, failure);
            }
            Command::Panic => {
                let failure = Failure::registry(&format!("planned panic {j}"), exception::PANICKED);
                self.fail(j, failure);
            }
        }
    }

    /// A failure after a broken time limit names the limit; a panic stays a panic.
    fn rewrite(&self, j: usize, own: Failure) -> Failure {
        match self.jobs[j].timed_out {
            Some(limit) if own.exception != exception::PANICKED => {
                let message = limit.message();
                // A failure the registry made is told by its message; its details name the cause.
                let then = if own.exception == exception::CANCELED {
                    own.message
                } else {
                    own.details.unwrap_or(own.message)
                };
                Failure {
                    details: Some(format!("{message}; then: {then}")),
                    message,
                    exception: exception::TIMED_OUT.to_owned(),
                }
            }
            _ => own,
        }
    }

    fn complete(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        job.state = AsynchJobState::Complete;
        job.current = job.total;
        job.message = Some("Complete".to_owned());
        job.response = Some(json!({"done": j}));
        self.ended(j);
    }

    fn fail(&mut self, j: usize, failure: Failure) {
        let job = &mut self.jobs[j];
        if job.terminal() {
            return;
        }
        job.state = AsynchJobState::Failed;
        job.failure = Some(failure);
        self.ended(j);
    }

    fn ended(&mut self, j: usize) {
        self.changed(j);
        self.jobs[j].finished_at = Some(self.now);
        self.finishing.push(j);
        if self.cfg.max_running.is_some() {
            if self.jobs[j].queued {
                self.queue.retain(|&k| k != j);
            } else {
                self.release();
            }
        }
    }

    /// A slot came free: it goes to the oldest queued job.
    fn release(&mut self) {
        while let Some(k) = self.queue.pop_front() {
            let job = &mut self.jobs[k];
            if job.terminal() || !job.queued || job.canceling {
                continue;
            }
            job.queued = false;
            if job.current.is_none() {
                job.message = None;
            }
            self.changed(k);
            self.to_start.push_back(k);
            return;
        }
        self.slots_taken -= 1;
    }

    /// `cancel` as the registry does it: the flag, and a queued job ends at once.
    fn request_cancel(&mut self, j: usize) -> CancelOutcome {
        self.cancel_for(j, REQUESTED)
    }

    /// A cancel for `cause` (a request, or the shutdown).
    fn cancel_for(&mut self, j: usize, cause: &'static str) -> CancelOutcome {
        if self.jobs[j].terminal() {
            return CancelOutcome::AlreadyFinished;
        }
        if self.jobs[j].canceling {
            return CancelOutcome::AlreadyRequested;
        }
        self.jobs[j].canceling = true;
        self.jobs[j].cause = Some(cause);
        self.changed(j);
        if self.jobs[j].queued {
            let failure =
                Failure::canceled("job was canceled while queued, before it started", cause);
            self.fail(j, failure);
        }
        CancelOutcome::Requested
    }

    /// The job's task sees its token: a cooperative job stops, a stubborn one gets its grace.
    fn token_seen(&mut self, j: usize) {
        let job = &self.jobs[j];
        if job.terminal() || job.queued {
            return;
        }
        if job.stubborn {
            if job.grace_deadline.is_none() {
                self.jobs[j].grace_deadline = Some(self.now + self.cfg.grace_ms);
            }
        } else {
            let failure = self.rewrite(j, Failure::own(own_error("canceled", j)));
            self.fail(j, failure);
        }
    }

    pub fn cancel(&mut self, j: usize) -> CancelOutcome {
        let outcome = self.request_cancel(j);
        if outcome == CancelOutcome::Requested {
            self.token_seen(j);
        }
        outcome
    }

    fn time_out(&mut self, j: usize, limit: Limit) {
        let job = &mut self.jobs[j];
        job.canceling = true;
        job.cause = Some(match limit {
            Limit::Total(_) => TIME_LIMIT,
            Limit::Stall(_) => STALL_LIMIT,
        });
        job.timed_out = Some(limit);
        self.changed(j);
        self.token_seen(j);
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        let mut due = Vec::new();
        for (j, job) in self.jobs.iter().enumerate() {
            let Some(since) = job.running_since.filter(|_| !job.terminal() && !job.queued) else {
                continue;
            };
            if job.canceling {
                if job.grace_deadline.is_some_and(|d| d <= now) {
                    due.push((j, None));
                }
            } else if let Some(limit) = job.time_limit_ms.filter(|l| since + l <= now) {
                due.push((j, Some(Limit::Total(limit))));
            } else if let Some(limit) = job.stall_limit_ms.filter(|l| job.changed_at + l <= now) {
                due.push((j, Some(Limit::Stall(limit))));
            }
        }
        for (j, limit) in due {
            match limit {
                Some(limit) => self.time_out(j, limit),
                None => {
                    let failure = self.rewrite(j, self.grace_failure(j));
                    self.fail(j, failure);
                }
            }
            self.run_started();
        }
    }

    /// Returns the summary `(running, finished_within_grace, stopped)`.
    pub fn shutdown(&mut self, grace_ms: u64) -> (usize, usize, usize) {
        self.shut_down = true;
        let running: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| !self.jobs[j].terminal())
            .collect();
        // The registry flags every job (queued ones end at once) before any job's task runs.
        for &j in &running {
            self.cancel_for(j, SHUTDOWN);
        }
        for &j in &running {
            self.token_seen(j);
        }
        self.run_started();
        self.end_step();
        let kill_at = self.now + grace_ms;
        let mut graces: Vec<(u64, usize)> = running
            .iter()
            .filter(|&&j| !self.jobs[j].terminal())
            .map(|&j| (self.jobs[j].grace_deadline.expect("canceled"), j))
            .collect();
        graces.sort_unstable();
        for (deadline, j) in graces {
            if deadline < kill_at {
                if deadline != self.now {
                    self.end_step();
                    self.now = deadline;
                }
                let failure = self.rewrite(j, self.grace_failure(j));
                self.fail(j, failure);
            }
        }
        self.end_step();
        let left: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&j| !self.jobs[j].terminal())
            .collect();
        if !left.is_empty() {
            self.now = kill_at;
            for &j in &left {
                let own = Failure::canceled("job was stopped by the registry's shutdown", SHUTDOWN);
                let failure = self.rewrite(j, own);
                self.fail(j, failure);
            }
            self.end_step();
        }
        (running.len(), running.len() - left.len(), left.len())
    }

    /// Hands the jobs that finished in this step to retention, which then trims itself (the
    /// registry sweeps each time a job finishes; only then, or when read).
    pub fn end_step(&mut self) {
        if !self.finishing.is_empty() {
            let members = std::mem::take(&mut self.finishing);
            self.retention.push_back(Batch {
                finished_at: self.now,
                members,
                dropped_unknown: 0,
            });
            self.sweep();
        }
    }

    /// Drops what the retention rules say to drop: oldest first, past the count or the time.
    fn sweep(&mut self) {
        loop {
            let retained: usize = self.retention.iter().map(Batch::retained).sum();
            let Some(front) = self.retention.front_mut() else {
                return;
            };
            let whole_batch_goes = front.retained() == 0
                || self.now - front.finished_at >= self.cfg.keep_for_ms
                || retained - self.cfg.keep_at_most.min(retained) >= front.retained();
            if whole_batch_goes {
                let front = self.retention.pop_front().expect("just seen");
                for j in front.members {
                    self.jobs[j].in_table = false;
                }
            } else {
                if retained > self.cfg.keep_at_most {
                    front.dropped_unknown += retained - self.cfg.keep_at_most;
                }
                return;
            }
        }
    }

    pub fn unresolved(&self) -> Vec<(usize, Vec<usize>, usize)> {
        self.retention
            .iter()
            .enumerate()
            .filter(|(_, b)| b.dropped_unknown > 0)
            .map(|(n, b)| (n, b.members.clone(), b.dropped_unknown))
            .collect()
    }

    pub fn counts(&mut self) -> JobCounts {
        self.sweep();
        let mut counts = JobCounts::default();
        for job in self.jobs.iter().filter(|job| job.in_table) {
            match job.state {
                AsynchJobState::Processing => {
                    counts.processing += 1;
                    if job.queued {
                        counts.queued += 1;
                    } else {
                        counts.running += 1;
                    }
                }
                AsynchJobState::Complete => counts.complete += 1,
                AsynchJobState::Failed => counts.failed += 1,
            }
        }
        counts
    }

    pub fn len(&mut self) -> usize {
        self.sweep();
        self.jobs.iter().filter(|job| job.in_table).count()
    }

    /// What `status` answers: the job, or unknown (and a sweep) if dropped or expired.
    pub fn status(&mut self, j: usize) -> Result<&MJob, Error> {
        if !self.jobs[j].in_table {
            return Err(Error::UnknownJob(self.jobs[j].id));
        }
        if self.expired(j) {
            self.sweep();
            return Err(Error::UnknownJob(self.jobs[j].id));
        }
        Ok(&self.jobs[j])
    }

    /// What a user's view answers for a job, by `status` or by `cancel` (both check the job
    /// exists first, then whose it is).
    pub fn check_view(&mut self, j: usize, user: u64) -> Result<(), Error> {
        self.status(j)?;
        if self.jobs[j].user == Some(user) {
            Ok(())
        } else {
            Err(Error::NotYourJob(self.jobs[j].id))
        }
    }

    /// The jobs a list shows, newest (highest id) first.
    pub fn list(&mut self, state: Option<AsynchJobState>, user: Option<u64>) -> Vec<usize> {
        self.sweep();
        (0..self.jobs.len())
            .rev()
            .filter(|&j| {
                let job = &self.jobs[j];
                job.in_table
                    && state.is_none_or(|s| job.state == s)
                    && user.is_none_or(|u| job.user == Some(u))
            })
            .collect()
    }
}
