//! Counts of jobs per state.

/// How many jobs are in each state, from [`JobRegistry::counts`] (of every job, or of one user's
/// through a `UserView`): running jobs and retained finished ones.
///
/// PROCESSING jobs are counted twice over: in `processing`, and split into `running` and `queued`
/// (waiting for a slot under the [concurrency limits](crate::JobRegistryBuilder::max_running)), so
/// `processing == running + queued` always.
///
/// Reading the registry's counts is a few atomic loads, cheap enough for a dashboard to poll.
/// Each count is exact, but they are read one after another: while jobs start or finish during
/// the read, a job may be counted in neither or both of PROCESSING and its final state, or as
/// running an instant before or after it leaves the queue. When no job starts or finishes
/// meanwhile, they add up to [`LocalJobs::len`].
///
/// From a shared store ([`JobRegistry::counts`]) the counts are of every instance's
/// jobs as last written (each instance writes a job's changes within a flush interval), queued
/// ones under each instance's own limits included.
///
/// It serializes as a JSON object of its fields, e.g. `{"processing":3,"running":2,"queued":1,
/// "complete":120,"failed":2}`, for a dashboard's endpoint.
///
/// [`JobRegistry::counts`]: crate::JobRegistry::counts
/// [`LocalJobs::len`]: crate::LocalJobs::len
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct JobCounts {
    /// Jobs running or queued under the concurrency limit: `running + queued`.
    pub processing: usize,
    /// Retained jobs that finished COMPLETE.
    pub complete: usize,
    /// Retained jobs that finished FAILED.
    pub failed: usize,
    /// PROCESSING jobs that run (hold a slot, if there is a limit).
    pub running: usize,
    /// PROCESSING jobs that wait for a slot under the concurrency limits.
    pub queued: usize,
}

impl JobCounts {
    /// Counts with every PROCESSING job running.
    pub(crate) fn new(processing: usize, complete: usize, failed: usize) -> Self {
        JobCounts {
            processing,
            complete,
            failed,
            running: processing,
            queued: 0,
        }
    }

    /// These counts with `queued` of the PROCESSING jobs waiting rather than running (at most all
    /// of them: the two numbers are read one after the other).
    pub(crate) fn with_queued(self, queued: usize) -> Self {
        let queued = queued.min(self.processing);
        JobCounts {
            running: self.processing - queued,
            queued,
            ..self
        }
    }

    /// All jobs counted.
    pub fn total(&self) -> usize {
        self.processing + self.complete + self.failed
    }
}

impl std::fmt::Display for JobCounts {
    /// E.g. `3 processing, 120 complete, 2 failed`, and `3 processing (1 running, 2 queued), …`
    /// when some are queued.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} processing", self.processing)?;
        if self.queued > 0 {
            write!(f, " ({} running, {} queued)", self.running, self.queued)?;
        }
        write!(f, ", {} complete, {} failed", self.complete, self.failed)
    }
}
