//! The state the handlers share: the configuration that [`AsyncJobApi`](super::AsyncJobApi) builds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::identify::DynIdentify;
use super::rejection::Rejection;
use crate::{exception, AsynchronousJobStatus, JobRegistry, Spawned, UserView};

/// What the handlers share: the configuration, behind one `Arc` once the router is built.
#[derive(Clone)]
pub(super) struct Api {
    pub(super) registry: JobRegistry,
    pub(super) identify: Arc<dyn DynIdentify>,
    /// Every job kind of every area, by `concreteType`: one request type starts one kind, in one
    /// area, whichever endpoint starts it.
    pub(super) kinds: HashMap<Arc<str>, Kind>,
    pub(super) exception_statuses: HashMap<String, StatusCode>,
    pub(super) failed_status: StatusCode,
    pub(super) canceled_status: StatusCode,
    pub(super) max_body_bytes: usize,
    pub(super) max_wait: Duration,
    pub(super) heartbeat: Duration,
    pub(super) cancel_by_get: bool,
}

/// One job kind: where it lives and how it starts.
#[derive(Clone)]
pub(super) struct Kind {
    /// Its area's path, e.g. `/entity/{entityId}/table/query`; `""` for the root area.
    pub(super) area: Arc<str>,
    pub(super) start: Arc<StartFn>,
}

/// Starts one kind of job for a user from a request body that has already been parsed (and
/// completed with its area's path parameters).
/// Request caching spans every instance sharing a store, so starting may ask the store first.
pub(super) type StartFn = dyn Fn(&UserView, Value) -> StartFuture + Send + Sync;

/// What a [`StartFn`] returns.
pub(super) type StartFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Spawned, Rejection>> + Send>>;

impl Api {
    /// The HTTP status `async/get` answers for this FAILED status. Never a 5xx unless the
    /// application mapped one: a FAILED status never changes, so asking again cannot help, and
    /// clients retry 5xx (Synapse's Python client for 20 minutes).
    pub(super) fn failure_status(&self, status: &AsynchronousJobStatus) -> StatusCode {
        let name = status.exception.as_deref();
        if let Some(&code) = name.and_then(|name| self.exception_statuses.get(name)) {
            return code;
        }
        // A time limit sets `jobCanceling` too, but nobody canceled that job.
        let canceled = name == Some(exception::CANCELED)
            || (status.job_canceling && name != Some(exception::TIMED_OUT));
        if canceled {
            self.canceled_status
        } else {
            self.failed_status
        }
    }
}
