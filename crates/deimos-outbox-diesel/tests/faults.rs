//! The outbox under database and broker faults: a relay cut from its database while the broker is slow, a
//! stalled or black-holed database connection, Kafka down when writers need a partition count, the relay's
//! connection pool, and the lease clock in sessions of other time zones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Kind, Kit, Proxy, Received, TestDb, fast_config, per_key, spawn_relay, within};
use deimos_outbox_diesel::{Conn, Outbox, OutboxError, Relay, RelayConfig};
use deimos_producer::{KafkaBackend, Producer, PublishOptions};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;

async fn wait_empty(db: &TestDb, secs: u64) {
    within(secs, async {
        while db.count("kafka_messages").await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One number from `sql` (a `SELECT … AS n`).
async fn number(conn: &mut Conn, sql: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    let rows: Vec<N> = match conn {
        Conn::Pg(c) => diesel::sql_query(sql).load(c).await,
        Conn::Mysql(c) => diesel::sql_query(sql).load(c).await,
        Conn::Sqlite(c) => diesel::sql_query(sql).load(c).await,
    }
    .unwrap();
    rows[0].n
}

/// Checks each key's messages: every one is the next of its key or a re-send of one already seen, and the last is
/// the newest (what a compacted topic keeps). Returns the number of re-sends.
fn check_per_key_order(received: &BTreeMap<i32, Vec<Received>>, newest: i64) -> usize {
    let mut duplicates = 0;
    for (key, seqs) in per_key(received) {
        let mut max = 0;
        for s in &seqs {
            if *s == max + 1 {
                max = *s;
            } else {
                assert!(*s <= max, "key {key}: {s} came before {} ({seqs:?})", max + 1);
                duplicates += 1;
            }
        }
        assert_eq!(max, newest, "key {key}: not every message arrived ({seqs:?})");
        assert_eq!(
            seqs.last(),
            Some(&newest),
            "key {key}: an older message landed after the newest one ({seqs:?})"
        );
    }
    duplicates
}

// ---------------------------------------------------------------------------------------------------------
// No sender outlives its lease.

/// Relay A hands two batches per partition to a producer that the broker answers slowly, then loses its
/// database (packets dropped, nothing closed). Relay B takes the leases over once they expire and sends
/// everything, newer rows included. What A had handed over must not land after that: A's messages time out
/// in librdkafka before its lease can be taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cut_from_its_database_sends_nothing_once_its_lease_can_be_taken_over() {
    const KEYS: i64 = 3;
    const BATCH: usize = 5;
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.cut").await;
    let mut conn = db.conn().await;
    for seq in 1..=10 {
        let widgets: Vec<(i64, i64)> = (0..KEYS).map(|k| (k, seq)).collect();
        kit.write(&mut conn, &widgets, true).await;
    }
    let config = fast_config()
        .lease_ttl(Duration::from_secs(4))
        .statement_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .batch_size(BATCH)
        .max_in_flight(2)
        .build();

    // B's producer is connected, with its producer id, before the broker slows down.
    let b_backend = kit.backend();
    b_backend.partition_count(&kit.topic).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The broker answers after 8 s (the mock handles a request at once and delays its answer): A's new producer
    // waits that long for its first answer, and what A hands over stays queued in librdkafka meanwhile.
    kit.mock.broker_round_trip_time(1, Duration::from_secs(8)).unwrap();
    let started = Instant::now();
    let (proxy, _) = Proxy::in_front_of(&db.url).await;
    let a_config = config.to_builder().name("relay-a").build();
    let (stop_a, relay_a) = spawn_relay(Relay::new(proxy.url(&db.url), kit.backend(), a_config).unwrap());

    // A leases every partition with rows, and hands its batches over.
    within(20, async {
        loop {
            let pending: Vec<i32> = conn.backlog().await.unwrap().iter().map(|b| b.partition).collect();
            let held = conn.leases().await.unwrap();
            let all_held = pending.iter().all(|p| {
                held.iter()
                    .any(|l| l.partition == *p && l.locked_by.as_deref().is_some_and(|o| o.starts_with("relay-a")))
            });
            if !pending.is_empty() && all_held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.black_hole();
    // Newer messages, which only B can send.
    for seq in 11..=20 {
        let widgets: Vec<(i64, i64)> = (0..KEYS).map(|k| (k, seq)).collect();
        kit.write(&mut conn, &widgets, true).await;
    }
    // The broker answers at once again (answers already delayed still come late), and B starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    kit.mock.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let b_config = config.to_builder().name("relay-b").build();
    let (stop_b, relay_b) = spawn_relay(Relay::new(&db.url, b_backend, b_config).unwrap());
    wait_empty(&db, 60).await;
    // Whatever A's producer still holds would land once its first answer comes, 8 s after it started.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(started.elapsed())).await;
    let received = kit.read_all(usize::MAX, Duration::from_secs(5)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    relay_a.await.unwrap();
    relay_b.await.unwrap();

    let duplicates = check_per_key_order(&received, 20);
    assert!(
        duplicates <= BATCH,
        "{duplicates} messages sent twice, more than one batch ({BATCH})"
    );
    db.drop_db().await;
}

/// `Relay::new` refuses a delivery timeout that would let a message outlive its lease, and sets one that
/// does not on a producer built without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_a_delivery_timeout_its_lease_cannot_cover() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let url = "sqlite://never-opened.db";
    let backend = |settings: &[(&str, &str)]| {
        let mut b = KafkaBackend::builder().bootstrap_servers(mock.bootstrap_servers());
        for (k, v) in settings {
            b = b.kafka_setting(*k, *v);
        }
        b.build().unwrap()
    };
    let error = |result: Result<Relay, OutboxError>| result.err().map(|e| e.to_string()).unwrap_or_default();

    // librdkafka's default (300 s) is not left in place: the relay sets a third of the lease.
    let relay = Relay::new(url, backend(&[]), RelayConfig::default()).unwrap();
    assert_eq!(relay.delivery_timeout(), Duration::from_secs(10));
    // A producer that already has a short enough timeout keeps it.
    let relay = Relay::new(url, backend(&[("message.timeout.ms", "5000")]), RelayConfig::default()).unwrap();
    assert_eq!(relay.delivery_timeout(), Duration::from_secs(5));
    // Too long, under either name, or unlimited.
    for (key, value) in [
        ("message.timeout.ms", "300000"),
        ("delivery.timeout.ms", "20000"),
        ("message.timeout.ms", "0"),
    ] {
        let e = error(Relay::new(url, backend(&[(key, value)]), RelayConfig::default()));
        assert!(e.contains(key) && e.contains("lease_ttl"), "{key}={value}: {e}");
    }
    let config = RelayConfig::builder()
        .delivery_timeout(Some(Duration::from_secs(20)))
        .build();
    let e = error(Relay::new(url, backend(&[]), config));
    assert!(e.contains("delivery_timeout") && e.contains("14s"), "{e}");
    // Transactions would stretch the timeout to transaction.timeout.ms.
    let e = error(Relay::new(
        url,
        backend(&[("transactional.id", "relay")]),
        RelayConfig::default(),
    ));
    assert!(e.contains("transactional.id"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------
// Writing to the outbox never depends on Kafka.

async fn write_one(
    outbox: &Outbox,
    producer: &Producer,
    conn: &mut Conn,
    key: i64,
    seq: i64,
) -> Result<(), OutboxError> {
    conn.begin().await?;
    match outbox
        .publish(
            producer,
            conn,
            vec![common::widget(key, seq, true)],
            &PublishOptions::new(),
        )
        .await
    {
        Ok(_) => conn.commit().await,
        Err(e) => {
            conn.rollback().await?;
            Err(e)
        }
    }
}

/// Kafka goes down and stays down past the partition counts' time to live: writes go on at once with the last
/// known count (warned about and counted), and are sent once Kafka is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_use_the_last_known_partition_count_while_kafka_is_down() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.kafka-down").await;
    let ttl = Duration::from_millis(500);
    let kafka = KafkaBackend::builder()
        .bootstrap_servers(kit.brokers())
        .partition_count_ttl(ttl)
        .build()
        .unwrap();
    let outbox = Outbox::builder().kafka(kafka).partition_count_ttl(ttl).build();
    let mut conn = db.conn().await;
    write_one(&outbox, &kit.producer, &mut conn, 1, 1).await.unwrap();

    kit.mock.broker_down(1).unwrap();
    tokio::time::sleep(ttl * 3).await;
    for seq in [2, 3] {
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(3),
            write_one(&outbox, &kit.producer, &mut conn, 1, seq),
        )
        .await;
        let took = started.elapsed();
        assert!(
            matches!(result, Ok(Ok(()))),
            "write {seq} with Kafka down failed or waited for it ({took:?}): {result:?}"
        );
        assert!(took < Duration::from_secs(1), "write {seq} waited {took:?}");
    }
    let backlog = conn.backlog().await.unwrap();
    assert_eq!(backlog.len(), 1, "one key, one partition: {backlog:?}");
    assert!(backlog[0].partition >= 0 && backlog[0].count == 3, "{backlog:?}");

    kit.mock.broker_up(1).unwrap();
    let (stop, relay) = spawn_relay(kit.relay(&db, fast_config().build()));
    wait_empty(&db, 60).await;
    let received = kit.read_all(3, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    relay.await.unwrap();
    assert_eq!(per_key(&received)[&1], [1, 2, 3]);
    let stale: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "db_producer.stale_partition_count")
        .map(|(.., v)| match v {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum();
    assert!(stale >= 2, "writes with a stale count are counted ({stale})");
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------------------
// Database calls have deadlines.

/// Every connection the relay has open stops answering (packets dropped, nothing closed): its statements time
/// out, the connections are dropped, and the relay goes on with new ones within a bounded time.
async fn a_stalled_database_connection_times_out_and_the_relay_goes_on(kind: Kind) {
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.stall").await;
    let (proxy, _) = Proxy::in_front_of(&db.url).await;
    let config = fast_config()
        // The worker keeps its connection (and its lease) while idle.
        .idle_release(Duration::from_secs(60))
        .statement_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .build();
    let (stop, relay) = spawn_relay(Relay::new(proxy.url(&db.url), kit.backend(), config).unwrap());
    let mut conn = db.conn().await;
    kit.write(&mut conn, &[(1, 1), (2, 1)], true).await;
    wait_empty(&db, 30).await;
    let fences: Vec<i64> = conn.leases().await.unwrap().iter().map(|l| l.fence).collect();

    proxy.stall();
    kit.write(&mut conn, &[(1, 2), (2, 2)], true).await;
    wait_empty(&db, 20).await;
    let received = kit.read_all(4, Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    relay.await.unwrap();
    let keys = per_key(&received);
    assert_eq!((keys[&1].clone(), keys[&2].clone()), (vec![1, 2], vec![1, 2]));
    // The partitions were taken up again under new leases.
    let after: Vec<i64> = conn.leases().await.unwrap().iter().map(|l| l.fence).collect();
    assert!(after.iter().zip(&fences).all(|(a, b)| a > b), "{fences:?} → {after:?}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stalled_database_connection_times_out_and_the_relay_goes_on() {
    a_stalled_database_connection_times_out_and_the_relay_goes_on(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_stalled_database_connection_times_out_and_the_relay_goes_on() {
    a_stalled_database_connection_times_out_and_the_relay_goes_on(Kind::Mariadb).await;
}

/// The database accepts TCP connections but never answers: the relay gives up after the connect timeout and
/// says so, instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_fails_the_connect_within_the_connect_timeout() {
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.hole").await;
    let (proxy, _) = Proxy::in_front_of(&db.url).await;
    proxy.black_hole();
    let config = fast_config().connect_timeout(Duration::from_secs(1)).build();
    let relay = Relay::new(proxy.url(&db.url), kit.backend(), config).unwrap();
    let started = Instant::now();
    let result = within(10, relay.run_until(std::future::pending())).await;
    let error = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("did not answer within 1s") && error.contains("connect_timeout"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------------------
// Connection pools.

/// Six partitions and six workers allowed, but a pool of three connections: the relay never holds more than
/// that (plus its LISTEN connection), and still drains everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_relay_keeps_to_its_pool_size() {
    let db = TestDb::new(Kind::Postgres).await;
    let kit = Kit::new("outbox.pool").await;
    let mut conn = db.conn().await;
    for seq in 1..=6 {
        let widgets: Vec<(i64, i64)> = (0..24).map(|k| (k, seq)).collect();
        kit.write(&mut conn, &widgets, true).await;
    }
    let partitions = conn.backlog().await.unwrap().len();
    assert!(partitions >= 4, "rows on {partitions} partitions");
    // Each batch waits a little for the broker, so workers overlap.
    kit.mock.broker_round_trip_time(1, Duration::from_millis(100)).unwrap();
    let config = fast_config()
        .max_workers(6)
        .pool_size(Some(3))
        .batch_size(4)
        .max_in_flight(1)
        .build();
    let (stop, relay) = spawn_relay(kit.relay(&db, config));
    let sql =
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    let mut most = 0;
    within(60, async {
        while common::count(&mut conn, "kafka_messages").await > 0 {
            most = most.max(number(&mut conn, sql).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.send(()).unwrap();
    assert_eq!(relay.await.unwrap().sent, 24 * 6);
    // Three pooled connections and the LISTEN connection (the test's own is not counted).
    assert!(most <= 4, "the relay held {most} connections");
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------------------
// The MySQL lease clock is UTC.

/// Leases taken by sessions in different time zones agree (and with the UTC clock). Where the server knows
/// named time zones, a session in a daylight-saving zone during the hour the clocks go back takes a lease that
/// ends when it should, not an hour early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_leases_agree_across_session_time_zones() {
    let db = TestDb::new(Kind::Mariadb).await;
    let (mut east, mut west) = (db.conn().await, db.conn().await);
    east.execute("SET time_zone = '+05:00'").await.unwrap();
    west.execute("SET time_zone = '-03:00'").await.unwrap();
    let ttl = 60_000;
    assert!(east.acquire("t", 0, "east", ttl).await.unwrap().is_some());
    assert!(west.acquire("t", 1, "west", ttl).await.unwrap().is_some());
    let utc_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    for conn in [&mut east, &mut west] {
        for lease in conn.leases().await.unwrap() {
            let left = lease.expires_in_ms.unwrap();
            assert!(
                (ttl - 5_000..=ttl).contains(&left),
                "{lease:?} seen from another time zone"
            );
        }
        let until = number(conn, "SELECT MIN(lease_until) AS n FROM kafka_topic_info").await;
        assert!(
            (until - utc_ms - ttl).abs() < 5_000,
            "lease_until {until}, UTC now {utc_ms}"
        );
    }

    let named = number(&mut east, "SELECT COUNT(*) AS n FROM mysql.time_zone_name").await > 0;
    if named {
        // 2026-11-01 06:30 UTC is 01:30 in New York, the second time that day.
        let mut dst = db.conn().await;
        dst.execute("SET time_zone = 'America/New_York'").await.unwrap();
        dst.execute("SET timestamp = 1793514600").await.unwrap();
        assert!(dst.acquire("t", 2, "dst", ttl).await.unwrap().is_some());
        let until = number(
            &mut dst,
            "SELECT lease_until AS n FROM kafka_topic_info WHERE `partition` = 2",
        )
        .await;
        assert_eq!(until, 1_793_514_600_000 + ttl, "a lease taken in the repeated hour");
    } else {
        eprintln!("this server has no named time zones: only numeric offsets were checked");
    }
    db.drop_db().await;
}
