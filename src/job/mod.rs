//! One job's shared state, and the one place where a job's status changes.
//!
//! Invariants, all kept by [`Job::apply`] (in `apply.rs`), the only code that writes a job's
//! [`State`]:
//! - once `phase` is terminal nothing changes again, and every later change is ignored;
//! - `version` (the etag) grows by exactly one on each observable change and never otherwise;
//! - `changed_at` never decreases;
//! - every change that someone listens to is handed to the [seam](crate::seam) after the status
//!   lock is released, in etag order, the first event being the job's creation
//!   ([`Job::created`]) and the last its removal ([`Job::removed`]); `outbox.rs` says how;
//! - a waiter asleep when a change is made is woken after the change was delivered (one that
//!   starts waiting later sees the state at once, maybe before its event is delivered).
//!
//! The status lock is the last lock of the crate's [lock order](crate::engine#lock-order): under
//! it nothing else is locked, nothing is awaited and no user code runs (serialization and error
//! formatting happen before `apply`); it is held only to read and write the fields below.

mod apply;
mod message;
mod outbox;

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::event::millis;
use crate::failure::Failure;
use crate::observer::StatusSource;
use crate::{AsynchJobState, AsynchronousJobStatus, CancelCause, Etag, JobId, JobRequest};

pub(crate) use apply::Applied;
use message::Message;
use outbox::Outbox;

pub(crate) struct Job {
    pub(crate) id: JobId,
    user: Option<u64>,
    pub(crate) request: Option<Arc<Value>>,
    pub(crate) cacheable: bool,
    /// The name the request gave, for people.
    pub(crate) name: Option<Arc<str>>,
    /// The wall-clock time of the spawn, in milliseconds since the Unix epoch. Every later time
    /// of the job is this plus monotonic time elapsed since `started_at`, so a job's times never
    /// go backwards even if the system clock is stepped.
    started_on: i64,
    /// The date (UTC) of `started_on`, worked out once: finding a day's date is most of what
    /// making a `DateTime` costs, and a status's times nearly always fall on the job's first day.
    started_day: NaiveDate,
    started_at: Instant,
    state: Mutex<State>,
}

struct State {
    phase: AsynchJobState,
    /// What asked the job to cancel: set once the job is canceling (`jobCanceling`), never
    /// cleared.
    cause: Option<CancelCause>,
    /// Waiting for a slot under the registry's concurrency limit. Stays set if the job ends
    /// while queued, which tells the scheduler that the job never held a slot.
    queued: bool,
    /// The stamp of the last place in the queue it was shown ([`Change::Placed`](crate::change::Change::Placed)).
    placed: u32,
    /// With a shared store: the job changed since the store last read it to write it, and the
    /// store was told so. Lets progress nobody else hears tell the store once per write, not once
    /// per report (see [`Seam::unwritten`](crate::seam::Seam::unwritten)).
    unwritten: bool,
    /// Tasks inside [`Job::until`]: with none, a change skips the `Notify`.
    waiters: u32,
    /// Wakes the waiters; made on the first wait, since most jobs are never waited for.
    changed: Option<Arc<Notify>>,
    version: u64,
    changed_at: Instant,
    /// `(current, total)`, once the job reported progress.
    progress: Option<(u64, u64)>,
    message: Option<Message>,
    failure: Option<Box<Failure>>,
    response: Option<Arc<Value>>,
    /// The registry's link to the job's token, there until it is fired or the job finishes: a
    /// finished job then holds no place in the registry's token tree. The job's handle and its
    /// supervisor hold their own clones.
    token: Option<CancellationToken>,
    /// The job's events on their way to the seam.
    outbox: Outbox,
}

// Every retained job is a `Job` in an `Arc`, plus its entries in the table and the retention
// queue: about 60 bytes more. `benches/memory.rs` measures the whole against the guard of 300
// bytes per retained finished job; this keeps the struct from growing unnoticed.
const _: () = assert!(std::mem::size_of::<Job>() <= 224);

/// A complete job's progress message, one `Arc` for every job.
static COMPLETE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("Complete"));

/// How a finished job ended.
pub(crate) struct Ended {
    pub(crate) state: AsynchJobState,
    pub(crate) at: Instant,
    /// It ended while queued under the concurrency limit, so it never held a slot.
    pub(crate) queued: bool,
}

impl Job {
    /// A new job, PROCESSING; `queued` is its message if it waits for a slot. Its changes reach
    /// the seam only after [`Job::created`] delivered its creation.
    pub(crate) fn new(
        id: JobId,
        request: JobRequest,
        token: CancellationToken,
        queued: Option<Arc<str>>,
    ) -> Self {
        let started_at = Instant::now();
        let now = Utc::now();
        Job {
            id,
            user: request.user,
            request: request.body,
            cacheable: request.cacheable,
            name: request.name,
            started_on: now.timestamp_millis(),
            started_day: now.date_naive(),
            started_at,
            state: Mutex::new(State {
                phase: AsynchJobState::Processing,
                cause: None,
                queued: queued.is_some(),
                placed: 0,
                unwritten: false,
                waiters: 0,
                changed: None,
                version: 1,
                changed_at: started_at,
                progress: None,
                message: queued.map(Message::Shared),
                failure: None,
                response: None,
                token: Some(token),
                outbox: Outbox::creating(),
            }),
        }
    }

    /// The user who started the job, if one did.
    pub(crate) fn user(&self) -> Option<u64> {
        self.user
    }

    pub(crate) fn phase(&self) -> AsynchJobState {
        self.state.lock().phase
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.phase().is_terminal()
    }

    /// What asked the job to cancel, if anything did.
    pub(crate) fn cancel_cause(&self) -> Option<CancelCause> {
        self.state.lock().cause
    }

    pub(crate) fn is_queued(&self) -> bool {
        self.state.lock().queued
    }

    /// Its state, whether it waits for a slot, and when it last changed, read under one lock.
    pub(crate) fn standing(&self) -> (AsynchJobState, bool, Instant) {
        let st = self.state.lock();
        (st.phase, st.queued, st.changed_at)
    }

    /// How the job ended, read under one lock; `None` while it runs.
    pub(crate) fn ended(&self) -> Option<Ended> {
        let st = self.state.lock();
        st.phase.is_terminal().then_some(Ended {
            state: st.phase,
            at: st.changed_at,
            queued: st.queued,
        })
    }

    /// Whether a cacheable request may be answered with this job: it runs and is not being
    /// canceled, or it is COMPLETE and not `expired`.
    pub(crate) fn reusable(&self, expired: impl Fn(Instant) -> bool) -> bool {
        let st = self.state.lock();
        match st.phase {
            AsynchJobState::Processing => st.cause.is_none(),
            AsynchJobState::Complete => !expired(st.changed_at),
            AsynchJobState::Failed => false,
        }
    }

    /// When the status last changed.
    pub(crate) fn changed_at(&self) -> Instant {
        self.state.lock().changed_at
    }

    /// When the job finished, if it has.
    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.ended().map(|ended| ended.at)
    }

    /// Time from the job's start to `at` (zero before it).
    fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started_at)
    }

    pub(crate) fn snapshot(&self) -> AsynchronousJobStatus {
        self.build(&mut self.state.lock())
    }

    /// A snapshot, or `None` if the job finished at an instant that `expired` says is past its
    /// retention: one lock for both the check and the copy.
    pub(crate) fn snapshot_unless(
        &self,
        expired: impl FnOnce(Instant) -> bool,
    ) -> Option<AsynchronousJobStatus> {
        let mut st = self.state.lock();
        if st.phase.is_terminal() && expired(st.changed_at) {
            return None;
        }
        Some(self.build(&mut st))
    }

    /// A snapshot for the shared store's writer, which is about to write it: the next progress
    /// nobody else hears tells the store again (see `State::unwritten`). Also whether the job
    /// waits for a slot.
    pub(crate) fn snapshot_to_write(&self) -> (AsynchronousJobStatus, bool) {
        let mut st = self.state.lock();
        st.unwritten = false;
        (self.build(&mut st), st.queued)
    }

    /// The status, built under the status lock: field copies and `Arc` clones only.
    fn build(&self, st: &mut State) -> AsynchronousJobStatus {
        // A finished job's runtime ends at its last change. A running job's clock is read under
        // the lock: the job cannot finish at an instant before this one, so a live runtime is
        // never above the final one.
        let changed = self.since_start(st.changed_at);
        let runtime = if st.phase.is_terminal() {
            changed
        } else {
            changed.max(self.since_start(Instant::now()))
        };
        let failure = st.failure.as_deref();
        AsynchronousJobStatus {
            job_id: self.id,
            job_state: st.phase,
            job_canceling: st.cause.is_some(),
            etag: Etag::from_version(st.version),
            started_on: self.wall_time(Duration::ZERO),
            changed_on: self.wall_time(changed),
            started_by_user_id: self.user,
            progress_current: st.progress.map(|(current, _)| current),
            progress_total: st.progress.map(|(_, total)| total),
            progress_message: st.message.as_mut().map(Message::share),
            error_message: failure.map(|f| f.message.clone()),
            error_details: failure.and_then(|f| f.details.clone()),
            exception: failure.map(|f| f.exception.clone()),
            request_body: self.request.clone(),
            response_body: st.response.clone(),
            runtime_ms: millis(runtime),
        }
    }

    /// Resolves once `done` holds of the state, checked now and after every change.
    ///
    /// Cancel safety: cancel safe; it only waits.
    async fn until(&self, done: impl Fn(&State) -> bool) {
        /// Counts this task among the waiters while it waits, however it stops waiting; the
        /// last one out drops the `Notify`, so a job waited for keeps no more memory than one
        /// never waited for.
        struct Waiting<'a>(&'a Job);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                let mut st = self.0.state.lock();
                st.waiters -= 1;
                if st.waiters == 0 {
                    st.changed = None;
                }
            }
        }
        let (changed, _waiting) = {
            let mut st = self.state.lock();
            if done(&st) {
                return;
            }
            st.waiters += 1;
            let changed = st.changed.get_or_insert_with(Arc::default).clone();
            (changed, Waiting(self))
        };
        loop {
            // Made before the check, so a change after the check wakes it: `notify_waiters`
            // completes every `Notified` made before the call, polled or not.
            let notified = changed.notified();
            if done(&self.state.lock()) {
                return;
            }
            notified.await;
        }
    }

    /// Resolves with the final status once the job has finished.
    pub(crate) async fn finished(&self) -> AsynchronousJobStatus {
        self.until(|st| st.phase.is_terminal()).await;
        self.snapshot()
    }

    /// Resolves with the status as soon as its version differs from `version`, or at once if the
    /// job has finished (its status will never change again).
    pub(crate) async fn changed_from(&self, version: Option<u64>) -> AsynchronousJobStatus {
        self.until(|st| Some(st.version) != version || st.phase.is_terminal())
            .await;
        self.snapshot()
    }

    /// Resolves once the job has left the concurrency limit's queue (or finished).
    pub(crate) async fn dequeued(&self) {
        self.until(|st| !st.queued || st.phase.is_terminal()).await;
    }
}

const MILLIS_PER_DAY: i64 = 24 * 60 * 60 * 1000;

impl Job {
    /// The wall-clock time `elapsed` after the spawn, to the millisecond (as on the wire).
    fn wall_time(&self, elapsed: Duration) -> DateTime<Utc> {
        let elapsed = i64::try_from(millis(elapsed)).unwrap_or(i64::MAX);
        let millis = self.started_on.saturating_add(elapsed);
        if millis.div_euclid(MILLIS_PER_DAY) == self.started_on.div_euclid(MILLIS_PER_DAY) {
            // The job's first day: its date is known.
            let of_day = millis.rem_euclid(MILLIS_PER_DAY);
            let seconds = u32::try_from(of_day / 1000).unwrap_or(0);
            let nanos = u32::try_from(of_day % 1000 * 1_000_000).unwrap_or(0);
            if let Some(time) = NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos) {
                return NaiveDateTime::new(self.started_day, time).and_utc();
            }
        }
        DateTime::from_timestamp_millis(millis).unwrap_or_default()
    }
}

impl StatusSource for Job {
    fn snapshot(&self) -> AsynchronousJobStatus {
        Job::snapshot(self)
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Change;
    use crate::exception;
    use crate::seam::Seam;

    fn job(seam: &Seam) -> Job {
        announced(
            seam,
            Job::new(
                JobId::from_u64(1),
                JobRequest::default(),
                CancellationToken::new(),
                None,
            ),
        )
    }

    /// `job`, its creation delivered (until then its changes wait in the outbox).
    fn announced(seam: &Seam, job: Job) -> Job {
        job.created(seam, || ());
        job
    }

    fn progress(current: u64, message: &str) -> Change<'_> {
        Change::Progress {
            current,
            total: 10,
            message,
        }
    }

    #[test]
    fn the_etag_grows_by_one_on_each_change_and_only_then() {
        let seam = Seam::new(Vec::new(), None);
        let job = job(&seam);
        assert_eq!(job.snapshot().etag.to_string(), "1");
        assert_eq!(job.apply(&seam, progress(1, "a")), Applied::Changed);
        assert_eq!(job.apply(&seam, progress(1, "a")), Applied::Unchanged);
        assert_eq!(job.apply(&seam, progress(1, "b")), Applied::Changed);
        assert_eq!(
            job.apply(&seam, Change::Canceling(CancelCause::Requested)),
            Applied::Changed
        );
        assert_eq!(
            job.apply(&seam, Change::Canceling(CancelCause::Requested)),
            Applied::Unchanged
        );
        assert_eq!(
            job.apply(&seam, Change::Dequeued),
            Applied::Unchanged,
            "never queued"
        );
        assert_eq!(job.snapshot().etag.to_string(), "4");
    }

    #[test]
    fn changed_on_never_precedes_started_on_nor_goes_back_and_runtime_keeps_up() {
        let seam = Seam::new(Vec::new(), None);
        let job = job(&seam);
        let mut last = job.snapshot();
        assert_eq!(last.started_on, last.changed_on);
        for i in 0..1_000 {
            job.apply(&seam, progress(i, "step"));
            let now = job.snapshot();
            assert_eq!(now.started_on, last.started_on);
            assert!(now.changed_on >= last.changed_on && now.changed_on >= now.started_on);
            assert!(now.runtime_ms >= last.runtime_ms);
            // The runtime is never shorter than the time to the last change.
            let to_change = (now.changed_on - now.started_on).num_milliseconds();
            assert!(i64::try_from(now.runtime_ms).is_ok_and(|r| r + 1 >= to_change));
            last = now;
        }
    }

    #[test]
    fn a_finished_job_never_changes_again() {
        let seam = Seam::new(Vec::new(), None);
        let job = job(&seam);
        let failure = Failure::registry("stopped", exception::CANCELED);
        assert_eq!(job.apply(&seam, Change::Fail(failure)), Applied::Changed);
        let finished = job.snapshot();
        for change in [
            progress(5, "late"),
            Change::Canceling(CancelCause::Requested),
            Change::Complete(None),
            Change::Fail(Failure::registry("again", exception::PANICKED)),
        ] {
            assert_eq!(job.apply(&seam, change), Applied::AlreadyFinished);
        }
        assert_eq!(job.snapshot(), finished);
        assert_eq!(seam.counts().failed, 1);
    }

    #[test]
    fn change_times_never_go_backwards_and_complete_fills_progress() {
        let seam = Seam::new(Vec::new(), None);
        let job = job(&seam);
        let mut last = job.changed_at();
        for i in 0..100 {
            job.apply(&seam, progress(i, "step"));
            let at = job.changed_at();
            assert!(at >= last);
            last = at;
        }
        job.apply(&seam, Change::Complete(None));
        let done = job.snapshot();
        assert_eq!(done.job_state, AsynchJobState::Complete);
        assert_eq!(
            (done.progress_current, done.progress_total),
            (Some(10), Some(10))
        );
        assert_eq!(done.progress_message.as_deref(), Some("Complete"));
        assert!(job.ended().is_some_and(|e| e.at == job.changed_at()));
    }

    #[test]
    fn a_waiting_job_shows_only_its_latest_place_and_none_once_it_runs() {
        let seam = Seam::new(Vec::new(), None);
        let job = announced(
            &seam,
            Job::new(
                JobId::from_u64(3),
                JobRequest::default(),
                CancellationToken::new(),
                Some(Arc::from("Queued: 3 of your jobs ahead")),
            ),
        );
        let placed = |message: &str, stamp| Change::Placed {
            message: Arc::from(message),
            stamp,
        };
        assert_eq!(
            job.apply(&seam, placed("Queued: 1 of your jobs ahead", 2)),
            Applied::Changed
        );
        // Decided before the one above, applied after it: ignored.
        assert_eq!(
            job.apply(&seam, placed("Queued: 2 of your jobs ahead", 1)),
            Applied::Unchanged
        );
        let shown = job.snapshot();
        assert_eq!(
            shown.progress_message.as_deref(),
            Some("Queued: 1 of your jobs ahead")
        );
        assert_eq!(shown.etag.to_string(), "2");
        assert_eq!(job.apply(&seam, Change::Dequeued), Applied::Changed);
        assert_eq!(
            job.apply(&seam, placed("Queued: next", 3)),
            Applied::Unchanged,
            "it runs"
        );
        assert_eq!(job.snapshot().progress_message, None);
    }

    #[test]
    fn times_are_those_chrono_gives_on_the_first_day_and_after() {
        let seam = Seam::new(Vec::new(), None);
        let mut job = job(&seam);
        let day = MILLIS_PER_DAY;
        let leap_day = 1_709_164_800_000; // 2024-02-29T00:00:00Z
        for start in [
            0,
            -1,
            1,
            day - 1,
            -day,
            leap_day - 1,
            leap_day + day - 5,
            1_700_000_000_123,
        ] {
            job.started_on = start;
            job.started_day = DateTime::from_timestamp_millis(start).unwrap().date_naive();
            for elapsed in [0, 1, 4, 999, 1_000, 3_600_000, day - 1, day, 3 * day + 17] {
                assert_eq!(
                    job.wall_time(Duration::from_millis(elapsed as u64)),
                    DateTime::from_timestamp_millis(start + elapsed).unwrap(),
                    "{elapsed} ms after {start}"
                );
            }
        }
    }

    #[test]
    fn canceling_fires_the_token_once() {
        let seam = Seam::new(Vec::new(), None);
        let token = CancellationToken::new();
        let job = announced(
            &seam,
            Job::new(
                JobId::from_u64(2),
                JobRequest::default(),
                token.clone(),
                None,
            ),
        );
        assert!(!token.is_cancelled());
        job.apply(&seam, Change::Canceling(CancelCause::Requested));
        assert!(token.is_cancelled());
        assert!(job.snapshot().job_canceling);
    }
}
