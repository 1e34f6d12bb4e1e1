//! The public face of the store, and what it does when the registry it is attached to asks: hand
//! out ids, answer for other instances' jobs, route cancels, find cached requests, wait for
//! changes, and leave the cluster. What it does on its own (lease, notifications, reaping,
//! retention, writing) is in [`background`](super::background), over the [state](super::state)
//! both share.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::background::{flush_loop, keep_lease, listen, poll_cancels, reap_and_sweep, this_host};
use super::mirror::Mirror;
use super::state::{Ids, Inner};
use super::{CacheLookup, StatusRow};
use super::{CancelRequest, Db, Listener, StoreError};
use crate::store::{
    self as seam, BoxFuture, Cached, Local, Names, RemoteCancel, RemoteChange, Store, StoredPage,
};
use crate::{
    AsynchronousJobStatus, Error, JobCounts, JobEvent, JobFilter, JobId, SharedStore,
    StatusObserver, StoreFault,
};

/// Default of [`PostgresStoreBuilder::lease`]: 10 seconds. Renewed every third of it, so a
/// dead instance's jobs read FAILED ([`NODE_LOST`](crate::exception::NODE_LOST)) within about
/// 11 seconds (its lease, plus up to a second until another instance's reaper looks, whatever
/// that instance's own lease).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Default of [`PostgresStoreBuilder::flush_interval`]: progress is written at most this often.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// How often a closing store tries to write what is pending, and how long it waits between.
const CLOSE_TRIES: u32 = 5;
const CLOSE_RETRY: Duration = Duration::from_millis(500);

/// How many change notices a slow cluster-wide follower may be behind before it resyncs.
const CHANGES_BUFFER: usize = 4096;

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
/// let status = registry.status(&id).await?;
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
        inner.spawn(flush_loop(weak));
        Ok(PostgresStore { inner })
    }
}

/// What the registry tells of every event of its jobs. It holds the store's state, so that the
/// store's background tasks run as long as the registry does.
struct Observer(Arc<Inner>);

impl StatusObserver for Observer {
    fn on_event(&self, event: &JobEvent<'_>) {
        self.0.mirror.note(event);
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
            let name = self.owner.mirror.name_of(status.0.job_id);
            let row = StatusRow::new(&status.0, self.owner.instance(), None)
                .queued(status.1)
                .named(name.as_deref());
            self.claim.settle(row).await.map_err(unavailable)
        })
    }
}

fn unavailable(error: StoreError) -> Error {
    Error::StoreUnavailable(StoreFault::new(error))
}

impl Store for PostgresStore {
    fn attach(&self, local: Arc<dyn Local>) -> Arc<dyn StatusObserver> {
        // One store serves one registry: a second attach keeps the first registry.
        if self.inner.local.set(local).is_ok() {
            self.inner.attached.notify_one();
        }
        Arc::new(Observer(self.inner.clone()))
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
            // This instance's final status not written yet is newer than the row.
            if let Some(status) = self.inner.mirror.unwritten_final(id) {
                return Ok(Some(status));
            }
            let stored = self.inner.db.read(id.as_u64()).await.map_err(unavailable)?;
            Ok(stored.map(|job| job.status))
        })
    }

    fn list<'a>(&'a self, filter: &'a JobFilter) -> BoxFuture<'a, Result<StoredPage, Error>> {
        Box::pin(async move {
            let limit = filter.limit.saturating_add(1);
            let rows = self
                .inner
                .db
                .list(filter, limit)
                .await
                .map_err(unavailable)?;
            let more_below = (rows.len() >= limit)
                .then(|| rows.last().map(|row| row.status.job_id))
                .flatten();
            let jobs = rows
                .into_iter()
                .map(|row| {
                    // As in `read`: this instance's unwritten final status is newer.
                    let id = row.status.job_id;
                    self.inner.mirror.unwritten_final(id).unwrap_or(row.status)
                })
                .filter(|status| filter.admits_state(status))
                .collect();
            Ok(StoredPage { jobs, more_below })
        })
    }

    fn names<'a>(&'a self, ids: &'a [JobId]) -> BoxFuture<'a, Result<Names, Error>> {
        Box::pin(async move {
            let ids: Vec<u64> = ids.iter().map(|id| id.as_u64()).collect();
            let names = self.inner.db.names(&ids).await.map_err(unavailable)?;
            Ok(names
                .into_iter()
                .map(|(id, name)| (JobId::from_u64(id), Arc::from(name)))
                .collect())
        })
    }

    fn counts<'a>(&'a self, filter: &'a JobFilter) -> BoxFuture<'a, Result<JobCounts, Error>> {
        Box::pin(async move { self.inner.db.counts(filter).await.map_err(unavailable) })
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
                if inner.flush().await {
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
