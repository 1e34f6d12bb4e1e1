//! The registry: starts jobs and answers for them, for every job or for one user's.

use std::sync::Arc;
use std::time::Duration;

use crate::builder::JobRegistryBuilder;
use crate::engine::{self, Engine};
use crate::{
    AsynchronousJobStatus, CancelOutcome, Error, Etag, Everyone, JobCounts, JobFilter, JobFn,
    JobId, JobPage, JobRequest, JobWatch, LocalJobs, OneUser, Scope, ShutdownSummary, Spawned,
    StatusFeed,
};

/// Starts jobs on tokio and answers for them: their status, cancel, waits, watches, lists and
/// counts.
///
/// A registry is [scoped](Scope): `JobRegistry` (that is, `JobRegistry<Everyone>`) is the
/// trusted administrator's, and answers for every job; [`as_user`](JobRegistry::as_user) gives
/// a [`UserView`] (`JobRegistry<OneUser>`), what a handler acting for an end user should hold,
/// which answers for that user's jobs only and starts jobs as that user. Both have every method
/// below.
///
/// **With a [store](JobRegistryBuilder::store)**, every method answers for the jobs of every
/// instance that shares it: a job is found, read, waited for, watched and canceled wherever it
/// runs. Without one, they answer at once from this instance's memory.
/// [`local`](JobRegistry::local) gives the memory-only calls, which never wait, by name.
///
/// `Clone` is cheap, and clones share one registry. Each job runs as one tokio task. Dropping
/// the last clone does not stop running jobs: each job's task keeps the registry's state alive
/// and runs to its end as usual. To stop jobs, call [`shutdown`](JobRegistry::shutdown).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use asyncjobs::{AsynchJobState, Error, JobHandle, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let alice = registry.as_user(42);
/// let id = alice
///     .spawn(
///         JobRequest::new(serde_json::json!({"concreteType": "org.example.ExportRequest"})),
///         |job: JobHandle| async move {
///             job.set_progress(10, 100, "reading");
///             Ok::<_, std::io::Error>(serde_json::json!({"rows": 10}))
///         },
///     )
///     .await?;
/// let done = alice.wait(&id).await?;
/// assert_eq!(done.job_state, AsynchJobState::Complete);
/// assert_eq!(done.started_by_user_id, Some(42));
/// assert_eq!(registry.as_user(7).status(&id).await, Err(Error::NotYourJob(id)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JobRegistry<S: Scope = Everyone> {
    engine: Arc<Engine>,
    scope: S,
}

/// A registry seen by one user: [`JobRegistry::as_user`]'s view. It reads, waits for, watches,
/// lists and cancels only the jobs that user started; any other job, including one started with
/// no user, is refused with [`Error::NotYourJob`] (Synapse answers 403). Jobs it starts are that
/// user's, whatever user the request names.
pub type UserView = JobRegistry<OneUser>;

impl JobRegistry {
    /// A registry with every option at its default; see [`JobRegistryBuilder`].
    pub fn new() -> Self {
        JobRegistryBuilder::new().build()
    }

    /// A builder to set options.
    pub fn builder() -> JobRegistryBuilder {
        JobRegistryBuilder::new()
    }

    /// A view of this registry scoped to one user: it answers for the jobs that user started,
    /// and starts jobs as that user.
    #[must_use]
    pub fn as_user(&self, user_id: u64) -> UserView {
        JobRegistry {
            engine: self.engine.clone(),
            scope: OneUser(user_id),
        }
    }

    /// Whether [`shutdown`](JobRegistry::shutdown) has begun.
    pub fn is_shut_down(&self) -> bool {
        self.engine.is_shut_down()
    }

    /// Shuts the registry down: from now on starting a job fails with [`Error::ShutDown`]; every
    /// running or queued job is canceled (queued ones end at once); jobs get up to `grace` to
    /// finish by themselves; the rest are stopped and end FAILED with exception
    /// [`exception::CANCELED`](crate::exception::CANCELED). When this returns, no job of this
    /// instance is PROCESSING, and every status is still readable (subject to retention).
    /// Calling it again finds nothing running and reports zeros.
    ///
    /// A job stuck in code that never yields cannot be stopped by dropping its future: its status
    /// is ended after a short wait all the same, and its task ends whenever it next yields.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use std::time::Duration;
    /// use asyncjobs::{Error, JobRegistry, JobRequest};
    ///
    /// let registry = JobRegistry::new();
    /// registry
    ///     .spawn(JobRequest::default(), |job| async move {
    ///         job.cancelled().await;
    ///         Err::<(), _>("stopped")
    ///     })
    ///     .await?;
    /// let summary = registry.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!((summary.running, summary.finished_within_grace), (1, 1));
    /// let refused = registry.spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) }).await;
    /// assert_eq!(refused, Err(Error::ShutDown));
    /// # Ok(())
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

impl UserView {
    /// The user this view acts for.
    pub fn user(&self) -> u64 {
        self.scope.0
    }
}

impl<S: Scope> JobRegistry<S> {
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The engine's scope: every job, or one user's.
    pub(crate) fn scope(&self) -> engine::Scope {
        match self.scope.user() {
            None => engine::Scope::All,
            Some(user) => engine::Scope::User(user),
        }
    }

    /// The request as this registry starts it: a user's view starts its user's jobs.
    pub(crate) fn own(&self, request: JobRequest) -> JobRequest {
        match self.scope.user() {
            Some(user) => request.started_by(user),
            None => request,
        }
    }

    /// This instance's jobs alone, from memory, by calls that never wait (no store is asked).
    pub fn local(&self) -> LocalJobs<'_, S> {
        LocalJobs::new(self)
    }

    /// Starts a job: calls `job` with the job's [`JobHandle`](crate::JobHandle) and runs the
    /// future it returns as a tokio task. The job is PROCESSING from the moment it is started
    /// (queued, if the [concurrency limit](JobRegistryBuilder::max_running) is reached).
    ///
    /// When the future returns `Ok(r)`, the job ends COMPLETE with `r` serialized as its
    /// `responseBody`; `Err(e)` ends it FAILED with `e`'s message, its `source()` chain and its
    /// type name; a panic ends it FAILED with the panic's message. `job` is called before this
    /// resolves; if it panics, the job ends FAILED the same way. A
    /// [cacheable](JobRequest::cacheable) request equal to an earlier one of the same user (on
    /// any instance, with a store) is answered with that job's id, and `job` is not called;
    /// [`submit`](JobRegistry::submit) says which happened.
    ///
    /// With a store, this resolves once every instance can find the job (its start is written,
    /// within about 20 ms; after a second at most if the store cannot be reached, when the job
    /// runs all the same), so the id can go to a client who may ask another instance next.
    /// Without one, it is ready at once.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after [`shutdown`](JobRegistry::shutdown) began; [`Error::NoRuntime`]
    /// when called outside a tokio runtime and the registry has none of its own.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may leave the job started but not yet found by
    /// other instances (or by equal cacheable requests on them); it never stops the job.
    pub async fn spawn<Fut>(
        &self,
        request: JobRequest,
        job: impl JobFn<Fut>,
    ) -> Result<JobId, Error> {
        self.submit(request, job).await.map(Spawned::id)
    }

    /// Starts a job as [`spawn`](JobRegistry::spawn) does, and says whether it started one or
    /// answered a [cacheable](JobRequest::cacheable) request with an earlier equal one's job (so
    /// that an application can tell its user "already running" or "already done").
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use asyncjobs::{JobRegistry, JobRequest, Spawned};
    ///
    /// let alice = JobRegistry::new().as_user(7);
    /// let query = || JobRequest::new(serde_json::json!({"sql": "select 1"})).cacheable();
    /// let first = alice.submit(query(), |_job| async { Ok::<_, std::io::Error>(1) }).await?;
    /// let again = alice.submit(query(), |_job| async { Ok::<_, std::io::Error>(1) }).await?;
    /// assert!(matches!(first, Spawned::Started(_)));
    /// assert_eq!(again, Spawned::Reused(first.id()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](JobRegistry::spawn).
    ///
    /// # Cancel safety
    ///
    /// As [`spawn`](JobRegistry::spawn).
    pub async fn submit<Fut>(
        &self,
        request: JobRequest,
        job: impl JobFn<Fut>,
    ) -> Result<Spawned, Error> {
        let spawned = self.engine.submit(self.own(request), job).await?;
        if let Spawned::Started(id) = spawned {
            self.engine.announced(&id).await;
        }
        Ok(spawned)
    }

    /// A snapshot of the job's status, at any time, wherever the job runs: from memory for a job
    /// of this instance, from the store for another instance's (as that instance last wrote it,
    /// at most a flush interval old).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no instance knows the job (never started, or its finished status
    /// was dropped by retention); [`Error::NotYourJob`] if it is out of this registry's scope;
    /// [`Error::StoreUnavailable`] if it is not held here and the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn status(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.engine.cluster_status(id, self.scope()).await
    }

    /// Asks the job to cancel, wherever it runs: sets `jobCanceling` (a new etag) and fires the
    /// job's cancellation token. A job that does not stop within the
    /// [cancel grace](JobRegistryBuilder::cancel_grace) is stopped and ends FAILED; a queued job
    /// ends at once without ever running.
    ///
    /// A job of this instance is canceled at once. Another instance's is canceled by that
    /// instance, which hears of it through the store; this waits up to two seconds for it to
    /// show `jobCanceling`, and answers [`CancelOutcome::Requested`] once it does, or
    /// [`CancelOutcome::Recorded`] if it has not yet (the request stays in the store, and the
    /// job's instance applies it when it next reaches it). Canceling a finished job changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// As [`status`](JobRegistry::status).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: once the request is recorded, dropping the future does not withdraw it.
    pub async fn cancel(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        self.engine.cluster_cancel(id, self.scope()).await
    }

    /// Waits until the job has finished, wherever it runs, and returns its final status; at once
    /// if it already has.
    ///
    /// # Errors
    ///
    /// As [`status`](JobRegistry::status), when called. Once waiting for a job of this instance,
    /// the final status is returned even if retention drops it meanwhile.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn wait(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.engine.cluster_wait(id, self.scope()).await
    }

    /// Waits until the job's etag differs from `etag` and returns the status; at once if it
    /// already differs (also for an etag this registry never gave, e.g. a Synapse UUID), or if
    /// the job has finished. This is long-polling: put your own timeout around it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use std::time::Duration;
    /// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
    ///
    /// let registry = JobRegistry::new();
    /// let id = registry
    ///     .spawn(JobRequest::default(), |job: JobHandle| async move {
    ///         tokio::time::sleep(Duration::from_millis(10)).await;
    ///         job.set_progress(1, 2, "half way");
    ///         Ok::<_, std::io::Error>(())
    ///     })
    ///     .await?;
    /// let seen = registry.status(&id).await?;
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
    /// As [`status`](JobRegistry::status), when called.
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
            .cluster_wait_for_change(id, etag, self.scope())
            .await
    }

    /// Follows one job's status as it changes, wherever it runs; see [`JobWatch`]. A job of this
    /// instance is watched in memory; another instance's through the store, its changes seen
    /// within about a flush interval.
    ///
    /// # Errors
    ///
    /// As [`status`](JobRegistry::status). Once the watch is made, an unreachable store makes
    /// [`JobWatch::next`] wait, not fail.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn watch(&self, id: &JobId) -> Result<JobWatch, Error> {
        JobWatch::cluster(&self.engine, id, self.scope()).await
    }

    /// Follows the changes of every job in scope, on every instance; see [`StatusFeed`]. With a
    /// store, other instances' changes are heard from its notices and read from it.
    #[must_use = "a feed only collects changes until it is read"]
    pub fn watch_all(&self) -> StatusFeed {
        StatusFeed::new(self.engine.clone(), self.scope())
    }

    /// One page of the jobs that `filter` selects, newest first (by id), on every instance: this
    /// instance's from memory, the others' as last written. [`JobPage::next`] gives the filter of
    /// the next page, if there is one.
    ///
    /// A list is not one atomic snapshot: each status in it is consistent, but they are read one
    /// after another. A job that exists for the whole call is listed once, in the state it had
    /// when read; a job started or dropped during the call may or may not be.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] if the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self, filter: &JobFilter) -> Result<JobPage, Error> {
        self.engine.cluster_list(filter, self.scope()).await
    }

    /// How many jobs in scope are in each state, on every instance. With a store, as the store
    /// counts them (an instance's changes reach it within a flush interval); without one, from
    /// memory, a few atomic loads for the administrator's registry.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] if the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn counts(&self) -> Result<JobCounts, Error> {
        self.engine
            .cluster_counts(&JobFilter::new(), self.scope())
            .await
    }

    /// The [name](JobRequest::name) job `id` was started with, if it has one and the job is in
    /// scope. Names are not part of the status's JSON, whose fields are Synapse's; this is how a
    /// UI shows them beside a status (the HTTP front's job list does).
    ///
    /// # Errors
    ///
    /// As [`status`](JobRegistry::status).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn job_name(&self, id: &JobId) -> Result<Option<Arc<str>>, Error> {
        self.engine.cluster_name(id, self.scope()).await
    }
}

/// What the HTTP front asks beyond the public calls.
#[cfg(feature = "http")]
impl<S: Scope> JobRegistry<S> {
    /// [`counts`](JobRegistry::counts) of the jobs `filter` selects by user, name and request
    /// type (its state and page are not applied).
    pub(crate) async fn counts_matching(&self, filter: &JobFilter) -> Result<JobCounts, Error> {
        self.engine.cluster_counts(filter, self.scope()).await
    }

    /// Every job in scope of every instance, newest first, read a page at a time.
    pub(crate) async fn list_all(&self) -> Result<Vec<AsynchronousJobStatus>, Error> {
        self.engine.cluster_list_all(self.scope()).await
    }

    /// The names of those of the jobs `ids` that have one, on every instance; the jobs must be
    /// in scope (as a list for it gives them).
    pub(crate) async fn job_names(
        &self,
        ids: &[JobId],
    ) -> Result<std::collections::HashMap<JobId, Arc<str>>, Error> {
        self.engine.cluster_names(ids, self.scope()).await
    }
}

impl Default for JobRegistry {
    fn default() -> Self {
        JobRegistry::new()
    }
}

impl<S: Scope> std::fmt::Debug for JobRegistry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRegistry")
            .field("scope", &self.scope)
            // Read without sweeping: formatting must not change the registry.
            .field("counts", &self.engine.counts_now())
            .field("max_running", &self.engine.max_running())
            .field("shut_down", &self.engine.is_shut_down())
            .field("config", &self.engine.config)
            .finish_non_exhaustive()
    }
}

impl JobRegistryBuilder {
    /// Builds the registry.
    pub fn build(self) -> JobRegistry {
        JobRegistry {
            engine: Engine::new(self.into_config()),
            scope: Everyone,
        }
    }
}
