//! What the engine runs by: a registry's settings, as [`JobRegistryBuilder`](crate::JobRegistryBuilder)
//! leaves them.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::{SharedStore, StatusObserver};

/// A registry's settings, as the builder leaves them.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) cancel_grace: Duration,
    pub(crate) runtime: Option<Handle>,
    pub(crate) keep_finished_for: Duration,
    pub(crate) keep_finished_at_most: usize,
    pub(crate) max_running: Option<usize>,
    pub(crate) max_running_per_user: Option<usize>,
    pub(crate) fair_queue: bool,
    pub(crate) first_job_id: u64,
    pub(crate) observers: Vec<Arc<dyn StatusObserver>>,
    pub(crate) store: Option<SharedStore>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("cancel_grace", &self.cancel_grace)
            .field("runtime", &self.runtime)
            .field("keep_finished_for", &self.keep_finished_for)
            .field("keep_finished_at_most", &self.keep_finished_at_most)
            .field("max_running", &self.max_running)
            .field("max_running_per_user", &self.max_running_per_user)
            .field("fair_queue", &self.fair_queue)
            .field("first_job_id", &self.first_job_id)
            .field("observers", &self.observers.len())
            .field("store", &self.store)
            .finish()
    }
}
