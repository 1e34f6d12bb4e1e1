//! What a change of one job signals to the rest of the registry: the per-state counts, and the
//! feeds that follow every job.
//!
//! A job reports here from [`Job::apply`](crate::job::Job::apply), after its own lock is
//! released. With no feed open, publishing a change is one atomic load.
//!
//! Locks: the feed list's lock, then one feed's pending lock; neither is held while a job's lock
//! is taken.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::{AsynchJobState, JobCounts, JobId};

pub(crate) struct Hub {
    processing: AtomicUsize,
    complete: AtomicUsize,
    failed: AtomicUsize,
    /// Read on every change of every job, written only when a feed opens or closes: kept off
    /// the cache line of the counts, which every spawn and finish writes.
    feeds_open: Padded<AtomicUsize>,
    feeds: RwLock<Vec<Arc<FeedQueue>>>,
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

/// The changes one feed has not read yet: at most one entry per job however often it changed
/// (the feed reads the latest status), in the order of each job's first unread change.
pub(crate) struct FeedQueue {
    user: Option<u64>,
    pending: Mutex<Pending>,
    pub(crate) notify: Notify,
}

#[derive(Default)]
struct Pending {
    next_seq: u64,
    /// Unread jobs by the order of their first unread change, with the newest version published.
    order: BTreeMap<u64, (JobId, u64)>,
    index: HashMap<JobId, u64>,
    /// The version of the status last returned for each job. A change is published just after it
    /// is made, so a reader can return a status before its own publication arrives; that
    /// publication must then not return the same status again. Entries leave with their job.
    delivered: HashMap<JobId, u64>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Hub {
            processing: AtomicUsize::new(0),
            complete: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            feeds_open: Padded(AtomicUsize::new(0)),
            feeds: RwLock::new(Vec::new()),
        }
    }

    pub(crate) fn started(&self) {
        self.processing.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, state: AsynchJobState) {
        self.counter(state).fetch_add(1, Ordering::Relaxed);
        self.processing.fetch_sub(1, Ordering::Release);
    }

    /// A finished job's status was dropped by retention.
    pub(crate) fn evicted(&self, id: JobId, state: AsynchJobState) {
        self.counter(state).fetch_sub(1, Ordering::Relaxed);
        if self.feeds_open.load(Ordering::Acquire) > 0 {
            for feed in self.feeds.read().iter() {
                feed.pending.lock().remove(id);
            }
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
        JobCounts {
            processing: self.processing.load(Ordering::Acquire),
            complete: self.complete.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Tells the feeds that the job's status is now at `version` (a start or a change).
    pub(crate) fn publish(&self, id: JobId, user: Option<u64>, version: u64) {
        if self.feeds_open.load(Ordering::Acquire) == 0 {
            return;
        }
        for feed in self.feeds.read().iter() {
            let wanted = feed.user.is_none() || feed.user == user;
            if wanted && feed.pending.lock().push(id, version) {
                feed.notify.notify_one();
            }
        }
    }

    pub(crate) fn subscribe(&self, user: Option<u64>) -> Arc<FeedQueue> {
        let feed = Arc::new(FeedQueue {
            user,
            pending: Mutex::default(),
            notify: Notify::new(),
        });
        let mut feeds = self.feeds.write();
        feeds.push(feed.clone());
        self.feeds_open.store(feeds.len(), Ordering::Release);
        feed
    }

    pub(crate) fn unsubscribe(&self, feed: &Arc<FeedQueue>) {
        let mut feeds = self.feeds.write();
        feeds.retain(|f| !Arc::ptr_eq(f, feed));
        self.feeds_open.store(feeds.len(), Ordering::Release);
    }

    /// Wakes every feed, e.g. so they notice the registry shut down.
    pub(crate) fn wake_feeds(&self) {
        for feed in self.feeds.read().iter() {
            feed.notify.notify_one();
        }
    }
}

impl FeedQueue {
    pub(crate) fn pop(&self) -> Option<JobId> {
        self.pending.lock().pop()
    }

    /// Forgets what the feed returned of a job that is gone from the registry.
    pub(crate) fn forget(&self, id: JobId) {
        self.pending.lock().remove(id);
    }

    /// Records that the feed returned the job's status at `version`.
    pub(crate) fn delivered(&self, id: JobId, version: u64) {
        let mut pending = self.pending.lock();
        let last = pending.delivered.entry(id).or_default();
        *last = (*last).max(version);
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.lock().index.len()
    }
}

impl Pending {
    /// Whether the job was not pending yet (the reader needs waking).
    fn push(&mut self, id: JobId, version: u64) -> bool {
        if self.delivered.get(&id).is_some_and(|&last| last >= version) {
            return false;
        }
        if let Some(seq) = self.index.get(&id) {
            if let Some(entry) = self.order.get_mut(seq) {
                entry.1 = entry.1.max(version);
            }
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, (id, version));
        self.index.insert(id, seq);
        true
    }

    fn pop(&mut self) -> Option<JobId> {
        while let Some((_, (id, version))) = self.order.pop_first() {
            self.index.remove(&id);
            if self.delivered.get(&id).is_none_or(|&last| last < version) {
                return Some(id);
            }
        }
        None
    }

    fn remove(&mut self, id: JobId) {
        if let Some(seq) = self.index.remove(&id) {
            self.order.remove(&seq);
        }
        self.delivered.remove(&id);
    }
}
