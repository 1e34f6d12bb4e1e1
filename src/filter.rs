//! Which jobs a list returns.

use std::sync::Arc;

use crate::AsynchJobState;

/// Selects jobs for [`JobRegistry::list`](crate::JobRegistry::list): by state and by starting
/// user. The default selects every job.
///
/// ```
/// use asyncjobs::{AsynchJobState, JobFilter};
///
/// let failed_for_7 = JobFilter::new().state(AsynchJobState::Failed).started_by(7);
/// # drop(failed_for_7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobFilter {
    pub(crate) state: Option<AsynchJobState>,
    pub(crate) user: Option<u64>,
    pub(crate) name: Option<Arc<str>>,
}

impl JobFilter {
    /// Every job.
    pub fn new() -> Self {
        JobFilter::default()
    }

    /// Only jobs in this state.
    #[must_use]
    pub fn state(mut self, state: AsynchJobState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only jobs with this [name](crate::JobRequest::name).
    #[must_use]
    pub fn named(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only jobs started by this user.
    #[must_use]
    pub fn started_by(mut self, user_id: u64) -> Self {
        self.user = Some(user_id);
        self
    }
}
