//! Reading Redis replies (RESP2 values) into entries, ids and group state. Nothing here trusts
//! the shape of a reply: anything unexpected becomes an error or an undecodable entry.

use redis::Value;

use crate::{Body, EntryId, MeshError, Undecodable};

/// The one field a signal entry has: its JSON.
pub(crate) const SIGNAL_FIELD: &str = "s";

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
    text(value)?.parse().ok()
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
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(key))
            .map(|(_, v)| v),
        other => array(other)?
            .chunks(2)
            .find(|kv| text(&kv[0]).as_deref() == Some(key))
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
    match field(fields, SIGNAL_FIELD) {
        Some(Value::BulkString(bytes)) => serde_json::from_slice(bytes).map_err(|e| Undecodable {
            raw: String::from_utf8_lossy(bytes).into_owned(),
            error: format!("not a signal: {e}"),
        }),
        _ => {
            let raw = array(fields)
                .map(|items| items.iter().filter_map(text).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            Err(Undecodable {
                raw,
                error: format!("entry has no `{SIGNAL_FIELD}` field"),
            })
        }
    }
}

/// `[[id, fields]…]` into entries.
pub(crate) fn entries(value: &Value) -> Result<Vec<(EntryId, Body)>, MeshError> {
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
            Ok((id, body(&pair[1])))
        })
        .collect()
}

/// The entries of the one stream in an XREADGROUP reply (nil when the wait timed out).
pub(crate) fn read_reply(value: &Value) -> Result<Vec<(EntryId, Body)>, MeshError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => pairs
            .first()
            .map_or(Ok(Vec::new()), |(_, entries_value)| entries(entries_value)),
        other => {
            let streams = array(other).ok_or_else(|| unexpected("XREADGROUP", other))?;
            let Some(stream) = streams.first() else {
                return Ok(Vec::new());
            };
            let pair = array(stream)
                .filter(|p| p.len() == 2)
                .ok_or_else(|| unexpected("XREADGROUP", stream))?;
            entries(&pair[1])
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
        assert_eq!(errors[0], "entry has no `s` field");
        assert!(errors[1].starts_with("not a signal"));
        assert_eq!(errors[2], "entry data was trimmed");
        assert_eq!(got[1].1.clone().expect_err("undecodable").raw, "{oops");
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
