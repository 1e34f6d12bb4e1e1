//! A waiting job's place in its group's queue, and the progress message that shows it.

use std::sync::Arc;

/// Where a waiting job stands in its group's queue, as its message shows it: exactly up to
/// [`EXACT`] jobs ahead, in steps of 5, 10, 20, 50, 100, … beyond, so that a job moving up a long
/// queue changes its message (and etag) only when it crosses a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// First of its group, waiting for a free slot.
    NextForSlot,
    /// First of its group, whose group already runs as many jobs as its limit allows.
    NextAtLimit,
    /// This many of its group's jobs are ahead of it (1 to [`EXACT`]).
    Behind(u8),
    /// At least [`steps`]`()[i]` of its group's jobs are ahead of it.
    AtLeast(u8),
}

/// Places up to this many jobs ahead are shown exactly. Each move of a queue rewrites the message of
/// every job it moves within these places, so this is most of what a move costs: small numbers are
/// what a user watches change, and "5 or more" says enough beyond them.
pub(crate) const EXACT: usize = 4;

impl Place {
    /// The place of the job at `rank` (0: first) in a group's queue; `at_limit` says whether the
    /// group runs as many jobs as its limit allows.
    pub(crate) fn of(rank: usize, at_limit: bool) -> Place {
        match rank {
            0 if at_limit => Place::NextAtLimit,
            0 => Place::NextForSlot,
            // Both casts are lossless: EXACT < 256, and there are fewer than 256 steps.
            1..=EXACT => Place::Behind(rank as u8),
            _ => Place::AtLeast(step_index(rank) as u8),
        }
    }
}

/// The steps beyond the exact places, 5, 10, 20, 50, 100, 200, … up to the largest that fits a
/// `usize`, worked out once.
static STEPS: ([usize; 64], usize) = make_steps();

const fn make_steps() -> ([usize; 64], usize) {
    let mut steps = [0; 64];
    let mut n = 0;
    let mut power: usize = 1;
    loop {
        let units = [1, 2, 5];
        let mut u = 0;
        while u < units.len() {
            match power.checked_mul(units[u]) {
                Some(step) if step <= EXACT => {}
                Some(step) => {
                    steps[n] = step;
                    n += 1;
                }
                None => return (steps, n),
            }
            u += 1;
        }
        match power.checked_mul(10) {
            Some(next) => power = next,
            None => return (steps, n),
        }
    }
}

/// The steps, in increasing order.
pub(crate) fn steps() -> &'static [usize] {
    &STEPS.0[..STEPS.1]
}

/// The index of the largest step at most `rank` (`rank` > [`EXACT`], so there is one).
fn step_index(rank: usize) -> usize {
    steps().partition_point(|&step| step <= rank) - 1
}

/// Every message a place can show, made once per registry so that showing a place allocates
/// nothing. Jobs with no user are told so, not "your".
pub(crate) struct Texts {
    user: Variant,
    no_user: Variant,
}

struct Variant {
    next_for_slot: Arc<str>,
    next_at_limit: Arc<str>,
    behind: Vec<Arc<str>>,
    at_least: Vec<Arc<str>>,
}

impl Texts {
    /// The texts for a registry running at most `max` jobs, at most `per_group` of one group.
    pub(crate) fn new(max: Option<usize>, per_group: Option<usize>) -> Self {
        let slot = match max {
            Some(1) => "a free slot (1 job runs at a time)".to_owned(),
            Some(max) => format!("a free slot (at most {max} jobs run at once)"),
            None => "a free slot".to_owned(),
        };
        let limit = match per_group {
            Some(1) => "limit of 1 running job".to_owned(),
            Some(n) => format!("limit of {n} running jobs"),
            None => "limit".to_owned(),
        };
        // `ahead(k)` is what follows "Queued: {k}" or "Queued: {k} or more".
        let variant = |next: &str, their: &str, ahead: &dyn Fn(usize) -> &'static str| Variant {
            next_for_slot: Arc::from(format!("Queued: next of {next}, waiting for {slot}")),
            next_at_limit: Arc::from(format!(
                "Queued: next of {next}; {their} {limit} is reached"
            )),
            behind: (1..=EXACT)
                .map(|k| Arc::from(format!("Queued: {k} {}", ahead(k))))
                .collect(),
            at_least: steps()
                .iter()
                .map(|&v| Arc::from(format!("Queued: {v} or more {}", ahead(v))))
                .collect(),
        };
        Texts {
            user: variant("your jobs", "your", &|_| "of your jobs ahead"),
            no_user: variant("the jobs with no user", "their", &|k| match k {
                1 => "job with no user ahead",
                _ => "jobs with no user ahead",
            }),
        }
    }

    /// The message of a job at `place` in a queue of jobs with a user (or, `no_user`, without).
    pub(crate) fn get(&self, no_user: bool, place: Place) -> Arc<str> {
        let variant = if no_user { &self.no_user } else { &self.user };
        match place {
            Place::NextForSlot => variant.next_for_slot.clone(),
            Place::NextAtLimit => variant.next_at_limit.clone(),
            Place::Behind(k) => variant.behind[usize::from(k) - 1].clone(),
            Place::AtLeast(i) => variant.at_least[usize::from(i)].clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_exact_up_to_four_then_in_steps() {
        assert_eq!(Place::of(0, false), Place::NextForSlot);
        assert_eq!(Place::of(0, true), Place::NextAtLimit);
        assert_eq!(Place::of(4, true), Place::Behind(4));
        assert_eq!(Place::of(5, true), Place::AtLeast(0));
        let texts = Texts::new(Some(4), Some(2));
        let shown = |rank| texts.get(false, Place::of(rank, false)).to_string();
        assert_eq!(
            shown(0),
            "Queued: next of your jobs, waiting for a free slot (at most 4 jobs run at once)"
        );
        assert_eq!(
            texts.get(false, Place::NextAtLimit).as_ref(),
            "Queued: next of your jobs; your limit of 2 running jobs is reached"
        );
        assert_eq!(shown(3), "Queued: 3 of your jobs ahead");
        assert_eq!(shown(4), "Queued: 4 of your jobs ahead");
        assert_eq!(shown(9), "Queued: 5 or more of your jobs ahead");
        assert_eq!(shown(10), "Queued: 10 or more of your jobs ahead");
        assert_eq!(shown(19), "Queued: 10 or more of your jobs ahead");
        assert_eq!(shown(20), "Queued: 20 or more of your jobs ahead");
        assert_eq!(shown(499), "Queued: 200 or more of your jobs ahead");
        assert_eq!(
            shown(1_000_000),
            "Queued: 1000000 or more of your jobs ahead"
        );
        assert_eq!(
            shown(usize::MAX),
            texts.get(false, Place::of(usize::MAX, false)).to_string()
        );
        assert_eq!(
            texts.get(true, Place::of(1, false)).as_ref(),
            "Queued: 1 job with no user ahead"
        );
        assert_eq!(
            texts.get(true, Place::of(25, false)).as_ref(),
            "Queued: 20 or more jobs with no user ahead"
        );
        assert_eq!(
            texts.get(true, Place::NextAtLimit).as_ref(),
            "Queued: next of the jobs with no user; their limit of 2 running jobs is reached"
        );
    }

    #[test]
    fn steps_go_one_two_five_as_far_as_a_usize_goes() {
        assert_eq!(steps()[..7], [5, 10, 20, 50, 100, 200, 500]);
        let last = *steps().last().unwrap();
        assert!(last.checked_mul(2).is_none() || last.checked_mul(5).is_none());
        assert!(steps().windows(2).all(|w| w[0] < w[1]));
    }
}
