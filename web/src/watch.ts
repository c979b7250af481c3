// A game's live stream that survives the network: WatchGameSession from the
// last version seen, reopened by itself (backoff 0.25 s → 4 s) when the
// connection, the edge or the serving replica goes away. The server answers a
// resume with exactly the events after that version: no gap, no duplicate.

import { Code } from "@connectrpc/connect";
import { code, games, isGone, sleep } from "./api.js";
import type { Frame, GameEventUpdate, GameView } from "./gen/defense_allies/timesquare/v1/timesquare_pb.js";

export interface WatchHandlers {
  snapshot(view: GameView): void;
  event(e: GameEventUpdate): void;
  frame(f: Frame): void;
  /** null: connected; else why the stream is down (and being reopened). */
  connection(problem: string | null): void;
  /** The stream ended for good (refused, or the game is gone). */
  fatal(error: unknown): void;
}

export class GameWatch {
  private stopped = false;
  private abort = new AbortController();
  /** The last session version received (0: none yet: a snapshot first). */
  version = 0n;
  reconnects = 0;

  constructor(
    private readonly sessionId: string,
    private readonly on: WatchHandlers,
  ) {
    void this.run();
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
  }

  private async run() {
    let delay = 250;
    while (!this.stopped) {
      let got = false;
      try {
        this.abort = new AbortController();
        const stream = games.watchGameSession(
          { sessionId: this.sessionId, fromVersion: this.version },
          { signal: this.abort.signal },
        );
        for await (const u of stream) {
          if (!got) {
            got = true;
            delay = 250;
            this.on.connection(null);
          }
          switch (u.update.case) {
            case "snapshot":
              this.version = u.update.value.version;
              this.on.snapshot(u.update.value);
              break;
            case "event":
              if (u.update.value.version <= this.version) break;
              this.version = u.update.value.version;
              this.on.event(u.update.value);
              break;
            case "frame":
              this.on.frame(u.update.value);
              break;
            case "caughtUp":
              // A resumed stream with nothing to replay: live and current.
              break;
          }
        }
        // The server closed the stream (it drains on shutdown): reopen.
        if (this.stopped) return;
        this.on.connection("the server ended the stream");
      } catch (e) {
        if (this.stopped) return;
        if (!isGone(e) && code(e) !== Code.Aborted && code(e) !== Code.ResourceExhausted) {
          this.on.fatal(e);
          return;
        }
        this.on.connection(navigator.onLine ? "connection to the game lost" : "you are offline");
      }
      this.reconnects++;
      await sleep(got ? 100 : delay);
      delay = Math.min(delay * 2, 4_000);
    }
  }
}
