//! [`AsyncJobApi`]: the areas, job kinds and options, and the router built from them.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::area::{shape, Area};
use super::dashboard::Dashboard;
use super::events::{events, DEFAULT_EVENT_HEARTBEAT};
use super::handlers::{
    area_routes, cancel, cancel_method_refused, launch, method_not_allowed, no_such_path, status,
};
use super::identify::IdentifyUser;
use super::list::list;
use super::state::{Api, Kind};
use crate::{JobHandle, JobRegistry, JobRequest};

/// The default for [`AsyncJobApi::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The default for [`AsyncJobApi::max_wait`]: 30 seconds, below the idle timeouts of most
/// proxies and load balancers.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// Builds the router for Synapse's asynchronous-job REST API over one [`JobRegistry`]; see the
/// [module docs](crate::http) for the endpoints and their answers.
///
/// Job kinds are async functions registered under the `concreteType` of their request body, each
/// in an [`Area`] (the path its `async/start` and `async/get` live under); one API serves any
/// number of areas, and one shared set of `/asynchronous/job` endpoints for all of them. Each
/// request's user comes from an [`IdentifyUser`]. `Clone` is cheap: clones share the job kinds
/// and the user identification.
#[derive(Clone)]
pub struct AsyncJobApi {
    api: Api,
    /// The areas' paths, in the order they were first added.
    areas: Vec<String>,
    /// Whether the router serves the dashboard page.
    dashboard: bool,
}

impl AsyncJobApi {
    /// An API over `registry` with no job kinds yet, telling users apart with `identify`.
    ///
    /// ```
    /// use asyncjobs::http::{AsyncJobApi, BearerToken, Rejection, UserHeader};
    /// use asyncjobs::JobRegistry;
    /// use axum::http::request::Parts;
    ///
    /// // Synapse's clients: `Authorization: Bearer <token>`, looked up by the application.
    /// let by_token = AsyncJobApi::new(
    ///     JobRegistry::new(),
    ///     BearerToken::new(|token: String| async move { Ok((token == "s3cr3t").then_some(1)) }),
    /// );
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
    /// # drop((by_token, by_header, by_middleware));
    /// ```
    pub fn new(registry: JobRegistry, identify: impl IdentifyUser) -> Self {
        AsyncJobApi {
            api: Api {
                registry,
                identify: Arc::new(identify),
                kinds: HashMap::new(),
                exception_statuses: HashMap::new(),
                failed_status: StatusCode::BAD_REQUEST,
                canceled_status: StatusCode::CONFLICT,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_wait: DEFAULT_MAX_WAIT,
                heartbeat: DEFAULT_EVENT_HEARTBEAT,
                cancel_by_get: true,
            },
            areas: Vec::new(),
            dashboard: false,
        }
    }

    /// Adds an area: its routes, `{path}/async/start` and `{path}/async/get/{token}`, and its
    /// job kinds, which `POST /asynchronous/job` starts too. An area whose path was added before
    /// (the root's included) gets the new kinds added to it.
    ///
    /// ```
    /// use asyncjobs::http::{Area, AsyncJobApi, UserHeader};
    /// use asyncjobs::{JobHandle, JobRegistry};
    /// use serde_json::{json, Value};
    ///
    /// let echo = |body: Value, _job: JobHandle| async move { Ok::<_, std::io::Error>(body) };
    /// let app = AsyncJobApi::new(JobRegistry::new(), UserHeader::new("X-User-Id"))
    ///     .area(Area::new("/entity/{entityId}/table/query").job("org.example.QueryRequest", echo))
    ///     .area(Area::new("/entity/{entityId}/table/download/csv").job("org.example.CsvRequest", echo))
    ///     .area(Area::new("/file/bulk").job("org.example.BulkRequest", echo))
    ///     .into_router::<()>();
    /// # drop(app);
    /// ```
    ///
    /// # Panics
    ///
    /// If one of its kinds is registered already (in any area: the body's `concreteType` picks
    /// one kind wherever it is sent), or if its path is another area's with parameters named
    /// differently (`/entity/{id}/x` and `/entity/{entityId}/x` are one route).
    #[must_use]
    pub fn area(mut self, area: Area) -> Self {
        let Area { path, kinds } = area;
        if let Some(other) = self
            .areas
            .iter()
            .find(|other| **other != path && shape(other) == shape(&path))
        {
            panic!("areas {other} and {path} are one route: their parameters differ only in name");
        }
        if !self.areas.contains(&path) {
            self.areas.push(path.clone());
        }
        let area: Arc<str> = Arc::from(path);
        for (concrete_type, start) in kinds {
            if let Some(earlier) = self.api.kinds.get(&concrete_type) {
                panic!(
                    "job kind {concrete_type} is registered twice (in areas {:?} and {:?})",
                    earlier.area, area
                );
            }
            let kind = Kind {
                area: area.clone(),
                start,
            };
            self.api.kinds.insert(concrete_type, kind);
        }
        self
    }

    /// Registers a job kind in the root area (`/async/start`, `/async/get/{token}`); see
    /// [`Area::job`], which this is for [`Area::new("")`](Area::new).
    ///
    /// # Panics
    ///
    /// If `concrete_type` is already registered (in any area).
    #[must_use]
    pub fn job<B, F, Fut, R, E>(self, concrete_type: impl Into<String>, job: F) -> Self
    where
        B: DeserializeOwned + Send + 'static,
        F: Fn(B, JobHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.area(Area::new("").job(concrete_type, job))
    }

    /// Registers a job kind in the root area whose [`JobRequest`] is passed through `configure`;
    /// see [`Area::job_with`].
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
    /// If `concrete_type` is already registered (in any area).
    #[must_use]
    pub fn job_with<B, C, F, Fut, R, E>(
        self,
        concrete_type: impl Into<String>,
        configure: C,
        job: F,
    ) -> Self
    where
        B: DeserializeOwned + Send + 'static,
        C: Fn(JobRequest) -> JobRequest + Send + Sync + 'static,
        F: Fn(B, JobHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.area(Area::new("").job_with(concrete_type, configure, job))
    }

    /// The HTTP status that `async/get` answers for a FAILED job whose `exception` is
    /// `exception` (e.g. a Rust type name such as `"myapp::errors::NotFound"`, or a name from
    /// [`asyncjobs::exception`](crate::exception)); replaces an earlier mapping.
    ///
    /// Prefer a 4xx. A FAILED job never changes, so a 5xx, which tells a client that asking
    /// again may work, sends it into a retry loop for nothing: Synapse's Python client retries
    /// 429, 500, 502, 503 and 504 for up to 20 minutes.
    ///
    /// Defaults to: no mapping; see [`failed_status`](AsyncJobApi::failed_status) and
    /// [`canceled_status`](AsyncJobApi::canceled_status).
    ///
    /// # Panics
    ///
    /// If `status` is not an error status (4xx or 5xx).
    #[must_use]
    pub fn exception_status(mut self, exception: impl Into<String>, status: StatusCode) -> Self {
        self.api
            .exception_statuses
            .insert(exception.into(), error_status(status));
        self
    }

    /// The HTTP status that `async/get` answers for a FAILED job whose `exception` is not mapped
    /// and that was not canceled: a job's own error, a panic, a broken
    /// [time limit](JobRequest::time_limit), a result that did not serialize, a job stopped by
    /// its runtime's end or lost with its instance.
    ///
    /// Defaults to: 400 Bad Request, as in Synapse.
    ///
    /// # Panics
    ///
    /// If `status` is not an error status (4xx or 5xx).
    #[must_use]
    pub fn failed_status(mut self, status: StatusCode) -> Self {
        self.api.failed_status = error_status(status);
        self
    }

    /// The HTTP status that `async/get` answers for a FAILED job whose `exception` is not mapped
    /// and that was canceled: [`exception::CANCELED`](crate::exception::CANCELED) (stopped after
    /// its grace, canceled while queued, stopped by a shutdown), or any failure of a job whose
    /// `jobCanceling` is set other than by a time limit (e.g. one that stopped by returning its
    /// own error after a cancel).
    ///
    /// Defaults to: 409 Conflict: the result will never exist.
    ///
    /// # Panics
    ///
    /// If `status` is not an error status (4xx or 5xx).
    #[must_use]
    pub fn canceled_status(mut self, status: StatusCode) -> Self {
        self.api.canceled_status = error_status(status);
        self
    }

    /// The largest request body `async/start` and `POST /asynchronous/job` read; a larger one is
    /// refused with 413 without being read whole: from the headers alone, before any of it is
    /// read, when its `Content-Length` announces more, otherwise as soon as more than this has
    /// arrived.
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

    /// How long `/asynchronous/job/events` stays silent before it sends a heartbeat (an SSE
    /// comment, `: heartbeat`), so that proxies and load balancers do not close the stream as
    /// idle.
    ///
    /// Defaults to: [`DEFAULT_EVENT_HEARTBEAT`] (15 s).
    ///
    /// # Panics
    ///
    /// If `interval` is zero.
    #[must_use]
    pub fn event_heartbeat(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "a heartbeat interval must not be zero");
        self.api.heartbeat = interval;
        self
    }

    /// Whether `GET /asynchronous/job/{jobId}/cancel` cancels, as Synapse's does, besides
    /// `POST`; with `false`, a `GET` is answered 405 with `Allow: POST`.
    ///
    /// Turn it off when users are told apart by a cookie (or anything else a browser attaches
    /// by itself): a browser sends a `GET` with the user's cookies on its own, to prefetch a
    /// link, for an `<img src>` on any site, or when another site sends the user to a URL (even
    /// `SameSite=Lax` cookies go with such a navigation), so any page could cancel the user's
    /// jobs (whose ids are easy to guess) without the user knowing. A cross-site `POST` carries
    /// `SameSite=Lax` (the browsers' default) cookies in none of those cases. A service that
    /// reads `Authorization: Bearer` only ([`BearerToken`](super::BearerToken)) is not exposed:
    /// a browser never attaches that header by itself.
    ///
    /// Defaults to: `true`, for Synapse's clients, which cancel with `GET`.
    #[must_use]
    pub fn cancel_by_get(mut self, allowed: bool) -> Self {
        self.api.cancel_by_get = allowed;
        self
    }

    /// Whether the router serves a live dashboard of the caller's jobs at
    /// `GET /asynchronous/job/dashboard`: one HTML page with its script and style inline,
    /// nothing loaded from elsewhere, that lists the caller's jobs and follows the event stream
    /// (see [the module docs](crate::http#dashboard)).
    ///
    /// Off unless asked for: the page itself is answered to anyone (a browser cannot send a
    /// bearer token when it opens a page; the page asks for the caller's jobs with the
    /// credentials it is given, and shows nothing without them), and a service that only serves
    /// Synapse's API to programs should not grow a web page by upgrading this crate.
    ///
    /// ```
    /// use asyncjobs::http::{AsyncJobApi, UserHeader};
    /// use asyncjobs::JobRegistry;
    ///
    /// let app = AsyncJobApi::new(JobRegistry::new(), UserHeader::new("X-User-Id"))
    ///     .dashboard(true)
    ///     .into_router::<()>();
    /// # drop(app);
    /// ```
    ///
    /// Defaults to: `false`.
    #[must_use]
    pub fn dashboard(mut self, enabled: bool) -> Self {
        self.dashboard = enabled;
        self
    }

    /// The router: serve it with `axum::serve`, or merge or nest it into the application's
    /// router (it has its own state, so it fits a `Router<S>` of any state `S`).
    ///
    /// A path it does not serve is answered 404, and a method a path does not take 405 with
    /// `Allow`, each as JSON `{"reason": …}` like every other refusal. The 404 is the router's
    /// fallback: merged into an application's router, it answers the application's unknown paths
    /// too (nested, only those under the nest's path). axum refuses to merge two routers that
    /// both have a fallback; to keep the application's, merge this one after
    /// [`reset_fallback`](axum::Router::reset_fallback).
    ///
    /// # Panics
    ///
    /// If an area's path is not a valid axum path, or clashes with a route of the shared set
    /// (`/asynchronous/job…`).
    pub fn into_router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let body_limit = DefaultBodyLimit::max(self.api.max_body_bytes);
        let cancel_route = if self.api.cancel_by_get {
            post(cancel).get(cancel)
        } else {
            post(cancel).fallback(cancel_method_refused)
        };
        let mut router = Router::new()
            .route(
                "/asynchronous/job",
                get(list).post(launch).layer(body_limit),
            )
            .route("/asynchronous/job/events", get(events))
            .route("/asynchronous/job/{jobId}", get(status))
            .route("/asynchronous/job/{jobId}/cancel", cancel_route);
        if self.dashboard {
            // A static segment: axum matches it before `{jobId}`, as it does `events`.
            let dashboard = Dashboard::new();
            router = router.route(
                "/asynchronous/job/dashboard",
                get(move || std::future::ready(dashboard.page())),
            );
        }
        for path in &self.areas {
            router = area_routes(router, path, body_limit);
        }
        // Last, so that it reaches every route above. Refusals are JSON, also axum's own.
        router
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(no_such_path)
            .with_state(Arc::new(self.api))
    }
}

/// `status`, if it is one a failure may be answered with.
fn error_status(status: StatusCode) -> StatusCode {
    assert!(
        status.is_client_error() || status.is_server_error(),
        "a failed job is answered with an error status (4xx or 5xx), not {status}"
    );
    status
}

impl fmt::Debug for AsyncJobApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let areas: Vec<(&str, Vec<&str>)> = self
            .areas
            .iter()
            .map(|path| {
                let mut kinds: Vec<&str> = self
                    .api
                    .kinds
                    .iter()
                    .filter(|(_, kind)| *kind.area == **path)
                    .map(|(name, _)| &**name)
                    .collect();
                kinds.sort_unstable();
                (path.as_str(), kinds)
            })
            .collect();
        f.debug_struct("AsyncJobApi")
            .field("areas", &areas)
            .field("exception_statuses", &self.api.exception_statuses)
            .field("failed_status", &self.api.failed_status)
            .field("canceled_status", &self.api.canceled_status)
            .field("max_body_bytes", &self.api.max_body_bytes)
            .field("max_wait", &self.api.max_wait)
            .field("event_heartbeat", &self.api.heartbeat)
            .field("cancel_by_get", &self.api.cancel_by_get)
            .field("dashboard", &self.dashboard)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::UserHeader;
    use crate::{exception, AsynchronousJobStatus};
    use serde_json::{json, Value};

    fn api() -> AsyncJobApi {
        AsyncJobApi::new(JobRegistry::new(), UserHeader::new("x-user-id"))
    }

    fn failed(exception: &str, canceling: bool) -> AsynchronousJobStatus {
        serde_json::from_value(json!({
            "jobId": "1", "jobState": "FAILED", "etag": "3", "jobCanceling": canceling,
            "startedOn": "2024-03-05T17:04:09.417Z", "changedOn": "2024-03-05T17:04:10.002Z",
            "exception": exception, "errorMessage": "failed", "runtimeMS": 585,
        }))
        .unwrap()
    }

    #[test]
    fn every_failure_is_a_4xx_by_default() {
        let api = api().api;
        for name in [
            exception::PANICKED,
            exception::RESPONSE_NOT_SERIALIZABLE,
            exception::ABORTED,
            exception::NODE_LOST,
            "std::io::error::Error",
        ] {
            assert_eq!(
                api.failure_status(&failed(name, false)),
                StatusCode::BAD_REQUEST,
                "{name}"
            );
        }
        // A time limit sets jobCanceling, but is not a cancel.
        assert_eq!(
            api.failure_status(&failed(exception::TIMED_OUT, true)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            api.failure_status(&failed(exception::CANCELED, true)),
            StatusCode::CONFLICT
        );
        assert_eq!(
            api.failure_status(&failed(exception::CANCELED, false)),
            StatusCode::CONFLICT
        );
        assert_eq!(
            api.failure_status(&failed("std::io::error::Error", true)),
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn mappings_come_first() {
        let api = api()
            .exception_status(exception::CANCELED, StatusCode::GONE)
            .exception_status(exception::TIMED_OUT, StatusCode::REQUEST_TIMEOUT)
            .api;
        assert_eq!(
            api.failure_status(&failed(exception::CANCELED, true)),
            StatusCode::GONE
        );
        assert_eq!(
            api.failure_status(&failed(exception::TIMED_OUT, true)),
            StatusCode::REQUEST_TIMEOUT
        );
    }

    #[test]
    #[should_panic(expected = "error status")]
    fn a_failure_is_never_answered_with_a_success() {
        let _ = api().failed_status(StatusCode::OK);
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_kind_lives_in_one_area() {
        let echo = |body: Value, _job: JobHandle| async move { Ok::<_, std::io::Error>(body) };
        let _ = api()
            .area(Area::new("/a").job("t.Echo", echo))
            .area(Area::new("/b").job("t.Echo", echo));
    }

    #[test]
    #[should_panic(expected = "one route")]
    fn areas_that_differ_in_parameter_names_only_are_refused() {
        let _ = api()
            .area(Area::new("/entity/{id}/query"))
            .area(Area::new("/entity/{entityId}/query"));
    }

    #[test]
    fn an_area_added_twice_gets_both_kinds() {
        let echo = |body: Value, _job: JobHandle| async move { Ok::<_, std::io::Error>(body) };
        let api = api()
            .area(Area::new("/a").job("t.One", echo))
            .job("t.Root", echo)
            .area(Area::new("a/").job("t.Two", echo));
        assert_eq!(api.areas, ["/a", ""]);
        assert_eq!(&*api.api.kinds["t.Two"].area, "/a");
        assert_eq!(&*api.api.kinds["t.Root"].area, "");
    }
}
