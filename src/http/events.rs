//! `GET /asynchronous/job/events`: the caller's job changes as Server-Sent Events.
//!
//! # Order, and what `Last-Event-ID` resumes from
//!
//! Each event is one status; its id is `jobId:etag`. A client that reconnects with the id of the
//! last event it got is sent the latest status of every job of its user that changed since that
//! status was made (by `changedOn`), then the live changes. For that to miss nothing, every
//! change made before an event's status must have been sent by the time that event is: then
//! "changed since" covers all the client has not seen.
//!
//! The source of changes conflates (a job changed three times while unread is read once, at its
//! latest), which can reorder: job A pending since before B's change, read after A changed again,
//! comes out with a `changedOn` later than B's, ahead of B. So the stream reads changes in
//! batches, everything pending at once (an in-memory read, no I/O), and sends each batch in
//! order of `changedOn`. A change made after a batch was read comes in a later batch and has a
//! later `changedOn` than all of it, except for one made while the batch was being read, or
//! stamped by a clock slightly behind (each job's times are its own monotonic clock anchored to
//! the wall clock at spawn; with a store, another host's): so a resume looks [`RESUME_SLACK`]
//! further back, and the client may get a status again (same `jobId:etag`), never miss one.
//!
//! # Where the changes come from
//!
//! [`Changes`] is what the stream follows: the user's [`StatusFeed`] (`watch_all`), of every
//! instance's jobs with a shared store. The stream adds batching, order, resume through the
//! cluster-wide list, heartbeats and the end.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use futures_core::Stream;

use super::handlers::Caller;
use super::rejection::Rejection;
use super::state::Api;
use crate::{AsynchronousJobStatus, Error, Etag, JobId, StatusFeed, UserView};

/// The default for [`AsyncJobApi::event_heartbeat`](super::AsyncJobApi::event_heartbeat): a
/// comment every 15 seconds while no event is sent, well below the idle timeouts of proxies and
/// load balancers (often 60 s).
pub const DEFAULT_EVENT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How much further back than the last event's `changedOn` a resume looks; see the module docs.
pub(super) const RESUME_SLACK: Duration = Duration::from_secs(1);

/// What an event stream follows: the changes of one user's jobs, conflated per job (each read
/// returns a job's latest status, and never the same status twice).
pub(super) trait Changes: Send + Unpin + 'static {
    /// The latest status of the next job that changed, waiting for one if none is pending;
    /// `None` once no more will come (the registry shut down). Must be cancel safe: dropping it
    /// unfinished loses no change.
    fn next(&mut self) -> impl Future<Output = Option<AsynchronousJobStatus>> + Send;

    /// How many jobs have changes not read yet: a batch reads at most this many without waiting.
    fn pending(&self) -> usize;
}

impl Changes for StatusFeed {
    fn next(&mut self) -> impl Future<Output = Option<AsynchronousJobStatus>> + Send {
        StatusFeed::next(self)
    }

    fn pending(&self) -> usize {
        StatusFeed::pending(self)
    }
}

/// `GET /asynchronous/job/events`.
pub(super) async fn events(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let resume = last_event_id(&headers)?;
    // Opened before anything is read, so that no change between the read and the feed is lost.
    let changes = user.watch_all();
    let missed = match resume {
        Some((id, etag)) => Some(missed_since(&user, id, &etag).await?),
        None => None,
    };
    let stream = EventStream {
        source: Some(Source::new(changes, missed)),
        step: None,
    };
    let keep_alive = KeepAlive::new().interval(api.heartbeat).text("heartbeat");
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx buffers answers by default, which would hold events back until a buffer fills.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// The `Last-Event-ID` a reconnecting client sends: `jobId:etag`, or none.
fn last_event_id(headers: &HeaderMap) -> Result<Option<(JobId, Etag)>, Rejection> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let malformed = || {
        Rejection::bad_request(
            "Last-Event-ID must be the id of an event this stream sent: jobId:etag",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?;
    if text.is_empty() {
        return Ok(None);
    }
    let (id, etag) = text.split_once(':').ok_or_else(malformed)?;
    let id = id.parse::<JobId>().map_err(|_| malformed())?;
    if etag.is_empty() {
        return Err(malformed());
    }
    let etag = etag.parse::<Etag>().unwrap_or_else(|never| match never {});
    Ok(Some((id, etag)))
}

/// The latest status of every job of `user` changed since the status `id` had at `etag`, oldest
/// change first, without that status itself.
async fn missed_since(
    user: &UserView,
    id: JobId,
    etag: &Etag,
) -> Result<Vec<AsynchronousJobStatus>, Rejection> {
    let since = match user.status(&id).await {
        Ok(status) if status.etag == *etag => Some(status.changed_on),
        // It changed since: that status was made after the job started, so everything since the
        // start covers everything since it (more than needed; never less).
        Ok(status) => Some(status.started_on),
        // Gone (dropped by retention), or never the caller's: every job of the caller's.
        Err(Error::UnknownJob(_) | Error::NotYourJob(_)) => None,
        Err(other) => return Err(other.into()),
    };
    let from = since.map(|since| {
        let slack = TimeDelta::from_std(RESUME_SLACK).unwrap_or(TimeDelta::MAX);
        since
            .checked_sub_signed(slack)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    });
    let mut missed: Vec<AsynchronousJobStatus> = user
        .list_all()
        .await?
        .into_iter()
        .filter(|status| from.is_none_or(|from| status.changed_on >= from))
        .filter(|status| !(status.job_id == id && status.etag == *etag))
        .collect();
    in_order(&mut missed);
    Ok(missed)
}

/// Puts a batch in the order to send it: by `changedOn`, without repeating a status. Stable, so
/// two statuses of one job in the same millisecond keep the order they were read in.
fn in_order(batch: &mut Vec<AsynchronousJobStatus>) {
    let mut seen = HashSet::new();
    batch.retain(|status| seen.insert((status.job_id, status.etag.clone())));
    batch.sort_by_key(|status| status.changed_on);
}

/// The events of one stream, from its [`Changes`].
struct Source<C> {
    changes: C,
    /// Read, in the order to send, not sent yet.
    ready: VecDeque<AsynchronousJobStatus>,
    /// On a resume, what the client missed: the first batch, sent without waiting for a change.
    missed: Option<Vec<AsynchronousJobStatus>>,
    /// The statuses sent from `missed`, by job, until the job's next status comes from the
    /// changes: the changes may bring the same status again, which is not sent twice.
    sent_missed: HashMap<JobId, Etag>,
    ended: bool,
    end_sent: bool,
}

impl<C: Changes> Source<C> {
    fn new(changes: C, missed: Option<Vec<AsynchronousJobStatus>>) -> Self {
        let sent_missed = missed
            .iter()
            .flatten()
            .map(|status| (status.job_id, status.etag.clone()))
            .collect();
        Source {
            changes,
            ready: VecDeque::new(),
            missed,
            sent_missed,
            ended: false,
            end_sent: false,
        }
    }

    /// What to send next, and the source to read the one after from; `None` after the end.
    async fn next_item(mut self) -> Option<(Item, Self)> {
        loop {
            if let Some(status) = self.ready.pop_front() {
                return Some((Item::Status(status), self));
            }
            if self.ended {
                if self.end_sent {
                    return None;
                }
                self.end_sent = true;
                return Some((Item::End, self));
            }
            self.read_batch().await;
        }
    }

    /// Reads everything pending (waiting for a change first if nothing is, unless resuming), in
    /// the order to send it.
    async fn read_batch(&mut self) {
        let (mut batch, missed) = match self.missed.take() {
            Some(missed) => {
                let count = missed.len();
                (missed, count)
            }
            None => match self.changes.next().await {
                Some(status) => (vec![status], 0),
                None => {
                    self.ended = true;
                    return;
                }
            },
        };
        // Only what is pending now: a job that keeps changing would otherwise keep the batch
        // from ever ending.
        for _ in 0..self.changes.pending() {
            match ready_now(self.changes.next()) {
                Some(Some(status)) => batch.push(status),
                Some(None) => {
                    self.ended = true;
                    break;
                }
                None => break,
            }
        }
        if !self.sent_missed.is_empty() {
            // A status from the changes that went out as missed already is not sent again.
            let mut index = 0;
            batch.retain(|status| {
                index += 1;
                index <= missed
                    || self
                        .sent_missed
                        .remove(&status.job_id)
                        .is_none_or(|sent| sent != status.etag)
            });
        }
        in_order(&mut batch);
        self.ready.extend(batch);
    }
}

/// A future's output if it is ready at once, without waiting. The future is dropped otherwise,
/// so it must be cancel safe.
fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// What a stream sends.
#[derive(Debug)]
enum Item {
    Status(AsynchronousJobStatus),
    /// The registry shut down: the last event.
    End,
}

impl Item {
    fn into_event(self) -> Event {
        match self {
            Item::Status(status) => status_event(&status),
            Item::End => end_event(),
        }
    }
}

fn status_event(status: &AsynchronousJobStatus) -> Event {
    // A status always serializes (its bodies are JSON values already), on one line.
    let data = serde_json::to_string(status).unwrap_or_default();
    let event = Event::default().data(data);
    let id = format!("{}:{}", status.job_id, status.etag);
    // An etag from a store is any string; one that cannot be an event id leaves the event
    // without one (a client resumes from the event before).
    if id.contains(['\n', '\r', '\0']) {
        event
    } else {
        event.id(id)
    }
}

/// The last event of a stream that ends because the registry shut down.
fn end_event() -> Event {
    Event::default()
        .event("end")
        .data(r#"{"reason":"the job registry shut down"}"#)
}

type Step<C> = Option<(Item, Source<C>)>;

/// A [`Source`] as a `Stream` of events: one boxed future per event.
struct EventStream<C> {
    source: Option<Source<C>>,
    step: Option<Pin<Box<dyn Future<Output = Step<C>> + Send>>>,
}

impl<C: Changes> Stream for EventStream<C> {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(step) = this.step.as_mut() {
                let next = ready!(step.as_mut().poll(cx));
                this.step = None;
                return Poll::Ready(next.map(|(item, source)| {
                    this.source = Some(source);
                    Ok(item.into_event())
                }));
            }
            let Some(source) = this.source.take() else {
                return Poll::Ready(None);
            };
            this.step = Some(Box::pin(source.next_item()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn status(id: u64, etag: u64, changed_ms: i64) -> AsynchronousJobStatus {
        let at = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + changed_ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        serde_json::from_value(json!({
            "jobId": id.to_string(), "jobState": "PROCESSING", "etag": etag.to_string(),
            "startedOn": at, "changedOn": at, "runtimeMS": 0,
        }))
        .unwrap()
    }

    fn ids(statuses: &[AsynchronousJobStatus]) -> Vec<(u64, String)> {
        statuses
            .iter()
            .map(|s| (s.job_id.as_u64(), s.etag.to_string()))
            .collect()
    }

    #[test]
    fn a_batch_goes_out_by_changed_on_once_each() {
        // A was pending since before B changed, and read after changing again.
        let mut batch = vec![status(1, 3, 30), status(2, 2, 20), status(2, 2, 20)];
        in_order(&mut batch);
        assert_eq!(ids(&batch), [(2, "2".into()), (1, "3".into())]);
    }

    /// Changes handed out as a test says.
    struct Scripted(VecDeque<Option<AsynchronousJobStatus>>);

    impl Changes for Scripted {
        fn next(&mut self) -> impl Future<Output = Option<AsynchronousJobStatus>> + Send {
            let next = self.0.pop_front();
            async move {
                match next {
                    Some(next) => next,
                    None => std::future::pending().await,
                }
            }
        }

        fn pending(&self) -> usize {
            self.0.len()
        }
    }

    /// What a source sends until it would wait: `jobId:etag` for a status, `end` for the end.
    fn drain(source: Source<Scripted>) -> Vec<String> {
        let mut sent = Vec::new();
        let mut source = Some(source);
        while let Some((item, rest)) = source
            .take()
            .and_then(|s| ready_now(s.next_item()))
            .flatten()
        {
            sent.push(match item {
                Item::Status(status) => format!("{}:{}", status.job_id, status.etag),
                Item::End => "end".to_owned(),
            });
            source = Some(rest);
        }
        sent
    }

    #[test]
    fn a_resume_sends_what_was_missed_first_and_nothing_twice() {
        let missed = vec![status(1, 2, 10), status(2, 5, 20)];
        // The changes bring job 2's status again (it changed after the feed opened, before
        // the list), then job 1's next one, then the end.
        let changes = Scripted(VecDeque::from([
            Some(status(2, 5, 20)),
            Some(status(1, 3, 30)),
            None,
        ]));
        let sent = drain(Source::new(changes, Some(missed)));
        assert_eq!(sent, ["1:2", "2:5", "1:3", "end"]);
    }

    #[test]
    fn batches_are_what_is_pending_in_changed_on_order() {
        // Job 1 was pending since before job 2 changed, and changed again before it was read.
        let changes = Scripted(VecDeque::from([
            Some(status(1, 4, 30)),
            Some(status(2, 2, 20)),
        ]));
        assert_eq!(drain(Source::new(changes, None)), ["2:2", "1:4"]);
    }

    #[test]
    fn last_event_ids_are_job_id_colon_etag() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("last-event-id", HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(last_event_id(&headers("")).unwrap(), None);
        let (id, etag) = last_event_id(&headers("17:4")).unwrap().unwrap();
        assert_eq!((id.as_u64(), etag.to_string()), (17, "4".to_owned()));
        let (_, etag) = last_event_id(&headers("17:a:b")).unwrap().unwrap();
        assert_eq!(etag.to_string(), "a:b");
        for bad in ["17", "17:", ":4", "x:4", "-1:4"] {
            assert_eq!(
                last_event_id(&headers(bad)).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
