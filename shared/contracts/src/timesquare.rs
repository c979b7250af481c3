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
