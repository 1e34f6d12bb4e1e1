//! The registry: starts jobs and answers for them.

use std::error::Error as StdError;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::job::{Applied, Change, Job};
use crate::retention::Retention;
use crate::supervisor::{panicked, Supervisor};
use crate::table::Table;
use crate::{
    AsynchronousJobStatus, CancelOutcome, Error, JobHandle, JobId, JobRegistryBuilder, JobRequest,
    UserView,
};

/// Starts jobs on tokio and keeps their statuses: the trusted, administrator view of every job.
///
/// `Clone` is cheap, and clones share one registry. Each job runs as one tokio task; its status
/// can be read at any time through [`status`](JobRegistry::status), from any thread, without
/// waiting for the job.
///
/// Dropping the last clone does not stop running jobs: each job keeps what it needs and finishes
/// as usual; its status is then gone with the registry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use asyncjobs::{AsynchJobState, JobHandle, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let id = registry.spawn(
///     JobRequest::new(serde_json::json!({"concreteType": "org.example.ExportRequest"})).started_by(42),
///     |job: JobHandle| async move {
///         job.set_progress(10, 100, "reading");
///         Ok::<_, std::io::Error>(serde_json::json!({"rows": 10}))
///     },
/// )?;
/// let done = registry.wait(&id).await?;
/// assert_eq!(done.job_state, AsynchJobState::Complete);
/// assert_eq!(done.response_body.as_deref(), Some(&serde_json::json!({"rows": 10})));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JobRegistry {
    shared: Arc<Shared>,
}

/// What every clone of a registry, and every job's task, shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    table: Table,
    retention: Retention,
    next_id: AtomicU64,
    root: CancellationToken,
    shut_down: AtomicBool,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) cancel_grace: Duration,
    pub(crate) runtime: Option<Handle>,
}

impl Shared {
    /// Called once per job, after it finished.
    pub(crate) fn retire(&self, job: &Job) {
        self.retention.push(job.id, &self.table);
    }
}

impl JobRegistry {
    /// A registry with every option at its default; see [`JobRegistryBuilder`].
    pub fn new() -> Self {
        JobRegistryBuilder::new().build()
    }

    /// A builder to set options.
    pub fn builder() -> JobRegistryBuilder {
        JobRegistryBuilder::new()
    }

    pub(crate) fn from_parts(
        config: Config,
        keep_for: Duration,
        keep_at_most: usize,
        first_id: u64,
    ) -> Self {
        // Enough shards that threads rarely meet on one, as in sharded caches: 4 per core.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        JobRegistry {
            shared: Arc::new(Shared {
                config,
                table: Table::new(cores * 4),
                retention: Retention::new(keep_for, keep_at_most),
                next_id: AtomicU64::new(first_id),
                root: CancellationToken::new(),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// Starts a job: calls `job` with the job's [`JobHandle`] and runs the future it returns as a
    /// tokio task. The job is PROCESSING from the moment this returns.
    ///
    /// When the future returns `Ok(r)`, the job ends COMPLETE with `r` serialized as its
    /// `responseBody`; `Err(e)` ends it FAILED with `e`'s message, its `source()` chain and its
    /// type name; a panic ends it FAILED with the panic's message. `job` itself is called here,
    /// before `spawn` returns; if it panics, the job ends FAILED the same way.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after the registry was shut down; [`Error::NoRuntime`] when called
    /// outside a tokio runtime and the registry has none of its own.
    pub fn spawn<F, Fut, R, E>(&self, request: JobRequest, job: F) -> Result<JobId, Error>
    where
        F: FnOnce(JobHandle) -> Fut,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let shared = &self.shared;
        if shared.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let runtime = match &shared.config.runtime {
            Some(runtime) => runtime.clone(),
            None => Handle::try_current().map_err(|_| Error::NoRuntime)?,
        };
        // Sweep before adding, so a busy registry never holds more than its limits.
        shared.retention.sweep(&shared.table);

        let id = JobId::from_u64(shared.next_id.fetch_add(1, Ordering::Relaxed));
        let token = shared.root.child_token();
        let entry = Arc::new(Job::new(id, request, token.clone()));
        shared.table.insert(entry.clone());

        let handle = JobHandle::new(entry.clone(), token.clone());
        match catch_unwind(AssertUnwindSafe(move || job(handle))) {
            Ok(future) => {
                let supervisor = Supervisor {
                    shared: shared.clone(),
                    job: entry,
                    token,
                };
                // If the runtime is shutting down the task is dropped unpolled, and the
                // supervisor's `Drop` ends the job.
                drop(runtime.spawn(supervisor.run(future)));
            }
            Err(panic) => {
                entry.apply(Change::Fail(panicked(panic)));
                shared.retire(&entry);
            }
        }
        Ok(id)
    }

    /// A snapshot of the job's status, at any time.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known (never started here, or its finished status
    /// was dropped by retention).
    pub fn status(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        Ok(self.find(id)?.snapshot())
    }

    /// Asks the job to cancel: sets `jobCanceling` at once (a new etag) and fires the job's
    /// cancellation token. A job that does not stop within the
    /// [cancel grace](JobRegistryBuilder::cancel_grace) is stopped and ends FAILED.
    /// Says whether anything changed; canceling a finished job changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known.
    pub fn cancel(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        Ok(request_cancel(&*self.find(id)?))
    }

    /// Waits until the job has finished and returns its final status; at once if it already has.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known when called. Once waiting, the final status
    /// is returned even if retention drops it meanwhile.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn wait(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        let job = self.find(id)?;
        Ok(job.finished().await)
    }

    /// A view of this registry scoped to one user: it reads, waits for and cancels only jobs that
    /// user started, and starts jobs as that user.
    pub fn as_user(&self, user_id: u64) -> UserView {
        UserView::new(self.clone(), user_id)
    }

    /// How many jobs the registry holds: running ones and retained finished ones.
    pub fn len(&self) -> usize {
        self.shared.table.len()
    }

    /// Whether the registry holds no job.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The job, if known and not past its retention time.
    pub(crate) fn find(&self, id: &JobId) -> Result<Arc<Job>, Error> {
        let job = self.shared.table.get(*id).ok_or(Error::UnknownJob(*id))?;
        if let Some(finished_at) = job.finished_at() {
            if self.shared.retention.expired(finished_at, Instant::now()) {
                self.shared.retention.sweep(&self.shared.table);
                return Err(Error::UnknownJob(*id));
            }
        }
        Ok(job)
    }
}

pub(crate) fn request_cancel(job: &Job) -> CancelOutcome {
    match job.apply(Change::Canceling) {
        Applied::Changed => CancelOutcome::Requested,
        Applied::Unchanged => CancelOutcome::AlreadyRequested,
        Applied::AlreadyFinished => CancelOutcome::AlreadyFinished,
    }
}

impl Default for JobRegistry {
    fn default() -> Self {
        JobRegistry::new()
    }
}

impl std::fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRegistry")
            .field("jobs", &self.shared.table.len())
            .field("finished_retained", &self.shared.retention.len())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
