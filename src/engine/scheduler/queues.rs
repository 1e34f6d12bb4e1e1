//! The scheduler's bookkeeping, without locks and without jobs: who holds a slot, who waits in
//! which order, who gets the next free slot, and where each waiting job stands. Every call says
//! what the caller must then do ([`Effects`]: start a job, show a job's new place); the
//! [`Scheduler`](super::Scheduler) calls it under its lock and does those things after releasing
//! it. Kept apart so that its rules can be tested directly, against a reference model.
//!
//! Rules:
//! - **Slots.** At most `max` jobs hold a slot, and at most `per_group` of them are of one group.
//! - **Groups.** With the fair order a job's group is its user (jobs with no user are one group);
//!   without it every job is in one group, so the order is one FIFO.
//! - **Within a group**: higher priority first, then submission order.
//! - **Across groups**: round-robin. The *ring* holds the groups that can take a slot (a job
//!   waiting, and fewer than `per_group` running), in the order they became able to or last took
//!   a turn. A free slot goes to the first group in the ring, which goes to the back if it can
//!   take another. So with `k` groups waiting, each gets every `k`-th slot, however many jobs it
//!   queued, and priority never lets one group's job pass another group's.
//!
//! Invariants (checked after every step by the tests' `check`):
//! 1. `running` is the sum of the groups' `running`; none is above its limit.
//! 2. A group holds a turn in the ring exactly when it has a job waiting and runs fewer than
//!    `per_group`; the ring's other entries are stale, and counted.
//! 3. While fewer than `max` jobs run, the ring is empty: a slot never idles while a job waiting
//!    could take it.
//! 4. `index` holds exactly the waiting jobs, `waiting` counts them, each group's queue is sorted.
//! 5. A group with nothing waiting and nothing running is dropped: memory follows the jobs.
//! 6. With places shown, each waiting job's `shown` place is [`Place::of`] its rank; each change
//!    of it is one [`Show`] with a stamp one higher than the last.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

use crate::JobId;

use super::place::{steps, Place, EXACT};

/// A group of jobs: the user who started them, `None` for jobs with no user (and for every job
/// without the fair order).
pub(crate) type Group = Option<u64>;

/// A waiting job's order within its group: higher priority first, then submission order.
type Key = (Reverse<i32>, u64);

/// What the caller must do after a call, outside the lock.
pub(crate) struct Effects<T> {
    /// Give this job its slot. One call starts at most one job.
    pub(crate) start: Option<T>,
    /// Show these waiting jobs' new places, in this order.
    pub(crate) shows: Vec<Show<T>>,
}

impl<T> Default for Effects<T> {
    fn default() -> Self {
        Effects {
            start: None,
            shows: Vec::new(),
        }
    }
}

/// A waiting job's new place. The stamp orders the shows of one job: they are decided here, under
/// the lock, but carried out after it, where two threads' shows may cross.
pub(crate) struct Show<T> {
    pub(crate) job: T,
    pub(crate) group: Group,
    pub(crate) place: Place,
    pub(crate) stamp: u32,
}

struct Waiting<T> {
    key: Key,
    id: JobId,
    job: T,
    shown: Place,
    stamp: u32,
}

struct GroupState<T> {
    /// Sorted by key; a `VecDeque` so that the first leaves in O(1) and a place is an index.
    queue: VecDeque<Waiting<T>>,
    running: usize,
    /// The turn of its entry in the ring, while it is there.
    turn: Option<u64>,
}

impl<T> Default for GroupState<T> {
    fn default() -> Self {
        GroupState {
            queue: VecDeque::new(),
            running: 0,
            turn: None,
        }
    }
}

/// The groups by key. The group of jobs with no user (without the fair order, every job's) is
/// kept apart, so that it costs no hashing.
struct Groups<T> {
    no_user: Option<GroupState<T>>,
    users: HashMap<u64, GroupState<T>>,
}

impl<T> Groups<T> {
    fn get(&self, group: Group) -> Option<&GroupState<T>> {
        match group {
            None => self.no_user.as_ref(),
            Some(user) => self.users.get(&user),
        }
    }

    fn get_mut(&mut self, group: Group) -> Option<&mut GroupState<T>> {
        match group {
            None => self.no_user.as_mut(),
            Some(user) => self.users.get_mut(&user),
        }
    }

    fn entry(&mut self, group: Group) -> &mut GroupState<T> {
        match group {
            None => self.no_user.get_or_insert_with(GroupState::default),
            Some(user) => self.users.entry(user).or_default(),
        }
    }

    fn remove(&mut self, group: Group) {
        match group {
            None => self.no_user = None,
            Some(user) => drop(self.users.remove(&user)),
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut GroupState<T>> {
        self.no_user.iter_mut().chain(self.users.values_mut())
    }
}

pub(crate) struct Queues<T> {
    max: usize,
    per_group: usize,
    fair: bool,
    /// Whether waiting jobs are shown their places (off without the fair order, and once closed).
    places: bool,
    /// Once closed (a shutdown), no waiting job gets a slot: each is ended where it waits. The
    /// queues are then empty, and only `index` and `waiting` say who still waits.
    closed: bool,
    running: usize,
    waiting: usize,
    next_seq: u64,
    next_turn: u64,
    groups: Groups<T>,
    /// The round-robin ring: groups by the turn they took. An entry whose group no longer holds
    /// that turn is stale (the group's last waiting job was canceled) and is skipped when it comes
    /// up, so that leaving from the middle costs O(1); `stale` counts them, and they are swept out
    /// once they are the majority, so the ring stays O(groups waiting).
    ring: VecDeque<(u64, Group)>,
    stale: usize,
    /// Where each waiting job is, so that one can leave from the middle.
    index: HashMap<JobId, (Group, Key)>,
}

impl<T: Clone> Queues<T> {
    /// At most `max` running, at most `per_group` of one group (`usize::MAX`: no limit); `fair`
    /// for groups by user and places shown.
    pub(crate) fn new(max: usize, per_group: usize, fair: bool) -> Self {
        Queues {
            max,
            per_group,
            fair,
            places: fair,
            closed: false,
            running: 0,
            waiting: 0,
            next_seq: 0,
            next_turn: 0,
            groups: Groups {
                no_user: None,
                users: HashMap::new(),
            },
            ring: VecDeque::new(),
            stale: 0,
            index: HashMap::new(),
        }
    }

    fn group_of(&self, user: Option<u64>) -> Group {
        if self.fair {
            user
        } else {
            None
        }
    }

    /// How many jobs wait.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Takes a slot for a new job of `user` if one is free for it; otherwise, where the job will
    /// wait (what [`enqueue`](Queues::enqueue) is then told it shows).
    pub(crate) fn try_acquire(&mut self, user: Option<u64>, priority: i32) -> Result<(), Place> {
        let group = self.group_of(user);
        let state = self.groups.get(group);
        let group_running = state.map_or(0, |g| g.running);
        if self.running < self.max && group_running < self.per_group && !self.closed {
            // By invariants 2 and 3 none of the group's jobs waits: none is passed.
            self.running += 1;
            self.groups.entry(group).running += 1;
            return Ok(());
        }
        if !self.places {
            return Err(Place::NextForSlot);
        }
        let rank = state.map_or(0, |g| rank_of(&g.queue, |w| w.key.0 <= Reverse(priority)));
        Err(Place::of(rank, group_running >= self.per_group))
    }

    /// Queues a job that [`try_acquire`](Queues::try_acquire) turned away and that shows `shown`;
    /// if a slot came free for it meanwhile, it starts at once.
    pub(crate) fn enqueue(
        &mut self,
        id: JobId,
        user: Option<u64>,
        priority: i32,
        job: T,
        shown: Place,
        out: &mut Effects<T>,
    ) {
        let group = self.group_of(user);
        let key = (Reverse(priority), self.next_seq);
        self.next_seq += 1;
        if self.closed {
            self.index.insert(id, (group, key));
            self.waiting += 1;
            return;
        }
        let state = self.groups.entry(group);
        if self.running < self.max && state.running < self.per_group {
            self.running += 1;
            state.running += 1;
            out.start = Some(job);
            return;
        }
        let rank = rank_of(&state.queue, |w| w.key < key);
        state.queue.insert(
            rank,
            Waiting {
                key,
                id,
                job,
                shown,
                stamp: 0,
            },
        );
        self.index.insert(id, (group, key));
        self.waiting += 1;
        if state.turn.is_none() && state.running < self.per_group {
            join_ring(&mut self.ring, &mut self.next_turn, state, group);
        }
        if self.places {
            reshow(state, group, rank, self.per_group, out);
        }
    }

    /// A job of `user` that held a slot ended: the slot goes to the next job by the rules.
    pub(crate) fn release(&mut self, user: Option<u64>, out: &mut Effects<T>) {
        let group = self.group_of(user);
        self.running -= 1;
        let state = self
            .groups
            .get_mut(group)
            .expect("a job holding a slot has its group");
        state.running -= 1;
        if !state.queue.is_empty() && state.turn.is_none() && state.running < self.per_group {
            join_ring(&mut self.ring, &mut self.next_turn, state, group);
        }
        self.dispatch(out);
        // After the dispatch, so that a job about to start is not first shown a new reason to
        // wait: if the group's first job still waits, it may now wait for a slot rather than for
        // its group's limit. Nothing else of the group moved, unless the dispatch moved it.
        if let Some(state) = self.groups.get_mut(group) {
            if self.places {
                reshow_first(state, group, self.per_group, out);
            }
        }
        self.drop_if_idle(group);
    }

    /// Hands free slots to the groups in the ring, in turn.
    fn dispatch(&mut self, out: &mut Effects<T>) {
        while self.running < self.max && !self.closed {
            let Some((turn, group)) = self.ring.pop_front() else {
                return;
            };
            let Some(state) = self
                .groups
                .get_mut(group)
                .filter(|state| state.turn == Some(turn))
            else {
                self.stale -= 1;
                continue;
            };
            let first = state
                .queue
                .pop_front()
                .expect("a group in the ring has a job waiting");
            self.index.remove(&first.id);
            self.waiting -= 1;
            self.running += 1;
            state.running += 1;
            state.turn = None;
            if !state.queue.is_empty() && state.running < self.per_group {
                join_ring(&mut self.ring, &mut self.next_turn, state, group);
            }
            if self.places {
                reshow(state, group, 0, self.per_group, out);
            }
            debug_assert!(out.start.is_none(), "one slot frees at a time");
            out.start = Some(first.job);
        }
    }

    /// A job that ended while waiting leaves its queue, and those behind it move up. Returns it,
    /// to be dropped by the caller (outside any lock), or `None` if it no longer waits.
    pub(crate) fn remove(&mut self, id: JobId, out: &mut Effects<T>) -> Option<T> {
        let (group, key) = self.index.remove(&id)?;
        self.waiting -= 1;
        if self.closed {
            return None;
        }
        let state = self
            .groups
            .get_mut(group)
            .expect("a waiting job's group is known");
        let rank = state
            .queue
            .binary_search_by(|w| w.key.cmp(&key))
            .expect("an indexed job is in its group's queue");
        let gone = state.queue.remove(rank).map(|w| w.job);
        if state.queue.is_empty() && state.turn.take().is_some() {
            self.stale += 1;
        }
        if self.places {
            reshow(state, group, rank, self.per_group, out);
        }
        self.drop_if_idle(group);
        self.sweep_ring();
        gone
    }

    /// Closes the queues for a shutdown: no waiting job gets a slot from now on, and places are
    /// no longer shown (every waiting job is about to end). The queues are emptied at once, so
    /// that ending each waiting job costs O(1) however long its queue: returns their jobs, to be
    /// dropped by the caller outside any lock.
    pub(crate) fn close(&mut self) -> Vec<T> {
        self.closed = true;
        self.places = false;
        self.ring.clear();
        self.stale = 0;
        let mut gone = Vec::with_capacity(self.waiting);
        for state in self.groups.iter_mut() {
            state.turn = None;
            gone.extend(state.queue.drain(..).map(|w| w.job));
        }
        if self.groups.no_user.as_ref().is_some_and(|g| g.running == 0) {
            self.groups.no_user = None;
        }
        self.groups.users.retain(|_, state| state.running > 0);
        gone
    }

    fn drop_if_idle(&mut self, group: Group) {
        if self
            .groups
            .get(group)
            .is_some_and(|g| g.queue.is_empty() && g.running == 0)
        {
            self.groups.remove(group);
        }
    }

    /// Drops the ring's stale entries once they are the majority: amortized O(1) per entry.
    fn sweep_ring(&mut self) {
        if self.stale > 16 && self.stale * 2 > self.ring.len() {
            let groups = &self.groups;
            self.ring
                .retain(|&(turn, group)| groups.get(group).is_some_and(|g| g.turn == Some(turn)));
            self.stale = 0;
        }
    }
}

/// Where a job goes in `queue`: after the jobs that are `ahead` of it (a prefix). Most go last
/// (the same priority as those waiting): that is checked first, in O(1).
fn rank_of<T>(queue: &VecDeque<Waiting<T>>, ahead: impl Fn(&Waiting<T>) -> bool) -> usize {
    match queue.back() {
        Some(last) if !ahead(last) => queue.partition_point(ahead),
        _ => queue.len(),
    }
}

/// Puts `state`'s group at the back of the ring.
fn join_ring<T>(
    ring: &mut VecDeque<(u64, Group)>,
    next_turn: &mut u64,
    state: &mut GroupState<T>,
    group: Group,
) {
    state.turn = Some(*next_turn);
    ring.push_back((*next_turn, group));
    *next_turn += 1;
}

/// Shows the first waiting job of `state`'s queue its place, if its reason to wait changed.
fn reshow_first<T: Clone>(
    state: &mut GroupState<T>,
    group: Group,
    per_group: usize,
    out: &mut Effects<T>,
) {
    let at_limit = state.running >= per_group;
    if let Some(first) = state.queue.front_mut() {
        show_if_moved(first, Place::of(0, at_limit), group, out);
    }
}

/// After the jobs of `state`'s queue from rank `from` on moved by one (or the first one's reason
/// to wait changed, or a job was queued at `from`), shows those whose place changed. Only ranks
/// where [`Place::of`] changes between neighbours can have: the exact ones and each side of every
/// step, so a move costs O(EXACT + log(queue)), however long the queue.
fn reshow<T: Clone>(
    state: &mut GroupState<T>,
    group: Group,
    from: usize,
    per_group: usize,
    out: &mut Effects<T>,
) {
    let len = state.queue.len();
    if from >= len {
        return;
    }
    let at_limit = state.running >= per_group;
    let mut check = |rank: usize| {
        show_if_moved(
            &mut state.queue[rank],
            Place::of(rank, at_limit),
            group,
            out,
        );
    };
    // `from` itself too: in `enqueue` it is the new job, shown a place decided before it was
    // queued, which may be out of date anywhere in the queue.
    check(from);
    if from + 1 == len {
        // The last one (the common spawn): nobody is behind it.
        return;
    }
    for rank in from + 1..len.min(EXACT + 2) {
        check(rank);
    }
    for &at in steps().iter().take_while(|&&at| at <= len) {
        for rank in [at - 1, at] {
            if rank > EXACT + 1 && rank >= from && rank < len {
                check(rank);
            }
        }
    }
}

/// Shows `waiting` at `place`, with the next stamp, unless that is where it is shown already.
fn show_if_moved<T: Clone>(
    waiting: &mut Waiting<T>,
    place: Place,
    group: Group,
    out: &mut Effects<T>,
) {
    if waiting.shown != place {
        if out.shows.capacity() == 0 {
            // Room for a typical move's shows in one allocation.
            out.shows.reserve(EXACT + 8);
        }
        waiting.shown = place;
        waiting.stamp = waiting.stamp.wrapping_add(1);
        out.shows.push(Show {
            job: waiting.job.clone(),
            group,
            place,
            stamp: waiting.stamp,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<T: Clone> Queues<T> {
        /// Panics unless every invariant in the module's docs holds.
        pub(crate) fn check(&self) {
            let mut running = 0;
            let mut waiting = 0;
            let groups = self
                .groups
                .no_user
                .iter()
                .map(|state| (None, state))
                .chain(self.groups.users.iter().map(|(u, state)| (Some(*u), state)));
            let mut in_ring = 0;
            for (group, state) in groups {
                running += state.running;
                waiting += state.queue.len();
                assert!(state.running <= self.per_group, "{group:?} over its limit");
                let able = !state.queue.is_empty() && state.running < self.per_group;
                assert_eq!(state.turn.is_some(), able, "{group:?} in the ring");
                if let Some(turn) = state.turn {
                    in_ring += 1;
                    assert_eq!(
                        self.ring
                            .iter()
                            .filter(|&&entry| entry == (turn, group))
                            .count(),
                        1
                    );
                }
                assert!(
                    !state.queue.is_empty() || state.running > 0,
                    "idle group kept"
                );
                assert!(!self.closed || state.queue.is_empty(), "closed, yet queued");
                assert!(state
                    .queue
                    .iter()
                    .zip(state.queue.iter().skip(1))
                    .all(|(a, b)| a.key < b.key));
                for (rank, w) in state.queue.iter().enumerate() {
                    assert_eq!(self.index.get(&w.id), Some(&(group, w.key)));
                    if self.places {
                        let at_limit = state.running >= self.per_group;
                        assert_eq!(w.shown, Place::of(rank, at_limit), "{group:?} rank {rank}");
                    }
                }
            }
            assert_eq!(
                self.ring.len(),
                in_ring + self.stale,
                "stale entries counted"
            );
            // Live entries come in the order of their turns.
            let live: Vec<u64> = self
                .ring
                .iter()
                .filter(|(turn, group)| {
                    self.groups
                        .get(*group)
                        .is_some_and(|g| g.turn == Some(*turn))
                })
                .map(|(turn, _)| *turn)
                .collect();
            assert!(live.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(running, self.running);
            assert!(self.running <= self.max);
            if !self.closed {
                assert_eq!(waiting, self.waiting);
            }
            assert_eq!(self.index.len(), self.waiting);
            if self.running < self.max && !self.closed {
                assert_eq!(in_ring, 0, "a slot idles while a group could take it");
            }
        }
    }

    fn id(n: u64) -> JobId {
        JobId::from_u64(n)
    }

    /// Spawns job `n` of `user`: started at once, or queued (and maybe started by `enqueue`).
    fn spawn(q: &mut Queues<u64>, n: u64, user: Option<u64>, priority: i32) -> Effects<u64> {
        let mut out = Effects::default();
        match q.try_acquire(user, priority) {
            Ok(()) => out.start = Some(n),
            Err(shown) => q.enqueue(id(n), user, priority, n, shown, &mut out),
        }
        q.check();
        out
    }

    #[test]
    fn slots_go_round_robin_across_users_and_by_priority_within_one() {
        let mut q = Queues::new(1, usize::MAX, true);
        assert_eq!(spawn(&mut q, 0, Some(1), 0).start, Some(0));
        for n in 1..=4 {
            assert!(spawn(&mut q, n, Some(1), 0).start.is_none());
        }
        spawn(&mut q, 5, Some(2), 0);
        spawn(&mut q, 6, Some(2), 0);
        spawn(&mut q, 7, None, 0);
        // User 1's later job, of higher priority, passes user 1's others only.
        spawn(&mut q, 8, Some(1), 5);
        let mut order = Vec::new();
        let mut user_of_running = Some(1);
        for _ in 0..8 {
            let mut out = Effects::default();
            q.release(user_of_running, &mut out);
            q.check();
            let n = out.start.expect("a job waits");
            user_of_running = match n {
                0..=4 | 8 => Some(1),
                5 | 6 => Some(2),
                _ => None,
            };
            order.push(n);
        }
        assert_eq!(order, [8, 5, 7, 1, 6, 2, 3, 4]);
        let mut out = Effects::default();
        q.release(Some(1), &mut out);
        assert!(out.start.is_none());
        assert!(
            q.groups.no_user.is_none() && q.groups.users.is_empty() && q.ring.is_empty(),
            "nothing kept"
        );
    }

    #[test]
    fn a_user_at_its_limit_waits_without_holding_up_others() {
        let mut q = Queues::new(3, 1, true);
        assert_eq!(spawn(&mut q, 0, Some(1), 0).start, Some(0));
        let queued = spawn(&mut q, 1, Some(1), 0);
        assert!(queued.start.is_none());
        assert_eq!(spawn(&mut q, 2, Some(2), 0).start, Some(2));
        assert_eq!(q.waiting(), 1);
        // User 1's first waiting job waits for its limit, not for a slot.
        assert!(matches!(q.try_acquire(Some(1), 0), Err(Place::Behind(1))));
        let mut out = Effects::default();
        q.release(Some(1), &mut out);
        assert_eq!(out.start, Some(1));
    }

    #[test]
    fn a_move_shows_only_the_places_that_change() {
        let mut q = Queues::new(1, usize::MAX, true);
        spawn(&mut q, 0, Some(1), 0);
        for n in 1..=1000 {
            let out = spawn(&mut q, n, Some(1), 0);
            assert!(out.shows.is_empty(), "a job queued last moves nobody");
        }
        let mut out = Effects::default();
        q.release(Some(1), &mut out);
        q.check();
        // Ranks 1..=5 moved to 0..=4, each to a new place; elsewhere only one job at each of the
        // steps 10, 20, 50, 100, 200 and 500 fell below it.
        assert_eq!(out.start, Some(1));
        assert_eq!(out.shows.len(), 5 + 6);
        // Canceling the first one moves the rest up the same way.
        let mut out = Effects::default();
        assert_eq!(q.remove(id(2), &mut out), Some(2));
        q.check();
        assert_eq!(out.shows.len(), 5 + 6);
        // Job 3 was shown three places: 2 ahead, then 1, then next.
        let three = out.shows.iter().find(|s| s.job == 3).unwrap();
        assert_eq!((three.place, three.stamp), (Place::NextForSlot, 2));
    }

    #[test]
    fn a_job_whose_place_moved_before_it_was_queued_is_shown_where_it_is() {
        let mut q = Queues::new(1, usize::MAX, true);
        spawn(&mut q, 0, Some(1), 0);
        for n in 1..=15 {
            spawn(&mut q, n, Some(1), 0);
        }
        let ticket = q.try_acquire(Some(1), 0).unwrap_err();
        assert_eq!(ticket, Place::AtLeast(1), "15 ahead: 10 or more");
        // Others are queued between its ticket and its turn to be queued.
        for n in 16..=25 {
            spawn(&mut q, n, Some(1), 0);
        }
        let mut out = Effects::default();
        q.enqueue(id(99), Some(1), 0, 99, ticket, &mut out);
        q.check();
        let shown: Vec<_> = out
            .shows
            .iter()
            .map(|s| (s.job, s.place, s.stamp))
            .collect();
        assert_eq!(shown, [(99, Place::AtLeast(2), 1)], "25 ahead: 20 or more");
    }

    #[test]
    fn without_the_fair_order_every_job_is_in_one_fifo() {
        let mut q = Queues::new(1, usize::MAX, false);
        spawn(&mut q, 0, Some(1), 0);
        for (n, user) in [(1, Some(1)), (2, Some(2)), (3, Some(1)), (4, None)] {
            let out = spawn(&mut q, n, user, 0);
            assert!(out.start.is_none() && out.shows.is_empty());
        }
        let mut order = Vec::new();
        for _ in 0..4 {
            let mut out = Effects::default();
            q.release(Some(1), &mut out);
            q.check();
            assert!(out.shows.is_empty(), "no places without the fair order");
            order.push(out.start.unwrap());
        }
        assert_eq!(order, [1, 2, 3, 4]);
    }

    /// Random spawns, ends and cancels (and a shutdown) keep every invariant, and every job
    /// spawned is started or removed exactly once.
    #[test]
    fn random_steps_keep_the_invariants() {
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Spawn(Option<u64>, i32),
            End(usize),
            Cancel(usize),
            Close,
        }
        let step = prop_oneof![
            6 => (prop::option::of(0..4u64), -1..=1i32).prop_map(|(u, p)| Step::Spawn(u, p)),
            4 => any::<usize>().prop_map(Step::End),
            2 => any::<usize>().prop_map(Step::Cancel),
            1 => Just(Step::Close),
        ];
        let config = (
            1..4usize,
            prop_oneof![Just(usize::MAX), 1..3usize],
            any::<bool>(),
        );
        proptest!(|((max, per_group, fair) in config, steps in prop::collection::vec(step, 1..120))| {
            let mut q = Queues::new(max, per_group.max(1), fair || per_group != usize::MAX);
            let (mut running, mut waiting, mut users) = (Vec::new(), Vec::new(), HashMap::new());
            let mut finished = 0;
            for (n, step) in steps.into_iter().enumerate() {
                let n = n as u64;
                let mut out = Effects::default();
                match step {
                    Step::Spawn(user, priority) => {
                        users.insert(n, user);
                        match q.try_acquire(user, priority) {
                            Ok(()) => running.push(n),
                            Err(shown) => {
                                q.enqueue(id(n), user, priority, n, shown, &mut out);
                                if out.start.is_none() {
                                    waiting.push(n);
                                }
                            }
                        }
                    }
                    Step::End(i) if !running.is_empty() => {
                        let n = running.swap_remove(i % running.len());
                        q.release(users[&n], &mut out);
                        finished += 1;
                    }
                    Step::Cancel(i) if !waiting.is_empty() => {
                        let n = waiting.swap_remove(i % waiting.len());
                        let gone = q.remove(id(n), &mut out);
                        prop_assert!(gone.is_none() || gone == Some(n));
                        finished += 1;
                    }
                    Step::Close => drop(q.close()),
                    Step::End(_) | Step::Cancel(_) => {}
                }
                if let Some(started) = out.start {
                    prop_assert!(!running.contains(&started));
                    waiting.retain(|&w| w != started);
                    running.push(started);
                }
                q.check();
                prop_assert_eq!(q.waiting(), waiting.len());
                prop_assert_eq!(running.len() + waiting.len() + finished, users.len());
            }
        });
    }

    #[test]
    fn groups_that_leave_the_ring_from_the_middle_do_not_grow_it() {
        let mut q = Queues::new(1, usize::MAX, true);
        spawn(&mut q, 0, Some(0), 0);
        spawn(&mut q, 1, Some(1), 0);
        for n in 2..1000 {
            spawn(&mut q, n, Some(n % 3 + 2), 0);
            let mut out = Effects::default();
            assert_eq!(q.remove(id(n), &mut out), Some(n));
            q.check();
            assert!(q.ring.len() <= 2 * 17 + 1, "{} entries", q.ring.len());
        }
        // The one group still waiting gets the slot.
        let mut out = Effects::default();
        q.release(Some(0), &mut out);
        assert_eq!(out.start, Some(1));
        q.check();
    }

    #[test]
    fn closed_queues_start_nothing() {
        let mut q = Queues::new(1, usize::MAX, true);
        spawn(&mut q, 0, Some(1), 0);
        spawn(&mut q, 1, Some(2), 0);
        assert_eq!(q.close(), [1]);
        q.check();
        let mut out = Effects::default();
        q.release(Some(1), &mut out);
        assert!(out.start.is_none() && out.shows.is_empty());
        assert_eq!(q.try_acquire(Some(3), 0), Err(Place::NextForSlot));
        q.enqueue(id(2), Some(3), 0, 2, Place::NextForSlot, &mut out);
        assert!(
            out.start.is_none(),
            "a job queued during a shutdown waits to be ended"
        );
        assert_eq!(q.waiting(), 2);
        assert_eq!(q.remove(id(1), &mut out), None);
        assert_eq!(q.remove(id(2), &mut out), None);
        q.check();
        assert!(q.groups.users.is_empty() && q.index.is_empty());
    }
}
