// The board on a canvas: the map (path, rocks, spawn, exit), each player's
// build zone, the towers, and the enemies moving smoothly between the
// server's frames (each drawn between the last two frames received, one
// frame interval behind, so movement is continuous at any frame rate).

import type { Frame, GameView, EnemyView } from "./gen/defense_allies/timesquare/v1/timesquare_pb.js";

/** Milli-tiles per tile (enemy positions). */
const TILE = 1000;
const SEAT_COLOURS = ["#4f9dff", "#ff9f43", "#b084ff", "#3ddc97"];
const TOWER_COLOURS: Record<string, string> = {
  arrow: "#d9c27a",
  cannon: "#c07a5a",
  frost: "#7ad4f0",
  tesla: "#c48cf0",
};

interface Sample {
  frame: Frame;
  /** performance.now() when it arrived. */
  at: number;
}

export interface Stats {
  frames: number;
  paints: number;
  /** Frame arrival → the first paint that shows it, ms. */
  paintLatency: number[];
  /** How long each paint took, ms (the last few thousand). */
  paintCost: number[];
  firstFrameAt: number | null;
}

export class BoardCanvas {
  view: GameView | null = null;
  me = "";
  cursor: { x: number; y: number } | null = null;
  selectedTower: number | null = null;
  private prev: Sample | null = null;
  private curr: Sample | null = null;
  private interval = 100;
  private cell = 24;
  private raf = 0;
  private pendingPaint: number[] = [];
  readonly stats: Stats = { frames: 0, paints: 0, paintLatency: [], paintCost: [], firstFrameAt: null };

  constructor(readonly canvas: HTMLCanvasElement) {
    const loop = () => {
      this.paint();
      this.raf = requestAnimationFrame(loop);
    };
    this.raf = requestAnimationFrame(loop);
  }

  destroy() {
    cancelAnimationFrame(this.raf);
  }

  setView(view: GameView) {
    this.view = view;
    if (view.tickMs > 0) this.interval = view.tickMs;
    if (view.phase !== "in_wave") {
      this.prev = null;
      this.curr = null;
    }
    this.resize();
  }

  /** Forgets the frames (a replay seeks). */
  reset() {
    this.prev = null;
    this.curr = null;
  }

  frame(f: Frame) {
    const now = performance.now();
    if (this.curr && f.wave === this.curr.frame.wave && f.tick <= this.curr.frame.tick) return;
    if (this.curr && this.curr.frame.wave === f.wave) {
      const ticks = f.tick - this.curr.frame.tick;
      const gap = now - this.curr.at;
      // The interval the frames actually come at (smoothed), for interpolation.
      if (ticks > 0 && gap > 0 && gap < 2_000) this.interval = this.interval * 0.8 + gap * 0.2;
    }
    this.prev = this.curr && this.curr.frame.wave === f.wave ? this.curr : null;
    this.curr = { frame: f, at: now };
    this.stats.frames++;
    this.stats.firstFrameAt ??= now;
    this.pendingPaint.push(now);
  }

  get lastFrame(): Frame | null {
    return this.curr?.frame ?? null;
  }

  /** Fits the board to the canvas's container (1280×720 and phone widths). */
  resize() {
    const b = this.view?.board;
    if (!b || b.width <= 0 || b.height <= 0) return;
    const box = this.canvas.parentElement?.clientWidth ?? 800;
    const maxH = Math.max(240, window.innerHeight - 220);
    this.cell = Math.max(8, Math.floor(Math.min(box / b.width, maxH / b.height)));
    const dpr = window.devicePixelRatio || 1;
    const w = this.cell * b.width;
    const h = this.cell * b.height;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
      this.canvas.style.width = `${w}px`;
      this.canvas.style.height = `${h}px`;
    }
  }

  /** The cell under a pointer event, or null off the board. */
  cellAt(ev: MouseEvent): { x: number; y: number } | null {
    const b = this.view?.board;
    if (!b) return null;
    const r = this.canvas.getBoundingClientRect();
    const x = Math.floor((ev.clientX - r.left) / this.cell);
    const y = Math.floor((ev.clientY - r.top) / this.cell);
    return x >= 0 && y >= 0 && x < b.width && y < b.height ? { x, y } : null;
  }

  /** Where a tile-space point is drawn, in CSS pixels. */
  private px(milli: number) {
    return (milli / TILE) * this.cell;
  }

  private enemies(now: number): { e: EnemyView; x: number; y: number }[] {
    if (!this.curr) return [];
    const t = this.prev ? Math.min(1, (now - this.curr.at) / Math.max(16, this.interval)) : 1;
    const before = new Map<number, EnemyView>();
    for (const e of this.prev?.frame.enemies ?? []) before.set(e.id, e);
    return this.curr.frame.enemies.map((e) => {
      const p = before.get(e.id);
      const [x1, y1] = [Number(e.x), Number(e.y)];
      if (!p) return { e, x: x1, y: y1 };
      const [x0, y0] = [Number(p.x), Number(p.y)];
      return { e, x: x0 + (x1 - x0) * t, y: y0 + (y1 - y0) * t };
    });
  }

  private paint() {
    const v = this.view;
    const b = v?.board;
    const ctx = this.canvas.getContext("2d");
    if (!v || !b || !ctx) return;
    const now = performance.now();
    const dpr = window.devicePixelRatio || 1;
    const c = this.cell;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#1d2b1f";
    ctx.fillRect(0, 0, b.width * c, b.height * c);

    // Build zones, tinted by seat; the caller's own brighter.
    v.players.forEach((p) => {
      if (p.seat < 0) return;
      const colour = SEAT_COLOURS[p.seat % SEAT_COLOURS.length];
      for (const r of p.zone) {
        ctx.fillStyle = colour;
        ctx.globalAlpha = p.userId === this.me ? 0.22 : 0.1;
        ctx.fillRect(r.x0 * c, r.y0 * c, (r.x1 - r.x0 + 1) * c, (r.y1 - r.y0 + 1) * c);
      }
      ctx.globalAlpha = 1;
    });
    ctx.fillStyle = "#a08a5a";
    for (const p of b.path) ctx.fillRect(p.x * c, p.y * c, c, c);
    ctx.fillStyle = "#55595e";
    for (const p of b.blocked) ctx.fillRect(p.x * c + 1, p.y * c + 1, c - 2, c - 2);
    const first = b.waypoints[0];
    const last = b.waypoints[b.waypoints.length - 1];
    if (first) this.marker(ctx, first.x, first.y, "#e44", "▶");
    if (last) this.marker(ctx, last.x, last.y, "#4e4", "■");

    // Grid lines.
    ctx.strokeStyle = "rgba(255,255,255,0.06)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let x = 0; x <= b.width; x++) {
      ctx.moveTo(x * c + 0.5, 0);
      ctx.lineTo(x * c + 0.5, b.height * c);
    }
    for (let y = 0; y <= b.height; y++) {
      ctx.moveTo(0, y * c + 0.5);
      ctx.lineTo(b.width * c, y * c + 0.5);
    }
    ctx.stroke();

    // Towers: a disc by type, the level as pips, the owner's seat as a ring.
    const seatOf = new Map(v.players.map((p) => [p.userId, p.seat]));
    const towerAt = new Map<number, { x: number; y: number }>();
    for (const t of v.towers) {
      towerAt.set(t.towerId, { x: t.x, y: t.y });
      const cx = t.x * c + c / 2;
      const cy = t.y * c + c / 2;
      ctx.fillStyle = TOWER_COLOURS[t.towerType] ?? "#ddd";
      ctx.beginPath();
      ctx.arc(cx, cy, c * 0.38, 0, Math.PI * 2);
      ctx.fill();
      ctx.lineWidth = Math.max(1.5, c * 0.08);
      ctx.strokeStyle = SEAT_COLOURS[(seatOf.get(t.owner) ?? 0) % SEAT_COLOURS.length];
      ctx.stroke();
      ctx.fillStyle = "#111";
      ctx.font = `bold ${Math.floor(c * 0.45)}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(`${t.towerType[0]?.toUpperCase() ?? "?"}${t.level + 1}`, cx, cy + 1);
      if (t.towerId === this.selectedTower) {
        ctx.strokeStyle = "#fff";
        ctx.lineWidth = 2;
        ctx.strokeRect(t.x * c + 1, t.y * c + 1, c - 2, c - 2);
      }
    }

    // Enemies, interpolated; hit points as a bar.
    const placed = this.enemies(now);
    const pos = new Map<number, { x: number; y: number }>();
    for (const { e, x, y } of placed) {
      const cx = this.px(x);
      const cy = this.px(y);
      pos.set(e.id, { x: cx, y: cy });
      ctx.fillStyle = e.kind.startsWith("boss") ? "#ff3b6b" : e.shield > 0n ? "#8fb8ff" : "#f25f5c";
      ctx.beginPath();
      ctx.arc(cx, cy, c * (e.kind.startsWith("boss") ? 0.34 : 0.24), 0, Math.PI * 2);
      ctx.fill();
      const hp = Number(e.maxHp) > 0 ? Number(e.hp) / Number(e.maxHp) : 0;
      ctx.fillStyle = "#000";
      ctx.fillRect(cx - c * 0.3, cy - c * 0.42, c * 0.6, 3);
      ctx.fillStyle = "#7CFC00";
      ctx.fillRect(cx - c * 0.3, cy - c * 0.42, c * 0.6 * hp, 3);
    }
    // Shots of the last frame.
    ctx.strokeStyle = "rgba(255,255,180,0.7)";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    for (const s of this.curr?.frame.shots ?? []) {
      const from = towerAt.get(s.towerId);
      const to = pos.get(s.enemyId);
      if (!from || !to) continue;
      ctx.moveTo(from.x * c + c / 2, from.y * c + c / 2);
      ctx.lineTo(to.x, to.y);
    }
    ctx.stroke();

    if (this.cursor) {
      ctx.strokeStyle = "#ffe066";
      ctx.lineWidth = 2;
      ctx.strokeRect(this.cursor.x * c + 1, this.cursor.y * c + 1, c - 2, c - 2);
    }
    this.stats.paints++;
    this.stats.paintCost.push(performance.now() - now);
    if (this.stats.paintCost.length > 5_000) this.stats.paintCost.splice(0, 2_500);
    for (const at of this.pendingPaint) this.stats.paintLatency.push(now - at);
    this.pendingPaint.length = 0;
    if (this.stats.paintLatency.length > 5_000) this.stats.paintLatency.splice(0, 2_500);
    this.canvas.dataset.paints = String(this.stats.paints);
    this.canvas.dataset.enemies = String(placed.length);
  }

  private marker(ctx: CanvasRenderingContext2D, x: number, y: number, colour: string, glyph: string) {
    const c = this.cell;
    ctx.fillStyle = colour;
    ctx.fillRect(x * c, y * c, c, c);
    ctx.fillStyle = "#fff";
    ctx.font = `${Math.floor(c * 0.6)}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(glyph, x * c + c / 2, y * c + c / 2 + 1);
  }
}
