//! The sharded table of jobs by id.
//!
//! Jobs are spread over `2^n` shards by the low bits of their id. Ids are handed out in sequence,
//! so consecutive jobs land on consecutive shards and the shards fill evenly without hashing;
//! within a shard, keys are mixed by [`IdHasher`] because they all share those low bits.
//!
//! Each shard's lock is held only to find, insert or remove an `Arc<Job>`, or to read a job
//! ([`Table::with`], [`Table::jobs`]), which takes the job's lock: a job's lock is a leaf, so this
//! cannot deadlock. A shard's lock is never held across an `.await`, while user code runs, or
//! while a job (or its bodies) is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::job::Job;
use crate::JobId;

type Shard = RwLock<HashMap<u64, Arc<Job>, BuildHasherDefault<IdHasher>>>;

pub(crate) struct Table {
    shards: Box<[Shard]>,
    mask: u64,
}

impl Table {
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Table {
            shards: (0..shards)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            mask: shards as u64 - 1,
        }
    }

    fn shard(&self, id: JobId) -> &Shard {
        &self.shards[(id.as_u64() & self.mask) as usize]
    }

    pub(crate) fn insert(&self, job: Arc<Job>) {
        let old = self.shard(job.id).write().insert(job.id.as_u64(), job);
        debug_assert!(old.is_none(), "job ids are never reused");
    }

    /// Runs `read` on the job under the shard's read lock. `read` must not take a table lock.
    pub(crate) fn with<T>(&self, id: JobId, read: impl FnOnce(&Job) -> T) -> Option<T> {
        self.shard(id).read().get(&id.as_u64()).map(|job| read(job))
    }

    pub(crate) fn get(&self, id: JobId) -> Option<Arc<Job>> {
        self.shard(id).read().get(&id.as_u64()).cloned()
    }

    /// Removes the job and hands it back, so the caller drops it after the shard lock is released.
    pub(crate) fn remove(&self, id: JobId) -> Option<Arc<Job>> {
        self.shard(id).write().remove(&id.as_u64())
    }

    /// The jobs that `keep` selects, one shard at a time: each shard is read at one instant, but
    /// jobs added or removed in other shards meanwhile may or may not be seen. Runs no user code
    /// under a shard's lock.
    pub(crate) fn jobs(&self, mut keep: impl FnMut(&Job) -> bool) -> Vec<Arc<Job>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.read().values().filter(|job| keep(job)).cloned());
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

/// Mixes a `u64` key with one multiply-fold: job ids are ours, not an attacker's, so no keyed hash
/// is needed, and all bits of the result depend on all bits of the id.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let product = u128::from(n ^ self.0) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::JobRequest;

    fn job(n: u64) -> Arc<Job> {
        Arc::new(Job::new(
            JobId::from_u64(n),
            JobRequest::default(),
            CancellationToken::new(),
            None,
        ))
    }

    #[test]
    fn shards_are_a_power_of_two_and_consecutive_ids_spread_over_them() {
        let table = Table::new(6);
        assert_eq!(table.shards.len(), 8);
        for n in 0..64 {
            table.insert(job(n));
        }
        for shard in table.shards.iter() {
            assert_eq!(
                shard.read().len(),
                8,
                "consecutive ids fill the shards evenly"
            );
        }
        assert_eq!(table.len(), 64);
    }

    #[test]
    fn a_removed_job_is_handed_back_and_gone() {
        let table = Table::new(4);
        table.insert(job(3));
        assert_eq!(table.with(JobId::from_u64(3), |j| j.id.as_u64()), Some(3));
        let removed = table.remove(JobId::from_u64(3)).expect("it was there");
        assert_eq!(removed.id.as_u64(), 3);
        assert!(table.get(JobId::from_u64(3)).is_none());
        assert!(table.remove(JobId::from_u64(3)).is_none());
        assert_eq!(table.jobs(|_| true).len(), 0);
    }

    #[test]
    fn the_id_hasher_mixes_ids_that_share_their_low_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        // Ids of one shard of 16 differ only above bit 4; their hashes must differ low down too.
        let low_bits: std::collections::HashSet<u64> =
            (0..256u64).map(|n| build.hash_one(n << 4) & 0xff).collect();
        assert!(
            low_bits.len() > 128,
            "only {} distinct low bytes",
            low_bits.len()
        );
    }
}
