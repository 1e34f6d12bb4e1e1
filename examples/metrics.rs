//! Job metrics in Prometheus's text format, served by an axum route beside the job API.
//!
//! ```sh
//! cargo run --example metrics --features metrics,http
//! ```
//!
//! It installs the Prometheus recorder (any `metrics` exporter works the same way), runs a few
//! jobs (one completes, one fails, one is canceled, one waits in the queue), serves `/metrics` on
//! a loopback port, fetches it once as Prometheus would, prints what it got, and exits.

use std::time::Duration;

use asyncjobs::{JobHandle, JobRegistry, JobRequest};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Job metrics through the `metrics` facade, rendered for Prometheus.\n");
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let registry = JobRegistry::builder()
        .max_running(2)
        .cancel_grace(Duration::from_millis(100))
        .build();
    let export = registry
        .spawn(
            JobRequest::default().started_by(1),
            |job: JobHandle| async move {
                for row in 1..=20u64 {
                    job.set_progress(row, 20, "exporting");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<_, std::io::Error>(serde_json::json!({"rows": 20}))
            },
        )
        .await?;
    let broken = registry
        .spawn(JobRequest::default().started_by(2), |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .await?;
    let waiting = registry
        .spawn(
            JobRequest::default().started_by(3),
            |job: JobHandle| async move {
                job.cancelled().await;
                Err::<(), _>(std::io::Error::other("canceled"))
            },
        )
        .await?;
    registry.wait(&export).await?;
    registry.wait(&broken).await?;
    registry.cancel(&waiting).await?;
    registry.wait(&waiting).await?;

    // The route a service adds next to its API; Prometheus scrapes it.
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let prometheus = prometheus.clone();
            async move { prometheus.render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let text = reqwest::get(format!("http://{address}/metrics"))
        .await?
        .text()
        .await?;
    println!("GET http://{address}/metrics\n");
    for line in text
        .lines()
        .filter(|l| l.starts_with("asyncjobs_") && !l.contains("quantile"))
    {
        println!("  {line}");
    }
    for expected in [
        "asyncjobs_jobs_started_total 3",
        "asyncjobs_jobs_finished_total{state=\"COMPLETE\"} 1",
        "asyncjobs_jobs_finished_total{state=\"FAILED\"} 2",
        "asyncjobs_job_cancels_total{cause=\"requested\"} 1",
        "asyncjobs_jobs_running 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    server.abort();
    println!("\nEvery metric was where it should be.");
    Ok(())
}
