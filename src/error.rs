//! The crate's one error type.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::JobId;

/// Everything that can go wrong when calling into a [`JobRegistry`](crate::JobRegistry).
///
/// Every variant says what the caller asked for that could not be done; none of them means the
/// registry is damaged, and the registry keeps working after returning any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No job with this id is known: it was never started by this registry, or it finished and
    /// its status has since been dropped by the retention rules
    /// ([`JobRegistryBuilder::keep_finished_for`](crate::JobRegistryBuilder::keep_finished_for)).
    /// An HTTP layer answers 404.
    UnknownJob(JobId),
    /// The text given as a job id is not one: ids are 1 to 20 ASCII digits that fit in a `u64`.
    /// An HTTP layer answers 400.
    MalformedId,
    /// The job exists but was started by another user (or by no user), and the caller is a
    /// [`UserView`](crate::UserView) of a different user. An HTTP layer answers 403.
    NotYourJob(JobId),
    /// The registry has been shut down and starts no more jobs. Statuses stay readable.
    ShutDown,
    /// `spawn` was called outside a tokio runtime and the registry was built without one
    /// ([`JobRegistryBuilder::runtime`](crate::JobRegistryBuilder::runtime)).
    NoRuntime,
    /// The registry's shared store (e.g. PostgreSQL) could not be reached, so a job of another
    /// instance could not be read, waited for or canceled, or no job id could be had. Local jobs
    /// keep running and answering. Try again later; an HTTP layer answers 503. The
    /// [`StoreFault`] says what failed, and its [`source`](std::error::Error::source) is the
    /// store's own error (e.g. a `postgres::StoreError`).
    StoreUnavailable(StoreFault),
    /// The job cannot be started as the request says, and the text says why: e.g. a user id
    /// above `i64::MAX` with a PostgreSQL store, which keeps user ids as `bigint`. Nothing was
    /// started. An HTTP layer answers 400.
    InvalidRequest(Arc<str>),
}

/// What went wrong reaching a shared store: a short text, and the store's own error underneath
/// ([`source`](std::error::Error::source)), kept for logs and for code that needs the detail.
/// Clones share the source. Two faults are equal when their texts are.
#[derive(Clone)]
pub struct StoreFault {
    reason: Arc<str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreFault {
    /// A fault with `source` underneath; its text is the source's `Display`.
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreFault {
            reason: Arc::from(source.to_string()),
            source: Some(Arc::new(source)),
        }
    }

    /// What failed, as the store said it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl From<&str> for StoreFault {
    /// A fault with no error underneath.
    fn from(reason: &str) -> Self {
        StoreFault {
            reason: Arc::from(reason),
            source: None,
        }
    }
}

impl PartialEq for StoreFault {
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason
    }
}

impl Eq for StoreFault {}

impl fmt::Display for StoreFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl fmt::Debug for StoreFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreFault")
            .field("reason", &self.reason)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for StoreFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source: &(dyn std::error::Error + 'static) = self.source.as_deref()?;
        Some(source)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownJob(id) => write!(f, "unknown job {id}"),
            Error::MalformedId => f.write_str("malformed job id: expected 1 to 20 ascii digits"),
            Error::NotYourJob(id) => write!(f, "job {id} was started by another user"),
            Error::ShutDown => f.write_str("job registry is shut down"),
            Error::NoRuntime => f.write_str("no tokio runtime to run the job on"),
            Error::StoreUnavailable(reason) => write!(f, "job store unavailable: {reason}"),
            Error::InvalidRequest(reason) => write!(f, "invalid job request: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    /// For [`Error::StoreUnavailable`], the store's own error.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::StoreUnavailable(fault) => std::error::Error::source(fault),
            _ => None,
        }
    }
}

// Here rather than in `id.rs`, so that ids, a leaf, know nothing of errors.
impl FromStr for JobId {
    type Err = Error;

    /// Parses 1 to 20 ASCII digits.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedId`] for anything else, including values above `u64::MAX`.
    fn from_str(s: &str) -> Result<Self, Error> {
        JobId::parse(s).ok_or(Error::MalformedId)
    }
}
