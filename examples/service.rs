//! A job service in miniature: requests arrive, jobs run under a concurrency limit, finished
//! statuses are kept for a while, and the service reports its counts every second until it is
//! told to stop. Run it with `cargo run --example service`.
//!
//! A request source stands in for the HTTP handlers of a real service: at irregular intervals it
//! starts a job on behalf of one of three users. Queries are cacheable, so a user who asks the
//! same query again while it runs (or while its result is kept) gets the same job back. Exports
//! have a time limit, which the bigger ones exceed. Reindexing ignores cancellation, so a
//! shutdown has to stop it.
//!
//! After four seconds (or at Ctrl-C) the service shuts the registry down: it refuses new jobs,
//! cancels the running and queued ones, waits a short grace for them, stops the rest, and
//! prints what happened. The request source sees the refusal and stops too.

use std::collections::HashSet;
use std::error::Error;
use std::time::Duration;

use asyncjobs::{JobFilter, JobHandle, JobRegistry, JobRequest};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

/// How long the service runs before it shuts itself down.
const RUN_FOR: Duration = Duration::from_secs(4);

/// How long a shutdown waits for canceled jobs to stop by themselves.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The users the request source acts for, as `(name, user id)`.
const USERS: [(&str, u64); 3] = [
    ("alice", 3_350_396),
    ("bob", 3_350_397),
    ("carol", 3_350_398),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let registry = JobRegistry::builder()
        // Requests arrive faster than three jobs at a time can serve them: the rest queue up.
        .max_running(3)
        // Short enough to see it work within the run; a real service keeps results for as long
        // as clients may come back for them (the default is an hour and 10,000 statuses).
        .keep_finished_for(Duration::from_secs(2))
        .keep_finished_at_most(10)
        // Longer than the shutdown grace, so that a job ignoring its cancel is stopped by the
        // shutdown, and counted as such in its summary.
        .cancel_grace(Duration::from_secs(2))
        .build();

    let start = Instant::now();
    let source = tokio::spawn(accept_requests(registry.clone(), start));

    // A service that cannot listen for Ctrl-C still runs its time, rather than stopping at once.
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            eprintln!("not listening for Ctrl-C: {error}");
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(ctrl_c);
    let time_up = sleep(RUN_FOR);
    tokio::pin!(time_up);
    let mut every_second =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));

    loop {
        tokio::select! {
            _ = every_second.tick() => {
                // Three counters, no job read: cheap enough for a metrics endpoint.
                println!(
                    "[{:.2}s] counts: {}; {} statuses held",
                    start.elapsed().as_secs_f64(),
                    registry.local().counts(),
                    registry.local().len(),
                );
            }
            () = &mut time_up => {
                println!("[{:.2}s] time is up: shutting down", start.elapsed().as_secs_f64());
                break;
            }
            () = &mut ctrl_c => {
                println!("[{:.2}s] Ctrl-C: shutting down", start.elapsed().as_secs_f64());
                break;
            }
        }
    }

    let summary = registry.shutdown(SHUTDOWN_GRACE).await;
    println!(
        "[{:.2}s] shutdown: {summary}",
        start.elapsed().as_secs_f64()
    );
    println!("counts: {}", registry.local().counts());

    // The request source stops at its next request, which the registry refuses.
    source.await?;

    // What a client asking now would still find: retention keeps only the latest finished jobs.
    println!("statuses still held:");
    for status in registry.local().list(&JobFilter::new()).jobs {
        let ended = status
            .error_message
            .as_deref()
            .or(status.progress_message.as_deref())
            .unwrap_or("");
        println!(
            "  job {} user {:<8} {:<9} {ended}",
            status.job_id,
            status
                .started_by_user_id
                .map_or("-".into(), |user| user.to_string()),
            status.job_state.as_str(),
        );
    }
    Ok(())
}

/// Stands in for a service's request handlers: starts a job for one user or another at
/// irregular intervals, until the registry refuses because it is shutting down.
async fn accept_requests(registry: JobRegistry, start: Instant) {
    let mut dice = Dice(0x2545_f491_4f6c_dd1d);
    // Ids handed out so far: getting one of them again means a cacheable request was reused.
    let mut started = HashSet::new();
    loop {
        sleep(Duration::from_millis(80 + dice.below(220))).await;
        let (name, user_id) = dice.pick(&USERS);
        // An API handler holds a view for the calling user, never the whole registry.
        let user = registry.as_user(user_id);

        let (what, started_job) = match dice.below(10) {
            0..=4 => {
                // Only three different queries, so users often repeat one.
                let query = dice.pick(&["top projects", "new users", "storage by team"]);
                let request = JobRequest::new(json!({
                    "concreteType": "org.example.QueryRequest",
                    "query": query,
                }))
                // Read-only work: an equal request from the same user may reuse the job.
                .cacheable();
                (
                    format!("query {query:?}"),
                    user.spawn(request, move |job| run_query(job, query)).await,
                )
            }
            5..=7 => {
                let rows = 10 + dice.below(30);
                let request = JobRequest::new(json!({
                    "concreteType": "org.example.CsvExportRequest",
                    "rows": rows,
                }))
                // At 50 ms a row, exports of more than 22 rows run out of time.
                .time_limit(Duration::from_millis(1_100));
                (
                    format!("export of {rows} rows"),
                    user.spawn(request, move |job| export_rows(job, rows)).await,
                )
            }
            _ => {
                let request =
                    JobRequest::new(json!({ "concreteType": "org.example.ReindexRequest" }));
                ("reindex".to_owned(), user.spawn(request, reindex).await)
            }
        };

        let asked = format!(
            "[{:.2}s] {name:<5} {what:<26} →",
            start.elapsed().as_secs_f64()
        );
        match started_job {
            Ok(id) if started.insert(id) => println!("{asked} job {id}"),
            Ok(id) => println!("{asked} job {id} again (cached)"),
            Err(asyncjobs::Error::ShutDown) => {
                // What an HTTP handler answers with 503.
                println!("{asked} refused: the service is shutting down");
                return;
            }
            Err(error) => println!("{asked} error: {error}"),
        }
    }
}

async fn run_query(job: JobHandle, query: &'static str) -> Result<Value, std::io::Error> {
    let pages = 6;
    for page in 0..pages {
        job.set_progress(page, pages, format!("reading page {page} of {pages}"));
        tokio::select! {
            () = job.cancelled() => return Err(std::io::Error::other("query canceled")),
            () = sleep(Duration::from_millis(80)) => {}
        }
    }
    Ok(json!({ "concreteType": "org.example.QueryResponse", "query": query, "count": 42 }))
}

/// Stops as soon as it is canceled, by a shutdown or by its time limit.
async fn export_rows(job: JobHandle, rows: u64) -> Result<Value, std::io::Error> {
    for row in 0..rows {
        job.set_progress(row, rows, format!("exported {row} of {rows} rows"));
        tokio::select! {
            () = job.cancelled() => {
                let stopped = format!("export stopped after {row} of {rows} rows");
                return Err(std::io::Error::other(stopped));
            }
            () = sleep(Duration::from_millis(50)) => {}
        }
    }
    Ok(json!({ "concreteType": "org.example.CsvExportResponse", "rows": rows }))
}

/// Never looks at its cancellation: a shutdown ends it after the grace by dropping it.
async fn reindex(job: JobHandle) -> Result<Value, std::io::Error> {
    let shards = 60;
    for shard in 0..shards {
        job.set_progress(
            shard,
            shards,
            format!("reindexed {shard} of {shards} shards"),
        );
        sleep(Duration::from_millis(100)).await;
    }
    Ok(json!({ "concreteType": "org.example.ReindexResponse", "shards": shards }))
}

/// A tiny xorshift generator: irregular arrivals without a `rand` dependency, and the same
/// sequence of requests on every run.
struct Dice(u64);

impl Dice {
    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// One of `items`, which must not be empty.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
