//! A user's view sees only that user's jobs; the registry sees all.

use asyncjobs::{
    AsynchJobState, AsynchronousJobStatus, CancelOutcome, Error, JobCounts, JobFilter, JobHandle,
    JobRegistry, JobRequest,
};

#[tokio::test]
async fn views_refuse_other_users_jobs() {
    let registry = JobRegistry::new();
    let alice = registry.as_user(1);
    let bob = registry.as_user(2);
    assert_eq!((alice.user(), bob.user()), (1, 2));

    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let alices = alice
        .spawn(
            JobRequest::new(serde_json::json!({"concreteType": "x.Y"})),
            |job: JobHandle| async move {
                assert_eq!(job.started_by(), Some(1));
                wait.await.ok();
                Ok::<_, std::io::Error>(())
            },
        )
        .await
        .unwrap();
    let anonymous = registry
        .spawn(JobRequest::default(), |_job| async { Ok::<_, &str>(()) })
        .await
        .unwrap();
    let bobs_claimed = registry
        .spawn(JobRequest::default().started_by(2), |_job| async {
            Ok::<_, &str>(())
        })
        .await
        .unwrap();

    assert_eq!(
        alice.status(&alices).await.unwrap().started_by_user_id,
        Some(1)
    );
    assert_eq!(bob.status(&alices).await, Err(Error::NotYourJob(alices)));
    assert_eq!(bob.cancel(&alices).await, Err(Error::NotYourJob(alices)));
    assert_eq!(bob.wait(&alices).await, Err(Error::NotYourJob(alices)));
    assert!(
        !registry.status(&alices).await.unwrap().job_canceling,
        "a refused cancel did nothing"
    );
    assert_eq!(
        alice.status(&anonymous).await,
        Err(Error::NotYourJob(anonymous)),
        "no user: only the registry sees it"
    );
    assert_eq!(
        bob.wait(&bobs_claimed).await.unwrap().started_by_user_id,
        Some(2)
    );
    assert_eq!(
        Error::NotYourJob(alices).to_string(),
        format!("job {alices} was started by another user")
    );

    // A view starts jobs as its own user, whatever the request says.
    let forced = bob
        .spawn(JobRequest::default().started_by(1), |_job| async {
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    assert_eq!(
        registry.status(&forced).await.unwrap().started_by_user_id,
        Some(2)
    );
    assert_eq!(alice.status(&forced).await, Err(Error::NotYourJob(forced)));

    // Unknown ids are unknown to everyone, before the ownership check.
    let unknown = asyncjobs::JobId::from_u64(1);
    assert_eq!(
        alice.status(&unknown).await,
        Err(Error::UnknownJob(unknown))
    );

    // The registry (the administrator) can do anything.
    assert_eq!(registry.cancel(&alices).await, Ok(CancelOutcome::Requested));
    assert_eq!(
        alice.cancel(&alices).await,
        Ok(CancelOutcome::AlreadyRequested)
    );
    go.send(()).ok();
    assert!(alice.wait(&alices).await.unwrap().job_canceling);
}

/// A user's counts are exact among many users: running and queued apart (under a per-user limit),
/// finished ones by state, none of another user's, none dropped by retention; and they add up to
/// the registry's.
#[tokio::test]
async fn each_users_counts_are_exact_among_many_users() {
    const USERS: u64 = 40;
    let registry = JobRegistry::builder()
        .max_running_per_user(2)
        .keep_finished_at_most(150)
        .build();
    let (release, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut held = 0;
    for user in 1..=USERS {
        // User `u` starts `u % 5` jobs that fail, `u % 7` that complete, and `u % 4` that wait
        // for the test (two run, the rest queue).
        for n in 0..user % 5 + user % 7 {
            let fails = n < user % 5;
            registry
                .as_user(user)
                .spawn(JobRequest::default(), move |_job| async move {
                    if fails {
                        Err("no")
                    } else {
                        Ok(())
                    }
                })
                .await
                .unwrap();
        }
        for _ in 0..user % 4 {
            let mut wait = release.subscribe();
            registry
                .as_user(user)
                .spawn(JobRequest::default(), move |_job| async move {
                    let _ = wait.recv().await;
                    Ok::<_, &str>(())
                })
                .await
                .unwrap();
            held += 1;
        }
    }
    // And jobs of no user, which no user counts.
    for _ in 0..5 {
        registry
            .spawn(JobRequest::default(), |_job| async { Ok::<_, &str>(()) })
            .await
            .unwrap();
    }
    // Every job that can finish has finished (the held ones and those queued behind them wait).
    while registry.local().counts().processing != held {
        tokio::task::yield_now().await;
    }

    let in_state = |listed: &[AsynchronousJobStatus], state| {
        listed.iter().filter(|s| s.job_state == state).count()
    };
    let mut sum = JobCounts::default();
    for user in 1..=USERS {
        let counts = registry.as_user(user).local().counts();
        assert_eq!(
            registry.as_user(user).local().counts(),
            counts,
            "user {user}"
        );
        let listed = registry
            .local()
            .list(&JobFilter::new().started_by(user))
            .jobs;
        let waiting = (user % 4) as usize;
        assert_eq!(
            (counts.processing, counts.running, counts.queued),
            (waiting, waiting.min(2), waiting.saturating_sub(2)),
            "user {user}"
        );
        assert_eq!(
            (counts.complete, counts.failed),
            (
                in_state(&listed, AsynchJobState::Complete),
                in_state(&listed, AsynchJobState::Failed)
            ),
            "user {user}"
        );
        sum.processing += counts.processing;
        sum.running += counts.running;
        sum.queued += counts.queued;
        sum.complete += counts.complete;
        sum.failed += counts.failed;
    }
    assert_eq!(
        registry.as_user(USERS + 1).local().counts(),
        JobCounts::default()
    );

    let all = registry.local().counts();
    assert_eq!(
        (sum.processing, sum.running, sum.queued),
        (all.processing, all.running, all.queued)
    );
    // Retention dropped some finished statuses: each user counts only those the registry
    // holds, and the jobs of no user are the rest.
    let anonymous: Vec<_> = registry
        .local()
        .list(&JobFilter::new())
        .jobs
        .into_iter()
        .filter(|s| s.started_by_user_id.is_none())
        .collect();
    assert_eq!(all.complete + all.failed, 150, "retention kept its count");
    assert_eq!(
        sum.complete + in_state(&anonymous, AsynchJobState::Complete),
        all.complete
    );
    assert_eq!(sum.failed, all.failed);
    let _ = release.send(());
}
