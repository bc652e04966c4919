//! The Redis side of the store: the command connection (standalone through a
//! `ConnectionManager`, Cluster through the cluster client; both reconnect on their own),
//! the pub/sub connection, every command bounded by `store.timeout`, and the background
//! task that keeps the revocations current.
//!
//! Keys (`P` is `store.prefix`; `K` a base64url SHA-256):
//! - `P revoked`: sorted set, member `Record::member()`, score `expires_at` (Unix s);
//!   `ZADD GT` so a score only grows; pruned with `ZREMRANGEBYSCORE -inf now`.
//! - `P revocations`: the pub/sub channel, message `Record::message()`.
//! - `P jti:K`: `1`, `SET NX EXAT <token expiry>` (K of the `jti`).
//! - `P lock:K`: a random token, `SET NX PX`; renewed and deleted by compare (Lua).
//! - `P flight:K`: the refresh outcome the caller sealed, `SET PX` (K of the refresh
//!   token, given by the caller).

use std::sync::RwLock;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, Value};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::{Store, StoreError};
use crate::config;
use crate::revocations::Record;
use crate::secret::SecretString;
use crate::{clock, sync};

/// Reconnect backoff: from 200 ms, doubling, to 5 s, each wait jittered down to half.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `GET` and compare, then act: only the holder's token may renew or release a lock.
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const UNLOCK: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                      return redis.call('del', KEYS[1]) else return 0 end";

/// The connection commands go through; both kinds are cheap handles to one multiplexed
/// connection (per node, for a cluster).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub(super) struct Backend {
    /// Seed nodes (one for standalone): the pub/sub connection goes to one after another.
    nodes: Vec<SecretString>,
    /// The store's private CA (PEM), when `store.ca_file` names one.
    ca: Option<Vec<u8>>,
    /// Set for a cluster, whose command connection is made by `run`.
    cluster: Option<ClusterClient>,
    conn: RwLock<Option<Conn>>,
    revoked: String,
    channel: String,
    prefix: String,
    timeout: Duration,
    resync: Duration,
    renew: Script,
    unlock: Script,
}

impl Backend {
    pub(super) fn new(c: &config::Store) -> Result<Backend, StoreError> {
        // Checked here, where every user of the store (serve, `sessions revoke`) passes: at
        // least one certificate, or a configuration error naming the key.
        let ca = match &c.ca_file {
            Some(path) => Some(
                crate::http_client::read_pem_roots(path)
                    .map_err(|e| StoreError::CaFile(format!("store.ca_file: {e}")))?
                    .0,
            ),
            None => None,
        };
        let (cluster, conn) = if c.cluster {
            let nodes: Vec<&str> = c.nodes.iter().map(SecretString::expose).collect();
            let mut builder = ClusterClient::builder(nodes);
            if let Some(pem) = &ca {
                builder = builder.certs(certificates(pem));
            }
            let client = builder
                .connection_timeout(connect_timeout(c.timeout))
                .response_timeout(c.timeout)
                .retries(1)
                .build()
                .map_err(unavailable)?;
            (Some(client), None)
        } else {
            let url = c.nodes.first().ok_or_else(|| gone("no node"))?;
            let client = client(url, ca.as_deref())?;
            let manager = ConnectionManager::new_lazy_with_config(
                client,
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout(c.timeout)))
                    .set_response_timeout(Some(c.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(BACKOFF_MIN)
                    .set_max_delay(BACKOFF_MAX),
            )
            .map_err(unavailable)?;
            (None, Some(Conn::Single(manager)))
        };
        Ok(Backend {
            nodes: c.nodes.clone(),
            ca,
            cluster,
            conn: RwLock::new(conn),
            revoked: format!("{}revoked", c.prefix),
            channel: format!("{}revocations", c.prefix),
            prefix: c.prefix.clone(),
            timeout: c.timeout,
            resync: c.resync,
            renew: Script::new(RENEW),
            unlock: Script::new(UNLOCK),
        })
    }

    /// `ZADD GT` then `PUBLISH`: the record is in the set before anyone hears of it, so
    /// an instance that misses the message finds it at its next resync.
    pub(super) async fn write_record(&self, record: &Record) -> Result<(), StoreError> {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&self.revoked)
            .arg("GT")
            .arg(record.expires_at)
            .arg(record.member());
        self.query::<Value>(&zadd).await?;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(record.message());
        self.query::<Value>(&publish).await?;
        Ok(())
    }

    /// `true` when the key was not set before.
    pub(super) async fn first_use(&self, digest: &str, at: u64) -> Result<bool, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(format!("{}jti:{digest}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("EXAT")
            .arg(at);
        Ok(self.query::<Option<String>>(&set).await?.is_some())
    }

    pub(super) async fn lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(format!("{}lock:{key}", self.prefix))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        Ok(self.query::<Option<String>>(&set).await?.is_some())
    }

    pub(super) async fn renew(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inv = self.renew.key(format!("{}lock:{key}", self.prefix));
        inv.arg(token).arg(millis(ttl));
        let mut conn = self.conn()?;
        let renewed: i64 = bounded(self.timeout, inv.invoke_async(&mut conn)).await?;
        Ok(renewed == 1)
    }

    pub(super) async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut inv = self.unlock.key(format!("{}lock:{key}", self.prefix));
        inv.arg(token);
        let mut conn = self.conn()?;
        bounded::<i64>(self.timeout, inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    pub(super) async fn put_outcome(
        &self,
        key: &str,
        sealed: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(format!("{}flight:{key}", self.prefix))
            .arg(sealed)
            .arg("PX")
            .arg(millis(ttl));
        self.query::<Value>(&set).await.map(drop)
    }

    pub(super) async fn outcome(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(format!("{}flight:{key}", self.prefix));
        self.query(&get).await
    }

    /// The background task (see `Store::run`).
    pub(super) async fn run(&self, store: &Store) {
        let mut backoff = Backoff::default();
        let mut node = 0;
        loop {
            if let Err(e) = self.connect().await {
                let _ = store.ok::<()>("subscribe", Err(e));
            }
            match self.subscribe(node).await {
                Ok((sink, stream)) => {
                    backoff = Backoff::default();
                    let lost = self.listen(store, sink, stream).await;
                    let _ = store.ok::<()>("subscribe", Err(lost));
                }
                Err(e) => {
                    let _ = store.ok::<()>("subscribe", Err(e));
                    node = (node + 1) % self.nodes.len().max(1);
                }
            }
            sleep(backoff.next()).await;
        }
    }

    /// Applies published records until the subscription is lost (returned as the error);
    /// writes what is pending and reads the whole set at once, then every `resync` (or
    /// sooner, with backoff, after a failed one).
    async fn listen(
        &self,
        store: &Store,
        mut sink: PubSubSink,
        mut stream: redis::aio::PubSubStream,
    ) -> StoreError {
        let mut next = Instant::now();
        let mut retry = Backoff::default();
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return gone("subscription closed") };
                    let record = msg.get_payload::<String>().ok()
                        .and_then(|m| Record::from_message(&m));
                    match record {
                        Some(record) => store.learn([record], clock::now_secs()),
                        None => tracing::warn!("ignored a malformed revocation message"),
                    }
                }
                () = sleep_until(next) => {
                    // A subscription that stopped answering is as lost as a closed one.
                    if let Err(e) = bounded::<Value>(self.timeout, sink.ping()).await {
                        return e;
                    }
                    next = match store.ok("resync", self.resync(store).await) {
                        Ok(()) => {
                            store.mark_synced();
                            retry = Backoff::default();
                            Instant::now() + self.resync
                        }
                        Err(_) => Instant::now() + retry.next(),
                    };
                }
            }
        }
    }

    /// Writes the pending records (oldest first, stopping at the first failure), prunes
    /// and reads the whole set, and applies it.
    async fn resync(&self, store: &Store) -> Result<(), StoreError> {
        let pending = store.pending_records();
        let mut written = 0;
        let mut failure = None;
        for record in &pending {
            if let Err(e) = self.write_record(record).await {
                failure = Some(e);
                break;
            }
            written += 1;
        }
        store.written(written);
        if let Some(e) = failure {
            return Err(e);
        }
        let now = clock::now_secs();
        let mut prune = redis::cmd("ZREMRANGEBYSCORE");
        prune.arg(&self.revoked).arg("-inf").arg(now);
        self.query::<Value>(&prune).await?;
        let mut read = redis::cmd("ZRANGE");
        read.arg(&self.revoked)
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES");
        let members: Vec<(String, f64)> = self.query(&read).await?;
        let records = members.into_iter().filter_map(|(member, score)| {
            // Scores are whole seconds we wrote; anything else is not ours.
            (0.0..1e15)
                .contains(&score)
                .then(|| Record::from_member(&member, score as u64))
                .flatten()
        });
        store.learn(records, now);
        Ok(())
    }

    /// Makes the cluster's command connection when there is none yet.
    pub(super) async fn connect(&self) -> Result<(), StoreError> {
        let Some(client) = &self.cluster else {
            return Ok(());
        };
        if sync::read(&self.conn).is_some() {
            return Ok(());
        }
        let conn = bounded(
            connect_timeout(self.timeout) * 2,
            client.get_async_connection(),
        )
        .await?;
        *sync::write(&self.conn) = Some(Conn::Cluster(conn));
        Ok(())
    }

    /// A pub/sub connection to seed node `node`, subscribed. Classic `PUBLISH` reaches
    /// every node of a cluster, so one node is enough to hear the whole fleet.
    async fn subscribe(
        &self,
        node: usize,
    ) -> Result<(PubSubSink, redis::aio::PubSubStream), StoreError> {
        let url = self.nodes.get(node).ok_or_else(|| gone("no node"))?;
        let client = client(url, self.ca.as_deref())?;
        let mut pubsub = bounded(connect_timeout(self.timeout), client.get_async_pubsub()).await?;
        bounded(self.timeout, pubsub.subscribe(&self.channel)).await?;
        Ok(pubsub.split())
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        sync::read(&self.conn)
            .clone()
            .ok_or_else(|| gone("not connected"))
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        bounded(self.timeout, cmd.query_async(&mut conn)).await
    }
}

/// Runs `f` for at most `limit`.
async fn bounded<T>(
    limit: Duration,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(gone("timed out")),
    }
}

/// Connecting (TCP, maybe TLS, AUTH) takes a few round trips: a little more than one
/// command.
fn connect_timeout(timeout: Duration) -> Duration {
    (timeout * 4).max(Duration::from_secs(1))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A client for one node: under the webpki roots, or with `ca` (PEM) trusted instead.
fn client(url: &SecretString, ca: Option<&[u8]>) -> Result<redis::Client, StoreError> {
    match ca {
        None => redis::Client::open(url.expose()),
        Some(pem) => redis::Client::build_with_tls(url.expose(), certificates(pem)),
    }
    .map_err(unavailable)
}

fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Redis errors name the failure (refused, timed out, an error reply), never the URL.
fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn gone(what: &str) -> StoreError {
    StoreError::Unavailable(what.to_owned())
}

/// Exponential backoff with jitter ("equal jitter": half fixed, half random), so that a
/// fleet that lost the store together does not reconnect in step.
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        let jitter = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
        d / 2 + d.mul_f64(jitter / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds_jittered() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        let Some(first) = waits.first() else {
            panic!("no waits")
        };
        assert!(*first >= BACKOFF_MIN / 2 && *first <= BACKOFF_MIN);
        for w in &waits {
            assert!(*w <= BACKOFF_MAX, "{w:?}");
        }
        assert!(waits.iter().skip(6).all(|w| *w >= BACKOFF_MAX / 2));
    }
}
