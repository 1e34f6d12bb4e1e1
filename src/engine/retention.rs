//! How long finished statuses stay readable: a queue of finished jobs in the order they finished.
//!
//! Only finished jobs enter the queue, so live jobs are never dropped. The registry trims the
//! queue when a job finishes and when one starts, so memory is bounded by `keep_at_most` whatever
//! the load; a status older than `keep_for` that is still in the queue (nothing has started or
//! finished since it expired) is treated as gone by every lookup.
//!
//! Locks: the queue's lock is a leaf.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use crate::JobId;

pub(crate) struct Retention {
    keep_for: Duration,
    keep_at_most: usize,
    /// Finish times in nanoseconds after `anchor` (8 bytes, not an `Instant`'s 16, per retained
    /// job), oldest first.
    finished: Mutex<VecDeque<(u64, JobId)>>,
    /// Copies of the queue's length and of its oldest entry's time (in nanoseconds after
    /// `anchor`), written under the lock, so that [`Retention::pop_due`] can tell "nothing due"
    /// without taking it: every spawn asks. A stale read only makes a sweep a little early or late.
    len: AtomicUsize,
    oldest: AtomicU64,
    anchor: Instant,
}

impl Retention {
    pub(crate) fn new(keep_for: Duration, keep_at_most: usize) -> Self {
        Retention {
            keep_for,
            keep_at_most,
            finished: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            oldest: AtomicU64::new(u64::MAX),
            anchor: Instant::now(),
        }
    }

    /// Whether a job that finished at `finished_at` is past its retention time at `now`.
    pub(crate) fn expired(&self, finished_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(finished_at) >= self.keep_for
    }

    /// Records that `id` finished at `finished_at` (once per job). Jobs finish in the order of
    /// their finish times up to the lock; a job pushed out of order only expires a little late.
    pub(crate) fn push(&self, id: JobId, finished_at: Instant) {
        let mut queue = self.finished.lock();
        queue.push_back((self.nanos(finished_at), id));
        self.publish(&queue);
    }

    fn publish(&self, queue: &VecDeque<(u64, JobId)>) {
        self.len.store(queue.len(), Ordering::Relaxed);
        let oldest = queue.front().map_or(u64::MAX, |&(at, _)| at);
        self.oldest.store(oldest, Ordering::Relaxed);
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.anchor).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The oldest finished job that is past the count limit or the time limit, taken out of the
    /// queue; the caller drops it from the table.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<JobId> {
        let len = self.len.load(Ordering::Relaxed);
        let keep_for = u64::try_from(self.keep_for.as_nanos()).unwrap_or(u64::MAX);
        let now = self.nanos(now);
        if len <= self.keep_at_most
            && now < self.oldest.load(Ordering::Relaxed).saturating_add(keep_for)
        {
            return None;
        }
        let mut queue = self.finished.lock();
        let due = match queue.front() {
            Some(&(at, id))
                if queue.len() > self.keep_at_most || now.saturating_sub(at) >= keep_for =>
            {
                queue.pop_front();
                Some(id)
            }
            _ => None,
        };
        self.publish(&queue);
        due
    }
}
