//! Conditional answers and long-polling: a request's etags (`If-None-Match`, `?etag=`), its
//! `?wait=`, and the wait for a status the client has not seen.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::rejection::Rejection;
use super::response::tag;
use crate::{AsynchronousJobStatus, Etag, JobId, UserView};

/// What a status request may carry to be answered only on a change.
#[derive(Debug, Deserialize)]
pub(super) struct PollQuery {
    wait: Option<String>,
    etag: Option<String>,
}

/// A request's etag condition and how long it may wait for it to stop holding.
#[derive(Debug)]
pub(super) struct Poll {
    /// The etags the client has (from `If-None-Match` and `?etag=`); empty for none.
    seen: Vec<String>,
    /// `If-None-Match: *`: any status counts as seen.
    any: bool,
    wait: Duration,
}

impl Poll {
    pub(super) fn from_request(
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

pub(super) enum Read {
    Fresh(AsynchronousJobStatus),
    NotModified(Etag),
}

/// The status, unless the client has seen it: then, within the wait, the first status it has
/// not seen, or "not modified". `admit` may refuse the job (it sees the first status read;
/// what it looks at, the request, never changes).
pub(super) async fn read(
    user: &UserView,
    id: &JobId,
    poll: &Poll,
    max_wait: Duration,
    admit: impl FnOnce(&AsynchronousJobStatus) -> Result<(), Rejection>,
) -> Result<Read, Rejection> {
    let mut status = user.status(id).await?;
    admit(&status)?;
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

pub(super) fn not_modified(etag: &Etag) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    tag(&mut response, etag);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::HeaderValue;

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
}
