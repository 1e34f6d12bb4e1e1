//! Following every job's changes: [`StatusFeed`], over this instance's jobs ([`local`]) and, with
//! a shared store, other instances' too ([`cluster`]).

mod cluster;
mod local;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::engine::{Engine, Scope};
use crate::AsynchronousJobStatus;

use self::cluster::ClusterFeed;
use self::local::LocalFeed;

/// Follows the changes of every job in a registry (or, from a [`UserView`](crate::UserView), of
/// one user's jobs), from [`JobRegistry::watch_all`](crate::JobRegistry::watch_all): with a
/// shared store, of every instance's jobs; from
/// [`LocalJobs::watch_all`](crate::LocalJobs::watch_all), of this instance's only.
///
/// Each [`next`](StatusFeed::next) returns the latest status of a job that started or changed
/// since the feed last returned it, and never the same status twice. A slow reader is never sent a backlog: however often a job changed while the
/// feed was not read, it is pending once and read at its latest (conflation), so the feed holds at
/// most one entry per job, and a job dropped by retention leaves the feed too: a reader slower than
/// the retention limits can miss a job's final status, which the job's id then no longer finds
/// either. Jobs are returned
/// in the order of their first unread change. Publishing to a feed never waits for its reader, so
/// no feed slows a job's `set_progress`.
///
/// A feed starts empty: it sees jobs started and changed from its creation on. To start from the
/// present, open the feed first and then [`list`](crate::JobRegistry::list); a job may then show up in
/// both.
///
/// Other instances' jobs (with a store) are heard from the store's change notices and read from
/// the store when taken; a notice lost while the store reconnects makes the feed list what
/// changed meanwhile, so nothing is missed, and a store that cannot be reached holds back only
/// other instances' changes, which are read again a second later.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// use asyncjobs::{JobHandle, JobRegistry, JobRequest};
///
/// let registry = JobRegistry::new();
/// let mut feed = registry.watch_all();
/// let id = registry.spawn(JobRequest::default(), |job: JobHandle| async move {
///     job.set_progress(1, 2, "half way");
///     Ok::<_, std::io::Error>(())
/// }).await?;
/// registry.wait(&id).await?;
/// // A start and two changes (progress, then complete) while nobody read: one entry, at its latest.
/// let status = feed.next().await.expect("the registry is running");
/// assert!(status.is_terminal());
/// # Ok(())
/// # }
/// ```
pub struct StatusFeed {
    /// `None` only while a `Stream` item is under way, which holds it.
    source: Option<Source>,
    /// The `Stream`'s item under way: it owns the source until it is ready. In a `Mutex` only
    /// so that the feed is `Sync` whatever the future is (a store's are not); it is reached
    /// through `&mut self` (`get_mut`), never locked.
    next: Option<std::sync::Mutex<NextChange>>,
}

enum Source {
    Local(LocalFeed),
    Cluster(Box<ClusterFeed>),
}

type NextChange = Pin<Box<dyn Future<Output = (Source, Option<AsynchronousJobStatus>)> + Send>>;

impl StatusFeed {
    /// A feed of the jobs in `scope` on every instance: with a store, this instance's and the
    /// others'; without one, this instance's.
    pub(crate) fn new(engine: Arc<Engine>, scope: Scope) -> Self {
        let source = match engine.remote_changes() {
            Some(remote) => Source::Cluster(Box::new(ClusterFeed::new(engine, scope, remote))),
            None => Source::Local(LocalFeed::new(engine, scope)),
        };
        StatusFeed {
            source: Some(source),
            next: None,
        }
    }

    /// A feed of this instance's jobs in `scope` alone.
    pub(crate) fn local(engine: Arc<Engine>, scope: Scope) -> Self {
        StatusFeed {
            source: Some(Source::Local(LocalFeed::new(engine, scope))),
            next: None,
        }
    }

    /// The latest status of the next job that changed; waits for a change if none is pending.
    /// Returns `None` once the registry has been [shut down](crate::JobRegistry::shutdown), every job
    /// of this instance has finished and every change has been read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped before it resolves, no change is lost.
    pub async fn next(&mut self) -> Option<AsynchronousJobStatus> {
        if let Some(under_way) = self.next.as_mut() {
            // A `Stream` item was under way: it has the source. Awaited where it is, so that a
            // `next` dropped meanwhile leaves it (and the source) in the feed.
            let under_way = under_way.get_mut().unwrap_or_else(|e| e.into_inner());
            let (source, item) = under_way.as_mut().await;
            self.next = None;
            self.source = Some(source);
            return item;
        }
        match self.source.as_mut()? {
            Source::Local(feed) => feed.next().await,
            Source::Cluster(feed) => feed.next().await,
        }
    }

    /// How many jobs have changes not read yet (0 while a `Stream` item is under way).
    pub fn pending(&self) -> usize {
        match &self.source {
            Some(Source::Local(feed)) => feed.pending(),
            Some(Source::Cluster(feed)) => feed.pending(),
            None => 0,
        }
    }
}

/// A [`StatusFeed`] is a `Stream` of statuses: each item is what [`next`](StatusFeed::next) would
/// return, and the stream ends when `next` would return `None`. Dropping it between items loses no
/// change.
impl futures_core::Stream for StatusFeed {
    type Item = AsynchronousJobStatus;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.next.is_none() {
            let Some(mut source) = this.source.take() else {
                return Poll::Ready(None);
            };
            let next: NextChange = Box::pin(async move {
                let item = match &mut source {
                    Source::Local(feed) => feed.next().await,
                    Source::Cluster(feed) => feed.next().await,
                };
                (source, item)
            });
            this.next = Some(std::sync::Mutex::new(next));
        }
        let Some(next) = this.next.as_mut() else {
            return Poll::Ready(None);
        };
        let next = next.get_mut().unwrap_or_else(|e| e.into_inner());
        let (source, item) = std::task::ready!(next.as_mut().poll(cx));
        this.next = None;
        this.source = Some(source);
        Poll::Ready(item)
    }
}

impl std::fmt::Debug for StatusFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.source {
            Some(Source::Local(_)) => "this instance",
            Some(Source::Cluster(_)) => "every instance",
            None => "reading",
        };
        f.debug_struct("StatusFeed")
            .field("jobs of", &mode)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}
