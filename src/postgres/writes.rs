//! Writing statuses: many jobs' latest statuses in one statement, guarded by version.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::notify::NOTIFY_WRITTEN;
use super::{Db, StoreError};
use crate::text::{value_without_nul, without_nul};
use crate::{AsynchJobState, AsynchronousJobStatus};

/// One job's status as a row of `asyncjobs_jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    /// The job's id; below `i64::MAX` (ids from [`Db::reserve_id_block`] always are).
    pub id: u64,
    /// The status's change counter (its etag): a write with a version not above the stored
    /// one is ignored.
    pub version: u64,
    /// The job's state.
    pub state: AsynchJobState,
    /// Who started the job.
    pub user: Option<u64>,
    /// The instance running the job, from [`Db::register_instance`]. It must be registered:
    /// [`Db::reap_dead_instances`] fails PROCESSING jobs whose owner has no registration.
    pub owner: u64,
    /// The request-cache key of a cacheable request; [`Db::find_cached`] looks jobs up by it.
    pub cache_key: Option<i64>,
    /// The job is PROCESSING but waits for a slot under its instance's concurrency limits.
    pub queued: bool,
    /// When the status last changed (`changedOn`).
    pub changed_at: DateTime<Utc>,
    /// When the job finished, if it has; retention counts from it.
    pub finished_at: Option<DateTime<Utc>>,
    /// The whole status as JSON, as `serde_json::to_value(&AsynchronousJobStatus)` gives it.
    pub status: Value,
    /// The job's [name](crate::JobRequest::name), if it has one. Stored by the first write that
    /// carries one, and never changed after.
    pub name: Option<String>,
}

impl StatusRow {
    /// The row for `status`, run by instance `owner`. The version is the etag's change
    /// counter (every etag this crate makes is one; any other etag counts as version 0).
    pub fn new(status: &AsynchronousJobStatus, owner: u64, cache_key: Option<i64>) -> StatusRow {
        StatusRow {
            id: status.job_id.as_u64(),
            version: status.etag.version().unwrap_or(0),
            state: status.job_state,
            user: status.started_by_user_id,
            owner,
            cache_key,
            queued: false,
            changed_at: status.changed_on,
            finished_at: status.is_terminal().then_some(status.changed_on),
            // Bodies are JSON values already and every other field is a string, number or
            // bool: serializing a status to a value cannot fail.
            // PostgreSQL cannot store U+0000: the registry keeps it out of every status, and a
            // status made elsewhere is made safe here too, since one row that cannot be written
            // would fail the whole batch of its instance, for good.
            status: value_without_nul(
                serde_json::to_value(status).expect("a status serializes to JSON"),
            ),
            name: None,
        }
    }

    /// This row, of a job with this name (or none).
    pub fn named(mut self, name: Option<&str>) -> StatusRow {
        self.name = name.map(|name| without_nul(name).into_owned());
        self
    }

    /// This row, of a job that waits in its instance's queue (`true`) or runs (`false`, as
    /// [`new`](StatusRow::new) makes it). Only PROCESSING jobs wait.
    pub fn queued(mut self, queued: bool) -> StatusRow {
        self.queued = queued && self.state == AsynchJobState::Processing;
        self
    }
}

/// The whole statement: [`WRITE`], [`NOTIFY_WRITTEN`], [`WRITTEN_COUNT`].
static WRITE_BATCH: LazyLock<String> =
    LazyLock::new(|| format!("{WRITE}{NOTIFY_WRITTEN}{WRITTEN_COUNT}"));

/// Inserts new rows and updates rows whose stored version is older and that are still
/// PROCESSING; then notifies `asyncjobs_changed` with the `id:version` of each row written.
/// The columns `owner`, `user_id`, `cache_key` and `cancel_requested` of an existing row are
/// never changed by a write, and `name` only from `NULL`.
const WRITE: &str = "
WITH written AS (
    INSERT INTO asyncjobs_jobs AS j
        (id, version, state, user_id, owner, cache_key, changed_at, finished_at, status, queued,
         name)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::timestamptz[], $8::timestamptz[], $9::jsonb[],
                         $10::boolean[], $11::text[])
    ON CONFLICT (id) DO UPDATE SET
        version = EXCLUDED.version,
        state = EXCLUDED.state,
        queued = EXCLUDED.queued,
        changed_at = EXCLUDED.changed_at,
        finished_at = EXCLUDED.finished_at,
        status = EXCLUDED.status,
        name = coalesce(j.name, EXCLUDED.name)
    WHERE j.version < EXCLUDED.version AND j.state = 'PROCESSING'
    RETURNING j.id, j.version, j.user_id
), ";

impl Db {
    /// Writes the statuses of many jobs in one statement (one round trip, one transaction),
    /// and in the same transaction notifies `asyncjobs_changed` with `id:version` of each row
    /// written (in payloads under PostgreSQL's 8000-byte limit). Returns how many rows were
    /// inserted or updated.
    ///
    /// A row is written only if it is new, or its version is above the stored one and the
    /// stored row is still PROCESSING: a late write never overwrites a newer status, and
    /// nothing overwrites a finished one (e.g. one that [`reap_dead_instances`] failed). So
    /// the same batch can be written again safely. When `rows` holds one job several times,
    /// only its highest version is written.
    ///
    /// [`reap_dead_instances`]: Db::reap_dead_instances
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached or the statement fails; then no
    /// row was written, or (if the connection broke during the commit) possibly all of them.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future writes all rows or none.
    pub async fn write_batch(&self, rows: &[StatusRow]) -> Result<u64, StoreError> {
        const WHAT: &str = "write job statuses";
        if rows.is_empty() {
            return Ok(0);
        }
        // Highest version per id (ON CONFLICT may touch a row only once per statement), in id
        // order, which also makes concurrent batches lock shared rows in the same order.
        let mut latest: BTreeMap<u64, &StatusRow> = BTreeMap::new();
        for row in rows {
            let kept = latest.entry(row.id).or_insert(row);
            if row.version > kept.version {
                *kept = row;
            }
        }
        let n = latest.len();
        let mut ids = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut users = Vec::with_capacity(n);
        let mut owners = Vec::with_capacity(n);
        let mut cache_keys = Vec::with_capacity(n);
        let mut changed = Vec::with_capacity(n);
        let mut finished = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut queued = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        for row in latest.values() {
            ids.push(to_bigint(row.id, "job id", WHAT)?);
            versions.push(to_bigint(row.version, "version", WHAT)?);
            states.push(row.state.as_str());
            users.push(
                row.user
                    .map(|u| to_bigint(u, "user id", WHAT))
                    .transpose()?,
            );
            owners.push(to_bigint(row.owner, "instance id", WHAT)?);
            cache_keys.push(row.cache_key);
            changed.push(row.changed_at);
            finished.push(row.finished_at);
            statuses.push(&row.status);
            queued.push(row.queued);
            names.push(row.name.as_deref());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&WRITE_BATCH)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let row = client
            .query_one(
                &statement,
                &[
                    &ids,
                    &versions,
                    &states,
                    &users,
                    &owners,
                    &cache_keys,
                    &changed,
                    &finished,
                    &statuses,
                    &queued,
                    &names,
                ],
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

/// The final select of a statement that writes through the CTEs `written` and `notified`:
/// referencing `notified` is what makes PostgreSQL run it.
const WRITTEN_COUNT: &str =
    " SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM notified)";

/// `value` as a `BIGINT`, or an error naming `name` if it does not fit.
pub(super) fn to_bigint(value: u64, name: &str, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::query_because(what, format!("{name} {value} exceeds i64::MAX")))
}
