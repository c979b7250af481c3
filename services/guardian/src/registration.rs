//! RegisterUser, from validated input to appended events.

use allies_core::{Aggregate, CommandContext, ExpectedVersion};
use allies_store::{AppendError, AppendOutcome, EventStore, StoreError};

use crate::domain::{self, InvalidField, RegisterUser, User, UserCommand, UserError};
use crate::password::{HashError, PasswordHasher};

/// How often a command is re-run after a version conflict before the caller
/// gets Aborted.
const MAX_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error(transparent)]
    Rejected(#[from] UserError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("password hashing failed: {0}")]
    Hashing(#[from] HashError),
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub user_id: String,
    pub outcome: AppendOutcome,
}

pub async fn register(
    store: &EventStore,
    hasher: &PasswordHasher,
    username: &str,
    email: &str,
    password: &str,
    ctx: &CommandContext,
) -> Result<Registered, RegisterError> {
    domain::validate_username(username)?;
    domain::validate_email(email)?;
    domain::validate_password(password, username)?;
    let user_id = domain::user_id_for(username).to_string();

    // Cheap refusal before the expensive hash; the append below is what
    // actually guarantees uniqueness.
    let (user, _) = store.load::<User>(&user_id).await?;
    if user.profile.is_some() {
        return Err(UserError::UsernameTaken(username.to_owned()).into());
    }
    let password_hash = hasher.hash(password).await?;
    let command = UserCommand::Register(RegisterUser {
        username: username.to_owned(),
        email: email.to_owned(),
        password_hash,
        registered_at_ms: ctx.now_ms,
    });

    let mut attempt = 0;
    loop {
        attempt += 1;
        let (user, version) = if attempt == 1 {
            (user.clone(), 0)
        } else {
            store.load::<User>(&user_id).await?
        };
        let events = user.decide(&command)?;
        match store
            .append_events::<User>(
                &user_id,
                ExpectedVersion::after_load(version),
                &ctx.metadata,
                ctx.now_ms,
                &events,
            )
            .await
        {
            Ok(outcome) => return Ok(Registered { user_id, outcome }),
            Err(AppendError::Conflict { .. }) if attempt < MAX_ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
