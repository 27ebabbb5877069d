//! Writing messages to the outbox in the caller's transaction.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deimos_metrics::catalogue::{DB_PRODUCER_INSERT, DB_PRODUCER_STALE_PARTITION_COUNT};
use deimos_producer::{
    DeliveryError, KafkaBackend, OutgoingBatch, Partitioner, Pending, Producer, PublishBackend, PublishOptions, Record,
};
#[cfg(feature = "sqlite")]
use diesel::SqliteConnection;
use diesel::sql_types::{Binary, Integer, Nullable, Text};
#[cfg(feature = "mysql")]
use diesel_async::AsyncMysqlConnection;
#[cfg(feature = "postgres")]
use diesel_async::pg::AsyncPgConnection;
#[cfg(feature = "sqlite")]
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use serde::Serialize;
use serde_json::Value as Json;
use tracing::Instrument;

use crate::db::Dialect;
use crate::error::OutboxError;

/// The PostgreSQL channel writers notify (in their transaction, so at commit) and relays listen on.
pub const NOTIFY_CHANNEL: &str = "deimos_outbox";

/// Rows per INSERT statement: 6 parameters each stays under every database's parameter limit (SQLite: 32766).
const ROWS_PER_STATEMENT: usize = 5000;

/// One `kafka_messages` row to write.
#[derive(Debug)]
pub struct NewMessage<'a> {
    topic: &'a str,
    message: Option<&'a [u8]>,
    key: Option<&'a [u8]>,
    partition_key: Option<String>,
    partition: i32,
    headers: Option<Vec<u8>>,
}

/// A connection the outbox can write to from async code: diesel-async's PostgreSQL and MySQL connections and
/// its wrapped SQLite connection (pooled ones deref to these).
pub trait AsyncOutboxConnection: Send {
    /// Inserts the rows (one multi-row INSERT per 5000) and, on PostgreSQL when `notify` is set, notifies the
    /// relays at commit.
    fn insert_messages(
        &mut self,
        rows: &[NewMessage<'_>],
        notify: bool,
    ) -> impl Future<Output = diesel::QueryResult<usize>> + Send;
}

/// A connection the outbox can write to from blocking code: diesel's PostgreSQL and SQLite connections, and with
/// the feature `mysql-sync` its MySQL connection.
pub trait SyncOutboxConnection {
    /// As [`AsyncOutboxConnection::insert_messages`].
    fn insert_messages(&mut self, rows: &[NewMessage<'_>], notify: bool) -> diesel::QueryResult<usize>;
}

/// `create {topic}`: messages written to the outbox; their trace context (stored in `headers`) is this span's.
fn create_span(producer: &Producer, options: &PublishOptions, messages: usize) -> tracing::Span {
    deimos_metrics::trace::create_span(options.topic.as_deref().unwrap_or(producer.topic()), messages)
}

/// `INSERT INTO kafka_messages (…) VALUES (…), (…)` for `n` rows.
fn insert_sql(dialect: Dialect, n: usize) -> String {
    let mut sql =
        String::from("INSERT INTO kafka_messages (topic, message, {key}, partition_key, {partition}, headers) VALUES ");
    for i in 0..n {
        sql.push_str(if i == 0 {
            "(?, ?, ?, ?, ?, ?)"
        } else {
            ", (?, ?, ?, ?, ?, ?)"
        });
    }
    dialect.sql(&sql)
}

/// The multi-row INSERT of `rows`, bound, for backend `$db`.
macro_rules! insert_query {
    ($dialect:expr, $db:ty, $rows:expr) => {{
        let rows = $rows;
        let mut q = diesel::sql_query(insert_sql($dialect, rows.len())).into_boxed::<$db>();
        for r in rows {
            q = q
                .bind::<Text, _>(r.topic)
                .bind::<Nullable<Binary>, _>(r.message)
                .bind::<Nullable<Binary>, _>(r.key)
                .bind::<Nullable<Text>, _>(r.partition_key.as_deref())
                .bind::<Integer, _>(r.partition)
                .bind::<Nullable<Binary>, _>(r.headers.as_deref());
        }
        q
    }};
}

macro_rules! impl_async {
    ($conn:ty, $db:ty, $dialect:expr) => {
        impl AsyncOutboxConnection for $conn {
            async fn insert_messages(&mut self, rows: &[NewMessage<'_>], notify: bool) -> diesel::QueryResult<usize> {
                use diesel_async::RunQueryDsl;
                let mut written = 0;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    written += insert_query!($dialect, $db, chunk).execute(self).await?;
                }
                if notify && $dialect == Dialect::Postgres && written > 0 {
                    diesel::sql_query(format!("NOTIFY {NOTIFY_CHANNEL}"))
                        .execute(self)
                        .await?;
                }
                Ok(written)
            }
        }
    };
}

#[cfg(feature = "postgres")]
impl_async!(AsyncPgConnection, diesel::pg::Pg, Dialect::Postgres);
#[cfg(feature = "mysql")]
impl_async!(AsyncMysqlConnection, diesel::mysql::Mysql, Dialect::Mysql);
#[cfg(feature = "sqlite")]
impl_async!(
    SyncConnectionWrapper<SqliteConnection>,
    diesel::sqlite::Sqlite,
    Dialect::Sqlite
);

impl AsyncOutboxConnection for crate::Conn {
    async fn insert_messages(&mut self, rows: &[NewMessage<'_>], notify: bool) -> diesel::QueryResult<usize> {
        match self {
            #[cfg(feature = "postgres")]
            crate::Conn::Pg(c) => c.insert_messages(rows, notify).await,
            #[cfg(feature = "mysql")]
            crate::Conn::Mysql(c) => c.insert_messages(rows, notify).await,
            #[cfg(feature = "sqlite")]
            crate::Conn::Sqlite(c) => c.insert_messages(rows, notify).await,
            #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
            crate::Conn::NoDatabase(never) => match *never {},
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "pg-sync", feature = "mysql-sync"))]
macro_rules! impl_sync {
    ($conn:ty, $db:ty, $dialect:expr) => {
        impl SyncOutboxConnection for $conn {
            fn insert_messages(&mut self, rows: &[NewMessage<'_>], notify: bool) -> diesel::QueryResult<usize> {
                use diesel::RunQueryDsl;
                let mut written = 0;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    written += insert_query!($dialect, $db, chunk).execute(self)?;
                }
                if notify && $dialect == Dialect::Postgres && written > 0 {
                    diesel::sql_query(format!("NOTIFY {NOTIFY_CHANNEL}")).execute(self)?;
                }
                Ok(written)
            }
        }
    };
}

#[cfg(feature = "pg-sync")]
impl_sync!(diesel::PgConnection, diesel::pg::Pg, Dialect::Postgres);
#[cfg(feature = "sqlite")]
impl_sync!(SqliteConnection, diesel::sqlite::Sqlite, Dialect::Sqlite);
#[cfg(feature = "mysql-sync")]
impl_sync!(diesel::MysqlConnection, diesel::mysql::Mysql, Dialect::Mysql);

/// What an outbox publish wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxReport {
    /// The topic written to (with the prefix).
    pub topic: String,
    /// Rows written.
    pub written: usize,
    /// The producer was disabled: nothing was written.
    pub disabled: bool,
}

/// The outbox: publishes through a [`Producer`] (same encoding, keys, errors) into `kafka_messages` on the
/// caller's connection, so the messages commit or roll back with the caller's transaction. The relay
/// ([`crate::Relay`]) ships them to Kafka.
///
/// Each row gets its partition when it is written, with the same [`Partitioner`] as the Kafka backend, from the
/// topic's partition count ([`partitions`](OutboxBuilder::partitions), or asked of Kafka when a [`KafkaBackend`]
/// is given). Without a count, or without a key, the partition is -1 and the producer partitions the message when
/// the relay sends it.
///
/// A count asked of Kafka is used for [`partition_count_ttl`](OutboxBuilder::partition_count_ttl), then asked
/// again in the background while writes go on with the last known one: once a topic's count is known, writing
/// never waits for Kafka, down or not. Writes made with a count older than that are counted in
/// `db_producer.stale_partition_count`, and a failed refresh is logged as a warning. Only the first write of a
/// topic waits for Kafka (up to 10 s) and fails without it; [`fetch_partition_counts`](Self::fetch_partition_counts)
/// at startup spares business transactions even that.
///
/// An `Outbox` is also a [`PublishBackend`], so producers can be built against it; their plain `publish` calls
/// fail with a message pointing here, since writing needs the caller's connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    partitioner: Partitioner,
    partitions: HashMap<String, i32>,
    default_partitions: Option<i32>,
    kafka: Option<KafkaBackend>,
    notify: bool,
    /// Partition counts asked of Kafka, shared by clones.
    known: Arc<Mutex<HashMap<String, KnownCount>>>,
    count_ttl: Duration,
}

/// A partition count asked of Kafka.
#[derive(Debug, Clone, Copy)]
struct KnownCount {
    count: i32,
    fetched: Instant,
    /// A refresh runs in the background.
    refreshing: bool,
}

/// How long a partition count asked of Kafka is used before it is asked again (as the Kafka backend's cache).
const DEFAULT_COUNT_TTL: Duration = Duration::from_secs(300);

/// Builds an [`Outbox`].
#[derive(Debug, Clone)]
#[must_use]
pub struct OutboxBuilder {
    outbox: Outbox,
}

impl Outbox {
    /// An outbox with librdkafka's default partitioner, no known partition counts, and notifications on.
    pub fn builder() -> OutboxBuilder {
        OutboxBuilder {
            outbox: Outbox {
                partitioner: Partitioner::default(),
                partitions: HashMap::new(),
                default_partitions: None,
                kafka: None,
                notify: true,
                known: Arc::default(),
                count_ttl: DEFAULT_COUNT_TTL,
            },
        }
    }

    /// Asks Kafka for the partition counts of `topics` (with the prefix, as they are sent) that are not
    /// configured, so that no write has to wait for Kafka: call it at startup, before serving. A count that is
    /// configured ([`OutboxBuilder::partitions`], [`OutboxBuilder::default_partitions`]) is checked against the
    /// topic's: more than the topic has fails (rows for the partitions it lacks could never be sent), fewer is
    /// logged (keys would go to other partitions than a Kafka producer's). Fails if Kafka cannot say (a topic that
    /// does not exist, brokers out of reach); does nothing without [`OutboxBuilder::kafka`].
    pub async fn fetch_partition_counts(&self, topics: &[&str]) -> Result<(), OutboxError> {
        let Some(kafka) = &self.kafka else {
            return Ok(());
        };
        for topic in topics {
            match self.partition_count(topic) {
                None => {
                    self.fetch_count(kafka, topic).await?;
                }
                Some(declared) => {
                    let actual = kafka.partition_count(topic).await.map_err(|e| {
                        OutboxError::Kafka(format!("checking the declared partition count of `{topic}`: {e}"))
                    })?;
                    if declared > actual {
                        return Err(OutboxError::Config(format!(
                            "the outbox declares {declared} partitions for `{topic}`, but the topic has {actual}: rows \
                             for partitions {actual} to {} could never be sent. Declare {actual} \
                             (OutboxBuilder::partitions), or leave the count to Kafka (OutboxBuilder::kafka)",
                            declared - 1
                        )));
                    }
                    if declared < actual {
                        tracing::warn!(
                            topic,
                            declared,
                            actual,
                            "outbox: fewer partitions declared than the topic has; keys go to other partitions than a \
                             Kafka producer would send them to"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Encodes `payloads` through `producer` (see [`Producer::publish_list_with`]) and writes them with one
    /// multi-row INSERT on `conn`, inside whatever transaction `conn` is in.
    pub async fn publish<C: AsyncOutboxConnection>(
        &self,
        producer: &Producer,
        conn: &mut C,
        payloads: Vec<Json>,
        options: &PublishOptions,
    ) -> Result<OutboxReport, OutboxError> {
        let span = create_span(producer, options, payloads.len());
        let batch = span.in_scope(|| producer.encode_list_with(payloads, options))?;
        self.write(producer, conn, batch).instrument(span).await
    }

    /// Encodes typed records through `producer` (see [`Producer::publish_records`]) and writes them on `conn`.
    pub async fn publish_records<C: AsyncOutboxConnection, T: Serialize + ?Sized>(
        &self,
        producer: &Producer,
        conn: &mut C,
        records: &[Record<'_, T>],
        options: &PublishOptions,
    ) -> Result<OutboxReport, OutboxError> {
        let span = create_span(producer, options, records.len());
        let batch = span.in_scope(|| producer.encode_records(records, options))?;
        self.write(producer, conn, batch).instrument(span).await
    }

    /// [`publish`](Self::publish) on a blocking diesel connection.
    pub fn publish_sync<C: SyncOutboxConnection>(
        &self,
        producer: &Producer,
        conn: &mut C,
        payloads: Vec<Json>,
        options: &PublishOptions,
    ) -> Result<OutboxReport, OutboxError> {
        let _span = create_span(producer, options, payloads.len()).entered();
        let batch = producer.encode_list_with(payloads, options)?;
        self.write_sync(producer, conn, batch)
    }

    /// [`publish_records`](Self::publish_records) on a blocking diesel connection.
    pub fn publish_records_sync<C: SyncOutboxConnection, T: Serialize + ?Sized>(
        &self,
        producer: &Producer,
        conn: &mut C,
        records: &[Record<'_, T>],
        options: &PublishOptions,
    ) -> Result<OutboxReport, OutboxError> {
        let _span = create_span(producer, options, records.len()).entered();
        let batch = producer.encode_records(records, options)?;
        self.write_sync(producer, conn, batch)
    }

    async fn write<C: AsyncOutboxConnection>(
        &self,
        producer: &Producer,
        conn: &mut C,
        batch: Option<OutgoingBatch>,
    ) -> Result<OutboxReport, OutboxError> {
        let Some(batch) = batch else {
            return Ok(disabled(producer));
        };
        let count = match self.partition_count(&batch.topic) {
            Some(n) => Some(n),
            None => match &self.kafka {
                Some(kafka) => Some(self.kafka_count(kafka, &batch.topic).await?),
                None => None,
            },
        };
        let rows = self.rows(&batch, count);
        let written = conn
            .insert_messages(&rows, self.notify)
            .await
            .map_err(OutboxError::db("writing messages to kafka_messages"))?;
        Ok(self.report(&batch, written))
    }

    fn write_sync<C: SyncOutboxConnection>(
        &self,
        producer: &Producer,
        conn: &mut C,
        batch: Option<OutgoingBatch>,
    ) -> Result<OutboxReport, OutboxError> {
        let Some(batch) = batch else {
            return Ok(disabled(producer));
        };
        let rows = self.rows(&batch, self.partition_count(&batch.topic));
        let written = conn
            .insert_messages(&rows, self.notify)
            .map_err(OutboxError::db("writing messages to kafka_messages"))?;
        Ok(self.report(&batch, written))
    }

    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.partitions.get(topic).copied().or(self.default_partitions)
    }

    /// The partition count of `topic` as Kafka said it: the last known one without waiting (refreshed in the
    /// background once older than the TTL), or asked now for a topic never asked before.
    async fn kafka_count(&self, kafka: &KafkaBackend, topic: &str) -> Result<i32, OutboxError> {
        let (known, refresh) = {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            match known.get_mut(topic) {
                None => (None, false),
                Some(k) if k.fetched.elapsed() < self.count_ttl => (Some(k.count), false),
                Some(k) => {
                    let refresh = !k.refreshing;
                    k.refreshing = true;
                    metrics::counter!(DB_PRODUCER_STALE_PARTITION_COUNT.name, "topic" => topic.to_string())
                        .increment(1);
                    (Some(k.count), refresh)
                }
            }
        };
        let Some(count) = known else {
            return self.fetch_count(kafka, topic).await;
        };
        if refresh {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(refresh_count(
                        kafka.clone(),
                        Arc::clone(&self.known),
                        topic.to_string(),
                        count,
                    ));
                }
                // Not on tokio: nothing can run in the background, so ask now (as before the TTL existed).
                Err(_) => refresh_count(kafka.clone(), Arc::clone(&self.known), topic.to_string(), count).await,
            }
        }
        Ok(count)
    }

    /// Asks Kafka for the partition count of `topic` now, and remembers it.
    async fn fetch_count(&self, kafka: &KafkaBackend, topic: &str) -> Result<i32, OutboxError> {
        let count = kafka.partition_count(topic).await.map_err(|e| {
            OutboxError::Kafka(format!(
                "the partition count of `{topic}` is needed to partition outbox rows and has never been fetched: \
                 {e}; configure it (OutboxBuilder::partitions) or fetch it at startup (Outbox::fetch_partition_counts)"
            ))
        })?;
        self.known.lock().unwrap_or_else(PoisonError::into_inner).insert(
            topic.to_string(),
            KnownCount {
                count,
                fetched: Instant::now(),
                refreshing: false,
            },
        );
        Ok(count)
    }

    /// The rows for a batch: the partition from the partition key (else the key) when the count is known.
    fn rows<'a>(&self, batch: &'a OutgoingBatch, partitions: Option<i32>) -> Vec<NewMessage<'a>> {
        batch
            .messages
            .iter()
            .map(|m| {
                let partition = match (m.partition, m.partitioning_bytes(), partitions) {
                    (Some(p), _, _) => p,
                    (None, Some(bytes), Some(n)) if n > 0 => self.partitioner.partition(bytes, n),
                    _ => -1,
                };
                let headers: Vec<(String, Vec<u8>)> = batch.headers.iter().chain(&m.headers).cloned().collect();
                // A producer without keys stores none, as Deimos's DB backend: a given key partitions only.
                let (key, partition_key) = if batch.keyless {
                    (None, m.partition_key.as_deref().or(m.key.as_deref()))
                } else {
                    (m.key.as_deref(), m.partition_key.as_deref())
                };
                NewMessage {
                    topic: &batch.topic,
                    message: m.value.as_deref(),
                    key,
                    partition_key: partition_key.map(|pk| String::from_utf8_lossy(pk).into_owned()),
                    partition,
                    headers: crate::headers::encode(&headers),
                }
            })
            .collect()
    }

    fn report(&self, batch: &OutgoingBatch, written: usize) -> OutboxReport {
        metrics::counter!(DB_PRODUCER_INSERT.name, "topic" => batch.topic.to_string()).increment(written as u64);
        OutboxReport {
            topic: batch.topic.to_string(),
            written,
            disabled: false,
        }
    }
}

/// Asks Kafka for the partition count of `topic` again (in the background), keeping the last known `count` if it
/// cannot say.
async fn refresh_count(kafka: KafkaBackend, known: Arc<Mutex<HashMap<String, KnownCount>>>, topic: String, count: i32) {
    let fetched = kafka.partition_count(&topic).await;
    let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(entry) = known.get_mut(&topic) else { return };
    entry.refreshing = false;
    match fetched {
        Ok(n) => {
            if n != count {
                tracing::info!(
                    topic,
                    from = count,
                    to = n,
                    "outbox: the topic's partition count changed; rows written from now on are partitioned over the new count"
                );
            }
            entry.count = n;
            entry.fetched = Instant::now();
        }
        Err(e) => {
            tracing::warn!(topic, count, error = %e,
                "outbox: could not ask Kafka for the topic's partition count; writes go on with the last known one \
                 (db_producer.stale_partition_count) and it is asked again on the next write");
        }
    }
}

fn disabled(producer: &Producer) -> OutboxReport {
    OutboxReport {
        topic: producer.topic().to_string(),
        written: 0,
        disabled: true,
    }
}

impl OutboxBuilder {
    /// The partitioner (as the Kafka backend's: `Consistent`, librdkafka's default, or `Murmur2`, Java's).
    pub fn partitioner(mut self, partitioner: Partitioner) -> Self {
        self.outbox.partitioner = partitioner;
        self
    }

    /// The partition count of `topic` (with the prefix, as it is sent).
    pub fn partitions(mut self, topic: impl Into<String>, count: i32) -> Self {
        self.outbox.partitions.insert(topic.into(), count);
        self
    }

    /// The partition count of topics not given with [`partitions`](Self::partitions).
    pub fn default_partitions(mut self, count: i32) -> Self {
        self.outbox.default_partitions = Some(count);
        self
    }

    /// Ask Kafka (through this backend's metadata) for partition counts not configured. Async writes only;
    /// blocking writes leave such rows without a partition.
    pub fn kafka(mut self, backend: KafkaBackend) -> Self {
        self.outbox.kafka = Some(backend);
        self
    }

    /// How long a partition count asked of Kafka is used before it is asked again, in the background, while
    /// writes go on with it (default 5 min). The backend keeps its own cache too
    /// (`KafkaBackendBuilder::partition_count_ttl`).
    pub fn partition_count_ttl(mut self, ttl: Duration) -> Self {
        self.outbox.count_ttl = ttl;
        self
    }

    /// Whether PostgreSQL writes send a NOTIFY so listening relays wake at once (on by default).
    pub fn notify(mut self, notify: bool) -> Self {
        self.outbox.notify = notify;
        self
    }

    /// The outbox.
    pub fn build(self) -> Outbox {
        self.outbox
    }
}

#[async_trait]
impl PublishBackend for Outbox {
    async fn enqueue(&self, batch: OutgoingBatch) -> Pending {
        let error = DeliveryError::Backend(format!(
            "producer `{}` writes to the outbox, which needs the caller's database connection: call \
             Outbox::publish / publish_records (or their _sync forms) with the connection instead of publish",
            batch.producer
        ));
        Pending::ready(batch.messages.iter().map(|_| Err(error.clone())).collect())
    }
}
