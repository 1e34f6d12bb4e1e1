//! What a job is: the one bound every call that starts a job takes.

use std::error::Error as StdError;
use std::future::Future;

use serde::Serialize;

use crate::JobHandle;

/// A job's body: a function called once with the job's [`JobHandle`], returning the future the
/// job runs. The future ends with `Ok(response)`, serialized as the status's `responseBody`, or
/// `Err(error)`, whose message, `source()` chain and type name become `errorMessage`,
/// `errorDetails` and `exception`.
///
/// Every `FnOnce(JobHandle) -> impl Future<Output = Result<R, E>>` is one, where the closure is
/// `Send`, its future `Send + 'static`, `R: Serialize`, and `E` converts into a boxed error (any
/// `std::error::Error`, a `String`, a `&'static str`). You never implement it: it names that
/// bound once, as axum's `Handler` does, instead of every method repeating it.
///
/// ```
/// use asyncjobs::{JobFn, JobHandle, JobRegistry, JobRequest};
///
/// // A job of one's own, started however a caller likes.
/// async fn start<Fut>(registry: &JobRegistry, job: impl JobFn<Fut>) -> Result<(), asyncjobs::Error> {
///     let id = registry.spawn(JobRequest::default(), job).await?;
///     registry.wait(&id).await?;
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::Error> {
/// start(&JobRegistry::new(), |job: JobHandle| async move {
///     job.set_progress(1, 1, "done");
///     Ok::<_, std::io::Error>(serde_json::json!({"rows": 1}))
/// })
/// .await
/// # }
/// ```
pub trait JobFn<Fut>: FnOnce(JobHandle) -> Fut + Send {
    /// What the job returns when it succeeds.
    type Response: Serialize + Send + 'static;
    /// What the job returns when it fails.
    type Error: Into<Box<dyn StdError + Send + Sync>> + Send + 'static;

    /// Calls the function: the job's future, typed by its outcome.
    fn call(
        self,
        job: JobHandle,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send + 'static;
}

impl<F, Fut, R, E> JobFn<Fut> for F
where
    F: FnOnce(JobHandle) -> Fut + Send,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    type Response = R;
    type Error = E;

    fn call(self, job: JobHandle) -> impl Future<Output = Result<R, E>> + Send + 'static {
        self(job)
    }
}
