//! What a cancel request did.

/// The result of [`JobRegistry::cancel`](crate::JobRegistry::cancel): whether the call changed
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelOutcome {
    /// The job was running: `jobCanceling` is now set (a new etag) and its cancellation token
    /// has fired.
    Requested,
    /// Cancellation had already been requested; nothing changed.
    AlreadyRequested,
    /// The job had already finished; nothing changed.
    AlreadyFinished,
}
