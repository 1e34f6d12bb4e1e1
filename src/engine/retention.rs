//! How long finished statuses stay readable: a queue of finished jobs in the order they finished.
//!
//! Only finished jobs enter the queue, so live jobs are never dropped. The registry trims the
//! queue when a job finishes and when one starts, so memory is bounded by `keep_at_most` whatever
//! the load; a status older than `keep_for` that is still in the queue (nothing has started or
//! finished since it expired) is treated as gone by every lookup.
//!
//! Locks: nothing is locked under the queue's lock (see the [lock order](crate::engine#lock-order)).

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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> JobId {
        JobId::from_u64(n)
    }

    #[test]
    fn the_count_limit_drops_the_oldest_first() {
        let retention = Retention::new(Duration::from_secs(3600), 2);
        let now = Instant::now();
        for n in 1..=4 {
            retention.push(id(n), now);
        }
        assert_eq!(retention.pop_due(now), Some(id(1)));
        assert_eq!(retention.pop_due(now), Some(id(2)));
        assert_eq!(retention.pop_due(now), None, "two may stay");
    }

    #[test]
    fn the_time_limit_drops_only_what_is_old_enough() {
        let keep_for = Duration::from_secs(10);
        let retention = Retention::new(keep_for, usize::MAX);
        let start = Instant::now();
        retention.push(id(1), start);
        retention.push(id(2), start + Duration::from_secs(5));
        assert_eq!(retention.pop_due(start + Duration::from_secs(9)), None);
        assert!(!retention.expired(start, start + Duration::from_secs(9)));
        assert!(retention.expired(start, start + keep_for));
        let later = start + Duration::from_secs(12);
        assert_eq!(retention.pop_due(later), Some(id(1)));
        assert_eq!(retention.pop_due(later), None);
        assert_eq!(
            retention.pop_due(later + Duration::from_secs(3)),
            Some(id(2))
        );
    }

    #[test]
    fn keeping_none_drops_each_as_it_finishes() {
        let retention = Retention::new(Duration::from_secs(3600), 0);
        let now = Instant::now();
        retention.push(id(7), now);
        assert_eq!(retention.pop_due(now), Some(id(7)));
        assert_eq!(retention.pop_due(now), None);
    }
}
