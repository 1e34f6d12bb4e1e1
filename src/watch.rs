//! Following one job's status.

use std::sync::Arc;

use crate::job::Job;
use crate::AsynchronousJobStatus;

/// Follows one job's status as it changes, from [`JobRegistry::watch`](crate::JobRegistry::watch).
///
/// The first [`next`](JobWatch::next) returns the current status at once; each later one waits
/// until the status has changed since the last one returned, and returns it at its latest (a slow
/// reader skips intermediate statuses rather than queueing them). After it has returned the final
/// status, `next` returns `None`. Watching never slows the job.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let id = registry.spawn(JobRequest::default(), |job: JobHandle| async move {
///     for i in 1..=3u64 {
///         job.set_progress(i, 3, "working");
///         tokio::task::yield_now().await;
///     }
///     Ok::<_, std::io::Error>(())
/// })?;
/// let mut watch = registry.watch(&id)?;
/// while let Some(status) = watch.next().await {
///     println!("{} {:?}/{:?}", status.job_state, status.progress_current, status.progress_total);
/// }
/// # Ok(())
/// # }
/// ```
pub struct JobWatch {
    job: Arc<Job>,
    seen: Option<u64>,
    done: bool,
    /// The `Stream`'s item under way.
    next: Option<NextStatus>,
}

type NextStatus =
    std::pin::Pin<Box<dyn std::future::Future<Output = AsynchronousJobStatus> + Send + Sync>>;

impl std::fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWatch")
            .field("job", &self.job.id)
            .field("seen", &self.seen)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl JobWatch {
    pub(crate) fn new(job: Arc<Job>) -> Self {
        JobWatch {
            job,
            seen: None,
            done: false,
            next: None,
        }
    }

    /// The next status: the current one on the first call, then the latest after each change;
    /// `None` after the final status was returned.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped before it resolves, the next call returns the change instead.
    pub async fn next(&mut self) -> Option<AsynchronousJobStatus> {
        if self.done {
            return None;
        }
        let status = self.job.changed_from(self.seen).await;
        self.returned(&status);
        Some(status)
    }

    /// Records what [`next`](JobWatch::next) returned.
    fn returned(&mut self, status: &AsynchronousJobStatus) {
        self.seen = status.etag.version();
        self.done = status.is_terminal();
    }

    /// A snapshot of the job's status now, whether or not it changed.
    pub fn latest(&self) -> AsynchronousJobStatus {
        self.job.snapshot()
    }
}

/// A [`JobWatch`] is a `Stream` of the job's statuses: the current one, then
/// the latest after each change, ending after the final one, as [`next`](JobWatch::next).
impl futures_core::Stream for JobWatch {
    type Item = AsynchronousJobStatus;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return std::task::Poll::Ready(None);
        }
        let next = this.next.get_or_insert_with(|| {
            let (job, seen) = (this.job.clone(), this.seen);
            Box::pin(async move { job.changed_from(seen).await })
        });
        let status = std::task::ready!(next.as_mut().poll(cx));
        this.next = None;
        this.returned(&status);
        std::task::Poll::Ready(Some(status))
    }
}
