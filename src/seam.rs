//! The status seam: where every event of every job's life (created, changed, finished, removed)
//! is told to the rest of the world, in one place. It moves the per-state counts, hands changes
//! to the feeds interested in the job, emits the `tracing` event, and calls the observers.
//!
//! [`Job::apply`](crate::job::Job::apply) is the only writer of a job's status; it calls
//! [`Seam::changed`] after releasing the job's status lock. The engine calls [`Seam::created`] and
//! [`Seam::removed`] through the job ([`Job::created`](crate::job::Job::created),
//! [`Job::removed`](crate::job::Job::removed)).
//!
//! Order: a job's events are delivered one at a time, in etag order, while the job's *turn* is
//! held (a second per-job lock, taken before the status lock and released after delivery; see
//! [`Seam::turn`]). Creation, cancel flags, finishing and removal always take the turn; progress
//! takes it only when someone listens to progress (an observer, an open feed, or a `tracing`
//! subscriber at TRACE), so a progress report nobody hears costs one lock, not two. Because a
//! change is delivered to feeds only when it took the turn, and removal takes it too, no change
//! can reach a feed after the job's removal.
//!
//! Re-entrancy: a thread delivering an event (running an observer or a tracing subscriber) takes
//! no turn for changes it makes meanwhile, so an observer that cancels a job cannot deadlock; such
//! changes are delivered at once, inside the current delivery.
//!
//! Locks: the turn, then the job's status lock (released before delivery), then the feed index's
//! read lock, then one feed's pending lock. No status lock is held while delivering.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};

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
    /// Read on every change of every job, written only when a feed opens or closes: kept off
    /// the cache line of the counts, which every spawn and finish writes. All open feeds, and
    /// those of every job (the administrator's).
    feeds_open: Padded<[AtomicUsize; 2]>,
    /// Open feeds of the users whose ids hash to each slot, written with the index (under its
    /// write lock): a report of a user with no feed learns so from one plain load, instead of
    /// taking the index's read lock, whose count every core would write on every report while
    /// any feed is open. Two users may share a slot; then the index decides. (A slot would read
    /// zero wrongly only after 2^32 feeds of its users were open at once.)
    feeds_of: Box<[AtomicU32]>,
    feeds: RwLock<FeedIndex>,
    observers: Box<[Arc<dyn StatusObserver>]>,
    /// The shared store's writer, if a store is attached. It is told every event in order as an
    /// observer is, except progress reports: those it needs only coalesced (which jobs changed
    /// since it last wrote them), so a report that nothing else hears is handed to it by
    /// [`Seam::unwritten`], once per job between two of its writes, with no turn taken.
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

/// Slots of [`Seam::feeds_of`] (16 KB). With feeds of 100 users open, a report of a user with
/// none finds its slot taken 2% of the time (and takes the index's read lock); with 1,000 users,
/// 22%; with 10,000, nearly always, which costs what the index alone did.
const FEED_SLOTS: usize = 4096;
const _: () = assert!(FEED_SLOTS.is_power_of_two() && FEED_SLOTS > 1);

/// The slot of `user`'s feeds in [`Seam::feeds_of`]: the top bits of a multiplicative hash, so
/// that consecutive ids spread out.
fn feed_slot(user: u64) -> usize {
    const SHIFT: u32 = u64::BITS - FEED_SLOTS.trailing_zeros();
    (user.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> SHIFT) as usize
}

/// A value alone on its cache line (two, for CPUs that fetch lines in pairs).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

thread_local! {
    /// How many deliveries this thread is inside of (see the module docs on re-entrancy).
    static DELIVERING: Cell<u32> = const { Cell::new(0) };
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
            feeds_open: Padded([AtomicUsize::new(0), AtomicUsize::new(0)]),
            feeds_of: (0..FEED_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            feeds: RwLock::default(),
            observers: observers.into_boxed_slice(),
            store,
        }
    }

    /// Whether a store's writer follows the jobs (see [`Seam::unwritten`]).
    pub(crate) fn mirrored(&self) -> bool {
        self.store.is_some()
    }

    /// A progress report nobody else hears changed a job that the store had written since (the
    /// job's own flag says so, and is set again only by the store's read): the store's writer
    /// is told, out of turn, since it only notes which jobs to write.
    pub(crate) fn unwritten(&self, event: &Event, source: &dyn crate::observer::StatusSource) {
        if let Some(store) = &self.store {
            let public = JobEvent {
                kind: event.kind,
                id: event.id,
                user: event.user,
                version: event.version,
                state: event.state,
                // Told out of turn, this may come after the job's later events: it must not
                // say more than "changed" (the cancel flag always comes in turn).
                canceling: false,
                source,
            };
            tell(store, &public);
        }
    }

    /// Whether a progress report of `user`'s job must be delivered (and so take the job's turn):
    /// an observer is set, a feed of that job is open, or `tracing` wants progress events.
    pub(crate) fn hears_progress(&self, user: Option<u64>) -> bool {
        !self.observers.is_empty() || self.feed_hears(user) || crate::trace::progress_enabled()
    }

    /// Whether an open feed follows `user`'s jobs: one atomic load while no feed is open, and
    /// three, no write, while only other users' feeds are (see `feeds_of`).
    fn feed_hears(&self, user: Option<u64>) -> bool {
        // The admin count is read again only when a feed may follow: never on the fast paths.
        self.feeds_may_follow(user)
            && (self.feeds_open[1].load(Ordering::Acquire) > 0
                || user.is_some_and(|user| self.feeds.read().by_user.contains_key(&user)))
    }

    /// Whether a feed may follow `user`'s jobs, told without the index's lock: false means
    /// none does.
    fn feeds_may_follow(&self, user: Option<u64>) -> bool {
        let [open, admin] = &*self.feeds_open;
        open.load(Ordering::Acquire) > 0
            && (admin.load(Ordering::Acquire) > 0
                || user
                    .is_some_and(|user| self.feeds_of[feed_slot(user)].load(Ordering::Acquire) > 0))
    }

    /// Takes a job's turn to deliver its next event: `None` if this thread is already delivering
    /// (re-entrancy; see the module docs).
    pub(crate) fn turn<'a>(&self, turn: &'a Mutex<()>) -> Option<MutexGuard<'a, ()>> {
        if DELIVERING.with(Cell::get) > 0 {
            None
        } else {
            Some(turn.lock())
        }
    }

    /// [`Seam::turn`] without waiting, for a caller that holds the job's status lock (taken after
    /// the turn in the lock order, so it may only try): `Err` if another thread has the turn.
    pub(crate) fn try_turn<'a>(
        &self,
        turn: &'a Mutex<()>,
    ) -> Result<Option<MutexGuard<'a, ()>>, ()> {
        if DELIVERING.with(Cell::get) > 0 {
            Ok(None)
        } else {
            turn.try_lock().map(Some).ok_or(())
        }
    }

    /// A job was created: counted PROCESSING, then delivered.
    pub(crate) fn created(
        &self,
        event: &Event,
        source: &dyn crate::observer::StatusSource,
        name: Option<&str>,
        queued: bool,
    ) {
        self.processing.fetch_add(1, Ordering::Relaxed);
        crate::metrics::record(event, name);
        self.deliver(event, source, || {
            crate::trace::started(event.id, event.user, name, queued);
        });
    }

    /// A job's status changed, in its turn (see the module docs: a progress report nobody hears
    /// is not handed here at all). Feeds get it before the counts move, so that a feed that sees no job PROCESSING after a
    /// shutdown already holds every final status.
    pub(crate) fn changed(
        &self,
        event: &Event,
        source: &dyn crate::observer::StatusSource,
        note: Note<'_>,
        runtime_ms: impl FnOnce() -> u64,
    ) {
        crate::metrics::record(event, source.name());
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
        if self.feeds_may_follow(event.user) {
            for feed in self.feeds.read().interested(event.user) {
                match event.kind {
                    JobEventKind::Removed => feed.removed(event.id),
                    _ => feed.changed(event.id, event.version),
                }
            }
        }
        /// Counts this thread as delivering, however the delivery ends.
        struct Delivering;
        impl Drop for Delivering {
            fn drop(&mut self) {
                DELIVERING.with(|d| d.set(d.get() - 1));
            }
        }
        DELIVERING.with(|d| d.set(d.get() + 1));
        let _delivering = Delivering;
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
            Some(user) => {
                feeds.by_user.entry(user).or_default().push(feed);
                self.feeds_of[feed_slot(user)].fetch_add(1, Ordering::Release);
            }
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
        match user {
            None => {
                self.feeds_open[1].fetch_sub(removed, Ordering::Release);
            }
            Some(user) => {
                // Entries each counted by one increment of this slot, so at most its count.
                let removed = u32::try_from(removed).unwrap_or(u32::MAX);
                self.feeds_of[feed_slot(user)].fetch_sub(removed, Ordering::Release);
            }
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
    struct Recorder(Mutex<Vec<(JobId, u64, bool)>>);

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
            seam.created(&e, &NoStatus, None, false);
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
        seam.created(&e, &NoStatus, None, false);
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
    fn slots_count_open_feeds_of_their_users_and_only_the_index_says_who_listens() {
        let seam = Seam::new(Vec::new(), None);
        let listened = 7;
        let shares_slot = |u: u64| u != listened && feed_slot(u) == feed_slot(listened);
        let neighbour = (0..u64::MAX)
            .find(|&u| shares_slot(u))
            .expect("a user shares it");
        let elsewhere = (0..u64::MAX)
            .find(|&u| feed_slot(u) != feed_slot(listened))
            .expect("a user has another slot");
        let slot = |user: u64| seam.feeds_of[feed_slot(user)].load(Ordering::Relaxed);
        let feed = || -> Arc<dyn Subscriber> { Arc::new(Recorder::default()) };
        let (first, second, never, other) = (feed(), feed(), feed(), feed());
        seam.subscribe(Some(listened), first.clone());
        seam.subscribe(Some(listened), second.clone());
        seam.subscribe(Some(elsewhere), other.clone());
        assert_eq!(slot(listened), 2);
        assert!(seam.feed_hears(Some(listened)));
        assert!(
            seam.feeds_may_follow(Some(neighbour)) && !seam.feed_hears(Some(neighbour)),
            "the slot says maybe, the index says no"
        );
        seam.unsubscribe(Some(elsewhere), &other);
        assert!(
            !seam.feeds_may_follow(Some(elsewhere)),
            "a user whose slot is empty is not looked up at all, though feeds are open"
        );

        // Two users in one slot: closing one's feeds leaves the other's counted.
        let theirs = feed();
        seam.subscribe(Some(neighbour), theirs.clone());
        assert_eq!(slot(listened), 3);
        seam.unsubscribe(Some(neighbour), &theirs);
        seam.unsubscribe(Some(neighbour), &theirs);
        seam.unsubscribe(Some(listened), &never);
        assert_eq!(
            slot(listened),
            2,
            "closes that remove nothing count nothing"
        );
        assert!(seam.feed_hears(Some(listened)) && !seam.feed_hears(Some(neighbour)));

        seam.unsubscribe(Some(listened), &first);
        assert!(seam.feed_hears(Some(listened)), "one feed is still open");
        seam.unsubscribe(Some(listened), &second);
        seam.unsubscribe(Some(listened), &second);
        assert!(!seam.feed_hears(Some(listened)));
        assert!(
            seam.feeds_of.iter().all(|n| n.load(Ordering::Relaxed) == 0),
            "closing every feed empties every slot, a second close of one included"
        );
    }

    #[test]
    fn counts_follow_created_finished_and_removed() {
        let seam = Seam::new(Vec::new(), None);
        let created = event(JobEventKind::Created, 1, None, AsynchJobState::Processing);
        seam.created(&created, &NoStatus, None, false);
        assert_eq!(seam.counts().processing, 1);
        let finished = event(JobEventKind::Finished, 1, None, AsynchJobState::Failed);
        seam.changed(&finished, &NoStatus, Note::none(), || 0);
        assert_eq!((seam.counts().processing, seam.counts().failed), (0, 1));
        let removed = event(JobEventKind::Removed, 1, None, AsynchJobState::Failed);
        seam.removed(&removed, &NoStatus);
        assert_eq!(seam.counts(), JobCounts::default());
    }

    #[test]
    fn a_delivering_thread_takes_no_turn() {
        let seam = Seam::new(Vec::new(), None);
        let turn = Mutex::new(());
        let outer = seam.turn(&turn).expect("not delivering");
        DELIVERING.with(|d| d.set(1));
        assert!(
            seam.turn(&turn).is_none(),
            "a nested change must not wait for its own turn"
        );
        DELIVERING.with(|d| d.set(0));
        drop(outer);
    }
}
