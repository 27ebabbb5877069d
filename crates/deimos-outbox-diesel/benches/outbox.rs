#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! The outbox bench suite, run by `cargo xtask bench outbox` (or `cargo bench -p deimos-outbox-diesel --bench
//! outbox`). PostgreSQL, then MariaDB/MySQL (127.0.0.1, a database of its own on each; `DEIMOS_BENCH_PG`,
//! `DEIMOS_BENCH_MYSQL` name the servers), and the librdkafka mock cluster, `com.acme.Widget` values of about 100
//! bytes keyed by `id`, 6 partitions. The same metrics are measured on both databases, MariaDB's with a `mysql_`
//! prefix after the first dot (`outbox.drain.mysql_rows_per_s`); `DEIMOS_BENCH_DATABASES=mysql` (or `postgres`)
//! runs one of the two.
//!
//! - drain: a backlog of [`BACKLOG`] rows written through the outbox, then one relay process (the
//!   `deimos-outbox relay` binary, defaults) drains it, in order, with `acks=all`; rows per second from its start
//!   to the empty table. The baseline is a bare drain of
//!   the same backlog: `DELETE … WHERE id IN (SELECT id … ORDER BY id LIMIT 1000) RETURNING …` (MariaDB:
//!   `DELETE … ORDER BY id LIMIT 1000 RETURNING …`) repeated on one connection until the table is empty, measured
//!   in the same run (nothing is sent). Each phase starts after `VACUUM ANALYZE` (MariaDB: `ANALYZE TABLE`), as
//!   Deimos's README asks of `kafka_messages` in production.
//! - backlog: the relay process's peak resident memory while it drains that backlog, sampled every 10 ms, next
//!   to its peak while draining a backlog ten times smaller first (it holds at most `max_in_flight` batches
//!   per partition, whatever the backlog). The mock cluster, which keeps what it receives, lives in the bench
//!   process and is not counted.
//! - latency: with a relay (in this process) idle, one message per transaction; commit to the broker's
//!   acknowledgement (seen through the `publish` counter the Kafka backend increments in its delivery callback).
//!   PostgreSQL wakes the relay with NOTIFY; MariaDB has no such thing, so the relay finds the row by polling
//!   (`poll_interval`, 500 ms by default). Each row here is written just after the relay sent the previous one,
//!   so it waits nearly a whole interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_outbox_diesel::{Conn, Dialect, Outbox, Relay, RelayConfig};
use deimos_producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions};
use deimos_registry::{MemoryRegistry, SchemaRegistry};
use diesel::QueryableByName;
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use rdkafka::mocking::MockCluster;
use serde_json::{Value as Json, json};

const BACKLOG: usize = 1_000_000;
fn backlog() -> usize {
    std::env::var("DEIMOS_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BACKLOG)
}
const PARTITIONS: i32 = 6;
const TOPIC: &str = "bench.outbox";
const LATENCY_SAMPLES: usize = 300;
const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

/// Counts acknowledged messages (`publish{status=success}`), remembering when the count last moved.
#[derive(Default)]
struct Acks {
    count: AtomicU64,
    at: Mutex<Option<Instant>>,
}

impl CounterFn for Acks {
    fn increment(&self, value: u64) {
        if let Ok(mut at) = self.at.lock() {
            *at = Some(Instant::now());
        }
        self.count.fetch_add(value, Ordering::Release);
    }

    fn absolute(&self, value: u64) {
        self.count.store(value, Ordering::Release);
    }
}

struct AckRecorder(Arc<Acks>);

impl Recorder for AckRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == deimos_metrics::catalogue::PUBLISH.name {
            Counter::from_arc(self.0.clone())
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

static ACKS: OnceLock<Arc<Acks>> = OnceLock::new();

static ENQ: Mutex<Option<Instant>> = Mutex::new(None);

fn widget(i: i64) -> Json {
    json!({
        "id": i % 10_000, "message_id": format!("6f1c0d3e-8a52-4b7e-9f0a-{i:012x}"), "name": format!("w-{:06}", i % 1_000_000),
        "description": "zinc plated sprocket", "price": 19.99, "quantity": 7, "status": "ACTIVE",
        "tags": ["tools"], "updated_at": 1_764_000_000_000i64, "parent_id": null
    })
}

fn rss_of(pid: u32) -> f64 {
    rss_at(&format!("/proc/{pid}/status"))
}

fn rss_at(path: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Bench {
    url: String,
    outbox: Outbox,
    producer: Producer,
    brokers: String,
}

impl Bench {
    async fn fill(&self, rows: usize) {
        let mut conn = Conn::connect(&self.url).await.unwrap();
        let mut i = 0;
        while i < rows {
            let n = 5_000.min(rows - i);
            let payloads = (i..i + n).map(|j| widget(j as i64)).collect();
            conn.begin().await.unwrap();
            self.outbox
                .publish(&self.producer, &mut conn, payloads, &PublishOptions::new())
                .await
                .unwrap();
            conn.commit().await.unwrap();
            i += n;
        }
    }

    /// VACUUM ANALYZE (MariaDB: ANALYZE TABLE), so each phase starts from the same table state (a drain leaves
    /// a million dead tuples).
    async fn vacuum(&self) {
        let mut conn = Conn::connect(&self.url).await.unwrap();
        let sql = match conn.dialect() {
            Dialect::Postgres => "VACUUM ANALYZE kafka_messages",
            _ => "ANALYZE TABLE kafka_messages",
        };
        conn.execute(sql).await.unwrap();
    }

    fn backend(&self) -> KafkaBackend {
        KafkaBackend::builder()
            .bootstrap_servers(&self.brokers)
            .kafka_setting("linger.ms", "1")
            .build()
            .unwrap()
    }

    fn config() -> RelayConfig {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        let defaults = RelayConfig::default();
        RelayConfig::builder()
            .idle_release(Duration::from_secs(60))
            .batch_size(env("DEIMOS_BENCH_BATCH").unwrap_or(defaults.batch_size()))
            .max_in_flight(env("DEIMOS_BENCH_IN_FLIGHT").unwrap_or(defaults.max_in_flight()))
            .build()
    }

    /// Drains the table with the relay as its own process (the `deimos-outbox` binary, built with this bench), so
    /// its memory is measured apart from the mock cluster's; returns (rows/s, the relay's peak RSS in MB).
    async fn relay_drain(&self, rows: usize) -> (f64, f64) {
        let started = Instant::now();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_deimos-outbox"))
            .args(["--database-url", &self.url, "relay", "--brokers", &self.brokers])
            .args(["--batch-size", &Self::config().batch_size().to_string()])
            .args(["--max-in-flight", &Self::config().max_in_flight().to_string()])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut conn = Conn::connect(&self.url).await.unwrap();
        let mut peak: f64 = 0.0;
        let mut last_check = Instant::now();
        loop {
            peak = peak.max(rss_of(child.id()));
            if last_check.elapsed() >= Duration::from_millis(50) {
                last_check = Instant::now();
                if empty(&mut conn).await {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        // SIGTERM: the relay stops gracefully and prints what it sent.
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("relay stopped: {rows} sent")),
            "the relay sent every row: {text}"
        );
        (rows as f64 / secs, peak)
    }

    /// The baseline: DELETE … RETURNING in id order, 1000 rows at a time, on one connection.
    async fn bare_drain(&self, rows: usize) -> f64 {
        #[derive(QueryableByName)]
        #[allow(dead_code)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
            #[diesel(sql_type = diesel::sql_types::Text)]
            topic: String,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
            message: Option<Vec<u8>>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
            key: Option<Vec<u8>>,
        }
        use diesel_async::RunQueryDsl;
        let mut conn = Conn::connect(&self.url).await.unwrap();
        let started = Instant::now();
        let mut drained = 0;
        loop {
            let got: Vec<Row> =
                match &mut conn {
                    Conn::Pg(pg) => diesel::sql_query(
                        "DELETE FROM kafka_messages WHERE id IN (SELECT id FROM kafka_messages ORDER BY id LIMIT 1000) \
                     RETURNING id, topic, message, key",
                    )
                    .load(pg)
                    .await,
                    Conn::Mysql(my) => {
                        diesel::sql_query(
                            "DELETE FROM kafka_messages ORDER BY id LIMIT 1000 RETURNING id, topic, message, `key`",
                        )
                        .load(my)
                        .await
                    }
                    _ => unreachable!("the bench runs on PostgreSQL and MariaDB"),
                }
                .unwrap();
            if got.is_empty() {
                break;
            }
            drained += got.len();
        }
        assert_eq!(drained, rows);
        rows as f64 / started.elapsed().as_secs_f64()
    }

    /// One message per transaction with the relay idle; commit → acknowledgement, in ms.
    async fn latency(&self) -> Vec<f64> {
        let relay = Relay::new(&self.url, self.backend(), Self::config()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            relay
                .run_until(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap()
        });
        let acks = ACKS.get().unwrap().clone();
        let _sub = deimos_metrics::events::subscribe(deimos_metrics::events::DB_PRODUCER_PRODUCE, |_| {
            *ENQ.lock().unwrap() = Some(Instant::now());
        });
        let mut conn = Conn::connect(&self.url).await.unwrap();
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..LATENCY_SAMPLES + 20 {
            let before = acks.count.load(Ordering::Acquire);
            conn.begin().await.unwrap();
            self.outbox
                .publish(
                    &self.producer,
                    &mut conn,
                    vec![widget(i as i64)],
                    &PublishOptions::new(),
                )
                .await
                .unwrap();
            conn.commit().await.unwrap();
            let committed = Instant::now();
            let deadline = committed + Duration::from_secs(10);
            while acks.count.load(Ordering::Acquire) == before {
                assert!(Instant::now() < deadline, "no acknowledgement within 10 s");
                tokio::task::yield_now().await;
            }
            let acked = acks.at.lock().unwrap().unwrap_or(committed);
            if std::env::var("DEBUG_LAT").is_ok() {
                let enq = *ENQ.lock().unwrap();
                eprintln!(
                    "enqueue after {:?}, ack after {:?}",
                    enq.map(|e| e.saturating_duration_since(committed)),
                    acked.saturating_duration_since(committed)
                );
            }
            if i >= 20 {
                // The first ones warm the connections and the relay's workers.
                samples.push(acked.saturating_duration_since(committed).as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        tx.send(()).unwrap();
        task.await.unwrap();
        samples.sort_by(f64::total_cmp);
        samples
    }
}

async fn empty(conn: &mut Conn) -> bool {
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct One {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        #[allow(dead_code)]
        id: i64,
    }
    let sql = "SELECT id FROM kafka_messages LIMIT 1";
    let rows: Vec<One> = match conn {
        Conn::Pg(pg) => diesel::sql_query(sql).load(pg).await,
        Conn::Mysql(my) => diesel::sql_query(sql).load(my).await,
        _ => unreachable!("the bench runs on PostgreSQL and MariaDB"),
    }
    .unwrap();
    rows.is_empty()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn line(metric: &str, value: f64, unit: &str, baseline: Option<&str>) {
    let baseline = baseline.map_or(String::new(), |b| format!(r#","baseline":"{b}""#));
    println!(r#"BENCH {{"metric":"{metric}","value":{value:.2},"unit":"{unit}"{baseline}}}"#);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let acks = Arc::new(Acks::default());
    ACKS.set(acks.clone()).ok();
    metrics::set_global_recorder(AckRecorder(acks)).unwrap();
    let pg = std::env::var("DEIMOS_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let mysql = std::env::var("DEIMOS_BENCH_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    // `DEIMOS_BENCH_DATABASES=mysql` (or `postgres`) runs one suite only.
    let only = std::env::var("DEIMOS_BENCH_DATABASES").unwrap_or_else(|_| "postgres,mysql".into());
    let mut targets = Vec::new();
    for (database, admin, prefix) in [("postgres", pg, ""), ("mysql", mysql, "mysql_")] {
        if only.split(',').any(|d| d.trim() == database) {
            targets.extend(suite(&admin, prefix).await);
        }
    }
    // Targets last, after every measurement.
    for target in targets {
        println!("{target}");
    }
}

/// The suite on the server at `admin` (a database of its own, dropped after); metrics named with `prefix` after
/// the first dot. Returns its TARGET lines.
async fn suite(admin: &str, prefix: &str) -> Vec<String> {
    let name = format!("deimos_outbox_bench_{}", std::process::id());
    let mut c = Conn::connect(&format!("{admin}/test"))
        .await
        .unwrap_or_else(|e| panic!("the outbox bench needs {admin}: {e}"));
    let database = match c.dialect() {
        Dialect::Postgres => "PostgreSQL",
        _ => "MariaDB",
    };
    c.execute(&format!("DROP DATABASE IF EXISTS {name}")).await.unwrap();
    c.execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("{admin}/{name}");
    deimos_outbox_diesel::migrate(&url).await.unwrap();

    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let outbox = Outbox::builder().partitions(TOPIC, PARTITIONS).build();
    let setup = ProducerSetup::builder(SchemaStore::new(SCHEMAS), registry, outbox.clone()).build();
    let producer = Producer::builder("BenchProducer")
        .topic(TOPIC)
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let bench = Bench {
        url: url.clone(),
        outbox,
        producer,
        brokers: mock.bootstrap_servers(),
    };

    println!(
        "outbox bench: {database} + mock cluster, {} rows backlog, {PARTITIONS} partitions, ~100-byte values",
        backlog()
    );
    // A small backlog first: the peak memory of a drain must not grow with the backlog.
    let small = backlog() / 10;
    bench.fill(small).await;
    bench.vacuum().await;
    let (_, small_peak) = bench.relay_drain(small).await;
    println!("  relay drained {small} rows, relay peak RSS {small_peak:.0} MB");
    let started = Instant::now();
    bench.fill(backlog()).await;
    println!("  wrote {} rows in {:.1} s", backlog(), started.elapsed().as_secs_f64());
    bench.vacuum().await;
    let (relay_rate, peak) = bench.relay_drain(backlog()).await;
    println!("  relay drained at {relay_rate:.0} rows/s, relay peak RSS {peak:.0} MB");

    bench.fill(backlog()).await;
    bench.vacuum().await;
    let bare_rate = bench.bare_drain(backlog()).await;
    println!("  bare DELETE … RETURNING drained at {bare_rate:.0} rows/s");

    bench.vacuum().await;
    let samples = bench.latency().await;
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "  latency over {} messages: p50 {p50:.2} ms, p99 {p99:.2} ms",
        samples.len()
    );

    let m = |metric: &str| {
        let (group, rest) = metric.split_once('.').unwrap_or((metric, ""));
        let (area, what) = rest.split_once('.').unwrap_or((rest, ""));
        format!("{group}.{area}.{prefix}{what}")
    };
    println!();
    println!("| metric ({database})                       | value      | unit   |");
    println!("|---------------------------------------------|------------|--------|");
    for (metric, value, unit) in [
        ("outbox.drain.rows_per_s", relay_rate, "rows/s"),
        ("outbox.drain.baseline_rows_per_s", bare_rate, "rows/s"),
        ("outbox.backlog.peak_rss_mb", peak, "MB"),
        ("outbox.backlog.peak_rss_mb_small", small_peak, "MB"),
        ("outbox.latency.p50_ms", p50, "ms"),
        ("outbox.latency.p99_ms", p99, "ms"),
    ] {
        println!("| {:<43} | {value:>10.2} | {unit:<6} |", m(metric));
    }
    line(
        &m("outbox.drain.rows_per_s"),
        relay_rate,
        "rows/s",
        Some(&m("outbox.drain.baseline_rows_per_s")),
    );
    line(&m("outbox.drain.baseline_rows_per_s"), bare_rate, "rows/s", None);
    line(
        &m("outbox.backlog.peak_rss_mb"),
        peak,
        "MB",
        Some(&m("outbox.backlog.peak_rss_mb_small")),
    );
    line(&m("outbox.backlog.peak_rss_mb_small"), small_peak, "MB", None);
    line(&m("outbox.latency.p50_ms"), p50, "ms", None);
    line(&m("outbox.latency.p99_ms"), p99, "ms", None);
    let drain_target = if prefix.is_empty() { 150_000 } else { 100_000 };
    let mut targets = vec![
        format!(
            r#"TARGET {{"metric":"{}","op":">=","value":{drain_target}}}"#,
            m("outbox.drain.rows_per_s")
        ),
        format!(
            r#"TARGET {{"metric":"{}","op":">=","value":1.2,"of":"ratio"}}"#,
            m("outbox.drain.rows_per_s")
        ),
        // Flat: ten times the backlog, (nearly) the same memory.
        format!(
            r#"TARGET {{"metric":"{}","op":"<=","value":1.25,"of":"ratio"}}"#,
            m("outbox.backlog.peak_rss_mb")
        ),
    ];
    // PostgreSQL wakes the relay at once (NOTIFY); MariaDB's latency is the polling interval's.
    if prefix.is_empty() {
        targets.push(r#"TARGET {"metric":"outbox.latency.p50_ms","op":"<=","value":10}"#.to_string());
    }

    drop(mock);
    if c.dialect() == Dialect::Postgres {
        let _ = c
            .execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .await;
    }
    let _ = c.execute(&format!("DROP DATABASE IF EXISTS {name}")).await;
    targets
}
