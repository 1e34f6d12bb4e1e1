//! The queues' rules, checked step by step against their invariants.

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
