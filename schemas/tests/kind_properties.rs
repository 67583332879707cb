//! Properties of kinds and kind patterns over generated input, against a plain model of the
//! rules written apart from the implementation: `*` is one segment, a final `>` one or more.

use proptest::prelude::*;
use swarm_schemas::{KindPattern, MAX_KIND_LEN, validate_kind};

/// One valid segment.
fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,8}"
}

/// A valid kind of 1 to 6 segments.
fn kind() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(segment(), 1..6)
}

/// A pattern segment: a literal from a small alphabet (so literals often match), or `*`.
fn pattern_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ab]{1,2}",
        1 => Just("*".to_owned()),
    ]
}

/// The model: does `pattern` (segments) match `kind` (segments)?
fn model_matches(pattern: &[String], kind: &[String]) -> bool {
    match (pattern.split_first(), kind.split_first()) {
        (None, None) => true,
        (Some((p, _)), _) if p == ">" => !kind.is_empty(),
        (Some((p, rest_p)), Some((k, rest_k))) => {
            (p == "*" || p == k) && model_matches(rest_p, rest_k)
        }
        _ => false,
    }
}

proptest! {
    #[test]
    fn every_well_formed_kind_is_valid_and_matches_itself(segments in kind()) {
        let text = segments.join(".");
        prop_assume!(text.len() <= MAX_KIND_LEN);
        prop_assert!(validate_kind(&text).is_ok());
        let pattern = KindPattern::parse(&text).expect("a kind is a pattern");
        prop_assert!(pattern.matches(&text));
    }

    #[test]
    fn matching_agrees_with_the_model(
        pattern in prop::collection::vec(pattern_segment(), 0..5),
        tail in prop::bool::ANY,
        kind in prop::collection::vec("[ab]{1,2}", 1..6),
    ) {
        let mut pattern = pattern;
        if tail || pattern.is_empty() {
            pattern.push(">".to_owned());
        }
        let text = pattern.join(".");
        let parsed = KindPattern::parse(&text).expect("a generated pattern parses");
        prop_assert_eq!(parsed.matches(&kind.join(".")), model_matches(&pattern, &kind));
    }

    #[test]
    fn any_text_is_refused_or_accepted_without_panicking(
        text in prop_oneof!["\\PC{0,40}", "[a-z.>*_A-]{0,24}"],
    ) {
        let valid = validate_kind(&text).is_ok();
        let model = !text.is_empty()
            && text.len() <= MAX_KIND_LEN
            && text.split('.').all(|s| {
                !s.is_empty() && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
            });
        prop_assert_eq!(valid, model);
        if let Ok(pattern) = KindPattern::parse(&text) {
            // What parses prints back as itself and reads back the same.
            prop_assert_eq!(pattern.to_string(), text.clone());
            let json = serde_json::to_string(&pattern).expect("serialises");
            let back: KindPattern = serde_json::from_str(&json).expect("reads back");
            prop_assert_eq!(back, pattern);
        }
    }

    #[test]
    fn a_greater_than_anywhere_but_last_is_refused(
        head in prop::collection::vec(segment(), 0..3),
        tail in prop::collection::vec(segment(), 1..3),
    ) {
        let mut segments = head;
        segments.push(">".to_owned());
        segments.extend(tail);
        prop_assert!(KindPattern::parse(&segments.join(".")).is_err());
    }
}
