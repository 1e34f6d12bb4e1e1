//! A PostgreSQL store that lets several instances (processes) of a service share job statuses
//! and cancellation (feature `postgres`).
//!
//! [`PostgresStore::connect`] connects, creates or upgrades the tables, and registers the
//! instance. Each job runs in the instance that started it (its *owner*), which writes every
//! status change of the job to the database; any instance reads any job's status from there,
//! and asks the owner to cancel a job through the database.
//!
//! # Tables
//!
//! All prefixed `asyncjobs_`, created at connect (one transaction, under an advisory lock, so
//! instances that start together take turns; the version reached is kept in
//! `asyncjobs_schema_version`):
//!
//! | table | one row per | columns |
//! |---|---|---|
//! | `asyncjobs_jobs` | job | `id`, `version` (the etag's change counter), `state`, `user_id`, `owner` (instance), `cancel_requested`, `cache_key`, `queued` (waits under its instance's concurrency limits), `finished_at`, `changed_at`, `status` (the whole `AsynchronousJobStatus` JSON, `jsonb`), `name` (the job's [name](crate::JobRequest::name), not a status field) |
//! | `asyncjobs_instances` | running instance | `id`, `started_at`, `lease_until`, `host` |
//!
//! and the sequence `asyncjobs_id_blocks`, from which instances reserve blocks of 2^20 job ids:
//! ids never collide across instances, have 16 digits and stay below `i64::MAX`.
//!
//! # Guarantees
//!
//! - **Versions only grow.** A job's row is written only with a higher version than it holds,
//!   and never once it is finished: late or repeated writes cannot move a status back.
//! - **Every write is announced.** Each statement that writes statuses notifies
//!   `asyncjobs_changed` with `id:version` of the rows written, in the same transaction, so a
//!   listener that sees a notification can read at least that version.
//! - **Cancellation goes through the owner.** A cancel request sets the row's
//!   `cancel_requested` and notifies `asyncjobs_cancel` with `owner:id`; only the owner
//!   changes the job's status. Notifications are lost while a listener reconnects, so owners
//!   also poll for requested cancels.
//! - **Lost instances are noticed.** An instance holds a lease it renews; once the lease runs
//!   out (by the database's clock), any instance may fail its PROCESSING jobs, with exception
//!   [`NODE_LOST`](crate::exception::NODE_LOST). One reaper and one retention sweeper work at a
//!   time, whatever the number of instances.
//! - **Bounded.** Finished statuses are deleted after a time and beyond a count, as in memory.
//!
//! # Attached to a registry
//!
//! [`JobRegistryBuilder::store`](crate::JobRegistryBuilder::store) attaches a store to a
//! registry. The store then:
//! - hands out job ids from blocks it reserves ahead;
//! - hears every event of the registry's jobs through the observer hook and writes them
//!   (progress at most every flush interval, in one statement for all jobs; starts, cancel flags
//!   and final statuses at once), keeping what is due while the database is unreachable;
//! - renews its lease every third of it, cancels its own jobs if it cannot renew in time, and
//!   reaps other instances whose lease ran out (looking when the next one runs out, and at
//!   least every second);
//! - listens for cancels of its jobs (and polls for them every second, as notifications are lost
//!   while it reconnects) and applies them as a local cancel;
//! - wakes waits for other instances' jobs when it hears they changed;
//! - trims the table by the registry's retention rules;
//! - at the registry's shutdown, writes what is pending and leaves the cluster.
//!
//! Work does not survive its instance: a job whose instance dies ends FAILED
//! ([`NODE_LOST`](crate::exception::NODE_LOST)) and is not run again, as in Synapse.
//!
//! Request caching ([`JobRequest::cacheable`](crate::JobRequest::cacheable)) spans the cluster
//! through [`JobRegistry::submit`](crate::JobRegistry::submit) and
//! [`spawn`](crate::JobRegistry::spawn) (which the HTTP front uses): an equal request of the same user is answered with the running or
//! COMPLETE job of whichever instance, and equal requests sent to two instances at once start
//! one job (the first takes a transaction-scoped advisory lock on the request's cache key until
//! its job's row is written; the other waits for it, then finds that job).

// Imports run one way: store (the public face) -> background (its tasks) -> state (what both
// share) -> mirror (what is due to be written) -> the database layer (db and its statements).
mod background;
mod cancel;
mod db;
mod error;
mod ids;
mod instances;
mod mirror;
mod notify;
mod reads;
mod request_cache;
mod retention;
mod schema;
mod state;
mod store;
mod writes;

pub use error::{StoreError, StoreErrorKind};
pub use store::{PostgresStore, PostgresStoreBuilder, DEFAULT_FLUSH_INTERVAL, DEFAULT_LEASE};

// The engine uses the database layer through these paths.
#[allow(unused_imports)]
pub(crate) use self::{
    cancel::CancelRequest,
    db::Db,
    ids::{ID_BASE, ID_BLOCK_SIZE},
    notify::{Listener, Notice},
    reads::StoredJob,
    request_cache::{CacheClaim, CacheLookup},
    writes::StatusRow,
};

/// Not part of the public API: the database layer, reachable only so that this crate's
/// integration tests (`tests/postgres_db.rs`) can drive it against a real server. It may
/// change in any release.
#[doc(hidden)]
pub mod __db {
    pub use super::cancel::CancelRequest;
    pub use super::db::Db;
    pub use super::ids::{ID_BASE, ID_BLOCK_SIZE};
    pub use super::notify::{Listener, Notice};
    pub use super::reads::StoredJob;
    pub use super::request_cache::{CacheClaim, CacheLookup};
    pub use super::writes::StatusRow;
}
