//! The concurrency limit: at most `max` jobs run at once; the rest wait in submission order.
//!
//! A queued job is PROCESSING (as in Synapse, where a queued job is) with a progress message that
//! says so. The limiter hands a freed slot to the oldest queued job still waiting by applying
//! [`Change::Dequeued`] to it, which also wakes its supervisor. A job canceled while queued ends at
//! once and is skipped when its turn comes.
//!
//! Locks: the limiter's lock is never held while a job's lock is taken.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::job::{Applied, Change, Job};

pub(crate) struct Limiter {
    max: usize,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    running: usize,
    queue: VecDeque<Arc<Job>>,
}

impl Limiter {
    pub(crate) fn new(max: usize) -> Self {
        Limiter {
            max,
            state: Mutex::new(LimiterState {
                running: 0,
                queue: VecDeque::new(),
            }),
        }
    }

    pub(crate) fn queued_message(&self) -> String {
        match self.max {
            1 => "Queued: waiting for a free slot (1 job runs at a time)".to_owned(),
            max => format!("Queued: waiting for a free slot (at most {max} jobs run at once)"),
        }
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
    pub(crate) fn enqueue(&self, job: &Arc<Job>) {
        let mut st = self.state.lock();
        if st.running < self.max && st.queue.is_empty() {
            st.running += 1;
            drop(st);
            if job.apply(Change::Dequeued) != Applied::Changed {
                self.release();
            }
        } else {
            st.queue.push_back(job.clone());
        }
    }

    /// A job that held a slot finished: the slot goes to the oldest queued job still waiting.
    pub(crate) fn release(&self) {
        loop {
            let next = {
                let mut st = self.state.lock();
                match st.queue.pop_front() {
                    Some(job) => job,
                    None => {
                        st.running -= 1;
                        return;
                    }
                }
            };
            // A job that was canceled while queued gives up its turn.
            if next.apply(Change::Dequeued) == Applied::Changed {
                return;
            }
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}
