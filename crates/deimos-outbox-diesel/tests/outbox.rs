//! The outbox on PostgreSQL, MariaDB and SQLite against the mock Kafka cluster: transactional writes, the relay,
//! leases and fencing, concurrency, too-large messages, broker and database failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Kind, Kit, TestDb, fast_config, per_key, spawn_relay, within};
use deimos_metrics::events;
use deimos_outbox_diesel::{Conn, Relay};
use deimos_producer::PublishOptions;

async fn wait_empty(db: &TestDb, secs: u64) {
    within(secs, async {
        while db.count("kafka_messages").await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// Commit, roll back, relay.

async fn committed_messages_arrive_and_rolled_back_ones_do_not(kind: Kind) {
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.roundtrip").await;
    let mut conn = db.conn().await;
    // Three transactions: two committed (2 keys, in order), one rolled back.
    kit.write(&mut conn, &[(1, 1), (2, 1), (1, 2)], true).await;
    kit.write(&mut conn, &[(1, 99), (3, 99)], false).await;
    kit.write(&mut conn, &[(2, 2), (1, 3)], true).await;
    assert_eq!(
        db.count("kafka_messages").await,
        5,
        "the rolled-back transaction left nothing"
    );

    let (stop, relay) = spawn_relay(kit.relay(&db, fast_config().build()));
    wait_empty(&db, 30).await;
    let received = kit.read_all(5, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    assert_eq!(stats.sent, 5);

    let all: Vec<_> = received.values().flatten().collect();
    assert_eq!(all.len(), 5);
    assert!(
        all.iter().all(|m| m.committed),
        "nothing from the rolled-back transaction"
    );
    assert!(
        all.iter()
            .all(|m| m.headers == [("trace".to_string(), b"kept".to_vec())]),
        "{all:?}"
    );
    let keys = per_key(&received);
    assert_eq!(keys[&1], [1, 2, 3]);
    assert_eq!(keys[&2], [1, 2]);
    // Leases were given back.
    let mut c = db.conn().await;
    assert!(c.leases().await.unwrap().iter().all(|l| l.locked_by.is_none()));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_committed_messages_arrive_and_rolled_back_ones_do_not() {
    committed_messages_arrive_and_rolled_back_ones_do_not(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_committed_messages_arrive_and_rolled_back_ones_do_not() {
    committed_messages_arrive_and_rolled_back_ones_do_not(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_committed_messages_arrive_and_rolled_back_ones_do_not() {
    committed_messages_arrive_and_rolled_back_ones_do_not(Kind::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------------------
// Leases and fencing.

async fn a_lease_is_exclusive_and_a_taken_over_lease_is_fenced(kind: Kind) {
    let db = TestDb::new(kind).await;
    let (mut a, mut b) = (db.conn().await, db.conn().await);
    let fence_a = a
        .acquire("t", 0, "relay-a", 1_000)
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert_eq!(b.acquire("t", 0, "relay-b", 1_000).await.unwrap(), None, "held by a");
    assert!(
        b.acquire("t", 1, "relay-b", 1_000).await.unwrap().is_some(),
        "another partition is free"
    );
    assert!(a.renew("t", 0, "relay-a", fence_a, 1_000).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // Expired: b takes it over with a higher fence; a can neither renew nor delete.
    let fence_b = b
        .acquire("t", 0, "relay-b", 10_000)
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert!(fence_b > fence_a);
    assert!(!a.renew("t", 0, "relay-a", fence_a, 1_000).await.unwrap());
    assert!(!a.finish_batch("t", 0, "relay-a", fence_a, &[1, 2], &[]).await.unwrap());
    assert!(b.finish_batch("t", 0, "relay-b", fence_b, &[], &[]).await.unwrap());
    b.release("t", 0, "relay-b", fence_b).await.unwrap();
    assert!(
        a.acquire("t", 0, "relay-a", 1_000).await.unwrap().is_some(),
        "a released lease is free"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lease_is_exclusive_and_a_taken_over_lease_is_fenced() {
    a_lease_is_exclusive_and_a_taken_over_lease_is_fenced(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_lease_is_exclusive_and_a_taken_over_lease_is_fenced() {
    a_lease_is_exclusive_and_a_taken_over_lease_is_fenced(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_lease_is_exclusive_and_a_taken_over_lease_is_fenced() {
    a_lease_is_exclusive_and_a_taken_over_lease_is_fenced(Kind::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------------------
// Concurrent writers and two relays.

/// Four writers commit transactions of several keys concurrently (a key's transactions one after another, as
/// a row lock on the key would make them), some rolled back, while two relays run. Every committed message
/// arrives once, nothing rolled back arrives, and each key's messages arrive in commit order.
async fn concurrent_writers_and_two_relays_keep_per_key_commit_order(kind: Kind) {
    const KEYS: i64 = 12;
    const TXNS_PER_WRITER: usize = 40;
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.concurrent").await;
    let config = fast_config().batch_size(50).build();
    let (stop_a, relay_a) = spawn_relay(kit.relay(&db, config.clone()));
    let (stop_b, relay_b) = spawn_relay(kit.relay(&db, config));

    let seqs = common::key_seqs(KEYS);
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (writer, seqs, url) = (kit.writer(), seqs.clone(), db.url.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&url).await.unwrap();
            let mut committed = 0usize;
            for t in 0..TXNS_PER_WRITER as i64 {
                let key = (w * 7 + t * 5) % KEYS;
                let commit = t % 5 != 3;
                committed += usize::from(writer.write_keyed(&mut conn, &seqs, key, commit).await);
            }
            committed
        }));
    }
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }
    wait_empty(&db, 60).await;
    let received = kit.read_all(committed, Duration::from_secs(30)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    let (a, b) = (relay_a.await.unwrap(), relay_b.await.unwrap());
    assert_eq!(
        a.sent + b.sent,
        committed as u64,
        "each committed message sent once ({a:?}, {b:?})"
    );

    let all: Vec<_> = received.values().flatten().collect();
    assert_eq!(all.len(), committed);
    assert!(
        all.iter().all(|m| m.committed && m.seq > 0),
        "nothing from rolled-back transactions"
    );
    for (key, seqs_received) in per_key(&received) {
        let expected: Vec<i64> = (1..=seqs_received.len() as i64).collect();
        assert_eq!(seqs_received, expected, "key {key}: commit order");
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writers_and_two_relays_keep_per_key_commit_order() {
    concurrent_writers_and_two_relays_keep_per_key_commit_order(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_concurrent_writers_and_two_relays_keep_per_key_commit_order() {
    concurrent_writers_and_two_relays_keep_per_key_commit_order(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writers_and_two_relays_keep_per_key_commit_order() {
    concurrent_writers_and_two_relays_keep_per_key_commit_order(Kind::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------------------
// Transactions of several INSERTs.

/// Six writers commit transactions of four INSERTs each (one publish per message, two keys per transaction,
/// alternating; a key's transactions one after another, as a row lock on the key's record would make them) while
/// one relay drains with small batches, so transactions commit while the relay reads. Every message arrives
/// once, and each key's messages arrive in commit order: a transaction's rows are never split around a batch's
/// read.
async fn transactions_of_several_inserts_arrive_in_commit_order(kind: Kind, txns_per_writer: i64) {
    const KEYS: i64 = 200;
    const WRITERS: i64 = 6;
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.multi").await;
    let config = fast_config().batch_size(20).max_in_flight(4).build();
    let (stop, relay) = spawn_relay(kit.relay(&db, config));

    let seqs = common::key_seqs(KEYS);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (writer, seqs, url) = (kit.writer(), seqs.clone(), db.url.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&url).await.unwrap();
            let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
            for _ in 0..txns_per_writer {
                let a = (rng.next() % KEYS as u64) as i64;
                let b = (a + 1 + (rng.next() % (KEYS as u64 - 1)) as i64) % KEYS;
                // Locked in key order, so two writers never wait on each other in a cycle.
                let (k1, k2) = (a.min(b), a.max(b));
                let mut s1 = seqs[k1 as usize].lock().await;
                let mut s2 = seqs[k2 as usize].lock().await;
                let (sa, sb) = if a == k1 { (*s1, *s2) } else { (*s2, *s1) };
                writer
                    .write_each(&mut conn, &[(a, sa + 1), (b, sb + 1), (a, sa + 2), (b, sb + 2)])
                    .await;
                *s1 += 2;
                *s2 += 2;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let written = (WRITERS * txns_per_writer * 4) as usize;
    wait_empty(&db, 120).await;
    let received = kit.read_all(written, Duration::from_secs(60)).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    assert_eq!(stats.sent, written as u64);
    let all: usize = received.values().map(Vec::len).sum();
    assert_eq!(all, written, "every message once");
    let mut out_of_order = Vec::new();
    for (key, seqs_received) in per_key(&received) {
        let expected: Vec<i64> = (1..=seqs_received.len() as i64).collect();
        if seqs_received != expected {
            out_of_order.push((key, seqs_received));
        }
    }
    assert!(
        out_of_order.is_empty(),
        "{} of {KEYS} keys out of commit order, e.g. {:?}",
        out_of_order.len(),
        out_of_order.first()
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_transactions_of_several_inserts_arrive_in_commit_order() {
    transactions_of_several_inserts_arrive_in_commit_order(Kind::Postgres, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_transactions_of_several_inserts_arrive_in_commit_order() {
    transactions_of_several_inserts_arrive_in_commit_order(Kind::Mariadb, 300).await;
}

/// A transaction that took its id early commits while later rows of its partition are in flight (the broker
/// answers slowly, small batches, two in flight): its row goes out next, before a row of its key written after
/// it, and nothing is skipped (a read that only looked past the highest id in flight would send key 0 as 2, 1).
async fn a_row_committed_late_below_the_batches_in_flight_goes_out_next(kind: Kind) {
    const KEYS: i64 = 60;
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.late").await;
    let writer = kit.writer();
    // Key 0's first row takes the lowest id and stays uncommitted.
    let mut late = db.conn().await;
    late.begin().await.unwrap();
    kit.outbox
        .publish(
            &kit.producer,
            &mut late,
            vec![common::widget(0, 1, true)],
            &PublishOptions::new(),
        )
        .await
        .unwrap();
    // Five rows of every other key, committed: every partition has rows above it.
    let mut conn = db.conn().await;
    for seq in 1..=5 {
        let widgets: Vec<(i64, i64)> = (1..KEYS).map(|k| (k, seq)).collect();
        writer.write(&mut conn, &widgets, true).await;
    }
    kit.mock.broker_round_trip_time(1, Duration::from_millis(300)).unwrap();
    let config = fast_config().batch_size(2).max_in_flight(2).build();
    let (stop, relay) = spawn_relay(kit.relay(&db, config));
    // Once batches are in flight, the late row commits, and key 0's next row comes after it.
    within(20, async {
        while db.count("kafka_messages").await == (KEYS - 1) * 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    late.commit().await.unwrap();
    writer.write(&mut conn, &[(0, 2)], true).await;
    kit.mock.broker_round_trip_time(1, Duration::from_millis(30)).unwrap();
    let written = (KEYS - 1) as usize * 5 + 2;
    wait_empty(&db, 60).await;
    let received = kit.read_all(written, Duration::from_secs(30)).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    assert_eq!(stats.sent, written as u64, "every row sent once");
    let per_key = per_key(&received);
    assert_eq!(per_key[&0], vec![1, 2], "key 0 in commit order");
    for key in 1..KEYS {
        assert_eq!(per_key[&key], (1..=5).collect::<Vec<_>>(), "key {key}");
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_row_committed_late_below_the_batches_in_flight_goes_out_next() {
    a_row_committed_late_below_the_batches_in_flight_goes_out_next(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_row_committed_late_below_the_batches_in_flight_goes_out_next() {
    a_row_committed_late_below_the_batches_in_flight_goes_out_next(Kind::Mariadb).await;
}

// ---------------------------------------------------------------------------------------------------------
// Rows with and without a partition.

/// Writers commit each key's messages alternately through an outbox that knows the partition count (rows with a
/// partition) and one that does not (partition -1, as synchronous writes, writes without a count and Deimos's
/// own rows are), while two relays run. Each key's messages arrive once, in commit order, on the partition a
/// producer would choose for the key (the keys are Avro-encoded ids of 64 and more, whose bytes are not UTF-8).
async fn rows_with_and_without_a_partition_keep_each_keys_order(kind: Kind) {
    const KEYS: i64 = 12;
    const TXNS_PER_WRITER: i64 = 60;
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.mixed").await;
    let config = fast_config().batch_size(20).build();
    let (stop_a, relay_a) = spawn_relay(kit.relay(&db, config.clone()));
    let (stop_b, relay_b) = spawn_relay(kit.relay(&db, config));

    let partitioned = kit.writer();
    let unpartitioned = common::Writer {
        outbox: deimos_outbox_diesel::Outbox::builder().build(),
        producer: kit.producer.clone(),
    };
    let seqs = common::key_seqs(KEYS);
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (partitioned, unpartitioned, seqs, url) =
            (partitioned.clone(), unpartitioned.clone(), seqs.clone(), db.url.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&url).await.unwrap();
            let mut rng = common::Rng(0x2545_f491_4f6c_dd1d ^ (w as u64 + 1));
            for _ in 0..TXNS_PER_WRITER {
                let key = (rng.next() % KEYS as u64) as usize;
                let mut seq = seqs[key].lock().await;
                let writer = if rng.next().is_multiple_of(2) {
                    &partitioned
                } else {
                    &unpartitioned
                };
                let id = 64 + key as i64 * 1_000;
                writer.write_each(&mut conn, &[(id, *seq + 1), (id, *seq + 2)]).await;
                *seq += 2;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let written = (4 * TXNS_PER_WRITER * 2) as usize;
    wait_empty(&db, 60).await;
    let received = kit.read_all(written, Duration::from_secs(30)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    let (a, b) = (relay_a.await.unwrap(), relay_b.await.unwrap());
    assert_eq!(a.sent + b.sent, written as u64, "each message sent once ({a:?}, {b:?})");
    let all: usize = received.values().map(Vec::len).sum();
    assert_eq!(all, written);
    for (key, seqs_received) in per_key(&received) {
        let expected: Vec<i64> = (1..=seqs_received.len() as i64).collect();
        assert_eq!(seqs_received, expected, "key {key}: commit order");
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_with_and_without_a_partition_keep_each_keys_order() {
    rows_with_and_without_a_partition_keep_each_keys_order(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rows_with_and_without_a_partition_keep_each_keys_order() {
    rows_with_and_without_a_partition_keep_each_keys_order(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_with_and_without_a_partition_keep_each_keys_order() {
    rows_with_and_without_a_partition_keep_each_keys_order(Kind::Sqlite).await;
}

/// A row without a partition whose partition key is not UTF-8 (another writer put raw bytes in the text column)
/// is partitioned by those bytes, exactly as a producer would partition it, not by a lossy reading of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_key_that_is_not_utf8_is_partitioned_by_its_bytes() {
    use deimos_producer::Partitioner;
    let db = TestDb::new(Kind::Sqlite).await;
    let kit = Kit::new("outbox.binary_pk").await;
    let mut conn = db.conn().await;
    // Bytes whose lossy reading (U+FFFD for each bad byte) lands on another partition.
    let pk: Vec<u8> = (0u8..=255)
        .map(|b| vec![b'p', 0xff, b])
        .find(|pk| {
            Partitioner::Consistent.partition(pk, common::PARTITIONS)
                != Partitioner::Consistent.partition(String::from_utf8_lossy(pk).as_bytes(), common::PARTITIONS)
        })
        .unwrap();
    let batch = kit
        .producer
        .encode_list_with(vec![common::widget(1, 1, true)], &PublishOptions::new())
        .unwrap()
        .unwrap();
    let m = &batch.messages[0];
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    conn.execute(&format!(
        "INSERT INTO kafka_messages (topic, message, key, partition_key, \"partition\", created_at, updated_at) \
         VALUES ('outbox.binary_pk', X'{}', X'{}', CAST(X'{}' AS TEXT), -1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        hex(m.value.as_deref().unwrap()),
        hex(m.key.as_deref().unwrap()),
        hex(&pk)
    ))
    .await
    .unwrap();
    let (stop, relay) = spawn_relay(kit.relay(&db, fast_config().build()));
    wait_empty(&db, 30).await;
    let received = kit.read_all_unchecked(1, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    assert_eq!(relay.await.unwrap().sent, 1);
    assert_eq!(
        received.keys().copied().collect::<Vec<_>>(),
        [Partitioner::Consistent.partition(&pk, common::PARTITIONS)]
    );
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------------------
// Failures.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_large_message_is_moved_aside_and_the_rest_of_its_batch_is_sent() {
    // Each test runs in its own process (nextest), so this recorder sees only this test's metrics.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.large").await;
    let mut conn = db.conn().await;
    let mut big = common::widget(7, 1, true);
    big["description"] = "x".repeat(5_000).into();
    conn.begin().await.unwrap();
    let payloads = vec![common::widget(1, 1, true), big, common::widget(2, 1, true)];
    kit.outbox
        .publish(&kit.producer, &mut conn, payloads, &PublishOptions::new())
        .await
        .unwrap();
    conn.commit().await.unwrap();

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let _sub = events::subscribe(events::DB_PRODUCER_TOO_LARGE, move |e| {
        sink.lock().unwrap().push(e.clone())
    });
    let backend = deimos_producer::KafkaBackend::builder()
        .bootstrap_servers(kit.brokers())
        .kafka_setting("message.max.bytes", "2000")
        .build()
        .unwrap();
    let (stop, relay) = spawn_relay(Relay::new(&db.url, backend, fast_config().build()).unwrap());
    wait_empty(&db, 30).await;
    let received = kit.read_all(2, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    assert_eq!((stats.sent, stats.too_large), (2, 1));
    assert_eq!(per_key(&received).keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(db.count("kafka_messages_dead").await, 1);
    let events = seen.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains("over the limit of 2000 bytes")),
        "{events:?}"
    );

    // Metrics, by topic: rows written, rows finished (sent or moved aside), moved aside, acknowledged, and the
    // backlog gauge back to 0.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let v = match value {
            metrics_util::debugging::DebugValue::Counter(n) => n as f64,
            metrics_util::debugging::DebugValue::Gauge(g) => g.into_inner(),
            metrics_util::debugging::DebugValue::Histogram(_) => continue,
        };
        seen.insert(format!("{}{{{}}}", key.key().name(), labels.join(",")), v);
    }
    let get = |k: &str| seen.get(k).copied();
    assert_eq!(get("db_producer.insert{topic=outbox.large}"), Some(3.0), "{seen:?}");
    assert_eq!(get("db_producer.process{topic=outbox.large}"), Some(3.0), "{seen:?}");
    assert_eq!(get("db_producer.too_large{topic=outbox.large}"), Some(1.0), "{seen:?}");
    assert_eq!(get("publish{status=success,topic=outbox.large}"), Some(2.0), "{seen:?}");
    assert!(
        seen.contains_key("pending_db_messages_count{topic=outbox.large}"),
        "{seen:?}"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_waits_out_a_broker_outage() {
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.outage").await;
    let mut conn = db.conn().await;
    kit.write(&mut conn, &[(1, 1), (2, 1)], true).await;
    let (stop, relay) = spawn_relay(kit.relay(&db, fast_config().build()));
    wait_empty(&db, 30).await;
    kit.mock.broker_down(1).unwrap();
    kit.write(&mut conn, &[(1, 2), (2, 2), (3, 1)], true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        db.count("kafka_messages").await,
        3,
        "nothing deleted while the broker is down"
    );
    kit.mock.broker_up(1).unwrap();
    wait_empty(&db, 60).await;
    let received = kit.read_all(5, Duration::from_secs(30)).await;
    stop.send(()).unwrap();
    relay.await.unwrap();
    let keys = per_key(&received);
    assert_eq!(keys[&1], [1, 2]);
    assert_eq!(keys[&2], [1, 2]);
    assert_eq!(keys[&3], [1]);
    db.drop_db().await;
}

/// The database goes away under the relay (every connection closed, new ones refused for two seconds, as in a
/// restart) and comes back: the relay reconnects by itself and sends what was written meanwhile.
async fn the_relay_recovers_from_a_database_restart(kind: Kind) {
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.dbrestart").await;
    // The relay reaches the database through the proxy; the test writes directly.
    let (proxy, through_proxy) = common::Proxy::in_front_of(&db.url).await;
    let config = fast_config().idle_release(Duration::from_secs(30)).build();
    let relay = Relay::new(&through_proxy, kit.backend(), config).unwrap();
    let (stop, relay) = spawn_relay(relay);
    let mut conn = db.conn().await;
    kit.write(&mut conn, &[(1, 1), (2, 1)], true).await;
    wait_empty(&db, 30).await;
    proxy.restart(Duration::from_secs(2)).await;
    kit.write(&mut conn, &[(1, 2), (2, 2)], true).await;
    wait_empty(&db, 60).await;
    let received = kit.read_all(4, Duration::from_secs(30)).await;
    stop.send(()).unwrap();
    relay.await.unwrap();
    let keys = per_key(&received);
    assert_eq!((keys[&1].clone(), keys[&2].clone()), (vec![1, 2], vec![1, 2]));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_relay_recovers_from_a_database_restart() {
    the_relay_recovers_from_a_database_restart(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_the_relay_recovers_from_a_database_restart() {
    the_relay_recovers_from_a_database_restart(Kind::Mariadb).await;
}

// ---------------------------------------------------------------------------------------------------------
// Writing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_writes_nothing_and_says_which_field() {
    let db = TestDb::new(Kind::Sqlite).await;
    let kit = Kit::new("outbox.bad").await;
    let mut conn = db.conn().await;
    let mut bad = common::widget(2, 1, true);
    bad["quantity"] = "many".into();
    let err = kit
        .outbox
        .publish(
            &kit.producer,
            &mut conn,
            vec![common::widget(1, 1, true), bad],
            &PublishOptions::new(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("quantity"), "{err}");
    assert_eq!(db.count("kafka_messages").await, 0);
    // A plain publish on a producer built against the outbox explains what to call instead.
    let err = kit
        .producer
        .publish(common::widget(1, 1, true))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Outbox::publish"), "{err}");
    db.drop_db().await;
}

#[cfg(feature = "pg-sync")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_diesel_connections_write_too() {
    use diesel::Connection as _;
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.sync").await;
    let url = db.url.clone();
    let (outbox, producer) = (kit.outbox.clone(), kit.producer.clone());
    tokio::task::spawn_blocking(move || {
        let mut pg = diesel::PgConnection::establish(&url).unwrap();
        pg.transaction::<_, deimos_outbox_diesel::OutboxError, _>(|c| {
            outbox.publish_sync(&producer, c, vec![common::widget(5, 1, true)], &PublishOptions::new())?;
            Ok(())
        })
        .unwrap();
    })
    .await
    .unwrap();
    let mut c = db.conn().await;
    let backlog = c.backlog().await.unwrap();
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].count, 1);
    assert!(backlog[0].partition >= 0, "partitioned when written");
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------------------
// Upgrading a Deimos database.

/// Deimos's tables with rows Deimos wrote (no partition, no headers): the migrations keep the rows, and the relay
/// sends them, partitioned by the producer from their key.
async fn a_deimos_database_is_upgraded_and_its_rows_are_sent(kind: Kind) {
    use deimos_producer::{OutgoingBatch, OutgoingMessage, PublishBackend};
    let db = TestDb::new_empty(kind).await;
    let kit = Kit::new("outbox.upgrade").await;
    let mut conn = db.conn().await;
    // The tables as `rails g deimos:db_backend` made them (the first embedded migration is exactly that).
    let first = std::fs::read_to_string(format!(
        "{}/migrations/{}/2019-01-01-000000_deimos_tables/up.sql",
        env!("CARGO_MANIFEST_DIR"),
        match kind {
            Kind::Postgres => "postgres",
            Kind::Mariadb => "mysql",
            Kind::Sqlite => "sqlite",
        }
    ))
    .unwrap();
    // As Rails' `t.timestamps` makes them: NOT NULL without a default.
    conn.execute(&strip_timestamp_defaults(&first)).await.unwrap();
    // Rows as Deimos wrote them: encoded key and message, the partition key as text.
    let batch = kit
        .producer
        .encode_list_with(
            vec![common::widget(1, 1, true), common::widget(2, 1, true)],
            &PublishOptions::new(),
        )
        .unwrap()
        .unwrap();
    for m in &batch.messages {
        let key = m.key.clone().unwrap();
        let value = m.value.clone().unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let (k, v) = match kind {
            Kind::Postgres => (
                format!("'\\x{}'::bytea", hex(&key)),
                format!("'\\x{}'::bytea", hex(&value)),
            ),
            _ => (format!("X'{}'", hex(&key)), format!("X'{}'", hex(&value))),
        };
        let key_col = if kind == Kind::Mariadb { "`key`" } else { "key" };
        conn.execute(&format!(
            "INSERT INTO kafka_messages (topic, message, {key_col}, partition_key, created_at, updated_at) \
             VALUES ('outbox.upgrade', {v}, {k}, 'legacy', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        ))
        .await
        .unwrap();
    }
    conn.execute(
        "INSERT INTO kafka_topic_info (topic, locked_by, error, retries) VALUES ('outbox.upgrade', NULL, FALSE, 0)",
    )
    .await
    .unwrap();
    drop(conn);
    let applied = deimos_outbox_diesel::migrate(&db.url).await.unwrap();
    assert_eq!(
        applied,
        ["20190101000000", "20261101000000"],
        "the first is a no-op on Deimos's tables"
    );
    let mut conn = db.conn().await;
    let backlog = conn.backlog().await.unwrap();
    assert_eq!(
        (backlog.len(), backlog[0].partition, backlog[0].count),
        (1, -1, 2),
        "{backlog:?}"
    );

    let (stop, relay) = spawn_relay(kit.relay(&db, fast_config().build()));
    wait_empty(&db, 30).await;
    stop.send(()).unwrap();
    assert_eq!(relay.await.unwrap().sent, 2);
    // Sent with their partition key, partitioned the way the Kafka backend partitions it.
    let memory = deimos_producer::MemoryBackend::new()
        .with_partitions(common::PARTITIONS, deimos_producer::Partitioner::Consistent);
    let expected = memory
        .enqueue(OutgoingBatch::new(
            "p",
            "t",
            "t",
            vec![],
            vec![OutgoingMessage::new(None, None).partition_key(Some(b"legacy".to_vec()))],
        ))
        .await
        .wait()
        .await;
    let partition = expected[0].as_ref().unwrap().partition;
    let received = kit.read_all_unchecked(2, Duration::from_secs(20)).await;
    assert_eq!(received.keys().copied().collect::<Vec<_>>(), [partition]);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_deimos_database_is_upgraded_and_its_rows_are_sent() {
    a_deimos_database_is_upgraded_and_its_rows_are_sent(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_deimos_database_is_upgraded_and_its_rows_are_sent() {
    a_deimos_database_is_upgraded_and_its_rows_are_sent(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_deimos_database_is_upgraded_and_its_rows_are_sent() {
    a_deimos_database_is_upgraded_and_its_rows_are_sent(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topics_send_the_last_message_per_key_of_a_batch() {
    let db = TestDb::new(Kind::Sqlite).await;
    let kit = Kit::new("outbox.compact").await;
    let mut conn = db.conn().await;
    kit.write(&mut conn, &[(1, 1), (2, 1), (1, 2), (1, 3), (3, 1)], true)
        .await;
    let config = fast_config()
        .compact_topics(deimos_outbox_diesel::Topics::only(["outbox.compact"]))
        .build();
    let (stop, relay) = spawn_relay(kit.relay(&db, config));
    wait_empty(&db, 30).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    assert_eq!((stats.sent, stats.compacted), (3, 2));
    let keys = per_key(&kit.read_all(3, Duration::from_secs(20)).await);
    assert_eq!(
        (keys[&1].clone(), keys[&2].clone(), keys[&3].clone()),
        (vec![3], vec![1], vec![1])
    );
    db.drop_db().await;
}

#[cfg(feature = "mysql-sync")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_mysql_connections_write_too() {
    use diesel::Connection as _;
    let db = TestDb::new(Kind::Mariadb).await;
    let kit = Kit::new("outbox.sync.mysql").await;
    let url = db.url.clone();
    let (outbox, producer) = (kit.outbox.clone(), kit.producer.clone());
    tokio::task::spawn_blocking(move || {
        let mut my = diesel::MysqlConnection::establish(&url).unwrap();
        my.transaction::<_, deimos_outbox_diesel::OutboxError, _>(|c| {
            outbox.publish_sync(
                &producer,
                c,
                vec![common::widget(5, 1, true), common::widget(6, 1, true)],
                &PublishOptions::new(),
            )?;
            Ok(())
        })
        .unwrap();
    })
    .await
    .unwrap();
    assert_eq!(db.count("kafka_messages").await, 2);
    db.drop_db().await;
}

/// The broker refuses the first produce requests outright (not retried by librdkafka): the relay backs off and
/// sends again, in order, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_are_sent_again_in_order_after_backoff() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.refused").await;
    let mut conn = db.conn().await;
    kit.write(&mut conn, &[(1, 1), (1, 2), (2, 1), (1, 3), (2, 2)], true)
        .await;
    kit.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );
    let (stop, relay) = spawn_relay(kit.relay(&db, fast_config().build()));
    wait_empty(&db, 30).await;
    let received = kit.read_all(5, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    assert_eq!(relay.await.unwrap().sent, 5);
    let keys = per_key(&received);
    assert_eq!((keys[&1].clone(), keys[&2].clone()), (vec![1, 2, 3], vec![1, 2]));
    let refused: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "publish_error")
        .map(|(.., v)| match v {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum();
    assert!(refused >= 1, "the broker refused some sends ({refused})");
    db.drop_db().await;
}

/// The broker refuses a produce request as too large (`MSG_SIZE_TOO_LARGE`, as a topic whose `max.message.bytes`
/// is below the producer's limit does for a request that holds too much). Only a row refused again when sent
/// alone is moved to `kafka_messages_dead`; its neighbours are sent, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_row_too_large_on_its_own_goes_dead_and_its_neighbours_are_sent_in_order() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.broker_too_large").await;
    let mut conn = db.conn().await;
    // One key, so one partition and one produce request for the whole batch.
    kit.write(&mut conn, &[(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)], true)
        .await;
    let written = common::ids(&mut conn, "kafka_messages").await;
    // Requests, as the relay narrows its batches after a refusal (halved on each, doubled on each success):
    // [1..5] refused; [1, 2] pass; [3, 4, 5] refused; [3] refused again, alone: too large on its own; then [4]
    // and [5] pass.
    let too_large = RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    kit.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            too_large,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            too_large,
            too_large,
        ],
    );
    let (stop, relay) = spawn_relay(kit.relay(&db, fast_config().build()));
    wait_empty(&db, 30).await;
    let received = kit.read_all(4, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    let dead = common::ids(&mut conn, "kafka_messages_dead").await;
    assert_eq!(dead, [written[2]], "only the row refused on its own is dead");
    assert_eq!(
        per_key(&received).get(&1).cloned().unwrap_or_default(),
        [1, 2, 4, 5],
        "the neighbours arrive, in order"
    );
    assert_eq!((stats.sent, stats.too_large), (4, 1));
    db.drop_db().await;
}

/// Deimos's DDL without the timestamp defaults this crate's first migration adds.
fn strip_timestamp_defaults(sql: &str) -> String {
    sql.lines()
        .map(|l| {
            let column = l.trim_start();
            match l.find(" DEFAULT") {
                Some(i) if column.starts_with("created_at") || column.starts_with("updated_at") => {
                    format!("{}{}", &l[..i], if l.trim_end().ends_with(',') { "," } else { "" })
                }
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(feature = "pg-sync")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_without_keys_writes_rows_with_a_null_key_as_deimos() {
    use diesel::{Connection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
        key: Option<Vec<u8>>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        partition_key: Option<String>,
    }
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.keyless").await;
    let setup = deimos_producer::ProducerSetup::builder(
        deimos_avro::SchemaStore::new(common::SCHEMAS),
        kit.registry.clone() as Arc<dyn deimos_registry::SchemaRegistry>,
        kit.outbox.clone(),
    )
    .build();
    let producer = deimos_producer::Producer::builder("KeylessProducer")
        .topic("outbox.keyless")
        .schema("com.acme.Widget")
        .key_config(deimos_keys::KeyConfig::None)
        .build(&setup)
        .await
        .unwrap();
    let mut payload = common::widget(5, 1, true);
    payload["payload_key"] = serde_json::json!("k-5");
    let mut conn = db.conn().await;
    conn.begin().await.unwrap();
    kit.outbox
        .publish(&producer, &mut conn, vec![payload], &PublishOptions::new())
        .await
        .unwrap();
    conn.commit().await.unwrap();
    let url = db.url.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let mut pg = diesel::PgConnection::establish(&url).unwrap();
        diesel::sql_query("SELECT key, partition_key FROM kafka_messages")
            .load::<Row>(&mut pg)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].key, None,
        "Deimos's DB backend stores no key for a key_config none producer"
    );
    assert_eq!(
        rows[0].partition_key.as_deref(),
        Some("k-5"),
        "the given key still partitions"
    );
    db.drop_db().await;
}
