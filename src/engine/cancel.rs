//! Canceling a job: the flag, the token, and a queued job's end.

use crate::change::Change;
use crate::failure::Failure;
use crate::job::{Applied, Job};
use crate::{exception, CancelCause, Error, JobId};

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
    /// The job runs on another instance, which has not applied the cancel yet: the request is in
    /// the shared store, and that instance applies it when it next reaches the store (the job
    /// then shows `jobCanceling`).
    Recorded,
}

impl Engine {
    /// Asks the job `id` to cancel, for a caller in `scope`.
    pub(crate) fn cancel_id(&self, id: &JobId, scope: Scope) -> Result<CancelOutcome, Error> {
        Ok(self.cancel(&*self.find(id, scope)?))
    }

    /// Asks a job to cancel on request; see [`Engine::cancel_for`].
    pub(crate) fn cancel(&self, job: &Job) -> CancelOutcome {
        self.cancel_for(job, CancelCause::Requested)
    }

    /// What a job whose token fired without a cancel setting its flag was stopped by: the
    /// shutdown, which fires every token at once, or else a request.
    pub(crate) fn token_cause(&self) -> CancelCause {
        if self.root.is_cancelled() {
            CancelCause::Shutdown
        } else {
            CancelCause::Requested
        }
    }

    /// Asks a job to cancel for `cause`: sets its flag and fires its token (its supervisor then
    /// gives it the cancel grace); a queued job ends at once, without ever running.
    pub(crate) fn cancel_for(&self, job: &Job, cause: CancelCause) -> CancelOutcome {
        match job.apply(&self.seam, Change::Canceling(cause)) {
            Applied::Changed => {
                // Once canceling, a queued job is never handed a slot, so it cannot start now.
                if job.is_queued() {
                    let failure = Failure::canceled(
                        "job was canceled while queued, before it started",
                        exception::CANCELED,
                        cause,
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
