//! The decoders of what Redis hands back, public for the fuzz targets (`tests/fuzz`): the
//! same functions the mesh's reads call, on any reply.

use std::sync::Arc;

pub use redis::{Value, parse_redis_value};

use super::reply;
use crate::{Body, EntryId, MeshError};

/// An entry's fields (`[field, value, …]`), decoded as a read decodes them: the signal, or what
/// could not be decoded, and the JSON as read.
pub fn entry(fields: &Value) -> (Body, Option<Arc<[u8]>>) {
    reply::body_and_json(fields)
}

/// An `XREADGROUP` reply, decoded as a consumer's read decodes it.
pub fn read_reply(value: &Value) -> Result<Vec<(EntryId, Body)>, MeshError> {
    Ok(reply::read_reply_with(value, reply::body_and_json)?
        .into_iter()
        .map(|(id, (body, _))| (id, body))
        .collect())
}

/// An `XRANGE` reply, decoded as the observer's reads decode it.
pub fn range_reply(value: &Value) -> Result<Vec<(EntryId, Body)>, MeshError> {
    reply::entries(value)
}

/// The field a signal's JSON is kept in, and the one its MessagePack is kept in.
pub const FIELDS: (&str, &str) = (reply::JSON_FIELD, reply::MSGPACK_FIELD);
