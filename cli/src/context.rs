//! What every command shares: the fleet's endpoints, the saved login of the
//! chosen profile, the output format and the call deadline.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use crate::output::Failure;

/// Endpoints and options from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub json: bool,
    pub guardian: String,
    pub timesquare: String,
    pub command: String,
    pub projector: String,
    /// Token given on the command line (wins over the saved one).
    pub token: Option<String>,
    /// The saved-login profile (`--profile`, `ALLIES_PROFILE`, default `default`).
    pub profile: String,
    /// `x-command-id` to send with commands that accept one.
    pub command_id: Option<String>,
    pub timeout: Duration,
    /// The W3C traceparent every call of this run carries: the CLI's own
    /// span in the trace (its id is this run's), so the services' spans are
    /// its children.
    pub traceparent: String,
}

fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(bytes * 2);
    out
}

/// A new trace: a random trace id and span id, sampled.
pub fn new_trace() -> String {
    format!("00-{}-{}-01", random_hex(16), random_hex(8))
}

/// Continues a caller's trace (`TRACEPARENT`) as a child span of its
/// parent: the same trace id, a new span id. None when malformed.
pub fn continue_trace(parent: &str) -> Option<String> {
    let p: Vec<&str> = parent.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (p.len() == 4 && hex(p[0], 2) && hex(p[1], 32) && hex(p[2], 16) && hex(p[3], 2) && p[1] != "0".repeat(32))
        .then(|| format!("00-{}-{}-{}", p[1].to_ascii_lowercase(), random_hex(8), p[3]))
}

/// What `allies login` keeps per profile.
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct Saved {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: String,
    pub session_id: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub username: String,
}

impl Context {
    /// `$ALLIES_HOME` (default `~/.allies`).
    pub fn home() -> PathBuf {
        std::env::var_os("ALLIES_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".allies")))
            .unwrap_or_else(|| PathBuf::from(".allies"))
    }

    /// The profile's saved login: `session.json` for the default profile,
    /// `session.<profile>.json` for the others.
    pub fn saved_path(&self) -> PathBuf {
        let file = if self.profile == "default" {
            "session.json".to_owned()
        } else {
            format!("session.{}.json", self.profile)
        };
        Self::home().join(file)
    }

    pub fn load_saved(&self) -> Result<Saved, Failure> {
        let path = self.saved_path();
        let text = std::fs::read_to_string(&path).map_err(|_| {
            let flag = if self.profile == "default" { String::new() } else { format!(" --profile {}", self.profile) };
            Failure::local(format!("not logged in (no {}): run `allies{flag} login`", path.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| Failure::local(format!("{} is unreadable: {e}", path.display())))
    }

    pub fn save(&self, s: &Saved) -> Result<(), Failure> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.saved_path();
        let fail = |e: std::io::Error| Failure::local(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(fail)?;
        f.write_all(serde_json::to_string_pretty(s).unwrap_or_default().as_bytes()).map_err(fail)
    }

    /// The profile's current game (`game create` and `game join` set it; the
    /// other game commands default to it).
    fn game_path(&self) -> PathBuf {
        self.current_path("game")
    }

    /// Where the profile's current `kind` ("game", "match") is kept.
    fn current_path(&self, kind: &str) -> PathBuf {
        let file = if self.profile == "default" { kind.to_owned() } else { format!("{kind}.{}", self.profile) };
        Self::home().join(file)
    }

    fn remember(&self, kind: &str, id: &str) {
        let path = self.current_path(kind);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(path, id);
    }

    pub fn remember_game(&self, session_id: &str) {
        self.remember("game", session_id);
    }

    /// The match a ticket of this profile was last seen in (`match show`
    /// defaults to it).
    pub fn remember_match(&self, match_id: &str) {
        if !match_id.is_empty() {
            self.remember("match", match_id);
        }
    }

    /// `given`, else the last match this profile followed.
    pub fn match_id(&self, given: &Option<String>) -> Result<String, Failure> {
        if let Some(id) = given {
            return Ok(id.clone());
        }
        let text = std::fs::read_to_string(self.current_path("match")).map_err(|_| {
            Failure::local("which match? name one (match show <match id>): no ticket of yours was matched yet")
        })?;
        Ok(text.trim().to_owned())
    }

    /// `given`, else the current game.
    pub fn game(&self, given: &Option<String>) -> Result<String, Failure> {
        if let Some(id) = given {
            return Ok(id.clone());
        }
        let text = std::fs::read_to_string(self.game_path())
            .map_err(|_| Failure::local("which game? pass --game <session id> (or create or join one first)"))?;
        Ok(text.trim().to_owned())
    }

    pub fn forget(&self) {
        let _ = std::fs::remove_file(self.saved_path());
    }

    /// The access token to send: `--token`, else the profile's saved one.
    pub fn token(&self) -> Result<String, Failure> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => Ok(self.load_saved()?.access_token),
        }
    }

    /// A request with the access token (and the command id, if given).
    pub fn authorized<T>(&self, message: T) -> Result<Request<T>, Failure> {
        let mut r = self.anonymous(message)?;
        let value =
            format!("Bearer {}", self.token()?).parse().map_err(|_| Failure::local("the access token is not ASCII"))?;
        r.metadata_mut().insert("authorization", value);
        Ok(r)
    }

    /// A request without a token (with the command id, if given).
    pub fn anonymous<T>(&self, message: T) -> Result<Request<T>, Failure> {
        let mut r = Request::new(message);
        if let Ok(tp) = self.traceparent.parse() {
            r.metadata_mut().insert("traceparent", tp);
        }
        if let Some(id) = &self.command_id {
            let value = id.parse().map_err(|_| Failure::local("--command-id must be printable ASCII"))?;
            r.metadata_mut().insert("x-command-id", value);
        }
        Ok(r)
    }

    /// A channel to `endpoint` with the call deadline.
    pub async fn channel(&self, endpoint: &str) -> Result<Channel, Failure> {
        connect(endpoint, Some(self.timeout)).await
    }

    /// A channel without a deadline (server streams).
    pub async fn stream_channel(&self, endpoint: &str) -> Result<Channel, Failure> {
        connect(endpoint, None).await
    }
}

async fn connect(endpoint: &str, timeout: Option<Duration>) -> Result<Channel, Failure> {
    let mut ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| Failure::local(format!("invalid endpoint {endpoint}: {e}")))?
        .connect_timeout(Duration::from_secs(3));
    if let Some(t) = timeout {
        ep = ep.timeout(t);
    }
    ep.connect().await.map_err(|e| Failure::unavailable(format!("cannot reach {endpoint}: {e}")))
}

impl Context {
    /// Usernames for user ids, for output people read (best effort: an id
    /// that cannot be read stays an id; "matchmaker" and other non-ids too).
    pub async fn names(&self, ids: &[String]) -> std::collections::HashMap<String, String> {
        use allies_contracts::projector::v1::GetUserRequest;
        use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
        let mut out = std::collections::HashMap::new();
        let Ok(channel) = self.channel(&self.projector).await else { return out };
        let mut client = ProjectorQueryServiceClient::new(channel);
        for id in ids {
            let b = id.as_bytes();
            let uuid = b.len() == 36
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { *c == b'-' } else { c.is_ascii_hexdigit() });
            if out.contains_key(id) || !uuid {
                continue;
            }
            let Ok(request) = self.authorized(GetUserRequest { user_id: id.clone(), consistency_token: String::new() })
            else {
                return out;
            };
            if let Ok(r) = client.get_user(request).await
                && let Some(u) = r.into_inner().user
            {
                out.insert(id.clone(), u.username);
            }
        }
        out
    }
}

/// `id` as its name, when known.
pub fn named(names: &std::collections::HashMap<String, String>, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}
