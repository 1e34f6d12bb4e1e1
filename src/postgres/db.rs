//! The connection pool and the connect configuration; the statements live in the files named for
//! what they do (`instances.rs`, `ids.rs`, `writes.rs`, `reads.rs`, `cancel.rs`,
//! `retention.rs`), each adding methods to [`Db`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

use super::schema;
use super::StoreError;

/// How long a connect may take when the URL sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections one instance opens (besides the [`Listener`](super::Listener)'s own).
/// The store's statements are short, so a few connections serve many jobs.
const POOL_SIZE: usize = 8;

/// The most request-cache claims that hold pooled connections at once: half the pool, so that
/// the store's own writes, reads and lease renewals always find one.
const MAX_CLAIMS: usize = POOL_SIZE / 2;

/// How long a statement waits for a free pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// A handle on the store's database: a pool of connections and the configuration they were made
/// with.
///
/// Clones are cheap and share the pool. Every method checks a connection out of the pool for
/// the time of one statement (or one transaction) and returns it; none holds a lock across calls.
///
/// # Cancel safety
///
/// Dropping any method's future at an `.await` leaves the database consistent: every method is a
/// single statement or a single transaction, which either took effect whole or not at all (an
/// unfinished transaction is rolled back). Whether it took effect is then unknown, and every
/// write here can safely be repeated.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Request-cache claims under way ([`Db::find_or_claim`]): each holds a connection while it
    /// waits for its key's lock, so at most [`MAX_CLAIMS`] at once.
    claims: Arc<tokio::sync::Semaphore>,
    config: Config,
    /// `host:port` of each server in the URL, for error messages.
    addr: String,
}

impl Db {
    /// Connects to the database at `url` (a `postgresql://` URL or a `key=value` string, as
    /// libpq takes) and creates or upgrades the store's tables.
    ///
    /// No TLS: the server must accept plain connections (`sslmode` must not be `require`).
    ///
    /// # Errors
    ///
    /// [`BadUrl`](super::StoreErrorKind::BadUrl) for a URL that does not parse or names no
    /// server, [`Connect`](super::StoreErrorKind::Connect) (naming `host:port`) when the server
    /// cannot be reached or refuses the login, [`Migrate`](super::StoreErrorKind::Migrate) when
    /// the tables cannot be set up.
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        // The driver's parse errors name options, never their values: no password leaks.
        let mut config: Config = url.parse().map_err(StoreError::bad_url)?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(StoreError::bad_url_because("no host given"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("asyncjobs");
        }
        let addr = describe_servers(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection the server closed is noticed by its driver task and skipped;
                // checking each one with a round trip before use would double the latency.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let connect_timeout = config.get_connect_timeout().copied();
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(connect_timeout.map(|t| t + Duration::from_secs(1)))
            .build()
            .map_err(|e| StoreError::bad_url_because(e.to_string()))?;
        let db = Db {
            inner: Arc::new(Inner {
                pool,
                claims: Arc::new(tokio::sync::Semaphore::new(MAX_CLAIMS)),
                config,
                addr,
            }),
        };
        let mut client = db.client().await?;
        schema::migrate(&mut client).await?;
        Ok(db)
    }

    /// A pooled connection.
    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => StoreError::connect(&self.inner.addr, e),
            PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => {
                StoreError::connect_because(&self.inner.addr, "timed out")
            }
            PoolError::Timeout(_) => StoreError::connect_because(
                &self.inner.addr,
                "no pooled connection came free in time",
            ),
            other => StoreError::connect_because(&self.inner.addr, other.to_string()),
        })
    }

    /// The permits of request-cache claims (see [`MAX_CLAIMS`]).
    pub(super) fn claims(&self) -> Arc<tokio::sync::Semaphore> {
        self.inner.claims.clone()
    }

    /// The configuration the pool connects with, for a connection of its own
    /// (the [`Listener`](super::Listener)'s).
    pub(super) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// `host:port` of the server(s), for error messages.
    pub(super) fn addr(&self) -> &str {
        &self.inner.addr
    }
}

/// Takes the transaction-scoped advisory lock `key` if no one holds it: the reaper and the
/// retention sweep each run on one instance at a time this way.
pub(super) async fn try_xact_lock(
    tx: &deadpool_postgres::Transaction<'_>,
    key: i64,
    what: &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])
        .await
        .map_err(|e| StoreError::query(what, e))?
        .get(0))
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("Db")
            .field("server", &self.inner.addr)
            .field("dbname", &self.inner.config.get_dbname())
            .field("connections", &status.size)
            .field("idle", &status.available)
            .finish()
    }
}

/// A duration in whole microseconds, PostgreSQL's time resolution, at most 100 years: far
/// beyond any sensible lease or retention time, and far within PostgreSQL's interval range.
pub(super) fn micros(d: Duration) -> i64 {
    const MAX: u128 = 100 * 365 * 24 * 60 * 60 * 1_000_000;
    d.as_micros().min(MAX) as i64
}

/// `host:port` for each server in the configuration, comma-separated, as the driver will try
/// them: a `hostaddr` stands in for its host, one port serves every host, 5432 by default.
fn describe_servers(config: &Config) -> String {
    let hosts: Vec<String> = if config.get_hostaddrs().is_empty() {
        config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(dir) => dir.display().to_string(),
            })
            .collect()
    } else {
        config
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let ports = config.get_ports();
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            if host.starts_with('/') {
                format!("{host}/.s.PGSQL.{port}")
            } else if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_named_host_colon_port() {
        let config: Config = "postgresql://u:secret@127.0.0.1:5999/db".parse().unwrap();
        assert_eq!(describe_servers(&config), "127.0.0.1:5999");
        let config: Config = "host=a,b port=1,2".parse().unwrap();
        assert_eq!(describe_servers(&config), "a:1, b:2");
        let config: Config = "host=::1".parse().unwrap();
        assert_eq!(describe_servers(&config), "[::1]:5432");
        let config: Config = "host=/run/postgresql port=5433".parse().unwrap();
        assert_eq!(describe_servers(&config), "/run/postgresql/.s.PGSQL.5433");
    }
}
