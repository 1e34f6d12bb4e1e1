//! The concurrency limit: at most `max` jobs run at once; the rest wait in submission order.
//!
//! A queued job is PROCESSING (as in Synapse, where a queued job is) with a progress message that
//! says so. The limiter hands a freed slot to the oldest queued job still waiting by applying
//! [`Change::Dequeued`] to it, which also wakes its supervisor. A job canceled while queued ends at
//! once and leaves the queue ([`Limiter::remove`]), so the queue holds only jobs still waiting.
//!
//! Locks: the limiter's lock is never held while a job's lock is taken.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::change::Change;
use crate::job::{Applied, Job};
use crate::seam::Seam;
use crate::JobId;

pub(crate) struct Limiter {
    max: usize,
    queued_message: Arc<str>,
    state: Mutex<LimiterState>,
}

#[derive(Default)]
struct LimiterState {
    running: usize,
    next_seq: u64,
    /// Waiting jobs in submission order, and where each one is, so one can leave from the middle.
    queue: BTreeMap<u64, Arc<Job>>,
    index: HashMap<JobId, u64>,
}

impl Limiter {
    pub(crate) fn new(max: usize) -> Self {
        let queued_message = match max {
            1 => "Queued: waiting for a free slot (1 job runs at a time)".to_owned(),
            max => format!("Queued: waiting for a free slot (at most {max} jobs run at once)"),
        };
        Limiter {
            max,
            queued_message: Arc::from(queued_message),
            state: Mutex::default(),
        }
    }

    pub(crate) fn queued_message(&self) -> Arc<str> {
        self.queued_message.clone()
    }

    /// Takes a slot if one is free and nobody is queued for it.
    pub(crate) fn try_acquire(&self) -> bool {
        let mut st = self.state.lock();
        if st.running < self.max && st.queue.is_empty() {
            st.running += 1;
            true
        } else {
            false
        }
    }

    /// Queues a job that was created queued. If every slot was freed meanwhile and nobody is
    /// ahead of it, it gets a slot at once.
    pub(crate) fn enqueue(&self, seam: &Seam, job: &Arc<Job>) {
        let mut st = self.state.lock();
        if st.running < self.max && st.queue.is_empty() {
            st.running += 1;
            drop(st);
            if job.apply(seam, Change::Dequeued) != Applied::Changed {
                self.release(seam);
            }
        } else {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.queue.insert(seq, job.clone());
            st.index.insert(job.id, seq);
        }
    }

    /// A job that ended while queued leaves the queue.
    pub(crate) fn remove(&self, id: JobId) {
        let removed = {
            let mut st = self.state.lock();
            let seq = st.index.remove(&id);
            seq.and_then(|seq| st.queue.remove(&seq))
        };
        // Dropped outside the lock.
        drop(removed);
    }

    /// A job that held a slot finished: the slot goes to the oldest queued job still waiting.
    pub(crate) fn release(&self, seam: &Seam) {
        loop {
            let next = {
                let mut st = self.state.lock();
                match st.queue.pop_first() {
                    Some((_, job)) => {
                        st.index.remove(&job.id);
                        job
                    }
                    None => {
                        st.running -= 1;
                        return;
                    }
                }
            };
            // A job being canceled does not take the slot; its supervisor ends it.
            if next.apply(seam, Change::Dequeued) == Applied::Changed {
                return;
            }
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}
