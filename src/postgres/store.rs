//! The public face of the store.

use std::fmt;
use std::time::Duration;

use super::{Db, StoreError};

/// How long an instance's registration lives without renewal. Renewing every third of it
/// leaves two chances to miss.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// A PostgreSQL database that several instances of a service share, so that each sees every
/// job's status and can cancel any job, whichever instance runs it.
///
/// [`connect`](PostgresStore::connect) creates the store's tables if they are missing (or
/// upgrades them) and registers this instance. Each job still runs in the one instance that
/// started it; that instance writes the job's status changes to the database, and the others
/// read them from there.
///
/// Clones are cheap and share the connection pool and the instance registration.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncjobs::postgres::StoreError> {
/// use asyncjobs::postgres::PostgresStore;
///
/// let store = PostgresStore::connect("postgresql://jobs@db.internal/service").await?;
/// println!("registered as instance {}", store.instance_id());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    db: Db,
    instance: u64,
}

impl PostgresStore {
    /// Connects to the database at `url`, creates or upgrades the store's tables (all named
    /// `asyncjobs_*`), and registers this instance.
    ///
    /// `url` is a `postgresql://user:password@host:port/dbname?…` URL or a libpq
    /// `key=value` string. Connections are plain TCP (or a Unix socket), without TLS. Any
    /// number of instances may connect at once: they take turns creating the tables.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] whose message says what failed: the URL does not parse, the server at
    /// `host:port` cannot be reached or refuses the login, or the tables cannot be created.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped after the instance was registered, that registration lapses
    /// when its lease runs out (30 seconds).
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let db = Db::connect(url).await?;
        let instance = db.register_instance(&this_host(), LEASE).await?;
        Ok(PostgresStore { db, instance })
    }

    /// This instance's id in the database, unique among all instances that ever registered
    /// there. Jobs this instance runs carry it as their owner.
    pub fn instance_id(&self) -> u64 {
        self.instance
    }

    /// The database layer, for the engine's store hook.
    #[allow(dead_code)] // used once the registry plugs the store in
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance", &self.instance)
            .field("db", &self.db)
            .finish()
    }
}

/// How this instance describes itself in `asyncjobs_instances.host`: host name and process id.
fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned());
    format!("{name} (pid {})", std::process::id())
}
