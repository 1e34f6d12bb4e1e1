//! The store's tables, created or upgraded at connect.
//!
//! Each entry of [`MIGRATIONS`] moves the schema one version up and is applied once, in order;
//! the version reached is kept in `asyncjobs_schema_version`. The whole migration runs in one
//! transaction under a transaction-scoped advisory lock, so instances that connect at the same
//! moment take turns: the first creates the tables, the others find them at the current version
//! and do nothing. A schema change is a new entry at the end, never an edit of an old one.

use deadpool_postgres::Object;

use super::StoreError;

/// Advisory lock keys (one `bigint` space per database, shared with the application): the
/// ASCII of "ajmigrat", "ajreaper", "ajsweepr", so they cannot clash with small numbers an
/// application may use.
pub(super) const MIGRATE_LOCK: i64 = i64::from_be_bytes(*b"ajmigrat");
pub(super) const REAP_LOCK: i64 = i64::from_be_bytes(*b"ajreaper");
pub(super) const SWEEP_LOCK: i64 = i64::from_be_bytes(*b"ajsweepr");

/// The schema's versions: `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build of the crate writes and reads.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Version 1: jobs, instances and the id-block sequence.
///
/// `status` holds the whole `AsynchronousJobStatus` JSON; the other columns repeat what the
/// queries filter and sort on. `version` is the status's change counter (its etag), which only
/// grows: a write with an older version than the row's is ignored.
const V1: &str = "
CREATE TABLE asyncjobs_instances (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ NOT NULL,
    host        TEXT
);

CREATE TABLE asyncjobs_jobs (
    id               BIGINT PRIMARY KEY,
    version          BIGINT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('PROCESSING', 'COMPLETE', 'FAILED')),
    user_id          BIGINT NULL,
    owner            BIGINT NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    cache_key        BIGINT NULL,
    finished_at      TIMESTAMPTZ NULL,
    changed_at       TIMESTAMPTZ NOT NULL,
    status           JSONB NOT NULL
);

CREATE INDEX asyncjobs_jobs_by_user ON asyncjobs_jobs (user_id, id DESC);
CREATE INDEX asyncjobs_jobs_processing ON asyncjobs_jobs (state) WHERE state = 'PROCESSING';
CREATE INDEX asyncjobs_jobs_processing_by_owner ON asyncjobs_jobs (owner)
    WHERE state = 'PROCESSING';
CREATE INDEX asyncjobs_jobs_by_finished_at ON asyncjobs_jobs (finished_at);
CREATE INDEX asyncjobs_jobs_by_cache_key ON asyncjobs_jobs (user_id, cache_key)
    WHERE cache_key IS NOT NULL;

-- Block n holds ids ID_BASE + n * 2^20 .. ID_BASE + (n + 1) * 2^20 (see ids.rs); the maximum
-- keeps the last id below i64::MAX.
CREATE SEQUENCE asyncjobs_id_blocks AS BIGINT MINVALUE 0 START WITH 0 MAXVALUE 8795139347890;
";

/// Version 2: whether a PROCESSING job waits for a slot under its instance's concurrency limits,
/// so that counts across instances tell running from queued jobs.
const V2: &str = "
ALTER TABLE asyncjobs_jobs ADD COLUMN queued BOOLEAN NOT NULL DEFAULT false;
";

/// Version 3: the job's [name](crate::JobRequest::name), which is not a status field, so that
/// every instance (and this one after a restart) shows and filters jobs by it. Set once, by the
/// first write that carries it; `NULL` for a job without one, and for jobs written before.
const V3: &str = "
ALTER TABLE asyncjobs_jobs ADD COLUMN name TEXT NULL;
";

/// Creates the tables or brings them up to [`VERSION`].
///
/// # Errors
///
/// [`Migrate`](super::StoreErrorKind::Migrate) when a statement fails or the database holds a
/// newer schema than this build knows: an older instance must not write rows it may misread.
pub(super) async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(StoreError::migrate)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(StoreError::migrate)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS asyncjobs_schema_version (version INTEGER NOT NULL)",
    )
    .await
    .map_err(StoreError::migrate)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM asyncjobs_schema_version",
            &[],
        )
        .await
        .map_err(StoreError::migrate)?
        .get(0);
    if current > VERSION {
        return Err(StoreError::migrate_because(format!(
            "the database has schema version {current}, newer than this build's {VERSION}"
        )));
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(step).await.map_err(StoreError::migrate)?;
        tx.execute(
            "INSERT INTO asyncjobs_schema_version (version) VALUES ($1)",
            &[&(from as i32 + 1)],
        )
        .await
        .map_err(StoreError::migrate)?;
    }
    tx.commit().await.map_err(StoreError::migrate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ() {
        assert_ne!(MIGRATE_LOCK, REAP_LOCK);
        assert_ne!(REAP_LOCK, SWEEP_LOCK);
        assert_ne!(MIGRATE_LOCK, SWEEP_LOCK);
    }
}
