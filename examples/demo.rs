//! A tour of `asyncjobs` in a few seconds: run with `cargo run --example demo`.
//!
//! Five jobs start for one user, at most three at a time, so two wait in the queue at first. Two
//! finish, one fails with a chain of causes, one is canceled and stops by itself, and one ignores
//! its cancel and is stopped once the grace period is over. A dashboard follows them through the
//! registry's change feed, redrawing only when something changed, rather than polling. At the
//! end the demo prints every final status as the JSON a Synapse client reads, the registry's
//! counts, and shuts the registry down.
//!
//! `cargo run --example long_poll` shows the other way to wait for change: one client
//! long-polling one job, as an HTTP endpoint would.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::time::Duration;

use asyncjobs::{AsynchronousJobStatus, JobFilter, JobHandle, JobId, JobRegistry, JobRequest};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

/// The dashboard redraws at most this often; changes in between are conflated by the feed.
const FRAME: Duration = Duration::from_millis(300);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    println!("asyncjobs demo: five jobs for one user, at most three at a time.");
    println!(
        "Watch them queue, report progress, fail, get canceled, and one get stopped after its"
    );
    println!("grace; then see every final status as the JSON a Synapse client reads.\n");
    let registry = JobRegistry::builder()
        // At most three jobs run at once; later ones wait their turn, in order, and say so.
        .max_running(3)
        // A short grace so that the job which ignores its cancel is stopped within the demo.
        .cancel_grace(Duration::from_millis(500))
        .build();

    // An API handler acting for a user holds a view like this, never the whole registry.
    let alice = registry.as_user(3_350_396);

    // Opened before the jobs start, so that it misses none of their changes.
    let mut feed = alice.watch_all();

    let export = alice
        .spawn(request("org.example.CsvExportRequest"), export_rows)
        .await?;
    let query = alice
        .spawn(request("org.example.QueryRequest"), run_query)
        .await?;
    let reindex = alice
        .spawn(request("org.example.ReindexRequest"), reindex_forever)
        .await?;
    // The limit is reached: these two are queued until a slot frees up.
    let copy = alice
        .spawn(request("org.example.FileCopyRequest"), copy_files)
        .await?;
    let import = alice
        .spawn(request("org.example.ImportRequest"), import_members)
        .await?;
    let jobs = [
        ("export", export),
        ("query", query),
        ("reindex", reindex),
        ("copy", copy),
        ("import", import),
    ];

    // Another user is refused, as Synapse answers 403.
    if let Err(refused) = registry.as_user(42).status(&export).await {
        println!("user 42 asks for alice's export: {refused}\n");
    }

    // Meanwhile alice changes her mind about two jobs; in a service, another request handler
    // would do this while the dashboard runs.
    let canceler = alice.clone();
    tokio::spawn(async move {
        sleep(Duration::from_millis(750)).await;
        for (name, id) in [("copy", copy), ("reindex", reindex)] {
            match canceler.cancel(&id).await {
                Ok(outcome) => println!("cancel {name}: {outcome:?}\n"),
                Err(error) => eprintln!("cancel {name}: {error}"),
            }
        }
    });

    // The dashboard starts from a list of the present (the feed reports only jobs started or
    // changed after it was opened), then keeps up from the feed. It shows the latest status it has of each job.
    let mut board: HashMap<JobId, AsynchronousJobStatus> = alice
        .local()
        .list(&JobFilter::new())
        .jobs
        .into_iter()
        .map(|status| (status.job_id, status))
        .collect();
    let start = Instant::now();
    let mut changed = Vec::new();
    println!("alice's jobs, redrawn on news from the feed (* = changed since the last frame)");
    loop {
        print_frame(start.elapsed(), &jobs, &board, &changed);
        if board.values().all(AsynchronousJobStatus::is_terminal) {
            break;
        }
        // A slow reader on purpose: however often a job reports progress meanwhile, the feed
        // holds it once, at its latest, so the dashboard never falls behind.
        sleep(FRAME).await;
        changed.clear();
        // Waits for the next change (no polling), then takes the others already pending.
        let Some(first) = feed.next().await else {
            break; // the feed ends only after a shutdown
        };
        let mut news = vec![first];
        while feed.pending() > 0 {
            news.extend(feed.next().await);
        }
        for status in news {
            // A job listed above may come from the feed too: an etag already shown is no news.
            if board.get(&status.job_id).map(|shown| &shown.etag) != Some(&status.etag) {
                changed.push(status.job_id);
                board.insert(status.job_id, status);
            }
        }
    }

    for (name, id) in &jobs {
        let status = alice.wait(id).await?;
        println!(
            "\n{name}: {} after {} ms",
            status.job_state, status.runtime_ms
        );
        println!("{}", serde_json::to_string_pretty(&status)?);
    }

    // Shutting down, as a service does when told to stop: two more jobs are running then.
    let late_export = alice
        .spawn(request("org.example.CsvExportRequest"), export_rows)
        .await?;
    let late_reindex = alice
        .spawn(request("org.example.ReindexRequest"), reindex_forever)
        .await?;
    sleep(Duration::from_millis(200)).await;

    // Cheap enough for a dashboard to poll: no job is read, only three counters.
    let counts = registry.local().counts();
    println!(
        "\ncounts: {} processing, {} complete, {} failed",
        counts.processing, counts.complete, counts.failed
    );

    // Every job is canceled and gets the grace to stop by itself; the rest are stopped. The
    // grace is shorter than the cancel grace, so the shutdown itself stops the late reindex.
    let summary = registry.shutdown(Duration::from_millis(300)).await;
    println!(
        "shutdown: running {}, finished within the grace {}, stopped {}",
        summary.running, summary.finished_within_grace, summary.stopped
    );
    for (name, id) in [("late export", late_export), ("late reindex", late_reindex)] {
        // Statuses stay readable after a shutdown.
        let status = alice.status(&id).await?;
        println!(
            "  {name}: {}, {}",
            status.job_state,
            status.error_message.as_deref().unwrap_or("")
        );
    }
    if let Err(refused) = alice
        .spawn(request("org.example.QueryRequest"), run_query)
        .await
    {
        println!("a job started after the shutdown: {refused}");
    }
    Ok(())
}

fn request(concrete_type: &str) -> JobRequest {
    JobRequest::new(json!({ "concreteType": concrete_type }))
}

/// One redraw of the dashboard; a `*` marks the jobs that changed since the last one.
fn print_frame(
    elapsed: Duration,
    jobs: &[(&str, JobId)],
    board: &HashMap<JobId, AsynchronousJobStatus>,
    changed: &[JobId],
) {
    let mut frame = format!("after {:.1}s", elapsed.as_secs_f64());
    for (name, id) in jobs {
        if let Some(status) = board.get(id) {
            let mark = if changed.contains(id) { '*' } else { ' ' };
            frame.push_str(&format!("\n {mark} {}", progress_line(name, status)));
        }
    }
    // One `println!` per frame, so that lines printed by other tasks never split it.
    println!("{frame}");
}

/// A dashboard row. The etag is shown because a poller that sees it unchanged has missed nothing.
fn progress_line(name: &str, status: &AsynchronousJobStatus) -> String {
    let progress = match (status.progress_current, status.progress_total) {
        (Some(current), Some(total)) => format!("{current}/{total}"),
        _ => "-".to_owned(),
    };
    let canceling = if status.job_canceling {
        "canceling"
    } else {
        ""
    };
    format!(
        "{name:<8} {:<10} {progress:>7}  etag {:<3} {canceling:<9}  {}",
        status.job_state.as_str(),
        status.etag.to_string(),
        status.progress_message.as_deref().unwrap_or(""),
    )
}

/// Checks for a cancel once per row, so it stops within one row's time when asked.
async fn export_rows(job: JobHandle) -> Result<Value, std::io::Error> {
    let rows = 40;
    for row in 0..rows {
        if job.is_canceling() {
            return Err(std::io::Error::other(format!(
                "export canceled after {row} of {rows} rows"
            )));
        }
        job.set_progress(row, rows, format!("exported {row} of {rows} rows"));
        sleep(Duration::from_millis(50)).await;
    }
    Ok(json!({
        "concreteType": "org.example.CsvExportResponse",
        "rows": rows,
        "fileHandleId": "88211",
    }))
}

async fn run_query(job: JobHandle) -> Result<Value, std::io::Error> {
    let pages = 5;
    for page in 0..pages {
        job.set_progress(page, pages, "querying");
        sleep(Duration::from_millis(100)).await;
    }
    Ok(json!({ "concreteType": "org.example.QueryResponse", "count": 1234 }))
}

/// Stops cleanly when asked, even in the middle of a wait: the status then shows FAILED with
/// `jobCanceling` set and this job's own error, rather than the registry's forced stop.
async fn copy_files(job: JobHandle) -> Result<Value, std::io::Error> {
    let files = 20;
    for file in 0..files {
        job.set_progress(file, files, format!("copied {file} of {files} files"));
        tokio::select! {
            () = job.cancelled() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    format!("copy canceled after {file} of {files} files"),
                ));
            }
            () = sleep(Duration::from_millis(100)) => {}
        }
    }
    Ok(json!({ "concreteType": "org.example.FileCopyResponse", "files": files }))
}

/// Fails part-way; its error's `source()` chain ends up in `errorDetails`, one cause per line.
async fn import_members(job: JobHandle) -> Result<Value, ImportError> {
    // A letter O where a zero belongs: the line the import trips over.
    let lines = ["1001", "1002", "10O3", "1004"];
    let total = lines.len() as u64;
    for (line, text) in (1..).zip(lines) {
        job.set_progress(line - 1, total, format!("importing line {line}"));
        sleep(Duration::from_millis(200)).await;
        let _member: u64 = text.parse().map_err(|source| ImportError {
            file: "members.csv",
            line,
            source,
        })?;
    }
    Ok(json!({ "concreteType": "org.example.ImportResponse", "imported": total }))
}

/// Never looks at its cancellation, so the registry stops it once the grace period is over.
async fn reindex_forever(job: JobHandle) -> Result<Value, std::io::Error> {
    let mut step = 0;
    loop {
        job.set_progress(step, 1_000, "reindexing");
        sleep(Duration::from_millis(100)).await;
        step += 1;
    }
}

#[derive(Debug)]
struct ImportError {
    file: &'static str,
    line: u64,
    source: std::num::ParseIntError,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad member id in {} line {}", self.file, self.line)
    }
}

impl Error for ImportError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}
