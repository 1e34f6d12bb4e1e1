//! A registry seen by one user.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;

use crate::engine::{Engine, Scope};
use crate::names;
use crate::{
    AsynchronousJobStatus, CancelOutcome, Error, Etag, JobCounts, JobFilter, JobHandle, JobId,
    JobRequest, JobWatch, Spawned, StatusFeed,
};

/// A view of a [`JobRegistry`](crate::JobRegistry) scoped to one user, from [`JobRegistry::as_user`](crate::JobRegistry::as_user): what an API
/// handler acting for an end user should hold.
///
/// It reads, waits for and cancels only the jobs that this user started; any other job, including
/// one started with no user, is refused with [`Error::NotYourJob`] (Synapse answers 403). Jobs it
/// spawns are started by this user.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{Error, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let alice = registry.as_user(1);
/// let id = alice.spawn(JobRequest::default(), |_job| async { Ok::<_, std::io::Error>(()) })?;
/// assert_eq!(alice.status(&id)?.started_by_user_id, Some(1));
/// assert_eq!(registry.as_user(2).status(&id), Err(Error::NotYourJob(id)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct UserView {
    engine: Arc<Engine>,
    user: u64,
}

impl UserView {
    pub(crate) fn new(engine: Arc<Engine>, user: u64) -> Self {
        UserView { engine, user }
    }

    fn scope(&self) -> Scope {
        Scope::User(self.user)
    }

    /// The user this view acts for.
    pub fn user(&self) -> u64 {
        self.user
    }

    /// Starts a job as this user, whatever user `request` names; otherwise as
    /// [`JobRegistry::spawn`](crate::JobRegistry::spawn).
    ///
    /// # Errors
    ///
    /// As [`JobRegistry::spawn`](crate::JobRegistry::spawn).
    pub fn spawn<F, Fut, R, E>(&self, request: JobRequest, job: F) -> Result<JobId, Error>
    where
        F: FnOnce(JobHandle) -> Fut,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.engine
            .spawn(request.started_by(self.user), job)
            .map(Spawned::id)
    }

    /// Starts a job as [`spawn`](UserView::spawn) does, and says whether it started one or answered a
    /// [cacheable](JobRequest::cacheable) request with an earlier equal one's job (so that an
    /// application can tell its user "already running" or "already done").
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use asyncjobs::{JobRegistry, JobRequest, Spawned};
    ///
    /// let alice = JobRegistry::new().as_user(7);
    /// let query = || JobRequest::new(serde_json::json!({"sql": "select 1"})).cacheable();
    /// let first = alice.submit(query(), |_job| async { Ok::<_, std::io::Error>(1) })?;
    /// let again = alice.submit(query(), |_job| async { Ok::<_, std::io::Error>(1) })?;
    /// assert!(matches!(first, Spawned::Started(_)));
    /// assert_eq!(again, Spawned::Reused(first.id()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](UserView::spawn).
    pub fn submit<F, Fut, R, E>(&self, request: JobRequest, job: F) -> Result<Spawned, Error>
    where
        F: FnOnce(JobHandle) -> Fut,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.engine.spawn(request.started_by(self.user), job)
    }

    /// Starts a job for this user as [`JobRegistry::submit_anywhere`](crate::JobRegistry::submit_anywhere)
    /// does: a cacheable request equal to one this user sent to any instance sharing the store
    /// is answered with that job.
    ///
    /// # Errors
    ///
    /// As [`spawn`](UserView::spawn).
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
        self.engine
            .submit_anywhere(request.started_by(self.user), job)
            .await
    }

    /// The [name](JobRequest::name) of one of this user's jobs, as
    /// [`JobRegistry::job_name`](crate::JobRegistry::job_name); `None` for another user's job.
    pub fn job_name(&self, id: &JobId) -> Option<Arc<str>> {
        self.engine.name_of(id, self.scope())
    }

    /// A snapshot of one of this user's jobs.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known; [`Error::NotYourJob`] if another user (or no
    /// user) started it.
    pub fn status(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.engine.status(id, self.scope())
    }

    /// Asks one of this user's jobs to cancel, as [`JobRegistry::cancel`](crate::JobRegistry::cancel).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known; [`Error::NotYourJob`] if another user (or no
    /// user) started it.
    pub fn cancel(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        self.engine.cancel_id(id, self.scope())
    }

    /// Waits for one of this user's jobs to finish, as [`JobRegistry::wait`](crate::JobRegistry::wait).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known; [`Error::NotYourJob`] if another user (or no
    /// user) started it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn wait(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.engine.wait_anywhere(id, self.scope()).await
    }

    /// Waits until one of this user's jobs changes from `etag`, as
    /// [`JobRegistry::wait_for_change`](crate::JobRegistry::wait_for_change).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known; [`Error::NotYourJob`] if another user (or no
    /// user) started it.
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
            .wait_for_change_anywhere(id, etag, self.scope())
            .await
    }

    /// The status of one of this user's jobs on any instance, as
    /// [`JobRegistry::status_anywhere`](crate::JobRegistry::status_anywhere).
    ///
    /// # Errors
    ///
    /// As [`JobRegistry::status_anywhere`](crate::JobRegistry::status_anywhere), and
    /// [`Error::NotYourJob`] if another user (or no user) started it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn status_anywhere(&self, id: &JobId) -> Result<AsynchronousJobStatus, Error> {
        self.engine.status_anywhere(id, self.scope()).await
    }

    /// Cancels one of this user's jobs on any instance, as
    /// [`JobRegistry::cancel_anywhere`](crate::JobRegistry::cancel_anywhere).
    ///
    /// # Errors
    ///
    /// As [`status_anywhere`](UserView::status_anywhere).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: once the store has the request, dropping the future does not withdraw it.
    pub async fn cancel_anywhere(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        self.engine.cancel_anywhere(id, self.scope()).await
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

    /// This user's jobs on every instance, newest first, as
    /// [`JobRegistry::list_anywhere`](crate::JobRegistry::list_anywhere).
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
        names::list_anywhere(&self.engine, filter, self.scope()).await
    }

    /// Follows one of this user's jobs, as [`JobRegistry::watch`](crate::JobRegistry::watch).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownJob`] if no such job is known; [`Error::NotYourJob`] if another user (or no
    /// user) started it.
    pub fn watch(&self, id: &JobId) -> Result<JobWatch, Error> {
        JobWatch::of_job(&self.engine, id, self.scope())
    }

    /// Follows one of this user's jobs on any instance, as
    /// [`JobRegistry::watch_anywhere`](crate::JobRegistry::watch_anywhere).
    ///
    /// # Errors
    ///
    /// As [`JobRegistry::watch_anywhere`](crate::JobRegistry::watch_anywhere), and
    /// [`Error::NotYourJob`] if another user (or no user) started the job.
    pub async fn watch_anywhere(&self, id: &JobId) -> Result<JobWatch, Error> {
        JobWatch::anywhere(&self.engine, id, self.scope()).await
    }

    /// The [names](JobRequest::name) of those of this user's jobs `ids` (as a list gives them)
    /// that have one, of any instance: this instance's from memory, the others' from the store.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] if the store cannot be reached.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) async fn job_names(&self, ids: &[JobId]) -> Result<HashMap<JobId, Arc<str>>, Error> {
        names::names_of(&self.engine, ids, self.scope()).await
    }

    /// Whether job `id` is held by this instance (whoever started it).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn holds(&self, id: &JobId) -> bool {
        self.engine.holds(id)
    }

    /// The shared store's change notices, for following other instances' jobs; `None`
    /// without a store.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn remote_changes(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<crate::store::RemoteChange>> {
        self.engine.remote_changes()
    }

    /// Follows the changes of this user's jobs only, as [`JobRegistry::watch_all`](crate::JobRegistry::watch_all).
    #[must_use = "a feed only collects changes until it is read"]
    pub fn watch_all(&self) -> StatusFeed {
        StatusFeed::new(self.engine.clone(), self.scope())
    }

    /// This user's jobs that `filter` selects, as [`JobRegistry::list`](crate::JobRegistry::list); a user named in `filter`
    /// is ignored.
    pub fn list(&self, filter: &JobFilter) -> Vec<AsynchronousJobStatus> {
        self.engine.list(filter, self.scope())
    }

    /// How many of this user's jobs are in each state, queued and running ones apart; see
    /// [`JobRegistry::counts_for`](crate::JobRegistry::counts_for).
    pub fn counts(&self) -> JobCounts {
        self.engine.counts_for(self.user)
    }
}

impl std::fmt::Debug for UserView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserView")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}
