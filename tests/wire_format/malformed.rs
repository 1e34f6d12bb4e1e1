//! Hostile and malformed status JSON, id text and dates, case by case: each test is a row of the
//! table in `main.rs`.

use std::time::Instant;

use asyncjobs::{AsynchJobState, AsynchronousJobStatus, Error, JobId};
use serde_json::{json, Value};

use crate::common::{NO_BLOWUP, TEN_MB};

/// A status as Synapse sends it, with `changes` applied (`null` removes a field).
fn status_json(changes: Value) -> Value {
    let mut status = json!({
        "jobId": "9606497",
        "jobState": "PROCESSING",
        "jobCanceling": false,
        "etag": "0e8ba8d4-5a9b-4e4c-9e57-4ec1f1a0b8f2",
        "startedOn": "2024-03-05T17:04:09.417Z",
        "changedOn": "2024-03-05T17:04:10.002Z",
        "startedByUserId": 3350396,
        "progressCurrent": 5,
        "progressTotal": 100,
        "progressMessage": "Querying...",
        "runtimeMS": 585
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            status.as_object_mut().unwrap().remove(key);
        } else {
            status[key] = value.clone();
        }
    }
    status
}

fn parse(value: &Value) -> Result<AsynchronousJobStatus, String> {
    // Both ways in: from a parsed value, and from text.
    let from_value = serde_json::from_value::<AsynchronousJobStatus>(value.clone());
    let from_text = serde_json::from_str::<AsynchronousJobStatus>(&value.to_string());
    assert_eq!(
        from_value.is_ok(),
        from_text.is_ok(),
        "{value}: {from_value:?} / {from_text:?}"
    );
    from_value.map_err(|e| e.to_string())
}

fn parse_error(value: &Value) -> String {
    match parse(value) {
        Ok(s) => panic!("{value} parsed: {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_id_text_is_refused() {
    let ten_mb_of_digits = "1".repeat(TEN_MB);
    let malformed: &[&str] = &[
        "",
        " ",
        " 1",
        "1 ",
        "+1",
        "-1",
        "-0",
        "1.0",
        "1.",
        "1e3",
        "0x10",
        "0b1",
        "1_000",
        "1,000",
        "12a",
        "abc",
        "\u{0}",
        "1\u{0}",
        "1\n",
        "\t1",
        "١٢٣",                   // Arabic-Indic digits
        "１２",                  // full-width digits
        "²",                     // a superscript digit
        "000000000000000000001", // 21 digits, though its value is 1
        "18446744073709551616",  // u64::MAX + 1
        "99999999999999999999",  // 20 digits, over u64::MAX
        "99999999999999999999999",
        &ten_mb_of_digits,
    ];
    let started = Instant::now();
    for text in malformed {
        assert_eq!(
            text.parse::<JobId>(),
            Err(Error::MalformedId),
            "{:?}",
            text.chars().take(30).collect::<String>()
        );
        assert!(
            serde_json::from_value::<JobId>(json!(text)).is_err(),
            "as JSON"
        );
        assert!(parse(&status_json(json!({ "jobId": text }))).is_err());
    }
    assert!(
        started.elapsed() < NO_BLOWUP,
        "refused without reading it all"
    );
    for (text, value) in [
        ("0", 0),
        ("007", 7),
        ("00000000000000000001", 1), // 20 digits
        ("18446744073709551615", u64::MAX),
    ] {
        assert_eq!(text.parse::<JobId>(), Ok(JobId::from_u64(value)), "{text}");
    }
    assert_eq!(
        Error::MalformedId.to_string(),
        "malformed job id: expected 1 to 20 ascii digits"
    );
    // In JSON, an id is a string of digits or a non-negative integer, nothing else.
    assert_eq!(
        serde_json::from_value::<JobId>(json!(77)).unwrap(),
        JobId::from_u64(77)
    );
    for not_an_id in [
        json!(-1),
        json!(1.0),
        json!(1e30),
        json!(true),
        json!(null),
        json!([1]),
    ] {
        assert!(
            serde_json::from_value::<JobId>(not_an_id.clone()).is_err(),
            "{not_an_id}"
        );
    }
}

#[test]
fn deeply_nested_status_json_is_refused() {
    let depth = 100_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let with = |field: &str| {
        let mut text = status_json(json!({})).to_string();
        text.pop(); // the closing brace
        format!("{text},\"{field}\":{deep}}}")
    };
    let err = serde_json::from_str::<AsynchronousJobStatus>(&with("requestBody")).unwrap_err();
    assert!(
        err.to_string().starts_with("recursion limit exceeded"),
        "{err}"
    );
    let err = serde_json::from_str::<AsynchronousJobStatus>(&with("responseBody")).unwrap_err();
    assert!(
        err.to_string().starts_with("recursion limit exceeded"),
        "{err}"
    );
    let ignored = serde_json::from_str::<AsynchronousJobStatus>(&with("callersContext"));
    assert_eq!(ignored.unwrap().job_id, JobId::from_u64(9_606_497));
    // Nesting within serde_json's limit is fine.
    let mut body = json!(1);
    for _ in 0..100 {
        body = json!([body]);
    }
    assert!(parse(&status_json(json!({ "requestBody": body }))).is_ok());
}

#[test]
fn huge_numbers_in_status_json_are_refused() {
    let refused = [
        ("runtimeMS", r#"1e400"#, "number out of range"),
        (
            "runtimeMS",
            "18446744073709551616",
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            "18446744073709551615.0",
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            "-1",
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            "-0.5",
            "expected a non-negative number of milliseconds",
        ),
        ("progressCurrent", "18446744073709551616", "expected u64"),
        ("progressTotal", "-1", "expected u64"),
        ("startedByUserId", "-3350396", "expected u64"),
        ("jobId", "18446744073709551616", "expected a job id"),
        ("jobId", "-1", "expected a job id"),
    ];
    for (field, number, why) in refused {
        let mut text = status_json(json!({ field: null })).to_string();
        text.pop();
        let text = format!("{text},\"{field}\":{number}}}");
        let err = serde_json::from_str::<AsynchronousJobStatus>(&text).unwrap_err();
        assert!(err.to_string().contains(why), "{field} = {number}: {err}");
    }
    for (number, ms) in [
        (json!(1e19), 10_000_000_000_000_000_000),
        (json!(u64::MAX), u64::MAX),
        (json!(1.5), 2),
        (json!(2.5), 3),
        (json!(-0.0), 0),
        (json!(0.4), 0),
    ] {
        let s = parse(&status_json(json!({ "runtimeMS": number }))).unwrap();
        assert_eq!(s.runtime_ms, ms, "{number}");
    }
}

#[test]
fn wrong_types_in_status_json_are_refused() {
    let refused = [
        ("jobId", json!(true), "expected a job id"),
        ("jobId", json!(1.5), "expected a job id"),
        ("jobState", json!(1), "expected"),
        (
            "jobState",
            json!("processing"),
            "unknown variant `processing`",
        ),
        ("jobState", json!("CANCELED"), "unknown variant `CANCELED`"),
        ("jobState", json!(null), ""),
        ("jobCanceling", json!("true"), "expected a boolean"),
        ("jobCanceling", json!(1), "expected a boolean"),
        ("etag", json!(5), "expected a string"),
        ("etag", json!(null), ""),
        ("startedOn", json!(1709658249417u64), "expected a string"),
        ("changedOn", json!(null), ""),
        ("startedByUserId", json!("3350396"), "expected u64"),
        ("progressCurrent", json!("5"), "expected u64"),
        ("progressCurrent", json!(5.0), "expected u64"),
        ("progressMessage", json!(5), "expected a string"),
        ("progressMessage", json!(["a"]), "expected a string"),
        ("errorMessage", json!({}), "expected a string"),
        ("exception", json!(false), "expected a string"),
        (
            "runtimeMS",
            json!("585"),
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            json!(true),
            "expected a non-negative number of milliseconds",
        ),
        (
            "runtimeMS",
            json!([585]),
            "expected a non-negative number of milliseconds",
        ),
    ];
    for (field, value, why) in refused {
        let mut status = status_json(json!({}));
        status[field] = value.clone();
        let err = parse_error(&status);
        assert!(err.contains(why), "{field} = {value}: {err}");
    }
    // Null (or absent) where a value is optional reads as absent.
    let s = parse(&status_json(json!({}))).unwrap();
    let mut nulls = status_json(json!({}));
    for field in [
        "jobCanceling",
        "startedByUserId",
        "progressCurrent",
        "progressTotal",
        "progressMessage",
        "runtimeMS",
        "requestBody",
        "errorMessage",
    ] {
        nulls[field] = Value::Null;
    }
    let n = parse(&nulls).unwrap();
    assert_eq!(
        (
            n.job_canceling,
            n.started_by_user_id,
            n.progress_current,
            n.runtime_ms
        ),
        (false, None, None, 0)
    );
    assert_eq!((n.progress_message, n.request_body), (None, None));
    assert_eq!(s.job_state, AsynchJobState::Processing);
}

#[test]
fn invalid_dates_in_status_json_are_refused() {
    for date in [
        "2024-02-30T17:04:09.417Z",
        "2023-02-29T00:00:00Z",
        "2024-03-05T24:00:01Z",
        "2024-03-05T17:60:09Z",
        "2024-13-05T17:04:09Z",
        "2024-03-05T17:04:09.417",
        "2024-03-05",
        "17:04:09Z",
        "2024-03-05T17:04:09+24:00",
        "2024-03-05T17:04:09 UTC",
        "Tue, 05 Mar 2024 17:04:09 GMT",
        "+12024-03-05T17:04:09Z",
        "-0001-03-05T17:04:09Z",
        "yesterday",
        "",
    ] {
        for field in ["startedOn", "changedOn"] {
            let err = parse_error(&status_json(json!({ field: date })));
            assert!(
                err.contains("expected an RFC 3339 date-time"),
                "{date}: {err}"
            );
        }
    }
    for (date, utc) in [
        ("2024-03-05 17:04:09.417Z", "2024-03-05T17:04:09.417Z"),
        ("2024-03-05t17:04:09.417z", "2024-03-05T17:04:09.417Z"),
        ("2024-03-05T18:04:09.417+01:00", "2024-03-05T17:04:09.417Z"),
        ("2024-03-05T17:04:09.417-00:00", "2024-03-05T17:04:09.417Z"),
        (
            "2024-03-05T17:04:09.1234567891234Z",
            "2024-03-05T17:04:09.123Z",
        ),
        ("2024-03-05T17:04:09Z", "2024-03-05T17:04:09.000Z"),
        ("2016-12-31T23:59:60.000Z", "2016-12-31T23:59:60.000Z"),
        ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ] {
        let s = parse(&status_json(json!({ "startedOn": date }))).unwrap();
        assert_eq!(
            serde_json::to_value(&s).unwrap()["startedOn"],
            json!(utc),
            "{date}"
        );
    }
}

#[test]
fn ten_mb_strings_in_status_json() {
    let huge = "x".repeat(TEN_MB);
    // Parsed from text only: serde_json in a debug build reads 10 MB in a good fraction of a
    // second, and from text is the way such a status would arrive.
    let with = |field: &str, value: &str| {
        let mut text = status_json(json!({ field: null })).to_string();
        text.pop();
        serde_json::from_str::<AsynchronousJobStatus>(&format!("{text},\"{field}\":\"{value}\"}}"))
    };
    let started = Instant::now();
    let s = with("progressMessage", &huge).unwrap();
    assert_eq!(
        s.progress_message.as_deref().map(str::len),
        Some(TEN_MB),
        "kept as given"
    );
    let s = with("errorDetails", &huge).unwrap();
    assert_eq!(
        s.error_details.as_deref().map(str::len),
        Some(TEN_MB),
        "kept as given"
    );
    let s = with("etag", &huge).unwrap();
    assert_eq!(s.etag.to_string().len(), TEN_MB, "kept as given");
    assert!(with("jobId", &"1".repeat(TEN_MB)).is_err());
    assert!(with("startedOn", &huge).is_err());
    assert!(with("jobState", &huge).is_err());
    assert!(started.elapsed() < NO_BLOWUP, "{:?}", started.elapsed());
}

#[test]
fn json_that_is_not_a_status_is_refused() {
    for text in [
        "",
        "null",
        "[]",
        "[1,2,3]",
        "\"PROCESSING\"",
        "42",
        "{",
        r#"{"jobId":"1""#,
        "{}",
        r#"{"jobId":"1","jobId":"2","jobState":"PROCESSING","etag":"1","startedOn":"2024-03-05T17:04:09Z","changedOn":"2024-03-05T17:04:09Z"}"#,
    ] {
        assert!(
            serde_json::from_str::<AsynchronousJobStatus>(text).is_err(),
            "{text}"
        );
    }
    for required in ["jobId", "jobState", "etag", "startedOn", "changedOn"] {
        let err = parse_error(&status_json(json!({ required: null })));
        assert_eq!(err, format!("missing field `{required}`"));
    }
}

/// Found by `parsing_arbitrary_json_never_panics`: a time that an offset moved outside years
/// 0000–9999 in UTC parsed, but the status then wrote it as `+10000-01-01T…` or `-0001-…`, which
/// is not RFC 3339 and which the crate itself refused to parse back. Now refused when parsed.
#[test]
fn a_parsed_status_serializes_to_json_that_parses_back() {
    for date in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59"] {
        for field in ["startedOn", "changedOn"] {
            let err = parse_error(&status_json(json!({ field: date })));
            assert_eq!(
                err, "date-time out of range (years 0000 to 9999 in UTC)",
                "{date}"
            );
        }
    }
    for date in [
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59+23:59",
        "0000-01-01T00:00:00Z",
    ] {
        let written =
            serde_json::to_value(parse(&status_json(json!({ "startedOn": date }))).unwrap())
                .unwrap();
        assert!(
            parse(&written).is_ok(),
            "{date} was written as {}",
            written["startedOn"]
        );
    }
}
