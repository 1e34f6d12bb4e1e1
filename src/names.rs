//! Job names across instances. A [name](crate::JobRequest::name) is not a status field (those
//! are Synapse's): this instance knows the names of the jobs it holds, and a shared store keeps
//! every instance's beside their statuses. Lists that span the cluster read names from both, to
//! filter by them and to show them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::{Engine, Scope};
use crate::{AsynchronousJobStatus, Error, JobFilter, JobId};

/// The jobs of every instance that `filter` selects within `scope`, newest first: as
/// [`Engine::list_anywhere`], with the name filter applied to other instances' jobs too, by the
/// names the store keeps (the engine applies it to this instance's).
pub(crate) async fn list_anywhere(
    engine: &Engine,
    filter: &JobFilter,
    scope: Scope,
) -> Result<Vec<AsynchronousJobStatus>, Error> {
    let mut jobs = engine.list_anywhere(filter, scope).await?;
    if let Some(wanted) = &filter.name {
        let ids: Vec<JobId> = jobs.iter().map(|status| status.job_id).collect();
        let names = names_of(engine, &ids, scope).await?;
        jobs.retain(|status| names.get(&status.job_id) == Some(wanted));
    }
    Ok(jobs)
}

/// The names of those of the jobs `ids` that have one: from memory for jobs held here (for a
/// caller in `scope`), from the store for the others. The others must be jobs the caller may
/// see, as a list for `scope` gives them: the store does not check whose they are.
pub(crate) async fn names_of(
    engine: &Engine,
    ids: &[JobId],
    scope: Scope,
) -> Result<HashMap<JobId, Arc<str>>, Error> {
    let mut names = HashMap::new();
    let mut elsewhere = Vec::new();
    for id in ids {
        if engine.holds(id) {
            if let Some(name) = engine.name_of(id, scope) {
                names.insert(*id, name);
            }
        } else {
            elsewhere.push(*id);
        }
    }
    if let Some(store) = engine
        .config
        .store
        .as_ref()
        .filter(|_| !elsewhere.is_empty())
    {
        names.extend(store.0.names(&elsewhere).await?);
    }
    Ok(names)
}
