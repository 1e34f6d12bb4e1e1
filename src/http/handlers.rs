//! The four endpoints, each an axum handler over the shared [`Api`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{QueryRejection, RawPathParamsRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request, State};
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::poll::{not_modified, read, Poll, PollQuery, Read};
use super::rejection::Rejection;
use super::response::{complete_response, json, no_store, status_response, tag, Reason};
use super::state::Api;
use tokio::time::Instant;

use crate::{AsynchJobState, CancelOutcome, JobId, UserView};

/// The calling user's view of the registry.
pub(super) struct Caller(UserView);

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Rejection> {
        let user = api.identify.identify(parts)?;
        Ok(Caller(api.registry.as_user(user)))
    }
}

/// `POST {prefix}/async/start`.
pub(super) async fn start(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    StartBody(body): StartBody,
) -> Result<Response, Rejection> {
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

/// The body of `async/start`, at most [`max_body_bytes`](super::AsyncJobApi::max_body_bytes).
pub(super) struct StartBody(Bytes);

impl FromRequest<Arc<Api>> for StartBody {
    type Rejection = Rejection;

    async fn from_request(request: Request, api: &Arc<Api>) -> Result<Self, Rejection> {
        let limit = api.max_body_bytes;
        let too_large = || {
            Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes"),
            )
        };
        // The router's body limit counts bytes as they arrive, so a body announced larger than
        // the limit would be waited for until more than the limit had come: a client announcing
        // 100 GB and sending a trickle would hold a connection and a task. The headers tell.
        if announced_length(request.headers()).is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let body = Bytes::from_request(request, api)
            .await
            .map_err(|rejection| match rejection.status() {
                // A body of unannounced length (chunked) that grew past the limit.
                StatusCode::PAYLOAD_TOO_LARGE => too_large(),
                status => Rejection::new(status, rejection.body_text()),
            })?;
        Ok(StartBody(body))
    }
}

/// The body length a request's `Content-Length` header announces, if it has a valid one.
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `GET {prefix}/async/get/{asyncToken}`: the status while processing, then the outcome.
pub(super) async fn result(
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
        AsynchJobState::Complete => complete_response(&status),
        AsynchJobState::Failed => {
            let reason = status.error_message.as_deref().unwrap_or("job failed");
            json(api.failure_status(&status), &Reason { reason })
        }
    };
    tag(&mut response, &status.etag);
    Ok(response)
}

/// `GET /asynchronous/job/{jobId}`: the status in any state.
pub(super) async fn status(
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

/// How long a cancel of another instance's job waits for that instance to show it canceling.
const REMOTE_CANCEL_WAIT: Duration = Duration::from_secs(2);

/// `POST` or `GET /asynchronous/job/{jobId}/cancel` (Synapse's is a `GET`).
pub(super) async fn cancel(
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Result<Response, Rejection> {
    let id = job_id(params, "jobId")?;
    let outcome = user.cancel_anywhere(&id).await?;
    let mut status = user.status_anywhere(&id).await?;
    // Another instance's job shows the flag once its instance applied the cancel, within about
    // a second: answer with that status rather than one that looks as if nothing happened.
    let deadline = Instant::now() + REMOTE_CANCEL_WAIT;
    while outcome == CancelOutcome::Requested && !status.job_canceling && !status.is_terminal() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, user.wait_for_change(&id, &status.etag)).await {
            Ok(changed) => status = changed?,
            Err(_elapsed) => break,
        }
    }
    let code = if status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(status_response(code, &status))
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
