//! The `metrics` feature: what an exporter sees of jobs' lives, captured by metrics-util's
//! debugging recorder (the facade's own test recorder), with exact values.

use std::collections::BTreeMap;
use std::time::Duration;

use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Each metric as `name{label=value,…}` -> its value: counters and gauges as numbers, histograms
/// as their number of samples.
fn snapshot(recorder: &DebuggingRecorder) -> BTreeMap<String, f64> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_owned()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (name, value)
        })
        .collect()
}

/// A current-thread runtime on tokio's paused clock: time-based assertions without sleeping.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn jobs_are_counted_by_outcome_and_cause_and_timed() {
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        paused_runtime().block_on(async {
            let registry = JobRegistry::builder()
                .max_running(2)
                .cancel_grace(Duration::from_secs(1))
                .build();
            let ok = registry
                .spawn(JobRequest::default(), |job: JobHandle| async move {
                    for i in 0..100u64 {
                        job.set_progress(i, 100, "working"); // progress: never recorded
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<_, std::io::Error>(())
                })
                .await
                .unwrap();
            let canceled = registry
                .spawn(JobRequest::default(), |job: JobHandle| async move {
                    job.cancelled().await;
                    Err::<(), _>(std::io::Error::other("stopped"))
                })
                .await
                .unwrap();
            // Queued behind the two, then run once the first finishes.
            let queued = registry
                .spawn(
                    JobRequest::default().time_limit(Duration::from_secs(1)),
                    |_| async { std::future::pending::<Result<(), std::io::Error>>().await },
                )
                .await
                .unwrap();
            let counts = snapshot(&recorder);
            assert_eq!(counts["asyncjobs_jobs_started_total"], 3.0);
            assert_eq!(counts["asyncjobs_jobs_running"], 2.0);
            assert_eq!(counts["asyncjobs_jobs_queued"], 1.0);

            registry.cancel(&canceled).await.unwrap();
            registry.wait(&canceled).await.unwrap();
            registry.wait(&ok).await.unwrap();
            registry.wait(&queued).await.unwrap();

            // A snapshot drains the recorder: this one shows what changed since the first, so
            // the gauges back to zero show as -2 and -1, and no new start as 0.
            let counts = snapshot(&recorder);
            let expected: BTreeMap<String, f64> = [
                ("asyncjobs_jobs_started_total", 0.0),
                ("asyncjobs_jobs_running", -2.0),
                ("asyncjobs_jobs_queued", -1.0),
                ("asyncjobs_job_queue_wait_seconds", 1.0),
                ("asyncjobs_job_cancels_total{cause=requested}", 1.0),
                ("asyncjobs_job_cancels_total{cause=time_limit}", 1.0),
                ("asyncjobs_jobs_finished_total{state=COMPLETE}", 1.0),
                ("asyncjobs_jobs_finished_total{state=FAILED}", 2.0),
                (
                    "asyncjobs_jobs_failed_total{exception=std::io::error::Error}",
                    1.0,
                ),
                (
                    "asyncjobs_jobs_failed_total{exception=asyncjobs::JobTimedOut}",
                    1.0,
                ),
                ("asyncjobs_job_runtime_seconds{state=COMPLETE}", 1.0),
                ("asyncjobs_job_runtime_seconds{state=FAILED}", 2.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            assert_eq!(counts, expected);
        });
    });
}

/// A named job's metrics carry its name, so a dashboard can tell kinds of jobs apart; unnamed
/// jobs' carry no `name` label.
#[test]
fn a_named_job_s_metrics_carry_its_name() {
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        paused_runtime().block_on(async {
            let registry = JobRegistry::new();
            let named = registry
                .spawn(JobRequest::default().name("export"), |_job| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok::<_, std::io::Error>(())
                })
                .await
                .unwrap();
            let failed = registry
                .spawn(JobRequest::default().name("export"), |_job| async {
                    Err::<(), _>(std::io::Error::other("disk full"))
                })
                .await
                .unwrap();
            let unnamed = registry
                .spawn(JobRequest::default(), |_job| async {
                    Ok::<_, std::io::Error>(())
                })
                .await
                .unwrap();
            let running = snapshot(&recorder);
            assert_eq!(running["asyncjobs_jobs_started_total{name=export}"], 2.0);
            assert_eq!(running["asyncjobs_jobs_started_total"], 1.0);
            assert_eq!(running["asyncjobs_jobs_running{name=export}"], 2.0);
            for id in [named, failed, unnamed] {
                registry.wait(&id).await.unwrap();
            }
            let done = snapshot(&recorder);
            assert_eq!(done["asyncjobs_jobs_running{name=export}"], -2.0);
            assert_eq!(done["asyncjobs_jobs_running"], -1.0);
            assert_eq!(
                done["asyncjobs_jobs_finished_total{name=export,state=COMPLETE}"],
                1.0
            );
            assert_eq!(
                done["asyncjobs_jobs_finished_total{name=export,state=FAILED}"],
                1.0
            );
            assert_eq!(
                done["asyncjobs_jobs_failed_total{name=export,exception=std::io::error::Error}"],
                1.0
            );
            assert_eq!(done["asyncjobs_jobs_finished_total{state=COMPLETE}"], 1.0);
            assert_eq!(
                done["asyncjobs_job_runtime_seconds{name=export,state=COMPLETE}"],
                1.0
            );
        });
    });
}
