//! Feeds and watches are `futures_core::Stream`s: what an SSE or WebSocket endpoint consumes.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use asyncjobs::{AsynchJobState, AsynchronousJobStatus, JobHandle, JobRegistry, JobRequest};
use futures_core::Stream;

/// The next item of a stream, as `StreamExt::next` would give it.
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

fn assert_stream<S: Stream<Item = AsynchronousJobStatus> + Send + Unpin + 'static>(_: &S) {}

#[tokio::test(start_paused = true)]
async fn a_watch_streams_each_status_until_the_final_one() {
    let registry = JobRegistry::new();
    let (go, mut gate) = tokio::sync::mpsc::channel::<()>(1);
    let id = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            for i in 1..=3u64 {
                gate.recv().await;
                job.set_progress(i, 3, format!("step {i}"));
            }
            gate.recv().await;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    let mut watch = registry.watch(&id).await.unwrap();
    assert_stream(&watch);
    let first = next(&mut watch).await.unwrap();
    assert_eq!(first.etag.to_string(), "1");
    let mut seen = vec![first.progress_current];
    for _ in 0..3 {
        go.send(()).await.unwrap();
        let status = next(&mut watch).await.unwrap();
        seen.push(status.progress_current);
    }
    go.send(()).await.unwrap();
    let last = next(&mut watch).await.unwrap();
    assert_eq!(last.job_state, AsynchJobState::Complete);
    assert_eq!(seen, [None, Some(1), Some(2), Some(3)]);
    assert!(
        next(&mut watch).await.is_none(),
        "ends after the final status"
    );
    assert!(next(&mut watch).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_feed_streams_every_change_and_ends_after_the_shutdown() {
    let registry = JobRegistry::new();
    let mut feed = registry.as_user(1).watch_all();
    assert_stream(&feed);
    let mine = registry
        .spawn(
            JobRequest::default().started_by(1),
            |job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("stopped"))
            },
        )
        .await
        .unwrap();
    registry
        .spawn(JobRequest::default().started_by(2), |_| async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    let started = next(&mut feed).await.unwrap();
    assert_eq!(
        (started.job_id, started.job_state),
        (mine, AsynchJobState::Processing)
    );
    // A stream polled and dropped between items loses nothing: poll once, give up, poll again.
    let pending = tokio::time::timeout(Duration::from_millis(10), next(&mut feed)).await;
    assert!(pending.is_err(), "nothing new yet");
    registry.shutdown(Duration::from_secs(1)).await;
    let mut last = None;
    while let Some(status) = next(&mut feed).await {
        assert_eq!(status.job_id, mine, "only user 1's jobs");
        last = Some(status);
    }
    let last = last.expect("the final status came");
    assert_eq!(last.job_state, AsynchJobState::Failed);
    assert!(last.job_canceling);
}

/// A feed polled as a `Stream`, then read with `next()` that is dropped before it resolves (a
/// timeout), loses nothing: the next `next()` still gets the job started afterwards.
#[tokio::test(start_paused = true)]
async fn a_feed_survives_a_dropped_next_after_a_stream_poll() {
    let registry = JobRegistry::new();
    let mut feed = registry.watch_all();
    // One poll as a stream: nothing yet, the item stays under way.
    let polled = poll_fn(|cx| std::task::Poll::Ready(Pin::new(&mut feed).poll_next(cx))).await;
    assert!(polled.is_pending());
    assert!(
        tokio::time::timeout(Duration::from_millis(10), feed.next())
            .await
            .is_err(),
        "nothing changed yet"
    );
    let id = registry
        .spawn(JobRequest::default(), |_job| async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("the feed still hears")
        .expect("the registry runs");
    assert_eq!(heard.job_id, id);
}
