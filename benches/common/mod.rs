//! What the benches share: the baselines every measured case is paired with, and small helpers
//! (bodies, a cheap RNG, env-configurable sizes, a countdown latch).
//!
//! - [`RawFloor`]: the least any job runner can do, the floor a figure is read against. A plain
//!   `tokio::spawn` whose `JoinHandle` is the only way to wait, progress in an `AtomicU64`. No
//!   statuses, no messages, no timestamps, no cancellation: nothing to read but a number.
//! - [`Lean`]: the registry a careful engineer writes in an afternoon, and the baseline every
//!   ratio is quoted against. One `std::sync::Mutex<HashMap<u64, LeanEntry>>` (std's hasher);
//!   a `u64` etag per job; `SystemTime::now()` on every change; the message copied (into the
//!   status's own `String`) only when it changed, and an identical report changes nothing; a
//!   small status (id, user, state, progress, message, etag, times, optional response) cloned on
//!   read; one child `CancellationToken` per job; jobs spawned on a `TaskTracker`, waited for
//!   through their `JoinHandle`. It keeps no request body, no retention, no feeds, no observers
//!   and no per-user index, so it does less than we do: ratios against it are conservative.
//! - [`BodyCloning`]: not a baseline, a foil. A registry that stores each request body in the
//!   status and deep-clones it (and formats a `String` etag, and reads chrono's `Utc::now()`) on
//!   every read. Only `status` uses it, to show what sharing bodies buys when bodies are large.
//!
//! Each bench uses a part of this module, so unused items are expected in any one of them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
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

/// Counts down to zero and wakes one waiter then: the same "all done" (or "all ready") signal
/// for every variant, so that no variant is charged for a costlier way of waiting.
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
// The raw floor.

/// `tokio::spawn` and its `JoinHandle`; progress in an atomic.
#[derive(Debug, Clone, Default)]
pub struct RawFloor;

/// What a raw-floor task holds.
#[derive(Debug, Clone, Default)]
pub struct RawJob {
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
        RawFloor
    }

    /// Spawns `job` on the current runtime (must be called within one); its output comes back
    /// through the `JoinHandle`.
    pub fn spawn<F, Fut, T>(&self, job: F) -> (RawJob, JoinHandle<T>)
    where
        F: FnOnce(RawJob) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = RawJob::default();
        let task = tokio::spawn(job(handle.clone()));
        (handle, task)
    }
}

// ---------------------------------------------------------------------------------------------
// The lean registry.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Processing,
    Failed,
    Complete,
}

/// The lean registry's status: small, and cloned whole on every read.
#[derive(Debug, Clone)]
pub struct LeanStatus {
    pub id: u64,
    pub user: Option<u64>,
    pub state: State,
    pub canceling: bool,
    pub current: u64,
    pub total: u64,
    pub message: String,
    pub etag: u64,
    pub started: SystemTime,
    pub changed: SystemTime,
    pub response: Option<Value>,
    pub error: Option<String>,
}

/// One job in the lean map: its status, and the registry's link to its token until it ends.
#[derive(Debug)]
pub struct LeanEntry {
    status: LeanStatus,
    token: Option<CancellationToken>,
}

type LeanMap = Arc<Mutex<HashMap<u64, LeanEntry>>>;

/// One mutex around one map.
#[derive(Debug, Clone, Default)]
pub struct Lean {
    jobs: LeanMap,
    next_id: Arc<AtomicU64>,
    root: CancellationToken,
    tracker: TaskTracker,
}

/// What a lean job holds: its id, the map, and its token.
#[derive(Debug, Clone)]
pub struct LeanJob {
    pub id: u64,
    pub token: CancellationToken,
    jobs: LeanMap,
}

impl Lean {
    pub fn new() -> Self {
        Lean::default()
    }

    /// Registers a PROCESSING status, without a task: for benches that drive a job by hand.
    pub fn insert(&self, user: Option<u64>) -> LeanJob {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let token = self.root.child_token();
        let status = LeanStatus {
            id,
            user,
            state: State::Processing,
            canceling: false,
            current: 0,
            total: 0,
            message: String::new(),
            etag: 1,
            started: now,
            changed: now,
            response: None,
            error: None,
        };
        let entry = LeanEntry {
            status,
            token: Some(token.clone()),
        };
        self.jobs.lock().unwrap().insert(id, entry);
        LeanJob {
            id,
            token,
            jobs: self.jobs.clone(),
        }
    }

    /// Registers a status and runs `job` as a tracked task that records its outcome at its end;
    /// the `JoinHandle` resolves once the outcome is recorded.
    pub fn spawn<F, Fut>(&self, user: Option<u64>, job: F) -> (u64, JoinHandle<()>)
    where
        F: FnOnce(LeanJob) -> Fut,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let handle = self.insert(user);
        let id = handle.id;
        let future = job(handle.clone());
        let task = self.tracker.spawn(async move {
            let outcome = future.await;
            handle.finish(outcome);
        });
        (id, task)
    }

    /// Lock + get + clone.
    pub fn status(&self, id: u64) -> Option<LeanStatus> {
        self.jobs.lock().unwrap().get(&id).map(|e| e.status.clone())
    }

    /// Sets the canceling flag and fires the job's token; false if it was set or the job ended.
    pub fn cancel(&self, id: u64) -> bool {
        let token = {
            let mut jobs = self.jobs.lock().unwrap();
            let Some(e) = jobs.get_mut(&id) else {
                return false;
            };
            if e.status.canceling || e.status.state != State::Processing {
                return false;
            }
            e.status.canceling = true;
            e.status.etag += 1;
            e.status.changed = SystemTime::now();
            e.token.take()
        };
        if let Some(token) = token {
            token.cancel();
        }
        true
    }

    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    /// Lock + clone every status, then sort by id outside the lock.
    pub fn list(&self) -> Vec<LeanStatus> {
        let mut all: Vec<LeanStatus> = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .map(|e| e.status.clone())
            .collect();
        all.sort_unstable_by_key(|s| s.id);
        all
    }

    /// One user's statuses: lock + a scan of the whole map (it has no per-user index).
    pub fn list_of(&self, user: u64) -> Vec<LeanStatus> {
        let mut mine: Vec<LeanStatus> = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.status.user == Some(user))
            .map(|e| e.status.clone())
            .collect();
        mine.sort_unstable_by_key(|s| s.id);
        mine
    }

    /// Jobs per state (processing, complete, failed): lock + one pass over the map.
    pub fn counts(&self) -> (usize, usize, usize) {
        let jobs = self.jobs.lock().unwrap();
        let mut counts = (0, 0, 0);
        for e in jobs.values() {
            match e.status.state {
                State::Processing => counts.0 += 1,
                State::Complete => counts.1 += 1,
                State::Failed => counts.2 += 1,
            }
        }
        counts
    }

    /// Waits for every task spawned so far; no task can be spawned afterwards.
    pub async fn wait_all(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl LeanJob {
    /// Updates the status under the lock with a fresh time and etag; an identical report changes
    /// nothing, and the message is copied into the status's buffer only when it differs (so it
    /// allocates only when it grows). Returns whether the status changed.
    pub fn set_progress(&self, current: u64, total: u64, message: &str) -> bool {
        let mut jobs = self.jobs.lock().unwrap();
        let Some(e) = jobs.get_mut(&self.id) else {
            return false;
        };
        let s = &mut e.status;
        if s.state != State::Processing {
            return false;
        }
        let same_message = s.message == message;
        if same_message && s.current == current && s.total == total {
            return false;
        }
        s.current = current;
        s.total = total;
        if !same_message {
            message.clone_into(&mut s.message);
        }
        s.etag += 1;
        s.changed = SystemTime::now();
        true
    }

    /// Records the outcome; the registry's link to the token is dropped after the lock.
    pub fn finish(&self, outcome: Result<Value, String>) {
        let token = {
            let mut jobs = self.jobs.lock().unwrap();
            let Some(e) = jobs.get_mut(&self.id) else {
                return;
            };
            let s = &mut e.status;
            if s.state != State::Processing {
                return;
            }
            match outcome {
                Ok(response) => {
                    s.state = State::Complete;
                    s.current = s.total;
                    "Complete".clone_into(&mut s.message);
                    s.response = (!response.is_null()).then_some(response);
                }
                Err(error) => {
                    s.state = State::Failed;
                    s.error = Some(error);
                }
            }
            s.etag += 1;
            s.changed = SystemTime::now();
            e.token.take()
        };
        drop(token);
    }
}

// ---------------------------------------------------------------------------------------------
// The foil: a registry that stores request bodies and clones them on every read.

/// A status that holds its request body by value.
#[derive(Debug, Clone)]
pub struct CloningStatus {
    pub id: u64,
    pub state: State,
    pub current: u64,
    pub total: u64,
    pub message: String,
    pub etag: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub changed: chrono::DateTime<chrono::Utc>,
    pub request: Value,
    pub response: Option<Value>,
}

static CLONING_ETAGS: AtomicU64 = AtomicU64::new(1);

/// One mutex around one map of statuses that own their bodies; `status()` deep-clones them.
#[derive(Debug, Clone, Default)]
pub struct BodyCloning {
    jobs: Arc<Mutex<HashMap<u64, CloningStatus>>>,
    next_id: Arc<AtomicU64>,
}

impl BodyCloning {
    pub fn new() -> Self {
        BodyCloning::default()
    }

    /// Registers a PROCESSING status holding `request`, with some progress; returns its id.
    pub fn insert(&self, request: Value, current: u64, total: u64, message: &str) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now();
        let mut etag = String::new();
        let _ = write!(etag, "{:x}", CLONING_ETAGS.fetch_add(1, Ordering::Relaxed));
        let status = CloningStatus {
            id,
            state: State::Processing,
            current,
            total,
            message: message.to_owned(),
            etag,
            started: now,
            changed: now,
            request,
            response: None,
        };
        self.jobs.lock().unwrap().insert(id, status);
        id
    }

    /// Lock + get + deep clone, body included.
    pub fn status(&self, id: u64) -> Option<CloningStatus> {
        self.jobs.lock().unwrap().get(&id).cloned()
    }
}
