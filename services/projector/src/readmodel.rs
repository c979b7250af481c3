//! Writing read-model hashes at most once per event version.

use allies_store::RedisConn;
use allies_store::subscriber::HandlerError;

/// Writes fields of one read-model hash, guarded by the aggregate version
/// (see `apply.lua`): a redelivered or replayed event changes nothing.
#[derive(Clone)]
pub struct ReadModelWriter {
    pub conn: RedisConn,
    script: redis::Script,
}

impl ReadModelWriter {
    pub fn new(conn: RedisConn) -> Self {
        Self { conn, script: redis::Script::new(include_str!("apply.lua")) }
    }

    /// Applies `fields` to `key` as of aggregate `version`; true if applied.
    pub async fn apply(&self, key: &str, version: u64, fields: &[(&str, String)]) -> Result<bool, HandlerError> {
        let mut inv = self.script.key(key);
        inv.arg(version);
        for (f, v) in fields {
            inv.arg(*f).arg(v);
        }
        let mut conn = self.conn.clone();
        let applied: i64 = inv.invoke_async(&mut conn).await.map_err(|e| HandlerError(e.to_string()))?;
        Ok(applied == 1)
    }
}

/// Decodes a stored guardian event payload, upcasting older schema versions.
pub fn decode<T: serde::de::DeserializeOwned>(event: &allies_store::RecordedEvent) -> Result<T, HandlerError> {
    use allies_contracts::guardian::events::schema;
    let env = &event.envelope;
    let (t, v) = (env.event_type.as_str(), env.version);
    let malformed = |e: serde_json::Error| HandlerError(format!("malformed {t} at version {v}: {e}"));
    if env.schema_version == schema::current(t) {
        return serde_json::from_slice(&event.data).map_err(malformed);
    }
    let mut value: serde_json::Value = serde_json::from_slice(&event.data).map_err(malformed)?;
    schema::upcast(t, env.schema_version, &mut value).map_err(HandlerError)?;
    serde_json::from_value(value).map_err(malformed)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
