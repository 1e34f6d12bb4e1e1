//! A feed of this instance's jobs: the seam tells it which jobs changed, and it reads each at its
//! latest when it is taken.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::engine::{Engine, Scope};
use crate::id::IdHasher;
use crate::seam::Subscriber;
use crate::{AsynchronousJobStatus, JobId};

/// The changes of this instance's jobs in a scope.
pub(super) struct LocalFeed {
    engine: Arc<Engine>,
    user: Option<u64>,
    queue: Arc<FeedQueue>,
}

impl LocalFeed {
    pub(super) fn new(engine: Arc<Engine>, scope: Scope) -> Self {
        let user = scope.user();
        let queue = Arc::new(FeedQueue::default());
        engine.seam.subscribe(user, queue.clone());
        LocalFeed {
            engine,
            user,
            queue,
        }
    }

    /// See [`StatusFeed::next`](super::StatusFeed::next). Cancel safe.
    pub(super) async fn next(&self) -> Option<AsynchronousJobStatus> {
        next_change(&self.engine, &self.queue).await
    }

    /// How many jobs have changes not read yet.
    pub(super) fn pending(&self) -> usize {
        self.queue.len()
    }
}

/// The next change a feed has not read.
async fn next_change(engine: &Engine, queue: &FeedQueue) -> Option<AsynchronousJobStatus> {
    loop {
        let notified = queue.notify.notified();
        if let Some(status) = pop(engine, queue) {
            return Some(status);
        }
        if engine.is_shut_down() && engine.counts().processing == 0 {
            // Every job published its final status before it stopped counting as
            // PROCESSING: read what arrived since the queue was last seen empty.
            return pop(engine, queue);
        }
        notified.await;
    }
}

fn pop(engine: &Engine, queue: &FeedQueue) -> Option<AsynchronousJobStatus> {
    while let Some(id) = queue.pop() {
        let Some(status) = engine.feed_status(id) else {
            continue;
        };
        if let Some(version) = status.etag.version() {
            queue.delivered(id, version);
            // Dropped by retention meanwhile: its removal may have cleaned up before the line
            // above, so clean up again.
            if engine.feed_status(id).is_none() {
                queue.forget(id);
            }
        }
        return Some(status);
    }
    None
}

impl Drop for LocalFeed {
    fn drop(&mut self) {
        let queue: Arc<dyn Subscriber> = self.queue.clone();
        self.engine.seam.unsubscribe(self.user, &queue);
    }
}

/// The changes one feed has not read yet: at most one entry per job however often it changed
/// (the feed reads the latest status), in the order of each job's first unread change.
#[derive(Default)]
pub(crate) struct FeedQueue {
    pending: Mutex<Pending>,
    notify: Notify,
}

#[derive(Default)]
struct Pending {
    next_seq: u64,
    /// Unread jobs by the order of their first unread change, with the newest version published.
    order: BTreeMap<u64, (JobId, u64)>,
    index: HashMap<JobId, u64, BuildHasherDefault<IdHasher>>,
    /// The version of the status last returned for each job. A change is published just after it
    /// is made, so a reader can return a status before its own publication arrives; that
    /// publication must then not return the same status again. Entries leave with their job.
    delivered: HashMap<JobId, u64, BuildHasherDefault<IdHasher>>,
}

impl Subscriber for FeedQueue {
    fn changed(&self, id: JobId, version: u64) {
        if self.pending.lock().push(id, version) {
            self.notify.notify_one();
        }
    }

    fn removed(&self, id: JobId) {
        self.forget(id);
    }

    fn wake(&self) {
        self.notify.notify_one();
    }
}

impl FeedQueue {
    fn pop(&self) -> Option<JobId> {
        self.pending.lock().pop()
    }

    /// Forgets what the feed returned of a job that is gone from the registry.
    fn forget(&self, id: JobId) {
        self.pending.lock().remove(id);
    }

    /// Records that the feed returned the job's status at `version`.
    fn delivered(&self, id: JobId, version: u64) {
        let mut pending = self.pending.lock();
        let last = pending.delivered.entry(id).or_default();
        *last = (*last).max(version);
    }

    fn len(&self) -> usize {
        self.pending.lock().index.len()
    }
}

impl Pending {
    /// Whether the job was not pending yet (the reader needs waking).
    fn push(&mut self, id: JobId, version: u64) -> bool {
        if self.delivered.get(&id).is_some_and(|&last| last >= version) {
            return false;
        }
        if let Some(seq) = self.index.get(&id) {
            if let Some(entry) = self.order.get_mut(seq) {
                entry.1 = entry.1.max(version);
            }
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, (id, version));
        self.index.insert(id, seq);
        true
    }

    fn pop(&mut self) -> Option<JobId> {
        while let Some((_, (id, version))) = self.order.pop_first() {
            self.index.remove(&id);
            if self.delivered.get(&id).is_none_or(|&last| last < version) {
                return Some(id);
            }
        }
        None
    }

    fn remove(&mut self, id: JobId) {
        if let Some(seq) = self.index.remove(&id) {
            self.order.remove(&seq);
        }
        self.delivered.remove(&id);
    }
}

impl std::fmt::Debug for FeedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedQueue")
            .field("pending", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> JobId {
        JobId::from_u64(n)
    }

    #[test]
    fn a_job_is_pending_once_however_often_it_changes() {
        let mut pending = Pending::default();
        assert!(pending.push(id(1), 2), "first change wakes the reader");
        assert!(!pending.push(id(1), 3));
        assert!(pending.push(id(2), 2));
        assert_eq!(pending.pop(), Some(id(1)));
        assert_eq!(pending.pop(), Some(id(2)));
        assert_eq!(pending.pop(), None);
    }

    #[test]
    fn a_status_already_returned_is_not_returned_again() {
        let mut pending = Pending::default();
        pending.push(id(1), 3);
        pending.delivered.insert(id(1), 3);
        assert_eq!(
            pending.pop(),
            None,
            "its publication arrived after it was read"
        );
        assert!(!pending.push(id(1), 3));
        assert!(pending.push(id(1), 4));
        assert_eq!(pending.pop(), Some(id(1)));
    }

    #[test]
    fn a_removed_job_leaves_nothing_behind() {
        let mut pending = Pending::default();
        pending.push(id(1), 2);
        pending.delivered.insert(id(1), 1);
        pending.remove(id(1));
        assert!(pending.order.is_empty() && pending.index.is_empty());
        assert!(pending.delivered.is_empty());
    }
}
