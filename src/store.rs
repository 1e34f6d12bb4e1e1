//! The store seam: what a registry asks of a store that several instances share (the PostgreSQL
//! store is the one there is), and what a store may ask of the registry back.
//!
//! The engine knows nothing of SQL: it hands the store every event of its jobs through the
//! observer hook ([`Store::attach`] returns the observer), takes job ids from it, and forwards
//! reads, waits and cancels of jobs it does not hold. The store acts on local jobs only through
//! [`Local`] (cancel one, cancel all when its lease is lost, read a status to write it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{AsynchronousJobStatus, Error, JobCounts, JobFilter, JobId, StatusObserver};

/// A boxed future, as the store's methods return (no `async fn` in object-safe traits).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Jobs' [names](crate::JobRequest::name), by id, as [`Store::names`] finds them.
pub(crate) type Names = Vec<(JobId, Arc<str>)>;

/// A store shared by several instances of a service, given to
/// [`JobRegistryBuilder::store`](crate::JobRegistryBuilder::store): with one, every call of
/// the registry answers for every job of every instance. Made from a store with `into()`, e.g. from a `PostgresStore` (feature
/// `postgres`).
#[derive(Clone)]
pub struct SharedStore(pub(crate) Arc<dyn Store>);

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStore(")?;
        self.0.describe(f)?;
        f.write_str(")")
    }
}

/// What a cancel request for another instance's job found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum RemoteCancel {
    UnknownJob,
    NotYourJob,
    AlreadyFinished,
    AlreadyRequested,
    /// Recorded; the job's instance applies it.
    Requested,
}

/// What [`Store::find_or_claim`] found.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum Cached {
    /// A job that answers the request.
    Found(JobId),
    /// None; the claimer starts the job and settles the claim.
    Claimed(Box<dyn CacheClaim>),
}

/// The right, held by one caller at a time across every instance, to start the job that
/// answers a cacheable request. Dropped unsettled, it frees the request for the next caller.
pub(crate) trait CacheClaim: Send {
    /// Records the job started for the request (its status, and whether it waits in the queue,
    /// as [`Local::status`] gives them) so that equal requests find it, and releases the claim.
    fn settle(
        self: Box<Self>,
        status: (AsynchronousJobStatus, bool),
    ) -> BoxFuture<'static, Result<(), Error>>;
}

/// A page of [`Store::list`].
#[derive(Debug, Default)]
pub(crate) struct StoredPage {
    /// Newest first, at most one more than the filter's limit.
    pub(crate) jobs: Vec<AsynchronousJobStatus>,
    /// The lowest id listed, when the store holds more jobs below it that the filter selects
    /// (it listed one more than the limit).
    pub(crate) more_below: Option<JobId>,
}

/// What a store hears of other instances' jobs (and of this one's, as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum RemoteChange {
    /// Job `id`, started by `user`, now has `version` in the store; the store heard of it at
    /// `heard_at` (this host's clock). Notices come in the order their writes were made, so
    /// every change written before this one was heard by then too, give or take the notices'
    /// delay, or lost (and [`Resync`](RemoteChange::Resync) follows).
    Changed {
        id: JobId,
        version: u64,
        user: Option<u64>,
        heard_at: DateTime<Utc>,
    },
    /// Notices may have been lost (the store reconnected, or a reader fell behind): whoever
    /// follows them reads again what may have changed.
    Resync,
}

/// What a registry asks of a shared store. Errors are [`Error::StoreUnavailable`].
pub(crate) trait Store: Send + Sync + 'static {
    /// Called once, when the registry is built: the store starts following the registry's jobs
    /// (the returned observer is told of every event) and may act on them through `local`.
    fn attach(&self, local: Arc<dyn Local>) -> Arc<dyn StatusObserver>;

    /// The next job id, unique across every instance of the store; `None` when the store has
    /// none to hand out (it reserves them ahead, so only a long outage gets there).
    fn next_id(&self) -> Option<u64>;

    /// A job's status as last written, if the store has the job.
    fn read(&self, id: JobId) -> BoxFuture<'_, Result<Option<AsynchronousJobStatus>, Error>>;

    /// The [names](crate::JobRequest::name) of those of the jobs `ids` the store holds with
    /// one, as their instances wrote them.
    fn names<'a>(&'a self, ids: &'a [JobId]) -> BoxFuture<'a, Result<Names, Error>>;

    /// One page of the jobs `filter` selects (its user, state, name, and ids below its `before`),
    /// newest first: up to one more than its limit, so that the caller knows whether more follow.
    fn list<'a>(&'a self, filter: &'a JobFilter) -> BoxFuture<'a, Result<StoredPage, Error>>;

    /// Jobs per state across every instance, of those `filter` selects by user, name and request
    /// type (not by state or page).
    fn counts<'a>(&'a self, filter: &'a JobFilter) -> BoxFuture<'a, Result<JobCounts, Error>>;

    /// Asks the instance that runs job `id` to cancel it, for `user` (any user for `None`).
    fn cancel(&self, id: JobId, user: Option<u64>) -> BoxFuture<'_, Result<RemoteCancel, Error>>;

    /// For a cacheable request of `user` with request `body`: a job of any instance that answers
    /// it (running and not being canceled, or COMPLETE within
    /// `fresh_for`), or else a claim, which makes equal lookups on every instance wait until it
    /// is settled with the job started for the request, or dropped.
    fn find_or_claim<'a>(
        &'a self,
        user: Option<u64>,
        body: Option<&'a Value>,
        fresh_for: Duration,
    ) -> BoxFuture<'a, Result<Cached, Error>>;

    /// Every change the store hears of, from now on, as it hears it (a reader that falls
    /// behind is told [`RemoteChange::Resync`] as its receiver's `Lagged`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn changes(&self) -> tokio::sync::broadcast::Receiver<RemoteChange>;

    /// Resolves when the store hears that job `id` changed (or at the latest after
    /// `at_most`): the caller then reads it again.
    fn changed(&self, id: JobId, at_most: Duration) -> BoxFuture<'_, ()>;

    /// Resolves once the store holds job `id`'s latest change (so that other instances find the
    /// job), or after a short bound if it cannot be written now.
    fn announced(&self, id: JobId) -> BoxFuture<'_, ()>;

    /// The registry shuts down: write what is pending, and leave the cluster.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// For `Debug`.
    fn describe(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
}

/// What a store may do to the registry it is attached to. Held weakly: once the registry is
/// gone, each call does nothing.
// Only a store calls these, and the one store there is needs feature `postgres`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) trait Local: Send + Sync + 'static {
    /// Cancels the local job `id` as [`JobRegistry::cancel`](crate::JobRegistry::cancel) does;
    /// `false` if it is not a job of this instance (any more).
    fn cancel(&self, id: JobId) -> bool;

    /// Cancels every running local job: the store can no longer vouch for this instance.
    fn cancel_all(&self);

    /// The local job's status now, and whether it waits in the queue for a slot under the
    /// concurrency limits, for writing it out; `None` if it is not held here.
    fn status(&self, id: JobId) -> Option<(AsynchronousJobStatus, bool)>;

    /// The registry's retention rules: keep finished statuses this long, and at most this many.
    fn retention(&self) -> (Duration, usize);
}
