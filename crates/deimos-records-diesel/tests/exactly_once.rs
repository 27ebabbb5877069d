//! Exactly-once effect across a crash: a consumer process applies batches to the database and is killed
//! (aborted) after a database commit and before the Kafka commit. A second process, consuming from the
//! offsets Kafka has (none), does not apply those messages again: the offsets stored with the rows skip them.
//! The same crash without exactly-once applies them twice, which is what the test would catch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Kind, TestDb};
use deimos_consumer::{Batch, BatchHandler, ConsumerRunner, HandlerError, Listener, async_trait};
use deimos_keys::KeyConfig;
use deimos_outbox_diesel::Conn;
use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
use deimos_records_diesel::{BatchRecordConsumer, RecordConsumer, RecordTable};
use deimos_registry::{EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use rdkafka::mocking::MockCluster;
use serde_json::{Value as Json, json};

const CHILD: &str = "DEIMOS_RECORDS_CHILD";
const TOPIC: &str = "events";
const EVENTS: i64 = 300;
const BATCH: usize = 20;

/// Aborts the process right after the `after`-th batch is committed to the database.
struct CrashAfter {
    inner: BatchRecordConsumer,
    after: usize,
    done: AtomicUsize,
}

#[async_trait]
impl BatchHandler for CrashAfter {
    type Payload = Json;

    async fn consume_batch(&self, batch: Batch<Json>) -> Result<(), HandlerError> {
        self.inner.consume_batch(batch).await?;
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            eprintln!(
                "child: aborting after batch {} (database committed, Kafka not)",
                self.after
            );
            std::process::abort();
        }
        Ok(())
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the parent test"))
}

/// The consumer process (run by the tests below, not on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the consumer process of the crash tests; they run it"]
async fn consumer_process() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let table = RecordTable::new(var("DEIMOS_TABLE"))
        .column("id", deimos_records_diesel::ColumnType::BigInt)
        .column("seq", deimos_records_diesel::ColumnType::BigInt)
        .column("note", deimos_records_diesel::ColumnType::Text);
    let inner = RecordConsumer::builder(table, &common::schema("com.acme.records.Event"))
        .database_url(var("DEIMOS_DB"))
        .exactly_once(var("DEIMOS_EXACTLY_ONCE") == "1")
        .build_batch()
        .unwrap();
    let handler = CrashAfter {
        inner,
        after: var("DEIMOS_CRASH_AFTER").parse().unwrap(),
        done: AtomicUsize::new(0),
    };
    let listener = Listener::builder(TOPIC, var("DEIMOS_GROUP"))
        .schema("com.acme.records.Event")
        .key_config(KeyConfig::None)
        .batch_handler(handler)
        // One batch at a time, so that the crash comes right after the third.
        .max_in_flight(1)
        .max_batch_size(BATCH)
        // Batches are full (the topic is written before the consumer starts), so that three of them are three
        // times BATCH rows; only the last, partial one waits this long.
        .max_wait(Duration::from_secs(3))
        .start_from_beginning(true)
        .session_timeout(Duration::from_secs(6))
        // Kafka commits only at shutdown: a crash loses every Kafka commit.
        .commit_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(HttpRegistry::new(var("DEIMOS_REGISTRY")).unwrap());
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(var("DEIMOS_BROKERS"))
        .registry(registry)
        .schema_store(common::store())
        .listener(listener)
        .build()
        .unwrap();
    runner.run().await.unwrap();
}

struct Env {
    brokers: String,
    registry: String,
    db: String,
}

fn spawn(env: &Env, table: &str, group: &str, exactly_once: bool, crash_after: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["consumer_process", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .env("DEIMOS_BROKERS", &env.brokers)
        .env("DEIMOS_REGISTRY", &env.registry)
        .env("DEIMOS_DB", &env.db)
        .env("DEIMOS_TABLE", table)
        .env("DEIMOS_GROUP", group)
        .env("DEIMOS_EXACTLY_ONCE", if exactly_once { "1" } else { "0" })
        .env("DEIMOS_CRASH_AFTER", crash_after.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < within,
            "the consumer process did not crash within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the crash, then a second process until every event is applied (or `within`); returns the rows after
/// the crash and at the end.
async fn crash_and_resume(env: &Env, conn: &mut Conn, table: &str, exactly_once: bool) -> (i64, i64) {
    let group = format!("{table}-group");
    let mut first = spawn(env, table, &group, exactly_once, 3);
    let status = wait_exit(&mut first, Duration::from_secs(90)).await;
    assert!(!status.success(), "the first process crashes");
    let after_crash = common::count(conn, table).await;
    assert_eq!(
        after_crash,
        3 * BATCH as i64,
        "three batches were committed to the database before the crash"
    );

    let mut second = spawn(env, table, &group, exactly_once, 0);
    let expected = if exactly_once { EVENTS } else { EVENTS + after_crash };
    let started = Instant::now();
    while common::count(conn, table).await < expected && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a would-be duplicate time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.kill().unwrap();
    let _ = second.wait();
    (after_crash, common::count(conn, table).await)
}

async fn crash_between_database_and_kafka_commit(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let ddl = match kind {
        Kind::Postgres => {
            "CREATE TABLE events_control (id BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL, note VARCHAR(255) NOT NULL)"
        }
        Kind::Mariadb => {
            "CREATE TABLE events_control (id BIGINT AUTO_INCREMENT PRIMARY KEY, seq BIGINT NOT NULL, note VARCHAR(255) NOT NULL)"
        }
        Kind::Sqlite => {
            "CREATE TABLE events_control (id INTEGER PRIMARY KEY AUTOINCREMENT, seq BIGINT NOT NULL, note VARCHAR(255) NOT NULL)"
        }
    };
    conn.execute(ddl).await.unwrap();

    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 3, 1).unwrap();
    let registry = EmbeddedRegistry::start().await.unwrap();
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()
        .unwrap();
    let setup = ProducerSetup::builder(
        common::store(),
        Arc::new(HttpRegistry::new(registry.url()).unwrap()) as Arc<dyn SchemaRegistry>,
        backend,
    )
    .build();
    let producer = Producer::builder("EventProducer")
        .topic(TOPIC)
        .schema("com.acme.records.Event")
        .key_config(KeyConfig::None)
        .build(&setup)
        .await
        .unwrap();
    let events: Vec<Json> = (0..EVENTS).map(|i| json!({"seq": i, "note": "e"})).collect();
    producer.publish_list(events).await.unwrap();
    let env = Env {
        brokers: mock.bootstrap_servers(),
        registry: registry.url().to_string(),
        db: db.url.clone(),
    };

    let (_, total) = crash_and_resume(&env, &mut conn, "events", true).await;
    assert_eq!(total, EVENTS, "exactly once: every event applied once across the crash");
    let distinct = common::texts(
        &mut conn,
        "SELECT CAST(COUNT(DISTINCT seq) AS CHAR(20)) AS j FROM events",
    )
    .await;
    assert_eq!(distinct[0].trim(), EVENTS.to_string());

    let (after_crash, total) = crash_and_resume(&env, &mut conn, "events_control", false).await;
    assert_eq!(
        total,
        EVENTS + after_crash,
        "without exactly-once the crashed batches are applied twice"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_between_database_and_kafka_commit() {
    crash_between_database_and_kafka_commit(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_crash_between_database_and_kafka_commit() {
    crash_between_database_and_kafka_commit(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_between_database_and_kafka_commit() {
    crash_between_database_and_kafka_commit(Kind::Sqlite).await;
}
