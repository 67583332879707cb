//! The stores on Redis: the field of marks in one hash (each mark `value:ms` of its last
//! deposit, both on the server's clock) beside a key holding the field's half-life, and the
//! key-value store as plain string keys with `PX` expiry. Every key shares the mesh's hash tag.

use std::time::Duration;

use super::conn::Conn;
use async_trait::async_trait;
use redis::RedisError;
use swarm_schemas::{Mark, MarkOp, MarksPrefixReply, MarksReply};

use crate::stores::{EVAPORATED, Kv, Marks, StoreError, check_key, check_ops, ms, value_text};

/// The half-life check and the server's clock, shared by both scripts. Sets `h` (half-life in
/// ms), `now` (ms since the epoch) and `read(raw)` (a stored mark's value now).
const PRELUDE: &str = r"#!lua
local stored = redis.call('GET', KEYS[2])
if not stored then
  redis.call('SET', KEYS[2], ARGV[1])
  stored = ARGV[1]
elseif tonumber(stored) ~= tonumber(ARGV[1]) then
  return redis.error_reply('HALFLIFE ' .. stored)
end
local h = tonumber(stored)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function read(raw)
  if not raw then return 0 end
  local sep = string.find(raw, ':', 1, true)
  local v = tonumber(string.sub(raw, 1, sep - 1))
  local dt = now - tonumber(string.sub(raw, sep + 1))
  if dt < 0 then dt = 0 end
  return v * math.pow(2, -dt / h)
end
local function num(x) return string.format('%.17g', x) end
";

/// ARGV: half-life, then (op, key, amount) triples; op `d` deposits, `s` senses. Returns each
/// value after its operation, then the clock.
const APPLY: &str = r"
local out = {}
for i = 2, #ARGV, 3 do
  local key = ARGV[i + 1]
  local v = read(redis.call('HGET', KEYS[1], key))
  if ARGV[i] == 'd' then
    v = v + tonumber(ARGV[i + 2])
    redis.call('HSET', KEYS[1], key, num(v) .. ':' .. num(now))
  end
  out[#out + 1] = num(v)
end
out[#out + 1] = num(now)
return out
";

/// ARGV: half-life, MATCH pattern, the evaporation floor. Returns key, value pairs, then the
/// clock; drops marks below the floor.
const PREFIX: &str = r"
local out = {}
local floor = tonumber(ARGV[3])
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'MATCH', ARGV[2], 'COUNT', 1000)
  cursor = page[1]
  local items = page[2]
  for i = 1, #items, 2 do
    local v = read(items[i + 1])
    if math.abs(v) < floor then
      redis.call('HDEL', KEYS[1], items[i])
    else
      out[#out + 1] = items[i]
      out[#out + 1] = num(v)
    end
  end
until cursor == '0'
out[#out + 1] = num(now)
return out
";

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The field of marks on Redis.
pub struct RedisMarks {
    conn: Conn,
    field: String,
    half_life_key: String,
    half_life: Duration,
    apply: redis::Script,
    prefix: redis::Script,
}

impl RedisMarks {
    pub(crate) fn new(conn: Conn, key_prefix: &str, half_life: Duration) -> Self {
        let (field, half_life_key) = Self::keys_of(key_prefix);
        Self {
            conn,
            field,
            half_life_key,
            half_life,
            apply: redis::Script::new(&Self::apply_script()),
            prefix: redis::Script::new(&format!("{PRELUDE}{PREFIX}")),
        }
    }

    /// The Lua script behind [`Marks::apply`], for measuring it apart (with `redis-benchmark`,
    /// say). KEYS: the field, its half-life key; ARGV: the half-life in ms, then (op, key,
    /// amount) triples, op `d` or `s`.
    pub fn apply_script() -> String {
        format!("{PRELUDE}{APPLY}")
    }

    /// The Redis keys of the field of a mesh with `key_prefix`: the field, its half-life.
    pub fn keys_of(key_prefix: &str) -> (String, String) {
        (
            format!("{{{key_prefix}}}:marks"),
            format!("{{{key_prefix}}}:marks:half-life"),
        )
    }

    fn half_life_ms(&self) -> Result<f64, StoreError> {
        let configured = ms(self.half_life);
        if configured > 0.0 {
            Ok(configured)
        } else {
            Err(StoreError::Invalid("the half-life must be positive".into()))
        }
    }

    /// Runs one of the scripts; a half-life refusal becomes [`StoreError::HalfLife`].
    async fn run(
        &self,
        script: &redis::Script,
        args: Vec<String>,
        configured_ms: f64,
    ) -> Result<Vec<String>, StoreError> {
        let mut invocation = script.key(&self.field);
        invocation
            .key(&self.half_life_key)
            .arg(configured_ms.to_string());
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| {
                match (e.code() == Some("HALFLIFE"))
                    .then(|| e.detail())
                    .flatten()
                    .and_then(|n| n.trim().parse::<f64>().ok())
                {
                    Some(stored_ms) => StoreError::HalfLife {
                        stored_ms,
                        configured_ms,
                    },
                    None => unavailable(e),
                }
            })
    }
}

fn number(text: &str) -> Result<f64, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Unavailable(format!("Redis answered `{text}` for a number")))
}

/// Escapes the glob characters of a literal prefix for `MATCH`.
fn glob_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[async_trait]
impl Marks for RedisMarks {
    async fn apply(&self, ops: &[MarkOp]) -> Result<MarksReply, StoreError> {
        check_ops(ops)?;
        let configured_ms = self.half_life_ms()?;
        let mut args = Vec::with_capacity(ops.len() * 3);
        for op in ops {
            match op {
                MarkOp::Deposit { key, amount } => {
                    args.extend(["d".to_owned(), key.clone(), format!("{amount:e}")]);
                }
                MarkOp::Sense { key } => args.extend(["s".to_owned(), key.clone(), "0".into()]),
            }
        }
        let reply = self.run(&self.apply, args, configured_ms).await?;
        let (at, values) = reply
            .split_last()
            .ok_or_else(|| StoreError::Unavailable("Redis answered nothing".into()))?;
        if values.len() != ops.len() {
            return Err(StoreError::Unavailable(format!(
                "Redis answered {} values for {} operations",
                values.len(),
                ops.len()
            )));
        }
        Ok(MarksReply {
            values: values.iter().map(|v| number(v)).collect::<Result<_, _>>()?,
            at_ms: number(at)?,
        })
    }

    async fn sense_prefix(&self, prefix: &str) -> Result<MarksPrefixReply, StoreError> {
        let configured_ms = self.half_life_ms()?;
        let args = vec![glob_prefix(prefix), format!("{EVAPORATED:e}")];
        let reply = self.run(&self.prefix, args, configured_ms).await?;
        let (at, pairs) = reply
            .split_last()
            .ok_or_else(|| StoreError::Unavailable("Redis answered nothing".into()))?;
        // HSCAN may return a field twice (when the hash is rehashed meanwhile).
        let mut seen = std::collections::BTreeMap::new();
        for pair in pairs.chunks(2) {
            if let [key, value] = pair {
                seen.insert(key.clone(), number(value)?);
            }
        }
        let mut marks: Vec<Mark> = seen
            .into_iter()
            .map(|(key, value)| Mark { key, value })
            .collect();
        swarm_schemas::sort_strongest_first(&mut marks);
        Ok(MarksPrefixReply {
            marks,
            at_ms: number(at)?,
        })
    }

    fn half_life(&self) -> Duration {
        self.half_life
    }
}

/// The units' controls on Redis: one hash, a field per unit.
pub struct RedisUnitControls {
    conn: Conn,
    key: String,
}

impl RedisUnitControls {
    pub(crate) fn new(conn: Conn, key_prefix: &str) -> Self {
        Self {
            conn,
            key: format!("{{{key_prefix}}}:units:control"),
        }
    }
}

#[async_trait]
impl crate::UnitControls for RedisUnitControls {
    async fn all(
        &self,
    ) -> Result<std::collections::BTreeMap<String, swarm_schemas::UnitControl>, StoreError> {
        let fields: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        fields
            .into_iter()
            .map(|(unit, text)| {
                serde_json::from_str(&text)
                    .map(|control| (unit.clone(), control))
                    .map_err(|e| {
                        StoreError::Corrupt(format!("the control of unit `{unit}` is not one: {e}"))
                    })
            })
            .collect()
    }

    async fn set(
        &self,
        unit: &str,
        control: &swarm_schemas::UnitControl,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(control)
            .map_err(|e| StoreError::Invalid(format!("cannot encode a unit control: {e}")))?;
        redis::cmd("HSET")
            .arg(&self.key)
            .arg(unit)
            .arg(text)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}

/// The key-value store on Redis.
pub struct RedisKv {
    conn: Conn,
    key_prefix: String,
}

impl RedisKv {
    pub(crate) fn new(conn: Conn, key_prefix: &str) -> Self {
        Self {
            conn,
            key_prefix: key_prefix.to_owned(),
        }
    }

    fn key(&self, namespace: &str, key: &str) -> String {
        format!("{{{}}}:kv:{namespace}:{key}", self.key_prefix)
    }
}

#[async_trait]
impl Kv for RedisKv {
    async fn get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        check_key(key)?;
        let text: Option<String> = redis::cmd("GET")
            .arg(self.key(namespace, key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        text.map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("the value at `{key}` is not JSON: {e}")))
        })
        .transpose()
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &serde_json::Value,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        let text = value_text(value)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(namespace, key)).arg(text);
        if let Some(ttl) = ttl {
            cmd.arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        cmd.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let removed: u64 = redis::cmd("DEL")
            .arg(self.key(namespace, key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::glob_prefix;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_prefix("site."), "site.*");
        assert_eq!(glob_prefix("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
