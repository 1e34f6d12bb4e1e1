//! A waiting job's place in its group's queue, and the progress message that shows it.

use std::sync::Arc;

/// Where a waiting job stands in its group's queue, as its message shows it: exactly for the first
/// [`EXACT`] places, in steps of 10, 20, 50, 100, 200, 500, … beyond, so that a job moving up a long
/// queue changes its message (and etag) only when it crosses a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// First of its group, waiting for a free slot.
    NextForSlot,
    /// First of its group, whose group already runs as many jobs as its limit allows.
    NextAtLimit,
    /// This many of its group's jobs are ahead of it (1 to [`EXACT`]).
    Behind(u8),
    /// At least [`step`]`(i)` of its group's jobs are ahead of it.
    AtLeast(u8),
}

/// Places up to this many jobs ahead are shown exactly.
pub(crate) const EXACT: usize = 9;

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

/// The `i`-th step beyond the exact places (10, 20, 50, 100, 200, 500, …), if it fits a `usize`.
pub(crate) fn step(i: usize) -> Option<usize> {
    let unit = [1, 2, 5][i % 3];
    let power = u32::try_from(i / 3 + 1).ok()?;
    10usize.checked_pow(power)?.checked_mul(unit)
}

/// The largest step at most `rank` (`rank` > [`EXACT`]).
fn step_index(rank: usize) -> usize {
    let mut i = 0;
    while step(i + 1).is_some_and(|next| next <= rank) {
        i += 1;
    }
    i
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
        let steps: Vec<usize> = (0..).map_while(step).collect();
        // `ahead(k)` is what follows "Queued: {k}" or "Queued: {k} or more".
        let variant = |next: &str, their: &str, ahead: &dyn Fn(usize) -> &'static str| Variant {
            next_for_slot: Arc::from(format!("Queued: next of {next}, waiting for {slot}")),
            next_at_limit: Arc::from(format!(
                "Queued: next of {next}; {their} {limit} is reached"
            )),
            behind: (1..=EXACT)
                .map(|k| Arc::from(format!("Queued: {k} {}", ahead(k))))
                .collect(),
            at_least: steps
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
    fn places_are_exact_up_to_nine_then_in_steps() {
        assert_eq!(Place::of(0, false), Place::NextForSlot);
        assert_eq!(Place::of(0, true), Place::NextAtLimit);
        assert_eq!(Place::of(9, true), Place::Behind(9));
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
    fn steps_go_one_two_five() {
        let steps: Vec<usize> = (0..7).map(|i| step(i).unwrap()).collect();
        assert_eq!(steps, [10, 20, 50, 100, 200, 500, 1000]);
        assert!(step(200).is_none());
    }
}
