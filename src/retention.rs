//! How long finished statuses stay readable: a queue of finished jobs in the order they finished.
//!
//! Only finished jobs enter the queue, so live jobs are never dropped. The registry trims the
//! queue when a job finishes and when one starts, so memory is bounded by `keep_at_most` whatever
//! the load; a status older than `keep_for` that is still in the queue (nothing has started or
//! finished since it expired) is treated as gone by every lookup.
//!
//! Locks: the queue's lock is a leaf.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use crate::JobId;

pub(crate) struct Retention {
    keep_for: Duration,
    keep_at_most: usize,
    finished: Mutex<VecDeque<(Instant, JobId)>>,
}

impl Retention {
    pub(crate) fn new(keep_for: Duration, keep_at_most: usize) -> Self {
        Retention {
            keep_for,
            keep_at_most,
            finished: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether a job that finished at `finished_at` is past its retention time at `now`.
    pub(crate) fn expired(&self, finished_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(finished_at) >= self.keep_for
    }

    /// Records that `id` finished at `finished_at` (once per job). Jobs finish in the order of
    /// their finish times up to the lock; a job pushed out of order only expires a little late.
    pub(crate) fn push(&self, id: JobId, finished_at: Instant) {
        self.finished.lock().push_back((finished_at, id));
    }

    /// The oldest finished job that is past the count limit or the time limit, taken out of the
    /// queue; the caller drops it from the table.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<JobId> {
        let mut queue = self.finished.lock();
        match queue.front() {
            Some(&(at, id)) if queue.len() > self.keep_at_most || self.expired(at, now) => {
                queue.pop_front();
                Some(id)
            }
            _ => None,
        }
    }
}
