//! Synapse's asynchronous-job REST API over a [`JobRegistry`], as an axum router (feature `http`).
//!
//! [`AsyncJobApi`] is built from a registry, a way to tell the calling user from a request
//! ([`IdentifyUser`]; [`UserHeader`] reads a header) and the application's job functions, one per
//! request type, keyed by the `concreteType` of the request body. [`into_router`] gives an
//! [`axum::Router`] (axum 0.8) to serve alone or to merge into the application's own.
//!
//! # Endpoints
//!
//! | method and path | answer |
//! |---|---|
//! | `POST {prefix}/async/start` | `201 {"token": "<jobId>"}`: starts the job the body's `concreteType` names, as the caller |
//! | `GET {prefix}/async/get/{token}` | `202` and the status while PROCESSING; `200` and the response body when COMPLETE (`null` for a job whose result serializes to `null`); when FAILED, a status chosen from `exception` with `{"reason": errorMessage}` |
//! | `GET /asynchronous/job/{jobId}` | `200` and the status, in any state |
//! | `POST` (or, as Synapse, `GET`) `/asynchronous/job/{jobId}/cancel` | asks the job to cancel: `202` and the status while it is still PROCESSING, `200` and the status once it has finished |
//!
//! The prefix is empty unless set with [`AsyncJobApi::prefix`]. Every request goes through
//! [`JobRegistry::as_user`] for the caller, so a job started by another user is refused with 403.
//!
//! # Errors
//!
//! Every refusal is JSON `{"reason": "…"}`, Synapse's error shape, with one of these statuses:
//!
//! | status | when |
//! |---|---|
//! | 400 | malformed job id; body not JSON, not an object, without a string `concreteType`, with an unknown `concreteType`, or not what the job kind's body type expects; malformed `wait` |
//! | 401, 400 | [`UserHeader`]: the header is missing, or not a user id (other [`IdentifyUser`]s choose their own) |
//! | 403 | the job was started by another user |
//! | 404 | no such job (never started, or dropped by retention) |
//! | 413 | the body is larger than [`max_body_bytes`](AsyncJobApi::max_body_bytes) |
//! | 503 | the registry is [shut down](JobRegistry::shutdown): no new jobs |
//!
//! # Failed jobs on `async/get`
//!
//! A FAILED job answers with the status its `exception` is mapped to
//! ([`exception_status`](AsyncJobApi::exception_status)); an unmapped one that was canceled
//! (`jobCanceling`) answers [`canceled_status`](AsyncJobApi::canceled_status), any other
//! [`failed_status`](AsyncJobApi::failed_status), 400 by default, as in Synapse. The failures the
//! registry reports itself are mapped by default:
//!
//! | `exception` | status | why |
//! |---|---|---|
//! | [`asyncjobs::JobTimedOut`](crate::exception::TIMED_OUT) | 504 Gateway Timeout | the work took longer than its limit |
//! | [`asyncjobs::JobCanceled`](crate::exception::CANCELED) | 409 Conflict | canceled (or stopped by a shutdown): the result will never exist |
//! | [`asyncjobs::JobPanicked`](crate::exception::PANICKED) | 500 Internal Server Error | a bug in the job |
//! | [`asyncjobs::ResponseNotSerializable`](crate::exception::RESPONSE_NOT_SERIALIZABLE) | 500 Internal Server Error | a bug in the job |
//! | [`asyncjobs::JobAborted`](crate::exception::ABORTED) | 503 Service Unavailable | the server's runtime went away under the job |
//!
//! # Beyond Synapse: etags, `304` and long-polling
//!
//! Both `GET` endpoints and the cancel endpoint send the status's etag as a (quoted) `ETag`
//! header, and every answer about a job carries `Cache-Control: no-store`. A client that sends
//! the etag it last saw, in `If-None-Match` or as `?etag=`, gets `304 Not Modified` while the
//! status is unchanged. With `?wait=<seconds>` (decimals allowed, at most
//! [`max_wait`](AsyncJobApi::max_wait)) the request is held until the status changes, answered
//! at once with the new status, or with `304` when the wait runs out: a client learns of each
//! change at once without asking again and again. A finished job never changes, so a matching
//! etag on one is answered `304` at once; without an etag, `wait` does nothing.
//!
//! ```text
//! GET /asynchronous/job/1764379461000000?wait=30
//! If-None-Match: "3"
//!                               ... held until the status changes ...
//! 200 OK
//! ETag: "4"
//! Cache-Control: no-store
//! {"jobId":"1764379461000000","jobState":"PROCESSING","etag":"4","progressCurrent":2, ...}
//! ```
//!
//! # Example
//!
//! ```no_run
//! use asyncjobs::http::{AsyncJobApi, UserHeader};
//! use asyncjobs::{JobHandle, JobRegistry};
//! use serde::Deserialize;
//! use serde_json::{json, Value};
//!
//! /// The body of `{"concreteType": "org.example.ExportRequest", "rows": 1000}`.
//! #[derive(Deserialize)]
//! struct ExportRequest {
//!     rows: u64,
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = JobRegistry::new();
//! let app = AsyncJobApi::new(registry.clone(), UserHeader::new("X-User-Id"))
//!     .prefix("/export")
//!     .job("org.example.ExportRequest", |request: ExportRequest, job: JobHandle| async move {
//!         for row in 0..request.rows {
//!             if job.is_canceling() {
//!                 return Err(std::io::Error::other("export canceled"));
//!             }
//!             job.set_progress(row, request.rows, "exporting");
//!             tokio::task::yield_now().await;
//!         }
//!         Ok(json!({"concreteType": "org.example.ExportResponse", "rows": request.rows}))
//!     })
//!     // A raw body: the job gets the whole JSON object.
//!     .job("org.example.EchoRequest", |body: Value, _job: JobHandle| async move {
//!         Ok::<_, std::io::Error>(body)
//!     })
//!     .into_router();
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`into_router`]: AsyncJobApi::into_router

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection, RawPathParamsRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, RawPathParams, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::{
    exception, AsynchJobState, AsynchronousJobStatus, Error, Etag, JobHandle, JobId, JobRegistry,
    JobRequest, UserView,
};

/// The default for [`AsyncJobApi::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The default for [`AsyncJobApi::max_wait`]: 30 seconds, below the idle timeouts of most
/// proxies and load balancers.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// Builds the router for Synapse's asynchronous-job REST API over one [`JobRegistry`]; see the
/// [module docs](self) for the endpoints and their answers.
///
/// Each job kind is an async function registered under the `concreteType` of its request body
/// ([`job`](AsyncJobApi::job)); each request's user comes from an [`IdentifyUser`].
/// `Clone` is cheap: clones share the job kinds and the user identification.
#[derive(Clone)]
pub struct AsyncJobApi {
    api: Api,
    prefix: String,
}

/// What the handlers share: the configuration, behind one `Arc` once the router is built.
#[derive(Clone)]
struct Api {
    registry: JobRegistry,
    identify: Arc<dyn IdentifyUser>,
    kinds: HashMap<Arc<str>, Arc<StartFn>>,
    exception_statuses: HashMap<String, StatusCode>,
    failed_status: StatusCode,
    canceled_status: StatusCode,
    max_body_bytes: usize,
    max_wait: Duration,
}

/// Starts one kind of job for a user from a request body that has already been parsed.
type StartFn = dyn Fn(&UserView, Value) -> Result<JobId, Rejection> + Send + Sync;

impl AsyncJobApi {
    /// An API over `registry` with no job kinds yet, telling users apart with `identify`.
    ///
    /// ```
    /// use asyncjobs::http::{AsyncJobApi, Rejection, UserHeader};
    /// use asyncjobs::JobRegistry;
    /// use axum::http::request::Parts;
    ///
    /// // A header set by an authenticating proxy in front of the service:
    /// let by_header = AsyncJobApi::new(JobRegistry::new(), UserHeader::new("X-User-Id"));
    ///
    /// // The user an authentication middleware left in the request's extensions:
    /// #[derive(Clone, Copy)]
    /// struct Authenticated(u64);
    /// let by_middleware = AsyncJobApi::new(JobRegistry::new(), |request: &Parts| {
    ///     request
    ///         .extensions
    ///         .get::<Authenticated>()
    ///         .map(|user| user.0)
    ///         .ok_or_else(|| Rejection::unauthorized("not signed in"))
    /// });
    /// # drop((by_header, by_middleware));
    /// ```
    pub fn new(registry: JobRegistry, identify: impl IdentifyUser) -> Self {
        let exception_statuses = [
            (exception::TIMED_OUT, StatusCode::GATEWAY_TIMEOUT),
            (exception::CANCELED, StatusCode::CONFLICT),
            (exception::PANICKED, StatusCode::INTERNAL_SERVER_ERROR),
            (
                exception::RESPONSE_NOT_SERIALIZABLE,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (exception::ABORTED, StatusCode::SERVICE_UNAVAILABLE),
        ]
        .into_iter()
        .map(|(name, status)| (name.to_owned(), status))
        .collect();
        AsyncJobApi {
            api: Api {
                registry,
                identify: Arc::new(identify),
                kinds: HashMap::new(),
                exception_statuses,
                failed_status: StatusCode::BAD_REQUEST,
                canceled_status: StatusCode::CONFLICT,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_wait: DEFAULT_MAX_WAIT,
            },
            prefix: String::new(),
        }
    }

    /// The path before `/async/start` and `/async/get/{token}`, e.g. `"/table/query"` (Synapse
    /// has one per area). A missing leading `/` is added and a trailing one dropped. It may
    /// contain axum captures (`"/entity/{id}/table/query"`), which are matched but not passed to
    /// jobs. `/asynchronous/job/…` is never prefixed.
    ///
    /// Defaults to: `""`, so the routes are `/async/start` and `/async/get/{token}`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let trimmed = prefix.trim_matches('/');
        self.prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        self
    }

    /// Registers a job kind: a request body whose `concreteType` is `concrete_type` starts a job
    /// that runs `job(body, handle)`, as the calling user.
    ///
    /// The body is deserialized into `B` first: take [`serde_json::Value`] for the raw JSON
    /// object, or a type of your own (unknown fields such as `concreteType` are ignored unless it
    /// says otherwise); a body that does not deserialize is refused with 400 and serde's message.
    /// The whole body becomes the job's `requestBody` either way. `job` and its result are as for
    /// [`JobRegistry::spawn`]; it is called once per job started, from the request's task (not
    /// at all when a [cacheable](JobRequest::cacheable) request is answered with an earlier job).
    ///
    /// # Panics
    ///
    /// If `concrete_type` is already registered.
    #[must_use]
    pub fn job<B, F, Fut, R, E>(self, concrete_type: impl Into<String>, job: F) -> Self
    where
        B: DeserializeOwned + 'static,
        F: Fn(B, JobHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.job_with(concrete_type, std::convert::identity, job)
    }

    /// Registers a job kind, as [`job`](AsyncJobApi::job), whose [`JobRequest`] is passed through
    /// `configure` before the job starts: to make it
    /// [cacheable](JobRequest::cacheable) (an equal request from the same user then answers with
    /// the earlier job's token), or to give it a [time limit](JobRequest::time_limit) or a
    /// [stall limit](JobRequest::stall_limit). The request already carries the body
    /// ([`JobRequest::body`]) and the calling user is set after `configure`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use asyncjobs::http::{AsyncJobApi, UserHeader};
    /// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
    /// use serde_json::{json, Value};
    ///
    /// let api = AsyncJobApi::new(JobRegistry::new(), UserHeader::new("X-User-Id")).job_with(
    ///     "org.example.QueryRequest",
    ///     |request: JobRequest| request.cacheable().time_limit(Duration::from_secs(600)),
    ///     |query: Value, _job: JobHandle| async move {
    ///         Ok::<_, std::io::Error>(json!({"concreteType": "org.example.QueryResult", "query": query}))
    ///     },
    /// );
    /// # drop(api);
    /// ```
    ///
    /// # Panics
    ///
    /// If `concrete_type` is already registered.
    #[must_use]
    pub fn job_with<B, C, F, Fut, R, E>(
        mut self,
        concrete_type: impl Into<String>,
        configure: C,
        job: F,
    ) -> Self
    where
        B: DeserializeOwned + 'static,
        C: Fn(JobRequest) -> JobRequest + Send + Sync + 'static,
        F: Fn(B, JobHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let concrete_type: Arc<str> = Arc::from(concrete_type.into());
        let name = concrete_type.clone();
        let start = move |user: &UserView, body: Value| -> Result<JobId, Rejection> {
            let typed = B::deserialize(&body)
                .map_err(|e| Rejection::bad_request(format!("invalid {name} request body: {e}")))?;
            let request = configure(JobRequest::new(body));
            Ok(user.spawn(request, |handle| job(typed, handle))?)
        };
        let earlier = self
            .api
            .kinds
            .insert(concrete_type.clone(), Arc::new(start));
        assert!(
            earlier.is_none(),
            "job kind {concrete_type} is registered twice"
        );
        self
    }

    /// The HTTP status that `async/get` answers for a FAILED job whose `exception` is
    /// `exception` (e.g. a Rust type name such as `"myapp::errors::NotFound"`, or a name from
    /// [`asyncjobs::exception`](crate::exception)); replaces an earlier mapping, default ones
    /// included.
    ///
    /// Defaults to: the mapping in the [module docs](self#failed-jobs-on-asyncget).
    #[must_use]
    pub fn exception_status(mut self, exception: impl Into<String>, status: StatusCode) -> Self {
        self.api.exception_statuses.insert(exception.into(), status);
        self
    }

    /// The HTTP status that `async/get` answers for a FAILED job whose `exception` is not mapped
    /// and that was not canceled.
    ///
    /// Defaults to: 400 Bad Request, as in Synapse.
    #[must_use]
    pub fn failed_status(mut self, status: StatusCode) -> Self {
        self.api.failed_status = status;
        self
    }

    /// The HTTP status that `async/get` answers for a FAILED job whose `exception` is not mapped
    /// and that was canceled (`jobCanceling`), e.g. a job that stopped by returning its own error
    /// after a cancel.
    ///
    /// Defaults to: 409 Conflict, as for [`exception::CANCELED`].
    #[must_use]
    pub fn canceled_status(mut self, status: StatusCode) -> Self {
        self.api.canceled_status = status;
        self
    }

    /// The largest request body `async/start` reads; a larger one is refused with 413 without
    /// being read whole.
    ///
    /// Defaults to: [`DEFAULT_MAX_BODY_BYTES`] (1 MiB).
    #[must_use]
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.api.max_body_bytes = limit;
        self
    }

    /// The longest a request's `?wait=` may hold it; longer waits are cut to this.
    /// `Duration::ZERO` turns long-polling off (a matching etag is answered 304 at once).
    ///
    /// Defaults to: [`DEFAULT_MAX_WAIT`] (30 s).
    #[must_use]
    pub fn max_wait(mut self, limit: Duration) -> Self {
        self.api.max_wait = limit;
        self
    }

    /// The router: serve it with `axum::serve`, or merge or nest it into the application's
    /// router (it has its own state, so it fits a `Router<S>` of any state `S`).
    ///
    /// # Panics
    ///
    /// If the [prefix](AsyncJobApi::prefix) is not a valid axum path.
    pub fn into_router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let prefix = self.prefix;
        let body_limit = DefaultBodyLimit::max(self.api.max_body_bytes);
        Router::new()
            .route(
                &format!("{prefix}/async/start"),
                post(start).layer(body_limit),
            )
            .route(&format!("{prefix}/async/get/{{asyncToken}}"), get(result))
            .route("/asynchronous/job/{jobId}", get(status))
            .route("/asynchronous/job/{jobId}/cancel", post(cancel).get(cancel))
            .with_state(Arc::new(self.api))
    }
}

impl fmt::Debug for AsyncJobApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<&str> = self.api.kinds.keys().map(|k| &**k).collect();
        kinds.sort_unstable();
        f.debug_struct("AsyncJobApi")
            .field("prefix", &self.prefix)
            .field("kinds", &kinds)
            .field("exception_statuses", &self.api.exception_statuses)
            .field("failed_status", &self.api.failed_status)
            .field("canceled_status", &self.api.canceled_status)
            .field("max_body_bytes", &self.api.max_body_bytes)
            .field("max_wait", &self.api.max_wait)
            .finish_non_exhaustive()
    }
}

/// Tells which user a request comes from: the API acts for that user
/// ([`JobRegistry::as_user`]).
///
/// Implemented for closures `Fn(&Parts) -> Result<u64, Rejection>` (annotate the argument,
/// `|request: &Parts| …`), and by [`UserHeader`]. It runs before anything else about the request
/// is looked at, the body included, and its [`Rejection`] is the answer. It is synchronous: to
/// look a user up asynchronously (a session store, a token service), authenticate in a
/// middleware that puts the user in the request's extensions, and read them here.
pub trait IdentifyUser: Send + Sync + 'static {
    /// The id of the user the request comes from.
    ///
    /// # Errors
    ///
    /// The answer to send instead, e.g. [`Rejection::unauthorized`].
    fn identify(&self, request: &Parts) -> Result<u64, Rejection>;
}

impl<F> IdentifyUser for F
where
    F: Fn(&Parts) -> Result<u64, Rejection> + Send + Sync + 'static,
{
    fn identify(&self, request: &Parts) -> Result<u64, Rejection> {
        self(request)
    }
}

/// Reads the user id from a request header, e.g. `X-User-Id: 3350396`.
///
/// Trust such a header only behind a proxy that authenticates users and sets it (and removes it
/// from what clients send). A missing header is refused with 401, one that is not a user id
/// (decimal digits that fit in a `u64`) with 400.
#[derive(Debug, Clone)]
pub struct UserHeader {
    name: HeaderName,
}

impl UserHeader {
    /// Reads the header `name` (case does not matter).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn new(name: impl AsRef<str>) -> Self {
        let name = HeaderName::from_bytes(name.as_ref().as_bytes())
            .unwrap_or_else(|_| panic!("invalid header name {:?}", name.as_ref()));
        UserHeader { name }
    }
}

impl IdentifyUser for UserHeader {
    fn identify(&self, request: &Parts) -> Result<u64, Rejection> {
        let value = request
            .headers
            .get(&self.name)
            .ok_or_else(|| Rejection::unauthorized(format!("missing {} header", self.name)))?;
        value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Rejection::bad_request(format!("{} header is not a user id", self.name)))
    }
}

/// A refused request: an HTTP status and a reason, answered as JSON `{"reason": "…"}` (Synapse's
/// error shape) with `Cache-Control: no-store`.
///
/// Every error of the API is one; an [`IdentifyUser`] returns one to refuse a request.
/// `From<asyncjobs::Error>` picks the status from the README's table (404 unknown job, 400
/// malformed id, 403 another user's job, 503 shut down, 500 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    reason: String,
}

impl Rejection {
    /// A refusal with this status and reason.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Rejection::new(StatusCode::BAD_REQUEST, reason)
    }

    /// 401 Unauthorized: the user is not known.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Rejection::new(StatusCode::UNAUTHORIZED, reason)
    }

    /// 403 Forbidden: the user is known and may not do this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Rejection::new(StatusCode::FORBIDDEN, reason)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason, sent as `{"reason": …}`.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

impl StdError for Rejection {}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        let status = match error {
            Error::UnknownJob(_) => StatusCode::NOT_FOUND,
            Error::MalformedId => StatusCode::BAD_REQUEST,
            Error::NotYourJob(_) => StatusCode::FORBIDDEN,
            Error::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Rejection::new(status, error.to_string())
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = json(
            self.status,
            &Reason {
                reason: &self.reason,
            },
        );
        no_store(&mut response);
        response
    }
}

#[derive(Serialize)]
struct Reason<'a> {
    reason: &'a str,
}

/// The calling user's view of the registry.
struct Caller(UserView);

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Rejection> {
        let user = api.identify.identify(parts)?;
        Ok(Caller(api.registry.as_user(user)))
    }
}

/// `POST {prefix}/async/start`.
async fn start(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Rejection> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {} bytes", api.max_body_bytes),
            )
        } else {
            Rejection::new(rejection.status(), rejection.body_text())
        }
    })?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| Rejection::bad_request(format!("request body is not JSON: {e}")))?;
    let concrete_type = body
        .get("concreteType")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Rejection::bad_request("request body must be a JSON object with a string concreteType")
        })?;
    let start = api.kinds.get(concrete_type).cloned().ok_or_else(|| {
        let mut known: Vec<&str> = api.kinds.keys().map(|k| &**k).collect();
        known.sort_unstable();
        Rejection::bad_request(format!(
            "unknown concreteType {concrete_type:?}; this endpoint starts: {}",
            known.join(", ")
        ))
    })?;
    let id = start(&user, body)?;
    let mut response = json(
        StatusCode::CREATED,
        &Token {
            token: id.to_string(),
        },
    );
    no_store(&mut response);
    Ok(response)
}

#[derive(Serialize)]
struct Token {
    token: String,
}

/// `GET {prefix}/async/get/{asyncToken}`: the status while processing, then the outcome.
async fn result(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
    query: Result<Query<PollQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let id = job_id(params, "asyncToken")?;
    let poll = Poll::from_request(query, &headers)?;
    let status = match read(&user, &id, &poll, api.max_wait).await? {
        Read::Fresh(status) => status,
        Read::NotModified(etag) => return Ok(not_modified(&etag)),
    };
    let mut response = match status.job_state {
        AsynchJobState::Processing => json(StatusCode::ACCEPTED, &status),
        AsynchJobState::Complete => json(StatusCode::OK, &status.response_body),
        AsynchJobState::Failed => {
            let reason = status.error_message.as_deref().unwrap_or("job failed");
            json(api.failure_status(&status), &Reason { reason })
        }
    };
    tag(&mut response, &status.etag);
    Ok(response)
}

/// `GET /asynchronous/job/{jobId}`: the status in any state.
async fn status(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
    query: Result<Query<PollQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let id = job_id(params, "jobId")?;
    let poll = Poll::from_request(query, &headers)?;
    Ok(match read(&user, &id, &poll, api.max_wait).await? {
        Read::Fresh(status) => status_response(StatusCode::OK, &status),
        Read::NotModified(etag) => not_modified(&etag),
    })
}

/// `POST` or `GET /asynchronous/job/{jobId}/cancel` (Synapse's is a `GET`).
async fn cancel(
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Result<Response, Rejection> {
    let id = job_id(params, "jobId")?;
    user.cancel(&id)?;
    let status = user.status(&id)?;
    let code = if status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(status_response(code, &status))
}

impl Api {
    fn failure_status(&self, status: &AsynchronousJobStatus) -> StatusCode {
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

fn job_id(
    params: Result<RawPathParams, RawPathParamsRejection>,
    name: &str,
) -> Result<JobId, Rejection> {
    let params = params.map_err(|r| Rejection::new(r.status(), r.body_text()))?;
    let text = params
        .iter()
        .find_map(|(key, value)| (key == name).then_some(value))
        .unwrap_or_default();
    Ok(text.parse::<JobId>()?)
}

/// What a status request may carry to be answered only on a change.
#[derive(Debug, Deserialize)]
struct PollQuery {
    wait: Option<String>,
    etag: Option<String>,
}

/// A request's etag condition and how long it may wait for it to stop holding.
#[derive(Debug)]
struct Poll {
    /// The etags the client has (from `If-None-Match` and `?etag=`); empty for none.
    seen: Vec<String>,
    /// `If-None-Match: *`: any status counts as seen.
    any: bool,
    wait: Duration,
}

impl Poll {
    fn from_request(
        query: Result<Query<PollQuery>, QueryRejection>,
        headers: &HeaderMap,
    ) -> Result<Poll, Rejection> {
        let Query(query) = query.map_err(|r| Rejection::new(r.status(), r.body_text()))?;
        let wait = match query.wait.as_deref() {
            None | Some("") => Duration::ZERO,
            Some(text) => parse_wait(text)?,
        };
        let mut poll = Poll {
            seen: Vec::new(),
            any: false,
            wait,
        };
        if let Some(etag) = query.etag {
            poll.add(&etag);
        }
        for value in headers.get_all(header::IF_NONE_MATCH) {
            // A header that is not text names no etag of ours.
            for tag in value.to_str().unwrap_or_default().split(',') {
                poll.add(tag);
            }
        }
        Ok(poll)
    }

    /// Adds one entity tag as clients write them: `"17"`, `W/"17"`, or bare `17`.
    fn add(&mut self, tag: &str) {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        let tag = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(tag);
        match tag {
            "" => {}
            "*" => self.any = true,
            _ => self.seen.push(tag.to_owned()),
        }
    }

    fn has_seen(&self, etag: &Etag) -> bool {
        self.any || self.seen.iter().any(|seen| *etag == **seen)
    }
}

fn parse_wait(text: &str) -> Result<Duration, Rejection> {
    let seconds: f64 = text
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            Rejection::bad_request(format!("wait must be a number of seconds, not {text:?}"))
        })?;
    // Too large for a Duration: as long as allowed, which `max_wait` then cuts.
    Ok(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

enum Read {
    Fresh(AsynchronousJobStatus),
    NotModified(Etag),
}

/// The status, unless the client has seen it: then, within the wait, the first status it has
/// not seen, or "not modified".
async fn read(
    user: &UserView,
    id: &JobId,
    poll: &Poll,
    max_wait: Duration,
) -> Result<Read, Rejection> {
    let mut status = user.status(id)?;
    if !poll.has_seen(&status.etag) {
        return Ok(Read::Fresh(status));
    }
    let wait = poll.wait.min(max_wait);
    // `*` matches whatever comes next, so waiting could only end in 304.
    if wait.is_zero() || poll.any {
        return Ok(Read::NotModified(status.etag));
    }
    let deadline = Instant::now().checked_add(wait);
    // A finished status never changes: nothing to wait for.
    while !status.is_terminal() {
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        match tokio::time::timeout(left, user.wait_for_change(id, &status.etag)).await {
            Ok(changed) => status = changed?,
            Err(_elapsed) => break,
        }
        // The client may have listed several etags, the new one among them.
        if !poll.has_seen(&status.etag) {
            return Ok(Read::Fresh(status));
        }
    }
    Ok(Read::NotModified(status.etag))
}

fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        // Statuses and bodies are JSON values already: this is not expected to happen.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not write the answer as JSON: {e}"),
        )
            .into_response(),
    }
}

fn status_response(code: StatusCode, status: &AsynchronousJobStatus) -> Response {
    let mut response = json(code, status);
    tag(&mut response, &status.etag);
    response
}

fn not_modified(etag: &Etag) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    tag(&mut response, etag);
    response
}

/// Marks an answer about a job: its etag, and that it must not be cached (it is one user's, and
/// it changes).
fn tag(response: &mut Response, etag: &Etag) {
    // Etags this crate makes are digits; one that is not a valid header value is left out.
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    no_store(response);
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(query_etag: Option<&str>, if_none_match: &[&str]) -> Poll {
        let mut headers = HeaderMap::new();
        for value in if_none_match {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        }
        let query = PollQuery {
            wait: None,
            etag: query_etag.map(str::to_owned),
        };
        Poll::from_request(Ok(Query(query)), &headers).unwrap()
    }

    #[test]
    fn entity_tags_parse_as_clients_write_them() {
        let etag: Etag = "17".parse().unwrap();
        assert!(poll(None, &["\"17\""]).has_seen(&etag));
        assert!(poll(None, &["W/\"17\""]).has_seen(&etag));
        assert!(poll(None, &["17"]).has_seen(&etag));
        assert!(poll(None, &["\"3\", \"17\""]).has_seen(&etag));
        assert!(poll(None, &["\"3\"", "\"17\""]).has_seen(&etag));
        assert!(poll(Some("17"), &[]).has_seen(&etag));
        assert!(poll(Some("\"17\""), &[]).has_seen(&etag));
        assert!(poll(None, &["*"]).has_seen(&etag));
        assert!(!poll(None, &["\"18\""]).has_seen(&etag));
        assert!(!poll(None, &["\"017\""]).has_seen(&etag));
        assert!(!poll(None, &[]).has_seen(&etag));
        assert!(!poll(None, &[""]).has_seen(&etag));
    }

    #[test]
    fn wait_takes_seconds_and_refuses_nonsense() {
        assert_eq!(parse_wait("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_wait("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_wait("1e300").unwrap(), Duration::MAX);
        for bad in ["-1", "NaN", "inf", "soon", "1s"] {
            assert_eq!(
                parse_wait(bad).unwrap_err().status(),
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[test]
    fn prefixes_are_normalized() {
        let api = || AsyncJobApi::new(JobRegistry::new(), UserHeader::new("x-user-id"));
        assert_eq!(api().prefix("table/query/").prefix, "/table/query");
        assert_eq!(api().prefix("/").prefix, "");
        assert_eq!(api().prefix("").prefix, "");
    }

    #[test]
    fn registry_errors_map_to_http_statuses() {
        let id = JobId::from_u64(1);
        let status = |e: Error| Rejection::from(e).status();
        assert_eq!(status(Error::UnknownJob(id)), StatusCode::NOT_FOUND);
        assert_eq!(status(Error::MalformedId), StatusCode::BAD_REQUEST);
        assert_eq!(status(Error::NotYourJob(id)), StatusCode::FORBIDDEN);
        assert_eq!(status(Error::ShutDown), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(Error::NoRuntime), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
