//! Shutting a registry down: refuse new jobs, cancel every job, wait out a grace, stop the rest.

use std::future::Future;
use std::panic::catch_unwind;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::change::Change;
use crate::failure::Failure;
use crate::{exception, CancelCause};

use super::Engine;

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
    /// Jobs whose code was still running when the shutdown returned, though their status is
    /// final (FAILED): code that never yields cannot be stopped by dropping its future, so it runs
    /// on until it next yields. Nonzero means work was still going on; zero is the norm.
    pub still_running: usize,
}

impl std::fmt::Display for ShutdownSummary {
    /// E.g. `12 running: 10 finished within the grace, 2 stopped`, and
    /// `(1 still running code)` when `still_running` is not zero.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} running: {} finished within the grace, {} stopped",
            self.running, self.finished_within_grace, self.stopped
        )?;
        if self.still_running > 0 {
            write!(f, " ({} still running code)", self.still_running)?;
        }
        Ok(())
    }
}

/// How long a shutdown waits for stopped jobs' tasks to notice, before it ends their statuses
/// itself (a job that never yields cannot be stopped by dropping its future).
const STOP_WAIT: Duration = Duration::from_secs(1);

impl Engine {
    /// See [`JobRegistry::shutdown`](crate::JobRegistry::shutdown).
    pub(crate) async fn shutdown(&self, grace: Duration) -> ShutdownSummary {
        self.shut_down.store(true, Ordering::SeqCst);
        let running = self.table.jobs(|job| !job.is_finished());
        // Admission closes before anything else: the scheduler hands no more slots to queued jobs,
        // and every job's token fires at once (also those of jobs spawned while this began: theirs
        // are born canceled), so a slot that a canceled job frees can no longer start a queued
        // job, whose supervisor would see its token first anyway.
        if let Some(scheduler) = &self.scheduler {
            scheduler.close();
        }
        self.root.cancel();
        for job in &running {
            self.cancel_for(job, CancelCause::Shutdown);
        }
        self.tracker.close();
        let all_ended = within(grace, self.tracker.wait()).await;
        let finished_within_grace = running.iter().filter(|job| job.is_finished()).count();
        if !all_ended {
            self.kill.cancel();
            within(STOP_WAIT, self.tracker.wait()).await;
        }
        for job in self.table.jobs(|job| !job.is_finished()) {
            // Canceled first, as every job a shutdown ends: its final status says so.
            self.cancel_for(&job, CancelCause::Shutdown);
            let failure = Failure::canceled(
                "job was stopped by the registry's shutdown",
                exception::CANCELED,
                CancelCause::Shutdown,
            );
            self.finish(&job, Change::Fail(failure));
        }
        self.seam.wake_feeds();
        self.close_store().await;
        ShutdownSummary {
            running: running.len(),
            finished_within_grace,
            stopped: running.len() - finished_within_grace,
            // Every task is tracked, and ends as soon as its job's future is dropped or returns.
            still_running: self.tracker.len(),
        }
    }
}

/// Whether `future` ended within `limit`. On a runtime without a timer (where making one panics),
/// the limit counts as reached at once.
pub(crate) async fn within(limit: Duration, future: impl Future<Output = ()>) -> bool {
    match catch_unwind(|| tokio::time::sleep(limit)) {
        Ok(sleep) => tokio::select! {
            () = future => true,
            () = sleep => false,
        },
        Err(_no_timer) => false,
    }
}
