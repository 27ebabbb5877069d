//! A batch record consumer on a real runner (librdkafka's mock cluster, an in-memory registry) whose database
//! connection is terminated by the server (`pg_terminate_backend`, as an administrator or a failover does)
//! twice while it consumes: the batch that meets the dead connection is a transient error, retried on a new
//! connection whatever the error policy (the default, swallow, would skip it), so every message is applied,
//! once. With and without exactly-once.
//!
//! The same consumer behind a TCP proxy whose connections stop forwarding without closing (packets dropped, as a
//! firewall or a lost route does): its statement and connect timeouts give the dead connection up, and the batch
//! is retried on a new one once the network heals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../deimos-outbox-diesel/tests/common/proxy.rs"]
mod proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, TestDb};
use deimos_consumer::{ConsumerRunner, KeyConfig, Listener};
use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
use deimos_records_diesel::RecordConsumer;
use deimos_registry::{MemoryRegistry, SchemaRegistry};
use rdkafka::mocking::MockCluster;
use serde_json::{Value as Json, json};

const TOPIC: &str = "events";
const PHASE: i64 = 100;

/// Waits until the table holds `n` rows (or 30 s pass); returns how many it holds. Each look uses a new
/// connection, as the test's own ones are terminated too.
async fn wait_for_rows(db: &TestDb, n: i64) -> i64 {
    let started = Instant::now();
    loop {
        let count = common::count(&mut db.conn().await, TOPIC).await;
        if count >= n || started.elapsed() > Duration::from_secs(30) {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What happens to the consumer's database between phases.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// The server terminates every connection (PostgreSQL).
    Terminated,
    /// Every connection, open or new, stops forwarding for a few seconds; open ones never forward again.
    BlackHole,
}

async fn lost_connections_are_retried(kind: Kind, fault: Fault, exactly_once: bool) {
    let db = TestDb::new(kind).await;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()
        .unwrap();
    let setup = ProducerSetup::builder(common::store(), Arc::clone(&registry), backend).build();
    let producer = Producer::builder("EventProducer")
        .topic(TOPIC)
        .schema("com.acme.records.Event")
        .key_config(KeyConfig::None)
        .build(&setup)
        .await
        .unwrap();

    let (proxy, url) = proxy::Proxy::in_front_of(&db.url).await;
    let consumer = RecordConsumer::builder(common::events(), &common::schema("com.acme.records.Event"))
        .database_url(url)
        .exactly_once(exactly_once)
        .statement_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .build_batch()
        .unwrap();
    let listener = Listener::builder(TOPIC, "records-lost-connection")
        .schema("com.acme.records.Event")
        .key_config(KeyConfig::None)
        .batch_handler(consumer)
        .max_batch_size(20)
        .max_wait(Duration::from_millis(50))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .session_timeout(Duration::from_secs(6))
        .kafka_setting("fetch.wait.max.ms", "20")
        .build()
        .unwrap();
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .registry(Arc::clone(&registry))
        .schema_store(common::store())
        .listener(listener)
        .build()
        .unwrap();
    let shutdown = runner.shutdown_handle();
    let running = tokio::spawn(runner.run_until(std::future::pending()));

    let events = |from: i64, to: i64| -> Vec<Json> {
        (from..to)
            .map(|i| json!({"seq": i, "note": format!("event {i}")}))
            .collect()
    };
    // Three phases; between them (the consumer idle, its connection open) the server terminates the
    // database's connections: the first batch of the next phase meets a dead connection.
    for phase in 0..3 {
        if phase > 0 && fault == Fault::Terminated {
            let terminated = db.terminate_connections().await;
            assert!(terminated >= 1, "the consumer's connection was open and is terminated");
        }
        if phase > 0 && fault == Fault::BlackHole {
            proxy.black_hole();
        }
        producer
            .publish_list(events(phase * PHASE, (phase + 1) * PHASE))
            .await
            .unwrap();
        if phase > 0 && fault == Fault::BlackHole {
            // Longer than the statement and connect timeouts: the consumer gives up on its connection, fails to
            // open another, and retries until the network heals.
            tokio::time::sleep(Duration::from_secs(4)).await;
            proxy.heal();
        }
        let count = wait_for_rows(&db, (phase + 1) * PHASE).await;
        assert_eq!(
            count,
            (phase + 1) * PHASE,
            "every message of phase {phase} is applied (the batch that met the terminated connection was retried, not skipped)"
        );
    }
    // Give a would-be duplicate time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.shutdown();
    running.await.unwrap().unwrap();

    let mut conn = db.conn().await;
    assert_eq!(common::count(&mut conn, TOPIC).await, 3 * PHASE);
    let aggregate = if kind == Kind::Postgres {
        "SELECT string_agg(seq::text || '=' || note, ',' ORDER BY seq) AS j FROM events"
    } else {
        conn.execute("SET SESSION group_concat_max_len = 1000000")
            .await
            .unwrap();
        "SELECT GROUP_CONCAT(CONCAT(seq, '=', note) ORDER BY seq SEPARATOR ',') AS j FROM events"
    };
    let rows = common::texts(&mut conn, aggregate).await;
    let expected: Vec<String> = (0..3 * PHASE).map(|i| format!("{i}=event {i}")).collect();
    assert_eq!(rows[0], expected.join(","), "each message applied once, as it says");
    drop(conn);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_connections_are_retried() {
    lost_connections_are_retried(Kind::Postgres, Fault::Terminated, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_connections_are_retried_exactly_once() {
    lost_connections_are_retried(Kind::Postgres, Fault::Terminated, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_database_that_stops_answering_is_given_up_on() {
    lost_connections_are_retried(Kind::Postgres, Fault::BlackHole, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_database_that_stops_answering_is_given_up_on() {
    lost_connections_are_retried(Kind::Mariadb, Fault::BlackHole, true).await;
}
