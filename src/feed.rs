//! Following every job's changes.

use std::sync::Arc;

use crate::hub::FeedQueue;
use crate::{AsynchronousJobStatus, JobRegistry};

/// Follows the changes of every job in a registry (or, from a [`UserView`](crate::UserView), of
/// one user's jobs), from [`JobRegistry::watch_all`].
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
/// present, open the feed first and then [`list`](JobRegistry::list); a job may then show up in
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
/// })?;
/// registry.wait(&id).await?;
/// // A start and two changes (progress, then complete) while nobody read: one entry, at its latest.
/// let status = feed.next().await.expect("the registry is running");
/// assert!(status.is_terminal());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct StatusFeed {
    registry: JobRegistry,
    queue: Arc<FeedQueue>,
}

impl StatusFeed {
    pub(crate) fn new(registry: JobRegistry, user: Option<u64>) -> Self {
        let queue = registry.shared.hub.subscribe(user);
        StatusFeed { registry, queue }
    }

    /// The latest status of the next job that changed; waits for a change if none is pending.
    /// Returns `None` once the registry has been [shut down](JobRegistry::shutdown), every job
    /// has finished and every change has been read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped before it resolves, no change is lost.
    pub async fn next(&mut self) -> Option<AsynchronousJobStatus> {
        loop {
            let notified = self.queue.notify.notified();
            if let Some(status) = self.pop() {
                return Some(status);
            }
            if self.registry.is_shut_down() && self.registry.counts().processing == 0 {
                // Every job published its final status before it stopped counting as
                // PROCESSING: read what arrived since the queue was last seen empty.
                return self.pop();
            }
            notified.await;
        }
    }

    fn pop(&self) -> Option<AsynchronousJobStatus> {
        while let Some(id) = self.queue.pop() {
            let Ok(job) = self.registry.lookup(&id) else {
                continue;
            };
            let Ok(status) = self.registry.snapshot(&job) else {
                continue;
            };
            if let Some(version) = status.etag.version() {
                self.queue.delivered(id, version);
                // Dropped by retention meanwhile: its eviction may have cleaned up before the
                // line above, so clean up again.
                if self.registry.lookup(&id).is_err() {
                    self.queue.forget(id);
                }
            }
            return Some(status);
        }
        None
    }

    /// How many jobs have changes not read yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

impl Drop for StatusFeed {
    fn drop(&mut self) {
        self.registry.shared.hub.unsubscribe(&self.queue);
    }
}

impl std::fmt::Debug for FeedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedQueue")
            .field("pending", &self.len())
            .finish_non_exhaustive()
    }
}
