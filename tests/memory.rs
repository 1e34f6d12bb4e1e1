//! Memory stays flat: a long-running registry that runs many short jobs ends with its memory
//! bounded by the retention limits, not by the number of jobs it ran. Checked two ways: the
//! registry's own accounting (`len`, `counts`, a feed's backlog) at every checkpoint, and the
//! process's resident set size (on Linux), which must not keep growing once retention is full.
//!
//! The jobs exercise everything that keeps per-job state: progress, errors, user views, cacheable
//! requests (the request cache), a concurrency limit (the queue), feeds (one read, one never
//! read), watches, and change waits.
//!
//! `ASYNCJOBS_MEMORY_JOBS` sets the number of jobs (default 50,000; try 1000000). Retention keeps
//! a tenth of them, at most the default 10,000. This file holds one test, so that nothing else
//! runs in the process while it measures.

use std::time::Duration;

use asyncjobs::{
    AsynchJobState, JobFilter, JobHandle, JobRegistry, JobRequest, DEFAULT_KEEP_FINISHED_AT_MOST,
};
use serde_json::json;

const DEFAULT_JOBS: usize = 50_000;
const CHECKPOINTS: usize = 10;

/// The resident set size in bytes, where the platform tells it.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn short_job(i: usize, job: JobHandle) -> Result<serde_json::Value, String> {
    job.set_progress(0, 2, format!("job {i}: reading"));
    tokio::task::yield_now().await;
    job.set_progress(1, 2, format!("job {i}: writing"));
    if i % 7 == 3 {
        return Err(format!("job {i} failed\nwith a second line"));
    }
    Ok(json!({"concreteType": "org.example.Done", "job": i}))
}

#[test]
fn memory_is_bounded_by_retention_not_by_job_count() {
    let jobs: usize = std::env::var("ASYNCJOBS_MEMORY_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_JOBS)
        .max(CHECKPOINTS * 100);
    let keep = (jobs / 10).min(DEFAULT_KEEP_FINISHED_AT_MOST);
    let batch = (keep / 4).clamp(1, 1_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let rss = runtime.block_on(async {
        let registry = JobRegistry::builder()
            .keep_finished_at_most(keep)
            .max_running(64)
            .build();
        let mut read_feed = registry.watch_all();
        let unread_feed = registry.as_user(3).watch_all();
        let reader = tokio::spawn(async move {
            let mut read = 0u64;
            while read_feed.next().await.is_some() {
                read += 1;
            }
            read
        });

        let mut rss = Vec::new();
        let mut done = 0;
        while done < jobs {
            let n = batch.min(jobs - done);
            let ids: Vec<_> = (done..done + n)
                .map(|i| {
                    let user = (i % 5) as u64;
                    let mut request = JobRequest::new(json!({"job": i}));
                    if i % 4 == 0 {
                        request = request.cacheable();
                    }
                    let view = registry.as_user(user);
                    view.local()
                        .spawn(request, move |job| short_job(i, job))
                        .unwrap()
                })
                .collect();
            // Some readers come and go while the jobs run.
            let mut watch = registry.watch(&ids[0]).await.unwrap();
            watch.next().await.unwrap();
            let etag = registry.status(&ids[n / 2]).await.unwrap().etag;
            let _ = tokio::time::timeout(
                Duration::from_millis(1),
                registry.wait_for_change(&ids[n / 2], &etag),
            )
            .await;
            drop(watch);
            for id in &ids {
                assert!(registry.wait(id).await.unwrap().is_terminal());
            }
            done += n;

            // The registry's own accounting: bounded by retention, at every step.
            let counts = registry.local().counts();
            assert_eq!(counts.processing, 0);
            assert_eq!(counts.complete + counts.failed, done.min(keep), "{counts}");
            assert_eq!(registry.local().len(), done.min(keep));
            assert!(
                unread_feed.pending() <= registry.local().len(),
                "an unread feed holds at most one entry per retained job"
            );
            if done % (jobs / CHECKPOINTS) < n || done == jobs {
                tokio::task::yield_now().await;
                rss.push((done, rss_bytes()));
            }
        }
        assert_eq!(
            registry
                .local()
                .list(&JobFilter::new().limit(usize::MAX))
                .jobs
                .len(),
            keep,
            "the last {keep} finished are kept"
        );
        assert_eq!(
            registry
                .local()
                .list(&JobFilter::new().state(AsynchJobState::Processing))
                .jobs
                .len(),
            0
        );
        registry.shutdown(Duration::from_secs(1)).await;
        assert!(reader.await.unwrap() >= keep as u64);
        rss
    });
    println!(
        "memory: {jobs} jobs, keeping {keep}, in {:?}; RSS at checkpoints: {}",
        started.elapsed(),
        rss.iter()
            .map(|(done, rss)| format!(
                "{done}: {}",
                rss.map_or("?".into(), |b| format!("{} MiB", b >> 20))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Once retention is full (from the third checkpoint on, three times `keep` jobs), memory may
    // wobble but must not grow with the jobs. A leak of even a few dozen bytes per job shows at
    // a million jobs; at the CI scale only a leak of a job's whole state would.
    let measured: Vec<(usize, u64)> = rss
        .iter()
        .filter_map(|&(done, rss)| rss.map(|b| (done, b)))
        .collect();
    let Some(&(_, warm)) = measured.get(2) else {
        println!("memory: no RSS on this platform; checked the registry's accounting only");
        return;
    };
    let &(_, end) = measured.last().unwrap();
    let allowed = 8 << 20; // 8 MiB
    assert!(
        end <= warm + allowed,
        "RSS grew from {} MiB after warm-up to {} MiB at the end: {measured:?}",
        warm >> 20,
        end >> 20
    );
}
