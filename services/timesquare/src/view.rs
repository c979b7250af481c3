//! The game's state as clients see it: a `GameView` (snapshots, GetGameState)
//! and `Frame`s (enemies, shots, lives and gold during a wave).

use allies_contracts::timesquare::v1::*;
use timesquare_domain::GameSession;
use timesquare_domain::rules::Map;
use timesquare_domain::sim::Path;

fn cell((x, y): (i32, i32)) -> Cell {
    Cell { x, y }
}

/// The board of a map: size, path cells, waypoints, rocks.
pub fn board(map: &Map) -> Board {
    Board {
        width: map.width,
        height: map.height,
        path: map.path_cells().into_iter().map(cell).collect(),
        blocked: map.blocked.iter().map(|[x, y]| Cell { x: *x, y: *y }).collect(),
        waypoints: map.path.iter().map(|[x, y]| Cell { x: *x, y: *y }).collect(),
    }
}

/// The whole state at `version`.
pub fn game_view(s: &GameSession, version: u64) -> GameView {
    let rules = s.rules().ok();
    let map = rules.as_ref().and_then(|r| r.maps.get(&s.map));
    GameView {
        session_id: s.id.clone(),
        version,
        phase: s.phase.as_str().into(),
        map: s.map.clone(),
        difficulty: s.difficulty.clone(),
        host: s.host.clone(),
        private: s.private,
        max_players: s.max_players,
        players: s
            .members
            .iter()
            .map(|m| PlayerView {
                user_id: m.user_id.clone(),
                display_name: m.name.clone(),
                ready: m.ready,
                present: m.present,
                seat: m.seat.map(|x| x as i32).unwrap_or(-1),
                gold: m.seat.and_then(|x| s.gold.get(x)).copied().unwrap_or(0),
                zone: match (map, m.seat) {
                    (Some(map), Some(seat)) => map
                        .zone(s.seats(), seat)
                        .iter()
                        .map(|[x0, y0, x1, y1]| Rect { x0: *x0, y0: *y0, x1: *x1, y1: *y1 })
                        .collect(),
                    _ => Vec::new(),
                },
                kills: m.stats.kills,
                gold_earned: m.stats.gold_earned,
                towers_built: m.stats.towers_built,
            })
            .collect(),
        lives: s.lives,
        wave: s.wave,
        total_waves: s.total_waves,
        waves_cleared: s.waves_cleared,
        towers: s
            .towers
            .values()
            .map(|t| TowerView {
                tower_id: t.id,
                owner: t.owner.clone(),
                tower_type: t.kind.clone(),
                level: t.level as u32,
                x: t.x,
                y: t.y,
                kills: t.kills,
            })
            .collect(),
        score: s.score,
        outcome: s.outcome.clone(),
        rules_version: s.rules_version,
        board: map.map(board),
        wave_started_at_ms: s.wave_started_at_ms,
        tick_ms: s.tick_ms,
        tick: s.battle.as_ref().map(|b| b.tick).unwrap_or(0),
    }
}

/// A frame of the running wave as simulated in `s`.
pub fn frame(s: &GameSession, path: &Path, version: u64, at_ms: i64) -> Option<Frame> {
    let battle = s.battle.as_ref()?;
    Some(Frame {
        version,
        wave: battle.wave,
        tick: battle.tick,
        lives: s.lives,
        gold: s
            .members
            .iter()
            .filter_map(|m| {
                m.seat.map(|x| PlayerGold { user_id: m.user_id.clone(), gold: s.gold.get(x).copied().unwrap_or(0) })
            })
            .collect(),
        enemies: battle
            .enemies
            .iter()
            .map(|e| {
                let (x, y) = path.position(e.pos);
                EnemyView { id: e.id, kind: e.kind.clone(), x, y, hp: e.hp, max_hp: e.max_hp, shield: e.shield }
            })
            .collect(),
        shots: battle.shots.iter().map(|(t, e)| Shot { tower_id: *t, enemy_id: *e }).collect(),
        at_ms,
    })
}

/// The rules as clients need them.
pub fn rules_view(rules: &timesquare_domain::Rules) -> RulesView {
    RulesView {
        rules_version: rules.rules_version,
        rules_hash: rules.content_hash(),
        maps: rules
            .maps
            .iter()
            .map(|(name, m)| MapView { name: name.clone(), board: Some(board(m)), waves: m.waves })
            .collect(),
        towers: rules
            .towers
            .iter()
            .map(|(name, t)| TowerTypeView {
                name: name.clone(),
                cost: t.cost,
                upgrade_costs: t.levels.iter().skip(1).map(|l| l.upgrade_cost).collect(),
                ranges: t.levels.iter().map(|l| l.range).collect(),
                damage: t.levels.iter().map(|l| l.damage).collect(),
                sell_refund_pct: t.sell_refund_pct,
                flag: t.flag.clone().unwrap_or_default(),
            })
            .collect(),
        enemies: rules.enemies.keys().cloned().collect(),
        difficulties: rules.difficulties.keys().cloned().collect(),
        ticks_per_second: rules.ticks_per_second,
        difficulty_details: rules
            .difficulties
            .iter()
            .map(|(name, d)| DifficultyView {
                name: name.clone(),
                start_gold: rules.economy.start_gold * d.start_gold_pct / 100,
                lives: d.lives,
                enemy_hp_pct: d.enemy_hp_pct,
                enemy_speed_pct: d.enemy_speed_pct,
                bounty_pct: d.bounty_pct,
            })
            .collect(),
    }
}
