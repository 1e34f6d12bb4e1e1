//! Which jobs a list returns, and a page of them.

use std::sync::Arc;

use crate::{AsynchJobState, AsynchronousJobStatus, JobId};

/// Selects jobs for [`JobRegistry::list`](crate::JobRegistry::list): by state, starting user
/// and name, a page at a time. The default selects every job, in pages of
/// [`DEFAULT_PAGE_SIZE`](JobFilter::DEFAULT_PAGE_SIZE).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{AsynchJobState, JobFilter, JobRegistry};
///
/// let registry = JobRegistry::new();
/// // Every failed job of user 7, newest first, 50 at a time.
/// let mut filter = Some(JobFilter::new().state(AsynchJobState::Failed).started_by(7).limit(50));
/// while let Some(this) = filter {
///     let page = registry.list(&this).await?;
///     for status in &page.jobs {
///         println!("{}: {:?}", status.job_id, status.error_message);
///     }
///     filter = page.next;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub(crate) state: Option<AsynchJobState>,
    pub(crate) user: Option<u64>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) concrete_type: Option<Arc<str>>,
    /// Only jobs with a lower id: where this page starts.
    pub(crate) before: Option<JobId>,
    pub(crate) limit: usize,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            state: None,
            user: None,
            name: None,
            concrete_type: None,
            before: None,
            limit: JobFilter::DEFAULT_PAGE_SIZE,
        }
    }
}

/// One page of a [list](crate::JobRegistry::list): jobs newest first (by id, so in the order they
/// were started), and the filter of the next page.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobPage {
    /// The jobs, newest first: at most the filter's [limit](JobFilter::limit).
    pub jobs: Vec<AsynchronousJobStatus>,
    /// The filter that lists the next page (older jobs), if there may be more; `None` on the
    /// last page.
    pub next: Option<JobFilter>,
}

impl JobPage {
    /// The page of `jobs` (newest first; one more than `filter.limit` tells that more follow)
    /// under `filter`. `more_below`: a source of the jobs was cut short there, so jobs with lower
    /// ids may follow even if `jobs` is not over the limit.
    pub(crate) fn new(
        mut jobs: Vec<AsynchronousJobStatus>,
        filter: &JobFilter,
        more_below: Option<JobId>,
    ) -> Self {
        let next = if jobs.len() > filter.limit {
            jobs.truncate(filter.limit);
            jobs.last().map(|last| last.job_id)
        } else {
            more_below
        };
        JobPage {
            jobs,
            next: next.map(|before| JobFilter {
                before: Some(before),
                ..filter.clone()
            }),
        }
    }
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

    /// Only jobs whose request body's `concreteType` is `concrete_type` (Synapse's kind of
    /// request, e.g. `org.sagebionetworks.repo.model.table.DownloadFromTableRequest`).
    #[must_use]
    pub fn concrete_type(mut self, concrete_type: impl Into<Arc<str>>) -> Self {
        self.concrete_type = Some(concrete_type.into());
        self
    }

    /// Only jobs started by this user.
    #[must_use]
    pub fn started_by(mut self, user_id: u64) -> Self {
        self.user = Some(user_id);
        self
    }

    /// The most jobs a page holds (at least 1). Defaults to
    /// [`DEFAULT_PAGE_SIZE`](JobFilter::DEFAULT_PAGE_SIZE).
    #[must_use]
    pub fn limit(mut self, jobs: usize) -> Self {
        self.limit = jobs.max(1);
        self
    }

    /// Only jobs older than `id` (with a lower id): the page after the one that ended with `id`.
    /// [`JobPage::next`] sets it.
    #[must_use]
    pub fn before(mut self, id: JobId) -> Self {
        self.before = Some(id);
        self
    }

    /// Where the page this filter lists starts: below this id, if set.
    pub fn starting_before(&self) -> Option<JobId> {
        self.before
    }

    /// The default page size: 1,000 jobs.
    pub const DEFAULT_PAGE_SIZE: usize = 1_000;

    /// Whether `status` passes the state filter (the others are applied where jobs are found).
    pub(crate) fn admits_state(&self, status: &AsynchronousJobStatus) -> bool {
        self.state.is_none_or(|state| status.job_state == state)
    }

    /// Whether a request body passes the `concreteType` filter.
    pub(crate) fn admits_request(&self, body: Option<&serde_json::Value>) -> bool {
        self.concrete_type.as_deref().is_none_or(|wanted| {
            body.and_then(|body| body.get("concreteType"))
                .and_then(serde_json::Value::as_str)
                == Some(wanted)
        })
    }
}
