//! Starting a job: request de-duplication, an id, the job's record, its place under the
//! concurrency limits, and its task.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::change::Change;
use crate::failure::Failure;
use crate::job::Job;
use crate::{exception, CancelCause, Error, JobFn, JobHandle, JobId, JobRequest};

use super::dedup::Lookup;
use super::supervisor::Supervisor;
use super::Engine;

/// What [`JobRegistry::submit`](crate::JobRegistry::submit) did: started a new job, or answered
/// a [cacheable](crate::JobRequest::cacheable) request with an earlier equal one's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spawned {
    /// A new job was started with this id.
    Started(JobId),
    /// A cacheable request was answered with this earlier job (running, or COMPLETE and
    /// retained); nothing was started and the job function was not called.
    Reused(JobId),
}

impl Spawned {
    /// The job's id, started or reused.
    pub fn id(self) -> JobId {
        match self {
            Spawned::Started(id) | Spawned::Reused(id) => id,
        }
    }

    /// Whether an earlier job was reused.
    pub fn is_reused(self) -> bool {
        matches!(self, Spawned::Reused(_))
    }
}

impl Engine {
    /// Starts a job as `request` says; see [`JobRegistry::spawn`](crate::JobRegistry::spawn).
    pub(crate) fn spawn<Fut>(
        self: &Arc<Self>,
        request: JobRequest,
        job: impl JobFn<Fut>,
    ) -> Result<Spawned, Error> {
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        // A store keeps user ids as signed 64-bit integers: a row it cannot write would hold
        // back every write of this instance, so such a job is refused here.
        if self.store.is_some()
            && request
                .user
                .is_some_and(|user| i64::try_from(user).is_err())
        {
            return Err(Error::InvalidRequest(
                "user id above 9223372036854775807 (i64::MAX), which the store cannot keep".into(),
            ));
        }
        let runtime = match &self.config.runtime {
            Some(runtime) => runtime.clone(),
            None => Handle::try_current().map_err(|_| Error::NoRuntime)?,
        };
        // Trim before adding, so a busy registry never holds more than its limits.
        self.sweep();

        let reservation = if request.cacheable {
            let now = Instant::now();
            match self.dedup.lookup(&request, |finished_at| {
                self.retention.expired(finished_at, now)
            }) {
                Lookup::Reuse(earlier) => return Ok(Spawned::Reused(earlier)),
                Lookup::Fresh(reservation) => Some(reservation),
            }
        } else {
            None
        };

        let id = self.next_id()?;
        let (time_limit, stall_limit) = (request.time_limit, request.stall_limit);
        let priority = request.priority;
        let ticket = match &self.scheduler {
            Some(scheduler) => scheduler.try_acquire(request.user, priority).err(),
            None => None,
        };
        let token = self.root.child_token();
        let queued_message = ticket.as_ref().map(|ticket| ticket.message.clone());
        let entry = Arc::new(Job::new(id, request, token.clone(), queued_message));
        entry.created(&self.seam, || {
            self.table.insert(entry.clone());
            if let Some(reservation) = reservation {
                reservation.insert(entry.clone());
            }
        });
        if let (Some(ticket), Some(scheduler)) = (ticket, &self.scheduler) {
            scheduler.enqueue(&self.seam, &entry, priority, ticket);
        }
        // A shutdown that began after the check above may have listed the running jobs before
        // this one was added: then it ends here, never runs, and its id still tells the caller so.
        if self.shut_down.load(Ordering::SeqCst) {
            self.cancel_for(&entry, CancelCause::Shutdown);
            let failure = Failure::canceled(
                "job registry was shut down before the job could start",
                exception::CANCELED,
                CancelCause::Shutdown,
            );
            self.finish(&entry, Change::Fail(failure));
            return Ok(Spawned::Started(id));
        }

        let handle = JobHandle::new(entry.clone(), self.seam.clone(), token.clone());
        #[cfg(feature = "tracing")]
        let span = crate::trace::span(id, entry.user(), entry.name.as_deref());
        #[cfg(feature = "tracing")]
        let called = span.in_scope(|| catch_unwind(AssertUnwindSafe(move || job.call(handle))));
        #[cfg(not(feature = "tracing"))]
        let called = catch_unwind(AssertUnwindSafe(move || job.call(handle)));
        match called {
            // Ended while the closure ran (a shutdown): no task, so none is counted as running.
            Ok(future) if entry.is_finished() => drop(future),
            Ok(future) => {
                let supervisor = Supervisor {
                    engine: self.clone(),
                    job: entry,
                    token,
                    time_limit,
                    stall_limit,
                };
                // If the runtime is shutting down the task is dropped unpolled, and the
                // supervisor's `Drop` ends the job.
                let task = self.tracker.track_future(supervisor.run(future));
                #[cfg(feature = "tracing")]
                let task = tracing::Instrument::instrument(task, span);
                drop(runtime.spawn(task));
            }
            Err(panic) => self.finish(&entry, Change::Fail(Failure::of_panic(panic))),
        }
        Ok(Spawned::Started(id))
    }
}
