//! The read models. Adding one: a file here implementing
//! [`Projection`](crate::registry::Projection), and one line in [`registry`].

pub mod games;
pub mod matches;
pub mod players;
pub mod sessions;
pub mod users;

use crate::registry::Registry;

/// Every projection the projector runs.
pub fn registry() -> Registry {
    Registry::new()
        .register(users::Users)
        .register(sessions::Sessions)
        .register(games::Games)
        .register(players::Players)
        .register(matches::Matches)
}
