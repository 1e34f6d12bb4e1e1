//! Instances and their leases: each instance registers a row and renews its lease while it
//! runs; any instance may reap the others whose lease ran out, failing the jobs they were
//! running, which no one would otherwise ever finish.
//!
//! Every lease time is taken from the database's clock (`now()`), so the instances' own clocks
//! never need to agree.

use std::sync::LazyLock;
use std::time::Duration;

use super::db::micros;
use super::notify::NOTIFY_WRITTEN;
use super::schema::REAP_LOCK;
use super::writes::to_bigint;
use super::{Db, StoreError};
use crate::exception;

/// The `errorMessage` of a job whose instance's lease ran out (`%s`: the instance).
const LEASE_LOST: &str = "job's instance %s stopped renewing its lease, so the job was lost";

/// The `errorMessage` of a job still PROCESSING when its instance released its lease.
const RELEASED: &str = "job's instance %s stopped before the job finished";

/// Fails the PROCESSING jobs the CTE `lost(id)` names: FAILED with exception `$1` and the
/// message `format($2, owner)`, version + 1 (and the etag with it), `changedOn` now (never
/// earlier than the stored one) and `runtimeMS` up to now; then notifies `asyncjobs_changed`.
/// Returns the number of notifications and the jobs failed with their new versions.
fn fail_lost_jobs(lost: &str) -> String {
    // Times go into the JSON as the status's wire format writes them: UTC, milliseconds, `Z`.
    let at = "date_trunc('milliseconds', greatest(now(), j.changed_at))";
    format!(
        "WITH {lost},
written AS (
    UPDATE asyncjobs_jobs AS j SET
        version = j.version + 1,
        state = 'FAILED',
        changed_at = {at},
        finished_at = {at},
        status = j.status || jsonb_build_object(
            'jobState', 'FAILED',
            'etag', (j.version + 1)::text,
            'changedOn', to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
            'runtimeMS', coalesce(
                to_jsonb(greatest(0, floor(extract(epoch FROM
                    {at} - (j.status->>'startedOn')::timestamptz) * 1000))::bigint),
                j.status->'runtimeMS'),
            'exception', $1::text,
            'errorMessage', format($2::text, j.owner))
    FROM lost
    WHERE j.id = lost.id AND j.state = 'PROCESSING'
    RETURNING j.id, j.version, j.user_id
), {NOTIFY_WRITTEN}
SELECT (SELECT count(*) FROM notified),
       coalesce(array_agg(id ORDER BY id), '{{}}'),
       coalesce(array_agg(version ORDER BY id), '{{}}')
FROM written"
    )
}

/// Deletes every instance whose lease ran out and fails the PROCESSING jobs of those, and of
/// any owner with no instance row: jobs an instance wrote after it was reaped, or after it
/// released its lease.
static REAP: LazyLock<String> = LazyLock::new(|| {
    fail_lost_jobs(
        "dead AS (
    DELETE FROM asyncjobs_instances WHERE lease_until <= now() RETURNING id
),
lost AS (
    SELECT j.id FROM asyncjobs_jobs AS j
    WHERE j.state = 'PROCESSING'
      AND (j.owner IN (SELECT id FROM dead)
           OR NOT EXISTS (SELECT 1 FROM asyncjobs_instances AS i WHERE i.id = j.owner))
)",
    )
});

/// Deletes instance `$3` and fails its PROCESSING jobs.
static RELEASE: LazyLock<String> = LazyLock::new(|| {
    fail_lost_jobs(
        "dead AS (
    DELETE FROM asyncjobs_instances WHERE id = $3
),
lost AS (
    SELECT id FROM asyncjobs_jobs WHERE owner = $3 AND state = 'PROCESSING'
)",
    )
});

impl Db {
    /// Registers a new instance running on `host` (free text for operators, e.g.
    /// `"web-3 (pid 4711)"`) with a lease of `lease` from now, and returns its id, unique in
    /// this database forever.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, an instance may have been registered that
    /// no one renews; reaping removes it once its lease ran out.
    pub async fn register_instance(&self, host: &str, lease: Duration) -> Result<u64, StoreError> {
        const WHAT: &str = "register the instance";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO asyncjobs_instances (lease_until, host)
                 VALUES (now() + $1::bigint * interval '1 microsecond', $2)
                 RETURNING id",
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let row = client
            .query_one(&statement, &[&micros(lease), &host])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Extends `instance`'s lease to `lease` from now. Returns false if the instance is no
    /// longer registered: it was reaped (its lease had run out) or released, and its
    /// PROCESSING jobs were failed; it should stop its jobs and register anew.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached: retry well before the lease
    /// runs out.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the lease is extended or not.
    pub async fn renew_lease(&self, instance: u64, lease: Duration) -> Result<bool, StoreError> {
        const WHAT: &str = "renew the instance's lease";
        let instance = to_bigint(instance, "instance id", WHAT)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE asyncjobs_instances
                 SET lease_until = now() + $2::bigint * interval '1 microsecond'
                 WHERE id = $1",
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let updated = client
            .execute(&statement, &[&instance, &micros(lease)])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        Ok(updated == 1)
    }

    /// How long until the first lease of another instance than `instance` runs out, by the
    /// database's clock (zero if one already has); `None` if there is no other instance. The
    /// moment a reaper should look next: leases differ between instances, and one that waited
    /// for a third of its own lease would find a short-leased dead instance late.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn next_lease_end(&self, instance: u64) -> Result<Option<Duration>, StoreError> {
        const WHAT: &str = "read the next lease to run out";
        let instance = to_bigint(instance, "instance id", WHAT)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT (extract(epoch FROM min(lease_until) - now()) * 1000000)::bigint
                 FROM asyncjobs_instances WHERE id <> $1",
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let micros: Option<i64> = client
            .query_one(&statement, &[&instance])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?
            .get(0);
        Ok(micros.map(|m| Duration::from_micros(u64::try_from(m).unwrap_or(0))))
    }

    /// Unregisters `instance` at a clean stop. Jobs of it still PROCESSING (normally none: a
    /// clean stop finishes its jobs and writes their statuses first) are failed with
    /// exception [`NODE_LOST`](crate::exception::NODE_LOST) and notified; returns them with
    /// their new versions.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached; the lease then runs out and a
    /// reaper does the same later.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does all of it or nothing.
    pub async fn release_instance(&self, instance: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        const WHAT: &str = "release the instance";
        let instance = to_bigint(instance, "instance id", WHAT)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&RELEASE)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let row = client
            .query_one(&statement, &[&exception::NODE_LOST, &RELEASED, &instance])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        Ok(failed_jobs(&row))
    }

    /// Reaps instances whose lease has run out: fails their PROCESSING jobs with exception
    /// [`NODE_LOST`](crate::exception::NODE_LOST) and an `errorMessage` naming the instance
    /// (version + 1, `changedOn` and `runtimeMS` brought up to now, in the JSON and the
    /// columns), deletes their rows, and notifies `asyncjobs_changed`; all in one
    /// transaction. Also fails PROCESSING jobs whose owner has no row any more (written by an
    /// instance after it was reaped). Returns the jobs failed with their new versions, in id
    /// order.
    ///
    /// "Now" is the database's clock. Safe to run from every instance at once: a
    /// transaction-scoped advisory lock lets one reaper work at a time, and the others return
    /// an empty list at once. A job whose owner writes a newer status meanwhile stays as
    /// that write left it if it finished; writes after the reap never revive the job.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached or the statement fails; then
    /// nothing changed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does all of it or nothing.
    pub async fn reap_dead_instances(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        const WHAT: &str = "reap dead instances";
        let mut client = self.client().await?;
        let statement = client
            .prepare_cached(&REAP)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        if !super::db::try_xact_lock(&tx, REAP_LOCK, WHAT).await? {
            return Ok(Vec::new());
        }
        let row = tx
            .query_one(&statement, &[&exception::NODE_LOST, &LEASE_LOST])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        tx.commit().await.map_err(|e| StoreError::query(WHAT, e))?;
        Ok(failed_jobs(&row))
    }
}

/// The `(id, version)` arrays of [`fail_lost_jobs`]'s result.
fn failed_jobs(row: &tokio_postgres::Row) -> Vec<(u64, u64)> {
    let ids: Vec<i64> = row.get(1);
    let versions: Vec<i64> = row.get(2);
    ids.into_iter()
        .zip(versions)
        .map(|(id, version)| (id as u64, version as u64))
        .collect()
}
