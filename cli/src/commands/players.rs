//! `allies player …` and `allies leaderboard`: profiles and boards (the
//! projector's PlayerQueryService).

use allies_contracts::projector::v1::player_query_service_client::PlayerQueryServiceClient;
use allies_contracts::projector::v1::{GetLeaderboardRequest, GetPlayerRequest};
use clap::{Args, Subcommand};

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum PlayerCommand {
    /// A player's profile: rating and rank, games, wins, best waves, recent games (default: you).
    Show { user_id: Option<String> },
}

#[derive(Args)]
pub struct Leaderboard {
    /// rating, wave or weekly
    #[arg(long, default_value = "rating")]
    board: String,
    /// wave: the map and difficulty.
    #[arg(long, default_value = "")]
    map: String,
    #[arg(long, default_value = "")]
    difficulty: String,
    /// weekly: an ISO week (default: this week), e.g. 2026-W47.
    #[arg(long, default_value = "")]
    week: String,
    #[arg(long, default_value_t = 10)]
    limit: u32,
    /// The page around a player ("me" for you) instead of the top.
    #[arg(long)]
    around: Option<String>,
}

pub async fn run_player(command: &PlayerCommand, ctx: &Context) -> Result<(), Failure> {
    let PlayerCommand::Show { user_id } = command;
    let user_id = match user_id {
        Some(u) => u.clone(),
        None => ctx.load_saved()?.user_id,
    };
    let mut client = PlayerQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
    let request = GetPlayerRequest { user_id, consistency_token: String::new() };
    let p = client.get_player(ctx.authorized(request)?).await?.into_inner().player.unwrap_or_default();
    print(ctx.json, &p, || {
        let rank = match p.rating_rank {
            0 => "unranked until a first game".to_owned(),
            r => format!("#{r} on the board"),
        };
        let mut out = format!(
            "{} ({})\n  rating:   {} ({rank})\n  games:    {} played, {} won",
            p.display_name, p.username, p.rating, p.games_played, p.wins
        );
        if !p.week.is_empty() {
            out.push_str(&format!("\n  week:     {} score {}", p.week, p.week_score));
        }
        for b in p.best.iter().filter(|b| b.waves > 0) {
            out.push_str(&format!("\n  best:     {} waves on {} ({})", b.waves, b.map, b.difficulty));
        }
        let now: Vec<String> = [("ticket", &p.ticket_id), ("match", &p.match_id), ("game", &p.session_id)]
            .iter()
            .filter(|(_, id)| !id.is_empty())
            .map(|(what, id)| format!("{what} {id}"))
            .collect();
        if !now.is_empty() {
            out.push_str(&format!("\n  now:      {}", now.join(", ")));
        }
        for g in &p.recent_games {
            out.push_str(&format!(
                "\n  game {} {} {} {} score {}",
                g.session_id, g.map, g.difficulty, g.outcome, g.score
            ));
        }
        out
    });
    Ok(())
}

pub async fn run_leaderboard(l: &Leaderboard, ctx: &Context) -> Result<(), Failure> {
    match l.board.as_str() {
        "wave" if l.map.is_empty() || l.difficulty.is_empty() => {
            return Err(Failure::local("--board wave needs --map and --difficulty (see `allies game rules`)"));
        }
        "rating" | "wave" | "weekly" => {}
        other => return Err(Failure::local(format!("--board is rating, wave or weekly, not '{other}'"))),
    }
    let around = match l.around.as_deref() {
        Some("me") => ctx.load_saved()?.user_id,
        Some(other) => other.to_owned(),
        None => String::new(),
    };
    let mut client = PlayerQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
    let request = GetLeaderboardRequest {
        board: l.board.clone(),
        map: l.map.clone(),
        difficulty: l.difficulty.clone(),
        week: l.week.clone(),
        limit: l.limit,
        around_user_id: around.clone(),
    };
    let r = client.get_leaderboard(ctx.authorized(request)?).await?.into_inner();
    print(ctx.json, &r, || {
        let mut lines = vec![format!("{} ({} players)", r.board, r.total)];
        for e in &r.entries {
            let me = if e.user_id == around { "  ←" } else { "" };
            lines.push(format!("{:>5}. {:<24} {:>8}{me}", e.rank, e.display_name, e.value));
        }
        if r.entries.is_empty() {
            lines.push("  (empty)".into());
        }
        lines.join("\n")
    });
    Ok(())
}
