//! The task that runs one job: catches its panics, stops it after the cancel grace, turns its
//! result into the final status, and makes sure it finishes exactly once whatever happens.

use std::any::Any;
use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::job::{Change, Failure, Job};
use crate::registry::Shared;
use crate::text::{error_chain, error_message};
use crate::{exception, MAX_ERROR_DETAILS_BYTES, MAX_MESSAGE_CHARS};

/// Owns a job until it has finished. Made before the job's task is spawned and moved into it, so
/// that if the task is dropped before finishing (never polled because its runtime is shutting
/// down, or dropped mid-way) or a job's `Drop` panics, `Drop` still ends the job FAILED.
pub(crate) struct Supervisor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) job: Arc<Job>,
    pub(crate) token: CancellationToken,
}

impl Supervisor {
    pub(crate) async fn run<Fut, R, E>(self, job_future: Fut)
    where
        Fut: Future<Output = Result<R, E>>,
        R: Serialize,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let grace = self.shared.config.cancel_grace;
        let outcome = {
            let mut job_future = std::pin::pin!(job_future);
            let run = poll_fn(|cx| {
                match catch_unwind(AssertUnwindSafe(|| job_future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            });
            let job = &self.job;
            let token = &self.token;
            let stop = async move {
                token.cancelled().await;
                // The token may have been fired by a parent (the registry's root) rather than by
                // `cancel`: the status shows the request either way.
                job.apply(Change::Canceling);
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                biased;
                result = run => match result {
                    Ok(Ok(response)) => completed(&response),
                    Ok(Err(error)) => failed(error),
                    Err(panic) => Change::Fail(panicked(panic)),
                },
                () = stop => Change::Fail(Failure {
                    message: Arc::from(format!(
                        "job was canceled and did not stop within its {grace:?} grace period, so it was stopped"
                    )),
                    details: None,
                    exception: Arc::from(exception::CANCELED),
                }),
            }
            // The job's future is dropped here; if its Drop panics, `Drop for Supervisor` ends
            // the job instead.
        };
        self.job.apply(outcome);
        self.shared.retire(&self.job);
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.job.is_finished() {
            return;
        }
        let failure = if std::thread::panicking() {
            Failure {
                message: Arc::from("job panicked while being dropped"),
                details: None,
                exception: Arc::from(exception::PANICKED),
            }
        } else {
            Failure {
                message: Arc::from("job was dropped before it finished: its runtime shut down"),
                details: None,
                exception: Arc::from(exception::ABORTED),
            }
        };
        self.job.apply(Change::Fail(failure));
        self.shared.retire(&self.job);
    }
}

fn completed<R: Serialize>(response: &R) -> Change<'static> {
    match catch_unwind(AssertUnwindSafe(|| serde_json::to_value(response))) {
        Ok(Ok(serde_json::Value::Null)) => Change::Complete(None),
        Ok(Ok(value)) => Change::Complete(Some(Arc::new(value))),
        Ok(Err(error)) => Change::Fail(Failure {
            message: capped_message(&format!("job result could not be serialized: {error}")),
            details: None,
            exception: Arc::from(exception::RESPONSE_NOT_SERIALIZABLE),
        }),
        Err(panic) => {
            drop_quietly(panic);
            Change::Fail(Failure {
                message: Arc::from("job result could not be serialized: its Serialize panicked"),
                details: None,
                exception: Arc::from(exception::RESPONSE_NOT_SERIALIZABLE),
            })
        }
    }
}

fn failed<E: Into<Box<dyn StdError + Send + Sync>>>(error: E) -> Change<'static> {
    let exception = Arc::from(std::any::type_name::<E>());
    let formatted = catch_unwind(AssertUnwindSafe(|| {
        let error: Box<dyn StdError + Send + Sync> = error.into();
        let message = error_message(&*error, MAX_MESSAGE_CHARS);
        let details = error_chain(&*error, MAX_ERROR_DETAILS_BYTES);
        (message, details)
    }));
    let failure = match formatted {
        Ok((message, details)) => Failure {
            message: Arc::from(message),
            details: Some(Arc::from(details)),
            exception,
        },
        Err(panic) => {
            drop_quietly(panic);
            Failure {
                message: Arc::from("job failed, and formatting its error panicked"),
                details: None,
                exception,
            }
        }
    };
    Change::Fail(failure)
}

pub(crate) fn panicked(panic: Box<dyn Any + Send>) -> Failure {
    let message = if let Some(s) = panic.downcast_ref::<&'static str>() {
        capped_message(s)
    } else if let Some(s) = panic.downcast_ref::<String>() {
        capped_message(s)
    } else {
        Arc::from("job panicked")
    };
    drop_quietly(panic);
    Failure {
        message,
        details: None,
        exception: Arc::from(exception::PANICKED),
    }
}

fn capped_message(s: &str) -> Arc<str> {
    Arc::from(crate::text::truncate_chars(s, MAX_MESSAGE_CHARS))
}

/// Drops a panic payload, whose own `Drop` could panic again.
fn drop_quietly(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
