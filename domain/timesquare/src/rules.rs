//! The rules of the game as data (`configs/game-rules.yaml`): maps, towers,
//! enemies, waves, economy and difficulties, with a validator that names the
//! key at fault and why. A session pins the rules version (and its content
//! hash) it was created with; [`Book`] keeps every loaded version so old
//! games replay.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One milli-tile: positions, ranges and speeds are integers in these.
pub const TILE: i64 = 1000;

/// Why a rules file cannot be used: the key at fault and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("game rules: {key}: {reason}")]
pub struct RulesError {
    pub key: String,
    pub reason: String,
}

pub(crate) fn bad(key: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError { key: key.into(), reason: reason.into() }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Economy {
    pub start_gold: i64,
    pub wave_clear_bonus: i64,
    pub lives: i64,
    #[serde(default = "default_score_per_wave")]
    pub score_per_wave: i64,
    #[serde(default = "default_score_per_life")]
    pub score_per_life: i64,
}

fn default_score_per_wave() -> i64 {
    100
}
fn default_score_per_life() -> i64 {
    10
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difficulty {
    pub enemy_hp_pct: i64,
    pub enemy_speed_pct: i64,
    pub bounty_pct: i64,
    pub start_gold_pct: i64,
    pub lives: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Gold to reach this level from the one before (0 for the first level).
    #[serde(default)]
    pub upgrade_cost: i64,
    pub range: i64,
    pub damage: i64,
    pub cooldown_ticks: u32,
    #[serde(default)]
    pub splash_radius: i64,
    #[serde(default)]
    pub slow_pct: i64,
    #[serde(default)]
    pub slow_ticks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TowerType {
    pub cost: i64,
    pub sell_refund_pct: i64,
    pub levels: Vec<Level>,
    /// A feature flag that must be on for the player to build it.
    #[serde(default)]
    pub flag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnemyType {
    pub hp: i64,
    pub speed: i64,
    pub bounty: i64,
    pub leak_damage: i64,
    #[serde(default)]
    pub armor: i64,
    #[serde(default)]
    pub shield: i64,
}

/// Enemies of one kind that appear in a range of waves (Mindustry's
/// `SpawnGroup`): in wave `w` (`begin <= w <= end`, every `every` waves),
/// `count + (w - begin) * count_per_wave_pm / 1000` of them, `interval_ticks`
/// apart after `delay_ticks`, with hp and shield growing per wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnGroup {
    pub enemy: String,
    pub begin: u32,
    #[serde(default)]
    pub end: Option<u32>,
    #[serde(default = "one")]
    pub every: u32,
    pub count: u32,
    #[serde(default)]
    pub count_per_wave_pm: u32,
    pub interval_ticks: u32,
    #[serde(default)]
    pub delay_ticks: u32,
    #[serde(default)]
    pub hp_per_wave_pct: i64,
    #[serde(default)]
    pub shield_per_wave: i64,
}

fn one() -> u32 {
    1
}

/// `[x0, y0, x1, y1]`, inclusive.
pub type Rect = [i32; 4];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Map {
    pub width: i32,
    pub height: i32,
    /// Waypoints (cells); consecutive ones share a row or a column.
    pub path: Vec<[i32; 2]>,
    #[serde(default)]
    pub blocked: Vec<[i32; 2]>,
    /// Per player count (1 to 4): one zone (a list of rectangles) per player.
    pub zones: BTreeMap<u8, Vec<Vec<Rect>>>,
    pub waves: u32,
    #[serde(default)]
    pub spawn_spread_ticks: u32,
    pub spawn_groups: Vec<SpawnGroup>,
    /// A feature flag that must be on to create a session on this map.
    #[serde(default)]
    pub flag: Option<String>,
}

/// One version of the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub rules_version: u32,
    pub ticks_per_second: u32,
    pub economy: Economy,
    pub difficulties: BTreeMap<String, Difficulty>,
    pub towers: BTreeMap<String, TowerType>,
    pub enemies: BTreeMap<String, EnemyType>,
    pub maps: BTreeMap<String, Map>,
}

impl Map {
    /// The zone of the player in `seat` when `players` play.
    pub fn zone(&self, players: usize, seat: usize) -> &[Rect] {
        self.zones.get(&(players as u8)).and_then(|z| z.get(seat)).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn in_grid(&self, x: i32, y: i32) -> bool {
        (0..self.width).contains(&x) && (0..self.height).contains(&y)
    }

    /// Every cell the path passes through.
    pub fn path_cells(&self) -> BTreeSet<(i32, i32)> {
        let mut cells = BTreeSet::new();
        for w in self.path.windows(2) {
            let ([x0, y0], [x1, y1]) = (w[0], w[1]);
            let (dx, dy) = ((x1 - x0).signum(), (y1 - y0).signum());
            let (mut x, mut y) = (x0, y0);
            cells.insert((x, y));
            while (x, y) != (x1, y1) {
                x += dx;
                y += dy;
                cells.insert((x, y));
            }
        }
        cells
    }

    /// Whether a tower may stand on the cell: inside the grid, not on the
    /// path, not blocked.
    pub fn buildable(&self, x: i32, y: i32) -> bool {
        let on_path = self.path.windows(2).any(|w| {
            let ([x0, y0], [x1, y1]) = (w[0], w[1]);
            (x0.min(x1)..=x0.max(x1)).contains(&x) && (y0.min(y1)..=y0.max(y1)).contains(&y)
        });
        self.in_grid(x, y) && !self.blocked.contains(&[x, y]) && !on_path
    }
}

/// Whether a cell lies in a zone.
/// One enemy to spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawn {
    pub tick: u32,
    pub enemy: String,
    pub hp: i64,
    pub shield: i64,
    pub speed: i64,
    pub bounty: i64,
    pub leak_damage: i64,
    pub armor: i64,
}

/// The enemies of `wave` on `map` at `difficulty`, in spawn order, with
/// their spawn ticks (jittered by the seeded PRNG).
pub fn spawn_schedule(rules: &Rules, map: &Map, wave: u32, difficulty: &str, seed: u64) -> Vec<Spawn> {
    let d = rules.difficulties.get(difficulty).or_else(|| rules.difficulties.values().next());
    let (hp_pct, speed_pct, bounty_pct) =
        d.map(|d| (d.enemy_hp_pct, d.enemy_speed_pct, d.bounty_pct)).unwrap_or((100, 100, 100));
    let mut rng = crate::prng::Rng(seed);
    let mut out: Vec<(u32, usize, u32, Spawn)> = Vec::new();
    for (gi, g) in map.spawn_groups.iter().enumerate() {
        let active = wave >= g.begin && g.end.is_none_or(|e| wave <= e) && (wave - g.begin).is_multiple_of(g.every);
        let Some(e) = rules.enemies.get(&g.enemy).filter(|_| active) else { continue };
        let n = g.count + (wave - g.begin) * g.count_per_wave_pm / 1000;
        let grown = |base: i64, pct: i64| base * (100 + pct * i64::from(wave - 1)) / 100;
        for j in 0..n {
            let tick = 1 + g.delay_ticks + j * g.interval_ticks + rng.up_to(map.spawn_spread_ticks);
            let spawn = Spawn {
                tick,
                enemy: g.enemy.clone(),
                hp: (grown(e.hp, g.hp_per_wave_pct) * hp_pct / 100).max(1),
                shield: e.shield + g.shield_per_wave * i64::from(wave - 1),
                speed: (e.speed * speed_pct / 100).max(1),
                bounty: e.bounty * bounty_pct / 100,
                leak_damage: e.leak_damage,
                armor: e.armor,
            };
            out.push((tick, gi, j, spawn));
        }
    }
    out.sort_by_key(|(tick, gi, j, _)| (*tick, *gi, *j));
    out.into_iter().map(|(_, _, _, s)| s).collect()
}

pub fn in_zone(zone: &[Rect], x: i32, y: i32) -> bool {
    zone.iter().any(|[x0, y0, x1, y1]| (*x0..=*x1).contains(&x) && (*y0..=*y1).contains(&y))
}

impl Rules {
    /// Parses and validates a rules file.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let rules: Rules = serde_norway::from_str(text).map_err(|e| {
            // serde names the key (unknown field `x`, invalid type for `y`) and the line.
            bad(e.location().map(|l| format!("line {}", l.line())).unwrap_or_else(|| "file".into()), e.to_string())
        })?;
        rules.validate()?;
        Ok(rules)
    }

    /// A stable fingerprint of the content: FNV-1a 64 of its canonical JSON.
    pub fn content_hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{:016x}", crate::prng::fnv(&json))
    }

    /// Checks everything the game relies on, naming the key at fault.
    pub fn validate(&self) -> Result<(), RulesError> {
        if self.rules_version == 0 {
            return Err(bad("rules_version", "must be at least 1"));
        }
        if !(1..=1000).contains(&self.ticks_per_second) {
            return Err(bad("ticks_per_second", "must be 1 to 1000"));
        }
        let e = &self.economy;
        for (key, value) in [
            ("economy.start_gold", e.start_gold),
            ("economy.wave_clear_bonus", e.wave_clear_bonus),
            ("economy.score_per_wave", e.score_per_wave),
            ("economy.score_per_life", e.score_per_life),
        ] {
            if value < 0 {
                return Err(bad(key, format!("must not be negative, got {value}")));
            }
        }
        if e.lives < 1 {
            return Err(bad("economy.lives", "must be at least 1"));
        }
        if self.difficulties.is_empty() {
            return Err(bad("difficulties", "needs at least one difficulty"));
        }
        for (name, d) in &self.difficulties {
            for (field, v) in [
                ("enemy_hp_pct", d.enemy_hp_pct),
                ("enemy_speed_pct", d.enemy_speed_pct),
                ("bounty_pct", d.bounty_pct),
                ("start_gold_pct", d.start_gold_pct),
            ] {
                if !(1..=1000).contains(&v) {
                    return Err(bad(format!("difficulties.{name}.{field}"), "must be 1 to 1000"));
                }
            }
            if d.lives < 1 {
                return Err(bad(format!("difficulties.{name}.lives"), "must be at least 1"));
            }
        }
        if self.towers.len() < 3 {
            return Err(bad("towers", format!("needs at least 3 tower types, has {}", self.towers.len())));
        }
        for (name, t) in &self.towers {
            let key = format!("towers.{name}");
            if t.cost < 1 {
                return Err(bad(format!("{key}.cost"), "must be at least 1"));
            }
            if !(0..=100).contains(&t.sell_refund_pct) {
                return Err(bad(format!("{key}.sell_refund_pct"), "must be 0 to 100"));
            }
            if t.levels.len() < 2 {
                return Err(bad(format!("{key}.levels"), "needs the base level and at least one upgrade"));
            }
            for (i, l) in t.levels.iter().enumerate() {
                let lk = format!("{key}.levels[{i}]");
                if i > 0 && l.upgrade_cost < 1 {
                    return Err(bad(format!("{lk}.upgrade_cost"), "an upgrade must cost at least 1"));
                }
                if !(1..=50 * TILE).contains(&l.range) {
                    return Err(bad(format!("{lk}.range"), "must be 1 to 50000 milli-tiles"));
                }
                if l.damage < 0 {
                    return Err(bad(format!("{lk}.damage"), "must not be negative"));
                }
                if l.cooldown_ticks == 0 {
                    return Err(bad(format!("{lk}.cooldown_ticks"), "must be at least 1"));
                }
                if !(0..=90).contains(&l.slow_pct) {
                    return Err(bad(format!("{lk}.slow_pct"), "must be 0 to 90"));
                }
                if l.splash_radius < 0 {
                    return Err(bad(format!("{lk}.splash_radius"), "must not be negative"));
                }
            }
        }
        if self.enemies.len() < 3 {
            return Err(bad("enemies", format!("needs at least 3 enemy types, has {}", self.enemies.len())));
        }
        for (name, en) in &self.enemies {
            let key = format!("enemies.{name}");
            if en.hp < 1 {
                return Err(bad(format!("{key}.hp"), "must be at least 1"));
            }
            if !(1..=10 * TILE).contains(&en.speed) {
                return Err(bad(format!("{key}.speed"), "must be 1 to 10000 milli-tiles per tick"));
            }
            if en.bounty < 0 || en.armor < 0 || en.shield < 0 || en.leak_damage < 0 {
                return Err(bad(key, "bounty, leak_damage, armor and shield must not be negative"));
            }
        }
        if self.maps.len() < 2 {
            return Err(bad("maps", format!("needs at least 2 maps, has {}", self.maps.len())));
        }
        for (name, m) in &self.maps {
            self.validate_map(name, m)?;
        }
        Ok(())
    }

    fn validate_map(&self, name: &str, m: &Map) -> Result<(), RulesError> {
        let key = format!("maps.{name}");
        if !(4..=64).contains(&m.width) || !(4..=64).contains(&m.height) {
            return Err(bad(format!("{key}.width"), "width and height must be 4 to 64"));
        }
        if m.path.len() < 2 {
            return Err(bad(format!("{key}.path"), "needs at least 2 waypoints"));
        }
        for (i, [x, y]) in m.path.iter().enumerate() {
            if !m.in_grid(*x, *y) {
                return Err(bad(format!("{key}.path[{i}]"), format!("({x}, {y}) is outside the grid")));
            }
        }
        for (i, w) in m.path.windows(2).enumerate() {
            let ([x0, y0], [x1, y1]) = (w[0], w[1]);
            if (x0 != x1) == (y0 != y1) {
                return Err(bad(
                    format!("{key}.path[{}]", i + 1),
                    "consecutive waypoints must differ in exactly one of row or column",
                ));
            }
        }
        for (i, [x, y]) in m.blocked.iter().enumerate() {
            if !m.in_grid(*x, *y) {
                return Err(bad(format!("{key}.blocked[{i}]"), "outside the grid"));
            }
        }
        for players in 1u8..=4 {
            let zones = m.zones.get(&players).ok_or_else(|| bad(format!("{key}.zones.{players}"), "missing"))?;
            if zones.len() != players as usize {
                return Err(bad(
                    format!("{key}.zones.{players}"),
                    format!("needs {players} zones, has {}", zones.len()),
                ));
            }
            let mut seen = BTreeSet::new();
            for (z, zone) in zones.iter().enumerate() {
                let zk = format!("{key}.zones.{players}[{z}]");
                if zone.is_empty() {
                    return Err(bad(zk, "a zone needs at least one rectangle"));
                }
                let mut buildable = 0;
                for [x0, y0, x1, y1] in zone {
                    if x0 > x1 || y0 > y1 || !m.in_grid(*x0, *y0) || !m.in_grid(*x1, *y1) {
                        return Err(bad(zk, "rectangles are [x0, y0, x1, y1] inside the grid, x0 <= x1, y0 <= y1"));
                    }
                    for x in *x0..=*x1 {
                        for y in *y0..=*y1 {
                            if !seen.insert((x, y)) {
                                return Err(bad(zk, format!("overlaps another zone at ({x}, {y})")));
                            }
                            if m.buildable(x, y) {
                                buildable += 1;
                            }
                        }
                    }
                }
                if buildable == 0 {
                    return Err(bad(zk, "has no buildable cell"));
                }
            }
        }
        if m.waves < 20 {
            return Err(bad(format!("{key}.waves"), format!("needs at least 20 waves, has {}", m.waves)));
        }
        if m.spawn_groups.is_empty() {
            return Err(bad(format!("{key}.spawn_groups"), "needs at least one spawn group"));
        }
        for (i, g) in m.spawn_groups.iter().enumerate() {
            let gk = format!("{key}.spawn_groups[{i}]");
            if !self.enemies.contains_key(&g.enemy) {
                return Err(bad(format!("{gk}.enemy"), format!("unknown enemy type '{}'", g.enemy)));
            }
            if g.begin == 0 || g.every == 0 || g.end.is_some_and(|e| e < g.begin) {
                return Err(bad(gk, "begin and every must be at least 1, end at least begin"));
            }
            if g.count == 0 || g.interval_ticks == 0 {
                return Err(bad(gk, "count and interval_ticks must be at least 1"));
            }
        }
        for wave in 1..=m.waves {
            if spawn_schedule(self, m, wave, "normal", 0).is_empty() {
                return Err(bad(format!("{key}.spawn_groups"), format!("wave {wave} spawns no enemy")));
            }
        }
        Ok(())
    }
}

/// The shipped rules file (for tests and tools).
pub const SHIPPED: &str = include_str!("../../../configs/game-rules.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_are_valid_and_complete() {
        let r = Rules::parse(SHIPPED).unwrap();
        assert!(r.maps.len() >= 2 && r.towers.len() >= 3 && r.enemies.len() >= 3);
        assert!(r.maps.values().all(|m| m.waves >= 20));
        assert!(r.towers.values().all(|t| t.levels.len() >= 3 || t.flag.is_some()));
        assert!(r.towers.values().any(|t| t.levels.iter().any(|l| l.splash_radius > 0)));
        assert!(r.towers.values().any(|t| t.levels.iter().any(|l| l.slow_pct > 0)));
        assert!(r.enemies.values().any(|e| e.armor > 0) && r.enemies.values().any(|e| e.shield > 0));
        let meadow = &r.maps["meadow"];
        assert!(!meadow.buildable(0, 2), "the path is not buildable");
        assert!(!meadow.buildable(9, 4), "blocked");
        assert!(meadow.buildable(0, 0));
        assert_eq!(r.content_hash(), Rules::parse(SHIPPED).unwrap().content_hash(), "stable hash");
    }

    fn broken(from: &str, to: &str) -> RulesError {
        let text = SHIPPED.replacen(from, to, 1);
        assert_ne!(text, SHIPPED, "the edit {from:?} applies");
        Rules::parse(&text).unwrap_err()
    }

    #[test]
    fn a_bad_file_names_the_key_and_the_reason() {
        let e = broken("waves: 20", "waves: 12");
        assert_eq!(e.key, "maps.meadow.waves");
        assert!(e.reason.contains("at least 20"), "{e}");
        let e = broken("{ enemy: runner, begin: 3", "{ enemy: goblin, begin: 3");
        assert_eq!(e.key, "maps.meadow.spawn_groups[1].enemy");
        let e = broken("path: [[0, 2], [16, 2]", "path: [[0, 2], [16, 3]");
        assert_eq!(e.key, "maps.meadow.path[1]");
        let e = broken("cooldown_ticks: 10 }", "cooldown_ticks: 0 }");
        assert_eq!(e.key, "towers.arrow.levels[0].cooldown_ticks");
        let e = broken("2: [[[0, 0, 9, 11]], [[10, 0, 19, 11]]]", "2: [[[0, 0, 10, 11]], [[10, 0, 19, 11]]]");
        assert_eq!(e.key, "maps.meadow.zones.2[1]");
        assert!(e.reason.contains("overlaps"), "{e}");
        let e = broken("hp: 60,", "hp: 0,");
        assert_eq!(e.key, "enemies.grunt.hp");
        let start = SHIPPED.lines().find(|l| l.trim_start().starts_with("start_gold:")).unwrap();
        let e = broken(start, &start.replace(start.trim_start(), "start_gold: -5"));
        assert_eq!((e.key.as_str(), e.reason.as_str()), ("economy.start_gold", "must not be negative, got -5"));
        let e = broken("economy:", "economy:\n  interest: 5");
        assert!(e.reason.contains("interest"), "unknown keys are refused: {e}");
        let e = broken("lives: 20                # shared", "lives: many               # shared");
        assert!(e.reason.contains("lives") || e.key.starts_with("line"), "{e}");
    }
}
