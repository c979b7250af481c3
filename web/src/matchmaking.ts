// Matchmaking: find a game (maps, difficulty, players), the ticket's live
// state (WatchTicket, reopened if the stream drops), confirm a match, and go
// to the game when it is ready. Parties: invitations to the caller (accept,
// decline), the caller's own party (invite by player id, remove, leave).

import { Code } from "@connectrpc/connect";
import { code, command, current, isGone, matchmaking, search, sleep } from "./api.js";
import type { Screen } from "./game.js";
import { loadRules } from "./game.js";
import type { TicketView } from "./gen/defense_allies/timesquare/v1/matchmaking_pb.js";
import { act, fill, h, Outcome, when } from "./ui.js";

export function matchmakingScreen(): Screen {
  const me = current()!;
  const out = new Outcome();
  const ticketBox = h("div", { id: "ticket", "aria-live": "polite" });
  const partyBox = h("div", { id: "party" });
  const invitesBox = h("div", { id: "invites" });
  const maps = h("fieldset", { class: "maps" }, h("legend", {}, "Maps (none: any)"));
  const difficulty = h("select", { id: "find-difficulty" });
  const min = h("input", { type: "number", min: 2, max: 4, value: 2, id: "find-min" });
  const max = h("input", { type: "number", min: 2, max: 4, value: 2, id: "find-max" });
  let party: string[] = [];
  let stopped = false;
  let watching: AbortController | null = null;

  void loadRules().then((r) => {
    maps.append(...r.maps.map((m) => h("label", { class: "check" }, h("input", { type: "checkbox", value: m.name }), ` ${m.name}`)));
    fill(difficulty, r.difficulties.map((d) => h("option", { value: d, selected: d === "normal" }, d)));
  });

  function showTicket(t: TicketView | null) {
    if (!t) {
      fill(ticketBox, h("p", { class: "muted" }, "Not queued."));
      return;
    }
    ticketBox.dataset.status = t.status;
    const parts: (HTMLElement | string)[] = [h("p", {}, h("strong", { class: "ticket-status" }, t.status), ` · rating ${t.rating} · ${t.players.length} in this ticket · expires ${when(t.expiresAtMs)}`)];
    if (t.status === "searching") {
      const cancel = h("button", { id: "cancel-ticket" }, "Cancel") as HTMLButtonElement;
      cancel.onclick = () => act(out, "Cancelling", () => command((o) => matchmaking.cancelMatchmaking({ ticketId: t.ticketId }, o)), cancel);
      parts.push(cancel);
    }
    if (t.status === "matched" && t.matchId) {
      const confirm = h("button", { id: "confirm-match", class: "primary" }, "I'm here: confirm") as HTMLButtonElement;
      confirm.onclick = async () => {
        const m = await act(out, "Confirming", () => command((o) => matchmaking.confirmMatch({ matchId: t.matchId }, o)), confirm);
        if (m) out.ok(`Confirmed: ${m.players.filter((p) => p.confirmed).length} of ${m.players.length} players are here.`);
      };
      parts.push(h("p", {}, "A match is found: confirm before the deadline."), confirm);
    }
    if (t.status === "ready" && t.sessionId) {
      parts.push(h("p", {}, "Your game is ready: ", h("a", { href: `#/game/${t.sessionId}`, id: "go-to-game" }, "go to the game")));
      location.hash = `#/game/${t.sessionId}`;
    }
    if (t.reason) parts.push(h("p", { class: "muted" }, `Reason: ${t.reason}`));
    fill(ticketBox, parts);
  }

  /** Follows a ticket until a final status; reopens a dropped stream. */
  async function follow(ticketId: string) {
    watching?.abort();
    const abort = new AbortController();
    watching = abort;
    while (!stopped && !abort.signal.aborted) {
      try {
        for await (const t of matchmaking.watchTicket({ ticketId }, { signal: abort.signal })) {
          showTicket(t);
          if (["ready", "cancelled", "expired"].includes(t.status)) return;
        }
        return;
      } catch (e) {
        if (abort.signal.aborted || !isGone(e)) {
          if (!abort.signal.aborted) out.error("Following the ticket", e);
          return;
        }
        await sleep(500);
      }
    }
  }

  const findBtn = h("button", { type: "submit", class: "primary", id: "find-match" }, "Find a game") as HTMLButtonElement;
  const findForm = h(
    "form",
    {
      class: "card",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const chosen = [...maps.querySelectorAll<HTMLInputElement>("input:checked")].map((i) => i.value);
        const t = await act(
          out,
          "Finding a game",
          () => command((o) => matchmaking.findMatch({ maps: chosen, difficulty: difficulty.value, minPlayers: Number(min.value), maxPlayers: Number(max.value), party }, o)),
          findBtn,
        );
        if (t) {
          showTicket(t);
          void follow(t.ticketId);
        }
      },
    },
    h("h2", {}, "Find a game"),
    maps,
    h("label", {}, h("span", {}, "Difficulty"), difficulty),
    h("label", {}, h("span", {}, "At least (players)"), min),
    h("label", {}, h("span", {}, "At most (players)"), max),
    h("p", { class: "muted" }, "Your party's members queue with you."),
    findBtn,
  );

  // Invite by name: the search finds players as you type (prefix, one typo).
  const inviteName = h("input", { id: "invite-name", placeholder: "a player's name", autocomplete: "off", "aria-label": "Find a player to invite" });
  const found = h("ul", { id: "invite-results", class: "results" });
  const invite = async (userId: string, name: string, btn: HTMLButtonElement) => {
    const p = await act(out, `Inviting ${name}`, () => command((o) => matchmaking.inviteToParty({ userId }, o)), btn);
    if (p) {
      out.ok(`Invited ${name}: the invitation is open for 5 minutes.`);
      void refreshParty();
    }
  };
  let typed: ReturnType<typeof setTimeout> | undefined;
  inviteName.addEventListener("input", () => {
    clearTimeout(typed);
    typed = setTimeout(async () => {
      const query = inviteName.value.trim();
      if (!query) return fill(found);
      try {
        const r = await search.searchPlayers({ query, pageSize: 5 });
        fill(
          found,
          r.players
            .filter((p) => p.userId !== me.userId)
            .map((p) => {
              const b = h("button", { class: "small invite", "data-user": p.userId }, "Invite") as HTMLButtonElement;
              b.onclick = () => invite(p.userId, p.displayName || p.username, b);
              return h("li", {}, `${p.displayName || p.username} (${p.username}) · rating ${p.rating} `, b);
            }),
          r.players.length ? null : h("li", { class: "muted" }, "Nobody by that name."),
        );
      } catch (e) {
        out.error("Finding players", e);
      }
    }, 200);
  });
  const inviteForm = h("div", {}, h("label", {}, h("span", {}, "Invite a friend"), inviteName), found);

  async function refreshParty() {
    try {
      const p = await matchmaking.getParty({});
      party = p.guests.filter((g) => g.status === "member").map((g) => g.userId);
      fill(
        partyBox,
        p.guests.length
          ? h(
              "ul",
              {},
              p.guests.map((g) => {
                const remove = h("button", { class: "small" }, g.status === "member" ? "Remove" : "Withdraw") as HTMLButtonElement;
                remove.onclick = () => act(out, "Removing", () => command((o) => matchmaking.leaveParty({ hostId: me.userId, userId: g.userId }, o)), remove).then(() => refreshParty());
                return h("li", {}, h("a", { href: `#/player/${g.userId}` }, g.userId.slice(0, 8)), ` · ${g.status}`, g.status === "invited" ? ` until ${when(g.expiresAtMs)}` : "", " ", remove);
              }),
            )
          : h("p", { class: "muted" }, "Just you. Invite friends to queue together."),
      );
    } catch (e) {
      if (code(e) !== Code.NotFound) out.error("Your party", e);
      fill(partyBox, h("p", { class: "muted" }, "Just you. Invite friends to queue together."));
    }
    try {
      const inv = await matchmaking.listPartyInvites({});
      fill(
        invitesBox,
        inv.invites.map((i) => {
          const yes = h("button", { class: "primary accept-invite" }, "Accept") as HTMLButtonElement;
          const no = h("button", { class: "decline-invite" }, "Decline") as HTMLButtonElement;
          const answer = (accept: boolean, b: HTMLButtonElement) =>
            act(out, accept ? "Accepting" : "Declining", () => command((o) => matchmaking.respondToPartyInvite({ hostId: i.hostId, accept }, o)), b).then(() => refreshParty());
          yes.onclick = () => answer(true, yes);
          no.onclick = () => answer(false, no);
          return h("p", { class: "invite" }, "Party invitation from ", h("a", { href: `#/player/${i.hostId}` }, i.hostId.slice(0, 8)), ` (until ${when(i.expiresAtMs)}) `, yes, no);
        }),
      );
    } catch (e) {
      out.error("Invitations", e);
    }
  }

  // Where the caller is now: a ticket being followed survives a reload.
  void matchmaking
    .getPlayerState({})
    .then(async (s) => {
      if (s.ticketId) {
        try {
          const t = await matchmaking.getTicket({ ticketId: s.ticketId });
          showTicket(t);
          if (!["ready", "cancelled", "expired"].includes(t.status)) void follow(t.ticketId);
          return;
        } catch {
          // Shown as not queued.
        }
      }
      showTicket(null);
    })
    .catch((e) => out.error("Your queue state", e));
  void refreshParty();
  const poll = setInterval(() => void refreshParty(), 3_000);

  const el = h(
    "section",
    { class: "matchmaking" },
    h("h1", {}, "Matchmaking"),
    out.el,
    invitesBox,
    h("div", { class: "columns" }, h("div", {}, findForm), h("div", {}, h("h2", {}, "Your ticket"), ticketBox, h("h2", {}, "Your party"), partyBox, inviteForm, h("p", { class: "muted" }, `Your player id: `, h("code", { id: "my-id" }, me.userId)))),
  );
  return {
    el,
    dispose() {
      stopped = true;
      watching?.abort();
      clearInterval(poll);
    },
  };
}
