//! The status seam: where every event of every job's life (created, changed, finished, removed)
//! is told to the rest of the world, in one place. It moves the per-state counts, hands changes
//! to the feeds interested in the job, emits the `tracing` event, and calls the observers.
//!
//! [`Job::apply`](crate::job::Job::apply) is the only writer of a job's status; it calls
//! [`Seam::changed`] after releasing the job's status lock. The engine calls [`Seam::created`] and
//! [`Seam::removed`] through the job ([`Job::created`](crate::job::Job::created),
//! [`Job::removed`](crate::job::Job::removed)).
//!
//! Order: a job's events reach the seam one at a time and in etag order, after the job's status
//! lock is released, from the job's outbox (`job/outbox.rs`, which says how). Creation, cancel
//! flags, leaving the queue, finishing and removal are always delivered; progress only when
//! someone listens to it (an observer, an open feed of the job, or a `tracing` subscriber at
//! TRACE), so a progress report nobody hears costs the status lock alone.
//!
//! Locks: the feed index, then one feed's pending lock; neither is taken under a job's status
//! lock (see the crate's [lock order](crate::engine#lock-order)).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::event::Event;
use crate::failure::drop_quietly;
use crate::id::IdHasher;
use crate::trace::Note;
use crate::{AsynchJobState, JobCounts, JobEvent, JobEventKind, JobId, StatusObserver};

/// A feed (or any internal follower) of jobs' changes.
pub(crate) trait Subscriber: Send + Sync {
    /// The job is now at `version`: a start or a change.
    fn changed(&self, id: JobId, version: u64);
    /// The job is gone from the registry.
    fn removed(&self, id: JobId);
    /// Something other than a change happened (e.g. a shutdown): look again.
    fn wake(&self);
}

pub(crate) struct Seam {
    processing: AtomicUsize,
    complete: AtomicUsize,
    failed: AtomicUsize,
    /// Open feeds: all of them, and those of every job (the administrator's). While both are
    /// zero, or only users' feeds are open and none of the job's user, a report skips the index.
    feeds_open: [AtomicUsize; 2],
    feeds: RwLock<FeedIndex>,
    observers: Box<[Arc<dyn StatusObserver>]>,
    /// The shared store's writer, if a store is attached. It is told every event in order as an
    /// observer is, except progress reports: those it needs only coalesced (which jobs changed
    /// since it last wrote them), so a report that nothing else hears is handed to it by
    /// [`Seam::unwritten`], once per job between two of its writes, outside the job's outbox.
    store: Option<Arc<dyn StatusObserver>>,
}

/// Open feeds by the user they follow, so that a change costs O(feeds interested in its job),
/// not O(all feeds).
#[derive(Default)]
struct FeedIndex {
    /// Feeds of every job (the administrator's).
    all: Vec<Arc<dyn Subscriber>>,
    by_user: HashMap<u64, Vec<Arc<dyn Subscriber>>, BuildHasherDefault<IdHasher>>,
}

impl FeedIndex {
    fn interested(&self, user: Option<u64>) -> impl Iterator<Item = &Arc<dyn Subscriber>> {
        let own = user.and_then(|u| self.by_user.get(&u));
        self.all.iter().chain(own.into_iter().flatten())
    }
}

impl Seam {
    pub(crate) fn new(
        observers: Vec<Arc<dyn StatusObserver>>,
        store: Option<Arc<dyn StatusObserver>>,
    ) -> Self {
        Seam {
            processing: AtomicUsize::new(0),
            complete: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            feeds_open: [AtomicUsize::new(0), AtomicUsize::new(0)],
            feeds: RwLock::default(),
            observers: observers.into_boxed_slice(),
            store,
        }
    }

    /// Whether a store's writer follows the jobs (see [`Seam::unwritten`]).
    pub(crate) fn mirrored(&self) -> bool {
        self.store.is_some()
    }

    /// The store's writer is told of a change outside the job's outbox: progress nobody else
    /// hears, once between two of its writes (the job's own flag says so), since the writer only
    /// notes which jobs to write; or a final status queued behind another thread's delivery,
    /// which the writer must hold before the job can be retired.
    pub(crate) fn unwritten(&self, event: &Event, source: &dyn crate::observer::StatusSource) {
        if let Some(store) = &self.store {
            let public = JobEvent {
                kind: event.kind,
                id: event.id,
                user: event.user,
                version: event.version,
                state: event.state,
                // Told outside the outbox, this may come before or after the job's other events:
                // it says no more than "changed", or "finished" with the final status (the
                // cancel flag always comes through the outbox).
                canceling: false,
                source,
            };
            tell(store, &public);
        }
    }

    /// Whether a progress report of `user`'s job must be delivered:
    /// an observer is set, a feed of that job is open, or `tracing` wants progress events.
    pub(crate) fn hears_progress(&self, user: Option<u64>) -> bool {
        !self.observers.is_empty() || self.feed_hears(user) || crate::trace::progress_enabled()
    }

    /// Whether an open feed follows `user`'s jobs: two atomic loads while no feed of every job is
    /// open, and the index's read lock only while some user's feed is.
    fn feed_hears(&self, user: Option<u64>) -> bool {
        let [open, admin] = &self.feeds_open;
        open.load(Ordering::Acquire) > 0
            && (admin.load(Ordering::Acquire) > 0
                || user.is_some_and(|user| self.feeds.read().by_user.contains_key(&user)))
    }

    /// A job was created: counted PROCESSING, then delivered.
    pub(crate) fn created(
        &self,
        event: &Event,
        source: &dyn crate::observer::StatusSource,
        name: Option<&str>,
    ) {
        self.processing.fetch_add(1, Ordering::Relaxed);
        crate::metrics::record(event, name);
        self.deliver(event, source, || {
            crate::trace::started(event.id, event.user, name, event.queued);
        });
    }

    /// A job's status changed (a progress report nobody hears is not handed here at all). Feeds
    /// get it before the counts move, so that a feed that sees no job PROCESSING after a shutdown
    /// already holds every final status.
    pub(crate) fn changed(
        &self,
        event: &Event,
        source: &dyn crate::observer::StatusSource,
        note: Note,
    ) {
        crate::metrics::record(event, source.name());
        let runtime_ms = crate::event::millis(event.elapsed);
        self.deliver(event, source, || {
            note.emit(event.id, event.user, event.version, event.cause, runtime_ms);
        });
        if event.kind == JobEventKind::Finished {
            self.counter(event.state).fetch_add(1, Ordering::Relaxed);
            self.processing.fetch_sub(1, Ordering::Release);
        }
    }

    /// Retention dropped a finished job's status.
    pub(crate) fn removed(&self, event: &Event, source: &dyn crate::observer::StatusSource) {
        self.counter(event.state).fetch_sub(1, Ordering::Relaxed);
        self.deliver(event, source, || {});
    }

    fn deliver(
        &self,
        event: &Event,
        source: &dyn crate::observer::StatusSource,
        trace: impl FnOnce(),
    ) {
        if self.feed_hears(event.user) {
            for feed in self.feeds.read().interested(event.user) {
                match event.kind {
                    JobEventKind::Removed => feed.removed(event.id),
                    _ => feed.changed(event.id, event.version),
                }
            }
        }
        // A tracing subscriber is user code too.
        if let Err(panic) = catch_unwind(AssertUnwindSafe(trace)) {
            drop_quietly(panic);
        }
        if self.observers.is_empty() && self.store.is_none() {
            return;
        }
        let public = JobEvent {
            kind: event.kind,
            id: event.id,
            user: event.user,
            version: event.version,
            state: event.state,
            canceling: event.canceling,
            source,
        };
        for observer in self.observers.iter().chain(&self.store) {
            tell(observer, &public);
        }
    }

    fn counter(&self, state: AsynchJobState) -> &AtomicUsize {
        match state {
            AsynchJobState::Processing => &self.processing,
            AsynchJobState::Complete => &self.complete,
            AsynchJobState::Failed => &self.failed,
        }
    }

    pub(crate) fn counts(&self) -> JobCounts {
        JobCounts::new(
            self.processing.load(Ordering::Acquire),
            self.complete.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Starts telling `feed` of the changes of `user`'s jobs (of every job for `None`).
    pub(crate) fn subscribe(&self, user: Option<u64>, feed: Arc<dyn Subscriber>) {
        let mut feeds = self.feeds.write();
        match user {
            None => {
                feeds.all.push(feed);
                self.feeds_open[1].fetch_add(1, Ordering::Release);
            }
            Some(user) => feeds.by_user.entry(user).or_default().push(feed),
        }
        self.feeds_open[0].fetch_add(1, Ordering::Release);
    }

    pub(crate) fn unsubscribe(&self, user: Option<u64>, feed: &Arc<dyn Subscriber>) {
        let mut feeds = self.feeds.write();
        let list = match user {
            None => &mut feeds.all,
            Some(user) => match feeds.by_user.get_mut(&user) {
                Some(list) => list,
                None => return,
            },
        };
        let before = list.len();
        list.retain(|f| !Arc::ptr_eq(f, feed));
        let removed = before - list.len();
        if removed == 0 {
            return;
        }
        if list.is_empty() {
            if let Some(user) = user {
                feeds.by_user.remove(&user);
            }
        }
        if user.is_none() {
            self.feeds_open[1].fetch_sub(removed, Ordering::Release);
        }
        self.feeds_open[0].fetch_sub(removed, Ordering::Release);
    }

    /// Wakes every feed, e.g. so they notice the registry shut down.
    pub(crate) fn wake_feeds(&self) {
        let feeds = self.feeds.read();
        for feed in feeds.all.iter().chain(feeds.by_user.values().flatten()) {
            feed.wake();
        }
    }
}

/// Calls an observer; a panic in it is caught and logged.
fn tell(observer: &Arc<dyn StatusObserver>, event: &JobEvent<'_>) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| observer.on_event(event))) {
        crate::trace::observer_panicked(event.id, event.version);
        drop_quietly(panic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Step;
    use crate::AsynchronousJobStatus;

    #[derive(Default)]
    struct Recorder(parking_lot::Mutex<Vec<(JobId, u64, bool)>>);

    impl Subscriber for Recorder {
        fn changed(&self, id: JobId, version: u64) {
            self.0.lock().push((id, version, false));
        }
        fn removed(&self, id: JobId) {
            self.0.lock().push((id, 0, true));
        }
        fn wake(&self) {}
    }

    struct NoStatus;
    impl crate::observer::StatusSource for NoStatus {
        fn snapshot(&self) -> AsynchronousJobStatus {
            unreachable!("no observer asks")
        }
    }

    fn event(kind: JobEventKind, id: u64, user: Option<u64>, state: AsynchJobState) -> Event {
        Event {
            kind,
            id: JobId::from_u64(id),
            user,
            version: 2,
            state,
            canceling: false,
            cause: None,
            step: match kind {
                JobEventKind::Created => Step::Created,
                JobEventKind::Finished => Step::Finished,
                JobEventKind::Removed => Step::Removed,
                _ => Step::Progress,
            },
            queued: false,
            elapsed: std::time::Duration::ZERO,
            exception: None,
        }
    }

    #[test]
    fn feeds_hear_only_their_users_jobs_and_admin_feeds_hear_all() {
        let seam = Seam::new(Vec::new(), None);
        let mine = Arc::new(Recorder::default());
        let admin = Arc::new(Recorder::default());
        seam.subscribe(Some(7), mine.clone());
        seam.subscribe(None, admin.clone());
        assert!(
            seam.hears_progress(Some(9)),
            "the admin feed hears every job"
        );
        for (id, user) in [(1, Some(7)), (2, Some(8)), (3, None)] {
            let e = event(JobEventKind::Created, id, user, AsynchJobState::Processing);
            seam.created(&e, &NoStatus, None);
        }
        assert_eq!(*mine.0.lock(), [(JobId::from_u64(1), 2, false)]);
        assert_eq!(admin.0.lock().len(), 3);

        let dyn_mine: Arc<dyn Subscriber> = mine.clone();
        seam.unsubscribe(Some(7), &dyn_mine);
        let e = event(
            JobEventKind::Created,
            4,
            Some(7),
            AsynchJobState::Processing,
        );
        seam.created(&e, &NoStatus, None);
        assert_eq!(
            mine.0.lock().len(),
            1,
            "an unsubscribed feed hears nothing more"
        );
        assert_eq!(seam.feeds_open[0].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_a_feed_of_the_jobs_user_makes_its_progress_heard() {
        let seam = Seam::new(Vec::new(), None);
        assert!(!seam.feed_hears(Some(7)) && !seam.feed_hears(None));
        let mine: Arc<dyn Subscriber> = Arc::new(Recorder::default());
        seam.subscribe(Some(7), mine.clone());
        assert!(seam.feed_hears(Some(7)));
        assert!(
            !seam.feed_hears(Some(8)),
            "another user's feed does not listen"
        );
        assert!(!seam.feed_hears(None));
        let admin: Arc<dyn Subscriber> = Arc::new(Recorder::default());
        seam.subscribe(None, admin.clone());
        assert!(seam.feed_hears(Some(8)) && seam.feed_hears(None));
        seam.unsubscribe(None, &admin);
        seam.unsubscribe(Some(7), &mine);
        assert!(!seam.feed_hears(Some(7)));
    }

    #[test]
    fn counts_follow_created_finished_and_removed() {
        let seam = Seam::new(Vec::new(), None);
        let created = event(JobEventKind::Created, 1, None, AsynchJobState::Processing);
        seam.created(&created, &NoStatus, None);
        assert_eq!(seam.counts().processing, 1);
        let finished = event(JobEventKind::Finished, 1, None, AsynchJobState::Failed);
        seam.changed(&finished, &NoStatus, Note::none());
        assert_eq!((seam.counts().processing, seam.counts().failed), (0, 1));
        let removed = event(JobEventKind::Removed, 1, None, AsynchJobState::Failed);
        seam.removed(&removed, &NoStatus);
        assert_eq!(seam.counts(), JobCounts::default());
    }
}
