//! PostgreSQL servers for the tests: a real server, never a mock.
//!
//! - [`fresh_db`] gives each test a database of its own on one server shared by the whole test
//!   binary, so tests run in parallel. The server is the one `ASYNCJOBS_PG_URL` names (a URL
//!   of a database the user may `CREATE DATABASE` from), else a throwaway server this module
//!   starts once, on a free port of 127.0.0.1, with its data in a temporary directory.
//! - [`private_server`] starts a throwaway server for one test alone, for fault tests that
//!   stop and restart it (always throwaway, whatever `ASYNCJOBS_PG_URL` says: a shared server
//!   must not go down under other tests).
//!
//! A throwaway server is made with `initdb --auth=trust -U postgres` and run by `pg_ctl` with
//! `fsync=off`. PostgreSQL refuses to run as root, so as root (as the tests run here and in
//! CI) every server command runs as the `postgres` OS user (`runuser -u postgres --`), which
//! owns the directory. The binaries are taken from `PATH`, else from the newest
//! `/usr/lib/postgresql/*/bin` (where Debian's packages put them).
//!
//! Nothing is left behind: each throwaway server has a watchdog process that waits on a pipe
//! from the test process and, when the pipe closes (the process ended, however it ended:
//! normally, by a panic, or killed), stops the server and removes its directory. Statics are
//! never dropped, so the shared server relies on its watchdog alone; a private server is also
//! stopped and removed when it is dropped.
//!
//! When no server can be had, the test panics saying exactly why; nothing is skipped.

#![allow(dead_code)] // each test binary uses a part

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// A database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Connects to this test's database.
    pub url: String,
    name: String,
    /// Where to drop the database at the end; `None` when the server goes away anyway.
    drop_via: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(admin) = self.drop_via.take() else {
            return;
        };
        let name = self.name.clone();
        // Drop may run inside the test's runtime, where blocking on another is not allowed.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async {
                if let Ok(client) = connect(&admin).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh, empty database for this test on the shared server.
///
/// # Panics
///
/// If no server can be had, or the database cannot be created, saying why.
pub async fn fresh_db() -> TestDb {
    let server = shared();
    let name = unique_name("asyncjobs_test");
    let admin = server.admin_url();
    let client = connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server to create a database: {e}"));
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let drop_via = matches!(server, Shared::External { .. }).then(|| admin.clone());
    TestDb {
        url: server.url_of(&name),
        name,
        drop_via,
    }
}

/// A raw connection (not through the crate), driven by a task, for checks the crate does not
/// expose.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The server shared by the tests of this binary.
enum Shared {
    External { url: String },
    Throwaway(Server),
}

impl Shared {
    fn admin_url(&self) -> String {
        match self {
            Shared::External { url } => url.clone(),
            Shared::Throwaway(server) => server.url_of("postgres"),
        }
    }

    fn url_of(&self, db: &str) -> String {
        match self {
            Shared::External { url } => with_dbname(url, db),
            Shared::Throwaway(server) => server.url_of(db),
        }
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| match std::env::var("ASYNCJOBS_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(Shared::External { url }),
        _ => Server::start().map(Shared::Throwaway),
    });
    match shared {
        Ok(shared) => shared,
        Err(why) => panic!("no PostgreSQL server for the tests: {why}"),
    }
}

/// `url` with its database replaced by `db`: a later `dbname` parameter overrides the path of
/// a URL, and a later key of a `key=value` string overrides an earlier one.
fn with_dbname(url: &str, db: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}dbname={db}")
    } else {
        format!("{url} dbname={db}")
    }
}

/// A throwaway server for one test alone, which it may stop and restart.
///
/// # Panics
///
/// If the server cannot be started, saying why.
pub fn private_server() -> Server {
    Server::start().unwrap_or_else(|why| panic!("cannot start a PostgreSQL server: {why}"))
}

/// A throwaway PostgreSQL server: its own directory, data, port and watchdog.
#[derive(Debug)]
pub struct Server {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl Server {
    fn start() -> Result<Server, String> {
        let bin = find_bindir()?;
        let as_postgres_user = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = std::env::temp_dir().join(unique_name("asyncjobs-pg"));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut server = Server {
            bin,
            dir,
            port: 0,
            as_postgres_user,
            watchdog: Mutex::new(None),
        };
        // From here on the watchdog removes the directory whatever happens.
        server.spawn_watchdog()?;
        if as_postgres_user {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(&server.dir)
                .output()
                .map_err(|e| format!("cannot run chown: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "running as root, so the server must run as the `postgres` OS user, but \
                     `chown postgres: {}` failed (is there a postgres user?): {}",
                    server.dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "--auth=trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )?;
        // A port free a moment ago may be taken by the time the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(why) => last = why,
            }
        }
        Err(last)
    }

    /// The URL of database `db` on this server.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A fresh database on this server.
    pub async fn fresh_db(&self) -> TestDb {
        let name = unique_name("asyncjobs_test");
        let client = connect(&self.url_of("postgres"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the private server: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        TestDb {
            url: self.url_of(&name),
            name,
            drop_via: None,
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected).
    ///
    /// Blocks the calling thread; from async code, call it through `spawn_blocking` so that the
    /// runtime's connection tasks see their connections close meanwhile.
    pub fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
        .unwrap_or_else(|why| panic!("cannot stop the test server: {why}"));
    }

    /// Starts the stopped server again, on the same port.
    pub fn start_again(&self) {
        self.pg_ctl_start()
            .unwrap_or_else(|why| panic!("cannot start the test server again: {why}"));
    }

    /// Stops the server and starts it again on the same port.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let started = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        );
        started.map_err(|why| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{why}\nserver log:\n{log}")
        })
    }

    /// Runs one of the server's programs (as the `postgres` user when we are root), and
    /// returns its output's failure as an error that quotes it.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = self.command(&path);
        command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        let out = command
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// A process that waits for EOF on a pipe only this process holds (std opens pipes
    /// close-on-exec, so no other child inherits it), then stops the server and removes the
    /// directory. In its own process group, so a Ctrl-C to the tests does not stop it first.
    fn spawn_watchdog(&mut self) -> Result<(), String> {
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
        let runuser = if self.as_postgres_user {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "read _ignored; {runuser}{pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1; \
             rm -rf {dir}",
            pg_ctl = quote(&self.bin.join("pg_ctl")),
            data = quote(&self.data()),
            dir = quote(&self.dir),
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the server's watchdog (sh): {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        *self.watchdog.get_mut().unwrap() = Some((child, stdin));
        Ok(())
    }
}

impl Drop for Server {
    /// Closes the watchdog's pipe and waits while it stops the server and removes the
    /// directory.
    fn drop(&mut self) {
        let watchdog = self.watchdog.get_mut().map(Option::take);
        if let Ok(Some((mut child, mut stdin))) = watchdog {
            let _ = stdin.flush();
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_bindir() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d)) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "the PostgreSQL server programs (initdb, pg_ctl) are neither on PATH nor in \
         /usr/lib/postgresql/*/bin: install PostgreSQL (apt-get install postgresql) or set \
         ASYNCJOBS_PG_URL to a server's URL"
            .to_owned()
    })
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// A name no other test, binary or run uses at the same time.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
