//! [`BearerToken`]: the user from `Authorization: Bearer <token>`, as Synapse's clients send it.

use std::fmt;
use std::future::Future;

use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;

use super::identify::IdentifyUser;
use super::rejection::Rejection;

/// Reads `Authorization: Bearer <token>` (how Synapse's clients authenticate) and maps the token
/// to a user with an async function of the application's: a lookup in a token table, a JWT's
/// signature and expiry check, a call to an identity service.
///
/// The function gets the token and answers `Ok(Some(user))` for a token it knows,
/// `Ok(None)` for one it does not, or `Err(rejection)` when it cannot tell (e.g. a 503 when the
/// token table cannot be reached: a 401 would tell the client its token is bad). It runs for
/// every request, each poll included: cache in it if a lookup is costly.
///
/// | request | answer |
/// |---|---|
/// | no `Authorization` header | 401 `{"reason": "missing bearer token"}`, `WWW-Authenticate: Bearer` |
/// | another scheme (`Basic …`), or an empty or malformed token | 401, `WWW-Authenticate: Bearer` |
/// | a token the function does not know (`Ok(None)`) | 401 `{"reason": "unknown or expired bearer token"}`, `WWW-Authenticate: Bearer error="invalid_token"` |
/// | `Authorization` sent more than once | 400: the user is ambiguous (see [`IdentifyUser`]) |
///
/// The scheme is matched without regard to case (`bearer` works); a token is the RFC 6750
/// characters (`A-Z a-z 0-9 - . _ ~ + /`, then `=` padding), at most 4096 bytes, and is never
/// part of an answer. Tokens travel only in the header, never in a URL (URLs end up in logs):
/// a browser's `EventSource` cannot set headers, so a web page follows
/// `/asynchronous/job/events` with `fetch` and a stream reader, or through a cookie-based
/// [`IdentifyUser`] of its own.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use asyncjobs::http::{AsyncJobApi, BearerToken};
/// use asyncjobs::JobRegistry;
///
/// let tokens: Arc<HashMap<String, u64>> = Arc::new(HashMap::from([("s3cr3t-alice".to_owned(), 1)]));
/// let auth = BearerToken::new(move |token: String| {
///     let tokens = tokens.clone();
///     async move { Ok(tokens.get(&token).copied()) }
/// });
/// let api = AsyncJobApi::new(JobRegistry::new(), auth);
/// # drop(api);
/// ```
#[derive(Clone)]
pub struct BearerToken<F> {
    lookup: F,
}

impl<F, Fut> BearerToken<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<u64>, Rejection>> + Send + 'static,
{
    /// Maps each request's token to its user with `lookup`.
    pub fn new(lookup: F) -> Self {
        BearerToken { lookup }
    }
}

/// The longest token looked up; a longer one is refused without calling the function.
const MAX_TOKEN_BYTES: usize = 4096;

impl<F, Fut> IdentifyUser for BearerToken<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<u64>, Rejection>> + Send + 'static,
{
    fn identify(&self, request: &Parts) -> impl Future<Output = Result<u64, Rejection>> + Send {
        let token = token(request);
        async move {
            match (self.lookup)(token?).await? {
                Some(user) => Ok(user),
                None => Err(Rejection::unauthorized("unknown or expired bearer token")
                    .with_header(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    )),
            }
        }
    }
}

/// The request's bearer token, or the refusal.
fn token(request: &Parts) -> Result<String, Rejection> {
    let challenge = |reason: &str| {
        Rejection::unauthorized(reason)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    };
    let mut values = request.headers.get_all(header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| challenge("missing bearer token"))?;
    if values.next().is_some() {
        return Err(Rejection::bad_request(
            "authorization header appeared more than once: the user is ambiguous",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| challenge("authorization header is not text"))?;
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(challenge("authorization is not a bearer token"));
    }
    let token = token.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(challenge("malformed bearer token"));
    }
    Ok(token.to_owned())
}

/// RFC 6750's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

impl<F> fmt::Debug for BearerToken<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Request, StatusCode};

    fn parts(authorization: &[&str]) -> Parts {
        let mut request = Request::builder();
        for value in authorization {
            request = request.header(header::AUTHORIZATION, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn tokens_are_read_as_rfc_6750_writes_them() {
        assert_eq!(
            token(&parts(&["Bearer abc.DEF-1_~+/=="])).unwrap(),
            "abc.DEF-1_~+/=="
        );
        assert_eq!(token(&parts(&["bearer abc"])).unwrap(), "abc");
        assert_eq!(token(&parts(&["BEARER   abc"])).unwrap(), "abc");
        for bad in [
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer ===",
            "Bearer a=b",
            "Bearerabc",
            "abc",
        ] {
            let refused = token(&parts(&[bad])).unwrap_err();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{bad}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            token(&parts(&[&long])).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            token(&parts(&[])).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            token(&parts(&["Bearer a", "Bearer b"]))
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
    }
}
