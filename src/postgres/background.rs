//! What a store does on its own while attached: keep its lease, follow the database's
//! notifications, poll for cancels, reap lost instances and sweep retention, and write what is
//! due. Each task holds the store weakly and ends once it is gone.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::state::Inner;
use super::{Listener, Notice};
use crate::store::RemoteChange;
use crate::JobId;

/// How often an instance asks the database for cancels it may have missed (notifications are
/// lost while its listening connection reconnects).
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// How often one instance trims the database by the retention rules.
const RETENTION_SWEEP: Duration = Duration::from_secs(10);

/// Rows deleted per statement by a retention sweep.
const RETENTION_BATCH: usize = 1_000;

/// The least time between two flushes, so that urgent writes in a burst share statements.
const MIN_GAP: Duration = Duration::from_millis(20);

/// How long a failed flush waits before the next try, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Renews the lease every third of it. Past the lease without a renewal, this instance cancels
/// its jobs; if the lease was taken away meanwhile (another instance reaped it), it registers
/// anew, so new jobs have a live owner.
pub(super) async fn keep_lease(inner: Weak<Inner>) {
    let Some(lease) = inner.upgrade().map(|i| i.lease) else {
        return;
    };
    let mut renewed_at = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.db.renew_lease(inner.instance(), inner.lease).await {
            Ok(true) => {
                renewed_at = Instant::now();
                inner.lease_lost.store(false, Ordering::Release);
            }
            Ok(false) => {
                // The cluster has marked every job of this registration lost, also those started
                // after an earlier failed renewal: cancel them all, whatever was canceled before.
                inner.lease_lost.store(false, Ordering::Release);
                lose_lease(&inner, "another instance found its lease run out");
                if let Ok(instance) = inner.db.register_instance(&this_host(), lease).await {
                    inner.instance.store(instance, Ordering::Release);
                    renewed_at = Instant::now();
                    inner.lease_lost.store(false, Ordering::Release);
                }
            }
            Err(error) if renewed_at.elapsed() >= lease => {
                lose_lease(&inner, &error.to_string());
            }
            Err(_) => {}
        }
    }
}

/// This instance can no longer vouch for its jobs: it cancels them, once per lost lease.
fn lose_lease(inner: &Inner, why: &str) {
    if !inner.lease_lost.swap(true, Ordering::AcqRel) {
        #[cfg(feature = "tracing")]
        tracing::error!(target: "asyncjobs", instance = inner.instance(), why, "instance lost its lease; canceling its jobs");
        #[cfg(not(feature = "tracing"))]
        let _ = why;
        if let Some(local) = inner.local() {
            local.cancel_all();
        }
    }
}

/// Follows the database's notifications: cancels of this instance's jobs, changes of jobs
/// someone here waits for.
pub(super) async fn listen(inner: Weak<Inner>, mut listener: Listener) {
    while let Some(notice) = listener.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match notice {
            Notice::Changed { id, version, user } => {
                let id = JobId::from_u64(id);
                inner.heard(id, version);
                // No follower is not an error.
                let _ = inner.changes.send(RemoteChange::Changed {
                    id,
                    version,
                    user,
                    heard_at: chrono::Utc::now(),
                });
            }
            Notice::Cancel { owner, id } if owner == inner.instance() => {
                if let Some(local) = inner.local() {
                    local.cancel(JobId::from_u64(id));
                }
            }
            Notice::Cancel { .. } => {}
            Notice::Reconnected | Notice::Lagged => {
                inner.mirror.back.notify_one();
                inner.wake_all_waiters();
                let _ = inner.changes.send(RemoteChange::Resync);
                let _ = inner.apply_requested_cancels().await;
            }
        }
    }
}

/// The backup for lost cancel notifications: asks the database every second.
pub(super) async fn poll_cancels(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        let _ = inner.apply_requested_cancels().await;
    }
}

/// Reaps instances whose lease ran out and trims the table by the registry's retention rules
/// (every few seconds). Both are safe with every instance doing it. The reaper looks again when
/// the next lease of another instance runs out (a little after), and at least every second, so
/// that how soon a dead instance is found depends on its lease, not on the survivors'.
pub(super) async fn reap_and_sweep(inner: Weak<Inner>) {
    // The retention rules are the registry's: wait until the store is attached to one (without
    // holding the store, which may be dropped unattached).
    let Some((lease, attached)) = inner.upgrade().map(|i| (i.lease, i.attached.clone())) else {
        return;
    };
    attached.notified().await;
    // The first round runs at once: an instance that starts after a crash reaps its dead
    // predecessor and trims what piled up meanwhile without waiting a round.
    let mut swept_at: Option<Instant> = None;
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if let Ok(reaped) = inner.db.reap_dead_instances().await {
            for (id, version) in reaped {
                inner.heard(JobId::from_u64(id), version);
            }
        }
        if let Some((keep_for, keep_at_most)) = inner.local().map(|local| local.retention()) {
            if swept_at.is_none_or(|at| at.elapsed() >= RETENTION_SWEEP) {
                swept_at = Some(Instant::now());
                let _ = inner
                    .db
                    .sweep_retention(keep_for, keep_at_most, RETENTION_BATCH)
                    .await;
            }
        }
        // An instance that registers meanwhile may have a shorter lease than any seen: look at
        // least every `REAP_AT_LEAST_EVERY`.
        let at_least = REAP_AT_LEAST_EVERY.min(lease / 3);
        let next = match inner.db.next_lease_end(inner.instance()).await {
            Ok(Some(until)) => (until + REAP_MARGIN).min(at_least),
            Ok(None) | Err(_) => at_least,
        }
        .max(REAP_AT_MOST_EVERY);
        drop(inner);
        tokio::time::sleep(next).await;
    }
}

/// How long after another instance's lease ran out the reaper looks: the lease's end is read
/// from the database, and a renewal may be under way at that moment.
const REAP_MARGIN: Duration = Duration::from_millis(100);

/// The reaper's shortest sleep, so that an instance with a tiny lease does not make the others
/// poll the database without pause.
const REAP_AT_MOST_EVERY: Duration = Duration::from_millis(100);

/// The reaper's longest sleep: a dead instance's jobs read FAILED within about its lease plus
/// this, whatever the survivors' leases. One small query a second per instance.
const REAP_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Writes what is due every flush interval, or at once when something urgent is due; see
/// [`mirror`](super::mirror).
pub(super) async fn flush_loop(inner: Weak<Inner>) {
    let mut backoff = Duration::ZERO;
    loop {
        // Held across the wait (at most a flush interval): once the registry and every handle
        // of the store are gone, this is the last reference, and dropping it stops the task.
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let interval = strong.flush_interval;
        if backoff.is_zero() {
            tokio::select! {
                () = strong.mirror.urgent.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        } else {
            tokio::select! {
                () = strong.mirror.back.notified() => {}
                () = tokio::time::sleep(backoff) => {}
            }
        }
        backoff = if strong.flush().await {
            Duration::ZERO
        } else {
            (backoff * 2).clamp(interval, MAX_BACKOFF)
        };
        drop(strong);
        tokio::time::sleep(MIN_GAP).await;
    }
}

/// How this instance describes itself in `asyncjobs_instances.host`: host name and process id.
pub(super) fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned());
    format!("{name} (pid {})", std::process::id())
}
