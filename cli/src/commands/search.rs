//! `allies search players|games`: the projector's SearchService — names by
//! prefix and with a typo, facet counts, filters, pages.

use allies_contracts::projector::v1::search_service_client::SearchServiceClient;
use allies_contracts::projector::v1::{Facet, SearchGamesRequest, SearchPlayersRequest};
use clap::Subcommand;

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum SearchCommand {
    /// Players by username or display name ("ali" finds alice; one typo is forgiven).
    Players {
        /// Words of the name (none: every player).
        query: Option<String>,
        /// A rating band, e.g. 1400-1599.
        #[arg(long, default_value = "")]
        rating: String,
        /// The map they play most.
        #[arg(long, default_value = "")]
        favourite_map: String,
        /// Games played: 0, 1-9, 10-49, 50-99, 100+.
        #[arg(long, default_value = "")]
        games: String,
        /// relevance or rating.
        #[arg(long, default_value = "")]
        sort: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// From the previous answer's "next page".
        #[arg(long, default_value = "")]
        page: String,
    },
    /// Games by a player's name, map, difficulty, outcome, status, dates and waves.
    Games {
        /// A player's name (none: every game you may see).
        query: Option<String>,
        #[arg(long, default_value = "")]
        map: String,
        #[arg(long, default_value = "")]
        difficulty: String,
        /// victory, defeat, forfeit, terminated or abandoned.
        #[arg(long, default_value = "")]
        outcome: String,
        /// lobby, active (to spectate) or ended.
        #[arg(long, default_value = "")]
        status: String,
        /// Created at or after (Unix ms).
        #[arg(long, default_value_t = 0)]
        from_ms: i64,
        /// Created at or before (Unix ms).
        #[arg(long, default_value_t = 0)]
        to_ms: i64,
        /// Waves cleared at least.
        #[arg(long, default_value_t = 0)]
        min_waves: u32,
        /// newest, relevance, score or waves.
        #[arg(long, default_value = "")]
        sort: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[arg(long, default_value = "")]
        page: String,
    },
}

/// The facet counts and the next page's option, under the hits.
fn footer(mut lines: Vec<String>, facets: &[Facet], next_page: &str) -> String {
    for f in facets.iter().filter(|f| !f.counts.is_empty()) {
        let counts: Vec<String> = f.counts.iter().map(|c| format!("{} {}", c.value, c.count)).collect();
        lines.push(format!("  {}: {}", f.name, counts.join(", ")));
    }
    if !next_page.is_empty() {
        lines.push(format!("  next page: --page {next_page}"));
    }
    lines.join("\n")
}

pub async fn run(command: &SearchCommand, ctx: &Context) -> Result<(), Failure> {
    let mut client = SearchServiceClient::new(ctx.channel(&ctx.projector).await?);
    match command {
        SearchCommand::Players { query, rating, favourite_map, games, sort, limit, page } => {
            let request = SearchPlayersRequest {
                query: query.clone().unwrap_or_default(),
                rating_band: rating.clone(),
                favourite_map: favourite_map.clone(),
                games_band: games.clone(),
                sort_by: sort.clone(),
                page_size: *limit,
                page_token: page.clone(),
            };
            let r = client.search_players(ctx.authorized(request)?).await?.into_inner();
            print(ctx.json, &r, || {
                let mut lines = vec![format!("{} player(s)", r.total)];
                for p in &r.players {
                    let fav = if p.favourite_map.is_empty() {
                        String::new()
                    } else {
                        format!(", mostly {}", p.favourite_map)
                    };
                    lines.push(format!(
                        "  {:<20} {:<20} rating {:>5}  {} game(s){fav}  {}",
                        p.username, p.display_name, p.rating, p.games_played, p.user_id
                    ));
                }
                footer(lines, &r.facets, &r.next_page_token)
            });
        }
        SearchCommand::Games {
            query,
            map,
            difficulty,
            outcome,
            status,
            from_ms,
            to_ms,
            min_waves,
            sort,
            limit,
            page,
        } => {
            let request = SearchGamesRequest {
                query: query.clone().unwrap_or_default(),
                map: map.clone(),
                difficulty: difficulty.clone(),
                outcome: outcome.clone(),
                status: status.clone(),
                created_from_ms: *from_ms,
                created_to_ms: *to_ms,
                min_waves: *min_waves,
                max_waves: 0,
                sort_by: sort.clone(),
                page_size: *limit,
                page_token: page.clone(),
            };
            let r = client.search_games(ctx.authorized(request)?).await?.into_inner();
            print(ctx.json, &r, || {
                let mut lines = vec![format!("{} game(s)", r.total)];
                for g in &r.games {
                    let how = if g.outcome.is_empty() { g.status.clone() } else { g.outcome.clone() };
                    lines.push(format!(
                        "  {} {} {} {how} · {} wave(s) · score {} · {}",
                        g.session_id,
                        g.map,
                        g.difficulty,
                        g.waves_cleared,
                        g.score,
                        g.players.join(", ")
                    ));
                }
                footer(lines, &r.facets, &r.next_page_token)
            });
        }
    }
    Ok(())
}
