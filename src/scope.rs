//! Whose jobs a registry answers for: the type parameter of [`JobRegistry`](crate::JobRegistry).
//!
//! One façade, two scopes. The administrator's registry ([`Everyone`]) and a user's view
//! ([`OneUser`], [`UserView`](crate::UserView)) share every method that reads, waits for,
//! cancels and starts jobs, with one set of docs; the scope is a type, not a value, so that a
//! handler holding a user's view cannot widen it: `as_user`, `shutdown` and the builder exist on
//! the administrator's registry alone.

use std::fmt::Debug;

/// Whose jobs a [`JobRegistry`](crate::JobRegistry) answers for: [`Everyone`] or [`OneUser`].
/// Sealed: these two are the scopes there are.
pub trait Scope: sealed::Sealed + Clone + Debug + Send + Sync + 'static {}

/// The administrator's scope: every job, whoever started it. The default of
/// [`JobRegistry`](crate::JobRegistry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Everyone;

/// One user's scope: the jobs that user started. Other jobs, including those started with no
/// user, are refused with [`Error::NotYourJob`](crate::Error::NotYourJob); jobs started through
/// it are that user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneUser(pub(crate) u64);

impl OneUser {
    /// The user's id.
    pub fn user(self) -> u64 {
        self.0
    }
}

impl Scope for Everyone {}
impl Scope for OneUser {}

pub(crate) mod sealed {
    /// Keeps [`Scope`](super::Scope) to this crate's two, and tells the engine which it is.
    pub trait Sealed {
        /// The user whose jobs are in scope; `None` for every job.
        fn user(&self) -> Option<u64>;
    }

    impl Sealed for super::Everyone {
        fn user(&self) -> Option<u64> {
            None
        }
    }

    impl Sealed for super::OneUser {
        fn user(&self) -> Option<u64> {
            Some(self.0)
        }
    }
}
