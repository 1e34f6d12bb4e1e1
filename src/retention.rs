//! How long finished statuses stay readable: a queue of finished jobs in the order they finished.
//!
//! Only finished jobs enter the queue, so live jobs are never dropped. The queue is trimmed when a
//! job finishes and when one starts, so memory is bounded by `keep_at_most` whatever the load; a
//! status older than `keep_for` that is still in the queue (nothing has started or finished since
//! it expired) is treated as gone by every lookup.
//!
//! Lock order: the queue's lock, then a table shard's lock (to remove an evicted job).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use crate::table::Table;
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

    /// Records that `id` finished (at most once per job), then drops what the rules say to drop.
    pub(crate) fn push(&self, id: JobId, table: &Table) {
        self.finished.lock().push_back((Instant::now(), id));
        self.sweep(table);
    }

    /// Drops finished jobs past the count limit or older than the time limit.
    pub(crate) fn sweep(&self, table: &Table) {
        let now = Instant::now();
        loop {
            let evicted = {
                let mut queue = self.finished.lock();
                match queue.front() {
                    Some(&(at, id)) if queue.len() > self.keep_at_most || self.expired(at, now) => {
                        queue.pop_front();
                        table.remove(id)
                    }
                    _ => return,
                }
            };
            // Dropped here, outside every lock: the last reference frees the job's bodies.
            drop(evicted);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.finished.lock().len()
    }
}
