//! The state a store's handles, the observer it gives its registry, and its background tasks
//! share: the connection pool, this instance's registration, reserved ids, the registry once
//! attached, what is due to be written, and who waits for other instances' jobs.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::mirror::Mirror;
use super::{Db, StoreError};
use crate::store::{Local, RemoteChange};
use crate::JobId;

pub(super) struct Inner {
    pub(super) db: Db,
    /// This instance's registration; a new one if the old lease was lost.
    pub(super) instance: AtomicU64,
    pub(super) lease: Duration,
    pub(super) flush_interval: Duration,
    pub(super) runtime: Handle,
    pub(super) ids: Mutex<Ids>,
    /// The registry's jobs, once attached.
    pub(super) local: OnceLock<Arc<dyn Local>>,
    pub(super) mirror: Mirror,
    /// Waits for other instances' jobs, by job: told the version of each change heard of.
    pub(super) waiters: Mutex<HashMap<JobId, watch::Sender<u64>>>,
    /// Every change heard, for the registry's cluster-wide followers (the HTTP event stream).
    pub(super) changes: tokio::sync::broadcast::Sender<RemoteChange>,
    /// Told once, when the store is attached to a registry.
    pub(super) attached: Arc<tokio::sync::Notify>,
    /// Set while this instance could not renew its lease in time: its jobs were canceled.
    pub(super) lease_lost: AtomicBool,
    /// Stops the background tasks.
    pub(super) stop: CancellationToken,
}

/// Reserved job ids: the block in use, and the next one, fetched ahead.
pub(super) struct Ids {
    pub(super) current: Range<u64>,
    pub(super) next: Option<Range<u64>>,
    pub(super) refilling: bool,
}

impl Inner {
    /// Runs a background task until the store is dropped or closed.
    pub(super) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    pub(super) fn instance(&self) -> u64 {
        self.instance.load(Ordering::Acquire)
    }

    pub(super) fn local(&self) -> Option<&Arc<dyn Local>> {
        self.local.get()
    }

    /// Tells waiters for `id` that it changed.
    pub(super) fn heard(&self, id: JobId, version: u64) {
        let mut waiters = self.waiters.lock();
        if let Some(sender) = waiters.get(&id) {
            if sender.receiver_count() == 0 {
                waiters.remove(&id);
            } else {
                sender.send_replace(version);
            }
        }
    }

    /// Tells every waiter to read again (notifications may have been lost).
    pub(super) fn wake_all_waiters(&self) {
        let mut waiters = self.waiters.lock();
        waiters.retain(|_, sender| sender.receiver_count() > 0);
        for sender in waiters.values() {
            sender.send_modify(|v| *v += 1);
        }
    }

    /// Applies the cancels the database holds for this instance's jobs.
    pub(super) async fn apply_requested_cancels(&self) -> Result<(), StoreError> {
        let ids = self.db.cancels_for(self.instance()).await?;
        if let Some(local) = self.local() {
            for id in ids {
                local.cancel(JobId::from_u64(id));
            }
        }
        Ok(())
    }

    /// Writes every status that is due; see [`Mirror::flush`].
    pub(super) async fn flush(&self) -> bool {
        self.mirror
            .flush(&self.db, self.instance(), self.local())
            .await
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
