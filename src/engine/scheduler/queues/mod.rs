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
mod tests;
