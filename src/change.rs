//! The kinds of change a job's status can undergo: what [`Job::apply`](crate::job::Job::apply)
//! takes, and what the seam tells tracing about.

use std::sync::Arc;

use serde_json::Value;

use crate::failure::{Failure, Timeout};
use crate::CancelCause;

/// Every kind of change a job's status can undergo. A progress message is already cut to
/// [`MAX_MESSAGE_CHARS`](crate::MAX_MESSAGE_CHARS).
pub(crate) enum Change<'a> {
    Progress {
        current: u64,
        total: u64,
        message: &'a str,
    },
    Canceling(CancelCause),
    /// A time limit was broken: like `Canceling`, and the reason is kept for the final status.
    // The limit is read only by the trace event.
    TimedOut(#[cfg_attr(not(feature = "tracing"), allow(dead_code))] Timeout),
    /// Leaves the concurrency limit's queue: the job may start.
    Dequeued,
    /// A waiting job's place in the queue changed: its new message. `stamp` counts the places
    /// the scheduler gave this job; one older than the last applied is ignored, since the
    /// scheduler decides places under its lock but they are applied after it is released.
    Placed {
        message: Arc<str>,
        stamp: u32,
    },
    Complete(Option<Arc<Value>>),
    Fail(Failure),
}

impl Change<'_> {
    /// Which kind of change this is, for the seam.
    pub(crate) fn step(&self) -> crate::event::Step {
        use crate::event::Step;
        match self {
            Change::Progress { .. } | Change::Placed { .. } => Step::Progress,
            Change::Canceling(_) | Change::TimedOut(_) => Step::Canceling,
            Change::Dequeued => Step::Dequeued,
            Change::Complete(_) | Change::Fail(_) => Step::Finished,
        }
    }

    /// Whether this change is one of the few of a job's life (not progress): those are always
    /// handed to the seam's listeners in etag order, whoever listens.
    pub(crate) fn is_rare(&self) -> bool {
        !matches!(self, Change::Progress { .. })
    }
}
