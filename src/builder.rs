//! Options of a registry.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::engine::config::Config;
use crate::{SharedStore, StatusObserver};

/// Default of [`JobRegistryBuilder::cancel_grace`]: 30 seconds, the grace a process supervisor
/// such as Kubernetes gives a container before it kills it.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(30);

/// Default of [`JobRegistryBuilder::keep_finished_for`]: one hour, ample for any client polling
/// at Synapse's pace to read a final status.
pub const DEFAULT_KEEP_FINISHED_FOR: Duration = Duration::from_secs(60 * 60);

/// Default of [`JobRegistryBuilder::keep_finished_at_most`]: 10,000 finished statuses, a few
/// megabytes besides their bodies.
pub const DEFAULT_KEEP_FINISHED_AT_MOST: usize = 10_000;

/// The highest first id: above it, ids could run out (wrap) within a registry's life.
const MAX_FIRST_JOB_ID: u64 = u64::MAX / 2;

/// Builds a [`JobRegistry`](crate::JobRegistry) with options; [`JobRegistry::new`](crate::JobRegistry::new) is the same with every default.
///
/// ```
/// use std::time::Duration;
/// use asyncjobs::JobRegistry;
///
/// let registry = JobRegistry::builder()
///     .cancel_grace(Duration::from_secs(5))
///     .keep_finished_for(Duration::from_secs(15 * 60))
///     .keep_finished_at_most(1_000)
///     .build();
/// # drop(registry);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct JobRegistryBuilder {
    pub(crate) config: Config,
    first_job_id: Option<u64>,
}

impl JobRegistryBuilder {
    pub(crate) fn new() -> Self {
        JobRegistryBuilder {
            config: Config {
                cancel_grace: DEFAULT_CANCEL_GRACE,
                runtime: None,
                keep_finished_for: DEFAULT_KEEP_FINISHED_FOR,
                keep_finished_at_most: DEFAULT_KEEP_FINISHED_AT_MOST,
                max_running: None,
                max_running_per_user: None,
                fair_queue: false,
                first_job_id: 0,
                observers: Vec::new(),
                store: None,
            },
            first_job_id: None,
        }
    }

    /// How long a job that was asked to cancel may go on before the registry stops it (drops its
    /// future) and ends it FAILED with exception [`exception::CANCELED`](crate::exception::CANCELED).
    /// A job that stops by itself within the grace ends as it chooses.
    ///
    /// Defaults to: [`DEFAULT_CANCEL_GRACE`] (30 seconds).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// How long a finished job's status stays readable; after that the job is unknown.
    ///
    /// Defaults to: [`DEFAULT_KEEP_FINISHED_FOR`] (one hour).
    pub fn keep_finished_for(mut self, keep_for: Duration) -> Self {
        self.config.keep_finished_for = keep_for;
        self
    }

    /// The most finished statuses kept; when one more job finishes, the oldest finished status is
    /// dropped. Running jobs are never dropped and do not count. `0` drops a status as soon as the
    /// job finishes (a [`wait`](crate::JobRegistry::wait) already in progress still gets it).
    ///
    /// Defaults to: [`DEFAULT_KEEP_FINISHED_AT_MOST`] (10,000).
    pub fn keep_finished_at_most(mut self, count: usize) -> Self {
        self.config.keep_finished_at_most = count;
        self
    }

    /// The most jobs that run at once. Further jobs wait: they are PROCESSING meanwhile (as in
    /// Synapse), with a progress message that starts with `Queued:`, and `startedOn` is when they
    /// were spawned. Canceling a queued job ends it at once without ever running it. `0` is taken
    /// as `1`.
    ///
    /// Waiting jobs start in the order they were spawned, a higher
    /// [priority](crate::JobRequest::priority) first, all in one queue: one user who queues many
    /// jobs makes every other user wait behind them. For per-user fairness add
    /// [`fair_queue`](JobRegistryBuilder::fair_queue) or
    /// [`max_running_per_user`](JobRegistryBuilder::max_running_per_user).
    ///
    /// With a [shared store](JobRegistryBuilder::store), the limit applies to each instance's own
    /// jobs, not to the cluster's.
    ///
    /// Defaults to: no limit.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use asyncjobs::{JobRegistry, JobRequest};
    ///
    /// let registry = JobRegistry::builder().max_running(1).build();
    /// let first = registry.spawn(JobRequest::default(), |job| async move {
    ///     job.cancelled().await;
    ///     Err::<(), _>("canceled")
    /// }).await?;
    /// let second = registry.spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) }).await?;
    /// let queued = registry.status(&second).await?;
    /// assert!(queued.progress_message.as_deref().unwrap().starts_with("Queued"));
    /// registry.cancel(&first).await?;
    /// registry.wait(&second).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_running(mut self, max: usize) -> Self {
        self.config.max_running = Some(max);
        self
    }

    /// The most jobs that one user runs at once, beside the registry-wide
    /// [`max_running`](JobRegistryBuilder::max_running). A user at the limit waits without
    /// holding up other users: their jobs take the free slots meanwhile. Jobs with no user
    /// ([`started_by`](crate::JobRequest::started_by) not given) count as one user. `0` is taken
    /// as `1`.
    ///
    /// Implies the [fair order](JobRegistryBuilder::fair_queue). With a
    /// [shared store](JobRegistryBuilder::store), it applies to each instance's own jobs.
    ///
    /// Defaults to: no limit.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncjobs::Error> {
    /// use asyncjobs::{JobRegistry, JobRequest};
    ///
    /// let registry = JobRegistry::builder().max_running(4).max_running_per_user(1).build();
    /// let alice = registry.as_user(1);
    /// let export = || JobRequest::new(serde_json::json!({"concreteType": "org.example.Export"}));
    /// let first = alice.spawn(export(), |job| async move {
    ///     job.cancelled().await;
    ///     Err::<(), _>("canceled")
    /// }).await?;
    /// let second = alice.spawn(export(), |_| async { Ok::<_, &str>(()) }).await?;
    /// assert_eq!(
    ///     alice.status(&second).await?.progress_message.as_deref(),
    ///     Some("Queued: next of your jobs; your limit of 1 running job is reached")
    /// );
    /// // Another user is not held up.
    /// let bob = registry.as_user(2).spawn(export(), |_| async { Ok::<_, &str>(()) }).await?;
    /// registry.wait(&bob).await?;
    /// alice.cancel(&first).await?;
    /// alice.wait(&second).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_running_per_user(mut self, max: usize) -> Self {
        self.config.max_running_per_user = Some(max);
        self
    }

    /// Waiting jobs take free slots in turns across users, rather than in one queue: each user
    /// with a job waiting (and below [its limit](JobRegistryBuilder::max_running_per_user)) gets
    /// one slot per round, in the order they started waiting, so a user's next job waits for one
    /// turn of each other user waiting, not for every job queued before it. Within one user,
    /// jobs start by [priority](crate::JobRequest::priority), then in the order they were spawned.
    /// Jobs with no user are one more user.
    ///
    /// A waiting job's progress message then says why it waits and its place among its user's
    /// waiting jobs, and changes (with a new etag) as it moves up: `Queued: 3 of your jobs
    /// ahead`, exact up to 4, then in steps of 5, 10, 20, 50, 100, … (`Queued: 20 or more of your
    /// jobs ahead`); for the first, `Queued: next of your jobs, waiting for a free slot (…)` or `Queued: next of your
    /// jobs; your limit of 2 running jobs is reached`. The place is among the user's own jobs:
    /// how long it waits also depends on how many other users have jobs waiting.
    ///
    /// Has an effect only with [`max_running`](JobRegistryBuilder::max_running) or
    /// [`max_running_per_user`](JobRegistryBuilder::max_running_per_user) (which implies it).
    ///
    /// Defaults to: off (one queue, every waiting job with the same message).
    pub fn fair_queue(mut self) -> Self {
        self.config.fair_queue = true;
        self
    }

    /// The runtime that jobs run on. Without one, jobs run on the runtime current where
    /// [`spawn`](crate::JobRegistry::spawn) is called, and `spawn` outside a runtime is an error.
    ///
    /// Defaults to: none (the caller's runtime).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.config.runtime = Some(runtime);
        self
    }

    /// The id of the first job; later jobs count up from it. Use it to continue a sequence that a
    /// previous process left off (e.g. stored in a database).
    ///
    /// Defaults to: the number of milliseconds since the Unix epoch at `build`, times 1000
    /// (e.g. `1764379461000000`), so ids do not repeat across restarts of the process as long as
    /// it starts fewer than 1000 jobs per millisecond on average. A client polling an id from
    /// before a restart then gets "unknown job", never another job's status. Values above
    /// `u64::MAX / 2` are taken as `u64::MAX / 2`, so ids never run out.
    pub fn first_job_id(mut self, id: u64) -> Self {
        self.first_job_id = Some(id.min(MAX_FIRST_JOB_ID));
        self
    }

    /// Adds an observer, told of every event of every job's life (created, changed, finished,
    /// removed); see [`StatusObserver`] for what it may and must not do. Observers are called in
    /// the order they were added.
    ///
    /// Defaults to: none. With none, reporting progress costs what it would without this hook.
    pub fn observe(mut self, observer: impl StatusObserver) -> Self {
        self.config.observers.push(Arc::new(observer));
        self
    }

    /// A store that several instances of a service share (e.g. a
    /// `PostgresStore`, feature `postgres`), so that each instance answers for every job of every
    /// instance: job ids then come from the store and never collide, every job's status is
    /// written to it, and every call of the registry (and of its users' views) reaches jobs of
    /// other instances. [`local`](crate::JobRegistry::local) stays about this instance's jobs
    /// and never waits.
    ///
    /// Build the registry inside the tokio runtime the store was connected on.
    ///
    /// Defaults to: none; every status lives in this process only.
    pub fn store(mut self, store: impl Into<SharedStore>) -> Self {
        self.config.store = Some(store.into());
        self
    }

    /// The settings, with the default first id (from the clock) filled in.
    pub(crate) fn into_config(mut self) -> Config {
        self.config.first_job_id = self.first_job_id.unwrap_or_else(|| {
            u64::try_from(chrono::Utc::now().timestamp_millis())
                .unwrap_or(0)
                .saturating_mul(1000)
        });
        self.config
    }
}
