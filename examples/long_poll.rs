//! Long-polling one job, as an HTTP endpoint would: run with `cargo run --example long_poll`.
//!
//! Only one job runs at a time here, so a second job waits in the queue while the first runs. A
//! client follows the second job the way a Synapse-style client would, but without asking every
//! second: each request carries the etag the client last saw, and the server answers as soon as
//! the status differs from it, or, after holding the request for a while, with "nothing new"
//! (HTTP 304), and the client asks again. The client learns of each change at once, and no
//! request is wasted while the job makes progress.

use std::time::Duration;

use asyncjobs::{
    AsynchronousJobStatus, Error, Etag, JobHandle, JobId, JobRegistry, JobRequest, UserView,
};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

/// How long the server holds a request before answering "nothing new". Real servers use tens of
/// seconds, below the timeouts of the proxies in between.
const HOLD: Duration = Duration::from_millis(400);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One job at a time: the next one waits, already PROCESSING, as a queued job is in Synapse.
    let registry = JobRegistry::builder().max_running(1).build();
    let alice = registry.as_user(3_350_396);

    alice
        .spawn(request("org.example.ReindexRequest"), |job| {
            work(job, "reindexing", 4, Duration::from_millis(250))
        })
        .await?;
    let export = alice
        .spawn(request("org.example.CsvExportRequest"), |job| {
            work(job, "exporting", 5, Duration::from_millis(100))
        })
        .await?;

    // The client's first request carries no etag: it is answered at once.
    let start = Instant::now();
    let mut status = alice.status(&export).await?;
    println!("{}", line(start, &status));
    while !status.is_terminal() {
        // Each answer is the latest status: changes close together arrive as one, so the etag
        // may skip (leaving the queue and the first step's progress, say). Nothing is missed.
        match long_poll(&alice, &export, &status.etag, HOLD).await? {
            Some(changed) => {
                status = changed;
                println!("{}", line(start, &status));
            }
            None => println!(
                "{:>5.2}s  nothing new; the client asks again with etag {}",
                start.elapsed().as_secs_f64(),
                status.etag
            ),
        }
    }
    println!("\n{}", serde_json::to_string(&status)?);
    Ok(())
}

/// What `GET /asynchronous/job/{id}?etag=…` would do: answer with the status as soon as its etag
/// differs from the client's, or with `None` ("nothing new") once `hold` has passed.
async fn long_poll(
    jobs: &UserView,
    id: &JobId,
    etag: &Etag,
    hold: Duration,
) -> Result<Option<AsynchronousJobStatus>, Error> {
    match tokio::time::timeout(hold, jobs.wait_for_change(id, etag)).await {
        Ok(changed) => changed.map(Some),
        Err(_elapsed) => Ok(None),
    }
}

fn line(start: Instant, status: &AsynchronousJobStatus) -> String {
    let progress = match (status.progress_current, status.progress_total) {
        (Some(current), Some(total)) => format!("{current}/{total}"),
        _ => "-".to_owned(),
    };
    format!(
        "{:>5.2}s  etag {:<2} {:<10} {progress:>4}  {}",
        start.elapsed().as_secs_f64(),
        status.etag.to_string(),
        status.job_state.as_str(),
        status.progress_message.as_deref().unwrap_or(""),
    )
}

fn request(concrete_type: &str) -> JobRequest {
    JobRequest::new(json!({ "concreteType": concrete_type }))
}

/// A job of `steps` steps of `step` each, reporting progress before each one.
async fn work(
    job: JobHandle,
    what: &'static str,
    steps: u64,
    step: Duration,
) -> Result<Value, std::io::Error> {
    for done in 0..steps {
        job.set_progress(done, steps, format!("{what}: step {} of {steps}", done + 1));
        sleep(step).await;
    }
    Ok(json!({ "steps": steps }))
}
