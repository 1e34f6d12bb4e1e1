//! `GET /asynchronous/job`: the caller's jobs for a UI, newest first, a page at a time, with
//! per-state counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::handlers::Caller;
use super::rejection::Rejection;
use super::response::{json, no_store};
use crate::{AsynchJobState, AsynchronousJobStatus, JobCounts, JobFilter, JobId};

/// How many jobs a page of `GET /asynchronous/job` has when the request does not say (`limit`).
pub const DEFAULT_LIST_LIMIT: usize = 50;

/// The most jobs a page of `GET /asynchronous/job` has; a larger `limit` is cut to this.
pub const MAX_LIST_LIMIT: usize = 1000;

/// The query of a list request; every parameter optional.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    job_state: Option<String>,
    concrete_type: Option<String>,
    limit: Option<String>,
    next_page_token: Option<String>,
}

/// A page of the list, as Synapse pages lists: `page` and, if there is more, `nextPageToken`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobList<'a> {
    page: Vec<&'a AsynchronousJobStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
    counts: StateCounts,
    /// The [names](crate::JobRequest::name) of the page's jobs that have one (of every instance
    /// sharing a store), by job id: names are not status fields, whose set is Synapse's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    names: BTreeMap<String, Arc<str>>,
}

/// How many of the caller's jobs (of the `concreteType` asked for, if any) are in each state,
/// keyed by the state's wire name, so a UI can look up `counts[status.jobState]`.
#[derive(Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct StateCounts {
    processing: usize,
    complete: usize,
    failed: usize,
}

/// The version of the page token's format, so a later one can tell old tokens apart.
const TOKEN_PREFIX: &str = "1.";

/// `GET /asynchronous/job`.
pub(super) async fn list(
    Caller(user): Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Rejection> {
    let Query(query) = query.map_err(|r| Rejection::new(r.status(), r.body_text()))?;
    let state = match query.job_state.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_state(text)?),
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_LIST_LIMIT,
        Some(text) => parse_limit(text)?,
    };
    let before = match query.next_page_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(parse_token(token)?),
    };
    let concrete_type = query.concrete_type.as_deref().filter(|t| !t.is_empty());

    let mut filter = JobFilter::new().limit(limit);
    if let Some(concrete_type) = concrete_type {
        filter = filter.concrete_type(concrete_type);
    }
    let counts = StateCounts::from(user.counts_matching(&filter).await?);
    if let Some(state) = state {
        filter = filter.state(state);
    }
    if let Some(before) = before {
        filter = filter.before(before);
    }
    let listed = user.list(&filter).await?;
    let page: Vec<&AsynchronousJobStatus> = listed.jobs.iter().collect();
    let next_page_token = listed
        .next
        .and_then(|next| next.starting_before())
        .map(|before| format!("{TOKEN_PREFIX}{before}"));
    let ids: Vec<JobId> = page.iter().map(|status| status.job_id).collect();
    let names = user
        .job_names(&ids)
        .await?
        .into_iter()
        .map(|(id, name)| (id.to_string(), name))
        .collect();
    let mut response = json(
        StatusCode::OK,
        &JobList {
            page,
            next_page_token,
            counts,
            names,
        },
    );
    no_store(&mut response);
    Ok(response)
}

impl From<JobCounts> for StateCounts {
    fn from(counts: JobCounts) -> Self {
        StateCounts {
            processing: counts.processing,
            complete: counts.complete,
            failed: counts.failed,
        }
    }
}

fn parse_state(text: &str) -> Result<AsynchJobState, Rejection> {
    serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
        Rejection::bad_request(format!(
            "jobState must be PROCESSING, COMPLETE or FAILED, not {text:?}"
        ))
    })
}

fn parse_limit(text: &str) -> Result<usize, Rejection> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::bad_request(format!(
            "limit must be a whole number from 1, not {text:?}"
        )));
    }
    // Digits too many for a u64: as many as allowed.
    let n = text.parse::<u64>().unwrap_or(u64::MAX);
    if n == 0 {
        return Err(Rejection::bad_request("limit must be at least 1"));
    }
    Ok(usize::try_from(n).map_or(MAX_LIST_LIMIT, |n| n.min(MAX_LIST_LIMIT)))
}

fn parse_token(token: &str) -> Result<JobId, Rejection> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|id| id.parse::<JobId>().ok())
        .ok_or_else(|| {
            Rejection::bad_request("malformed nextPageToken: pass back the one a page answered")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_whole_numbers_from_one_cut_to_the_maximum() {
        assert_eq!(parse_limit("1").unwrap(), 1);
        assert_eq!(parse_limit("50").unwrap(), 50);
        assert_eq!(parse_limit("100000").unwrap(), MAX_LIST_LIMIT);
        assert_eq!(
            parse_limit("99999999999999999999999").unwrap(),
            MAX_LIST_LIMIT
        );
        for bad in ["0", "-1", "1.5", "ten", " 5"] {
            assert_eq!(
                parse_limit(bad).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let id = JobId::from_u64(1_764_379_461_000_000);
        assert_eq!(parse_token(&format!("{TOKEN_PREFIX}{id}")).unwrap(), id);
        for bad in ["", "1.", "1.x", "2.5", "5", "1.-5"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_parse_by_their_wire_names() {
        assert_eq!(parse_state("FAILED").unwrap(), AsynchJobState::Failed);
        assert!(parse_state("failed").is_err());
        assert!(parse_state("CANCELED").is_err());
    }
}
