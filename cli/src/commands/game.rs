//! `allies game …`: lobbies, towers, waves, the live board, replays.
//!
//! `create` and `join` remember the session as the profile's current game;
//! the other commands act on it unless `--game` names another.

use std::io::IsTerminal;
use std::time::Duration;

use allies_contracts::projector::v1::game_query_service_client::GameQueryServiceClient;
use allies_contracts::projector::v1::{
    GameDetails, GameSummary, GetGameSessionRequest, ListActiveGamesRequest, ListOpenLobbiesRequest,
    ListPlayerGamesRequest,
};
use allies_contracts::timesquare::v1::game_service_client::GameServiceClient;
use allies_contracts::timesquare::v1::game_update::Update;
use allies_contracts::timesquare::v1::*;
use clap::{Args, Subcommand};
use tonic::Code;
use tonic::transport::Channel;

use super::board::Board;
use super::keys::{Action, Controls, Key, RawInput};
use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Args)]
pub struct GameArgs {
    /// The game session (default: the one you last created or joined).
    #[arg(long, global = true)]
    game: Option<String>,
    #[command(subcommand)]
    command: GameCommand,
}

#[derive(Subcommand)]
pub enum GameCommand {
    /// Open a lobby: you host it and join it. A private one prints its invite code.
    Create {
        #[arg(long, default_value = "meadow")]
        map: String,
        /// easy, normal or hard
        #[arg(long, default_value = "normal")]
        difficulty: String,
        /// Seats, 1 to 4.
        #[arg(long, default_value_t = 1)]
        players: u32,
        #[arg(long)]
        private: bool,
        /// The name others see (default: your username).
        #[arg(long)]
        name: Option<String>,
    },
    /// Join a lobby (a private one needs its invite code).
    Join {
        session_id: String,
        #[arg(long)]
        code: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Leave the game (your towers stay on the board once it started).
    Leave,
    /// Say you are ready (or, with --not, that you are not).
    Ready {
        #[arg(long)]
        not: bool,
    },
    /// Start the game (the host, once everyone is ready).
    Start,
    /// Build a tower on a free buildable cell of your zone.
    Place { tower_type: String, x: i32, y: i32 },
    /// Upgrade one of your towers.
    Upgrade { tower_id: u32 },
    /// Sell one of your towers (part of its price back).
    Sell { tower_id: u32 },
    /// Start the next wave; --wait prints its outcome when it ends.
    Wave {
        #[arg(long)]
        wait: bool,
    },
    /// Forfeit (the host) or terminate (an admin).
    End {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The session from the read model (projector); --live: the authoritative
    /// state from timesquare, drawn as a board.
    Show {
        #[arg(long)]
        live: bool,
        /// Read-your-writes: the consistency token a command printed.
        #[arg(long)]
        after: Option<String>,
    },
    /// Open public lobbies: filters, sorting, pages.
    Lobbies {
        #[arg(long)]
        map: Option<String>,
        #[arg(long)]
        difficulty: Option<String>,
        /// At least this many free seats.
        #[arg(long, default_value_t = 1)]
        free: u32,
        /// created_at (newest first) or free_slots
        #[arg(long, default_value = "created_at")]
        sort: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        page: Option<String>,
    },
    /// Games being played (public ones; every one for admins).
    Active {
        #[arg(long)]
        map: Option<String>,
        #[arg(long)]
        difficulty: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        page: Option<String>,
    },
    /// A player's games, newest first (default: yours).
    History {
        user_id: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        page: Option<String>,
    },
    /// Draw the board and follow it live until the game ends (Ctrl-C stops).
    Watch {
        /// Resume after this version (no snapshot first).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Draw the current board once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Re-run the session from its events and check every wave (admins).
    Verify,
    /// The rules: maps, towers, enemies, difficulties.
    Rules {
        /// A rules version (default: the current one).
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
}

fn answer(json: bool, r: &GameCommandResponse, what: &str) {
    print(json, r, || {
        format!("{what} · {} · version {} · token {}", r.phase, r.version, r.consistency_token)
            + &if r.events.is_empty() { String::new() } else { format!("\n  events: {}", r.events.join(", ")) }
    });
}

fn tower_answer(json: bool, r: &TowerResponse, what: &str) {
    print(json, r, || {
        let tick = if r.tick > 0 { format!(" at tick {}", r.tick) } else { String::new() };
        format!("{what} tower {}{tick} · your gold {} · version {}", r.tower_id, r.gold, r.version)
    });
}

fn summary_line(g: &GameSummary) -> String {
    let status = if g.outcome.is_empty() || g.outcome == g.status {
        g.status.clone()
    } else {
        format!("{} ({})", g.status, g.outcome)
    };
    let mut line = format!(
        "{}  {:<8} {:<7} {}/{} players  wave {}/{}  score {:<6} {status}  host {}",
        g.session_id, g.map, g.difficulty, g.players, g.max_players, g.wave, g.total_waves, g.score, g.host_name
    );
    if let Some(p) = &g.player {
        line.push_str(&format!("  · you: {} kills, {} towers", p.kills, p.towers_built));
    }
    line
}

fn list(json: bool, games: &[GameSummary], next: &str, empty: &str) {
    print(json, &serde_json::json!({ "games": games, "nextPageToken": next }), || {
        let mut lines: Vec<String> = games.iter().map(summary_line).collect();
        if lines.is_empty() {
            lines.push(empty.into());
        }
        if !next.is_empty() {
            lines.push(format!("more: --page {next}"));
        }
        lines.join("\n")
    });
}

fn details(d: &GameDetails) -> String {
    let s = d.summary.clone().unwrap_or_default();
    let mut out = format!(
        "{}\n  status:   {}{}\n  map:      {} ({}), rules v{}\n  lives:    {}   wave {} of {}, {} cleared{}\n  score:    {}\n  version:  {}\n  players:",
        s.session_id,
        s.status,
        if s.outcome.is_empty() { String::new() } else { format!(" — {}", s.outcome) },
        s.map,
        s.difficulty,
        d.rules_version,
        s.lives,
        s.wave,
        s.total_waves,
        s.waves_cleared,
        if d.last_wave_outcome.is_empty() { String::new() } else { format!(" (last: {})", d.last_wave_outcome) },
        s.score,
        s.version,
    );
    for p in &d.players {
        let seat = if p.seat < 0 { "lobby".to_owned() } else { format!("zone {}", p.seat + 1) };
        out.push_str(&format!(
            "\n    {:<20} {seat:<7} gold {:>5}{}{}{}",
            p.display_name,
            p.gold,
            if p.user_id == s.host_id { "  host" } else { "" },
            if p.ready && s.status == "lobby" { "  ready" } else { "" },
            if p.present { "" } else { "  (left)" },
        ));
    }
    out.push_str(&format!("\n  towers:   {}", d.towers.len()));
    for t in &d.towers {
        out.push_str(&format!(
            "\n    #{:<4} {:<7} level {}  at ({}, {})",
            t.tower_id,
            t.tower_type,
            t.level + 1,
            t.x,
            t.y
        ));
    }
    out
}

/// `--name`, else the username of the saved login.
fn display_name(ctx: &Context, given: &Option<String>) -> String {
    given.clone().or_else(|| ctx.load_saved().ok().map(|s| s.username)).unwrap_or_default()
}

async fn game_client(ctx: &Context) -> Result<GameServiceClient<Channel>, Failure> {
    Ok(GameServiceClient::new(ctx.channel(&ctx.timesquare).await?))
}

pub async fn run(args: &GameArgs, ctx: &Context) -> Result<(), Failure> {
    let json = ctx.json;
    let game = || ctx.game(&args.game);
    match &args.command {
        GameCommand::Create { map, difficulty, players, private, name } => {
            let request = CreateGameSessionRequest {
                map: map.clone(),
                difficulty: difficulty.clone(),
                max_players: *players,
                private: *private,
                display_name: display_name(ctx, name),
            };
            let r = game_client(ctx).await?.create_game_session(ctx.authorized(request)?).await?.into_inner();
            ctx.remember_game(&r.session_id);
            print(json, &r, || {
                let code = if r.invite_code.is_empty() {
                    String::new()
                } else {
                    format!("\n  invite code: {}", r.invite_code)
                };
                format!(
                    "created game {} ({difficulty} on {map}, {players} seat(s), rules v{}){code}\n  it is now your current game",
                    r.session_id, r.rules_version
                )
            });
        }
        GameCommand::Join { session_id, code, name } => {
            let request = JoinGameSessionRequest {
                session_id: session_id.clone(),
                invite_code: code.clone().unwrap_or_default(),
                display_name: display_name(ctx, name),
            };
            let r = game_client(ctx).await?.join_game_session(ctx.authorized(request)?).await?.into_inner();
            ctx.remember_game(session_id);
            answer(json, &r, &format!("joined {session_id}"));
        }
        GameCommand::Leave => {
            let request = SessionRequest { session_id: game()? };
            let r = game_client(ctx).await?.leave_game_session(ctx.authorized(request)?).await?.into_inner();
            answer(json, &r, "left");
        }
        GameCommand::Ready { not } => {
            let request = SetReadyRequest { session_id: game()?, ready: !not };
            let r = game_client(ctx).await?.set_ready(ctx.authorized(request)?).await?.into_inner();
            answer(json, &r, if *not { "not ready" } else { "ready" });
        }
        GameCommand::Start => {
            let request = SessionRequest { session_id: game()? };
            let r = game_client(ctx).await?.start_game(ctx.authorized(request)?).await?.into_inner();
            answer(json, &r, "started");
        }
        GameCommand::Place { tower_type, x, y } => {
            let request = PlaceTowerRequest { session_id: game()?, tower_type: tower_type.clone(), x: *x, y: *y };
            let r = game_client(ctx).await?.place_tower(ctx.authorized(request)?).await?.into_inner();
            tower_answer(json, &r, &format!("placed {tower_type} at ({x}, {y}):"));
        }
        GameCommand::Upgrade { tower_id } => {
            let request = TowerRequest { session_id: game()?, tower_id: *tower_id };
            let r = game_client(ctx).await?.upgrade_tower(ctx.authorized(request)?).await?.into_inner();
            tower_answer(json, &r, "upgraded");
        }
        GameCommand::Sell { tower_id } => {
            let request = TowerRequest { session_id: game()?, tower_id: *tower_id };
            let r = game_client(ctx).await?.sell_tower(ctx.authorized(request)?).await?.into_inner();
            tower_answer(json, &r, "sold");
        }
        GameCommand::Wave { wait } => {
            let id = game()?;
            let mut client = game_client(ctx).await?;
            let r = client.start_wave(ctx.authorized(SessionRequest { session_id: id.clone() })?).await?.into_inner();
            if !*wait {
                answer(json, &r, "wave started");
            } else {
                wait_for_wave(ctx, &id, r.version).await?;
            }
        }
        GameCommand::End { reason } => {
            let request = EndGameRequest { session_id: game()?, reason: reason.clone() };
            let r = game_client(ctx).await?.end_game(ctx.authorized(request)?).await?.into_inner();
            answer(json, &r, "ended");
        }
        GameCommand::Show { live: true, .. } => {
            let request = SessionRequest { session_id: game()? };
            let view = game_client(ctx).await?.get_game_state(ctx.authorized(request)?).await?.into_inner();
            print(json, &view, || Board { view: view.clone(), frame: None, controls: None }.render());
        }
        GameCommand::Show { live: false, after } => {
            let mut client = GameQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request =
                GetGameSessionRequest { session_id: game()?, consistency_token: after.clone().unwrap_or_default() };
            let r = client.get_game_session(ctx.authorized(request)?).await?.into_inner();
            let d = r.session.unwrap_or_default();
            print(json, &d, || details(&d));
        }
        GameCommand::Lobbies { map, difficulty, free, sort, limit, page } => {
            let mut client = GameQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = ListOpenLobbiesRequest {
                map: map.clone().unwrap_or_default(),
                difficulty: difficulty.clone().unwrap_or_default(),
                min_free_slots: *free,
                sort_by: sort.clone(),
                page_size: *limit,
                page_token: page.clone().unwrap_or_default(),
            };
            let r = client.list_open_lobbies(ctx.authorized(request)?).await?.into_inner();
            list(json, &r.games, &r.next_page_token, "no open lobby");
        }
        GameCommand::Active { map, difficulty, limit, page } => {
            let mut client = GameQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = ListActiveGamesRequest {
                map: map.clone().unwrap_or_default(),
                difficulty: difficulty.clone().unwrap_or_default(),
                page_size: *limit,
                page_token: page.clone().unwrap_or_default(),
            };
            let r = client.list_active_games(ctx.authorized(request)?).await?.into_inner();
            list(json, &r.games, &r.next_page_token, "no game is being played");
        }
        GameCommand::History { user_id, limit, page } => {
            let user_id = match user_id {
                Some(u) => u.clone(),
                None => ctx.load_saved()?.user_id,
            };
            let mut client = GameQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request =
                ListPlayerGamesRequest { user_id, page_size: *limit, page_token: page.clone().unwrap_or_default() };
            let r = client.list_player_games(ctx.authorized(request)?).await?.into_inner();
            list(json, &r.games, &r.next_page_token, "no games yet");
        }
        GameCommand::Watch { from, once } => watch(ctx, &game()?, *from, *once).await?,
        GameCommand::Verify => {
            let id = game()?;
            let request = ctx.authorized(SessionRequest { session_id: id.clone() })?;
            let r = game_client(ctx).await?.verify_replay(request).await?.into_inner();
            print(json, &r, || {
                let mut lines = vec![format!(
                    "{id}: {} ({} events, {} waves checked)",
                    if r.ok { "replay verified" } else { "REPLAY MISMATCH" },
                    r.events,
                    r.waves.len()
                )];
                for w in &r.waves {
                    lines.push(format!(
                        "  wave {:>2}  {:<8} {}  {}",
                        w.wave,
                        w.recorded_outcome,
                        if w.ok { "ok" } else { "MISMATCH" },
                        w.recorded_hash
                    ));
                    if !w.ok {
                        lines.push(format!("           replayed {} {}", w.replayed_outcome, w.replayed_hash));
                    }
                }
                lines.extend(r.problems.iter().map(|p| format!("  problem: {p}")));
                lines.join("\n")
            });
            if !r.ok {
                return Err(Failure::new("DataLoss", "the replay does not reproduce the recorded game"));
            }
        }
        GameCommand::Rules { version } => {
            let request = GetRulesRequest { rules_version: *version };
            let r = game_client(ctx).await?.get_rules(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || {
                let mut lines =
                    vec![format!("rules v{} ({}), {} ticks/s", r.rules_version, r.rules_hash, r.ticks_per_second)];
                for m in &r.maps {
                    let b = m.board.clone().unwrap_or_default();
                    lines.push(format!("  map {:<8} {}x{}, {} waves", m.name, b.width, b.height, m.waves));
                }
                // Ranges are in milli-tiles: shown in tiles.
                let tiles = |r: &[i64]| r.iter().map(|m| format!("{:.1}", *m as f64 / 1000.0)).collect::<Vec<_>>();
                for t in &r.towers {
                    let flag = if t.flag.is_empty() { String::new() } else { format!("  (flag {})", t.flag) };
                    lines.push(format!(
                        "  tower {:<7} cost {:<4} upgrades {:?}  range {} tiles  damage {:?}  refund {}%{flag}",
                        t.name,
                        t.cost,
                        t.upgrade_costs,
                        tiles(&t.ranges).join("/"),
                        t.damage,
                        t.sell_refund_pct
                    ));
                }
                lines.push(format!("  enemies: {}", r.enemies.join(", ")));
                for d in &r.difficulty_details {
                    lines.push(format!(
                        "  difficulty {:<7} start gold {} per player, {} lives; enemies {}% hit points, {}% speed, {}% bounty",
                        d.name, d.start_gold, d.lives, d.enemy_hp_pct, d.enemy_speed_pct, d.bounty_pct
                    ));
                }
                if r.difficulty_details.is_empty() {
                    lines.push(format!("  difficulties: {}", r.difficulties.join(", ")));
                }
                lines.join("\n")
            });
        }
    }
    Ok(())
}

/// Follows the session after `version` until the wave started there ends.
async fn wait_for_wave(ctx: &Context, id: &str, version: u64) -> Result<(), Failure> {
    let mut client = GameServiceClient::new(ctx.stream_channel(&ctx.timesquare).await?);
    let request = WatchGameSessionRequest { session_id: id.to_owned(), from_version: version.saturating_sub(1) };
    let mut stream = client.watch_game_session(ctx.authorized(request)?).await?.into_inner();
    let mut started = String::new();
    while let Some(update) = stream.message().await? {
        let Some(Update::Event(e)) = update.update else { continue };
        let data: serde_json::Value = serde_json::from_str(&e.json).unwrap_or_default();
        match e.event_type.as_str() {
            "WaveStarted" => started = format!("wave {} started ({} enemies)", data["wave"], data["enemies"]),
            "WaveCompleted" => {
                // "cleared" is the wave's end with lives left; with leaks it was held, not cleared.
                let leaks = data["leaks"].as_u64().unwrap_or(0);
                let outcome = match data["outcome"].as_str().unwrap_or_default() {
                    "cleared" if leaks > 0 => "held".to_owned(),
                    other => other.to_owned(),
                };
                let text = format!(
                    "{started}\nwave {} {outcome}: {} kills, {leaks} leaks, lives {}, score {}",
                    data["wave"], data["kills"], data["lives"], data["score"]
                )
                .replace('"', "");
                print(ctx.json, &data, || text.trim_start().to_owned());
                if data["outcome"] == "cleared" {
                    // A last wave's GameEnded comes in the same append: show it too.
                    if let Ok(Ok(Some(next))) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await
                        && let Some(Update::Event(end)) = next.update
                        && end.event_type == "GameEnded"
                    {
                        print_end(ctx, &end);
                    }
                    return Ok(());
                }
            }
            "GameEnded" => {
                print_end(ctx, &e);
                return Ok(());
            }
            _ => {}
        }
    }
    Err(Failure::unavailable("the stream ended before the wave did"))
}

fn print_end(ctx: &Context, e: &GameEventUpdate) {
    let data: serde_json::Value = serde_json::from_str(&e.json).unwrap_or_default();
    let text =
        format!("game over: {} · score {} · {} waves cleared", data["outcome"], data["score"], data["wavesCleared"])
            .replace('"', "");
    print(ctx.json, &data, || text);
}

/// What a key on the board sends, and the answer to show under it.
async fn act(ctx: &Context, client: &mut GameServiceClient<Channel>, id: &str, action: Action) -> String {
    let session_id = id.to_owned();
    let sent = async {
        let tower = |r: TowerResponse, what: String| format!("{what} tower {} · your gold {}", r.tower_id, r.gold);
        Ok::<String, Failure>(match action {
            Action::Place { tower_type, x, y } => {
                let request = PlaceTowerRequest { session_id, tower_type: tower_type.clone(), x, y };
                let r = client.place_tower(ctx.authorized(request)?).await?.into_inner();
                tower(r, format!("placed {tower_type} at ({x}, {y}):"))
            }
            Action::Upgrade(tower_id) => {
                let r = client.upgrade_tower(ctx.authorized(TowerRequest { session_id, tower_id })?).await?;
                tower(r.into_inner(), "upgraded".into())
            }
            Action::Sell(tower_id) => {
                let r = client.sell_tower(ctx.authorized(TowerRequest { session_id, tower_id })?).await?;
                tower(r.into_inner(), "sold".into())
            }
            Action::Wave => {
                client.start_wave(ctx.authorized(SessionRequest { session_id })?).await?;
                "wave started".into()
            }
            Action::Explain(why) => why,
            Action::Redraw | Action::Quit => String::new(),
        })
    };
    match sent.await {
        Ok(answer) => answer,
        Err(f) => {
            let rule = f.rule.as_deref().map(|r| format!(" · rule {r}")).unwrap_or_default();
            format!("refused: {}{rule}", f.message)
        }
    }
}

/// The next key, when the board is played (never otherwise).
async fn next_key(keys: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Key>>) -> Option<Key> {
    match keys {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The live board. Reconnects after a dropped stream from the last version
/// seen (the server resumes with no gap and no duplicate). On a terminal
/// (stdin and stdout) it is played too: see [`super::keys`].
async fn watch(ctx: &Context, id: &str, from: u64, once: bool) -> Result<(), Failure> {
    let terminal = std::io::stdout().is_terminal() && !ctx.json;
    let mut board = Board::default();
    let mut last = from;
    let mut retries = 0u32;
    let mut state = game_client(ctx).await?;
    // Dropped on return: the terminal gets its line mode and echo back.
    let (_raw, mut keys) = match RawInput::start().filter(|_| terminal && !once) {
        Some((raw, rx)) => (Some(raw), Some(rx)),
        None => (None, None),
    };
    loop {
        let mut client = GameServiceClient::new(ctx.stream_channel(&ctx.timesquare).await?);
        let request = WatchGameSessionRequest { session_id: id.to_owned(), from_version: last };
        let mut stream = match client.watch_game_session(ctx.authorized(request)?).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == Code::Unavailable && retries < 10 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(300 * u64::from(retries))).await;
                continue;
            }
            Err(s) => return Err(s.into()),
        };
        if board.view.session_id.is_empty() {
            board.view =
                state.get_game_state(ctx.authorized(SessionRequest { session_id: id.to_owned() })?).await?.into_inner();
        }
        if keys.is_some() && board.controls.is_none() {
            let request = GetRulesRequest { rules_version: board.view.rules_version };
            let rules = state.get_rules(ctx.authorized(request)?).await?.into_inner();
            board.controls = Some(Controls::new(rules.towers));
        }
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                Some(key) = next_key(&mut keys) => {
                    let Some(controls) = board.controls.as_mut() else { continue };
                    match controls.key(key, &board.view) {
                        Action::Quit => return Ok(()),
                        Action::Redraw => {}
                        action => {
                            controls.status = act(ctx, &mut state, id, action).await;
                            let request = ctx.authorized(SessionRequest { session_id: id.to_owned() })?;
                            if let Ok(view) = state.get_game_state(request).await {
                                board.view = view.into_inner();
                            }
                        }
                    }
                    print!("\x1b[H\x1b[2J{}", board.render());
                    continue;
                }
            };
            let update = match message {
                Ok(Some(u)) => u,
                Ok(None) => break,
                Err(s) if s.code() == Code::Unavailable || s.code() == Code::Unknown || s.code() == Code::Internal => {
                    break;
                }
                Err(s) => return Err(s.into()),
            };
            retries = 0;
            if ctx.json {
                crate::output::json_line(&update);
            }
            let mut ended = false;
            match update.update {
                Some(Update::Snapshot(view)) => {
                    last = view.version;
                    ended = view.phase == "ended";
                    board.view = view;
                    board.frame = None;
                }
                Some(Update::Event(e)) => {
                    last = e.version;
                    if !terminal && !ctx.json {
                        println!("v{} {} {}", e.version, e.event_type, e.json);
                    }
                    ended = e.event_type == "GameEnded";
                    if e.event_type == "WaveCompleted" || ended {
                        board.frame = None;
                    }
                    let request = ctx.authorized(SessionRequest { session_id: id.to_owned() })?;
                    if let Ok(view) = state.get_game_state(request).await {
                        board.view = view.into_inner();
                    }
                }
                Some(Update::Frame(f)) => {
                    if !terminal && !ctx.json {
                        println!("frame tick {} · {} enemies · lives {}", f.tick, f.enemies.len(), f.lives);
                    }
                    board.frame = Some(f);
                }
                // A resumed watch is current: nothing to show.
                Some(Update::CaughtUp(_)) | None => {}
            }
            if terminal {
                print!("\x1b[H\x1b[2J{}", board.render());
            }
            if once || ended {
                if !terminal && !ctx.json {
                    print!("{}", board.render());
                }
                return Ok(());
            }
        }
        retries += 1;
        if retries > 10 {
            return Err(Failure::unavailable("the game stream keeps dropping"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
