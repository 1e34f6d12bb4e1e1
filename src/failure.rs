//! Why a job failed, formatted and capped before the job's lock is taken: building a failure may
//! run user code (an error's `Display`, `source` and `Drop`, a panic payload's `Drop`), and none of
//! it may escape or poison anything.

use std::any::Any;
use std::error::Error as StdError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::text::{error_chain, error_message, truncate_bytes, truncate_chars, without_nul};
use crate::{exception, MAX_ERROR_DETAILS_BYTES, MAX_MESSAGE_CHARS};

/// Which time limit a job broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    Total(Duration),
    Stall(Duration),
}

/// A failed job's `errorMessage`, `errorDetails` and `exception`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: Arc<str>,
    pub(crate) details: Option<Arc<str>>,
    pub(crate) exception: Arc<str>,
}

impl Timeout {
    /// The cause a broken limit gives.
    pub(crate) fn cause(self) -> crate::CancelCause {
        match self {
            Timeout::Total(_) => crate::CancelCause::TimeLimit,
            Timeout::Stall(_) => crate::CancelCause::StallLimit,
        }
    }
}

impl Failure {
    /// A failure the registry reports itself, with one of the names in [`exception`].
    pub(crate) fn registry(message: impl Into<String>, exception: &'static str) -> Self {
        Failure {
            message: Arc::from(message.into()),
            details: None,
            exception: Arc::from(exception),
        }
    }

    /// The same, with what asked the job to cancel in `errorDetails` (the message stays as it
    /// is, for clients that match on it).
    pub(crate) fn canceled(
        message: impl Into<String>,
        exception: &'static str,
        cause: crate::CancelCause,
    ) -> Self {
        Failure {
            details: Some(Arc::from(format!("canceled {cause}"))),
            ..Failure::registry(message, exception)
        }
    }

    /// The job returned `Err(error)`: its message, its `source()` chain and its type's name.
    pub(crate) fn of_error<E: Into<Box<dyn StdError + Send + Sync>>>(error: E) -> Self {
        let exception = Arc::from(std::any::type_name::<E>());
        let formatted = catch_unwind(AssertUnwindSafe(|| {
            let error: Box<dyn StdError + Send + Sync> = error.into();
            let message = error_message(&*error, MAX_MESSAGE_CHARS);
            let details = error_chain(&*error, MAX_ERROR_DETAILS_BYTES);
            (message, details, error)
        }));
        match formatted {
            Ok((message, details, error)) => {
                // Dropped on its own: a panicking `Drop` must not lose the message.
                if let Err(panic) = catch_unwind(AssertUnwindSafe(move || drop(error))) {
                    drop_quietly(panic);
                }
                Failure {
                    message: Arc::from(without_nul(&message)),
                    details: Some(Arc::from(without_nul(&details))),
                    exception,
                }
            }
            Err(panic) => {
                drop_quietly(panic);
                Failure {
                    message: Arc::from("job failed, and formatting its error panicked"),
                    details: None,
                    exception,
                }
            }
        }
    }

    /// The job panicked with `panic`.
    pub(crate) fn of_panic(panic: Box<dyn Any + Send>) -> Self {
        let message = if let Some(s) = panic.downcast_ref::<&'static str>() {
            capped_message(s)
        } else if let Some(s) = panic.downcast_ref::<String>() {
            capped_message(s)
        } else {
            Arc::from("job panicked")
        };
        drop_quietly(panic);
        Failure {
            message,
            details: None,
            exception: Arc::from(exception::PANICKED),
        }
    }

    /// The job's result did not serialize to JSON.
    pub(crate) fn not_serializable(error: &serde_json::Error) -> Self {
        Failure {
            message: capped_message(&format!("job result could not be serialized: {error}")),
            details: None,
            exception: Arc::from(exception::RESPONSE_NOT_SERIALIZABLE),
        }
    }

    /// A failure after a time limit was broken names the limit; what the job itself said goes
    /// to the details. A panic stays a panic.
    pub(crate) fn after_timeout(self, timeout: Timeout) -> Self {
        if self.exception.as_ref() == exception::PANICKED {
            return self;
        }
        let message = match timeout {
            Timeout::Total(limit) => format!("job exceeded its time limit of {limit:?}"),
            Timeout::Stall(limit) => format!("job made no progress for {limit:?}, its stall limit"),
        };
        // A failure the registry made (stopped after the grace) is told by its message; its
        // details only name the cause, which the new message now gives.
        let own_text = if self.exception.as_ref() == exception::CANCELED {
            self.message
        } else {
            self.details.unwrap_or(self.message)
        };
        let details = format!("{message}; then: {own_text}");
        Failure {
            message: Arc::from(message),
            details: Some(Arc::from(truncate_bytes(&details, MAX_ERROR_DETAILS_BYTES))),
            exception: Arc::from(exception::TIMED_OUT),
        }
    }
}

fn capped_message(s: &str) -> Arc<str> {
    Arc::from(without_nul(truncate_chars(s, MAX_MESSAGE_CHARS)))
}

/// Drops a panic payload, whose own `Drop` could panic again.
pub(crate) fn drop_quietly(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_names_the_limit_and_keeps_what_the_job_said() {
        let own = Failure::of_error(std::io::Error::other("disk full"));
        let failure = own.after_timeout(Timeout::Total(Duration::from_secs(2)));
        assert_eq!(&*failure.exception, exception::TIMED_OUT);
        assert_eq!(&*failure.message, "job exceeded its time limit of 2s");
        assert_eq!(
            failure.details.as_deref(),
            Some("job exceeded its time limit of 2s; then: disk full")
        );
    }

    #[test]
    fn a_panic_after_a_timeout_stays_a_panic() {
        let panic = Failure::of_panic(Box::new("boom"));
        let failure = panic.after_timeout(Timeout::Stall(Duration::from_secs(1)));
        assert_eq!(&*failure.exception, exception::PANICKED);
        assert_eq!(&*failure.message, "boom");
    }

    #[test]
    fn a_panic_message_is_capped() {
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        let failure = Failure::of_panic(Box::new(long));
        assert_eq!(failure.message.chars().count(), MAX_MESSAGE_CHARS);
    }
}
