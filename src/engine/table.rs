//! The sharded table of jobs by id.
//!
//! Jobs are spread over `2^n` shards by the low bits of their id. Ids are handed out in sequence,
//! so consecutive jobs land on consecutive shards and the shards fill evenly without hashing;
//! within a shard, keys are mixed by [`IdHasher`] because they all share those low bits.
//!
//! Beside the shards, an index of each user's job ids (sharded by user the same way), so that a
//! user's list costs O(that user's jobs), not a scan of every job. Ids are mostly handed out in
//! increasing order, so a user's ids are kept sorted by appending; retention drops the oldest
//! first, from the front.
//!
//! Each shard's lock is held only to find, insert or remove an `Arc<Job>`, or to read a job
//! ([`Table::with`], [`Table::jobs`]), which takes the job's lock: a job's lock is a leaf, so this
//! cannot deadlock. A shard's lock is never held across an `.await`, while user code runs, or
//! while a job (or its bodies) is dropped.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::id::IdHasher;
use crate::job::Job;
use crate::JobId;

type Shard = RwLock<HashMap<u64, Arc<Job>, BuildHasherDefault<IdHasher>>>;

type UserShard = Mutex<HashMap<u64, VecDeque<JobId>, BuildHasherDefault<IdHasher>>>;

pub(crate) struct Table {
    shards: Box<[Shard]>,
    users: Box<[UserShard]>,
    mask: u64,
}

impl Table {
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Table {
            shards: (0..shards)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            users: (0..shards).map(|_| Mutex::default()).collect(),
            mask: shards as u64 - 1,
        }
    }

    fn shard(&self, id: JobId) -> &Shard {
        &self.shards[(id.as_u64() & self.mask) as usize]
    }

    fn user_shard(&self, user: u64) -> &UserShard {
        // Users are the application's numbers, often consecutive: mixed before taking bits.
        let mut hasher = IdHasher::default();
        hasher.write_u64(user);
        &self.users[(hasher.finish() & self.mask) as usize]
    }

    pub(crate) fn insert(&self, job: Arc<Job>) {
        if let Some(user) = job.user() {
            let mut users = self.user_shard(user).lock();
            let ids = users.entry(user).or_default();
            match ids.back() {
                Some(&last) if last > job.id => {
                    let at = ids.partition_point(|&id| id < job.id);
                    ids.insert(at, job.id);
                }
                _ => ids.push_back(job.id),
            }
        }
        let old = self.shard(job.id).write().insert(job.id.as_u64(), job);
        debug_assert!(old.is_none(), "job ids are never reused");
    }

    /// Runs `read` on the job under the shard's read lock. `read` must not take a table lock.
    #[inline]
    pub(crate) fn with<T>(&self, id: JobId, read: impl FnOnce(&Job) -> T) -> Option<T> {
        self.shard(id).read().get(&id.as_u64()).map(|job| read(job))
    }

    pub(crate) fn get(&self, id: JobId) -> Option<Arc<Job>> {
        self.shard(id).read().get(&id.as_u64()).cloned()
    }

    /// Removes the job and hands it back, so the caller drops it after the shard lock is released.
    pub(crate) fn remove(&self, id: JobId) -> Option<Arc<Job>> {
        let job = self.shard(id).write().remove(&id.as_u64())?;
        if let Some(user) = job.user() {
            let mut users = self.user_shard(user).lock();
            if let Some(ids) = users.get_mut(&user) {
                // Retention drops the oldest first: usually the front.
                if ids.front() == Some(&id) {
                    ids.pop_front();
                } else if let Ok(at) = ids.binary_search(&id) {
                    ids.remove(at);
                }
                if ids.is_empty() {
                    users.remove(&user);
                }
            }
        }
        Some(job)
    }

    /// The jobs of `user`, in id order: O(that user's jobs). Each job is looked up in its shard
    /// after the user's index is read, so a job added or removed meanwhile may or may not be
    /// seen, as with [`Table::jobs`].
    pub(crate) fn jobs_of(&self, user: u64) -> Vec<Arc<Job>> {
        let ids: Vec<JobId> = match self.user_shard(user).lock().get(&user) {
            Some(ids) => ids.iter().copied().collect(),
            None => return Vec::new(),
        };
        ids.into_iter().filter_map(|id| self.get(id)).collect()
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

    fn job_of(n: u64, user: u64) -> Arc<Job> {
        Arc::new(Job::new(
            JobId::from_u64(n),
            JobRequest::default().started_by(user),
            CancellationToken::new(),
            None,
        ))
    }

    #[test]
    fn a_users_jobs_are_indexed_in_id_order_and_leave_with_them() {
        let table = Table::new(4);
        for n in [1, 2, 5, 4, 9] {
            table.insert(job_of(n, 7));
        }
        table.insert(job_of(3, 8));
        table.insert(job(6));
        let ids =
            |user| -> Vec<u64> { table.jobs_of(user).iter().map(|j| j.id.as_u64()).collect() };
        assert_eq!(
            ids(7),
            [1, 2, 4, 5, 9],
            "an id out of order still lands in place"
        );
        assert_eq!(ids(8), [3]);
        assert!(ids(9).is_empty());
        for n in [1, 5, 9] {
            table.remove(JobId::from_u64(n));
        }
        assert_eq!(ids(7), [2, 4]);
        table.remove(JobId::from_u64(2));
        table.remove(JobId::from_u64(4));
        table.remove(JobId::from_u64(3));
        assert!(ids(7).is_empty() && ids(8).is_empty());
        assert!(
            table.users.iter().all(|shard| shard.lock().is_empty()),
            "no empty entries left"
        );
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
