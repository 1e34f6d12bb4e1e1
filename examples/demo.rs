//! A tour of `asyncjobs` in a few seconds: run with `cargo run --example demo`.
//!
//! Five jobs start for one user: two finish, one fails with a chain of causes, one is canceled and
//! stops by itself, and one ignores its cancel and is stopped once the grace period is over. While
//! they run, the demo polls their statuses the way an HTTP client would; at the end it prints every
//! final status as the JSON a Synapse client reads.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use asyncjobs::{AsynchronousJobStatus, JobHandle, JobRegistry, JobRequest};
use serde_json::{json, Value};
use tokio::time::sleep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // A short grace so that the job which ignores its cancel is stopped within the demo.
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_millis(500))
        .build();

    // An API handler acting for a user holds a view like this, never the whole registry.
    let alice = registry.as_user(3_350_396);

    let export = alice.spawn(request("org.example.CsvExportRequest"), export_rows)?;
    let query = alice.spawn(request("org.example.QueryRequest"), run_query)?;
    let copy = alice.spawn(request("org.example.FileCopyRequest"), copy_files)?;
    let import = alice.spawn(request("org.example.ImportRequest"), import_members)?;
    let reindex = alice.spawn(request("org.example.ReindexRequest"), reindex_forever)?;
    let jobs = [
        ("export", export),
        ("query", query),
        ("copy", copy),
        ("import", import),
        ("reindex", reindex),
    ];

    // Another user is refused, as Synapse answers 403.
    if let Err(refused) = registry.as_user(42).status(&export) {
        println!("user 42 asks for alice's export: {refused}\n");
    }

    for tick in 1..=5 {
        sleep(Duration::from_millis(300)).await;
        println!("after {:.1}s", f64::from(tick) * 0.3);
        for (name, id) in &jobs {
            println!("  {}", progress_line(name, &alice.status(id)?));
        }
        if tick == 2 {
            for (name, id) in [("copy", copy), ("reindex", reindex)] {
                println!("cancel {name}: {:?}", alice.cancel(&id)?);
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
    Ok(())
}

fn request(concrete_type: &str) -> JobRequest {
    JobRequest::new(json!({ "concreteType": concrete_type }))
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

async fn export_rows(job: JobHandle) -> Result<Value, std::io::Error> {
    let rows = 40;
    for row in 0..rows {
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

/// Stops cleanly when asked: the status then shows FAILED with `jobCanceling` set and this job's
/// own error, rather than the registry's forced stop.
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
