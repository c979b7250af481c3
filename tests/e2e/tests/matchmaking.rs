//! Matchmaking end to end: integration events from guardian, players,
//! tickets, the matchmaker and the match saga with its compensations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use allies_contracts::projector::v1::GetMatchRequest;
use allies_contracts::timesquare::events::{MatchEvent, PlayerEvent};
use allies_contracts::timesquare::v1::*;
use allies_e2e::game::*;
use allies_e2e::matchmaking::*;
use allies_e2e::{Fleet, bearer};
use allies_store::{EventStore, RedisEventStore};
use tonic::Code;

/// Fast matchmaking: passes every 50 ms, confirmations within 3 s, and
/// stuck saga steps claimed after 1.5 s.
const FAST: [(&str, &str); 4] = [
    ("TIMESQUARE_MM_INTERVAL_MS", "50"),
    ("TIMESQUARE_MM_CONFIRM_SECS", "3"),
    ("SUBSCRIBER_CLAIM_IDLE_MS", "1500"),
    ("TIMESQUARE_MM_FILL_AFTER_MS", "1000"),
];

async fn confirm(mm: &mut Matchmaking, who: &Gamer, match_id: &str) -> Result<MatchView, tonic::Status> {
    mm.confirm_match(bearer(ConfirmMatchRequest { match_id: match_id.into() }, &who.token))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn two_players_are_matched_confirm_and_land_in_one_game() {
    let fleet = Fleet::start(&FAST);
    let mut mm = fleet.matchmaking().await;
    let (ann, bob) = (fleet.gamer("ann").await, fleet.gamer("bob").await);
    let a = find(&mut mm, &ann, 2, 2, &[]).await.expect("ann queues");
    assert_eq!(a.status, "searching");
    let b = find(&mut mm, &bob, 2, 2, &[]).await.expect("bob queues");
    let seen = follow_ticket(&mut mm, &ann, &a.ticket_id, |t| t.status != "searching").await;
    let matched = seen.last().unwrap().clone();
    assert_eq!(matched.status, "matched", "{seen:?}");
    let m = confirm(&mut mm, &ann, &matched.match_id).await.expect("ann confirms");
    assert_eq!(m.players.len(), 2);
    confirm(&mut mm, &bob, &matched.match_id).await.expect("bob confirms");
    let seen = follow_ticket(&mut mm, &bob, &b.ticket_id, |t| t.status == "ready").await;
    let ready = seen.last().unwrap();
    assert_eq!(ready.status, "ready", "{seen:?}");
    let game = state(&mut fleet.game().await, &ready.session_id, &ann).await;
    assert_eq!(game.players.len(), 2);
    assert_eq!(game.phase, "lobby");
    // Both are in that game now: a second ticket is refused.
    let again = find(&mut mm, &ann, 2, 2, &[]).await.unwrap_err();
    assert_eq!((again.code(), rule_of(&again).as_str()), (Code::FailedPrecondition, "IN_A_GAME"), "{again:?}");
}

async fn events<E: allies_core::DomainEvent>(fleet: &Fleet, aggregate_type: &str, id: &str) -> Vec<E> {
    let store = RedisEventStore::connect(&fleet.redis_url(), 16).await.expect("store");
    let records = store.read(aggregate_type, id, 1, usize::MAX).await.expect("read");
    records.iter().map(|r| r.decode::<E>().expect("decode").payload).collect()
}

async fn matched(mm: &mut Matchmaking, who: &Gamer, ticket: &str) -> TicketView {
    let seen = follow_ticket(mm, who, ticket, |t| t.status != "searching").await;
    let last = seen.last().cloned().unwrap_or_default();
    assert_eq!(last.status, "matched", "{seen:?}");
    last
}

/// The match's read model once it reached `status` (10 s).
async fn match_record(
    fleet: &Fleet,
    who: &Gamer,
    id: &str,
    status: &str,
) -> allies_contracts::projector::v1::MatchRecord {
    let mut q = fleet.player_queries().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = GetMatchRequest { match_id: id.into(), consistency_token: String::new() };
        if let Ok(r) = q.get_match(bearer(request, &who.token)).await {
            let m = r.into_inner().r#match.unwrap_or_default();
            if m.status == status || Instant::now() > deadline {
                return m;
            }
        }
        assert!(Instant::now() < deadline, "match {id} never reached {status}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_user_registered_delivered_twice_creates_one_player_and_a_user_may_act_before_it() {
    let mut fleet = Fleet::start(&FAST);
    let mut mm = fleet.matchmaking().await;
    let ann = fleet.gamer("ann").await;
    let p = wait_player(&mut mm, &ann, |p| p.username == "ann").await;
    assert_eq!((p.username.as_str(), p.rating), ("ann", 1500));
    // The same integration event again: nothing new.
    assert!(users_topic_entry(&fleet, &ann.id, "UserRegistered", false).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history: Vec<PlayerEvent> = events(&fleet, "player", &ann.id).await;
    assert_eq!(history.len(), 1, "{history:?}");

    // bob registers while timesquare is down and his event never arrives
    // (deleted): his first action registers him, the event later fills in the profile.
    fleet.service_mut("timesquare").kill();
    let bob = fleet.gamer("bob").await;
    assert!(users_topic_entry(&fleet, &bob.id, "UserRegistered", true).await);
    fleet.service_mut("timesquare").restart(&[]);
    let mut mm = fleet.matchmaking().await;
    let t = find(&mut mm, &bob, 2, 4, &[]).await.expect("bob acts first");
    assert_eq!(t.status, "searching");
    let early = player_state(&mut mm, &bob).await;
    assert_eq!((early.username.as_str(), early.ticket_id.as_str()), ("", t.ticket_id.as_str()));
    // Now it arrives (re-added to the topic the way guardian wrote it).
    let guardian_events = {
        let store = RedisEventStore::connect(&fleet.redis_url(), 16).await.unwrap();
        store.read("user", &bob.id, 1, 1).await.unwrap()
    };
    assert_eq!(guardian_events.len(), 1);
    republish_registration(&fleet, &bob).await;
    let later = wait_player(&mut mm, &bob, |p| p.username == "bob").await;
    assert_eq!((later.username.as_str(), later.ticket_id.as_str()), ("bob", t.ticket_id.as_str()));
    let history: Vec<PlayerEvent> = events(&fleet, "player", &bob.id).await;
    assert!(matches!(&history[0], PlayerEvent::Registered(r) if r.source == "first_action"), "{history:?}");
    assert_eq!(history.iter().filter(|e| matches!(e, PlayerEvent::Registered(_))).count(), 1);
}

/// Publishes bob's UserRegistered on the users topic as guardian would.
async fn republish_registration(fleet: &Fleet, who: &Gamer) {
    use allies_contracts::guardian::integration::{UserIntegrationEvent, v1};
    let event = UserIntegrationEvent::Registered(v1::UserRegistered {
        user_id: who.id.clone(),
        username: who.name.clone(),
        display_name: who.name.clone(),
        roles: vec!["player".into()],
        registered_at_ms: 1,
    });
    let meta = allies_core::Metadata {
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: uuid::Uuid::now_v7(),
        user_id: None,
        traceparent: None,
    };
    let mut c = allies_store::RedisTarget::parse(&fleet.redis_url()).unwrap().connect().await.unwrap();
    let p = allies_store::keys::partition_of(&who.id, 16);
    let e = allies_store::NewEvent::encode(&event).unwrap();
    allies_store::priority::publish(
        &mut c,
        "users",
        "user",
        p,
        allies_store::Priority::Normal,
        (&who.id, 1),
        &meta,
        &e,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_missed_confirmation_drops_the_culprit_and_requeues_the_others_keeping_their_wait() {
    let fleet = Fleet::start(&FAST);
    let mut mm = fleet.matchmaking().await;
    let (ann, bob) = (fleet.gamer("ann").await, fleet.gamer("bob").await);
    let a = find(&mut mm, &ann, 2, 2, &[]).await.unwrap();
    let b = find(&mut mm, &bob, 2, 2, &[]).await.unwrap();
    let m = matched(&mut mm, &ann, &a.ticket_id).await;
    confirm(&mut mm, &ann, &m.match_id).await.unwrap();
    // bob never confirms: after the 3 s deadline the match is cancelled.
    let record = match_record(&fleet, &ann, &m.match_id, "compensated").await;
    assert_eq!((record.reason.as_str(), record.culprits.clone()), ("confirmation_timeout", vec![bob.id.clone()]));
    assert!(record.compensation.iter().any(|c| c.starts_with("session closed")), "{record:?}");
    assert!(record.compensation.iter().any(|c| c == &format!("ticket dropped {}", b.ticket_id)), "{record:?}");
    assert!(record.compensation.iter().any(|c| c == &format!("ticket released {}", a.ticket_id)), "{record:?}");
    let back = mm
        .get_ticket(bearer(GetTicketRequest { ticket_id: a.ticket_id.clone() }, &ann.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (back.status.as_str(), back.created_at_ms),
        ("searching", a.created_at_ms),
        "back in the queue, same wait"
    );
    let dropped = mm
        .get_ticket(bearer(GetTicketRequest { ticket_id: b.ticket_id.clone() }, &bob.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dropped.status, "cancelled");
    let session = state(&mut fleet.game().await, &record.session_id, &ann).await;
    assert_eq!((session.phase.as_str(), session.outcome.as_str()), ("ended", "terminated"));
    let bobs = wait_player(&mut mm, &bob, |p| p.ticket_id.is_empty() && p.match_id.is_empty()).await;
    assert!(bobs.ticket_id.is_empty() && bobs.match_id.is_empty(), "nobody stranded: {bobs:?}");
    let anns = player_state(&mut mm, &ann).await;
    assert_eq!((anns.ticket_id.as_str(), anns.match_id.as_str()), (a.ticket_id.as_str(), ""));
    // ann is matched again with the next player, her wait unchanged.
    let cy = fleet.gamer("cyd").await;
    find(&mut mm, &cy, 2, 2, &[]).await.unwrap();
    let again = matched(&mut mm, &ann, &a.ticket_id).await;
    assert_ne!(again.match_id, m.match_id);
}

#[tokio::test]
async fn a_player_who_leaves_or_is_locked_out_cancels_the_match_and_the_others_go_back() {
    let env =
        [FAST[0], FAST[1], FAST[2], FAST[3], ("AUTH_RATE_PER_USERNAME", "1000"), ("AUTH_RATE_PER_CLIENT", "1000")];
    let fleet = Fleet::start(&env);
    let mut mm = fleet.matchmaking().await;
    let (ann, bob, cyd) = (fleet.gamer("ann").await, fleet.gamer("bob").await, fleet.gamer("cyd").await);

    // bob leaves (cancels his ticket) after the match formed.
    let a = find(&mut mm, &ann, 2, 2, &[]).await.unwrap();
    let b = find(&mut mm, &bob, 2, 2, &[]).await.unwrap();
    let m = matched(&mut mm, &bob, &b.ticket_id).await;
    mm.cancel_matchmaking(bearer(CancelMatchmakingRequest::default(), &bob.token)).await.expect("bob leaves");
    let record = match_record(&fleet, &ann, &m.match_id, "compensated").await;
    assert_eq!((record.reason.as_str(), record.culprits.clone()), ("player_left", vec![bob.id.clone()]));
    let back = mm
        .get_ticket(bearer(GetTicketRequest { ticket_id: a.ticket_id.clone() }, &ann.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.status, "searching");

    // cyd is locked out (five wrong passwords) after his match formed.
    let c = find(&mut mm, &cyd, 2, 2, &[]).await.unwrap();
    let m2 = matched(&mut mm, &cyd, &c.ticket_id).await;
    assert!(m2.match_id != m.match_id);
    for _ in 0..5 {
        let _ = fleet.login_with("cyd", "wrong-password-1").await;
    }
    let record = match_record(&fleet, &ann, &m2.match_id, "compensated").await;
    assert_eq!((record.reason.as_str(), record.culprits.clone()), ("locked_out", vec![cyd.id.clone()]));
    let cyds = wait_player(&mut mm, &cyd, |p| p.locked && p.ticket_id.is_empty()).await;
    assert!(cyds.locked && cyds.ticket_id.is_empty() && cyds.match_id.is_empty(), "{cyds:?}");
    let refused = find(&mut mm, &cyd, 2, 2, &[]).await.unwrap_err();
    // A locked-out user's token may already be refused; if not, the player is.
    assert!(refused.code() == Code::Unauthenticated || rule_of(&refused) == "LOCKED_OUT", "{refused:?}");
    let back = mm
        .get_ticket(bearer(GetTicketRequest { ticket_id: a.ticket_id.clone() }, &ann.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((back.status.as_str(), back.created_at_ms), ("searching", a.created_at_ms));
}

#[tokio::test]
async fn a_player_already_in_a_game_is_not_joined_and_the_match_is_cancelled() {
    let fleet = Fleet::start(&FAST);
    let mut mm = fleet.matchmaking().await;
    let mut games = fleet.game().await;
    let (ann, bob) = (fleet.gamer("ann").await, fleet.gamer("bob").await);
    let b = find(&mut mm, &bob, 2, 2, &[]).await.unwrap();
    // bob starts a solo game while queued.
    let solo = started_game(&mut games, &[&bob], "meadow", "normal").await;
    let p = wait_player(&mut mm, &bob, |p| p.session_id == solo).await;
    assert_eq!(p.session_id, solo);
    let a = find(&mut mm, &ann, 2, 2, &[]).await.unwrap();
    let m = matched(&mut mm, &ann, &a.ticket_id).await;
    let record = match_record(&fleet, &ann, &m.match_id, "compensated").await;
    assert_eq!((record.reason.as_str(), record.culprits.clone()), ("player_unavailable", vec![bob.id.clone()]));
    assert!(record.session_id.is_empty(), "cancelled before a session was made");
    let back = mm
        .get_ticket(bearer(GetTicketRequest { ticket_id: a.ticket_id.clone() }, &ann.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.status, "searching");
    let dropped = mm
        .get_ticket(bearer(GetTicketRequest { ticket_id: b.ticket_id.clone() }, &bob.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dropped.status, "cancelled");
}

#[tokio::test]
async fn two_hundred_tickets_are_all_matched_or_expired_parties_stay_together_and_nobody_is_in_two_matches() {
    let env = [
        ("TIMESQUARE_MM_INTERVAL_MS", "100"),
        ("TIMESQUARE_MM_CONFIRM_SECS", "10"),
        ("TIMESQUARE_MM_FILL_AFTER_MS", "2000"),
        ("TIMESQUARE_MM_TICKET_TTL_SECS", "25"),
        ("TIMESQUARE_MM_WINDOW", "60"),
        ("TIMESQUARE_MM_WIDEN_PER_SEC", "15"),
        ("AUTH_RATE_PER_CLIENT", "100000"),
    ];
    let fleet = Fleet::start(&env);
    let players = gamers(&fleet, "p", 230, 8).await;
    // A history that spreads the ratings: wins on hard and losses on easy.
    for (i, p) in players.iter().enumerate() {
        for _ in 0..(i % 4) {
            publish_game(&fleet, &[p], "meadow", "hard", "victory", 20).await;
        }
        for _ in 0..(i % 3) {
            publish_game(&fleet, &[p], "meadow", "easy", "defeat", 2).await;
        }
    }
    let mut mm = fleet.matchmaking().await;
    let last = players.last().unwrap();
    let settled = (players.len() - 1) % 4 + (players.len() - 1) % 3;
    wait_player(&mut mm, last, |p| p.games_played as usize == settled).await;
    // 200 tickets: 170 alone, 30 parties of two (the leaders' friends do not queue).
    let (solo, pairs) = players.split_at(170);
    let mut tickets = Vec::new();
    for p in solo {
        tickets.push((p.clone(), Vec::<Gamer>::new()));
    }
    for pair in pairs.chunks(2) {
        tickets.push((pair[0].clone(), vec![pair[1].clone()]));
    }
    assert_eq!(tickets.len(), 200);
    let endpoint = fleet.endpoint("timesquare");
    let mut tasks = Vec::new();
    for (i, (who, party)) in tickets.into_iter().enumerate() {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut mm = Fleet::matchmaking_at(&endpoint).await;
            let (min, max) = (2 + (i % 2) as u32, 4 - (i % 3 == 0) as u32);
            let party_refs: Vec<&Gamer> = party.iter().collect();
            let t = find(&mut mm, &who, min, max.max(min), &party_refs).await.expect("queue");
            let seen = follow_ticket(&mut mm, &who, &t.ticket_id, |v| {
                matches!(v.status.as_str(), "ready" | "expired" | "cancelled")
            })
            .await;
            (t, party, seen, who)
        }));
    }
    // The players of every match that forms confirm it.
    let confirmer = {
        let endpoint = endpoint.clone();
        let store = RedisEventStore::connect(&fleet.redis_url(), 16).await.unwrap();
        let everyone: BTreeMap<String, String> = players.iter().map(|p| (p.id.clone(), p.token.clone())).collect();
        tokio::spawn(async move {
            let mut mm = Fleet::matchmaking_at(&endpoint).await;
            let mut done = BTreeSet::new();
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                for p in 0..16 {
                    let log = allies_store::keys::log_key("match", p);
                    let mut c = store.connection();
                    let r: redis::streams::StreamRangeReply =
                        redis::cmd("XRANGE").arg(&log).arg("-").arg("+").query_async(&mut c).await.unwrap_or_default();
                    for e in r.ids {
                        if allies_store::entry_text(&e, "event_type") != Some("MatchFormed") {
                            continue;
                        }
                        let id = allies_store::entry_text(&e, "aggregate_id").unwrap_or_default().to_owned();
                        if !done.insert(id.clone()) {
                            continue;
                        }
                        let m: Vec<MatchEvent> = {
                            let records = store.read("match", &id, 1, 1).await.unwrap_or_default();
                            records.iter().filter_map(|r| r.decode::<MatchEvent>().ok().map(|e| e.payload)).collect()
                        };
                        if let Some(MatchEvent::Formed(f)) = m.first() {
                            for p in &f.players {
                                let request = ConfirmMatchRequest { match_id: id.clone() };
                                let _ = mm.confirm_match(bearer(request, &everyone[&p.user_id])).await;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("client"));
    }
    confirmer.abort();

    // Every ticket ended ready or expired.
    let mut sessions_of_player: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ready = 0;
    for (_, party, seen, who) in &results {
        let last = seen.last().expect("a status");
        assert!(matches!(last.status.as_str(), "ready" | "expired"), "{}: {seen:?}", who.name);
        if last.status == "ready" {
            ready += 1;
            let game = state(&mut fleet.game().await, &last.session_id, who).await;
            let members: BTreeSet<&str> = game.players.iter().map(|p| p.user_id.as_str()).collect();
            assert!(members.contains(who.id.as_str()));
            for friend in party {
                assert!(members.contains(friend.id.as_str()), "the party plays together");
            }
            for p in std::iter::once(who).chain(party.iter()) {
                sessions_of_player.entry(p.id.clone()).or_default().insert(last.session_id.clone());
            }
        }
    }
    assert!(ready >= 150, "most tickets found a game: {ready} of 200");
    assert!(sessions_of_player.values().all(|s| s.len() == 1), "nobody in two games");

    // Every match that formed: within its window; no player in two matches that went ahead.
    let store = RedisEventStore::connect(&fleet.redis_url(), 16).await.unwrap();
    let mut in_ready_match: BTreeMap<String, String> = BTreeMap::new();
    let mut formed = 0;
    for p in 0..16 {
        let log = allies_store::keys::log_key("match", p);
        let mut c = store.connection();
        let r: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&log).arg("-").arg("+").query_async(&mut c).await.unwrap();
        for e in r.ids.iter().filter(|e| allies_store::entry_text(e, "event_type") == Some("MatchFormed")) {
            formed += 1;
            let id = allies_store::entry_text(e, "aggregate_id").expect("aggregate_id").to_owned();
            let history: Vec<MatchEvent> = events(&fleet, "match", &id).await;
            let Some(MatchEvent::Formed(f)) = history.first() else { panic!() };
            let ratings: Vec<i32> = f
                .tickets
                .iter()
                .map(|t| {
                    let rs: Vec<i32> = f.players.iter().filter(|p| &p.ticket_id == t).map(|p| p.rating).collect();
                    rs.iter().sum::<i32>() / rs.len() as i32
                })
                .collect();
            let spread = ratings.iter().max().unwrap() - ratings.iter().min().unwrap();
            assert!(spread <= f.window && spread == f.spread, "match {id}: spread {spread}, window {}", f.window);
            if history.iter().any(|e| matches!(e, MatchEvent::Ready(_))) {
                for p in &f.players {
                    assert!(
                        in_ready_match.insert(p.user_id.clone(), id.clone()).is_none(),
                        "{} in two matches",
                        p.user_id
                    );
                }
            }
        }
    }
    assert!(formed >= 40, "{formed} matches formed");
    println!("200 tickets: {ready} ready, {} expired; {formed} matches formed", 200 - ready);
}

#[tokio::test]
async fn kill_nine_of_a_replica_mid_saga_resumes_every_match_with_one_session_and_nobody_stranded() {
    let mut fleet = Fleet::start(&FAST);
    let other = fleet.replica("timesquare", &FAST);
    let endpoint_b = other.endpoint();
    let mut a = fleet.matchmaking().await;
    let players = gamers(&fleet, "k", 16, 8).await;
    let mut tickets = Vec::new();
    for p in &players {
        tickets.push(find(&mut a, p, 2, 2, &[]).await.expect("queue on A"));
    }
    // Confirm every match as it forms, through replica B.
    let confirming = {
        let (players, endpoint) = (players.clone(), endpoint_b.clone());
        let tickets = tickets.clone();
        tokio::spawn(async move {
            let mut b = Fleet::matchmaking_at(&endpoint).await;
            let until = Instant::now() + Duration::from_secs(40);
            let mut ready = BTreeSet::new();
            while Instant::now() < until && ready.len() < players.len() {
                for (p, t) in players.iter().zip(&tickets) {
                    if ready.contains(&p.id) {
                        continue;
                    }
                    let Ok(v) =
                        b.get_ticket(bearer(GetTicketRequest { ticket_id: t.ticket_id.clone() }, &p.token)).await
                    else {
                        continue;
                    };
                    let v = v.into_inner();
                    if v.status == "matched" {
                        let _ = confirm(&mut b, p, &v.match_id).await;
                    } else if v.status == "ready" {
                        ready.insert(p.id.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ready.len()
        })
    };
    // A dies as soon as the first match forms: mid-saga for some matches.
    let store = RedisEventStore::connect(&fleet.redis_url(), 16).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut formed = 0;
        for p in 0..16 {
            let mut c = store.connection();
            let n: u64 =
                redis::cmd("XLEN").arg(allies_store::keys::log_key("match", p)).query_async(&mut c).await.unwrap();
            formed += n;
        }
        if formed > 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fleet.service_mut("timesquare").kill();
    let ready = confirming.await.unwrap();
    if ready != players.len() {
        let mut b = Fleet::matchmaking_at(&endpoint_b).await;
        for (p, t) in players.iter().zip(&tickets) {
            let v = b.get_ticket(bearer(GetTicketRequest { ticket_id: t.ticket_id.clone() }, &p.token)).await;
            let v = v.map(|v| v.into_inner());
            if let Ok(v) = &v
                && v.status != "ready"
            {
                let m =
                    b.get_match_state(bearer(GetMatchStateRequest { match_id: v.match_id.clone() }, &p.token)).await;
                eprintln!("{}: {v:?}\n  match: {m:?}\n  player: {:?}", p.name, player_state(&mut b, p).await);
                let te: Vec<allies_contracts::timesquare::events::TicketEvent> =
                    events(&fleet, "ticket", &v.ticket_id).await;
                eprintln!("  ticket events: {te:?}");
                if !v.match_id.is_empty() {
                    let me: Vec<MatchEvent> = events(&fleet, "match", &v.match_id).await;
                    eprintln!("  match events: {me:?}");
                }
            }
        }
        eprintln!("B's log:\n{}", other.logs());
    }
    assert_eq!(ready, players.len(), "every player reached a game through B");

    // One session per match, each player in exactly one, nobody left in a match.
    let mut b = Fleet::matchmaking_at(&endpoint_b).await;
    let mut sessions = BTreeMap::new();
    for (p, t) in players.iter().zip(&tickets) {
        let v = b
            .get_ticket(bearer(GetTicketRequest { ticket_id: t.ticket_id.clone() }, &p.token))
            .await
            .unwrap()
            .into_inner();
        let created: Vec<allies_contracts::timesquare::events::GameEvent> =
            events(&fleet, "game_session", &v.session_id).await;
        let creations =
            created.iter().filter(|e| matches!(e, allies_contracts::timesquare::events::GameEvent::Created(_))).count();
        assert_eq!(creations, 1, "one session for match {}", v.match_id);
        sessions.entry(v.session_id.clone()).or_insert_with(BTreeSet::new).insert(p.id.clone());
        // The ticket leaves the player through the ticket group: eventually.
        let state = wait_player(&mut b, p, |s| s.ticket_id.is_empty()).await;
        assert_eq!(
            (state.match_id.as_str(), state.ticket_id.as_str(), state.session_id.as_str()),
            ("", "", v.session_id.as_str()),
            "{}",
            other.logs().lines().filter(|l| !l.contains(" INFO ")).collect::<Vec<_>>().join("\n")
        );
    }
    assert_eq!(sessions.len(), players.len() / 2);
    assert!(sessions.values().all(|s| s.len() == 2));
    let logs = other.logs();
    let claimed: Vec<&str> = logs.lines().filter(|l| l.contains("claimed an idle entry")).collect();
    eprintln!("B claimed {} entries A left pending:\n{}", claimed.len(), claimed.join("\n"));
    drop(other);
}

#[tokio::test]
async fn leaderboards_rank_by_rating_best_wave_and_week_keep_old_weeks_page_around_a_player_and_hide_private_fields() {
    use allies_contracts::projector::v1::{GetLeaderboardRequest, GetLeaderboardResponse, GetPlayerRequest};
    let fleet = Fleet::start(&FAST);
    let players = gamers(&fleet, "lb", 12, 6).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let last_week = now - 7 * 86_400_000;
    // Player 0 won last week; this week everyone plays: i victories on
    // hard, and one defeat on canyon/normal reaching wave (7i mod 12).
    publish_game_at(&fleet, &[&players[0]], ("meadow", "easy"), "victory", 20, last_week).await;
    for (i, p) in players.iter().enumerate() {
        for _ in 0..i {
            publish_game(&fleet, &[p], "meadow", "hard", "victory", 20).await;
        }
        publish_game(&fleet, &[p], "canyon", "normal", "defeat", (7 * i as u32) % 12).await;
    }
    let wave_of = |i: usize| i64::from((7 * i as u32) % 12);
    let mut q = fleet.player_queries().await;
    let board = |q: &mut allies_contracts::projector::v1::player_query_service_client::PlayerQueryServiceClient<
        tonic::transport::Channel,
    >,
                 r: GetLeaderboardRequest,
                 token: String| {
        let mut q = q.clone();
        async move { q.get_leaderboard(bearer(r, &token)).await.map(|r| r.into_inner()) }
    };
    let me = &players[3];
    let rating = |q: &mut _| board(q, GetLeaderboardRequest { limit: 100, ..Default::default() }, me.token.clone());
    // Wait until the read model has every game of every player (player i:
    // i + 1 this week, player 0 one more last week); partitions apply in parallel.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, p) in players.iter().enumerate() {
        let want = (i + 1 + usize::from(i == 0)) as u32;
        loop {
            let r = GetPlayerRequest { user_id: p.id.clone(), consistency_token: String::new() };
            let got = q.get_player(bearer(r, &me.token)).await.map(|p| p.into_inner().player.unwrap_or_default());
            if got.as_ref().is_ok_and(|g| g.games_played == want) {
                break;
            }
            assert!(Instant::now() < deadline, "player {i}: the read model never caught up: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A player who never played has a profile but no rank.
    let (newcomer, _) = fleet.player("lbnewcomer").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let fresh = loop {
        let r = GetPlayerRequest { user_id: newcomer.clone(), consistency_token: String::new() };
        if let Ok(p) = q.get_player(bearer(r, &me.token)).await {
            break p.into_inner().player.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "the newcomer's profile never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((fresh.games_played, fresh.rating_rank), (0, 0), "{fresh:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rating: every player who played, best first, each value the player's own rating.
    let r: GetLeaderboardResponse = rating(&mut q).await.expect("rating board");
    assert_eq!((r.board.as_str(), r.total, r.entries.len()), ("rating", 12, 12));
    assert!(r.entries.iter().all(|e| e.user_id != newcomer), "no rank before a first game");
    // Best first; ties share a rank and the next one skips ("1, 2, 2, 4").
    let ranked = |w: &[allies_contracts::projector::v1::LeaderboardEntry]| {
        w[0].value >= w[1].value
            && if w[0].value == w[1].value { w[0].rank == w[1].rank } else { w[1].rank > w[0].rank }
    };
    assert!(r.entries.windows(2).all(ranked));
    assert!(r.entries.iter().enumerate().all(|(i, e)| e.rank <= i as u64 + 1));
    // (Elo depends on the order games are recorded, which the games topic's
    // partitions do not fix; the one who never won on hard is last either way.)
    assert_eq!(r.entries[11].user_id, players[0].id, "no victory on hard: last");
    for e in &r.entries {
        let req = GetPlayerRequest { user_id: e.user_id.clone(), consistency_token: String::new() };
        let p = q.get_player(bearer(req, &me.token)).await.unwrap().into_inner().player.unwrap();
        assert_eq!((i64::from(p.rating), p.rating_rank), (e.value, e.rank));
    }
    // The page around a player: them in the middle, ranks contiguous.
    let req = GetLeaderboardRequest { limit: 5, around_user_id: players[5].id.clone(), ..Default::default() };
    let page = board(&mut q, req, me.token.clone()).await.unwrap();
    let at = page.entries.iter().position(|e| e.user_id == players[5].id).expect("the player is on the page");
    assert_eq!((page.entries.len(), at), (5, 2), "{page:?}");
    assert!(page.entries.windows(2).all(ranked));

    // Best wave on canyon/normal: only those who reached a wave, best first.
    let req = GetLeaderboardRequest {
        board: "wave".into(),
        map: "canyon".into(),
        difficulty: "normal".into(),
        limit: 100,
        ..Default::default()
    };
    let waves = board(&mut q, req, me.token.clone()).await.unwrap();
    let mut want: Vec<i64> = (0..12).map(wave_of).filter(|w| *w > 0).collect();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(waves.entries.iter().map(|e| e.value).collect::<Vec<_>>(), want);
    assert_eq!(waves.board, "wave:canyon:normal");

    // Weekly: this week's board does not hold last week's win; last week's
    // board still does.
    let this_week = allies_core::calendar::iso_week(now);
    let week =
        |w: &str| GetLeaderboardRequest { board: "weekly".into(), week: w.into(), limit: 100, ..Default::default() };
    let current = board(&mut q, week(""), me.token.clone()).await.unwrap();
    assert_eq!(current.board, format!("weekly:{this_week}"));
    assert!(current.entries.iter().all(|e| e.user_id != players[0].id), "player 0 scored nothing this week");
    assert_eq!(current.entries[0].user_id, players[11].id);
    let old = board(&mut q, week(&allies_core::calendar::iso_week(last_week)), me.token.clone()).await.unwrap();
    assert_eq!(
        old.entries.iter().map(|e| (e.user_id.clone(), e.value)).collect::<Vec<_>>(),
        vec![(players[0].id.clone(), 2_000)]
    );

    // Bad requests name every bad field and change nothing; no token, no board.
    let bad =
        GetLeaderboardRequest { board: "wave".into(), limit: 1_000, around_user_id: "x".into(), ..Default::default() };
    let e = board(&mut q, bad, me.token.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for field in ["map", "difficulty", "limit", "around_user_id"] {
        assert!(e.message().contains(field), "{field} in {}", e.message());
    }
    let e = board(&mut q, week("2026-47"), me.token.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = q.get_leaderboard(GetLeaderboardRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Where a player is, is theirs (and admins'): another player sees the profile only.
    let mut mm = fleet.matchmaking().await;
    let t = find(&mut mm, &players[1], 4, 4, &[]).await.expect("queue");
    let seen_by = |token: String| {
        let mut q = q.clone();
        let id = players[1].id.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let req = GetPlayerRequest { user_id: id.clone(), consistency_token: String::new() };
                let p = q.get_player(bearer(req, &token)).await.unwrap().into_inner().player.unwrap();
                // Registered, two games, queued: version 4.
                if p.version >= 4 || Instant::now() > deadline {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    let own = seen_by(players[1].token.clone()).await;
    assert_eq!(own.ticket_id, t.ticket_id);
    let admin = seen_by(fleet.admin().await).await;
    assert_eq!(admin.ticket_id, t.ticket_id);
    let other = seen_by(players[2].token.clone()).await;
    assert_eq!((other.username.as_str(), other.ticket_id.as_str(), other.rating), ("lb001", "", own.rating));
}

#[tokio::test]
async fn the_cli_matches_two_players_from_two_terminals_and_shows_the_match_the_players_and_the_boards() {
    let env = [FAST[0], FAST[1], FAST[2], ("GUARDIAN_BOOTSTRAP_ADMINS", "boss")];
    let fleet = std::sync::Arc::new(Fleet::start(&env));
    for name in ["ann", "bob", "boss"] {
        fleet.register(name).await;
    }
    let home = tempfile::tempdir().unwrap();
    let path = home.path().to_owned();
    let run = {
        let (fleet, path) = (fleet.clone(), path.clone());
        move |profile: &str, args: &[&str]| {
            let mut all = vec!["--profile", profile];
            all.extend_from_slice(args);
            let out = fleet.cli(&path, &all);
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    for name in ["ann", "bob", "boss"] {
        run(name, &["login", "--username", name, "--password", allies_e2e::PASSWORD]);
    }
    // Two terminals: each queues and waits; the matchmaker pairs them, each confirms.
    let terminal = |who: &'static str| {
        let run = run.clone();
        std::thread::spawn(move || {
            run(
                who,
                &["match", "find", "--difficulty", "easy", "--min", "2", "--max", "2", "--map", "meadow", "--wait"],
            )
        })
    };
    let (ann, bob) = (terminal("ann"), terminal("bob"));
    let (ann, bob) = (ann.join().unwrap(), bob.join().unwrap());
    for out in [&ann, &bob] {
        assert!(out.contains("queued: ticket") && out.contains("· matched ·") && out.contains("· ready ·"), "{out}");
        assert!(out.contains("your game: "), "{out}");
    }
    let game = |out: &str| {
        out.lines().find_map(|l| l.strip_prefix("your game: ")).unwrap().split(' ').next().unwrap().to_owned()
    };
    assert_eq!(game(&ann), game(&bob), "one game for both");
    let match_id = ann.lines().find_map(|l| l.split("· match ").nth(1)).unwrap().split(' ').next().unwrap().to_owned();

    // The match's game is the profile's current game: ready, start, forfeit.
    run("ann", &["game", "ready"]);
    run("bob", &["game", "ready"]);
    // The match's host is its oldest ticket's player: whoever queued first.
    let started = fleet.cli(&path, &["--profile", "ann", "game", "start"]);
    let host = if started.status.success() { "ann" } else { "bob" };
    if host == "bob" {
        assert!(String::from_utf8_lossy(&started.stderr).contains("HOST_ONLY"));
        assert!(run("bob", &["game", "start"]).contains("building"));
    }
    run(host, &["game", "end", "--reason", "cli test"]);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = run("bob", &["match", "show", &match_id]);
        let me = run("ann", &["player", "show"]);
        if shown.contains("· ready ·") && me.contains("1 played") {
            assert!(shown.contains(&format!("game: {}", game(&ann))), "{shown}");
            assert!(me.contains("rating:   1500"), "a forfeit does not rate: {me}");
            assert!(!me.contains("now:"), "the game is over: {me}");
            break;
        }
        assert!(Instant::now() < deadline, "{shown}\n{me}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let top = run("bob", &["leaderboard"]);
    // Ranked: the two who played (a registered player who never played is not).
    assert!(top.starts_with("rating (2 players)") && top.contains("ann") && top.contains("bob"), "{top}");
    // Both still at 1500 (a forfeit does not rate): a tie, both first.
    assert_eq!(top.lines().filter(|l| l.trim_start().starts_with("1. ")).count(), 2, "{top}");
    let around = run("bob", &["leaderboard", "--board", "weekly", "--around", "me"]);
    assert!(around.starts_with("weekly:"), "{around}");
    let json: serde_json::Value = serde_json::from_str(&run(
        "ann",
        &["--json", "leaderboard", "--board", "wave", "--map", "meadow", "--difficulty", "easy"],
    ))
    .unwrap();
    assert_eq!(json["board"], "wave:meadow:easy");
    let subs = run("boss", &["subscriptions"]);
    for group in ["ts.matches", "ts.tickets", "ts.users", "ts.players", "rm.player", "rm.match"] {
        assert!(subs.contains(group), "{group} in {subs}");
    }
    // A ticket to cancel: queued, then cancelled, and the cancel is final.
    let queued = run("ann", &["match", "find", "--min", "4", "--max", "4"]);
    assert!(queued.contains("searching"), "{queued}");
    assert!(run("ann", &["match", "cancel"]).contains("cancelled"));
    let ticket = queued.split("ticket ").nth(1).unwrap().split(' ').next().unwrap();
    let watched = run("ann", &["match", "watch", ticket]);
    assert!(watched.trim_end().lines().last().unwrap().contains("· cancelled ·"), "{watched}");
}
