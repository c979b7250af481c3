//! Parties need consent: a host invites, the player accepts or declines
//! before the invitation expires, a member leaves or is removed — and
//! FindMatch queues only members. Nobody can put another player in a queue.

use allies_contracts::timesquare::v1::*;
use allies_e2e::game::*;
use allies_e2e::{Fleet, bearer};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_is_queued_without_consent_and_a_party_forms_by_invitation() {
    let fleet = Fleet::start(&[]);
    let mut mm = fleet.matchmaking().await;
    let (mal, vic) = (fleet.gamer("mal").await, fleet.gamer("vic").await);

    // Mallory names Victor as a party member: refused, naming the rule and
    // whom; Victor is not queued and queues on his own.
    let e = find(&mut mm, &mal, 2, 4, &[]).await.map(|_| ());
    assert!(e.is_ok());
    let _ = mm.cancel_matchmaking(bearer(CancelMatchmakingRequest::default(), &mal.token)).await;
    let forced = FindMatchRequest { party: vec![vic.id.clone()], min_players: 2, max_players: 4, ..Default::default() };
    let e = mm.find_match(bearer(forced, &mal.token)).await.unwrap_err();
    assert_eq!((e.code(), rule_of(&e)), (Code::FailedPrecondition, "NOT_IN_PARTY".to_owned()), "{e:?}");
    assert!(e.message().contains(&vic.id), "{}", e.message());
    let own = find(&mut mm, &vic, 2, 4, &[]).await.expect("Victor queues on his own");
    assert_eq!(own.players, vec![vic.id.clone()]);
    mm.cancel_matchmaking(bearer(CancelMatchmakingRequest::default(), &vic.token)).await.expect("cancel");

    // The invitation: seen by the invited player, not by a stranger.
    let (host, bo, cy) = (fleet.gamer("hal").await, fleet.gamer("bob").await, fleet.gamer("cyd").await);
    let invite = |who: &Gamer| InviteToPartyRequest { user_id: who.id.clone() };
    let v = mm.invite_to_party(bearer(invite(&bo), &host.token)).await.expect("invite").into_inner();
    assert_eq!((v.guests.len(), v.guests[0].status.as_str()), (1, "invited"));
    assert!(v.guests[0].expires_at_ms > 0);
    let e = mm.invite_to_party(bearer(invite(&bo), &host.token)).await.unwrap_err();
    assert_eq!(rule_of(&e), "ALREADY_INVITED");
    let e = mm.invite_to_party(bearer(invite(&host), &host.token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mine = mm.list_party_invites(bearer(ListPartyInvitesRequest {}, &bo.token)).await.unwrap().into_inner();
    assert_eq!(mine.invites.iter().map(|i| i.host_id.clone()).collect::<Vec<_>>(), vec![host.id.clone()]);
    let party_of = |id: &str| GetPartyRequest { host_id: id.into() };
    mm.get_party(bearer(party_of(&host.id), &bo.token)).await.expect("the invited player sees the party");
    let e = mm.get_party(bearer(party_of(&host.id), &cy.token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // An invited player is not a member yet.
    let with_bo =
        || FindMatchRequest { party: vec![bo.id.clone()], min_players: 2, max_players: 4, ..Default::default() };
    let e = mm.find_match(bearer(with_bo(), &host.token)).await.unwrap_err();
    assert_eq!(rule_of(&e), "NOT_IN_PARTY");

    // Declined: gone. Invited again and accepted: a member, queued together.
    let answer = |accept| RespondToPartyInviteRequest { host_id: host.id.clone(), accept };
    let v = mm.respond_to_party_invite(bearer(answer(false), &bo.token)).await.expect("decline").into_inner();
    assert!(v.guests.is_empty());
    let e = mm.respond_to_party_invite(bearer(answer(true), &bo.token)).await.unwrap_err();
    assert_eq!(rule_of(&e), "NO_INVITATION");
    mm.invite_to_party(bearer(invite(&bo), &host.token)).await.expect("invite again");
    let v = mm.respond_to_party_invite(bearer(answer(true), &bo.token)).await.expect("accept").into_inner();
    assert_eq!((v.guests[0].user_id.as_str(), v.guests[0].status.as_str()), (bo.id.as_str(), "member"));
    let t = mm.find_match(bearer(with_bo(), &host.token)).await.expect("queue with the party").into_inner();
    assert_eq!(t.players, vec![host.id.clone(), bo.id.clone()]);
    mm.cancel_matchmaking(bearer(CancelMatchmakingRequest::default(), &bo.token)).await.expect("a member cancels");

    // Bo leaves: the host cannot queue him any more. Cy joins and is removed by the host.
    let leave = |host: &Gamer, user: &str| LeavePartyRequest { host_id: host.id.clone(), user_id: user.into() };
    mm.leave_party(bearer(leave(&host, ""), &bo.token)).await.expect("bo leaves");
    let e = mm.find_match(bearer(with_bo(), &host.token)).await.unwrap_err();
    assert_eq!(rule_of(&e), "NOT_IN_PARTY");
    form_party(&mut mm, &host, &[&cy]).await;
    let e = mm.leave_party(bearer(leave(&host, &cy.id), &bo.token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "only the member or the host: {e:?}");
    let v = mm.leave_party(bearer(leave(&host, &cy.id), &host.token)).await.expect("the host removes cy").into_inner();
    assert!(v.guests.is_empty(), "{v:?}");
}

#[tokio::test]
async fn the_cli_invites_accepts_and_queues_a_party_by_username() {
    let fleet = Fleet::start(&[]);
    for name in ["ann", "bob"] {
        let id = fleet.register(name).await;
        fleet.wait_for_user(&id).await;
    }
    let home = tempfile::tempdir().unwrap();
    let run = |profile: &str, args: &[&str]| {
        let mut all = vec!["--profile", profile];
        all.extend_from_slice(args);
        let out = fleet.cli(home.path(), &all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for name in ["ann", "bob"] {
        assert!(run(name, &["login", "--username", name, "--password", allies_e2e::PASSWORD]).0);
    }
    // Without bob's consent, ann cannot queue him.
    let (ok, out) = run("ann", &["match", "find", "--party", "bob"]);
    assert!(!ok && out.contains("NOT_IN_PARTY"), "{out}");
    let (ok, out) = run("ann", &["match", "invite", "bob"]);
    assert!(ok && out.contains("invited bob"), "{out}");
    let (ok, out) = run("bob", &["match", "invites"]);
    assert!(ok && out.contains("invites you (until 20"), "{out}");
    let (ok, out) = run("bob", &["match", "accept", "ann"]);
    assert!(ok && out.contains("accepted") && out.contains("member"), "{out}");
    let (ok, out) = run("ann", &["match", "party"]);
    assert!(ok && out.contains("member"), "{out}");
    let (ok, out) = run("ann", &["match", "find", "--party", "bob", "--min", "2", "--max", "4"]);
    assert!(ok && out.contains("2 player(s)"), "{out}");
    let (ok, out) = run("bob", &["match", "cancel"]);
    assert!(ok, "{out}");
    let (ok, out) = run("bob", &["match", "leave", "--host", "ann"]);
    assert!(ok && out.contains("left"), "{out}");
}
