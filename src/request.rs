//! What a job is started with.

use std::sync::Arc;

use serde_json::Value;

/// The description of a job to start: its request body and the user who starts it.
///
/// ```
/// use asyncjobs::JobRequest;
///
/// let request = JobRequest::new(serde_json::json!({"concreteType": "org.example.ExportRequest"}))
///     .started_by(42);
/// assert_eq!(request.user(), Some(42));
/// ```
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    pub(crate) body: Option<Arc<Value>>,
    pub(crate) user: Option<u64>,
}

impl JobRequest {
    /// A request with this body, which becomes the status's `requestBody` (Synapse's bodies are
    /// objects whose `concreteType` names their type). A `null` body is left out of the status.
    pub fn new(body: Value) -> Self {
        let body = (!body.is_null()).then(|| Arc::new(body));
        JobRequest { body, user: None }
    }

    /// Records the user who starts the job (`startedByUserId`). Only that user's
    /// [`UserView`](crate::UserView) can read or cancel the job; the registry itself can too.
    #[must_use]
    pub fn started_by(mut self, user_id: u64) -> Self {
        self.user = Some(user_id);
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
