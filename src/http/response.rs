//! How every answer is written: JSON bodies, and the headers that mark an answer about a job.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::{AsynchronousJobStatus, Etag, Spawned};

/// The `concreteType` of what `async/get` answers for a COMPLETE job whose result serializes to
/// `null` (e.g. `()`): `{"concreteType": "asyncjobs.EmptyResponse"}`. Synapse's response bodies
/// are JSON objects with a `concreteType`, and its clients read fields of them (Synapse's Python
/// client calls `.get` on the body), so a bare `null` would crash them.
pub const EMPTY_RESPONSE_TYPE: &str = "asyncjobs.EmptyResponse";

/// The header on every answer that starts a job (`async/start`, `POST /asynchronous/job`):
/// `Job-Reused: true` when a [cacheable](crate::JobRequest::cacheable) request was answered with
/// an earlier equal request's job, `false` when a job started. The status stays 201 either way,
/// as Synapse answers.
pub const JOB_REUSED: HeaderName = HeaderName::from_static("job-reused");

/// What `async/get` answers for a COMPLETE job: 200 and its response body.
pub(super) fn complete_response(status: &AsynchronousJobStatus) -> Response {
    match status.response_body.as_deref() {
        Some(body) if !body.is_null() => json(StatusCode::OK, body),
        _ => json(
            StatusCode::OK,
            &json!({ "concreteType": EMPTY_RESPONSE_TYPE }),
        ),
    }
}

/// Says whether a start reused an earlier job.
pub(super) fn mark_reused(response: &mut Response, spawned: Spawned) {
    let reused = if spawned.is_reused() { "true" } else { "false" };
    response
        .headers_mut()
        .insert(JOB_REUSED, HeaderValue::from_static(reused));
}

/// Synapse's error body, `{"reason": "…"}`.
#[derive(Serialize)]
pub(super) struct Reason<'a> {
    pub(super) reason: &'a str,
}

pub(super) fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
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

pub(super) fn status_response(code: StatusCode, status: &AsynchronousJobStatus) -> Response {
    let mut response = json(code, status);
    tag(&mut response, &status.etag);
    response
}

/// Marks an answer about a job: its etag, and that it must not be cached (it is one user's, and
/// it changes).
pub(super) fn tag(response: &mut Response, etag: &Etag) {
    // Etags this crate makes are digits; one that is not a valid header value is left out.
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    no_store(response);
}

pub(super) fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
