//! Cancelling a job that another instance may run: the request is a flag on the job's row and a
//! notification to its owner; the owner cancels the job and writes its new status itself, so
//! every status change still comes from the one instance that runs the job.

use super::writes::to_bigint;
use super::{Db, StoreError};

/// What [`Db::request_cancel`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelRequest {
    /// No such job.
    UnknownJob,
    /// The job was started by another user (or by no user). Nothing changed.
    NotYourJob,
    /// The job has finished. Nothing changed.
    AlreadyFinished,
    /// Cancellation was requested before (the flag is set, or the owner already shows the job
    /// canceling). Nothing changed.
    AlreadyRequested,
    /// The flag is now set and instance `owner` was notified.
    Requested {
        /// The instance running the job, which is to cancel it.
        owner: u64,
    },
}

/// Locks the job's row, sets `cancel_requested` if the job is PROCESSING, not yet canceling
/// and the caller's (`$2` NULL is the administrator), and notifies its owner; returns what it
/// found before the change. The `version` and `status` stay as they are.
const REQUEST_CANCEL: &str = "
WITH job AS (
    SELECT id, owner, user_id, state,
           cancel_requested OR coalesce((status->>'jobCanceling')::boolean, false) AS canceling
    FROM asyncjobs_jobs WHERE id = $1
    FOR UPDATE
), requested AS (
    UPDATE asyncjobs_jobs AS j SET cancel_requested = true
    FROM job
    WHERE j.id = job.id AND job.state = 'PROCESSING' AND NOT job.canceling
      AND ($2::bigint IS NULL OR job.user_id = $2)
    RETURNING j.owner, j.id
), notified AS (
    SELECT pg_notify('asyncjobs_cancel', owner || ':' || id) FROM requested
)
SELECT owner, user_id, state, canceling, (SELECT count(*) FROM notified) FROM job";

impl Db {
    /// Asks the instance running job `id` to cancel it, on behalf of `user` (`None`: an
    /// administrator, who may cancel any job).
    ///
    /// Sets the job's `cancel_requested` and notifies `asyncjobs_cancel` with `owner:id`, in
    /// one transaction; does not touch the job's status or version: the owner cancels the job
    /// and writes the new status itself. Checks in this order: the job exists, is the user's,
    /// is PROCESSING, is not already being canceled. Concurrent requests for one job give one
    /// [`Requested`](CancelRequest::Requested); the others see
    /// [`AlreadyRequested`](CancelRequest::AlreadyRequested).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached or the statement fails; then
    /// nothing changed (or, if the connection broke during the commit, possibly everything).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future sets the flag and notifies, or does neither.
    pub async fn request_cancel(
        &self,
        id: u64,
        user: Option<u64>,
    ) -> Result<CancelRequest, StoreError> {
        const WHAT: &str = "request a cancel";
        let Ok(id) = i64::try_from(id) else {
            return Ok(CancelRequest::UnknownJob);
        };
        let user = user.map(|u| to_bigint(u, "user id", WHAT)).transpose()?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(REQUEST_CANCEL)
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let Some(row) = client
            .query_opt(&statement, &[&id, &user])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?
        else {
            return Ok(CancelRequest::UnknownJob);
        };
        let owner: i64 = row.get(0);
        let job_user: Option<i64> = row.get(1);
        let state: &str = row.get(2);
        let canceling: bool = row.get(3);
        Ok(if user.is_some() && job_user != user {
            CancelRequest::NotYourJob
        } else if state != "PROCESSING" {
            CancelRequest::AlreadyFinished
        } else if canceling {
            CancelRequest::AlreadyRequested
        } else {
            CancelRequest::Requested {
                owner: owner as u64,
            }
        })
    }

    /// The ids of instance `instance`'s PROCESSING jobs whose cancel was requested and that
    /// it has not yet shown canceling (`jobCanceling` false in the stored status), in id
    /// order.
    ///
    /// The owner's periodic check beside the `asyncjobs_cancel` notifications, which are lost
    /// while its listener reconnects. Cancelling a job again is harmless, so a job canceled
    /// locally but not yet written may be returned once more.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn cancels_for(&self, instance: u64) -> Result<Vec<u64>, StoreError> {
        const WHAT: &str = "read requested cancels";
        let instance = to_bigint(instance, "instance id", WHAT)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id FROM asyncjobs_jobs
                 WHERE owner = $1 AND state = 'PROCESSING' AND cancel_requested
                   AND NOT coalesce((status->>'jobCanceling')::boolean, false)
                 ORDER BY id",
            )
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let rows = client
            .query(&statement, &[&instance])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }
}
