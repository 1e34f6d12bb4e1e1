//! A terminal dashboard: live progress bars for a dozen jobs, redrawn from the registry's change
//! feed. Run it with `cargo run --example dashboard` and press Enter to cancel a job.
//!
//! Twelve jobs of different lengths run at once. Each has a bar that moves only when the feed
//! says its job changed: nothing polls. Most jobs complete; one fails part-way, one runs into
//! its time limit, and one is canceled by a timer. Each press of Enter cancels one more: the
//! running job with the most work left. Finished bars read `✓ COMPLETE` or `✗ FAILED` and the
//! error. The dashboard exits once every job has finished.
//!
//! At a terminal the jobs run three times slower, to leave time for pressing Enter. Without one
//! (as in CI: `cargo run --example dashboard < /dev/null`) it all takes about three seconds,
//! indicatif draws no bars, and a table of the final statuses is printed at the end instead.

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use asyncjobs::{AsynchJobState, AsynchronousJobStatus, JobHandle, JobId, JobRegistry, JobRequest};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::sleep;

/// What one job does: `steps` steps of `step_ms` each, counted in `unit`s.
#[derive(Debug, Clone, Copy)]
struct Task {
    name: &'static str,
    unit: &'static str,
    steps: u64,
    step_ms: u64,
    /// The step at which the job gives up with this error.
    fails_at: Option<(u64, &'static str)>,
    /// Passed to `JobRequest::time_limit`; shorter than the work takes, so the job times out.
    time_limit_ms: Option<u64>,
}

const fn task(name: &'static str, unit: &'static str, steps: u64, step_ms: u64) -> Task {
    Task {
        name,
        unit,
        steps,
        step_ms,
        fails_at: None,
        time_limit_ms: None,
    }
}

/// Between 1.2 and 3.2 seconds of work each, at the pace used without a terminal.
const TASKS: [Task; 12] = [
    task("export users", "rows", 40, 50),
    task("resize images", "images", 24, 100),
    task("reindex search", "shards", 12, 250),
    task("copy bucket", "files", 60, 40),
    task("run query", "pages", 8, 150),
    Task {
        fails_at: Some((17, "line 17: \"10O3\" is not a member id")),
        ..task("import members", "lines", 30, 60)
    },
    Task {
        time_limit_ms: Some(1_500),
        ..task("virus scan", "files", 50, 60)
    },
    task("backup db", "tables", 20, 160),
    task("archive logs", "days", 30, 50),
    task("transcode", "segments", 16, 200),
    task("sync mirror", "packages", 100, 25),
    task("checksum", "files", 70, 30),
];

/// When the timer cancels a job, at the pace used without a terminal.
const TIMER_CANCEL_AFTER: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // At a terminal someone may want to press Enter, so give them time: everything runs three
    // times slower. Without one (CI), finish in about three seconds.
    let interactive = std::io::stdin().is_terminal();
    let pace: u32 = if interactive { 3 } else { 1 };

    // A job that ignores its cancel would be stopped after this; all of these stop at once.
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(1))
        .build();

    // Opened before the first spawn, so that no change is missed.
    let mut feed = registry.watch_all();

    let multi = MultiProgress::new();
    if interactive {
        println!("Press Enter to cancel the running job with the most work left.");
    } else {
        println!("No terminal: no bars, a timer cancels one job, a summary follows at the end.");
    }

    let mut rows: HashMap<JobId, Row> = HashMap::new();
    let mut order = Vec::new();
    for task in TASKS {
        let mut request = JobRequest::new(json!({
            "concreteType": "org.example.DashboardTaskRequest",
            "task": task.name,
        }));
        if let Some(limit) = task.time_limit_ms {
            request = request.time_limit(Duration::from_millis(limit) * pace);
        }
        let id = registry
            .spawn(request, move |job| run(job, task, pace))
            .await?;

        let bar = multi.add(ProgressBar::no_length());
        bar.set_style(style(Look::Running)?);
        bar.set_prefix(task.name);
        // Drawn from the status as it is now; from here on, only the feed moves the bar.
        let row = Row {
            name: task.name,
            bar,
            status: registry.status(&id).await?,
        };
        row.draw()?;
        rows.insert(id, row);
        order.push(id);
    }

    // Cancel requests from two sources, one channel: Enter, and a timer so that a cancel
    // happens even without a terminal.
    let (cancel_tx, mut cancels) = mpsc::unbounded_channel();
    let enter = cancel_tx.clone();
    // A plain thread rather than `tokio::io::stdin`: a blocking read cannot be interrupted, and
    // the runtime would wait for it at exit, while a detached thread just ends with the process.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            // Stops at the end of input (at once for `< /dev/null`) or once the dashboard is gone.
            if line.is_err() || enter.send(Cancel::Enter).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        sleep(TIMER_CANCEL_AFTER * pace).await;
        // Fails only if the dashboard has already finished: nothing left to cancel then.
        let _ = cancel_tx.send(Cancel::Timer);
    });

    let mut unfinished = rows.len();
    while unfinished > 0 {
        tokio::select! {
            next = feed.next() => {
                // The feed ends only after a shutdown, which this example never does.
                let Some(status) = next else { break };
                if let Some(row) = rows.get_mut(&status.job_id) {
                    let was_finished = row.status.is_terminal();
                    row.status = status;
                    row.draw()?;
                    if !was_finished && row.status.is_terminal() {
                        unfinished -= 1;
                    }
                }
            }
            Some(source) = cancels.recv() => {
                if source == Cancel::Enter && interactive && !multi.is_hidden() {
                    // The terminal echoed the Enter as a new line under the bars, which
                    // indicatif does not know about: step back up, or the next redraw would
                    // leave a stale copy of the first bar behind.
                    eprint!("\x1b[1A");
                }
                let line = cancel_one(&registry, &rows, source);
                // `suspend` hides the bars while printing, so the line lands above them.
                multi.suspend(|| println!("{line}"));
            }
        }
    }

    // Bars on screen already show how each job ended; without them, print the same as a table.
    if multi.is_hidden() {
        print_summary(order.iter().filter_map(|id| rows.get(id)));
    }
    println!("counts: {}", registry.local().counts());
    Ok(())
}

/// Where a request to cancel a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    Enter,
    Timer,
}

/// A job's bar and the latest status it shows.
struct Row {
    name: &'static str,
    bar: ProgressBar,
    status: AsynchronousJobStatus,
}

impl Row {
    fn draw(&self) -> Result<(), Box<dyn Error>> {
        let status = &self.status;
        // A job that has not reported progress yet has no total: the bar stays empty.
        if let (Some(current), Some(total)) = (status.progress_current, status.progress_total) {
            self.bar.set_length(total);
            self.bar.set_position(current);
        }
        let progress = progress_text(status);
        match status.job_state {
            AsynchJobState::Processing => {
                let canceling = if status.job_canceling {
                    "canceling… "
                } else {
                    ""
                };
                let message = status.progress_message.as_deref().unwrap_or("");
                self.bar
                    .set_message(format!("PROCESSING {progress:>7}  {canceling}{message}"));
            }
            AsynchJobState::Complete => {
                self.bar.set_style(style(Look::Complete)?);
                let seconds = Duration::from_millis(status.runtime_ms).as_secs_f64();
                self.bar
                    .finish_with_message(format!("✓ COMPLETE {progress:>7}  in {seconds:.1} s"));
            }
            AsynchJobState::Failed => {
                self.bar.set_style(style(Look::Failed)?);
                let error = status.error_message.as_deref().unwrap_or("");
                // `abandon` leaves the bar where the job stopped; `finish` would fill it.
                self.bar
                    .abandon_with_message(format!("✗ FAILED   {progress:>7}  {error}"));
            }
        }
        Ok(())
    }

    /// The share of its work left, in thousandths (jobs count in different units), for choosing
    /// what to cancel; `None` once there is nothing to cancel.
    fn work_left(&self) -> Option<u64> {
        let status = &self.status;
        if status.is_terminal() || status.job_canceling {
            return None;
        }
        match (status.progress_current, status.progress_total) {
            (Some(current), Some(total)) if total > 0 => {
                Some(total.saturating_sub(current).saturating_mul(1000) / total)
            }
            // No progress reported yet: all of it is left.
            _ => Some(1000),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Look {
    Running,
    Complete,
    Failed,
}

fn style(look: Look) -> Result<ProgressStyle, indicatif::style::TemplateError> {
    let color = match look {
        Look::Running => "cyan/blue",
        Look::Complete => "green",
        Look::Failed => "red",
    };
    Ok(
        ProgressStyle::with_template(&format!("{{prefix:<15}} {{bar:30.{color}}} {{wide_msg}}"))?
            .progress_chars("█▉▊▋▌▍▎▏ "),
    )
}

/// Cancels the running job with the most work left (as the dashboard last saw it), so that the
/// cancel shows on a bar that would otherwise run longest. Returns the line to print.
fn cancel_one(registry: &JobRegistry, rows: &HashMap<JobId, Row>, source: Cancel) -> String {
    let Some((id, row)) = rows
        .iter()
        .filter_map(|(id, row)| Some((row.work_left()?, id, row)))
        .max_by_key(|(left, id, _)| (*left, std::cmp::Reverse(**id)))
        .map(|(_, id, row)| (id, row))
    else {
        return format!("{source:?}: no running job left to cancel");
    };
    match registry.local().cancel(id) {
        Ok(outcome) => format!("{source:?}: cancel {} (job {id}): {outcome:?}", row.name),
        Err(error) => format!("{source:?}: cancel {} (job {id}) failed: {error}", row.name),
    }
}

fn progress_text(status: &AsynchronousJobStatus) -> String {
    match (status.progress_current, status.progress_total) {
        (Some(current), Some(total)) => format!("{current}/{total}"),
        _ => "-".to_owned(),
    }
}

fn print_summary<'a>(rows: impl Iterator<Item = &'a Row>) {
    println!(
        "{:<15} {:<10} {:>8} {:>8}  {:<9} message or error",
        "job", "state", "progress", "runtime", "canceled"
    );
    for row in rows {
        let status = &row.status;
        let text = status
            .error_message
            .as_deref()
            .or(status.progress_message.as_deref())
            .unwrap_or("");
        println!(
            "{:<15} {:<10} {:>8} {:>6}ms  {:<9} {text}",
            row.name,
            status.job_state.as_str(),
            progress_text(status),
            status.runtime_ms,
            if status.job_canceling { "yes" } else { "" },
        );
    }
}

/// One job: a step at a time, reporting progress before each step and stopping as soon as it is
/// asked to cancel (by the dashboard, or by its time limit), even in the middle of a step.
async fn run(job: JobHandle, task: Task, pace: u32) -> Result<Value, std::io::Error> {
    let Task { steps, unit, .. } = task;
    let step = Duration::from_millis(task.step_ms) * pace;
    for done in 0..steps {
        job.set_progress(done, steps, format!("{done} of {steps} {unit}"));
        if let Some((at, error)) = task.fails_at {
            if done == at {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, error));
            }
        }
        tokio::select! {
            () = job.cancelled() => {
                return Err(std::io::Error::other(format!(
                    "stopped after {done} of {steps} {unit}"
                )));
            }
            () = sleep(step) => {}
        }
    }
    Ok(json!({
        "concreteType": "org.example.DashboardTaskResponse",
        "task": task.name,
        unit: steps,
    }))
}
