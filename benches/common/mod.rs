//! What the benches share: the two baselines every measured case is paired with, and small
//! helpers (bodies, ids, a cheap RNG, env-configurable sizes).
//!
//! - [`RawFloor`]: the least any job runner can do. `tokio::spawn` tracked by a
//!   `TaskTracker`, a child `CancellationToken` per task, progress in an `AtomicU64`. No
//!   statuses, no messages, no timestamps: nothing to read but a number.
//! - [`HandRolled`]: the registry a user writes in an afternoon. One
//!   `Arc<std::sync::Mutex<HashMap<u64, Status>>>`; every progress report takes the lock, stamps
//!   `Utc::now()`, mints an etag and copies the message; `status()` is lock + get + clone. It
//!   has no cancellation and no retention, so it is if anything cheaper than what it stands in
//!   for: ratios against it are conservative.
//!
//! Each bench uses a part of this module, so unused items are expected in any one of them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Progress messages, preformatted so that no bench measures `format!`.
pub const STEPS: [&str; 10] = [
    "step 1 of 10",
    "step 2 of 10",
    "step 3 of 10",
    "step 4 of 10",
    "step 5 of 10",
    "step 6 of 10",
    "step 7 of 10",
    "step 8 of 10",
    "step 9 of 10",
    "step 10 of 10",
];

/// A usize from the environment, or `default` when unset or unparsable.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A multi-thread runtime with `workers` worker threads, built once per bench, never in `b.iter`.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// xorshift64*: enough randomness to defeat caches and branch predictors, at a few cycles a draw.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for picking ids.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A Synapse-style request body of about `bytes` bytes of JSON: a `concreteType`, a query and as
/// many small row objects as fit. Many small values, as real bodies have, so that cloning one
/// costs what cloning a real one does (one big string would clone with a single memcpy).
pub fn request_body(bytes: usize) -> Value {
    let mut rows = Vec::new();
    let mut size = 96;
    let mut i = 0u64;
    while size < bytes {
        let row = json!({"id": i, "name": format!("row-{i:08}"), "selected": i % 3 == 0});
        size += serde_json::to_string(&row).map_or(48, |s| s.len() + 1);
        rows.push(row);
        i += 1;
    }
    json!({
        "concreteType": "org.example.ExportRequest",
        "query": "SELECT * FROM syn123 WHERE selected",
        "rows": rows,
    })
}

/// The small response every benched job returns.
pub fn response_body() -> Value {
    json!({"concreteType": "org.example.ExportResponse", "rows": 10})
}

/// Counts jobs down to zero and wakes one waiter then: the same "all done" signal for every
/// variant of a batch, so that no variant is charged for a costlier way of waiting.
#[derive(Debug, Clone)]
pub struct Latch(Arc<(AtomicUsize, Notify)>);

impl Latch {
    pub fn new(count: usize) -> Self {
        Latch(Arc::new((AtomicUsize::new(count), Notify::new())))
    }

    pub fn count_down(&self) {
        if self.0 .0.fetch_sub(1, Ordering::AcqRel) == 1 {
            // notify_one stores a permit, so a waiter that arrives late still wakes.
            self.0 .1.notify_one();
        }
    }

    pub async fn wait(&self) {
        while self.0 .0.load(Ordering::Acquire) != 0 {
            self.0 .1.notified().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline (a): the raw floor.

/// `tokio::spawn` under a `TaskTracker`, a child token per task, progress in an atomic.
#[derive(Debug, Clone, Default)]
pub struct RawFloor {
    tracker: TaskTracker,
    root: CancellationToken,
}

/// What a raw-floor task holds.
#[derive(Debug, Clone)]
pub struct RawJob {
    pub token: CancellationToken,
    pub progress: Arc<AtomicU64>,
}

impl RawJob {
    pub fn set_progress(&self, current: u64) {
        self.progress.store(current, Ordering::Release);
    }

    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Acquire)
    }
}

impl RawFloor {
    pub fn new() -> Self {
        RawFloor::default()
    }

    /// Spawns `job` on the current runtime; must be called within one.
    pub fn spawn<F, Fut>(&self, job: F) -> RawJob
    where
        F: FnOnce(RawJob) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = RawJob {
            token: self.root.child_token(),
            progress: Arc::new(AtomicU64::new(0)),
        };
        drop(self.tracker.spawn(job(handle.clone())));
        handle
    }

    /// Waits for every task spawned so far; no task can be spawned afterwards.
    pub async fn wait_all(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline (b): the hand-rolled registry.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Processing,
    Failed,
    Complete,
}

/// The status struct a user would write.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: u64,
    pub state: State,
    pub current: u64,
    pub total: u64,
    pub message: String,
    pub etag: String,
    pub started: DateTime<Utc>,
    pub changed: DateTime<Utc>,
    pub request: Value,
    pub response: Option<Value>,
    pub error: Option<String>,
}

/// Etags of the hand-rolled registry: a counter written as hex (a UUID would cost more).
static ETAGS: AtomicU64 = AtomicU64::new(1);

fn new_etag(etag: &mut String) {
    etag.clear();
    let _ = write!(etag, "{:x}", ETAGS.fetch_add(1, Ordering::Relaxed));
}

/// One mutex around one map.
#[derive(Debug, Clone, Default)]
pub struct HandRolled {
    jobs: Arc<Mutex<HashMap<u64, Status>>>,
    next_id: Arc<AtomicU64>,
    tracker: TaskTracker,
}

/// What a hand-rolled job holds to report progress.
#[derive(Debug, Clone)]
pub struct HandRolledJob {
    pub id: u64,
    jobs: Arc<Mutex<HashMap<u64, Status>>>,
}

impl HandRolled {
    pub fn new() -> Self {
        HandRolled::default()
    }

    /// Registers a PROCESSING status, without a task: for benches that drive a job by hand.
    pub fn insert(&self, request: Value) -> HandRolledJob {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        let mut etag = String::new();
        new_etag(&mut etag);
        let status = Status {
            id,
            state: State::Processing,
            current: 0,
            total: 0,
            message: String::new(),
            etag,
            started: now,
            changed: now,
            request,
            response: None,
            error: None,
        };
        self.jobs.lock().unwrap().insert(id, status);
        HandRolledJob {
            id,
            jobs: self.jobs.clone(),
        }
    }

    /// Registers a status and runs `job` as a tracked task that records its outcome at the end.
    pub fn spawn<F, Fut>(&self, request: Value, job: F) -> u64
    where
        F: FnOnce(HandRolledJob) -> Fut,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let handle = self.insert(request);
        let id = handle.id;
        let future = job(handle.clone());
        drop(self.tracker.spawn(async move {
            let outcome = future.await;
            handle.finish(outcome);
        }));
        id
    }

    /// Lock + get + clone.
    pub fn status(&self, id: u64) -> Option<Status> {
        self.jobs.lock().unwrap().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    /// Lock + clone every status, then sort by id outside the lock.
    pub fn list(&self) -> Vec<Status> {
        let mut all: Vec<Status> = self.jobs.lock().unwrap().values().cloned().collect();
        all.sort_unstable_by_key(|s| s.id);
        all
    }

    /// Jobs per state (processing, complete, failed): lock + one pass over the map.
    pub fn counts(&self) -> (usize, usize, usize) {
        let jobs = self.jobs.lock().unwrap();
        let mut counts = (0, 0, 0);
        for s in jobs.values() {
            match s.state {
                State::Processing => counts.0 += 1,
                State::Complete => counts.1 += 1,
                State::Failed => counts.2 += 1,
            }
        }
        counts
    }

    pub async fn wait_all(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl HandRolledJob {
    /// Updates the status under the lock, with a fresh timestamp and etag. The message is copied
    /// into the existing buffer, so a careful user's version allocates only when it grows.
    pub fn set_progress(&self, current: u64, total: u64, message: &str) {
        let mut jobs = self.jobs.lock().unwrap();
        if let Some(s) = jobs.get_mut(&self.id) {
            s.current = current;
            s.total = total;
            message.clone_into(&mut s.message);
            new_etag(&mut s.etag);
            s.changed = Utc::now();
        }
    }

    pub fn finish(&self, outcome: Result<Value, String>) {
        let mut jobs = self.jobs.lock().unwrap();
        if let Some(s) = jobs.get_mut(&self.id) {
            match outcome {
                Ok(response) => {
                    s.state = State::Complete;
                    s.current = s.total;
                    "Complete".clone_into(&mut s.message);
                    s.response = Some(response);
                }
                Err(error) => {
                    s.state = State::Failed;
                    s.error = Some(error);
                }
            }
            new_etag(&mut s.etag);
            s.changed = Utc::now();
        }
    }
}
