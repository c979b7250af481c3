// The page: a header with the signed-in player and the way around, a banner
// when the server is out of reach, and one screen at a time by the URL's
// hash (#/, #/game/<id>, #/match, #/leaderboard, #/player/<id>, #/replay/<id>).

import { command, current, describe, gameQueries, games, onLogin, playerQueries, register, signIn, signOut } from "./api.js";
import { gameScreen, loadRules, rememberInvite, type Screen } from "./game.js";
import type { GameSummary } from "./gen/defense_allies/projector/v1/games_pb.js";
import { matchmakingScreen } from "./matchmaking.js";
import { replayScreen } from "./replay.js";
import { act, fill, h, Outcome, when } from "./ui.js";

const root = document.getElementById("app")!;
const nav = h("nav", { "aria-label": "Main" });
const banner = h("div", { id: "connection", role: "alert", hidden: true });
const main = h("main", { id: "main" });
root.append(h("header", {}, h("a", { href: "#/", class: "brand" }, "Defense Allies"), nav), banner, main);

let screen: Screen | null = null;
let problems = { stream: null as string | null, offline: !navigator.onLine };

function showConnection() {
  const text = problems.offline ? "You are offline: the game resumes by itself when the network is back." : problems.stream;
  banner.hidden = !text;
  banner.textContent = text ?? "";
  document.body.dataset.connection = text ? "lost" : "ok";
}
addEventListener("offline", () => {
  problems.offline = true;
  showConnection();
});
addEventListener("online", () => {
  problems.offline = false;
  showConnection();
});
const setConnection = (p: string | null) => {
  problems = { ...problems, stream: p };
  showConnection();
};

function renderNav() {
  const l = current();
  fill(
    nav,
    l
      ? [
          h("a", { href: "#/" }, "Lobbies"),
          h("a", { href: "#/match" }, "Matchmaking"),
          h("a", { href: "#/leaderboard" }, "Leaderboard"),
          h("a", { href: `#/player/${l.userId}`, id: "me" }, l.username),
          h("button", { id: "logout", onclick: () => void signOut() }, "Log out"),
        ]
      : [],
  );
}

// Signing in or out (here or in another tab) changes the screen; a token
// refresh changes nothing the page shows.
let shownUser = current()?.userId ?? null;
onLogin((l) => {
  const user = l?.userId ?? null;
  if (user === shownUser) return;
  shownUser = user;
  renderNav();
  route();
});

function simple(el: HTMLElement, dispose: () => void = () => undefined): Screen {
  return { el, dispose };
}

function route() {
  screen?.dispose();
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, arg] = hash.split("/");
  if (!current()) screen = authScreen();
  else if (page === "game" && arg) screen = gameScreen(decodeURIComponent(arg), setConnection);
  else if (page === "match") screen = matchmakingScreen();
  else if (page === "leaderboard") screen = simple(leaderboardScreen());
  else if (page === "player" && arg) screen = simple(profileScreen(decodeURIComponent(arg)));
  else if (page === "replay" && arg) screen = replayScreen(decodeURIComponent(arg));
  else screen = lobbiesScreen();
  fill(main, screen.el);
  document.title = `${main.querySelector("h1")?.textContent ?? "Defense Allies"} · Defense Allies`;
  main.querySelector<HTMLElement>("[autofocus]")?.focus();
}
addEventListener("hashchange", route);

function field(label: string, input: HTMLInputElement | HTMLSelectElement) {
  return h("label", {}, h("span", {}, label), input);
}

function authScreen(): Screen {
  const out = new Outcome();
  const user = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true, maxlength: 32 });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const email = h("input", { name: "email", type: "email", autocomplete: "email", placeholder: "only to register" });
  const loginBtn = h("button", { type: "submit", class: "primary", id: "login" }, "Log in") as HTMLButtonElement;
  const registerBtn = h("button", { type: "button", id: "register" }, "Register") as HTMLButtonElement;
  registerBtn.onclick = async () => {
    const ok = await act(out, "Registering", () => register(user.value, email.value || `${user.value}@example.com`, pass.value), registerBtn);
    if (ok !== undefined) await act(out, "Logging in", () => signIn(user.value, pass.value), registerBtn);
  };
  const form = h(
    "form",
    {
      class: "card auth",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        void act(out, "Logging in", () => signIn(user.value, pass.value), loginBtn);
      },
    },
    h("h1", {}, "Defense Allies"),
    h("p", {}, "Hold the path together: build towers in your zone, share the lives, clear every wave."),
    field("Username", user),
    field("Password", pass),
    field("Email (to register)", email),
    h("div", { class: "row" }, loginBtn, registerBtn),
    out.el,
  );
  return simple(form);
}

function summaryRow(g: GameSummary, action: HTMLElement) {
  return h(
    "tr",
    { "data-session": g.sessionId },
    h("td", {}, g.hostName),
    h("td", {}, g.map),
    h("td", {}, g.difficulty),
    h("td", {}, `${g.players}/${g.maxPlayers}`),
    h("td", {}, g.status === "lobby" ? "lobby" : `wave ${g.wave}/${g.totalWaves} · lives ${g.lives}`),
    h("td", {}, action),
  );
}

function table(head: string[], rows: HTMLElement[], empty: string) {
  return rows.length
    ? h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows))
    : h("p", { class: "muted" }, empty);
}

function lobbiesScreen(): Screen {
  const me = current()!;
  const out = new Outcome();
  const open = h("div", { id: "lobbies" });
  const active = h("div", { id: "active-games" });
  const map = h("select", { name: "map", id: "create-map" });
  const difficulty = h("select", { name: "difficulty", id: "create-difficulty" });
  const seats = h("input", { name: "max_players", type: "number", min: 1, max: 4, value: 2, id: "create-seats" });
  const priv = h("input", { name: "private", type: "checkbox", id: "create-private" });
  void loadRules()
    .then((r) => {
      fill(map, r.maps.map((m) => h("option", { value: m.name }, `${m.name} (${m.waves} waves)`)));
      fill(difficulty, r.difficulties.map((d) => h("option", { value: d, selected: d === "normal" }, d)));
    })
    .catch((e) => out.error("Loading the rules", e));
  const createBtn = h("button", { type: "submit", class: "primary", id: "create" }, "Create a game") as HTMLButtonElement;
  const create = h(
    "form",
    {
      class: "card",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const r = await act(
          out,
          "Creating the game",
          () =>
            command((o) =>
              games.createGameSession({ map: map.value, difficulty: difficulty.value, maxPlayers: Number(seats.value), private: priv.checked, displayName: me.username }, o),
            ),
          createBtn,
        );
        if (r) {
          rememberInvite(r.sessionId, r.inviteCode);
          location.hash = `#/game/${r.sessionId}`;
        }
      },
    },
    h("h2", {}, "New game"),
    field("Map", map),
    field("Difficulty", difficulty),
    field("Players (1–4)", seats),
    h("label", { class: "check" }, priv, " Private (join with a code)"),
    createBtn,
  );
  const joinId = h("input", { name: "session", id: "join-session", placeholder: "session id" });
  const joinCode = h("input", { name: "code", id: "join-code", placeholder: "invite code" });
  const joinBtn = h("button", { type: "submit", id: "join-private" }, "Join") as HTMLButtonElement;
  const join = (sessionId: string, inviteCode: string, btn?: HTMLButtonElement) =>
    act(out, "Joining", () => command((o) => games.joinGameSession({ sessionId, inviteCode, displayName: me.username }, o)), btn).then((r) => {
      if (r) location.hash = `#/game/${sessionId}`;
    });
  const privateForm = h(
    "form",
    {
      class: "card",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        void join(joinId.value.trim(), joinCode.value.trim(), joinBtn);
      },
    },
    h("h2", {}, "Join a private game"),
    field("Session", joinId),
    field("Invite code", joinCode),
    joinBtn,
  );

  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  // Live: read again every 2 s while the screen is shown.
  const poll = async () => {
    try {
      const [lobbies, playing] = await Promise.all([gameQueries.listOpenLobbies({ pageSize: 50 }), gameQueries.listActiveGames({ pageSize: 50 })]);
      fill(
        open,
        table(
          ["Host", "Map", "Difficulty", "Players", "State", ""],
          lobbies.games.map((g) => {
            const b = h("button", { class: "join" }, "Join") as HTMLButtonElement;
            b.onclick = () => void join(g.sessionId, "", b);
            return summaryRow(g, b);
          }),
          "No open lobby: create one.",
        ),
      );
      fill(
        active,
        table(
          ["Host", "Map", "Difficulty", "Players", "State", ""],
          playing.games.map((g) => summaryRow(g, h("a", { href: `#/game/${g.sessionId}`, class: "spectate" }, "Watch"))),
          "Nobody is playing right now.",
        ),
      );
    } catch (e) {
      fill(open, h("p", { class: "error" }, `Lobbies: ${describe(e)}`));
    }
    if (!stopped) timer = setTimeout(poll, 2_000);
  };
  void poll();
  const el = h(
    "section",
    { class: "lobbies" },
    h("h1", {}, "Lobbies"),
    out.el,
    h("div", { class: "columns" }, h("div", {}, h("h2", {}, "Open lobbies"), open, h("h2", {}, "Games being played"), active), h("div", {}, create, privateForm)),
  );
  return {
    el,
    dispose() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

function leaderboardScreen(): HTMLElement {
  const body = h("div", { id: "leaderboard" }, "Loading…");
  void playerQueries
    .getLeaderboard({ board: "rating", limit: 50 })
    .then((r) =>
      fill(
        body,
        table(
          ["#", "Player", "Rating"],
          r.entries.map((e) => h("tr", {}, h("td", {}, String(e.rank)), h("td", {}, h("a", { href: `#/player/${e.userId}` }, e.displayName)), h("td", {}, String(e.value)))),
          "Nobody has played a rated game yet.",
        ),
        h("p", { class: "muted" }, `${r.total} players on the board.`),
      ),
    )
    .catch((e) => fill(body, h("p", { class: "error" }, describe(e))));
  return h("section", {}, h("h1", {}, "Leaderboard"), body);
}

function profileScreen(userId: string): HTMLElement {
  const body = h("div", { id: "profile" }, "Loading…");
  const title = h("h1", {}, "Player");
  void playerQueries
    .getPlayer({ userId })
    .then(({ player: p }) => {
      if (!p) return;
      title.textContent = p.displayName || p.username;
      fill(
        body,
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Rating"),
          h("dd", { id: "rating" }, `${p.rating} (rank ${p.ratingRank})`),
          h("dt", {}, "Games"),
          h("dd", {}, `${p.gamesPlayed} played, ${p.wins} won`),
          h("dt", {}, "Registered"),
          h("dd", {}, when(p.registeredAtMs)),
          h("dt", {}, "This week"),
          h("dd", {}, `${p.weekScore} (${p.week || "—"})`),
        ),
        h("h2", {}, "Best waves"),
        table(["Map", "Difficulty", "Waves"], p.best.map((b) => h("tr", {}, h("td", {}, b.map), h("td", {}, b.difficulty), h("td", {}, String(b.waves)))), "No game finished yet."),
        h("h2", {}, "Recent games"),
        table(
          ["Map", "Difficulty", "Result", "Score", "Ended", ""],
          p.recentGames.map((g) =>
            h(
              "tr",
              {},
              h("td", {}, g.map),
              h("td", {}, g.difficulty),
              h("td", {}, g.outcome || g.status),
              h("td", {}, String(g.score)),
              h("td", {}, when(g.endedAtMs)),
              h("td", {}, g.status === "ended" ? h("a", { href: `#/replay/${g.sessionId}` }, "Replay") : h("a", { href: `#/game/${g.sessionId}` }, "Open")),
            ),
          ),
          "No games yet.",
        ),
      );
    })
    .catch((e) => fill(body, h("p", { class: "error" }, describe(e))));
  return h("section", {}, title, body);
}

renderNav();
route();
