//! A user's view sees only that user's jobs; the registry sees all.

use asyncjobs::{CancelOutcome, Error, JobHandle, JobRegistry, JobRequest};

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
        .await.unwrap();
    let anonymous = registry
        .spawn(JobRequest::default(), |_job| async { Ok::<_, &str>(()) })
        .await.unwrap();
    let bobs_claimed = registry
        .spawn(JobRequest::default().started_by(2), |_job| async {
            Ok::<_, &str>(())
        })
        .await.unwrap();

    assert_eq!(alice.status(&alices).await.unwrap().started_by_user_id, Some(1));
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
        .await.unwrap();
    assert_eq!(
        registry.status(&forced).await.unwrap().started_by_user_id,
        Some(2)
    );
    assert_eq!(alice.status(&forced).await, Err(Error::NotYourJob(forced)));

    // Unknown ids are unknown to everyone, before the ownership check.
    let unknown = asyncjobs::JobId::from_u64(1);
    assert_eq!(alice.status(&unknown).await, Err(Error::UnknownJob(unknown)));

    // The registry (the administrator) can do anything.
    assert_eq!(registry.cancel(&alices).await, Ok(CancelOutcome::Requested));
    assert_eq!(alice.cancel(&alices).await, Ok(CancelOutcome::AlreadyRequested));
    go.send(()).ok();
    assert!(alice.wait(&alices).await.unwrap().job_canceling);
}
