//! The outbox on MariaDB (REPEATABLE READ, gap and next-key locks, deadlock detection): leases given back at a
//! clean stop, and deadlocks in the relay's statements retried and counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, Kit, SCHEMAS, TestDb, fast_config, spawn_relay};
use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_outbox_diesel::{Outbox, Relay, Status};
use deimos_producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions};
use deimos_registry::{MemoryRegistry, SchemaRegistry};
use rdkafka::mocking::MockCluster;

/// Leases of `db` still held by someone (not expired).
async fn held(db: &TestDb) -> Vec<String> {
    let mut conn = db.conn().await;
    conn.leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.locked_by.is_some() && l.expires_in_ms.is_some_and(|ms| ms > 0))
        .map(|l| format!("{} {} by {:?}", l.topic, l.partition, l.locked_by))
        .collect()
}

/// Rows of `db` still pending once none are, or once `limit` has passed.
async fn pending_after(db: &TestDb, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let pending = Status::read(&db.url).await.unwrap().pending();
        if pending == 0 || started.elapsed() >= limit {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_clean_stop_gives_back_every_lease() {
    // A relay holding many leases when it stops: one per partition of a 24-partition topic.
    const MANY: i32 = 24;
    let db = TestDb::new(Kind::Mariadb).await;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("outbox.leases", MANY, 1).unwrap();
    let outbox = Outbox::builder().partitions("outbox.leases", MANY).build();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let setup = ProducerSetup::builder(SchemaStore::new(SCHEMAS), registry, outbox.clone()).build();
    let producer = Producer::builder("WidgetProducer")
        .topic("outbox.leases")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()
        .unwrap();
    let mut left = Vec::new();
    for round in 0..10 {
        let mut conn = db.conn().await;
        conn.begin().await.unwrap();
        let payloads = (0..i64::from(MANY) * 8)
            .map(|key| common::widget(key, round, true))
            .collect();
        outbox
            .publish(&producer, &mut conn, payloads, &PublishOptions::new())
            .await
            .unwrap();
        conn.commit().await.unwrap();
        drop(conn);
        // Leases are kept while idle for longer than the test runs, as a busy relay keeps them.
        let config = fast_config()
            .max_workers(MANY as usize)
            .idle_release(Duration::from_secs(60))
            .lease_ttl(Duration::from_secs(30))
            .build();
        let (stop, relay) = spawn_relay(Relay::new(&db.url, backend.clone(), config).unwrap());
        assert_eq!(pending_after(&db, Duration::from_secs(30)).await, 0);
        let leased = held(&db).await.len();
        stop.send(()).unwrap();
        relay.await.unwrap();
        let still = held(&db).await;
        if !still.is_empty() {
            left.push(format!("round {round}: {} of {leased} leases: {still:?}", still.len()));
        }
    }
    assert!(left.is_empty(), "leases held after a clean stop:\n{}", left.join("\n"));
    db.drop_db().await;
}

/// A value of the `deadlock` counter of `topic`.
fn deadlocks(snapshotter: &metrics_util::debugging::Snapshotter, topic: &str) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == "deadlock" && key.key().labels().any(|l| l.key() == "topic" && l.value() == topic)
        })
        .map(|(_, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_lock_waits_in_the_relays_statements_are_retried_and_counted() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let db = TestDb::new(Kind::Mariadb).await;
    let kit = Kit::new("outbox.locks").await;
    let writer = kit.writer();
    let mut conn = db.conn().await;
    writer.write(&mut conn, &[(1, 1), (2, 1), (3, 1)], true).await;
    // The server gives up a lock wait after 1 s (half the 2 s statement timeout); the lease lives 6 s.
    let config = fast_config()
        .statement_timeout(Duration::from_secs(2))
        .lease_ttl(Duration::from_secs(6))
        .idle_release(Duration::from_secs(60))
        .build();
    let (stop, relay) = spawn_relay(Relay::new(&db.url, kit.backend(), config).unwrap());
    pending_after(&db, Duration::from_secs(20)).await;

    // Another transaction holds every lease row for 3.5 s, as a slow statement of another relay would, while
    // writers go on writing: the relay's renewals and batches wait, time out on the server, and are run again.
    let mut blocker = db.conn().await;
    blocker.begin().await.unwrap();
    blocker
        .execute("SELECT fence FROM kafka_topic_info WHERE topic = 'outbox.locks' FOR UPDATE")
        .await
        .unwrap();
    let writing = {
        let writer = writer.clone();
        let mut conn = db.conn().await;
        tokio::spawn(async move {
            for seq in 2..40 {
                writer.write(&mut conn, &[(1, seq), (2, seq), (3, seq)], true).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    blocker.commit().await.unwrap();
    writing.await.unwrap();

    assert_eq!(
        pending_after(&db, Duration::from_secs(30)).await,
        0,
        "everything was sent"
    );
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    assert_eq!(stats.sent, 3 * 39);
    let received = kit.read_all(3 * 39, Duration::from_secs(20)).await;
    for (key, seqs) in common::per_key(&received) {
        assert_eq!(seqs, (1..40).collect::<Vec<_>>(), "key {key}: in order, each once");
    }
    assert!(
        deadlocks(&snapshotter, "outbox.locks") >= 1,
        "the lock waits were counted"
    );
    assert!(held(&db).await.is_empty(), "and every lease given back");
    db.drop_db().await;
}

/// A relay whose count of the backlog fails still sends everything: the count (for the pending metrics) is never
/// in the way of the work. Here the relay's database user may not read `created_at`, so every count fails at once,
/// as a count that outlasts `statement_timeout` on a huge backlog would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_failing_backlog_count_does_not_stop_the_relay() {
    let db = TestDb::new(Kind::Mariadb).await;
    let kit = Kit::new("outbox.count").await;
    let mut conn = db.conn().await;
    let writes: Vec<(i64, i64)> = (1..=10).flat_map(|seq| (1..=3).map(move |key| (key, seq))).collect();
    kit.write(&mut conn, &writes, true).await;

    // A user with every right the relay's work needs, and no right to read `created_at`.
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (_, address) = rest.split_once('@').unwrap();
    let (_, database) = address.rsplit_once('/').unwrap();
    let user = format!("{database}_relay");
    for grant in [
        format!("CREATE USER '{user}'@'%'"),
        format!("GRANT SELECT, INSERT, UPDATE ON {database}.kafka_topic_info TO '{user}'@'%'"),
        format!(
            "GRANT SELECT (id, topic, message, `key`, partition_key, `partition`, headers), UPDATE (`partition`), \
             DELETE ON {database}.kafka_messages TO '{user}'@'%'"
        ),
        format!("GRANT INSERT ON {database}.kafka_messages_dead TO '{user}'@'%'"),
    ] {
        conn.execute(&grant).await.unwrap();
    }
    let relay_url = format!("{scheme}://{user}@{address}");
    let config = fast_config().idle_release(Duration::from_secs(60)).build();
    let (stop, relay) = spawn_relay(Relay::new(&relay_url, kit.backend(), config).unwrap());
    let pending = pending_after(&db, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    conn.execute(&format!("DROP USER '{user}'@'%'")).await.unwrap();
    assert_eq!(pending, 0, "the relay sent its rows although it could not count them");
    assert_eq!(stats.sent, 30);
    let received = kit.read_all(30, Duration::from_secs(20)).await;
    for (key, seqs) in common::per_key(&received) {
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "key {key}: in order, each once");
    }
    db.drop_db().await;
}
