//! The game context's contracts: the gRPC API and the GameSession events,
//! typed, with their codec.

// A GameUpdate carries one of a full view, an event or a frame; the view is
// the rare, large one, and boxing it would only cost an allocation per frame.
#[allow(clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("defense_allies.timesquare.v1");
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("defense_allies.timesquare.events.v1");
    }

    use v1::*;

    use crate::codec::FirstVersion;

    /// Events of the GameSession aggregate (aggregate type `game_session`).
    #[derive(Debug, Clone, PartialEq)]
    pub enum GameEvent {
        Created(GameSessionCreated),
        PlayerJoined(PlayerJoined),
        PlayerLeft(PlayerLeft),
        PlayerReady(PlayerReady),
        Started(GameStarted),
        TowerPlaced(TowerPlaced),
        TowerUpgraded(TowerUpgraded),
        TowerSold(TowerSold),
        WaveStarted(WaveStarted),
        WaveCompleted(WaveCompleted),
        Ended(GameEnded),
    }

    crate::proto_events!(GameEvent: FirstVersion {
        Created => "GameSessionCreated",
        PlayerJoined => "PlayerJoined",
        PlayerLeft => "PlayerLeft",
        PlayerReady => "PlayerReady",
        Started => "GameStarted",
        TowerPlaced => "TowerPlaced",
        TowerUpgraded => "TowerUpgraded",
        TowerSold => "TowerSold",
        WaveStarted => "WaveStarted",
        WaveCompleted => "WaveCompleted",
        Ended => "GameEnded",
    });

    /// Events of the Player aggregate (aggregate type `player`, id = user id).
    #[derive(Debug, Clone, PartialEq)]
    pub enum PlayerEvent {
        Registered(PlayerRegistered),
        ProfileUpdated(PlayerProfileUpdated),
        Locked(PlayerLocked),
        Unlocked(PlayerUnlocked),
        Queued(PlayerQueued),
        Dequeued(PlayerDequeued),
        EnteredMatch(PlayerEnteredMatch),
        LeftMatch(PlayerLeftMatch),
        EnteredGame(PlayerEnteredGame),
        LeftGame(PlayerLeftGame),
        GameRecorded(PlayerGameRecorded),
    }

    crate::proto_events!(PlayerEvent: FirstVersion {
        Registered => "PlayerRegistered",
        ProfileUpdated => "PlayerProfileUpdated",
        Locked => "PlayerLocked",
        Unlocked => "PlayerUnlocked",
        Queued => "PlayerQueued",
        Dequeued => "PlayerDequeued",
        EnteredMatch => "PlayerEnteredMatch",
        LeftMatch => "PlayerLeftMatch",
        EnteredGame => "PlayerEnteredGame",
        LeftGame => "PlayerLeftGame",
        GameRecorded => "PlayerGameRecorded",
    });

    /// Events of the Ticket aggregate (aggregate type `ticket`).
    #[derive(Debug, Clone, PartialEq)]
    pub enum TicketEvent {
        Created(TicketCreated),
        Claimed(TicketClaimed),
        Released(TicketReleased),
        Cancelled(TicketCancelled),
        Expired(TicketExpired),
        Completed(TicketCompleted),
    }

    crate::proto_events!(TicketEvent: FirstVersion {
        Created => "TicketCreated",
        Claimed => "TicketClaimed",
        Released => "TicketReleased",
        Cancelled => "TicketCancelled",
        Expired => "TicketExpired",
        Completed => "TicketCompleted",
    });

    /// Events of the Party aggregate (aggregate type `party`, id = the host's user id).
    #[derive(Debug, Clone, PartialEq)]
    pub enum PartyEvent {
        InviteSent(PartyInviteSent),
        InviteAccepted(PartyInviteAccepted),
        InviteDeclined(PartyInviteDeclined),
        MemberLeft(PartyMemberLeft),
    }

    crate::proto_events!(PartyEvent: FirstVersion {
        InviteSent => "PartyInviteSent",
        InviteAccepted => "PartyInviteAccepted",
        InviteDeclined => "PartyInviteDeclined",
        MemberLeft => "PartyMemberLeft",
    });

    /// Events of the Match aggregate (aggregate type `match`): the saga.
    #[derive(Debug, Clone, PartialEq)]
    pub enum MatchEvent {
        Formed(MatchFormed),
        TicketsClaimed(MatchTicketsClaimed),
        SessionCreated(MatchSessionCreated),
        PlayerJoined(MatchPlayerJoined),
        AwaitingConfirmation(MatchAwaitingConfirmation),
        PlayerConfirmed(MatchPlayerConfirmed),
        Ready(MatchReady),
        Cancelled(MatchCancelled),
        SessionClosed(MatchSessionClosed),
        TicketReleased(MatchTicketReleased),
        TicketDropped(MatchTicketDropped),
        PlayerReleased(MatchPlayerReleased),
        Compensated(MatchCompensated),
    }

    crate::proto_events!(MatchEvent: FirstVersion {
        Formed => "MatchFormed",
        TicketsClaimed => "MatchTicketsClaimed",
        SessionCreated => "MatchSessionCreated",
        PlayerJoined => "MatchPlayerJoined",
        AwaitingConfirmation => "MatchAwaitingConfirmation",
        PlayerConfirmed => "MatchPlayerConfirmed",
        Ready => "MatchReady",
        Cancelled => "MatchCancelled",
        SessionClosed => "MatchSessionClosed",
        TicketReleased => "MatchTicketReleased",
        TicketDropped => "MatchTicketDropped",
        PlayerReleased => "MatchPlayerReleased",
        Compensated => "MatchCompensated",
    });

    impl GameEvent {
        /// The event without its secret: an invite code's hash (an 8-letter
        /// code's SHA-256 can be brute-forced, so the hash is as good as the
        /// code) is replaced.
        pub fn redacted(mut self) -> Self {
            if let Self::Created(e) = &mut self
                && !e.invite_code_hash.is_empty()
            {
                e.invite_code_hash = crate::guardian::events::REDACTED.into();
            }
            self
        }
    }
}

/// The game context's integration events (topic [`integration::TOPIC`]).
pub mod integration {
    pub mod v1 {
        tonic::include_proto!("defense_allies.timesquare.integration.v1");
    }

    use v1::*;

    use crate::codec::FirstVersion;

    /// The topic games are published on.
    pub const TOPIC: &str = "games";

    /// The topic a game's searchable events are published on as the game
    /// stores them (domain events, not integration events; the version of
    /// each is its command's, the game's version after the append): the
    /// projector's search index of games follows it instead of every game
    /// event of the partition logs. Which events: [`SEARCHABLE`].
    pub const SEARCH_TOPIC: &str = "ts.search";

    /// The game's event types a search document of a game shows.
    pub const SEARCHABLE: &[&str] = &[
        "GameSessionCreated",
        "PlayerJoined",
        "PlayerLeft",
        "GameStarted",
        "WaveStarted",
        "WaveCompleted",
        "GameEnded",
    ];

    #[derive(Debug, Clone, PartialEq)]
    pub enum GameIntegrationEvent {
        Started(GameStarted),
        Ended(GameEnded),
        PlayerLeft(GamePlayerLeft),
    }

    crate::proto_events!(GameIntegrationEvent: FirstVersion {
        Started => "GameStarted",
        Ended => "GameEnded",
        PlayerLeft => "GamePlayerLeft",
    });
}
