//! With the `tracing` feature, each job runs in a `job` span and every state change is an event.
#![cfg(feature = "tracing")]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asyncjobs::{exception, JobHandle, JobRegistry, JobRequest};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

mod common;

#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    message: String,
    fields: BTreeMap<String, String>,
    /// The `job_id` of the span the event happened in, if any.
    span_job: Option<String>,
}

#[derive(Default, Clone)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// The `job_id` a span was created with.
struct SpanJob(String);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collect {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(job), Some(span)) = (fields.0.remove("job_id"), ctx.span(id)) {
            span.extensions_mut().insert(SpanJob(job));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let span_job = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|s| s.extensions().get::<SpanJob>().map(|j| j.0.clone()))
        });
        let message = fields.0.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            message,
            fields: fields.0,
            span_job,
        });
    }
}

impl Collect {
    fn of_job(&self, id: asyncjobs::JobId) -> Vec<Seen> {
        let id = id.to_string();
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.fields.get("job_id") == Some(&id) || s.span_job.as_ref() == Some(&id))
            .cloned()
            .collect()
    }
}

fn messages(seen: &[Seen]) -> Vec<(Level, &str)> {
    seen.iter().map(|s| (s.level, s.message.as_str())).collect()
}

#[test]
fn jobs_run_in_spans_and_changes_are_events() {
    let collect = Collect::default();
    let subscriber = tracing_subscriber::registry().with(collect.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let registry = JobRegistry::builder()
            .cancel_grace(Duration::from_secs(1))
            .build();
        let ok = registry
            .spawn(
                JobRequest::default().started_by(7).name("export"),
                |job: JobHandle| async move {
                    tracing::info!("inside the job");
                    job.set_progress(1, 2, "half");
                    job.set_progress(1, 2, "half"); // no change: no event
                    Ok::<_, &str>(())
                },
            )
            .await
            .unwrap();
        let stubborn = registry
            .spawn(JobRequest::default(), |_| async {
                std::future::pending::<()>().await;
                Ok::<_, &str>(())
            })
            .await
            .unwrap();
        let failing = registry
            .spawn(JobRequest::default(), |_| async {
                Err::<(), _>(std::io::Error::other("disk full"))
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        registry.cancel(&stubborn).await.unwrap();
        for id in [ok, stubborn, failing] {
            registry.wait(&id).await.unwrap();
        }

        let seen = collect.of_job(ok);
        assert_eq!(
            messages(&seen),
            [
                (Level::DEBUG, "job started"),
                (Level::INFO, "inside the job"),
                (Level::TRACE, "job progress"),
                (Level::DEBUG, "job complete"),
            ]
        );
        assert_eq!(seen[0].fields["user"], "7");
        assert_eq!(
            seen[0].fields["name"], "export",
            "the job's name is in its start event"
        );
        assert_eq!(
            seen[1].span_job.as_deref(),
            Some(ok.to_string().as_str()),
            "the job's own events are in its span"
        );
        assert_eq!(seen[2].fields["progress_message"].as_str(), "half");
        assert_eq!(seen[2].fields["current"], "1");
        // The registry's events name the job themselves and sit outside its span, so a log line
        // shows `job_id` and `user` once, wherever the change was made.
        assert_eq!(seen[2].span_job, None, "a registry event is a root event");
        assert_eq!(seen[2].fields["job_id"], ok.to_string());

        let seen = collect.of_job(stubborn);
        assert_eq!(
            messages(&seen),
            [
                (Level::DEBUG, "job started"),
                (Level::INFO, "job cancel requested"),
                // A cancel that was asked for is no fault: INFO, not WARN.
                (Level::INFO, "job canceled")
            ]
        );
        assert_eq!(seen[1].fields["cause"], "on request");
        assert_eq!(seen[2].fields["cause"], "on request");
        assert_eq!(seen[2].fields["exception"], exception::CANCELED);
        assert_eq!(seen[2].fields["runtime_ms"], "1000");
        let stopped = registry.status(&stubborn).await.unwrap();
        assert_eq!(
            stopped.error_details.as_deref(),
            Some("canceled on request")
        );

        let seen = collect.of_job(failing);
        assert_eq!(
            messages(&seen),
            [(Level::DEBUG, "job started"), (Level::WARN, "job failed")]
        );
        assert_eq!(seen[1].fields["error"], "disk full");
    });
}

#[test]
fn a_panic_is_an_error_event() {
    let collect = Collect::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(collect.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    common::quiet_planned_panics(|info| common::panic_message(info) == Some("planned"));
    runtime.block_on(async {
        let registry = JobRegistry::new();
        let id = registry
            .spawn(JobRequest::default(), |_| async {
                if true {
                    panic!("planned");
                }
                Ok::<_, &str>(())
            })
            .await
            .unwrap();
        registry.wait(&id).await.unwrap();
        let seen = collect.of_job(id);
        let last = seen.last().unwrap();
        assert_eq!(
            (last.level, last.message.as_str()),
            (Level::ERROR, "job failed")
        );
        assert_eq!(last.fields["exception"], exception::PANICKED);
        assert_eq!(last.fields["error"], "planned");
    });
}
