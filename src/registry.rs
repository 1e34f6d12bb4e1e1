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
use tokio_util::task::TaskTracker;

use crate::cache::{self, RequestCache};
use crate::hub::Hub;
use crate::job::{Applied, Change, Job};
use crate::limiter::Limiter;
use crate::retention::Retention;
use crate::supervisor::{panicked, registry_failure, Supervisor};
use crate::table::Table;
use crate::trace;
use crate::{
    exception, AsynchJobState, AsynchronousJobStatus, CancelOutcome, Error, Etag, JobCounts,
    JobFilter, JobHandle, JobId, JobRegistryBuilder, JobRequest, JobWatch, ShutdownSummary,
    StatusFeed, UserView,
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
    pub(crate) shared: Arc<Shared>,
}

/// What every clone of a registry, and every job's task, shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    table: Table,
    retention: Retention,
    pub(crate) hub: Arc<Hub>,
    limiter: Option<Limiter>,
    cache: RequestCache,
    next_id: AtomicU64,
    /// Every job's token is a child of this one.
    root: CancellationToken,
    /// Fired by a shutdown whose grace has run out: stops canceled jobs at once.
    pub(crate) kill: CancellationToken,
    tracker: TaskTracker,
    shut_down: AtomicBool,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) cancel_grace: Duration,
    pub(crate) runtime: Option<Handle>,
    pub(crate) keep_finished_for: Duration,
    pub(crate) keep_finished_at_most: usize,
    pub(crate) max_running: Option<usize>,
    pub(crate) first_job_id: u64,
}

/// How long a shutdown waits for stopped jobs' tasks to notice, before it ends their statuses
/// itself (a job that never yields cannot be stopped by dropping its future).
const STOP_WAIT: Duration = Duration::from_secs(1);

impl Shared {
    /// Ends a job with `change`; whoever ends it also retires it, so that happens once.
    pub(crate) fn finish(&self, job: &Job, change: Change<'_>) {
        if job.apply(&self.hub, change) == Applied::Changed {
            self.retire(job);
        }
    }

    /// Called once, by whoever ended the job, so `ended` is always there.
    fn retire(&self, job: &Job) {
        let Some(ended) = job.ended() else { return };
        if let Some(limiter) = &self.limiter {
            // A job that ended while still queued never held a slot; it leaves the queue.
            if ended.queued {
                limiter.remove(job.id);
            } else {
                limiter.release(&self.hub);
            }
        }
        if job.cacheable && ended.state == AsynchJobState::Failed {
            self.cache.remove(job);
        }
        self.retention.push(job.id, ended.at);
        self.sweep();
    }

    /// Asks a job to cancel; a queued job ends at once, without ever running.
    pub(crate) fn cancel(&self, job: &Job) -> CancelOutcome {
        match job.apply(&self.hub, Change::Canceling) {
            Applied::Changed => {
                // Once canceling, a queued job is never handed a slot, so it cannot start now.
                if job.is_queued() {
                    let failure = registry_failure(
                        "job was canceled while queued, before it started".into(),
                        exception::CANCELED,
                    );
                    self.finish(job, Change::Fail(failure));
                }
                CancelOutcome::Requested
            }
            Applied::Unchanged => CancelOutcome::AlreadyRequested,
            Applied::AlreadyFinished => CancelOutcome::AlreadyFinished,
        }
    }

    /// Drops the finished statuses that the retention rules say to drop.
    fn sweep(&self) {
        let now = Instant::now();
        while let Some(id) = self.retention.pop_due(now) {
            if let Some(job) = self.table.remove(id) {
                self.hub.evicted(id, job.phase());
                if job.cacheable {
                    self.cache.remove(&job);
                }
                // Dropped here, outside every lock: the last reference frees the job's bodies.
                drop(job);
            }
        }
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

    pub(crate) fn from_config(config: Config) -> Self {
        // Enough shards that threads rarely meet on one, as in sharded caches: 4 per core.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        JobRegistry {
            shared: Arc::new(Shared {
                table: Table::new(cores * 4),
                retention: Retention::new(config.keep_finished_for, config.keep_finished_at_most),
                hub: Arc::new(Hub::new()),
                limiter: config.max_running.map(|max| Limiter::new(max.max(1))),
                cache: RequestCache::default(),
                next_id: AtomicU64::new(config.first_job_id),
                root: CancellationToken::new(),
                kill: CancellationToken::new(),
                tracker: TaskTracker::new(),
                shut_down: AtomicBool::new(false),
                config,
            }),
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
        let shared = &self.shared;
        if shared.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let runtime = match &shared.config.runtime {
            Some(runtime) => runtime.clone(),
            None => Handle::try_current().map_err(|_| Error::NoRuntime)?,
        };
        // Trim before adding, so a busy registry never holds more than its limits.
        shared.sweep();

        let mut cache = None;
        if request.cacheable {
            let key = cache::key(request.user, request.body.as_deref());
            let entries = shared.cache.lock();
            let now = Instant::now();
            let reusable = entries.get(&key).and_then(|jobs| {
                jobs.iter().find(|j| {
                    j.user == request.user
                        && j.request == request.body
                        && j.reusable(|finished_at| shared.retention.expired(finished_at, now))
                })
            });
            if let Some(earlier) = reusable {
                return Ok(earlier.id);
            }
            cache = Some((entries, key));
        }

        let (time_limit, stall_limit) = (request.time_limit, request.stall_limit);
        let admitted = shared.limiter.as_ref().is_none_or(Limiter::try_acquire);
        let queued_message = match &shared.limiter {
            Some(limiter) if !admitted => Some(limiter.queued_message()),
            _ => None,
        };
        // Ids never wrap: the builder keeps the first one at most `u64::MAX / 2`.
        let id = JobId::from_u64(shared.next_id.fetch_add(1, Ordering::Relaxed));
        let token = shared.root.child_token();
        let entry = Arc::new(Job::new(
            id,
            request,
            token.clone(),
            &shared.hub,
            queued_message,
        ));
        shared.table.insert(entry.clone());
        shared.hub.publish(id, entry.user, 1);
        trace::started(id, entry.user, !admitted);
        if let Some((mut entries, key)) = cache {
            entries.entry(key).or_default().push(entry.clone());
        }
        if !admitted {
            if let Some(limiter) = &shared.limiter {
                limiter.enqueue(&shared.hub, &entry);
            }
        }
        // A shutdown that began after the check above may have listed the running jobs before
        // this one was added: then it ends here, never runs, and its id still tells the caller so.
        if shared.shut_down.load(Ordering::SeqCst) {
            shared.cancel(&entry);
            let failure = registry_failure(
                "job registry was shut down before the job could start".into(),
                exception::CANCELED,
            );
            shared.finish(&entry, Change::Fail(failure));
            return Ok(id);
        }

        let handle = JobHandle::new(entry.clone(), shared.hub.clone(), token.clone());
        #[cfg(feature = "tracing")]
        let span = trace::span(id, entry.user);
        #[cfg(feature = "tracing")]
        let called = span.in_scope(|| catch_unwind(AssertUnwindSafe(move || job(handle))));
        #[cfg(not(feature = "tracing"))]
        let called = catch_unwind(AssertUnwindSafe(move || job(handle)));
        match called {
            Ok(future) => {
                let supervisor = Supervisor {
                    shared: shared.clone(),
                    job: entry,
                    token,
                    time_limit,
                    stall_limit,
                };
                // If the runtime is shutting down the task is dropped unpolled, and the
                // supervisor's `Drop` ends the job.
                let task = shared.tracker.track_future(supervisor.run(future));
                #[cfg(feature = "tracing")]
                let task = tracing::Instrument::instrument(task, span);
                drop(runtime.spawn(task));
            }
            Err(panic) => shared.finish(&entry, Change::Fail(panicked(panic))),
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
        let retention = &self.shared.retention;
        // Read under the shard's read lock: no reference count to bump on a job many poll.
        let read = self.shared.table.with(*id, |job| {
            job.snapshot_unless(|finished_at| retention.expired(finished_at, Instant::now()))
        });
        match read {
            Some(Some(status)) => Ok(status),
            Some(None) => {
                self.shared.sweep();
                Err(Error::UnknownJob(*id))
            }
            None => Err(Error::UnknownJob(*id)),
        }
    }

    /// The job's status, unless it is past its retention time: one lock of the job for both.
    pub(crate) fn snapshot(&self, job: &Job) -> Result<AsynchronousJobStatus, Error> {
        let retention = &self.shared.retention;
        job.snapshot_unless(|finished_at| retention.expired(finished_at, Instant::now()))
            .ok_or_else(|| {
                self.shared.sweep();
                Error::UnknownJob(job.id)
            })
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
        Ok(self.shared.cancel(&*self.find(id)?))
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
        let job = self.find(id)?;
        Ok(job.changed_from(etag.version()).await)
    }

    /// Follows one job's status as it changes; see [`JobWatch`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known.
    pub fn watch(&self, id: &JobId) -> Result<JobWatch, Error> {
        Ok(JobWatch::new(self.find(id)?))
    }

    /// Follows every job's changes; see [`StatusFeed`].
    #[must_use = "a feed only collects changes until it is read"]
    pub fn watch_all(&self) -> StatusFeed {
        StatusFeed::new(self.clone(), None)
    }

    /// Snapshots of the jobs that `filter` selects, ordered by id.
    ///
    /// A list is not one atomic snapshot of the registry: each status in it is consistent, but
    /// they are taken one after another. A job that exists for the whole call is listed exactly
    /// once (with its state at the moment it was read, which decides whether a state filter
    /// keeps it); a job started or dropped during the call may or may not be.
    pub fn list(&self, filter: &JobFilter) -> Vec<AsynchronousJobStatus> {
        self.shared.sweep();
        let now = Instant::now();
        let retention = &self.shared.retention;
        let mut jobs = self
            .shared
            .table
            .jobs(|job| filter.user.is_none() || job.user == filter.user);
        jobs.sort_unstable_by_key(|job| job.id);
        jobs.iter()
            .filter_map(|job| job.snapshot_unless(|at| retention.expired(at, now)))
            .filter(|s| filter.state.is_none_or(|state| s.job_state == state))
            .collect()
    }

    /// How many jobs are in each state: cheap enough to poll often; see [`JobCounts`].
    pub fn counts(&self) -> JobCounts {
        // So that statuses past their retention time are not counted, even in an idle registry.
        self.shared.sweep();
        self.shared.hub.counts()
    }

    /// A view of this registry scoped to one user: it reads, waits for, lists and cancels only
    /// jobs that user started, and starts jobs as that user.
    #[must_use]
    pub fn as_user(&self, user_id: u64) -> UserView {
        UserView::new(self.clone(), user_id)
    }

    /// How many jobs the registry holds: running ones and retained finished ones.
    pub fn len(&self) -> usize {
        // Statuses past their retention time are gone, even in an idle registry.
        self.shared.sweep();
        self.shared.table.len()
    }

    /// Whether the registry holds no job.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`shutdown`](JobRegistry::shutdown) has begun.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shut_down.load(Ordering::Acquire)
    }

    /// Shuts the registry down: from now on `spawn` fails with [`Error::ShutDown`]; every
    /// running or queued job is canceled (queued ones end at once); jobs get up to `grace` to
    /// finish by themselves; the rest are stopped and end FAILED with exception
    /// [`exception::CANCELED`]. When this returns, no job is PROCESSING, and every status is
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
        let shared = &self.shared;
        shared.shut_down.store(true, Ordering::SeqCst);
        let running = shared.table.jobs(|job| !job.is_finished());
        for job in &running {
            shared.cancel(job);
        }
        // Also reaches jobs spawned while this began: their tokens are born canceled.
        shared.root.cancel();
        shared.tracker.close();
        let all_ended = within(grace, shared.tracker.wait()).await;
        let finished_within_grace = running.iter().filter(|job| job.is_finished()).count();
        if !all_ended {
            shared.kill.cancel();
            within(STOP_WAIT, shared.tracker.wait()).await;
        }
        for job in shared.table.jobs(|job| !job.is_finished()) {
            // Canceled first, as every job a shutdown ends: its final status says so.
            shared.cancel(&job);
            let failure = registry_failure(
                "job was stopped by the registry's shutdown".into(),
                exception::CANCELED,
            );
            shared.finish(&job, Change::Fail(failure));
        }
        shared.hub.wake_feeds();
        ShutdownSummary {
            running: running.len(),
            finished_within_grace,
            stopped: running.len() - finished_within_grace,
        }
    }

    /// The job, if known, whatever its retention: callers that read its status use
    /// [`JobRegistry::snapshot`], which checks.
    pub(crate) fn lookup(&self, id: &JobId) -> Result<Arc<Job>, Error> {
        self.shared.table.get(*id).ok_or(Error::UnknownJob(*id))
    }

    /// The job, if known and not past its retention time.
    pub(crate) fn find(&self, id: &JobId) -> Result<Arc<Job>, Error> {
        let job = self.shared.table.get(*id).ok_or(Error::UnknownJob(*id))?;
        if let Some(finished_at) = job.finished_at() {
            if self.shared.retention.expired(finished_at, Instant::now()) {
                self.shared.sweep();
                return Err(Error::UnknownJob(*id));
            }
        }
        Ok(job)
    }
}

/// Whether `future` ended within `limit`. On a runtime without a timer (where making one panics),
/// the limit counts as reached at once.
async fn within(limit: Duration, future: impl Future<Output = ()>) -> bool {
    match catch_unwind(|| tokio::time::sleep(limit)) {
        Ok(sleep) => tokio::select! {
            () = future => true,
            () = sleep => false,
        },
        Err(_no_timer) => false,
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
            .field("counts", &self.counts())
            .field(
                "max_running",
                &self.shared.limiter.as_ref().map(Limiter::max),
            )
            .field("shut_down", &self.is_shut_down())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
