//! Entry ids: `<milliseconds>-<sequence>`, ordered, as in Redis Streams.

use std::fmt;
use std::str::FromStr;

/// Position of an entry in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds since the Unix epoch when the entry was added.
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

impl EntryId {
    /// The id before every entry (`0-0`).
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// The id that follows `self`.
    pub fn next(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why text is not an entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stream entry id (expected `<ms>-<seq>`)")]
pub struct BadEntryId(pub String);

impl FromStr for EntryId {
    type Err = BadEntryId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadEntryId(text.to_owned());
        let (ms, seq) = text.split_once('-').ok_or_else(bad)?;
        Ok(EntryId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_format_and_parse() {
        let a = EntryId { ms: 5, seq: 9 };
        assert!(a < a.next());
        assert!(
            EntryId {
                ms: 5,
                seq: u64::MAX
            }
            .next()
                == EntryId { ms: 6, seq: 0 }
        );
        assert_eq!(a.to_string().parse::<EntryId>(), Ok(a));
        assert!("5".parse::<EntryId>().is_err());
        assert!("x-1".parse::<EntryId>().is_err());
    }
}
