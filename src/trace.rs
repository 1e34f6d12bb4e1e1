//! What the registry tells `tracing` (feature `tracing`, on by default); the table of events is
//! in the crate docs ("Tracing"). Events are emitted by the seam, in each job's etag order, as
//! root events (`parent: None`): they carry `job_id` and `user` themselves, so they do not repeat
//! them from the `job` span the job runs in, and look the same whichever thread made the change.
//! Without the feature, everything here compiles to nothing.

#[cfg(feature = "tracing")]
mod enabled {
    use std::sync::Arc;

    use tracing::{debug, error, info, trace, warn, Span};

    use crate::change::Change;
    use crate::failure::Timeout;
    use crate::{exception, CancelCause, JobId};

    /// What one change was, kept to emit once the job's lock is released.
    pub(crate) enum Note {
        Progress {
            current: u64,
            total: u64,
            message: Option<Arc<str>>,
        },
        Canceling(CancelCause),
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

    impl Note {
        /// A note that emits nothing.
        #[cfg(test)]
        pub(crate) fn none() -> Self {
            Note::Silent
        }

        /// The note of `change`; a progress report's message is given by [`Note::shows`].
        pub(crate) fn of(change: &Change<'_>) -> Self {
            match change {
                Change::Progress { current, total, .. } => Note::Progress {
                    current: *current,
                    total: *total,
                    message: None,
                },
                Change::Canceling(cause) => Note::Canceling(*cause),
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

        /// The progress message the job shows after a report.
        pub(crate) fn shows(&mut self, shown: Option<Arc<str>>) {
            if let Note::Progress { message, .. } = self {
                *message = shown;
            }
        }

        /// Emits the event; `cause` is what asked the job to cancel, if anything did.
        pub(crate) fn emit(
            self,
            id: JobId,
            user: Option<u64>,
            etag: u64,
            cause: Option<CancelCause>,
            runtime_ms: u64,
        ) {
            let id = id.as_u64();
            match self {
                Note::Progress {
                    current,
                    total,
                    message,
                } => {
                    trace!(target: "asyncjobs", parent: None, job_id = id, user, etag, current, total, progress_message = message.as_deref(), "job progress")
                }
                Note::Canceling(cause) => {
                    info!(target: "asyncjobs", parent: None, job_id = id, user, etag, cause = %cause, "job cancel requested")
                }
                Note::TimedOut(timeout) => {
                    let limit = match timeout {
                        Timeout::Total(limit) => format!("time limit {limit:?}"),
                        Timeout::Stall(limit) => format!("stall limit {limit:?}"),
                    };
                    warn!(target: "asyncjobs", parent: None, job_id = id, user, etag, limit, "job timed out")
                }
                Note::Dequeued => {
                    debug!(target: "asyncjobs", parent: None, job_id = id, user, etag, "job dequeued")
                }
                Note::Placed(message) => {
                    trace!(target: "asyncjobs", job_id = id, user, etag, progress_message = &*message, "job moved in the queue")
                }
                Note::Complete => {
                    debug!(target: "asyncjobs", parent: None, job_id = id, user, etag, runtime_ms, "job complete")
                }
                Note::Fail { message, exception } if &*exception == exception::PANICKED => {
                    error!(target: "asyncjobs", parent: None, job_id = id, user, etag, runtime_ms, %exception, error = %message, "job failed")
                }
                // Stopping on request (or at a shutdown) is what was asked for, not a fault.
                Note::Fail { message, exception }
                    if matches!(cause, Some(CancelCause::Requested | CancelCause::Shutdown)) =>
                {
                    info!(target: "asyncjobs", parent: None, job_id = id, user, etag, runtime_ms, cause = %cause.unwrap_or(CancelCause::Requested), %exception, error = %message, "job canceled")
                }
                Note::Fail { message, exception } => {
                    warn!(target: "asyncjobs", parent: None, job_id = id, user, etag, runtime_ms, %exception, error = %message, "job failed")
                }
                #[cfg(test)]
                Note::Silent => {}
            }
        }
    }

    pub(crate) fn started(id: JobId, user: Option<u64>, name: Option<&str>, queued: bool) {
        debug!(target: "asyncjobs", parent: None, job_id = id.as_u64(), user, name, queued, "job started");
    }

    /// Whether a subscriber wants progress events (TRACE): then progress reports are delivered
    /// in order, like every other change.
    pub(crate) fn progress_enabled() -> bool {
        tracing::enabled!(target: "asyncjobs", tracing::Level::TRACE)
    }

    /// An observer panicked; the panic was caught.
    pub(crate) fn observer_panicked(id: JobId, etag: u64) {
        error!(target: "asyncjobs", parent: None, job_id = id.as_u64(), etag, "a status observer panicked; the panic was caught");
    }

    /// The span a job runs in, and its closure is called in.
    pub(crate) fn span(id: JobId, user: Option<u64>, name: Option<&str>) -> Span {
        tracing::info_span!(target: "asyncjobs", "job", job_id = id.as_u64(), user, name)
    }
}

#[cfg(feature = "tracing")]
pub(crate) use enabled::{observer_panicked, progress_enabled, span, started, Note};

#[cfg(not(feature = "tracing"))]
mod disabled {
    use crate::change::Change;
    use crate::JobId;

    pub(crate) struct Note;

    impl Note {
        pub(crate) fn of(_: &Change<'_>) -> Self {
            Note
        }

        pub(crate) fn shows(&mut self, _: Option<std::sync::Arc<str>>) {}

        #[cfg(test)]
        pub(crate) fn none() -> Self {
            Note
        }

        pub(crate) fn emit(
            self,
            _: JobId,
            _: Option<u64>,
            _: u64,
            _: Option<crate::CancelCause>,
            _: u64,
        ) {
        }
    }

    pub(crate) fn started(_: JobId, _: Option<u64>, _: Option<&str>, _: bool) {}

    pub(crate) fn progress_enabled() -> bool {
        false
    }

    pub(crate) fn observer_panicked(_: JobId, _: u64) {}
}

#[cfg(not(feature = "tracing"))]
pub(crate) use disabled::{observer_panicked, progress_enabled, started, Note};
