//! `GET /asynchronous/job/dashboard`: one self-contained HTML page that shows the caller's jobs
//! live, and the headers it is served with.
//!
//! The page (`dashboard.html`, compiled in) holds no data: its script lists the caller's jobs and
//! follows the event stream with the credentials the browser has (a bearer token it is given, or
//! whatever a proxy or a cookie adds), so serving it needs no user. Nothing on it loads from
//! elsewhere, which lets its `Content-Security-Policy` allow nothing but its own inline script and
//! style (by their SHA-256, kept here as constants that a test checks against the page) and requests to its own origin.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The page, as served.
const PAGE: &str = include_str!("dashboard.html");

/// The headers of the page: built once, when the router is.
#[derive(Clone, Debug)]
pub(super) struct Dashboard {
    policy: HeaderValue,
}

impl Dashboard {
    pub(super) fn new() -> Self {
        Dashboard { policy: policy() }
    }

    /// The answer to `GET` (and `HEAD`) of the page.
    pub(super) fn page(&self) -> Response {
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CONTENT_SECURITY_POLICY, self.policy.clone()),
                // The page changes with the crate's version: always ask whether it did.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
                // For browsers without CSP's frame-ancestors: a framed page's cancel buttons
                // could be clicked by a user who thinks they click something else.
                (
                    HeaderName::from_static("x-frame-options"),
                    HeaderValue::from_static("DENY"),
                ),
            ],
            PAGE,
        )
            .into_response()
    }
}

/// SHA-256 of the page's inline `<script>` and `<style>` texts, base64: what the browser checks
/// them against. Constants, so that serving the page needs no hashing (and the crate no SHA-256);
/// a unit test recomputes them from the page and says the new values when the page changed.
const SCRIPT_SHA256: &str = "PpfYKSQhppGo8cIUsyrl0NN+zir4jT+IG4Xg7GMlroY=";
const STYLE_SHA256: &str = "crpmUszzaF3RhMDSWm0V8xhOVifLT3p6fzwVDlTTKno=";

/// The page's `Content-Security-Policy`: its inline `<script>` and `<style>` by hash (not
/// `'unsafe-inline'`, so that markup slipped into the page could run nothing), requests to its
/// own origin only, the empty `data:` favicon, no frames around it, no forms sent anywhere.
fn policy() -> HeaderValue {
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{SCRIPT_SHA256}'; style-src 'sha256-{STYLE_SHA256}'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    // Hashes are base64 and the rest is ASCII: always a valid header value.
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

/// The text between `open` (e.g. `<script>`) and the matching closing tag: what a browser hashes
/// to check an inline element against the policy.
#[cfg(test)]
fn inline<'a>(page: &'a str, open: &str) -> Option<&'a str> {
    let close = format!("</{}", &open[1..]);
    let start = page.find(open)? + open.len();
    let end = start + page[start..].find(&close)?;
    Some(&page[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::Engine as _;
    use sha2::Digest as _;

    #[test]
    fn the_policy_holds_the_hashes_of_the_pages_inline_script_and_style() {
        let hash = |text: &str| {
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
        };
        let script = inline(PAGE, "<script>").expect("the page has an inline script");
        let style = inline(PAGE, "<style>").expect("the page has an inline style");
        assert_eq!(
            SCRIPT_SHA256,
            hash(script),
            "the page's script changed: set SCRIPT_SHA256 to the new hash"
        );
        assert_eq!(
            STYLE_SHA256,
            hash(style),
            "the page's style changed: set STYLE_SHA256 to the new hash"
        );
        let policy = policy();
        let policy = policy.to_str().unwrap();
        assert!(
            policy.contains(&format!("script-src 'sha256-{SCRIPT_SHA256}';")),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src 'sha256-{STYLE_SHA256}';")),
            "{policy}"
        );
    }

    #[test]
    fn the_policy_names_the_pages_inline_script_and_style() {
        let script = inline(PAGE, "<script>").expect("the page has an inline script");
        let style = inline(PAGE, "<style>").expect("the page has an inline style");
        assert!(script.contains("use strict") && style.contains(":root"));
        let policy = policy();
        let policy = policy.to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(!policy.contains("'none'; style-src 'none'") && !policy.contains("unsafe"));
        // One of each: a second element would be refused by the browser.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert_eq!(inline("<p>", "<script>"), None);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http:", "https:", "\"//", "'//", "src=", "@import", "url("] {
            let found = PAGE
                .match_indices(outside)
                .map(|(at, _)| &PAGE[at.saturating_sub(30)..(at + 30).min(PAGE.len())])
                .collect::<Vec<_>>();
            assert!(found.is_empty(), "{outside}: {found:?}");
        }
    }
}
