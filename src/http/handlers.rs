//! The endpoints about one job, and the two that start jobs, each an axum handler over the
//! shared [`Api`]; the list and the event stream have files of their own.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{QueryRejection, RawPathParamsRejection};
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, OriginalUri, Query, RawPathParams, Request,
    State,
};
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{Map, Value};

use super::area::TOKEN_PARAM;
use super::poll::{not_modified, read, Poll, PollQuery, Read};
use super::rejection::Rejection;
use super::response::{
    complete_response, json, mark_reused, no_store, status_response, tag, Reason,
};
use super::state::{Api, Kind};
use crate::text::value_without_nul;
use crate::{AsynchJobState, AsynchronousJobStatus, JobId, UserView};

/// The calling user's view of the registry.
pub(super) struct Caller(pub(super) UserView);

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Rejection> {
        let user = api.identify.identify(parts).await?;
        Ok(Caller(api.registry.as_user(user)))
    }
}

/// A route's path parameters, percent-decoded.
pub(super) struct PathParams(Vec<(String, String)>);

impl PathParams {
    fn new(params: Result<RawPathParams, RawPathParamsRejection>) -> Result<Self, Rejection> {
        let params = params.map_err(|r| Rejection::new(r.status(), r.body_text()))?;
        Ok(PathParams(
            params
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        ))
    }

    /// The job id in parameter `name`.
    fn job_id(&self, name: &str) -> Result<JobId, Rejection> {
        let text = self
            .0
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value.as_str()))
            .unwrap_or_default();
        Ok(text.parse::<JobId>()?)
    }

    /// The parameters of the area's path (all but the job's token).
    fn of_area(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter(|(name, _)| name != TOKEN_PARAM)
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// Whether a body's field holds a path parameter's text: the same string, or a number written
/// the same way.
fn holds(field: &Value, text: &str) -> bool {
    match field {
        Value::String(s) => s == text,
        Value::Number(n) => n.to_string() == text,
        _ => false,
    }
}

/// `POST {area}/async/start`: starts the job the body's `concreteType` names, if it is one of
/// the area's kinds.
pub(super) async fn start(
    area: Arc<str>,
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
    StartBody(body): StartBody,
) -> Result<Response, Rejection> {
    let params = PathParams::new(params)?;
    let mut body = object(&body)?;
    for (name, text) in params.of_area() {
        match body.get(name) {
            None => {
                body.insert(name.to_owned(), Value::String(text.to_owned()));
            }
            Some(field) if holds(field, text) => {}
            Some(field) => {
                return Err(Rejection::bad_request(format!(
                    "{name} in the request body ({field}) differs from the path's ({text:?})"
                )))
            }
        }
    }
    let (concrete_type, kind) = kind_of(&api, &body)?;
    if *kind.area != *area {
        return Err(Rejection::bad_request(format!(
            "{concrete_type} is not started here but at {}/async/start; this endpoint starts: {}",
            kind.area,
            kinds_of(&api, Some(&area))
        )));
    }
    // With a shared store, this answers once every instance can find the job: the client may
    // poll another instance next.
    // A NUL (a `%00` in a path parameter, a `\u0000` in the JSON) is made safe at this door: no
    // status holds one, since PostgreSQL cannot store it.
    let body = value_without_nul(Value::Object(body));
    let spawned = (kind.start)(&user, body).await?;
    let mut response = json(
        StatusCode::CREATED,
        &Token {
            token: spawned.id().to_string(),
        },
    );
    no_store(&mut response);
    mark_reused(&mut response, spawned);
    Ok(response)
}

#[derive(Serialize)]
struct Token {
    token: String,
}

/// `POST /asynchronous/job`: starts the job the body's `concreteType` names, whatever its area,
/// and answers with its status (Synapse's generic launch).
pub(super) async fn launch(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    StartBody(body): StartBody,
) -> Result<Response, Rejection> {
    let body = object(&body)?;
    let (_, kind) = kind_of(&api, &body)?;
    // A NUL (a `%00` in a path parameter, a `\u0000` in the JSON) is made safe at this door: no
    // status holds one, since PostgreSQL cannot store it.
    let body = value_without_nul(Value::Object(body));
    let spawned = (kind.start)(&user, body).await?;
    let status = user.status(&spawned.id()).await?;
    let mut response = status_response(StatusCode::CREATED, &status);
    mark_reused(&mut response, spawned);
    Ok(response)
}

/// A request body as the JSON object every job request is.
fn object(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(Rejection::bad_request(
            "request body must be a JSON object with a string concreteType",
        )),
        Err(e) => Err(Rejection::bad_request(format!(
            "request body is not JSON: {e}"
        ))),
    }
}

/// The kind a body's `concreteType` names.
fn kind_of<'a>(api: &'a Api, body: &Map<String, Value>) -> Result<(&'a str, &'a Kind), Rejection> {
    let concrete_type = body
        .get("concreteType")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Rejection::bad_request("request body must be a JSON object with a string concreteType")
        })?;
    let (name, kind) = api.kinds.get_key_value(concrete_type).ok_or_else(|| {
        Rejection::bad_request(format!(
            "unknown concreteType {concrete_type:?}; this service starts: {}",
            kinds_of(api, None)
        ))
    })?;
    Ok((name, kind))
}

/// The kinds of an area (of every area for `None`), sorted, for a reason.
fn kinds_of(api: &Api, area: Option<&str>) -> String {
    let mut names: Vec<&str> = api
        .kinds
        .iter()
        .filter(|(_, kind)| area.is_none_or(|area| *kind.area == *area))
        .map(|(name, _)| &**name)
        .collect();
    names.sort_unstable();
    names.join(", ")
}

/// A request body, at most [`max_body_bytes`](super::AsyncJobApi::max_body_bytes).
pub(super) struct StartBody(Bytes);

impl FromRequest<Arc<Api>> for StartBody {
    type Rejection = Rejection;

    async fn from_request(request: Request, api: &Arc<Api>) -> Result<Self, Rejection> {
        let limit = api.max_body_bytes;
        let too_large = || {
            Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes"),
            )
        };
        // The router's body limit counts bytes as they arrive, so a body announced larger than
        // the limit would be waited for until more than the limit had come: a client announcing
        // 100 GB and sending a trickle would hold a connection and a task. The headers tell.
        if announced_length(request.headers()).is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let body = Bytes::from_request(request, api)
            .await
            .map_err(|rejection| match rejection.status() {
                // A body of unannounced length (chunked) that grew past the limit.
                StatusCode::PAYLOAD_TOO_LARGE => too_large(),
                status => Rejection::new(status, rejection.body_text()),
            })?;
        Ok(StartBody(body))
    }
}

/// The body length a request's `Content-Length` header announces, if it has a valid one.
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `GET {area}/async/get/{asyncToken}`: the status while processing, then the outcome.
pub(super) async fn result(
    area: Arc<str>,
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
    query: Result<Query<PollQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let params = PathParams::new(params)?;
    let id = params.job_id(TOKEN_PARAM)?;
    let poll = Poll::from_request(query, &headers)?;
    let admit = |status: &AsynchronousJobStatus| {
        if started_here(&api, &area, &params, status) {
            Ok(())
        } else {
            Err(Rejection::new(
                StatusCode::NOT_FOUND,
                format!(
                    "job {id} was not started at this path; /asynchronous/job/{id} answers for it"
                ),
            ))
        }
    };
    let status = match read(&user, &id, &poll, api.max_wait, admit).await? {
        Read::Fresh(status) => status,
        Read::NotModified(etag) => return Ok(not_modified(&etag)),
    };
    let mut response = match status.job_state {
        AsynchJobState::Processing => json(StatusCode::ACCEPTED, &status),
        AsynchJobState::Complete => complete_response(&status),
        AsynchJobState::Failed => {
            let reason = status.error_message.as_deref().unwrap_or("job failed");
            json(api.failure_status(&status), &Reason { reason })
        }
    };
    tag(&mut response, &status.etag);
    Ok(response)
}

/// Whether the job is one of the area's kinds, started with the path's parameter values.
fn started_here(
    api: &Api,
    area: &str,
    params: &PathParams,
    status: &AsynchronousJobStatus,
) -> bool {
    let Some(body) = status.request_body.as_deref() else {
        return false;
    };
    let of_area = body
        .get("concreteType")
        .and_then(Value::as_str)
        .and_then(|name| api.kinds.get(name))
        .is_some_and(|kind| *kind.area == *area);
    of_area
        && params
            .of_area()
            .all(|(name, text)| body.get(name).is_some_and(|field| holds(field, text)))
}

/// `GET /asynchronous/job/{jobId}`: the status in any state.
pub(super) async fn status(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
    query: Result<Query<PollQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let id = PathParams::new(params)?.job_id("jobId")?;
    let poll = Poll::from_request(query, &headers)?;
    Ok(
        match read(&user, &id, &poll, api.max_wait, |_| Ok(())).await? {
            Read::Fresh(status) => status_response(StatusCode::OK, &status),
            Read::NotModified(etag) => not_modified(&etag),
        },
    )
}

/// `POST` or `GET /asynchronous/job/{jobId}/cancel` (Synapse's is a `GET`). Another instance's
/// job is answered once its instance has applied the cancel (or after the registry's wait for
/// it), so the status shows `jobCanceling` rather than looking as if nothing happened.
pub(super) async fn cancel(
    Caller(user): Caller,
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Result<Response, Rejection> {
    let id = PathParams::new(params)?.job_id("jobId")?;
    user.cancel(&id).await?;
    let status = user.status(&id).await?;
    let code = if status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(status_response(code, &status))
}

/// A method other than `POST` on `/asynchronous/job/{jobId}/cancel` when cancel is `POST` only
/// ([`cancel_by_get(false)`](super::AsyncJobApi::cancel_by_get)): a `GET` is told why.
pub(super) async fn cancel_method_refused(method: Method, uri: OriginalUri) -> Rejection {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed(method, uri).await;
    }
    Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "cancel with POST: this service does not cancel over GET, which a link prefetch or another site can send",
    )
}

/// A method a path of the router does not take: 405, as JSON like every other refusal. axum adds
/// `Allow` with the methods the path takes.
pub(super) async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Rejection {
    Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A path the router does not serve: 404, as JSON like every other refusal. Answered without
/// asking who calls: it says nothing about any job.
pub(super) async fn no_such_path(OriginalUri(uri): OriginalUri) -> Rejection {
    Rejection::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// Adds an area's two routes, `{path}/async/start` and `{path}/async/get/{asyncToken}`: their
/// handlers are the shared ones, told which area they serve.
pub(super) fn area_routes(
    router: Router<Arc<Api>>,
    path: &str,
    body_limit: DefaultBodyLimit,
) -> Router<Arc<Api>> {
    let area: Arc<str> = Arc::from(path);
    let start_area = area.clone();
    router
        .route(
            &format!("{path}/async/start"),
            post(
                move |api: State<Arc<Api>>,
                      caller: Caller,
                      params: Result<RawPathParams, RawPathParamsRejection>,
                      body: StartBody| {
                    start(start_area.clone(), api, caller, params, body)
                },
            )
            .layer(body_limit),
        )
        .route(
            &format!("{path}/async/get/{{{TOKEN_PARAM}}}"),
            get(
                move |api: State<Arc<Api>>,
                      caller: Caller,
                      params: Result<RawPathParams, RawPathParamsRejection>,
                      query: Result<Query<PollQuery>, QueryRejection>,
                      headers: HeaderMap| {
                    result(area.clone(), api, caller, params, query, headers)
                },
            ),
        )
}
