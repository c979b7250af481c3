//! Timesquare's gRPC API: the thin layer between the wire and [`Game`].

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use allies_contracts::timesquare::v1::game_service_server::GameService;
use allies_contracts::timesquare::v1::player_service_server::PlayerService;
use allies_contracts::timesquare::v1::*;
use allies_platform::auth::{Authenticator, ROLE_ADMIN};
use allies_platform::{OrStatus, RequestContext};
use timesquare_domain::{GameCommand, TowerAct};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::game::{Done, Game};
use crate::view;
use crate::watch::Watch;

pub struct GameApi {
    /// A retried command answers its first reply.
    pub replies: Arc<allies_platform::Replies>,
    /// Each player's command rate.
    pub rate: Arc<allies_platform::rate::PlayerRates>,
    pub game: Arc<Game>,
    pub watch: Arc<Watch>,
    pub auth: Arc<Authenticator>,
    /// The fleet's live configuration: feature flags are evaluated on it.
    pub live: tokio::sync::watch::Receiver<Arc<allies_platform::live::LiveConfig>>,
    /// Turns true when the service starts shutting down: open streams end
    /// with UNAVAILABLE so their clients resume on another replica.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn answer(done: &Done) -> GameCommandResponse {
    GameCommandResponse {
        session_id: done.session_id.clone(),
        version: done.executed.version,
        consistency_token: done.executed.consistency_token(),
        phase: done.executed.state.phase.as_str().into(),
        events: done.event_types(),
    }
}

fn tower_answer(done: &Done, caller: &str, tower_id: Option<u32>) -> TowerResponse {
    let s = &done.executed.state;
    let seat = s.members.iter().find(|m| m.user_id == caller).and_then(|m| m.seat);
    // A command that changed nothing (a retry answered from the first
    // reply carries its events) names the tower it was asked about.
    let act = TowerAct::of(&done.executed.events).unwrap_or(TowerAct { tower_id: tower_id.unwrap_or(0), tick: 0 });
    TowerResponse {
        session_id: done.session_id.clone(),
        tower_id: act.tower_id,
        gold: seat.and_then(|x| s.gold.get(x)).copied().unwrap_or(0),
        version: done.executed.version,
        consistency_token: done.executed.consistency_token(),
        tick: act.tick,
        events: done.event_types(),
    }
}

impl GameApi {
    /// UpgradeTower and SellTower: a command on one of the caller's towers.
    async fn on_tower(
        &self,
        request: Request<TowerRequest>,
        command: fn(String, u32, i64) -> GameCommand,
    ) -> Result<Response<TowerResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        // Answered from the store's command record on a retry: see `place_tower`.
        let r = request.into_inner();
        let done = self
            .game
            .act(&ctx, &r.session_id, |user_id, now_ms| command(user_id, r.tower_id, now_ms))
            .await
            .or_status()?;
        let caller = ctx.caller().or_status()?.user_id.clone();
        Ok(Response::new(tower_answer(&done, &caller, Some(r.tower_id))))
    }

    /// The boolean feature flags on for the caller (a map or tower type
    /// of the rules may name one).
    fn flags(&self, ctx: &RequestContext) -> BTreeSet<String> {
        let Ok(caller) = ctx.caller() else { return BTreeSet::new() };
        allies_core::flags::on_for(&self.live.borrow().values, &caller.user_id, &caller.roles)
    }
}

type Updates = Pin<Box<dyn Stream<Item = Result<GameUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl GameService for GameApi {
    async fn create_game_session(
        &self,
        request: Request<CreateGameSessionRequest>,
    ) -> Result<Response<CreateGameSessionResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let r = request.into_inner();
                let flags = self.flags(&ctx);
                let (done, code) = self.game.create(&ctx, &r, flags).await.or_status()?;
                tracing::info!(
                    session_id = done.session_id,
                    host = ctx.caller().map(|c| c.user_id.clone()).unwrap_or_default(),
                    "game session created"
                );
                Ok(Response::new(CreateGameSessionResponse {
                    session_id: done.session_id.clone(),
                    invite_code: code,
                    version: done.executed.version,
                    consistency_token: done.executed.consistency_token(),
                    rules_version: done.executed.state.rules_version,
                }))
            })
            .await
    }

    async fn join_game_session(
        &self,
        request: Request<JoinGameSessionRequest>,
    ) -> Result<Response<GameCommandResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let r = request.get_ref();
                let done = self.game.join(&ctx, &r.session_id, &r.invite_code, &r.display_name).await.or_status()?;
                Ok(Response::new(answer(&done)))
            })
            .await
    }

    async fn leave_game_session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<GameCommandResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let done = self
                    .game
                    .act(&ctx, &request.get_ref().session_id, |user_id, now_ms| GameCommand::Leave {
                        user_id,
                        reason: "left".into(),
                        now_ms,
                    })
                    .await
                    .or_status()?;
                Ok(Response::new(answer(&done)))
            })
            .await
    }

    async fn set_ready(&self, request: Request<SetReadyRequest>) -> Result<Response<GameCommandResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let ready = request.get_ref().ready;
                let done = self
                    .game
                    .act(&ctx, &request.get_ref().session_id, |user_id, now_ms| GameCommand::SetReady {
                        user_id,
                        ready,
                        now_ms,
                    })
                    .await
                    .or_status()?;
                Ok(Response::new(answer(&done)))
            })
            .await
    }

    async fn start_game(&self, request: Request<SessionRequest>) -> Result<Response<GameCommandResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let done = self
                    .game
                    .act(&ctx, &request.get_ref().session_id, |user_id, now_ms| GameCommand::Start { user_id, now_ms })
                    .await
                    .or_status()?;
                Ok(Response::new(answer(&done)))
            })
            .await
    }

    async fn place_tower(&self, request: Request<PlaceTowerRequest>) -> Result<Response<TowerResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        // The game's hot path (place, upgrade, sell) records no reply: a
        // tower command always appends or is refused, and its reply is a
        // function of what it appended — so a retry under its x-command-id
        // is answered from the store's command record (written by the
        // append itself, atomically): the state as of the first append and
        // its events give the very same reply. Two Redis calls a command
        // less (the reply layer's claim and record); a copy in flight on
        // another replica meets the record in its own append.
        let r = request.into_inner();
        let tower_type = r.tower_type.clone();
        let flags = self.flags(&ctx);
        let done = self
            .game
            .act(&ctx, &r.session_id, |user_id, now_ms| GameCommand::Place {
                user_id,
                tower_type,
                x: r.x,
                y: r.y,
                flags,
                now_ms,
            })
            .await
            .or_status()?;
        let caller = ctx.caller().or_status()?.user_id.clone();
        Ok(Response::new(tower_answer(&done, &caller, None)))
    }

    async fn upgrade_tower(&self, request: Request<TowerRequest>) -> Result<Response<TowerResponse>, Status> {
        self.on_tower(request, |user_id, tower_id, now_ms| GameCommand::Upgrade { user_id, tower_id, now_ms }).await
    }

    async fn sell_tower(&self, request: Request<TowerRequest>) -> Result<Response<TowerResponse>, Status> {
        self.on_tower(request, |user_id, tower_id, now_ms| GameCommand::Sell { user_id, tower_id, now_ms }).await
    }

    async fn start_wave(&self, request: Request<SessionRequest>) -> Result<Response<GameCommandResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let done = self.game.start_wave(&ctx, &request.get_ref().session_id).await.or_status()?;
                Ok(Response::new(answer(&done)))
            })
            .await
    }

    async fn end_game(&self, request: Request<EndGameRequest>) -> Result<Response<GameCommandResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let r = request.get_ref();
                let done = self.game.end(&ctx, &r.session_id, &r.reason).await.or_status()?;
                Ok(Response::new(answer(&done)))
            })
            .await
    }

    async fn get_game_state(&self, request: Request<SessionRequest>) -> Result<Response<GameView>, Status> {
        let ctx = self.auth.context(&request).await?;
        let (state, version) =
            self.game.state(ctx.caller().or_status()?, &request.get_ref().session_id).await.or_status()?;
        Ok(Response::new(view::game_view(&state, version)))
    }

    type WatchGameSessionStream = Updates;

    async fn watch_game_session(
        &self,
        request: Request<WatchGameSessionRequest>,
    ) -> Result<Response<Self::WatchGameSessionStream>, Status> {
        let ctx = self.auth.context(&request).await?;
        let r = request.get_ref();
        let sid = crate::game::session_id(&r.session_id).map_err(crate::game::TimesquareError::from).or_status()?;
        let rx = self.watch.watch(ctx.caller().or_status()?, &sid, r.from_version).await.or_status()?;
        let updates = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(allies_platform::drain::until_stopping(updates, self.stopping.clone())))
    }

    async fn verify_replay(&self, request: Request<SessionRequest>) -> Result<Response<VerifyReplayResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        ctx.caller().or_status()?.require_role(ROLE_ADMIN).or_status()?;
        let report = self.game.verify(&request.get_ref().session_id).await.or_status()?;
        Ok(Response::new(VerifyReplayResponse {
            ok: report.ok(),
            events: report.events,
            waves: report
                .waves
                .iter()
                .map(|w| WaveCheck {
                    wave: w.wave,
                    recorded_hash: w.recorded_hash.clone(),
                    replayed_hash: w.replayed_hash.clone(),
                    recorded_outcome: w.recorded_outcome.clone(),
                    replayed_outcome: w.replayed_outcome.clone(),
                    ok: w.ok,
                })
                .collect(),
            problems: report.problems,
        }))
    }

    async fn get_replay(&self, request: Request<GetReplayRequest>) -> Result<Response<ReplayPage>, Status> {
        let ctx = self.auth.context(&request).await?;
        let r = request.get_ref();
        let limit = match r.page_size {
            0 => 500,
            n @ 1..=1000 => n as usize,
            _ => {
                let bad = allies_core::FieldViolation::new("page_size", "must be 1 to 1000 (0: 500)");
                return Err(crate::game::TimesquareError::from(bad)).or_status();
            }
        };
        let page =
            self.game.replay(ctx.caller().or_status()?, &r.session_id, r.after_version, limit).await.or_status()?;
        Ok(Response::new(ReplayPage {
            events: page.events.iter().map(|(version, e, at)| crate::watch::event_update(*version, e, *at)).collect(),
            version: page.version,
            rules_json: page.rules_json.unwrap_or_default(),
        }))
    }

    async fn get_rules(&self, request: Request<GetRulesRequest>) -> Result<Response<RulesView>, Status> {
        let _ = self.auth.context(&request).await?;
        let rules = self.game.rules(request.get_ref().rules_version).or_status()?;
        Ok(Response::new(view::rules_view(&rules)))
    }
}

pub struct PlayerApi {
    pub auth: Arc<Authenticator>,
}

#[tonic::async_trait]
impl PlayerService for PlayerApi {
    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.auth.authenticate(&request).await.or_status()?;
        Ok(Response::new(WhoAmIResponse {
            user_id: caller.user_id.clone(),
            session_id: caller.session_id.clone(),
            roles: caller.roles.clone(),
            expires_at: caller.expires_at,
        }))
    }
}
