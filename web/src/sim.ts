// The game's deterministic wave simulation, in the browser: a line-by-line
// port of domain/timesquare/src/sim.rs (and prng.rs, rules::spawn_schedule),
// so a replay re-runs a finished game here and checks every wave's hash
// against the one the server recorded. Integers only: positions and ranges
// stay far below 2^53, so plain numbers are exact; the 64-bit PRNG and FNV
// hashing use BigInt. Iteration orders match the Rust code (towers by id,
// enemies by spawn order).

export const TILE = 1000;
const MASK = (1n << 64n) - 1n;

/** FNV-1a 64 (prng.rs `fnv`). */
export function fnv(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) & MASK;
  return h;
}

export function hex16(h: bigint): string {
  return h.toString(16).padStart(16, "0");
}

/** SplitMix64 (prng.rs `Rng`). */
export class Rng {
  constructor(public state: bigint) {}
  nextU64(): bigint {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
    return z ^ (z >> 31n);
  }
  /** Uniform in 0..=max. */
  upTo(max: number): number {
    return max === 0 ? 0 : Number(this.nextU64() % BigInt(max + 1));
  }
}

// The rules as the server serialises them (serde field names).
export interface Level {
  upgrade_cost: number;
  range: number;
  damage: number;
  cooldown_ticks: number;
  splash_radius: number;
  slow_pct: number;
  slow_ticks: number;
}
export interface TowerType {
  cost: number;
  sell_refund_pct: number;
  levels: Level[];
  flag: string | null;
}
export interface EnemyType {
  hp: number;
  speed: number;
  bounty: number;
  leak_damage: number;
  armor: number;
  shield: number;
}
export interface SpawnGroup {
  enemy: string;
  begin: number;
  end: number | null;
  every: number;
  count: number;
  count_per_wave_pm: number;
  interval_ticks: number;
  delay_ticks: number;
  hp_per_wave_pct: number;
  shield_per_wave: number;
}
export interface MapRules {
  width: number;
  height: number;
  path: [number, number][];
  blocked: [number, number][];
  zones: Record<string, [number, number, number, number][][]>;
  waves: number;
  spawn_spread_ticks: number;
  spawn_groups: SpawnGroup[];
}
export interface Difficulty {
  enemy_hp_pct: number;
  enemy_speed_pct: number;
  bounty_pct: number;
  start_gold_pct: number;
  lives: number;
}
export interface Rules {
  rules_version: number;
  ticks_per_second: number;
  difficulties: Record<string, Difficulty>;
  towers: Record<string, TowerType>;
  enemies: Record<string, EnemyType>;
  maps: Record<string, MapRules>;
}

/** Integer square root, floor. */
export function isqrt(n: number): number {
  if (n <= 0) return 0;
  let x = Math.floor(Math.sqrt(n));
  while (x * x > n) x--;
  while ((x + 1) * (x + 1) <= n) x++;
  return x;
}

const centre = (c: number) => c * TILE + TILE / 2;
const signum = (v: number) => (v > 0 ? 1 : v < 0 ? -1 : 0);
const idiv = (a: number, b: number) => Math.trunc(a / b);

export class Path {
  points: [number, number][];
  at: number[];
  length: number;

  constructor(map: MapRules) {
    this.points = map.path.map(([x, y]) => [centre(x), centre(y)]);
    this.at = [0];
    for (let i = 1; i < this.points.length; i++) {
      const [a, b] = [this.points[i - 1], this.points[i]];
      this.at.push(this.at[this.at.length - 1] + Math.abs(b[0] - a[0]) + Math.abs(b[1] - a[1]));
    }
    this.length = this.at[this.at.length - 1] ?? 0;
  }

  position(d: number): [number, number] {
    d = Math.min(Math.max(d, 0), this.length);
    // Binary search as Rust's: an exact hit returns that point.
    let lo = 0;
    let hi = this.at.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.at[mid] < d) lo = mid + 1;
      else hi = mid;
    }
    if (this.at[lo] === d) return this.points[lo];
    const i = lo - 1;
    const [a, b] = [this.points[i], this.points[i + 1]];
    const t = d - this.at[i];
    return [a[0] + signum(b[0] - a[0]) * t, a[1] + signum(b[1] - a[1]) * t];
  }

  inRange(c: [number, number], range: number): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i + 1 < this.points.length; i++) {
      const [a, b] = [this.points[i], this.points[i + 1]];
      const [alongA, alongB, fixed, cAlong, cFixed] = a[1] === b[1] ? [a[0], b[0], a[1], c[0], c[1]] : [a[1], b[1], a[0], c[1], c[0]];
      const off = Math.abs(cFixed - fixed);
      if (off > range) continue;
      const half = isqrt(range * range - off * off);
      const [lo, hi] = [Math.min(alongA, alongB), Math.max(alongA, alongB)];
      const [from, to] = [Math.max(cAlong - half, lo), Math.min(cAlong + half, hi)];
      if (from > to) continue;
      const [d0, d1] = alongA <= alongB ? [this.at[i] + (from - alongA), this.at[i] + (to - alongA)] : [this.at[i] + (alongA - to), this.at[i] + (alongA - from)];
      const last = out[out.length - 1];
      if (last && d0 <= last[1]) last[1] = Math.max(last[1], d1);
      else out.push([d0, d1]);
    }
    return out;
  }
}

export interface Spawn {
  tick: number;
  enemy: string;
  hp: number;
  shield: number;
  speed: number;
  bounty: number;
  leak_damage: number;
  armor: number;
}

export function spawnSchedule(rules: Rules, map: MapRules, wave: number, difficulty: string, seed: bigint): Spawn[] {
  const d = rules.difficulties[difficulty] ?? rules.difficulties[Object.keys(rules.difficulties).sort()[0]];
  const [hpPct, speedPct, bountyPct] = d ? [d.enemy_hp_pct, d.enemy_speed_pct, d.bounty_pct] : [100, 100, 100];
  const rng = new Rng(seed);
  const out: [number, number, number, Spawn][] = [];
  map.spawn_groups.forEach((g, gi) => {
    const active = wave >= g.begin && (g.end === null || g.end === undefined || wave <= g.end) && (wave - g.begin) % g.every === 0;
    const e = active ? rules.enemies[g.enemy] : undefined;
    if (!e) return;
    const n = g.count + idiv((wave - g.begin) * g.count_per_wave_pm, 1000);
    const grown = (base: number, pct: number) => idiv(base * (100 + pct * (wave - 1)), 100);
    for (let j = 0; j < n; j++) {
      const tick = 1 + g.delay_ticks + j * g.interval_ticks + rng.upTo(map.spawn_spread_ticks);
      out.push([
        tick,
        gi,
        j,
        {
          tick,
          enemy: g.enemy,
          hp: Math.max(1, idiv(grown(e.hp, g.hp_per_wave_pct) * hpPct, 100)),
          shield: e.shield + g.shield_per_wave * (wave - 1),
          speed: Math.max(1, idiv(e.speed * speedPct, 100)),
          bounty: idiv(e.bounty * bountyPct, 100),
          leak_damage: e.leak_damage,
          armor: e.armor,
        },
      ]);
    }
  });
  out.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  return out.map((x) => x[3]);
}

export interface Tower {
  id: number;
  owner: string;
  seat: number;
  kind: string;
  level: number;
  x: number;
  y: number;
  kills: number;
  reach: [number, number][];
  readyAt: number;
}

export function aim(t: Tower, rules: Rules, path: Path) {
  const range = rules.towers[t.kind]?.levels[t.level]?.range ?? 0;
  t.reach = path.inRange([centre(t.x), centre(t.y)], range);
}

export interface Enemy {
  id: number;
  kind: string;
  hp: number;
  maxHp: number;
  shield: number;
  armor: number;
  pos: number;
  speed: number;
  slowPct: number;
  slowUntil: number;
  bounty: number;
  leakDamage: number;
}

export interface World {
  gold: number[];
  lives: number;
  /** By id, iterated in id order. */
  towers: Map<number, Tower>;
}

export function towersInOrder(w: World): Tower[] {
  return [...w.towers.values()].sort((a, b) => a.id - b.id);
}

function hit(e: Enemy, damage: number) {
  let rest = damage;
  if (e.shield > 0) {
    const absorbed = Math.min(e.shield, rest);
    e.shield -= absorbed;
    rest -= absorbed;
  }
  if (rest > 0) e.hp -= Math.max(rest - e.armor, 1);
}

export class Battle {
  tick = 0;
  nextSpawn = 0;
  enemies: Enemy[] = [];
  nextEnemyId = 0;
  kills = 0;
  leaks = 0;
  ended: [number, "cleared" | "overrun"] | null = null;
  shots: [number, number][] = [];
  spawns: Spawn[];

  constructor(
    rules: Rules,
    map: MapRules,
    readonly wave: number,
    difficulty: string,
    seed: bigint,
  ) {
    this.spawns = spawnSchedule(rules, map, wave, difficulty, seed);
  }

  step(rules: Rules, path: Path, world: World) {
    if (this.ended) return;
    const t = ++this.tick;
    while (this.nextSpawn < this.spawns.length && this.spawns[this.nextSpawn].tick <= t) {
      const s = this.spawns[this.nextSpawn];
      this.enemies.push({
        id: this.nextEnemyId,
        kind: s.enemy,
        hp: s.hp,
        maxHp: s.hp,
        shield: s.shield,
        armor: s.armor,
        pos: 0,
        speed: s.speed,
        slowPct: 0,
        slowUntil: 0,
        bounty: s.bounty,
        leakDamage: s.leak_damage,
      });
      this.nextEnemyId++;
      this.nextSpawn++;
    }
    for (const e of this.enemies) {
      const slow = e.slowUntil >= t ? e.slowPct : 0;
      e.pos += Math.max(1, idiv(e.speed * (100 - slow), 100));
    }
    const before = this.enemies.length;
    let lost = 0;
    this.enemies = this.enemies.filter((e) => {
      if (e.pos >= path.length) {
        lost += e.leakDamage;
        return false;
      }
      return true;
    });
    this.leaks += before - this.enemies.length;
    world.lives -= lost;
    if (world.lives <= 0) {
      world.lives = 0;
      this.ended = [t, "overrun"];
      return;
    }
    this.shots = [];
    for (const tower of towersInOrder(world)) {
      if (t < tower.readyAt) continue;
      const level = rules.towers[tower.kind]?.levels[tower.level];
      if (!level) continue;
      let target = -1;
      this.enemies.forEach((e, i) => {
        if (e.hp <= 0 || !tower.reach.some(([a, b]) => e.pos >= a && e.pos <= b)) return;
        if (target < 0 || e.pos > this.enemies[target].pos) target = i;
      });
      if (target < 0) continue;
      tower.readyAt = t + level.cooldown_ticks;
      this.shots.push([tower.id, this.enemies[target].id]);
      const c = path.position(this.enemies[target].pos);
      this.enemies.forEach((e, i) => {
        if (e.hp <= 0) return;
        let splashed = false;
        if (i !== target && level.splash_radius > 0) {
          const p = path.position(e.pos);
          const [dx, dy] = [p[0] - c[0], p[1] - c[1]];
          splashed = dx * dx + dy * dy <= level.splash_radius * level.splash_radius;
        }
        if (i !== target && !splashed) return;
        hit(e, level.damage);
        if (i === target && level.slow_pct > 0) {
          e.slowPct = level.slow_pct;
          e.slowUntil = t + level.slow_ticks;
        }
        if (e.hp <= 0) {
          this.kills++;
          tower.kills++;
          if (tower.seat < world.gold.length) world.gold[tower.seat] += e.bounty;
        }
      });
    }
    this.enemies = this.enemies.filter((e) => e.hp > 0);
    if (this.nextSpawn >= this.spawns.length && this.enemies.length === 0) this.ended = [t, "cleared"];
  }

  /** A copy to run ahead on (its spawn schedule is shared: never changed). */
  clone(): Battle {
    const b = Object.create(Battle.prototype) as Battle;
    Object.assign(b, this, { enemies: this.enemies.map((e) => ({ ...e })), ended: this.ended ? [...this.ended] : null, shots: [] });
    return b;
  }

  advanceTo(tick: number, rules: Rules, path: Path, world: World) {
    while (this.tick < tick && !this.ended) this.step(rules, path, world);
  }

  /** sim.rs `Battle::hash`: the same numbers, in the same order, little-endian i64s. */
  hash(world: World): string {
    const values: bigint[] = [BigInt(this.wave), BigInt(this.tick), BigInt(world.lives)];
    for (const g of world.gold) values.push(BigInt(g));
    for (const t of towersInOrder(world)) {
      values.push(BigInt(t.id), BigInt(t.level), BigInt(t.x), BigInt(t.y), BigInt(t.kills), fnv(new TextEncoder().encode(t.kind)));
    }
    for (const e of this.enemies) values.push(BigInt(e.id), BigInt(e.hp), BigInt(e.shield), BigInt(e.pos));
    values.push(BigInt(this.kills), BigInt(this.leaks));
    const bytes = new Uint8Array(values.length * 8);
    const view = new DataView(bytes.buffer);
    values.forEach((v, i) => view.setBigUint64(i * 8, BigInt.asUintN(64, v), true));
    return hex16(fnv(bytes));
  }
}
