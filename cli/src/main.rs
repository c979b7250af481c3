//! `allies`: drives every API of the fleet from the command line.
//!
//! Readable output by default, `--json` for scripts. A failed call prints the
//! gRPC status code and message (and field violations, retry hints) and
//! exits with 1. `allies login` keeps the tokens in `$ALLIES_HOME/session.json`
//! (default `~/.allies`, mode 0600) for later calls.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::guardian::v1::*;
use allies_contracts::projector::v1::event_subscription_service_client::EventSubscriptionServiceClient;
use allies_contracts::projector::v1::projector_admin_service_client::ProjectorAdminServiceClient;
use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
use allies_contracts::projector::v1::*;
use allies_contracts::timesquare::v1::WhoAmIRequest;
use allies_contracts::timesquare::v1::player_service_client::PlayerServiceClient;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

#[derive(Parser)]
#[command(name = "allies", version, about = "Command-line client of the Defense Allies fleet")]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Guardian (authentication) endpoint.
    #[arg(long, global = true, env = "ALLIES_GUARDIAN", default_value = "http://127.0.0.1:50051")]
    guardian: String,
    /// Timesquare (game) endpoint.
    #[arg(long, global = true, env = "ALLIES_TIMESQUARE", default_value = "http://127.0.0.1:50052")]
    timesquare: String,
    /// Command (operations) endpoint.
    #[arg(long, global = true, env = "ALLIES_COMMAND", default_value = "http://127.0.0.1:50053")]
    command: String,
    /// Projector (queries) endpoint.
    #[arg(long, global = true, env = "ALLIES_PROJECTOR", default_value = "http://127.0.0.1:50054")]
    projector: String,
    /// Access token to send instead of the one `allies login` kept.
    #[arg(long, global = true, env = "ALLIES_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Deadline of each call, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command_: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Users: register, read, roles, sessions.
    #[command(subcommand)]
    User(UserCommand),
    /// Log in; the tokens are kept for later calls.
    Login {
        #[arg(long)]
        username: String,
        /// Prefer ALLIES_PASSWORD to keep it out of shell history.
        #[arg(long, env = "ALLIES_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Who the kept access token says you are (checked by timesquare).
    Whoami,
    /// Exchange the kept refresh token for new tokens.
    Refresh {
        /// Use this refresh token instead of the kept one.
        #[arg(long)]
        refresh_token: Option<String>,
    },
    /// End the session of the kept token.
    Logout,
    /// Change your password.
    Password {
        #[arg(long, env = "ALLIES_PASSWORD", hide_env_values = true)]
        current: String,
        #[arg(long, env = "ALLIES_NEW_PASSWORD", hide_env_values = true)]
        new: String,
    },
    /// Read one session from the read model.
    Session { session_id: String },
    /// Guardian's token-verification keys (JWKS).
    Jwks,
    /// Follow a category's events as they happen (admins only); one JSON line each.
    Follow {
        /// Aggregate type: user, session, …
        category: String,
        /// "start", a cursor from an earlier line, or nothing for "from now".
        #[arg(long, default_value = "")]
        from: String,
        /// Stop after this many events (0 = follow until interrupted).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Every projection's state, counts, lag and last error (admins only).
    Projections,
    /// Blue/green rebuild of a projection from the start of the logs (admins only).
    Rebuild { projection: String },
    /// Compare a projection's read models with its events (admins only).
    Check {
        /// rm.user or rm.session
        projection: String,
        /// Rewrite every read model that drifted.
        #[arg(long)]
        repair: bool,
    },
    /// Dead letters of a projection (admins only).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Health of every service (grpc.health.v1).
    Health {
        /// Keep asking until every service is SERVING or this many seconds pass.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Check only this service.
        #[arg(long, value_parser = ["guardian", "timesquare", "command", "projector"])]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List a projection's dead letters (rm.user, rm.session).
    List {
        projection: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Run dead letters through the projection again.
    Replay {
        projection: String,
        #[command(flatten)]
        which: Which,
    },
    /// Delete dead letters.
    Purge {
        projection: String,
        #[command(flatten)]
        which: Which,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// Dead letter ids (as `dlq list` shows them).
    #[arg(long = "id")]
    ids: Vec<String>,
    #[arg(long)]
    event_type: Option<String>,
    #[arg(long)]
    all: bool,
}

impl Which {
    fn selection(&self, projection: &str) -> DeadLetterSelection {
        DeadLetterSelection {
            projection: projection.to_owned(),
            ids: self.ids.clone(),
            event_type: self.event_type.clone().unwrap_or_default(),
            all: self.all,
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Register a new user (guardian).
    Register {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        /// Prefer ALLIES_PASSWORD to keep it out of shell history.
        #[arg(long, env = "ALLIES_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Read a user from the read model (projector).
    Get {
        user_id: String,
        /// Wait up to this many seconds for the user to appear in the read model.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Read-your-writes: the consistency token a command returned.
        #[arg(long)]
        after: Option<String>,
    },
    /// List users: filters, sorting, pages.
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
    GetByName { username: String },
    /// Set a user's roles (admins only).
    Roles {
        user_id: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// A user's sessions, newest first (default: yours).
    Sessions {
        user_id: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

struct Failure(String);

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        let mut msg = format!("{:?}: {}", s.code(), s.message());
        let details = s.get_error_details();
        if let Some(br) = details.bad_request() {
            for v in &br.field_violations {
                msg.push_str(&format!("\n  field `{}`: {}", v.field, v.description));
            }
        }
        if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
            msg.push_str(&format!("\n  retry after {:.1} s", delay.as_secs_f64()));
        }
        Failure(msg)
    }
}

/// What `allies login` keeps.
#[derive(Serialize, Deserialize, Default)]
struct Saved {
    access_token: String,
    refresh_token: String,
    user_id: String,
    session_id: String,
    roles: Vec<String>,
}

fn saved_path() -> PathBuf {
    std::env::var_os("ALLIES_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".allies")))
        .unwrap_or_else(|| PathBuf::from(".allies"))
        .join("session.json")
}

fn load_saved() -> Result<Saved, Failure> {
    let path = saved_path();
    let text = std::fs::read_to_string(&path)
        .map_err(|_| Failure(format!("not logged in (no {}): run `allies login`", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Failure(format!("{} is unreadable: {e}", path.display())))
}

fn save(s: &Saved) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = saved_path();
    let fail = |e: std::io::Error| Failure(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(fail)?;
    f.write_all(serde_json::to_string_pretty(s).unwrap_or_default().as_bytes()).map_err(fail)
}

fn authorized<T>(message: T, token: &str) -> Result<Request<T>, Failure> {
    let mut r = Request::new(message);
    let value = format!("Bearer {token}").parse().map_err(|_| Failure("the access token is not ASCII".into()))?;
    r.metadata_mut().insert("authorization", value);
    Ok(r)
}

async fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, Failure> {
    let ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| Failure(format!("invalid endpoint {endpoint}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout);
    ep.connect().await.map_err(|e| Failure(format!("Unavailable: cannot reach {endpoint}: {e}")))
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        println!("{}", text());
    }
}

fn show_user(u: &User) -> String {
    format!(
        "{}\n  user id:    {}\n  email:      {}\n  roles:      {}\n  status:     {}\n  registered: {} (unix ms)\n  last login: {}\n  version:    {}",
        u.username,
        u.user_id,
        u.email,
        u.roles.join(", "),
        u.status,
        u.registered_at_ms,
        if u.last_login_ms == 0 { "never".to_owned() } else { format!("{} (unix ms)", u.last_login_ms) },
        u.version
    )
}

fn show_session(s: &Session) -> String {
    format!(
        "session {}\n  user id:   {}\n  status:    {}\n  started:   {} (unix ms)\n  expires:   {} (unix ms)\n  refreshes: {}",
        s.session_id, s.user_id, s.status, s.started_at_ms, s.expires_at_ms, s.refresh_count
    )
}

fn kept(t: &AuthenticateUserResponse) -> Saved {
    Saved {
        access_token: t.access_token.clone(),
        refresh_token: t.refresh_token.clone(),
        user_id: t.user_id.clone(),
        session_id: t.session_id.clone(),
        roles: t.roles.clone(),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let timeout = Duration::from_secs(cli.timeout);
    let json = cli.json;
    let token = || -> Result<String, Failure> {
        match &cli.token {
            Some(t) => Ok(t.clone()),
            None => Ok(load_saved()?.access_token),
        }
    };
    match &cli.command_ {
        Command::User(UserCommand::Register { username, email, password }) => {
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let request =
                RegisterUserRequest { username: username.clone(), email: email.clone(), password: password.clone() };
            let r = client.register_user(request).await?.into_inner();
            print(json, &r, || {
                format!(
                    "registered {username}\n  user id:  {}\n  version:  {}\n  token:    {}",
                    r.user_id, r.version, r.consistency_token
                )
            });
        }
        Command::User(UserCommand::Get { user_id, wait, after }) => {
            let mut client = ProjectorQueryServiceClient::new(channel(&cli.projector, timeout).await?);
            let deadline = Instant::now() + Duration::from_secs(*wait);
            let user = loop {
                let request =
                    GetUserRequest { user_id: user_id.clone(), consistency_token: after.clone().unwrap_or_default() };
                match client.get_user(request).await {
                    Ok(r) => break r.into_inner().user.unwrap_or_default(),
                    Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(s) => return Err(s.into()),
                }
            };
            print(json, &user, || show_user(&user));
        }
        Command::User(UserCommand::List { role, prefix, sort, desc, limit, page }) => {
            let mut client = ProjectorQueryServiceClient::new(channel(&cli.projector, timeout).await?);
            let request = ListUsersRequest {
                role: role.clone().unwrap_or_default(),
                username_prefix: prefix.clone().unwrap_or_default(),
                sort_by: sort.clone(),
                descending: *desc,
                page_size: *limit,
                page_token: page.clone().unwrap_or_default(),
            };
            let r = client.list_users(request).await?.into_inner();
            print(json, &r, || {
                let mut lines: Vec<String> = r
                    .users
                    .iter()
                    .map(|u| {
                        format!(
                            "{:<24} {}  roles: {}  registered {}",
                            u.username,
                            u.user_id,
                            u.roles.join(","),
                            u.registered_at_ms
                        )
                    })
                    .collect();
                if !r.next_page_token.is_empty() {
                    lines.push(format!("more: --page {}", r.next_page_token));
                }
                lines.join("\n")
            });
        }
        Command::User(UserCommand::GetByName { username }) => {
            let mut client = ProjectorQueryServiceClient::new(channel(&cli.projector, timeout).await?);
            let request = GetUserByUsernameRequest { username: username.clone(), consistency_token: String::new() };
            let r = client.get_user_by_username(request).await?;
            let user = r.into_inner().user.unwrap_or_default();
            print(json, &user, || show_user(&user));
        }
        Command::User(UserCommand::Roles { user_id, roles }) => {
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let request = ChangeUserRolesRequest { user_id: user_id.clone(), roles: roles.clone() };
            let r = client.change_user_roles(authorized(request, &token()?)?).await?.into_inner();
            print(json, &r, || format!("roles of {user_id}: {} (version {})", r.roles.join(", "), r.version));
        }
        Command::User(UserCommand::Sessions { user_id, limit }) => {
            let user_id = match user_id {
                Some(u) => u.clone(),
                None => load_saved()?.user_id,
            };
            let mut client = ProjectorQueryServiceClient::new(channel(&cli.projector, timeout).await?);
            let r = client.list_user_sessions(ListUserSessionsRequest { user_id, limit: *limit }).await?.into_inner();
            print(json, &r, || r.sessions.iter().map(show_session).collect::<Vec<_>>().join("\n"));
        }
        Command::Login { username, password } => {
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let request = AuthenticateUserRequest { username: username.clone(), password: password.clone() };
            let r = client.authenticate_user(request).await?.into_inner();
            save(&kept(&r))?;
            let shown = serde_json::json!({
                "userId": r.user_id, "sessionId": r.session_id, "roles": r.roles,
                "expiresIn": r.expires_in, "savedTo": saved_path(),
            });
            print(json, &shown, || {
                format!(
                    "logged in as {username}\n  user id:  {}\n  session:  {}\n  roles:    {}\n  access token valid {} s; tokens kept in {}",
                    r.user_id,
                    r.session_id,
                    r.roles.join(", "),
                    r.expires_in,
                    saved_path().display()
                )
            });
        }
        Command::Whoami => {
            let mut client = PlayerServiceClient::new(channel(&cli.timesquare, timeout).await?);
            let r = client.who_am_i(authorized(WhoAmIRequest {}, &token()?)?).await?.into_inner();
            print(json, &r, || {
                format!(
                    "user id:  {}\nsession:  {}\nroles:    {}\nexpires:  {} (unix s)",
                    r.user_id,
                    r.session_id,
                    r.roles.join(", "),
                    r.expires_at
                )
            });
        }
        Command::Refresh { refresh_token } => {
            let refresh_token = match refresh_token {
                Some(t) => t.clone(),
                None => load_saved()?.refresh_token,
            };
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let r = client.refresh_token(RefreshTokenRequest { refresh_token }).await?.into_inner();
            save(&kept(&r))?;
            let shown = serde_json::json!({ "sessionId": r.session_id, "expiresIn": r.expires_in });
            print(json, &shown, || format!("refreshed session {}; new tokens kept", r.session_id));
        }
        Command::Logout => {
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let r = client.logout_user(authorized(LogoutUserRequest {}, &token()?)?).await?.into_inner();
            if cli.token.is_none() {
                let _ = std::fs::remove_file(saved_path());
            }
            print(json, &r, || format!("logged out; session {} ended", r.session_id));
        }
        Command::Password { current, new } => {
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let request = ChangePasswordRequest { current_password: current.clone(), new_password: new.clone() };
            let r = client.change_password(authorized(request, &token()?)?).await?.into_inner();
            print(json, &r, || format!("password changed (user version {})", r.version));
        }
        Command::Session { session_id } => {
            let mut client = ProjectorQueryServiceClient::new(channel(&cli.projector, timeout).await?);
            let r = client.get_session(GetSessionRequest { session_id: session_id.clone() }).await?.into_inner();
            let s = r.session.unwrap_or_default();
            print(json, &s, || show_session(&s));
        }
        Command::Dlq(DlqCommand::List { projection, limit }) => {
            let mut client = ProjectorAdminServiceClient::new(channel(&cli.projector, timeout).await?);
            let request = ListDeadLettersRequest { projection: projection.clone(), limit: *limit };
            let r = client.list_dead_letters(authorized(request, &token()?)?).await?.into_inner();
            print(json, &r, || {
                if r.dead_letters.is_empty() {
                    return format!("no dead letters in {projection}");
                }
                r.dead_letters
                    .iter()
                    .map(|d| {
                        format!(
                            "{}  {} {} v{}  after {} attempts: {}",
                            d.id, d.event_type, d.aggregate_id, d.version, d.attempts, d.error
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Dlq(DlqCommand::Replay { projection, which }) => {
            let mut client = ProjectorAdminServiceClient::new(channel(&cli.projector, timeout).await?);
            let r = client.replay_dead_letters(authorized(which.selection(projection), &token()?)?).await?.into_inner();
            print(json, &r, || format!("replayed {}, still failing {}", r.replayed, r.failed));
        }
        Command::Dlq(DlqCommand::Purge { projection, which }) => {
            let mut client = ProjectorAdminServiceClient::new(channel(&cli.projector, timeout).await?);
            let r = client.purge_dead_letters(authorized(which.selection(projection), &token()?)?).await?.into_inner();
            print(json, &r, || format!("purged {}", r.purged));
        }
        Command::Follow { category, from, limit } => {
            // No deadline: the stream lives as long as the follower wants it.
            let ep = Endpoint::from_shared(cli.projector.clone())
                .map_err(|e| Failure(format!("invalid endpoint {}: {e}", cli.projector)))?;
            let channel =
                ep.connect().await.map_err(|e| Failure(format!("Unavailable: cannot reach {}: {e}", cli.projector)))?;
            let mut client = EventSubscriptionServiceClient::new(channel);
            let request = FollowRequest { category: category.clone(), from: from.clone() };
            let mut stream = client.follow(authorized(request, &token()?)?).await?.into_inner();
            let mut n = 0;
            while let Some(e) = stream.message().await? {
                let data = String::from_utf8(e.data.clone())
                    .map(serde_json::Value::String)
                    .unwrap_or_else(|_| serde_json::Value::Null);
                println!(
                    "{}",
                    serde_json::json!({
                        "cursor": e.cursor, "eventType": e.event_type, "aggregateId": e.aggregate_id,
                        "version": e.version, "recordedAtMs": e.recorded_at_ms, "data": data,
                    })
                );
                n += 1;
                if *limit > 0 && n >= *limit {
                    break;
                }
            }
        }
        Command::Projections => {
            let mut client = ProjectorAdminServiceClient::new(channel(&cli.projector, timeout).await?);
            let r = client.list_projections(authorized(ListProjectionsRequest {}, &token()?)?).await?.into_inner();
            print(json, &r, || {
                r.projections
                    .iter()
                    .map(|p| {
                        format!(
                            "{:<11} {:<12} generation {}  processed {}  failed {}  dead letters {}  lag {}  pending {}  breaker {}{}",
                            p.name,
                            p.state,
                            p.generation,
                            p.processed,
                            p.failed,
                            p.dead_letters,
                            p.lag,
                            p.pending,
                            p.breaker,
                            if p.last_error.is_empty() {
                                String::new()
                            } else {
                                format!("\n  last error: {}", p.last_error)
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Rebuild { projection } => {
            let mut client = ProjectorAdminServiceClient::new(channel(&cli.projector, timeout).await?);
            let request = RebuildProjectionRequest { projection: projection.clone() };
            let r = client.rebuild_projection(authorized(request, &token()?)?).await?.into_inner();
            print(json, &r, || {
                format!(
                    "rebuilding {projection} as generation {} (namespace {}, group {}); queries switch when it has caught up",
                    r.generation, r.namespace, r.group
                )
            });
        }
        Command::Check { projection, repair } => {
            let mut client = ProjectorAdminServiceClient::new(channel(&cli.projector, timeout).await?);
            let request = CheckConsistencyRequest { projection: projection.clone(), repair: *repair };
            let r = client.check_consistency(authorized(request, &token()?)?).await?.into_inner();
            print(json, &r, || {
                let mut lines = vec![format!(
                    "checked {} read models of {projection}: {} drifted, {} repaired",
                    r.checked,
                    r.drifted.len(),
                    r.repaired
                )];
                lines.extend(r.drifted.iter().map(|d| format!("  {}: {}", d.aggregate_id, d.problem)));
                lines.join("\n")
            });
        }
        Command::Jwks => {
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let r = client.get_jwks(GetJwksRequest {}).await?.into_inner();
            print(json, &r, || {
                r.keys
                    .iter()
                    .map(|k| format!("{}  {} {} x={}", k.kid, k.kty, k.crv, k.x))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Health { wait, only } => {
            let services = [
                ("guardian", &cli.guardian),
                ("timesquare", &cli.timesquare),
                ("command", &cli.command),
                ("projector", &cli.projector),
            ];
            let deadline = Instant::now() + Duration::from_secs(*wait);
            loop {
                let mut report = serde_json::Map::new();
                let mut all_serving = true;
                for (name, endpoint) in services.into_iter().filter(|(n, _)| only.as_deref().is_none_or(|o| o == *n)) {
                    let status = health(endpoint, timeout).await;
                    all_serving &= status == "SERVING";
                    report.insert(name.to_owned(), serde_json::json!({ "endpoint": endpoint, "status": status }));
                }
                if all_serving || Instant::now() >= deadline {
                    print(json, &report, || {
                        report
                            .iter()
                            .map(|(n, v)| {
                                let endpoint = v["endpoint"].as_str().unwrap_or("");
                                format!("{n:<11} {endpoint:<40} {}", v["status"].as_str().unwrap_or(""))
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    if all_serving {
                        return Ok(());
                    }
                    return Err(Failure("Unavailable: not every service is SERVING".into()));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}

async fn health(endpoint: &str, timeout: Duration) -> String {
    let Ok(channel) = channel(endpoint, timeout).await else { return "UNREACHABLE".into() };
    match HealthClient::new(channel).check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await {
        Ok(r) => ServingStatus::try_from(r.into_inner().status)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_else(|_| "UNKNOWN".into()),
        Err(s) => format!("{:?}", s.code()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            if json {
                eprintln!("{}", serde_json::json!({ "error": msg }));
            } else {
                eprintln!("error: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}
