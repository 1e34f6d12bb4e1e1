//! The engine behind every [`JobRegistry`](crate::JobRegistry) and [`UserView`](crate::UserView):
//! starts jobs, ends them exactly once, reads them for a scope (everyone, or one user), and drops
//! finished ones by the retention rules. The façades are thin: each public method is one call
//! here with its scope.
//!
//! Parts, each in its own file: the sharded job [`table`], [`retention`] of finished statuses,
//! the [`scheduler`] (concurrency limits, and the order waiting jobs start in), request
//! de-duplication ([`dedup`]), the [`supervisor`] task that runs one job, [`cancel`] and
//! [`shutdown`]. Every change of a job goes through
//! [`Job::apply`], which hands it to the [seam](crate::seam); the engine knows nothing of who
//! listens there (feeds, tracing, observers, a store).
//!
//! # Lock order
//!
//! The crate's one lock order, which every other module's notes link to. Locks are taken in this
//! order, each only after those before it, and none is held across an `.await`:
//!
//! 1. the request de-duplication index ([`dedup`]; held while a new cacheable job is inserted, so
//!    that equal requests racing start one job);
//! 2. a shard of the job [`table`];
//! 3. the [`scheduler`]'s lock;
//! 4. the [`retention`] queue;
//! 5. a job's status lock (`job/mod.rs`): the last. Under it nothing else is locked and no user
//!    code runs.
//!
//! Apart from that chain, a job's events are delivered (to feeds, `tracing`, metrics and
//! observers, which is user code) with none of the locks above held: delivery takes the seam's
//! feed index (read), then one feed's pending lock. A job's events keep their etag order without a
//! lock, through the job's outbox (`job/outbox.rs`).

pub(crate) mod cancel;
mod cluster;
pub(crate) mod config;
mod dedup;
mod retention;
mod scheduler;
pub(crate) mod shutdown;
pub(crate) mod spawn;
mod supervisor;
mod table;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::change::Change;
use crate::job::{Applied, Job};
use crate::seam::Seam;
use crate::store::Store;
use crate::{
    AsynchJobState, AsynchronousJobStatus, Error, Etag, JobCounts, JobFilter, JobId, JobPage,
};

use self::config::Config;
use self::dedup::Dedup;
use self::retention::Retention;
use self::scheduler::Scheduler;
use self::table::Table;

/// What every clone of a registry, every view and feed, and every job's task share.
pub(crate) struct Engine {
    pub(crate) config: Config,
    table: Table,
    retention: Retention,
    pub(crate) seam: Arc<Seam>,
    scheduler: Option<Scheduler>,
    dedup: Dedup,
    next_id: AtomicU64,
    /// Every job's token is a child of this one.
    root: CancellationToken,
    /// Fired by a shutdown whose grace has run out: stops canceled jobs at once.
    kill: CancellationToken,
    tracker: TaskTracker,
    shut_down: AtomicBool,
    /// The store several instances share, if any: ids come from it, and reads of jobs not held
    /// here go to it.
    store: Option<Arc<dyn Store>>,
}

/// Whose jobs a caller may see: the registry sees every job, a [`UserView`](crate::UserView)
/// only its user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    User(u64),
}

impl Scope {
    fn admits(self, job: &Job) -> Result<(), Error> {
        match self {
            Scope::User(user) if job.user() != Some(user) => Err(Error::NotYourJob(job.id)),
            _ => Ok(()),
        }
    }

    pub(crate) fn user(self) -> Option<u64> {
        match self {
            Scope::All => None,
            Scope::User(user) => Some(user),
        }
    }
}

impl Engine {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new_cyclic(|weak: &Weak<Engine>| {
            // Enough shards that threads rarely meet on one, as in sharded caches: 4 per core.
            let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
            let store = config.store.as_ref().map(|store| store.0.clone());
            let observers = config.observers.clone();
            // The store hears every event of every job, as an observer does, but progress only
            // coalesced (see the seam).
            let writer = store
                .as_ref()
                .map(|store| store.attach(Arc::new(cluster::Local(weak.clone()))));
            Engine {
                table: Table::new(cores * 4),
                retention: Retention::new(config.keep_finished_for, config.keep_finished_at_most),
                seam: Arc::new(Seam::new(observers, writer)),
                scheduler: (config.max_running.is_some() || config.max_running_per_user.is_some())
                    .then(|| {
                        Scheduler::new(
                            config.max_running,
                            config.max_running_per_user,
                            config.fair_queue,
                        )
                    }),
                dedup: Dedup::default(),
                next_id: AtomicU64::new(config.first_job_id),
                root: CancellationToken::new(),
                kill: CancellationToken::new(),
                tracker: TaskTracker::new(),
                shut_down: AtomicBool::new(false),
                store,
                config,
            }
        })
    }

    /// The next job id: from the shared store, if there is one, so that no two instances give
    /// the same; otherwise from this registry's counter.
    fn next_id(&self) -> Result<JobId, Error> {
        match &self.store {
            Some(store) => store.next_id().map(JobId::from_u64).ok_or_else(|| {
                Error::StoreUnavailable(
                    "no job ids are reserved, and the store cannot be reached to reserve more"
                        .into(),
                )
            }),
            // Ids never wrap: the builder keeps the first one at most `u64::MAX / 2`.
            None => Ok(JobId::from_u64(
                self.next_id.fetch_add(1, Ordering::Relaxed),
            )),
        }
    }

    /// Ends a job with `change`; whoever ends it also retires it, so that happens once.
    pub(crate) fn finish(&self, job: &Job, change: Change<'_>) {
        if job.apply(&self.seam, change) == Applied::Changed {
            self.retire(job);
        }
    }

    /// Called once, by whoever ended the job, so `ended` is always there.
    fn retire(&self, job: &Job) {
        let Some(ended) = job.ended() else { return };
        if let Some(scheduler) = &self.scheduler {
            // A job that ended while still queued never held a slot; it leaves the queue.
            if ended.queued {
                scheduler.remove(&self.seam, job);
            } else {
                scheduler.release(&self.seam, job);
            }
        }
        if job.cacheable && ended.state == AsynchJobState::Failed {
            self.dedup.remove(job);
        }
        self.retention.push(job.id, ended.at);
        self.sweep();
    }

    /// Drops the finished statuses that the retention rules say to drop.
    fn sweep(&self) {
        let now = Instant::now();
        while let Some(id) = self.retention.pop_due(now) {
            if let Some(job) = self.table.remove(id) {
                if job.cacheable {
                    self.dedup.remove(&job);
                }
                job.removed(&self.seam);
                // Dropped here, outside every lock: the last reference frees the job's bodies.
                drop(job);
            }
        }
    }

    /// Whether a job that finished at `finished_at` is past its retention time: the one check
    /// every read makes. A read that finds one sweeps, so the status is dropped for real.
    fn expired(&self, finished_at: Instant) -> bool {
        let expired = self.retention.expired(finished_at, Instant::now());
        if expired {
            self.sweep();
        }
        expired
    }

    /// A snapshot of the job's status, for a caller in `scope`: one shard read lock and one job
    /// lock, with no reference count bumped on a job many poll.
    pub(crate) fn status(&self, id: &JobId, scope: Scope) -> Result<AsynchronousJobStatus, Error> {
        // One `Result` all the way out, so that the status is written once, in place.
        let mut expired = false;
        let read = self.table.with(*id, |job| {
            match job
                .snapshot_unless(|finished_at| self.retention.expired(finished_at, Instant::now()))
            {
                Some(status) => scope.admits(job).map(|()| status),
                // A status past its retention is unknown to everyone, whoever started it.
                None => {
                    expired = true;
                    Err(Error::UnknownJob(*id))
                }
            }
        });
        if expired {
            self.sweep();
        }
        read.unwrap_or(Err(Error::UnknownJob(*id)))
    }

    /// The job, for a caller in `scope`, if known and not past its retention time.
    pub(crate) fn find(&self, id: &JobId, scope: Scope) -> Result<Arc<Job>, Error> {
        let job = self.table.get(*id).ok_or(Error::UnknownJob(*id))?;
        // A status past its retention is unknown to everyone, whoever started it.
        if job.finished_at().is_some_and(|at| self.expired(at)) {
            return Err(Error::UnknownJob(*id));
        }
        scope.admits(&job)?;
        Ok(job)
    }

    /// Waits for the job's final status; see [`JobRegistry::wait`](crate::JobRegistry::wait).
    pub(crate) async fn wait(
        &self,
        id: &JobId,
        scope: Scope,
    ) -> Result<AsynchronousJobStatus, Error> {
        let job = self.find(id, scope)?;
        Ok(job.finished().await)
    }

    /// Waits for the job's etag to differ from `etag`; see
    /// [`JobRegistry::wait_for_change`](crate::JobRegistry::wait_for_change).
    pub(crate) async fn wait_for_change(
        &self,
        id: &JobId,
        etag: &Etag,
        scope: Scope,
    ) -> Result<AsynchronousJobStatus, Error> {
        let job = self.find(id, scope)?;
        Ok(job.changed_from(etag.version()).await)
    }

    /// The status of a job a feed was told of, unless it is gone.
    pub(crate) fn feed_status(&self, id: JobId) -> Option<AsynchronousJobStatus> {
        self.status(&id, Scope::All).ok()
    }

    /// One page of the jobs that `filter` selects within `scope`, newest first.
    pub(crate) fn list(&self, filter: &JobFilter, scope: Scope) -> JobPage {
        self.sweep();
        let user = scope.user().or(filter.user);
        let now = Instant::now();
        let mut jobs = match user {
            // O(that user's jobs), through the table's per-user index.
            Some(user) => self.table.jobs_of(user),
            None => self.table.jobs(|_| true),
        };
        jobs.retain(|job| {
            filter
                .name
                .as_ref()
                .is_none_or(|name| job.name.as_ref() == Some(name))
                && filter.admits_request(job.request.as_deref())
                && filter.before.is_none_or(|before| job.id < before)
        });
        jobs.sort_unstable_by_key(|job| std::cmp::Reverse(job.id));
        let statuses = jobs
            .iter()
            .filter_map(|job| job.snapshot_unless(|at| self.retention.expired(at, now)))
            .filter(|status| filter.admits_state(status))
            .take(filter.limit.saturating_add(1))
            .collect();
        JobPage::new(statuses, filter, None)
    }

    /// The per-state counts of the jobs held here that `filter` selects by user, name and request
    /// type: from the counters when it selects by none of them, else from each job it selects
    /// (a user's through the per-user index).
    pub(crate) fn counts_matching(&self, filter: &JobFilter) -> JobCounts {
        if filter.user.is_none() && filter.name.is_none() && filter.concrete_type.is_none() {
            return self.counts();
        }
        self.sweep();
        let now = Instant::now();
        let jobs = match filter.user {
            Some(user) => self.table.jobs_of(user),
            None => self.table.jobs(|_| true),
        };
        let (mut running, mut queued, mut complete, mut failed) = (0, 0, 0, 0);
        for job in jobs {
            if filter
                .name
                .as_ref()
                .is_some_and(|name| job.name.as_ref() != Some(name))
                || !filter.admits_request(job.request.as_deref())
            {
                continue;
            }
            let (state, is_queued, changed_at) = job.standing();
            match state {
                _ if state.is_terminal() && self.retention.expired(changed_at, now) => {}
                AsynchJobState::Processing if is_queued => queued += 1,
                AsynchJobState::Processing => running += 1,
                AsynchJobState::Complete => complete += 1,
                AsynchJobState::Failed => failed += 1,
            }
        }
        JobCounts::new(running + queued, complete, failed).with_queued(queued)
    }

    /// The per-state counts of the jobs in `scope` held here.
    pub(crate) fn counts_in(&self, scope: Scope) -> JobCounts {
        let mut filter = JobFilter::new();
        filter.user = scope.user();
        self.counts_matching(&filter)
    }

    /// The per-state counts, without sweeping (for `Debug`, which must not change anything).
    pub(crate) fn counts_now(&self) -> JobCounts {
        let waiting = self.scheduler.as_ref().map_or(0, Scheduler::waiting);
        self.seam.counts().with_queued(waiting)
    }

    /// The per-state counts, after dropping statuses past their retention time, so that they are
    /// not counted even in an idle registry.
    pub(crate) fn counts(&self) -> JobCounts {
        self.sweep();
        self.counts_now()
    }

    /// How many jobs in `scope` are held, after dropping statuses past their retention time.
    pub(crate) fn len_in(&self, scope: Scope) -> usize {
        match scope {
            Scope::All => {
                self.sweep();
                self.table.len()
            }
            Scope::User(_) => self.counts_in(scope).total(),
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub(crate) fn max_running(&self) -> Option<usize> {
        self.scheduler.as_ref().and_then(Scheduler::max)
    }

    /// The name a job held here was started with, for a caller in `scope`; `None` for a job
    /// without one, not held here, or not the caller's.
    pub(crate) fn name_of(&self, id: &JobId, scope: Scope) -> Option<Arc<str>> {
        self.table
            .with(*id, |job| scope.admits(job).ok().and(job.name.clone()))
            .flatten()
    }
}
