//! The changes an event stream follows when the registry shares a store with other instances:
//! the user's jobs of this instance (its [`StatusFeed`], as without a store) and those of every
//! other instance, heard from the store's change notices.
//!
//! A notice carries a job's id, version and user, so this keeps the caller's without reading
//! anything; it reads each such job's status from the store when it is taken (the latest, so a
//! job that changed many times while unread is read once), and never gives the same status
//! twice. Notices are lost while the store reconnects (and a follower that falls far behind
//! misses some): then it lists the caller's jobs of every instance changed in the five minutes
//! before it last knew all was heard (a wide margin for clocks and late writers), and gives
//! those it has not given at their etag.
//!
//! A store that cannot be reached holds back only other instances' changes: they are read again
//! a second later, while this instance's keep coming.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio::time::Instant;

use super::events::Changes;
use crate::store::RemoteChange;
use crate::{AsynchronousJobStatus, Error, Etag, JobFilter, JobId, StatusFeed, UserView};

/// How far before the last time all notices were heard a resync looks: beyond any sane clock
/// skew between instances, and most outages of one instance's writes.
const RESYNC_LOOKBACK: Duration = Duration::from_secs(5 * 60);

/// How long other instances' changes wait after the store could not be reached.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// This instance's changes of one user's jobs, and other instances'.
pub(super) struct ClusterChanges {
    local: StatusFeed,
    /// `None` once the store's notices ended (the store is gone): only local changes then.
    remote: Option<Receiver<RemoteChange>>,
    user: UserView,
    /// Other instances' jobs of the user heard to have changed, not read yet.
    wanted: BTreeSet<JobId>,
    /// Read, not taken yet.
    ready: VecDeque<AsynchronousJobStatus>,
    /// The etag last taken of each other instance's job, so that a status is not given twice.
    taken: HashMap<JobId, Etag>,
    /// Notices may have been lost: list what changed since `heard_all_at`.
    resync: bool,
    /// When every notice until then was heard, for a resync to list from.
    heard_all_at: DateTime<Utc>,
    /// The store could not be reached: other instances' changes wait until then.
    retry_at: Option<Instant>,
}

impl ClusterChanges {
    pub(super) fn new(user: &UserView, remote: Receiver<RemoteChange>) -> Self {
        ClusterChanges {
            local: user.watch_all(),
            remote: Some(remote),
            user: user.clone(),
            wanted: BTreeSet::new(),
            ready: VecDeque::new(),
            taken: HashMap::new(),
            resync: false,
            heard_all_at: Utc::now(),
            retry_at: None,
        }
    }

    /// Takes a notice: keeps another instance's job of the user, or asks for a resync.
    fn heard(&mut self, notice: Result<RemoteChange, RecvError>) {
        match notice {
            Ok(RemoteChange::Changed { id, user, .. }) => {
                if user == Some(self.user.user()) && !self.user.holds(&id) {
                    self.wanted.insert(id);
                }
            }
            Ok(RemoteChange::Resync) | Err(RecvError::Lagged(_)) => self.resync = true,
            Err(RecvError::Closed) => self.remote = None,
        }
    }

    /// Whether the store may be asked now.
    fn store_ready(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Lists the user's other-instance jobs changed since well before all was last heard, and
    /// takes those whose status was not given yet. The look-back is wide: a job's `changedOn`
    /// is its own instance's clock, and an instance that was cut off from the database writes
    /// its changes late.
    async fn resynchronise(&mut self) -> Result<(), Error> {
        let now = Utc::now();
        let lookback = TimeDelta::from_std(RESYNC_LOOKBACK).unwrap_or(TimeDelta::MAX);
        let from = self
            .heard_all_at
            .checked_sub_signed(lookback)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut jobs = self.user.list_anywhere(&JobFilter::new()).await?;
        jobs.retain(|status| status.changed_on >= from && !self.user.holds(&status.job_id));
        jobs.sort_by_key(|status| status.changed_on);
        for status in jobs {
            self.wanted.remove(&status.job_id);
            if self.taken.get(&status.job_id) != Some(&status.etag) {
                self.taken.insert(status.job_id, status.etag.clone());
                self.ready.push_back(status);
            }
        }
        self.resync = false;
        self.heard_all_at = now;
        Ok(())
    }

    /// Reads every wanted job at its latest. A job read is no longer wanted only once all were
    /// read, so a read dropped half-way loses nothing (what was read is read again).
    async fn read_wanted(&mut self) -> Result<(), Error> {
        let ids: Vec<JobId> = self.wanted.iter().copied().collect();
        let mut read = Vec::with_capacity(ids.len());
        for id in &ids {
            match self.user.status_anywhere(id).await {
                Ok(status) => read.push(status),
                // Gone meanwhile (retention), or not the caller's after all: nothing to send.
                Err(Error::UnknownJob(_) | Error::NotYourJob(_)) => {}
                Err(other) => return Err(other),
            }
        }
        for id in &ids {
            self.wanted.remove(id);
        }
        for status in read {
            if self.taken.get(&status.job_id) != Some(&status.etag) {
                self.taken.insert(status.job_id, status.etag.clone());
                self.ready.push_back(status);
            }
        }
        Ok(())
    }

    async fn next_change(&mut self) -> Option<AsynchronousJobStatus> {
        loop {
            if let Some(status) = self.ready.pop_front() {
                return Some(status);
            }
            if self.store_ready() && (self.resync || !self.wanted.is_empty()) {
                let asked = if self.resync {
                    self.resynchronise().await
                } else {
                    self.read_wanted().await
                };
                match asked {
                    Ok(()) => self.retry_at = None,
                    Err(_unreachable) => self.retry_at = Some(Instant::now() + RETRY_AFTER),
                }
                continue;
            }
            let retry = self.retry_at;
            let waiting_on_store = !self.wanted.is_empty() || self.resync;
            tokio::select! {
                local = self.local.next() => return local,
                notice = async {
                    match self.remote.as_mut() {
                        Some(remote) => remote.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.heard(notice),
                () = async {
                    match retry {
                        Some(at) if waiting_on_store => tokio::time::sleep_until(at).await,
                        _ => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

impl Changes for ClusterChanges {
    fn next(&mut self) -> impl Future<Output = Option<AsynchronousJobStatus>> + Send {
        self.next_change()
    }

    fn pending(&self) -> usize {
        self.local.pending() + self.ready.len()
    }
}
