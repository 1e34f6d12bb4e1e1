//! The operations a test applies, and their generators.

use asyncjobs::AsynchJobState;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::{MESSAGES, USERS};

#[derive(Debug, Clone)]
pub struct Config {
    pub max_running: Option<usize>,
    pub keep_at_most: usize,
    pub keep_for_ms: u64,
    pub grace_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Via {
    Registry,
    /// The view of the user who started the job (the registry for a job without a user).
    Owner,
    /// The view of a user who did not start the job.
    Stranger,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    Ok,
    Err,
    Panic,
}

#[derive(Debug, Clone)]
pub enum Op {
    Spawn {
        user: Option<u64>,
        via_view: bool,
        /// Ignores its cancellation token (but still obeys commands).
        stubborn: bool,
        time_limit_ms: Option<u64>,
        stall_limit_ms: Option<u64>,
    },
    Progress {
        job: Index,
        current: u64,
        total: u64,
        message: usize,
    },
    Cancel {
        job: Index,
        via: Via,
    },
    Finish {
        job: Index,
        command: Command,
    },
    Advance {
        ms: u64,
    },
    Status {
        job: Index,
        via: Via,
    },
    List {
        state: Option<AsynchJobState>,
        user: Option<u64>,
        via_view: bool,
    },
    Shutdown {
        grace_ms: u64,
    },
}

/// What the test reads after a step. Reading sweeps retention, so reading less, or in another
/// order, leaves expired statuses in place for the next step's reads to find.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Look {
    /// Counts first (a sweep), then every status, `len` and the full list.
    Everything,
    /// Every status first: an expired one is found unknown by the read itself.
    StatusesFirst,
    /// Only the clock.
    Nothing,
}

pub fn look() -> impl Strategy<Value = Look> {
    prop_oneof![
        2 => Just(Look::Everything),
        1 => Just(Look::StatusesFirst),
        1 => Just(Look::Nothing),
    ]
}

pub fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(None), Just(Some(1)), Just(Some(2))],
        0usize..=3,
        prop::sample::select(vec![10u64, 20, 50, 100, 1000]),
        prop::sample::select(vec![15u64, 25, 45]),
    )
        .prop_map(
            |(max_running, keep_at_most, keep_for_ms, grace_ms)| Config {
                max_running,
                keep_at_most,
                keep_for_ms,
                grace_ms,
            },
        )
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![Just(Via::Registry), Just(Via::Owner), Just(Via::Stranger)]
}

pub fn op() -> impl Strategy<Value = Op> {
    let state = prop_oneof![
        Just(None),
        Just(Some(AsynchJobState::Processing)),
        Just(Some(AsynchJobState::Complete)),
        Just(Some(AsynchJobState::Failed)),
    ];
    prop_oneof![
        5 => (
            prop::sample::select(USERS.to_vec()),
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec![None, None, Some(15u64), Some(35), Some(65)]),
            prop::sample::select(vec![None, None, Some(25u64), Some(45)]),
        )
            .prop_map(|(user, via_view, stubborn, time_limit_ms, stall_limit_ms)| Op::Spawn {
                user,
                via_view,
                stubborn,
                time_limit_ms,
                stall_limit_ms,
            }),
        4 => (any::<Index>(), 0u64..4, 0u64..4, 0..MESSAGES.len()).prop_map(
            |(job, current, total, message)| Op::Progress {
                job,
                current,
                total,
                message,
            }
        ),
        3 => (any::<Index>(), via()).prop_map(|(job, via)| Op::Cancel { job, via }),
        3 => (
            any::<Index>(),
            prop_oneof![3 => Just(Command::Ok), 2 => Just(Command::Err), 1 => Just(Command::Panic)],
        )
            .prop_map(|(job, command)| Op::Finish { job, command }),
        4 => prop::sample::select(vec![10u64, 20, 30, 50, 100]).prop_map(|ms| Op::Advance { ms }),
        1 => (any::<Index>(), via()).prop_map(|(job, via)| Op::Status { job, via }),
        1 => (state, prop::sample::select(USERS.to_vec()), any::<bool>()).prop_map(
            |(state, user, via_view)| Op::List {
                state,
                user,
                via_view,
            }
        ),
        1 => prop::sample::select(vec![10u64, 20, 50, 100]).prop_map(|grace_ms| Op::Shutdown { grace_ms }),
    ]
}
