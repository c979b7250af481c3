//! Given/when/then for every rule of the GameSession, plus determinism,
//! replay verification and whole games.

use std::collections::BTreeSet;

use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::events::v1::*;
use allies_core::Aggregate;

use super::*;
use crate::book::Book;
use crate::replay::verify;
use crate::rules::{Rules, SHIPPED};

const T0: i64 = 1_800_000_000_000;

/// The rules these tests play with: the shipped version 1, and a version
/// 902 whose arrow tower costs 77.
fn book() -> Book {
    let mut newer = Rules::parse(SHIPPED).unwrap();
    newer.rules_version = 902;
    newer.towers.get_mut("arrow").unwrap().cost = 77;
    Book::default().with(Rules::parse(SHIPPED).unwrap()).unwrap().with(newer).unwrap()
}

/// An empty session played with [`book`].
fn seeded() -> GameSession {
    GameSession::with_rules(book())
}

fn given_game(history: impl IntoIterator<Item = GameEvent>) -> allies_core::testing::Given<GameSession> {
    allies_core::testing::given_from(seeded(), history)
}

fn who(name: &str) -> Who {
    Who { user_id: format!("u-{name}"), display_name: name.to_owned() }
}

fn uid(name: &str) -> String {
    format!("u-{name}")
}

fn create_cmd(map: &str, difficulty: &str, max: u32, private: bool) -> GameCommand {
    GameCommand::Create {
        session_id: "g1".into(),
        host: who("ann"),
        map: map.into(),
        difficulty: difficulty.into(),
        max_players: max,
        private,
        invite_hash: if private { "codehash".into() } else { String::new() },
        match_id: String::new(),
        rules_version: 1,
        flags: BTreeSet::new(),
        reserved: Vec::new(),
        now_ms: T0,
    }
}

/// Applies commands in order, each decided on the state so far; returns all events.
fn play(commands: &[GameCommand]) -> (GameSession, Vec<GameEvent>) {
    let mut state = seeded();
    let mut all = Vec::new();
    for c in commands {
        let events = state.decide(c).unwrap_or_else(|e| panic!("{c:?} refused: {e}"));
        for e in &events {
            state.evolve(e);
        }
        all.extend(events);
    }
    (state, all)
}

/// The events of a started game: created by ann, then `others` joined, all ready, started.
fn started(map: &str, difficulty: &str, others: &[&str]) -> Vec<GameEvent> {
    let mut cmds = vec![create_cmd(map, difficulty, 4, false)];
    for o in others {
        cmds.push(GameCommand::Join { who: who(o), invite_hash: None, now_ms: T0 });
    }
    for p in std::iter::once(&"ann").chain(others) {
        cmds.push(GameCommand::SetReady { user_id: uid(p), ready: true, now_ms: T0 });
    }
    cmds.push(GameCommand::Start { user_id: uid("ann"), now_ms: T0 });
    play(&cmds).1
}

fn place(p: &str, t: &str, x: i32, y: i32) -> GameCommand {
    place_at(p, t, x, y, T0)
}

fn place_at(p: &str, t: &str, x: i32, y: i32, now_ms: i64) -> GameCommand {
    GameCommand::Place { user_id: uid(p), tower_type: t.into(), x, y, flags: BTreeSet::new(), now_ms }
}

fn start_wave(p: &str, now_ms: i64) -> GameCommand {
    GameCommand::StartWave { user_id: uid(p), tick_ms: 10, now_ms }
}

#[test]
fn a_session_is_created_by_its_host_who_joins_it() {
    let (s, events) = play(&[create_cmd("meadow", "normal", 2, false)]);
    assert!(
        matches!(&events[0], GameEvent::Created(c) if c.rules_version == 1 && c.total_waves == 20 && !c.rules_hash.is_empty())
    );
    assert!(matches!(&events[1], GameEvent::PlayerJoined(j) if j.user_id == uid("ann") && j.seat == 0));
    assert_eq!((s.phase, s.host.as_str(), s.present()), (Phase::Lobby, "u-ann", 1));
    given_game(events.clone()).when(create_cmd("meadow", "normal", 2, false)).then_err(GameError::AlreadyExists);
}

#[test]
fn a_session_is_refused_with_an_unknown_map_difficulty_player_count_or_missing_code() {
    given_game([]).when(create_cmd("moon", "normal", 2, false)).then_err(GameError::UnknownMap("moon".into()));
    given_game([])
        .when(create_cmd("meadow", "brutal", 2, false))
        .then_err(GameError::UnknownDifficulty("brutal".into()));
    given_game([]).when(create_cmd("meadow", "normal", 0, false)).then_err(GameError::BadPlayerCount(0));
    given_game([]).when(create_cmd("meadow", "normal", 5, false)).then_err(GameError::BadPlayerCount(5));
    let mut no_code = create_cmd("meadow", "normal", 2, true);
    if let GameCommand::Create { invite_hash, .. } = &mut no_code {
        invite_hash.clear();
    }
    given_game([]).when(no_code).then_err(GameError::MissingInviteCode);
    given_game([]).when(place("ann", "arrow", 0, 0)).then_err(GameError::NoSuchSession);
}

#[test]
fn players_join_an_open_lobby_once_until_it_is_full_and_a_private_one_with_its_code() {
    let (_, lobby) = play(&[create_cmd("meadow", "normal", 2, false)]);
    let join =
        |n: &str, code: Option<&str>| GameCommand::Join { who: who(n), invite_hash: code.map(Into::into), now_ms: T0 };
    given_game(lobby.clone()).when(join("bo", None)).then([GameEvent::PlayerJoined(PlayerJoined {
        user_id: uid("bo"),
        display_name: "bo".into(),
        seat: 1,
        players: 2,
        joined_at_ms: T0,
    })]);
    given_game(lobby.clone()).when(join("ann", None)).then_err(GameError::AlreadyMember);
    let (_, full) = play(&[create_cmd("meadow", "normal", 2, false), join("bo", None)]);
    given_game(full).when(join("cy", None)).then_err(GameError::SessionFull(2));
    let (_, private) = play(&[create_cmd("meadow", "normal", 2, true)]);
    given_game(private.clone()).when(join("bo", None)).then_err(GameError::MissingInviteCode);
    given_game(private.clone()).when(join("bo", Some("other"))).then_err(GameError::WrongInviteCode);
    let state = given_game(private).when(join("bo", Some("codehash"))).then([GameEvent::PlayerJoined(PlayerJoined {
        user_id: uid("bo"),
        display_name: "bo".into(),
        seat: 1,
        players: 2,
        joined_at_ms: T0,
    })]);
    assert_eq!(state.present(), 2);
    given_game(started("meadow", "normal", &[]))
        .when(join("bo", None))
        .then_err(GameError::WrongPhase { expected: "lobby", actual: "building" });
}

#[test]
fn leaving_passes_the_host_on_and_the_last_one_out_abandons_the_game() {
    let join = GameCommand::Join { who: who("bo"), invite_hash: None, now_ms: T0 };
    let (_, two) = play(&[create_cmd("meadow", "normal", 2, false), join]);
    let leave = |n: &str| GameCommand::Leave { user_id: uid(n), reason: "bye".into(), now_ms: T0 + 5 };
    let state = given_game(two.clone()).when(leave("ann")).then([GameEvent::PlayerLeft(PlayerLeft {
        user_id: uid("ann"),
        host_id: uid("bo"),
        players: 1,
        left_at_ms: T0 + 5,
        reason: "bye".into(),
        in_lobby: true,
    })]);
    assert_eq!((state.host.as_str(), state.present()), ("u-bo", 1));
    given_game(two).when(leave("cy")).then_err(GameError::NotAMember);
    let (_, one) = play(&[create_cmd("meadow", "normal", 2, false)]);
    let events = one.clone();
    let mut s = seeded();
    for e in &events {
        s.evolve(e);
    }
    let out = s.decide(&leave("ann")).unwrap();
    assert!(matches!(&out[1], GameEvent::Ended(e) if e.outcome == "abandoned"), "{out:?}");
}

#[test]
fn only_the_host_starts_and_only_when_everyone_is_ready() {
    let join = GameCommand::Join { who: who("bo"), invite_hash: None, now_ms: T0 };
    let ready = |n: &str| GameCommand::SetReady { user_id: uid(n), ready: true, now_ms: T0 };
    let start = |n: &str| GameCommand::Start { user_id: uid(n), now_ms: T0 };
    let (_, lobby) = play(&[create_cmd("meadow", "easy", 2, false), join.clone(), ready("ann")]);
    given_game(lobby.clone()).when(start("ann")).then_err(GameError::NotAllReady("bo".into()));
    given_game(lobby.clone()).when(start("bo")).then_err(GameError::NotHost);
    given_game(lobby.clone()).when(start("cy")).then_err(GameError::NotAMember);
    given_game(lobby.clone()).when(ready("ann")).then([]);
    given_game(lobby.clone()).when(ready("cy")).then_err(GameError::NotAMember);
    let (_, all_ready) = play(&[create_cmd("meadow", "easy", 2, false), join, ready("ann"), ready("bo")]);
    let state = given_game(all_ready).when(start("ann")).then([GameEvent::Started(GameStarted {
        players: vec![
            StartedPlayer { user_id: uid("ann"), seat: 0, gold: 260 },
            StartedPlayer { user_id: uid("bo"), seat: 1, gold: 260 },
        ],
        lives: 30,
        started_at_ms: T0,
    })]);
    assert_eq!((state.phase, state.gold.clone(), state.lives), (Phase::Building, vec![260, 260], 30));
    given_game(started("meadow", "easy", &[]))
        .when(start("ann"))
        .then_err(GameError::WrongPhase { expected: "lobby", actual: "building" });
}

#[test]
fn a_tower_goes_only_on_a_free_buildable_cell_in_your_zone_and_only_if_you_can_pay() {
    let game = started("meadow", "normal", &["bo"]);
    given_game(game.clone()).when(place("ann", "arrow", 1, 1)).then([GameEvent::TowerPlaced(TowerPlaced {
        tower_id: 0,
        player_id: uid("ann"),
        tower_type: "arrow".into(),
        x: 1,
        y: 1,
        cost: 50,
        gold_after: 150,
        wave: 0,
        tick: 0,
    })]);
    given_game(game.clone()).when(place("cy", "arrow", 1, 1)).then_err(GameError::NotAMember);
    given_game(game.clone()).when(place("ann", "laser", 1, 1)).then_err(GameError::UnknownTowerType("laser".into()));
    given_game(game.clone()).when(place("ann", "arrow", 25, 1)).then_err(GameError::OutsideMap { x: 25, y: 1 });
    given_game(game.clone()).when(place("ann", "arrow", 5, 2)).then_err(GameError::NotBuildable { x: 5, y: 2 });
    given_game(game.clone()).when(place("ann", "arrow", 9, 4)).then_err(GameError::NotBuildable { x: 9, y: 4 });
    // Two players: ann builds on the left half, bo on the right.
    given_game(game.clone()).when(place("ann", "arrow", 12, 1)).then_err(GameError::OutsideZone { x: 12, y: 1 });
    given_game(game.clone()).when(place("bo", "arrow", 12, 1)).then([GameEvent::TowerPlaced(TowerPlaced {
        tower_id: 0,
        player_id: uid("bo"),
        tower_type: "arrow".into(),
        x: 12,
        y: 1,
        cost: 50,
        gold_after: 150,
        wave: 0,
        tick: 0,
    })]);
    let mut with_tower = game.clone();
    with_tower.extend(play_more(&game, &[place("ann", "arrow", 1, 1)]));
    given_game(with_tower).when(place("ann", "cannon", 1, 1)).then_err(GameError::CellOccupied {
        x: 1,
        y: 1,
        tower: 0,
    });
    // A refusal tells nothing about another player's zone: bo's tower there
    // is not revealed to ann (the zone is checked before the cell).
    let mut theirs = game.clone();
    theirs.extend(play_more(&game, &[place("bo", "arrow", 12, 1)]));
    given_game(theirs).when(place("ann", "cannon", 12, 1)).then_err(GameError::OutsideZone { x: 12, y: 1 });
    let mut broke = game.clone();
    broke.extend(play_more(&game, &[place("ann", "cannon", 1, 1), place("ann", "cannon", 1, 3)]));
    given_game(broke).when(place("ann", "arrow", 0, 0)).then_err(GameError::NotEnoughGold { need: 50, have: 20 });
    // A tower behind a feature flag needs the flag.
    given_game(game.clone())
        .when(place("ann", "tesla", 1, 1))
        .then_err(GameError::FeatureDisabled("tower tesla".into(), "towers.tesla".into()));
    let flagged = GameCommand::Place {
        user_id: uid("ann"),
        tower_type: "tesla".into(),
        x: 1,
        y: 1,
        flags: ["towers.tesla".to_owned()].into(),
        now_ms: T0,
    };
    let state = given_game(game.clone()).when(flagged).then([GameEvent::TowerPlaced(TowerPlaced {
        tower_id: 0,
        player_id: uid("ann"),
        tower_type: "tesla".into(),
        x: 1,
        y: 1,
        cost: 150,
        gold_after: 50,
        wave: 0,
        tick: 0,
    })]);
    assert_eq!(state.gold, vec![50, 200]);
    given_game(play(&[create_cmd("meadow", "normal", 2, false)]).1)
        .when(place("ann", "arrow", 1, 1))
        .then_err(GameError::WrongPhase { expected: "building or in_wave", actual: "lobby" });
}

/// The events `commands` add to `history`.
fn play_more(history: &[GameEvent], commands: &[GameCommand]) -> Vec<GameEvent> {
    let mut state = seeded();
    for e in history {
        state.evolve(e);
    }
    let mut out = Vec::new();
    for c in commands {
        let events = state.decide(c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        for e in &events {
            state.evolve(e);
        }
        out.extend(events);
    }
    out
}

#[test]
fn towers_upgrade_to_their_highest_level_for_their_owner_and_sell_for_a_refund() {
    let game = started("meadow", "easy", &["bo"]);
    let mut h = game.clone();
    h.extend(play_more(&game, &[place("ann", "arrow", 1, 1)]));
    let up = |p: &str, id: u32| GameCommand::Upgrade { user_id: uid(p), tower_id: id, now_ms: T0 };
    let sell = |p: &str, id: u32| GameCommand::Sell { user_id: uid(p), tower_id: id, now_ms: T0 };
    let state = given_game(h.clone()).when(up("ann", 0)).then([GameEvent::TowerUpgraded(TowerUpgraded {
        tower_id: 0,
        player_id: uid("ann"),
        tower_type: "arrow".into(),
        x: 1,
        y: 1,
        level: 1,
        cost: 40,
        gold_after: 170,
        wave: 0,
        tick: 0,
    })]);
    assert_eq!(state.towers[&0].invested, 90);
    given_game(h.clone()).when(up("bo", 0)).then_err(GameError::NotYourTower(0));
    given_game(h.clone()).when(up("ann", 7)).then_err(GameError::NoSuchTower(7));
    let mut maxed = h.clone();
    maxed.extend(play_more(&h, &[up("ann", 0), up("ann", 0)]));
    given_game(maxed.clone()).when(up("ann", 0)).then_err(GameError::MaxLevel(0));
    // Sold: 70 % of everything put in (50 + 40 + 80).
    let state = given_game(maxed).when(sell("ann", 0)).then([GameEvent::TowerSold(TowerSold {
        tower_id: 0,
        player_id: uid("ann"),
        refund: 119,
        gold_after: 90 + 119,
        wave: 0,
        tick: 0,
    })]);
    assert!(state.towers.is_empty());
    given_game(h).when(sell("bo", 0)).then_err(GameError::NotYourTower(0));
}

#[test]
fn a_wave_starts_from_building_only_and_towers_work_during_it() {
    let game = started("meadow", "normal", &[]);
    let mut h = game.clone();
    h.extend(play_more(&game, &[start_wave("ann", T0 + 1000)]));
    assert!(matches!(h.last(), Some(GameEvent::WaveStarted(w)) if w.wave == 1 && w.tick_ms == 10 && w.enemies > 0));
    given_game(h.clone())
        .when(start_wave("ann", T0 + 1010))
        .then_err(GameError::WrongPhase { expected: "building", actual: "in_wave" });
    given_game(h.clone()).when(start_wave("cy", T0 + 1010)).then_err(GameError::NotAMember);
    // 300 ms into the wave (30 ticks), a tower applies at tick 32: 30 + LEAD.
    let during = place_at("ann", "arrow", 1, 1, T0 + 1300);
    let events = play_more(&h, &[during]);
    assert!(matches!(&events[..], [GameEvent::TowerPlaced(t)] if t.tick == 32 && t.wave == 1), "{events:?}");
}

#[test]
fn undefended_waves_on_hard_overrun_the_base_and_end_the_game_in_defeat() {
    let mut h = started("meadow", "hard", &[]);
    let mut now = T0;
    for wave in 1.. {
        h.extend(play_more(&h, &[start_wave("ann", now)]));
        // Nothing due at the start; far later the sweeper's Settle completes it.
        assert!(play_more(&h, &[GameCommand::Settle { now_ms: now + 10 }]).is_empty());
        now += 100_000_000;
        let done = play_more(&h, &[GameCommand::Settle { now_ms: now }]);
        let GameEvent::WaveCompleted(w) = &done[0] else { panic!("{done:?}") };
        assert_eq!(w.completed_at_ms, now - 100_000_000 + i64::from(w.end_tick) * 10, "completion time from the ticks");
        assert!(w.leaks > 0 && w.kills == 0, "{w:?}");
        h.extend(done.clone());
        if let [_, GameEvent::Ended(e)] = &done[..] {
            assert_eq!((w.outcome.as_str(), w.lives, e.outcome.as_str()), ("overrun", 0, "defeat"));
            assert!(wave >= 2, "hard starts with 10 lives: the first wave does not do it");
            break;
        }
        assert!(wave < 5, "still alive after {wave} undefended waves");
    }
    // Anything after it is decided on the ended game.
    given_game(h).when(place("ann", "arrow", 1, 1)).then_err(GameError::GameEnded);
}

#[test]
fn a_command_after_the_wave_ended_completes_it_first() {
    let game = started("meadow", "easy", &[]);
    let mut h = game.clone();
    h.extend(play_more(&game, &[place("ann", "cannon", 1, 1), place("ann", "arrow", 2, 3), start_wave("ann", T0)]));
    let later = place_at("ann", "arrow", 4, 3, T0 + 100_000_000);
    let events = play_more(&h, &[later]);
    assert!(matches!(&events[0], GameEvent::WaveCompleted(w) if w.wave == 1), "{events:?}");
    assert!(
        matches!(events.last(), Some(GameEvent::TowerPlaced(t)) if t.tick == 0),
        "placed between waves: {events:?}"
    );
}

#[test]
fn the_host_forfeits_an_admin_terminates_and_nobody_else_may_end_a_game() {
    let game = started("meadow", "normal", &["bo"]);
    let end = |p: &str, admin: bool| GameCommand::End { user_id: uid(p), admin, reason: "done".into(), now_ms: T0 + 9 };
    let out = play_more(&game, &[end("ann", false)]);
    assert!(matches!(&out[..], [GameEvent::Ended(e)] if e.outcome == "forfeit" && e.ended_by == "u-ann"));
    let out = play_more(&game, &[end("root", true)]);
    assert!(matches!(&out[..], [GameEvent::Ended(e)] if e.outcome == "terminated"));
    given_game(game.clone()).when(end("bo", false)).then_err(GameError::NotHost);
    given_game(game.clone()).when(end("cy", false)).then_err(GameError::NotAMember);
    let mut ended = game.clone();
    ended.extend(play_more(&game, &[end("ann", false)]));
    given_game(ended).when(end("ann", false)).then_err(GameError::GameEnded);
}

/// A greedy team: before every wave each player spends all their gold on
/// towers near the path in their zone, upgrading when no cell is left.
fn greedy(state: &GameSession) -> Vec<GameCommand> {
    let rules = state.rules().unwrap();
    let map = &rules.maps[&state.map];
    let path = map.path_cells();
    let mut plan = Vec::new();
    let mut sim = state.clone();
    let kinds = ["cannon", "arrow", "frost"];
    for m in state.members.iter().filter(|m| m.present) {
        let seat = m.seat.unwrap();
        let zone = map.zone(state.seats(), seat);
        let mut cells: Vec<(i32, i32)> = (0..map.width)
            .flat_map(|x| (0..map.height).map(move |y| (x, y)))
            .filter(|(x, y)| map.buildable(*x, *y) && crate::rules::in_zone(zone, *x, *y))
            .filter(|(x, y)| path.iter().any(|(px, py)| (px - x).abs() + (py - y).abs() == 1))
            .collect();
        cells.sort_by_key(|(x, y)| (*x + *y, *x));
        let mut k = sim.towers.len();
        loop {
            let free = cells.iter().find(|(x, y)| !sim.towers.values().any(|t| t.x == *x && t.y == *y));
            let cmd = match free {
                Some((x, y)) => GameCommand::Place {
                    user_id: m.user_id.clone(),
                    tower_type: kinds[k % kinds.len()].into(),
                    x: *x,
                    y: *y,
                    flags: BTreeSet::new(),
                    now_ms: T0,
                },
                None => match sim.towers.values().filter(|t| t.owner == m.user_id).min_by_key(|t| (t.level, t.id)) {
                    Some(t) => GameCommand::Upgrade { user_id: m.user_id.clone(), tower_id: t.id, now_ms: T0 },
                    None => break,
                },
            };
            match sim.decide(&cmd) {
                Ok(events) => {
                    for e in &events {
                        sim.evolve(e);
                    }
                    plan.push(cmd);
                    k += 1;
                }
                Err(_) => break,
            }
        }
    }
    plan
}

/// Plays a whole game with the greedy team; returns the final state and every event.
fn whole_game(map: &str, difficulty: &str, others: &[&str]) -> (GameSession, Vec<GameEvent>) {
    let mut history = started(map, difficulty, others);
    let mut state = seeded();
    for e in &history {
        state.evolve(e);
    }
    let mut now = T0;
    while state.phase != Phase::Ended {
        for c in greedy(&state) {
            let events = state.decide(&c).unwrap();
            for e in &events {
                state.evolve(e);
            }
            history.extend(events);
        }
        now += 1_000;
        let events = state.decide(&start_wave("ann", now)).unwrap();
        for e in &events {
            state.evolve(e);
        }
        history.extend(events);
        now += 10_000_000;
        let events = state.decide(&GameCommand::Settle { now_ms: now }).unwrap();
        assert!(!events.is_empty(), "every wave ends");
        for e in &events {
            state.evolve(e);
        }
        history.extend(events);
    }
    (state, history)
}

#[test]
fn a_greedy_team_wins_easy_and_every_wave_replays_to_its_recorded_hash() {
    let (state, events) = whole_game("meadow", "easy", &["bo"]);
    assert_eq!((state.outcome.as_str(), state.waves_cleared), ("victory", 20), "lives {}", state.lives);
    let report = verify(&events, &book());
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.waves.len(), 20);
    let Some(GameEvent::Ended(end)) = events.last() else { panic!() };
    assert!(end.score > 20 * 100, "{end:?}");
    assert!(end.players.iter().all(|p| p.towers_built > 0 && p.gold_spent > 0), "{end:?}");
    assert!(end.players.iter().map(|p| p.kills).sum::<u32>() > 100, "{end:?}");
    assert!(end.towers_built.iter().map(|t| t.count).sum::<u32>() > 0);
}

#[test]
fn the_same_commands_give_the_same_game_twice_and_an_edited_event_fails_verification() {
    let (a, ea) = whole_game("canyon", "normal", &["bo", "cy"]);
    let (b, eb) = whole_game("canyon", "normal", &["bo", "cy"]);
    assert_eq!(ea, eb, "every event, every hash");
    assert_eq!(a, b);
    assert!(verify(&ea, &book()).ok());
    // Someone moves a tower in the record: the replay no longer matches.
    let mut edited = ea.clone();
    let i = edited.iter().position(|e| matches!(e, GameEvent::TowerPlaced(_))).unwrap();
    if let GameEvent::TowerPlaced(t) = &mut edited[i] {
        t.x += 1;
    }
    let report = verify(&edited, &book());
    assert!(!report.ok());
    assert!(report.waves.iter().any(|w| !w.ok), "{report:?}");
}

/// Random legal play: a seeded generator picks commands (some refused, which
/// write nothing), mid-wave inputs included. Two runs of one seed are equal,
/// and every run verifies.
#[test]
fn random_legal_command_sequences_are_deterministic_and_verify() {
    for seed in 1..=12u64 {
        let run = || {
            let mut rng = crate::sim::Rng(seed);
            let mut state = seeded();
            let mut history = started(if seed % 2 == 0 { "meadow" } else { "canyon" }, "normal", &["bo"]);
            for e in &history {
                state.evolve(e);
            }
            let mut now = T0;
            for _ in 0..400 {
                if state.phase == Phase::Ended {
                    break;
                }
                now += i64::from(rng.up_to(400));
                let p = if rng.up_to(1) == 0 { "ann" } else { "bo" };
                let cmd = match rng.up_to(9) {
                    0..=3 => GameCommand::Place {
                        user_id: uid(p),
                        tower_type: ["arrow", "cannon", "frost"][rng.up_to(2) as usize].into(),
                        x: rng.up_to(23) as i32,
                        y: rng.up_to(13) as i32,
                        flags: BTreeSet::new(),
                        now_ms: now,
                    },
                    4 => GameCommand::Upgrade { user_id: uid(p), tower_id: rng.up_to(state.next_tower), now_ms: now },
                    5 => GameCommand::Sell { user_id: uid(p), tower_id: rng.up_to(state.next_tower), now_ms: now },
                    6 | 7 => start_wave(p, now),
                    _ => GameCommand::Settle { now_ms: now },
                };
                if let Ok(events) = state.decide(&cmd) {
                    for e in &events {
                        state.evolve(e);
                    }
                    history.extend(events);
                }
            }
            history
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b, "seed {seed}");
        let report = verify(&a, &book());
        assert!(report.ok(), "seed {seed}: {report:?}");
        assert!(a.iter().any(|e| matches!(e, GameEvent::TowerPlaced(t) if t.tick > 0)), "seed {seed}: mid-wave inputs");
    }
}

#[test]
fn a_session_keeps_the_rules_version_it_was_created_with_and_old_games_replay() {
    let on = |version: u32| {
        let create = GameCommand::Create {
            session_id: format!("g-{version}"),
            host: who("ann"),
            map: "meadow".into(),
            difficulty: "normal".into(),
            max_players: 1,
            private: false,
            invite_hash: String::new(),
            match_id: String::new(),
            rules_version: version,
            flags: BTreeSet::new(),
            reserved: Vec::new(),
            now_ms: T0,
        };
        let ready = GameCommand::SetReady { user_id: uid("ann"), ready: true, now_ms: T0 };
        let start = GameCommand::Start { user_id: uid("ann"), now_ms: T0 };
        let (state, mut events) = play(&[create, ready, start, place("ann", "arrow", 0, 1)]);
        let more =
            play_more(&events, &[start_wave("ann", T0 + 1_000), GameCommand::Settle { now_ms: T0 + 10_000_000 }]);
        events.extend(more);
        (state, events)
    };
    let (old, old_events) = on(1);
    let (new, new_events) = on(902);
    assert_eq!((old.rules_version, new.rules_version), (1, 902));
    let start_gold = old.gold[0] + 50;
    assert_eq!((old.gold[0], new.gold[0]), (start_gold - 50, start_gold - 77), "each pays its own version's price");
    // Both replay with their own version; a replay without the old version loaded says so.
    assert!(verify(&old_events, &book()).ok() && verify(&new_events, &book()).ok());
    let mut unknown = old_events.clone();
    if let GameEvent::Created(c) = &mut unknown[0] {
        c.rules_version = 31_337;
    }
    assert!(verify(&unknown, &book()).problems.iter().any(|p| p.contains("31337")), "{:?}", verify(&unknown, &book()));
}
