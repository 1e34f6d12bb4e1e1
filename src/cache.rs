//! Request caching: a cacheable request equal to one the same user sent before, whose job is
//! still running or finished COMPLETE and is retained, gets that job's id instead of a new job.
//!
//! Bodies are compared as JSON values, so key order does not matter; the index is keyed by a hash
//! of the user and the body with object keys sorted. A job leaves the index when it fails or is
//! dropped by retention, so the index never outgrows the registry.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;

use crate::job::Job;

#[derive(Default)]
pub(crate) struct RequestCache {
    entries: Mutex<HashMap<u64, Vec<Arc<Job>>>>,
}

pub(crate) type Entries = HashMap<u64, Vec<Arc<Job>>>;

pub(crate) fn key(user: Option<u64>, body: Option<&Value>) -> u64 {
    let mut hasher = DefaultHasher::new();
    user.hash(&mut hasher);
    if let Some(body) = body {
        hash_value(body, &mut hasher);
    }
    hasher.finish()
}

/// Hashes a JSON value consistently with its equality: object keys in sorted order.
fn hash_value(value: &Value, h: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => (2u8, n.to_string()).hash(h),
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|v| hash_value(v, h));
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(h);
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in fields {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

impl RequestCache {
    /// The index, locked: a lookup and the insert of a new job happen under one lock, so two equal
    /// requests at once start one job.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock()
    }

    pub(crate) fn remove(&self, job: &Job) {
        let key = key(job.user, job.request.as_deref());
        let mut entries = self.entries.lock();
        if let Some(jobs) = entries.get_mut(&key) {
            jobs.retain(|j| j.id != job.id);
            if jobs.is_empty() {
                entries.remove(&key);
            }
        }
    }
}
