//! The JSON of a status is Synapse's `AsynchronousJobStatus`, field by field.

use asyncjobs::{
    AsynchJobState, AsynchronousJobStatus, Etag, JobHandle, JobId, JobRegistry, JobRequest,
};
use serde_json::{json, Value};

fn registry() -> JobRegistry {
    JobRegistry::builder().first_job_id(9_606_497).build()
}

fn object(status: &AsynchronousJobStatus) -> serde_json::Map<String, Value> {
    match serde_json::to_value(status).unwrap() {
        Value::Object(map) => map,
        other => panic!("a status serializes to an object, got {other}"),
    }
}

fn is_wire_time(v: &Value) -> bool {
    // e.g. 2024-03-05T17:04:09.417Z: RFC 3339, UTC, milliseconds, trailing Z
    let s = v.as_str().unwrap();
    s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[tokio::test(start_paused = true)]
async fn processing_status_has_exactly_synapse_fields() {
    let registry = registry();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let id = registry
        .spawn(
            JobRequest::new(
                json!({"concreteType": "org.example.ExportRequest", "table": "syn123"}),
            )
            .started_by(3_350_396),
            |job: JobHandle| async move {
                job.set_progress(5, 100, "Querying...");
                rx.await.ok();
                Ok::<_, std::io::Error>(())
            },
        )
        .await
        .unwrap();
    tokio::task::yield_now().await;
    tokio::time::advance(std::time::Duration::from_millis(1500)).await;

    let status = registry.status(&id).await.unwrap();
    let map = object(&status);
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "changedOn",
            "etag",
            "jobCanceling",
            "jobId",
            "jobState",
            "progressCurrent",
            "progressMessage",
            "progressTotal",
            "requestBody",
            "runtimeMS",
            "startedByUserId",
            "startedOn",
        ]
    );
    assert_eq!(map["jobId"], json!("9606497"));
    assert_eq!(map["jobState"], json!("PROCESSING"));
    assert_eq!(map["jobCanceling"], json!(false));
    assert_eq!(
        map["etag"],
        json!("2"),
        "one change after the start: progress"
    );
    assert_eq!(map["startedByUserId"], json!(3_350_396));
    assert_eq!(map["progressCurrent"], json!(5));
    assert_eq!(map["progressTotal"], json!(100));
    assert_eq!(map["progressMessage"], json!("Querying..."));
    assert_eq!(
        map["requestBody"],
        json!({"concreteType": "org.example.ExportRequest", "table": "syn123"})
    );
    assert_eq!(
        map["runtimeMS"],
        json!(1500),
        "live while processing, an integer"
    );
    assert!(map["runtimeMS"].is_u64());
    assert!(is_wire_time(&map["startedOn"]), "{}", map["startedOn"]);
    assert!(is_wire_time(&map["changedOn"]), "{}", map["changedOn"]);
    tx.send(()).unwrap();
    registry.wait(&id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn complete_and_failed_statuses_on_the_wire() {
    let registry = registry();
    let ok = registry
        .spawn(JobRequest::default(), |job: JobHandle| async move {
            job.set_progress(3, 10, "working");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            Ok::<_, std::io::Error>(
                json!({"concreteType": "org.example.ExportResponse", "rows": 10}),
            )
        })
        .await
        .unwrap();
    let bad = registry
        .spawn(JobRequest::default(), |_job| async {
            Err::<(), _>(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "table syn9 is gone",
            ))
        })
        .await
        .unwrap();

    let done = object(&registry.wait(&ok).await.unwrap());
    assert_eq!(done["jobState"], json!("COMPLETE"));
    assert_eq!(
        done["progressCurrent"],
        json!(10),
        "current = total on completion"
    );
    assert_eq!(done["progressTotal"], json!(10));
    assert_eq!(done["progressMessage"], json!("Complete"));
    assert_eq!(
        done["responseBody"],
        json!({"concreteType": "org.example.ExportResponse", "rows": 10})
    );
    assert_eq!(done["runtimeMS"], json!(250));
    for absent in [
        "errorMessage",
        "errorDetails",
        "exception",
        "requestBody",
        "startedByUserId",
        "callersContext",
    ] {
        assert!(!done.contains_key(absent), "{absent} must be omitted");
    }

    let failed = object(&registry.wait(&bad).await.unwrap());
    assert_eq!(failed["jobState"], json!("FAILED"));
    assert_eq!(failed["errorMessage"], json!("table syn9 is gone"));
    assert_eq!(failed["errorDetails"], json!("table syn9 is gone"));
    assert_eq!(failed["exception"], json!("std::io::error::Error"));
    for absent in [
        "responseBody",
        "progressCurrent",
        "progressTotal",
        "progressMessage",
    ] {
        assert!(!failed.contains_key(absent), "{absent} must be omitted");
    }
}

#[tokio::test]
async fn a_status_round_trips_through_json() {
    let registry = registry();
    let id = registry
        .spawn(
            JobRequest::new(json!({"concreteType": "a.B"})).started_by(1),
            |job: JobHandle| async move {
                job.set_progress(1, 2, "héllo ✓");
                Ok::<_, std::io::Error>(json!({"concreteType": "a.C", "x": [1, 2, 3]}))
            },
        )
        .await
        .unwrap();
    let status = registry.wait(&id).await.unwrap();
    let text = serde_json::to_string(&status).unwrap();
    let parsed: AsynchronousJobStatus = serde_json::from_str(&text).unwrap();
    assert_eq!(
        parsed, status,
        "times are kept to the millisecond, as on the wire"
    );
}

const SENT_BY_SYNAPSE: &str = r#"{
    "concreteType": "org.sagebionetworks.repo.model.asynch.AsynchronousJobStatus",
    "jobState": "COMPLETE",
    "jobCanceling": false,
    "requestBody": {"concreteType": "org.sagebionetworks.repo.model.table.QueryBundleRequest", "entityId": "syn123", "partMask": 1},
    "responseBody": {"concreteType": "org.sagebionetworks.repo.model.table.QueryResultBundle", "queryCount": 42},
    "etag": "0e8ba8d4-5a9b-4e4c-9e57-4ec1f1a0b8f2",
    "jobId": "9606497",
    "startedByUserId": 3350396,
    "startedOn": "2024-03-05T17:04:09.417Z",
    "changedOn": "2024-03-05T17:04:11.860Z",
    "progressMessage": "Complete",
    "progressCurrent": 100,
    "progressTotal": 100,
    "exception": null,
    "errorMessage": null,
    "errorDetails": null,
    "runtimeMS": 2443,
    "callersContext": null
}"#;

#[test]
fn parses_a_status_sent_by_synapse() {
    let s: AsynchronousJobStatus = serde_json::from_str(SENT_BY_SYNAPSE).unwrap();
    assert_eq!(s.job_id, JobId::from_u64(9_606_497));
    assert_eq!(s.job_state, AsynchJobState::Complete);
    assert!(!s.job_canceling);
    assert_eq!(s.etag.to_string(), "0e8ba8d4-5a9b-4e4c-9e57-4ec1f1a0b8f2");
    assert_eq!(s.etag, "0e8ba8d4-5a9b-4e4c-9e57-4ec1f1a0b8f2");
    assert_eq!(s.started_by_user_id, Some(3_350_396));
    assert_eq!(
        s.started_on
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "2024-03-05T17:04:09.417Z"
    );
    assert_eq!(
        s.changed_on
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "2024-03-05T17:04:11.860Z"
    );
    assert_eq!(s.progress_message.as_deref(), Some("Complete"));
    assert_eq!(
        (s.progress_current, s.progress_total),
        (Some(100), Some(100))
    );
    assert_eq!(
        (
            s.error_message.clone(),
            s.error_details.clone(),
            s.exception.clone()
        ),
        (None, None, None)
    );
    assert_eq!(s.runtime_ms, 2443);
    assert_eq!(
        s.request_body.as_deref().unwrap()["entityId"],
        json!("syn123")
    );
    assert_eq!(s.response_body.as_deref().unwrap()["queryCount"], json!(42));

    // Written back, it is Synapse's document less what we never emit (nulls, callersContext,
    // the status's own concreteType).
    let back = serde_json::to_value(&s).unwrap();
    let mut expected: Value = serde_json::from_str(SENT_BY_SYNAPSE).unwrap();
    let map = expected.as_object_mut().unwrap();
    map.retain(|k, v| !v.is_null() && k != "concreteType");
    assert_eq!(back, expected);
}

#[test]
fn parses_a_failed_status_with_a_float_runtime_and_offset_times() {
    let text = r#"{"jobId":"5","jobState":"FAILED","etag":"x","startedOn":"2024-03-05T18:04:09.417+01:00",
        "changedOn":"2024-03-05T17:04:10Z","runtimeMS":583.0,"errorMessage":"boom",
        "errorDetails":"java.lang.IllegalArgumentException: boom\n\tat ...","exception":"java.lang.IllegalArgumentException"}"#;
    let s: AsynchronousJobStatus = serde_json::from_str(text).unwrap();
    assert_eq!(s.job_state, AsynchJobState::Failed);
    assert_eq!(s.runtime_ms, 583);
    assert!(!s.job_canceling, "absent means false");
    assert_eq!(
        s.started_on
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "2024-03-05T17:04:09.417Z"
    );
    assert_eq!(
        s.exception.as_deref(),
        Some("java.lang.IllegalArgumentException")
    );
}

#[test]
fn bad_statuses_are_errors_not_panics() {
    let base: Value = serde_json::from_str(SENT_BY_SYNAPSE).unwrap();
    let with = |key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        serde_json::from_value::<AsynchronousJobStatus>(v)
    };
    let without = |key: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(key);
        serde_json::from_value::<AsynchronousJobStatus>(v)
    };
    let err = with("jobState", json!("CANCELED")).unwrap_err().to_string();
    assert!(err.contains("unknown variant `CANCELED`"), "{err}");
    assert!(
        with("jobState", json!("processing")).is_err(),
        "states are upper case"
    );
    assert!(with("jobId", json!("12a")).is_err());
    assert!(with("jobId", json!("-12")).is_err());
    assert!(with("jobId", json!("99999999999999999999999")).is_err());
    assert!(with("startedOn", json!("yesterday")).is_err());
    assert!(with("runtimeMS", json!(-1)).is_err());
    assert!(with("progressCurrent", json!("ten")).is_err());
    for required in ["jobId", "jobState", "etag", "startedOn", "changedOn"] {
        assert!(without(required).is_err(), "{required} is required");
    }
    assert_eq!(
        with("jobId", json!(77)).unwrap().job_id,
        JobId::from_u64(77),
        "an integer id is accepted"
    );
    assert!(serde_json::from_str::<AsynchronousJobStatus>("[1,2,3]").is_err());
    assert!(serde_json::from_str::<AsynchronousJobStatus>("{").is_err());
}

#[test]
fn job_ids_parse_only_ascii_digits() {
    assert_eq!(
        "9606497".parse::<JobId>().unwrap(),
        JobId::from_u64(9_606_497)
    );
    assert_eq!("0".parse::<JobId>().unwrap().as_u64(), 0);
    assert_eq!("007".parse::<JobId>().unwrap().as_u64(), 7);
    assert_eq!(
        "18446744073709551615".parse::<JobId>().unwrap().as_u64(),
        u64::MAX
    );
    for bad in [
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1.0",
        "1e3",
        "0x10",
        "١٢٣",
        "１２",
        "18446744073709551616",
        "abc",
    ] {
        assert_eq!(
            bad.parse::<JobId>(),
            Err(asyncjobs::Error::MalformedId),
            "{bad:?}"
        );
    }
    assert_eq!(
        serde_json::to_value(JobId::from_u64(42)).unwrap(),
        json!("42")
    );
}

#[test]
fn etags_compare_as_their_strings() {
    let parse = |s: &str| s.parse::<Etag>().unwrap();
    assert_eq!(parse("17"), parse("17"));
    assert_ne!(parse("17"), parse("017"));
    assert_eq!(parse("017").to_string(), "017");
    assert_eq!(parse(""), "");
    assert_eq!(parse("17"), "17");
    assert_ne!(parse("17"), "18");
    assert_eq!(serde_json::to_value(parse("17")).unwrap(), json!("17"));
    assert_eq!(serde_json::from_value::<Etag>(json!("abc")).unwrap(), "abc");
}
