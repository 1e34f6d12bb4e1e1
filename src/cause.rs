//! Why a job was asked to stop.

use std::fmt;

/// What asked a job to cancel: a job (while it runs, through
/// [`JobHandle::cancel_cause`](crate::JobHandle::cancel_cause)) and an operator (in the final
/// status's `errorMessage` of failures the registry makes) can tell a user's cancel from a
/// shutdown or a time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelCause {
    /// Someone asked: [`JobRegistry::cancel`](crate::JobRegistry::cancel) from any instance (or a
    /// `UserView`'s, or the HTTP front's cancel).
    Requested,
    /// The registry's [`shutdown`](crate::JobRegistry::shutdown).
    Shutdown,
    /// The request's [`time_limit`](crate::JobRequest::time_limit) ran out.
    TimeLimit,
    /// The request's [`stall_limit`](crate::JobRequest::stall_limit) ran out.
    StallLimit,
    /// This instance could not renew its lease in the shared store in time, so it stopped its
    /// jobs rather than run them unseen.
    LeaseLost,
}

impl fmt::Display for CancelCause {
    /// E.g. `on request`, `by the registry's shutdown`: completes "the job was canceled …".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelCause::Requested => "on request",
            CancelCause::Shutdown => "by the registry's shutdown",
            CancelCause::TimeLimit => "by its time limit",
            CancelCause::StallLimit => "by its stall limit",
            CancelCause::LeaseLost => "because its instance lost its lease in the shared store",
        })
    }
}
