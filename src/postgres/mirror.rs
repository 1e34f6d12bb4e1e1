//! Writing this instance's jobs to the database: the store's observer notes here which jobs
//! changed (coalescing: a job is written once per flush however often it changed), and a flush
//! writes them, the latest status of each, in one statement. The store's flush loop
//! ([`background`](super::background)) paces the flushes.
//!
//! Progress is written at most once per flush interval. A start, a new cancel flag and a final
//! status wake the loop at once (it still writes whatever else is due in the same statement, and
//! waits a little between flushes, so a burst of starts is a few statements, not one each).
//! Final statuses are kept as values until written: retention may drop a finished job from
//! memory before the database is back, and its final status must not be lost. While the database
//! is unreachable, what is due stays due (the latest per job) and is written when it returns:
//! failed flushes back off (up to 2 s between tries), and the listener's reconnection, the first
//! sign that the database is back, ends the wait at once.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Db, StatusRow};
use crate::id::IdHasher;
use crate::store::Local;
use crate::{AsynchronousJobStatus, JobEvent, JobEventKind, JobId};

/// Job ids are ours, not an attacker's: the id hasher, not SipHash, on the progress path.
type Ids = HashSet<JobId, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(super) struct Mirror {
    due: Mutex<Due>,
    /// Something urgent is due: flush now rather than at the interval's end.
    pub(super) urgent: Notify,
    /// The database answered again after an outage: retry now rather than at the backoff's end.
    pub(super) back: Notify,
    /// Held through a whole flush: a second flusher (the store's close) waits for a write under
    /// way instead of finding nothing due and going on as if it were written.
    writing: tokio::sync::Mutex<()>,
    /// Counts finished flushes, so that a caller can wait until a job's row is written.
    flushed: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Due {
    /// Running jobs whose status changed since it was last written: read again when written.
    changed: Ids,
    /// Final statuses not yet written.
    finished: HashMap<JobId, AsynchronousJobStatus>,
    /// Final statuses the flush under way is writing: still not in the database.
    writing_finished: HashMap<JobId, AsynchronousJobStatus>,
    /// Jobs whose cancel flag was already seen (only the first sighting is urgent).
    canceling: Ids,
    /// Jobs taken by the flush under way.
    in_flight: Ids,
    /// The names of named jobs, carried by each of their rows until the final status is
    /// written: a name is not a status field, so it is taken from the job's first event.
    names: HashMap<JobId, Arc<str>>,
}

impl Mirror {
    /// Job `id`'s final status, if this instance has not written it yet (it is due, or being
    /// written). A read of the job must answer with it, not with the row: retention may have
    /// dropped the job from memory already, and the row still says PROCESSING.
    pub(super) fn unwritten_final(&self, id: JobId) -> Option<AsynchronousJobStatus> {
        let due = self.due.lock();
        due.finished
            .get(&id)
            .or_else(|| due.writing_finished.get(&id))
            .cloned()
    }

    /// Resolves once job `id` has nothing left to write (its latest change is in the database),
    /// or after `at_most`.
    pub(super) async fn written(&self, id: JobId, at_most: Duration) {
        let mut flushed = self.flushed.subscribe();
        let _ = tokio::time::timeout(at_most, async {
            loop {
                {
                    let due = self.due.lock();
                    let pending = due.changed.contains(&id)
                        || due.finished.contains_key(&id)
                        || due.in_flight.contains(&id);
                    if !pending {
                        return;
                    }
                }
                if flushed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// The name of job `id`, if it has one and its final status is not written yet.
    pub(super) fn name_of(&self, id: JobId) -> Option<Arc<str>> {
        self.due.lock().names.get(&id).cloned()
    }

    /// Notes an event of one of the registry's jobs; the store's observer calls this for each.
    pub(super) fn note(&self, event: &JobEvent<'_>) {
        let id = event.job_id();
        let urgent = match event.kind() {
            JobEventKind::Created => {
                let name = event.name().map(Arc::<str>::from);
                let mut due = self.due.lock();
                due.changed.insert(id);
                if let Some(name) = name {
                    due.names.insert(id, name);
                }
                true
            }
            JobEventKind::Changed => {
                let mut due = self.due.lock();
                due.changed.insert(id);
                event.job_canceling() && due.canceling.insert(id)
            }
            JobEventKind::Finished => {
                // Taken now: the job may be dropped from memory before it is written.
                let status = event.status();
                let mut due = self.due.lock();
                due.changed.remove(&id);
                due.canceling.remove(&id);
                due.finished.insert(id, status);
                true
            }
            // The database has its own retention.
            _ => false,
        };
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Writes every status that is due in one statement, as instance `owner`, reading the
    /// latest status of each changed job from `local`. Returns whether it worked; if not, what
    /// was due stays due (unless something newer replaced it meanwhile).
    pub(super) async fn flush(&self, db: &Db, owner: u64, local: Option<&Arc<dyn Local>>) -> bool {
        let _writing = self.writing.lock().await;
        let (changed, finished, names) = {
            let mut due = self.due.lock();
            let changed = std::mem::take(&mut due.changed);
            let finished = std::mem::take(&mut due.finished);
            due.in_flight
                .extend(changed.iter().chain(finished.keys()).copied());
            // Kept readable until written (see `unwritten_final`); the flush writes clones.
            due.writing_finished.clone_from(&finished);
            let names: HashMap<JobId, Arc<str>> = changed
                .iter()
                .chain(finished.keys())
                .filter_map(|id| Some((*id, due.names.get(id)?.clone())))
                .collect();
            (changed, finished, names)
        };
        if changed.is_empty() && finished.is_empty() {
            return true;
        }
        let name = |id: &JobId| names.get(id).map(|name| &**name);
        let mut rows: Vec<StatusRow> = finished
            .values()
            .map(|status| StatusRow::new(status, owner, None).named(name(&status.job_id)))
            .collect();
        if let Some(local) = local {
            rows.extend(changed.iter().filter_map(|&id| local.status(id)).map(
                |(status, queued)| {
                    StatusRow::new(&status, owner, None)
                        .queued(queued)
                        .named(name(&status.job_id))
                },
            ));
        }
        let written = db.write_batch(&rows).await;
        let mut due = self.due.lock();
        due.in_flight.clear();
        due.writing_finished.clear();
        let ok = match written {
            Ok(_) => {
                // A finished job's row is never written again: its name is no longer needed.
                for id in finished.keys() {
                    due.names.remove(id);
                }
                true
            }
            Err(_) => {
                for (id, status) in finished {
                    due.finished.entry(id).or_insert(status);
                }
                for id in changed {
                    if !due.finished.contains_key(&id) {
                        due.changed.insert(id);
                    }
                }
                false
            }
        };
        drop(due);
        self.flushed.send_modify(|n| *n += 1);
        ok
    }
}
