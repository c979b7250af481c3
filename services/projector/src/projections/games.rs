//! The game read model: `game:<id>` (hash) and its indexes — `games:lobbies`
//! (public sessions in their lobby, by creation time), `games:active`
//! (sessions being played, by start time) and each player's games
//! `user:<user id>:games` (by join time) — built from the GameSession events,
//! which carry the state a reader needs (gold after a purchase, lives and
//! gold after a wave): no simulation here.
//!
//! The hash holds the session's fields, one group per player
//! (`p:<user id>:<field>`) and one field per tower (`t:<id>`, JSON).
//!
//! Visibility: a public session is seen by anyone signed in, a private one
//! by its players and admins. The invite code's hash is never copied here.

use std::collections::{BTreeMap, HashMap};

use allies_contracts::projector::v1::{GameDetails, GamePlayer, GameSummary, GameTower};
use allies_contracts::timesquare::events::GameEvent;
use allies_store::RecordedEvent;
use allies_store::subscriber::HandlerError;
use serde::{Deserialize, Serialize};

use crate::readmodel::{Fields, Namespace};
use crate::registry::{Change, IndexOp, Projection, typed};

pub const NAME: &str = "rm.game";
pub const AGGREGATE_TYPE: &str = "game_session";
pub const LOBBIES: &str = "games:lobbies";
pub const ACTIVE: &str = "games:active";

fn key(session_id: &str) -> String {
    format!("game:{session_id}")
}

fn player_games(user_id: &str) -> String {
    format!("user:{user_id}:games")
}

fn pf(user_id: &str, field: &str) -> String {
    format!("p:{user_id}:{field}")
}

/// A tower as the hash stores it (`t:<id>`).
#[derive(Debug, Serialize, Deserialize)]
struct Tower {
    owner: String,
    #[serde(rename = "type")]
    kind: String,
    level: u32,
    x: i32,
    y: i32,
}

fn tower_field(id: u32) -> String {
    format!("t:{id}")
}

fn tower_json(owner: &str, kind: &str, level: u32, x: i32, y: i32) -> String {
    let t = Tower { owner: owner.to_owned(), kind: kind.to_owned(), level, x, y };
    serde_json::to_string(&t).unwrap_or_default()
}

const PLAYER_FIELDS: [&str; 9] =
    ["name", "seat", "gold", "ready", "present", "joined_at_ms", "kills", "gold_earned", "towers_built"];

pub struct Games;

impl Projection for Games {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sources(&self) -> &'static [&'static str] {
        &[AGGREGATE_TYPE]
    }

    fn changes(&self, event: &RecordedEvent) -> Result<Vec<Change>, HandlerError> {
        let env = &event.envelope;
        let (id, v) = (env.aggregate_id.as_str(), env.version);
        let model = |set: Vec<(String, String)>, del: Vec<String>| Change::Model {
            key: key(id),
            id: id.to_owned(),
            version: v,
            set,
            del,
        };
        let s = |f: &str, value: String| (f.to_owned(), value);
        let index = Change::Index;
        Ok(match typed::<GameEvent>(event)? {
            GameEvent::Created(e) => {
                let mut out = vec![model(
                    vec![
                        s("session_id", id.to_owned()),
                        s("status", "lobby".into()),
                        s("map", e.map),
                        s("difficulty", e.difficulty),
                        s("host_id", e.host_id),
                        s("private", u8::from(e.private).to_string()),
                        s("max_players", e.max_players.to_string()),
                        s("players", "0".into()),
                        s("rules_version", e.rules_version.to_string()),
                        s("total_waves", e.total_waves.to_string()),
                        s("created_at_ms", e.created_at_ms.to_string()),
                        s("match_id", e.match_id),
                        s("wave", "0".into()),
                        s("waves_cleared", "0".into()),
                        s("lives", "0".into()),
                        s("score", "0".into()),
                    ],
                    Vec::new(),
                )];
                if !e.private {
                    out.push(index(IndexOp::ZAdd {
                        key: LOBBIES.into(),
                        member: id.to_owned(),
                        score: e.created_at_ms as f64,
                    }));
                }
                out
            }
            GameEvent::PlayerJoined(e) => vec![
                model(
                    vec![
                        s("players", e.players.to_string()),
                        (pf(&e.user_id, "name"), e.display_name),
                        (pf(&e.user_id, "seat"), "-1".into()),
                        (pf(&e.user_id, "ready"), "0".into()),
                        (pf(&e.user_id, "present"), "1".into()),
                        (pf(&e.user_id, "joined_at_ms"), e.joined_at_ms.to_string()),
                    ],
                    Vec::new(),
                ),
                index(IndexOp::ZAdd {
                    key: player_games(&e.user_id),
                    member: id.to_owned(),
                    score: e.joined_at_ms as f64,
                }),
            ],
            GameEvent::PlayerLeft(e) => {
                let set = vec![s("players", e.players.to_string()), s("host_id", e.host_id.clone())];
                if e.in_lobby {
                    let del = PLAYER_FIELDS.iter().map(|f| pf(&e.user_id, f)).collect();
                    vec![model(set, del), index(IndexOp::ZRem { key: player_games(&e.user_id), member: id.to_owned() })]
                } else {
                    let mut set = set;
                    set.push((pf(&e.user_id, "present"), "0".into()));
                    vec![model(set, Vec::new())]
                }
            }
            GameEvent::PlayerReady(e) => {
                vec![model(vec![(pf(&e.user_id, "ready"), u8::from(e.ready).to_string())], Vec::new())]
            }
            GameEvent::Started(e) => {
                let mut set = vec![
                    s("status", "building".into()),
                    s("started_at_ms", e.started_at_ms.to_string()),
                    s("lives", e.lives.to_string()),
                ];
                for p in &e.players {
                    set.push((pf(&p.user_id, "seat"), p.seat.to_string()));
                    set.push((pf(&p.user_id, "gold"), p.gold.to_string()));
                }
                vec![
                    model(set, Vec::new()),
                    index(IndexOp::ZRem { key: LOBBIES.into(), member: id.to_owned() }),
                    index(IndexOp::ZAdd { key: ACTIVE.into(), member: id.to_owned(), score: e.started_at_ms as f64 }),
                ]
            }
            GameEvent::TowerPlaced(e) => vec![model(
                vec![
                    (tower_field(e.tower_id), tower_json(&e.player_id, &e.tower_type, 0, e.x, e.y)),
                    (pf(&e.player_id, "gold"), e.gold_after.to_string()),
                ],
                Vec::new(),
            )],
            GameEvent::TowerUpgraded(e) => vec![model(
                vec![
                    (tower_field(e.tower_id), tower_json(&e.player_id, &e.tower_type, e.level, e.x, e.y)),
                    (pf(&e.player_id, "gold"), e.gold_after.to_string()),
                ],
                Vec::new(),
            )],
            GameEvent::TowerSold(e) => {
                vec![model(vec![(pf(&e.player_id, "gold"), e.gold_after.to_string())], vec![tower_field(e.tower_id)])]
            }
            GameEvent::WaveStarted(e) => vec![model(
                vec![
                    s("status", "in_wave".into()),
                    s("wave", e.wave.to_string()),
                    s("wave_started_at_ms", e.started_at_ms.to_string()),
                ],
                Vec::new(),
            )],
            GameEvent::WaveCompleted(e) => {
                let mut set = vec![
                    s("status", "building".into()),
                    s("lives", e.lives.to_string()),
                    s("score", e.score.to_string()),
                    s("waves_cleared", e.waves_cleared.to_string()),
                    s("last_wave_outcome", e.outcome),
                ];
                for g in &e.gold {
                    set.push((pf(&g.user_id, "gold"), g.gold.to_string()));
                }
                vec![model(set, Vec::new())]
            }
            GameEvent::Ended(e) => {
                let mut set = vec![
                    s("status", "ended".into()),
                    s("outcome", e.outcome),
                    s("score", e.score.to_string()),
                    s("waves_cleared", e.waves_cleared.to_string()),
                    s("ended_at_ms", e.ended_at_ms.to_string()),
                ];
                for p in &e.players {
                    set.push((pf(&p.user_id, "kills"), p.kills.to_string()));
                    set.push((pf(&p.user_id, "gold_earned"), p.gold_earned.to_string()));
                    set.push((pf(&p.user_id, "towers_built"), p.towers_built.to_string()));
                }
                vec![
                    model(set, Vec::new()),
                    index(IndexOp::ZRem { key: LOBBIES.into(), member: id.to_owned() }),
                    index(IndexOp::ZRem { key: ACTIVE.into(), member: id.to_owned() }),
                ]
            }
        })
    }
}

/// A session's read model as stored.
pub struct Model(HashMap<String, String>);

impl Model {
    pub fn private(&self) -> bool {
        self.0.text("private") == "1"
    }

    pub fn status(&self) -> String {
        self.0.text("status")
    }

    pub fn is_member(&self, user_id: &str) -> bool {
        self.0.contains_key(&pf(user_id, "name"))
    }

    pub fn map(&self) -> String {
        self.0.text("map")
    }

    pub fn difficulty(&self) -> String {
        self.0.text("difficulty")
    }

    pub fn free_slots(&self) -> u64 {
        self.0.uint("max_players").saturating_sub(self.0.uint("players"))
    }

    pub fn created_at_ms(&self) -> i64 {
        self.0.int("created_at_ms")
    }

    /// The players in join order.
    pub fn players(&self) -> Vec<GamePlayer> {
        let mut ids: BTreeMap<String, ()> = BTreeMap::new();
        for f in self.0.keys() {
            if let Some(rest) = f.strip_prefix("p:")
                && let Some((uid, "name")) = rest.rsplit_once(':')
            {
                ids.insert(uid.to_owned(), ());
            }
        }
        let mut players: Vec<GamePlayer> = ids.into_keys().map(|uid| self.player(&uid)).collect();
        players.sort_by(|a, b| (a.joined_at_ms, &a.user_id).cmp(&(b.joined_at_ms, &b.user_id)));
        players
    }

    pub fn player(&self, uid: &str) -> GamePlayer {
        let m = &self.0;
        GamePlayer {
            user_id: uid.to_owned(),
            display_name: m.text(&pf(uid, "name")),
            seat: m.get(&pf(uid, "seat")).and_then(|s| s.parse().ok()).unwrap_or(-1),
            gold: m.int(&pf(uid, "gold")),
            ready: m.text(&pf(uid, "ready")) == "1",
            present: m.text(&pf(uid, "present")) == "1",
            joined_at_ms: m.int(&pf(uid, "joined_at_ms")),
            kills: m.uint(&pf(uid, "kills")) as u32,
            gold_earned: m.int(&pf(uid, "gold_earned")),
            towers_built: m.uint(&pf(uid, "towers_built")) as u32,
        }
    }

    pub fn summary(&self) -> GameSummary {
        let m = &self.0;
        let host = m.text("host_id");
        GameSummary {
            session_id: m.text("session_id"),
            status: m.text("status"),
            map: m.text("map"),
            difficulty: m.text("difficulty"),
            host_name: m.text(&pf(&host, "name")),
            host_id: host,
            players: m.uint("players") as u32,
            max_players: m.uint("max_players") as u32,
            private: self.private(),
            wave: m.uint("wave") as u32,
            total_waves: m.uint("total_waves") as u32,
            lives: m.int("lives"),
            score: m.int("score"),
            outcome: m.text("outcome"),
            created_at_ms: m.int("created_at_ms"),
            started_at_ms: m.int("started_at_ms"),
            ended_at_ms: m.int("ended_at_ms"),
            version: m.uint("_version"),
            waves_cleared: m.uint("waves_cleared") as u32,
            player: None,
        }
    }

    pub fn details(&self) -> GameDetails {
        let m = &self.0;
        let mut towers: Vec<GameTower> = m
            .iter()
            .filter_map(|(f, v)| {
                let id = f.strip_prefix("t:")?.parse().ok()?;
                let t: Tower = serde_json::from_str(v).ok()?;
                Some(GameTower { tower_id: id, owner: t.owner, tower_type: t.kind, level: t.level, x: t.x, y: t.y })
            })
            .collect();
        towers.sort_by_key(|t| t.tower_id);
        GameDetails {
            summary: Some(self.summary()),
            players: self.players(),
            towers,
            last_wave_outcome: m.text("last_wave_outcome"),
            rules_version: m.uint("rules_version") as u32,
            match_id: m.text("match_id"),
            wave_started_at_ms: m.int("wave_started_at_ms"),
        }
    }
}

/// A session's read model (None when it does not exist yet).
pub async fn get(view: &Namespace, session_id: &str) -> Result<Option<Model>, redis::RedisError> {
    let m = view.model(&key(session_id)).await?;
    Ok(m.filter(|m| m.contains_key("session_id")).map(Model))
}

/// The models of `ids` (in order; missing ones left out).
async fn models(view: &Namespace, ids: &[String]) -> Result<Vec<Model>, redis::RedisError> {
    let keys: Vec<String> = ids.iter().map(|id| key(id)).collect();
    Ok(view.models(&keys).await?.into_iter().flatten().filter(|m| m.contains_key("session_id")).map(Model).collect())
}

/// Ids of an index, newest first, at most `limit`.
async fn newest(view: &Namespace, index: &str, offset: usize, limit: usize) -> Result<Vec<String>, redis::RedisError> {
    let mut conn = view.conn.clone();
    redis::cmd("ZRANGE")
        .arg(view.key(index))
        .arg(offset)
        .arg(offset + limit.max(1) - 1)
        .arg("REV")
        .query_async(&mut conn)
        .await
}

/// How many index entries a listing reads at most per call.
pub const SCAN_LIMIT: usize = 2_000;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub map: Option<String>,
    pub difficulty: Option<String>,
    /// Private sessions of which `member` is not a member are left out unless `admin`.
    pub viewer: String,
    pub admin: bool,
}

impl Filter {
    fn keeps(&self, m: &Model) -> bool {
        self.map.as_ref().is_none_or(|x| *x == m.map())
            && self.difficulty.as_ref().is_none_or(|x| *x == m.difficulty())
            && (!m.private() || self.admin || m.is_member(&self.viewer))
    }
}

/// Open public lobbies with at least `min_free` seats: newest first, or by
/// free seats (then newest). Reads up to [`SCAN_LIMIT`] lobbies.
pub async fn lobbies(
    view: &Namespace,
    filter: &Filter,
    min_free: u64,
    by_free_slots: bool,
    offset: usize,
    page_size: usize,
) -> Result<(Vec<GameSummary>, Option<usize>), redis::RedisError> {
    let ids = newest(view, LOBBIES, 0, SCAN_LIMIT).await?;
    let mut found: Vec<Model> = models(view, &ids)
        .await?
        .into_iter()
        .filter(|m| m.status() == "lobby" && m.free_slots() >= min_free && filter.keeps(m))
        .collect();
    if by_free_slots {
        found.sort_by(|a, b| b.free_slots().cmp(&a.free_slots()).then(b.created_at_ms().cmp(&a.created_at_ms())));
    }
    let total = found.len();
    let page: Vec<GameSummary> = found.iter().skip(offset).take(page_size).map(Model::summary).collect();
    let next = (offset + page.len() < total).then_some(offset + page.len());
    Ok((page, next))
}

/// Entries of an index, newest first, that `keep` keeps: a page from
/// `offset` and the offset of the next page.
async fn page_of(
    view: &Namespace,
    index: &str,
    offset: usize,
    page_size: usize,
    keep: impl Fn(&Model) -> bool,
) -> Result<(Vec<Model>, Option<usize>), redis::RedisError> {
    const CHUNK: usize = 100;
    let (mut pos, mut page) = (offset, Vec::new());
    while pos < offset + SCAN_LIMIT {
        let ids = newest(view, index, pos, CHUNK).await?;
        if ids.is_empty() {
            return Ok((page, None));
        }
        let got = ids.len();
        let found = models(view, &ids).await?;
        let mut by_id: HashMap<String, Model> = found.into_iter().map(|m| (m.0.text("session_id"), m)).collect();
        for id in ids {
            pos += 1;
            if let Some(m) = by_id.remove(&id)
                && keep(&m)
            {
                page.push(m);
                if page.len() == page_size {
                    return Ok((page, Some(pos)));
                }
            }
        }
        if got < CHUNK {
            return Ok((page, None));
        }
    }
    Ok((page, Some(pos)))
}

/// Sessions being played, newest first.
pub async fn active(
    view: &Namespace,
    filter: &Filter,
    offset: usize,
    page_size: usize,
) -> Result<(Vec<GameSummary>, Option<usize>), redis::RedisError> {
    let (page, next) = page_of(view, ACTIVE, offset, page_size, |m| filter.keeps(m)).await?;
    Ok((page.iter().map(Model::summary).collect(), next))
}

/// A player's games, newest first, each with the player's own entry.
pub async fn of_player(
    view: &Namespace,
    user_id: &str,
    offset: usize,
    page_size: usize,
) -> Result<(Vec<GameSummary>, Option<usize>), redis::RedisError> {
    let (page, next) = page_of(view, &player_games(user_id), offset, page_size, |_| true).await?;
    let games = page.iter().map(|m| GameSummary { player: Some(m.player(user_id)), ..m.summary() }).collect();
    Ok((games, next))
}
