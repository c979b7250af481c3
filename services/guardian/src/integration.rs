//! What guardian tells other contexts: its internal User events mapped to
//! the versioned integration events of the `users` topic
//! (`proto/defense_allies/guardian/integration/v1`), published by the same
//! append as the domain events.

use allies_contracts::guardian::events::UserEvent;
use allies_contracts::guardian::integration::{TOPIC, UserIntegrationEvent as Out, v1};
use allies_core::EventFormat;
use allies_store::{NewEvent, Priority, Publication};
use guardian_domain::User;

/// The integration events of one command's User events (`user` is the state after them).
pub fn publications(user: &User, events: &[UserEvent], now_ms: i64, format: EventFormat) -> Vec<Publication> {
    let user_id = user.profile.as_ref().map(|p| p.user_id.clone()).unwrap_or_default();
    events
        .iter()
        .filter_map(|e| {
            let (out, priority) = match e {
                UserEvent::Registered(r) => (
                    Out::Registered(v1::UserRegistered {
                        user_id: r.user_id.clone(),
                        username: r.username.clone(),
                        display_name: if r.display_name.is_empty() {
                            r.username.clone()
                        } else {
                            r.display_name.clone()
                        },
                        roles: r.roles.clone(),
                        registered_at_ms: r.registered_at_ms,
                    }),
                    Priority::Normal,
                ),
                UserEvent::LockedOut(l) => (
                    Out::LockedOut(v1::UserLockedOut {
                        user_id: user_id.clone(),
                        locked_until_ms: l.locked_until_ms,
                        at_ms: now_ms,
                    }),
                    Priority::High,
                ),
                UserEvent::Unlocked(u) => (
                    Out::Unlocked(v1::UserUnlocked { user_id: user_id.clone(), at_ms: u.unlocked_at_ms }),
                    Priority::Normal,
                ),
                UserEvent::RolesChanged(r) => (
                    Out::RolesChanged(v1::UserRolesChanged {
                        user_id: user_id.clone(),
                        roles: r.roles.clone(),
                        changed_by: r.changed_by.clone(),
                        at_ms: r.changed_at_ms,
                    }),
                    Priority::Normal,
                ),
                UserEvent::DisplayNameChanged(d) => (
                    Out::DisplayNameChanged(v1::UserDisplayNameChanged {
                        user_id: user_id.clone(),
                        display_name: d.display_name.clone(),
                        at_ms: d.changed_at_ms,
                    }),
                    Priority::Normal,
                ),
                // Logins, failures and password changes stay inside guardian.
                UserEvent::Authenticated(_) | UserEvent::AuthenticationFailed(_) | UserEvent::PasswordChanged(_) => {
                    return None;
                }
            };
            match NewEvent::encode_as(&out, format) {
                Ok(event) => Some(Publication { topic: TOPIC.into(), priority, event }),
                Err(err) => {
                    tracing::error!(error = %err, "cannot encode an integration event");
                    None
                }
            }
        })
        .collect()
}
