//! GameStatistics: per map and difficulty, from timesquare's `GameEnded`
//! integration events (consumer group `cmd.games` on the `games` topic),
//! served by `GameStatisticsService`.
//!
//! Each event is applied by one script that first marks its event id as
//! applied (`SET … NX`, kept a week — far beyond any redelivery): a
//! redelivered event changes nothing. Every key shares the hash tag
//! `{stats}`, so the script runs in one slot on Redis Cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use allies_contracts::command::v1::game_statistics_service_server::GameStatisticsService;
use allies_contracts::command::v1::{
    GetGameStatisticsRequest, GetGameStatisticsResponse, MapStatistics, TowerTypeUsage,
};
use allies_contracts::timesquare::integration::GameIntegrationEvent;
use allies_core::Invalid;
use allies_platform::auth::Authenticator;
use allies_platform::status::OrStatus;
use allies_store::subscriber::{Handler, HandlerError};
use allies_store::{RecordedEvent, RedisConn, StoreError};
use tonic::{Request, Response, Status};

pub const GROUP: &str = "cmd.games";
const INDEX: &str = "cmd:{stats}:index";
const DONE_TTL_SECS: u64 = 7 * 86_400;

fn totals_key(map: &str, difficulty: &str) -> String {
    format!("cmd:{{stats}}:g:{map}:{difficulty}")
}

fn towers_key(map: &str, difficulty: &str) -> String {
    format!("cmd:{{stats}}:towers:{map}:{difficulty}")
}

/// KEYS: done marker, totals, towers, index. ARGV: ttl, member, outcome,
/// waves, duration, then tower type / count pairs.
const APPLY: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'games', 1)
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
local waves = tonumber(ARGV[4])
local duration = tonumber(ARGV[5])
redis.call('HINCRBY', KEYS[2], 'waves', waves)
redis.call('HINCRBY', KEYS[2], 'duration', duration)
if waves > tonumber(redis.call('HGET', KEYS[2], 'best_wave') or '0') then
  redis.call('HSET', KEYS[2], 'best_wave', waves)
end
if duration > tonumber(redis.call('HGET', KEYS[2], 'longest') or '0') then
  redis.call('HSET', KEYS[2], 'longest', duration)
end
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], ARGV[i], tonumber(ARGV[i + 1]))
end
return 1
";

/// The `cmd.games` consumer: one script per finished game.
pub struct GamesTopic {
    pub conn: RedisConn,
}

impl Handler for GamesTopic {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let e = event.decode::<GameIntegrationEvent>().map_err(HandlerError::of_service)?;
        let GameIntegrationEvent::Ended(g) = &e.payload else { return Ok(()) };
        // A lobby abandoned before the start is not a game.
        if g.started_at_ms <= 0 || g.map.is_empty() || g.difficulty.is_empty() {
            return Ok(());
        }
        let outcome = match g.outcome.as_str() {
            "victory" => "victories",
            "defeat" => "defeats",
            _ => "other",
        };
        let apply = redis::Script::new(APPLY);
        let mut script = apply.prepare_invoke();
        script
            .key(format!("cmd:{{stats}}:done:{}", e.event_id))
            .key(totals_key(&g.map, &g.difficulty))
            .key(towers_key(&g.map, &g.difficulty))
            .key(INDEX)
            .arg(DONE_TTL_SECS)
            .arg(format!("{}:{}", g.map, g.difficulty))
            .arg(outcome)
            .arg(g.waves_cleared)
            .arg(g.duration_ms.max(0));
        for t in &g.towers {
            script.arg(&t.tower_type).arg(t.count);
        }
        let mut conn = self.conn.clone();
        let _: i64 = script.invoke_async(&mut conn).await.map_err(|e| HandlerError::of_service(StoreError::from(e)))?;
        Ok(())
    }
}

fn int(h: &BTreeMap<String, String>, k: &str) -> i64 {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Reads the statistics of `member` (`map:difficulty`).
async fn read(conn: &mut RedisConn, member: &str) -> Result<Option<MapStatistics>, StoreError> {
    let Some((map, difficulty)) = member.split_once(':') else { return Ok(None) };
    let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(totals_key(map, difficulty)).query_async(conn).await?;
    let games = int(&h, "games");
    if games <= 0 {
        return Ok(None);
    }
    let towers: BTreeMap<String, u64> =
        redis::cmd("HGETALL").arg(towers_key(map, difficulty)).query_async(conn).await?;
    let mut towers: Vec<TowerTypeUsage> =
        towers.into_iter().map(|(tower_type, count)| TowerTypeUsage { tower_type, count }).collect();
    towers.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tower_type.cmp(&b.tower_type)));
    let victories = int(&h, "victories");
    Ok(Some(MapStatistics {
        map: map.to_owned(),
        difficulty: difficulty.to_owned(),
        games: games as u64,
        victories: victories as u64,
        defeats: int(&h, "defeats") as u64,
        other: int(&h, "other") as u64,
        win_rate: victories as f64 / games as f64,
        average_wave: int(&h, "waves") as f64 / games as f64,
        best_wave: int(&h, "best_wave") as u32,
        average_duration_ms: int(&h, "duration") / games,
        longest_duration_ms: int(&h, "longest"),
        towers,
    }))
}

pub struct StatisticsApi {
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
}

#[tonic::async_trait]
impl GameStatisticsService for StatisticsApi {
    async fn get_game_statistics(
        &self,
        request: Request<GetGameStatisticsRequest>,
    ) -> Result<Response<GetGameStatisticsResponse>, Status> {
        self.auth.authenticate(&request).await.or_status()?;
        let r = request.into_inner();
        let mut invalid = Invalid::new();
        // Both are optional filters; a given one must be a name.
        for (field, value) in [("map", &r.map), ("difficulty", &r.difficulty)] {
            if !value.is_empty() {
                invalid.name(field, value);
            }
        }
        invalid.into_result().or_status()?;
        let mut conn = self.conn.clone();
        let members: Vec<String> =
            redis::cmd("SMEMBERS").arg(INDEX).query_async(&mut conn).await.map_err(StoreError::from).or_status()?;
        let mut statistics = Vec::new();
        for m in members {
            let Some((map, difficulty)) = m.split_once(':') else { continue };
            if (!r.map.is_empty() && r.map != map) || (!r.difficulty.is_empty() && r.difficulty != difficulty) {
                continue;
            }
            if let Some(s) = read(&mut conn, &m).await.or_status()? {
                statistics.push(s);
            }
        }
        statistics.sort_by(|a, b| (&a.map, &a.difficulty).cmp(&(&b.map, &b.difficulty)));
        Ok(Response::new(GetGameStatisticsResponse { statistics }))
    }
}
