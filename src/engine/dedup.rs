//! Request de-duplication (Synapse's request caching): a cacheable request equal to one the same user sent before, whose job is
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
use tokio::time::Instant;

use crate::job::Job;
use crate::{JobId, JobRequest};

/// Cacheable jobs by a hash of their user and body.
#[derive(Default)]
pub(crate) struct Dedup {
    entries: Mutex<Entries>,
}

type Entries = HashMap<u64, Vec<Arc<Job>>>;

/// What [`Dedup::lookup`] found.
pub(crate) enum Lookup<'a> {
    /// An equal request's job, which may answer this one.
    Reuse(JobId),
    /// None: the index stays locked until the new job is inserted, so two equal requests at once
    /// start one job.
    Fresh(Reservation<'a>),
}

/// The right to insert one new job for a request that found no equal one.
pub(crate) struct Reservation<'a> {
    entries: MutexGuard<'a, Entries>,
    key: u64,
}

impl Reservation<'_> {
    /// Inserts the new job and releases the index.
    pub(crate) fn insert(mut self, job: Arc<Job>) {
        self.entries.entry(self.key).or_default().push(job);
    }
}

fn key(user: Option<u64>, body: Option<&Value>) -> u64 {
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
        // As serde_json's `==`: integers by value, floats by value with -0.0 equal to 0.0 (their
        // texts differ, so hashing the text gave equal bodies different keys).
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => (2u8, 0u8, u).hash(h),
            (None, Some(i), _) => (2u8, 1u8, i).hash(h),
            (None, None, f) => {
                let f = f.unwrap_or_default();
                let f = if f == 0.0 { 0.0f64 } else { f };
                (2u8, 2u8, f.to_bits()).hash(h)
            }
        },
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

impl Dedup {
    /// The job of an earlier request by the same user with an equal body that may answer
    /// `request`: still running and not being canceled, or COMPLETE and not `expired`.
    pub(crate) fn lookup(
        &self,
        request: &JobRequest,
        expired: impl Fn(Instant) -> bool,
    ) -> Lookup<'_> {
        let key = key(request.user, request.body.as_deref());
        let entries = self.entries.lock();
        let reusable = entries.get(&key).and_then(|jobs| {
            jobs.iter().find(|j| {
                j.user() == request.user && j.request == request.body && j.reusable(&expired)
            })
        });
        match reusable {
            Some(earlier) => Lookup::Reuse(earlier.id),
            None => Lookup::Fresh(Reservation { entries, key }),
        }
    }

    /// The job that may answer `request`, as [`lookup`](Dedup::lookup) finds it, without
    /// reserving anything.
    pub(crate) fn peek(
        &self,
        request: &JobRequest,
        expired: impl Fn(Instant) -> bool,
    ) -> Option<JobId> {
        match self.lookup(request, expired) {
            Lookup::Reuse(id) => Some(id),
            Lookup::Fresh(_) => None,
        }
    }

    pub(crate) fn remove(&self, job: &Job) {
        let key = key(job.user(), job.request.as_deref());
        let mut entries = self.entries.lock();
        if let Some(jobs) = entries.get_mut(&key) {
            jobs.retain(|j| j.id != job.id);
            if jobs.is_empty() {
                entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bodies_equal_as_json_have_equal_keys() {
        for (a, b) in [
            (json!({"x": 0.0}), json!({"x": -0.0})),
            (
                json!({"a": 1, "b": [true, null]}),
                json!({"b": [true, null], "a": 1}),
            ),
            (json!({"n": -5}), json!({"n": -5})),
        ] {
            assert_eq!(a, b);
            assert_eq!(key(Some(1), Some(&a)), key(Some(1), Some(&b)), "{a} vs {b}");
        }
        assert_ne!(key(Some(1), Some(&json!(1))), key(Some(2), Some(&json!(1))));
    }
}
