// The fleet as the browser reaches it: gRPC-Web on this page's own origin
// (the edge routes each API by its gRPC path prefix), the signed-in caller's
// bearer token on every call, tokens refreshed before they expire, and game
// commands that retry safely (one x-command-id per intent).

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { GuardianService, type AuthenticateUserResponse } from "./gen/defense_allies/guardian/v1/guardian_pb.js";
import { GameService, PlayerService } from "./gen/defense_allies/timesquare/v1/timesquare_pb.js";
import { MatchmakingService } from "./gen/defense_allies/timesquare/v1/matchmaking_pb.js";
import { GameQueryService } from "./gen/defense_allies/projector/v1/games_pb.js";
import { PlayerQueryService } from "./gen/defense_allies/projector/v1/players_pb.js";
import { SearchService } from "./gen/defense_allies/projector/v1/search_pb.js";

export interface Login {
  userId: string;
  username: string;
  sessionId: string;
  roles: string[];
  access: string;
  refresh: string;
  /** Unix ms when the access token expires. */
  expiresAt: number;
}

const STORE_KEY = "allies.login";
let login: Login | null = load();
const listeners = new Set<(l: Login | null) => void>();

function load(): Login | null {
  try {
    const raw = localStorage.getItem(STORE_KEY);
    return raw ? (JSON.parse(raw) as Login) : null;
  } catch {
    return null;
  }
}

function save(next: Login | null) {
  login = next;
  if (next) localStorage.setItem(STORE_KEY, JSON.stringify(next));
  else localStorage.removeItem(STORE_KEY);
  schedule();
  for (const f of listeners) f(next);
}

// Another tab of this origin refreshed or logged out: take its tokens (a
// refresh token is single use; presenting an old one revokes the session).
addEventListener("storage", (e) => {
  if (e.key !== STORE_KEY) return;
  login = load();
  schedule();
  for (const f of listeners) f(login);
});

export function current(): Login | null {
  return login;
}

export function onLogin(f: (l: Login | null) => void) {
  listeners.add(f);
}

const auth: Interceptor = (next) => async (req) => {
  if (login && !req.header.has("authorization")) {
    if (login.expiresAt - Date.now() < 5_000) await refreshNow();
    if (login) req.header.set("authorization", `Bearer ${login.access}`);
  }
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  interceptors: [auth],
  // Binary gRPC-Web (what tonic-web speaks); the edge serves HTTP/2.
  useBinaryFormat: true,
});

export const guardian: Client<typeof GuardianService> = createClient(GuardianService, transport);
export const players: Client<typeof PlayerService> = createClient(PlayerService, transport);
export const games: Client<typeof GameService> = createClient(GameService, transport);
export const matchmaking: Client<typeof MatchmakingService> = createClient(MatchmakingService, transport);
export const gameQueries: Client<typeof GameQueryService> = createClient(GameQueryService, transport);
export const playerQueries: Client<typeof PlayerQueryService> = createClient(PlayerQueryService, transport);
export const search: Client<typeof SearchService> = createClient(SearchService, transport);

function fromResponse(r: AuthenticateUserResponse, username: string): Login {
  return {
    userId: r.userId,
    username,
    sessionId: r.sessionId,
    roles: r.roles,
    access: r.accessToken,
    refresh: r.refreshToken,
    expiresAt: Date.now() + Number(r.expiresIn) * 1000,
  };
}

export async function signIn(username: string, password: string): Promise<Login> {
  const r = await guardian.authenticateUser({ username, password });
  const l = fromResponse(r, username);
  save(l);
  return l;
}

export function register(username: string, email: string, password: string) {
  return guardian.registerUser({ username, email, password });
}

export async function signOut() {
  try {
    if (login) await guardian.logoutUser({});
  } catch {
    // Logged out here either way; the server forgets the session on expiry.
  }
  save(null);
}

let refreshing: Promise<void> | null = null;

/** Exchanges the refresh token once, however many callers ask at the same time (and across tabs). */
export function refreshNow(): Promise<void> {
  refreshing ??= (async () => {
    const run = async () => {
      const before = load();
      // Another tab may have refreshed while we waited for the lock.
      if (before && before.expiresAt - Date.now() > 30_000 && before.access !== login?.access) {
        login = before;
        return;
      }
      if (!login) return;
      try {
        const r = await guardian.refreshToken(
          { refreshToken: login.refresh },
          { headers: { authorization: "" } },
        );
        save(fromResponse(r, login.username));
      } catch (e) {
        const err = ConnectError.from(e);
        if (err.code === Code.Unauthenticated) save(null);
        else throw err;
      }
    };
    if (navigator.locks) await navigator.locks.request("allies.refresh", run);
    else await run();
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

let timer: ReturnType<typeof setTimeout> | undefined;
function schedule() {
  clearTimeout(timer);
  if (!login) return;
  // At four fifths of the token's life (and at least 5 s ahead).
  const left = login.expiresAt - Date.now();
  const wait = Math.max(1_000, Math.min(left * 0.8, left - 5_000));
  timer = setTimeout(() => refreshNow().catch(() => schedule()), wait);
}
schedule();

/** What the server said, ready to show: the status and its message (bounded by the server). */
export function describe(e: unknown): string {
  const err = ConnectError.from(e);
  if (err.code === Code.Unavailable || err.code === Code.Unknown) {
    return err.rawMessage && err.code !== Code.Unknown
      ? `The server is unavailable: ${err.rawMessage}`
      : `The server could not be reached (${err.rawMessage || Code[err.code]})`;
  }
  return err.rawMessage || Code[err.code];
}

export function code(e: unknown): Code {
  return ConnectError.from(e).code;
}

export function isGone(e: unknown): boolean {
  const c = code(e);
  return c === Code.Unavailable || c === Code.Unknown || c === Code.Internal || c === Code.Canceled || c === Code.DeadlineExceeded;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Sends a command with one x-command-id for all of its attempts: a retry
 * after a lost answer or a replica that died is answered from the first
 * attempt, never applied twice. Retries UNAVAILABLE (and a dropped
 * connection) for up to ~10 s.
 */
export async function command<T>(send: (opts: { headers: Record<string, string> }) => Promise<T>): Promise<T> {
  const id = crypto.randomUUID();
  let delay = 150;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await send({ headers: { "x-command-id": id } });
    } catch (e) {
      if (!isGone(e) || Date.now() + delay > deadline) throw e;
      await sleep(delay);
      delay = Math.min(delay * 2, 2_000);
    }
  }
}
