//! Signal kinds (`order.placed`) and the patterns units subscribe with (`order.*`, `order.>`).
//!
//! A kind is one or more dot-separated segments of `[a-z0-9_-]`. In a pattern, `*` stands for
//! exactly one segment and a final `>` for one or more segments, as in NATS subjects.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a kind or a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// The text was empty.
    #[error("is empty")]
    Empty,
    /// A segment between dots was empty.
    #[error("`{0}` has an empty segment")]
    EmptySegment(String),
    /// A segment held a character outside `[a-z0-9_-]`.
    #[error(
        "`{text}` has an invalid segment `{segment}` (use lowercase letters, digits, `_` and `-`)"
    )]
    BadSegment {
        /// The whole kind or pattern.
        text: String,
        /// The offending segment.
        segment: String,
    },
    /// `>` was used somewhere other than the last segment.
    #[error("`{0}`: `>` may only be the last segment")]
    WildcardNotLast(String),
    /// Longer than [`MAX_KIND_LEN`].
    #[error("is longer than {MAX_KIND_LEN} bytes")]
    TooLong,
}

/// Longest accepted kind or pattern, in bytes.
pub const MAX_KIND_LEN: usize = 255;

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_len(text: &str) -> Result<(), KindError> {
    if text.is_empty() {
        return Err(KindError::Empty);
    }
    if text.len() > MAX_KIND_LEN {
        return Err(KindError::TooLong);
    }
    Ok(())
}

/// Checks that `kind` is a concrete signal kind (no wildcards).
pub fn validate_kind(kind: &str) -> Result<(), KindError> {
    check_len(kind)?;
    for segment in kind.split('.') {
        if segment.is_empty() {
            return Err(KindError::EmptySegment(kind.to_owned()));
        }
        if !valid_segment(segment) {
            return Err(KindError::BadSegment {
                text: kind.to_owned(),
                segment: segment.to_owned(),
            });
        }
    }
    Ok(())
}

/// A subscription pattern over signal kinds. Serialised as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KindPattern {
    text: String,
}

impl KindPattern {
    /// Parses a pattern such as `order.*` or `order.>`.
    pub fn parse(text: &str) -> Result<Self, KindError> {
        check_len(text)?;
        let segments: Vec<&str> = text.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            match *segment {
                "" => return Err(KindError::EmptySegment(text.to_owned())),
                "*" => {}
                ">" if i + 1 == segments.len() => {}
                ">" => return Err(KindError::WildcardNotLast(text.to_owned())),
                s if valid_segment(s) => {}
                s => {
                    return Err(KindError::BadSegment {
                        text: text.to_owned(),
                        segment: s.to_owned(),
                    });
                }
            }
        }
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a concrete `kind` matches this pattern.
    pub fn matches(&self, kind: &str) -> bool {
        let mut kind_segments = kind.split('.');
        for pattern_segment in self.text.split('.') {
            match pattern_segment {
                ">" => return kind_segments.next().is_some(),
                "*" => {
                    if kind_segments.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if kind_segments.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        kind_segments.next().is_none()
    }
}

impl fmt::Display for KindPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for KindPattern {
    type Error = KindError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<KindPattern> for String {
    fn from(pattern: KindPattern) -> Self {
        pattern.text
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for KindPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KindPattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A pattern over signal kinds: dot-separated segments, `*` for one segment, a final `>` for one or more.",
            "pattern": "^([a-z0-9_-]+|\\*)(\\.([a-z0-9_-]+|\\*))*(\\.>)?$|^>$",
            "maxLength": MAX_KIND_LEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> KindPattern {
        KindPattern::parse(text).expect("valid pattern")
    }

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(p("order.placed").matches("order.placed"));
        assert!(!p("order.placed").matches("order.placed.late"));
        assert!(!p("order.placed").matches("order"));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(p("order.*").matches("order.placed"));
        assert!(!p("order.*").matches("order"));
        assert!(!p("order.*").matches("order.placed.late"));
        assert!(p("*.placed").matches("order.placed"));
    }

    #[test]
    fn tail_wildcard_matches_one_or_more_segments() {
        assert!(p("order.>").matches("order.placed"));
        assert!(p("order.>").matches("order.placed.late"));
        assert!(!p("order.>").matches("order"));
        assert!(p(">").matches("anything.at.all"));
    }

    #[test]
    fn bad_patterns_and_kinds_are_refused_with_the_reason() {
        assert_eq!(
            KindPattern::parse("order.>.x"),
            Err(KindError::WildcardNotLast("order.>.x".into()))
        );
        assert_eq!(
            KindPattern::parse("order..x"),
            Err(KindError::EmptySegment("order..x".into()))
        );
        assert!(matches!(
            KindPattern::parse("Order.x"),
            Err(KindError::BadSegment { .. })
        ));
        assert_eq!(validate_kind(""), Err(KindError::Empty));
        assert!(validate_kind("order.*").is_err());
        assert!(validate_kind("order.placed").is_ok());
        assert_eq!(validate_kind(&"a".repeat(300)), Err(KindError::TooLong));
    }

    #[test]
    fn patterns_round_trip_through_json_and_refuse_bad_text() {
        let json = serde_json::to_string(&p("order.*")).expect("serialise");
        assert_eq!(json, "\"order.*\"");
        assert!(serde_json::from_str::<KindPattern>("\"a..b\"").is_err());
    }
}
