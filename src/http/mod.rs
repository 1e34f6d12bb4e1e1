//! Synapse's asynchronous-job REST API over a [`JobRegistry`], as an axum router (feature `http`).
//!
//! [`AsyncJobApi`] is built from a registry, a way to tell the calling user from a request
//! ([`IdentifyUser`]: [`BearerToken`] for `Authorization: Bearer`, [`UserHeader`] behind a
//! trusted proxy) and the application's job functions, one per request type, keyed by the
//! `concreteType` of the request body and grouped in [`Area`]s: the paths Synapse clients derive
//! from each request's type. [`into_router`] gives an [`axum::Router`] (axum 0.8) to serve alone
//! or to merge into the application's own.
//!
//! # Endpoints
//!
//! Per area (`{area}` is its path, e.g. `/entity/{entityId}/table/query`; the root area's is
//! empty):
//!
//! | method and path | answer |
//! |---|---|
//! | `POST {area}/async/start` | `201 {"token": "<jobId>"}`: starts the job of the area's kind the body's `concreteType` names, as the caller; `Job-Reused: true` when a cacheable request was answered with an earlier job (still 201, as Synapse) |
//! | `GET {area}/async/get/{token}` | `202` and the status while PROCESSING; `200` and the response body when COMPLETE; when FAILED, a 4xx chosen from `exception` with `{"reason": errorMessage}` |
//!
//! Shared by every area:
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /asynchronous/job` | `201` and the new job's status: Synapse's generic launch, for a kind of any area; `Job-Reused` as above |
//! | `GET /asynchronous/job` | `200 {"page": [status…], "nextPageToken": "…", "counts": {"PROCESSING": n, "COMPLETE": n, "FAILED": n}, "names": {"<jobId>": "<name>"}}`: the caller's jobs, newest first ([listing](#listing)); `names` holds the [names](crate::JobRequest::name) of the page's jobs that have one (of every instance, with a store, which keeps them; names are not status fields) and is left out when none has |
//! | `GET /asynchronous/job/events` | Server-Sent Events: the caller's job changes ([event stream](#event-stream)) |
//! | `GET /asynchronous/job/dashboard` | only with [`dashboard(true)`](AsyncJobApi::dashboard): an HTML page of the caller's jobs, live ([dashboard](#dashboard)); served without credentials, it carries no data |
//! | `GET /asynchronous/job/{jobId}` | `200` and the status, in any state |
//! | `POST` (and, unless [turned off](AsyncJobApi::cancel_by_get), Synapse's `GET`) `/asynchronous/job/{jobId}/cancel` | asks the job to cancel: `202` and the status while it is still PROCESSING, `200` and the status once it has finished |
//!
//! Every request goes through [`JobRegistry::as_user`] for the caller, so a job started by
//! another user is refused with 403, and lists and events show the caller's jobs only. Jobs of
//! other instances sharing a [store](crate::JobRegistryBuilder::store) are answered by every
//! endpoint, the event stream included.
//!
//! # Completed jobs on `async/get`
//!
//! A COMPLETE job answers `200` with its response body, the job's result as JSON. The documented
//! kind returns a `Serialize` struct that carries its `concreteType` (see [`Area::job`]).
//! A result that serializes to `null` (e.g. `()`) is answered
//! `{"concreteType": "asyncjobs.EmptyResponse"}` ([`EMPTY_RESPONSE_TYPE`]), never a bare `null`:
//! Synapse's bodies are JSON objects, and its clients read fields of them. Its status's
//! `responseBody` stays absent.
//!
//! # Failed jobs on `async/get`
//!
//! A FAILED job answers with a 4xx and `{"reason": errorMessage}`, as in Synapse:
//!
//! | FAILED job | status | set with |
//! |---|---|---|
//! | its `exception` mapped | as mapped | [`exception_status`](AsyncJobApi::exception_status) |
//! | canceled: `exception` [`asyncjobs::JobCanceled`](crate::exception::CANCELED), or `jobCanceling` set other than by a time limit | 409 Conflict | [`canceled_status`](AsyncJobApi::canceled_status) |
//! | any other: its own error, a panic, a time limit, a result that did not serialize, its runtime gone, its instance lost | 400 Bad Request | [`failed_status`](AsyncJobApi::failed_status) |
//!
//! Never a 5xx by default. A 5xx says "the server is in trouble, ask again": Synapse's Python
//! client retries 429, 500, 502, 503 and 504 for up to 20 minutes, so a failed job answered so
//! would look like an outage and keep its user waiting for nothing, since a FAILED status never
//! changes. 5xx are for the server's own trouble: a shut-down registry (503) or a store that
//! cannot be reached (503, [`Error::StoreUnavailable`](crate::Error::StoreUnavailable)).
//!
//! That client also retries any error whose `reason` contains one of `timeout`, `timed out`,
//! `try again`, `slow down`, `slowdown`, `proxy error`, `connection reset by peer`,
//! `couldn't connect to host` or `unknown ssl protocol error`. The failures the registry reports
//! itself say none of them (a broken time limit reads "job exceeded its time limit of 10m");
//! a job's own error message is sent as it is, so a job whose error says "timed out" is retried by
//! that client until its retries run out. Word such errors otherwise ("took too long").
//!
//! # Errors
//!
//! Every refusal is JSON `{"reason": "…"}`, Synapse's error shape, with one of these statuses:
//!
//! | status | when |
//! |---|---|
//! | 400 | malformed job id; body not JSON, not an object, without a string `concreteType`, with an unknown `concreteType` (or one of another area: the reason says where it goes), or not what the kind's request type expects (the reason names the field); a path parameter that differs from the body's field; malformed `wait`, `limit`, `jobState`, `nextPageToken` or `Last-Event-ID` |
//! | 401 | no user: [`BearerToken`] without a token or with an unknown one (with `WWW-Authenticate`), [`UserHeader`] without its header (other [`IdentifyUser`]s choose their own) |
//! | 400 | the identity header (`Authorization`, or [`UserHeader`]'s) sent more than once, or a [`UserHeader`] that is not a user id |
//! | 403 | the job was started by another user |
//! | 404 | no such job (never started, or dropped by retention); on `async/get`, a job not started at that path (another area's, or other path parameters); a path the router does not serve |
//! | 405 | a method the path does not take, e.g. `GET …/cancel` when cancel is POST only; with `Allow` |
//! | 413 | the body is larger than [`max_body_bytes`](AsyncJobApi::max_body_bytes); when its `Content-Length` says so, answered from the headers before the body is read |
//! | 503 | the registry is [shut down](crate::JobRegistry::shutdown) (no new jobs), or its store cannot be reached |
//!
//! # Beyond Synapse: etags, `304` and long-polling
//!
//! Both `GET` endpoints about one job and the cancel endpoint send the status's etag as a
//! (quoted) `ETag` header, and every answer about a job carries `Cache-Control: no-store`. A
//! client that sends the etag it last saw, in `If-None-Match` or as `?etag=`, gets
//! `304 Not Modified` while the status is unchanged. With `?wait=<seconds>` (decimals allowed,
//! at most [`max_wait`](AsyncJobApi::max_wait)) the request is held until the status changes,
//! answered at once with the new status, or with `304` when the wait runs out: a client learns
//! of each change at once without asking again and again. A finished job never changes, so a
//! matching etag on one is answered `304` at once; without an etag, `wait` does nothing.
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
//! # Listing
//!
//! `GET /asynchronous/job` lists the caller's jobs for a UI, newest first (by id), in pages of
//! `limit` (default [`DEFAULT_LIST_LIMIT`], at most [`MAX_LIST_LIMIT`]). `jobState=FAILED` keeps
//! one state, `concreteType=…` one kind of request. A page with more after it has a
//! `nextPageToken`; passing it back as `?nextPageToken=` (with the same filters) gives the next
//! page. The token is opaque, and stable while jobs start: a page after it holds jobs older than
//! the page it came from. `counts` are the caller's jobs in each state, of the `concreteType`
//! asked for if any, whatever `jobState` says (a UI's tab labels); statuses of other
//! instances' jobs, with a store, are as last written there.
//!
//! ```text
//! GET /asynchronous/job?jobState=PROCESSING&limit=2
//! 200 {"page": [{"jobId": "9", …}, {"jobId": "7", …}], "nextPageToken": "1.7",
//!      "counts": {"PROCESSING": 5, "COMPLETE": 40, "FAILED": 1}}
//! ```
//!
//! # Event stream
//!
//! `GET /asynchronous/job/events` answers `text/event-stream`: one event per change of one of
//! the caller's jobs, its data the status (AsynchronousJobStatus JSON), its id `jobId:etag`.
//! While nothing happens, a comment (`: heartbeat`) every
//! [`event_heartbeat`](AsyncJobApi::event_heartbeat) keeps proxies from closing the stream.
//! A slow reader is not sent a backlog: a job that changed several times while unread is sent
//! once, at its latest.
//!
//! With a shared store, the stream also carries the caller's jobs of other instances: the store
//! notifies each write with the job's id, version and user, so a stream keeps its caller's and
//! reads each from the database once it is taken (within about a flush interval of the change,
//! one read per changed job however often it changed). Notices lost while the store reconnects
//! are made up for by listing the caller's jobs changed since shortly before; while the
//! database cannot be reached, other instances' changes wait and this instance's keep coming.
//!
//! ```text
//! id: 1764379461000000:4
//! data: {"jobId":"1764379461000000","jobState":"PROCESSING","etag":"4","progressCurrent":2,…}
//!
//! : heartbeat
//!
//! event: end
//! data: {"reason":"the job registry shut down"}
//! ```
//!
//! A client that reconnects with `Last-Event-ID` (as `EventSource` does by itself) is sent the
//! latest status of each of its jobs that changed since that event's status, oldest first, then
//! the live changes; a status may come again, none is skipped. An unknown id (a job since dropped
//! by retention) sends the latest status of every job of the caller's. A new stream starts with
//! the changes from then on: to show a list and keep it current, open the stream first, then
//! list, and keep for each job the status with the later `changedOn`.
//!
//! When the registry [shuts down](crate::JobRegistry::shutdown), the stream sends the last jobs'
//! final statuses, then an `end` event, and ends. A server's graceful shutdown waits for open
//! streams, so shut the registry down first (or in the graceful-shutdown future, as
//! `examples/http_service.rs` does). `EventSource` reconnects after an end; served by another
//! instance of the service, it resumes there.
//!
//! With a shared store, the stream follows this instance's jobs only (a resume reads every
//! instance's through the store). A browser's `EventSource` cannot send `Authorization`: with
//! [`BearerToken`], a page reads the stream with `fetch`.
//!
//! # Dashboard
//!
//! With [`AsyncJobApi::dashboard(true)`](AsyncJobApi::dashboard), `GET /asynchronous/job/dashboard`
//! serves one HTML page, its script and style inline, nothing loaded from anywhere else (it
//! works offline, with no build step): the caller's jobs, newest first, each with its id, its
//! name, its state, a progress bar (current of total; a sweeping light while the job has not said how
//! much there is), its message, its runtime (counting on in the browser while the job runs),
//! its error once FAILED, and a cancel button while it runs; above them a filter by state with
//! the count in each. It lists the jobs (`GET /asynchronous/job`, a page of 200, and older pages
//! on request) after opening the [event stream](#event-stream), and then follows the stream:
//! nothing polls. It reads the stream with `fetch`, so that it can send a bearer token,
//! parses the events itself, and, when the stream drops, opens it again with `Last-Event-ID`,
//! waiting 1 s, then twice as long after each failure, up to 30 s. A minute without a byte
//! (events and heartbeats) counts as a drop.
//!
//! The page is not the user's: it is answered to anyone, without asking [`IdentifyUser`] (a
//! browser opening a page sends no bearer token), and holds no data; what it shows comes from
//! the endpoints above, as the caller. So it signs in as the API does:
//!
//! - With [`BearerToken`], open it as `…/asynchronous/job/dashboard#token=<token>`. The fragment
//!   never reaches the server (nor its logs); the page moves the token to the tab's
//!   `sessionStorage` and takes it out of the address bar. Without a token, or with one the
//!   server refuses (401), it shows a form that asks for one.
//! - Behind a proxy that adds [`UserHeader`]'s header, or with an [`IdentifyUser`] that reads a
//!   cookie, the browser's requests carry the user by themselves: no token is needed.
//!
//! Its URLs are relative to its own, so it works where the router is nested
//! (`Router::nest("/api", …)` serves it at `/api/asynchronous/job/dashboard`). A job is shown by
//! its [name](crate::JobRequest::name), which the page takes from the job list's `names` (a
//! name is not a status field: those are Synapse's); a job first seen on the stream has the
//! list's first page asked for it. A job without one is shown by its request's type, the last
//! part of its `concreteType` (the full one in a tooltip).
//!
//! The page is sent with `Content-Type: text/html; charset=utf-8`, `Cache-Control: no-cache`,
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`,
//! and a `Content-Security-Policy` that allows nothing but its own inline script and style (by
//! their SHA-256 hashes, not `'unsafe-inline'`), requests to its own origin (`connect-src
//! 'self'`), and no framing: a page framed by another site could have its cancel buttons clicked
//! by a user who believes they click something else. Every text from a status goes into the
//! page as text, never as markup.
//!
//! The path is a static segment, which axum matches before `/asynchronous/job/{jobId}` (as it
//! does `events`); no job id is spelled `dashboard`, so no job loses its route. Without
//! `dashboard(true)` the path is answered as a malformed job id (400).
//!
//! # Example
//!
//! ```no_run
//! use std::collections::HashMap;
//! use std::sync::Arc;
//! use asyncjobs::http::{Area, AsyncJobApi, BearerToken};
//! use asyncjobs::{JobHandle, JobRegistry};
//! use serde::{Deserialize, Serialize};
//!
//! /// `{"concreteType": "org.example.ExportRequest", "datasetId": "…", "rows": 1000}`, at
//! /// `/dataset/{datasetId}/export/async/start`: `datasetId` comes from the path.
//! #[derive(Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct ExportRequest {
//!     dataset_id: String,
//!     rows: u64,
//! }
//!
//! #[derive(Serialize)]
//! #[serde(tag = "concreteType", rename = "org.example.ExportResponse")]
//! struct ExportResponse {
//!     rows: u64,
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = JobRegistry::new();
//! let tokens = Arc::new(HashMap::from([("s3cr3t-alice".to_owned(), 1_u64)]));
//! let auth = BearerToken::new(move |token: String| {
//!     let tokens = tokens.clone();
//!     async move { Ok(tokens.get(&token).copied()) }
//! });
//! let exports = Area::new("/dataset/{datasetId}/export").job(
//!     "org.example.ExportRequest",
//!     |request: ExportRequest, job: JobHandle| async move {
//!         for row in 0..request.rows {
//!             if job.is_canceling() {
//!                 return Err(std::io::Error::other("export canceled"));
//!             }
//!             job.set_progress(row, request.rows, format!("exporting {}", request.dataset_id));
//!             tokio::task::yield_now().await;
//!         }
//!         Ok(ExportResponse { rows: request.rows })
//!     },
//! );
//! let app = AsyncJobApi::new(registry.clone(), auth)
//!     .area(exports)
//!     .into_router();
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         // Ends the event streams, which the server's shutdown waits for.
//!         registry.shutdown(std::time::Duration::from_secs(10)).await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`into_router`]: AsyncJobApi::into_router
//! [`JobRegistry`]: crate::JobRegistry
//! [`JobRegistry::as_user`]: crate::JobRegistry::as_user

// One file per concept. Imports run one way, from the router down to the leaves: each file
// imports only from files later in this order: api, dashboard, list, events, handlers, area,
// poll, state, bearer, identify, rejection, response.
mod api;
mod area;
mod bearer;
mod dashboard;
mod events;
mod handlers;
mod identify;
mod list;
mod poll;
mod rejection;
mod response;
mod state;

pub use api::{AsyncJobApi, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT};
pub use area::Area;
pub use bearer::BearerToken;
pub use events::DEFAULT_EVENT_HEARTBEAT;
pub use identify::{IdentifyUser, UserHeader};
pub use list::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
pub use rejection::Rejection;
pub use response::{EMPTY_RESPONSE_TYPE, JOB_REUSED};
