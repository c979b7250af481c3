// Replays: a finished (or running) game re-run here, in the browser, from
// its recorded events (GetReplay, paged) with the rules it was played with.
// Every wave is simulated by the port of the server's simulation (sim.ts)
// and its hash, outcome, end tick and lives compared with what the server
// recorded — the check VerifyReplay makes, made by the client. Then the game
// plays back on the board: play, pause, speed, seek (by wave and tick).

import { create, fromJsonString, type DescMessage } from "@bufbuild/protobuf";
import { games } from "./api.js";
import { BoardCanvas } from "./board.js";
import {
  GameSessionCreatedSchema,
  GameStartedSchema,
  PlayerJoinedSchema,
  PlayerLeftSchema,
  TowerPlacedSchema,
  TowerSoldSchema,
  TowerUpgradedSchema,
  WaveCompletedSchema,
  WaveStartedSchema,
  GameEndedSchema,
  type GameSessionCreated,
  type GameStarted,
  type PlayerJoined,
  type PlayerLeft,
  type TowerPlaced,
  type TowerSold,
  type TowerUpgraded,
  type WaveCompleted,
  type WaveStarted,
  type GameEnded,
} from "./gen/defense_allies/timesquare/v1/events_pb.js";
import { FrameSchema, GameViewSchema, type GameView } from "./gen/defense_allies/timesquare/v1/timesquare_pb.js";
import type { Screen } from "./game.js";
import { Battle, aim, fnv, hex16, Path, type MapRules, type Rules, type Tower, type World } from "./sim.js";
import { fill, h, Outcome } from "./ui.js";
import { quoteBigIntegers } from "./json.js";

type Ev =
  | { type: "GameSessionCreated"; e: GameSessionCreated }
  | { type: "PlayerJoined"; e: PlayerJoined }
  | { type: "PlayerLeft"; e: PlayerLeft }
  | { type: "GameStarted"; e: GameStarted }
  | { type: "TowerPlaced"; e: TowerPlaced }
  | { type: "TowerUpgraded"; e: TowerUpgraded }
  | { type: "TowerSold"; e: TowerSold }
  | { type: "WaveStarted"; e: WaveStarted }
  | { type: "WaveCompleted"; e: WaveCompleted }
  | { type: "GameEnded"; e: GameEnded }
  | { type: "other"; e: null };

const SCHEMAS: Record<string, DescMessage> = {
  GameSessionCreated: GameSessionCreatedSchema,
  PlayerJoined: PlayerJoinedSchema,
  PlayerLeft: PlayerLeftSchema,
  GameStarted: GameStartedSchema,
  TowerPlaced: TowerPlacedSchema,
  TowerUpgraded: TowerUpgradedSchema,
  TowerSold: TowerSoldSchema,
  WaveStarted: WaveStartedSchema,
  WaveCompleted: WaveCompletedSchema,
  GameEnded: GameEndedSchema,
};

function parse(type: string, json: string): Ev {
  const schema = SCHEMAS[type];
  if (!schema) return { type: "other", e: null };
  return { type, e: fromJsonString(schema, quoteBigIntegers(json), { ignoreUnknownFields: true }) } as Ev;
}

interface Member {
  userId: string;
  name: string;
  seat: number | null;
  present: boolean;
}

/** What the fold keeps: session_rs `GameSession` as far as a replay needs it. */
interface State {
  members: Member[];
  phase: string;
  map: string;
  difficulty: string;
  rulesVersion: number;
  rulesHash: string;
  world: World;
  wave: number;
  totalWaves: number;
  wavesCleared: number;
  score: bigint;
  outcome: string;
  battle: Battle | null;
}

export interface WaveCheck {
  wave: number;
  recordedHash: string;
  replayedHash: string;
  recordedOutcome: string;
  replayedOutcome: string;
  ok: boolean;
}

/** One wave as played back: the world when it started and its in-wave inputs. */
interface Segment {
  wave: number;
  seed: bigint;
  start: { gold: number[]; lives: number; towers: Map<number, Tower>; members: Member[] };
  inputs: TowerEv[];
  endTick: number;
}

function cloneWorld(w: World): World {
  return { gold: [...w.gold], lives: w.lives, towers: new Map([...w.towers].map(([id, t]) => [id, { ...t, reach: t.reach.map((r) => [...r] as [number, number]) }])) };
}

/** The events folded as session.rs `evolve` does, with the simulation advanced at each input's tick. */
export class Replayer {
  readonly path: Path;
  readonly mapRules: MapRules;
  state: State;
  checks: WaveCheck[] = [];
  segments: Segment[] = [];
  problems: string[] = [];

  constructor(
    readonly rules: Rules,
    readonly rulesJson: string,
    readonly events: Ev[],
  ) {
    const created = events.find((x) => x.type === "GameSessionCreated")?.e as GameSessionCreated | undefined;
    if (!created) throw new Error("the replay has no GameSessionCreated event");
    const map = rules.maps[created.map];
    if (!map) throw new Error(`the rules have no map ${created.map}`);
    this.mapRules = map;
    this.path = new Path(map);
    this.state = this.fresh();
    const hash = hex16(fnv(new TextEncoder().encode(rulesJson)));
    if (hash !== created.rulesHash) this.problems.push(`rules content ${hash}, the session was created with ${created.rulesHash}`);
  }

  private fresh(): State {
    return { members: [], phase: "none", map: "", difficulty: "", rulesVersion: 0, rulesHash: "", world: { gold: [], lives: 0, towers: new Map() }, wave: 0, totalWaves: 0, wavesCleared: 0, score: 0n, outcome: "", battle: null };
  }

  private member(id: string) {
    return this.state.members.find((m) => m.userId === id && m.present);
  }

  private advance(tick: number) {
    this.state.battle?.advanceTo(tick, this.rules, this.path, this.state.world);
  }

  /** Folds every event, checking each wave as VerifyReplay does. */
  runAll() {
    let seg: Segment | null = null;
    for (const ev of this.events) {
      if (ev.type === "WaveStarted") {
        seg = {
          wave: ev.e.wave,
          seed: ev.e.seed,
          start: { ...cloneWorld(this.state.world), members: this.state.members.map((m) => ({ ...m })) },
          inputs: [],
          endTick: 0,
        };
        this.segments.push(seg);
      } else if (seg && (ev.type === "TowerPlaced" || ev.type === "TowerUpgraded" || ev.type === "TowerSold") && ev.e.tick > 0) {
        seg.inputs.push(ev);
      } else if (ev.type === "WaveCompleted") {
        this.check(ev.e);
        if (seg) seg.endTick = ev.e.endTick;
        seg = null;
      }
      this.evolve(ev);
    }
    if (seg) seg.endTick = this.state.battle?.tick ?? 0;
  }

  private check(w: WaveCompleted) {
    const b = this.state.battle;
    if (!b) {
      this.checks.push({ wave: w.wave, recordedHash: w.stateHash, replayedHash: "", recordedOutcome: w.outcome, replayedOutcome: "no wave", ok: false });
      return;
    }
    // A probe: the world as it stands, advanced to the recorded end.
    const probe = b.clone();
    const world = cloneWorld(this.state.world);
    probe.advanceTo(w.endTick, this.rules, this.path, world);
    const hash = probe.hash(world);
    const [tick, how] = probe.ended ?? [probe.tick, "running"];
    const ok = hash === w.stateHash && how === w.outcome && tick === w.endTick && BigInt(world.lives) === w.lives;
    this.checks.push({ wave: w.wave, recordedHash: w.stateHash, replayedHash: hash, recordedOutcome: w.outcome, replayedOutcome: how, ok });
  }

  evolve(ev: Ev) {
    const s = this.state;
    switch (ev.type) {
      case "GameSessionCreated":
        s.phase = "lobby";
        s.map = ev.e.map;
        s.difficulty = ev.e.difficulty;
        s.rulesVersion = ev.e.rulesVersion;
        s.rulesHash = ev.e.rulesHash;
        s.totalWaves = ev.e.totalWaves;
        break;
      case "PlayerJoined":
        s.members = s.members.filter((m) => m.userId !== ev.e.userId);
        s.members.push({ userId: ev.e.userId, name: ev.e.displayName, seat: null, present: true });
        break;
      case "PlayerLeft":
        if (s.phase === "lobby") s.members = s.members.filter((m) => m.userId !== ev.e.userId);
        else {
          const m = s.members.find((m) => m.userId === ev.e.userId);
          if (m) m.present = false;
        }
        break;
      case "GameStarted":
        s.phase = "building";
        s.world.lives = Number(ev.e.lives);
        s.world.gold = ev.e.players.map(() => 0);
        for (const p of ev.e.players) {
          if (p.seat < s.world.gold.length) s.world.gold[p.seat] = Number(p.gold);
          const m = s.members.find((m) => m.userId === p.userId);
          if (m) m.seat = p.seat;
        }
        break;
      case "TowerPlaced":
      case "TowerUpgraded":
      case "TowerSold":
        this.advance(ev.e.tick);
        applyTower(ev, s.world, (id) => this.member(id)?.seat ?? 0, this.rules, this.path);
        break;
      case "WaveStarted":
        s.phase = "in_wave";
        s.wave = ev.e.wave;
        for (const t of s.world.towers.values()) t.readyAt = 1;
        s.battle = new Battle(this.rules, this.mapRules, ev.e.wave, s.difficulty, ev.e.seed);
        break;
      case "WaveCompleted":
        this.advance(ev.e.endTick);
        s.battle = null;
        if (ev.e.outcome === "cleared") s.wavesCleared++;
        s.world.lives = Number(ev.e.lives);
        for (const g of ev.e.gold) {
          const seat = s.members.find((m) => m.userId === g.userId)?.seat;
          if (seat !== null && seat !== undefined && seat < s.world.gold.length) s.world.gold[seat] = Number(g.gold);
        }
        s.score = ev.e.score;
        s.phase = "building";
        break;
      case "GameEnded":
        s.phase = "ended";
        s.outcome = ev.e.outcome;
        s.score = ev.e.score;
        s.battle = null;
        break;
    }
  }
}

/** Loads every page of a session's events and its rules. */
export async function loadReplay(sessionId: string, progress: (n: number) => void): Promise<Replayer> {
  let after = 0n;
  let rulesJson = "";
  const events: Ev[] = [];
  for (;;) {
    const page = await games.getReplay({ sessionId, afterVersion: after, pageSize: 1000 });
    if (page.rulesJson) rulesJson = page.rulesJson;
    for (const u of page.events) events.push(parse(u.eventType, u.json));
    progress(events.length);
    const last = page.events[page.events.length - 1]?.version;
    if (last === undefined || last >= page.version) break;
    after = last;
  }
  return new Replayer(JSON.parse(rulesJson) as Rules, rulesJson, events);
}

/** The path cells between waypoints (rules.rs `path_cells`). */
function pathCells(map: MapRules) {
  const cells = new Map<string, { x: number; y: number }>();
  for (let i = 0; i + 1 < map.path.length; i++) {
    let [x, y] = map.path[i];
    const [x1, y1] = map.path[i + 1];
    const [dx, dy] = [Math.sign(x1 - x), Math.sign(y1 - y)];
    cells.set(`${x},${y}`, { x, y });
    while (x !== x1 || y !== y1) {
      x += dx;
      y += dy;
      cells.set(`${x},${y}`, { x, y });
    }
  }
  return [...cells.values()];
}

export function replayScreen(sessionId: string): Screen {
  const out = new Outcome();
  const title = h("h1", {}, "Replay");
  const status = h("p", { id: "replay-status", "aria-live": "polite" }, "Loading the events…");
  const checks = h("div", { id: "replay-checks" });
  const canvas = h("canvas", { class: "board", "aria-label": "Replay board" });
  const header = h("div", { class: "game-header" });
  const seek = h("input", { type: "range", min: 0, max: 0, value: 0, id: "replay-seek", "aria-label": "Position in the game" });
  const play = h("button", { id: "replay-play", class: "primary" }, "Play") as HTMLButtonElement;
  const speed = h("select", { id: "replay-speed", "aria-label": "Speed" }, [0.5, 1, 2, 4, 8, 16].map((s) => h("option", { value: s, selected: s === 2 }, `${s}×`)));
  const controls = h("div", { class: "replay-controls" }, play, speed, seek);
  const el = h("section", { class: "replay", "data-session": sessionId }, title, status, out.el, controls, header, h("div", { class: "board-wrap" }, canvas), h("h2", {}, "Waves checked in this browser"), checks);
  const board = new BoardCanvas(canvas);
  let raf = 0;
  let disposed = false;

  void (async () => {
    let r: Replayer;
    try {
      r = await loadReplay(sessionId, (n) => (status.textContent = `Loading the events… ${n}`));
      const t0 = performance.now();
      r.runAll();
      const ms = performance.now() - t0;
      const ok = r.checks.filter((c) => c.ok).length;
      el.dataset.verified = `${ok}/${r.checks.length}`;
      el.dataset.ok = String(ok === r.checks.length && r.problems.length === 0);
      status.textContent = `${r.events.length} events, ${r.checks.length} waves re-simulated here in ${ms.toFixed(0)} ms: ${ok} of ${r.checks.length} match the server's recorded hash.${r.problems.length ? " Problems: " + r.problems.join("; ") : ""}`;
      title.textContent = `Replay · ${r.state.map} · ${r.state.difficulty} · ${r.state.outcome || r.state.phase}`;
      fill(
        checks,
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Wave", "Outcome", "Recorded hash", "Re-simulated here", ""].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            r.checks.map((c) => h("tr", { class: c.ok ? "ok" : "error" }, h("td", {}, String(c.wave)), h("td", {}, c.recordedOutcome), h("td", {}, h("code", {}, c.recordedHash)), h("td", {}, h("code", {}, c.replayedHash)), h("td", {}, c.ok ? "✓ same" : `✗ ${c.replayedOutcome}`))),
          ),
        ),
      );
    } catch (e) {
      out.error("Loading the replay", e);
      status.textContent = "";
      return;
    }
    if (disposed) return;
    setupPlayback(r);
  })();

  function setupPlayback(r: Replayer) {
    const segs = r.segments.filter((s) => s.endTick > 0);
    if (!segs.length) {
      status.textContent += " No wave was played.";
      return;
    }
    // The timeline: every wave's ticks one after the other.
    const offsets: number[] = [];
    let total = 0;
    for (const s of segs) {
      offsets.push(total);
      total += s.endTick;
    }
    seek.max = String(total);
    const boardCells = pathCells(r.mapRules);
    const seats = segs[0].start.gold.length;
    let cur: { seg: number; battle: Battle; world: World; inputs: number } | null = null;
    let playing = false;
    let last = 0;
    let carry = 0;

    const viewOf = (segIndex: number, world: World, battle: Battle): GameView => {
      const s = segs[segIndex];
      const zones = r.mapRules.zones[String(seats)] ?? [];
      return create(GameViewSchema, {
        sessionId,
        phase: "in_wave",
        map: r.state.map,
        difficulty: r.state.difficulty,
        lives: BigInt(world.lives),
        wave: s.wave,
        totalWaves: r.state.totalWaves,
        tick: battle.tick,
        tickMs: Math.round(1000 / r.rules.ticks_per_second),
        board: { width: r.mapRules.width, height: r.mapRules.height, path: boardCells, blocked: r.mapRules.blocked.map(([x, y]) => ({ x, y })), waypoints: r.mapRules.path.map(([x, y]) => ({ x, y })) },
        players: s.start.members
          .filter((m) => m.seat !== null)
          .map((m) => ({ userId: m.userId, displayName: m.name, seat: m.seat ?? -1, present: m.present, gold: BigInt(world.gold[m.seat ?? 0] ?? 0), zone: (zones[m.seat ?? 0] ?? []).map(([x0, y0, x1, y1]) => ({ x0, y0, x1, y1 })) })),
        towers: [...world.towers.values()].map((t) => ({ towerId: t.id, owner: t.owner, towerType: t.kind, level: t.level, x: t.x, y: t.y, kills: t.kills })),
      });
    };

    /** The wave `i` from its start, simulated to its local tick `tick`. */
    const at = (i: number, tick: number) => {
      const s = segs[i];
      const world = cloneWorld({ gold: s.start.gold, lives: s.start.lives, towers: s.start.towers });
      for (const t of world.towers.values()) t.readyAt = 1;
      const battle = new Battle(r.rules, r.mapRules, s.wave, r.state.difficulty, s.seed);
      cur = { seg: i, battle, world, inputs: 0 };
      stepTo(tick);
    };

    /** Advances the current wave to `tick`, applying its inputs at their ticks. */
    const stepTo = (tick: number) => {
      if (!cur) return;
      const s = segs[cur.seg];
      const members = s.start.members;
      while (cur.inputs < s.inputs.length) {
        const ev = s.inputs[cur.inputs];
        const when = ev.e.tick;
        if (when > tick) break;
        cur.battle.advanceTo(when, r.rules, r.path, cur.world);
        applyTower(ev, cur.world, (id) => members.find((m) => m.userId === id && m.present)?.seat ?? 0, r.rules, r.path);
        cur.inputs++;
      }
      cur.battle.advanceTo(Math.min(tick, s.endTick), r.rules, r.path, cur.world);
    };

    const show = () => {
      if (!cur) return;
      const s = segs[cur.seg];
      const v = viewOf(cur.seg, cur.world, cur.battle);
      board.view = v;
      board.setView(v);
      board.frame(
        create(FrameSchema, {
          wave: s.wave,
          tick: cur.battle.tick,
          lives: BigInt(cur.world.lives),
          enemies: cur.battle.enemies.map((e) => {
            const [x, y] = r.path.position(e.pos);
            return { id: e.id, kind: e.kind, x: BigInt(x), y: BigInt(y), hp: BigInt(e.hp), maxHp: BigInt(e.maxHp), shield: BigInt(e.shield) };
          }),
          shots: cur.battle.shots.map(([towerId, enemyId]) => ({ towerId, enemyId })),
        }),
      );
      seek.value = String(offsets[cur.seg] + cur.battle.tick);
      el.dataset.wave = String(s.wave);
      el.dataset.tick = String(cur.battle.tick);
      fill(header, h("span", {}, `wave ${s.wave} of ${r.state.totalWaves}`), h("span", {}, `tick ${cur.battle.tick} / ${s.endTick}`), h("span", { class: "lives" }, `lives ${cur.world.lives}`), h("span", {}, `${cur.battle.enemies.length} enemies`));
    };

    const seekTo = (global: number) => {
      let i = offsets.length - 1;
      while (i > 0 && offsets[i] > global) i--;
      board.reset();
      at(i, global - offsets[i]);
      show();
    };

    const loop = (now: number) => {
      if (disposed) return;
      if (playing && cur) {
        const tps = r.rules.ticks_per_second * Number(speed.value);
        carry += ((now - last) / 1000) * tps;
        last = now;
        const n = Math.floor(carry);
        carry -= n;
        if (n > 0) {
          const s = segs[cur.seg];
          const target = cur.battle.tick + n;
          if (target >= s.endTick) {
            stepTo(s.endTick);
            if (cur.seg + 1 < segs.length) {
              board.reset();
              at(cur.seg + 1, 0);
            } else {
              playing = false;
              play.textContent = "Play";
            }
          } else stepTo(target);
          show();
        }
      }
      raf = requestAnimationFrame(loop);
    };

    play.onclick = () => {
      playing = !playing;
      play.textContent = playing ? "Pause" : "Play";
      last = performance.now();
      carry = 0;
      if (playing && cur && cur.seg === segs.length - 1 && cur.battle.tick >= segs[cur.seg].endTick) seekTo(0);
    };
    seek.oninput = () => seekTo(Number(seek.value));
    el.addEventListener("keydown", (ev) => {
      if (ev.key === " " && ev.target === el) {
        ev.preventDefault();
        play.click();
      }
    });
    seekTo(0);
    raf = requestAnimationFrame(loop);
    (window as unknown as { allies: unknown }).allies = { board, replay: r, seekTo, segments: segs.length };
  }

  return {
    el,
    dispose() {
      disposed = true;
      cancelAnimationFrame(raf);
      board.destroy();
    },
  };
}

type TowerEv = Extract<Ev, { type: "TowerPlaced" | "TowerUpgraded" | "TowerSold" }>;

/** A tower input (session.rs `evolve` for TowerPlaced, TowerUpgraded, TowerSold), once the wave is at its tick. */
function applyTower(ev: TowerEv, world: World, seatOf: (userId: string) => number, rules: Rules, path: Path) {
  switch (ev.type) {
    case "TowerPlaced": {
      const seat = seatOf(ev.e.playerId);
      const t: Tower = { id: ev.e.towerId, owner: ev.e.playerId, seat, kind: ev.e.towerType, level: 0, x: ev.e.x, y: ev.e.y, kills: 0, reach: [], readyAt: ev.e.tick + 1 };
      aim(t, rules, path);
      world.towers.set(t.id, t);
      if (seat < world.gold.length) world.gold[seat] = Number(ev.e.goldAfter);
      break;
    }
    case "TowerUpgraded": {
      const t = world.towers.get(ev.e.towerId);
      if (t) {
        t.level = ev.e.level;
        aim(t, rules, path);
        if (t.seat < world.gold.length) world.gold[t.seat] = Number(ev.e.goldAfter);
      }
      break;
    }
    case "TowerSold": {
      const t = world.towers.get(ev.e.towerId);
      if (t) {
        world.towers.delete(ev.e.towerId);
        if (t.seat < world.gold.length) world.gold[t.seat] = Number(ev.e.goldAfter);
      }
      break;
    }
  }
}
