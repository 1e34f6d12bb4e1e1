//! Retention in the shared table: finished statuses are deleted once they are older than a time
//! or beyond a count of each instance's, as each registry does in memory. One instance sweeps at a
//! time, by its own registry's rules: instances sharing a store are expected to share their
//! retention settings (with different ones, the sweeper's apply to every instance's rows).

use std::time::Duration;

use super::db::micros;
use super::schema::SWEEP_LOCK;
use super::{Db, StoreError};

/// Finished rows that finished before `now() - $1 µs`, at most `$2` of them.
const TOO_OLD: &str = "
DELETE FROM asyncjobs_jobs WHERE id IN (
    SELECT id FROM asyncjobs_jobs
    WHERE finished_at < now() - $1::bigint * interval '1 microsecond'
      AND state <> 'PROCESSING'
    LIMIT $2
)";

/// Each instance's finished rows beyond its newest `$1` (by finish time, then id), at most `$2`
/// of them. Counted per instance (`owner`), as each registry counts the finished statuses it
/// keeps in memory: counted over the whole table, the rule of one instance's registry would
/// drop rows that the others still hold, and they would answer for jobs the database no longer
/// knows.
const TOO_MANY: &str = "
DELETE FROM asyncjobs_jobs WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (
            PARTITION BY owner ORDER BY finished_at DESC, id DESC
        ) AS newest
        FROM asyncjobs_jobs
        WHERE finished_at IS NOT NULL AND state <> 'PROCESSING'
    ) ranked
    WHERE newest > $1
    LIMIT $2
)";

impl Db {
    /// Deletes finished statuses that finished more than `keep_for` ago (by the database's
    /// clock), and those beyond the newest `keep_at_most` finished ones of each instance, in
    /// deletes of at most `batch` rows; returns how many were deleted. PROCESSING rows are never
    /// deleted.
    ///
    /// One sweeper at a time across all instances: the sweep runs in one transaction under a
    /// transaction-scoped advisory lock, and a sweep that finds the lock taken returns 0 at
    /// once (the other sweeper does the work). Batches bound each statement's work; the
    /// whole sweep commits at the end, so readers see all of it or none of it.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached or a statement fails; then
    /// nothing was deleted.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future deletes everything the sweep would have or nothing.
    pub async fn sweep_retention(
        &self,
        keep_for: Duration,
        keep_at_most: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        const WHAT: &str = "sweep finished jobs";
        let keep_for = micros(keep_for);
        let keep_at_most = i64::try_from(keep_at_most).unwrap_or(i64::MAX);
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let too_old = client
            .prepare_cached(TOO_OLD)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let too_many = client
            .prepare_cached(TOO_MANY)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        if !super::db::try_xact_lock(&tx, SWEEP_LOCK, WHAT).await? {
            return Ok(0);
        }
        let mut deleted = 0;
        for (statement, keep) in [(&too_old, keep_for), (&too_many, keep_at_most)] {
            loop {
                let n = tx
                    .execute(statement, &[&keep, &batch])
                    .await
                    .map_err(|e| StoreError::query(WHAT, e))?;
                deleted += n;
                if n < batch as u64 {
                    break;
                }
            }
        }
        tx.commit().await.map_err(|e| StoreError::query(WHAT, e))?;
        Ok(deleted)
    }
}
