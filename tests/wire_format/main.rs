//! The wire format: a status's JSON is Synapse's `AsynchronousJobStatus`, field by field
//! ([`synapse`]), and no JSON or text, however hostile, makes parsing a status, a job id or an etag
//! panic ([`malformed`], [`arbitrary`]). Bad input to the registry's API is in
//! `tests/bad_input.rs`.
//!
//! Every bad input to the wire format, and what it gets:
//!
//! | Bad input | What it gets | Test |
//! |---|---|---|
//! | Malformed id text: empty, signs, spaces, decimals, exponents, hex, `_`, non-ASCII digits, control characters, over 20 digits, over `u64::MAX`, 10 MB of digits | `Error::MalformedId` from `parse::<JobId>()`, at once; a serde error for such a `jobId` in JSON. 1 to 20 ASCII digits that fit in a `u64` parse, leading zeros included (`"007"` is 7) | [`malformed::malformed_id_text_is_refused`] |
//! | Status JSON nested 100,000 deep | A serde error (`recursion limit exceeded`), never a stack overflow; nesting in an ignored field (`callersContext`) is skipped | [`malformed::deeply_nested_status_json_is_refused`] |
//! | Status JSON with huge numbers (`1e400`, 2^64, negative) | A serde error; `runtimeMS` up to below 2^64 as an integer or float is taken (floats rounded) | [`malformed::huge_numbers_in_status_json_are_refused`] |
//! | Status JSON with wrong types (a number for a string, a string for a number or a bool, a lower-case state, `CANCELED`) | A serde error naming the type or variant expected; `null` for an optional field, `jobCanceling` or `runtimeMS` reads as absent | [`malformed::wrong_types_in_status_json_are_refused`] |
//! | Status JSON with invalid dates (Feb 30, no time zone, a date alone, an offset of 24 h, epoch numbers) | A serde error `expected an RFC 3339 date-time`; RFC 3339's own variants (space for `T`, lower case, offsets, leap second, any fraction) parse, converted to UTC | [`malformed::invalid_dates_in_status_json_are_refused`] |
//! | Status JSON with a time that an offset moves outside years 0000–9999 in UTC (`9999-12-31T23:59:59-23:59`) | A serde error `date-time out of range (years 0000 to 9999 in UTC)`: such a time could not be written back as RFC 3339 | [`malformed::a_parsed_status_serializes_to_json_that_parses_back`] |
//! | Status JSON with 10 MB strings | Kept as given in a message, details or etag (the caps apply to what the registry records, not to what it parses); refused for an id, a state or a date | [`malformed::ten_mb_strings_in_status_json`] |
//! | Not a status: `[]`, `null`, a string, truncated text, a duplicate field, a missing required field | A serde error | [`malformed::json_that_is_not_a_status_is_refused`] |
//! | Any JSON value at all (generated, nested, status-shaped or not) as `AsynchronousJobStatus`, `JobId` or `Etag`; any text as a `JobId` or `Etag` | An `Ok` or an `Err`, never a panic; `JobId` text parses exactly when it is 1 to 20 ASCII digits that fit; every text is an etag that prints as itself; a parsed status serializes to JSON that parses to the same status | [`arbitrary::parsing_arbitrary_json_never_panics`], [`arbitrary::any_text_as_an_id_or_etag`] |

#[path = "../common/mod.rs"]
mod common;

mod arbitrary;
mod malformed;
mod synapse;
