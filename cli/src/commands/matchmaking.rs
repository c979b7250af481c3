//! `allies match …`: queueing (alone or as a party), following a ticket to
//! its game, confirming, parties and invitations.

use allies_contracts::projector::v1::GetMatchRequest;
use allies_contracts::projector::v1::player_query_service_client::PlayerQueryServiceClient;
use allies_contracts::timesquare::v1::matchmaking_service_client::MatchmakingServiceClient;
use allies_contracts::timesquare::v1::*;
use clap::Subcommand;
use tonic::transport::Channel;

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum MatchCommand {
    /// Queue for a match (with friends: --party <user id> …). --wait follows
    /// the ticket, confirms the match when found and prints the game.
    Find {
        /// Preferred maps (repeat; none: any).
        #[arg(long = "map")]
        maps: Vec<String>,
        /// The difficulty (easy, normal, hard): you meet only players who
        /// queued for the same one.
        #[arg(long, default_value = "normal")]
        difficulty: String,
        /// The smallest game you accept (2 to 4 players, you included).
        #[arg(long, default_value_t = 2)]
        min: u32,
        /// The largest game you accept (2 to 4, at least --min).
        #[arg(long, default_value_t = 4)]
        max: u32,
        /// Friends queueing with you as one ticket (usernames or user ids):
        /// members of your party (see `match invite`).
        #[arg(long = "party")]
        party: Vec<String>,
        /// Follow the ticket until it is in a game: confirms the match when
        /// one is found (each player must confirm within 20 s) and exits 1
        /// if the ticket ends any other way.
        #[arg(long)]
        wait: bool,
    },
    /// Leave the queue (a match you were in is cancelled; the others keep their place).
    Cancel { ticket_id: Option<String> },
    /// Follow your ticket: searching → matched → ready (or cancelled, expired).
    Watch {
        ticket_id: Option<String>,
        /// Confirm the match as soon as one is found.
        #[arg(long)]
        confirm: bool,
    },
    /// Confirm a match you are in.
    Confirm { match_id: String },
    /// A match (players, status, why it was cancelled) from the read model;
    /// without an id, the last one your tickets were matched into.
    Show { match_id: Option<String> },
    /// Invite a player (username or user id) to your party: they must accept
    /// (within 5 minutes) before `match find --party` can queue them.
    Invite { player: String },
    /// Accept a host's party invitation (the host's username or user id).
    Accept { host: String },
    /// Decline a host's party invitation.
    Decline { host: String },
    /// Leave a host's party; a host removes a member with --member.
    Leave {
        /// The party's host (username or user id; default: your own party).
        #[arg(long)]
        host: Option<String>,
        /// The member to remove (hosts only; default: you).
        #[arg(long)]
        member: Option<String>,
    },
    /// A party: its members and open invitations (default: your own).
    Party { host: Option<String> },
    /// Your open party invitations.
    Invites,
}

/// A user id from a username or a user id (a UUID is taken as it is).
async fn user(ctx: &Context, name_or_id: &str) -> Result<String, Failure> {
    let b = name_or_id.as_bytes();
    let uuid = b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { *c == b'-' } else { c.is_ascii_hexdigit() });
    if uuid {
        return Ok(name_or_id.to_owned());
    }
    use allies_contracts::projector::v1::GetUserByUsernameRequest;
    use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
    let mut client = ProjectorQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
    let request = GetUserByUsernameRequest { username: name_or_id.to_owned(), consistency_token: String::new() };
    let found = client.get_user_by_username(ctx.authorized(request)?).await?.into_inner().user.unwrap_or_default();
    Ok(found.user_id)
}

async fn users(ctx: &Context, names: &[String]) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for n in names {
        out.push(user(ctx, n).await?);
    }
    Ok(out)
}

/// A party for people: its host and guests by name (nothing to look up
/// with `--json`).
async fn party_lines(ctx: &Context, p: &PartyView) -> String {
    if ctx.json {
        return String::new();
    }
    let ids: Vec<String> =
        std::iter::once(p.host_id.clone()).chain(p.guests.iter().map(|g| g.user_id.clone())).collect();
    let names = ctx.names(&ids).await;
    let name = |id: &str| crate::context::named(&names, id);
    let mut out = format!("party of {} · {} guest(s)", name(&p.host_id), p.guests.len());
    for g in &p.guests {
        out.push_str(&format!("\n  {}  {}", name(&g.user_id), g.status));
        if g.status == "invited" {
            out.push_str(&format!(" (until {})", allies_core::calendar::utc_time(g.expires_at_ms)));
        }
    }
    out
}

async fn mm(ctx: &Context) -> Result<MatchmakingServiceClient<Channel>, Failure> {
    Ok(MatchmakingServiceClient::new(ctx.channel(&ctx.timesquare).await?))
}

fn ticket_line(t: &TicketView) -> String {
    let mut line =
        format!("ticket {} · {} · {} player(s), rating {}", t.ticket_id, t.status, t.players.len(), t.rating);
    if !t.match_id.is_empty() {
        line.push_str(&format!(" · match {}", t.match_id));
    }
    if !t.session_id.is_empty() {
        line.push_str(&format!(" · game {}", t.session_id));
    }
    if !t.reason.is_empty() {
        line.push_str(&format!(" · {}", t.reason));
    }
    line
}

/// A followed ticket that ended without a game: the command fails (exit 1).
fn not_in_a_game(t: &TicketView) -> Failure {
    let why = if t.reason.is_empty() { String::new() } else { format!(" ({})", t.reason) };
    Failure::local(format!("ticket {} ended {} without a game{why}", t.ticket_id, t.status))
}

/// Follows a ticket to a final status, confirming a match when asked.
async fn follow(ctx: &Context, ticket_id: &str, confirm: bool) -> Result<TicketView, Failure> {
    let mut stream_client = MatchmakingServiceClient::new(ctx.stream_channel(&ctx.timesquare).await?);
    let request = WatchTicketRequest { ticket_id: ticket_id.to_owned() };
    let mut stream = stream_client.watch_ticket(ctx.authorized(request)?).await?.into_inner();
    let mut confirmed = String::new();
    let mut last = TicketView::default();
    while let Some(t) = stream.message().await? {
        if ctx.json {
            crate::output::json_line(&t);
        } else {
            println!("{}", ticket_line(&t));
        }
        if confirm && t.status == "matched" && t.match_id != confirmed {
            let request = ConfirmMatchRequest { match_id: t.match_id.clone() };
            match mm(ctx).await?.confirm_match(ctx.authorized(request)?).await {
                Ok(m) if !ctx.json => println!("  confirmed match {} ({})", t.match_id, m.into_inner().status),
                Ok(_) => {}
                Err(s) if !ctx.json => println!("  cannot confirm: {}", s.message()),
                Err(_) => {}
            }
            confirmed = t.match_id.clone();
        }
        ctx.remember_match(&t.match_id);
        last = t;
    }
    Ok(last)
}

pub async fn run_match(command: &MatchCommand, ctx: &Context) -> Result<(), Failure> {
    let json = ctx.json;
    match command {
        MatchCommand::Find { maps, difficulty, min, max, party, wait } => {
            let request = FindMatchRequest {
                maps: maps.clone(),
                difficulty: difficulty.clone(),
                min_players: *min,
                max_players: *max,
                party: users(ctx, party).await?,
            };
            let t = mm(ctx).await?.find_match(ctx.authorized(request)?).await?.into_inner();
            if *wait {
                if !json {
                    println!("queued: {}", ticket_line(&t));
                }
                let last = follow(ctx, &t.ticket_id, true).await?;
                if last.status != "ready" {
                    return Err(not_in_a_game(&last));
                }
                if !json {
                    println!("your game: {} (allies game join is not needed: you are in it)", last.session_id);
                }
                ctx.remember_game(&last.session_id);
            } else {
                print(json, &t, || format!("queued: {}\n  follow it: allies match watch --confirm", ticket_line(&t)));
            }
        }
        MatchCommand::Cancel { ticket_id } => {
            let request = CancelMatchmakingRequest { ticket_id: ticket_id.clone().unwrap_or_default() };
            let t = mm(ctx).await?.cancel_matchmaking(ctx.authorized(request)?).await?.into_inner();
            print(json, &t, || ticket_line(&t));
        }
        MatchCommand::Watch { ticket_id, confirm } => {
            let last = follow(ctx, ticket_id.as_deref().unwrap_or_default(), *confirm).await?;
            if last.status == "ready" {
                ctx.remember_game(&last.session_id);
            } else if *confirm {
                return Err(not_in_a_game(&last));
            }
        }
        MatchCommand::Confirm { match_id } => {
            let request = ConfirmMatchRequest { match_id: match_id.clone() };
            let m = mm(ctx).await?.confirm_match(ctx.authorized(request)?).await?.into_inner();
            ctx.remember_match(&m.match_id);
            print(json, &m, || {
                let confirmed = m.players.iter().filter(|p| p.confirmed).count();
                format!("match {} · {} · {confirmed}/{} confirmed", m.match_id, m.status, m.players.len())
            });
        }
        MatchCommand::Invite { player } => {
            let request = InviteToPartyRequest { user_id: user(ctx, player).await? };
            let p = mm(ctx).await?.invite_to_party(ctx.authorized(request)?).await?.into_inner();
            let lines = party_lines(ctx, &p).await;
            print(json, &p, || {
                format!("invited {player}; they answer with: allies match accept <your username>\n{lines}")
            });
        }
        MatchCommand::Accept { host } | MatchCommand::Decline { host } => {
            let accept = matches!(command, MatchCommand::Accept { .. });
            let request = RespondToPartyInviteRequest { host_id: user(ctx, host).await?, accept };
            let p = mm(ctx).await?.respond_to_party_invite(ctx.authorized(request)?).await?.into_inner();
            let lines = party_lines(ctx, &p).await;
            print(json, &p, || {
                format!("{} the invitation of {host}\n{}", if accept { "accepted" } else { "declined" }, lines)
            });
        }
        MatchCommand::Leave { host, member } => {
            let host_id = match host {
                Some(h) => user(ctx, h).await?,
                None => String::new(),
            };
            let user_id = match member {
                Some(m) => user(ctx, m).await?,
                None => String::new(),
            };
            let p =
                mm(ctx).await?.leave_party(ctx.authorized(LeavePartyRequest { host_id, user_id })?).await?.into_inner();
            let lines = party_lines(ctx, &p).await;
            print(json, &p, || format!("left\n{lines}"));
        }
        MatchCommand::Party { host } => {
            let host_id = match host {
                Some(h) => user(ctx, h).await?,
                None => String::new(),
            };
            let p = mm(ctx).await?.get_party(ctx.authorized(GetPartyRequest { host_id })?).await?.into_inner();
            let lines = party_lines(ctx, &p).await;
            print(json, &p, || lines);
        }
        MatchCommand::Invites => {
            let r = mm(ctx).await?.list_party_invites(ctx.authorized(ListPartyInvitesRequest {})?).await?.into_inner();
            let hosts: Vec<String> = r.invites.iter().map(|i| i.host_id.clone()).collect();
            let names = if json { Default::default() } else { ctx.names(&hosts).await };
            print(json, &r, || {
                if r.invites.is_empty() {
                    return "no open invitations".to_owned();
                }
                r.invites
                    .iter()
                    .map(|i| {
                        format!(
                            "{host} invites you (until {}): allies match accept {host}",
                            allies_core::calendar::utc_time(i.expires_at_ms),
                            host = crate::context::named(&names, &i.host_id),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        MatchCommand::Show { match_id } => {
            let mut client = PlayerQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = GetMatchRequest { match_id: ctx.match_id(match_id)?, consistency_token: String::new() };
            let m = client.get_match(ctx.authorized(request)?).await?.into_inner().r#match.unwrap_or_default();
            let ids: Vec<String> = m.players.iter().map(|p| p.user_id.clone()).chain(m.culprits.clone()).collect();
            let names = if json { Default::default() } else { ctx.names(&ids).await };
            let name = |id: &str| crate::context::named(&names, id);
            print(json, &m, || {
                let mut out = format!(
                    "match {} · {} · {} on {} · rating window {} (spread {})",
                    m.match_id, m.status, m.difficulty, m.map, m.window, m.spread
                );
                if !m.session_id.is_empty() {
                    out.push_str(&format!("\n  game: {}", m.session_id));
                }
                for p in &m.players {
                    out.push_str(&format!(
                        "\n  {}  rating {}  joined {}  confirmed {}",
                        name(&p.user_id),
                        p.rating,
                        p.joined,
                        p.confirmed
                    ));
                }
                if !m.reason.is_empty() {
                    let culprits: Vec<String> = m.culprits.iter().map(|c| name(c)).collect();
                    out.push_str(&format!("\n  cancelled: {} (at fault: {})", m.reason, culprits.join(", ")));
                }
                for c in &m.compensation {
                    out.push_str(&format!("\n  compensation: {c}"));
                }
                out
            });
        }
    }
    Ok(())
}
