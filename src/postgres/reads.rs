//! Reading statuses: one job, a user's newest jobs, jobs' names, counts per state.

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::writes::to_bigint;
use super::{Db, StoreError};
use crate::text::without_nul;
use crate::{AsynchronousJobStatus, JobCounts, JobFilter};

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

    /// Up to `limit` of the jobs `filter` selects, newest (highest id) first: by its user,
    /// state, name, request `concreteType` and `before` (its own limit is not applied).
    ///
    /// Ids grow within an instance's block and blocks grow over time, so "highest id" is
    /// "newest" within an instance; across instances it is only roughly so. A page is found by
    /// the primary key (and the user's index), however many jobs come after it.
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
        filter: &JobFilter,
        limit: usize,
    ) -> Result<Vec<StoredJob>, StoreError> {
        const WHAT: &str = "list jobs";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conditions = Conditions::of(filter, true, WHAT)?;
        let at = conditions.push(Box::new(limit));
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM asyncjobs_jobs WHERE {} ORDER BY id DESC LIMIT ${at}",
                conditions.text
            ))
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let rows = client
            .query(&statement, &conditions.params())
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

    /// How many stored jobs that `filter` selects (by its user, name and request
    /// `concreteType`; not its state or page) are in each state, across all instances.
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
    pub async fn counts(&self, filter: &JobFilter) -> Result<JobCounts, StoreError> {
        const WHAT: &str = "count jobs";
        let conditions = Conditions::of(filter, false, WHAT)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT state, queued, count(*) FROM asyncjobs_jobs WHERE {} \
                 GROUP BY state, queued",
                conditions.text
            ))
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let rows = client
            .query(&statement, &conditions.params())
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let (mut processing, mut queued, mut complete, mut failed) = (0, 0, 0, 0);
        for row in rows {
            let n = usize::try_from(row.get::<_, i64>(2)).unwrap_or(0);
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

/// The `WHERE` clause of a filter, with its parameters. Only the conditions the filter sets are
/// written, so each combination is its own statement text, planned with the index it can use.
struct Conditions {
    text: String,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Conditions {
    /// `filter`'s conditions; its state and page (`before`) only if `paged`.
    fn of(filter: &JobFilter, paged: bool, what: &'static str) -> Result<Self, StoreError> {
        let mut conditions = Conditions {
            text: String::from("TRUE"),
            values: Vec::new(),
        };
        if let Some(user) = filter.user {
            let user = to_bigint(user, "user id", what)?;
            conditions.and("user_id = $", Box::new(user));
        }
        if let Some(name) = &filter.name {
            // Stored names and bodies hold no NUL (see `writes`): nor may a filter, which
            // PostgreSQL would refuse.
            conditions.and("name = $", Box::new(without_nul(name).into_owned()));
        }
        if let Some(concrete_type) = &filter.concrete_type {
            conditions.and(
                "status->'requestBody'->>'concreteType' = $",
                Box::new(without_nul(concrete_type).into_owned()),
            );
        }
        if paged {
            if let Some(state) = filter.state {
                conditions.and("state = $", Box::new(state.as_str()));
            }
            if let Some(before) = filter.before {
                // Ids above `i64::MAX` are never stored: every stored id is below.
                if let Ok(before) = i64::try_from(before.as_u64()) {
                    conditions.and("id < $", Box::new(before));
                }
            }
        }
        Ok(conditions)
    }

    /// Adds `condition`, whose parameter comes last.
    fn and(&mut self, condition: &str, value: Box<dyn ToSql + Sync + Send>) {
        let at = self.push(value);
        self.text.push_str(&format!(" AND {condition}{at}"));
    }

    /// Adds a parameter; its number.
    fn push(&mut self, value: Box<dyn ToSql + Sync + Send>) -> usize {
        self.values.push(value);
        self.values.len()
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A row of [`COLUMNS`] as a [`StoredJob`].
fn stored_job(row: &Row) -> Result<StoredJob, StoreError> {
    let id: i64 = row.get(0);
    // `try_get`, not `get`, which panics: a stored status that does not parse is an error of
    // this read, never a panic (serde_json's `float_roundtrip` makes every float the crate
    // wrote parse back to itself).
    let status: Value = row.try_get(5).map_err(|e| {
        StoreError::decode_because(format!("read job {id}'s stored status"), e.to_string())
    })?;
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
