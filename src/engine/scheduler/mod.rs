//! The scheduler: which jobs run under the registry's concurrency limits, and in what order the
//! rest start.
//!
//! - [`max_running`](crate::JobRegistryBuilder::max_running) bounds the jobs running at once, and
//!   [`max_running_per_user`](crate::JobRegistryBuilder::max_running_per_user) those of one user
//!   (jobs with no user count as one user).
//! - Without the fair order, waiting jobs form one queue: higher
//!   [priority](crate::JobRequest::priority) first, then FIFO; they all show one fixed message.
//! - With it ([`fair_queue`](crate::JobRegistryBuilder::fair_queue), or implied by a per-user
//!   limit), each user has a queue ordered so, and free slots go round-robin across the users
//!   with a job waiting and under their limit. A waiting job's message shows its place in its
//!   user's queue ([`Place`]).
//!
//! The rules and their invariants are in [`queues`]; this file holds them under a lock and carries
//! out what they decide: a job given a slot leaves the queue through [`Change::Dequeued`] (which
//! also wakes its supervisor), a job that moved shows its new place through
//! [`Change::Placed`]. A job that is being canceled does not take the slot it is handed; the slot
//! goes on to the next job. A job canceled while waiting ends at once and leaves its queue
//! ([`Scheduler::remove`]), so the queues hold only jobs still waiting. A shutdown closes the
//! scheduler before anything else ([`Scheduler::close`]): no waiting job is handed a slot after
//! that, and the queues are emptied at once, so ending each waiting job costs O(1).
//!
//! **What a move costs.** A waiting job shows how many of its user's jobs are ahead of it, not
//! where it stands among every user's jobs: with round-robin, a job's global position changes
//! whenever any user's queue does, so keeping it shown would rewrite every waiting job's message on
//! every start, O(queue) per move. A user's own count changes only when that user's queue moves,
//! and it is shown exactly up to 4 and in steps of 5, 10, 20, 50, 100, … beyond, so a move
//! rewrites only the messages that change: at most 5, plus one per step from 10 up to the queue's
//! length (8 for a queue of 100, 11 for 1,000), whatever else waits. Each rewrite is one change of
//! that job (a new etag, so long-polls see it), with a message made once per registry and shared.
//!
//! Locks: the scheduler's lock comes after the table's shards in the
//! [lock order](crate::engine#lock-order), and no lock is taken while it is held: every change of a job it decides on is applied after it is released.
//! Changes decided by two threads may then be applied in either order; a stamp per waiting job
//! makes its latest place win ([`Change::Placed`] carries it).

mod place;
mod queues;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::change::Change;
use crate::job::{Applied, Job};
use crate::seam::Seam;

use self::place::{Place, Texts};
use self::queues::{Effects, Queues};

pub(crate) struct Scheduler {
    max: Option<usize>,
    /// Without the fair order, the one message of every waiting job.
    fifo_message: Arc<str>,
    /// With the fair order, every message a place can show.
    texts: Option<Texts>,
    queues: Mutex<Queues<Arc<Job>>>,
    /// How many jobs wait, readable without the lock (for counts).
    waiting: AtomicUsize,
}

/// A new job that must wait, and the message it is created with.
pub(crate) struct Ticket {
    place: Place,
    pub(crate) message: Arc<str>,
}

impl Scheduler {
    /// Bounds of `max` running jobs and `per_user` of one user (`0` is taken as `1`); the fair
    /// order when `fair` or when there is a per-user bound.
    pub(crate) fn new(max: Option<usize>, per_user: Option<usize>, fair: bool) -> Self {
        let max = max.map(|max| max.max(1));
        let per_user = per_user.map(|n| n.max(1));
        let fair = fair || per_user.is_some();
        let fifo_message = match max {
            Some(1) => "Queued: waiting for a free slot (1 job runs at a time)".to_owned(),
            Some(max) => {
                format!("Queued: waiting for a free slot (at most {max} jobs run at once)")
            }
            None => "Queued: waiting for a free slot".to_owned(),
        };
        Scheduler {
            max,
            fifo_message: Arc::from(fifo_message),
            texts: fair.then(|| Texts::new(max, per_user)),
            queues: Mutex::new(Queues::new(
                max.unwrap_or(usize::MAX),
                per_user.unwrap_or(usize::MAX),
                fair,
            )),
            waiting: AtomicUsize::new(0),
        }
    }

    fn message(&self, user: Option<u64>, place: Place) -> Arc<str> {
        match &self.texts {
            Some(texts) => texts.get(user.is_none(), place),
            None => self.fifo_message.clone(),
        }
    }

    /// Takes a slot for a new job if one is free for it; otherwise the job must wait, created
    /// with the ticket's message and then [`enqueue`](Scheduler::enqueue)d.
    pub(crate) fn try_acquire(&self, user: Option<u64>, priority: i32) -> Result<(), Ticket> {
        let acquired = self.queues.lock().try_acquire(user, priority);
        acquired.map_err(|place| Ticket {
            place,
            message: self.message(user, place),
        })
    }

    /// Queues a job created waiting. If a slot came free for it meanwhile, it starts at once.
    pub(crate) fn enqueue(&self, seam: &Seam, job: &Arc<Job>, priority: i32, ticket: Ticket) {
        let mut effects = Effects::default();
        {
            let mut queues = self.queues.lock();
            queues.enqueue(
                job.id,
                job.user(),
                priority,
                job.clone(),
                ticket.place,
                &mut effects,
            );
            self.waiting.store(queues.waiting(), Ordering::Relaxed);
        }
        self.carry_out(seam, effects);
    }

    /// A job that held a slot ended: the slot goes to the next job waiting, by the rules.
    pub(crate) fn release(&self, seam: &Seam, job: &Job) {
        let mut effects = Effects::default();
        {
            let mut queues = self.queues.lock();
            queues.release(job.user(), &mut effects);
            self.waiting.store(queues.waiting(), Ordering::Relaxed);
        }
        self.carry_out(seam, effects);
    }

    /// A job that ended while waiting leaves its queue at once; the jobs behind it move up.
    pub(crate) fn remove(&self, seam: &Seam, job: &Job) {
        let mut effects = Effects::default();
        let removed = {
            let mut queues = self.queues.lock();
            let removed = queues.remove(job.id, &mut effects);
            self.waiting.store(queues.waiting(), Ordering::Relaxed);
            removed
        };
        // Dropped outside the lock.
        drop(removed);
        self.carry_out(seam, effects);
    }

    /// For a shutdown: from now on no waiting job gets a slot (each is ended where it waits),
    /// and places are no longer shown.
    pub(crate) fn close(&self) {
        let gone = self.queues.lock().close();
        // Dropped outside the lock.
        drop(gone);
    }

    /// Shows the places decided, then starts the job given a slot, if any. A job being canceled
    /// does not take the slot (its supervisor ends it): the slot goes on to the next job.
    fn carry_out(&self, seam: &Seam, mut effects: Effects<Arc<Job>>) {
        loop {
            for show in effects.shows.drain(..) {
                let message = self.message(show.group, show.place);
                show.job.apply(
                    seam,
                    Change::Placed {
                        message,
                        stamp: show.stamp,
                    },
                );
            }
            let Some(job) = effects.start.take() else {
                return;
            };
            if job.apply(seam, Change::Dequeued) == Applied::Changed {
                return;
            }
            let mut queues = self.queues.lock();
            queues.release(job.user(), &mut effects);
            self.waiting.store(queues.waiting(), Ordering::Relaxed);
        }
    }

    /// How many jobs wait for a slot.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(crate) fn max(&self) -> Option<usize> {
        self.max
    }
}
