//! Etags: what lets a poller tell "nothing new" from the etag alone.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version tag of one job's status.
///
/// A job's etag changes on every observable change of its status (progress, the canceling flag,
/// finishing) and never takes a value it had before; when nothing changed it stays the same. Etags
/// of different jobs are unrelated and may be equal: compare them only for the same job id.
///
/// The etags this crate makes are the job's change counter, so making one costs no allocation and
/// no random number (Synapse uses a random UUID). On the wire an etag is a string; any string
/// parses, so statuses sent by a Synapse server, whose etags are UUIDs, parse too. Two etags are
/// equal exactly when their strings are.
///
/// ```
/// use asyncjobs::Etag;
///
/// let a: Etag = "17".parse().unwrap();
/// let b: Etag = "6a0b5b8c-9f67-4c2a-8f1e-0c5f1e0d3a11".parse().unwrap();
/// assert_eq!(a.to_string(), "17");
/// assert_ne!(a, b);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Etag(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// A change counter, written in canonical decimal. Only canonical decimal strings parse into
    /// this variant, so that equality of etags is equality of their strings.
    Version(u64),
    Text(Arc<str>),
}

impl Etag {
    pub(crate) fn from_version(version: u64) -> Self {
        Etag(Repr::Version(version))
    }

    /// The change counter, for etags this crate made.
    pub(crate) fn version(&self) -> Option<u64> {
        match self.0 {
            Repr::Version(v) => Some(v),
            Repr::Text(_) => None,
        }
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Version(v) => fmt::Display::fmt(v, f),
            Repr::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Etag({self})")
    }
}

impl FromStr for Etag {
    type Err = std::convert::Infallible;

    /// Any string is an etag.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let canonical = !s.is_empty()
            && s.len() <= 20
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        Ok(match s.parse::<u64>() {
            Ok(v) if canonical => Etag(Repr::Version(v)),
            _ => Etag(Repr::Text(Arc::from(s))),
        })
    }
}

impl PartialEq<str> for Etag {
    fn eq(&self, other: &str) -> bool {
        match &self.0 {
            Repr::Version(v) => other
                .parse::<Etag>()
                .is_ok_and(|o| o.0 == Repr::Version(*v)),
            Repr::Text(t) => &**t == other,
        }
    }
}

impl PartialEq<&str> for Etag {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl Serialize for Etag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Version(_) => serializer.collect_str(self),
            Repr::Text(t) => serializer.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Etag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}
