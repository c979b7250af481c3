//! `allies`: drives every API of the fleet from the command line.
//!
//! Readable output by default, `--json` for scripts. A failed call prints the
//! gRPC status code and message (and field violations) and exits with 1.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::RegisterUserRequest;
use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::projector::v1::GetUserRequest;
use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
use clap::{Parser, Subcommand};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
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
    /// Deadline of each call, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command_: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Users: register, read.
    #[command(subcommand)]
    User(UserCommand),
    /// Health of every service (grpc.health.v1).
    Health {
        /// Keep asking until every service is SERVING or this many seconds pass.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Check only this service (guardian, timesquare, command, projector).
        #[arg(long, value_parser = ["guardian", "timesquare", "command", "projector"])]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Register a new user (guardian).
    Register {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        /// Password; prefer the ALLIES_PASSWORD environment variable to keep it out of shell history.
        #[arg(long, env = "ALLIES_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Read a user from the read model (projector).
    Get {
        user_id: String,
        /// Wait up to this many seconds for the user to appear in the read model.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
}

struct Failure(String);

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        let mut msg = format!("{:?}: {}", s.code(), s.message());
        if let Some(br) = s.get_error_details().bad_request() {
            for v in &br.field_violations {
                msg.push_str(&format!("\n  field `{}`: {}", v.field, v.description));
            }
        }
        Failure(msg)
    }
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

async fn run(cli: Cli) -> Result<(), Failure> {
    let timeout = Duration::from_secs(cli.timeout);
    match cli.command_ {
        Command::User(UserCommand::Register { username, email, password }) => {
            let mut client = GuardianServiceClient::new(channel(&cli.guardian, timeout).await?);
            let r = client.register_user(RegisterUserRequest { username: username.clone(), email, password }).await?;
            let r = r.into_inner();
            print(cli.json, &r, || {
                format!(
                    "registered {username}\n  user id:  {}\n  version:  {}\n  token:    {}",
                    r.user_id, r.version, r.consistency_token
                )
            });
        }
        Command::User(UserCommand::Get { user_id, wait }) => {
            let mut client = ProjectorQueryServiceClient::new(channel(&cli.projector, timeout).await?);
            let deadline = Instant::now() + Duration::from_secs(wait);
            let user = loop {
                match client.get_user(GetUserRequest { user_id: user_id.clone() }).await {
                    Ok(r) => break r.into_inner().user.unwrap_or_default(),
                    Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(s) => return Err(s.into()),
                }
            };
            print(cli.json, &user, || {
                format!(
                    "{}\n  user id:    {}\n  email:      {}\n  roles:      {}\n  status:     {}\n  registered: {} (unix ms)\n  version:    {}",
                    user.username,
                    user.user_id,
                    user.email,
                    user.roles.join(", "),
                    user.status,
                    user.registered_at_ms,
                    user.version
                )
            });
        }
        Command::Health { wait, only } => {
            let services = [
                ("guardian", &cli.guardian),
                ("timesquare", &cli.timesquare),
                ("command", &cli.command),
                ("projector", &cli.projector),
            ];
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                let mut report = serde_json::Map::new();
                let mut all_serving = true;
                for (name, endpoint) in services.into_iter().filter(|(n, _)| only.as_deref().is_none_or(|o| o == *n)) {
                    let status = health(endpoint, timeout).await;
                    all_serving &= status == "SERVING";
                    report.insert(name.to_owned(), serde_json::json!({ "endpoint": endpoint, "status": status }));
                }
                if all_serving || Instant::now() >= deadline {
                    print(cli.json, &report, || {
                        report
                            .iter()
                            .map(|(n, v)| {
                                format!(
                                    "{n:<11} {:<40} {}",
                                    v["endpoint"].as_str().unwrap_or(""),
                                    v["status"].as_str().unwrap_or("")
                                )
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
    let Ok(channel) = channel(endpoint, timeout).await else {
        return "UNREACHABLE".into();
    };
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
