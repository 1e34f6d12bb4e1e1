//! Generated JSON and text of every shape, as a status, a job id or an etag: parsing never
//! panics, ids parse exactly when they should, and a parsed status writes JSON that parses back.

use asyncjobs::{AsynchJobState, AsynchronousJobStatus, Error, Etag, JobId};
use proptest::prelude::*;
use serde_json::{json, Value};

const FIELDS: &[&str] = &[
    "jobId",
    "jobState",
    "jobCanceling",
    "etag",
    "startedOn",
    "changedOn",
    "startedByUserId",
    "progressCurrent",
    "progressTotal",
    "progressMessage",
    "errorMessage",
    "errorDetails",
    "exception",
    "requestBody",
    "responseBody",
    "runtimeMS",
    "callersContext",
    "concreteType",
];

/// Strings that a field might accept, and near misses.
fn plausible_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "PROCESSING",
            "FAILED",
            "COMPLETE",
            "CANCELED",
            "2024-03-05T17:04:09.417Z",
            "2024-03-05T17:04:09+23:59",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2016-12-31T23:59:60Z",
            "9606497",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "",
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,22}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
        any::<String>(),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        prop::sample::select(vec![0.0, -0.0, 0.5, 1.5, 1e19, 1.8446744073709552e19, -1.0])
            .prop_map(Value::from),
        plausible_string().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// An object with each status field present or not, each with a plausible or an arbitrary
/// value: most of these get deep into the field parsers.
fn status_shaped() -> impl Strategy<Value = Value> {
    let field_value = prop_oneof![3 => json_leaf(), 1 => json_value()];
    prop::collection::vec(
        (
            prop::sample::select(FIELDS.to_vec()),
            prop::option::weighted(0.8, field_value),
        ),
        FIELDS.len(),
    )
    .prop_map(|fields| {
        Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn parsing_arbitrary_json_never_panics(
        value in prop_oneof![json_value(), status_shaped()],
    ) {
        let text = value.to_string();
        let status = serde_json::from_value::<AsynchronousJobStatus>(value.clone());
        let from_text = serde_json::from_str::<AsynchronousJobStatus>(&text);
        prop_assert_eq!(status.is_ok(), from_text.is_ok());
        let _ = serde_json::from_value::<JobId>(value.clone());
        let _ = serde_json::from_str::<JobId>(&text);
        let _ = serde_json::from_value::<Etag>(value.clone());
        let _ = serde_json::from_str::<Etag>(&text);
        let _ = serde_json::from_value::<AsynchJobState>(value.clone());
        if let Ok(status) = status {
            // Written back, it parses again, and is then stable.
            let written = serde_json::to_value(&status).unwrap();
            let again: AsynchronousJobStatus = serde_json::from_value(written.clone()).unwrap();
            prop_assert_eq!(serde_json::to_value(&again).unwrap(), written);
            prop_assert_eq!(again.job_id, status.job_id);
            prop_assert_eq!(&again.etag, &status.etag);
        }
    }

    #[test]
    fn any_text_as_an_id_or_etag(text in prop_oneof![any::<String>(), "[0-9]{0,22}", "[+-]?[0-9 ]{1,4}"]) {
        let is_id = !text.is_empty()
            && text.len() <= 20
            && text.bytes().all(|b| b.is_ascii_digit())
            && text.parse::<u64>().is_ok();
        match text.parse::<JobId>() {
            Ok(id) => {
                prop_assert!(is_id, "{:?} parsed", text);
                prop_assert_eq!(id.as_u64(), text.parse::<u64>().unwrap());
                prop_assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
            }
            Err(e) => {
                prop_assert!(!is_id, "{:?} refused", text);
                prop_assert_eq!(e, Error::MalformedId);
            }
        }
        let etag: Etag = text.parse().unwrap();
        prop_assert_eq!(etag.to_string(), text.clone());
        prop_assert!(etag == *text.as_str());
        let json = serde_json::to_value(&etag).unwrap();
        prop_assert_eq!(&json, &json!(text));
        prop_assert_eq!(serde_json::from_value::<Etag>(json).unwrap(), etag);
    }
}
