//! Writing read-model hashes at most once per event version.

use allies_store::RedisConn;
use allies_store::subscriber::HandlerError;

/// Field/value pairs of a read-model hash.
pub type Fields = Vec<(&'static str, String)>;

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
/// Reads proto3 JSON and protobuf binary entries alike (the content type says which).
pub fn decode<T>(event: &allies_store::RecordedEvent) -> Result<T, HandlerError>
where
    T: serde::de::DeserializeOwned + serde::Serialize + prost::Message + Default,
{
    use allies_contracts::guardian::events::schema;
    let env = &event.envelope;
    let (t, v) = (env.event_type.as_str(), env.version);
    let malformed = |e: &dyn std::fmt::Display| HandlerError(format!("malformed {t} at version {v}: {e}"));
    let mut value: serde_json::Value = match event.content_type.as_str() {
        allies_store::CONTENT_TYPE_JSON if env.schema_version == schema::current(t) => {
            return serde_json::from_slice(&event.data).map_err(|e| malformed(&e));
        }
        allies_store::CONTENT_TYPE_JSON => serde_json::from_slice(&event.data).map_err(|e| malformed(&e))?,
        allies_store::CONTENT_TYPE_PROTOBUF => {
            let msg = T::decode(&event.data[..]).map_err(|e| malformed(&e))?;
            if env.schema_version == schema::current(t) {
                return Ok(msg);
            }
            serde_json::to_value(&msg).map_err(|e| malformed(&e))?
        }
        other => return Err(HandlerError(format!("{t} at version {v}: unsupported content type {other}"))),
    };
    schema::upcast(t, env.schema_version, &mut value).map_err(HandlerError)?;
    serde_json::from_value(value).map_err(|e| malformed(&e))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
