//! Thousands of jobs with mixed outcomes, polled and canceled from other tasks: every job ends
//! exactly once, and no poller ever sees a status go backwards.

use std::collections::HashMap;
use std::panic::PanicHookInfo;
use std::time::Duration;

use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, JobHandle, JobId, JobRegistry, JobRequest,
};

mod common;
use common::{panic_message, quiet_planned_panics};

const JOBS: u64 = 2_400;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Complete,
    Error,
    Panic,
    CancelCooperative,
    CancelIgnored,
}

fn plan(i: u64) -> Plan {
    match i % 5 {
        0 => Plan::Complete,
        1 => Plan::Error,
        2 => Plan::Panic,
        3 => Plan::CancelCooperative,
        _ => Plan::CancelIgnored,
    }
}

async fn job_body(i: u64, job: JobHandle) -> Result<u64, String> {
    for step in 0..5 {
        job.set_progress(step, 5, format!("job {i} step {step}"));
        tokio::task::yield_now().await;
    }
    match plan(i) {
        Plan::Complete => Ok(i),
        Plan::Error => Err(format!("job {i} failed")),
        Plan::Panic => panic!("job {i} panicked"),
        Plan::CancelCooperative => {
            job.cancelled().await;
            Err(format!("job {i} canceled"))
        }
        Plan::CancelIgnored => {
            std::future::pending::<()>().await;
            Ok(i)
        }
    }
}

/// The panics of `Plan::Panic`.
fn planned(info: &PanicHookInfo<'_>) -> bool {
    panic_message(info).is_some_and(|m| m.starts_with("job ") && m.ends_with(" panicked"))
}

/// What one poller saw of one job, checked as it goes.
#[derive(Default)]
struct Seen {
    last: Option<AsynchronousJobStatus>,
}

impl Seen {
    fn observe(&mut self, s: AsynchronousJobStatus) {
        if let Some(last) = &self.last {
            let version = |s: &AsynchronousJobStatus| s.etag.to_string().parse::<u64>().unwrap();
            assert!(
                version(&s) >= version(last),
                "etag went back for job {}",
                s.job_id
            );
            assert!(s.changed_on >= last.changed_on, "changedOn went back");
            assert!(s.runtime_ms >= last.runtime_ms, "runtime went back");
            if last.is_terminal() {
                assert_eq!(&s, last, "a finished status changed");
            }
            if version(&s) == version(last) {
                assert_eq!(
                    (
                        &s.job_state,
                        s.job_canceling,
                        &s.progress_message,
                        s.progress_current
                    ),
                    (
                        &last.job_state,
                        last.job_canceling,
                        &last.progress_message,
                        last.progress_current
                    ),
                    "same etag, different status"
                );
            }
            assert!(
                !last.job_canceling || s.job_canceling,
                "canceling flag cleared"
            );
        }
        self.last = Some(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_jobs_end_exactly_once_under_pollers_and_cancels() {
    quiet_planned_panics(planned);
    let registry = JobRegistry::builder()
        // Long enough that a cooperative job, however loaded the machine, answers within it.
        .cancel_grace(Duration::from_secs(3))
        .keep_finished_at_most(JOBS as usize)
        .build();
    let ids: Vec<JobId> = (0..JOBS)
        .map(|i| {
            registry
                .local()
                .spawn(JobRequest::default().started_by(i % 10), move |job| {
                    job_body(i, job)
                })
                .unwrap()
        })
        .collect();

    let pollers: Vec<_> = (0..4)
        .map(|p| {
            let registry = registry.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut seen: HashMap<JobId, Seen> = HashMap::new();
                loop {
                    let mut all_done = true;
                    for id in ids.iter().skip(p % 2).step_by(2) {
                        let s = registry.status(id).await.unwrap();
                        all_done &= s.is_terminal();
                        seen.entry(*id).or_default().observe(s);
                    }
                    if all_done {
                        return seen.len();
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let cancels: Vec<_> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            matches!(
                plan(*i as u64),
                Plan::CancelCooperative | Plan::CancelIgnored
            )
        })
        .map(|(_, id)| {
            let (registry, id) = (registry.clone(), *id);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                registry.cancel(&id).await.unwrap()
            })
        })
        .collect();
    for c in cancels {
        c.await.unwrap();
    }

    let mut outcomes: HashMap<&str, u64> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let i = i as u64;
        let s = registry.wait(id).await.unwrap();
        assert_eq!(s.started_by_user_id, Some(i % 10));
        let kind = match (plan(i), s.job_state) {
            (Plan::Complete, AsynchJobState::Complete) => {
                assert_eq!(s.response_body.as_deref(), Some(&serde_json::json!(i)));
                assert_eq!(s.progress_current, Some(5));
                "complete"
            }
            (Plan::Error, AsynchJobState::Failed) => {
                assert_eq!(
                    s.error_message.as_deref(),
                    Some(format!("job {i} failed").as_str())
                );
                "error"
            }
            (Plan::Panic, AsynchJobState::Failed) => {
                assert_eq!(s.exception.as_deref(), Some(exception::PANICKED));
                assert_eq!(
                    s.error_message.as_deref(),
                    Some(format!("job {i} panicked").as_str())
                );
                "panic"
            }
            (Plan::CancelCooperative, AsynchJobState::Failed) => {
                assert!(s.job_canceling);
                assert_eq!(
                    s.error_message.as_deref(),
                    Some(format!("job {i} canceled").as_str())
                );
                "canceled"
            }
            (Plan::CancelIgnored, AsynchJobState::Failed) => {
                assert!(s.job_canceling);
                assert_eq!(s.exception.as_deref(), Some(exception::CANCELED));
                "stopped"
            }
            (plan, state) => panic!("job {i}: planned {plan:?}, ended {state}"),
        };
        *outcomes.entry(kind).or_default() += 1;
    }
    for p in pollers {
        assert_eq!(p.await.unwrap(), (JOBS / 2) as usize);
    }
    assert_eq!(outcomes.len(), 5);
    assert!(outcomes.values().all(|&n| n == JOBS / 5), "{outcomes:?}");
    assert_eq!(
        registry.local().len(),
        JOBS as usize,
        "every job retained exactly once"
    );
}
