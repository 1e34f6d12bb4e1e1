//! One job's shared state, and the one place where a job's status changes.
//!
//! Invariants, all kept by [`Job::apply`], the only code that writes a job's [`State`]:
//! - once `phase` is terminal nothing changes again, and every later change is ignored;
//! - `version` (the etag) grows by exactly one on each observable change and never otherwise;
//! - `changed_at` never decreases;
//! - every change is handed to the [seam](crate::seam) after the status lock is released, and
//!   wakes the job's waiters; a job's events reach the seam in etag order, the first being its
//!   creation ([`Job::created`]) and the last its removal ([`Job::removed`]).
//!
//! Locks: a job has two. Its *turn* orders its events (see [`crate::seam`]) and is taken first;
//! its status lock is taken last: under it `apply` only asks the seam whether a report is heard
//! (which may take the feed index's read lock, whose writers take no status lock) and tries the
//! turn without waiting. It is never held across an `.await` or while user code runs
//! (serialization and error formatting happen before `apply`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::change::Change;
use crate::event::{Event, Step};
use crate::failure::Failure;
use crate::observer::StatusSource;
use crate::seam::Seam;
use crate::trace;
use crate::{
    AsynchJobState, AsynchronousJobStatus, CancelCause, Etag, JobEventKind, JobId, JobRequest,
};

pub(crate) struct Job {
    pub(crate) id: JobId,
    /// The starting user, if `has_user` (see [`Job::user`]): a plain `u64` and a flag in padding
    /// `Job` has anyway take 8 bytes less than an `Option<u64>` in every retained job.
    user_id: u64,
    has_user: bool,
    pub(crate) request: Option<Arc<Value>>,
    pub(crate) cacheable: bool,
    /// The name the request gave, for people.
    pub(crate) name: Option<Arc<str>>,
    /// The wall-clock time of the spawn; every later time of the job is this plus monotonic time
    /// elapsed since `started_at`, so a job's times never go backwards even if the system clock
    /// is stepped, and drift between the two clocks is bounded by one job's life.
    /// Nanoseconds since the Unix epoch: plain integers make a snapshot's times cheap.
    started_on: i64,
    started_at: Instant,
    /// The job's turn to deliver an event: see [`crate::seam`].
    turn: Mutex<()>,
    /// The stamp of the last place in the queue it was shown ([`Change::Placed`]). Read and
    /// written only under the status lock; an atomic only so that it can sit here, in padding
    /// that `Job` has anyway, rather than make every retained job's `State` 8 bytes larger.
    placed: AtomicU32,
    /// With a shared store: the job changed since the store last read it to write it, and the
    /// store was told so. Lets unheard progress tell the store once per write, not per report
    /// (see [`Seam::unwritten`]). In padding, as `placed`.
    unwritten: AtomicBool,
    state: Mutex<State>,
}

struct State {
    phase: AsynchJobState,
    /// What asked the job to cancel: set once the job is canceling (`jobCanceling`), never
    /// cleared. One field for both keeps `State`'s small fields in one 8-byte word.
    cause: Option<CancelCause>,
    /// Waiting for a slot under the registry's concurrency limit. Stays set if the job ends
    /// while queued, which tells the scheduler that the job never held a slot.
    queued: bool,
    /// Whether the job reported progress: `current` and `total` mean something only then (two
    /// plain integers and a flag take less room than two `Option<u64>`, in every retained job).
    reported: bool,
    /// Tasks inside [`Job::until`]: with none, a change skips the `Notify` (and its lock).
    waiters: u32,
    /// Wakes the waiters; made on the first wait, since most jobs are never waited for and a
    /// `Notify` would be 32 more bytes in every retained job.
    changed: Option<Arc<Notify>>,
    version: u64,
    changed_at: Instant,
    current: u64,
    total: u64,
    message: Message,
    failure: Option<Box<Failure>>,
    response: Option<Arc<Value>>,
    /// The registry's link to the job's token, there until it is fired or the job finishes: a
    /// finished job then holds no place in the registry's token tree. The job's handle and its
    /// supervisor hold their own clones.
    token: Option<CancellationToken>,
}

impl State {
    /// Whether the status already shows exactly this progress, given whether it shows `message`
    /// (compared once by the caller, who needs the answer again).
    fn is_progress(&self, current: u64, total: u64, same_message: bool) -> bool {
        self.reported && same_message && self.current == current && self.total == total
    }
}

/// A job's progress message. A report's new message is copied into the job's own buffer, as a
/// `String` would be, while no snapshot has shown it: a job that reports faster than it is read
/// reuses one allocation instead of making an `Arc` per report. The first snapshot to show a
/// message makes it `Shared`, and every later one clones that `Arc`, so a read allocates at
/// most once per change. A finished job's message is `None`, `Shared` or `Complete`, so reads of
/// retained statuses do not allocate (but for a thread's first "Complete").
enum Message {
    None,
    Owned(String),
    Shared(Arc<str>),
    /// [`COMPLETE_MESSAGE`], kept by no job (see there).
    Complete,
}

impl Message {
    fn is(&self, message: &str) -> bool {
        match self {
            Message::None => false,
            Message::Owned(owned) => owned == message,
            Message::Shared(shared) => **shared == *message,
            Message::Complete => message == COMPLETE_MESSAGE,
        }
    }

    /// Shows `message`; hands back a shared message it replaced, to be dropped after the lock
    /// is released (the last reference frees it).
    fn set(&mut self, message: &str) -> Option<Arc<str>> {
        if let Message::Owned(owned) = self {
            message.clone_into(owned);
            return None;
        }
        // Room for a typical message from the start, so that one a little longer than the
        // first ("step 10 of 10" after "step 9 of 10") reuses the buffer too. Only running
        // jobs hold a buffer: a finished job's message is shared at its exact length.
        let mut buffer = String::with_capacity(message.len().max(MESSAGE_ROOM));
        buffer.push_str(message);
        match std::mem::replace(self, Message::Owned(buffer)) {
            Message::Shared(old) => Some(old),
            _ => None,
        }
    }

    /// Shows `message`, shared already (a queued job's place); hands back what it replaced, to be
    /// dropped after the lock is released.
    fn set_shared(&mut self, message: Option<Arc<str>>) -> Message {
        std::mem::replace(self, message.map_or(Message::None, Message::Shared))
    }

    /// The message to show in a snapshot: shared from now on, so that the next snapshot only
    /// clones it. Hands back the buffer it leaves, to be dropped after the lock is released.
    fn share(&mut self) -> (Option<Arc<str>>, Option<String>) {
        match self {
            Message::None => (None, None),
            Message::Shared(shared) => (Some(shared.clone()), None),
            Message::Complete => (Some(complete_message()), None),
            Message::Owned(owned) => {
                let shared: Arc<str> = Arc::from(owned.as_str());
                let Message::Owned(buffer) =
                    std::mem::replace(self, Message::Shared(shared.clone()))
                else {
                    unreachable!("matched above")
                };
                (Some(shared), Some(buffer))
            }
        }
    }

    fn is_shared(&self, message: &Arc<str>) -> bool {
        matches!(self, Message::Shared(shared) if Arc::ptr_eq(shared, message))
    }
}

/// The least a message buffer holds (see [`Message::set`]).
const MESSAGE_ROOM: usize = 32;

/// How a finished job ended.
pub(crate) struct Ended {
    pub(crate) state: AsynchJobState,
    pub(crate) at: Instant,
    /// It ended while queued under the concurrency limit, so it never held a slot.
    pub(crate) queued: bool,
}

/// What [`Job::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    Changed,
    /// The change would not alter anything observable.
    Unchanged,
    /// The job had already finished; the change was ignored.
    AlreadyFinished,
}

/// A complete job's progress message. No job keeps a copy ([`Message::Complete`]): a snapshot
/// clones the `Arc` of the thread taking it (`COMPLETE`), so the message costs no allocation and
/// no bytes per job, and pollers on different cores do not fight over one reference count, as
/// they would over a single `Arc` shared by every job (only a snapshot dropped on another thread
/// than the one that took it touches that thread's count).
const COMPLETE_MESSAGE: &str = "Complete";

thread_local! {
    /// This thread's shared [`COMPLETE_MESSAGE`].
    static COMPLETE: Arc<str> = Arc::from(COMPLETE_MESSAGE);
}

/// The complete message to show in a snapshot: this thread's, or a new one while the thread is
/// being torn down.
fn complete_message() -> Arc<str> {
    COMPLETE
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::from(COMPLETE_MESSAGE))
}

impl Job {
    pub(crate) fn new(
        id: JobId,
        request: JobRequest,
        token: CancellationToken,
        queued: Option<Arc<str>>,
    ) -> Self {
        let started_at = Instant::now();
        let started_on = unix_nanos_now();
        Job {
            id,
            user_id: request.user.unwrap_or(0),
            has_user: request.user.is_some(),
            request: request.body,
            cacheable: request.cacheable,
            name: request.name,
            started_on,
            started_at,
            turn: Mutex::new(()),
            placed: AtomicU32::new(0),
            unwritten: AtomicBool::new(false),
            state: Mutex::new(State {
                phase: AsynchJobState::Processing,
                cause: None,
                queued: queued.is_some(),
                waiters: 0,
                changed: None,
                version: 1,
                changed_at: started_at,
                reported: false,
                current: 0,
                total: 0,
                message: queued.map_or(Message::None, Message::Shared),
                failure: None,
                response: None,
                token: Some(token),
            }),
        }
    }

    /// The user who started the job, if one did.
    #[inline]
    pub(crate) fn user(&self) -> Option<u64> {
        self.has_user.then_some(self.user_id)
    }

    /// Announces the job's creation to the seam, its first event. `publish` makes the job
    /// findable (inserts it into the table); it runs in the job's turn, so no change of the job
    /// can be delivered before its creation.
    pub(crate) fn created(&self, seam: &Seam, queued: bool, publish: impl FnOnce()) {
        let _turn = seam.turn(&self.turn);
        publish();
        let mut event = self.event(JobEventKind::Created, 1, AsynchJobState::Processing, None);
        event.queued = queued;
        seam.created(&event, self, self.name.as_deref(), queued);
    }

    /// Announces that retention dropped the job, its last event: it waits for any delivery of the
    /// job still under way, so nothing about the job reaches the seam after this.
    pub(crate) fn removed(&self, seam: &Seam) {
        let _turn = seam.turn(&self.turn);
        let (version, phase, cause) = {
            let st = self.state.lock();
            (st.version, st.phase, st.cause)
        };
        seam.removed(
            &self.event(JobEventKind::Removed, version, phase, cause),
            self,
        );
    }

    fn event(
        &self,
        kind: JobEventKind,
        version: u64,
        state: AsynchJobState,
        cause: Option<CancelCause>,
    ) -> Event {
        Event {
            kind,
            id: self.id,
            user: self.user(),
            version,
            state,
            canceling: cause.is_some(),
            cause,
            step: match kind {
                JobEventKind::Created => Step::Created,
                JobEventKind::Removed => Step::Removed,
                JobEventKind::Finished => Step::Finished,
                _ => Step::Progress,
            },
            queued: false,
            elapsed: Duration::ZERO,
            exception: None,
        }
    }

    /// The one place where a job's status changes: applies `change`, bumps the etag, stamps the
    /// change time, hands the change to the seam and wakes waiters, or does nothing when nothing
    /// observable would change.
    pub(crate) fn apply(&self, seam: &Seam, change: Change<'_>) -> Applied {
        // Rare changes always take the job's turn, which comes before the status lock.
        let mut ordered = change.is_rare();
        let mut turn = if ordered { seam.turn(&self.turn) } else { None };
        let mut st = self.state.lock();
        if st.phase.is_terminal() {
            return Applied::AlreadyFinished;
        }
        // Whether a report's message is the one shown, compared once.
        let mut same_message = false;
        if let Change::Progress {
            current,
            total,
            message,
        } = &change
        {
            same_message = st.message.is(message);
            // A report that changes nothing costs one lock; one nobody hears needs no turn.
            if st.is_progress(*current, *total, same_message) {
                return Applied::Unchanged;
            }
            if seam.hears_progress(self.user()) {
                ordered = true;
                // The turn comes before the status lock: try it, and only if another thread
                // is delivering this job's event, let go and wait for it in order.
                match seam.try_turn(&self.turn) {
                    Ok(taken) => turn = taken,
                    Err(()) => {
                        drop(st);
                        turn = seam.turn(&self.turn);
                        st = self.state.lock();
                        if st.phase.is_terminal() {
                            return Applied::AlreadyFinished;
                        }
                        same_message = st.message.is(message);
                        if st.is_progress(*current, *total, same_message) {
                            return Applied::Unchanged;
                        }
                    }
                }
            }
        }
        // What the seam is told, made only if it is told anything: a report nobody hears needs
        // no note and no event.
        let told = ordered.then(|| (trace::Note::of(&change), change.step()));
        let mut fire = None;
        let mut release = None;
        // A message replaced, freed after the lock is released.
        let mut replaced = None;
        match change {
            Change::Progress {
                current,
                total,
                message,
            } => {
                st.reported = true;
                st.current = current;
                st.total = total;
                if !same_message {
                    replaced = st.message.set(message).map(Message::Shared);
                }
            }
            Change::Canceling(cause) => {
                if st.cause.is_some() {
                    return Applied::Unchanged;
                }
                st.cause = Some(cause);
                fire = st.token.take();
            }
            Change::TimedOut(timeout) => {
                if st.cause.is_some() {
                    return Applied::Unchanged;
                }
                st.cause = Some(timeout.cause());
                fire = st.token.take();
            }
            Change::Dequeued => {
                // A job canceled while queued does not take a slot: its supervisor ends it. So
                // does one whose token fired before its flag was set (a shutdown fires every
                // token first).
                let fired = st
                    .token
                    .as_ref()
                    .is_some_and(CancellationToken::is_cancelled);
                if !st.queued || st.cause.is_some() || fired {
                    return Applied::Unchanged;
                }
                st.queued = false;
                // Clear the queued message, unless the job already reported progress of its own.
                if !st.reported {
                    replaced = Some(st.message.set_shared(None));
                }
            }
            Change::Placed { message, stamp } => {
                // Only a waiting job shows its place, and not over progress of its own.
                if !st.queued || st.cause.is_some() || st.reported {
                    return Applied::Unchanged;
                }
                // Stamps compare as serial numbers: a place newer than the last by less than
                // 2^31 is newer, however long the job waits.
                let last = self.placed.load(Ordering::Relaxed);
                if (stamp.wrapping_sub(last) as i32) <= 0 {
                    return Applied::Unchanged;
                }
                self.placed.store(stamp, Ordering::Relaxed);
                // The scheduler makes each message once, so an equal one is the same `Arc`.
                if st.message.is_shared(&message) {
                    return Applied::Unchanged;
                }
                replaced = Some(st.message.set_shared(Some(message)));
            }
            Change::Complete(response) => {
                st.phase = AsynchJobState::Complete;
                st.current = st.total;
                replaced = Some(std::mem::replace(&mut st.message, Message::Complete));
                st.response = response;
                release = st.token.take();
            }
            Change::Fail(failure) => {
                st.phase = AsynchJobState::Failed;
                st.failure = Some(Box::new(failure));
                // A finished job's message is shared, so that reading it never allocates.
                replaced = st.message.share().1.map(Message::Owned);
                release = st.token.take();
            }
        }
        st.version += 1;
        st.changed_at = st.changed_at.max(Instant::now());
        let phase = st.phase;
        let cause = st.cause;
        let queued = st.queued;
        let exception = match &st.failure {
            Some(failure) if phase.is_terminal() => Some(failure.exception.clone()),
            _ => None,
        };
        let version = st.version;
        let changed_at = st.changed_at;
        let wake = if st.waiters > 0 {
            st.changed.clone()
        } else {
            None
        };
        drop(st);
        drop(replaced);
        // Tokens take their own locks: fire and release them only after ours is released.
        if let Some(token) = fire {
            token.cancel();
        }
        drop(release);
        if let Some((note, step)) = told {
            let kind = if phase.is_terminal() {
                JobEventKind::Finished
            } else {
                JobEventKind::Changed
            };
            // The runtime is worked out only if an event is emitted that shows it, and the time
            // since the spawn only for the rare changes, whose metrics record it.
            let runtime_ms = || self.nanos_since_start(changed_at) / 1_000_000;
            let mut event = self.event(kind, version, phase, cause);
            event.step = step;
            event.queued = queued;
            if step != crate::event::Step::Progress {
                event.elapsed = Duration::from_nanos(self.nanos_since_start(changed_at));
            }
            event.exception = exception;
            seam.changed(&event, self, note, runtime_ms);
        } else if seam.mirrored()
            && !self.unwritten.load(Ordering::Relaxed)
            && !self.unwritten.swap(true, Ordering::AcqRel)
        {
            // Progress nobody else hears: the store only needs to know the job is due.
            let event = self.event(JobEventKind::Changed, version, phase, cause);
            seam.unwritten(&event, self);
        }
        drop(turn);
        // Waiters wake last: one that slept until the end sees the counts moved and every
        // observer told.
        if let Some(changed) = wake {
            changed.notify_waiters();
        }
        Applied::Changed
    }

    /// The store is about to read this job to write it: the next unheard progress tells it
    /// again (see `unwritten`).
    pub(crate) fn writing(&self) {
        self.unwritten.store(false, Ordering::Release);
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

    /// Nanoseconds from the job's start to `at` (0 before it; saturating after 584 years).
    fn nanos_since_start(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.started_at);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the job finished, if it has.
    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.ended().map(|ended| ended.at)
    }

    pub(crate) fn snapshot(&self) -> AsynchronousJobStatus {
        self.build(self.state.lock())
    }

    /// A snapshot, or `None` if the job finished at an instant that `expired` says is past its
    /// retention: one lock for both the check and the copy.
    #[inline]
    pub(crate) fn snapshot_unless(
        &self,
        expired: impl FnOnce(Instant) -> bool,
    ) -> Option<AsynchronousJobStatus> {
        let st = self.state.lock();
        if st.phase.is_terminal() && expired(st.changed_at) {
            return None;
        }
        Some(self.build(st))
    }

    /// The status from `st`, copied under the lock and assembled after releasing it.
    #[inline]
    fn build(&self, mut st: parking_lot::MutexGuard<'_, State>) -> AsynchronousJobStatus {
        let phase = st.phase;
        let canceling = st.cause.is_some();
        let version = st.version;
        let changed_at = st.changed_at;
        let (current, total) = if st.reported {
            (Some(st.current), Some(st.total))
        } else {
            (None, None)
        };
        let (message, buffer) = st.message.share();
        let (error_message, error_details, exception) = match &st.failure {
            Some(f) => (
                Some(f.message.clone()),
                f.details.clone(),
                Some(f.exception.clone()),
            ),
            None => (None, None, None),
        };
        let response = st.response.clone();
        // A finished job's runtime ends at its last change. A running job's clock is read under
        // the lock: the job cannot finish at an instant before this one, so a live runtime is
        // never above the final one.
        let now = (!phase.is_terminal()).then(Instant::now);
        drop(st);
        drop(buffer);
        let changed = self.nanos_since_start(changed_at);
        let runtime = now.map_or(changed, |now| changed.max(self.nanos_since_start(now)));

        AsynchronousJobStatus {
            job_id: self.id,
            job_state: phase,
            job_canceling: canceling,
            etag: Etag::from_version(version),
            started_on: wall_time(self.started_on, 0),
            changed_on: wall_time(self.started_on, changed),
            started_by_user_id: self.user(),
            progress_current: current,
            progress_total: total,
            progress_message: message,
            error_message,
            error_details,
            exception,
            request_body: self.request.clone(),
            response_body: response,
            runtime_ms: runtime / 1_000_000,
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
        // One critical section for both: `apply` wakes through the `Notify` in the state
        // whenever it counts a waiter, and this is that `Notify`.
        let (changed, _waiting) = {
            let mut st = self.state.lock();
            // Already there (a wait on a finished job, the common poll): no `Notify`, no more
            // locks.
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

/// The wall clock as nanoseconds since the Unix epoch (cheaper than building a `DateTime`).
fn unix_nanos_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// Wall-clock time `elapsed_nanos` after `start_nanos`, to the millisecond (as on the wire).
fn wall_time(start_nanos: i64, elapsed_nanos: u64) -> DateTime<Utc> {
    let elapsed = i64::try_from(elapsed_nanos).unwrap_or(i64::MAX);
    let millis = start_nanos.saturating_add(elapsed).div_euclid(1_000_000);
    date_time(millis).unwrap_or_default()
}

const MILLIS_PER_DAY: i64 = 86_400_000;

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAY_FROM_CE: i64 = 719_163;

thread_local! {
    /// The day this thread last turned into a date. Finding a day's year and month is most of
    /// the cost of a `DateTime`, and nearly every time a snapshot shows is today's.
    static LAST_DAY: Cell<Option<(i64, NaiveDate)>> = const { Cell::new(None) };
}

/// `millis` after the Unix epoch as a date and time, as `DateTime::from_timestamp_millis` gives
/// it, with the day's date remembered from this thread's last conversion.
fn date_time(millis: i64) -> Option<DateTime<Utc>> {
    let day = millis.div_euclid(MILLIS_PER_DAY);
    let of_day = millis.rem_euclid(MILLIS_PER_DAY);
    let convert = || {
        i32::try_from(day.checked_add(UNIX_EPOCH_DAY_FROM_CE)?)
            .ok()
            .and_then(NaiveDate::from_num_days_from_ce_opt)
    };
    let date = LAST_DAY
        .try_with(|last| match last.get() {
            Some((cached, date)) if cached == day => Some(date),
            _ => {
                let date = convert()?;
                last.set(Some((day, date)));
                Some(date)
            }
        })
        .unwrap_or_else(|_| convert())?;
    // Both in range: `of_day` is below a day's milliseconds.
    let time = NaiveTime::from_num_seconds_from_midnight_opt(
        u32::try_from(of_day / 1_000).ok()?,
        u32::try_from(of_day % 1_000 * 1_000_000).ok()?,
    )?;
    Some(NaiveDateTime::new(date, time).and_utc())
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
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exception;

    fn job() -> Job {
        Job::new(
            JobId::from_u64(1),
            JobRequest::default(),
            CancellationToken::new(),
            None,
        )
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
        let job = job();
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
        let job = job();
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
        let job = job();
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
        let job = job();
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
        assert_eq!(done.progress_message.as_deref(), Some(COMPLETE_MESSAGE));
        assert!(job.ended().is_some_and(|e| e.at == job.changed_at()));
    }

    #[test]
    fn a_waiting_job_shows_only_its_latest_place_and_none_once_it_runs() {
        let seam = Seam::new(Vec::new(), None);
        let job = Job::new(
            JobId::from_u64(3),
            JobRequest::default(),
            CancellationToken::new(),
            Some(Arc::from("Queued: 3 of your jobs ahead")),
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
    fn a_message_is_copied_into_its_buffer_until_a_snapshot_shares_it() {
        let mut message = Message::None;
        assert!(message.set("step 1").is_none());
        assert!(message.is("step 1") && !message.is("step 2"));
        let (shown, buffer) = message.share();
        assert_eq!(shown.as_deref(), Some("step 1"));
        assert!(buffer.is_some(), "the buffer is handed back to be freed");
        let (again, buffer) = message.share();
        assert!(shown
            .as_ref()
            .zip(again.as_ref())
            .is_some_and(|(a, b)| Arc::ptr_eq(a, b)));
        assert!(buffer.is_none(), "a second snapshot only clones");
        let replaced = message.set("step 2");
        assert_eq!(replaced.as_deref(), Some("step 1"));
        assert!(matches!(&message, Message::Owned(m) if m == "step 2"));
        assert!(message.set("step 3").is_none(), "the buffer is reused");
    }

    #[test]
    fn dates_are_those_chrono_gives_whatever_day_was_converted_before() {
        let day = MILLIS_PER_DAY;
        let mut times = vec![
            0,
            -1,
            1,
            day - 1,
            day,
            -day,
            -day - 1,
            1_700_000_000_123,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            -62_135_596_800_000, // 0001-01-01T00:00:00Z
            i64::MAX,
            i64::MIN,
        ];
        // Alternating days, runs of one day, and every hour across a leap day.
        let leap_day = 1_709_164_800_000; // 2024-02-29T00:00:00Z
        times.extend((-48..48).map(|hour| leap_day + hour * 3_600_000 + hour * 7));
        times.extend((0..50).map(|i| 1_700_000_000_000 + (i % 2) * day + i));
        for millis in times {
            assert_eq!(
                date_time(millis),
                DateTime::from_timestamp_millis(millis),
                "{millis} ms after the epoch"
            );
        }
    }

    #[test]
    fn canceling_fires_the_token_once() {
        let seam = Seam::new(Vec::new(), None);
        let token = CancellationToken::new();
        let job = Job::new(
            JobId::from_u64(2),
            JobRequest::default(),
            token.clone(),
            None,
        );
        assert!(!token.is_cancelled());
        job.apply(&seam, Change::Canceling(CancelCause::Requested));
        assert!(token.is_cancelled());
        assert!(job.snapshot().job_canceling);
    }
}
