//! Players: the game's view of users, kept from integration events.
//!
//! - `ts.users`, a consumer group on guardian's `users` topic: a
//!   registration creates the Player, a lockout locks it (and cancels its
//!   ticket, which cancels a match it was in), an unlock unlocks it, a new
//!   display name follows.
//! - `ts.players`, a consumer group on the game's own `games` topic: a
//!   started game puts its players in it, a player who leaves is out of it, an
//!   ended game is recorded on each player (statistics, best wave, rating).
//!
//! Every reaction runs with the command id `<event id>:<step>`: a
//! redelivered event repeats nothing. A user who acts before guardian's
//! `UserRegistered` arrives is registered by that action (source
//! "first_action"); the event then only fills in the profile.

use std::sync::Arc;

use allies_contracts::guardian::integration::UserIntegrationEvent;
use allies_contracts::timesquare::integration::GameIntegrationEvent;
use allies_platform::RequestContext;
use allies_store::subscriber::{Handler, HandlerError};
use allies_store::{Executed, Handles, RecordedEvent};
use timesquare_domain::player::{GameResult, Player, PlayerCommand};

use crate::error::Result;

pub struct Players {
    pub handles: Handles<Player>,
}

/// What a lockout does to the ticket of a queued player: matchmaking
/// cancels it (injected, so players need not know matchmaking).
pub trait TicketCanceller: Send + Sync + 'static {
    fn cancel_locked_out(
        &self,
        ticket: &str,
        ctx: &RequestContext,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

impl Players {
    pub fn new(handles: Handles<Player>) -> Self {
        Self { handles }
    }

    pub async fn run(&self, user_id: &str, command: PlayerCommand, ctx: &RequestContext) -> Result<Executed<Player>> {
        let handle = self.handles.get(user_id);
        let options = ctx.options();
        Ok(handle.execute(&command, &ctx.command_context(), options).await?)
    }

    /// The player, registered by this first action if guardian's event has
    /// not arrived yet.
    pub async fn ensure(&self, user_id: &str, ctx: &RequestContext) -> Result<Arc<Player>> {
        let (state, _) = self.handles.get(user_id).current().await?;
        if state.exists() {
            return Ok(state);
        }
        let command = PlayerCommand::Register {
            user_id: user_id.to_owned(),
            username: String::new(),
            display_name: String::new(),
            registered_at_ms: ctx.now_ms,
            source: "first_action".into(),
        };
        // No command id: a concurrent registration is a harmless no-op.
        let system = RequestContext { command_id: None, ..ctx.clone() };
        Ok(self.run(user_id, command, &system).await?.state)
    }

    pub async fn get(&self, user_id: &str) -> Result<(Arc<Player>, u64)> {
        Ok(self.handles.get(user_id).current().await?)
    }
}

/// `ts.users`: guardian's users topic.
pub struct UsersTopic<T> {
    pub players: Arc<Players>,
    /// Cancels a locked-out player's ticket.
    pub tickets: Arc<T>,
}

impl<T: TicketCanceller> Handler for UsersTopic<T> {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let e = event.decode::<UserIntegrationEvent>().map_err(HandlerError::of_service)?;
        let ctx = |step: &str| RequestContext::reaction(&e, step);
        match e.payload.clone() {
            UserIntegrationEvent::Registered(r) => {
                let command = PlayerCommand::Register {
                    user_id: r.user_id.clone(),
                    username: r.username,
                    display_name: r.display_name,
                    registered_at_ms: r.registered_at_ms,
                    source: "guardian".into(),
                };
                self.players.run(&r.user_id, command, &ctx("register")).await.map_err(HandlerError::of_service)?;
            }
            UserIntegrationEvent::LockedOut(l) => {
                // The player may not exist yet here: a lockout creates it.
                self.players.ensure(&l.user_id, &ctx("ensure")).await.map_err(HandlerError::of_service)?;
                let command = PlayerCommand::Lock { until_ms: l.locked_until_ms, at_ms: l.at_ms };
                let done =
                    self.players.run(&l.user_id, command, &ctx("lock")).await.map_err(HandlerError::of_service)?;
                if let Some(ticket) = done.state.ticket.clone() {
                    self.tickets
                        .cancel_locked_out(&ticket, &ctx("cancel-ticket"))
                        .await
                        .map_err(HandlerError::of_service)?;
                }
            }
            UserIntegrationEvent::Unlocked(u) => {
                let (p, _) = self.players.get(&u.user_id).await.map_err(HandlerError::of_service)?;
                if p.exists() {
                    let command = PlayerCommand::Unlock { at_ms: u.at_ms };
                    self.players.run(&u.user_id, command, &ctx("unlock")).await.map_err(HandlerError::of_service)?;
                }
            }
            UserIntegrationEvent::DisplayNameChanged(d) => {
                let (p, _) = self.players.get(&d.user_id).await.map_err(HandlerError::of_service)?;
                if p.exists() {
                    let command = PlayerCommand::UpdateProfile { display_name: d.display_name };
                    self.players.run(&d.user_id, command, &ctx("profile")).await.map_err(HandlerError::of_service)?;
                }
            }
            UserIntegrationEvent::RolesChanged(_) => {}
        }
        Ok(())
    }
}

/// `ts.players`: the game's own games topic.
pub struct GamesTopic {
    pub players: Arc<Players>,
}

impl Handler for GamesTopic {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let e = event.decode::<GameIntegrationEvent>().map_err(HandlerError::of_service)?;
        match &e.payload {
            GameIntegrationEvent::Started(g) => {
                for user in &g.players {
                    let ctx = RequestContext::reaction(&e, &format!("enter:{user}"));
                    self.players
                        .ensure(user, &RequestContext { command_id: None, ..ctx.clone() })
                        .await
                        .map_err(HandlerError::of_service)?;
                    let command =
                        PlayerCommand::EnterGame { session_id: g.session_id.clone(), now_ms: g.started_at_ms };
                    self.players.run(user, command, &ctx).await.map_err(HandlerError::of_service)?;
                }
            }
            GameIntegrationEvent::PlayerLeft(l) => {
                let ctx = RequestContext::reaction(&e, "leave");
                let (p, _) = self.players.get(&l.user_id).await.map_err(HandlerError::of_service)?;
                if p.exists() {
                    let command = PlayerCommand::LeaveGame { session_id: l.session_id.clone(), now_ms: l.at_ms };
                    self.players.run(&l.user_id, command, &ctx).await.map_err(HandlerError::of_service)?;
                }
            }
            GameIntegrationEvent::Ended(g) => {
                for p in &g.players {
                    let ctx = RequestContext::reaction(&e, &format!("record:{}", p.user_id));
                    self.players
                        .ensure(&p.user_id, &RequestContext { command_id: None, ..ctx.clone() })
                        .await
                        .map_err(HandlerError::of_service)?;
                    let result = GameResult {
                        session_id: g.session_id.clone(),
                        match_id: g.match_id.clone(),
                        map: g.map.clone(),
                        difficulty: g.difficulty.clone(),
                        outcome: g.outcome.clone(),
                        waves_cleared: g.waves_cleared,
                        total_waves: g.total_waves,
                        score: g.score,
                        kills: p.kills,
                        started_at_ms: g.started_at_ms,
                        ended_at_ms: g.ended_at_ms,
                    };
                    self.players
                        .run(&p.user_id, PlayerCommand::RecordGame { result }, &ctx)
                        .await
                        .map_err(HandlerError::of_service)?;
                }
            }
        }
        Ok(())
    }
}
