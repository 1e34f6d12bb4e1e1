//! A feed of every instance's jobs, when the registry shares a store with other instances: the
//! jobs in scope of this instance (a [`LocalFeed`], as without a store) and those of every other
//! instance, heard from the store's change notices.
//!
//! A notice carries a job's id, version and user, so this keeps those in scope without reading
//! anything; it reads each such job's status from the store when it is taken (the latest, so a
//! job that changed many times while unread is read once), and never gives the same status
//! twice. Notices are lost while the store reconnects (and a follower that falls far behind
//! misses some): then it lists the jobs in scope of every instance changed in the five minutes
//! before it last knew all was heard (a wide margin for clocks and late writers), and gives
//! those it has not given at their etag.
//!
//! A store that cannot be reached holds back only other instances' changes: they are read again
//! a second later, while this instance's keep coming.
//!
//! What was given is remembered per job ([`Given`]) only while the same status could still come
//! again: a running job's until its next status, a finished job's until no late notice or
//! resync can bring it back. So memory follows the jobs running and those finished in the last
//! few minutes, however long a feed stays open.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio::time::Instant;

use std::sync::Arc;

use super::local::LocalFeed;
use crate::engine::{Engine, Scope};
use crate::store::RemoteChange;
use crate::{AsynchronousJobStatus, Error, Etag, JobId};

/// How far before the last time all notices were heard a resync looks: beyond any sane clock
/// skew between instances, and most outages of one instance's writes.
const RESYNC_LOOKBACK: Duration = Duration::from_secs(5 * 60);

/// How long other instances' changes wait after the store could not be reached.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// This instance's changes of the jobs in scope, and other instances'.
pub(super) struct ClusterFeed {
    local: LocalFeed,
    /// `None` once the store's notices ended (the store is gone): only local changes then.
    remote: Option<Receiver<RemoteChange>>,
    engine: Arc<Engine>,
    scope: Scope,
    /// Other instances' jobs in scope heard to have changed, not read yet.
    wanted: BTreeSet<JobId>,
    /// Read, not taken yet.
    ready: VecDeque<AsynchronousJobStatus>,
    /// What was given of other instances' jobs, so that a status is not given twice.
    given: Given,
    /// Notices may have been lost: list what changed since `heard_all_at`.
    resync: bool,
    /// When every notice until then was heard, for a resync to list from.
    heard_all_at: DateTime<Utc>,
    /// The store could not be reached: other instances' changes wait until then.
    retry_at: Option<Instant>,
}

impl ClusterFeed {
    /// How many jobs have changes read and not taken yet (this instance's, and other instances'
    /// already read from the store).
    pub(super) fn pending(&self) -> usize {
        self.local.pending() + self.ready.len()
    }

    pub(super) fn new(engine: Arc<Engine>, scope: Scope, remote: Receiver<RemoteChange>) -> Self {
        ClusterFeed {
            local: LocalFeed::new(engine.clone(), scope),
            remote: Some(remote),
            engine,
            scope,
            wanted: BTreeSet::new(),
            ready: VecDeque::new(),
            given: Given::default(),
            resync: false,
            heard_all_at: Utc::now(),
            retry_at: None,
        }
    }

    /// Takes a notice: keeps another instance's job in scope, or asks for a resync.
    fn heard(&mut self, notice: Result<RemoteChange, RecvError>) {
        match notice {
            Ok(RemoteChange::Changed {
                id, user, heard_at, ..
            }) => {
                let in_scope = self.scope.user().is_none_or(|wanted| user == Some(wanted));
                if in_scope && !self.engine.holds(&id) {
                    self.wanted.insert(id);
                }
                // Every notice before this one was heard (a lost one is followed by a resync,
                // which must still list from before it).
                if !self.resync {
                    self.heard_all_at = self.heard_all_at.max(heard_at);
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

    /// Lists the other-instance jobs in scope changed since well before all was last heard, and
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
        let mut jobs = self.engine.cluster_list_all(self.scope).await?;
        jobs.retain(|status| status.changed_on >= from && !self.engine.holds(&status.job_id));
        jobs.sort_by_key(|status| status.changed_on);
        for status in jobs {
            self.wanted.remove(&status.job_id);
            if self.given.fresh(&status, now) {
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
            match self.engine.cluster_status(id, self.scope).await {
                Ok(status) => read.push(status),
                // Gone meanwhile (retention), or not the caller's after all: nothing to send.
                Err(Error::UnknownJob(_) | Error::NotYourJob(_)) => {}
                Err(other) => return Err(other),
            }
        }
        for id in &ids {
            self.wanted.remove(id);
        }
        let now = Utc::now();
        for status in read {
            if self.given.fresh(&status, now) {
                self.ready.push_back(status);
            }
        }
        Ok(())
    }

    /// The latest status of the next job that changed, of this instance or another, waiting for
    /// one if none is pending; `None` once the registry shut down: a job's latest status, never
    /// the same status twice.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped unfinished, it loses no change (what it was reading is read again).
    pub(super) async fn next(&mut self) -> Option<AsynchronousJobStatus> {
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
            if !waiting_on_store {
                // Nothing heard is left to read: a job about to be read again is not forgotten.
                self.given.forget_before(self.heard_all_at, RESYNC_LOOKBACK);
            }
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

/// The statuses a feed gave of other instances' jobs, each remembered only while it could still
/// come again.
///
/// A status comes again by a late notice of its job (one written before the status was read, and
/// heard after it), or by a resync, which lists the jobs changed since [`RESYNC_LOOKBACK`] before
/// all notices were last heard. A running job's status is replaced by its next one. A finished
/// status never changes, and once both its `changedOn` and the moment it was given are more than
/// the look-back before all notices were heard, neither can bring it back (notices come in the
/// order their writes were made, and a late notice is one the look-back allows for): it is
/// forgotten. This leans on the same bound as the resync: notices and clocks off by less than the
/// look-back.
#[derive(Debug, Default)]
struct Given {
    /// The etag last given, by job.
    etags: HashMap<JobId, Etag>,
    /// The finished jobs among them, by when they may be forgotten: the later of their
    /// `changedOn` and the moment they were given.
    finished: BTreeSet<(DateTime<Utc>, JobId)>,
}

impl Given {
    /// Whether `status`, read at `now`, was not given yet; if so it counts as given from now on.
    fn fresh(&mut self, status: &AsynchronousJobStatus, now: DateTime<Utc>) -> bool {
        if self.etags.get(&status.job_id) == Some(&status.etag) {
            return false;
        }
        self.etags.insert(status.job_id, status.etag.clone());
        if status.is_terminal() {
            self.finished
                .insert((status.changed_on.max(now), status.job_id));
        }
        true
    }

    /// Every notice until `heard_all_at` was heard and its job read: forgets the finished jobs
    /// that nothing heard from now on, nor a resync, can bring back.
    fn forget_before(&mut self, heard_all_at: DateTime<Utc>, lookback: Duration) {
        let lookback = TimeDelta::from_std(lookback).unwrap_or(TimeDelta::MAX);
        let Some(horizon) = heard_all_at.checked_sub_signed(lookback) else {
            return;
        };
        while let Some(&(at, id)) = self.finished.first() {
            if at >= horizon {
                break;
            }
            self.finished.pop_first();
            self.etags.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MINUTE: TimeDelta = TimeDelta::minutes(1);

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap() + MINUTE * minutes as i32
    }

    fn status(id: u64, etag: u64, state: &str, changed: DateTime<Utc>) -> AsynchronousJobStatus {
        let changed = changed.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        serde_json::from_value(json!({
            "jobId": id.to_string(), "jobState": state, "etag": etag.to_string(),
            "startedOn": changed, "changedOn": changed, "runtimeMS": 0,
        }))
        .unwrap()
    }

    #[test]
    fn a_status_is_given_once_and_memory_stays_flat() {
        let mut given = Given::default();
        // A feed open for a day; every minute a job of another instance runs and finishes,
        // and all notices are heard.
        for minute in 0..24 * 60 {
            let id = minute as u64;
            let now = at(minute);
            assert!(given.fresh(&status(id, 1, "PROCESSING", now), now));
            assert!(
                !given.fresh(&status(id, 1, "PROCESSING", now), now),
                "given twice"
            );
            assert!(given.fresh(&status(id, 2, "COMPLETE", now), now));
            // A late notice, or a resync within the look-back, reads it again.
            assert!(
                !given.fresh(&status(id, 2, "COMPLETE", now), now),
                "given twice"
            );
            given.forget_before(now, RESYNC_LOOKBACK);
            if minute >= 1 {
                let before = status(id - 1, 2, "COMPLETE", at(minute - 1));
                assert!(!given.fresh(&before, now), "forgotten within the look-back");
            }
        }
        assert!(
            given.etags.len() <= 6 && given.finished.len() <= 6,
            "{} jobs remembered after a day",
            given.etags.len()
        );
    }

    #[test]
    fn running_jobs_and_recent_or_skewed_finished_ones_are_kept() {
        let mut given = Given::default();
        assert!(given.fresh(&status(1, 3, "PROCESSING", at(0)), at(0)));
        // Finished with a clock ten minutes behind, given now: kept for the look-back from now.
        assert!(given.fresh(&status(2, 4, "FAILED", at(-10)), at(0)));
        // Finished with a clock an hour ahead: kept until that hour is past the look-back.
        assert!(given.fresh(&status(3, 4, "COMPLETE", at(60)), at(0)));
        given.forget_before(at(4), RESYNC_LOOKBACK);
        assert!(!given.fresh(&status(2, 4, "FAILED", at(-10)), at(4)));
        given.forget_before(at(6), RESYNC_LOOKBACK);
        assert_eq!(given.etags.len(), 2, "job 2 is forgotten");
        given.forget_before(at(24 * 60), RESYNC_LOOKBACK);
        assert!(!given.fresh(&status(1, 3, "PROCESSING", at(0)), at(24 * 60)));
        assert_eq!(given.etags.len(), 1, "a running job is kept, however old");
    }
}
