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

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_postgres::Object;
use serde_json::Value;

use super::db::micros;
use super::notify::NOTIFY_WRITTEN;
use super::writes::to_bigint;
use super::{Db, StatusRow, StoreError};
use crate::text::value_without_nul;

/// Jobs that may answer a cacheable request of user `$1` (`NULL` for none) with cache key `$2`
/// and request body `$3`: PROCESSING, not being canceled, on an instance whose lease holds (a
/// dead instance's job is about to fail), or COMPLETE within the last `$4` microseconds. The
/// newest first.
const FIND: &str = "
SELECT id FROM asyncjobs_jobs
WHERE (user_id = $1 OR (user_id IS NULL AND $1::bigint IS NULL))
  AND cache_key = $2
  AND (state = 'PROCESSING' AND NOT cancel_requested
           AND NOT coalesce((status->>'jobCanceling')::boolean, false)
           AND EXISTS (SELECT 1 FROM asyncjobs_instances AS i
                       WHERE i.id = owner AND i.lease_until > now())
       OR state = 'COMPLETE'
           AND finished_at >= now() - $4::bigint * interval '1 microsecond')
  AND status->'requestBody' IS NOT DISTINCT FROM $3::jsonb
ORDER BY id DESC LIMIT 1";

/// Starts a claim's transaction: read committed whatever the server's default (a waiter must
/// see the row its predecessor committed while it waited), a waiter gives up after 2 s (a
/// stalled holder must not hold connections for long), and an idle holder is ended.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED;
SET LOCAL lock_timeout = '2s';
SET LOCAL idle_in_transaction_session_timeout = '30s'";

/// The cache key of a request of user `$1` with body `$2`, and its transaction-scoped advisory
/// lock. Computed by the server, from `jsonb`'s text (keys sorted, no spaces): the same on every
/// instance, whatever it was built with.
const LOCK: &str = "
SELECT key, pg_advisory_xact_lock(key)::text
FROM (SELECT hashtextextended(
          coalesce($1::bigint::text, '') || ':' || coalesce($2::jsonb::text, ''), 0) AS key)
     AS keyed";

/// Writes the claimer's new job with its cache key: a new row, or the key (and the job's name,
/// if the row has none yet) on the row the job's instance wrote meanwhile (whose status is as new
/// or newer). Notifies the write as every
/// status write does, so that other instances hear of the job at once.
static RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH written AS (
    INSERT INTO asyncjobs_jobs AS j
        (id, version, state, user_id, owner, cache_key, changed_at, finished_at, status, queued,
         name)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (id) DO UPDATE SET
        cache_key = EXCLUDED.cache_key,
        name = coalesce(j.name, EXCLUDED.name)
    RETURNING j.id, j.version, j.user_id
), {NOTIFY_WRITTEN}
SELECT (SELECT count(*) FROM notified)"
    )
});

/// How long a lookup waits for its turn among the [claims a store runs at once](Db::claims).
const CLAIM_WAIT: Duration = Duration::from_secs(2);

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
    /// Its place among the claims this store runs at once.
    _permit: tokio::sync::OwnedSemaphorePermit,
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
        let body = body.map(|body| value_without_nul(body.clone()));
        let body = body.as_ref();
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

    /// As [`find_cached`](Db::find_cached), with the request's cache key computed by the server
    /// (from `user` and the `jsonb` text of `body`, so that every instance computes the same),
    /// but when no job is found, returns a claim on that key: until it is
    /// [settled](CacheClaim::settle) or dropped, an equal call on any instance waits. Its holder
    /// starts the job and settles the claim with the job's row.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached, when the key stays locked for 2 s
    /// (a stalled holder), or when the store's other claims (four at most) keep it waiting for
    /// 2 s: the
    /// caller then goes without the cache rather than wait longer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped lookup's connection is closed, which frees the lock.
    pub async fn find_or_claim(
        &self,
        user: Option<u64>,
        body: Option<&Value>,
        fresh_for: Duration,
    ) -> Result<CacheLookup, StoreError> {
        const WHAT: &str = "claim a cached request";
        let user = user.map(|u| to_bigint(u, "user id", WHAT)).transpose()?;
        // As stored (see `writes`): a body holding a NUL would make PostgreSQL refuse the query.
        let body = body.map(|body| value_without_nul(body.clone()));
        let body = body.as_ref();
        // Few claims wait at once, so that equal requests piling up cannot take the pool that
        // the store's writes and lease renewals need.
        let permit = tokio::time::timeout(CLAIM_WAIT, self.claims().acquire_owned())
            .await
            .map_err(|_| StoreError::query_because(WHAT, "too many cached requests waiting"))?
            .map_err(|_| StoreError::query_because(WHAT, "the store is closing"))?;
        let mut claim = CacheClaim {
            client: Some(self.client().await?),
            key: 0,
            _permit: permit,
        };
        let client = claim
            .client
            .as_ref()
            .expect("a new claim holds its connection");
        let lock = client
            .prepare_cached(LOCK)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let find = client
            .prepare_cached(FIND)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        client
            .batch_execute(BEGIN)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let key: i64 = client
            .query_one(&lock, &[&user, &body])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?
            .get(0);
        claim.key = key;
        let found = client
            .query_opt(&find, &[&user, &key, &body, &micros(fresh_for)])
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
            .query_one(
                &*RECORD,
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
                    &row.name,
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
