//! The registry: starts jobs and answers for them.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::builder::JobRegistryBuilder;
use crate::engine::{Engine, Scope};
use crate::names;
use crate::{
    AsynchronousJobStatus, CancelOutcome, Error, Etag, JobCounts, JobFilter, JobHandle, JobId,
    JobRequest, JobWatch, ShutdownSummary, Spawned, StatusFeed, UserView,
};

/// Starts jobs on tokio and keeps their statuses: the trusted, administrator view of every job.
///
/// `Clone` is cheap, and clones share one registry. Each job runs as one tokio task; its status
/// can be read at any time through [`status`](JobRegistry::status), from any thread, without
/// waiting for the job.
///
/// Dropping the last clone does not stop running jobs: each job's task keeps the registry's
/// shared state alive, runs to its end as usual (cancel grace, time limits and the concurrency
/// limit still apply), and the state is freed when the last job ends. To stop jobs, call
/// [`shutdown`](JobRegistry::shutdown) first.
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
    engine: Arc<Engine>,
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

    fn from_builder(builder: JobRegistryBuilder) -> Self {
        JobRegistry {
            engine: Engine::new(builder.into_config()),
        }
    }

    /// Starts a job: calls `job` with the job's [`JobHandle`] and runs the future it returns as a
    /// tokio task. The job is PROCESSING from the moment this returns (queued, if the
    /// [concurrency limit](JobRegistryBuilder::max_running) is reached).
    ///
    /// When the future returns `Ok(r)`, the job ends COMPLETE with `r` serialized as its
    /// `responseBody`; `Err(e)` ends it FAILED with `e`'s message, its `source()` chain and its
    /// type name; a panic ends it FAILED with the panic's message. `job` itself is called here,
    /// before `spawn` returns; if it panics, the job ends FAILED the same way. For a
    /// [cacheable](JobRequest::cacheable) request equal to an earlier one, `job` is not called and
    /// the earlier job's id is returned.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after [`shutdown`](JobRegistry::shutdown) began; [`Error::NoRuntime`]
    /// when called outside a tokio runtime and the registry has none of its own.
    pub fn spawn<F, Fut, R, E>(&self, request: JobRequest, job: F) -> Result<JobId, Error>
    where
        F: FnOnce(JobHandle) -> Fut,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.engine.spawn(request, job).map(Spawned::id)
    }

    /// Starts a job as [`spawn`](JobRegistry::spawn) does, and says whether it started one or answered a
    /// [cacheable](JobRequest::cacheable) request with an earlier equal one's job (so that an
    /// application can tell its user "already running" or "already done").
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use asyncjobs::{JobRegistry, JobRequest, Spawned};
    ///
    /// let registry = JobRegistry::new();
    /// let query = || JobRequest::new(serde_json::json!({"sql": "select 1"})).started_by(7).cacheable();
    /// let first = registry.submit(query(), |_job| async { Ok::<_, std::io::Error>(1) })?;
    /// let again = registry.submit(query(), |_job| async { Ok::<_, std::io::Error>(1) })?;
    /// assert!(matches!(first, Spawned::Started(_)));
    /// assert_eq!(again, Spawned::Reused(first.id()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](JobRegistry::spawn).
    pub fn submit<F, Fut, R, E>(&self, request: JobRequest, job: F) -> Result<Spawned, Error>
    where
        F: FnOnce(JobHandle) -> Fut,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.engine.spawn(request, job)
    }

    /// Starts a job as [`submit`](JobRegistry::submit) does, with request caching across every
    /// instance that shares this registry's [store](crate::JobRegistryBuilder::store): a
    /// [cacheable](JobRequest::cacheable) request equal to one the same user sent to any
    /// instance is answered with that job (running and not being canceled, or COMPLETE within
    /// [`keep_finished_for`](crate::JobRegistryBuilder::keep_finished_for)), and equal requests
    /// sent to several instances at once start one job. The HTTP front starts its jobs so.
    ///
    /// Without a store, or for a request that is not cacheable, this is `submit`. With one, a
    /// cacheable request is looked up in this instance first, then in the store: one round trip,
    /// and for a request no job answers, a second one to record the new job. If the store cannot
    /// be reached, the job is not refused: the request is answered from this instance's jobs
    /// alone, as without a store, and a warning is logged.
    ///
    /// # Errors
    ///
    /// As [`spawn`](JobRegistry::spawn).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may leave the job started but not found by equal
    /// requests on other instances; it never blocks them.
    pub async fn submit_anywhere<F, Fut, R, E>(
        &self,
        request: JobRequest,
        job: F,
    ) -> Result<Spawned, Error>
    where
        F: FnOnce(JobHandle) -> Fut,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.engine.submit_anywhere(request, job).await
    }

    /// The [name](JobRequest::name) job `id` was started with, if it has one and runs (or ran)
    /// in this instance. Names are not part of the status's JSON, whose fields are Synapse's;
    /// this is how a UI shows them beside a status (the HTTP front's job list does).
    pub fn job_name(&self, id: &JobId) -> Option<Arc<str>> {
        self.engine.name_of(id, Scope::All)
    }

    /// A snapshot of the job's status, at any time.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known (never started here, or its finished status
    /// was dropped by retention).
    pub fn status(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.engine.status(id, Scope::All)
    }

    /// Asks the job to cancel: sets `jobCanceling` at once (a new etag) and fires the job's
    /// cancellation token. A job that does not stop within the
    /// [cancel grace](JobRegistryBuilder::cancel_grace) is stopped and ends FAILED; a queued job
    /// ends at once without ever running. Says whether anything changed; canceling a finished job
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known.
    pub fn cancel(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        self.engine.cancel_id(id, Scope::All)
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
        self.engine.wait_anywhere(id, Scope::All).await
    }

    /// Waits until the job's etag differs from `etag` and returns the status; at once if it
    /// already differs (also for an etag this registry never gave, e.g. a Synapse UUID). This is
    /// long-polling: put your own timeout around it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use std::time::Duration;
    /// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
    ///
    /// let registry = JobRegistry::new();
    /// let id = registry.spawn(JobRequest::default(), |job: JobHandle| async move {
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    ///     job.set_progress(1, 2, "half way");
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    /// let seen = registry.status(&id)?;
    /// // Answer a poller within 30 s: with the new status, or with "nothing new".
    /// match tokio::time::timeout(Duration::from_secs(30), registry.wait_for_change(&id, &seen.etag)).await {
    ///     Ok(changed) => assert_ne!(changed?.etag, seen.etag),
    ///     Err(_elapsed) => println!("nothing new"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known when called.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn wait_for_change(
        &self,
        id: &JobId,
        etag: &Etag,
    ) -> Result<AsynchronousJobStatus, Error> {
        self.engine
            .wait_for_change_anywhere(id, etag, Scope::All)
            .await
    }

    /// The status of a job of any instance sharing this registry's
    /// [store](JobRegistryBuilder::store): from memory for a job held here (as
    /// [`status`](JobRegistry::status)), from the store for another instance's, as it last wrote
    /// it (at most a flush interval old). Without a store, the same as `status`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no instance knows the job; [`Error::StoreUnavailable`] if it is
    /// not held here and the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn status_anywhere(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.engine.status_anywhere(id, Scope::All).await
    }

    /// Cancels a job of any instance sharing this registry's store: a job held here at once,
    /// as [`cancel`](JobRegistry::cancel); another instance's by that instance, which gets the
    /// request within about a second and cancels the job as its own (flag, token, grace). For
    /// another instance's job, `Requested` means the request was recorded; the status shows
    /// `jobCanceling` once its instance has applied it. Without a store, the same as `cancel`.
    ///
    /// # Errors
    ///
    /// As [`status_anywhere`](JobRegistry::status_anywhere).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: once the store has the request, dropping the future does not withdraw it.
    pub async fn cancel_anywhere(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        self.engine.cancel_anywhere(id, Scope::All).await
    }

    /// The jobs of every instance sharing this registry's store that `filter` selects, newest
    /// first (by id); this instance's from memory, the others' as last written (with their
    /// [names](JobRequest::name), which the store keeps, for [`JobFilter::named`]). Without a
    /// store, this instance's [`list`](JobRegistry::list), newest first.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] if the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list_anywhere(
        &self,
        filter: &JobFilter,
    ) -> Result<Vec<AsynchronousJobStatus>, Error> {
        names::list_anywhere(&self.engine, filter, Scope::All).await
    }

    /// How many jobs of every instance sharing this registry's store are in each state, as the
    /// store counts them (an instance's changes reach it within a flush interval). Without a
    /// store, [`counts`](JobRegistry::counts).
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] if the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn counts_anywhere(&self) -> Result<JobCounts, Error> {
        self.engine.counts_anywhere().await
    }

    /// Waits until other instances sharing the registry's [store](crate::JobRegistryBuilder::store)
    /// can find job `id`: its start is written to the store within about 20 ms of `spawn`, and a
    /// service that hands the id to a client (who may ask another instance next) should wait
    /// for this first; the HTTP front does. Resolves at once without a store, and after about a
    /// second at most if the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn announced(&self, id: &JobId) {
        self.engine.announced(id).await;
    }

    /// Follows one job's status as it changes; see [`JobWatch`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known.
    pub fn watch(&self, id: &JobId) -> Result<JobWatch, Error> {
        JobWatch::of_job(&self.engine, id, Scope::All)
    }

    /// Follows one job's status as it changes, as [`watch`](JobRegistry::watch) does, for a job
    /// of any instance sharing this registry's [store](crate::JobRegistryBuilder::store): a job
    /// held here is watched in memory; another instance's is read from the store, and its
    /// changes are seen within about a flush interval (the store notifies them, and a quiet job
    /// is read again every second). Without a store, [`watch`](JobRegistry::watch).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no instance knows the job; [`Error::StoreUnavailable`] if it is
    /// not held here and the store cannot be reached. Once the watch is made, an unreachable store
    /// makes [`JobWatch::next`] wait, not fail.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn watch_anywhere(&self, id: &JobId) -> Result<JobWatch, Error> {
        JobWatch::anywhere(&self.engine, id, Scope::All).await
    }

    /// Follows every job's changes; see [`StatusFeed`].
    #[must_use = "a feed only collects changes until it is read"]
    pub fn watch_all(&self) -> StatusFeed {
        StatusFeed::new(self.engine.clone(), Scope::All)
    }

    /// Snapshots of the jobs that `filter` selects, ordered by id.
    ///
    /// A list is not one atomic snapshot of the registry: each status in it is consistent, but
    /// they are taken one after another. A job that exists for the whole call is listed exactly
    /// once (with its state at the moment it was read, which decides whether a state filter
    /// keeps it); a job started or dropped during the call may or may not be.
    pub fn list(&self, filter: &JobFilter) -> Vec<AsynchronousJobStatus> {
        self.engine.list(filter, Scope::All)
    }

    /// How many jobs are in each state: cheap enough to poll often; see [`JobCounts`].
    pub fn counts(&self) -> JobCounts {
        self.engine.counts()
    }

    /// How many of one user's jobs are in each state (queued and running ones apart), as
    /// [`UserView::counts`]. Unlike [`counts`](JobRegistry::counts), it reads each of that
    /// user's jobs (through a per-user index, so it costs that user's jobs, not everyone's).
    pub fn counts_for(&self, user_id: u64) -> JobCounts {
        self.engine.counts_for(user_id)
    }

    /// A view of this registry scoped to one user: it reads, waits for, lists and cancels only
    /// jobs that user started, and starts jobs as that user.
    #[must_use]
    pub fn as_user(&self, user_id: u64) -> UserView {
        UserView::new(self.engine.clone(), user_id)
    }

    /// How many jobs the registry holds: running ones and retained finished ones.
    pub fn len(&self) -> usize {
        self.engine.len()
    }

    /// Whether the registry holds no job.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`shutdown`](JobRegistry::shutdown) has begun.
    pub fn is_shut_down(&self) -> bool {
        self.engine.is_shut_down()
    }

    /// Shuts the registry down: from now on `spawn` fails with [`Error::ShutDown`]; every
    /// running or queued job is canceled (queued ones end at once); jobs get up to `grace` to
    /// finish by themselves; the rest are stopped and end FAILED with exception
    /// [`exception::CANCELED`](crate::exception::CANCELED). When this returns, no job is PROCESSING, and every status is
    /// still readable (subject to retention). Calling it again finds nothing running and reports
    /// zeros.
    ///
    /// A job stuck in code that never yields cannot be stopped by dropping its future: its status
    /// is ended after a short wait all the same, and its task ends whenever it next yields.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use asyncjobs::{Error, JobRegistry, JobRequest};
    ///
    /// let registry = JobRegistry::new();
    /// registry.spawn(JobRequest::default(), |job| async move {
    ///     job.cancelled().await;
    ///     Err::<(), _>("stopped")
    /// }).unwrap();
    /// let summary = registry.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!((summary.running, summary.finished_within_grace), (1, 1));
    /// assert!(matches!(registry.spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) }), Err(Error::ShutDown)));
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if dropped midway, new jobs are refused and running ones are canceled,
    /// but jobs past their grace may not be stopped.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownSummary {
        self.engine.shutdown(grace).await
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
            // Read without sweeping: formatting must not change the registry.
            .field("counts", &self.engine.counts_now())
            .field("max_running", &self.engine.max_running())
            .field("shut_down", &self.is_shut_down())
            .field("config", &self.engine.config)
            .finish_non_exhaustive()
    }
}

impl JobRegistryBuilder {
    /// Builds the registry.
    pub fn build(self) -> JobRegistry {
        JobRegistry::from_builder(self)
    }
}
