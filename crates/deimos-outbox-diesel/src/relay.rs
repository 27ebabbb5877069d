//! The relay: ships outbox rows to Kafka, one worker per leased (topic, partition), in id order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deimos_core::redact;
use deimos_core::shutdown::{self, CancellationToken};
use deimos_metrics::catalogue::{
    DB_PRODUCER_PROCESS, DB_PRODUCER_TOO_LARGE, DB_PRODUCER_UNKNOWN_PARTITION, PENDING_DB_MESSAGES_COUNT,
    PENDING_DB_MESSAGES_MAX_WAIT,
};
use deimos_metrics::{events, trace};
use deimos_producer::{
    DeliveryError, DeliveryResult, KafkaBackend, OutgoingBatch, OutgoingMessage, Partitioner, PublishBackend,
};
#[cfg(feature = "postgres")]
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::db::{Conn, Dialect, MessageRow, with_statement_timeout};
use crate::error::OutboxError;
use crate::pool;

/// Which topics a per-topic option applies to (Deimos's `compact_topics` / `log_topics`: `:all` or a list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topics {
    /// None.
    #[default]
    None,
    /// Every topic.
    All,
    /// These topics (as written to the outbox, with the prefix).
    Only(HashSet<String>),
}

impl Topics {
    /// A list of topics.
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(topics: I) -> Topics {
        Topics::Only(topics.into_iter().map(Into::into).collect())
    }

    fn contains(&self, topic: &str) -> bool {
        match self {
            Topics::None => false,
            Topics::All => true,
            Topics::Only(set) => set.contains(topic),
        }
    }
}

/// The relay's settings: [`RelayConfig::builder`] (or `RelayConfig::default()`) to set them, the getters to
/// read them, [`RelayConfig::to_builder`] to change some of a config's.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub(crate) batch_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_workers: usize,
    pub(crate) lease_ttl: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) idle_release: Duration,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) compact_topics: Topics,
    pub(crate) log_topics: Topics,
    pub(crate) metrics_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) name: String,
    pub(crate) delivery_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) pool_size: Option<usize>,
}

impl RelayConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RelayConfigBuilder {
        RelayConfigBuilder {
            config: RelayConfig::default(),
        }
    }

    /// A builder starting from this config's settings.
    pub fn to_builder(&self) -> RelayConfigBuilder {
        RelayConfigBuilder { config: self.clone() }
    }

    /// See [`RelayConfigBuilder::batch_size`].
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// See [`RelayConfigBuilder::max_in_flight`].
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// See [`RelayConfigBuilder::max_workers`].
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// See [`RelayConfigBuilder::lease_ttl`].
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// See [`RelayConfigBuilder::poll_interval`].
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// See [`RelayConfigBuilder::idle_release`].
    pub fn idle_release(&self) -> Duration {
        self.idle_release
    }

    /// See [`RelayConfigBuilder::backoff`].
    pub fn backoff(&self) -> (Duration, Duration) {
        self.backoff
    }

    /// See [`RelayConfigBuilder::compact_topics`].
    pub fn compact_topics(&self) -> &Topics {
        &self.compact_topics
    }

    /// See [`RelayConfigBuilder::log_topics`].
    pub fn log_topics(&self) -> &Topics {
        &self.log_topics
    }

    /// See [`RelayConfigBuilder::metrics_interval`].
    pub fn metrics_interval(&self) -> Duration {
        self.metrics_interval
    }

    /// See [`RelayConfigBuilder::shutdown_timeout`].
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// See [`RelayConfigBuilder::name`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// See [`RelayConfigBuilder::delivery_timeout`].
    pub fn delivery_timeout(&self) -> Option<Duration> {
        self.delivery_timeout
    }

    /// See [`RelayConfigBuilder::connect_timeout`].
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// See [`RelayConfigBuilder::statement_timeout`].
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// See [`RelayConfigBuilder::pool_size`].
    pub fn pool_size(&self) -> Option<usize> {
        self.pool_size
    }
}

/// Builds a [`RelayConfig`]; every setting starts at its default.
#[derive(Debug, Clone)]
#[must_use]
pub struct RelayConfigBuilder {
    config: RelayConfig,
}

impl RelayConfigBuilder {
    /// Rows per batch (default 2000; Deimos: 1000). Each fetch walks past the rows still in flight again (that is
    /// how a row committed late, with a lower id, is not skipped), so fewer, larger batches cost the database
    /// less per row: 2000 × 2 drained a million-row backlog about 25% faster than 1000 × 4 on PostgreSQL.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.config.batch_size = batch_size;
        self
    }

    /// Batches of one partition in flight at once (default 2).
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.config.max_in_flight = max_in_flight;
        self
    }

    /// Partitions worked on at once by this process (one database connection each; fewer if
    /// [`pool_size`](Self::pool_size) is smaller).
    pub fn max_workers(mut self, max_workers: usize) -> Self {
        self.config.max_workers = max_workers;
        self
    }

    /// How long a lease lasts without renewal (Deimos: a lock older than 1 minute is stolen). Every message a
    /// worker hands to librdkafka is acknowledged or failed before its lease can be taken over, so this bounds
    /// [`delivery_timeout`](Self::delivery_timeout).
    pub fn lease_ttl(mut self, lease_ttl: Duration) -> Self {
        self.config.lease_ttl = lease_ttl;
        self
    }

    /// How often to look for rows when nothing wakes the relay (PostgreSQL writers notify; others poll).
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.config.poll_interval = poll_interval;
        self
    }

    /// A worker idle this long gives its lease back.
    pub fn idle_release(mut self, idle_release: Duration) -> Self {
        self.config.idle_release = idle_release;
        self
    }

    /// Backoff after a failure of a partition: the first wait, doubled per failure up to the second.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff = (min, max);
        self
    }

    /// Keep only the last row per key within a batch for these topics.
    pub fn compact_topics(mut self, topics: Topics) -> Self {
        self.config.compact_topics = topics;
        self
    }

    /// Log each message sent (key, partition, size) at debug level for these topics.
    pub fn log_topics(mut self, topics: Topics) -> Self {
        self.config.log_topics = topics;
        self
    }

    /// How often `pending_db_messages_count` / `_max_wait` are reported.
    pub fn metrics_interval(mut self, metrics_interval: Duration) -> Self {
        self.config.metrics_interval = metrics_interval;
        self
    }

    /// On shutdown, how long to wait for batches in flight to be acknowledged (and deleted).
    pub fn shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.config.shutdown_timeout = shutdown_timeout;
        self
    }

    /// The start of this relay's name in `kafka_topic_info.locked_by`; each [`Relay`] adds a unique suffix, so
    /// relays built from the same config never share leases.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// How long librdkafka may keep trying to deliver a message the relay handed over (its `message.timeout.ms`)
    /// before reporting it failed. `None` (the default): a third of `lease_ttl` (10 s), and at most half of it
    /// minus 1 s, the longest allowed: a message must be acknowledged or failed before its lease can be taken
    /// over, with time to spare for renewing the lease and for librdkafka's once-a-second timeout checks. The
    /// relay sets it on its producer, unless the backend was built with `message.timeout.ms` (or
    /// `delivery.timeout.ms`) already short enough; a longer one is refused by [`Relay::new`].
    pub fn delivery_timeout(mut self, delivery_timeout: impl Into<Option<Duration>>) -> Self {
        self.config.delivery_timeout = delivery_timeout.into();
        self
    }

    /// How long opening a database connection may take, session settings included (default 5 s).
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.config.connect_timeout = connect_timeout;
        self
    }

    /// How long one database call of the relay (a statement, or one of its short transactions) may take (default
    /// 10 s). A call that takes longer fails, and its connection is dropped: a connection whose packets are
    /// dropped does not hang a worker. PostgreSQL sessions also get it as `statement_timeout` and
    /// `idle_in_transaction_session_timeout`, MySQL ones as `innodb_lock_wait_timeout`, SQLite ones as their busy
    /// timeout.
    pub fn statement_timeout(mut self, statement_timeout: Duration) -> Self {
        self.config.statement_timeout = statement_timeout;
        self
    }

    /// Database connections the relay keeps at most (its pool): one to look for work and one per worker, so
    /// `max_workers + 1` when `None` (the default). A smaller pool works on at most `pool_size - 1` partitions at
    /// once. PostgreSQL's LISTEN connection comes on top. Connections are checked (`SELECT 1`) when handed out
    /// again.
    pub fn pool_size(mut self, pool_size: impl Into<Option<usize>>) -> Self {
        self.config.pool_size = pool_size.into();
        self
    }

    /// The config.
    pub fn build(self) -> RelayConfig {
        self.config
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 2000,
            max_in_flight: 2,
            max_workers: 32,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            idle_release: Duration::from_secs(5),
            backoff: (Duration::from_millis(100), Duration::from_secs(30)),
            compact_topics: Topics::None,
            log_topics: Topics::None,
            metrics_interval: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            name: default_name(),
            delivery_timeout: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            pool_size: None,
        }
    }
}

fn fresh_owner(name: &str) -> Arc<str> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(format!("{name}-{}", &suffix[..12]))
}

fn default_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "relay".to_string());
    format!("{host}-{}", std::process::id())
}

/// What a relay did, returned when it stops.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RelayStats {
    /// Rows sent, acknowledged and deleted.
    pub sent: u64,
    /// Rows dropped by compaction (a later row had the same key).
    pub compacted: u64,
    /// Rows moved to `kafka_messages_dead` as too large.
    pub too_large: u64,
    /// Batches finished.
    pub batches: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    compacted: AtomicU64,
    too_large: AtomicU64,
    batches: AtomicU64,
}

/// The outbox relay: ships outbox rows to Kafka, one worker per leased (topic, partition), in id order.
///
/// # How a worker runs
///
/// 1. It holds the partition's lease (`kafka_topic_info`), renewed every third of its TTL (more often if the
///    delivery timeout needs it), also while waiting for the broker. Every new lease increments the row's fence;
///    deletes lock the lease row and check owner and fence in the same statement (PostgreSQL) or transaction, so
///    a worker whose lease was taken over deletes nothing. No sender outlives its lease: a batch is handed to
///    librdkafka only while every message of it will be acknowledged or failed (librdkafka's
///    `message.timeout.ms`, [`RelayConfig::delivery_timeout`]) before the lease, counted from when its last
///    renewal was sent, less a fifth of it, can be taken over. A renewal that fails while a batch is being
///    handed over lets the hand-over finish and its messages settle before the worker ends: nothing handed over
///    goes untracked.
/// 2. It keeps up to `max_in_flight` batches in flight. Each fetch is one statement (one snapshot) that takes
///    the partition's lowest rows not already in flight, and exactly those rows are sent: a row whose
///    transaction committed late (with a lower id than rows already sent) is sent next rather than skipped, and
///    a transaction that commits while the relay reads is in the batch whole or not at all.
/// 3. When the oldest batch is acknowledged in full, its rows are deleted with one statement. A row refused as
///    too large on its own (sent alone, or over the producer's own limit) is moved to `kafka_messages_dead` in
///    the same transaction and reported; the rest of the batch goes on. A broker's too-large refusal of a
///    request that held several rows proves nothing about each: the batch stops there, and its rows are sent
///    again in smaller batches, one at a time, halved on each such refusal, until each refused row has been
///    refused alone. Any other failure deletes only the acknowledged prefix of that batch, waits for the
///    batches behind it, backs off and starts again from the lowest id: order is kept; rows acknowledged after
///    the failure are sent again. A worker that fails with batches in flight keeps renewing its lease until they
///    have settled.
/// 4. Rows written without a partition (-1) are not sent by a worker of their own: the worker holding the
///    topic's -1 lease gives them, in id order, the partition a producer would choose (partition key, else key,
///    over the topic's partition count from Kafka), and the partition's worker sends them. A partition's worker
///    never sends past its topic's lowest row still without a partition, so all of a key's rows go out through
///    one worker, in id order.
/// 5. Idle for `idle_release`, it gives the lease back and ends; writers' NOTIFY (PostgreSQL) or polling brings
///    a new worker when rows come.
///
/// Its `Debug` output shows the database URL without its password or secret parameters.
#[derive(Clone)]
pub struct Relay {
    url: String,
    owner: Arc<str>,
    backend: KafkaBackend,
    config: Arc<RelayConfig>,
    /// librdkafka's `message.timeout.ms` on `backend`.
    delivery_timeout: Duration,
    /// Connections of a run's pool.
    pool_size: usize,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Relay {
            url,
            owner,
            backend,
            config,
            delivery_timeout,
            pool_size,
        } = self;
        f.debug_struct("Relay")
            .field("url", &redact::url(url))
            .field("owner", owner)
            .field("backend", backend)
            .field("config", config)
            .field("delivery_timeout", delivery_timeout)
            .field("pool_size", pool_size)
            .finish()
    }
}

/// How late after its timeout librdkafka may report a message failed: it checks timeouts about once a second.
const LIBRDKAFKA_TIMEOUT_SCAN: Duration = Duration::from_secs(1);

/// librdkafka settings that set how long a message may be retried (aliases).
const DELIVERY_TIMEOUT_SETTINGS: [&str; 2] = ["message.timeout.ms", "delivery.timeout.ms"];

/// The longest delivery timeout a lease of `ttl` allows: half of it, less librdkafka's timeout scan.
fn longest_delivery_timeout(ttl: Duration) -> Duration {
    (ttl / 2).saturating_sub(LIBRDKAFKA_TIMEOUT_SCAN)
}

/// The backend the relay sends through, with the delivery timeout it has: `backend` itself when it was built
/// with a short enough `message.timeout.ms` / `delivery.timeout.ms`, else another producer like it with
/// `message.timeout.ms` set to the relay's.
fn relay_backend(backend: KafkaBackend, config: &RelayConfig) -> Result<(KafkaBackend, Duration), OutboxError> {
    let ttl = config.lease_ttl;
    let longest = longest_delivery_timeout(ttl);
    if backend.kafka_setting("transactional.id").is_some() {
        return Err(OutboxError::Config(
            "the relay's Kafka producer has a transactional.id: librdkafka then lets a message be retried for \
             transaction.timeout.ms, longer than the relay's lease; build the relay's backend without it (the relay \
             does not use transactions)"
                .to_string(),
        ));
    }
    let mut given: Option<Duration> = None;
    for key in DELIVERY_TIMEOUT_SETTINGS {
        let Some(value) = backend.kafka_setting(key) else {
            continue;
        };
        let ms: u64 = value.trim().parse().map_err(|_| {
            OutboxError::Config(format!(
                "the relay's Kafka producer has {key} = `{value}`, which is not a number of milliseconds"
            ))
        })?;
        let timeout = Duration::from_millis(ms);
        if ms == 0 || timeout > longest {
            return Err(OutboxError::Config(format!(
                "the relay's Kafka producer has {key} = {value}{}: librdkafka would keep retrying a message after \
                 the lease it was sent under (lease_ttl {ttl:?}) can be taken over by another relay, which sends it \
                 again; set {key} to at most {} (half the lease minus 1 s), or leave it unset and let the relay set \
                 it (RelayConfig::delivery_timeout), or lengthen lease_ttl",
                if ms == 0 { " (no limit)" } else { "" },
                longest.as_millis()
            )));
        }
        given = given.max(Some(timeout));
    }
    if let Some(timeout) = given {
        return Ok((backend, timeout));
    }
    let timeout = config.delivery_timeout.unwrap_or_else(|| (ttl / 3).min(longest));
    if timeout > longest || timeout < Duration::from_millis(1) {
        return Err(OutboxError::Config(format!(
            "delivery_timeout {timeout:?} does not fit lease_ttl {ttl:?}: a message must be acknowledged or failed \
             before its lease can be taken over, so it may be at most {longest:?} (half the lease minus 1 s) and at \
             least 1 ms; shorten delivery_timeout or lengthen lease_ttl"
        )));
    }
    let backend = backend
        .to_builder()
        .kafka_setting("message.timeout.ms", timeout.as_millis().to_string())
        .build()
        .map_err(|e| {
            OutboxError::Kafka(format!(
                "could not create the relay's Kafka producer with message.timeout.ms = {}: {e}",
                timeout.as_millis()
            ))
        })?;
    Ok((backend, timeout))
}

impl Relay {
    /// A relay reading the outbox at `database_url` and sending through `backend` (keep its `acks=all` and
    /// idempotence: they are what keeps a partition in order with several batches in flight).
    ///
    /// Unless `backend` was built with a `message.timeout.ms` (or `delivery.timeout.ms`) short enough for the
    /// lease, the relay sends through another producer like it, with `message.timeout.ms` set to
    /// [`RelayConfig::delivery_timeout`]. Fails when a setting would let a message outlive its lease (a longer or
    /// unlimited delivery timeout, a `transactional.id`), and on settings out of range.
    pub fn new(
        database_url: impl Into<String>,
        backend: KafkaBackend,
        config: RelayConfig,
    ) -> Result<Relay, OutboxError> {
        let url = database_url.into();
        Dialect::of_url(&url)?;
        if config.batch_size == 0 || config.max_in_flight == 0 || config.max_workers == 0 {
            return Err(OutboxError::Config(
                "batch_size, max_in_flight and max_workers must be at least 1".to_string(),
            ));
        }
        if config.lease_ttl < Duration::from_secs(3) {
            return Err(OutboxError::Config(format!(
                "lease_ttl {:?} is too short: a lease is renewed every third of it; use at least 3 s",
                config.lease_ttl
            )));
        }
        if config.connect_timeout.is_zero() || config.statement_timeout.is_zero() {
            return Err(OutboxError::Config(
                "connect_timeout and statement_timeout must be longer than zero".to_string(),
            ));
        }
        let pool_size = config.pool_size.unwrap_or(config.max_workers.saturating_add(1));
        if pool_size < 2 {
            return Err(OutboxError::Config(format!(
                "pool_size {pool_size} is too small: the relay needs one connection to look for work and one per \
                 partition it works on; use at least 2"
            )));
        }
        let (backend, delivery_timeout) = relay_backend(backend, &config)?;
        Ok(Relay {
            url,
            owner: fresh_owner(&config.name),
            backend,
            config: Arc::new(config),
            delivery_timeout,
            pool_size,
        })
    }

    /// How long librdkafka tries to deliver each message this relay hands over before reporting it failed
    /// (`message.timeout.ms` on the relay's producer).
    pub fn delivery_timeout(&self) -> Duration {
        self.delivery_timeout
    }

    /// Runs until SIGTERM or ctrl-c, then shuts down gracefully.
    pub async fn run(&self) -> Result<RelayStats, OutboxError> {
        self.run_until(shutdown::signal()).await
    }

    /// Runs until `stop` completes, then stops taking new batches, waits (up to `shutdown_timeout`) for those in
    /// flight, deletes what was acknowledged and gives the leases back.
    pub async fn run_until(&self, stop: impl Future<Output = ()>) -> Result<RelayStats, OutboxError> {
        // A lease owner of this run alone: clones of a relay, or one relay run twice at once, never share leases.
        let me = Relay {
            owner: fresh_owner(&self.config.name),
            ..self.clone()
        };
        with_statement_timeout(self.config.statement_timeout, me.run_once(stop)).await
    }

    /// Gives back the leases of workers that stopped, in order, on one connection.
    async fn give_back(&self, pool: &pool::Pool, leases: &[(String, i32, i64)]) {
        if leases.is_empty() {
            return;
        }
        let mut conn = match pool::get(pool, &self.url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, leases = leases.len(),
                    "outbox relay: could not give back the leases; other relays take them when they expire");
                return;
            }
        };
        for (topic, partition, fence) in leases {
            // (Within the statement timeout `run` sets for the whole run.)
            if let Err(e) = conn.release(topic, *partition, &self.owner, *fence).await {
                tracing::warn!(topic = %topic, partition, error = %e,
                    "outbox relay: could not give back a lease; other relays take the partition when it expires");
                if connection_failed(&Err(e)) {
                    pool::discard(conn);
                    match pool::get(pool, &self.url).await {
                        Ok(c) => conn = c,
                        Err(_) => return,
                    }
                }
            }
        }
    }

    /// The settings of this relay's database connections.
    fn connection_settings(&self) -> pool::Settings {
        pool::Settings::new()
            .connect_timeout(self.config.connect_timeout)
            .statement_timeout(self.config.statement_timeout)
    }

    async fn run_once(&self, stop: impl Future<Output = ()>) -> Result<RelayStats, OutboxError> {
        // The connections of this run: one to look for work (`coord`), one per worker.
        let pool = pool::build(&self.url, self.pool_size, self.connection_settings())?;
        let max_workers = self.config.max_workers.min(self.pool_size - 1);
        // Fail early on a database that cannot be reached or lacks the tables.
        let mut coord = pool::get(&pool, &self.url).await?;
        coord.leases().await.map_err(OutboxError::not_migrated)?;
        let stopping = CancellationToken::new();
        let (wake_tx, wake_rx) = watch::channel(0u64);
        let wake_tx = Arc::new(wake_tx);
        let counters = Arc::new(Counters::default());
        let listener = (coord.dialect() == Dialect::Postgres).then(|| {
            tokio::spawn(with_statement_timeout(
                self.config.statement_timeout,
                listen(
                    self.url.clone(),
                    self.config.connect_timeout,
                    Arc::clone(&wake_tx),
                    stopping.clone(),
                    self.config.backoff,
                ),
            ))
        });
        tracing::info!(owner = %self.owner, database = %redact::url(&self.url), "outbox relay started");

        let mut stop = std::pin::pin!(stop);
        let mut workers: JoinSet<WorkerEnd> = JoinSet::new();
        let mut active: HashSet<(String, i32)> = HashSet::new();
        let mut tasks: HashMap<tokio::task::Id, (String, i32)> = HashMap::new();
        let mut retry_at: HashMap<(String, i32), (Instant, u32)> = HashMap::new();
        let mut coord = Some(coord);
        let mut coord_failures = 0u32;
        let mut reported: HashSet<String> = HashSet::new();
        let mut next_metrics = Instant::now();
        let mut wake_seen = wake_rx.clone();
        loop {
            // Seen before looking, so a notification that comes while looking wakes the next wait.
            wake_seen.borrow_and_update();
            // Look for partitions with rows and lease those nobody works on.
            let pass = async {
                let conn = match coord.as_mut() {
                    Some(c) => c,
                    None => coord.insert(pool::get(&pool, &self.url).await?),
                };
                let now = Instant::now();
                for (topic, partition) in conn.partitions_with_rows().await? {
                    let key = (topic, partition);
                    if active.contains(&key) || active.len() >= max_workers {
                        continue;
                    }
                    if retry_at.get(&key).is_some_and(|(at, _)| *at > now) {
                        continue;
                    }
                    // The worker's connection first: a lease is only taken when it can be worked on at once.
                    let Some(worker_conn) = pool::try_get(&pool, &self.url).await? else {
                        break;
                    };
                    let ttl = ms(self.config.lease_ttl);
                    let asked = Instant::now();
                    let Some(fence) = conn.acquire(&key.0, key.1, &self.owner, ttl).await? else {
                        continue;
                    };
                    let worker = Worker {
                        topic: key.0.clone(),
                        partition: key.1,
                        fence,
                        renewed: asked,
                        relay: self.clone(),
                        pool: pool.clone(),
                        counters: Arc::clone(&counters),
                        stop: stopping.clone(),
                        wake: wake_rx.clone(),
                        wake_all: Arc::clone(&wake_tx),
                        lease_failure: None,
                        unknown_partition: false,
                    };
                    let task = workers.spawn(with_statement_timeout(
                        self.config.statement_timeout,
                        worker.run(worker_conn),
                    ));
                    tasks.insert(task.id(), key.clone());
                    active.insert(key);
                }
                // The pending metrics after the work is handed out, and never in its way: a count that fails
                // (one that outlasts `statement_timeout` on a huge backlog, say) is said, and sending goes on.
                if Instant::now() >= next_metrics {
                    next_metrics = Instant::now() + self.config.metrics_interval;
                    if let Err(e) = report_pending(conn, &mut reported).await {
                        tracing::warn!(error = %e, "outbox relay: could not count the pending messages for the \
                            pending_db_messages metrics; sending goes on, counted again in {:?}",
                            self.config.metrics_interval);
                        // The connection may be the one that failed (a statement timed out): never reused.
                        if let Some(c) = coord.take() {
                            pool::discard(c);
                        }
                    }
                }
                Ok::<(), OutboxError>(())
            };
            let outcome = tokio::select! {
                outcome = pass => outcome,
                () = &mut stop => break,
            };
            match outcome {
                Ok(()) => coord_failures = 0,
                Err(e) => {
                    // Its connection may be the one that failed (a statement timed out): never reused.
                    if let Some(c) = coord.take() {
                        pool::discard(c);
                    }
                    coord_failures = coord_failures.saturating_add(1);
                    tracing::warn!(error = %e, "outbox relay: could not look for pending messages; retrying");
                    let delay = backoff(self.config.backoff, coord_failures);
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            }
            tokio::select! {
                () = &mut stop => break,
                _ = wake_seen.changed() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                Some(ended) = workers.join_next_with_id() => {
                    match ended {
                        Ok((id, end)) => {
                            tasks.remove(&id);
                            let key = (end.topic.clone(), end.partition);
                            active.remove(&key);
                            match &end.result {
                                Ok(()) => { retry_at.remove(&key); }
                                Err(OutboxError::LeaseLost { .. }) => {
                                    tracing::warn!(topic = %end.topic, partition = end.partition, "outbox relay: lease taken over by another relay; stopped this partition");
                                }
                                Err(e) => {
                                    let failures = retry_at.get(&key).map_or(1, |(_, n)| n.saturating_add(1));
                                    let delay = backoff(self.config.backoff, failures);
                                    tracing::warn!(topic = %end.topic, partition = end.partition, error = %e, ?delay,
                                        "outbox relay: partition failed; retrying after backoff (order is kept)");
                                    retry_at.insert(key, (Instant::now() + delay, failures));
                                }
                            }
                        }
                        Err(join) => {
                            // Its lease expires by itself; the partition is taken up again after that.
                            if let Some(key) = tasks.remove(&join.id()) {
                                active.remove(&key);
                            }
                            tracing::error!(error = %join, "outbox relay: a worker task failed");
                        }
                    }
                }
            }
        }
        // Shut down: workers finish what is in flight and delete it; then their leases are given back, one after
        // another in (topic, partition) order on one connection.
        stopping.cancel();
        let deadline = self.config.shutdown_timeout + self.config.backoff.1.min(Duration::from_secs(5));
        let mut to_release: Vec<(String, i32, i64)> = Vec::new();
        let joined = tokio::time::timeout(deadline, async {
            while let Some(end) = workers.join_next().await {
                if let Ok(WorkerEnd {
                    topic,
                    partition,
                    release: Some(fence),
                    ..
                }) = end
                {
                    to_release.push((topic, partition, fence));
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!("outbox relay: workers did not stop in time; their leases expire by themselves");
            workers.abort_all();
        }
        to_release.sort();
        // Not on `coord`: the stop may have come in the middle of one of its statements, which leaves the
        // connection in an unknown state.
        if let Some(c) = coord.take() {
            pool::discard(c);
        }
        self.give_back(&pool, &to_release).await;
        if let Some(l) = listener {
            l.abort();
        }
        let stats = RelayStats {
            sent: counters.sent.load(Ordering::Relaxed),
            compacted: counters.compacted.load(Ordering::Relaxed),
            too_large: counters.too_large.load(Ordering::Relaxed),
            batches: counters.batches.load(Ordering::Relaxed),
        };
        tracing::info!(
            sent = stats.sent,
            batches = stats.batches,
            too_large = stats.too_large,
            "outbox relay stopped"
        );
        Ok(stats)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How long after asking for a lease (or its renewal) it surely still holds: the TTL minus a fifth of it (the
/// database's and the relay's clocks may run at slightly different rates, and the renewal takes time).
fn lease_margin(ttl: Duration) -> Duration {
    ttl - ttl / 5
}

fn backoff((min, max): (Duration, Duration), failures: u32) -> Duration {
    min.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(max)
}

/// LISTENs on PostgreSQL and bumps `wake` on every notification, reconnecting when the connection drops.
async fn listen(
    url: String,
    connect_timeout: Duration,
    wake: Arc<watch::Sender<u64>>,
    stop: CancellationToken,
    delays: (Duration, Duration),
) {
    let mut failures = 0u32;
    loop {
        let run = async {
            let mut conn = Conn::connect_within(&url, connect_timeout).await?;
            conn.listen().await?;
            failures = 0;
            // Rows may have come while the connection was down.
            wake.send_modify(|n| *n = n.wrapping_add(1));
            #[cfg(feature = "postgres")]
            #[allow(irrefutable_let_patterns, reason = "irrefutable in a build with PostgreSQL alone")]
            if let Conn::Pg(pg) = &mut conn {
                let mut stream = std::pin::pin!(pg.notifications_stream());
                while let Some(n) = stream.next().await {
                    n.map_err(OutboxError::db("receiving outbox notifications"))?;
                    wake.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            Ok::<(), OutboxError>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            result = run => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "outbox relay: notification listener reconnecting (polling meanwhile)");
                }
            }
        }
        failures = failures.saturating_add(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff(delays, failures)) => {}
        }
    }
}

/// Reports `pending_db_messages_count` and `_max_wait` per topic (0 for topics that emptied).
async fn report_pending(conn: &mut Conn, reported: &mut HashSet<String>) -> Result<(), OutboxError> {
    let mut per_topic: HashMap<String, (i64, f64)> = HashMap::new();
    for b in conn.backlog().await? {
        let e = per_topic.entry(b.topic).or_default();
        e.0 += b.count;
        e.1 = e.1.max(b.max_wait_seconds);
    }
    for topic in reported.iter() {
        per_topic.entry(topic.clone()).or_default();
    }
    for (topic, (count, wait)) in &per_topic {
        metrics::gauge!(PENDING_DB_MESSAGES_COUNT.name, "topic" => topic.clone()).set(*count as f64);
        metrics::gauge!(PENDING_DB_MESSAGES_MAX_WAIT.name, "topic" => topic.clone()).set(wait.max(0.0));
    }
    *reported = per_topic.into_keys().collect();
    Ok(())
}

struct WorkerEnd {
    topic: String,
    partition: i32,
    result: Result<(), OutboxError>,
    /// The fence of a lease this worker left for the relay to give back (at a stop, the relay gives back every
    /// lease itself, one after another on one connection: released all at once by their workers, MySQL's row
    /// locks made them deadlock).
    release: Option<i64>,
}

struct Worker {
    topic: String,
    partition: i32,
    fence: i64,
    /// When the lease was last taken or renewed (the request's start): batches may be handed over until
    /// [`send_window`](Worker::send_window) after this.
    renewed: Instant,
    relay: Relay,
    /// Where a connection that failed is replaced from.
    pool: pool::Pool,
    counters: Arc<Counters>,
    stop: CancellationToken,
    wake: watch::Receiver<u64>,
    /// Wakes the relay's other workers and its search for partitions with rows (after rows got a partition).
    wake_all: Arc<watch::Sender<u64>>,
    /// A renewal that failed while something that must finish (a batch being handed over) was under way: the
    /// worker ends with it once that is done.
    lease_failure: Option<OutboxError>,
    /// The broker does not know this partition (reported once, in the log and `db_producer.unknown_partition`).
    unknown_partition: bool,
}

/// Whether `result` says the worker's connection failed (an error, a timed-out call): it is then never reused.
fn connection_failed(result: &Result<(), OutboxError>) -> bool {
    matches!(result, Err(OutboxError::Database { .. } | OutboxError::Connect { .. }))
}

/// After the broker refused a request as too large without saying which message is: rows up to `through` go
/// one batch at a time, of at most `limit` rows, halved on each such refusal and doubled on each success, so
/// that a row refused alone is known to be too large on its own, and the others are sent, in order.
#[derive(Debug, Clone, Copy)]
struct Narrow {
    limit: usize,
    through: i64,
}

type Wait = Pin<Box<dyn Future<Output = Vec<DeliveryResult>> + Send>>;

/// A batch handed to the producer, waiting for its acknowledgements.
struct Flight {
    /// Ids sent, in order (one per message).
    sent: Vec<i64>,
    /// Ids compacted away (deleted with the batch).
    compacted: Vec<i64>,
    wait: Wait,
}

impl Flight {
    /// Every id of the batch, sent or compacted away.
    fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.sent.iter().chain(&self.compacted).copied()
    }
}

impl Worker {
    async fn run(mut self, conn: pool::Pooled) -> WorkerEnd {
        let mut conn = Some(conn);
        let mut in_flight: VecDeque<Flight> = VecDeque::new();
        let result = match conn.as_mut() {
            Some(c) if self.partition == -1 => self.assign(c).await,
            Some(c) => self.work(c, &mut in_flight).await,
            None => Ok(()),
        };
        // A connection that failed (a call timed out, the connection broke) is dropped, never reused: the lease
        // is renewed and released on a new one.
        if connection_failed(&result)
            && let Some(c) = conn.take()
        {
            pool::discard(c);
        }
        if !in_flight.is_empty() {
            // Failed with batches still in librdkafka's hands: they may yet be sent, so the lease is kept (and
            // renewed where possible) until they have settled, and nobody else sends this partition meanwhile.
            // They settle within the delivery timeout.
            conn = self.settle_after_failure(conn, in_flight).await;
        }
        let lease_kept = !matches!(result, Err(OutboxError::LeaseLost { .. }));
        if lease_kept && self.stop.is_cancelled() {
            return WorkerEnd {
                topic: self.topic,
                partition: self.partition,
                result,
                release: Some(self.fence),
            };
        }
        if lease_kept {
            if conn.is_none() {
                conn = pool::get(&self.pool, &self.relay.url).await.ok();
            }
            if let Some(c) = conn.as_mut()
                && let Err(e) = c
                    .release(&self.topic, self.partition, &self.relay.owner, self.fence)
                    .await
            {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e,
                    "outbox relay: could not give back a lease; other relays take the partition when it expires");
                if let Some(c) = conn.take() {
                    pool::discard(c);
                }
            }
        }
        WorkerEnd {
            topic: self.topic,
            partition: self.partition,
            result,
            release: None,
        }
    }

    /// `db_producer.unknown_partition` of this worker's topic and partition.
    fn unknown_partition_gauge(&self) -> metrics::Gauge {
        metrics::gauge!(DB_PRODUCER_UNKNOWN_PARTITION.name, "topic" => self.topic.clone(),
            "partition" => self.partition.to_string())
    }

    /// Says, once, that this partition's rows cannot be sent because the topic does not have the partition, with
    /// the topic's partition count and the rows waiting.
    async fn report_unknown_partition(&mut self, conn: &mut Conn) {
        self.unknown_partition_gauge().set(1.0);
        let count = match self.relay.backend.partition_count(&self.topic).await {
            Ok(n) => n.to_string(),
            Err(_) => "fewer".to_string(),
        };
        let waiting = match conn.backlog().await {
            Ok(backlog) => backlog
                .iter()
                .find(|b| b.topic == self.topic && b.partition == self.partition)
                .map_or(0, |b| b.count),
            Err(_) => 0,
        };
        tracing::error!(topic = %self.topic, partition = self.partition, partitions = %count, rows = waiting,
            "outbox relay: topic {} has {count} partitions, so its outbox rows for partition {} ({waiting} waiting) \
             cannot be sent: a writer declared more partitions than the topic has (`.partitions(\"{}\", N)` or \
             `default_partitions`). Give the topic that many partitions, or fix the declaration and move the rows \
             to an existing partition; they are tried again every {:?}",
            self.topic, self.partition, self.topic, self.relay.config.backoff.1);
    }

    /// Waits for batches left in flight by a failure, renewing the lease (on a new connection if the old one
    /// failed) so that it does not expire while they may still be sent.
    async fn settle_after_failure(
        &mut self,
        mut conn: Option<pool::Pooled>,
        in_flight: VecDeque<Flight>,
    ) -> Option<pool::Pooled> {
        for mut flight in in_flight {
            loop {
                tokio::select! {
                    _ = &mut flight.wait => break,
                    () = tokio::time::sleep(self.renew_in()) => {
                        if conn.is_none() {
                            conn = pool::get(&self.pool, &self.relay.url).await.ok();
                        }
                        if let Some(c) = conn.as_mut()
                            && let Err(e) = self.renew(c).await
                        {
                            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e,
                                "outbox relay: could not renew a lease while failed batches settle");
                            if let Some(c) = conn.take() {
                                pool::discard(c);
                            }
                            // Try again at the next renewal, not at once.
                            self.renewed = Instant::now();
                        }
                    }
                }
            }
        }
        conn
    }

    async fn work(&mut self, conn: &mut Conn, in_flight: &mut VecDeque<Flight>) -> Result<(), OutboxError> {
        let config = Arc::clone(&self.relay.config);
        let mut idle_since: Option<Instant> = None;
        let mut failures = 0u32;
        let mut narrow: Option<Narrow> = None;
        loop {
            if let Some(e) = self.lease_failure.take() {
                return Err(e);
            }
            let stopping = self.stop.is_cancelled();
            if self.renew_in().is_zero() {
                self.renew(conn).await?;
            }
            // Fill the pipeline (one batch at a time while narrowed).
            let (depth, limit) = narrow.map_or((config.max_in_flight, config.batch_size), |n| (1, n.limit));
            if !stopping && in_flight.len() < depth {
                self.wake.borrow_and_update();
                let ids: Vec<i64> = in_flight.iter().flat_map(Flight::ids).collect();
                if let Some(flight) = self.next_batch(conn, &ids, limit).await? {
                    in_flight.push_back(flight);
                    idle_since = None;
                    continue;
                }
            }
            let Some(front) = in_flight.front_mut() else {
                if stopping || !self.nap(&mut idle_since).await {
                    return Ok(());
                }
                continue;
            };
            // Wait for the oldest batch, renewing the lease meanwhile.
            let results = tokio::select! {
                results = &mut front.wait => results,
                () = tokio::time::sleep(self.renew_in()) => continue,
            };
            let Some(flight) = in_flight.pop_front() else { continue };
            match self.settle(conn, &flight.sent, &flight.compacted, &results).await? {
                Settled::Done => {
                    failures = 0;
                    if std::mem::take(&mut self.unknown_partition) {
                        self.unknown_partition_gauge().set(0.0);
                    }
                    narrow = narrow.and_then(|n| {
                        (flight.ids().max().unwrap_or(i64::MIN) < n.through).then(|| Narrow {
                            limit: n.limit.saturating_mul(2).min(config.batch_size),
                            through: n.through,
                        })
                    });
                }
                Settled::TooLarge { suspects, through } => {
                    // Keep order: nothing behind the refused rows is deleted; wait for the rest (their too-large
                    // refusals count as suspects too), then send again from the lowest id, in smaller batches.
                    let mut through = through;
                    while let Some(mut later) = in_flight.pop_front() {
                        let results = self.renewing(conn, &mut later.wait).await?;
                        if let Some(last) = suspect_ids(&later.sent, &results).max() {
                            through = through.max(last);
                        }
                    }
                    let limit = narrow.map_or(config.batch_size, |n| n.limit).min(suspects) / 2;
                    let through = narrow.map_or(through, |n| n.through.max(through));
                    narrow = Some(Narrow {
                        limit: limit.max(1),
                        through,
                    });
                    tracing::warn!(topic = %self.topic, partition = self.partition, suspects, through, limit = limit.max(1),
                        "outbox relay: the broker refused a request as too large; sending its messages again in smaller batches to find which are too large on their own");
                }
                Settled::Failed {
                    error,
                    unknown_partition,
                } => {
                    // Keep order: nothing behind the failure is deleted; wait for the rest, back off, start over
                    // from the lowest id.
                    // The lease is renewed all along: the broker may take long to answer, and nobody else
                    // may send this partition before what is still in flight has settled.
                    // A batch leaves `in_flight` only once settled, so a failure here leaves it to
                    // `settle_after_failure`.
                    while let Some(later) = in_flight.front_mut() {
                        self.renewing(conn, &mut later.wait).await?;
                        in_flight.pop_front();
                    }
                    if let Some(e) = self.lease_failure.take() {
                        return Err(e);
                    }
                    failures = failures.saturating_add(1);
                    let delay = if unknown_partition {
                        // Said once, clearly, then retried slowly: the topic may be given more partitions.
                        if !self.unknown_partition {
                            self.unknown_partition = true;
                            self.report_unknown_partition(conn).await;
                        }
                        config.backoff.1
                    } else {
                        backoff(config.backoff, failures)
                    };
                    if !unknown_partition {
                        tracing::warn!(topic = %self.topic, partition = self.partition, %error, ?delay,
                            "outbox relay: messages not delivered; sending them again after backoff");
                    }
                    let stop = self.stop.clone();
                    let pause = async {
                        tokio::select! {
                            () = tokio::time::sleep(delay) => true,
                            () = stop.cancelled() => false,
                        }
                    };
                    if !self.renewing(conn, pause).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The worker of a topic's rows without a partition (-1: written without a partition count, Deimos's own
    /// rows): gives each, in id order, the partition a producer would choose for it (from its partition key,
    /// else its key, over the topic's partition count), and wakes the relay, whose partition workers send them.
    /// It sends nothing itself, so all of a key's rows, with a partition or without, go out through one worker,
    /// in id order; partition workers never send past the lowest row still without one.
    async fn assign(&mut self, conn: &mut Conn) -> Result<(), OutboxError> {
        let config = Arc::clone(&self.relay.config);
        let limit = i64::try_from(config.batch_size).unwrap_or(i64::MAX);
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            if self.renew_in().is_zero() {
                self.renew(conn).await?;
            }
            self.wake.borrow_and_update();
            let rows = conn.unpartitioned_rows(&self.topic, limit).await?;
            if rows.is_empty() {
                if !self.nap(&mut idle_since).await {
                    return Ok(());
                }
                continue;
            }
            idle_since = None;
            let (backend, topic) = (self.relay.backend.clone(), self.topic.clone());
            let count = self
                .renewing(conn, backend.partition_count(&topic))
                .await?
                .map_err(|e| {
                    OutboxError::Kafka(format!(
                        "the partition count of `{}` is needed to send its messages written without a partition \
                         (they wait meanwhile, and so do the messages behind them): {e}",
                        self.topic
                    ))
                })?;
            let partitioner = backend.partitioner();
            let assigned: Vec<(i64, i32)> = rows
                .iter()
                .map(|r| {
                    let p = partition_of(partitioner, r.key.as_deref(), r.partition_key.as_deref(), r.id, count);
                    (r.id, p)
                })
                .collect();
            // Not fenced: a worker that lost this lease meanwhile sets the same partitions, only on rows still
            // without one, and partition workers wait for every row below theirs to have one.
            let changed = conn.set_partitions(&self.topic, &assigned).await?;
            tracing::debug!(topic = %self.topic, rows = changed, "outbox relay: gave messages written without a partition theirs");
            self.wake_all.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Waits for a wake-up, the stop signal or the next poll; `false`, without waiting, once the worker has been
    /// idle for `idle_release` (it then gives its lease back).
    async fn nap(&mut self, idle_since: &mut Option<Instant>) -> bool {
        let config = Arc::clone(&self.relay.config);
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= config.idle_release {
            return false;
        }
        let nap = config.poll_interval.min(self.renew_in());
        tokio::select! {
            _ = self.wake.changed() => {}
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(nap) => {}
        }
        true
    }

    async fn renew(&mut self, conn: &mut Conn) -> Result<(), OutboxError> {
        let asked = Instant::now();
        let config = &self.relay.config;
        if conn
            .renew(
                &self.topic,
                self.partition,
                &self.relay.owner,
                self.fence,
                ms(config.lease_ttl),
            )
            .await?
        {
            self.renewed = asked;
            Ok(())
        } else {
            Err(self.lost())
        }
    }

    /// How long after a lease's renewal was sent a batch may still be handed to librdkafka: every message of it
    /// is then acknowledged or failed (the delivery timeout, plus librdkafka's timeout scan) before the lease,
    /// less a fifth of it, can be taken over.
    fn send_window(&self) -> Duration {
        let ttl = self.relay.config.lease_ttl;
        lease_margin(ttl).saturating_sub(self.relay.delivery_timeout + LIBRDKAFKA_TIMEOUT_SCAN)
    }

    /// How long until the lease is due for renewal (every third of its TTL, or sooner if the send window is
    /// shorter, so that renewing on time keeps batches going); zero when it is due.
    fn renew_in(&self) -> Duration {
        (self.relay.config.lease_ttl / 3)
            .min(self.send_window())
            .saturating_sub(self.renewed.elapsed())
    }

    /// Awaits `work` (which must not need the worker), renewing the lease whenever it is due meanwhile.
    ///
    /// `work` may be a batch being handed to librdkafka, which must not stop half-way: before it starts, the lease
    /// is renewed if the send window has passed (a failure then drops `work` unstarted); once it has started, a
    /// failed renewal lets it finish and is kept in `lease_failure`, which ends the worker at its next step, with
    /// the batch tracked among those in flight.
    async fn renewing<F: Future>(&mut self, conn: &mut Conn, work: F) -> Result<F::Output, OutboxError> {
        if self.lease_failure.is_none() && self.renewed.elapsed() >= self.send_window() {
            self.renew(conn).await?;
        }
        let mut work = std::pin::pin!(work);
        loop {
            if self.lease_failure.is_some() {
                return Ok(work.await);
            }
            tokio::select! {
                out = &mut work => return Ok(out),
                () = tokio::time::sleep(self.renew_in()) => {
                    if let Err(e) = self.renew(conn).await {
                        tracing::warn!(topic = %self.topic, partition = self.partition, error = %e,
                            "outbox relay: could not renew a lease; finishing what was under way, then stopping");
                        self.lease_failure = Some(e);
                    }
                }
            }
        }
    }

    fn lost(&self) -> OutboxError {
        OutboxError::LeaseLost {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// Fetches the lowest rows not in flight (at most `limit`, with one statement) and hands exactly those to the
    /// producer; `None` when there are none.
    async fn next_batch(
        &mut self,
        conn: &mut Conn,
        in_flight: &[i64],
        limit: usize,
    ) -> Result<Option<Flight>, OutboxError> {
        let config = Arc::clone(&self.relay.config);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<MessageRow> = conn.next_rows(&self.topic, self.partition, in_flight, limit).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        if self.renewed.elapsed() >= lease_margin(config.lease_ttl) {
            self.renew(conn).await?;
        }
        let (rows, compacted) = if config.compact_topics.contains(&self.topic) {
            compact(rows)
        } else {
            (rows, Vec::new())
        };
        let mut messages = Vec::with_capacity(rows.len());
        let mut sent = Vec::with_capacity(rows.len());
        // `send {topic}`: a child of the first row's stored trace context, linked to the others' (each once).
        // The rows keep their own context: their consumers are children of the span that created them.
        let span = trace::send_span(&self.topic, rows.len());
        let mut links = trace::Links::default();
        let mut parented = span.is_disabled();
        for row in rows {
            let headers = crate::headers::decode(row.headers.as_deref()).unwrap_or_else(|e| {
                tracing::warn!(topic = %self.topic, id = row.id, error = %e, "outbox row with unreadable headers; sent without them");
                Vec::new()
            });
            let carried = || headers.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice())));
            if parented {
                links.add(&span, carried());
            } else if let Some(parent) = trace::set_parent(&span, carried()) {
                links.parent(&parent);
                parented = true;
            }
            if config.log_topics.contains(&self.topic) {
                tracing::debug!(topic = %self.topic, partition = self.partition, id = row.id,
                    key = ?row.key.as_deref().map(String::from_utf8_lossy), size = row.message.as_ref().map_or(0, Vec::len),
                    "outbox relay: sending");
            }
            sent.push(row.id);
            messages.push(
                OutgoingMessage::new(row.key, row.message)
                    .partition_key(row.partition_key)
                    .partition((self.partition >= 0).then_some(self.partition))
                    .headers(headers),
            );
        }
        events::emit_with(events::DB_PRODUCER_PRODUCE, || {
            events::Event::new(events::DB_PRODUCER_PRODUCE, &self.topic).payloads(describe(&sent, &messages))
        });
        let batch = OutgoingBatch::new(
            "outbox-relay",
            self.topic.as_str(),
            self.topic.as_str(),
            Vec::new(),
            messages,
        );
        // Handing over can wait on a full librdkafka queue: keep the lease meanwhile.
        let backend = self.relay.backend.clone();
        let pending = self
            .renewing(conn, backend.enqueue(batch).instrument(span.clone()))
            .await?;
        // The span lasts until the broker has answered for every message, and a failed delivery marks it.
        let wait = async move {
            let results = pending.wait().await;
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                trace::record_error(&span, &e.kind());
            }
            drop(span);
            results
        };
        Ok(Some(Flight {
            sent,
            compacted,
            wait: Box::pin(wait),
        }))
    }

    /// Deletes an acknowledged batch (moving rows too large on their own aside), or the acknowledged prefix of a
    /// failed one.
    ///
    /// A too-large refusal is proven for the row alone when the row was sent alone, or when the row by itself is
    /// over the limit the refusal names (the producer's own check). Otherwise the broker refused a request that
    /// may hold several rows (its `max.message.bytes` counts the request's batch): the row is a suspect, and the
    /// batch stops there as on any other failure.
    async fn settle(
        &mut self,
        conn: &mut Conn,
        sent: &[i64],
        compacted: &[i64],
        results: &[DeliveryResult],
    ) -> Result<Settled, OutboxError> {
        let mut done: Vec<i64> = Vec::with_capacity(sent.len() + compacted.len());
        let mut dead: Vec<(i64, String)> = Vec::new();
        let mut failure = None;
        for (i, (id, result)) in sent.iter().zip(results).enumerate() {
            match result {
                Ok(_) => done.push(*id),
                Err(e @ DeliveryError::TooLarge { size, limit }) if sent.len() == 1 || size > limit => {
                    dead.push((*id, e.to_string()));
                }
                Err(DeliveryError::TooLarge { .. }) => {
                    let (rest_ids, rest) = (&sent[i..], &results[i..]);
                    failure = Some(Settled::TooLarge {
                        suspects: suspect_ids(rest_ids, rest).count(),
                        through: suspect_ids(rest_ids, rest).max().unwrap_or(*id),
                    });
                    break;
                }
                Err(e) => {
                    failure = Some(Settled::Failed {
                        error: e.to_string(),
                        unknown_partition: e.kind() == "UnknownPartition",
                    });
                    break;
                }
            }
        }
        if failure.is_none() {
            done.extend(compacted);
        }
        if done.is_empty() && dead.is_empty() {
            return Ok(failure.unwrap_or(Settled::Done));
        }
        if !conn
            .finish_batch(&self.topic, self.partition, &self.relay.owner, self.fence, &done, &dead)
            .await?
        {
            return Err(self.lost());
        }
        let processed = (done.len() + dead.len()) as u64;
        let compacted = if failure.is_none() { compacted.len() as u64 } else { 0 };
        self.counters
            .sent
            .fetch_add(processed - compacted - dead.len() as u64, Ordering::Relaxed);
        self.counters.compacted.fetch_add(compacted, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DB_PRODUCER_PROCESS.name, "topic" => self.topic.clone()).increment(processed);
        if !dead.is_empty() {
            self.counters.too_large.fetch_add(dead.len() as u64, Ordering::Relaxed);
            metrics::counter!(DB_PRODUCER_TOO_LARGE.name, "topic" => self.topic.clone()).increment(dead.len() as u64);
            for (id, error) in &dead {
                tracing::error!(topic = %self.topic, partition = self.partition, id, %error,
                    "outbox relay: message too large for the broker; moved to kafka_messages_dead, the rest of its batch goes on");
            }
            events::emit_with(events::DB_PRODUCER_TOO_LARGE, || {
                events::Event::new(events::DB_PRODUCER_TOO_LARGE, &self.topic)
                    .payloads(dead.iter().map(|(id, _)| json!({ "id": id })).collect())
                    .error(events::EventError::new(
                        "MessageSizeTooLarge",
                        dead.first().map(|(_, e)| e.clone()).unwrap_or_default(),
                    ))
            });
        }
        Ok(failure.unwrap_or(Settled::Done))
    }
}

/// How a batch ended.
enum Settled {
    /// Every row sent (or moved aside as too large on its own) and deleted.
    Done,
    /// The broker refused a request holding several rows as too large: `suspects` rows of the batch were refused
    /// so, the last of them `through`. The rows before the first were deleted.
    TooLarge { suspects: usize, through: i64 },
    /// Another failure; the rows before it were deleted. `unknown_partition` when the broker does not know the
    /// partition.
    Failed { error: String, unknown_partition: bool },
}

/// The ids of `sent` refused as too large in `results`.
fn suspect_ids<'a>(sent: &'a [i64], results: &'a [DeliveryResult]) -> impl Iterator<Item = i64> + 'a {
    sent.iter()
        .zip(results)
        .filter(|(_, r)| matches!(r, Err(DeliveryError::TooLarge { .. })))
        .map(|(id, _)| *id)
}

/// The partition a producer would choose for a row without one, among `count` (positive) partitions, as the
/// Kafka backend does: by the partition key when it differs from the key, else by the key with librdkafka's
/// rule for the partitioner (`consistent_random` spreads empty and missing keys at random, `murmur2_random`
/// only missing ones); a row without either goes to the partition of its id, which is as good as random.
fn partition_of(
    partitioner: Partitioner,
    key: Option<&[u8]>,
    partition_key: Option<&[u8]>,
    id: i64,
    count: i32,
) -> i32 {
    match (partition_key, key) {
        (Some(pk), key) if Some(pk) != key => partitioner.partition(pk, count),
        (_, Some(key)) if !key.is_empty() || partitioner != Partitioner::Consistent => {
            partitioner.partition(key, count)
        }
        // In 0..count, so it fits an i32.
        _ => i32::try_from(id.rem_euclid(i64::from(count.max(1)))).unwrap_or(0),
    }
}

/// Keeps the last row per key (rows without a key are all kept), in the order of those last rows; returns the
/// kept rows and the ids dropped. As Deimos, only when the batch's first row has a key.
fn compact(rows: Vec<MessageRow>) -> (Vec<MessageRow>, Vec<i64>) {
    if rows.first().is_none_or(|r| r.key.is_none()) {
        return (rows, Vec::new());
    }
    let mut last: HashMap<Vec<u8>, i64> = HashMap::new();
    for r in &rows {
        if let Some(k) = &r.key {
            last.insert(k.clone(), r.id);
        }
    }
    let mut dropped = Vec::new();
    let kept = rows
        .into_iter()
        .filter(|r| match &r.key {
            Some(k) if last.get(k) != Some(&r.id) => {
                dropped.push(r.id);
                false
            }
            _ => true,
        })
        .collect();
    (kept, dropped)
}

fn describe(ids: &[i64], messages: &[OutgoingMessage]) -> Vec<serde_json::Value> {
    ids.iter()
        .zip(messages)
        .map(|(id, m)| {
            json!({
                "id": id,
                "key": m.key.as_deref().map(String::from_utf8_lossy),
                "partition_key": m.partition_key.as_deref().map(String::from_utf8_lossy),
                "size": m.size(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, key: Option<&str>) -> MessageRow {
        MessageRow {
            id,
            message: Some(vec![1]),
            key: key.map(|k| k.as_bytes().to_vec()),
            partition_key: None,
            headers: None,
        }
    }

    #[test]
    fn compaction_keeps_the_last_row_per_key_in_order() {
        let rows = vec![
            row(1, Some("a")),
            row(2, Some("b")),
            row(3, Some("a")),
            row(4, None),
            row(5, Some("c")),
        ];
        let (kept, dropped) = compact(rows);
        assert_eq!(kept.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 3, 4, 5]);
        assert_eq!(dropped, [1]);
        // Unique keys (Deimos #75) and a keyless first row: nothing dropped.
        assert_eq!(compact(vec![row(1, Some("a")), row(2, Some("b"))]).1, Vec::<i64>::new());
        assert_eq!(
            compact(vec![row(1, None), row(2, Some("b")), row(3, Some("b"))]).1,
            Vec::<i64>::new()
        );
    }

    #[test]
    fn rows_without_a_partition_get_the_one_a_producer_would_choose() {
        let (c, m) = (Partitioner::Consistent, Partitioner::Murmur2);
        let key: &[u8] = &[0, 0, 0, 0, 1, 0xc8, 0x01];
        // By the key, else by a partition key that differs from it.
        assert_eq!(partition_of(c, Some(key), None, 5, 6), c.partition(key, 6));
        assert_eq!(partition_of(m, Some(key), Some(key), 5, 6), m.partition(key, 6));
        assert_eq!(partition_of(c, Some(key), Some(b"pk"), 5, 6), c.partition(b"pk", 6));
        assert_eq!(partition_of(c, None, Some(b""), 5, 6), c.partition(b"", 6));
        // librdkafka: consistent_random spreads empty and missing keys, murmur2_random hashes an empty one.
        assert_eq!(partition_of(c, Some(b""), None, 9, 6), 3);
        assert_eq!(partition_of(m, Some(b""), None, 9, 6), m.partition(b"", 6));
        assert_eq!(partition_of(m, None, None, 13, 6), 1);
        assert!((0..6).contains(&partition_of(c, None, None, -7, 6)));
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let d = (Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<u128> = (1..7).map(|n| backoff(d, n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }
}
