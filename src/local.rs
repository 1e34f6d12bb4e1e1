//! This instance's jobs alone, by calls that never wait: [`JobRegistry::local`].

use std::sync::Arc;

use crate::{
    AsynchronousJobStatus, CancelOutcome, Error, JobCounts, JobFilter, JobFn, JobId, JobPage,
    JobRegistry, JobRequest, JobWatch, Scope, Spawned, StatusFeed,
};

/// The jobs this instance holds (running here, or finished here and retained), read from memory
/// by calls that never wait and never ask a store: what a hot loop, a `Drop` or a synchronous
/// callback may call. From [`JobRegistry::local`], in the registry's scope.
///
/// Without a store the registry's own methods give the same answers (they only add an
/// `.await`); with one, they answer for every instance and these for this one alone: a job
/// running elsewhere is [`Error::UnknownJob`] here.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let id = registry.local().spawn(JobRequest::default(), |_job| async { Ok::<_, std::io::Error>(()) })?;
/// let now = registry.local().status(&id)?;
/// assert_eq!(now.job_id, id);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LocalJobs<'a, S: Scope> {
    registry: &'a JobRegistry<S>,
}

impl<'a, S: Scope> LocalJobs<'a, S> {
    pub(crate) fn new(registry: &'a JobRegistry<S>) -> Self {
        LocalJobs { registry }
    }

    /// Starts a job here, as [`JobRegistry::spawn`] does, without waiting for the store: other
    /// instances find it once it is written (within about 20 ms), and a cacheable request is
    /// matched against this instance's jobs only.
    ///
    /// # Errors
    ///
    /// As [`JobRegistry::spawn`].
    pub fn spawn<Fut>(&self, request: JobRequest, job: impl JobFn<Fut>) -> Result<JobId, Error> {
        self.submit(request, job).map(Spawned::id)
    }

    /// Starts a job here as [`spawn`](LocalJobs::spawn) does, and says whether it started one or
    /// reused an earlier equal cacheable request's job, as [`JobRegistry::submit`] does.
    ///
    /// # Errors
    ///
    /// As [`JobRegistry::spawn`].
    pub fn submit<Fut>(&self, request: JobRequest, job: impl JobFn<Fut>) -> Result<Spawned, Error> {
        let registry = self.registry;
        registry.engine().spawn(registry.own(request), job)
    }

    /// A snapshot of the status of a job held here.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if this instance holds no such job; [`Error::NotYourJob`] if it is
    /// out of the registry's scope.
    pub fn status(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.registry.engine().status(id, self.registry.scope())
    }

    /// Cancels a job held here, as [`JobRegistry::cancel`] does for it.
    ///
    /// # Errors
    ///
    /// As [`status`](LocalJobs::status).
    pub fn cancel(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        self.registry.engine().cancel_id(id, self.registry.scope())
    }

    /// Follows a job held here; see [`JobWatch`].
    ///
    /// # Errors
    ///
    /// As [`status`](LocalJobs::status).
    pub fn watch(&self, id: &JobId) -> Result<JobWatch, Error> {
        JobWatch::of_job(self.registry.engine(), id, self.registry.scope())
    }

    /// Follows the changes of the jobs in scope held here; see [`StatusFeed`].
    #[must_use = "a feed only collects changes until it is read"]
    pub fn watch_all(&self) -> StatusFeed {
        StatusFeed::local(self.registry.engine().clone(), self.registry.scope())
    }

    /// One page of the jobs held here that `filter` selects, newest first, as
    /// [`JobRegistry::list`] gives them.
    pub fn list(&self, filter: &JobFilter) -> JobPage {
        self.registry.engine().list(filter, self.registry.scope())
    }

    /// How many jobs in scope held here are in each state. For the administrator's registry, a
    /// few atomic loads, cheap enough to poll; for a user's view, O(that user's jobs).
    pub fn counts(&self) -> JobCounts {
        self.registry.engine().counts_in(self.registry.scope())
    }

    /// How many jobs in scope this instance holds: running ones and retained finished ones.
    pub fn len(&self) -> usize {
        self.registry.engine().len_in(self.registry.scope())
    }

    /// Whether this instance holds no job in scope.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The [name](JobRequest::name) of a job held here, if it has one (see
    /// [`JobRegistry::job_name`]).
    pub fn job_name(&self, id: &JobId) -> Option<Arc<str>> {
        self.registry.engine().name_of(id, self.registry.scope())
    }
}
