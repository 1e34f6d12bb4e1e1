//! Several instances of a service sharing one PostgreSQL database: run with
//! `cargo run --example cluster --features postgres [postgresql://user@host:port/db]`.
//!
//! This process is instance A, and the orchestrator: it starts instances B and C as child
//! processes of this same program, each with its own registry and its own `PostgresStore` on
//! the same database. Then, printing each step as it goes:
//!
//! 1. B starts three exports and C a reindex; every instance's job ids come from blocks the
//!    store reserves, so they never collide.
//! 2. A follows one of B's exports live, long-polling it with `wait_for_change`.
//! 3. A cancels another of B's exports with `cancel`; B stops it, and A sees it FAILED
//!    with `jobCanceling` set.
//! 4. A starts a job of its own, and B follows it to its end.
//! 5. B is killed (SIGKILL). Its exports still running end FAILED with exception
//!    `asyncjobs::NodeLost`, once its lease has run out and another instance noticed.
//! 6. C is stopped cleanly: its running job ends canceled at once, no lease to wait for.
//! 7. A lists every job of the cluster and shuts down cleanly.
//!
//! The database is the one the first argument or `ASYNCJOBS_PG_URL` names; without either, a
//! throwaway server is started in a temporary directory if PostgreSQL's server programs are
//! installed (and stopped and removed at the end). The example checks every outcome and exits
//! non-zero if one is not as expected, so CI runs it as a smoke test of the store.

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use asyncjobs::postgres::PostgresStore;
use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, CancelOutcome, JobFilter, JobHandle, JobId,
    JobRegistry, JobRequest,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Instant};

/// Each instance's lease: short, so that B's death is noticed within a few seconds. Services
/// use the default (10 s) or longer: a shorter lease is renewed more often.
const LEASE: Duration = Duration::from_secs(2);

/// How often an instance writes its jobs' progress to the database.
const FLUSH: Duration = Duration::from_millis(100);

/// How far apart an export's progress steps are; an export has [`STEPS`] of them, more than the
/// demo lasts, so the exports still run when B is killed.
const STEP: Duration = Duration::from_millis(300);
const STEPS: u64 = 100;

/// How long the orchestrator waits for any one thing before it gives up and fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// Where the database URL is looked for when no argument gives it; children get it here.
const URL_VAR: &str = "ASYNCJOBS_PG_URL";

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Fails the run, saying what was expected, unless `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!("not as expected: {}", format!($($why)+)).into());
        }
    };
}

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Prints a line stamped with the time since the start.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{:>6.2}s  {}", START.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

#[tokio::main]
async fn main() -> ExitCode {
    LazyLock::force(&START);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name, jobs @ ..] = &args[..] {
        if flag == "--instance" {
            return match instance(name, jobs).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("instance {name}: {error}");
                    ExitCode::FAILURE
                }
            };
        }
    }

    let given = args
        .first()
        .cloned()
        .or_else(|| std::env::var(URL_VAR).ok())
        .filter(|url| !url.trim().is_empty());
    // Declared before the run, so that it outlives every instance and stops last.
    let server;
    let url = match given {
        Some(url) => url,
        None => {
            let Some(bin) = server_programs() else {
                eprintln!(
                    "This example needs a PostgreSQL database. Either pass its URL, e.g.\n\
                     \n    cargo run --example cluster --features postgres -- \
                     postgresql://user@127.0.0.1:5432/db\n\
                     \n(or set {URL_VAR}), or install PostgreSQL's server programs \
                     (e.g. `apt-get install postgresql`) and the example starts a throwaway \
                     server of its own."
                );
                return ExitCode::from(2);
            };
            say!(
                "No database URL given: starting a throwaway PostgreSQL server ({}).",
                bin.display()
            );
            match Throwaway::start(&bin) {
                Ok(started) => server = started,
                Err(why) => {
                    eprintln!("cannot start a throwaway PostgreSQL server: {why}");
                    return ExitCode::FAILURE;
                }
            }
            say!(
                "Server up at {}; it is stopped and removed at the end.",
                server.url()
            );
            server.url()
        }
    };

    match orchestrate(&url).await {
        Ok(()) => {
            say!("Every step went as expected.");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cluster example failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Instance A: starts the others and drives the demo.
async fn orchestrate(url: &str) -> Result<()> {
    let store = PostgresStore::builder(url)
        .lease(LEASE)
        .flush_interval(FLUSH)
        .connect()
        .await?;
    say!("A: connected as instance {}.", store.instance_id());
    let registry = JobRegistry::builder().store(store).build();

    let mut b = Instance::start("B", &["export-1", "export-2", "export-3"], url)?;
    let mut c = Instance::start("C", &["reindex"], url)?;
    for child in [&mut b, &mut c] {
        let ready = child.expect("READY").await?;
        say!("{}: connected as instance {}.", child.name, ready.join(" "));
    }

    say!("1. B starts three exports, C a reindex, A a summary; their ids:");
    let mut jobs = BTreeMap::new(); // id -> (instance, job)
    for child in [&mut b, &mut c] {
        for _ in 0..child.jobs {
            let [name, id] = <[String; 2]>::try_from(child.expect("JOB").await?)
                .map_err(|line| format!("a malformed JOB line: {line:?}"))?;
            jobs.insert(id.parse::<JobId>()?, (child.name, name));
        }
    }
    // A's job waits for a go, so that B surely sees it running in step 4.
    let (go, gate) = oneshot::channel::<()>();
    let summary = registry
        .spawn(request("summary"), |job| async move {
            job.set_progress(1, 2, "summary: waiting for its input");
            let _ = gate.await;
            job.set_progress(2, 2, "summary: writing");
            Ok::<_, std::io::Error>(json!({"concreteType": "org.example.Summary", "exports": 3}))
        })
        .await?;
    jobs.insert(summary, ("A", "summary".to_owned()));
    for (id, (instance, name)) in &jobs {
        say!("   {instance}  {id}  {name}");
    }
    let distinct: HashSet<u64> = jobs.keys().map(|id| id.as_u64()).collect();
    ensure!(distinct.len() == 5, "five distinct ids, got {jobs:?}");
    let id_of = |wanted: &str| {
        jobs.iter()
            .find(|(_, (_, n))| n == wanted)
            .map(|(id, _)| *id)
    };
    let export = |n: u32| id_of(&format!("export-{n}")).ok_or("B named no such export");
    let (export_1, export_2, export_3) = (export(1)?, export(2)?, export(3)?);
    let reindex = id_of("reindex").ok_or("C named no reindex")?;

    say!("2. A follows B's export-1 live (wait_for_change, each answer as B's progress lands):");
    let mut seen = read_soon(&registry, &export_1).await?;
    let mut progress = Vec::new();
    while progress.len() < 5 {
        seen = within(registry.wait_for_change(&export_1, &seen.etag)).await??;
        say!("   {}", line(&seen));
        ensure!(
            !seen.is_terminal(),
            "export-1 still running, got {}",
            line(&seen)
        );
        progress.push(seen.progress_current.unwrap_or(0));
    }
    ensure!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "export-1's progress to move forward, saw {progress:?}"
    );

    say!("3. A cancels B's export-2 (cancel); B hears it and stops the export:");
    read_soon(&registry, &export_2).await?;
    let asked = Instant::now();
    let outcome = registry.cancel(&export_2).await?;
    say!("   cancel: {outcome:?}");
    ensure!(
        outcome == CancelOutcome::Requested,
        "Requested, got {outcome:?}"
    );
    let canceled = within(registry.wait(&export_2)).await??;
    let cancel_latency = asked.elapsed();
    say!("   {}", line(&canceled));
    say!(
        "   A saw it end {} ms after asking.",
        cancel_latency.as_millis()
    );
    ensure!(
        canceled.job_state == AsynchJobState::Failed && canceled.job_canceling,
        "export-2 FAILED with jobCanceling, got {}",
        line(&canceled)
    );

    say!("4. B follows A's summary job (status, then wait):");
    b.send(&format!("FOLLOW {summary}")).await?;
    let first = b.expect("SEEN").await?;
    say!("   B sees {}", first[1..].join(" "));
    ensure!(
        first[0] == "PROCESSING",
        "B to see it PROCESSING, got {first:?}"
    );
    let _ = go.send(());
    let last = b.expect("FINISHED").await?;
    say!("   B sees {}", last[1..].join(" "));
    ensure!(last[0] == "COMPLETE", "B to see it COMPLETE, got {last:?}");

    say!("5. B is killed (SIGKILL) with export-1 and export-3 running; A waits for them:");
    b.child.kill().await?;
    let killed = Instant::now();
    let (lost_1, lost_3) =
        within(async { tokio::join!(registry.wait(&export_1), registry.wait(&export_3)) }).await?;
    let detection = killed.elapsed();
    for lost in [lost_1?, lost_3?] {
        say!("   {}", line(&lost));
        say!(
            "      errorMessage: {}",
            lost.error_message.as_deref().unwrap_or("-")
        );
        ensure!(
            lost.job_state == AsynchJobState::Failed
                && lost.exception.as_deref() == Some(exception::NODE_LOST),
            "FAILED with {}, got {}",
            exception::NODE_LOST,
            line(&lost)
        );
    }
    // The lease ran out within a lease of the kill; a reaper runs every third of a lease.
    let bound = LEASE + LEASE / 3 + Duration::from_secs(1);
    say!(
        "   Noticed {:.2} s after the kill (lease {} s).",
        detection.as_secs_f64(),
        LEASE.as_secs()
    );
    ensure!(
        detection <= bound,
        "B's death noticed within {bound:?}, took {detection:?}"
    );

    say!("6. C is stopped cleanly (its stdin closed): it cancels its reindex and leaves:");
    let stopped = c.stop().await?;
    say!("   C: shutdown: {}", stopped.join(" "));
    let reindexed = registry.status(&reindex).await?;
    say!("   {}", line(&reindexed));
    say!(
        "      errorMessage: {}",
        reindexed.error_message.as_deref().unwrap_or("-")
    );
    ensure!(
        reindexed.job_state == AsynchJobState::Failed
            && reindexed.job_canceling
            && reindexed.exception.as_deref() != Some(exception::NODE_LOST),
        "the reindex FAILED with jobCanceling at once, not lost, got {}",
        line(&reindexed)
    );

    say!("7. Every job of the cluster, as A lists them:");
    let listed = registry.list(&JobFilter::new()).await?.jobs;
    for status in listed.iter().filter(|s| jobs.contains_key(&s.job_id)) {
        let (instance, name) = &jobs[&status.job_id];
        say!("   {instance}  {name:<9} {}", line(status));
    }
    let ours = listed.iter().filter(|s| jobs.contains_key(&s.job_id));
    ensure!(ours.clone().count() == 5, "all five jobs listed");
    ensure!(ours.clone().all(|s| s.is_terminal()), "every job finished");
    let counts = registry.counts().await?;
    say!(
        "   counts: {} processing, {} complete, {} failed",
        counts.processing,
        counts.complete,
        counts.failed
    );
    let summary = registry.shutdown(Duration::from_secs(1)).await;
    say!("A: shut down ({summary}).");
    ensure!(summary.running == 0, "nothing running on A, got {summary}");

    say!(
        "Timings: cancel seen after {} ms; B's death noticed after {:.2} s; total {:.2} s.",
        cancel_latency.as_millis(),
        detection.as_secs_f64(),
        START.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Another instance's job as the store has it. A job's row is written a moment after its
/// start, not before `spawn` returns, so an id learned from another instance may be unknown
/// here for that moment: ask again, briefly.
async fn read_soon(registry: &JobRegistry, id: &JobId) -> Result<AsynchronousJobStatus> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match registry.status(id).await {
            Err(asyncjobs::Error::UnknownJob(_)) if Instant::now() < deadline => {
                sleep(Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// `future`'s output, or an error once [`PATIENCE`] has passed.
async fn within<T>(future: impl std::future::Future<Output = T>) -> Result<T> {
    timeout(PATIENCE, future)
        .await
        .map_err(|_| format!("nothing happened within {PATIENCE:?}").into())
}

fn line(status: &AsynchronousJobStatus) -> String {
    let progress = match (status.progress_current, status.progress_total) {
        (Some(current), Some(total)) => format!("{current}/{total}"),
        _ => "-".to_owned(),
    };
    let mut line = format!(
        "{} etag {:<3} {:<10} {progress:>6}",
        status.job_id,
        status.etag.to_string(),
        status.job_state.as_str()
    );
    if status.job_canceling {
        line.push_str(" jobCanceling");
    }
    match &status.exception {
        Some(exception) => line.push_str(&format!(" {exception}")),
        None => line.push_str(&format!(
            " {}",
            status.progress_message.as_deref().unwrap_or("")
        )),
    }
    line
}

fn request(name: &str) -> JobRequest {
    JobRequest::new(json!({"concreteType": "org.example.Request", "name": name}))
}

/// A job of [`STEPS`] steps that reports progress before each and stops when canceled.
async fn work(job: JobHandle, name: String) -> Result<Value, std::io::Error> {
    for step in 0..STEPS {
        job.set_progress(step, STEPS, format!("{name}: step {} of {STEPS}", step + 1));
        tokio::select! {
            () = job.cancelled() => {
                return Err(std::io::Error::other(format!("{name} canceled at step {}", step + 1)));
            }
            () = sleep(STEP) => {}
        }
    }
    Ok(json!({"concreteType": "org.example.Result", "name": name}))
}

/// Instances B and C: another process of this program, run with `--instance NAME JOB…`.
///
/// It talks to the orchestrator in lines: on stdout `READY <instance id>`, then
/// `JOB <name> <id>` for each job it starts; on stdin `FOLLOW <id>`, answered with
/// `SEEN <state>` and, once the job ended, `FINISHED <state>`. When its stdin closes (the
/// orchestrator is done with it, or died), it shuts down cleanly and says `STOPPED <summary>`.
async fn instance(name: &str, jobs: &[String]) -> Result<()> {
    let url = std::env::var(URL_VAR).map_err(|_| format!("no {URL_VAR}"))?;
    let store = PostgresStore::builder(url)
        .lease(LEASE)
        .flush_interval(FLUSH)
        .connect()
        .await?;
    println!("READY {}", store.instance_id());
    let registry = JobRegistry::builder().store(store).build();
    for job in jobs {
        let id = registry
            .spawn(request(job), |handle| work(handle, job.clone()))
            .await?;
        println!("JOB {job} {id}");
    }
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await? {
        let Some(id) = command.strip_prefix("FOLLOW ") else {
            return Err(format!("instance {name}: unknown command {command:?}").into());
        };
        let id: JobId = id.parse()?;
        let seen = read_soon(&registry, &id).await?;
        println!("SEEN {} {}", seen.job_state.as_str(), line(&seen));
        let done = registry.wait(&id).await?;
        println!("FINISHED {} {}", done.job_state.as_str(), line(&done));
    }
    let summary = registry.shutdown(Duration::from_secs(1)).await;
    println!("STOPPED {summary}");
    Ok(())
}

/// The orchestrator's side of a child instance.
struct Instance {
    name: &'static str,
    jobs: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Instance {
    fn start(name: &'static str, jobs: &[&str], url: &str) -> Result<Instance> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--instance")
            .arg(name)
            .args(jobs)
            .env(URL_VAR, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Killed if the orchestrator fails before it stops the child itself.
            .kill_on_drop(true)
            .spawn()?;
        Ok(Instance {
            name,
            jobs: jobs.len(),
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().ok_or("no stdout")?).lines(),
            child,
        })
    }

    /// The words after `marker` on the child's next line (at least one), which must start with
    /// it.
    async fn expect(&mut self, marker: &str) -> Result<Vec<String>> {
        let name = self.name;
        let line = within(self.stdout.next_line())
            .await
            .map_err(|_| format!("{name} sent no {marker} line within {PATIENCE:?}"))??
            .ok_or_else(|| format!("{name} exited before its {marker} line"))?;
        let mut words = line.split_whitespace().map(str::to_owned);
        let words: Vec<String> = match words.next() {
            Some(first) if first == marker => words.collect(),
            _ => Vec::new(),
        };
        if words.is_empty() {
            return Err(format!("{name} said {line:?}, not {marker} and its words").into());
        }
        Ok(words)
    }

    async fn send(&mut self, command: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin.write_all(format!("{command}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Closes the instance's stdin, which it takes as the order to shut down, and waits for it.
    async fn stop(&mut self) -> Result<Vec<String>> {
        drop(self.stdin.take());
        let summary = self.expect("STOPPED").await?;
        let status = within(self.child.wait()).await??;
        ensure!(
            status.success(),
            "{} to exit cleanly, got {status}",
            self.name
        );
        Ok(summary)
    }
}

/// The directory with PostgreSQL's `initdb` and `pg_ctl`: on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (where Debian's packages put them).
fn server_programs() -> Option<PathBuf> {
    let has_them = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_them(dir)));
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path())))
            .map(|(version, dir)| (version, dir.join("bin")))
            .filter(|(_, bin)| has_them(bin))
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

/// A PostgreSQL server for this run only, with its data in a temporary directory and the
/// database `postgres` (empty, as any new database would be). Not part of what the example
/// shows: a service is given its database's URL. Written here rather than taken from the tests'
/// harness (`tests/pg`), which serves many tests (a shared server, a database per test,
/// restarts) and is several times this size.
///
/// A watchdog shell waits on a pipe that only this process holds, and stops the server and
/// removes the directory when the pipe closes: when this is dropped, and also when the process
/// dies without dropping it (a panic that aborts, `timeout` killing it).
struct Throwaway {
    port: u16,
    watchdog: std::process::Child,
}

impl Throwaway {
    fn start(bin: &Path) -> Result<Throwaway, String> {
        let dir = std::env::temp_dir().join(format!("asyncjobs-cluster-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let data = dir.join("data");
        // PostgreSQL refuses to run as root: then it runs as the `postgres` user.
        let as_root = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata("/proc/self").map_err(|e| e.to_string())?,
        ) == 0;
        let server_command = |program: &str| {
            let mut command = if as_root {
                let mut runuser = std::process::Command::new("runuser");
                runuser
                    .args(["-u", "postgres", "--"])
                    .arg(bin.join(program));
                runuser
            } else {
                std::process::Command::new(bin.join(program))
            };
            command.current_dir(&dir).stdin(Stdio::null());
            command
        };
        let mut stop = server_command("pg_ctl");
        stop.arg("-D").arg(&data).args(["-m", "fast", "-w", "stop"]);
        let watchdog = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"read line; "$@" >/dev/null 2>&1; rm -rf "$0""#)
            .arg(&dir)
            .arg(stop.get_program())
            .args(stop.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in our process group: a Ctrl-C meant for us must not stop it before it works.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let mut server = Throwaway { port: 0, watchdog };

        let run = |mut command: std::process::Command| {
            let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
            match out.status.success() {
                true => Ok(()),
                false => Err(format!(
                    "{command:?} failed ({}): {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )),
            }
        };
        if as_root {
            let mut chown = std::process::Command::new("chown");
            chown.arg("postgres:").arg(&dir);
            run(chown)?;
        }
        let mut initdb = server_command("initdb");
        initdb.arg("-D").arg(&data);
        initdb.args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(initdb)?;
        // A port free a moment ago may be taken by the time the server binds it: try again.
        let mut why = String::new();
        for _ in 0..3 {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let mut start = server_command("pg_ctl");
            start.arg("-D").arg(&data).arg("-l").arg(dir.join("log"));
            start.args(["-w", "-o"]);
            start.arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
                server.port
            ));
            start.arg("start");
            match run(start) {
                Ok(()) => return Ok(server),
                Err(failed) => why = failed,
            }
        }
        Err(why)
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
        say!("Throwaway server stopped and its directory removed.");
    }
}
