//! Job ids.

use std::fmt;
use std::hash::Hasher;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The id of a job, unique within a registry and, by default, across restarts of the process.
///
/// On the wire (as in Synapse) an id is a string of decimal digits, e.g. `"9606497"`. Parsing
/// accepts only ASCII digits: no sign, no spaces, no other numerals, at most 20 of them and a value
/// that fits in a `u64`.
///
/// ```
/// use asyncjobs::JobId;
///
/// let id: JobId = "9606497".parse()?;
/// assert_eq!(id.to_string(), "9606497");
/// assert_eq!(id.as_u64(), 9_606_497);
/// assert!("-1".parse::<JobId>().is_err());
/// # Ok::<(), asyncjobs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(u64);

impl JobId {
    /// The id with this numeric value.
    pub const fn from_u64(value: u64) -> Self {
        JobId(value)
    }

    /// The id's numeric value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses 1 to 20 ASCII digits that fit in a `u64`; the public parse is `FromStr`.
    pub(crate) fn parse(s: &str) -> Option<JobId> {
        // u64::from_str alone would accept a leading '+'.
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u64>().ok().map(JobId)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for JobId {
    fn from(value: u64) -> Self {
        JobId(value)
    }
}

impl From<JobId> for u64 {
    fn from(id: JobId) -> Self {
        id.0
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    /// Accepts the wire form, a string of digits, and also a JSON integer.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = JobId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job id: a string of ascii digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JobId, E> {
                JobId::parse(v).ok_or_else(|| {
                    E::invalid_value(serde::de::Unexpected::Other("string of non-digits"), &self)
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<JobId, E> {
                Ok(JobId(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Mixes a `u64` key with one multiply-fold: job ids are ours and user ids the application's,
/// not an attacker's, so no keyed hash is needed, and all bits of the result depend on all bits
/// of the key.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let product = u128::from(n ^ self.0) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}
