//! The observer hook: a way for an application (or a store) to be told of every event of every
//! job's life.

use crate::{AsynchJobState, AsynchronousJobStatus, Etag, JobId};

/// Told of every event of every job's life in a registry: created, changed, finished, removed.
/// Set with [`JobRegistryBuilder::observe`](crate::JobRegistryBuilder::observe).
///
/// Events of one job reach an observer one at a time and in etag order, after the job's status
/// lock is released (an observer may read the status through [`JobEvent::status`]). Events of
/// different jobs may arrive concurrently from different threads.
///
/// # Rules for an observer
///
/// - **Do not block.** `on_event` runs on the thread that changed the job (the job's own task for
///   progress, the caller of `cancel` for a cancel), or on a thread that was still delivering the
///   job's earlier event, which then delivers the later ones too. A slow observer holds up that
///   thread, not the job's next change. Do slow work elsewhere: hand the event to a channel or a
///   task, and coalesce by job id (keep the latest etag) rather than queueing every change.
/// - **Keep it cheap.** With an observer set, every `set_progress` that changes something calls
///   it. The event carries the id, user, etag and state without building anything; take a
///   [`status`](JobEvent::status) snapshot only when you need the whole document.
/// - **A panic is contained.** If `on_event` panics, the panic is caught (and logged through
///   `tracing` with the `tracing` feature); the job, the registry and the other observers go on
///   as if nothing happened.
/// - Changing a job from inside `on_event` (a cancel, progress) works and never deadlocks; the
///   change's event comes after the one being told, to every observer, in etag order.
///
/// Any `Fn(&JobEvent<'_>) + Send + Sync + 'static` is an observer.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use std::sync::{Arc, Mutex};
/// use asyncjobs::{JobEvent, JobEventKind, JobRegistry, JobRequest};
///
/// // "Save every final status": here, into a vector.
/// let saved = Arc::new(Mutex::new(Vec::new()));
/// let sink = saved.clone();
/// let registry = JobRegistry::builder()
///     .observe(move |event: &JobEvent<'_>| {
///         if event.kind() == JobEventKind::Finished {
///             sink.lock().unwrap().push(event.status());
///         }
///     })
///     .build();
/// let id = registry.spawn(JobRequest::default(), |_job| async { Ok::<_, std::io::Error>(()) }).await?;
/// registry.wait(&id).await?;
/// assert_eq!(saved.lock().unwrap()[0].job_id, id);
/// # Ok(())
/// # }
/// ```
pub trait StatusObserver: Send + Sync + 'static {
    /// Called for each event; see the trait's rules.
    fn on_event(&self, event: &JobEvent<'_>);
}

impl<F> StatusObserver for F
where
    F: Fn(&JobEvent<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &JobEvent<'_>) {
        self(event)
    }
}

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobEventKind {
    /// The job was spawned: it is PROCESSING (running, or queued under the concurrency limit).
    /// Always the job's first event.
    Created,
    /// Its status changed while PROCESSING: progress, the cancel flag, a new place in the queue
    /// (with the [fair order](crate::JobRegistryBuilder::fair_queue)), leaving the queue.
    Changed,
    /// It finished, COMPLETE or FAILED: its final status, which never changes again.
    Finished,
    /// Retention dropped its finished status: the registry no longer knows the id. Always the
    /// job's last event.
    Removed,
}

/// One event of a job's life, as told to a [`StatusObserver`]: cheap to make, since it builds
/// no snapshot until [`status`](JobEvent::status) is called.
pub struct JobEvent<'a> {
    pub(crate) kind: JobEventKind,
    pub(crate) id: JobId,
    pub(crate) user: Option<u64>,
    pub(crate) version: u64,
    pub(crate) state: AsynchJobState,
    pub(crate) canceling: bool,
    pub(crate) source: &'a dyn StatusSource,
}

/// What a [`JobEvent`] reads the whole status from.
pub(crate) trait StatusSource: Sync {
    fn snapshot(&self) -> AsynchronousJobStatus;

    /// The job's name, if it was given one.
    fn name(&self) -> Option<&str> {
        None
    }
}

impl JobEvent<'_> {
    /// What happened.
    pub fn kind(&self) -> JobEventKind {
        self.kind
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.id
    }

    /// The user who started the job, if one was given.
    pub fn started_by(&self) -> Option<u64> {
        self.user
    }

    /// The job's etag after this event (for [`Removed`](JobEventKind::Removed), its final etag).
    pub fn etag(&self) -> Etag {
        Etag::from_version(self.version)
    }

    /// The etag as the job's change counter: it grows by one with each change of the job, so
    /// an observer that coalesces can keep the highest it saw.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The job's state after this event.
    pub fn state(&self) -> AsynchJobState {
        self.state
    }

    /// Whether the job has been asked to cancel (`jobCanceling`) as of this event.
    pub fn job_canceling(&self) -> bool {
        self.canceling
    }

    /// A snapshot of the job's whole status as of this event: while an observer runs, the job
    /// does not change further (except by changes the observer itself makes). This copies the
    /// status; bodies are shared, not copied.
    pub fn status(&self) -> AsynchronousJobStatus {
        self.source.snapshot()
    }

    /// The job's [name](crate::JobRequest::name), if it was given one: for the store, which
    /// keeps it beside the status.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn name(&self) -> Option<&str> {
        self.source.name()
    }
}

impl std::fmt::Debug for JobEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEvent")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("user", &self.user)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("canceling", &self.canceling)
            .finish_non_exhaustive()
    }
}
