//! The status snapshot and its wire format.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{Etag, JobId};

/// The state of a job. There is no "canceled" state: a canceled job ends [`Failed`] (or
/// [`Complete`], if it finished its work anyway) with
/// [`job_canceling`](AsynchronousJobStatus::job_canceling) set.
///
/// On the wire: `"PROCESSING"`, `"FAILED"`, `"COMPLETE"`; any other string is a parse error.
///
/// [`Failed`]: AsynchJobState::Failed
/// [`Complete`]: AsynchJobState::Complete
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AsynchJobState {
    /// Started and not finished yet. This is the state from the moment `spawn` returns.
    Processing,
    /// Finished with an error, a panic, or stopped after a cancel; the error fields say which.
    Failed,
    /// Finished with a result, which is in the response body.
    Complete,
}

impl AsynchJobState {
    /// True for [`Failed`](AsynchJobState::Failed) and [`Complete`](AsynchJobState::Complete):
    /// a status in such a state never changes again.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, AsynchJobState::Processing)
    }

    /// The wire name: `"PROCESSING"`, `"FAILED"` or `"COMPLETE"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AsynchJobState::Processing => "PROCESSING",
            AsynchJobState::Failed => "FAILED",
            AsynchJobState::Complete => "COMPLETE",
        }
    }
}

impl fmt::Display for AsynchJobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one job's status: a plain value the caller owns, taken at one instant.
///
/// Fields and their JSON names are Synapse's `AsynchronousJobStatus`; serializing with serde gives
/// Synapse's wire format exactly (camelCase names, `runtimeMS` an integer, `jobId` a string of
/// digits, times in RFC 3339 UTC with milliseconds and a trailing `Z`, absent values omitted), and
/// a status sent by a Synapse server parses (unknown fields such as `callersContext` are ignored).
/// Parsing requires `jobId`, `jobState`, `etag`, `startedOn` and `changedOn`.
///
/// Strings and bodies are shared with the registry (`Arc`), so taking a snapshot never copies a
/// request or response body.
///
/// ```
/// use asyncjobs::{AsynchJobState, AsynchronousJobStatus};
///
/// let sent_by_synapse = r#"{
///     "jobState": "PROCESSING", "jobCanceling": false, "etag": "0e8ba8d4-5a9b-4e4c-9e57-4ec1f1a0b8f2",
///     "jobId": "9606497", "startedByUserId": 3350396, "startedOn": "2024-03-05T17:04:09.417Z",
///     "changedOn": "2024-03-05T17:04:10.002Z", "progressMessage": "Querying...",
///     "progressCurrent": 5, "progressTotal": 100, "runtimeMS": 585, "callersContext": null
/// }"#;
/// let status: AsynchronousJobStatus = serde_json::from_str(sent_by_synapse)?;
/// assert_eq!(status.job_state, AsynchJobState::Processing);
/// assert_eq!(status.job_id.as_u64(), 9606497);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AsynchronousJobStatus {
    /// The job's id (`jobId`).
    pub job_id: JobId,
    /// The job's state (`jobState`).
    pub job_state: AsynchJobState,
    /// Whether the job has been asked to cancel (`jobCanceling`). Once set it stays set, also in the
    /// final status.
    #[serde(default, deserialize_with = "null_as_default")]
    pub job_canceling: bool,
    /// Changes on every observable change of this status, never repeats for this job (`etag`).
    pub etag: Etag,
    /// When the job was submitted (`startedOn`), to the millisecond.
    #[serde(with = "wire_time")]
    pub started_on: DateTime<Utc>,
    /// When this status last changed (`changedOn`), to the millisecond. Never decreases.
    #[serde(with = "wire_time")]
    pub changed_on: DateTime<Utc>,
    /// The user who started the job, if one was given (`startedByUserId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by_user_id: Option<u64>,
    /// How much work is done, relative to `progress_total` (`progressCurrent`). Absent until the
    /// job first reports progress; on completion it equals `progress_total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_current: Option<u64>,
    /// The total amount of work (`progressTotal`). Absent until the job first reports progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_total: Option<u64>,
    /// The latest progress message (`progressMessage`), at most
    /// [`MAX_MESSAGE_CHARS`](crate::MAX_MESSAGE_CHARS) characters; `"Complete"` once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_message: Option<Arc<str>>,
    /// On failure, the error's one-line message (`errorMessage`), at most
    /// [`MAX_MESSAGE_CHARS`](crate::MAX_MESSAGE_CHARS) characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<Arc<str>>,
    /// On failure, the error and its whole `source()` chain, one per line (`errorDetails`), at most
    /// [`MAX_ERROR_DETAILS_BYTES`](crate::MAX_ERROR_DETAILS_BYTES) bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_details: Option<Arc<str>>,
    /// On failure, the name of the error's type (`exception`): the Rust type name of the job's
    /// error type, or one of the names in [`exception`](crate::exception) for failures the
    /// registry itself reports (panics, stops after a cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<Arc<str>>,
    /// The request the job was started with (`requestBody`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<Arc<Value>>,
    /// The job's result, once complete (`responseBody`). Absent when the result serializes to
    /// `null`, e.g. `()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<Arc<Value>>,
    /// Milliseconds from start until now while processing, and until the end once finished
    /// (`runtimeMS`), from a monotonic clock.
    #[serde(rename = "runtimeMS", default, deserialize_with = "whole_millis")]
    pub runtime_ms: u64,
}

impl AsynchronousJobStatus {
    /// True when the job has finished: its status will not change again.
    pub fn is_terminal(&self) -> bool {
        self.job_state.is_terminal()
    }
}

fn null_as_default<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or_default())
}

/// `runtimeMS` is an integer on the wire, but some Synapse clients write it as a float.
fn whole_millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of milliseconds")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
                Ok(v.round() as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }
    }
    d.deserialize_any(Visitor)
}

/// Times on the wire: RFC 3339 in UTC with milliseconds and a `Z`, as Synapse writes them.
mod wire_time {
    use super::*;

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        use chrono::Datelike;
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let time = DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| serde::de::Error::custom("expected an RFC 3339 date-time"))?;
        // An offset can move a time past year 9999 in UTC, which RFC 3339 cannot write back.
        if !(0..=9999).contains(&time.year()) {
            return Err(serde::de::Error::custom(
                "date-time out of range (years 0000 to 9999 in UTC)",
            ));
        }
        Ok(time)
    }
}
