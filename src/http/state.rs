//! The state the handlers share: the configuration that [`AsyncJobApi`](super::AsyncJobApi) builds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::identify::IdentifyUser;
use super::rejection::Rejection;
use crate::{AsynchronousJobStatus, JobId, JobRegistry, UserView};

/// What the handlers share: the configuration, behind one `Arc` once the router is built.
#[derive(Clone)]
pub(super) struct Api {
    pub(super) registry: JobRegistry,
    pub(super) identify: Arc<dyn IdentifyUser>,
    pub(super) kinds: HashMap<Arc<str>, Arc<StartFn>>,
    pub(super) exception_statuses: HashMap<String, StatusCode>,
    pub(super) failed_status: StatusCode,
    pub(super) canceled_status: StatusCode,
    pub(super) max_body_bytes: usize,
    pub(super) max_wait: Duration,
}

/// Starts one kind of job for a user from a request body that has already been parsed.
pub(super) type StartFn = dyn Fn(&UserView, Value) -> Result<JobId, Rejection> + Send + Sync;

impl Api {
    /// The HTTP status `async/get` answers for this FAILED status.
    pub(super) fn failure_status(&self, status: &AsynchronousJobStatus) -> StatusCode {
        let mapped = status
            .exception
            .as_deref()
            .and_then(|name| self.exception_statuses.get(name));
        match mapped {
            Some(&code) => code,
            None if status.job_canceling => self.canceled_status,
            None => self.failed_status,
        }
    }
}
