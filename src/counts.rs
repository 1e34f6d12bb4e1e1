//! Counts of jobs per state.

/// How many jobs the registry holds in each state, from [`JobRegistry::counts`]: running jobs and
/// retained finished ones.
///
/// Reading the counts is three atomic loads, cheap enough for a dashboard to poll. Each count is
/// exact, but the three are read one after another: while jobs finish during the read, a job may
/// be counted in neither or both of PROCESSING and its final state. When no job starts or
/// finishes meanwhile, they add up to [`JobRegistry::len`].
///
/// [`JobRegistry::counts`]: crate::JobRegistry::counts
/// [`JobRegistry::len`]: crate::JobRegistry::len
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct JobCounts {
    /// Jobs running or queued under the concurrency limit.
    pub processing: usize,
    /// Retained jobs that finished COMPLETE.
    pub complete: usize,
    /// Retained jobs that finished FAILED.
    pub failed: usize,
}

impl JobCounts {
    /// All jobs counted.
    pub fn total(&self) -> usize {
        self.processing + self.complete + self.failed
    }
}

impl std::fmt::Display for JobCounts {
    /// E.g. `3 processing, 120 complete, 2 failed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} processing, {} complete, {} failed",
            self.processing, self.complete, self.failed
        )
    }
}
