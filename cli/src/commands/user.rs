//! `allies user …`: register, read, list, roles, sessions, unlock, display name.

use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::guardian::v1::*;
use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
use allies_contracts::projector::v1::*;
use clap::Subcommand;
use tonic::Code;

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Register a new user (guardian; accepts --command-id).
    Register {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        /// Prefer ALLIES_PASSWORD to keep it out of shell history.
        #[arg(long, env = "ALLIES_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Read a user from the read model (projector): everything for yourself
    /// and admins, the public profile of others.
    Get {
        user_id: String,
        /// Wait up to this many seconds for the user to appear in the read model.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Read-your-writes: the consistency token a command returned.
        #[arg(long)]
        after: Option<String>,
    },
    /// List users: filters, sorting, pages (the role filter is for admins).
    List {
        #[arg(long)]
        role: Option<String>,
        /// Case-insensitive username prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// registered_at (default) or username
        #[arg(long, default_value = "registered_at")]
        sort: String,
        #[arg(long)]
        desc: bool,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The next-page token a previous call printed.
        #[arg(long)]
        page: Option<String>,
    },
    /// Read a user by username (case-insensitive).
    GetByName {
        username: String,
        /// Read-your-writes: the consistency token a command returned.
        #[arg(long)]
        after: Option<String>,
    },
    /// Set a user's roles (admins only).
    Roles {
        user_id: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// Lift a user's lockout (admins only; recorded as UserUnlocked).
    Unlock { user_id: String },
    /// Set the name other players see (your own).
    DisplayName { display_name: String },
    /// A user's sessions, newest first (default: yours; others' for admins).
    Sessions {
        user_id: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

pub fn show_user(u: &User) -> String {
    let private = if u.email.is_empty() && u.roles.is_empty() {
        "\n  (public profile: email, roles and status are private)".to_owned()
    } else {
        format!(
            "\n  email:      {}\n  roles:      {}\n  status:     {}\n  last login: {}",
            u.email,
            u.roles.join(", "),
            u.status,
            crate::output::when(u.last_login_ms),
        )
    };
    format!(
        "{} ({})\n  user id:    {}\n  registered: {}{private}\n  version:    {}",
        u.username,
        u.display_name,
        u.user_id,
        crate::output::when(u.registered_at_ms),
        u.version
    )
}

pub async fn run(command: &UserCommand, ctx: &Context) -> Result<(), Failure> {
    let json = ctx.json;
    match command {
        UserCommand::Register { username, email, password } => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let request =
                RegisterUserRequest { username: username.clone(), email: email.clone(), password: password.clone() };
            let r = client.register_user(ctx.anonymous(request)?).await?.into_inner();
            print(json, &r, || {
                format!(
                    "registered {username}\n  user id:  {}\n  version:  {}\n  token:    {}",
                    r.user_id, r.version, r.consistency_token
                )
            });
        }
        UserCommand::Get { user_id, wait, after } => {
            let mut client = ProjectorQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let deadline = Instant::now() + Duration::from_secs(*wait);
            let user = loop {
                let request =
                    GetUserRequest { user_id: user_id.clone(), consistency_token: after.clone().unwrap_or_default() };
                match client.get_user(ctx.authorized(request)?).await {
                    Ok(r) => break r.into_inner().user.unwrap_or_default(),
                    Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(s) => return Err(s.into()),
                }
            };
            print(json, &user, || show_user(&user));
        }
        UserCommand::List { role, prefix, sort, desc, limit, page } => {
            let mut client = ProjectorQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = ListUsersRequest {
                role: role.clone().unwrap_or_default(),
                username_prefix: prefix.clone().unwrap_or_default(),
                sort_by: sort.clone(),
                descending: *desc,
                page_size: *limit,
                page_token: page.clone().unwrap_or_default(),
            };
            let r = client.list_users(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || {
                let mut lines: Vec<String> = r
                    .users
                    .iter()
                    .map(|u| {
                        let roles =
                            if u.roles.is_empty() { String::new() } else { format!("  roles: {}", u.roles.join(",")) };
                        format!(
                            "{:<24} {}{roles}  registered {}",
                            u.username,
                            u.user_id,
                            crate::output::when(u.registered_at_ms)
                        )
                    })
                    .collect();
                if !r.next_page_token.is_empty() {
                    lines.push(format!("more: --page {}", r.next_page_token));
                }
                lines.join("\n")
            });
        }
        UserCommand::GetByName { username, after } => {
            let mut client = ProjectorQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = GetUserByUsernameRequest {
                username: username.clone(),
                consistency_token: after.clone().unwrap_or_default(),
            };
            let user =
                client.get_user_by_username(ctx.authorized(request)?).await?.into_inner().user.unwrap_or_default();
            print(json, &user, || show_user(&user));
        }
        UserCommand::Roles { user_id, roles } => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let request = ChangeUserRolesRequest { user_id: user_id.clone(), roles: roles.clone() };
            let r = client.change_user_roles(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || format!("roles of {user_id}: {} (version {})", r.roles.join(", "), r.version));
        }
        UserCommand::Unlock { user_id } => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let r =
                client.unlock_user(ctx.authorized(UnlockUserRequest { user_id: user_id.clone() })?).await?.into_inner();
            print(json, &r, || format!("unlocked {user_id} (version {})", r.version));
        }
        UserCommand::DisplayName { display_name } => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let request = SetDisplayNameRequest { display_name: display_name.clone() };
            let r = client.set_display_name(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || format!("display name set to {:?} (version {})", r.display_name, r.version));
        }
        UserCommand::Sessions { user_id, limit } => {
            let user_id = match user_id {
                Some(u) => u.clone(),
                None => ctx.load_saved()?.user_id,
            };
            let mut client = ProjectorQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = ListUserSessionsRequest { user_id, limit: *limit };
            let r = client.list_user_sessions(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || {
                r.sessions.iter().map(crate::commands::auth::show_session).collect::<Vec<_>>().join("\n")
            });
        }
    }
    Ok(())
}
