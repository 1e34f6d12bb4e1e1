//! Following one job's status.

use std::sync::Arc;

use crate::engine::{Engine, Scope};
use crate::job::Job;
use crate::{AsynchronousJobStatus, Error, JobId};

/// Follows one job's status as it changes, from [`JobRegistry::watch`](crate::JobRegistry::watch).
///
/// The first [`next`](JobWatch::next) returns the current status at once; each later one waits
/// until the status has changed since the last one returned, and returns it at its latest (a slow
/// reader skips intermediate statuses rather than queueing them). After it has returned the final
/// status, `next` returns `None`. Watching never slows the job.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let id = registry.spawn(JobRequest::default(), |job: JobHandle| async move {
///     for i in 1..=3u64 {
///         job.set_progress(i, 3, "working");
///         tokio::task::yield_now().await;
///     }
///     Ok::<_, std::io::Error>(())
/// }).await?;
/// let mut watch = registry.watch(&id).await?;
/// while let Some(status) = watch.next().await {
///     println!("{} {:?}/{:?}", status.job_state, status.progress_current, status.progress_total);
/// }
/// # Ok(())
/// # }
/// ```
pub struct JobWatch {
    source: Source,
    seen: Option<u64>,
    done: bool,
    /// The `Stream`'s item under way. In a `Mutex` only so that the watch is `Sync` whatever the
    /// future is; it is reached through `&mut self` (`get_mut`), never locked.
    next: Option<std::sync::Mutex<NextStatus>>,
}

/// Where a watch reads the job's statuses.
enum Source {
    /// A job of this instance: from memory.
    Local(Arc<Job>),
    /// Another instance's job, through the shared store
    /// ([`watch`](crate::JobRegistry::watch)): the status last read.
    Remote(Box<Remote>),
}

/// Another instance's job, and who watches it.
struct Remote {
    engine: Arc<Engine>,
    scope: Scope,
    last: AsynchronousJobStatus,
}

type NextStatus =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<AsynchronousJobStatus>> + Send>>;

impl std::fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (job, remote) = match &self.source {
            Source::Local(job) => (job.id, false),
            Source::Remote(remote) => (remote.last.job_id, true),
        };
        f.debug_struct("JobWatch")
            .field("job", &job)
            .field("remote", &remote)
            .field("seen", &self.seen)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl JobWatch {
    /// A watch of a job held here, for a caller in `scope`.
    pub(crate) fn of_job(engine: &Engine, id: &JobId, scope: Scope) -> Result<Self, Error> {
        Ok(JobWatch::of(Source::Local(engine.find(id, scope)?)))
    }

    /// A watch of a job of any instance, for a caller in `scope`: of memory for a job held
    /// here, of the store for another instance's.
    pub(crate) async fn cluster(
        engine: &Arc<Engine>,
        id: &JobId,
        scope: Scope,
    ) -> Result<Self, Error> {
        match JobWatch::of_job(engine, id, scope) {
            Err(Error::UnknownJob(_)) => {
                // Held here after all (started meanwhile): its watch reads memory.
                let first = engine.cluster_status(id, scope).await?;
                match JobWatch::of_job(engine, id, scope) {
                    Ok(local) => Ok(local),
                    Err(_) => Ok(JobWatch::of(Source::Remote(Box::new(Remote {
                        engine: engine.clone(),
                        scope,
                        last: first,
                    })))),
                }
            }
            held => held,
        }
    }

    fn of(source: Source) -> Self {
        JobWatch {
            source,
            seen: None,
            done: false,
            next: None,
        }
    }

    /// The next status: the current one on the first call, then the latest after each change;
    /// `None` after the final status was returned.
    ///
    /// For another instance's job ([`watch`](crate::JobRegistry::watch)), a
    /// change is seen within about a flush interval of the store; while the store cannot be
    /// reached, `next` waits (and tries again every second) rather than end, and it returns
    /// `None` early only if the job is dropped by retention before its final status was read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped before it resolves, the next call returns the change instead.
    pub async fn next(&mut self) -> Option<AsynchronousJobStatus> {
        if self.done {
            return None;
        }
        let next = self.next_status();
        let status = next.await;
        self.returned(status.as_ref());
        status
    }

    /// The future of the next status after the one last returned.
    fn next_status(&self) -> NextStatus {
        let seen = self.seen;
        match &self.source {
            Source::Local(job) => {
                let job = job.clone();
                Box::pin(async move { Some(job.changed_from(seen).await) })
            }
            Source::Remote(remote) if seen.is_none() => {
                let first = remote.last.clone();
                Box::pin(async move { Some(first) })
            }
            Source::Remote(remote) => {
                let (engine, scope) = (remote.engine.clone(), remote.scope);
                let (id, etag) = (remote.last.job_id, remote.last.etag.clone());
                Box::pin(async move { engine.cluster_changed(id, etag, scope).await })
            }
        }
    }

    /// Records what [`next`](JobWatch::next) returned.
    fn returned(&mut self, status: Option<&AsynchronousJobStatus>) {
        let Some(status) = status else {
            self.done = true;
            return;
        };
        self.seen = Some(status.etag.version().unwrap_or(u64::MAX));
        self.done = status.is_terminal();
        if let Source::Remote(remote) = &mut self.source {
            remote.last = status.clone();
        }
    }

    /// A snapshot of the job's status now, whether or not it changed. For another instance's
    /// job, the status last read from the store (this call never waits).
    pub fn latest(&self) -> AsynchronousJobStatus {
        match &self.source {
            Source::Local(job) => job.snapshot(),
            Source::Remote(remote) => remote.last.clone(),
        }
    }
}

/// A [`JobWatch`] is a `Stream` of the job's statuses: the current one, then
/// the latest after each change, ending after the final one, as [`next`](JobWatch::next).
impl futures_core::Stream for JobWatch {
    type Item = AsynchronousJobStatus;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return std::task::Poll::Ready(None);
        }
        if this.next.is_none() {
            this.next = Some(std::sync::Mutex::new(this.next_status()));
        }
        let next = this
            .next
            .as_mut()
            .expect("set above")
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let status = std::task::ready!(next.as_mut().poll(cx));
        this.next = None;
        this.returned(status.as_ref());
        std::task::Poll::Ready(status)
    }
}
