// One game session: its lobby (ready, start, leave, the invite code), the
// board while it is played (place, upgrade and sell towers, start waves, by
// pointer or keyboard), and the end screen with the result and the rating
// change. A caller who is not a player spectates the same stream, read-only.

import { command, current, games, isGone, playerQueries, sleep } from "./api.js";
import { BoardCanvas } from "./board.js";
import type { GameView, RulesView, TowerTypeView } from "./gen/defense_allies/timesquare/v1/timesquare_pb.js";
import { act, fill, h, Outcome } from "./ui.js";
import { GameWatch } from "./watch.js";

let rules: RulesView | null = null;
export async function loadRules(): Promise<RulesView> {
  rules ??= await games.getRules({});
  return rules;
}

/** Invite codes are answered once, at creation: kept for this tab to show in the lobby. */
export function rememberInvite(sessionId: string, code: string) {
  if (code) sessionStorage.setItem(`allies.invite.${sessionId}`, code);
}

export interface Screen {
  el: HTMLElement;
  dispose(): void;
}

export function gameScreen(sessionId: string, setConnection: (problem: string | null) => void): Screen {
  const me = current()?.userId ?? "";
  const title = h("h1", {}, "Game");
  const header = h("div", { class: "game-header", "aria-live": "polite" });
  const players = h("ul", { class: "players" });
  const controls = h("div", { class: "controls" });
  const tower = h("div", { class: "tower-panel" });
  const out = new Outcome();
  const canvas = h("canvas", { class: "board", tabindex: 0, "aria-label": "Game board: arrow keys move the cursor, Enter places or selects" });
  const boardWrap = h("div", { class: "board-wrap" }, canvas);
  const endScreen = h("section", { class: "end", hidden: true });
  const el = h(
    "section",
    { class: "game", "data-session": sessionId },
    title,
    header,
    endScreen,
    h("div", { class: "game-body" }, h("div", { class: "game-main" }, boardWrap, out.el), h("aside", {}, controls, tower, h("h2", {}, "Players"), players)),
  );
  const board = new BoardCanvas(canvas);
  board.me = me;
  let view: GameView | null = null;
  let chosen = "arrow";
  let ratingBefore: number | null = null;
  let refreshing = false;
  let stale = false;
  let disposed = false;

  const isPlayer = () => !!view?.players.some((p) => p.userId === me && p.present);
  const mine = () => view?.players.find((p) => p.userId === me);

  const gold = (userId: string): bigint => {
    const f = board.lastFrame;
    const g = f?.gold.find((x) => x.userId === userId);
    return g?.gold ?? view?.players.find((p) => p.userId === userId)?.gold ?? 0n;
  };

  function renderHeader() {
    if (!view) return;
    const f = board.lastFrame;
    const lives = f && view.phase === "in_wave" ? f.lives : view.lives;
    const wave = view.phase === "in_wave" ? `wave ${view.wave} of ${view.totalWaves} running` : `${view.wavesCleared} of ${view.totalWaves} waves cleared`;
    title.textContent = `${view.map} · ${view.difficulty}${isPlayer() ? "" : " · spectating"}`;
    fill(
      header,
      h("span", { class: "phase", "data-phase": view.phase }, view.phase.replace("_", " ")),
      h("span", {}, wave),
      h("span", { class: "lives" }, `lives ${lives}`),
      h("span", {}, `score ${view.score}`),
      isPlayer() ? h("span", { class: "gold" }, `gold ${gold(me)}`) : null,
      view.phase === "in_wave" && f ? h("span", { class: "enemies" }, `${f.enemies.length} enemies`) : null,
    );
    fill(
      players,
      view.players.map((p) =>
        h(
          "li",
          { class: p.userId === me ? "me" : "" },
          h("a", { href: `#/player/${p.userId}` }, p.displayName),
          p.userId === view?.host ? " (host)" : "",
          view?.phase === "lobby" ? (p.ready ? " ✔ ready" : " … not ready") : ` · gold ${gold(p.userId)} · ${p.kills} kills`,
          p.present ? "" : " · left",
        ),
      ),
    );
  }

  function renderControls() {
    if (!view) return;
    const v = view;
    if (!isPlayer()) {
      fill(controls, h("p", { class: "muted" }, "Spectating: the board is read-only."));
      fill(tower);
      return;
    }
    if (v.phase === "lobby") {
      const code = sessionStorage.getItem(`allies.invite.${v.sessionId}`);
      const ready = !!mine()?.ready;
      const readyBtn = h("button", { id: "ready", accesskey: "r" }, ready ? "Not ready" : "Ready") as HTMLButtonElement;
      readyBtn.onclick = () => act(out, "Ready", () => command((o) => games.setReady({ sessionId, ready: !ready }, o)), readyBtn);
      const startBtn = h("button", { id: "start-game", class: "primary" }, "Start game") as HTMLButtonElement;
      startBtn.onclick = () => act(out, "Start game", () => command((o) => games.startGame({ sessionId }, o)), startBtn);
      const leave = h("button", { id: "leave" }, "Leave") as HTMLButtonElement;
      leave.onclick = async () => {
        const r = await act(out, "Leave", () => command((o) => games.leaveGameSession({ sessionId }, o)), leave);
        if (r) location.hash = "#/";
      };
      fill(
        controls,
        h("p", {}, `Lobby: ${v.players.length} of ${v.maxPlayers} players. Everyone ready, then the host starts.`),
        v.private ? h("p", { class: "invite" }, "Private. Invite: session ", h("code", {}, v.sessionId), code ? [" code ", h("code", { id: "invite-code" }, code)] : "") : null,
        readyBtn,
        v.host === me ? startBtn : null,
        leave,
      );
      fill(tower);
      return;
    }
    if (v.phase === "ended") {
      fill(controls);
      fill(tower);
      return;
    }
    const palette = h(
      "div",
      { class: "palette", role: "radiogroup", "aria-label": "Tower to place" },
      (rules?.towers ?? []).map((t: TowerTypeView, i: number) =>
        h(
          "button",
          {
            class: t.name === chosen ? "chosen" : "",
            role: "radio",
            "aria-checked": t.name === chosen ? "true" : "false",
            "data-tower": t.name,
            title: `${t.name}: ${t.cost} gold (key ${i + 1})${t.flag ? `, behind the flag ${t.flag}` : ""}`,
            onclick: () => {
              chosen = t.name;
              renderControls();
            },
          },
          `${i + 1} ${t.name} ${t.cost}`,
        ),
      ),
    );
    const waveBtn = h("button", { id: "start-wave", class: "primary", disabled: v.phase === "in_wave" }, v.phase === "in_wave" ? "Wave running" : `Start wave ${v.wave + 1} (W)`) as HTMLButtonElement;
    waveBtn.onclick = () => startWave(waveBtn);
    fill(controls, palette, waveBtn, h("p", { class: "muted keys" }, "Click a cell in your zone to build. Keys: arrows move, Enter builds or selects, 1–4 tower, U upgrade, S sell, W wave."));
    renderTowerPanel();
  }

  function renderTowerPanel() {
    const t = view?.towers.find((x) => x.towerId === board.selectedTower);
    if (!t || !view || view.phase === "ended") {
      fill(tower);
      return;
    }
    const type = rules?.towers.find((x) => x.name === t.towerType);
    const next = type?.upgradeCosts[t.level];
    const own = t.owner === me;
    const up = h("button", { id: "upgrade", disabled: !own || next === undefined }, next === undefined ? "Max level" : `Upgrade (U) ${next}`) as HTMLButtonElement;
    up.onclick = () => upgrade(up);
    const sell = h("button", { id: "sell", disabled: !own }, "Sell (S)") as HTMLButtonElement;
    sell.onclick = () => sellTower(sell);
    fill(tower, h("h2", {}, `Tower ${t.towerId}`), h("p", {}, `${t.towerType} level ${t.level + 1} at (${t.x}, ${t.y}) · ${t.kills} kills`), own ? [up, sell] : h("p", { class: "muted" }, "Another player's tower."));
  }

  async function place(x: number, y: number) {
    const r = await act(out, `Placing ${chosen} at (${x}, ${y})`, () => command((o) => games.placeTower({ sessionId, towerType: chosen, x, y }, o)));
    if (r) {
      out.ok(`Placed ${chosen} at (${x}, ${y}); gold ${r.gold}`);
      board.selectedTower = r.towerId;
    }
  }

  async function upgrade(btn?: HTMLButtonElement) {
    const id = board.selectedTower;
    if (id === null) return;
    const r = await act(out, `Upgrading tower ${id}`, () => command((o) => games.upgradeTower({ sessionId, towerId: id }, o)), btn);
    if (r) out.ok(`Upgraded tower ${id}; gold ${r.gold}`);
  }

  async function sellTower(btn?: HTMLButtonElement) {
    const id = board.selectedTower;
    if (id === null) return;
    const r = await act(out, `Selling tower ${id}`, () => command((o) => games.sellTower({ sessionId, towerId: id }, o)), btn);
    if (r) {
      out.ok(`Sold tower ${id}; gold ${r.gold}`);
      board.selectedTower = null;
    }
  }

  async function startWave(btn?: HTMLButtonElement) {
    await act(out, "Start wave", () => command((o) => games.startWave({ sessionId }, o)), btn);
  }

  function clickCell(x: number, y: number) {
    if (!view || !isPlayer() || view.phase === "lobby" || view.phase === "ended") return;
    const t = view.towers.find((t) => t.x === x && t.y === y);
    if (t) {
      board.selectedTower = t.towerId;
      renderTowerPanel();
    } else {
      board.selectedTower = null;
      renderTowerPanel();
      void place(x, y);
    }
  }

  canvas.addEventListener("click", (ev) => {
    const cell = board.cellAt(ev);
    if (!cell) return;
    board.cursor = cell;
    clickCell(cell.x, cell.y);
  });
  canvas.addEventListener("mousemove", (ev) => {
    const cell = board.cellAt(ev);
    if (cell) board.cursor = cell;
  });
  const onKey = (ev: KeyboardEvent) => {
    if (!view || !isPlayer() || ev.target instanceof HTMLInputElement) return;
    const b = view.board;
    if (!b) return;
    const c = board.cursor ?? { x: Math.floor(b.width / 2), y: Math.floor(b.height / 2) };
    const moves: Record<string, [number, number]> = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    const m = moves[ev.key];
    if (m && document.activeElement === canvas) {
      board.cursor = { x: Math.min(b.width - 1, Math.max(0, c.x + m[0])), y: Math.min(b.height - 1, Math.max(0, c.y + m[1])) };
      ev.preventDefault();
    } else if ((ev.key === "Enter" || ev.key === " ") && document.activeElement === canvas) {
      board.cursor = c;
      clickCell(c.x, c.y);
      ev.preventDefault();
    } else if (/^[1-9]$/.test(ev.key) && rules?.towers[Number(ev.key) - 1]) {
      chosen = rules.towers[Number(ev.key) - 1].name;
      renderControls();
    } else if (ev.key === "u" || ev.key === "U") void upgrade();
    else if (ev.key === "s" || ev.key === "S") void sellTower();
    else if ((ev.key === "w" || ev.key === "W") && view.phase === "building") void startWave();
  };
  document.addEventListener("keydown", onKey);
  const onResize = () => board.resize();
  addEventListener("resize", onResize);

  /** The authoritative state after an event (any replica answers it from the store). */
  // The state after an event: read once per burst of events, and again
  // until it is read (a failed read during a replica's death or a network
  // drop would otherwise leave the page on the state before that event until
  // the next one, which may never come: the last wave's end). Each read is
  // bounded, so one that hangs cannot stop the ones after it.
  async function refresh() {
    if (refreshing) {
      stale = true;
      return;
    }
    refreshing = true;
    let delay = 250;
    try {
      do {
        stale = false;
        try {
          const v = await games.getGameState({ sessionId }, { timeoutMs: 10_000 });
          if (!view || v.version >= view.version) apply(v);
          delay = 250;
        } catch (e) {
          if (!isGone(e)) throw e;
          stale = true;
          await sleep(delay);
          delay = Math.min(delay * 2, 2_000);
        }
      } while (stale && !disposed);
    } catch {
      // Refused (the game is gone, access withdrawn): the watch says so.
    } finally {
      refreshing = false;
    }
  }

  function apply(v: GameView) {
    const was = view?.phase;
    view = v;
    el.dataset.phase = v.phase;
    el.dataset.version = String(v.version);
    el.dataset.towers = String(v.towers.length);
    board.setView(v);
    renderHeader();
    renderControls();
    if (v.phase === "ended" && was !== "ended") void showEnd(v);
  }

  async function showEnd(v: GameView) {
    endScreen.hidden = false;
    const result = h("p", { class: "result", id: "outcome" }, `${v.outcome.toUpperCase()} · score ${v.score} · ${v.wavesCleared} of ${v.totalWaves} waves cleared`);
    const rating = h("p", { id: "rating-change" }, isPlayer() ? "Rating: waiting for the result…" : "");
    fill(endScreen, h("h2", {}, "Game over"), result, rating, h("p", {}, h("a", { href: `#/replay/${v.sessionId}` }, "Watch the replay"), " · ", h("a", { href: "#/" }, "Back to the lobbies")));
    endScreen.scrollIntoView({ block: "nearest" });
    if (!isPlayer()) return;
    // The rating moves when the player context records the game: read the
    // profile until it shows this game (up to ~10 s).
    for (let i = 0; i < 40; i++) {
      try {
        const p = (await playerQueries.getPlayer({ userId: me })).player;
        if (p && p.recentGames.some((g) => g.sessionId === v.sessionId && g.status === "ended")) {
          const delta = ratingBefore === null ? null : p.rating - ratingBefore;
          rating.textContent = `Rating ${p.rating}${delta === null ? "" : ` (${delta >= 0 ? "+" : ""}${delta})`} · rank ${p.ratingRank}`;
          return;
        }
      } catch {
        // Try again.
      }
      await sleep(250);
    }
    rating.textContent = "Rating: not updated yet (see your profile).";
  }

  void loadRules().then(() => renderControls());
  void playerQueries
    .getPlayer({ userId: me })
    .then((r) => {
      ratingBefore = r.player?.rating ?? null;
    })
    .catch(() => undefined);

  const watch = new GameWatch(sessionId, {
    snapshot: (v) => apply(v),
    event: () => void refresh(),
    frame: (f) => {
      board.frame(f);
      el.dataset.tick = String(f.tick);
      renderHeader();
    },
    connection: (problem) => {
      // Back after an outage: read the state again (a read that failed
      // while the stream was down is not left standing).
      if (!problem && el.dataset.connected === "no") void refresh();
      el.dataset.connected = problem ? "no" : "yes";
      setConnection(problem ? `${problem}: reconnecting…` : null);
    },
    fatal: (e) => {
      out.error("Watching the game", e);
      fill(controls, h("a", { href: "#/" }, "Back to the lobbies"));
    },
  });
  (window as unknown as { allies: unknown }).allies = { board, watch };

  return {
    el,
    dispose() {
      disposed = true;
      watch.stop();
      board.destroy();
      document.removeEventListener("keydown", onKey);
      removeEventListener("resize", onResize);
      setConnection(null);
    },
  };
}
