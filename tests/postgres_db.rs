//! The PostgreSQL store's database layer against a real server (feature `postgres`): schema
//! migration, instance leases and reaping, id blocks, version-guarded batch writes and their
//! notifications, cancel requests, retention, the request cache, and faults (a server restart
//! under a listener, a write while the server is down).
//!
//! The server comes from `tests/pg` (`ASYNCJOBS_PG_URL`, else a throwaway one); each test has
//! a database of its own, and the fault tests a server of their own.

mod pg;

use std::collections::BTreeSet;
use std::future::poll_fn;
use std::time::Duration;

use asyncjobs::postgres::__db::{
    CacheLookup, CancelRequest, Db, Listener, Notice, StatusRow, ID_BASE, ID_BLOCK_SIZE,
};
use asyncjobs::postgres::{PostgresStore, StoreErrorKind};
use asyncjobs::{exception, AsynchJobState, AsynchronousJobStatus, JobFilter};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use AsynchJobState::{Complete, Failed, Processing};

/// How long any single wait for the database or a notification may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// How long a COMPLETE job answers equal cacheable requests, in the request-cache tests.
const FRESH: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A job's status, to build rows from.
#[derive(Clone)]
struct Job {
    id: u64,
    version: u64,
    state: AsynchJobState,
    owner: u64,
    user: Option<u64>,
    cache_key: Option<i64>,
    body: Value,
    canceling: bool,
    started: DateTime<Utc>,
    changed: DateTime<Utc>,
}

fn job(id: u64, version: u64, state: AsynchJobState, owner: u64) -> Job {
    let now = Utc::now().trunc_subsecs(3);
    Job {
        id,
        version,
        state,
        owner,
        user: None,
        cache_key: None,
        body: json!({"concreteType": "org.example.Request"}),
        canceling: false,
        started: now,
        changed: now,
    }
}

impl Job {
    fn user(mut self, user: u64) -> Job {
        self.user = Some(user);
        self
    }
    fn cached(mut self, key: i64, body: Value) -> Job {
        self.cache_key = Some(key);
        self.body = body;
        self
    }
    fn canceling(mut self) -> Job {
        self.canceling = true;
        self
    }
    fn times(mut self, started: DateTime<Utc>, changed: DateTime<Utc>) -> Job {
        self.started = started.trunc_subsecs(3);
        self.changed = changed.trunc_subsecs(3);
        self
    }
    fn at(mut self, version: u64, state: AsynchJobState) -> Job {
        self.version = version;
        self.state = state;
        self
    }

    fn status(&self) -> AsynchronousJobStatus {
        let mut v = json!({
            "jobId": self.id.to_string(),
            "jobState": self.state.as_str(),
            "jobCanceling": self.canceling,
            "etag": self.version.to_string(),
            "startedOn": self.started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "changedOn": self.changed.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "progressCurrent": self.version,
            "progressTotal": 100,
            "progressMessage": format!("step {}", self.version),
            "requestBody": self.body,
            "runtimeMS": (self.changed - self.started).num_milliseconds(),
        });
        if let Some(user) = self.user {
            v["startedByUserId"] = json!(user);
        }
        if self.state == Complete {
            v["responseBody"] = json!({"concreteType": "org.example.Response"});
        }
        serde_json::from_value(v).expect("a valid status")
    }

    fn row(&self) -> StatusRow {
        StatusRow::new(&self.status(), self.owner, self.cache_key)
    }
}

async fn db(url: &str) -> Db {
    Db::connect(url)
        .await
        .expect("connect to the test database")
}

async fn write(db: &Db, jobs: &[&Job]) -> u64 {
    let rows: Vec<StatusRow> = jobs.iter().map(|j| j.row()).collect();
    db.write_batch(&rows).await.expect("write_batch")
}

async fn read(db: &Db, id: u64) -> asyncjobs::postgres::__db::StoredJob {
    db.read(id).await.expect("read").expect("the job is stored")
}

async fn next_notice(listener: &mut Listener) -> Notice {
    tokio::time::timeout(PATIENCE, listener.recv())
        .await
        .expect("a notice within the patience")
        .expect("the listener is running")
}

/// Waits until no notice arrives for a moment.
async fn assert_quiet(listener: &mut Listener) {
    if let Ok(notice) = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await {
        panic!("unexpected notice {notice:?}");
    }
}

/// Raw `asyncjobs_changed` payloads, through a connection of the test's own.
async fn raw_changed_payloads(
    url: &str,
) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = message {
                if n.channel() == "asyncjobs_changed" {
                    let _ = tx.send(n.payload().to_owned());
                }
            }
        }
    });
    client
        .batch_execute("LISTEN asyncjobs_changed")
        .await
        .unwrap();
    (client, rx)
}

/// Collects raw payloads until they hold `pairs` pairs.
async fn collect_payloads(rx: &mut mpsc::UnboundedReceiver<String>, pairs: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut seen = 0;
    while seen < pairs {
        let payload = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("a notification within the patience")
            .expect("the raw listener is running");
        seen += payload.split(',').count();
        payloads.push(payload);
    }
    payloads
}

// ---------------------------------------------------------------------------------------------
// Types

/// The handles and errors cross threads, and so does every future the layer returns (checked
/// at compile time: the function is never called).
#[test]
fn handles_errors_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Db>();
    send_sync::<PostgresStore>();
    send_sync::<asyncjobs::postgres::StoreError>();
    send_sync::<Listener>();

    #[allow(dead_code)]
    fn futures(db: &Db, rows: &[StatusRow], body: &Value) {
        fn send<T: Send>(_: T) {}
        send(Db::connect(""));
        send(PostgresStore::connect(""));
        send(Listener::start(db));
        send(db.register_instance("", Duration::ZERO));
        send(db.renew_lease(1, Duration::ZERO));
        send(db.release_instance(1));
        send(db.reap_dead_instances());
        send(db.reserve_id_block());
        send(db.write_batch(rows));
        send(db.read(1));
        send(db.list(&JobFilter::new(), 1));
        send(db.names(&[1]));
        send(db.counts(&JobFilter::new()));
        send(db.request_cancel(1, None));
        send(db.cancels_for(1));
        send(db.sweep_retention(Duration::ZERO, 1, 1));
        send(db.find_cached(None, 1, Some(body), Duration::ZERO));
        send(db.find_or_claim(None, Some(body), Duration::ZERO));
    }
}

// ---------------------------------------------------------------------------------------------
// Schema

#[tokio::test]
async fn migration_runs_once_even_when_instances_connect_at_once() {
    let test = pg::fresh_db().await;
    let (a, b, c) = tokio::join!(
        Db::connect(&test.url),
        Db::connect(&test.url),
        Db::connect(&test.url)
    );
    a.expect("first concurrent connect");
    b.expect("second concurrent connect");
    c.expect("third concurrent connect");
    // And again, on a database already at the current version.
    let again = db(&test.url).await;
    assert_eq!(again.counts(&JobFilter::new()).await.unwrap().total(), 0);

    let raw = pg::connect(&test.url).await.unwrap();
    let versions: Vec<i32> = raw
        .query(
            "SELECT version FROM asyncjobs_schema_version ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    let tables: Vec<String> = raw
        .query(
            "SELECT tablename::text FROM pg_tables WHERE tablename LIKE 'asyncjobs\\_%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "asyncjobs_instances",
            "asyncjobs_jobs",
            "asyncjobs_schema_version"
        ]
    );
    let indexes: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'asyncjobs_jobs'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexes, 6, "the primary key and five indexes");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let test = pg::fresh_db().await;
    db(&test.url).await;
    let raw = pg::connect(&test.url).await.unwrap();
    raw.batch_execute("INSERT INTO asyncjobs_schema_version VALUES (4)")
        .await
        .unwrap();
    let e = Db::connect(&test.url).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Migrate);
    assert_eq!(
        e.to_string(),
        "cannot set up the asyncjobs tables: the database has schema version 4, newer than this \
         build's 3"
    );
}

/// A database an older build set up (schema version 1: no `queued` nor `name` column) is
/// upgraded in place at connect, its rows kept, and used at once.
#[tokio::test]
async fn an_older_schema_is_upgraded_keeping_its_rows() {
    let test = pg::fresh_db().await;
    let db1 = db(&test.url).await;
    let old = job(ID_BASE + 1, 3, Processing, 1).user(7);
    write(&db1, &[&old]).await;
    let raw = pg::connect(&test.url).await.unwrap();
    // Back to version 1, as the older build left it.
    raw.batch_execute(
        "ALTER TABLE asyncjobs_jobs DROP COLUMN queued, DROP COLUMN name;
         DELETE FROM asyncjobs_schema_version WHERE version >= 2;",
    )
    .await
    .unwrap();

    let upgraded = db(&test.url).await;
    let read = upgraded.read(old.id).await.unwrap().unwrap();
    assert_eq!(read.status, old.status());
    assert_eq!(read.version, 3);
    assert_eq!(read.name, None);
    let waiting = job(ID_BASE + 2, 1, Processing, 1);
    assert_eq!(
        upgraded
            .write_batch(&[waiting.row().queued(true)])
            .await
            .unwrap(),
        1
    );
    let counts = upgraded.counts(&JobFilter::new()).await.unwrap();
    assert_eq!(
        (counts.processing, counts.running, counts.queued),
        (2, 1, 1)
    );
    let versions: i32 = raw
        .query_one("SELECT max(version) FROM asyncjobs_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 3);
}

// ---------------------------------------------------------------------------------------------
// Connecting

#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://postgres:hunter2@127.0.0.1:{port}/jobs");
    let e = Db::connect(&url).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Connect);
    assert_eq!(
        e.to_string(),
        format!("cannot connect to PostgreSQL at 127.0.0.1:{port}: connection refused")
    );
    assert!(e.is_connection());
    assert!(std::error::Error::source(&e).is_some());

    // The public face says the same.
    let e = PostgresStore::connect(&url).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot connect to PostgreSQL at 127.0.0.1:{port}: connection refused")
    );
}

#[tokio::test]
async fn a_bad_url_is_refused_without_echoing_it() {
    let e = Db::connect("postgresql://postgres:hunter2@127.0.0.1:notaport/jobs")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::BadUrl);
    assert_eq!(
        e.to_string(),
        "invalid PostgreSQL url: invalid value for option `port`"
    );
    assert!(!format!("{e:?}").contains("hunter2"));

    let e = Db::connect("dbname=jobs").await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::BadUrl);
    assert_eq!(e.to_string(), "invalid PostgreSQL url: no host given");
}

#[tokio::test]
async fn the_store_registers_its_instance() {
    let test = pg::fresh_db().await;
    let a = PostgresStore::connect(&test.url).await.unwrap();
    let b = PostgresStore::connect(&test.url).await.unwrap();
    assert_ne!(a.instance_id(), b.instance_id());
    let raw = pg::connect(&test.url).await.unwrap();
    let row = raw
        .query_one(
            "SELECT host, lease_until > now() + interval '5 seconds',
                    lease_until <= now() + interval '10 seconds'
             FROM asyncjobs_instances WHERE id = $1",
            &[&(a.instance_id() as i64)],
        )
        .await
        .unwrap();
    let host: String = row.get(0);
    assert!(
        host.ends_with(&format!(" (pid {})", std::process::id())),
        "{host}"
    );
    assert!(
        row.get::<_, bool>(1) && row.get::<_, bool>(2),
        "the default 10-second lease"
    );
    assert_eq!(asyncjobs::postgres::DEFAULT_LEASE, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// Ids

#[tokio::test]
async fn id_blocks_never_collide_across_instances() {
    let test = pg::fresh_db().await;
    let (one, two) = (db(&test.url).await, db(&test.url).await);
    let reserve = |db: Db| async move {
        let mut blocks = Vec::new();
        for _ in 0..150 {
            blocks.push(db.reserve_id_block().await.unwrap());
        }
        blocks
    };
    let (a, b) = tokio::join!(reserve(one), reserve(two));
    let mut all: Vec<_> = a.into_iter().chain(b).collect();
    assert_eq!(all.len(), 300);
    all.sort_by_key(|r| r.start);
    for block in &all {
        assert_eq!(block.end - block.start, ID_BLOCK_SIZE);
        assert!(block.start >= ID_BASE);
        assert!(block.end - 1 <= i64::MAX as u64);
        assert_eq!(block.start.to_string().len(), 16);
    }
    for pair in all.windows(2) {
        assert!(pair[0].end <= pair[1].start, "{pair:?} overlap");
    }
    // Adjacent: one sequence hands the blocks out in order.
    assert_eq!(all[0].start, ID_BASE);
    assert_eq!(all[299].end, ID_BASE + 300 * ID_BLOCK_SIZE);
}

// ---------------------------------------------------------------------------------------------
// Writes and notifications

#[tokio::test]
async fn writes_keep_the_newest_version_and_never_touch_a_finished_row() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let owner = db
        .register_instance("test", Duration::from_secs(60))
        .await
        .unwrap();
    let a = job(ID_BASE + 1, 2, Processing, owner)
        .user(7)
        .cached(42, json!({"q": 1}));

    assert_eq!(write(&db, &[&a]).await, 1);
    let stored = read(&db, a.id).await;
    assert_eq!(stored.version, 2);
    assert_eq!(stored.status, a.status());
    assert_eq!(stored.owner, owner);
    assert_eq!(stored.cache_key, Some(42));
    assert!(!stored.cancel_requested);

    // An older or equal version is ignored.
    assert_eq!(write(&db, &[&a.clone().at(1, Processing)]).await, 0);
    assert_eq!(write(&db, &[&a]).await, 0);
    assert_eq!(read(&db, a.id).await.status, a.status());

    // A newer one is written, the finish too.
    let a3 = a.clone().at(3, Processing);
    assert_eq!(write(&db, &[&a3]).await, 1);
    let done = a.clone().at(4, Complete);
    assert_eq!(write(&db, &[&done]).await, 1);
    let stored = read(&db, a.id).await;
    assert_eq!((stored.version, stored.status.job_state), (4, Complete));

    // Nothing overwrites a finished row, not even a higher version.
    assert_eq!(write(&db, &[&a.clone().at(9, Processing)]).await, 0);
    assert_eq!(write(&db, &[&a.clone().at(9, Failed)]).await, 0);
    assert_eq!(read(&db, a.id).await.status, done.status());

    // One job twice in a batch: its highest version wins, whatever the order.
    let b = job(ID_BASE + 2, 6, Processing, owner);
    assert_eq!(write(&db, &[&b, &b.clone().at(5, Processing)]).await, 1);
    assert_eq!(read(&db, b.id).await.version, 6);

    // finished_at is set exactly for finished rows.
    let raw = pg::connect(&test.url).await.unwrap();
    let finished: Vec<(i64, bool)> = raw
        .query(
            "SELECT id, finished_at IS NOT NULL FROM asyncjobs_jobs ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(finished, vec![(a.id as i64, true), (b.id as i64, false)]);
    assert!(db.read(ID_BASE + 999).await.unwrap().is_none());
}

#[tokio::test]
async fn every_write_is_notified_with_id_and_version() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let mut listener = Listener::start(&db).await.unwrap();
    let jobs: Vec<Job> = (1..=3)
        .map(|i| job(ID_BASE + i, 10 + i, Processing, 1))
        .collect();
    // Out of id order on purpose: notifications come in id order.
    assert_eq!(write(&db, &[&jobs[2], &jobs[0], &jobs[1]]).await, 3);
    for j in &jobs {
        assert_eq!(
            next_notice(&mut listener).await,
            Notice::Changed {
                id: j.id,
                version: j.version,
                user: j.user,
            }
        );
    }
    // A write that changes nothing notifies nothing.
    assert_eq!(write(&db, &[&jobs[0]]).await, 0);
    assert_quiet(&mut listener).await;
    // Of a mixed batch, only what was written.
    let newer = jobs[1].clone().at(20, Complete);
    assert_eq!(write(&db, &[&jobs[0], &newer]).await, 1);
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Changed {
            id: newer.id,
            version: 20,
            user: newer.user,
        }
    );
    assert_quiet(&mut listener).await;
}

#[tokio::test]
async fn a_large_batch_is_notified_in_payloads_under_8000_bytes() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let (_raw, mut payloads) = raw_changed_payloads(&test.url).await;
    let mut listener = Listener::start(&db).await.unwrap();

    // Realistic ids (16 digits) and the longest possible pairs (19 + 19 digits).
    let realistic: Vec<Job> = (0..2000)
        .map(|i| job(ID_BASE + i, 1 + i % 7, Processing, 1))
        .collect();
    let longest: Vec<Job> = (0..2000)
        .map(|i| job(i64::MAX as u64 - i, i64::MAX as u64 - 1, Processing, 1).user(i64::MAX as u64))
        .collect();
    for batch in [&realistic, &longest] {
        let refs: Vec<&Job> = batch.iter().collect();
        assert_eq!(write(&db, &refs).await, 2000);
        let expected: BTreeSet<(u64, u64, Option<u64>)> =
            batch.iter().map(|j| (j.id, j.version, j.user)).collect();

        let got = collect_payloads(&mut payloads, 2000).await;
        let total: usize = got.iter().map(String::len).sum();
        assert!(
            got.len() > total / 8000,
            "{} payloads for {total} bytes",
            got.len()
        );
        let mut pairs = BTreeSet::new();
        for payload in &got {
            assert!(payload.len() < 8000, "a payload of {} bytes", payload.len());
            for triple in payload.split(',') {
                let mut parts = triple.split(':');
                let (id, version, user) = (
                    parts.next().unwrap().parse().unwrap(),
                    parts.next().unwrap().parse().unwrap(),
                    parts.next().unwrap(),
                );
                let user = (!user.is_empty()).then(|| user.parse().unwrap());
                assert_eq!(parts.next(), None, "id:version:user");
                assert!(pairs.insert((id, version, user)));
            }
        }
        assert_eq!(pairs, expected);
        let short = got.iter().filter(|p| p.len() <= 7000).count();
        assert!(
            short <= 1,
            "payloads are packed: {short} of {} short",
            got.len()
        );

        // The listener passes on every pair.
        let mut notices = BTreeSet::new();
        for _ in 0..2000 {
            match next_notice(&mut listener).await {
                Notice::Changed { id, version, user } => {
                    assert!(notices.insert((id, version, user)))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(notices, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

#[tokio::test]
async fn list_is_newest_first_and_counts_add_up() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let jobs = [
        job(ID_BASE + 1, 1, Processing, 1).user(7),
        job(ID_BASE + 2, 2, Complete, 1).user(7),
        job(ID_BASE + 3, 2, Failed, 1).user(8),
        job(ID_BASE + 4, 1, Processing, 1),
        job(ID_BASE + 5, 1, Processing, 1).user(7),
    ];
    write(&db, &jobs.iter().collect::<Vec<_>>()).await;
    let ids = |list: Vec<asyncjobs::postgres::__db::StoredJob>| -> Vec<u64> {
        list.iter().map(|j| j.status.job_id.as_u64()).collect()
    };
    assert_eq!(
        ids(db.list(&JobFilter::new().started_by(7), 10).await.unwrap()),
        [ID_BASE + 5, ID_BASE + 2, ID_BASE + 1]
    );
    assert_eq!(
        ids(db
            .list(&JobFilter::new().state(Processing), 2)
            .await
            .unwrap()),
        [ID_BASE + 5, ID_BASE + 4]
    );
    assert_eq!(
        ids(db
            .list(&JobFilter::new().started_by(7).state(Complete), 10)
            .await
            .unwrap()),
        [ID_BASE + 2]
    );
    assert_eq!(ids(db.list(&JobFilter::new(), 100).await.unwrap()).len(), 5);
    assert!(db
        .list(&JobFilter::new().started_by(9), 10)
        .await
        .unwrap()
        .is_empty());
    let listed = db.list(&JobFilter::new().started_by(8), 1).await.unwrap();
    assert_eq!(listed[0].status, jobs[2].status());

    let counts = db.counts(&JobFilter::new()).await.unwrap();
    assert_eq!(
        (counts.processing, counts.complete, counts.failed),
        (3, 1, 1)
    );
}

/// A job's name is stored by the first write that carries one and never changed after (nor
/// cleared by a write without one), and read back by id.
#[tokio::test]
async fn names_are_stored_once_and_read_back_by_id() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let export = job(ID_BASE + 1, 1, Processing, 1).user(7);
    let unnamed = job(ID_BASE + 2, 1, Processing, 1).user(7);
    let late = job(ID_BASE + 3, 1, Processing, 1).user(7);
    db.write_batch(&[
        export.row().named(Some("export")),
        unnamed.row(),
        late.row(),
    ])
    .await
    .unwrap();
    // Later writes: without the name, with another one, and a first name for `late`.
    db.write_batch(&[
        export.clone().at(2, Processing).row(),
        late.clone().at(2, Processing).row().named(Some("late")),
    ])
    .await
    .unwrap();
    db.write_batch(&[export.clone().at(3, Complete).row().named(Some("renamed"))])
        .await
        .unwrap();

    assert_eq!(read(&db, export.id).await.name.as_deref(), Some("export"));
    assert_eq!(read(&db, unnamed.id).await.name, None);
    assert_eq!(read(&db, late.id).await.name.as_deref(), Some("late"));
    let mut names = db
        .names(&[export.id, unnamed.id, late.id, ID_BASE + 99, u64::MAX])
        .await
        .unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            (export.id, "export".to_owned()),
            (late.id, "late".to_owned())
        ]
    );
    assert!(db.names(&[]).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Cancellation

#[tokio::test]
async fn cancel_requests_report_what_they_found() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let owner = db
        .register_instance("owner", Duration::from_secs(60))
        .await
        .unwrap();
    let running = job(ID_BASE + 1, 3, Processing, owner).user(7);
    let finished = job(ID_BASE + 2, 5, Complete, owner).user(7);
    let anonymous = job(ID_BASE + 3, 1, Processing, owner);
    let canceling = job(ID_BASE + 4, 2, Processing, owner).user(7).canceling();
    write(&db, &[&running, &finished, &anonymous, &canceling]).await;
    let mut listener = Listener::start(&db).await.unwrap();

    assert_eq!(
        db.request_cancel(ID_BASE + 99, Some(7)).await.unwrap(),
        CancelRequest::UnknownJob
    );
    assert_eq!(
        db.request_cancel(running.id, Some(8)).await.unwrap(),
        CancelRequest::NotYourJob
    );
    assert_eq!(
        db.request_cancel(anonymous.id, Some(7)).await.unwrap(),
        CancelRequest::NotYourJob
    );
    assert_eq!(
        db.request_cancel(finished.id, Some(7)).await.unwrap(),
        CancelRequest::AlreadyFinished
    );
    // The owner already shows it canceling: nothing to ask.
    assert_eq!(
        db.request_cancel(canceling.id, Some(7)).await.unwrap(),
        CancelRequest::AlreadyRequested
    );
    assert_quiet(&mut listener).await;
    for id in [running.id, finished.id, anonymous.id, canceling.id] {
        assert!(!read(&db, id).await.cancel_requested, "job {id}");
    }

    assert_eq!(
        db.request_cancel(running.id, Some(7)).await.unwrap(),
        CancelRequest::Requested { owner }
    );
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Cancel {
            owner,
            id: running.id
        }
    );
    let stored = read(&db, running.id).await;
    assert!(stored.cancel_requested);
    // The status and version are the owner's to change.
    assert_eq!(stored.version, 3);
    assert_eq!(stored.status, running.status());
    assert_eq!(
        db.request_cancel(running.id, Some(7)).await.unwrap(),
        CancelRequest::AlreadyRequested
    );

    // An administrator may cancel anyone's job.
    assert_eq!(
        db.request_cancel(anonymous.id, None).await.unwrap(),
        CancelRequest::Requested { owner }
    );
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Cancel {
            owner,
            id: anonymous.id
        }
    );
    assert_quiet(&mut listener).await;

    // Eight at once: one is the request, the others find it made.
    let contested = job(ID_BASE + 5, 1, Processing, owner).user(7);
    write(&db, &[&contested]).await;
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Changed {
            id: contested.id,
            version: 1,
            user: contested.user,
        }
    );
    let contested_id = contested.id;
    let outcomes = futures_join_all((0..8).map(|_| {
        let db = db.clone();
        async move { db.request_cancel(contested_id, Some(7)).await.unwrap() }
    }))
    .await;
    let requested = outcomes
        .iter()
        .filter(|o| **o == CancelRequest::Requested { owner })
        .count();
    let already = outcomes
        .iter()
        .filter(|o| **o == CancelRequest::AlreadyRequested)
        .count();
    assert_eq!((requested, already), (1, 7));
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Cancel {
            owner,
            id: contested.id
        }
    );
    assert_quiet(&mut listener).await;
}

/// Runs the futures concurrently on this task's runtime and returns their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

#[tokio::test]
async fn cancels_for_lists_only_this_instances_pending_cancels() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let me = db
        .register_instance("me", Duration::from_secs(60))
        .await
        .unwrap();
    let other = db
        .register_instance("other", Duration::from_secs(60))
        .await
        .unwrap();
    let asked = job(ID_BASE + 1, 1, Processing, me);
    let not_asked = job(ID_BASE + 2, 1, Processing, me);
    let applied = job(ID_BASE + 3, 1, Processing, me);
    let finished = job(ID_BASE + 4, 1, Processing, me);
    let others = job(ID_BASE + 5, 1, Processing, other);
    write(&db, &[&asked, &not_asked, &applied, &finished, &others]).await;
    for j in [&asked, &applied, &finished, &others] {
        assert!(matches!(
            db.request_cancel(j.id, None).await.unwrap(),
            CancelRequest::Requested { .. }
        ));
    }
    // The owner has applied one cancel and finished another job.
    write(
        &db,
        &[
            &applied.clone().at(2, Processing).canceling(),
            &finished.clone().at(2, Failed).canceling(),
        ],
    )
    .await;

    assert_eq!(db.cancels_for(me).await.unwrap(), vec![asked.id]);
    assert_eq!(db.cancels_for(other).await.unwrap(), vec![others.id]);
    assert_eq!(
        db.cancels_for(other + 100).await.unwrap(),
        Vec::<u64>::new()
    );

    write(&db, &[&asked.clone().at(2, Processing).canceling()]).await;
    assert_eq!(db.cancels_for(me).await.unwrap(), Vec::<u64>::new());
    // The flag stays: a restarted listener or a late reader still sees it was asked.
    assert!(read(&db, asked.id).await.cancel_requested);
}

// ---------------------------------------------------------------------------------------------
// Instances and reaping

#[tokio::test]
async fn an_expired_instance_is_reaped_and_its_jobs_failed() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let live = db
        .register_instance("live", Duration::from_secs(60))
        .await
        .unwrap();
    // A lease of zero has run out by the time anyone looks.
    let dead = db.register_instance("dead", Duration::ZERO).await.unwrap();
    let started = Utc::now() - chrono::Duration::seconds(5);
    let lost = job(ID_BASE + 1, 3, Processing, dead)
        .user(7)
        .times(started, started + chrono::Duration::seconds(2));
    let done = job(ID_BASE + 2, 4, Complete, dead);
    let others = job(ID_BASE + 3, 2, Processing, live);
    write(&db, &[&lost, &done, &others]).await;
    let mut listener = Listener::start(&db).await.unwrap();

    let before = Utc::now().trunc_subsecs(3);
    assert_eq!(db.reap_dead_instances().await.unwrap(), vec![(lost.id, 4)]);
    let after = Utc::now();
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Changed {
            id: lost.id,
            version: 4,
            user: lost.user,
        }
    );
    assert_quiet(&mut listener).await;

    let stored = read(&db, lost.id).await;
    let status = &stored.status;
    assert_eq!(stored.version, 4);
    assert_eq!(status.job_state, Failed);
    assert_eq!(status.etag.to_string(), "4");
    assert_eq!(status.exception.as_deref(), Some(exception::NODE_LOST));
    assert_eq!(
        status.error_message.as_deref(),
        Some(
            format!("job's instance {dead} stopped renewing its lease, so the job was lost")
                .as_str()
        )
    );
    assert!(
        status.changed_on >= before && status.changed_on <= after,
        "{}",
        status.changed_on
    );
    assert_eq!(
        status.runtime_ms,
        (status.changed_on - status.started_on).num_milliseconds() as u64
    );
    // The rest of the status is as the owner left it.
    let left = lost.status();
    assert_eq!(status.started_on, left.started_on);
    assert_eq!(status.started_by_user_id, Some(7));
    assert_eq!(status.progress_current, Some(3));
    assert_eq!(status.progress_message, left.progress_message);
    assert_eq!(status.request_body, left.request_body);
    // The columns agree with the JSON.
    let raw = pg::connect(&test.url).await.unwrap();
    let row = raw
        .query_one(
            "SELECT state, changed_at, finished_at FROM asyncjobs_jobs WHERE id = $1",
            &[&(lost.id as i64)],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "FAILED");
    assert_eq!(row.get::<_, DateTime<Utc>>(1), status.changed_on);
    assert_eq!(
        row.get::<_, Option<DateTime<Utc>>>(2),
        Some(status.changed_on)
    );

    // The finished job and the live instance's job are untouched.
    assert_eq!(read(&db, done.id).await.status, done.status());
    assert_eq!(read(&db, others.id).await.status, others.status());
    assert!(!db.renew_lease(dead, Duration::from_secs(60)).await.unwrap());
    assert!(db.renew_lease(live, Duration::from_secs(60)).await.unwrap());
    assert_eq!(db.reap_dead_instances().await.unwrap(), vec![]);

    // The dead instance comes back and writes: its reaped job stays failed, and a job it
    // starts now is failed by the next reap, since no instance row owns it.
    assert_eq!(write(&db, &[&lost.clone().at(5, Processing)]).await, 0);
    let orphan = job(ID_BASE + 4, 1, Processing, dead);
    assert_eq!(write(&db, &[&orphan]).await, 1);
    assert_eq!(
        db.reap_dead_instances().await.unwrap(),
        vec![(orphan.id, 2)]
    );
    assert_eq!(read(&db, orphan.id).await.status.job_state, Failed);
}

#[tokio::test]
async fn concurrent_reapers_fail_each_job_once() {
    let test = pg::fresh_db().await;
    let (one, two) = (db(&test.url).await, db(&test.url).await);
    let mut expected = Vec::new();
    for n in 0..5u64 {
        let dead = one.register_instance("dead", Duration::ZERO).await.unwrap();
        let jobs: Vec<Job> = (0..40)
            .map(|i| job(ID_BASE + n * 100 + i, 2, Processing, dead))
            .collect();
        write(&one, &jobs.iter().collect::<Vec<_>>()).await;
        expected.extend(jobs.iter().map(|j| (j.id, 3)));
    }
    let (a, b) = tokio::join!(one.reap_dead_instances(), two.reap_dead_instances());
    let mut all: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    all.sort();
    assert_eq!(all, expected);
    for (id, _) in &expected {
        assert_eq!(read(&one, *id).await.version, 3);
    }
    assert_eq!(one.counts(&JobFilter::new()).await.unwrap().failed, 200);
}

#[tokio::test]
async fn a_released_instance_fails_what_it_left_running() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let me = db
        .register_instance("me", Duration::from_secs(60))
        .await
        .unwrap();
    let left = job(ID_BASE + 1, 2, Processing, me);
    let done = job(ID_BASE + 2, 2, Complete, me);
    write(&db, &[&left, &done]).await;
    assert_eq!(db.release_instance(me).await.unwrap(), vec![(left.id, 3)]);
    let status = read(&db, left.id).await.status;
    assert_eq!(status.job_state, Failed);
    assert_eq!(status.exception.as_deref(), Some(exception::NODE_LOST));
    assert_eq!(
        status.error_message.as_deref(),
        Some(format!("job's instance {me} stopped before the job finished").as_str())
    );
    assert_eq!(read(&db, done.id).await.status, done.status());
    assert!(!db.renew_lease(me, Duration::from_secs(60)).await.unwrap());
    assert_eq!(db.release_instance(me).await.unwrap(), vec![]);
}

// ---------------------------------------------------------------------------------------------
// Retention

#[tokio::test]
async fn retention_keeps_the_table_bounded_by_age_and_count() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let hours_ago = |h: i64| Utc::now() - chrono::Duration::hours(h);
    let mut next_id = ID_BASE;
    let mut make = |state, finished: DateTime<Utc>| {
        next_id += 1;
        job(next_id, 2, state, 1).times(finished - chrono::Duration::seconds(1), finished)
    };
    let old: Vec<Job> = (0..30).map(|_| make(Complete, hours_ago(2))).collect();
    let recent: Vec<Job> = (0..10)
        .map(|i| {
            make(
                if i % 2 == 0 { Complete } else { Failed },
                Utc::now() - chrono::Duration::seconds(60 - i),
            )
        })
        .collect();
    let running: Vec<Job> = (0..5).map(|_| make(Processing, hours_ago(3))).collect();
    let all: Vec<&Job> = old.iter().chain(&recent).chain(&running).collect();
    write(&db, &all).await;

    // By age, in batches of 7.
    assert_eq!(
        db.sweep_retention(Duration::from_secs(3600), 1000, 7)
            .await
            .unwrap(),
        30
    );
    let counts = db.counts(&JobFilter::new()).await.unwrap();
    assert_eq!(
        (counts.processing, counts.complete, counts.failed),
        (5, 5, 5)
    );

    // By count: the newest 4 finished stay.
    assert_eq!(
        db.sweep_retention(Duration::from_secs(3600), 4, 3)
            .await
            .unwrap(),
        6
    );
    let kept: BTreeSet<u64> = db
        .list(&JobFilter::new(), 100)
        .await
        .unwrap()
        .iter()
        .filter(|j| j.status.is_terminal())
        .map(|j| j.status.job_id.as_u64())
        .collect();
    let newest: BTreeSet<u64> = recent[6..].iter().map(|j| j.id).collect();
    assert_eq!(kept, newest);
    assert_eq!(db.counts(&JobFilter::new()).await.unwrap().processing, 5);

    // Under a steady inflow the table stays at the bound.
    for round in 0..5 {
        let batch: Vec<Job> = (0..100).map(|_| make(Complete, Utc::now())).collect();
        write(&db, &batch.iter().collect::<Vec<_>>()).await;
        let deleted = db
            .sweep_retention(Duration::from_secs(3600), 50, 16)
            .await
            .unwrap();
        assert_eq!(deleted, if round == 0 { 54 } else { 100 });
        let counts = db.counts(&JobFilter::new()).await.unwrap();
        assert_eq!(
            (counts.complete + counts.failed, counts.processing),
            (50, 5)
        );
    }
}

/// Issue 23, defect 6: the count applies to each instance's finished jobs, as each registry keeps
/// its own in memory. Counted over the whole table, three instances keeping 40 each kept 40 rows
/// in all, and the jobs their registries still held were unknown to the others.
#[tokio::test]
async fn retention_by_count_keeps_that_many_of_each_instance() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let mut next_id = ID_BASE;
    let mut jobs = Vec::new();
    for owner in 1..=3 {
        for n in 0..80 {
            next_id += 1;
            let finished = Utc::now() - chrono::Duration::seconds(100 - n);
            jobs.push(
                job(next_id, 2, Complete, owner)
                    .times(finished - chrono::Duration::seconds(1), finished),
            );
        }
    }
    write(&db, &jobs.iter().collect::<Vec<_>>()).await;
    assert_eq!(
        db.sweep_retention(Duration::from_secs(3600), 40, 16)
            .await
            .unwrap(),
        3 * 40
    );
    let kept: BTreeSet<u64> = db
        .list(&JobFilter::new(), 1000)
        .await
        .unwrap()
        .iter()
        .map(|j| j.status.job_id.as_u64())
        .collect();
    // The newest 40 of each instance's 80.
    let newest: BTreeSet<u64> = jobs
        .chunks(80)
        .flat_map(|of_one| of_one[40..].iter().map(|j| j.id))
        .collect();
    assert_eq!(kept, newest);
}

#[tokio::test]
async fn one_sweeper_works_at_a_time() {
    let test = pg::fresh_db().await;
    let (one, two) = (db(&test.url).await, db(&test.url).await);
    let long_ago = Utc::now() - chrono::Duration::hours(5);
    let old: Vec<Job> = (0..500)
        .map(|i| job(ID_BASE + i, 2, Complete, 1).times(long_ago, long_ago))
        .collect();
    write(&one, &old.iter().collect::<Vec<_>>()).await;

    // While another sweeper holds the lock, a sweep does nothing.
    let raw = pg::connect(&test.url).await.unwrap();
    raw.batch_execute("BEGIN").await.unwrap();
    raw.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&i64::from_be_bytes(*b"ajsweepr")],
    )
    .await
    .unwrap();
    assert_eq!(
        one.sweep_retention(Duration::from_secs(60), 10, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(one.counts(&JobFilter::new()).await.unwrap().complete, 500);
    raw.batch_execute("COMMIT").await.unwrap();

    // Two at once: one deletes everything, the other nothing.
    let keep = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        one.sweep_retention(keep, 1000, 10),
        two.sweep_retention(keep, 1000, 10)
    );
    let mut results = [a.unwrap(), b.unwrap()];
    results.sort();
    assert_eq!(results, [0, 500]);
    assert_eq!(one.counts(&JobFilter::new()).await.unwrap().total(), 0);
}

// ---------------------------------------------------------------------------------------------
// Request cache

#[tokio::test]
async fn find_cached_matches_user_key_and_body() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    // The jobs below are owner 1's: a live instance (a dead one's running jobs answer no request).
    let owner = db
        .register_instance("test", Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(owner, 1);
    let body = json!({"concreteType": "org.example.Query", "sql": "select 1", "args": [1, 2]});
    let same_body_reordered =
        json!({"args": [1, 2], "sql": "select 1", "concreteType": "org.example.Query"});
    let running = job(ID_BASE + 1, 1, Processing, 1)
        .user(7)
        .cached(42, body.clone());
    write(&db, &[&running]).await;

    assert_eq!(
        db.find_cached(Some(7), 42, Some(&same_body_reordered), FRESH)
            .await
            .unwrap(),
        Some(running.id)
    );
    let other_body =
        json!({"concreteType": "org.example.Query", "sql": "select 2", "args": [1, 2]});
    assert_eq!(
        db.find_cached(Some(7), 42, Some(&other_body), FRESH)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.find_cached(Some(8), 42, Some(&body), FRESH)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.find_cached(None, 42, Some(&body), FRESH).await.unwrap(),
        None
    );
    assert_eq!(
        db.find_cached(Some(7), 43, Some(&body), FRESH)
            .await
            .unwrap(),
        None
    );

    // Not once a cancel was requested.
    db.request_cancel(running.id, Some(7)).await.unwrap();
    assert_eq!(
        db.find_cached(Some(7), 42, Some(&body), FRESH)
            .await
            .unwrap(),
        None
    );

    // A COMPLETE one serves; FAILED and canceling ones do not, newer or not.
    let complete = job(ID_BASE + 2, 2, Complete, 1)
        .user(7)
        .cached(42, body.clone());
    let failed = job(ID_BASE + 3, 2, Failed, 1)
        .user(7)
        .cached(42, body.clone());
    let canceling = job(ID_BASE + 4, 2, Processing, 1)
        .user(7)
        .cached(42, body.clone())
        .canceling();
    write(&db, &[&complete, &failed, &canceling]).await;
    assert_eq!(
        db.find_cached(Some(7), 42, Some(&body), FRESH)
            .await
            .unwrap(),
        Some(complete.id)
    );
    // Not once it finished longer ago than the retention time.
    assert_eq!(
        db.find_cached(Some(7), 42, Some(&body), Duration::ZERO)
            .await
            .unwrap(),
        None
    );

    // The newest of several.
    let newer = job(ID_BASE + 5, 1, Processing, 1)
        .user(7)
        .cached(42, body.clone());
    write(&db, &[&newer]).await;
    assert_eq!(
        db.find_cached(Some(7), 42, Some(&body), FRESH)
            .await
            .unwrap(),
        Some(newer.id)
    );

    // Jobs of no user match requests of no user.
    let nobodys = job(ID_BASE + 6, 1, Complete, 1).cached(42, body.clone());
    write(&db, &[&nobodys]).await;
    assert_eq!(
        db.find_cached(None, 42, Some(&body), FRESH).await.unwrap(),
        Some(nobodys.id)
    );

    // A running job of an instance whose lease is gone answers nothing: it is about to fail.
    let orphan = job(ID_BASE + 7, 1, Processing, 99)
        .user(11)
        .cached(42, body.clone());
    write(&db, &[&orphan]).await;
    assert_eq!(
        db.find_cached(Some(11), 42, Some(&body), FRESH)
            .await
            .unwrap(),
        None
    );
}

/// How many lookups wait for a request-cache claim (an advisory lock not granted).
async fn waiting_for_a_claim(raw: &tokio_postgres::Client) -> i64 {
    raw.query_one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_holds_equal_lookups_until_it_is_settled_or_dropped() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    // The jobs below are owner 1's: a live instance (a dead one's running jobs answer no request).
    let owner = db
        .register_instance("test", Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(owner, 1);
    let raw = pg::connect(&test.url).await.unwrap();
    let body = json!({"concreteType": "org.example.Query", "sql": "select 1"});
    // Equal as JSON, its keys in another order: the same request.
    let reordered = json!({"sql": "select 1", "concreteType": "org.example.Query"});
    let lookup = |user: u64, body: &Value| {
        let (db, body) = (db.clone(), body.clone());
        tokio::spawn(async move { db.find_or_claim(Some(user), Some(&body), FRESH).await })
    };
    let waits = async |what: &str| {
        let deadline = std::time::Instant::now() + PATIENCE;
        while waiting_for_a_claim(&raw).await < 1 {
            assert!(std::time::Instant::now() < deadline, "{what} never waited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let CacheLookup::Claimed(claim) = db.find_or_claim(Some(7), Some(&body), FRESH).await.unwrap()
    else {
        panic!("nothing to find: a claim")
    };
    let key = claim.key();

    // An equal lookup waits on the claim; one of another body does not.
    let waiting = lookup(7, &reordered);
    waits("the equal lookup").await;
    assert!(!waiting.is_finished());
    let other = json!({"concreteType": "org.example.Query", "sql": "select 2"});
    let other_key = tokio::time::timeout(PATIENCE, lookup(7, &other))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&other_key, Ok(CacheLookup::Claimed(c)) if c.key() != key),
        "{other_key:?}"
    );
    drop(other_key);

    // Settled with the new job's row (its key set to the claim's): the waiter finds that job.
    let started = job(ID_BASE + 1, 1, Processing, 1)
        .user(7)
        .cached(0, body.clone());
    claim.settle(started.row()).await.unwrap();
    let found = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(found, Ok(CacheLookup::Found(id)) if id == started.id),
        "{found:?}"
    );
    assert_eq!(
        db.read(started.id).await.unwrap().unwrap().cache_key,
        Some(key)
    );

    // A claim dropped unsettled (its holder failed or was canceled) frees the key at once.
    let CacheLookup::Claimed(claim) = db.find_or_claim(Some(8), Some(&body), FRESH).await.unwrap()
    else {
        panic!("user 8 has no job: a claim")
    };
    assert_ne!(claim.key(), key, "the user is part of the key");
    let waiting = lookup(8, &body);
    waits("user 8's lookup").await;
    drop(claim);
    let next = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(next, Ok(CacheLookup::Claimed(_))), "{next:?}");
    drop(next);

    // A holder that stalls holds no one for long: an equal lookup gives up after 2 s, with an
    // error (its caller goes without the cache), and its connection is freed.
    let CacheLookup::Claimed(stalled) =
        db.find_or_claim(Some(9), Some(&body), FRESH).await.unwrap()
    else {
        panic!("user 9 has no job: a claim")
    };
    let asked = std::time::Instant::now();
    let gave_up = tokio::time::timeout(PATIENCE, lookup(9, &body))
        .await
        .unwrap()
        .unwrap();
    assert!(gave_up.is_err(), "{gave_up:?}");
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    drop(stalled);
    assert_eq!(waiting_for_a_claim(&raw).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Faults: each on a server of its own, which it stops.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_survives_a_server_restart() {
    let server = pg::private_server();
    let test = server.fresh_db().await;
    let db = db(&test.url).await;
    let mut listener = Listener::start(&db).await.unwrap();
    let a = job(ID_BASE + 1, 1, Processing, 1);
    write(&db, &[&a]).await;
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Changed {
            id: a.id,
            version: 1,
            user: a.user,
        }
    );

    tokio::task::block_in_place(|| server.restart());
    assert_eq!(next_notice(&mut listener).await, Notice::Reconnected);

    // Listening again, and the pool writes over new connections.
    let a2 = a.clone().at(2, Processing);
    assert_eq!(write(&db, &[&a2]).await, 1);
    assert_eq!(
        next_notice(&mut listener).await,
        Notice::Changed {
            id: a.id,
            version: 2,
            user: a.user,
        }
    );
    assert_quiet(&mut listener).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_an_outage_fails_clearly_then_succeeds() {
    let server = pg::private_server();
    let test = server.fresh_db().await;
    let db = db(&test.url).await;
    let a = job(ID_BASE + 1, 1, Processing, 1);
    write(&db, &[&a]).await;

    tokio::task::block_in_place(|| server.stop());
    // Let the pool's connection tasks see their connections close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a2 = a.clone().at(2, Processing);
    let e = db.write_batch(&[a2.row()]).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Connect);
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{}: connection refused",
            server.port()
        )
    );
    assert!(e.is_connection());

    tokio::task::block_in_place(|| server.start_again());
    assert_eq!(db.write_batch(&[a2.row()]).await.unwrap(), 1);
    assert_eq!(read(&db, a.id).await.version, 2);
}

/// Issue 23, defect 2: numbers come back from the database as they were written: the largest
/// float, one whose shortest form has 17 digits, and a tiny one.
#[tokio::test]
async fn numbers_in_a_status_survive_the_database() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let body = json!({
        "concreteType": "org.example.Request",
        "max": f64::MAX,
        "precise": 123_456_789.123_456_79_f64,
        "tiny": 5e-324_f64,
        "negative": -1.5e300_f64,
        "big integer": u64::MAX,
    });
    let mut stored = job(ID_BASE + 1, 2, Complete, 1);
    stored.body = body.clone();
    write(&db, &[&stored]).await;
    let read = read(&db, ID_BASE + 1).await;
    assert_eq!(read.status.request_body.as_deref(), Some(&body));
    assert_eq!(read.status, stored.status());
}

/// Issue 23, defect 1: PostgreSQL cannot store U+0000 (NUL), and one statement writes every due
/// status of an instance. A NUL anywhere in a status (a progress message, a request body's key or
/// value) or in a job's name is stored as U+FFFD, and the rows written with it are written too.
#[tokio::test]
async fn a_nul_in_a_status_is_stored_as_a_replacement_character_and_blocks_no_write() {
    let test = pg::fresh_db().await;
    let db = db(&test.url).await;
    let mut bad = job(ID_BASE + 1, 2, Processing, 1);
    bad.body = json!({"concreteType": "org.example.Request", "path\u{0}key": "a\u{0}b"});
    let good = job(ID_BASE + 2, 2, Processing, 1);
    let mut status = bad.status();
    status.progress_message = Some("step\u{0}1".into());
    let rows = [
        StatusRow::new(&status, 1, None).named(Some("nightly\u{0}export")),
        good.row(),
    ];
    assert_eq!(
        db.write_batch(&rows).await.unwrap(),
        2,
        "both rows are written"
    );
    let read_bad = read(&db, ID_BASE + 1).await;
    assert_eq!(
        read_bad.status.request_body.as_deref(),
        Some(&json!({"concreteType": "org.example.Request", "path\u{FFFD}key": "a\u{FFFD}b"}))
    );
    assert_eq!(
        read_bad.status.progress_message.as_deref(),
        Some("step\u{FFFD}1")
    );
    assert_eq!(read_bad.name.as_deref(), Some("nightly\u{FFFD}export"));
    assert_eq!(read(&db, ID_BASE + 2).await.status, good.status());
}
