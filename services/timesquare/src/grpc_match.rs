//! The thin gRPC layer of matchmaking.

use std::pin::Pin;
use std::sync::Arc;

use allies_contracts::timesquare::v1::matchmaking_service_server::MatchmakingService;
use allies_contracts::timesquare::v1::*;
use allies_platform::OrStatus;
use allies_platform::auth::Authenticator;
use timesquare_domain::matching::Match;
use timesquare_domain::party::{Party, Seat};
use timesquare_domain::player::Player;
use timesquare_domain::ticket::Ticket;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::matchmaking::{Matchmaking, Wanted};
use crate::ticket_watch::TicketWatch;

pub struct MatchApi {
    /// A retried command answers its first reply.
    pub replies: Arc<allies_platform::Replies>,
    /// Each player's command rate.
    pub rate: Arc<allies_platform::rate::PlayerRates>,
    pub mm: Arc<Matchmaking>,
    pub watch: Arc<TicketWatch>,
    pub auth: Arc<Authenticator>,
    /// Turns true when the service starts shutting down: open streams end
    /// with UNAVAILABLE so their clients resume on another replica.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

pub fn ticket_view(t: &Ticket, version: u64) -> TicketView {
    TicketView {
        ticket_id: t.id.clone(),
        status: t.status.as_str().into(),
        owner: t.owner.clone(),
        players: t.user_ids(),
        maps: t.maps.clone(),
        difficulty: t.difficulty.clone(),
        min_players: t.min_players,
        max_players: t.max_players,
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
        match_id: t.match_id.clone(),
        session_id: t.session_id.clone(),
        reason: t.reason.clone(),
        version,
        rating: t.rating(),
    }
}

pub fn match_view(m: &Match, version: u64) -> MatchView {
    MatchView {
        match_id: m.id.clone(),
        status: m.status.as_str().into(),
        players: m
            .members
            .iter()
            .map(|p| MatchPlayerView {
                user_id: p.user_id.clone(),
                rating: p.rating,
                ticket_id: p.ticket_id.clone(),
                joined: p.joined,
                confirmed: p.confirmed,
            })
            .collect(),
        session_id: m.session_id.clone(),
        map: m.map.clone(),
        difficulty: m.difficulty.clone(),
        deadline_ms: m.deadline_ms,
        reason: m.reason.clone(),
        culprits: m.culprits.clone(),
        window: m.window,
        spread: m.spread,
        version,
    }
}

fn player_view(p: &Player, version: u64, now_ms: i64) -> PlayerStateView {
    PlayerStateView {
        user_id: p.user_id.clone(),
        username: p.username.clone(),
        display_name: p.display_name.clone(),
        rating: p.rating,
        games_played: p.games_played,
        wins: p.wins,
        locked: p.is_locked_at(now_ms),
        ticket_id: p.ticket.clone().unwrap_or_default(),
        match_id: p.match_id.clone().unwrap_or_default(),
        session_id: p.session.clone().unwrap_or_default(),
        version,
    }
}

type Tickets = Pin<Box<dyn Stream<Item = Result<TicketView, Status>> + Send>>;

#[tonic::async_trait]
impl MatchmakingService for MatchApi {
    async fn find_match(&self, request: Request<FindMatchRequest>) -> Result<Response<TicketView>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let r = request.into_inner();
                let wanted = Wanted {
                    maps: r.maps,
                    difficulty: r.difficulty,
                    min_players: r.min_players,
                    max_players: r.max_players,
                    party: r.party,
                };
                let done = self.mm.find(&ctx, &wanted).await.or_status()?;
                Ok(Response::new(ticket_view(&done.state, done.version)))
            })
            .await
    }

    async fn cancel_matchmaking(
        &self,
        request: Request<CancelMatchmakingRequest>,
    ) -> Result<Response<TicketView>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let done = self.mm.cancel(&ctx, &request.get_ref().ticket_id).await.or_status()?;
                Ok(Response::new(ticket_view(&done.state, done.version)))
            })
            .await
    }

    type WatchTicketStream = Tickets;

    async fn watch_ticket(&self, request: Request<WatchTicketRequest>) -> Result<Response<Tickets>, Status> {
        let ctx = self.auth.context(&request).await?;
        let caller = ctx.caller().or_status()?.clone();
        let id = self.mm.ticket_id_of(&ctx, &request.get_ref().ticket_id).await.or_status()?;
        let mut changes = self.watch.subscribe(&id).await.or_status()?;
        let (t, v) = match self.mm.ticket(&caller, &id).await {
            Ok(t) => t,
            Err(e) => {
                self.watch.forget(&id);
                return Err(e).or_status();
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (mm, watch) = (self.mm.clone(), self.watch.clone());
        tokio::spawn(async move {
            let mut last = v;
            let mut current = (t, v);
            loop {
                if tx.send(Ok(ticket_view(&current.0, current.1))).await.is_err() {
                    break;
                }
                if current.0.status.is_final() {
                    break;
                }
                loop {
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { break },
                        _ = tx.closed() => break,
                        // A missed wake-up (a replica restart) costs at most this.
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    }
                    match mm.tickets.get(&id).current().await {
                        Ok((t, v)) if v != last => {
                            last = v;
                            current = (t, v);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Err(tonic::Status::unavailable(e.to_string()))).await;
                            watch.forget(&id);
                            return;
                        }
                    }
                    if tx.is_closed() {
                        break;
                    }
                }
                if tx.is_closed() {
                    break;
                }
            }
            watch.forget(&id);
        });
        let tickets = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(allies_platform::drain::until_stopping(tickets, self.stopping.clone())))
    }

    async fn get_ticket(&self, request: Request<GetTicketRequest>) -> Result<Response<TicketView>, Status> {
        let ctx = self.auth.context(&request).await?;
        let (t, v) = self.mm.ticket(ctx.caller().or_status()?, &request.get_ref().ticket_id).await.or_status()?;
        Ok(Response::new(ticket_view(&t, v)))
    }

    async fn confirm_match(&self, request: Request<ConfirmMatchRequest>) -> Result<Response<MatchView>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let done = self.mm.confirm(&ctx, &request.get_ref().match_id).await.or_status()?;
                Ok(Response::new(match_view(&done.state, done.version)))
            })
            .await
    }

    async fn get_match_state(&self, request: Request<GetMatchStateRequest>) -> Result<Response<MatchView>, Status> {
        let ctx = self.auth.context(&request).await?;
        let (m, v) = self.mm.match_state(ctx.caller().or_status()?, &request.get_ref().match_id).await.or_status()?;
        Ok(Response::new(match_view(&m, v)))
    }

    async fn get_player_state(
        &self,
        request: Request<GetPlayerStateRequest>,
    ) -> Result<Response<PlayerStateView>, Status> {
        let ctx = self.auth.context(&request).await?;
        let caller = ctx.caller().or_status()?.clone();
        let user = request.get_ref().user_id.clone();
        let user = if user.is_empty() { caller.user_id.clone() } else { user };
        caller.require_self_or_admin(&user).or_status()?;
        let (p, v) = if user == caller.user_id {
            let p = self.mm.players.ensure(&user, &ctx).await.or_status()?;
            self.mm.players.get(&user).await.map(|(_, v)| (p, v)).or_status()?
        } else {
            self.mm.players.get(&user).await.or_status()?
        };
        if !p.exists() {
            return Err(Status::not_found(format!("no player {user}")));
        }
        Ok(Response::new(player_view(&p, v, ctx.now_ms)))
    }

    async fn invite_to_party(&self, request: Request<InviteToPartyRequest>) -> Result<Response<PartyView>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let done = self.mm.invite(&ctx, &request.get_ref().user_id).await.or_status()?;
                Ok(Response::new(party_view(&done.state, done.version, ctx.now_ms)))
            })
            .await
    }

    async fn respond_to_party_invite(
        &self,
        request: Request<RespondToPartyInviteRequest>,
    ) -> Result<Response<PartyView>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let r = request.get_ref();
                let done = self.mm.respond(&ctx, &r.host_id, r.accept).await.or_status()?;
                Ok(Response::new(party_view(&done.state, done.version, ctx.now_ms)))
            })
            .await
    }

    async fn leave_party(&self, request: Request<LeavePartyRequest>) -> Result<Response<PartyView>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.rate.check(&ctx.caller().or_status()?.user_id).or_status()?;
        self.replies
            .once(&ctx, async {
                let r = request.get_ref();
                let done = self.mm.leave_party(&ctx, &r.host_id, &r.user_id).await.or_status()?;
                Ok(Response::new(party_view(&done.state, done.version, ctx.now_ms)))
            })
            .await
    }

    async fn get_party(&self, request: Request<GetPartyRequest>) -> Result<Response<PartyView>, Status> {
        let ctx = self.auth.context(&request).await?;
        let caller = ctx.caller().or_status()?;
        let (p, v) = self.mm.party(caller, &request.get_ref().host_id).await.or_status()?;
        let mut view = party_view(&p, v, ctx.now_ms);
        if view.host_id.is_empty() {
            view.host_id = if request.get_ref().host_id.is_empty() {
                caller.user_id.clone()
            } else {
                request.get_ref().host_id.clone()
            };
        }
        Ok(Response::new(view))
    }

    async fn list_party_invites(
        &self,
        request: Request<ListPartyInvitesRequest>,
    ) -> Result<Response<ListPartyInvitesResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        let invites = self.mm.invites(ctx.caller().or_status()?).await.or_status()?;
        Ok(Response::new(ListPartyInvitesResponse {
            invites: invites
                .into_iter()
                .map(|(host_id, expires_at_ms)| PartyInviteView { host_id, expires_at_ms })
                .collect(),
        }))
    }
}

/// A party as its host, members and invited players see it at `now_ms`:
/// members and open invitations.
pub fn party_view(p: &Party, version: u64, now_ms: i64) -> PartyView {
    PartyView {
        host_id: p.host.clone(),
        guests: p
            .guests
            .iter()
            .filter_map(|(user, seat)| match seat {
                Seat::Member => {
                    Some(PartyGuestView { user_id: user.clone(), status: "member".into(), expires_at_ms: 0 })
                }
                Seat::Invited { until_ms } if *until_ms > now_ms => {
                    Some(PartyGuestView { user_id: user.clone(), status: "invited".into(), expires_at_ms: *until_ms })
                }
                Seat::Invited { .. } => None,
            })
            .collect(),
        version,
    }
}
