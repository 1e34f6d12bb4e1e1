//! The public face of the store, and what it does for the registry it is attached to: hand out
//! ids, keep its lease, listen for cancels and changes, reap lost instances, sweep retention, and
//! answer for other instances' jobs.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::mirror::Mirror;
use super::{CacheLookup, StatusRow};
use super::{CancelRequest, Db, Listener, Notice, StoreError};
use crate::store::{self as seam, BoxFuture, Cached, Local, RemoteCancel, RemoteChange, Store};
use crate::{
    AsynchJobState, AsynchronousJobStatus, Error, JobCounts, JobId, SharedStore, StatusObserver,
};

/// Default of [`PostgresStoreBuilder::lease`]: 10 seconds. Renewed every third of it, so a
/// dead instance's jobs read FAILED ([`NODE_LOST`](crate::exception::NODE_LOST)) within about
/// 15 seconds (the lease, plus up to a third of it until another instance's reaper runs).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Default of [`PostgresStoreBuilder::flush_interval`]: progress is written at most this often.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// How often an instance asks the database for cancels it may have missed (notifications are
/// lost while its listening connection reconnects).
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// How often one instance trims the database by the retention rules.
const RETENTION_SWEEP: Duration = Duration::from_secs(10);

/// Rows deleted per statement by a retention sweep.
const RETENTION_BATCH: usize = 1_000;

/// How often a closing store tries to write what is pending, and how long it waits between.
const CLOSE_TRIES: u32 = 5;
const CLOSE_RETRY: Duration = Duration::from_millis(500);

/// How many change notices a slow cluster-wide follower may be behind before it resyncs.
const CHANGES_BUFFER: usize = 4096;

/// The most jobs a cluster-wide list returns.
const LIST_LIMIT: usize = 10_000;

/// A PostgreSQL database that several instances of a service share, so that each answers for
/// every job's status and can cancel any job, whichever instance runs it.
///
/// [`connect`](PostgresStore::connect) creates the store's tables if they are missing (or
/// upgrades them) and registers this instance; give the store to
/// [`JobRegistryBuilder::store`](crate::JobRegistryBuilder::store). Each job still runs in the
/// one instance that started it; that instance writes the job's status changes to the database
/// (progress at most every [flush interval](PostgresStoreBuilder::flush_interval), the start,
/// the cancel flag and the final status at once), and the others read them from there.
///
/// Clones are cheap and share the connection pool and the instance registration. One store
/// serves one registry.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use asyncjobs::postgres::PostgresStore;
/// use asyncjobs::JobRegistry;
///
/// let store = PostgresStore::connect("postgresql://jobs@db.internal/service").await?;
/// let registry = JobRegistry::builder().store(store).build();
/// # let id: asyncjobs::JobId = "1".parse()?;
/// // Any job of any instance:
/// let status = registry.status_anywhere(&id).await?;
/// # drop(status);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

/// Options of a [`PostgresStore`], from [`PostgresStore::builder`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct PostgresStoreBuilder {
    url: String,
    lease: Duration,
    flush_interval: Duration,
}

pub(super) struct Inner {
    pub(super) db: Db,
    /// This instance's registration; a new one if the old lease was lost.
    pub(super) instance: AtomicU64,
    lease: Duration,
    pub(super) flush_interval: Duration,
    runtime: Handle,
    ids: Mutex<Ids>,
    /// The registry's jobs, once attached.
    pub(super) local: OnceLock<Arc<dyn Local>>,
    pub(super) mirror: Mirror,
    /// Waits for other instances' jobs, by job: told the version of each change heard of.
    waiters: Mutex<HashMap<JobId, watch::Sender<u64>>>,
    /// Every change heard, for the registry's cluster-wide followers (the HTTP event stream).
    changes: tokio::sync::broadcast::Sender<RemoteChange>,
    /// Told once, when the store is attached to a registry.
    attached: Arc<tokio::sync::Notify>,
    /// Set while this instance could not renew its lease in time: its jobs were canceled.
    lease_lost: AtomicBool,
    /// Stops the background tasks.
    stop: CancellationToken,
}

/// Reserved job ids: the block in use, and the next one, fetched ahead.
struct Ids {
    current: Range<u64>,
    next: Option<Range<u64>>,
    refilling: bool,
}

impl PostgresStore {
    /// Connects to the database at `url` with every option at its default; see
    /// [`PostgresStoreBuilder::connect`].
    ///
    /// # Errors
    ///
    /// As [`PostgresStoreBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// As [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::builder(url).connect().await
    }

    /// A builder to set options before connecting.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            lease: DEFAULT_LEASE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }

    /// This instance's id in the database, unique among all instances that ever registered
    /// there. Jobs this instance runs carry it as their owner. It changes if the instance lost
    /// its lease and registered again.
    pub fn instance_id(&self) -> u64 {
        self.inner.instance.load(Ordering::Acquire)
    }
}

impl PostgresStoreBuilder {
    /// How long this instance's registration lives without renewal; it is renewed every third
    /// of it. Once another instance sees it run out, this instance's PROCESSING jobs are marked
    /// FAILED ([`NODE_LOST`](crate::exception::NODE_LOST)); an instance that cannot renew in time
    /// cancels its own jobs rather than run on unseen. Shorter notices death sooner and writes
    /// more often.
    ///
    /// Defaults to: [`DEFAULT_LEASE`] (10 seconds). At least one second is used.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// How often changed progress is written: at most once per interval per instance, the latest
    /// value of each job in one statement. Starts, cancel flags and final statuses are written
    /// at once.
    ///
    /// Defaults to: [`DEFAULT_FLUSH_INTERVAL`] (250 ms). At least 10 ms is used.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Connects, creates or upgrades the store's tables (all named `asyncjobs_*`), registers
    /// this instance, reserves job ids, and starts the store's background tasks (lease renewal,
    /// listening for cancels and changes, reaping lost instances, retention) on the current
    /// runtime.
    ///
    /// `url` is a `postgresql://user:password@host:port/dbname?…` URL or a libpq `key=value`
    /// string. Connections are plain TCP (or a Unix socket), without TLS. Any number of
    /// instances may connect at once: they take turns creating the tables.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] whose message says what failed: the URL does not parse, the server at
    /// `host:port` cannot be reached or refuses the login, or the tables cannot be created.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped after the instance was registered, that registration lapses
    /// when its lease runs out.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let db = Db::connect(&self.url).await?;
        let instance = db.register_instance(&this_host(), self.lease).await?;
        let first = db.reserve_id_block().await?;
        let listener = Listener::start(&db).await?;
        let inner = Arc::new(Inner {
            db,
            instance: AtomicU64::new(instance),
            lease: self.lease,
            flush_interval: self.flush_interval,
            runtime: Handle::current(),
            ids: Mutex::new(Ids {
                current: first,
                next: None,
                refilling: false,
            }),
            local: OnceLock::new(),
            mirror: Mirror::default(),
            waiters: Mutex::default(),
            changes: tokio::sync::broadcast::channel(CHANGES_BUFFER).0,
            attached: Arc::default(),
            lease_lost: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&inner);
        inner.spawn(keep_lease(weak.clone()));
        inner.spawn(listen(weak.clone(), listener));
        inner.spawn(poll_cancels(weak.clone()));
        inner.spawn(reap_and_sweep(weak.clone()));
        inner.spawn(super::mirror::flush_loop(weak));
        Ok(PostgresStore { inner })
    }
}

impl Inner {
    /// Runs a background task until the store is dropped or closed.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    pub(super) fn instance(&self) -> u64 {
        self.instance.load(Ordering::Acquire)
    }

    fn local(&self) -> Option<&Arc<dyn Local>> {
        self.local.get()
    }

    /// Tells waiters for `id` that it changed.
    fn heard(&self, id: JobId, version: u64) {
        let mut waiters = self.waiters.lock();
        if let Some(sender) = waiters.get(&id) {
            if sender.receiver_count() == 0 {
                waiters.remove(&id);
            } else {
                sender.send_replace(version);
            }
        }
    }

    /// Tells every waiter to read again (notifications may have been lost).
    fn wake_all_waiters(&self) {
        let mut waiters = self.waiters.lock();
        waiters.retain(|_, sender| sender.receiver_count() > 0);
        for sender in waiters.values() {
            sender.send_modify(|v| *v += 1);
        }
    }

    /// Applies the cancels the database holds for this instance's jobs.
    async fn apply_requested_cancels(&self) -> Result<(), StoreError> {
        let ids = self.db.cancels_for(self.instance()).await?;
        if let Some(local) = self.local() {
            for id in ids {
                local.cancel(JobId::from_u64(id));
            }
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Renews the lease every third of it. Past the lease without a renewal, this instance cancels
/// its jobs; if the lease was taken away meanwhile (another instance reaped it), it registers
/// anew, so new jobs have a live owner.
async fn keep_lease(inner: Weak<Inner>) {
    let Some(lease) = inner.upgrade().map(|i| i.lease) else {
        return;
    };
    let mut renewed_at = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.db.renew_lease(inner.instance(), inner.lease).await {
            Ok(true) => {
                renewed_at = Instant::now();
                inner.lease_lost.store(false, Ordering::Release);
            }
            Ok(false) => {
                // The cluster has marked every job of this registration lost, also those started
                // after an earlier failed renewal: cancel them all, whatever was canceled before.
                inner.lease_lost.store(false, Ordering::Release);
                lose_lease(&inner, "another instance found its lease run out");
                if let Ok(instance) = inner.db.register_instance(&this_host(), lease).await {
                    inner.instance.store(instance, Ordering::Release);
                    renewed_at = Instant::now();
                    inner.lease_lost.store(false, Ordering::Release);
                }
            }
            Err(error) if renewed_at.elapsed() >= lease => {
                lose_lease(&inner, &error.to_string());
            }
            Err(_) => {}
        }
    }
}

/// This instance can no longer vouch for its jobs: it cancels them, once per lost lease.
fn lose_lease(inner: &Inner, why: &str) {
    if !inner.lease_lost.swap(true, Ordering::AcqRel) {
        #[cfg(feature = "tracing")]
        tracing::error!(target: "asyncjobs", instance = inner.instance(), why, "instance lost its lease; canceling its jobs");
        #[cfg(not(feature = "tracing"))]
        let _ = why;
        if let Some(local) = inner.local() {
            local.cancel_all();
        }
    }
}

/// Follows the database's notifications: cancels of this instance's jobs, changes of jobs
/// someone here waits for.
async fn listen(inner: Weak<Inner>, mut listener: Listener) {
    while let Some(notice) = listener.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match notice {
            Notice::Changed { id, version, user } => {
                let id = JobId::from_u64(id);
                inner.heard(id, version);
                // No follower is not an error.
                let _ = inner.changes.send(RemoteChange::Changed {
                    id,
                    version,
                    user,
                    heard_at: chrono::Utc::now(),
                });
            }
            Notice::Cancel { owner, id } if owner == inner.instance() => {
                if let Some(local) = inner.local() {
                    local.cancel(JobId::from_u64(id));
                }
            }
            Notice::Cancel { .. } => {}
            Notice::Reconnected | Notice::Lagged => {
                inner.mirror.back.notify_one();
                inner.wake_all_waiters();
                let _ = inner.changes.send(RemoteChange::Resync);
                let _ = inner.apply_requested_cancels().await;
            }
        }
    }
}

/// The backup for lost cancel notifications: asks the database every second.
async fn poll_cancels(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        let _ = inner.apply_requested_cancels().await;
    }
}

/// Reaps instances whose lease ran out (every third of a lease) and trims the table by the
/// registry's retention rules (every few seconds). Both are safe with every instance doing it.
async fn reap_and_sweep(inner: Weak<Inner>) {
    // The retention rules are the registry's: wait until the store is attached to one (without
    // holding the store, which may be dropped unattached).
    let Some((lease, attached)) = inner.upgrade().map(|i| (i.lease, i.attached.clone())) else {
        return;
    };
    attached.notified().await;
    // The first round runs at once: an instance that starts after a crash reaps its dead
    // predecessor and trims what piled up meanwhile without waiting a round.
    let mut swept_at: Option<Instant> = None;
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if let Ok(reaped) = inner.db.reap_dead_instances().await {
            for (id, version) in reaped {
                inner.heard(JobId::from_u64(id), version);
            }
        }
        if let Some((keep_for, keep_at_most)) = inner.local().map(|local| local.retention()) {
            if swept_at.is_none_or(|at| at.elapsed() >= RETENTION_SWEEP) {
                swept_at = Some(Instant::now());
                let _ = inner
                    .db
                    .sweep_retention(keep_for, keep_at_most, RETENTION_BATCH)
                    .await;
            }
        }
        drop(inner);
        tokio::time::sleep(lease / 3).await;
    }
}

/// A claim on a cacheable request, and the store whose instance runs the job.
struct Claim {
    claim: Box<super::CacheClaim>,
    owner: Arc<Inner>,
}

impl seam::CacheClaim for Claim {
    fn settle(
        self: Box<Self>,
        status: (AsynchronousJobStatus, bool),
    ) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async move {
            let row = StatusRow::new(&status.0, self.owner.instance(), None).queued(status.1);
            self.claim.settle(row).await.map_err(unavailable)
        })
    }
}

fn unavailable(error: StoreError) -> Error {
    Error::StoreUnavailable(Arc::from(error.to_string()))
}

impl Store for PostgresStore {
    fn attach(&self, local: Arc<dyn Local>) -> Arc<dyn StatusObserver> {
        // One store serves one registry: a second attach keeps the first registry.
        if self.inner.local.set(local).is_ok() {
            self.inner.attached.notify_one();
        }
        Arc::new(super::mirror::Observer(self.inner.clone()))
    }

    fn next_id(&self) -> Option<u64> {
        let mut ids = self.inner.ids.lock();
        if ids.current.is_empty() {
            ids.current = ids.next.take()?;
        }
        let id = ids.current.next()?;
        // A quarter of the block left: fetch the next one ahead.
        let low = ids.current.end - ids.current.start < super::ID_BLOCK_SIZE / 4;
        if low && ids.next.is_none() && !ids.refilling {
            ids.refilling = true;
            let inner = Arc::downgrade(&self.inner);
            self.inner.spawn(async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    let Some(strong) = inner.upgrade() else {
                        return;
                    };
                    if let Ok(block) = strong.db.reserve_id_block().await {
                        let mut ids = strong.ids.lock();
                        ids.next = Some(block);
                        ids.refilling = false;
                        return;
                    }
                    drop(strong);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            });
        }
        Some(id)
    }

    fn read(&self, id: JobId) -> BoxFuture<'_, Result<Option<AsynchronousJobStatus>, Error>> {
        Box::pin(async move {
            let stored = self.inner.db.read(id.as_u64()).await.map_err(unavailable)?;
            Ok(stored.map(|job| job.status))
        })
    }

    fn list(
        &self,
        user: Option<u64>,
        state: Option<AsynchJobState>,
    ) -> BoxFuture<'_, Result<Vec<AsynchronousJobStatus>, Error>> {
        Box::pin(async move {
            let jobs = self
                .inner
                .db
                .list(user, state, LIST_LIMIT)
                .await
                .map_err(unavailable)?;
            Ok(jobs.into_iter().map(|job| job.status).collect())
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<JobCounts, Error>> {
        Box::pin(async move { self.inner.db.counts().await.map_err(unavailable) })
    }

    fn cancel(&self, id: JobId, user: Option<u64>) -> BoxFuture<'_, Result<RemoteCancel, Error>> {
        Box::pin(async move {
            let request = self
                .inner
                .db
                .request_cancel(id.as_u64(), user)
                .await
                .map_err(unavailable)?;
            Ok(match request {
                CancelRequest::UnknownJob => RemoteCancel::UnknownJob,
                CancelRequest::NotYourJob => RemoteCancel::NotYourJob,
                CancelRequest::AlreadyFinished => RemoteCancel::AlreadyFinished,
                CancelRequest::AlreadyRequested => RemoteCancel::AlreadyRequested,
                CancelRequest::Requested { .. } => RemoteCancel::Requested,
            })
        })
    }

    fn find_or_claim<'a>(
        &'a self,
        user: Option<u64>,
        body: Option<&'a serde_json::Value>,
        fresh_for: Duration,
    ) -> BoxFuture<'a, Result<Cached, Error>> {
        Box::pin(async move {
            let lookup = self
                .inner
                .db
                .find_or_claim(user, body, fresh_for)
                .await
                .map_err(unavailable)?;
            Ok(match lookup {
                CacheLookup::Found(id) => Cached::Found(JobId::from_u64(id)),
                CacheLookup::Claimed(claim) => Cached::Claimed(Box::new(Claim {
                    claim,
                    owner: self.inner.clone(),
                })),
            })
        })
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<RemoteChange> {
        self.inner.changes.subscribe()
    }

    fn changed(&self, id: JobId, at_most: Duration) -> BoxFuture<'_, ()> {
        // Subscribed here, before the caller reads: a change heard after this wakes it.
        let mut receiver = self
            .inner
            .waiters
            .lock()
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Box::pin(async move {
            let _ = tokio::time::timeout(at_most, receiver.changed()).await;
            drop(receiver);
            // The last waiter out removes the entry: a finished job gets no more notices, and
            // its entry would otherwise stay for good.
            let mut waiters = self.inner.waiters.lock();
            if waiters.get(&id).is_some_and(|s| s.receiver_count() == 0) {
                waiters.remove(&id);
            }
        })
    }

    fn announced(&self, id: JobId) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Bounded: a database that is away must not hold an answer up for long.
            let at_most = (self.inner.flush_interval * 4).max(Duration::from_secs(1));
            self.inner.mirror.written(id, at_most).await;
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            // The final statuses matter most: a database that is briefly away gets a few tries.
            for attempt in 0..CLOSE_TRIES {
                if super::mirror::flush(inner).await {
                    break;
                }
                if attempt + 1 < CLOSE_TRIES {
                    tokio::time::sleep(CLOSE_RETRY).await;
                }
            }
            let _ = inner.db.release_instance(inner.instance()).await;
            inner.stop.cancel();
        })
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<PostgresStore> for SharedStore {
    fn from(store: PostgresStore) -> Self {
        SharedStore(Arc::new(store))
    }
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: only whether one is given is shown.
        f.debug_struct("PostgresStoreBuilder")
            .field("url", &"…")
            .field("lease", &self.lease)
            .field("flush_interval", &self.flush_interval)
            .finish()
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance", &self.instance_id())
            .field("db", &self.inner.db)
            .field("lease", &self.inner.lease)
            .field("flush_interval", &self.inner.flush_interval)
            .finish_non_exhaustive()
    }
}

/// How this instance describes itself in `asyncjobs_instances.host`: host name and process id.
fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned());
    format!("{name} (pid {})", std::process::id())
}
