//! Canceling a job: the flag, the token, and a queued job's end.

use crate::change::Change;
use crate::failure::Failure;
use crate::job::{Applied, Job};
use crate::{exception, Error, JobId};

use super::{Engine, Scope};

/// The result of [`JobRegistry::cancel`](crate::JobRegistry::cancel): whether the call changed
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelOutcome {
    /// The job was running: `jobCanceling` is now set (a new etag) and its cancellation token
    /// has fired.
    Requested,
    /// Cancellation had already been requested; nothing changed.
    AlreadyRequested,
    /// The job had already finished; nothing changed.
    AlreadyFinished,
}

impl Engine {
    /// Asks the job `id` to cancel, for a caller in `scope`.
    pub(crate) fn cancel_id(&self, id: &JobId, scope: Scope) -> Result<CancelOutcome, Error> {
        Ok(self.cancel(&*self.find(id, scope)?))
    }

    /// Asks a job to cancel: sets its flag and fires its token (its supervisor then gives it the
    /// cancel grace); a queued job ends at once, without ever running.
    pub(crate) fn cancel(&self, job: &Job) -> CancelOutcome {
        match job.apply(&self.seam, Change::Canceling) {
            Applied::Changed => {
                // Once canceling, a queued job is never handed a slot, so it cannot start now.
                if job.is_queued() {
                    let failure = Failure::registry(
                        "job was canceled while queued, before it started",
                        exception::CANCELED,
                    );
                    self.finish(job, Change::Fail(failure));
                }
                CancelOutcome::Requested
            }
            Applied::Unchanged => CancelOutcome::AlreadyRequested,
            Applied::AlreadyFinished => CancelOutcome::AlreadyFinished,
        }
    }
}
