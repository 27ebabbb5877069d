//! Shared setup for the outbox tests: a fresh database per test (PostgreSQL, MariaDB or SQLite), the mock
//! Kafka cluster, a Widget producer writing to the outbox, and a reader of what reached Kafka.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_outbox_diesel::{Conn, Outbox, Relay, RelayConfig, RelayConfigBuilder};
use deimos_producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions};
use deimos_registry::{MemoryRegistry, SchemaCodec, SchemaRegistry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value as Json, json};

#[path = "proxy.rs"]
pub mod proxy;
#[allow(unused_imports)]
pub use proxy::Proxy;

pub const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
pub const PARTITIONS: i32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Mariadb,
    Sqlite,
}

/// A database of its own for one test, migrated; dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    admin: Option<String>,
    name: String,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid_like())
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        let db = TestDb::new_empty(kind).await;
        let applied = deimos_outbox_diesel::migrate(&db.url).await.unwrap();
        assert_eq!(applied.len(), 2, "{applied:?}");
        db
    }

    /// A database of its own, without the outbox tables.
    pub async fn new_empty(kind: Kind) -> TestDb {
        let name = unique("deimos_outbox_test");
        let (admin, url) = match kind {
            Kind::Postgres => {
                let base =
                    std::env::var("DEIMOS_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
                (Some(format!("{base}/test")), format!("{base}/{name}"))
            }
            Kind::Mariadb => {
                let base = std::env::var("DEIMOS_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
                (Some(format!("{base}/test")), format!("{base}/{name}"))
            }
            Kind::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                (None, format!("sqlite://{}", path.display()))
            }
        };
        if let Some(admin) = &admin {
            let mut c = Conn::connect(admin)
                .await
                .unwrap_or_else(|e| panic!("{kind:?} is needed for this test: {e}"));
            c.execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        }
        TestDb { kind, url, admin, name }
    }

    pub async fn conn(&self) -> Conn {
        Conn::connect(&self.url).await.unwrap()
    }

    pub async fn drop_db(self) {
        match &self.admin {
            Some(admin) => {
                let mut c = Conn::connect(admin).await.unwrap();
                if self.kind == Kind::Postgres {
                    let _ = c
                        .execute(&format!(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                            self.name
                        ))
                        .await;
                }
                let _ = c.execute(&format!("DROP DATABASE IF EXISTS {}", self.name)).await;
            }
            None => {
                let path = self.url.trim_start_matches("sqlite://").to_string();
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        count(&mut self.conn().await, table).await
    }
}

/// The ids of a table's rows, in order.
pub async fn ids(c: &mut Conn, table: &str) -> Vec<i64> {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let sql = format!("SELECT id FROM {table} ORDER BY id");
    let rows: Vec<Id> = match c {
        Conn::Pg(c) => diesel::sql_query(sql).load(c).await,
        Conn::Mysql(c) => diesel::sql_query(sql).load(c).await,
        Conn::Sqlite(c) => diesel::sql_query(sql).load(c).await,
    }
    .unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

pub async fn count(c: &mut Conn, table: &str) -> i64 {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    let rows: Vec<N> = match c {
        Conn::Pg(c) => diesel::sql_query(sql).load(c).await,
        Conn::Mysql(c) => diesel::sql_query(sql).load(c).await,
        Conn::Sqlite(c) => diesel::sql_query(sql).load(c).await,
    }
    .unwrap();
    rows[0].n
}

/// The mock cluster, the registry and a producer of `com.acme.Widget` keyed by `id`, writing to the outbox.
pub struct Kit {
    pub mock: MockCluster<'static, DefaultProducerContext>,
    pub registry: Arc<MemoryRegistry>,
    pub outbox: Outbox,
    pub producer: Producer,
    pub topic: String,
}

impl Kit {
    pub async fn new(topic: &str) -> Kit {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(topic, PARTITIONS, 1).unwrap();
        let registry = Arc::new(MemoryRegistry::new());
        let outbox = Outbox::builder().partitions(topic, PARTITIONS).build();
        let setup = ProducerSetup::builder(
            SchemaStore::new(SCHEMAS),
            registry.clone() as Arc<dyn SchemaRegistry>,
            outbox.clone(),
        )
        .build();
        let producer = Producer::builder("WidgetProducer")
            .topic(topic)
            .schema("com.acme.Widget")
            .key_config(KeyConfig::field("id"))
            .build(&setup)
            .await
            .unwrap();
        Kit {
            mock,
            registry,
            outbox,
            producer,
            topic: topic.to_string(),
        }
    }

    pub fn brokers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    /// A Kafka backend on the mock cluster (the relay sets its delivery timeout from its lease).
    pub fn backend(&self) -> KafkaBackend {
        KafkaBackend::builder()
            .bootstrap_servers(self.brokers())
            .build()
            .unwrap()
    }

    pub fn relay(&self, db: &TestDb, config: RelayConfig) -> Relay {
        Relay::new(&db.url, self.backend(), config).unwrap()
    }

    /// Writes widgets `(key, seq)` in one transaction; commits or rolls back.
    pub async fn write(&self, conn: &mut Conn, widgets: &[(i64, i64)], commit: bool) {
        self.writer().write(conn, widgets, commit).await;
    }

    pub fn writer(&self) -> Writer {
        Writer {
            outbox: self.outbox.clone(),
            producer: self.producer.clone(),
        }
    }

    /// Reads every message of the topic until `expected` have come (or `wait` passed): per partition, in offset
    /// order, as `(key, seq, committed, headers)`.
    pub async fn read_all(&self, expected: usize, wait: Duration) -> BTreeMap<i32, Vec<Received>> {
        self.read(expected, wait, true).await
    }

    /// As [`read_all`](Self::read_all), without checking partitions against the key.
    pub async fn read_all_unchecked(&self, expected: usize, wait: Duration) -> BTreeMap<i32, Vec<Received>> {
        self.read(expected, wait, false).await
    }

    async fn read(&self, expected: usize, wait: Duration, check_partition: bool) -> BTreeMap<i32, Vec<Received>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", "outbox-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let codec = SchemaCodec::new(self.registry.clone() as Arc<dyn SchemaRegistry>);
        let reader = SchemaStore::new(SCHEMAS).get("com.acme.Widget").unwrap();
        let started = Instant::now();
        let mut out: BTreeMap<i32, Vec<Received>> = BTreeMap::new();
        let mut n = 0;
        while n < expected && started.elapsed() < wait {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.unwrap();
            // Partitioned when written, exactly as librdkafka's default partitioner would have.
            let key = m.key().unwrap();
            if check_partition {
                assert_eq!(
                    m.partition(),
                    deimos_producer::Partitioner::Consistent.partition(key, PARTITIONS)
                );
            }
            let value: Json = codec.decode(m.payload().unwrap(), &reader).await.unwrap();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            out.entry(m.partition()).or_default().push(Received {
                key: value["id"].as_i64().unwrap(),
                seq: value["quantity"].as_i64().unwrap(),
                committed: value["name"] == "committed",
                headers,
            });
            n += 1;
        }
        out
    }
}

/// What writing needs (the mock cluster itself cannot be shared between tasks).
#[derive(Clone)]
pub struct Writer {
    pub outbox: Outbox,
    pub producer: Producer,
}

/// Each key's last committed sequence number, locked for the whole of a transaction on that key, as a row lock
/// on the key's record would be: a key's next transaction starts after its last one committed.
pub type KeySeqs = Arc<Vec<tokio::sync::Mutex<i64>>>;

pub fn key_seqs(keys: i64) -> KeySeqs {
    Arc::new((0..keys).map(|_| tokio::sync::Mutex::new(0)).collect())
}

impl Writer {
    /// One transaction on `key`: its next message if `commit`, else a message (and one of the next key) that is
    /// rolled back. Returns whether it committed.
    pub async fn write_keyed(&self, conn: &mut Conn, seqs: &KeySeqs, key: i64, commit: bool) -> bool {
        let keys = seqs.len() as i64;
        let mut seq = seqs[key as usize].lock().await;
        if commit {
            self.write(conn, &[(key, *seq + 1)], true).await;
            *seq += 1;
        } else {
            self.write(conn, &[(key, -1), ((key + 1) % keys, -1)], false).await;
        }
        commit
    }

    /// Writes widgets `(key, seq)` in one committed transaction, one publish (one INSERT) per message, as a
    /// service that publishes at several points of one transaction does.
    pub async fn write_each(&self, conn: &mut Conn, widgets: &[(i64, i64)]) {
        conn.begin().await.unwrap();
        for (k, s) in widgets {
            let report = self
                .outbox
                .publish(&self.producer, conn, vec![widget(*k, *s, true)], &PublishOptions::new())
                .await
                .unwrap();
            assert_eq!(report.written, 1);
        }
        conn.commit().await.unwrap();
    }

    /// Writes widgets `(key, seq)` in one transaction; commits or rolls back.
    pub async fn write(&self, conn: &mut Conn, widgets: &[(i64, i64)], commit: bool) {
        conn.begin().await.unwrap();
        let payloads = widgets.iter().map(|(k, s)| widget(*k, *s, commit)).collect();
        let options = PublishOptions::new().header("trace", if commit { "kept" } else { "rolled-back" });
        let report = self
            .outbox
            .publish(&self.producer, conn, payloads, &options)
            .await
            .unwrap();
        assert_eq!(report.written, widgets.len());
        if commit {
            conn.commit().await.unwrap();
        } else {
            conn.rollback().await.unwrap();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub key: i64,
    pub seq: i64,
    pub committed: bool,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub fn widget(key: i64, seq: i64, committed: bool) -> Json {
    json!({
        "id": key, "message_id": format!("m-{key}-{seq}"),
        "name": if committed { "committed" } else { "rolled back" },
        "description": "outbox test widget", "price": 1.5, "quantity": seq, "status": "ACTIVE",
        "tags": ["outbox"], "updated_at": 1_700_000_000_000i64, "parent_id": null
    })
}

/// Per key, the sequence numbers received in order (all partitions).
pub fn per_key(received: &BTreeMap<i32, Vec<Received>>) -> BTreeMap<i64, Vec<i64>> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for messages in received.values() {
        for m in messages {
            out.entry(m.key).or_default().push(m.seq);
        }
    }
    out
}

/// A small xorshift generator: varied but repeatable choices without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A relay config for tests: short lease (messages get 1.5 s to be delivered), quick polling.
pub fn fast_config() -> RelayConfigBuilder {
    RelayConfig::builder()
        .lease_ttl(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(50))
        .idle_release(Duration::from_millis(500))
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .metrics_interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(10))
}

pub async fn within<F: std::future::Future<Output = T>, T>(secs: u64, f: F) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"))
}

/// Runs a relay until `done` says so; returns its stats.
pub fn spawn_relay(
    relay: Relay,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<deimos_outbox_diesel::RelayStats>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run_until(async move {
                let _ = rx.await;
            })
            .await
            .unwrap()
    });
    (tx, task)
}
