//! What the registry tells `tracing` (feature `tracing`, on by default): each job runs in a
//! `job` span with its id and user, and every change of a job's status is an event, emitted by
//! [`Job::apply`](crate::job::Job::apply) after the job's lock is released:
//!
//! | change | level | message |
//! |---|---|---|
//! | started (at `spawn`) | DEBUG | `job started` (`queued` says whether it waits for a slot) |
//! | progress | TRACE | `job progress` |
//! | moved in the queue (its place) | TRACE | `job moved in the queue` |
//! | left the queue | DEBUG | `job dequeued` |
//! | cancel requested | INFO | `job cancel requested` |
//! | a time limit broken | WARN | `job timed out` |
//! | complete | DEBUG | `job complete` |
//! | failed (error, stopped after the grace, shutdown) | WARN | `job failed` |
//! | failed (panic) | ERROR | `job failed` |
//!
//! Progress is at TRACE, the most verbose level, so a busy service logging at DEBUG or above never
//! floods. Without the feature, everything here compiles to nothing.

#[cfg(feature = "tracing")]
mod enabled {
    use std::sync::Arc;

    use tracing::{debug, error, info, trace, warn, Span};

    use crate::change::Change;
    use crate::exception;
    use crate::failure::Timeout;
    use crate::JobId;

    /// What one change was, kept to emit once the job's lock is released.
    pub(crate) enum Note<'a> {
        Progress {
            current: u64,
            total: u64,
            message: &'a str,
        },
        Canceling,
        TimedOut(Timeout),
        Dequeued,
        Placed(Arc<str>),
        Complete,
        Fail {
            message: Arc<str>,
            exception: Arc<str>,
        },
        #[cfg(test)]
        Silent,
    }

    impl<'a> Note<'a> {
        /// A note that emits nothing.
        #[cfg(test)]
        pub(crate) fn none() -> Self {
            Note::Silent
        }

        pub(crate) fn of(change: &Change<'a>) -> Self {
            match change {
                Change::Progress {
                    current,
                    total,
                    message,
                } => Note::Progress {
                    current: *current,
                    total: *total,
                    message,
                },
                Change::Canceling => Note::Canceling,
                Change::TimedOut(timeout) => Note::TimedOut(*timeout),
                Change::Dequeued => Note::Dequeued,
                Change::Placed { message, .. } => Note::Placed(message.clone()),
                Change::Complete(_) => Note::Complete,
                Change::Fail(f) => Note::Fail {
                    message: f.message.clone(),
                    exception: f.exception.clone(),
                },
            }
        }

        pub(crate) fn emit(
            self,
            id: JobId,
            user: Option<u64>,
            etag: u64,
            runtime_ms: impl FnOnce() -> u64,
        ) {
            let id = id.as_u64();
            match self {
                Note::Progress {
                    current,
                    total,
                    message,
                } => {
                    trace!(target: "asyncjobs", job_id = id, user, etag, current, total, progress_message = message, "job progress")
                }
                Note::Canceling => {
                    info!(target: "asyncjobs", job_id = id, user, etag, "job cancel requested")
                }
                Note::TimedOut(timeout) => {
                    let limit = match timeout {
                        Timeout::Total(limit) => format!("time limit {limit:?}"),
                        Timeout::Stall(limit) => format!("stall limit {limit:?}"),
                    };
                    warn!(target: "asyncjobs", job_id = id, user, etag, limit, "job timed out")
                }
                Note::Dequeued => {
                    debug!(target: "asyncjobs", job_id = id, user, etag, "job dequeued")
                }
                Note::Placed(message) => {
                    trace!(target: "asyncjobs", job_id = id, user, etag, progress_message = &*message, "job moved in the queue")
                }
                Note::Complete => {
                    debug!(target: "asyncjobs", job_id = id, user, etag, runtime_ms = runtime_ms(), "job complete")
                }
                Note::Fail { message, exception } if &*exception == exception::PANICKED => {
                    error!(target: "asyncjobs", job_id = id, user, etag, runtime_ms = runtime_ms(), %exception, error = %message, "job failed")
                }
                Note::Fail { message, exception } => {
                    warn!(target: "asyncjobs", job_id = id, user, etag, runtime_ms = runtime_ms(), %exception, error = %message, "job failed")
                }
                #[cfg(test)]
                Note::Silent => {}
            }
        }
    }

    pub(crate) fn started(id: JobId, user: Option<u64>, queued: bool) {
        debug!(target: "asyncjobs", job_id = id.as_u64(), user, queued, "job started");
    }

    /// Whether a subscriber wants progress events (TRACE): then progress reports are delivered
    /// in order, like every other change.
    pub(crate) fn progress_enabled() -> bool {
        tracing::enabled!(target: "asyncjobs", tracing::Level::TRACE)
    }

    /// An observer panicked; the panic was caught.
    pub(crate) fn observer_panicked(id: JobId, etag: u64) {
        error!(target: "asyncjobs", job_id = id.as_u64(), etag, "a status observer panicked; the panic was caught");
    }

    /// The span a job runs in, and its closure is called in.
    pub(crate) fn span(id: JobId, user: Option<u64>) -> Span {
        tracing::info_span!(target: "asyncjobs", "job", job_id = id.as_u64(), user)
    }
}

#[cfg(feature = "tracing")]
pub(crate) use enabled::{observer_panicked, progress_enabled, span, started, Note};

#[cfg(not(feature = "tracing"))]
mod disabled {
    use crate::change::Change;
    use crate::JobId;

    pub(crate) struct Note<'a>(std::marker::PhantomData<&'a ()>);

    impl Note<'_> {
        pub(crate) fn of(_: &Change<'_>) -> Self {
            Note(std::marker::PhantomData)
        }

        #[cfg(test)]
        pub(crate) fn none() -> Self {
            Note(std::marker::PhantomData)
        }

        pub(crate) fn emit(self, _: JobId, _: Option<u64>, _: u64, _: impl FnOnce() -> u64) {}
    }

    pub(crate) fn started(_: JobId, _: Option<u64>, _: bool) {}

    pub(crate) fn progress_enabled() -> bool {
        false
    }

    pub(crate) fn observer_panicked(_: JobId, _: u64) {}
}

#[cfg(not(feature = "tracing"))]
pub(crate) use disabled::{observer_panicked, progress_enabled, started, Note};
