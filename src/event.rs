//! One event of a job's life, as [`Job`](crate::job::Job) hands it to the seam: what every
//! listener (feeds, tracing, metrics, observers) learns of it.

use std::sync::Arc;

use crate::{AsynchJobState, JobEventKind, JobId};

/// One job's event, as the seam delivers it.
pub(crate) struct Event {
    pub(crate) kind: JobEventKind,
    pub(crate) id: JobId,
    pub(crate) user: Option<u64>,
    pub(crate) version: u64,
    pub(crate) state: AsynchJobState,
    pub(crate) canceling: bool,
    /// What asked the job to cancel, if anything did.
    pub(crate) cause: Option<crate::CancelCause>,
    /// What kind of change it was.
    pub(crate) step: Step,
    /// Whether the job waits (or, finished, waited until its end) in the concurrency limit's
    /// queue.
    pub(crate) queued: bool,
    /// Time from the job's spawn to this change.
    pub(crate) elapsed: std::time::Duration,
    /// A failed job's `exception`, a label of the failure metric.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) exception: Option<Arc<str>>,
}

/// The kinds of change, finer than [`JobEventKind`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Created,
    Progress,
    Canceling,
    Dequeued,
    Finished,
    Removed,
}

/// Whole milliseconds of `duration` (a job's runtime, as on the wire), in `u64` arithmetic.
pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(duration.subsec_millis()))
}
