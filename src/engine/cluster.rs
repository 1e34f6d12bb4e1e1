//! Jobs of the whole cluster: reads, waits and cancels that reach jobs held by other instances
//! through the shared store, and what the store may do to this instance's jobs ([`Local`]).
//!
//! A job held here is always answered from memory (it is the freshest copy); the store is asked
//! only about ids this instance does not hold. Without a store, every call here is the local one.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::store::{self, Cached, RemoteCancel, Store};
use crate::{
    AsynchronousJobStatus, CancelCause, CancelOutcome, Error, Etag, JobCounts, JobFilter, JobFn,
    JobId, JobPage, JobRequest, Spawned,
};

use super::{Engine, Scope};

/// How long a wait for another instance's job goes without re-reading it, however quiet the
/// store's notifications are (they are lost while the store reconnects).
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// How long a cancel of another instance's job waits for that instance to apply it. The owner
/// hears of it through the store's notification at once, or within a second by polling.
const REMOTE_CANCEL_WAIT: Duration = Duration::from_secs(2);

/// The registry as its store sees it: held weakly, so a store does not keep a dropped registry
/// alive, and every call on a registry that is gone does nothing.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct Local(pub(crate) Weak<Engine>);

impl store::Local for Local {
    fn cancel(&self, id: JobId) -> bool {
        let Some(engine) = self.0.upgrade() else {
            return false;
        };
        let Some(job) = engine.table.get(id) else {
            return false;
        };
        engine.cancel(&job);
        true
    }

    fn cancel_all(&self) {
        if let Some(engine) = self.0.upgrade() {
            for job in engine.table.jobs(|job| !job.is_finished()) {
                engine.cancel_for(&job, CancelCause::LeaseLost);
            }
        }
    }

    fn status(&self, id: JobId) -> Option<(AsynchronousJobStatus, bool)> {
        let engine = self.0.upgrade()?;
        engine.table.with(id, |job| job.snapshot_to_write())
    }

    fn retention(&self) -> (Duration, usize) {
        match self.0.upgrade() {
            Some(engine) => (
                engine.config.keep_finished_for,
                engine.config.keep_finished_at_most,
            ),
            None => (Duration::ZERO, 0),
        }
    }
}

impl Engine {
    fn store(&self) -> Option<&dyn Store> {
        self.store.as_deref()
    }

    /// Whether the job is held by this instance (running here, or finished and retained).
    pub(crate) fn holds(&self, id: &JobId) -> bool {
        self.table.with(*id, |_| ()).is_some()
    }

    /// The status of a job of any instance, for a caller in `scope`.
    pub(crate) async fn cluster_status(
        &self,
        id: &JobId,
        scope: Scope,
    ) -> Result<AsynchronousJobStatus, Error> {
        match self.status(id, scope) {
            Err(Error::UnknownJob(_)) if !self.holds(id) => self.read_remote(id, scope).await,
            local => local,
        }
    }

    /// Another instance's job, as the store last heard of it.
    async fn read_remote(&self, id: &JobId, scope: Scope) -> Result<AsynchronousJobStatus, Error> {
        let Some(store) = self.store() else {
            return Err(Error::UnknownJob(*id));
        };
        let status = store.read(*id).await?.ok_or(Error::UnknownJob(*id))?;
        match scope {
            Scope::User(user) if status.started_by_user_id != Some(user) => {
                Err(Error::NotYourJob(*id))
            }
            _ => Ok(status),
        }
    }

    /// Cancels a job of any instance. Another instance's job is canceled by that instance, as it
    /// would cancel its own; this waits up to [`REMOTE_CANCEL_WAIT`] for it to show the flag, and
    /// answers `Requested` once it does, or `Recorded` if it has not yet.
    pub(crate) async fn cluster_cancel(
        &self,
        id: &JobId,
        scope: Scope,
    ) -> Result<CancelOutcome, Error> {
        match self.cancel_id(id, scope) {
            Err(Error::UnknownJob(_)) if !self.holds(id) => {
                let Some(store) = self.store() else {
                    return Err(Error::UnknownJob(*id));
                };
                match store.cancel(*id, scope.user()).await? {
                    RemoteCancel::UnknownJob => Err(Error::UnknownJob(*id)),
                    RemoteCancel::NotYourJob => Err(Error::NotYourJob(*id)),
                    RemoteCancel::AlreadyFinished => Ok(CancelOutcome::AlreadyFinished),
                    RemoteCancel::AlreadyRequested => Ok(CancelOutcome::AlreadyRequested),
                    RemoteCancel::Requested => {
                        let applied =
                            self.wait_remote(id, scope, |s| s.job_canceling || s.is_terminal());
                        match tokio::time::timeout(REMOTE_CANCEL_WAIT, applied).await {
                            Ok(Ok(_)) => Ok(CancelOutcome::Requested),
                            Ok(Err(_)) | Err(_) => Ok(CancelOutcome::Recorded),
                        }
                    }
                }
            }
            local => local,
        }
    }

    /// Waits until `done` holds of a job of any instance.
    async fn wait_remote(
        &self,
        id: &JobId,
        scope: Scope,
        done: impl Fn(&AsynchronousJobStatus) -> bool,
    ) -> Result<AsynchronousJobStatus, Error> {
        let Some(store) = self.store() else {
            return Err(Error::UnknownJob(*id));
        };
        loop {
            // Listening before reading: a change between the two still wakes the wait.
            let changed = store.changed(*id, REREAD_AFTER);
            let status = self.read_remote(id, scope).await?;
            if done(&status) {
                return Ok(status);
            }
            changed.await;
        }
    }

    /// [`Engine::wait`] for a job of any instance.
    pub(crate) async fn cluster_wait(
        &self,
        id: &JobId,
        scope: Scope,
    ) -> Result<AsynchronousJobStatus, Error> {
        match self.wait(id, scope).await {
            Err(Error::UnknownJob(_)) if !self.holds(id) => {
                self.wait_remote(id, scope, AsynchronousJobStatus::is_terminal)
                    .await
            }
            local => local,
        }
    }

    /// [`Engine::wait_for_change`] for a job of any instance.
    pub(crate) async fn cluster_wait_for_change(
        &self,
        id: &JobId,
        etag: &Etag,
        scope: Scope,
    ) -> Result<AsynchronousJobStatus, Error> {
        match self.wait_for_change(id, etag, scope).await {
            Err(Error::UnknownJob(_)) if !self.holds(id) => {
                self.wait_remote(id, scope, |s| &s.etag != etag || s.is_terminal())
                    .await
            }
            local => local,
        }
    }

    /// For a remote [`JobWatch`](crate::JobWatch): another instance's job once its etag is no longer `etag` (or
    /// it finished); `None` once it is gone (dropped by retention) or not the caller's. Waits out
    /// a store that cannot be reached, reading again every [`REREAD_AFTER`].
    pub(crate) async fn cluster_changed(
        &self,
        id: JobId,
        etag: Etag,
        scope: Scope,
    ) -> Option<AsynchronousJobStatus> {
        loop {
            match self.cluster_wait_for_change(&id, &etag, scope).await {
                Ok(status) => return Some(status),
                Err(Error::StoreUnavailable(_)) => tokio::time::sleep(REREAD_AFTER).await,
                Err(_) => return None,
            }
        }
    }

    /// One page of the jobs of every instance that `filter` selects within `scope`, newest first.
    /// Jobs held here are listed as they are in memory (fresher than the store's copy).
    pub(crate) async fn cluster_list(
        &self,
        filter: &JobFilter,
        scope: Scope,
    ) -> Result<JobPage, Error> {
        let local = self.list(filter, scope);
        let Some(store) = self.store() else {
            return Ok(local);
        };
        let mut filter = filter.clone();
        filter.user = scope.user().or(filter.user);
        let stored = store.list(&filter).await?;
        // Each source lists up to one more than a page; where one was cut short, jobs below its
        // last id are not known yet, so the page ends there.
        let cut = |page: &JobPage, last: Option<JobId>| page.next.as_ref().and(last);
        let local_cut = cut(&local, local.jobs.last().map(|s| s.job_id));
        let stored_cut = stored.more_below;
        let floor = local_cut.max(stored_cut);
        let mut by_id: std::collections::BTreeMap<JobId, AsynchronousJobStatus> = stored
            .jobs
            .into_iter()
            .filter(|s| !self.holds(&s.job_id))
            .map(|s| (s.job_id, s))
            .collect();
        by_id.extend(local.jobs.into_iter().map(|s| (s.job_id, s)));
        let jobs = by_id
            .into_values()
            .rev()
            .filter(|s| floor.is_none_or(|floor| s.job_id >= floor))
            .collect();
        Ok(JobPage::new(jobs, &filter, floor))
    }

    /// Every job in `scope` of every instance, newest first, read a page at a time (for a feed's
    /// resync and the event stream's resume, which look for every job changed since a moment,
    /// whatever its id).
    pub(crate) async fn cluster_list_all(
        &self,
        scope: Scope,
    ) -> Result<Vec<AsynchronousJobStatus>, Error> {
        let mut jobs = Vec::new();
        let mut filter = Some(JobFilter::new());
        while let Some(this) = filter {
            let page = self.cluster_list(&this, scope).await?;
            jobs.extend(page.jobs);
            filter = page.next;
        }
        Ok(jobs)
    }

    /// Jobs per state in `scope` that `filter` selects (by user, name and request type) across
    /// every instance, as the store counts them (this instance's changes reach it within a flush
    /// interval).
    pub(crate) async fn cluster_counts(
        &self,
        filter: &JobFilter,
        scope: Scope,
    ) -> Result<JobCounts, Error> {
        let mut filter = filter.clone();
        filter.user = scope.user().or(filter.user);
        match self.store() {
            Some(store) => store.counts(&filter).await,
            None => Ok(self.counts_matching(&filter)),
        }
    }

    /// The name of a job of any instance, if it has one; the job must be in `scope`.
    pub(crate) async fn cluster_name(
        &self,
        id: &JobId,
        scope: Scope,
    ) -> Result<Option<Arc<str>>, Error> {
        self.cluster_status(id, scope).await?;
        Ok(self.cluster_names(&[*id], scope).await?.remove(id))
    }

    /// The names of those of the jobs `ids` that have one: from memory for jobs held here (for a
    /// caller in `scope`), from the store for the others. The others must be jobs the caller may
    /// see, as a list for `scope` gives them: the store does not check whose they are.
    pub(crate) async fn cluster_names(
        &self,
        ids: &[JobId],
        scope: Scope,
    ) -> Result<HashMap<JobId, Arc<str>>, Error> {
        let mut names = HashMap::new();
        let mut elsewhere = Vec::new();
        for id in ids {
            if self.holds(id) {
                if let Some(name) = self.name_of(id, scope) {
                    names.insert(*id, name);
                }
            } else {
                elsewhere.push(*id);
            }
        }
        if let Some(store) = self.store().filter(|_| !elsewhere.is_empty()) {
            names.extend(store.names(&elsewhere).await?);
        }
        Ok(names)
    }

    /// [`Engine::spawn`], with request caching across every instance: a cacheable request is
    /// first looked up here, then in the store, under a claim that makes equal requests on other
    /// instances wait until this one's job is recorded (or the lookup found one).
    ///
    /// A store that cannot be reached does not stop the job: the request is answered from this
    /// instance's jobs alone, as without a store (an equal request's job on another instance is
    /// then not found, and a second job starts).
    pub(crate) async fn submit<Fut>(
        self: &Arc<Self>,
        request: JobRequest,
        job: impl JobFn<Fut>,
    ) -> Result<Spawned, Error> {
        let store = match self.store.as_ref() {
            Some(store) if request.cacheable && !self.is_shut_down() => store,
            _ => return self.spawn(request, job),
        };
        let now = tokio::time::Instant::now();
        if let Some(id) = self
            .dedup
            .peek(&request, |at| self.retention.expired(at, now))
        {
            return Ok(Spawned::Reused(id));
        }
        let lookup = store
            .find_or_claim(
                request.user,
                request.body.as_deref(),
                self.config.keep_finished_for,
            )
            .await;
        let claim = match lookup {
            // One of this instance's: its row may lag its status (a cancel not written yet), so
            // memory decides.
            Ok(Cached::Found(id)) if self.holds(&id) => {
                let now = tokio::time::Instant::now();
                match self
                    .dedup
                    .peek(&request, |at| self.retention.expired(at, now))
                {
                    Some(local) => return Ok(Spawned::Reused(local)),
                    None => None,
                }
            }
            Ok(Cached::Found(id)) => return Ok(Spawned::Reused(id)),
            Ok(Cached::Claimed(claim)) => Some(claim),
            Err(_unreachable) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "asyncjobs", error = %_unreachable, "request cache lookup failed; answering from this instance's jobs only");
                None
            }
        };
        let spawned = self.spawn(request, job)?;
        if let (Some(claim), Spawned::Started(id)) = (claim, spawned) {
            if let Some(status) = self.table.with(id, |job| (job.snapshot(), job.is_queued())) {
                if let Err(_unrecorded) = claim.settle(status).await {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(target: "asyncjobs", job_id = %id, error = %_unrecorded, "could not record a cached request's job; equal requests on other instances will not find it");
                }
            }
        }
        Ok(spawned)
    }

    /// The store's change notices from now on (of every instance's jobs, this one's included);
    /// `None` without a store.
    pub(crate) fn remote_changes(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<store::RemoteChange>> {
        self.store().map(|store| store.changes())
    }

    /// Waits until other instances can find job `id` (its start is written to the store); at
    /// once without a store.
    pub(crate) async fn announced(&self, id: &JobId) {
        if let Some(store) = self.store() {
            store.announced(*id).await;
        }
    }

    /// Leaves the cluster at shutdown: the store writes what is pending.
    pub(crate) async fn close_store(&self) {
        if let Some(store) = self.store() {
            store.close().await;
        }
    }
}
