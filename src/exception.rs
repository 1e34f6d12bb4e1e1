//! The `exception` names of failures that the registry itself reports.
//!
//! A job that returns `Err(e)` ends with `exception` set to the Rust type name of its error type
//! (e.g. `"std::io::error::Error"`). The failures below have no user error type, so they get
//! these names; an HTTP layer can map them to status codes like any other exception name.

/// The job panicked; `errorMessage` is the panic's message.
pub const PANICKED: &str = "asyncjobs::JobPanicked";

/// The registry ended a canceled job: it did not stop within the grace period
/// ([`JobRegistryBuilder::cancel_grace`](crate::JobRegistryBuilder::cancel_grace)), it was
/// canceled while queued, or a [shutdown](crate::JobRegistry::shutdown) stopped it.
/// `errorMessage` says which.
pub const CANCELED: &str = "asyncjobs::JobCanceled";

/// The job returned `Ok`, but its result could not be serialized to JSON.
pub const RESPONSE_NOT_SERIALIZABLE: &str = "asyncjobs::ResponseNotSerializable";

/// The job's task was dropped before it finished, without being canceled (its runtime shut
/// down), or the job had to be stopped because its runtime has no timer (built without the time
/// driver), which the cancel grace and time limits need.
pub const ABORTED: &str = "asyncjobs::JobAborted";

/// The job broke a time limit of its request ([`JobRequest::time_limit`] or
/// [`JobRequest::stall_limit`]); `errorMessage` says which. Its token fired, and it was stopped
/// after the cancel grace if it did not stop by itself.
///
/// [`JobRequest::time_limit`]: crate::JobRequest::time_limit
/// [`JobRequest::stall_limit`]: crate::JobRequest::stall_limit
pub const TIMED_OUT: &str = "asyncjobs::JobTimedOut";

/// The job's owning instance stopped (it stopped renewing its lease, or stopped before the job
/// finished), so another instance sharing the PostgreSQL store (feature `postgres`) marked the
/// job FAILED; `errorMessage` names the instance. The job's work may or may not have been done.
pub const NODE_LOST: &str = "asyncjobs::NodeLost";
