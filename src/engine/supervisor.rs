//! The task that runs one job: waits for its slot under the concurrency limit, catches its
//! panics, enforces its time limits, stops it after the cancel grace, turns its result into the
//! final status, and makes sure it finishes exactly once whatever happens.

use std::any::Any;
use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::change::Change;
use crate::failure::{drop_quietly, Failure, Timeout};
use crate::job::{Applied, Job};
use crate::{exception, CancelCause};

use super::Engine;

/// Owns a job until it has finished. Made before the job's task is spawned and moved into it, so
/// that if the task is dropped before finishing (never polled because its runtime is shutting
/// down, or dropped mid-way) or a job's `Drop` panics, `Drop` still ends the job FAILED.
pub(crate) struct Supervisor {
    pub(crate) engine: Arc<Engine>,
    pub(crate) job: Arc<Job>,
    pub(crate) token: CancellationToken,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) stall_limit: Option<Duration>,
}

/// How a job that was asked to stop was ended by the registry.
enum Stopped {
    AfterGrace(Duration, CancelCause),
    ByShutdown,
    NoTimer,
}

/// The job's own future, polled with its panics caught.
type Ran<R, E> = Result<Result<R, E>, Box<dyn Any + Send>>;

/// A cold part of a job's life (waiting in the queue, the time limits, the grace after a cancel),
/// boxed so that its state is allocated only for the jobs that get there: the future of every
/// job's task stays small, and tokio copies it a few times per job.
type Cold<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Supervisor {
    pub(crate) async fn run<Fut, R, E>(self, job_future: Fut)
    where
        Fut: Future<Output = Result<R, E>> + Send,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send,
    {
        // A job can be ended before its task starts (a shutdown that ran while the spawn's
        // closure was still building the future): a job whose status is final never starts.
        if self.job.is_finished() {
            return;
        }
        if self.job.is_queued() && !Box::pin(self.admitted()).await {
            // Its token fired (a cancel, or a shutdown firing every token): the status says so
            // before anything else can end it (dropping the future runs the job's `Drop`).
            self.job.apply(
                &self.engine.seam,
                Change::Canceling(self.engine.token_cause()),
            );
            // Dropped unpolled: a queued job never runs.
            drop(job_future);
            let cause = self.job.cancel_cause().unwrap_or(CancelCause::Requested);
            let failure = Failure::canceled(
                "job was canceled while queued, before it started",
                exception::CANCELED,
                cause,
            );
            self.engine.finish(&self.job, Change::Fail(failure));
            return;
        }

        // The time limit this job broke, if breaking it is what asked the job to stop.
        let mut broke = None;
        let outcome = {
            let mut job_future = std::pin::pin!(job_future);
            let mut run = poll_fn(|cx| {
                match catch_unwind(AssertUnwindSafe(|| job_future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            });
            let mut limits = self.time_limits();
            let stop = tokio::select! {
                biased;
                result = &mut run => Err(result),
                () = self.token.cancelled() => Ok(None),
                timeout = no_timer_guard(limits.as_mut(), None) => Ok(timeout),
            };
            match stop {
                Err(result) => outcome_of(result),
                Ok(timed_out) => {
                    // The token may have been fired by a parent (the registry's root) rather than
                    // by `cancel`: the status shows the request either way.
                    let asked = self.job.apply(
                        &self.engine.seam,
                        timed_out.map_or_else(
                            || Change::Canceling(self.engine.token_cause()),
                            Change::TimedOut,
                        ),
                    );
                    if asked == Applied::Changed {
                        broke = timed_out;
                    }
                    drop(limits);
                    let mut grace: Cold<'_, Result<Ran<R, E>, Stopped>> =
                        Box::pin(self.grace(&mut run));
                    match no_timer_guard(Some(&mut grace), Err(Stopped::NoTimer)).await {
                        Ok(result) => outcome_of(result),
                        Err(stopped) => Change::Fail(stopped.failure()),
                    }
                }
            }
            // The job's future is dropped here; if its Drop panics, `Drop for Supervisor` ends
            // the job instead.
        };
        let outcome = match (broke, outcome) {
            (Some(timeout), Change::Fail(failure)) => Change::Fail(failure.after_timeout(timeout)),
            (_, outcome) => outcome,
        };
        // Its token may have fired without a cancel setting the flag first (a shutdown fires
        // every token before it flags each job): the final status says the job was asked to stop.
        if self.token.is_cancelled() {
            self.job.apply(
                &self.engine.seam,
                Change::Canceling(self.engine.token_cause()),
            );
        }
        self.engine.finish(&self.job, outcome);
    }

    /// Waits for a slot under the concurrency limit: `false` if the job was canceled first.
    async fn admitted(&self) -> bool {
        // The token first: a job canceled before its first poll never runs, even if a slot
        // reached it meanwhile (the slot is released when it ends).
        tokio::select! {
            biased;
            () = self.token.cancelled() => false,
            () = self.job.dequeued() => !self.job.is_finished(),
        }
    }

    /// The job's time limits, if it has any.
    fn time_limits(&self) -> Option<Cold<'_, Option<Timeout>>> {
        if self.time_limit.is_none() && self.stall_limit.is_none() {
            return None;
        }
        let limits = (self.time_limit, self.stall_limit);
        Some(Box::pin(async move {
            Some(time_limits(&self.job, limits).await)
        }))
    }

    /// After a cancel: the job may still end by itself within the grace; otherwise it is stopped.
    async fn grace<F, R, E>(&self, run: &mut F) -> Result<Ran<R, E>, Stopped>
    where
        F: Future<Output = Ran<R, E>> + Unpin,
    {
        let grace = self.engine.config.cancel_grace;
        tokio::select! {
            biased;
            result = run => Ok(result),
            () = tokio::time::sleep(grace) => Err(Stopped::AfterGrace(
                grace,
                self.job.cancel_cause().unwrap_or(CancelCause::Requested),
            )),
            () = self.engine.kill.cancelled() => Err(Stopped::ByShutdown),
        }
    }
}

/// Polls a cold future, or never resolves without one. Timers panic on a runtime built without
/// the time driver: then the job cannot be given a grace or a time limit, and `on_no_timer` says
/// what happens instead.
async fn no_timer_guard<T>(cold: Option<&mut Cold<'_, T>>, on_no_timer: T) -> T {
    let Some(cold) = cold else {
        return std::future::pending().await;
    };
    let mut on_no_timer = Some(on_no_timer);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| cold.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                drop_quietly(panic);
                on_no_timer.take().map_or(Poll::Pending, Poll::Ready)
            }
        },
    )
    .await
}

fn outcome_of<R: Serialize + 'static, E: Into<Box<dyn StdError + Send + Sync>>>(
    result: Ran<R, E>,
) -> Change<'static> {
    match result {
        Ok(Ok(response)) => completed(response),
        Ok(Err(error)) => Change::Fail(Failure::of_error(error)),
        Err(panic) => Change::Fail(Failure::of_panic(panic)),
    }
}

impl Stopped {
    fn failure(self) -> Failure {
        match self {
            Stopped::AfterGrace(grace, cause) => Failure::canceled(
                format!("job was canceled and did not stop within its {grace:?} grace period, so it was stopped"),
                exception::CANCELED,
                cause,
            ),
            Stopped::NoTimer => Failure::registry(
                "job was stopped: its runtime has no timer, which the cancel grace and time limits need (build the runtime with enable_time or enable_all)",
                exception::ABORTED,
            ),
            Stopped::ByShutdown => Failure::canceled(
                "job was stopped by the registry's shutdown",
                exception::CANCELED,
                CancelCause::Shutdown,
            ),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.job.is_finished() {
            return;
        }
        // A job asked to stop says so in its final status, however it ends.
        if self.token.is_cancelled() {
            self.job.apply(
                &self.engine.seam,
                Change::Canceling(self.engine.token_cause()),
            );
        }
        let failure = if std::thread::panicking() {
            Failure::registry(
                "job's task panicked while ending the job (e.g. in the job's Drop)",
                exception::PANICKED,
            )
        } else {
            Failure::registry(
                "job was dropped before it finished: its runtime shut down",
                exception::ABORTED,
            )
        };
        self.engine.finish(&self.job, Change::Fail(failure));
    }
}

/// Resolves when the job breaks one of its time limits; never if it has none.
async fn time_limits(job: &Job, (total, stall): (Option<Duration>, Option<Duration>)) -> Timeout {
    // A limit too far out to reach is no limit (adding it would overflow).
    let total_deadline = total.and_then(|t| Instant::now().checked_add(t));
    loop {
        let stall_deadline = stall.and_then(|s| job.changed_at().checked_add(s));
        let Some(deadline) = total_deadline.into_iter().chain(stall_deadline).min() else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(deadline).await;
        let now = Instant::now();
        if let (Some(limit), Some(deadline)) = (total, total_deadline) {
            if now >= deadline {
                return Timeout::Total(limit);
            }
        }
        // The stall deadline moves with every change; only a deadline still standing counts.
        if let Some(limit) = stall {
            if job
                .changed_at()
                .checked_add(limit)
                .is_some_and(|at| now >= at)
            {
                return Timeout::Stall(limit);
            }
        }
    }
}

fn completed<R: Serialize + 'static>(response: R) -> Change<'static> {
    // A job whose result is already JSON keeps it as it is: no deep copy through `to_value`.
    let mut response = Some(response);
    if let Some(value) = (&mut response as &mut dyn Any).downcast_mut::<Option<serde_json::Value>>()
    {
        return match value.take() {
            None | Some(serde_json::Value::Null) => Change::Complete(None),
            Some(value) => Change::Complete(Some(Arc::new(value))),
        };
    }
    match catch_unwind(AssertUnwindSafe(|| serde_json::to_value(&response))) {
        Ok(Ok(serde_json::Value::Null)) => Change::Complete(None),
        Ok(Ok(value)) => Change::Complete(Some(Arc::new(value))),
        Ok(Err(error)) => Change::Fail(Failure::not_serializable(&error)),
        Err(panic) => {
            drop_quietly(panic);
            Change::Fail(Failure::registry(
                "job result could not be serialized: its Serialize panicked",
                exception::RESPONSE_NOT_SERIALIZABLE,
            ))
        }
    }
}
