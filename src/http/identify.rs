//! Who is asking: [`IdentifyUser`], and [`UserHeader`], which reads the user from a header.

use std::future::Future;
use std::pin::Pin;

use axum::http::header::HeaderName;
use axum::http::request::Parts;

use super::rejection::Rejection;

/// Tells which user a request comes from: the API acts for that user
/// ([`JobRegistry::as_user`](crate::JobRegistry::as_user)).
///
/// Implemented by [`BearerToken`](super::BearerToken) (`Authorization: Bearer …`, looked up by an
/// async function of the application's), by [`UserHeader`] (a header set by a trusted proxy), and
/// for closures `Fn(&Parts) -> Result<u64, Rejection>` (annotate the argument,
/// `|request: &Parts| …`), e.g. to read a user that an authentication middleware put in the
/// request's extensions. It runs before anything else about the request is looked at, the body
/// included, and its [`Rejection`] is the answer.
///
/// An implementation of its own may be async (`async fn identify` in the `impl` is fine, as
/// long as its future is `Send`):
///
/// ```
/// use asyncjobs::http::{IdentifyUser, Rejection};
/// use axum::http::request::Parts;
///
/// /// Users by session cookie, from a session store that answers asynchronously.
/// struct Sessions;
///
/// impl IdentifyUser for Sessions {
///     async fn identify(&self, request: &Parts) -> Result<u64, Rejection> {
///         let cookie = request.headers.get("cookie").and_then(|v| v.to_str().ok());
///         let session = cookie.and_then(|c| c.strip_prefix("session=")).map(str::to_owned);
///         match session {
///             Some(session) => lookup(&session).await.ok_or_else(|| Rejection::unauthorized("session expired")),
///             None => Err(Rejection::unauthorized("sign in first")),
///         }
///     }
/// }
/// # async fn lookup(_session: &str) -> Option<u64> { Some(1) }
/// ```
///
/// An identifier that reads a header should refuse a request that carries it more than once,
/// as [`UserHeader`] and [`BearerToken`](super::BearerToken) do (400):
/// [`HeaderMap::get`](axum::http::HeaderMap::get) returns the first value, and behind a proxy
/// that appends its header to the one a client sent, the first is the client's, so the client
/// would choose its user. Read the header with
/// [`HeaderMap::get_all`](axum::http::HeaderMap::get_all) and refuse a second value.
pub trait IdentifyUser: Send + Sync + 'static {
    /// The id of the user the request comes from.
    ///
    /// # Errors
    ///
    /// The answer to send instead, e.g. [`Rejection::unauthorized`].
    ///
    /// # Cancel safety
    ///
    /// The future is dropped unfinished when the client goes away; an implementation must not
    /// rely on running to its end.
    fn identify(&self, request: &Parts) -> impl Future<Output = Result<u64, Rejection>> + Send;
}

impl<F> IdentifyUser for F
where
    F: Fn(&Parts) -> Result<u64, Rejection> + Send + Sync + 'static,
{
    fn identify(&self, request: &Parts) -> impl Future<Output = Result<u64, Rejection>> + Send {
        std::future::ready(self(request))
    }
}

/// The future an erased identifier returns.
pub(super) type Identified<'a> = Pin<Box<dyn Future<Output = Result<u64, Rejection>> + Send + 'a>>;

/// [`IdentifyUser`] with its future boxed, so the API can hold any identifier behind one `Arc`
/// (a trait with `impl Future` in return position cannot be a `dyn` trait).
pub(super) trait DynIdentify: Send + Sync + 'static {
    fn identify<'a>(&'a self, request: &'a Parts) -> Identified<'a>;
}

impl<T: IdentifyUser> DynIdentify for T {
    fn identify<'a>(&'a self, request: &'a Parts) -> Identified<'a> {
        Box::pin(IdentifyUser::identify(self, request))
    }
}

/// Reads the user id from a request header, e.g. `X-User-Id: 3350396`.
///
/// Trust such a header only behind a proxy that authenticates users and sets it (and removes it
/// from what clients send). A missing header is refused with 401, one that is not a user id
/// (decimal digits that fit in a `u64`) with 400. A header sent more than once is refused with
/// 400, even when the values agree: behind a proxy that appends its header instead of replacing
/// the client's, believing either value would let the client choose its user.
#[derive(Debug, Clone)]
pub struct UserHeader {
    name: HeaderName,
}

impl UserHeader {
    /// Reads the header `name` (case does not matter).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn new(name: impl AsRef<str>) -> Self {
        let name = HeaderName::from_bytes(name.as_ref().as_bytes())
            .unwrap_or_else(|_| panic!("invalid header name {:?}", name.as_ref()));
        UserHeader { name }
    }

    fn user(&self, request: &Parts) -> Result<u64, Rejection> {
        let mut values = request.headers.get_all(&self.name).iter();
        let value = values
            .next()
            .ok_or_else(|| Rejection::unauthorized(format!("missing {} header", self.name)))?;
        if values.next().is_some() {
            return Err(Rejection::bad_request(format!(
                "{} header appeared more than once: the user is ambiguous",
                self.name
            )));
        }
        value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Rejection::bad_request(format!("{} header is not a user id", self.name)))
    }
}

impl IdentifyUser for UserHeader {
    fn identify(&self, request: &Parts) -> impl Future<Output = Result<u64, Rejection>> + Send {
        std::future::ready(self.user(request))
    }
}
