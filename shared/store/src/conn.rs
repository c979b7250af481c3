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
    Single(redis::Client),
    Cluster(Vec<String>),
}

impl RedisTarget {
    pub fn parse(url: &str) -> RedisResult<Self> {
        let cluster_seed = url.strip_prefix("redis-cluster://");
        if cluster_seed.is_none() && !url.contains(',') {
            return Ok(Self::Single(redis::Client::open(url)?));
        }
        let nodes: Vec<String> = cluster_seed
            .unwrap_or(url)
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| if n.contains("://") { n.to_owned() } else { format!("redis://{n}") })
            .collect();
        // Validate the URLs now, not at first use.
        ClusterClient::new(nodes.clone())?;
        Ok(Self::Cluster(nodes))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
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
                Ok(RedisConn::Single(ConnectionManager::new_with_config(client.clone(), config).await?))
            }
            Self::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
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
                let client = ClusterClient::builder(nodes.clone())
                    .connection_timeout(Duration::from_secs(5))
                    .response_timeout(response_timeout)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }
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
