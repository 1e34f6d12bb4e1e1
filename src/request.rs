//! What a job is started with.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// The description of a job to start: its request body, the user who starts it, and options.
///
/// ```
/// use std::time::Duration;
/// use asyncjobs::JobRequest;
///
/// let request = JobRequest::new(serde_json::json!({"concreteType": "org.example.ExportRequest"}))
///     .started_by(42)
///     .time_limit(Duration::from_secs(600))
///     .stall_limit(Duration::from_secs(60))
///     .cacheable();
/// assert_eq!(request.user(), Some(42));
/// ```
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    pub(crate) body: Option<Arc<Value>>,
    pub(crate) user: Option<u64>,
    pub(crate) cacheable: bool,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) stall_limit: Option<Duration>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) priority: i32,
}

impl JobRequest {
    /// A request with this body, which becomes the status's `requestBody` (Synapse's bodies are
    /// objects whose `concreteType` names their type). A `null` body is left out of the status.
    /// With a PostgreSQL store, a NUL character in it is stored (and read by other instances) as
    /// U+FFFD; the HTTP front makes it so before the job starts.
    pub fn new(body: Value) -> Self {
        let body = (!body.is_null()).then(|| Arc::new(body));
        JobRequest {
            body,
            ..JobRequest::default()
        }
    }

    /// Records the user who starts the job (`startedByUserId`). Only that user's
    /// [`UserView`](crate::UserView) can read or cancel the job; the registry itself can too.
    #[must_use]
    pub fn started_by(mut self, user_id: u64) -> Self {
        self.user = Some(user_id);
        self
    }

    /// Marks the request cacheable (Synapse's cacheable requests, for read-only work): if the
    /// same user already started a job with an equal body (as JSON: key order does not matter)
    /// that is still running, or finished COMPLETE and is still retained, [`spawn`] returns that
    /// job's id and starts nothing. Never across users, never a FAILED job. Other options of the
    /// request are not compared.
    ///
    /// [`spawn`]: crate::JobRegistry::spawn
    #[must_use]
    pub fn cacheable(mut self) -> Self {
        self.cacheable = true;
        self
    }

    /// The most time the job may run (from when it starts running; time queued under the
    /// concurrency limit does not count). When it is up, the job's token fires, and the job is
    /// stopped after the cancel grace if it does not stop by itself; it ends FAILED with exception
    /// [`exception::TIMED_OUT`](crate::exception::TIMED_OUT).
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The most time the job may go without a change of its status (e.g. progress): Synapse's
    /// client gives up on a job that long without progress; here the job itself is timed out,
    /// as with [`time_limit`](JobRequest::time_limit).
    #[must_use]
    pub fn stall_limit(mut self, limit: Duration) -> Self {
        self.stall_limit = Some(limit);
        self
    }

    /// Names the job for people: shown in its `tracing` span and events, as the `name` label of
    /// its metrics (feature `metrics`), on the HTTP front's dashboard and in its job list's
    /// `names`, and filterable in [`list`](crate::JobRegistry::list)
    /// ([`JobFilter::named`](crate::JobFilter::named)); read back with
    /// [`JobRegistry::job_name`](crate::JobRegistry::job_name). Not part of the status's JSON,
    /// whose fields are Synapse's. Name kinds of jobs, not single jobs (`"csv-export"`, not
    /// `"csv-export 81723"`): each distinct name is a time series of its own in metrics. A name
    /// shared by many jobs can be one `Arc<str>` for all of them.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        let name: Arc<str> = name.into();
        self.name = Some(match crate::text::without_nul(&name) {
            std::borrow::Cow::Borrowed(_) => name,
            std::borrow::Cow::Owned(replaced) => Arc::from(replaced),
        });
        self
    }

    /// The job's name, if one was given.
    pub fn job_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How soon the job starts when it has to wait for a slot under the registry's
    /// [concurrency limits](crate::JobRegistryBuilder::max_running): a job waiting with a higher
    /// priority starts before those with a lower one, and jobs of equal priority start in the
    /// order they were spawned. Negative values are for work that can wait.
    ///
    /// With the [fair order](crate::JobRegistryBuilder::fair_queue), priority orders only the
    /// jobs of the same user: across users, slots go round-robin whatever the priorities, so no
    /// user's jobs wait longer because another user gave theirs a higher priority. Without it,
    /// every waiting job is in one queue, which priority orders.
    ///
    /// A job that runs at once (a slot was free) is not affected, nor is a running job.
    ///
    /// Defaults to: 0.
    ///
    /// ```
    /// use asyncjobs::JobRequest;
    ///
    /// let preview = JobRequest::new(serde_json::json!({"concreteType": "org.example.Preview"}))
    ///     .started_by(42)
    ///     .priority(10);
    /// # drop(preview);
    /// ```
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The request body, if any.
    pub fn body(&self) -> Option<&Value> {
        self.body.as_deref()
    }

    /// The starting user, if one was given.
    pub fn user(&self) -> Option<u64> {
        self.user
    }
}
