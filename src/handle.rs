//! What a running job holds: its way to report progress and to see cancellation.

use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::change::Change;
use crate::job::{Applied, Job};
use crate::seam::Seam;
use crate::text::truncate_chars;
use crate::{AsynchronousJobStatus, CancelCause, JobId, MAX_MESSAGE_CHARS};

/// A job's own handle, given to the closure passed to [`JobRegistry::spawn`]: the job reports
/// progress and sees cancellation through it.
///
/// Clones share the same job. A handle may outlive its job; once the job has finished, progress
/// reported through it is ignored.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let id = registry.spawn(JobRequest::default(), |job: JobHandle| async move {
///     for row in 0..100u64 {
///         if job.is_canceling() {
///             return Err(std::io::Error::other("canceled"));
///         }
///         job.set_progress(row, 100, "copying rows");
///         tokio::task::yield_now().await;
///     }
///     Ok(serde_json::json!({"rows": 100}))
/// }).await?;
/// let done = registry.wait(&id).await?;
/// assert_eq!(done.progress_current, Some(100));
/// # Ok(())
/// # }
/// ```
///
/// [`JobRegistry::spawn`]: crate::JobRegistry::spawn
#[derive(Clone)]
pub struct JobHandle {
    job: Arc<Job>,
    seam: Arc<Seam>,
    token: CancellationToken,
}

impl JobHandle {
    pub(crate) fn new(job: Arc<Job>, seam: Arc<Seam>, token: CancellationToken) -> Self {
        JobHandle { job, seam, token }
    }

    /// This job's id.
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The job's [name](crate::JobRequest::name), if its request gave one.
    pub fn name(&self) -> Option<&str> {
        self.job.name.as_deref()
    }

    /// The user who started this job, if one was given.
    pub fn started_by(&self) -> Option<u64> {
        self.job.user()
    }

    /// Reports progress: `current` out of `total` done, and what the job is doing. Returns whether
    /// the status changed.
    ///
    /// The message is cut to [`MAX_MESSAGE_CHARS`](crate::MAX_MESSAGE_CHARS) characters, and a NUL
    /// character in it is shown as U+FFFD (no status holds one: PostgreSQL cannot). Values are
    /// stored as given (`current` may exceed `total`). Reporting exactly what is already there
    /// changes nothing: neither the etag nor `changedOn` moves, and nothing is allocated. After
    /// the job has finished this does nothing and returns `false`.
    pub fn set_progress(&self, current: u64, total: u64, message: impl AsRef<str>) -> bool {
        // Cut before taking the job's lock, to keep it short.
        let message = truncate_chars(message.as_ref(), MAX_MESSAGE_CHARS);
        self.job.apply(
            &self.seam,
            Change::Progress {
                current,
                total,
                message,
            },
        ) == Applied::Changed
    }

    /// Whether the job has been asked to cancel (by [`JobRegistry::cancel`], a time limit, the
    /// registry's shutdown, or a lost lease in a shared store): whether its token fired. A job
    /// should stop at its next safe point and return an error.
    ///
    /// [`JobRegistry::cancel`]: crate::JobRegistry::cancel
    pub fn is_canceling(&self) -> bool {
        self.token.is_cancelled()
    }

    /// What asked the job to cancel (a request, the shutdown, a time limit, …), once its
    /// cancellation has been recorded; `None` while nothing has asked. A job can use it to say
    /// why it stopped, or to save its work before a shutdown but not before a user's cancel.
    pub fn cancel_cause(&self) -> Option<CancelCause> {
        self.job.cancel_cause()
    }

    /// Resolves when the job is asked to cancel; at once if it already was.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it only stops waiting.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// A new child of the job's cancellation token, for handing to code that takes one (e.g. to
    /// cancel a sub-task along with the job). It fires when the job is asked to cancel; canceling
    /// it cancels only what it was handed to, not the job.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// A snapshot of this job's status.
    pub fn status(&self) -> AsynchronousJobStatus {
        self.job.snapshot()
    }
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.job.id)
            .field("started_by", &self.job.user())
            .field("canceling", &self.is_canceling())
            .finish()
    }
}
