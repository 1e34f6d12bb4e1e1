//! Following every job's changes.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::engine::{Engine, Scope};
use crate::id::IdHasher;
use crate::seam::Subscriber;
use crate::{AsynchronousJobStatus, JobId};

/// Follows the changes of every job in a registry (or, from a [`UserView`](crate::UserView), of
/// one user's jobs), from [`JobRegistry::watch_all`](crate::JobRegistry::watch_all).
///
/// Each [`next`](StatusFeed::next) returns the latest status of a job that started or changed
/// since the feed last returned it, and never the same status twice. A slow reader is never sent a backlog: however often a job changed while the
/// feed was not read, it is pending once and read at its latest (conflation), so the feed holds at
/// most one entry per job, and a job dropped by retention leaves the feed too: a reader slower than
/// the retention limits can miss a job's final status, which the job's id then no longer finds
/// either. Jobs are returned
/// in the order of their first unread change. Publishing to a feed never waits for its reader, so
/// no feed slows a job's `set_progress`.
///
/// A feed starts empty: it sees jobs started and changed from its creation on. To start from the
/// present, open the feed first and then [`list`](crate::JobRegistry::list); a job may then show up in
/// both.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let mut feed = registry.watch_all();
/// let id = registry.spawn(JobRequest::default(), |job: JobHandle| async move {
///     job.set_progress(1, 2, "half way");
///     Ok::<_, std::io::Error>(())
/// }).await?;
/// registry.wait(&id).await?;
/// // A start and two changes (progress, then complete) while nobody read: one entry, at its latest.
/// let status = feed.next().await.expect("the registry is running");
/// assert!(status.is_terminal());
/// # Ok(())
/// # }
/// ```
pub struct StatusFeed {
    engine: Arc<Engine>,
    user: Option<u64>,
    queue: Arc<FeedQueue>,
    /// The `Stream`'s item under way.
    next: Option<NextChange>,
}

type NextChange = std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<AsynchronousJobStatus>> + Send + Sync>,
>;

impl StatusFeed {
    pub(crate) fn new(engine: Arc<Engine>, scope: Scope) -> Self {
        let user = match scope {
            Scope::All => None,
            Scope::User(user) => Some(user),
        };
        let queue = Arc::new(FeedQueue::default());
        engine.seam.subscribe(user, queue.clone());
        StatusFeed {
            engine,
            user,
            queue,
            next: None,
        }
    }

    /// The latest status of the next job that changed; waits for a change if none is pending.
    /// Returns `None` once the registry has been [shut down](crate::JobRegistry::shutdown), every job
    /// has finished and every change has been read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped before it resolves, no change is lost.
    pub async fn next(&mut self) -> Option<AsynchronousJobStatus> {
        next_change(&self.engine, &self.queue).await
    }

    /// How many jobs have changes not read yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

/// The next change a feed has not read; see [`StatusFeed::next`]. A free function over shared
/// parts, so that a `Stream` can own the future.
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

mod stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::{next_change, StatusFeed};
    use crate::AsynchronousJobStatus;

    /// A [`StatusFeed`] is a `Stream` of statuses: each item is what
    /// [`next`](StatusFeed::next) would return, and the stream ends when `next` would return
    /// `None`. Dropping it between items loses no change.
    impl futures_core::Stream for StatusFeed {
        type Item = AsynchronousJobStatus;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = &mut *self;
            let next = this.next.get_or_insert_with(|| {
                let (engine, queue) = (this.engine.clone(), this.queue.clone());
                Box::pin(async move { next_change(&engine, &queue).await })
            });
            let item = std::task::ready!(next.as_mut().poll(cx));
            this.next = None;
            Poll::Ready(item)
        }
    }
}

impl Drop for StatusFeed {
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

impl std::fmt::Debug for StatusFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusFeed")
            .field("user", &self.user)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
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
