//! The whole job of deimos-rs on embedded defaults: rows written with their Kafka messages in one transaction,
//! relayed from the outbox to Kafka, and applied to a second table by a batch record consumer.
//!
//! - a database: a SQLite file in the temp folder, or `--database-url postgres://…` / `mysql://…`;
//! - a schema registry: an embedded Confluent-compatible one, or `--registry <url>`;
//! - Kafka: librdkafka's mock cluster (a real Kafka protocol endpoint on loopback), or `--brokers <host:port>`
//!   (the topic `quickstart.products` must exist there, or topic auto-creation be on).
//!
//! Steps: `ChangeSource` inserts, updates and deletes rows of `quickstart_products`; each change writes a
//! `com.acme.Product` message (key: the `id`) into the outbox in the same transaction. The relay sends the outbox
//! to Kafka per partition, in commit order. A consumer runner with a `BatchRecordConsumer` (exactly-once: the
//! offsets are stored with the rows) applies them to `quickstart_product_copies`. It prints progress while it
//! runs, then a summary (messages, rates, write → applied latency percentiles, the metrics emitted) and checks
//! that both tables hold the same rows.
//!
//! Run it with `cargo run --example quickstart` (`-- --records 20000` for more rows).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use deimos::avro::SchemaStore;
use deimos::consumer::{Batch, BatchHandler, ConsumerRunner, HandlerError, Listener};
use deimos::keys::KeyConfig;
use deimos::outbox::{Conn, Dialect, Outbox, Relay, RelayConfig};
use deimos::producer::{KafkaBackend, Producer, ProducerSetup};
use deimos::records::{
    BatchRecordConsumer, ChangeSource, ColumnType, RecordConnection, RecordConsumer, RecordProducer, RecordTable,
};
use deimos::registry::{CachedRegistry, EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::{Value as Json, json};
use tokio::sync::watch;

const TOPIC: &str = "quickstart.products";
const SOURCE: &str = "quickstart_products";
const COPIES: &str = "quickstart_product_copies";
/// Rows per insert transaction.
const CHUNK: usize = 100;
/// The consumer group.
const GROUP: &str = "quickstart";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn table(name: &str) -> RecordTable {
    RecordTable::new(name)
        .column("id", ColumnType::BigInt)
        .column("sku", ColumnType::Text)
        .column("name", ColumnType::Text)
        .column("price", ColumnType::Double)
        .column("quantity", ColumnType::Integer)
        .column("created_at", ColumnType::Timestamp)
        .column("updated_at", ColumnType::Timestamp)
}

fn ddl(dialect: Dialect, name: &str, generated_id: bool) -> String {
    let (id, ts, double) = match dialect {
        Dialect::Postgres => (
            if generated_id {
                "BIGSERIAL PRIMARY KEY"
            } else {
                "BIGINT PRIMARY KEY"
            },
            "TIMESTAMP",
            "DOUBLE PRECISION",
        ),
        Dialect::Mysql => (
            if generated_id {
                "BIGINT AUTO_INCREMENT PRIMARY KEY"
            } else {
                "BIGINT PRIMARY KEY"
            },
            "DATETIME(6)",
            "DOUBLE",
        ),
        _ => (
            if generated_id {
                "INTEGER PRIMARY KEY AUTOINCREMENT"
            } else {
                "BIGINT PRIMARY KEY"
            },
            "TIMESTAMP",
            "DOUBLE",
        ),
    };
    format!(
        "CREATE TABLE {name} (id {id}, sku VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL, price {double} NOT NULL, \
         quantity INTEGER NOT NULL, created_at {ts} NOT NULL, updated_at {ts} NOT NULL)"
    )
}

/// The batch record consumer, timing each message from its row's `updated_at` to its batch being applied.
struct Timed {
    inner: BatchRecordConsumer,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    written: AtomicU64,
    applied: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[async_trait::async_trait]
impl BatchHandler for Timed {
    type Payload = Json;

    async fn consume_batch(&self, batch: Batch<Json>) -> Result<(), HandlerError> {
        let written: Vec<Option<f64>> = batch
            .payloads
            .iter()
            .map(|p| p.as_ref().and_then(|p| p["updated_at"].as_f64()))
            .collect();
        let n = batch.len() as u64;
        self.inner.consume_batch(batch).await?;
        let now = now_ms();
        if let Ok(mut latencies) = self.stats.latencies_ms.lock() {
            latencies.extend(written.into_iter().flatten().map(|at| now - at));
        }
        self.stats.applied.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
}

/// The SQLite file of a run without `--database-url`, removed (with its `-wal` and `-shm` files) when the run
/// ends, however it ends.
struct TempDatabase(std::path::PathBuf);

impl TempDatabase {
    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        self.remove();
        println!("removed the temporary database {}", self.0.display());
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // Warnings and errors of the crates (a failing handler, a dead letter, a relay retrying) go to stderr;
    // RUST_LOG=info (or debug) shows more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Every metric the crates emit is captured, to be shown in the summary.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().context("installing the metrics recorder")?;
    let records: usize = arg("--records")
        .map_or(Ok(10_000), |n| n.parse())
        .context("--records takes a number")?;

    // Schema registry, Kafka and database: given, or embedded.
    let embedded;
    let registry_url = match arg("--registry") {
        Some(url) => url,
        None => {
            embedded = EmbeddedRegistry::start().await?;
            embedded.url().to_string()
        }
    };
    let registry: Arc<dyn SchemaRegistry> =
        Arc::new(CachedRegistry::new(HttpRegistry::builder(&registry_url).build()?));
    let mock;
    let brokers = match arg("--brokers") {
        Some(b) => b,
        None => {
            mock = deimos::rdkafka::mocking::MockCluster::new(1)?;
            mock.create_topic(TOPIC, 3, 1)?;
            mock.bootstrap_servers()
        }
    };
    let temporary;
    let url = match arg("--database-url") {
        Some(url) => url,
        None => {
            temporary = TempDatabase(std::env::temp_dir().join(format!("deimos-quickstart-{}.db", std::process::id())));
            temporary.remove();
            format!("sqlite://{}", temporary.0.display())
        }
    };
    println!("schema registry  {registry_url}");
    println!("kafka            {brokers}");
    println!("database         {url}");

    // The outbox's and the record layer's tables, then the two tables of the example (made anew each run).
    deimos::outbox::migrate(&url)
        .await
        .context("migrating the outbox tables")?;
    deimos::records::migrate(&url)
        .await
        .context("migrating the record tables")?;
    let mut conn = Conn::connect(&url).await?;
    for (name, generated) in [(SOURCE, true), (COPIES, false)] {
        conn.execute(&format!("DROP TABLE IF EXISTS {name}")).await?;
        conn.execute(&ddl(conn.dialect(), name, generated)).await?;
    }
    // The copies table is new, so the offsets the exactly-once consumer stored with it in an earlier run go too.
    conn.execute(&format!(
        "DELETE FROM deimos_consumer_offsets WHERE group_id = '{GROUP}'"
    ))
    .await?;

    // The producer writes to the outbox; the relay sends through the Kafka backend (partitions from its metadata).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let store = Arc::new(SchemaStore::load_all(&root).with_context(|| format!("loading {}", root.display()))?);
    let kafka = KafkaBackend::builder()
        .bootstrap_servers(&brokers)
        .kafka_setting("linger.ms", "1")
        .build()?;
    let outbox = Outbox::builder().kafka(kafka.clone()).build();
    let setup = ProducerSetup::builder(Arc::clone(&store), Arc::clone(&registry), outbox.clone()).build();
    let producer = Producer::builder("ProductProducer")
        .topic(TOPIC)
        .schema("com.acme.Product")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await?;
    let source = ChangeSource::builder(table(SOURCE), outbox)
        .producer(RecordProducer::builder(producer, table(SOURCE)).build()?)
        .build()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let relay_config = RelayConfig::builder().poll_interval(Duration::from_millis(20)).build();
    let relay = Relay::new(&url, kafka.clone(), relay_config)?;
    let relay_task = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move { relay.run_until(stop).await }
    });

    // The consumer: a batch record consumer into the second table, exactly once.
    let stats = Arc::new(Stats::default());
    let consumer = RecordConsumer::builder(table(COPIES), &store.get("com.acme.Product")?)
        .database_url(&url)
        .exactly_once(true)
        .build_batch()?;
    let listener = Listener::builder(TOPIC, GROUP)
        .schema("com.acme.Product")
        .key_config(KeyConfig::field("id"))
        .batch_handler(Timed {
            inner: consumer,
            stats: Arc::clone(&stats),
        })
        .max_batch_size(500)
        .max_wait(Duration::from_millis(20))
        .session_timeout(Duration::from_secs(6))
        // librdkafka's mock cluster answers a fetch only when `fetch.wait.max.ms` (500 ms) is up, even when data
        // arrives sooner (a real broker answers at once): a short wait keeps the latencies below realistic.
        .kafka_setting("fetch.wait.max.ms", "10")
        .build()?;
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(&brokers)
        .registry(Arc::clone(&registry))
        .schema_store(SchemaStore::new(&root))
        .listener(listener)
        .build()?;
    let runner_task = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move { runner.run_until(stop).await }
    });

    // Progress, once a second: written, still in the outbox, applied.
    let progress = tokio::spawn({
        let (stats, url) = (Arc::clone(&stats), url.clone());
        let mut stop = stop_rx.clone();
        async move {
            let mut conn = Conn::connect(&url).await.ok();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let pending = match conn.as_mut() {
                    Some(c) => c
                        .backlog()
                        .await
                        .map(|b| b.iter().map(|p| p.count).sum::<i64>())
                        .unwrap_or(-1),
                    None => -1,
                };
                println!(
                    "  written {:>7}   in the outbox {:>7}   applied {:>7}",
                    stats.written.load(Ordering::SeqCst),
                    pending,
                    stats.applied.load(Ordering::SeqCst)
                );
            }
        }
    });

    // Warm-up: one row through the whole path, so that the numbers below are not the consumer group's join.
    println!("\nwaiting for the consumer to join its group and apply a first row…");
    let warm_up = source
        .insert(
            &mut conn,
            &json!({"sku": "WARM-UP", "name": "warm-up", "price": 0.0, "quantity": 0}),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.applied.load(Ordering::SeqCst) < 1 {
        if Instant::now() > deadline {
            bail!("the warm-up row was not applied within 60 s; is the consumer reaching {brokers}?");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    source.delete(&mut conn, &warm_up["id"]).await?;
    while stats.applied.load(Ordering::SeqCst) < 2 {
        if Instant::now() > deadline {
            bail!("the warm-up row's deletion was not applied within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stats.applied.store(0, Ordering::SeqCst);
    if let Ok(mut l) = stats.latencies_ms.lock() {
        l.clear();
    }

    println!(
        "\nwriting {records} products in transactions of {CHUNK}, then updating every 10th and deleting every 50th:"
    );
    let started = Instant::now();
    let mut ids = Vec::with_capacity(records);
    for chunk in (0..records).collect::<Vec<_>>().chunks(CHUNK) {
        let rows: Vec<Json> = chunk
            .iter()
            .map(|i| json!({"sku": format!("SKU-{i:06}"), "name": format!("product {i}"), "price": 1.0 + (*i % 100) as f64, "quantity": i % 7}))
            .collect();
        for row in source.insert_all(&mut conn, &rows).await? {
            ids.push(row["id"].clone());
        }
        stats.written.fetch_add(rows.len() as u64, Ordering::SeqCst);
    }
    let (mut updates, mut deletes) = (0u64, 0u64);
    for (i, id) in ids.iter().enumerate() {
        if i % 10 == 0 {
            source.update(&mut conn, id, &json!({"price": 0.5})).await?;
            updates += 1;
            stats.written.fetch_add(1, Ordering::SeqCst);
        }
        if i % 50 == 0 {
            source.delete(&mut conn, id).await?;
            deletes += 1;
            stats.written.fetch_add(1, Ordering::SeqCst);
        }
    }
    let written_in = started.elapsed();
    let expected = stats.written.load(Ordering::SeqCst);

    // Wait until every message is applied (or give up with what is known).
    let deadline = Instant::now() + Duration::from_secs(180);
    while stats.applied.load(Ordering::SeqCst) < expected {
        if Instant::now() > deadline {
            bail!(
                "after 180 s only {} of {expected} messages were applied; is the consumer reaching {brokers}?",
                stats.applied.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end_to_end = started.elapsed();
    let _ = stop_tx.send(true);
    let relayed = relay_task.await?.context("the relay failed")?;
    runner_task.await?.context("the consumer runner failed")?;
    let _ = progress.await;
    kafka.flush(Duration::from_secs(5)).await.ok();

    // Both tables hold the same rows.
    let dialect = conn.dialect();
    let fingerprint = |name: &str| match dialect {
        Dialect::Mysql => {
            format!("SELECT CONCAT(COUNT(*), ' rows, price sum ', COALESCE(SUM(price), 0)) AS j FROM {name}")
        }
        Dialect::Postgres => {
            format!("SELECT COUNT(*)::text || ' rows, price sum ' || COALESCE(SUM(price), 0)::text AS j FROM {name}")
        }
        _ => format!(
            "SELECT CAST(COUNT(*) AS TEXT) || ' rows, price sum ' || CAST(COALESCE(SUM(price), 0) AS TEXT) AS j FROM {name}"
        ),
    };
    let source_rows = conn.texts(&fingerprint(SOURCE), &[]).await?.concat();
    let copied_rows = conn.texts(&fingerprint(COPIES), &[]).await?.concat();

    let latencies = {
        let mut l = stats.latencies_ms.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_by(f64::total_cmp);
        l
    };
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };
    println!("\nsummary");
    println!(
        "  messages      {expected} ({records} inserts, {updates} updates, {deletes} deletes), {} sent by the relay",
        relayed.sent
    );
    println!(
        "  written       {:.2} s, {:.0} msgs/s (rows and their messages in one transaction)",
        written_in.as_secs_f64(),
        expected as f64 / written_in.as_secs_f64()
    );
    println!(
        "  end to end    {:.2} s, {:.0} msgs/s from the first write to the last row applied",
        end_to_end.as_secs_f64(),
        expected as f64 / end_to_end.as_secs_f64()
    );
    println!(
        "  latency       write → applied: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms (the writer does not pace itself, so this includes the backlog it builds)",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!("  {SOURCE:<26} {source_rows}");
    println!("  {COPIES:<26} {copied_rows}");
    println!("  metrics");
    let mut lines: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => Some(format!("    {name:<70} {n}")),
                DebugValue::Histogram(h) if !h.is_empty() => {
                    let mut v: Vec<f64> = h.into_iter().map(|x| x.into_inner()).collect();
                    v.sort_by(f64::total_cmp);
                    Some(format!(
                        "    {name:<70} {} samples, median {:.4}",
                        v.len(),
                        v[v.len() / 2]
                    ))
                }
                _ => None,
            }
        })
        .collect();
    lines.sort();
    for line in lines {
        println!("{line}");
    }
    if source_rows != copied_rows {
        bail!("the tables differ: {SOURCE} has {source_rows}, {COPIES} has {copied_rows}");
    }
    println!("\nevery change reached {COPIES} through the outbox and Kafka; the tables match.");
    Ok(())
}
