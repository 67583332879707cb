//! Reading Redis replies (RESP2 values) into entries, ids and group state. Nothing here trusts
//! the shape of a reply: anything unexpected becomes an error or an undecodable entry.

use std::sync::Arc;

use redis::Value;
use swarm_schemas::{Encoding, Signal};

use crate::{Body, EntryId, MeshError, Undecodable};

/// The field of a signal entry that holds its JSON.
pub(crate) const JSON_FIELD: &str = "s";
/// The field of a signal entry that holds it in MessagePack.
pub(crate) const MSGPACK_FIELD: &str = "m";

/// The field a signal of `encoding` is stored in.
pub(crate) fn field_for(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => JSON_FIELD,
        Encoding::MessagePack => MSGPACK_FIELD,
    }
}

pub(crate) fn unexpected(what: &str, value: &Value) -> MeshError {
    MeshError::Unavailable(format!("unexpected reply to {what}: {value:?}"))
}

pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

pub(crate) fn entry_id(value: &Value) -> Option<EntryId> {
    match value {
        // The common case, read without a copy.
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        other => text(other)?.parse().ok(),
    }
}

/// Whether `value` is the text `key`.
fn is_text(value: &Value, key: &str) -> bool {
    match value {
        Value::BulkString(bytes) => bytes == key.as_bytes(),
        Value::SimpleString(s) => s == key,
        Value::VerbatimString { text, .. } => text == key,
        _ => false,
    }
}

pub(crate) fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => Some(items),
        _ => None,
    }
}

/// Looks a key up in a flat `[k1, v1, k2, v2…]` array or a RESP3 map.
pub(crate) fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Map(pairs) => pairs.iter().find(|(k, _)| is_text(k, key)).map(|(_, v)| v),
        other => array(other)?
            .chunks(2)
            .find(|kv| is_text(&kv[0], key))
            .and_then(|kv| kv.get(1)),
    }
}

/// The data of an entry: the signal in its `s` field, or what could not be decoded. A nil
/// field list is an entry whose data was trimmed while it was pending.
pub(crate) fn body(fields: &Value) -> Body {
    if matches!(fields, Value::Nil) {
        return Err(Undecodable {
            raw: String::new(),
            error: "entry data was trimmed".into(),
        });
    }
    let not_a_signal = |bytes: &[u8], e: String| Undecodable {
        raw: String::from_utf8_lossy(bytes).into_owned(),
        error: format!("not a signal: {e}"),
    };
    if let Some(Value::BulkString(bytes)) = field(fields, JSON_FIELD) {
        return serde_json::from_slice(bytes).map_err(|e| not_a_signal(bytes, e.to_string()));
    }
    if let Some(Value::BulkString(bytes)) = field(fields, MSGPACK_FIELD) {
        return rmp_serde::from_slice::<Signal>(bytes)
            .map(|signal| signal.with_encoding(Encoding::MessagePack))
            .map_err(|e| not_a_signal(bytes, format!("MessagePack: {e}")));
    }
    let raw = array(fields)
        .map(|items| items.iter().filter_map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    Err(Undecodable {
        raw,
        error: format!(
            "entry has no `{JSON_FIELD}` (JSON) or `{MSGPACK_FIELD}` (MessagePack) field"
        ),
    })
}

/// An entry's body, and its JSON as read when it decoded from JSON (see
/// [`Delivery::json`](crate::Delivery::json)).
pub(crate) type BodyAndJson = (Body, Option<Arc<[u8]>>);

/// Decodes an entry's fields into a [`BodyAndJson`].
pub(crate) fn body_and_json(fields: &Value) -> BodyAndJson {
    let body = body(fields);
    let json = match (&body, field(fields, JSON_FIELD)) {
        (Ok(_), Some(Value::BulkString(bytes))) => Some(Arc::from(bytes.as_slice())),
        _ => None,
    };
    (body, json)
}

/// `[[id, fields]…]` into entries.
pub(crate) fn entries(value: &Value) -> Result<Vec<(EntryId, Body)>, MeshError> {
    entries_with(value, body)
}

/// `[[id, fields]…]` into entries, each entry's fields decoded by `decode`.
pub(crate) fn entries_with<T>(
    value: &Value,
    decode: fn(&Value) -> T,
) -> Result<Vec<(EntryId, T)>, MeshError> {
    let Some(items) = array(value) else {
        return if matches!(value, Value::Nil) {
            Ok(Vec::new())
        } else {
            Err(unexpected("an entry list", value))
        };
    };
    items
        .iter()
        .map(|item| {
            let pair = array(item)
                .filter(|p| p.len() == 2)
                .ok_or_else(|| unexpected("an entry", item))?;
            let id = entry_id(&pair[0]).ok_or_else(|| unexpected("an entry id", &pair[0]))?;
            Ok((id, decode(&pair[1])))
        })
        .collect()
}

/// The entries of the one stream in an XREADGROUP reply (nil when the wait timed out).
pub(crate) fn read_reply(value: &Value) -> Result<Vec<(EntryId, Body)>, MeshError> {
    read_reply_with(value, body)
}

/// [`read_reply`], each entry's fields decoded by `decode`.
pub(crate) fn read_reply_with<T>(
    value: &Value,
    decode: fn(&Value) -> T,
) -> Result<Vec<(EntryId, T)>, MeshError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => pairs.first().map_or(Ok(Vec::new()), |(_, entries_value)| {
            entries_with(entries_value, decode)
        }),
        other => {
            let streams = array(other).ok_or_else(|| unexpected("XREADGROUP", other))?;
            let Some(stream) = streams.first() else {
                return Ok(Vec::new());
            };
            let pair = array(stream)
                .filter(|p| p.len() == 2)
                .ok_or_else(|| unexpected("XREADGROUP", stream))?;
            entries_with(&pair[1], decode)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_without_the_signal_field_or_with_garbage_are_undecodable_not_errors() {
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("x"), bulk("y")])]),
            Value::Array(vec![
                bulk("1-1"),
                Value::Array(vec![bulk("s"), bulk("{oops")]),
            ]),
            Value::Array(vec![bulk("1-2"), Value::Nil]),
        ]);
        let got = entries(&reply).expect("parsed");
        assert_eq!(got.len(), 3);
        let errors: Vec<String> = got
            .iter()
            .map(|(_, b)| b.clone().expect_err("undecodable").error)
            .collect();
        assert_eq!(
            errors[0],
            "entry has no `s` (JSON) or `m` (MessagePack) field"
        );
        assert!(errors[1].starts_with("not a signal"));
        assert_eq!(errors[2], "entry data was trimmed");
        assert_eq!(got[1].1.clone().expect_err("undecodable").raw, "{oops");
    }

    #[test]
    fn a_json_signal_keeps_its_bytes_and_nothing_else_does() {
        let signal = Signal::new("order.placed", serde_json::json!({"id": 7}));
        let json = serde_json::to_vec(&signal).expect("encodes");
        let fields =
            |name: &str, bytes: Vec<u8>| Value::Array(vec![bulk(name), Value::BulkString(bytes)]);
        let (body, kept) = body_and_json(&fields("s", json.clone()));
        assert_eq!(body, Ok(signal.clone()));
        assert_eq!(kept.as_deref(), Some(json.as_slice()));
        let packed = rmp_serde::to_vec_named(&signal).expect("encodes");
        let (body, kept) = body_and_json(&fields("m", packed));
        assert!(body.is_ok());
        assert_eq!(kept, None, "MessagePack is encoded again for the unit");
        let (body, kept) = body_and_json(&fields("s", b"{oops".to_vec()));
        assert!(body.is_err());
        assert_eq!(kept, None, "an undecodable entry never reaches a unit");
    }

    #[test]
    fn messagepack_entries_decode_with_their_encoding_and_garbage_is_undecodable() {
        let signal = Signal::new(
            "order.placed",
            serde_json::json!({"id": 7, "items": [1.5, "x"]}),
        )
        .with_encoding(Encoding::MessagePack);
        let bytes = rmp_serde::to_vec_named(&signal).expect("encodes");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&bytes).is_err(),
            "MessagePack, not JSON"
        );
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("m"), Value::BulkString(bytes)]),
            ]),
            Value::Array(vec![
                bulk("1-1"),
                Value::Array(vec![bulk("m"), Value::BulkString(vec![0xc1, 0xff, 0x00])]),
            ]),
        ]);
        let got = entries(&reply).expect("parsed");
        assert_eq!(got[0].1, Ok(signal));
        let error = got[1].1.clone().expect_err("undecodable").error;
        assert!(error.starts_with("not a signal: MessagePack"), "{error}");
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(entries(&Value::Int(3)).is_err());
        assert!(entries(&Value::Array(vec![Value::Int(3)])).is_err());
        assert!(
            read_reply(&Value::Nil)
                .expect("nil is a timeout")
                .is_empty()
        );
    }
}
