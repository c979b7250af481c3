//! The deterministic simulation of a wave: integers only (positions in
//! milli-tiles), a seeded PRNG (SplitMix64 from the session's seed and the
//! wave number), a fixed tick, iteration in id order (towers by id, enemies
//! by spawn order; no hash-map order anywhere), and no clock: time enters as
//! a tick number. The same inputs at the same ticks give the same state,
//! bit for bit, on every replica and in every replay.
//!
//! Per tick: due enemies spawn at the start of the path; every enemy moves
//! (slowed ones slower); an enemy past the end leaks and costs lives; every
//! tower whose cooldown has passed fires at the enemy furthest along the path
//! within its range (precomputed as intervals along the path), with splash
//! and slow as its level says; a killed enemy pays its bounty to the tower's
//! owner. The wave ends when lives reach zero (overrun) or when every enemy
//! has spawned and none is left (cleared).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::prng::{Rng, fnv, wave_seed};
use crate::rules::{Map, Rules, TILE};
pub use crate::rules::{Spawn, spawn_schedule};

/// Integer square root (floor).
pub fn isqrt(n: i64) -> i64 {
    if n <= 0 {
        return 0;
    }
    let mut x = (n as f64).sqrt() as i64;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

/// The path as a polyline through the waypoint cells' centres, in milli-tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub points: Vec<(i64, i64)>,
    /// Distance along the path at each point.
    pub at: Vec<i64>,
    pub length: i64,
}

fn centre(c: i32) -> i64 {
    i64::from(c) * TILE + TILE / 2
}

impl Path {
    pub fn of(map: &Map) -> Self {
        let points: Vec<(i64, i64)> = map.path.iter().map(|[x, y]| (centre(*x), centre(*y))).collect();
        let mut at = vec![0];
        for w in points.windows(2) {
            let d = (w[1].0 - w[0].0).abs() + (w[1].1 - w[0].1).abs();
            at.push(at.last().copied().unwrap_or(0) + d);
        }
        let length = at.last().copied().unwrap_or(0);
        Self { points, at, length }
    }

    /// The point at distance `d` along the path.
    pub fn position(&self, d: i64) -> (i64, i64) {
        let d = d.clamp(0, self.length);
        let i = match self.at.binary_search(&d) {
            Ok(i) => return self.points[i],
            Err(i) => i - 1,
        };
        let (a, b) = (self.points[i], self.points[i + 1]);
        let t = d - self.at[i];
        ((a.0 + (b.0 - a.0).signum() * t), (a.1 + (b.1 - a.1).signum() * t))
    }

    /// The stretches of path (as distance intervals) within `range` of `c`.
    pub fn in_range(&self, c: (i64, i64), range: i64) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = Vec::new();
        for i in 0..self.points.len().saturating_sub(1) {
            let (a, b) = (self.points[i], self.points[i + 1]);
            // The segment runs along x (a.1 == b.1) or along y.
            let (along_a, along_b, fixed, c_along, c_fixed) =
                if a.1 == b.1 { (a.0, b.0, a.1, c.0, c.1) } else { (a.1, b.1, a.0, c.1, c.0) };
            let off = (c_fixed - fixed).abs();
            if off > range {
                continue;
            }
            let half = isqrt(range * range - off * off);
            let (lo, hi) = (along_a.min(along_b), along_a.max(along_b));
            let (from, to) = ((c_along - half).max(lo), (c_along + half).min(hi));
            if from > to {
                continue;
            }
            let (d0, d1) = if along_a <= along_b {
                (self.at[i] + (from - along_a), self.at[i] + (to - along_a))
            } else {
                (self.at[i] + (along_a - to), self.at[i] + (along_a - from))
            };
            match out.last_mut() {
                Some(last) if d0 <= last.1 => last.1 = last.1.max(d1),
                _ => out.push((d0, d1)),
            }
        }
        out
    }
}

/// A tower on the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tower {
    pub id: u32,
    pub owner: String,
    pub seat: usize,
    pub kind: String,
    /// 0-based level.
    pub level: usize,
    pub x: i32,
    pub y: i32,
    /// Gold put into it (cost and upgrades): what a sale refunds from.
    pub invested: i64,
    pub kills: u32,
    /// Stretches of path in range, as distance intervals (from the level's range).
    pub reach: Vec<(i64, i64)>,
    /// The tick from which it may fire again.
    pub ready_at: u32,
}

impl Tower {
    /// Recomputes the tower's reach for its level.
    pub fn aim(&mut self, rules: &Rules, path: &Path) {
        let range = rules.towers.get(&self.kind).and_then(|t| t.levels.get(self.level)).map(|l| l.range).unwrap_or(0);
        self.reach = path.in_range((centre(self.x), centre(self.y)), range);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enemy {
    pub id: u32,
    pub kind: String,
    pub hp: i64,
    pub max_hp: i64,
    pub shield: i64,
    pub armor: i64,
    /// Distance along the path.
    pub pos: i64,
    pub speed: i64,
    pub slow_pct: i64,
    pub slow_until: u32,
    pub bounty: i64,
    pub leak_damage: i64,
}

/// How a wave ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaveEnd {
    /// Every enemy spawned and none is left.
    Cleared,
    /// Lives reached zero.
    Overrun,
}

impl WaveEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cleared => "cleared",
            Self::Overrun => "overrun",
        }
    }
}

/// A running wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Battle {
    pub wave: u32,
    /// The last simulated tick (0 = before the first).
    pub tick: u32,
    pub spawns: Vec<Spawn>,
    pub next_spawn: usize,
    pub enemies: Vec<Enemy>,
    pub next_enemy_id: u32,
    pub kills: u32,
    pub leaks: u32,
    /// Bounty earned per seat during this wave.
    pub earned: Vec<i64>,
    /// Kills per seat during this wave.
    pub kills_by_seat: Vec<u32>,
    pub ended: Option<(u32, WaveEnd)>,
    /// Shots of the last tick: (tower id, enemy id) — for frames.
    #[serde(skip)]
    pub shots: Vec<(u32, u32)>,
}

/// What the simulation changes besides the battle: gold per seat, shared
/// lives, the towers (cooldowns, kills).
pub struct World<'a> {
    pub gold: &'a mut [i64],
    pub lives: &'a mut i64,
    pub towers: &'a mut BTreeMap<u32, Tower>,
}

fn hit(e: &mut Enemy, damage: i64) {
    let mut rest = damage;
    if e.shield > 0 {
        let absorbed = e.shield.min(rest);
        e.shield -= absorbed;
        rest -= absorbed;
    }
    if rest > 0 {
        e.hp -= (rest - e.armor).max(1);
    }
}

impl Battle {
    pub fn new(rules: &Rules, map: &Map, wave: u32, difficulty: &str, seed: u64, seats: usize) -> Self {
        Self {
            wave,
            tick: 0,
            spawns: spawn_schedule(rules, map, wave, difficulty, seed),
            next_spawn: 0,
            enemies: Vec::new(),
            next_enemy_id: 0,
            kills: 0,
            leaks: 0,
            earned: vec![0; seats],
            kills_by_seat: vec![0; seats],
            ended: None,
            shots: Vec::new(),
        }
    }

    /// One tick (see the module documentation).
    pub fn step(&mut self, rules: &Rules, path: &Path, world: &mut World) {
        if self.ended.is_some() {
            return;
        }
        let t = self.tick + 1;
        self.tick = t;
        while self.next_spawn < self.spawns.len() && self.spawns[self.next_spawn].tick <= t {
            let s = &self.spawns[self.next_spawn];
            self.enemies.push(Enemy {
                id: self.next_enemy_id,
                kind: s.enemy.clone(),
                hp: s.hp,
                max_hp: s.hp,
                shield: s.shield,
                armor: s.armor,
                pos: 0,
                speed: s.speed,
                slow_pct: 0,
                slow_until: 0,
                bounty: s.bounty,
                leak_damage: s.leak_damage,
            });
            self.next_enemy_id += 1;
            self.next_spawn += 1;
        }
        for e in &mut self.enemies {
            let slow = if e.slow_until >= t { e.slow_pct } else { 0 };
            e.pos += (e.speed * (100 - slow) / 100).max(1);
        }
        let before = self.enemies.len();
        let mut lost = 0;
        self.enemies.retain(|e| {
            if e.pos >= path.length {
                lost += e.leak_damage;
                false
            } else {
                true
            }
        });
        self.leaks += (before - self.enemies.len()) as u32;
        *world.lives -= lost;
        if *world.lives <= 0 {
            *world.lives = 0;
            self.ended = Some((t, WaveEnd::Overrun));
            return;
        }
        self.shots.clear();
        for tower in world.towers.values_mut() {
            if t < tower.ready_at {
                continue;
            }
            let Some(level) = rules.towers.get(&tower.kind).and_then(|k| k.levels.get(tower.level)) else { continue };
            let mut target: Option<usize> = None;
            for (i, e) in self.enemies.iter().enumerate() {
                if e.hp <= 0 || !tower.reach.iter().any(|(a, b)| (*a..=*b).contains(&e.pos)) {
                    continue;
                }
                if target.is_none_or(|j| e.pos > self.enemies[j].pos) {
                    target = Some(i);
                }
            }
            let Some(ti) = target else { continue };
            tower.ready_at = t + level.cooldown_ticks;
            self.shots.push((tower.id, self.enemies[ti].id));
            let centre = path.position(self.enemies[ti].pos);
            for (i, e) in self.enemies.iter_mut().enumerate() {
                if e.hp <= 0 {
                    continue;
                }
                let splashed = i != ti && level.splash_radius > 0 && {
                    let p = path.position(e.pos);
                    let (dx, dy) = (p.0 - centre.0, p.1 - centre.1);
                    dx * dx + dy * dy <= level.splash_radius * level.splash_radius
                };
                if i != ti && !splashed {
                    continue;
                }
                hit(e, level.damage);
                if i == ti && level.slow_pct > 0 {
                    e.slow_pct = level.slow_pct;
                    e.slow_until = t + level.slow_ticks;
                }
                if e.hp <= 0 {
                    self.kills += 1;
                    tower.kills += 1;
                    if let Some(g) = world.gold.get_mut(tower.seat) {
                        *g += e.bounty;
                    }
                    if let Some(g) = self.earned.get_mut(tower.seat) {
                        *g += e.bounty;
                    }
                    if let Some(k) = self.kills_by_seat.get_mut(tower.seat) {
                        *k += 1;
                    }
                }
            }
        }
        self.enemies.retain(|e| e.hp > 0);
        if self.next_spawn >= self.spawns.len() && self.enemies.is_empty() {
            self.ended = Some((t, WaveEnd::Cleared));
        }
    }

    /// Simulates up to `tick` (or the wave's end, whichever comes first).
    pub fn advance_to(&mut self, tick: u32, rules: &Rules, path: &Path, world: &mut World) {
        while self.tick < tick && self.ended.is_none() {
            self.step(rules, path, world);
        }
    }

    /// The fingerprint of the battle and its world: every number that
    /// matters, in a fixed order.
    pub fn hash(&self, world: &World) -> String {
        let mut bytes = Vec::with_capacity(256);
        let mut put = |v: i64| bytes.extend_from_slice(&v.to_le_bytes());
        put(i64::from(self.wave));
        put(i64::from(self.tick));
        put(*world.lives);
        for g in world.gold.iter() {
            put(*g);
        }
        for t in world.towers.values() {
            put(i64::from(t.id));
            put(t.level as i64);
            put(i64::from(t.x));
            put(i64::from(t.y));
            put(i64::from(t.kills));
            put(fnv(t.kind.as_bytes()) as i64);
        }
        for e in &self.enemies {
            put(i64::from(e.id));
            put(e.hp);
            put(e.shield);
            put(e.pos);
        }
        put(i64::from(self.kills));
        put(i64::from(self.leaks));
        format!("{:016x}", fnv(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Rules, SHIPPED};

    #[test]
    fn the_path_is_measured_and_walked_in_milli_tiles() {
        let rules = Rules::parse(SHIPPED).unwrap();
        let path = Path::of(&rules.maps["meadow"]);
        assert_eq!(path.length, (16 + 4 + 13 + 4 + 16) * TILE);
        assert_eq!(path.position(0), (500, 2500));
        assert_eq!(path.position(16 * TILE), (16_500, 2500));
        assert_eq!(path.position(17 * TILE), (16_500, 3500), "turned down the column");
        assert_eq!(path.position(path.length + 99), (19_500, 10_500), "clamped at the end");
        // A tower next to the first stretch reaches a symmetric interval of it.
        let reach = path.in_range((5_500, 1_500), 2_000);
        let half = isqrt(2_000 * 2_000 - 1_000 * 1_000);
        assert_eq!(reach, vec![(5_000 - half, 5_000 + half)]);
        assert!(path.in_range((5_500, 9_500), 1_000).iter().all(|(a, b)| a <= b));
    }

    #[test]
    fn spawns_are_seeded_ordered_and_grow_with_the_wave() {
        let rules = Rules::parse(SHIPPED).unwrap();
        let m = &rules.maps["meadow"];
        let a = spawn_schedule(&rules, m, 1, "normal", 42);
        assert_eq!(a, spawn_schedule(&rules, m, 1, "normal", 42), "same seed, same schedule");
        assert_ne!(a, spawn_schedule(&rules, m, 1, "normal", 43), "another seed jitters differently");
        assert!(a.windows(2).all(|w| w[0].tick <= w[1].tick));
        let late = spawn_schedule(&rules, m, 19, "normal", 42);
        assert!(late.len() > a.len());
        let hp = |s: &[Spawn]| s.iter().find(|s| s.enemy == "grunt").unwrap().hp;
        assert!(hp(&late) > hp(&a));
        let hard = spawn_schedule(&rules, m, 1, "hard", 42);
        assert!(hp(&hard) > hp(&a) && hard[0].speed > a[0].speed);
    }

    /// The browser re-runs replays with a port of this simulation
    /// (web/src/sim.ts); web/test/sim.test.mjs asserts the same hashes for
    /// the same rules (the fixture both read) and inputs. A change here that
    /// moves them must move the port too.
    #[test]
    fn the_browser_port_pins_these_hashes() {
        let rules: Rules =
            serde_json::from_str(include_str!("../../../web/test/fixtures/rules.json")).expect("the fixture parses");
        let m = &rules.maps["meadow"];
        let path = Path::of(m);
        let mut tower = Tower {
            id: 1,
            owner: "a".into(),
            seat: 0,
            kind: "arrow".into(),
            level: 0,
            x: 3,
            y: 1,
            invested: 0,
            kills: 0,
            reach: vec![],
            ready_at: 1,
        };
        tower.aim(&rules, &path);
        let mut towers = BTreeMap::from([(1, tower)]);
        let (mut gold, mut lives) = (vec![100, 100], 10);
        let mut battle = Battle::new(&rules, m, 2, "hard", 42, 2);
        let mut world = World { gold: &mut gold, lives: &mut lives, towers: &mut towers };
        let want = [
            (1, "361378a848c4cc7a"),
            (50, "f0711752a2e8c787"),
            (100, "74875a52ddac4f1c"),
            (200, "cb72ab44b4e76be0"),
            (400, "0b4f540092199597"),
            (800, "adc8d146a73d0853"),
        ];
        for (tick, hash) in want {
            battle.advance_to(tick, &rules, &path, &mut world);
            assert_eq!(battle.hash(&world), hash, "tick {tick}");
        }
        assert_eq!(Rng(42).next_u64(), 13_679_457_532_755_275_413);
        assert_eq!(format!("{:016x}", fnv(b"arrow")), "4f970eb634c08746");
    }

    #[test]
    fn isqrt_is_exact() {
        for n in [0, 1, 2, 3, 4, 15, 16, 17, 999_999, 1_000_000, 4_000_000_000_000] {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "{n}");
        }
    }
}
