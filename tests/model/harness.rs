//! The registry side: applies each step to a registry and to the model, and compares what a
//! client can observe.

use std::time::Duration;

use asyncjobs::{
    AsynchJobState, AsynchronousJobStatus, Error, Etag, JobFilter, JobHandle, JobId, JobRegistry,
    JobRequest, UserView,
};
use proptest::sample::Index;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::ops::{Command, Config, Look, Op, Via};
use crate::reference::{own_error, Model};
use crate::{FIRST_ID, MESSAGES};

/// What the comparison looks at: every field of a status but its etag, with `changedOn` as the
/// milliseconds since `startedOn` (the start is wall-clock time, the rest follows the clock).
#[derive(Debug, PartialEq)]
struct Observed<'a> {
    id: JobId,
    state: AsynchJobState,
    canceling: bool,
    user: Option<u64>,
    current: Option<u64>,
    total: Option<u64>,
    message: Option<&'a str>,
    error: Option<&'a str>,
    details: Option<&'a str>,
    exception: Option<&'a str>,
    request: Option<&'a Value>,
    response: Option<&'a Value>,
    runtime_ms: u64,
    changed_after_ms: i64,
}

/// One job as the test drives it.
struct Driven {
    handle: JobHandle,
    commands: mpsc::UnboundedSender<Command>,
    /// The etags seen so far, with the model's version at each: one etag per version.
    etags: Vec<(u64, Etag)>,
    started_on: Option<chrono::DateTime<chrono::Utc>>,
}

struct Harness {
    registry: JobRegistry,
    base: tokio::time::Instant,
    model: Model,
    driven: Vec<Driven>,
}

fn stranger(user: Option<u64>) -> u64 {
    if user == Some(1) {
        2
    } else {
        1
    }
}

impl Harness {
    fn view(&self, via: Via, j: usize) -> Option<UserView> {
        match (via, self.model.jobs[j].user) {
            (Via::Registry, _) | (Via::Owner, None) => None,
            (Via::Owner, Some(user)) => Some(self.registry.as_user(user)),
            (Via::Stranger, user) => Some(self.registry.as_user(stranger(user))),
        }
    }

    /// Lets every task that can run, run: nothing here waits for time.
    async fn settle(&self) {
        for _ in 0..(4 * self.driven.len() + 16) {
            tokio::task::yield_now().await;
        }
    }

    async fn apply(&mut self, op: &Op) {
        let jobs = self.model.jobs.len();
        let pick = |index: &Index| (jobs > 0).then(|| index.index(jobs));
        match op {
            Op::Spawn {
                user,
                via_view,
                stubborn,
                time_limit_ms,
                stall_limit_ms,
            } => self.spawn(*user, *via_view, *stubborn, *time_limit_ms, *stall_limit_ms),
            Op::Progress {
                job,
                current,
                total,
                message,
            } => {
                let Some(j) = pick(job) else { return };
                let changed =
                    self.driven[j]
                        .handle
                        .set_progress(*current, *total, MESSAGES[*message]);
                let expected = self.model.progress(j, *current, *total, MESSAGES[*message]);
                assert_eq!(changed, expected, "set_progress on job {j}");
            }
            Op::Cancel { job, via } => {
                let Some(j) = pick(job) else { return };
                let id = self.model.jobs[j].id;
                let got = match self.view(*via, j) {
                    Some(view) => view.cancel(&id).await,
                    None => self.registry.cancel(&id).await,
                };
                let expected = match self.view(*via, j) {
                    Some(view) => self.model.check_view(j, view.user()),
                    None => self.model.status(j).map(|_| ()),
                }
                .map(|()| self.model.cancel(j));
                assert_eq!(got, expected, "cancel job {j} via {via:?}");
            }
            Op::Finish { job, command } => {
                let Some(j) = pick(job) else { return };
                // Refused once the job has ended: its receiver is gone.
                let _ = self.driven[j].commands.send(*command);
                self.model.command(j, *command);
            }
            Op::Advance { ms } => {
                tokio::time::advance(Duration::from_millis(*ms)).await;
                self.model.advance(*ms);
            }
            Op::Status { job, via } => {
                let Some(j) = pick(job) else { return };
                let id = self.model.jobs[j].id;
                let got = match self.view(*via, j) {
                    Some(view) => view.status(&id).await,
                    None => self.registry.status(&id).await,
                };
                let expected = match self.view(*via, j) {
                    Some(view) => self.model.check_view(j, view.user()),
                    None => self.model.status(j).map(|_| ()),
                };
                match (got, expected) {
                    (Ok(s), Ok(())) => self.compare(j, &s),
                    (got, expected) => assert_eq!(got.map(|_| ()), expected, "status of {j}"),
                }
            }
            Op::List {
                state,
                user,
                via_view,
            } => {
                let mut filter = JobFilter::new();
                if let Some(state) = state {
                    filter = filter.state(*state);
                }
                let got = match (user, via_view) {
                    (Some(user), true) => self.registry.as_user(*user).local().list(&filter).jobs,
                    (Some(user), false) => {
                        self.registry.local().list(&filter.started_by(*user)).jobs
                    }
                    (None, _) => self.registry.local().list(&filter).jobs,
                };
                let expected = self.model.list(*state, *user);
                let got_ids: Vec<JobId> = got.iter().map(|s| s.job_id).collect();
                let expected_ids: Vec<JobId> =
                    expected.iter().map(|&j| self.model.jobs[j].id).collect();
                assert_eq!(got_ids, expected_ids, "list {state:?} {user:?}");
                for (s, j) in got.iter().zip(expected) {
                    self.compare(j, s);
                }
                return;
            }
            Op::Shutdown { grace_ms } => {
                let summary = self
                    .registry
                    .shutdown(Duration::from_millis(*grace_ms))
                    .await;
                let (running, within, stopped) = self.model.shutdown(*grace_ms);
                assert_eq!(
                    (
                        summary.running,
                        summary.finished_within_grace,
                        summary.stopped
                    ),
                    (running, within, stopped),
                    "shutdown summary"
                );
            }
        }
        self.settle().await;
        self.model.run_started();
        self.model.end_step();
        self.resolve();
    }

    fn spawn(
        &mut self,
        user: Option<u64>,
        via_view: bool,
        stubborn: bool,
        time_limit_ms: Option<u64>,
        stall_limit_ms: Option<u64>,
    ) {
        let j = self.model.jobs.len();
        let mut request = JobRequest::new(json!({"job": j}));
        if let Some(ms) = time_limit_ms {
            request = request.time_limit(Duration::from_millis(ms));
        }
        if let Some(ms) = stall_limit_ms {
            request = request.stall_limit(Duration::from_millis(ms));
        }
        let (commands, mut inbox) = mpsc::unbounded_channel::<Command>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let body = move |job: JobHandle| {
            handle_tx.send(job.clone()).unwrap();
            async move {
                tokio::select! {
                    biased;
                    command = inbox.recv() => match command {
                        Some(Command::Ok) => Ok(json!({"done": j})),
                        Some(Command::Err) => Err(own_error("error", j)),
                        Some(Command::Panic) => panic!("planned panic {j}"),
                        None => std::future::pending().await,
                    },
                    () = job.cancelled(), if !stubborn => Err(own_error("canceled", j)),
                }
            }
        };
        let spawned = match (user, via_view) {
            (Some(user), true) => self.registry.as_user(user).local().spawn(request, body),
            (Some(user), false) => self.registry.local().spawn(request.started_by(user), body),
            (None, _) => self.registry.local().spawn(request, body),
        };
        if self.model.shut_down {
            assert_eq!(spawned, Err(Error::ShutDown));
            assert!(handle_rx.try_recv().is_err(), "a refused job is not called");
            return;
        }
        assert_eq!(spawned, Ok(JobId::from_u64(FIRST_ID + j as u64)));
        self.model
            .spawn(user, stubborn, time_limit_ms, stall_limit_ms);
        self.driven.push(Driven {
            handle: handle_rx.try_recv().expect("the closure runs within spawn"),
            commands,
            etags: Vec::new(),
            started_on: None,
        });
    }

    /// Asks the registry which members of a partly dropped batch went (reads that change
    /// nothing: none of them is past its retention time).
    fn resolve(&mut self) {
        for (n, members, dropped) in self.model.unresolved() {
            let gone: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&j| {
                    self.registry
                        .local()
                        .status(&self.model.jobs[j].id)
                        .is_err()
                })
                .collect();
            assert_eq!(
                gone.len(),
                dropped,
                "retention dropped {dropped} of {members:?}"
            );
            for &j in &gone {
                self.model.jobs[j].in_table = false;
            }
            let batch = &mut self.model.retention[n];
            batch.members.retain(|j| !gone.contains(j));
            batch.dropped_unknown = 0;
        }
    }

    /// A status the registry gave must be the model's, field by field.
    fn compare(&mut self, j: usize, s: &AsynchronousJobStatus) {
        let m = &self.model.jobs[j];
        let failure = m.failure.as_ref();
        let runtime = m.finished_at.unwrap_or(self.model.now) - m.spawned_at;
        let since_start = (s.changed_on - s.started_on).num_milliseconds();
        let got = Observed {
            id: s.job_id,
            state: s.job_state,
            canceling: s.job_canceling,
            user: s.started_by_user_id,
            current: s.progress_current,
            total: s.progress_total,
            message: s.progress_message.as_deref(),
            error: s.error_message.as_deref(),
            details: s.error_details.as_deref(),
            exception: s.exception.as_deref(),
            request: s.request_body.as_deref(),
            response: s.response_body.as_deref(),
            runtime_ms: s.runtime_ms,
            changed_after_ms: since_start,
        };
        let request = json!({"job": j});
        let expected = Observed {
            id: m.id,
            state: m.state,
            canceling: m.canceling,
            user: m.user,
            current: m.current,
            total: m.total,
            message: m.message.as_deref(),
            error: failure.map(|f| f.message.as_str()),
            details: failure.and_then(|f| f.details.as_deref()),
            exception: failure.map(|f| f.exception.as_str()),
            request: Some(&request),
            response: m.response.as_ref(),
            runtime_ms: runtime,
            changed_after_ms: (m.changed_at - m.spawned_at) as i64,
        };
        assert_eq!(got, expected, "job {j} at {} ms", self.model.now);
        let version = m.version;
        let driven = &mut self.driven[j];
        assert_eq!(
            *driven.started_on.get_or_insert(s.started_on),
            s.started_on,
            "startedOn moved"
        );
        match driven.etags.iter().find(|(v, _)| *v == version) {
            Some((_, etag)) => assert_eq!(&s.etag, etag, "job {j}: no change, same etag"),
            None => {
                assert!(
                    driven.etags.iter().all(|(_, etag)| *etag != s.etag),
                    "job {j}: a change must give a new etag, never an old one"
                );
                driven.etags.push((version, s.etag.clone()));
            }
        }
    }

    /// What a client can read, compared after a step.
    fn observe(&mut self, look: Look) {
        assert_eq!(
            tokio::time::Instant::now() - self.base,
            Duration::from_millis(self.model.now),
            "the clock"
        );
        assert_eq!(self.registry.is_shut_down(), self.model.shut_down);
        match look {
            Look::Nothing => return,
            Look::StatusesFirst => self.observe_statuses(),
            Look::Everything => {}
        }
        // `len` first: it sweeps as `counts` does (`len_agrees_with_counts_once_statuses_expire`).
        assert_eq!(self.registry.local().len(), self.model.len(), "len");
        assert_eq!(
            self.registry.local().counts(),
            self.model.counts(),
            "counts"
        );
        self.observe_statuses();
        let all = self
            .registry
            .local()
            .list(&JobFilter::new().limit(usize::MAX))
            .jobs;
        let expected = self.model.list(None, None);
        assert_eq!(all.len(), expected.len(), "list");
        for (s, j) in all.iter().zip(expected) {
            self.compare(j, s);
        }
    }

    fn observe_statuses(&mut self) {
        for j in 0..self.model.jobs.len() {
            let got = self.registry.local().status(&self.model.jobs[j].id);
            match (got, self.model.status(j).map(|_| ())) {
                (Ok(s), Ok(())) => self.compare(j, &s),
                (got, expected) => assert_eq!(got.map(|_| ()), expected, "status of job {j}"),
            }
            let handle_view = self.driven[j].handle.status();
            let m = &self.model.jobs[j];
            assert_eq!(
                (handle_view.job_state, handle_view.job_canceling),
                (m.state, m.canceling),
                "a job's own handle reads its status, retained or not"
            );
        }
    }
}

pub fn run(cfg: Config, steps: Vec<(Op, Look)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut builder = JobRegistry::builder()
            .first_job_id(FIRST_ID)
            .cancel_grace(Duration::from_millis(cfg.grace_ms))
            .keep_finished_at_most(cfg.keep_at_most)
            .keep_finished_for(Duration::from_millis(cfg.keep_for_ms));
        if let Some(max) = cfg.max_running {
            builder = builder.max_running(max);
        }
        let mut h = Harness {
            registry: builder.build(),
            base: tokio::time::Instant::now(),
            model: Model::new(cfg),
            driven: Vec::new(),
        };
        for (op, look) in &steps {
            h.apply(op).await;
            h.observe(*look);
        }
    });
}
