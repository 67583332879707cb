//! One Redis server or a Redis Cluster, behind one connection type: the mesh's commands are
//! the same on both (every multi-key command and every MULTI/EXEC stays within one hash tag).
//!
//! A URL `redis+cluster://host:port,host:port/` (or several `redis://` URLs separated by
//! commas) names a cluster by some of its nodes; the cluster client learns the rest, follows
//! MOVED and ASK redirections and fails over with the cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Where the mesh lives.
#[derive(Clone)]
pub(super) enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// A connection to the mesh's Redis, one server or a cluster (routing each command by its
/// key). Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// The seed nodes of a cluster URL, or `None` for a single server's URL.
pub(super) fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        let hosts = rest.trim_end_matches('/');
        return Some(
            hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{h}/"))
                .collect(),
        );
    }
    url.contains(',')
        .then(|| url.split(',').map(|u| u.trim().to_owned()).collect())
}

impl Target {
    pub(super) fn open(url: &str) -> Result<Self, RedisError> {
        match cluster_nodes(url) {
            Some(nodes) => Ok(Self::Cluster(
                ClusterClient::builder(nodes)
                    .connection_timeout(Duration::from_secs(2))
                    .retries(6)
                    .min_retry_wait(50)
                    .max_retry_wait(2_000)
                    .build()?,
            )),
            None => Ok(Self::Single(redis::Client::open(url)?)),
        }
    }

    /// A new connection whose commands may take up to `response_timeout` to answer.
    pub(super) async fn connect(&self, response_timeout: Duration) -> Result<Conn, RedisError> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(response_timeout))
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(2))
                    .set_number_of_retries(3);
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client.clone(), config).await?,
                ))
            }
            Self::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(response_timeout);
                Ok(Conn::Cluster(
                    client.get_async_connection_with_config(config).await?,
                ))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cluster_nodes;

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6390/15"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:6391,127.0.0.1:6392/"),
            Some(vec![
                "redis://127.0.0.1:6391/".to_owned(),
                "redis://127.0.0.1:6392/".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("redis://a:1/, redis://b:2/"),
            Some(vec!["redis://a:1/".to_owned(), "redis://b:2/".to_owned()])
        );
    }
}
