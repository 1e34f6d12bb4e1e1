//! What the registry tells the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`),
//! so that any exporter (Prometheus, OpenTelemetry, statsd) sees it; the table of metrics is in
//! the crate docs ("Metrics"). Recorded by the seam for the few changes of a job's life (never
//! for progress, which costs nothing here). Without the feature, everything here compiles to
//! nothing.

use crate::event::Event;

#[cfg(feature = "metrics")]
pub(crate) fn record(event: &Event, name: Option<&str>) {
    use ::metrics::{counter, gauge, histogram, Label};

    use crate::event::Step;
    use crate::{AsynchJobState, CancelCause};

    // A named job's metrics carry its name (`JobRequest::name`: a kind of job, shared by many,
    // so the label's values stay few); an unnamed job's carry no `name` label.
    let labels = |more: &[(&'static str, &str)]| -> Vec<Label> {
        name.map(|name| Label::new("name", name.to_owned()))
            .into_iter()
            .chain(
                more.iter()
                    .map(|&(key, value)| Label::new(key, value.to_owned())),
            )
            .collect()
    };
    let queue = |queued: bool| {
        if queued {
            "asyncjobs_jobs_queued"
        } else {
            "asyncjobs_jobs_running"
        }
    };
    match event.step {
        Step::Created => {
            counter!("asyncjobs_jobs_started_total", labels(&[])).increment(1);
            gauge!(queue(event.queued), labels(&[])).increment(1.0);
        }
        Step::Dequeued => {
            gauge!("asyncjobs_jobs_queued", labels(&[])).decrement(1.0);
            gauge!("asyncjobs_jobs_running", labels(&[])).increment(1.0);
            histogram!("asyncjobs_job_queue_wait_seconds", labels(&[]))
                .record(event.elapsed.as_secs_f64());
        }
        Step::Canceling => {
            let cause = match event.cause {
                Some(CancelCause::Shutdown) => "shutdown",
                Some(CancelCause::TimeLimit) => "time_limit",
                Some(CancelCause::StallLimit) => "stall_limit",
                Some(CancelCause::LeaseLost) => "lease_lost",
                _ => "requested",
            };
            counter!("asyncjobs_job_cancels_total", labels(&[("cause", cause)])).increment(1);
        }
        Step::Finished => {
            let state = match event.state {
                AsynchJobState::Complete => "COMPLETE",
                _ => "FAILED",
            };
            counter!("asyncjobs_jobs_finished_total", labels(&[("state", state)])).increment(1);
            if let Some(exception) = &event.exception {
                counter!(
                    "asyncjobs_jobs_failed_total",
                    labels(&[("exception", exception)])
                )
                .increment(1);
            }
            gauge!(queue(event.queued), labels(&[])).decrement(1.0);
            histogram!("asyncjobs_job_runtime_seconds", labels(&[("state", state)]))
                .record(event.elapsed.as_secs_f64());
        }
        Step::Progress | Step::Removed => {}
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn record(_: &Event, _: Option<&str>) {}
