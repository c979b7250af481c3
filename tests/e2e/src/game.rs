//! Game steps the end-to-end tests share: players, lobbies, a greedy builder
//! that plays like a real client (from GetGameState and GetRules only), and
//! the session's recorded events.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use allies_contracts::projector::v1::game_query_service_client::GameQueryServiceClient;
use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::v1::game_service_client::GameServiceClient;
use allies_contracts::timesquare::v1::matchmaking_service_client::MatchmakingServiceClient;
use allies_contracts::timesquare::v1::*;
use allies_store::{EventStore, RedisEventStore};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::{Fleet, bearer};

/// A signed-in player.
#[derive(Debug, Clone)]
pub struct Gamer {
    pub id: String,
    pub token: String,
    pub name: String,
}

pub type Games = GameServiceClient<Channel>;
pub type Matchmaking = MatchmakingServiceClient<Channel>;

/// The delay a refusal asks for (google.rpc.RetryInfo), if any.
pub fn retry_after(status: &Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    status.get_error_details().retry_info().and_then(|r| r.retry_delay)
}

/// The rule a refusal names (google.rpc.PreconditionFailure type), if any.
pub fn rule_of(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .precondition_failure()
        .and_then(|p| p.violations.first().map(|v| v.r#type.clone()))
        .unwrap_or_default()
}

impl Fleet {
    pub async fn game(&self) -> Games {
        GameServiceClient::new(self.channel("timesquare").await)
    }

    pub async fn game_at(endpoint: &str) -> Games {
        let channel = Channel::from_shared(endpoint.to_owned()).expect("endpoint").connect().await.expect("connect");
        GameServiceClient::new(channel)
    }

    pub async fn matchmaking(&self) -> Matchmaking {
        MatchmakingServiceClient::new(self.channel("timesquare").await)
    }

    pub async fn matchmaking_at(endpoint: &str) -> Matchmaking {
        let channel = Channel::from_shared(endpoint.to_owned()).expect("endpoint").connect().await.expect("connect");
        MatchmakingServiceClient::new(channel)
    }

    pub async fn player_queries(
        &self,
    ) -> allies_contracts::projector::v1::player_query_service_client::PlayerQueryServiceClient<Channel> {
        allies_contracts::projector::v1::player_query_service_client::PlayerQueryServiceClient::new(
            self.channel("projector").await,
        )
    }

    pub async fn games(&self) -> GameQueryServiceClient<Channel> {
        GameQueryServiceClient::new(self.channel("projector").await)
    }

    /// Registers and logs in `name`.
    pub async fn gamer(&self, name: &str) -> Gamer {
        let (id, token) = self.player(name).await;
        Gamer { id, token, name: name.into() }
    }

    /// One more instance of `name` (timesquare, …) on this fleet's Redis and guardian.
    pub fn replica(&self, name: &str, extra_env: &[(&str, &str)]) -> allies_testkit::ServiceProcess {
        let url = self.redis_url();
        let guardian = self.endpoint("guardian");
        let projector = self.services.iter().find(|s| s.name == "projector").map(|p| p.endpoint()).unwrap_or_default();
        let mut env = vec![("REDIS_URL", url.as_str()), ("SHUTDOWN_GRACE_SECS", "5"), ("GUARDIAN_URL", &guardian)];
        if !projector.is_empty() {
            env.push(("PROJECTOR_URL", &projector));
        }
        env.extend(extra_env.iter().copied());
        allies_testkit::ServiceProcess::start(name, &format!("{}_LISTEN_ADDR", name.to_uppercase()), &env)
    }

    /// Every recorded event of a game session, in order.
    pub async fn game_events(&self, session_id: &str) -> Vec<(u64, GameEvent)> {
        let store = RedisEventStore::connect(&self.redis_url(), 16).await.expect("store");
        let records = store.read("game_session", session_id, 1, usize::MAX).await.expect("read the session");
        records.iter().map(|r| (r.envelope.version, r.decode::<GameEvent>().expect("a game event").payload)).collect()
    }
}

/// Creates a public lobby hosted by `host`; returns its id.
pub async fn create(games: &mut Games, host: &Gamer, map: &str, difficulty: &str, seats: u32) -> String {
    let request = CreateGameSessionRequest {
        map: map.into(),
        difficulty: difficulty.into(),
        max_players: seats,
        private: false,
        display_name: host.name.clone(),
    };
    games.create_game_session(bearer(request, &host.token)).await.expect("create").into_inner().session_id
}

pub async fn join(games: &mut Games, session: &str, who: &Gamer) -> Result<GameCommandResponse, Status> {
    let request = JoinGameSessionRequest {
        session_id: session.into(),
        invite_code: String::new(),
        display_name: who.name.clone(),
    };
    games.join_game_session(bearer(request, &who.token)).await.map(|r| r.into_inner())
}

/// Creates a lobby for `players` (the first hosts), everyone joins and is
/// ready, the host starts it; returns the session id.
pub async fn started_game(games: &mut Games, players: &[&Gamer], map: &str, difficulty: &str) -> String {
    let id = create(games, players[0], map, difficulty, players.len() as u32).await;
    for p in &players[1..] {
        join(games, &id, p).await.expect("join");
    }
    for p in players {
        let request = SetReadyRequest { session_id: id.clone(), ready: true };
        games.set_ready(bearer(request, &p.token)).await.expect("ready");
    }
    games.start_game(bearer(SessionRequest { session_id: id.clone() }, &players[0].token)).await.expect("start");
    id
}

pub async fn state(games: &mut Games, session: &str, who: &Gamer) -> GameView {
    games
        .get_game_state(bearer(SessionRequest { session_id: session.into() }, &who.token))
        .await
        .expect("state")
        .into_inner()
}

pub async fn place(
    games: &mut Games,
    session: &str,
    who: &Gamer,
    kind: &str,
    x: i32,
    y: i32,
) -> Result<TowerResponse, Status> {
    let request = PlaceTowerRequest { session_id: session.into(), tower_type: kind.into(), x, y };
    games.place_tower(bearer(request, &who.token)).await.map(|r| r.into_inner())
}

/// The free buildable cells of `player`'s zone next to the path, in the
/// order a greedy builder takes them.
pub fn cells_by_the_path(view: &GameView, user_id: &str) -> Vec<(i32, i32)> {
    let board = view.board.clone().unwrap_or_default();
    let path: BTreeSet<(i32, i32)> = board.path.iter().map(|c| (c.x, c.y)).collect();
    let blocked: BTreeSet<(i32, i32)> = board.blocked.iter().map(|c| (c.x, c.y)).collect();
    let taken: BTreeSet<(i32, i32)> = view.towers.iter().map(|t| (t.x, t.y)).collect();
    let Some(me) = view.players.iter().find(|p| p.user_id == user_id) else { return Vec::new() };
    let mut cells: Vec<(i32, i32)> = me
        .zone
        .iter()
        .flat_map(|r| (r.x0..=r.x1).flat_map(move |x| (r.y0..=r.y1).map(move |y| (x, y))))
        .filter(|c| !path.contains(c) && !blocked.contains(c) && !taken.contains(c))
        .filter(|(x, y)| path.iter().any(|(px, py)| (px - x).abs() + (py - y).abs() == 1))
        .collect();
    cells.sort_by_key(|(x, y)| (*x + *y, *x));
    cells.dedup();
    cells
}

/// Every present player spends all their gold: towers on free cells by the
/// path, then upgrades. Stops a player at the first refusal (no gold, no
/// level left). Returns the commands accepted.
pub async fn build_greedily(games: &mut Games, session: &str, players: &[&Gamer]) -> usize {
    const KINDS: [&str; 3] = ["cannon", "arrow", "frost"];
    let mut accepted = 0;
    for p in players {
        let view = state(games, session, p).await;
        let mut k = view.towers.len();
        let mut cells = cells_by_the_path(&view, &p.id).into_iter();
        let mut mine: BTreeMap<u32, u32> =
            view.towers.iter().filter(|t| t.owner == p.id).map(|t| (t.tower_id, t.level)).collect();
        loop {
            let result = match cells.next() {
                Some((x, y)) => place(games, session, p, KINDS[k % KINDS.len()], x, y).await.map(|r| (r.tower_id, 0)),
                None => {
                    let Some((&id, &level)) = mine.iter().filter(|(_, l)| **l < 2).min_by_key(|(id, l)| (**l, **id))
                    else {
                        break;
                    };
                    let request = TowerRequest { session_id: session.into(), tower_id: id };
                    games.upgrade_tower(bearer(request, &p.token)).await.map(|_| (id, level + 1))
                }
            };
            match result {
                Ok((id, level)) => {
                    mine.insert(id, level);
                    accepted += 1;
                    k += 1;
                }
                Err(s) if s.code() == Code::FailedPrecondition => break,
                // A well-behaved client waits as long as the server asks (a
                // player's command rate is limited) and goes on.
                Err(s) if s.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(retry_after(&s).unwrap_or(Duration::from_millis(100))).await;
                    continue;
                }
                Err(s) => panic!("{} could not build: {s:?}", p.name),
            }
        }
    }
    accepted
}

/// Polls the state until the phase is no longer `in_wave` (60 s).
pub async fn wave_over(games: &mut Games, session: &str, who: &Gamer) -> GameView {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = state(games, session, who).await;
        if view.phase != "in_wave" {
            return view;
        }
        assert!(Instant::now() < deadline, "wave {} did not end in 60 s", view.wave);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn start_wave(games: &mut Games, session: &str, who: &Gamer) -> Result<GameCommandResponse, Status> {
    games.start_wave(bearer(SessionRequest { session_id: session.into() }, &who.token)).await.map(|r| r.into_inner())
}

/// `host` invites each of `members` to their party and each accepts (a
/// member already in it stays).
pub async fn form_party(mm: &mut Matchmaking, host: &Gamer, members: &[&Gamer]) -> PartyView {
    for m in members {
        match mm.invite_to_party(bearer(InviteToPartyRequest { user_id: m.id.clone() }, &host.token)).await {
            Ok(_) => {}
            Err(s) if rule_of(&s) == "ALREADY_IN_PARTY" => continue,
            Err(s) => panic!("{} invites {}: {s:?}", host.name, m.name),
        }
        let r = RespondToPartyInviteRequest { host_id: host.id.clone(), accept: true };
        mm.respond_to_party_invite(bearer(r, &m.token)).await.unwrap_or_else(|s| panic!("{} accepts: {s:?}", m.name));
    }
    mm.get_party(bearer(GetPartyRequest { host_id: String::new() }, &host.token)).await.expect("the party").into_inner()
}

/// Queues `who` (with `party`, formed first) for a game of `min`..=`max` players.
pub async fn find(
    mm: &mut Matchmaking,
    who: &Gamer,
    min: u32,
    max: u32,
    party: &[&Gamer],
) -> Result<TicketView, Status> {
    if !party.is_empty() {
        form_party(mm, who, party).await;
    }
    let request = FindMatchRequest {
        maps: vec![],
        difficulty: "normal".into(),
        min_players: min,
        max_players: max,
        party: party.iter().map(|p| p.id.clone()).collect(),
    };
    mm.find_match(bearer(request, &who.token)).await.map(|r| r.into_inner())
}

/// Follows a ticket until `until` says so (or 60 s); returns every view seen.
pub async fn follow_ticket(
    mm: &mut Matchmaking,
    who: &Gamer,
    ticket: &str,
    until: impl Fn(&TicketView) -> bool,
) -> Vec<TicketView> {
    let request = WatchTicketRequest { ticket_id: ticket.into() };
    let mut stream = mm.watch_ticket(bearer(request, &who.token)).await.expect("watch the ticket").into_inner();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(v))) => {
                let done = until(&v);
                seen.push(v);
                if done {
                    break;
                }
            }
            Ok(_) => break,
            Err(_) => {} // quiet: keep waiting until the deadline
        }
    }
    seen
}
