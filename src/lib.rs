//! Run asynchronous jobs on tokio and let anyone ask, at any moment, how a job is doing.
//!
//! A [`JobRegistry`] starts jobs (futures) and hands each a [`JobHandle`], through which the job
//! reports progress and sees cancellation. Anyone holding the registry can take a snapshot of a
//! job's [`AsynchronousJobStatus`] at any time. Statuses serialize to the JSON of Synapse's
//! `AsynchronousJobStatus` exactly, so Synapse-style clients and dashboards work unchanged.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use asyncjobs::{AsynchJobState, JobHandle, JobRegistry, JobRequest};
//!
//! let registry = JobRegistry::new();
//! let id = registry.spawn(
//!     JobRequest::new(serde_json::json!({"concreteType": "org.example.CountRequest"})).started_by(7),
//!     |job: JobHandle| async move {
//!         for i in 0..=3u64 {
//!             job.set_progress(i, 3, format!("step {i} of 3"));
//!             tokio::task::yield_now().await;
//!         }
//!         Ok::<_, std::io::Error>(serde_json::json!({"concreteType": "org.example.Count", "n": 3}))
//!     },
//! ).await?;
//!
//! // Any time, from anywhere: a snapshot of the status.
//! let now = registry.status(&id).await?;
//! println!("{}", serde_json::to_string(&now)?);
//!
//! let done = registry.wait(&id).await?;
//! assert_eq!(done.job_state, AsynchJobState::Complete);
//! assert_eq!(done.progress_message.as_deref(), Some("Complete"));
//! # Ok(())
//! # }
//! ```
//!
//! # Lifecycle
//!
//! ```text
//!   spawn ─┬─► PROCESSING (running) ──(Ok)──────────────────────► COMPLETE
//!          │     │   ▲ progress, cancel flag                     (responseBody, progress = total,
//!          │     │   └───────┘                                     progressMessage "Complete")
//!          │     ├──(Err / panic / unserializable result)────────► FAILED
//!          │     │                                               (errorMessage, errorDetails, exception)
//!          │     └──cancel or time limit──► jobCanceling = true, token fired
//!          │                         ├── job returns Err (or Ok) ─► FAILED (or COMPLETE)
//!          │                         └── grace elapses ───────────► FAILED, exception JobCanceled
//!          │                                                        (or JobTimedOut)
//!          └─► PROCESSING (queued, "Queued: …") ──slot frees──► running, as above
//!                     └──cancel──► FAILED at once, never ran
//! ```
//!
//! A finished status never changes again. There is no CANCELED state, as in Synapse: a canceled
//! job ends FAILED (or COMPLETE, if it finished its work anyway) with `jobCanceling` set. Failures
//! the registry itself reports have the `exception` names in [`exception`], and name what asked
//! the job to stop (a [`CancelCause`]) in `errorDetails`; a running job reads it from
//! [`JobHandle::cancel_cause`].
//!
//! # Etags and polling
//!
//! A job's [`Etag`] changes on every observable change of its status and never repeats for that
//! job, and it stays put when nothing changed (reporting the same progress again is no change):
//! a poller that sees the same etag has missed nothing. Rather than polling,
//! [`wait_for_change`](JobRegistry::wait_for_change) resolves as soon as the etag differs from
//! the one a client has (long-polling; put your own timeout around it),
//! [`watch`](JobRegistry::watch) follows one job, and [`watch_all`](JobRegistry::watch_all)
//! follows every job through a [`StatusFeed`] that conflates: a slow reader gets each job's
//! latest status, never a backlog. Both are `futures_core::Stream`s, ready for an SSE or
//! WebSocket endpoint. [`list`](JobRegistry::list) and
//! [`counts`](JobRegistry::counts) answer dashboards.
//!
//! # Cancellation and time limits
//!
//! [`JobRegistry::cancel`] sets `jobCanceling` at once and fires the job's
//! [`CancellationToken`](tokio_util::sync::CancellationToken), a child of the registry's root
//! token; the job sees it through [`JobHandle::is_canceling`] or [`JobHandle::cancelled`] and
//! should stop at a safe point. A job that ignores it is stopped (its future dropped) after the
//! [cancel grace](JobRegistryBuilder::cancel_grace). A request's
//! [`time_limit`](JobRequest::time_limit) and [`stall_limit`](JobRequest::stall_limit) cancel the
//! same way, and the final status names the limit. [`shutdown`](JobRegistry::shutdown) cancels
//! every job, waits up to a grace and stops the rest.
//!
//! # Concurrency limit and request caching
//!
//! [`max_running`](JobRegistryBuilder::max_running) bounds how many jobs run at once; the rest
//! wait, PROCESSING with a "Queued" message, by [priority](JobRequest::priority) and then in FIFO
//! order. [`max_running_per_user`](JobRegistryBuilder::max_running_per_user) also bounds one
//! user's jobs, and with it (or [`fair_queue`](JobRegistryBuilder::fair_queue)) slots go in turns
//! across users and a queued job's message says its place. A [cacheable](JobRequest::cacheable)
//! request equal to an earlier one by the same user, whose job is running or COMPLETE, gets that
//! job's id instead of a new job.
//!
//! # Users
//!
//! [`JobRequest::started_by`] records who started a job. The registry is the administrator's
//! view; [`JobRegistry::as_user`] gives a [`UserView`] that sees only that user's jobs and refuses
//! others with [`Error::NotYourJob`].
//!
//! # Retention
//!
//! Finished statuses stay readable for a time and up to a count
//! ([`keep_finished_for`](JobRegistryBuilder::keep_finished_for),
//! [`keep_finished_at_most`](JobRegistryBuilder::keep_finished_at_most); one hour and 10,000 by
//! default), then are dropped, so a long-running service's memory stays bounded by the limits,
//! not by the number of jobs it ever ran. Running jobs are never dropped.
//!
//! # Tracing
//!
//! With the `tracing` feature (on by default) each job runs in a `job` span (`job_id`, `user`),
//! so the job's own events carry them, and every change of a job's status is an event with target
//! `asyncjobs`. The registry's events name the job themselves (`job_id`, `user`, `etag`) and are
//! root events, outside the job's span, so a log line shows those fields once whichever thread
//! made the change; one job's events come out in etag order.
//!
//! | change | level | message | fields besides `job_id`, `user`, `etag` |
//! |---|---|---|---|
//! | started (at `spawn`) | DEBUG | `job started` | `queued` |
//! | progress | TRACE | `job progress` | `current`, `total`, `progress_message` |
//! | left the queue | DEBUG | `job dequeued` | |
//! | cancel requested (any cause) | INFO | `job cancel requested` | `cause` |
//! | a time limit broken | WARN | `job timed out` | `limit` |
//! | complete | DEBUG | `job complete` | `runtime_ms` |
//! | failed after a cancel on request or a shutdown | INFO | `job canceled` | `runtime_ms`, `cause`, `exception`, `error` |
//! | failed (an error, a time limit, a lost lease) | WARN | `job failed` | `runtime_ms`, `exception`, `error` |
//! | failed (a panic) | ERROR | `job failed` | `runtime_ms`, `exception`, `error` |
//! | an observer panicked | ERROR | `a status observer panicked; …` | |
//!
//! Progress is at TRACE, so a service logging at DEBUG or above is never flooded, and progress
//! costs nothing extra unless a subscriber enables TRACE for `asyncjobs`. `cause` is a
//! [`CancelCause`]'s text (`on request`, `by the registry's shutdown`, …).
//!
//! # Metrics
//!
//! With the `metrics` feature the registry reports through the [`metrics`](https://docs.rs/metrics)
//! facade, so whichever exporter the application installed (Prometheus, OpenTelemetry, statsd)
//! sees them. Only the few changes of a job's life are recorded, never progress.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `asyncjobs_jobs_started_total` | counter | | jobs spawned |
//! | `asyncjobs_jobs_finished_total` | counter | `state` (`COMPLETE`, `FAILED`) | jobs finished |
//! | `asyncjobs_jobs_failed_total` | counter | `exception` | failed jobs by their `exception` |
//! | `asyncjobs_job_cancels_total` | counter | `cause` (`requested`, `shutdown`, `time_limit`, `stall_limit`, `lease_lost`) | cancels asked |
//! | `asyncjobs_jobs_running` | gauge | | jobs running now |
//! | `asyncjobs_jobs_queued` | gauge | | jobs waiting under the concurrency limit now |
//! | `asyncjobs_job_runtime_seconds` | histogram | `state` | from spawn to the final status |
//! | `asyncjobs_job_queue_wait_seconds` | histogram | | from spawn to leaving the queue |
//!
//! Every metric of a job [named](JobRequest::name) also has the label `name`, its name (those of
//! unnamed jobs have none), so that kinds of jobs can be told apart: a name is meant to be shared
//! by many jobs (`"nightly export"`, not `"export 81723"`), since each distinct name is a time
//! series of its own.
//!
//! Gauges move by increments, so several registries in one process add up.
//!
//! # Observing every job
//!
//! [`JobRegistryBuilder::observe`] adds a [`StatusObserver`], told of every event of every job's
//! life ([`JobEvent`]: created, changed, finished, removed), one job's events in etag order. It is
//! the hook for mirrors, notifications and stores; see the trait for its rules.
//!
//! # Concurrency and consistency
//!
//! - A snapshot is consistent: it is the status as of one change, never half of one.
//! - Reading statuses never waits for a job, and a job reporting progress never waits for a reader
//!   beyond a few field copies: no lock is held across an `.await` or while user code
//!   (serialization, `Display` of a user's error) runs.
//! - Each job finishes exactly once; panics in a job, in its `Drop`, in its error's `Display` or
//!   in its result's `Serialize` end it FAILED and never poison the registry.
//! - Jobs run on the tokio runtime current at [`spawn`](JobRegistry::spawn) (or the one given
//!   to the builder), multi-thread or current-thread alike, with its time driver enabled
//!   (`#[tokio::main]` and `enable_all` do that) for the cancel grace and time limits. If that
//!   runtime shuts down under a running job, the job ends FAILED with exception
//!   [`exception::ABORTED`]; so does a canceled job on a runtime without a timer.
//! - One job's events (to feeds, `tracing` and observers) are delivered in etag order; a job's
//!   creation is its first event and its removal by retention its last, and no change of a job
//!   is delivered after its removal.
//! - Times in a status come from the monotonic clock, anchored to the wall clock once per job
//!   at spawn: they never go backwards while the job lives.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tracing` | on | each job runs in a `job` span (id, user); every status change is a [`tracing`](https://docs.rs/tracing) event (progress at TRACE). Off: no `tracing` dependency. |
//! | `metrics` | off | counters, gauges and histograms of jobs through the [`metrics`](https://docs.rs/metrics) facade (see "Metrics"). Off: no `metrics`. |
//! | `http` | off | the `http` module: an [axum](https://docs.rs/axum) router serving Synapse's asynchronous-job REST API over a registry (areas, bearer or header identity, generic launch, listing), with etags, `304`, long-polling and a Server-Sent Events stream of the caller's jobs. Off: no axum. |
//! | `postgres` | off | the `postgres` module: a PostgreSQL store ([tokio-postgres](https://docs.rs/tokio-postgres), pooled, no TLS) that lets several instances of a service share job statuses and cancellation; attach it with [`JobRegistryBuilder::store`]. Off: no tokio-postgres. |
//!
//! serde and serde_json are not optional: JSON is the wire format.
#![forbid(unsafe_code)]
// On docs.rs (`--cfg docsrs`, nightly), feature-gated items say which feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

// Layers, each using only those below it (no import cycles):
//
// 1. Fronts: `http` and `postgres` (a store's database layer) see jobs only through the façade
//    and the seam's observer hook.
// 2. Façade: `registry` (JobRegistry), `user_view`, `builder`, `feed`, `watch`, `handle`: thin
//    types over the engine, each call one engine call with its scope.
// 3. Engine (`engine/`): spawning, ending jobs exactly once, scoped reads, cancel, shutdown, and
//    its machinery (job table, retention, the scheduler of the concurrency limits, request
//    de-duplication, the supervisor task that runs one job).
// 4. The job and its seam: `job` (one job's state; `Job::apply` is the only writer of a status)
//    and `seam` (where every event of a job's life goes: counts, feeds, `trace`, `observer`s).
// 5. Leaves: `status`, `id`, `etag`, `error`, `exception`, `request`, `filter`, `counts`,
//    `change`, `failure`, `text`.
//
// Lock order: written once, in `engine` (src/engine/mod.rs, "Lock order").

// 1. Fronts
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;

// 2. Façade
mod builder;
mod feed;
mod handle;
mod job_fn;
mod local;
mod registry;
mod scope;
mod watch;

// 3. Engine
mod engine;

// 4. The job and its seams (status events; the shared store)
mod job;
mod metrics;
mod observer;
mod seam;
mod store;
mod trace;

// 5. Leaves
mod cause;
mod change;
mod counts;
mod error;
mod etag;
mod event;
pub mod exception;
mod failure;
mod filter;
mod id;
mod request;
mod status;
mod text;

pub use builder::{
    JobRegistryBuilder, DEFAULT_CANCEL_GRACE, DEFAULT_KEEP_FINISHED_AT_MOST,
    DEFAULT_KEEP_FINISHED_FOR,
};
pub use cause::CancelCause;
pub use counts::JobCounts;
pub use engine::cancel::CancelOutcome;
pub use engine::shutdown::ShutdownSummary;
pub use engine::spawn::Spawned;
pub use error::{Error, StoreFault};
pub use etag::Etag;
pub use feed::StatusFeed;
pub use filter::{JobFilter, JobPage};
pub use handle::JobHandle;
pub use id::JobId;
pub use job_fn::JobFn;
pub use local::LocalJobs;
pub use observer::{JobEvent, JobEventKind, StatusObserver};
pub use registry::{JobRegistry, UserView};
pub use request::JobRequest;
pub use scope::{Everyone, OneUser, Scope};
pub use status::{AsynchJobState, AsynchronousJobStatus};
pub use store::SharedStore;
pub use watch::JobWatch;

/// The most characters kept of a progress message or an error message, as in Synapse; longer
/// ones are cut on a character boundary.
pub const MAX_MESSAGE_CHARS: usize = 3000;

/// The most bytes kept of a failed job's `errorDetails` (its error's `source()` chain).
pub const MAX_ERROR_DETAILS_BYTES: usize = 64 * 1024;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
