//! One connection type for a single Redis and for Redis Cluster.
//!
//! `REDIS_URL` names a single server (`redis://host:port`) or a cluster: a
//! comma-separated list of seed nodes (`redis://a:7000,redis://b:7001`) or
//! `redis-cluster://host:port[,host:port…]`. Everything the store does works
//! unchanged on both, because every key one script touches shares one hash
//! slot (see [`keys`](crate::keys)).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// How long connecting to Redis may take before a command fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a short command may wait for its answer: a stalled Redis
/// (paused, swapping, a long script) answers a caller UNAVAILABLE within a
/// second. Commands that block by design (XREADGROUP BLOCK) use a
/// [`dedicated`](RedisTarget::dedicated) connection with their own timeout.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(700);

/// Where Redis is.
#[derive(Clone)]
pub enum RedisTarget {
    Single(Box<redis::Client>),
    Cluster(Vec<String>),
}

/// The certificates of TLS to Redis (`rediss://`), for this process: the CA
/// that signed Redis's certificate (none: the system's trusted roots) and a
/// client certificate with its key (when Redis asks for one,
/// `tls-auth-clients yes`). PEM files, read once at start ([`use_tls_files`]).
///
/// Process-wide on purpose: every connection a process opens goes to the
/// one Redis (or cluster) its settings name, through the ten places that
/// parse `REDIS_URL`; the URL carries the address and the credentials, this
/// the certificates a URL cannot carry.
static TLS: std::sync::RwLock<Option<redis::TlsCertificates>> = std::sync::RwLock::new(None);

/// A TLS file that cannot be used: which setting, its path, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError {
    pub setting: &'static str,
    pub path: String,
    pub reason: String,
}

/// Reads the TLS files for `rediss://` URLs (empty paths: not used). A file
/// that cannot be read or holds no PEM certificate or key is named in the
/// error: the service stops at start rather than at first use.
pub fn use_tls_files(ca: &str, cert: &str, key: &str) -> Result<(), TlsFileError> {
    let fail =
        |setting: &'static str, path: &str, reason: String| TlsFileError { setting, path: path.to_owned(), reason };
    let read = |setting: &'static str, path: &str, marker: &str, what: &str| -> Result<Option<Vec<u8>>, TlsFileError> {
        if path.is_empty() {
            return Ok(None);
        }
        let bytes = std::fs::read(path).map_err(|e| fail(setting, path, format!("cannot read it: {e}")))?;
        if !String::from_utf8_lossy(&bytes).contains(marker) {
            return Err(fail(setting, path, format!("no PEM {what} in it")));
        }
        Ok(Some(bytes))
    };
    let root_cert = read("REDIS_TLS_CA_FILE", ca, "-----BEGIN CERTIFICATE-----", "certificate")?;
    let client_cert = read("REDIS_TLS_CERT_FILE", cert, "-----BEGIN CERTIFICATE-----", "certificate")?;
    let client_key = read("REDIS_TLS_KEY_FILE", key, "PRIVATE KEY-----", "private key")?;
    let client_tls = match (client_cert, client_key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
        (None, None) => None,
        _ => {
            let (setting, path) =
                if cert.is_empty() { ("REDIS_TLS_CERT_FILE", cert) } else { ("REDIS_TLS_KEY_FILE", key) };
            return Err(fail(setting, path, "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together".into()));
        }
    };
    let certs =
        (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates { client_tls, root_cert });
    if let Ok(mut tls) = TLS.write() {
        *tls = certs;
    }
    Ok(())
}

fn tls_certificates() -> Option<redis::TlsCertificates> {
    TLS.read().ok().and_then(|t| t.clone())
}

impl RedisTarget {
    /// `REDIS_URL`: one server, or a cluster (seed nodes). `rediss://` is
    /// TLS, verified against the system's roots or the CA of
    /// [`use_tls_files`].
    pub fn parse(url: &str) -> RedisResult<Self> {
        let cluster_seed = url.strip_prefix("redis-cluster://");
        let tls = if url.contains("rediss://") { tls_certificates() } else { None };
        if cluster_seed.is_none() && !url.contains(',') {
            return Ok(Self::Single(Box::new(match tls {
                Some(certs) => redis::Client::build_with_tls(url, certs)?,
                None => redis::Client::open(url)?,
            })));
        }
        let nodes: Vec<String> = cluster_seed
            .unwrap_or(url)
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| if n.contains("://") { n.to_owned() } else { format!("redis://{n}") })
            .collect();
        // Validate the URLs now, not at first use.
        Self::cluster_builder(&nodes).build()?;
        Ok(Self::Cluster(nodes))
    }

    /// A cluster client's builder for `nodes`, with the TLS certificates
    /// when they are `rediss://`.
    fn cluster_builder(nodes: &[String]) -> redis::cluster::ClusterClientBuilder {
        let builder = ClusterClient::builder(nodes.to_vec());
        match nodes.iter().any(|n| n.starts_with("rediss://")).then(tls_certificates).flatten() {
            Some(certs) => builder.certs(certs),
            None => builder,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// `url` (one node or a comma-separated list) signing in as `username`
    /// with `password` on every node: the credentials replace any the URL
    /// carries; empty ones leave the URL as it is. Percent-encoded, so a
    /// password may hold any character.
    pub fn with_credentials(url: &str, username: &str, password: &str) -> String {
        if username.is_empty() && password.is_empty() {
            return url.to_owned();
        }
        let userinfo = if password.is_empty() {
            percent_encode(username)
        } else {
            format!("{}:{}", percent_encode(username), percent_encode(password))
        };
        url.split(',')
            .map(str::trim)
            .map(|part| {
                let (scheme, rest) = match part.split_once("://") {
                    Some((scheme, rest)) => (format!("{scheme}://"), rest),
                    None => (String::new(), part),
                };
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}{userinfo}@{host}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `url` with every password replaced by `***`: what logs and error
    /// messages may show.
    pub fn redacted(url: &str) -> String {
        url.split(',')
            .map(|part| {
                let (head, rest) = part.split_once("://").map_or(("", part), |(s, r)| (s, r));
                let shown = match rest.rsplit_once('@') {
                    Some((userinfo, host)) => match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:***@{host}"),
                        None => format!("{userinfo}@{host}"),
                    },
                    None => rest.to_owned(),
                };
                if head.is_empty() { shown } else { format!("{head}://{shown}") }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The shared, multiplexed, self-reconnecting connection for short commands.
    ///
    /// It fails fast while Redis is unreachable: one reconnection attempt
    /// per command, connecting for at most [`CONNECT_TIMEOUT`], answers
    /// within [`RESPONSE_TIMEOUT`]. (The defaults — six reconnection attempts
    /// with exponential backoff — held a request for about 9 s.) It
    /// reconnects by itself once Redis is back.
    pub async fn connect(&self) -> RedisResult<RedisConn> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(RedisConn::Single(ConnectionManager::new_with_config((**client).clone(), config).await?))
            }
            Self::Cluster(nodes) => {
                let client = Self::cluster_builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A connection of its own for blocking commands, whose response timeout
    /// must exceed the block time.
    pub async fn dedicated(&self, response_timeout: Duration) -> RedisResult<RedisConn> {
        match self {
            Self::Single(client) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(response_timeout));
                Ok(RedisConn::Dedicated(client.get_multiplexed_async_connection_with_config(&cfg).await?))
            }
            Self::Cluster(nodes) => {
                let client = Self::cluster_builder(nodes)
                    .connection_timeout(Duration::from_secs(5))
                    .response_timeout(response_timeout)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// Every byte but RFC 3986's unreserved characters, as %XX.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection to a single Redis or to a cluster (commands are routed by key).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Dedicated(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Commands on keys of different slots cannot share a pipeline on a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// `WAIT replicas timeout` for every write this connection made, on
    /// every master (a cluster connection asks each master it talks to and
    /// answers the fewest): what a subscription handler confirms before its
    /// entries are acknowledged.
    pub async fn wait_for_replicas_everywhere(&mut self, replicas: u32, timeout: Duration) -> RedisResult<u32> {
        redis::cmd("WAIT").arg(replicas).arg(timeout.as_millis().max(1) as u64).query_async(self).await
    }

    /// `WAIT replicas timeout` on the master of `key`'s slot, over the very
    /// connection that wrote there: how many replicas have acknowledged every
    /// write this connection made to that master. With `probe`, a one-byte
    /// write to that key (in the same slot) goes first, so the answer also
    /// covers writes other connections made before it (the replication
    /// stream is one order per master). On a cluster the command is routed
    /// to the slot's master, not to every master (redis-rs' default for WAIT).
    pub async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
        probe: Option<&str>,
    ) -> RedisResult<u32> {
        let timeout_ms = timeout.as_millis().max(1) as u64;
        let wait = || {
            let mut c = redis::cmd("WAIT");
            c.arg(replicas).arg(timeout_ms);
            c
        };
        let set = |probe: &str| {
            let mut c = redis::cmd("SET");
            c.arg(probe).arg(1);
            c
        };
        match self {
            Self::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = || {
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)))
                };
                if let Some(probe) = probe {
                    c.route_command(set(probe), route()).await?;
                }
                Ok(redis::from_redis_value(c.route_command(wait(), route()).await?)?)
            }
            _ => {
                let mut pipe = redis::pipe();
                if let Some(probe) = probe {
                    pipe.add_command(set(probe)).ignore();
                }
                pipe.add_command(wait());
                let (acked,): (u32,) = pipe.query_async(self).await?;
                Ok(acked)
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            // After an outage the manager still holds the failed reconnection
            // of the outage: the first command gets that refusal and starts a
            // new reconnection. A refused connection sent nothing, so trying
            // once more (on the new connection) is safe for any command —
            // and the first request after Redis is back succeeds.
            Self::Single(c) => Box::pin(async move {
                match c.req_packed_command(cmd).await {
                    Err(e) if e.is_connection_refusal() => c.req_packed_command(cmd).await,
                    other => other,
                }
            }),
            Self::Dedicated(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Dedicated(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod credential_tests {
    use super::RedisTarget;

    #[test]
    fn credentials_go_into_every_node_of_the_url_and_never_into_logs() {
        let single = RedisTarget::with_credentials("redis://old:pw@127.0.0.1:6379", "timesquare", "p@ss:w/rd");
        assert_eq!(single, "redis://timesquare:p%40ss%3Aw%2Frd@127.0.0.1:6379");
        let RedisTarget::Single(client) = RedisTarget::parse(&single).unwrap() else { panic!("single") };
        let info = client.get_connection_info().redis_settings();
        assert_eq!((info.username(), info.password()), (Some("timesquare"), Some("p@ss:w/rd")));

        let list = RedisTarget::with_credentials("redis://a:7000, redis://b:7001", "p", "s");
        assert_eq!(list, "redis://p:s@a:7000,redis://p:s@b:7001");
        let seeds = RedisTarget::with_credentials("redis-cluster://a:7000,b:7001", "p", "s");
        assert_eq!(seeds, "redis-cluster://p:s@a:7000,p:s@b:7001");
        assert!(RedisTarget::parse(&seeds).unwrap().is_cluster());
        assert_eq!(RedisTarget::with_credentials("rediss://h:1", "", ""), "rediss://h:1");

        assert_eq!(RedisTarget::redacted(&single), "redis://timesquare:***@127.0.0.1:6379");
        assert_eq!(RedisTarget::redacted(&seeds), "redis-cluster://p:***@a:7000,p:***@b:7001");
        assert_eq!(RedisTarget::redacted("redis://h:1"), "redis://h:1");
    }
}
