//! [`Job::apply`]: the one place where a job's status changes.

use tokio_util::sync::CancellationToken;

use super::message::Message;
use super::outbox::Told;
use super::{Job, COMPLETE};
use crate::change::Change;
use crate::event::{Event, Step};
use crate::seam::Seam;
use crate::trace::Note;
use crate::{AsynchJobState, JobEventKind};

/// What [`Job::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    Changed,
    /// The change would not alter anything observable.
    Unchanged,
    /// The job had already finished; the change was ignored.
    AlreadyFinished,
}

impl Job {
    /// The one place where a job's status changes: applies `change`, bumps the etag, stamps the
    /// change time, hands the change to the seam and wakes waiters, or does nothing when nothing
    /// observable would change.
    pub(crate) fn apply(&self, seam: &Seam, change: Change<'_>) -> Applied {
        // Whether anyone listens to this change: the rare changes of a job's life always go to
        // the seam; progress only when an observer, a feed of the job or `tracing` hears it.
        // Asked before the status lock, which is the last lock taken.
        let heard = change.is_rare() || seam.hears_progress(self.user);
        let step = change.step();
        let mut st = self.state.lock();
        if st.phase.is_terminal() {
            return Applied::AlreadyFinished;
        }
        let mut note = heard.then(|| Note::of(&change));
        // Freed after the lock is released: a message or a token link the change replaced.
        let mut replaced: Option<Message> = None;
        let mut fire = None;
        let mut release = None;
        match change {
            Change::Progress {
                current,
                total,
                message,
            } => {
                let same_message = st.message.as_ref().map(Message::as_str) == Some(message);
                if same_message && st.progress == Some((current, total)) {
                    return Applied::Unchanged;
                }
                st.progress = Some((current, total));
                if !same_message {
                    replaced = Message::set(&mut st.message, message);
                }
                if let Some(note) = &mut note {
                    note.shows(st.message.as_mut().map(Message::share));
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
                if st.progress.is_none() {
                    replaced = st.message.take();
                }
            }
            Change::Placed { message, stamp } => {
                // Only a waiting job shows its place, and not over progress of its own.
                if !st.queued || st.cause.is_some() || st.progress.is_some() {
                    return Applied::Unchanged;
                }
                // Stamps compare as serial numbers: a place newer than the last by less than
                // 2^31 is newer, however long the job waits.
                if (stamp.wrapping_sub(st.placed) as i32) <= 0 {
                    return Applied::Unchanged;
                }
                st.placed = stamp;
                if st.message.as_ref().map(Message::as_str) == Some(&*message) {
                    return Applied::Unchanged;
                }
                replaced = st.message.replace(Message::Shared(message));
            }
            Change::Complete(response) => {
                st.phase = AsynchJobState::Complete;
                if let Some((_, total)) = st.progress {
                    st.progress = Some((total, total));
                }
                replaced = st.message.replace(Message::Shared(COMPLETE.clone()));
                st.response = response;
                release = st.token.take();
            }
            Change::Fail(failure) => {
                st.phase = AsynchJobState::Failed;
                st.failure = Some(Box::new(failure));
                release = st.token.take();
            }
        }
        st.version += 1;
        st.changed_at = st.changed_at.max(tokio::time::Instant::now());

        // Progress nobody hears makes no event; with a store, the store's writer only needs to
        // know, once between two of its writes, that the job is due.
        let tell_store =
            note.is_none() && seam.mirrored() && !std::mem::replace(&mut st.unwritten, true);
        let told = note.map(|note| {
            let kind = if st.phase.is_terminal() {
                JobEventKind::Finished
            } else {
                JobEventKind::Changed
            };
            let mut event = self.event(kind, &st);
            event.step = step;
            Told::Changed(event, note)
        });
        // An event wakes the waiters once delivered (see `outbox.rs`); a change without one, now.
        let wake = match told {
            Some(_) => None,
            None if st.waiters > 0 => st.changed.clone(),
            None => None,
        };
        // Delivered by this thread, or queued for the thread delivering the job's earlier events.
        let finished = told.is_some() && st.phase.is_terminal();
        let deliver = told.and_then(|told| st.outbox.hand(told));
        // A final status queued behind another thread's delivery still reaches the store before
        // this returns: the engine then retires the job, and retention may drop it from memory
        // before its event is delivered, when a read would find only the store's stale row. (The
        // store hears it again through the outbox; a final status noted twice is written once.)
        let unwritten = if finished && deliver.is_none() && seam.mirrored() {
            Some(self.event(JobEventKind::Finished, &st))
        } else {
            tell_store.then(|| self.event(JobEventKind::Changed, &st))
        };
        drop(st);
        drop(replaced);
        // Tokens take their own locks: fire and release them only after ours is released.
        if let Some(token) = fire {
            token.cancel();
        }
        drop(release);
        if let Some(told) = deliver {
            self.deliver(seam, told);
        } else if let Some(event) = unwritten {
            seam.unwritten(&event, self);
        }
        if let Some(changed) = wake {
            changed.notify_waiters();
        }
        Applied::Changed
    }

    /// The event of the job's current state (`st`), of `kind`.
    pub(super) fn event(&self, kind: JobEventKind, st: &super::State) -> Event {
        Event {
            kind,
            id: self.id,
            user: self.user,
            version: st.version,
            state: st.phase,
            canceling: st.cause.is_some(),
            cause: st.cause,
            step: match kind {
                JobEventKind::Created => Step::Created,
                JobEventKind::Removed => Step::Removed,
                JobEventKind::Finished => Step::Finished,
                _ => Step::Progress,
            },
            queued: st.queued,
            elapsed: self.since_start(st.changed_at),
            exception: match &st.failure {
                Some(failure) if st.phase.is_terminal() => Some(failure.exception.clone()),
                _ => None,
            },
        }
    }
}
