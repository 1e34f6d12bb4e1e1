//! The store's error type.

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// What went wrong talking to PostgreSQL: connecting (the message names the server's
/// `host:port`), creating or upgrading the tables, or running a query.
///
/// The message is short, lowercase and names the cause, e.g. `cannot connect to PostgreSQL at
/// 127.0.0.1:5999: connection refused`; [`source`](StdError::source) gives the driver's error.
/// A URL's password never appears in a message.
pub struct StoreError {
    kind: StoreErrorKind,
    /// The server for [`StoreErrorKind::Connect`]; what was being done for the other kinds.
    context: String,
    /// The root cause in a few lowercase words.
    cause: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// Which step failed, from [`StoreError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The connection URL does not parse, or names no server. Fix the URL; retrying cannot help.
    BadUrl,
    /// No connection to the server could be made (refused, timed out, authentication failed,
    /// no such database). Retrying later may help: the server may be restarting.
    Connect,
    /// Creating or upgrading the store's tables failed, or the database was set up by a newer
    /// version of this crate.
    Migrate,
    /// A statement failed or the connection broke while it ran. The operation may or may not have
    /// taken effect when the connection broke; every write of the store can safely be repeated.
    Query,
    /// A stored row does not read back as a job status (written by something else, or damaged).
    Decode,
}

impl StoreError {
    /// Which step failed.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// True when the server could not be reached, or the connection broke: retrying later may
    /// succeed.
    pub fn is_connection(&self) -> bool {
        match self.kind {
            StoreErrorKind::Connect => true,
            StoreErrorKind::Query => self
                .source
                .as_deref()
                .and_then(|e| e.downcast_ref::<tokio_postgres::Error>())
                .is_some_and(|e| e.is_closed() || root_is_io(e)),
            _ => false,
        }
    }

    pub(crate) fn bad_url(source: tokio_postgres::Error) -> Self {
        StoreError {
            kind: StoreErrorKind::BadUrl,
            context: String::new(),
            cause: cause_of(&source),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn bad_url_because(cause: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::BadUrl,
            context: String::new(),
            cause: cause.into(),
            source: None,
        }
    }

    pub(crate) fn connect(addr: &str, source: tokio_postgres::Error) -> Self {
        StoreError {
            kind: StoreErrorKind::Connect,
            context: addr.to_owned(),
            cause: cause_of(&source),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn connect_because(addr: &str, cause: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Connect,
            context: addr.to_owned(),
            cause: cause.into(),
            source: None,
        }
    }

    pub(crate) fn migrate(source: tokio_postgres::Error) -> Self {
        StoreError {
            kind: StoreErrorKind::Migrate,
            context: String::new(),
            cause: cause_of(&source),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn migrate_because(cause: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Migrate,
            context: String::new(),
            cause: cause.into(),
            source: None,
        }
    }

    /// `what` completes "cannot …", e.g. "write job statuses".
    pub(crate) fn query(what: &str, source: tokio_postgres::Error) -> Self {
        StoreError {
            kind: StoreErrorKind::Query,
            context: what.to_owned(),
            cause: cause_of(&source),
            source: Some(Box::new(source)),
        }
    }

    /// A query refused before it was sent, e.g. for a value out of the column's range.
    pub(crate) fn query_because(what: &str, cause: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Query,
            context: what.to_owned(),
            cause: cause.into(),
            source: None,
        }
    }

    pub(crate) fn decode(what: String, source: serde_json::Error) -> Self {
        StoreError {
            kind: StoreErrorKind::Decode,
            context: what,
            cause: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn decode_because(what: String, cause: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Decode,
            context: what,
            cause: cause.into(),
            source: None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let StoreError { context, cause, .. } = self;
        match self.kind {
            StoreErrorKind::BadUrl => write!(f, "invalid PostgreSQL url: {cause}"),
            StoreErrorKind::Connect => {
                write!(f, "cannot connect to PostgreSQL at {context}: {cause}")
            }
            StoreErrorKind::Migrate => write!(f, "cannot set up the asyncjobs tables: {cause}"),
            StoreErrorKind::Query | StoreErrorKind::Decode => {
                write!(f, "cannot {context}: {cause}")
            }
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("message", &self.to_string())
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// The root cause of a driver error in a few lowercase words: the server's message for an error
/// the server sent, the OS error's for a failed connect, else the driver's own text.
fn cause_of(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db.message().to_owned();
    }
    if error.is_closed() {
        return "connection closed".to_owned();
    }
    let mut deepest: &(dyn StdError + 'static) = error;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    if let Some(io) = deepest.downcast_ref::<io::Error>() {
        return io_cause(io);
    }
    lowercase_first(&deepest.to_string())
}

fn root_is_io(error: &tokio_postgres::Error) -> bool {
    let mut deepest: &(dyn StdError + 'static) = error;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    deepest.is::<io::Error>()
}

fn io_cause(error: &io::Error) -> String {
    let text = match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::TimedOut => "timed out",
        io::ErrorKind::NotFound => "no such socket",
        io::ErrorKind::UnexpectedEof => "connection closed",
        _ => {
            // "Network is unreachable (os error 101)" -> "network is unreachable"
            let text = error.to_string();
            let text = match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            return lowercase_first(&text);
        }
    };
    text.to_owned()
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_causes_are_short_and_lowercase() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_cause(&refused), "connection refused");
        let other = io::Error::from_raw_os_error(101);
        assert_eq!(io_cause(&other), "network is unreachable");
    }

    #[test]
    fn connect_message_names_the_server() {
        let e = StoreError::connect_because("127.0.0.1:5999", "connection refused");
        assert_eq!(
            e.to_string(),
            "cannot connect to PostgreSQL at 127.0.0.1:5999: connection refused"
        );
        assert_eq!(e.kind(), StoreErrorKind::Connect);
        assert!(e.is_connection());
    }
}
