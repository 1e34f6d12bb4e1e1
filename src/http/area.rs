//! [`Area`]: a path under which job kinds are started and their results read, as Synapse has one
//! per kind of work (`/entity/{id}/table/query`, `/file/bulk`, …).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::rejection::Rejection;
use super::state::{StartFn, StartFuture};
use crate::{JobHandle, JobRequest, UserView};

/// The path parameter that holds the job's token in `{area}/async/get/{asyncToken}`.
pub(super) const TOKEN_PARAM: &str = "asyncToken";

/// A path and the job kinds started under it: `POST {path}/async/start` starts them and
/// `GET {path}/async/get/{token}` answers for them; add it to an API with
/// [`AsyncJobApi::area`](super::AsyncJobApi::area).
///
/// A Synapse client derives each job's URL from its request's `concreteType` (a table query
/// goes to `/entity/{id}/table/query/async/…`, a CSV download to
/// `/entity/{id}/table/download/csv/async/…`), so a service has one area per kind of work. The
/// path may have parameters (`{name}`, a whole path segment each): their values, as strings, are
/// part of the request. Each one is written into the request body under its name (a body that
/// already has a different value there is refused with 400), so the job, its `requestBody`, and
/// [request caching](JobRequest::cacheable) all see it: the same query on two tables is two
/// requests. Name the parameter as the body's field (`/entity/{entityId}/table/query` for a
/// request with an `entityId`).
///
/// `async/get` in an area answers only for jobs of its kinds whose request has the path's
/// parameter values (404 otherwise, naming `/asynchronous/job/{id}`, which answers for any job
/// of the caller's): a client polling the wrong URL is told so rather than sent another kind's
/// result.
///
/// ```
/// use asyncjobs::http::{Area, AsyncJobApi, UserHeader};
/// use asyncjobs::{JobHandle, JobRegistry};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct QueryRequest {
///     entity_id: String, // from the path
///     sql: String,
/// }
///
/// #[derive(Serialize)]
/// #[serde(tag = "concreteType", rename = "org.example.QueryResult")]
/// struct QueryResult {
///     rows: Vec<Vec<String>>,
/// }
///
/// let tables = Area::new("/entity/{entityId}/table/query").job(
///     "org.example.QueryRequest",
///     |query: QueryRequest, _job: JobHandle| async move {
///         let _ = (query.entity_id, query.sql);
///         Ok::<_, std::io::Error>(QueryResult { rows: Vec::new() })
///     },
/// );
/// let api = AsyncJobApi::new(JobRegistry::new(), UserHeader::new("X-User-Id")).area(tables);
/// # drop(api);
/// ```
///
/// `Clone` is cheap: clones share the job functions.
#[derive(Clone)]
pub struct Area {
    pub(super) path: String,
    pub(super) kinds: Vec<(Arc<str>, Arc<StartFn>)>,
}

impl Area {
    /// An area at `path` with no job kinds yet. A missing leading `/` is added and a trailing
    /// one dropped; `""` (or `"/"`) is the root area, whose routes are `/async/start` and
    /// `/async/get/{token}` (the one [`AsyncJobApi::job`](super::AsyncJobApi::job) adds to).
    ///
    /// # Panics
    ///
    /// If `path` has a wildcard (`{*rest}`), or a parameter named `asyncToken` or
    /// `concreteType` (the token's and the job kind's).
    pub fn new(path: impl AsRef<str>) -> Self {
        let trimmed = path.as_ref().trim_matches('/');
        let path = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        for name in parameters(&path) {
            assert!(
                !name.starts_with('*'),
                "area {path}: a wildcard ({{{name}}}) cannot come before /async/start"
            );
            assert!(
                name != TOKEN_PARAM && name != "concreteType",
                "area {path}: the path parameter name {name} is reserved"
            );
        }
        Area {
            path,
            kinds: Vec::new(),
        }
    }

    /// The area's path, as normalized by [`new`](Area::new).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Registers a job kind: a request body whose `concreteType` is `concrete_type` starts a job
    /// that runs `job(request, handle)`, as the calling user.
    ///
    /// The documented path is typed: `B` a `Deserialize` type of the request's fields, `R` a
    /// `Serialize` type of the response's. A body that does not deserialize into `B` is refused
    /// with 400 and a reason that names the kind and the field, e.g. `request body is not a
    /// valid org.example.ExportRequest: rows: invalid type: string "many", expected u64`. Fields
    /// `B` does not name (`concreteType` among them) are ignored unless it says
    /// `#[serde(deny_unknown_fields)]`; take [`serde_json::Value`] for the raw object. Give `R`
    /// its `concreteType` with `#[serde(tag = "concreteType", rename = "org.example.ExportResponse")]`.
    /// The whole body (with the path's parameters) becomes the job's `requestBody` either way.
    ///
    /// `job` and its result are as for [`JobRegistry::spawn`](crate::JobRegistry::spawn); it is
    /// called once per job started, from the request's task (not at all when a
    /// [cacheable](JobRequest::cacheable) request is answered with an earlier job).
    ///
    /// # Panics
    ///
    /// If `concrete_type` is already registered in this area.
    #[must_use]
    pub fn job<B, F, Fut, R, E>(self, concrete_type: impl Into<String>, job: F) -> Self
    where
        B: DeserializeOwned + Send + 'static,
        F: Fn(B, JobHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.job_with(concrete_type, std::convert::identity, job)
    }

    /// Registers a job kind, as [`job`](Area::job), whose [`JobRequest`] is passed through
    /// `configure` before the job starts: to make it [cacheable](JobRequest::cacheable) (an equal
    /// request from the same user then answers with the earlier job), or to give it a
    /// [time limit](JobRequest::time_limit) or a [stall limit](JobRequest::stall_limit). The
    /// request already carries the body ([`JobRequest::body`]) and the calling user is set after
    /// `configure`.
    ///
    /// # Panics
    ///
    /// If `concrete_type` is already registered in this area.
    #[must_use]
    pub fn job_with<B, C, F, Fut, R, E>(
        mut self,
        concrete_type: impl Into<String>,
        configure: C,
        job: F,
    ) -> Self
    where
        B: DeserializeOwned + Send + 'static,
        C: Fn(JobRequest) -> JobRequest + Send + Sync + 'static,
        F: Fn(B, JobHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let concrete_type: Arc<str> = Arc::from(concrete_type.into());
        assert!(
            self.kinds.iter().all(|(known, _)| *known != concrete_type),
            "job kind {concrete_type} is registered twice"
        );
        let name = concrete_type.clone();
        let job = Arc::new(job);
        let start = move |user: &UserView, body: Value| -> StartFuture {
            let typed: Result<B, _> = serde_path_to_error::deserialize(&body);
            let typed = match typed {
                Ok(typed) => typed,
                Err(e) => {
                    let refused =
                        Rejection::bad_request(format!("request body is not a valid {name}: {e}"));
                    return Box::pin(std::future::ready(Err(refused)));
                }
            };
            let request = configure(JobRequest::new(body));
            let (user, job) = (user.clone(), job.clone());
            Box::pin(async move {
                Ok(user
                    .submit(request, move |handle| job(typed, handle))
                    .await?)
            })
        };
        self.kinds.push((concrete_type, Arc::new(start)));
        self
    }
}

impl fmt::Debug for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.kinds.iter().map(|(name, _)| &**name).collect();
        f.debug_struct("Area")
            .field("path", &self.path)
            .field("kinds", &kinds)
            .finish()
    }
}

/// The names of a path's `{parameters}`, in order.
pub(super) fn parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// The path with every parameter's name left out: two paths with one shape are one route to
/// axum, whatever their parameters are called.
pub(super) fn shape(path: &str) -> String {
    let mut shape = String::with_capacity(path.len());
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                shape.push('{');
            }
            '}' => {
                inside = false;
                shape.push('}');
            }
            _ if inside => {}
            _ => shape.push(c),
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        assert_eq!(Area::new("table/query/").path(), "/table/query");
        assert_eq!(Area::new("/").path(), "");
        assert_eq!(Area::new("").path(), "");
    }

    #[test]
    fn parameters_and_shapes() {
        let path = "/entity/{entityId}/table/{version}/query";
        assert_eq!(
            parameters(path).collect::<Vec<_>>(),
            ["entityId", "version"]
        );
        assert_eq!(shape(path), "/entity/{}/table/{}/query");
        assert_eq!(shape("/entity/{id}/table/{v}/query"), shape(path));
        assert_eq!(parameters("/file/bulk").count(), 0);
    }

    #[test]
    #[should_panic(expected = "reserved")]
    fn the_token_parameter_is_reserved() {
        let _ = Area::new("/x/{asyncToken}");
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_kind_is_registered_once_per_area() {
        let kind = |_: Value, _job: JobHandle| async { Ok::<(), std::io::Error>(()) };
        let _ = Area::new("/x").job("t.A", kind).job("t.A", kind);
    }
}
