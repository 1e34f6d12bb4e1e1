//! Request caching across instances: a cacheable request equal to one the same user sent to any
//! instance is answered with that job, and two equal requests sent to two instances at once
//! start one job.
//!
//! A lookup that finds no job leaves a *claim*: an open transaction holding a
//! transaction-scoped advisory lock on the request's cache key. An equal lookup on any instance
//! waits for that lock, so it runs only once the claimer has started its job and recorded it
//! ([`CacheClaim::settle`] writes the job's row with its cache key and commits), and then finds
//! it. A claim dropped unsettled closes its connection, which ends the transaction and frees the
//! lock: a claimer that fails or is canceled blocks no one.

use std::time::Duration;

use deadpool_postgres::Object;
use serde_json::Value;

use super::db::micros;
use super::writes::to_bigint;
use super::{Db, StatusRow, StoreError};

/// Jobs that may answer a cacheable request of user `$1` (`NULL` for none) with cache key `$2`
/// and request body `$3`: PROCESSING and not being canceled, or COMPLETE within the last `$4`
/// microseconds. The newest first.
const FIND: &str = "
SELECT id FROM asyncjobs_jobs
WHERE (user_id = $1 OR (user_id IS NULL AND $1::bigint IS NULL))
  AND cache_key = $2
  AND (state = 'PROCESSING' AND NOT cancel_requested
           AND NOT coalesce((status->>'jobCanceling')::boolean, false)
       OR state = 'COMPLETE'
           AND finished_at >= now() - $4::bigint * interval '1 microsecond')
  AND status->'requestBody' IS NOT DISTINCT FROM $3::jsonb
ORDER BY id DESC LIMIT 1";

/// Writes the claimer's new job with its cache key: a new row, or the key on the row the
/// job's instance wrote meanwhile (whose status is as new or newer).
const RECORD: &str = "
INSERT INTO asyncjobs_jobs AS j
    (id, version, state, user_id, owner, cache_key, changed_at, finished_at, status, queued)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET cache_key = EXCLUDED.cache_key";

/// What [`Db::find_or_claim`] found.
#[derive(Debug)]
pub enum CacheLookup {
    /// A job that answers the request.
    Found(u64),
    /// None: equal lookups wait until this claim is settled or dropped.
    Claimed(Box<CacheClaim>),
}

/// The right, held by one lookup at a time across every instance, to start the job that
/// answers requests with one cache key, from [`Db::find_or_claim`]: equal lookups wait while
/// it is held.
#[derive(Debug)]
pub struct CacheClaim {
    /// In an open transaction holding the key's advisory lock; `None` once settled.
    client: Option<Object>,
    key: i64,
}

impl Db {
    /// A job that a cacheable request equal to `body`, sent by `user` with `cache_key`, can
    /// reuse instead of starting a new job: one still PROCESSING and not being canceled, or
    /// COMPLETE within the last `fresh_for`. The newest such job if there are several.
    ///
    /// Bodies are compared as `jsonb`: key order does not matter, and numbers compare by value
    /// (`1.0` equals `1`). The key only narrows the search; equal bodies decide.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn find_cached(
        &self,
        user: Option<u64>,
        cache_key: i64,
        body: Option<&Value>,
        fresh_for: Duration,
    ) -> Result<Option<u64>, StoreError> {
        const WHAT: &str = "look up a cached request";
        let user = user.map(|u| to_bigint(u, "user id", WHAT)).transpose()?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(FIND)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let row = client
            .query_opt(&statement, &[&user, &cache_key, &body, &micros(fresh_for)])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        Ok(row.map(|row| row.get::<_, i64>(0) as u64))
    }

    /// As [`find_cached`](Db::find_cached), but when no job is found, returns a claim on
    /// `cache_key`: until it is [settled](CacheClaim::settle) or dropped, an equal call on any
    /// instance waits. Its holder starts the job and settles the claim with the job's row.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped lookup's connection is closed, which frees the lock.
    pub async fn find_or_claim(
        &self,
        user: Option<u64>,
        cache_key: i64,
        body: Option<&Value>,
        fresh_for: Duration,
    ) -> Result<CacheLookup, StoreError> {
        const WHAT: &str = "claim a cached request";
        let user = user.map(|u| to_bigint(u, "user id", WHAT)).transpose()?;
        let mut claim = CacheClaim {
            client: Some(self.client().await?),
            key: cache_key,
        };
        let client = claim
            .client
            .as_ref()
            .expect("a new claim holds its connection");
        let statement = client
            .prepare_cached(FIND)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&cache_key])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let found = client
            .query_opt(&statement, &[&user, &cache_key, &body, &micros(fresh_for)])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        match found {
            Some(row) => {
                let id = row.get::<_, i64>(0) as u64;
                claim.release().await;
                Ok(CacheLookup::Found(id))
            }
            None => Ok(CacheLookup::Claimed(Box::new(claim))),
        }
    }
}

impl CacheClaim {
    /// The cache key claimed.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// Records `row`, the new job started for the claimed request (its `cache_key` is set to
    /// the claim's), so that equal requests find it, and releases the claim.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the row cannot be written; the claim is released all the same,
    /// and equal requests do not find the job (they may start another).
    pub async fn settle(mut self: Box<Self>, mut row: StatusRow) -> Result<(), StoreError> {
        const WHAT: &str = "record a cached request's job";
        row.cache_key = Some(self.key);
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        let id = to_bigint(row.id, "job id", WHAT)?;
        let version = to_bigint(row.version, "version", WHAT)?;
        let user = row
            .user
            .map(|u| to_bigint(u, "user id", WHAT))
            .transpose()?;
        let owner = to_bigint(row.owner, "instance id", WHAT)?;
        client
            .execute(
                RECORD,
                &[
                    &id,
                    &version,
                    &row.state.as_str(),
                    &user,
                    &owner,
                    &row.cache_key,
                    &row.changed_at,
                    &row.finished_at,
                    &row.status,
                    &row.queued,
                ],
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        // Committed: the connection goes back to the pool as a clean one.
        self.client.take();
        Ok(())
    }

    /// Ends the transaction (nothing was written in it) and returns the connection.
    async fn release(&mut self) {
        if let Some(client) = self.client.as_ref() {
            if client.batch_execute("COMMIT").await.is_ok() {
                self.client.take();
            }
        }
    }
}

impl Drop for CacheClaim {
    fn drop(&mut self) {
        // Unsettled (an error, or a dropped future): the connection may be inside the
        // transaction, holding the lock. It must not go back to the pool so: closing it makes
        // the server roll the transaction back and free the lock.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}
