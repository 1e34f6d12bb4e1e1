//! Reading statuses: one job, a user's newest jobs, jobs' names, counts per state.

use serde_json::Value;
use tokio_postgres::Row;

use super::writes::to_bigint;
use super::{Db, StoreError};
use crate::{AsynchJobState, AsynchronousJobStatus, JobCounts};

/// A job as stored: its status and the columns beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    /// The status as last written. While `cancel_requested` is set and the owner has not yet
    /// written the canceling status, `status.job_canceling` is still false.
    pub status: AsynchronousJobStatus,
    /// The status's change counter (the etag's value).
    pub version: u64,
    /// The instance running (or that ran) the job.
    pub owner: u64,
    /// Someone asked to cancel the job ([`Db::request_cancel`]); the owner applies it.
    pub cancel_requested: bool,
    /// The request-cache key, for a cacheable request.
    pub cache_key: Option<i64>,
    /// The job's [name](crate::JobRequest::name), if it has one and a write carried it.
    pub name: Option<String>,
}

const COLUMNS: &str = "id, version, owner, cancel_requested, cache_key, status, name";

impl Db {
    /// Job `id` as stored, or `None` if there is no such job (never written, or dropped by
    /// retention).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached, or
    /// [`Decode`](super::StoreErrorKind::Decode) if the stored status does not parse.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn read(&self, id: u64) -> Result<Option<StoredJob>, StoreError> {
        const WHAT: &str = "read a job status";
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM asyncjobs_jobs WHERE id = $1"
            ))
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let row = client
            .query_opt(&statement, &[&id])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        row.map(|row| stored_job(&row)).transpose()
    }

    /// Up to `limit` jobs, newest (highest id) first: of `user` if given, else of everyone;
    /// in `state` if given, else in any state.
    ///
    /// Ids grow within an instance's block and blocks grow over time, so "highest id" is
    /// "newest" within an instance; across instances it is only roughly so.
    ///
    /// # Errors
    ///
    /// As [`read`](Db::read).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(
        &self,
        user: Option<u64>,
        state: Option<AsynchJobState>,
        limit: usize,
    ) -> Result<Vec<StoredJob>, StoreError> {
        const WHAT: &str = "list jobs";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let user = user.map(|u| to_bigint(u, "user id", WHAT)).transpose()?;
        let state = state.map(AsynchJobState::as_str);
        // One text per combination, so that each gets a plan that uses its index.
        let filter = match (user.is_some(), state.is_some()) {
            (false, false) => "$1::bigint IS NULL AND $2::text IS NULL",
            (true, false) => "user_id = $1 AND $2::text IS NULL",
            (false, true) => "$1::bigint IS NULL AND state = $2",
            (true, true) => "user_id = $1 AND state = $2",
        };
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM asyncjobs_jobs WHERE {filter} ORDER BY id DESC LIMIT $3"
            ))
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let rows = client
            .query(&statement, &[&user, &state, &limit])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        rows.iter().map(stored_job).collect()
    }

    /// The names of those of the jobs `ids` that are stored with one, in no particular order.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn names(&self, ids: &[u64]) -> Result<Vec<(u64, String)>, StoreError> {
        const WHAT: &str = "read job names";
        // An id beyond `i64::MAX` is never stored.
        let ids: Vec<i64> = ids
            .iter()
            .filter_map(|&id| i64::try_from(id).ok())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, name FROM asyncjobs_jobs WHERE id = ANY($1) AND name IS NOT NULL",
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let rows = client
            .query(&statement, &[&ids])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, i64>(0) as u64, row.get(1)))
            .collect())
    }

    /// How many stored jobs are in each state, across all instances.
    ///
    /// The three counts are one consistent snapshot.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn counts(&self) -> Result<JobCounts, StoreError> {
        const WHAT: &str = "count jobs";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT state, queued, count(*) FROM asyncjobs_jobs GROUP BY state, queued",
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let rows = client
            .query(&statement, &[])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let (mut processing, mut queued, mut complete, mut failed) = (0, 0, 0, 0);
        for row in rows {
            let n = row.get::<_, i64>(2) as usize;
            match (row.get::<_, &str>(0), row.get::<_, bool>(1)) {
                ("PROCESSING", waiting) => {
                    processing += n;
                    if waiting {
                        queued += n;
                    }
                }
                ("COMPLETE", _) => complete += n,
                ("FAILED", _) => failed += n,
                _ => {}
            }
        }
        Ok(JobCounts::new(processing, complete, failed).with_queued(queued))
    }
}

/// A row of [`COLUMNS`] as a [`StoredJob`].
fn stored_job(row: &Row) -> Result<StoredJob, StoreError> {
    let id: i64 = row.get(0);
    let status: Value = row.get(5);
    let status: AsynchronousJobStatus = serde_json::from_value(status)
        .map_err(|e| StoreError::decode(format!("read job {id}'s stored status"), e))?;
    if status.job_id.as_u64() != id as u64 {
        return Err(StoreError::decode_because(
            format!("read job {id}'s stored status"),
            format!("it is the status of job {}", status.job_id),
        ));
    }
    Ok(StoredJob {
        status,
        version: row.get::<_, i64>(1) as u64,
        owner: row.get::<_, i64>(2) as u64,
        cancel_requested: row.get(3),
        cache_key: row.get(4),
        name: row.get(6),
    })
}
