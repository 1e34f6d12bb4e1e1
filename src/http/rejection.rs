//! [`Rejection`]: every refusal, and which HTTP status each registry error gets.

use std::error::Error as StdError;
use std::fmt;

use axum::http::header::{HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::response::{json, no_store, Reason};
use crate::Error;

/// A refused request: an HTTP status and a reason, answered as JSON `{"reason": "…"}` (Synapse's
/// error shape) with `Cache-Control: no-store`.
///
/// Every error of the API is one; an [`IdentifyUser`](super::IdentifyUser) (or a
/// [`BearerToken`](super::BearerToken)'s lookup) returns one to refuse a request.
/// `From<asyncjobs::Error>` picks the status from the README's table (404 unknown job, 400
/// malformed id, 403 another user's job, 503 shut down or store unreachable, 500 otherwise).
/// Answers to a 401 from [`BearerToken`](super::BearerToken) carry `WWW-Authenticate`, and the
/// router's 405s carry `Allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    reason: String,
    /// A header the status calls for, e.g. `WWW-Authenticate` on a 401.
    header: Option<(HeaderName, HeaderValue)>,
}

impl Rejection {
    /// A refusal with this status and reason.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
            header: None,
        }
    }

    /// The same refusal, answered with this header too.
    pub(super) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some((name, value));
        self
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
            Error::MalformedId | Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotYourJob(_) => StatusCode::FORBIDDEN,
            Error::ShutDown | Error::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobId;

    #[test]
    fn registry_errors_map_to_http_statuses() {
        let id = JobId::from_u64(1);
        let status = |e: Error| Rejection::from(e).status();
        assert_eq!(status(Error::UnknownJob(id)), StatusCode::NOT_FOUND);
        assert_eq!(status(Error::MalformedId), StatusCode::BAD_REQUEST);
        assert_eq!(status(Error::NotYourJob(id)), StatusCode::FORBIDDEN);
        assert_eq!(status(Error::ShutDown), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(Error::NoRuntime), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            status(Error::StoreUnavailable("connection refused".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
