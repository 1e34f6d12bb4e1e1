//! Fixtures shared by the integration tests. Each test file is its own crate and includes this
//! module with `mod common;`.
// Each test binary uses only some of these; the rest would warn as dead code in that binary.
#![allow(dead_code)]

use std::panic::PanicHookInfo;
use std::sync::Once;
use std::time::Duration;

use asyncjobs::{Error, JobHandle, JobId, JobRegistry, JobRequest};
use serde_json::json;
use tokio::sync::oneshot;

/// The size of the hostile inputs that must not blow up: messages, errors, JSON strings, ids.
pub const TEN_MB: usize = 10 * 1024 * 1024;

/// Generous: linear work on 10 MB takes milliseconds even in a debug build; quadratic work
/// would take hours.
pub const NO_BLOWUP: Duration = Duration::from_secs(5);

/// Spawns a job that runs until told (its `go` is sent or dropped), then completes with
/// `"done"`. Returns its id, its handle and its `go`.
pub fn gated(
    registry: &JobRegistry,
    request: JobRequest,
) -> (JobId, JobHandle, oneshot::Sender<()>) {
    let (go, wait) = oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let id = registry
        .local()
        .spawn(request, move |job: JobHandle| {
            handle_tx.send(job).unwrap();
            async move {
                wait.await.ok();
                Ok::<_, &str>(json!("done"))
            }
        })
        .unwrap();
    (id, handle_rx.recv().unwrap(), go)
}

/// Spawns a job that completes at once, or says why it could not.
pub fn quick(registry: &JobRegistry) -> Result<JobId, Error> {
    registry
        .local()
        .spawn(JobRequest::default(), |_job| async { Ok::<_, &str>(()) })
}

/// Keeps the panics a test plans out of its output; any other panic is reported as usual.
///
/// `planned` tells the two apart, mostly by the [`panic_message`]. A panic hook is process-wide:
/// the first call in a test binary installs it and later calls do nothing, so all tests of one
/// binary pass the same `planned`.
pub fn quiet_planned_panics(planned: fn(&PanicHookInfo<'_>) -> bool) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !planned(info) {
                default(info);
            }
        }));
    });
}

/// A panic's message, if its payload is text, as from `panic!`. (`PanicHookInfo::payload_as_str`
/// does this from Rust 1.91, above the crate's MSRV.)
pub fn panic_message<'a>(info: &'a PanicHookInfo<'_>) -> Option<&'a str> {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}
