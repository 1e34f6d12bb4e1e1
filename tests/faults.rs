//! Faults: jobs that panic (in their body, their `Drop`, their error's `Display`, their result's
//! `Serialize`), a job that never yields, a handle used after its job ended, a registry dropped
//! while its jobs run, and a shutdown while thousands of jobs run and others read. None may poison
//! the registry, wedge a lock, or leave a job PROCESSING: after each, the registry answers every
//! call promptly and runs new jobs.

use std::future::Future;
use std::panic::PanicHookInfo;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use asyncjobs::{
    exception, AsynchJobState, AsynchronousJobStatus, CancelOutcome, Error, JobFilter, JobHandle,
    JobId, JobRegistry, JobRequest,
};
use serde_json::json;

mod common;
use common::{panic_message, quiet_planned_panics};

const PLANNED: &str = "planned fault";

/// The faults this file causes on purpose: a message that starts with `PLANNED`, or a
/// `NastyPayload`, which has no message.
fn planned(info: &PanicHookInfo<'_>) -> bool {
    panic_message(info).is_some_and(|m| m.starts_with(PLANNED))
        || info.payload().is::<NastyPayload>()
}

/// Runs `f` on a plain thread and fails if it does not return within 10 s: a call that takes a
/// wedged lock would hang forever.
fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).ok());
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} did not return: a lock is wedged"))
}

/// The registry answers every kind of call promptly, its numbers agree, nothing is PROCESSING
/// unless `running` jobs are, and (unless shut down) it runs a new job to its end.
async fn assert_healthy(registry: &JobRegistry, running: usize) {
    let r = registry.clone();
    let (counts, all, processing, len) = promptly("reading the registry", move || {
        let counts = r.local().counts();
        let every = JobFilter::new().limit(usize::MAX);
        let all = r.local().list(&every).jobs;
        let processing = r
            .local()
            .list(&every.state(AsynchJobState::Processing))
            .jobs;
        (counts, all, processing, r.local().len())
    });
    assert_eq!(counts.processing, running, "{counts}");
    assert_eq!(processing.len(), running);
    assert_eq!((counts.total(), len), (all.len(), all.len()), "{counts}");
    for s in all.iter().take(100) {
        let id = s.job_id;
        let r = registry.clone();
        let again = promptly("status", move || r.local().status(&id));
        assert_eq!(again.map(|a| a.job_state), Ok(s.job_state));
    }
    if !registry.is_shut_down() {
        let id = registry
            .spawn(JobRequest::default(), |job: JobHandle| async move {
                job.set_progress(1, 1, "healthy");
                Ok::<_, &str>("still works")
            })
            .await
            .unwrap();
        let s = tokio::time::timeout(Duration::from_secs(10), registry.wait(&id))
            .await
            .expect("a new job runs")
            .unwrap();
        assert_eq!(s.job_state, AsynchJobState::Complete);
    }
}

/// The job's final status; fails rather than hangs if it never comes (10 s, or at once on a
/// paused clock with nothing else to do).
async fn ended(registry: &JobRegistry, id: &JobId) -> AsynchronousJobStatus {
    tokio::time::timeout(Duration::from_secs(10), registry.wait(id))
        .await
        .unwrap_or_else(|_| panic!("job {id} never ended"))
        .unwrap()
}

/// Completes when its inner future does; its `Drop` panics, whenever it is dropped.
struct PanicsOnDrop<F>(Pin<Box<F>>);

impl<F: Future> Future for PanicsOnDrop<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<F> Drop for PanicsOnDrop<F> {
    fn drop(&mut self) {
        panic!("{PLANNED}: a job's Drop");
    }
}

/// A guard whose `Drop` panics: held by a job's body, it panics while the body is polled.
struct Grenade;

impl Drop for Grenade {
    fn drop(&mut self) {
        panic!("{PLANNED}: a value the job held");
    }
}

/// A panic payload whose own `Drop` panics too.
struct NastyPayload;

impl Drop for NastyPayload {
    fn drop(&mut self) {
        panic!("{PLANNED}: dropping a panic payload");
    }
}

const TASK_PANICKED: &str = "job's task panicked while ending the job (e.g. in the job's Drop)";

#[tokio::test(start_paused = true)]
async fn panics_in_a_jobs_body_end_it_failed() {
    quiet_planned_panics(planned);
    let registry = JobRegistry::new();
    let str_panic = registry
        .spawn(JobRequest::default(), |_| async {
            panic!("planned fault: str") as Result<(), &str>
        })
        .await
        .unwrap();
    let string_panic = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(2, 5, "half way");
            tokio::task::yield_now().await;
            panic!("{PLANNED}: job {}", job.id()) as Result<(), &str>
        })
        .await
        .unwrap();
    let other_payload = registry
        .spawn(JobRequest::default(), |_| async {
            std::panic::panic_any(NastyPayload) as Result<(), &str>
        })
        .await
        .unwrap();
    let held_value = registry
        .spawn(JobRequest::default(), |_| async {
            let _held = Grenade;
            Ok::<_, &str>(1)
        })
        .await
        .unwrap();
    let in_the_closure = registry
        .spawn(
            JobRequest::default(),
            |_| -> std::future::Ready<Result<(), &'static str>> {
                panic!("{PLANNED}: the closure")
            },
        )
        .await
        .unwrap();

    let expect = [
        (str_panic, "planned fault: str".to_owned()),
        (string_panic, format!("{PLANNED}: job {string_panic}")),
        (other_payload, "job panicked".to_owned()),
        (held_value, format!("{PLANNED}: a value the job held")),
        (in_the_closure, format!("{PLANNED}: the closure")),
    ];
    for (id, message) in expect {
        let s = ended(&registry, &id).await;
        assert_eq!(s.job_state, AsynchJobState::Failed);
        assert_eq!(s.exception.as_deref(), Some(exception::PANICKED));
        assert_eq!(s.error_message.as_deref(), Some(message.as_str()));
        assert_eq!((s.error_details, s.response_body), (None, None));
    }
    let s = registry.status(&string_panic).await.unwrap();
    assert_eq!(
        (s.progress_current, s.progress_message.as_deref()),
        (Some(2), Some("half way")),
        "a panic keeps the last progress"
    );
    assert_healthy(&registry, 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_jobs_drop_that_panics_ends_it_failed_however_it_ends() {
    quiet_planned_panics(planned);
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(1))
        .max_running(3)
        .build();
    // Finished its work, then panicked when dropped: the result is lost.
    let after_ok = registry
        .spawn(JobRequest::default(), |_| {
            PanicsOnDrop(Box::pin(async { Ok::<_, &str>(1) }))
        })
        .await
        .unwrap();
    let after_err = registry
        .spawn(JobRequest::default(), |_| {
            PanicsOnDrop(Box::pin(async { Err::<(), _>("failed") }))
        })
        .await
        .unwrap();
    // Ignores its cancel: dropped after the grace, and panics then.
    let after_grace = registry
        .spawn(JobRequest::default(), |_| {
            PanicsOnDrop(Box::pin(std::future::pending::<Result<(), &str>>()))
        })
        .await
        .unwrap();
    // Queued, canceled, and dropped without ever running: it had already ended.
    let queued = registry
        .spawn(JobRequest::default(), |_| {
            PanicsOnDrop(Box::pin(async { Ok::<_, &str>(()) }))
        })
        .await
        .unwrap();
    assert_eq!(registry.cancel(&queued).await, Ok(CancelOutcome::Requested));
    tokio::task::yield_now().await;
    assert_eq!(
        registry.cancel(&after_grace).await,
        Ok(CancelOutcome::Requested)
    );

    for id in [after_ok, after_err, after_grace] {
        let s = ended(&registry, &id).await;
        assert_eq!(s.job_state, AsynchJobState::Failed, "{id}");
        assert_eq!(s.exception.as_deref(), Some(exception::PANICKED));
        assert_eq!(s.error_message.as_deref(), Some(TASK_PANICKED));
        assert_eq!(s.response_body, None);
    }
    assert!(registry.status(&after_grace).await.unwrap().job_canceling);
    let s = ended(&registry, &queued).await;
    assert_eq!(s.exception.as_deref(), Some(exception::CANCELED));
    assert_eq!(
        s.error_message.as_deref(),
        Some("job was canceled while queued, before it started")
    );
    // Every slot of the limit came back: three jobs run at once again.
    let gates: Vec<_> = (0..3)
        .map(|_| {
            registry
                .local()
                .spawn(JobRequest::default(), |job: JobHandle| async move {
                    job.set_progress(1, 1, "running");
                    job.cancelled().await;
                    Err::<(), _>("stopped")
                })
                .unwrap()
        })
        .collect();
    tokio::task::yield_now().await;
    for id in &gates {
        let s = registry.status(id).await.unwrap();
        assert_eq!(s.progress_message.as_deref(), Some("running"), "not queued");
        registry.cancel(id).await.unwrap();
    }
    for id in &gates {
        ended(&registry, id).await;
    }
    assert_healthy(&registry, 0).await;
}

#[derive(Debug)]
struct DisplayPanics;

impl std::fmt::Display for DisplayPanics {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("{PLANNED}: an error's Display")
    }
}

impl std::error::Error for DisplayPanics {}

/// An error whose own `Display` is fine but whose cause's panics.
#[derive(Debug)]
struct CauseDisplayPanics(DisplayPanics);

impl std::fmt::Display for CauseDisplayPanics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("export failed")
    }
}

impl std::error::Error for CauseDisplayPanics {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn an_error_whose_display_panics_ends_the_job_failed() {
    quiet_planned_panics(planned);
    let registry = JobRegistry::new();
    let own = registry
        .spawn(JobRequest::default(), |_| async {
            Err::<(), _>(DisplayPanics)
        })
        .await
        .unwrap();
    let cause = registry
        .spawn(JobRequest::default(), |_| async {
            Err::<(), _>(CauseDisplayPanics(DisplayPanics))
        })
        .await
        .unwrap();
    for (id, type_name) in [
        (own, std::any::type_name::<DisplayPanics>()),
        (cause, std::any::type_name::<CauseDisplayPanics>()),
    ] {
        let s = ended(&registry, &id).await;
        assert_eq!(s.job_state, AsynchJobState::Failed);
        assert_eq!(
            s.error_message.as_deref(),
            Some("job failed, and formatting its error panicked")
        );
        assert_eq!(s.error_details, None);
        assert_eq!(s.exception.as_deref(), Some(type_name));
    }
    assert_healthy(&registry, 0).await;
}

#[derive(Debug)]
struct DropPanics;

impl std::fmt::Display for DropPanics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("disk full")
    }
}

impl std::error::Error for DropPanics {}

impl Drop for DropPanics {
    fn drop(&mut self) {
        panic!("{PLANNED}: an error's Drop");
    }
}

#[tokio::test(start_paused = true)]
async fn an_error_whose_drop_panics_ends_the_job_failed() {
    quiet_planned_panics(planned);
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_| async {
            Err::<(), _>(DropPanics)
        })
        .await
        .unwrap();
    let s = ended(&registry, &id).await;
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(
        s.exception.as_deref(),
        Some(std::any::type_name::<DropPanics>())
    );
    assert_healthy(&registry, 0).await;
}

/// Reduced from `an_error_whose_drop_panics_ends_the_job_failed`, where it was found: the error
/// was formatted and then dropped inside one `catch_unwind`, so a panic in its `Drop` threw away
/// the message and details already formatted, and the status claimed that formatting panicked.
#[tokio::test(start_paused = true)]
async fn an_error_whose_drop_panics_keeps_its_message() {
    quiet_planned_panics(planned);
    let registry = JobRegistry::new();
    let id = registry
        .spawn(JobRequest::default(), |_| async {
            Err::<(), _>(DropPanics)
        })
        .await
        .unwrap();
    let s = ended(&registry, &id).await;
    assert_eq!(s.error_message.as_deref(), Some("disk full"));
    assert_eq!(s.error_details.as_deref(), Some("disk full"));
}

struct SerializePanics;

impl serde::Serialize for SerializePanics {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("{PLANNED}: a result's Serialize")
    }
}

/// Serializes fine; panics when dropped.
struct ResultDropPanics;

impl serde::Serialize for ResultDropPanics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("fine")
    }
}

impl Drop for ResultDropPanics {
    fn drop(&mut self) {
        panic!("{PLANNED}: a result's Drop");
    }
}

#[tokio::test(start_paused = true)]
async fn a_result_whose_serialize_or_drop_panics_ends_the_job_failed() {
    quiet_planned_panics(planned);
    let registry = JobRegistry::new();
    let serialize = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(9, 10, "almost");
            Ok::<_, &str>(SerializePanics)
        })
        .await
        .unwrap();
    let dropped = registry
        .spawn(JobRequest::default(), |_| async {
            Ok::<_, &str>(ResultDropPanics)
        })
        .await
        .unwrap();

    let s = ended(&registry, &serialize).await;
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(
        s.exception.as_deref(),
        Some(exception::RESPONSE_NOT_SERIALIZABLE)
    );
    assert_eq!(
        s.error_message.as_deref(),
        Some("job result could not be serialized: its Serialize panicked")
    );
    assert_eq!(
        (s.progress_current, s.response_body),
        (Some(9), None),
        "not complete: progress stays where it was"
    );

    let s = ended(&registry, &dropped).await;
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(s.exception.as_deref(), Some(exception::PANICKED));
    assert_eq!(s.error_message.as_deref(), Some(TASK_PANICKED));
    assert_eq!(s.response_body, None);
    assert_healthy(&registry, 0).await;
}

/// Sets its flag when dropped: releases a blocked job even if the test fails first.
struct Release(Arc<AtomicBool>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A job that blocks its worker thread without ever yielding until `release` is set (or 60 s
/// pass, so that the test always ends), then yields once, then waits forever.
async fn never_yields(
    release: Arc<AtomicBool>,
    blocking: Arc<AtomicBool>,
) -> Result<(), &'static str> {
    blocking.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    while !release.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    tokio::task::yield_now().await;
    std::future::pending().await
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_job_that_never_yields_wedges_nothing_and_a_shutdown_ends_it() {
    let runtime = multi_thread_runtime();
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_millis(10))
        .runtime(runtime.handle().clone())
        .build();
    let release = Arc::new(AtomicBool::new(false));
    let _release_on_exit = Release(release.clone());
    let blocking = Arc::new(AtomicBool::new(false));
    let id = registry
        .local()
        .spawn(JobRequest::default(), |_| {
            never_yields(release.clone(), blocking.clone())
        })
        .unwrap();
    wait_until("the job starts", || blocking.load(Ordering::SeqCst));

    // Everything answers while it blocks its thread, and other jobs run on the other one.
    let r = registry.clone();
    let s = promptly("status", move || r.local().status(&id)).unwrap();
    assert_eq!(s.job_state, AsynchJobState::Processing);
    let r = registry.clone();
    assert_eq!(
        promptly("cancel", move || r.local().cancel(&id)),
        Ok(CancelOutcome::Requested)
    );
    assert!(
        registry.local().status(&id).unwrap().job_canceling,
        "the flag shows at once"
    );
    let other = registry
        .local()
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(2) })
        .unwrap();
    let s = runtime.block_on(ended(&registry, &other));
    assert_eq!(s.job_state, AsynchJobState::Complete);
    // Its grace runs out, but a job that never yields cannot be stopped by dropping its future.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        registry.local().status(&id).unwrap().job_state,
        AsynchJobState::Processing
    );

    let summary = runtime.block_on(registry.shutdown(Duration::from_millis(50)));
    assert_eq!(
        (
            summary.running,
            summary.finished_within_grace,
            summary.stopped
        ),
        (1, 0, 1)
    );
    assert_eq!(
        summary.still_running, 1,
        "the operator is told its code runs on"
    );
    assert!(
        summary.to_string().ends_with("(1 still running code)"),
        "{summary}"
    );
    let stopped = registry.local().status(&id).unwrap();
    assert_eq!(stopped.job_state, AsynchJobState::Failed);
    assert_eq!(stopped.exception.as_deref(), Some(exception::CANCELED));
    assert_eq!(
        stopped.error_message.as_deref(),
        Some("job was stopped by the registry's shutdown")
    );
    runtime.block_on(assert_healthy(&registry, 0));

    // Released, it yields: its task ends, and its status does not change again.
    release.store(true, Ordering::SeqCst);
    let metrics = runtime.metrics();
    wait_until("the blocked task ends", || metrics.num_alive_tasks() == 0);
    assert_eq!(registry.local().status(&id).unwrap(), stopped);
}

#[test]
fn a_job_that_never_yields_is_stopped_at_its_first_yield_after_the_grace() {
    let runtime = multi_thread_runtime();
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_millis(10))
        .runtime(runtime.handle().clone())
        .build();
    let release = Arc::new(AtomicBool::new(false));
    let _release_on_exit = Release(release.clone());
    let blocking = Arc::new(AtomicBool::new(false));
    let id = registry
        .local()
        .spawn(JobRequest::default(), |_| {
            never_yields(release.clone(), blocking.clone())
        })
        .unwrap();
    wait_until("the job starts", || blocking.load(Ordering::SeqCst));
    registry.local().cancel(&id).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        registry.local().status(&id).unwrap().job_state,
        AsynchJobState::Processing
    );
    release.store(true, Ordering::SeqCst);
    let s = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), registry.wait(&id)).await })
        .expect("stopped once it yields")
        .unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(s.exception.as_deref(), Some(exception::CANCELED));
    assert_eq!(
        s.error_message.as_deref(),
        Some("job was canceled and did not stop within its 10ms grace period, so it was stopped")
    );
    runtime.block_on(assert_healthy(&registry, 0));
}

#[tokio::test(start_paused = true)]
async fn a_handle_used_after_its_job_ended_changes_nothing() {
    let registry = JobRegistry::builder().keep_finished_at_most(1).build();
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| {
            handle_tx.send(job.clone()).unwrap();
            async move {
                job.set_progress(3, 3, "done");
                Ok::<_, &str>("result")
            }
        })
        .await
        .unwrap();
    let handle = handle_rx.await.unwrap();
    let done = ended(&registry, &id).await;

    // Reported through the handle afterwards, from the job's own task or any other: ignored.
    assert!(!handle.set_progress(4, 3, "late"));
    let spinner = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut changed = 0;
            for i in 0..1000u64 {
                changed += usize::from(handle.set_progress(i, 1000, "from a stray task"));
                tokio::task::yield_now().await;
            }
            changed
        })
    };
    assert_eq!(spinner.await.unwrap(), 0);
    assert_eq!(
        registry.status(&id).await.unwrap(),
        done,
        "not even the etag moved"
    );
    assert_eq!(handle.status(), done);
    assert_eq!((handle.id(), handle.started_by()), (id, None));
    assert_eq!(
        registry.cancel(&id).await,
        Ok(CancelOutcome::AlreadyFinished)
    );
    assert!(
        !handle.is_canceling(),
        "canceling a finished job fires nothing"
    );
    let sub = handle.cancellation_token();
    sub.cancel();
    assert!(!handle.is_canceling(), "a sub-task's token is its own");

    // Dropped by retention: the registry no longer knows the job, its handle still reads it.
    let next = registry
        .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    ended(&registry, &next).await;
    assert_eq!(registry.status(&id).await, Err(Error::UnknownJob(id)));
    assert_eq!(handle.status(), done);
    assert!(!handle.set_progress(5, 5, "later still"));

    // A shutdown fires every token, an ended job's included (a sub-task holding the handle
    // stops too); its status stays as it ended.
    registry.shutdown(Duration::from_secs(1)).await;
    assert!(handle.is_canceling());
    handle.cancelled().await;
    assert_eq!(handle.status(), done);
    assert!(!handle.status().job_canceling);
    assert_healthy(&registry, 0).await;
}

/// Sets its flag when dropped: tells that a job's future (which owns it) was dropped.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_registry_while_jobs_run_lets_each_end_as_it_would() {
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_secs(2))
        .max_running(2)
        .build();
    let dropped = Arc::new(AtomicUsize::new(0));
    let handles = Arc::new(std::sync::Mutex::new(Vec::new()));
    let spawn = |request: JobRequest, plan: u8| {
        let (dropped, handles) = (Dropped(dropped.clone()), handles.clone());
        registry
            .local()
            .spawn(request, move |job: JobHandle| {
                handles.lock().unwrap().push(job.clone());
                async move {
                    let _owned = dropped;
                    match plan {
                        // Works for 10 s, then completes.
                        0 => {
                            tokio::time::sleep(Duration::from_secs(10)).await;
                            Ok::<_, &str>("done")
                        }
                        // Runs over its 5 s time limit and ignores the token.
                        1 => std::future::pending().await,
                        // Queued behind the two: starts when a slot frees.
                        _ => {
                            job.set_progress(1, 1, "ran");
                            Ok("queued, then ran")
                        }
                    }
                }
            })
            .unwrap()
    };
    let worker = spawn(JobRequest::default(), 0);
    let overrun = spawn(JobRequest::default().time_limit(Duration::from_secs(5)), 1);
    let queued = spawn(JobRequest::default(), 2);
    let mut watch = registry.watch(&queued).await.unwrap();
    let watch_first = watch.next().await.unwrap();
    assert!(watch_first
        .progress_message
        .as_deref()
        .unwrap()
        .starts_with("Queued:"));
    let handles: Vec<JobHandle> = handles.lock().unwrap().clone();
    drop(registry);

    // The watch outlives the registry and follows the job to its end.
    let mut last = watch_first;
    let follow = async {
        while let Some(s) = watch.next().await {
            last = s;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("the watch reaches the end");
    assert_eq!(last.job_state, AsynchJobState::Complete);
    assert_eq!(last.progress_message.as_deref(), Some("Complete"));

    for _ in 0..600 {
        if handles.iter().all(|h| h.status().is_terminal()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<AsynchronousJobStatus> = handles.iter().map(JobHandle::status).collect();
    assert_eq!(
        statuses.iter().map(|s| s.job_id).collect::<Vec<_>>(),
        [worker, overrun, queued]
    );
    assert_eq!(
        (statuses[0].job_state, statuses[0].runtime_ms),
        (AsynchJobState::Complete, 10_000)
    );
    assert_eq!(statuses[1].exception.as_deref(), Some(exception::TIMED_OUT));
    assert_eq!(
        statuses[1].runtime_ms, 7_000,
        "the time limit and the grace still applied"
    );
    assert_eq!(
        (statuses[2].job_state, statuses[2].runtime_ms),
        (AsynchJobState::Complete, 7_000),
        "the limit still applied: it started when the overrunning job was stopped"
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        3,
        "every job's future was dropped"
    );
    let metrics = tokio::runtime::Handle::current().metrics();
    while metrics.num_alive_tasks() > 0 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_amid_thousands_of_faulty_jobs_and_readers_leaves_nothing_running() {
    quiet_planned_panics(planned);
    const JOBS: usize = 3_000;
    let baseline_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let registry = JobRegistry::builder()
        .cancel_grace(Duration::from_millis(50))
        .max_running(500)
        .build();
    let mut feed = registry.watch_all();
    let feed_reader = tokio::spawn(async move {
        let mut finals = std::collections::HashSet::new();
        while let Some(s) = feed.next().await {
            if s.is_terminal() {
                finals.insert(s.job_id);
            }
        }
        finals
    });
    let mut ids: Vec<JobId> = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let id = match i % 6 {
            // Stops on cancel.
            0 => {
                registry
                    .spawn(JobRequest::default(), |job: JobHandle| async move {
                        job.cancelled().await;
                        Err::<(), _>("stopped")
                    })
                    .await
            }
            // Ignores cancel.
            1 => {
                registry
                    .spawn(JobRequest::default(), |_| async {
                        std::future::pending::<Result<(), &str>>().await
                    })
                    .await
            }
            // Blocks its thread a little at each poll, yielding in between.
            2 => {
                registry
                    .spawn(JobRequest::default(), |job: JobHandle| async move {
                        for step in 0u64.. {
                            std::thread::sleep(Duration::from_micros(200));
                            job.set_progress(step, 0, "grinding");
                            tokio::task::yield_now().await;
                        }
                        Ok::<_, &str>(())
                    })
                    .await
            }
            // Panics when canceled.
            3 => {
                registry
                    .spawn(JobRequest::default(), |job: JobHandle| async move {
                        job.cancelled().await;
                        panic!("{PLANNED}: on cancel") as Result<(), &str>
                    })
                    .await
            }
            // Panics when dropped.
            4 => {
                registry
                    .spawn(JobRequest::default(), |_| {
                        PanicsOnDrop(Box::pin(std::future::pending::<Result<(), &str>>()))
                    })
                    .await
            }
            // Finishes by itself, one way or another.
            _ => {
                registry
                    .spawn(JobRequest::default(), move |_| async move {
                        tokio::task::yield_now().await;
                        if i % 12 == 5 {
                            Ok(json!(i))
                        } else {
                            Err(format!("job {i} failed"))
                        }
                    })
                    .await
            }
        };
        ids.push(id.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|k| {
            let (registry, ids, stop) = (registry.clone(), ids.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                let mut n = k;
                while !stop.load(Ordering::SeqCst) {
                    n = (n * 7 + 13) % ids.len();
                    let id = &ids[n];
                    match k {
                        0 => {
                            registry.status(id).await.unwrap();
                        }
                        1 => {
                            registry
                                .list(&JobFilter::new().state(AsynchJobState::Processing))
                                .await
                                .unwrap();
                            registry.counts().await.unwrap();
                        }
                        _ => {
                            let seen = registry.status(id).await.unwrap();
                            let wait = registry.wait_for_change(id, &seen.etag);
                            let _ = tokio::time::timeout(Duration::from_millis(1), wait).await;
                        }
                    }
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let summary = registry.shutdown(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    assert!(summary.running > 0);
    assert_eq!(
        summary.running,
        summary.finished_within_grace + summary.stopped
    );
    assert_healthy(&registry, 0).await;
    assert_eq!(
        registry
            .spawn(JobRequest::default(), |_| async { Ok::<_, &str>(()) })
            .await,
        Err(Error::ShutDown)
    );
    for (i, id) in ids.iter().enumerate() {
        let s = ended(&registry, id).await;
        assert!(s.is_terminal(), "job {i}");
        if i % 6 < 5 {
            assert!(s.job_canceling, "job {i}: {s:?}");
        }
    }
    let finals = feed_reader.await.unwrap();
    assert_eq!(
        finals.len(),
        JOBS,
        "the feed got every final status, then ended"
    );
    drop(registry);
    let metrics = tokio::runtime::Handle::current().metrics();
    let waited = std::time::Instant::now();
    while metrics.num_alive_tasks() > baseline_tasks {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "{} tasks left",
            metrics.num_alive_tasks() - baseline_tasks
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
