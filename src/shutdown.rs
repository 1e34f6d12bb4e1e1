//! What a shutdown did.

/// What [`JobRegistry::shutdown`](crate::JobRegistry::shutdown) did to the jobs that were running
/// (or queued) when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct ShutdownSummary {
    /// Jobs that had not finished when the shutdown began.
    pub running: usize,
    /// Of those, jobs that ended within the grace period, in whatever state: by themselves, or
    /// stopped by their own [cancel grace](crate::JobRegistryBuilder::cancel_grace) if it is
    /// shorter.
    pub finished_within_grace: usize,
    /// Of those, jobs that were stopped after the grace period and ended FAILED.
    pub stopped: usize,
}

impl std::fmt::Display for ShutdownSummary {
    /// E.g. `12 running: 10 finished within the grace, 2 stopped`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} running: {} finished within the grace, {} stopped",
            self.running, self.finished_within_grace, self.stopped
        )
    }
}
