//! The public API can cross threads: every future, feed, watch, view, handle and value the crate
//! returns is `Send`, so it can be held across an `.await` in a task on a multi-thread runtime,
//! and the handles and values are `Sync` too, so they can be shared by reference. Checked at
//! compile time; the futures are built from a real registry and then awaited, so the checks are
//! on what the crate really returns and the test also asserts what each one resolves to.

use std::time::Duration;

use asyncjobs::{
    AsynchJobState, AsynchronousJobStatus, CancelOutcome, Error, Etag, JobCounts, JobFilter,
    JobHandle, JobId, JobRegistry, JobRegistryBuilder, JobRequest, JobWatch, ShutdownSummary,
    StatusFeed, UserView,
};

mod common;
use common::gated;

fn assert_send<T: Send>(_: &T) {}

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn handles_and_values_are_send_and_sync() {
    assert_send_sync::<JobRegistry>();
    assert_send_sync::<JobRegistryBuilder>();
    assert_send_sync::<UserView>();
    assert_send_sync::<JobHandle>();
    assert_send_sync::<JobRequest>();
    assert_send_sync::<JobFilter>();
    assert_send_sync::<AsynchronousJobStatus>();
    assert_send_sync::<AsynchJobState>();
    assert_send_sync::<JobId>();
    assert_send_sync::<Etag>();
    assert_send_sync::<JobCounts>();
    assert_send_sync::<CancelOutcome>();
    assert_send_sync::<ShutdownSummary>();
    assert_send_sync::<Error>();
    assert_send_sync::<asyncjobs::JobPage>();
    assert_send_sync::<asyncjobs::StoreFault>();
    assert_send_sync::<asyncjobs::Everyone>();
    assert_send_sync::<asyncjobs::OneUser>();
}

/// The façade's async calls are `Send` futures, from the registry and from a user's view alike:
/// what an axum handler awaits (each is awaited here, and its outcome checked).
#[tokio::test]
async fn the_facade_s_futures_are_send() {
    let registry = JobRegistry::new();
    let alice = registry.as_user(1);
    let spawn = alice.spawn(JobRequest::default(), |_job: JobHandle| async {
        Ok::<_, std::io::Error>(())
    });
    assert_send(&spawn);
    let id = spawn.await.unwrap();
    let submit = registry.submit(JobRequest::default(), |_job: JobHandle| async {
        Ok::<_, std::io::Error>(())
    });
    assert_send(&submit);
    assert!(!submit.await.unwrap().is_reused());
    let status = alice.status(&id);
    assert_send(&status);
    assert_eq!(status.await.unwrap().job_id, id);
    let done = alice.wait(&id).await.unwrap();
    let cancel = alice.cancel(&id);
    assert_send(&cancel);
    assert_eq!(cancel.await, Ok(CancelOutcome::AlreadyFinished));
    let every = JobFilter::new();
    let list = alice.list(&every);
    assert_send(&list);
    assert_eq!(list.await.unwrap().jobs, [done]);
    let counts = alice.counts();
    assert_send(&counts);
    assert_eq!(counts.await.unwrap().complete, 1);
    let watch = alice.watch(&id);
    assert_send(&watch);
    assert!(watch.await.is_ok());
    let name = alice.job_name(&id);
    assert_send(&name);
    assert_eq!(name.await, Ok(None));
    assert_eq!(registry.counts().await.unwrap().complete, 2);
}

/// A feed and a watch are read through `&mut self` by one reader, so only `Send` is asked of
/// them: moving one into a task is what a caller needs, and the docs promise no more.
#[tokio::test(start_paused = true)]
async fn every_returned_future_feed_and_watch_is_send() {
    let registry = JobRegistry::new();
    let mut feed: StatusFeed = registry.watch_all();
    assert_send(&feed);
    let alice = registry.as_user(1);
    let (id, job, go) = gated(&registry, JobRequest::default().started_by(1));

    let mut watch: JobWatch = registry.watch(&id).await.unwrap();
    assert_send(&watch);
    let next = watch.next();
    assert_send(&next);
    let first = next.await.expect("the current status, at once");
    assert_eq!(
        (first.job_id, first.job_state, first.etag.to_string()),
        (id, AsynchJobState::Processing, "1".to_owned())
    );

    let next = feed.next();
    assert_send(&next);
    assert_eq!(next.await.map(|s| s.job_id), Some(id), "the start");

    let changed = registry.wait_for_change(&id, &first.etag);
    assert_send(&changed);
    let alice_changed = alice.wait_for_change(&id, &first.etag);
    assert_send(&alice_changed);
    assert!(job.set_progress(1, 2, "half way"));
    let changed = changed.await.unwrap();
    assert_eq!(changed.progress_message.as_deref(), Some("half way"));
    assert_eq!(alice_changed.await.unwrap(), changed);

    let cancelled = job.cancelled();
    assert_send(&cancelled);
    assert_eq!(registry.cancel(&id).await, Ok(CancelOutcome::Requested));
    tokio::time::timeout(Duration::from_secs(1), cancelled)
        .await
        .expect("fires on cancel");

    let wait = registry.wait(&id);
    assert_send(&wait);
    let alice_wait = alice.wait(&id);
    assert_send(&alice_wait);
    go.send(()).unwrap();
    let done = wait.await.unwrap();
    assert_eq!(
        (done.job_state, done.job_canceling),
        (AsynchJobState::Complete, true),
        "it finished its work although asked to cancel"
    );
    assert_eq!(alice_wait.await.unwrap(), done);

    let shutdown = registry.shutdown(Duration::from_secs(1));
    assert_send(&shutdown);
    assert_eq!(shutdown.await.running, 0);
    assert_eq!(watch.next().await, Some(done.clone()));
    assert_eq!(watch.next().await, None, "after the final status");
    assert_eq!(feed.next().await, Some(done));
    assert_eq!(feed.next().await, None, "shut down, every change read");
}
