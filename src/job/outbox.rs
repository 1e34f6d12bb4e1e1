//! A job's events on their way to the seam: one at a time, in etag order, with no lock held while
//! they are delivered and no thread waiting for another's delivery.
//!
//! The outbox is part of the job's state, under its status lock. A change that someone listens to
//! makes an event ([`Told`]) under that lock, with its version. If no event of the job is being
//! delivered, the thread that made the change becomes the job's deliverer: it releases the lock
//! and delivers the event. If one is being delivered (by another thread, or by this one: an
//! observer or a tracing subscriber that changes the job it is told about), the event is queued
//! in the outbox, and the deliverer delivers it next, before it stops being the deliverer. So:
//!
//! - one job's events reach feeds, `tracing`, metrics and observers one at a time and in etag
//!   order, changes made from inside an observer included (they come after the current event);
//! - a job's creation is its first event: a new job's outbox starts as if delivering, until
//!   [`Job::created`] has delivered the creation;
//! - its removal by retention is its last: nothing changes a finished job, and the removal
//!   queues behind any event still on its way;
//! - a change never waits for a delivery: a slow observer holds up the thread delivering, which
//!   takes over the events made meanwhile, not the threads making them;
//! - the job's waiters are woken after the deliverer has delivered every queued event, so one that
//!   slept until a change sees it counted and every observer told.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::Job;
use crate::event::Event;
use crate::failure::drop_quietly;
use crate::seam::Seam;
use crate::trace::Note;
use crate::JobEventKind;

/// One event for the seam; a change comes with what `tracing` is told of it.
pub(super) enum Told {
    Created(Event),
    Changed(Event, Note),
    Removed(Event),
}

/// Whether a thread delivers the job's events, and those waiting for it, in etag order.
pub(super) struct Outbox {
    delivering: bool,
    /// `None` but while a delivery is under way and changes come in: boxed, since every retained
    /// job has an outbox and nearly all never queue anything (8 bytes, not a `Vec`'s 24).
    #[allow(clippy::box_collection)]
    pending: Option<Box<Vec<Told>>>,
}

impl Outbox {
    /// The outbox of a job not yet announced: its creation comes first.
    pub(super) fn creating() -> Self {
        Outbox {
            delivering: true,
            pending: None,
        }
    }

    /// Queues `told` behind the delivery under way and returns `None`; or, if none is, makes the
    /// caller the deliverer and hands the event back, to [`Job::deliver`] once the status lock is
    /// released.
    pub(super) fn hand(&mut self, told: Told) -> Option<Told> {
        if self.delivering {
            self.pending.get_or_insert_default().push(told);
            None
        } else {
            self.delivering = true;
            Some(told)
        }
    }
}

impl Job {
    /// Announces the job's creation, its first event. `publish` makes the job findable (inserts it
    /// into the table); changes made once it is found wait in the outbox until the creation is
    /// delivered.
    pub(crate) fn created(&self, seam: &Seam, publish: impl FnOnce()) {
        let event = self.event(JobEventKind::Created, &self.state.lock());
        publish();
        self.deliver(seam, Told::Created(event));
    }

    /// Announces that retention dropped the job, its last event.
    pub(crate) fn removed(&self, seam: &Seam) {
        let mut st = self.state.lock();
        let told = Told::Removed(self.event(JobEventKind::Removed, &st));
        let deliver = st.outbox.hand(told);
        drop(st);
        if let Some(told) = deliver {
            self.deliver(seam, told);
        }
    }

    /// Delivers `told`, then every event queued meanwhile, then wakes the waiters. Called only by
    /// the job's deliverer (see [`Outbox::hand`]), without the status lock.
    pub(super) fn deliver(&self, seam: &Seam, first: Told) {
        self.tell(seam, first);
        let wake = loop {
            let batch = {
                let mut st = self.state.lock();
                // Taken whole: the outbox is left unallocated again.
                let Some(batch) = st.outbox.pending.take() else {
                    st.outbox.delivering = false;
                    break if st.waiters > 0 {
                        st.changed.clone()
                    } else {
                        None
                    };
                };
                batch
            };
            for told in *batch {
                self.tell(seam, told);
            }
        };
        if let Some(changed) = wake {
            changed.notify_waiters();
        }
    }

    fn tell(&self, seam: &Seam, told: Told) {
        // The seam catches what observers and subscribers throw, but a metrics recorder is user
        // code too: whatever unwinds here must not leave the job without a deliverer, which would
        // hold back its events for ever.
        let result = catch_unwind(AssertUnwindSafe(|| match told {
            Told::Created(event) => seam.created(&event, self, self.name.as_deref()),
            Told::Changed(event, note) => seam.changed(&event, self, note),
            Told::Removed(event) => seam.removed(&event, self),
        }));
        if let Err(panic) = result {
            drop_quietly(panic);
        }
    }
}
