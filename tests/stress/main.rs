//! Stress tests: invariants that must hold however jobs, readers, cancels and shutdowns
//! interleave on a multi-thread runtime.
//!
//! - [`invariants`]: tens of thousands of jobs with random outcomes, read, watched and canceled at
//!   random; a status must never lie.
//! - [`shutdown_race`]: shutdowns racing queued jobs under a concurrency limit, spawns from other
//!   threads and slow closures; a shutdown never starts a queued job, a job whose status is
//!   final never runs, and every job a shutdown ends says it was canceled.
//! - [`soak`]: everything at once (every outcome, pollers, feeds, watches, cancels, registries shut
//!   down and rebuilt) for a few seconds, or for `ASYNCJOBS_SOAK_MINUTES`; no job lost or stuck,
//!   one status per etag.
//!
//! Scale with `ASYNCJOBS_STRESS_JOBS`, reproduce a run's random choices with
//! `ASYNCJOBS_STRESS_SEED` (each test prints its seed). Timing is real and never asserted.

use std::sync::Arc;

use asyncjobs::{AsynchJobState, AsynchronousJobStatus};
use serde_json::Value;

#[path = "../common/mod.rs"]
mod common;

mod invariants;
mod shutdown_race;
mod soak;

/// Jobs per test unless `ASYNCJOBS_STRESS_JOBS` says otherwise.
const DEFAULT_JOBS: usize = 20_000;

/// The start of every panic a test plans; the panic hook keeps them out of the output.
const PANIC_PREFIX: &str = "stress planned panic";

/// Keeps the panics the tests plan (see [`PANIC_PREFIX`]) out of their output.
fn quiet_planned_panics() {
    common::quiet_planned_panics(|info| {
        common::panic_message(info).is_some_and(|m| m.starts_with(PANIC_PREFIX))
    });
}

/// `ASYNCJOBS_STRESS_SEED`, or a new seed each run.
fn seed() -> u64 {
    env_or(
        "ASYNCJOBS_STRESS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    )
}

/// xorshift64*: small, seeded, good enough to pick plans and victims.
#[derive(Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every observable field of a status but `runtimeMS` (which moves while a job runs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fingerprint {
    state: AsynchJobState,
    canceling: bool,
    changed_on: chrono::DateTime<chrono::Utc>,
    current: Option<u64>,
    total: Option<u64>,
    message: Option<Arc<str>>,
    error: Option<Arc<str>>,
    details: Option<Arc<str>>,
    exception: Option<Arc<str>>,
    response: Option<Arc<Value>>,
}

impl Fingerprint {
    pub(crate) fn of(s: &AsynchronousJobStatus) -> Self {
        Fingerprint {
            state: s.job_state,
            canceling: s.job_canceling,
            changed_on: s.changed_on,
            current: s.progress_current,
            total: s.progress_total,
            message: s.progress_message.clone(),
            error: s.error_message.clone(),
            details: s.error_details.clone(),
            exception: s.exception.clone(),
            response: s.response_body.clone(),
        }
    }
}

pub(crate) fn version(s: &AsynchronousJobStatus) -> u64 {
    s.etag
        .to_string()
        .parse()
        .expect("this crate's etags are change counters")
}
