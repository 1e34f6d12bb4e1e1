//! Notifications between instances, over PostgreSQL's LISTEN/NOTIFY.
//!
//! Two channels:
//!
//! | channel | payload | sent by |
//! |---|---|---|
//! | `asyncjobs_changed` | `id:version:user,id:version:user,…` (`user` empty for a job of no user) | every statement that writes statuses ([`Db::write_batch`], [`Db::reap_dead_instances`], [`Db::release_instance`]), in the same transaction |
//! | `asyncjobs_cancel` | `owner:id` | [`Db::request_cancel`] when it sets a job's `cancel_requested` |
//!
//! PostgreSQL delivers a notification after its transaction commits, to every session then
//! listening (the sender's own included), and drops it for a session that is not connected at
//! that moment: a listener that reconnects must resynchronise from the tables. The driver
//! (tokio-postgres) hands notifications out of `Connection::poll_message`, so the [`Listener`]'s
//! task owns its connection and polls it itself rather than spawning it as pooled connections
//! are.

use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::{Db, StoreError};

/// A CTE named `notified` that notifies `asyncjobs_changed` with the rows of the CTE
/// `written(id, version, user_id)`, as comma-separated `id:version:user` triples in id order
/// (the user, empty for none, lets a listener keep one user's changes without reading them).
///
/// PostgreSQL refuses payloads of 8000 bytes or more, so the triples are split by their running
/// length: a triple joins chunk `floor((end - 1) / 7900)`, where `end` counts the bytes up to and
/// including it and its comma. A chunk then spans at most 7900 bytes plus the one triple that
/// straddles its start (at most 60 bytes: three 19-digit numbers and two colons), so below 8000.
pub(super) const NOTIFY_WRITTEN: &str = "
notified AS (
    SELECT pg_notify('asyncjobs_changed', string_agg(pair, ',' ORDER BY id))
    FROM (
        SELECT id, pair, (sum(length(pair) + 1) OVER (ORDER BY id) - 1) / 7900 AS chunk
        FROM (SELECT id, id || ':' || version || ':' || coalesce(user_id::text, '') AS pair
              FROM written) AS pairs
    ) AS chunked
    GROUP BY chunk
)";

const LISTEN: &str = "LISTEN asyncjobs_changed; LISTEN asyncjobs_cancel";

/// How many notices the [`Listener`] holds for a slow reader before it drops them and reports
/// [`Notice::Lagged`].
const CAPACITY: usize = 8192;

/// The first wait before reconnecting; it doubles on each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How soon an idle listening connection to a vanished server is noticed (TCP keepalive),
/// when the URL does not set `keepalives_idle`: the driver's default is two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// What a [`Listener`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// Job `id`'s stored status now has `version` (`asyncjobs_changed`).
    Changed {
        /// The job.
        id: u64,
        /// The version written.
        version: u64,
        /// Who started the job; `None` for no user (or a notice of an older build, which
        /// sent none).
        user: Option<u64>,
    },
    /// Someone asked to cancel job `id`, run by instance `owner` (`asyncjobs_cancel`).
    Cancel {
        /// The instance running the job.
        owner: u64,
        /// The job.
        id: u64,
    },
    /// The listening connection broke and has been made again, and is listening again.
    /// Notifications sent while it was down are lost: resynchronise from the tables
    /// (e.g. [`Db::cancels_for`], and re-read the jobs being watched).
    Reconnected,
    /// The reader fell more than a few thousand notices behind and some were dropped:
    /// resynchronise as after [`Reconnected`](Notice::Reconnected).
    Lagged,
}

/// A task holding one connection of its own (not from the pool) that listens on
/// `asyncjobs_changed` and `asyncjobs_cancel` and passes on what arrives as [`Notice`]s.
///
/// When the connection breaks, the task reconnects with backoff (50 ms doubling to 2 s) until
/// it succeeds, then reports [`Notice::Reconnected`]. It never gives up.
///
/// Dropping the `Listener` stops the task and closes its connection.
#[derive(Debug)]
pub struct Listener {
    notices: mpsc::Receiver<Notice>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Connects, starts listening, and returns once `LISTEN` has taken effect: every
    /// notification committed after this returns is reported (while connected).
    ///
    /// Must be called within a tokio runtime; the task runs on it.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the first connection or the `LISTEN` fails (later failures are
    /// retried by the task).
    pub async fn start(db: &Db) -> Result<Listener, StoreError> {
        let mut config = db.config().clone();
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        let addr = db.addr().to_owned();
        let (sender, notices) = mpsc::channel(CAPACITY);
        let mut out = Out {
            sender,
            lagged: false,
        };
        let session = Session::open(&config, &addr, &mut out).await?;
        let task = tokio::spawn(async move {
            let mut session = Some(session);
            let mut backoff = MIN_BACKOFF;
            loop {
                if let Some(live) = session.take() {
                    live.run(&mut out).await;
                }
                if out.sender.is_closed() {
                    return;
                }
                match Session::open(&config, &addr, &mut out).await {
                    Ok(live) => {
                        backoff = MIN_BACKOFF;
                        out.send(Notice::Reconnected);
                        session = Some(live);
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
        Ok(Listener { notices, task })
    }

    /// The next notice; `None` only if the task has stopped (it panicked).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a notice is removed only when this returns it.
    pub async fn recv(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }

    /// A notice if one is waiting.
    pub fn try_recv(&mut self) -> Option<Notice> {
        self.notices.try_recv().ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sending side: never waits for the reader, so the connection is always drained and the
/// server's notification queue (shared by the whole database) cannot fill up because of us.
struct Out {
    sender: mpsc::Sender<Notice>,
    /// Notices were dropped and [`Notice::Lagged`] is yet to be delivered.
    lagged: bool,
}

impl Out {
    fn send(&mut self, notice: Notice) {
        if self.lagged {
            if self.sender.try_send(Notice::Lagged).is_err() {
                return;
            }
            self.lagged = false;
        }
        if self.sender.try_send(notice).is_err() {
            self.lagged = true;
        }
    }
}

/// One listening connection.
struct Session {
    // Dropping the client would close the connection.
    _client: Client,
    connection:
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
}

impl Session {
    async fn open(config: &Config, addr: &str, out: &mut Out) -> Result<Session, StoreError> {
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::connect(addr, e))?;
        // The LISTEN's reply arrives through the connection, which only moves when polled.
        {
            let listen = client.batch_execute(LISTEN);
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    done = &mut listen => {
                        done.map_err(|e| StoreError::query("listen for notifications", e))?;
                        break;
                    }
                    message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                        Some(Ok(message)) => forward(message, out),
                        Some(Err(e)) => {
                            return Err(StoreError::query("listen for notifications", e))
                        }
                        None => return Err(StoreError::connect_because(addr, "connection closed")),
                    },
                }
            }
        }
        Ok(Session {
            _client: client,
            connection,
        })
    }

    /// Passes on notifications until the connection ends.
    async fn run(mut self, out: &mut Out) {
        while let Some(Ok(message)) = poll_fn(|cx| self.connection.poll_message(cx)).await {
            forward(message, out);
        }
    }
}

fn forward(message: AsyncMessage, out: &mut Out) {
    let AsyncMessage::Notification(n) = message else {
        return;
    };
    match n.channel() {
        "asyncjobs_changed" => {
            for (id, version, user) in changes(n.payload()) {
                out.send(Notice::Changed { id, version, user });
            }
        }
        "asyncjobs_cancel" => {
            if let Some((owner, id)) = pairs(n.payload()).next() {
                out.send(Notice::Cancel { owner, id });
            }
        }
        _ => {}
    }
}

/// The `id:version:user` triples of an `asyncjobs_changed` payload (`id:version` from a build
/// before users were sent); malformed ones are skipped.
fn changes(payload: &str) -> impl Iterator<Item = (u64, u64, Option<u64>)> + '_ {
    payload.split(',').filter_map(|triple| {
        let mut parts = triple.split(':');
        let id = parts.next()?.parse().ok()?;
        let version = parts.next()?.parse().ok()?;
        let user = match parts.next() {
            None | Some("") => None,
            Some(user) => Some(user.parse().ok()?),
        };
        parts.next().is_none().then_some((id, version, user))
    })
}

/// The `a:b` pairs of a comma-separated payload; malformed pairs are skipped (only this crate
/// sends on these channels, but anyone with access to the database could).
fn pairs(payload: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    payload.split(',').filter_map(|pair| {
        let (a, b) = pair.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_notices_carry_id_version_and_user() {
        let parsed: Vec<_> = changes("1:2:7,3:4:,5:6,x:1:1,8:9:10:11,12:13:u").collect();
        assert_eq!(parsed, [(1, 2, Some(7)), (3, 4, None), (5, 6, None)]);
    }

    #[test]
    fn payloads_parse_and_malformed_pairs_are_skipped() {
        let got: Vec<_> = pairs("1:2,30:40").collect();
        assert_eq!(got, vec![(1, 2), (30, 40)]);
        let got: Vec<_> = pairs("1:2,x:3,4,5:6,").collect();
        assert_eq!(got, vec![(1, 2), (5, 6)]);
        assert_eq!(pairs("").count(), 0);
    }

    #[test]
    fn a_slow_reader_gets_lagged_once_then_the_rest() {
        let (sender, mut rx) = mpsc::channel(2);
        let mut out = Out {
            sender,
            lagged: false,
        };
        for id in 0..5 {
            out.send(Notice::Changed {
                id,
                version: 1,
                user: None,
            });
        }
        assert_eq!(
            rx.try_recv(),
            Ok(Notice::Changed {
                id: 0,
                version: 1,
                user: None
            })
        );
        assert_eq!(
            rx.try_recv(),
            Ok(Notice::Changed {
                id: 1,
                version: 1,
                user: None
            })
        );
        assert!(rx.try_recv().is_err());
        out.send(Notice::Changed {
            id: 9,
            version: 1,
            user: None,
        });
        assert_eq!(rx.try_recv(), Ok(Notice::Lagged));
        assert_eq!(
            rx.try_recv(),
            Ok(Notice::Changed {
                id: 9,
                version: 1,
                user: None
            })
        );
    }
}
