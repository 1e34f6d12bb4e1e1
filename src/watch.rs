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
#[derive(Debug)]
pub struct JobWatch {
    job: Arc<Job>,
    seen: Option<u64>,
    done: bool,
}

impl JobWatch {
    pub(crate) fn new(job: Arc<Job>) -> Self {
        JobWatch {
            job,
            seen: None,
            done: false,
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
        self.seen = status.etag.version();
        self.done = status.is_terminal();
        Some(status)
    }

    /// A snapshot of the job's status now, whether or not it changed.
    pub fn latest(&self) -> AsynchronousJobStatus {
        self.job.snapshot()
    }
}
