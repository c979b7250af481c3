//! Matchmaking's use cases, the matchmaker loop and the ticket reactions.
//!
//! `FindMatch` queues every player of the ticket (the Player aggregate
//! refuses a second ticket, a match, a game or a lockout), then creates the
//! ticket. A consumer group on the ticket logs (`ts.tickets`) keeps the
//! waiting set `mm:waiting` (ticket id → what the matchmaker needs) and
//! reacts: a cancelled or expired ticket dequeues its players, and cancels
//! the match it was in. One replica at a time (a lease, `mm:lease`) runs the
//! matchmaker: every interval it reads the waiting set, runs the pure pass
//! (`timesquare_domain::matchmaker`), expires tickets and forms a Match per
//! group; the saga ([`crate::saga`]) takes it from there.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allies_contracts::timesquare::events::TicketEvent;
use allies_contracts::timesquare::events::v1::{MatchFormed, MatchPlayer, TicketCreated, TicketPlayer};
use allies_core::{EventEnvelope, Failure, FieldViolation, Invalid};
use allies_platform::RequestContext;
use allies_platform::auth::Caller;
use allies_store::subscriber::{Handler, HandlerError};
use allies_store::{Executed, Handles, RecordedEvent};
use timesquare_domain::matching::{Match, MatchCommand};
use timesquare_domain::matchmaker::{self, Waiting};
use timesquare_domain::party::{Party, PartyCommand, Seat};
use timesquare_domain::player::PlayerCommand;
use timesquare_domain::ticket::{Status, Ticket, TicketCommand};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Result, TimesquareError};
use crate::mm_index::MatchmakingIndex;
use crate::players::Players;
use crate::settings;

pub use crate::mm_index::{LEASE, WAITING, WAITING_TRACES, invites_key};

/// What FindMatch asks for.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    pub maps: Vec<String>,
    pub difficulty: String,
    pub min_players: u32,
    pub max_players: u32,
    pub party: Vec<String>,
}

/// What one matchmaker pass did (for logs, metrics and the benchmark).
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub waiting: usize,
    pub groups: usize,
    pub expired: usize,
    pub took: Duration,
}

pub struct Matchmaking {
    pub tickets: Handles<Ticket>,
    pub parties: Handles<Party>,
    pub matches: Handles<Match>,
    pub players: Arc<Players>,
    pub game: Arc<crate::game::Game>,
    /// The waiting set, traces, invitation index and lease.
    pub index: Arc<dyn MatchmakingIndex>,
    /// The matches' confirmation deadlines (the saga's).
    pub deadlines: Arc<dyn crate::schedule::Schedule>,
    /// The environment's settings, with the live configuration's window and
    /// ticket expiry once a version exists (replaced whole).
    pub settings: allies_store::Tunable<settings::Matchmaking>,
    pub instance: String,
    /// Tickets this instance grouped lately: not grouped again before the
    /// saga claims them (or gives them back).
    recently: Mutex<HashMap<String, Instant>>,
}

fn uuid_field(field: &str, value: &str) -> std::result::Result<String, FieldViolation> {
    Uuid::parse_str(value).map(|u| u.to_string()).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

impl Matchmaking {
    /// Matchmaking on the game's executor, keeping up to `hot` tickets,
    /// matches and parties in memory.
    pub fn new(
        hot: usize,
        players: Arc<Players>,
        game: Arc<crate::game::Game>,
        index: Arc<dyn MatchmakingIndex>,
        deadlines: Arc<dyn crate::schedule::Schedule>,
        settings: allies_store::Tunable<settings::Matchmaking>,
        instance: String,
    ) -> Self {
        let executor = game.handles.executor();
        Self {
            tickets: Handles::new(executor.clone(), hot),
            parties: Handles::new(executor.clone(), hot),
            matches: Handles::new(executor.clone(), hot),
            players,
            game,
            index,
            deadlines,
            settings,
            instance,
            recently: Mutex::new(HashMap::new()),
        }
    }

    pub async fn on_ticket(&self, id: &str, command: TicketCommand, ctx: &RequestContext) -> Result<Executed<Ticket>> {
        let options = ctx.options();
        Ok(self.tickets.get(id).execute(&command, &ctx.command_context(), options).await?)
    }

    pub async fn on_match(&self, id: &str, command: MatchCommand, ctx: &RequestContext) -> Result<Executed<Match>> {
        let options = ctx.options();
        Ok(self.matches.get(id).execute(&command, &ctx.command_context(), options).await?)
    }

    fn maps(&self) -> Vec<String> {
        self.game.rules(0).map(|r| r.maps.keys().cloned().collect()).unwrap_or_default()
    }

    fn validate(&self, caller: &Caller, w: &Wanted) -> std::result::Result<Wanted, TimesquareError> {
        let mut invalid = Invalid::new();
        let rules = self.game.rules(0)?;
        let mut maps: Vec<String> = w.maps.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
        maps.sort();
        maps.dedup();
        for m in &maps {
            if !rules.maps.contains_key(m) {
                invalid.push("maps", format!("unknown map '{m}' (known: {})", self.maps().join(", ")));
            }
        }
        let difficulty = if w.difficulty.is_empty() { "normal".to_owned() } else { w.difficulty.clone() };
        if !rules.difficulties.contains_key(&difficulty) {
            invalid.push("difficulty", format!("unknown difficulty '{difficulty}'"));
        }
        let min = if w.min_players == 0 { 2 } else { w.min_players };
        let max = if w.max_players == 0 { 4 } else { w.max_players };
        if !(2..=4).contains(&min) {
            invalid.push("min_players", "must be 2 to 4");
        }
        if !(2..=4).contains(&max) || max < min {
            invalid.push("max_players", "must be 2 to 4 and at least min_players");
        }
        let mut party = Vec::new();
        for (i, p) in w.party.iter().enumerate() {
            match uuid_field(&format!("party[{i}]"), p) {
                Ok(id) if id == caller.user_id => {
                    invalid.push(format!("party[{i}]"), "is you");
                }
                Ok(id) if party.contains(&id) => {
                    invalid.push(format!("party[{i}]"), "is listed twice");
                }
                Ok(id) => party.push(id),
                Err(v) => {
                    invalid.push(v.field, v.reason);
                }
            }
        }
        if party.len() as u32 + 1 > max {
            invalid.push("party", format!("a party of {} does not fit a game of at most {max}", party.len() + 1));
        }
        invalid.into_result()?;
        Ok(Wanted { maps, difficulty, min_players: min, max_players: max, party })
    }

    /// Queues `user` on `ticket`; a stale ticket left by a crash between the
    /// queueing and the ticket's creation is let go first.
    async fn queue(&self, user: &str, ticket: &str, ctx: &RequestContext) -> Result<()> {
        let queue = PlayerCommand::Queue { ticket_id: ticket.to_owned(), now_ms: ctx.now_ms };
        match self.players.run(user, queue.clone(), ctx).await {
            Err(e) if e.rule_name().as_deref() == Some("ALREADY_QUEUED") => {
                let (p, _) = self.players.get(user).await?;
                let Some(old) = p.ticket.clone() else { return Err(e) };
                let (t, _) = self.tickets.get(&old).current().await?;
                if t.status != Status::None && !t.status.is_final() {
                    return Err(e);
                }
                let dequeue = PlayerCommand::Dequeue { ticket_id: old, reason: "stale".into(), now_ms: ctx.now_ms };
                self.players.run(user, dequeue, ctx).await?;
                self.players.run(user, queue, ctx).await.map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// FindMatch: queues the caller and their party as one ticket.
    pub async fn find(&self, ctx: &RequestContext, wanted: &Wanted) -> Result<Executed<Ticket>> {
        let caller = ctx.caller()?.clone();
        let w = self.validate(&caller, wanted)?;
        let me = self.players.ensure(&caller.user_id, ctx).await?;
        let mut players = vec![(caller.user_id.clone(), me.rating)];
        if !w.party.is_empty() {
            // Only members who accepted the caller's invitation.
            let (party, _) = self.parties.get(&caller.user_id).current().await?;
            for friend in &w.party {
                if !party.is_member(friend) {
                    let e = timesquare_domain::party::PartyError::NotAMember(friend.clone());
                    return Err(TimesquareError::from(e).about(format!("party member {friend}")));
                }
            }
        }
        for friend in &w.party {
            let (p, _) = self.players.get(friend).await?;
            if !p.exists() {
                return Err(Failure::not_found(format!("no player {friend} (party member)")).into());
            }
            players.push((friend.clone(), p.rating));
        }
        let ticket_id = Uuid::now_v7().to_string();
        let system = RequestContext { command_id: None, ..ctx.clone() };
        let mut queued: Vec<String> = Vec::new();
        for (user, _) in &players {
            if let Err(e) = self.queue(user, &ticket_id, &system).await {
                for done in &queued {
                    let undo = PlayerCommand::Dequeue {
                        ticket_id: ticket_id.clone(),
                        reason: "failed".into(),
                        now_ms: ctx.now_ms,
                    };
                    if let Err(err) = self.players.run(done, undo, &system).await {
                        tracing::warn!(user = done, error = %err, "cannot undo a queueing; its ticket will be seen as stale");
                    }
                }
                return Err(if *user == caller.user_id { e } else { e.about(format!("party member {user}")) });
            }
            queued.push(user.clone());
        }
        let created = TicketCreated {
            ticket_id: ticket_id.clone(),
            owner: caller.user_id.clone(),
            players: players.iter().map(|(u, r)| TicketPlayer { user_id: u.clone(), rating: *r }).collect(),
            maps: w.maps,
            difficulty: w.difficulty,
            min_players: w.min_players,
            max_players: w.max_players,
            created_at_ms: ctx.now_ms,
            expires_at_ms: ctx.now_ms + self.settings.get().ticket_ttl.as_millis() as i64,
        };
        self.on_ticket(&ticket_id, TicketCommand::Create(created), &system).await
    }

    /// A ticket the caller may see (one of its players, or an admin).
    pub async fn ticket(&self, caller: &Caller, id: &str) -> Result<(Arc<Ticket>, u64)> {
        let id = uuid_field("ticket_id", id)?;
        let (t, v) = self.tickets.get(&id).current().await?;
        if t.status == Status::None {
            return Err(Failure::not_found(format!("no ticket {id}")).into());
        }
        if !caller.is_admin() && !t.players.iter().any(|(u, _)| *u == caller.user_id) {
            return Err(Failure::permission_denied("a ticket is seen by its players and admins").into());
        }
        Ok((t, v))
    }

    /// The caller's current ticket, or the one named.
    pub async fn ticket_id_of(&self, ctx: &RequestContext, given: &str) -> Result<String> {
        if !given.is_empty() {
            return Ok(given.to_owned());
        }
        let caller = ctx.caller()?;
        let (p, _) = self.players.get(&caller.user_id).await?;
        p.ticket.clone().ok_or_else(|| Failure::not_found("you have no ticket").into())
    }

    /// CancelMatchmaking.
    pub async fn cancel(&self, ctx: &RequestContext, id: &str) -> Result<Executed<Ticket>> {
        let caller = ctx.caller()?.clone();
        let id = self.ticket_id_of(ctx, id).await?;
        self.ticket(&caller, &id).await?;
        self.cancel_ticket(&id, &caller.user_id, "cancelled", ctx).await
    }

    pub async fn cancel_ticket(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        ctx: &RequestContext,
    ) -> Result<Executed<Ticket>> {
        let command = TicketCommand::Cancel { by: by.to_owned(), reason: reason.to_owned(), now_ms: ctx.now_ms };
        self.on_ticket(id, command, ctx).await
    }

    /// ConfirmMatch.
    pub async fn confirm(&self, ctx: &RequestContext, match_id: &str) -> Result<Executed<Match>> {
        let caller = ctx.caller()?.clone();
        let id = uuid_field("match_id", match_id)?;
        let command = MatchCommand::Confirm { user_id: caller.user_id, now_ms: ctx.now_ms };
        self.on_match(&id, command, ctx).await
    }

    /// A match the caller may see (one of its players, or an admin).
    pub async fn match_state(&self, caller: &Caller, id: &str) -> Result<(Arc<Match>, u64)> {
        let id = uuid_field("match_id", id)?;
        let (m, v) = self.matches.get(&id).current().await?;
        if m.status == timesquare_domain::matching::Status::None {
            return Err(Failure::not_found(format!("no match {id}")).into());
        }
        if !caller.is_admin() && m.member(&caller.user_id).is_none() {
            return Err(Failure::permission_denied("a match is seen by its players and admins").into());
        }
        Ok((m, v))
    }

    async fn on_party(&self, host: &str, command: PartyCommand, ctx: &RequestContext) -> Result<Executed<Party>> {
        Ok(self.parties.get(host).execute(&command, &ctx.command_context(), ctx.options()).await?)
    }

    /// InviteToParty: the caller invites a registered player to their party.
    pub async fn invite(&self, ctx: &RequestContext, user: &str) -> Result<Executed<Party>> {
        let caller = ctx.caller()?.clone();
        let user = uuid_field("user_id", user)?;
        let (p, _) = self.players.get(&user).await?;
        if !p.exists() {
            return Err(Failure::not_found(format!("no player {user}")).into());
        }
        let command = PartyCommand::Invite { host: caller.user_id.clone(), user: user.clone(), now_ms: ctx.now_ms };
        let done = self.on_party(&caller.user_id, command, ctx).await?;
        // The invited player's index of invitations (the party is the truth).
        let (until, ttl) =
            (ctx.now_ms + timesquare_domain::party::INVITE_TTL_MS, timesquare_domain::party::INVITE_TTL_MS);
        if let Err(e) = self.index.add_invite(&user, &caller.user_id, until, ttl).await {
            tracing::warn!(user, error = %e, "the invitation is not in the player's index; the party holds it");
        }
        Ok(done)
    }

    /// RespondToPartyInvite: the caller accepts or declines a host's invitation.
    pub async fn respond(&self, ctx: &RequestContext, host: &str, accept: bool) -> Result<Executed<Party>> {
        let caller = ctx.caller()?.clone();
        let host = uuid_field("host_id", host)?;
        let user = caller.user_id.clone();
        let command = if accept {
            PartyCommand::Accept { user: user.clone(), now_ms: ctx.now_ms }
        } else {
            PartyCommand::Decline { user: user.clone(), now_ms: ctx.now_ms }
        };
        let done = self.on_party(&host, command, ctx).await?;
        if let Err(e) = self.index.remove_invite(&user, &host).await {
            tracing::debug!(user, error = %e, "an answered invitation stays in the index; listings check the party");
        }
        Ok(done)
    }

    /// LeaveParty: a member leaves, or the host removes one.
    pub async fn leave_party(&self, ctx: &RequestContext, host: &str, user: &str) -> Result<Executed<Party>> {
        let caller = ctx.caller()?.clone();
        let host = if host.is_empty() { caller.user_id.clone() } else { uuid_field("host_id", host)? };
        let user = if user.is_empty() { caller.user_id.clone() } else { uuid_field("user_id", user)? };
        let command = PartyCommand::Leave { user, by: caller.user_id.clone(), now_ms: ctx.now_ms };
        self.on_party(&host, command, ctx).await
    }

    /// A party, seen by its host, its members, the players it invited and admins.
    pub async fn party(&self, caller: &Caller, host: &str) -> Result<(Arc<Party>, u64)> {
        let host = if host.is_empty() { caller.user_id.clone() } else { uuid_field("host_id", host)? };
        let (p, v) = self.parties.get(&host).current().await?;
        let now = allies_platform::context::now_ms();
        if host != caller.user_id
            && !caller.is_admin()
            && !p.is_member(&caller.user_id)
            && !p.invited(&caller.user_id, now)
        {
            return Err(Failure::permission_denied("a party is seen by its host, its members and the invited").into());
        }
        Ok((p, v))
    }

    /// The caller's open invitations (checked against each party).
    pub async fn invites(&self, caller: &Caller) -> Result<Vec<(String, i64)>> {
        let now = allies_platform::context::now_ms();
        let hosts = self.index.invites(&caller.user_id, now).await?;
        let mut out = Vec::new();
        for host in hosts.into_iter().take(32) {
            let (p, _) = self.parties.get(&host).current().await?;
            if let Some(Seat::Invited { until_ms }) = p.guests.get(&caller.user_id)
                && *until_ms > now
            {
                out.push((host, *until_ms));
            }
        }
        Ok(out)
    }

    /// Takes or keeps the lease; true when this instance runs the matchmaker.
    async fn lease(&self) -> bool {
        let ttl = (self.settings.get().interval * 4).max(Duration::from_secs(1)).as_millis() as u64;
        self.index.lease(&self.instance, ttl).await
    }

    /// The waiting tickets (the matchmaker's input).
    pub async fn waiting(&self) -> Result<Vec<Waiting>> {
        Ok(self.index.waiting().await?.iter().filter_map(|v| serde_json::from_str(v).ok()).collect())
    }

    /// One pass now, if this instance holds the lease.
    pub async fn pass_once(&self) -> Result<Option<PassReport>> {
        self.pass_at(allies_platform::context::now_ms()).await
    }

    /// One pass at `now`, if this instance holds the lease.
    pub async fn pass_at(&self, now: i64) -> Result<Option<PassReport>> {
        if !self.lease().await {
            return Ok(None);
        }
        let started = Instant::now();
        let mut waiting = self.waiting().await?;
        {
            let mut recent = self.recently.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|_, at| at.elapsed() < Duration::from_secs(30));
            waiting.retain(|w| !recent.contains_key(&w.ticket_id));
        }
        let pass = matchmaker::pass(&waiting, now, &self.settings.get().pass, &self.maps());
        let report = PassReport {
            waiting: waiting.len(),
            groups: pass.groups.len(),
            expired: pass.expired.len(),
            took: started.elapsed(),
        };
        for t in &pass.expired {
            let ctx = RequestContext::system(now);
            if let Err(e) = self.on_ticket(t, TicketCommand::Expire { now_ms: now }, &ctx).await {
                tracing::warn!(ticket = t, error = %e, "cannot expire a ticket");
            }
        }
        for g in pass.groups {
            let match_id = Uuid::now_v7().to_string();
            {
                let mut recent = self.recently.lock().unwrap_or_else(|e| e.into_inner());
                for t in &g.tickets {
                    recent.insert(t.clone(), Instant::now());
                }
            }
            let formed = MatchFormed {
                match_id: match_id.clone(),
                tickets: g.tickets.clone(),
                players: g
                    .players
                    .iter()
                    .map(|(u, r, t)| MatchPlayer { user_id: u.clone(), rating: *r, ticket_id: t.clone() })
                    .collect(),
                map: g.map,
                difficulty: g.difficulty,
                window: g.window,
                spread: g.spread,
                formed_at_ms: now,
                confirm_within_ms: self.settings.get().confirm_within.as_millis() as i64,
            };
            // The match is formed in a span of its own, linked to the
            // traces of the players' FindMatch calls.
            // Recorded when one of those was (parent-based sampling).
            let traces =
                if allies_store::trace::sampler().is_some() { self.index.traces(&g.tickets).await } else { Vec::new() };
            let decision = allies_store::trace::linked(traces.iter().map(Option::as_deref));
            let span = if allies_store::trace::on() && allies_store::trace::Decision::builds(decision) {
                allies_store::trace::Span::start(
                    "form match",
                    allies_store::trace::SpanKind::Internal,
                    allies_store::trace::Parent::Current,
                    vec![allies_store::trace::KeyValue::new("match.id", match_id.clone())],
                    traces.iter().filter_map(|tp| allies_store::trace::link(tp.as_deref())).collect(),
                )
            } else {
                allies_store::trace::Span::none()
            };
            let decision = allies_store::trace::settle(decision, &span);
            let ctx = RequestContext::system(now);
            let formed = span.scope_with(decision, self.on_match(&match_id, MatchCommand::Form(formed), &ctx));
            match formed.await {
                Ok(_) => tracing::info!(match_id, tickets = ?g.tickets, window = g.window, "match formed"),
                Err(e) => tracing::warn!(error = %e, "cannot form a match; its tickets wait for the next pass"),
            }
        }
        Ok(Some(report))
    }

    /// The matchmaker loop.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.get().interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.pass_once().await {
                Ok(Some(r)) if r.groups > 0 || r.expired > 0 => {
                    tracing::info!(waiting = r.waiting, groups = r.groups, expired = r.expired, took = ?r.took, "matchmaker pass")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "matchmaker pass failed; next one in an interval"),
            }
        }
    }
}

impl crate::players::TicketCanceller for Matchmaking {
    async fn cancel_locked_out(&self, ticket: &str, ctx: &RequestContext) -> Result<()> {
        self.cancel_ticket(ticket, "guardian", "locked_out", ctx).await.map(|_| ())
    }
}

/// `ts.tickets`: keeps the waiting set and reacts to a ticket's end.
pub struct TicketReactions {
    pub mm: Arc<Matchmaking>,
}

impl TicketReactions {
    async fn dequeue(&self, t: &Ticket, reason: &str, e: &EventEnvelope<TicketEvent>) -> Result<(), HandlerError> {
        for (user, _) in &t.players {
            let ctx = RequestContext::reaction(e, &format!("dequeue:{user}"));
            let command =
                PlayerCommand::Dequeue { ticket_id: t.id.clone(), reason: reason.to_owned(), now_ms: ctx.now_ms };
            match self.mm.players.run(user, command, &ctx).await {
                Ok(_) => {}
                Err(e) if e.rule_name().as_deref() == Some("NO_SUCH_PLAYER") => {}
                Err(e) => return Err(HandlerError::of(e)),
            }
        }
        Ok(())
    }
}

impl Handler for TicketReactions {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let e = event.decode::<TicketEvent>().map_err(HandlerError::of_service)?;
        let ticket_id = &event.envelope.aggregate_id;
        let now = e.recorded_at_ms;
        let (t, _) = self.mm.tickets.get(ticket_id).current().await.map_err(HandlerError::of_service)?;
        match &e.payload {
            TicketEvent::Created(_) | TicketEvent::Released(_) => {
                // Only while it still waits (a later event may have moved it on).
                if t.status == Status::Searching {
                    let w = Waiting {
                        ticket_id: t.id.clone(),
                        players: t.players.clone(),
                        rating: t.rating(),
                        maps: t.maps.clone(),
                        difficulty: t.difficulty.clone(),
                        min_players: t.min_players,
                        max_players: t.max_players,
                        created_at_ms: t.created_at_ms,
                        expires_at_ms: t.expires_at_ms,
                    };
                    let json = serde_json::to_string(&w).map_err(HandlerError::of)?;
                    let created_in = match &e.payload {
                        TicketEvent::Created(_) => e.metadata.traceparent.as_deref(),
                        _ => None,
                    };
                    self.mm.index.put_waiting(ticket_id, &json, created_in).await.map_err(HandlerError::of_service)?;
                    if let Ok(mut recent) = self.mm.recently.lock() {
                        recent.remove(ticket_id);
                    }
                }
            }
            _ => {
                self.mm.index.remove_waiting(ticket_id, t.status.is_final()).await.map_err(HandlerError::of_service)?;
            }
        }
        match &e.payload {
            TicketEvent::Cancelled(c) => {
                self.dequeue(&t, &c.reason, &e).await?;
                if !c.match_id.is_empty() {
                    let reason = if c.reason == "locked_out" { "locked_out" } else { "player_left" };
                    let command = MatchCommand::Cancel {
                        reason: reason.into(),
                        culprits: t.user_ids(),
                        detail: format!("ticket {ticket_id} {}", c.reason),
                        now_ms: now,
                    };
                    let ctx = RequestContext::reaction(&e, "cancel-match");
                    self.mm.on_match(&c.match_id, command, &ctx).await.map_err(HandlerError::of_service)?;
                }
            }
            TicketEvent::Expired(_) => self.dequeue(&t, "expired", &e).await?,
            TicketEvent::Completed(_) => self.dequeue(&t, "matched", &e).await?,
            _ => {}
        }
        Ok(())
    }
}

/// Players of a ticket, as a set (for the tests' "never in two matches").
pub fn players_of(t: &Ticket) -> BTreeSet<String> {
    t.players.iter().map(|(u, _)| u.clone()).collect()
}
