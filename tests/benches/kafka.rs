#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! The Kafka bench suite, run by `cargo xtask bench kafka` (or `cargo bench -p deimos-integration-tests --bench
//! kafka`).
//!
//! One librdkafka mock cluster (one broker, in process, over TCP on loopback), values of about 100 bytes
//! (`com.acme.Widget`, framed), keys from the `id` field (framed Avro `com.acme.Widget_key` records), `acks=all`,
//! idempotence on, `linger.ms=5` on both sides. Each comparison runs [`PRODUCE_ROUNDS`] / [`ROUNDS`] times,
//! alternating its sides, on fresh topics (produce) or fresh groups (consume); the reported figure is the median.
//!
//! - produce: deimos typed `publish_typed_list` (serde → Avro encoding, key encoding, partitioning, waiting for
//!   every delivery report) against an rdkafka `BaseProducer` sending the same bytes pre-encoded, then flushing;
//!   topics of 6 partitions;
//! - consume: the deimos `ConsumerRunner` (key and value decoding into a struct, handler dispatch, offset
//!   storing and commits) against
//!   - a raw rdkafka `StreamConsumer` reading the same topic, decoding nothing (`vs_raw_ratio`), and
//!   - the loop a user writes without deimos-rs (`vs_handwritten_ratio`): the same `StreamConsumer` storing
//!     offsets by hand, which splits the Confluent frame (magic byte, schema id, Avro body) of value and key,
//!     fetches each writer schema once from the registry, decodes both with apache-avro (`from_avro_datum`,
//!     then `from_value` into the serde types) and stores the message's offset.
//!
//!   All are timed from the first message to the last, so the mock's 3 s group-join delay is left out;
//! - I/O-bound handlers: a handler that awaits a 1 ms sleep per message and times each call, on topics of
//!   [`IO_PARTITIONS`] partitions carrying [`IO_KEYS`] distinct keys, run by the `ConsumerRunner` sequentially
//!   (`max_in_flight(1)`), in partition order (`ProcessingOrder::Partition`, the default) and in key order
//!   (`ProcessingOrder::Key`, `max_in_flight(256)`). Each reports its throughput (first message handled to
//!   last), the handler's mean measured latency and the effective concurrency, throughput × mean latency
//!   (Little's law: how many handler calls were in flight on average).
//!
//! Targets: typed produce ≥ 0.9 × raw; runner ≥ 0.5 × raw and ≥ 1.5 × handwritten; effective concurrency
//! ≥ 0.8 × the partition count in partition order and ≥ 0.5 × `max_in_flight` in key order.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use deimos::avro::SchemaStore;
use deimos::consumer::{
    ConsumerRunner, Handler, HandlerError, Listener, ListenerBuilder, Message as DeimosMessage, ProcessingOrder,
};
use deimos::keys::KeyConfig;
use deimos::producer::{KafkaBackend, Producer, ProducerSetup};
use deimos::registry::{MemoryRegistry, SchemaRegistry};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

const MESSAGES: usize = 100_000;
const PARTITIONS: i32 = 6;
/// Rounds of the consume and I/O comparisons (each run joins a fresh group: about 3 s on the mock cluster).
const ROUNDS: usize = 3;
/// Rounds of the produce comparison (short; the deimos side is bimodal on 2 cores, so more rounds steady the median).
const PRODUCE_ROUNDS: usize = 9;

/// Partitions of the I/O topics.
const IO_PARTITIONS: i32 = 12;
/// Distinct keys on the I/O topics: widget `i` has id `i % IO_KEYS`.
const IO_KEYS: usize = 1_000;
/// What the I/O handler waits per message.
const IO_WAIT: Duration = Duration::from_millis(1);
/// The key-order run's bound on handler calls in flight.
const IO_KEY_IN_FLIGHT: usize = 256;

const RAW_PRODUCE: &str = "kafka.produce.raw_msgs_per_s";
const DEIMOS_PRODUCE: &str = "kafka.produce.typed_msgs_per_s";
const RAW_CONSUME: &str = "kafka.consume.raw_msgs_per_s";
const HANDWRITTEN_CONSUME: &str = "kafka.consume.handwritten_msgs_per_s";
const DEIMOS_CONSUME: &str = "kafka.consume.runner_msgs_per_s";

// `com.acme.Widget` (schemas/com/acme/Widget.avsc) as a Rust type, shared with deimos-avro's tests and benchmark.
#[path = "../../crates/deimos-avro/tests/support/widget.rs"]
mod widget;
use widget::{Status, Widget};

/// The key deimos writes for a widget with `KeyConfig::field("id")`: the generated `com.acme.Widget_key`, a
/// record of that one field.
#[derive(Debug, Deserialize)]
struct WidgetKey {
    id: i64,
}

fn widgets(count: usize) -> Vec<Widget> {
    (0..count as i64)
        .map(|i| Widget {
            id: 100_000 + i,
            message_id: format!("6f1c0d3e-8a52-4b7e-9f0a-{:012x}", i),
            name: format!("w-{:06}", i % 1_000_000),
            description: "zinc plated sprocket".into(),
            price: 19.99,
            quantity: 7,
            status: Status::ACTIVE,
            tags: vec!["tools".into()],
            updated_at: 1_764_000_000_000,
            parent_id: None,
        })
        .collect()
}

/// The I/O-bound runs: how the runner schedules the sleeping handler.
#[derive(Debug, Clone, Copy)]
enum IoMode {
    /// One message at a time: `max_in_flight(1)`, default ordering.
    Sequential,
    /// `ProcessingOrder::Partition` (the default) with the default `max_in_flight`: one message in flight per
    /// partition.
    Partition,
    /// `ProcessingOrder::Key` with `max_in_flight(IO_KEY_IN_FLIGHT)`: one message in flight per key.
    Key,
}

impl IoMode {
    const ALL: [IoMode; 3] = [IoMode::Sequential, IoMode::Partition, IoMode::Key];

    fn name(self) -> &'static str {
        match self {
            IoMode::Sequential => "sequential",
            IoMode::Partition => "partition",
            IoMode::Key => "key",
        }
    }

    /// Messages of the run's topic: a few seconds' worth at the concurrency the mode should reach (about 1,000
    /// messages/s per call in flight, less what the runner costs).
    fn messages(self) -> usize {
        match self {
            IoMode::Sequential => 3_000,
            IoMode::Partition => 24_000,
            IoMode::Key => 240_000,
        }
    }

    /// The effective concurrency the mode should reach.
    fn target(self) -> Option<f64> {
        match self {
            IoMode::Sequential => None,
            // 0.8 × IO_PARTITIONS.
            IoMode::Partition => Some(9.6),
            // 0.5 × IO_KEY_IN_FLIGHT.
            IoMode::Key => Some(128.0),
        }
    }

    fn topic(self) -> String {
        format!("io.{}", self.name())
    }

    fn throughput_metric(self) -> String {
        format!("kafka.io.{}_msgs_per_s", self.name())
    }

    fn concurrency_metric(self) -> String {
        format!("kafka.io.{}_concurrency", self.name())
    }

    fn configure(self, listener: ListenerBuilder) -> ListenerBuilder {
        match self {
            IoMode::Sequential => listener.max_in_flight(1),
            IoMode::Partition => listener.ordering(ProcessingOrder::Partition),
            IoMode::Key => listener.ordering(ProcessingOrder::Key).max_in_flight(IO_KEY_IN_FLIGHT),
        }
    }
}

/// One I/O-bound run.
#[derive(Debug, Clone, Copy)]
struct IoRun {
    msgs_per_s: f64,
    /// The handler's mean measured latency, in seconds.
    latency_s: f64,
}

impl IoRun {
    /// Throughput × mean latency: how many handler calls were in flight on average (Little's law).
    fn concurrency(self) -> f64 {
        self.msgs_per_s * self.latency_s
    }
}

struct Bench {
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    registry: Arc<dyn SchemaRegistry>,
    store: Arc<SchemaStore>,
}

impl Bench {
    fn servers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    async fn producer(&self, backend: KafkaBackend, topic: &str) -> Result<Producer> {
        let setup = ProducerSetup::builder(self.store.clone(), self.registry.clone(), backend).build();
        Ok(Producer::builder("BenchProducer")
            .topic(topic)
            .schema("com.acme.Widget")
            .key_config(KeyConfig::field("id"))
            .build(&setup)
            .await?)
    }

    fn backend(&self) -> Result<KafkaBackend> {
        Ok(KafkaBackend::builder().bootstrap_servers(self.servers()).build()?)
    }

    /// The (key, value) bytes deimos sends for `widgets`, from a producer on a memory backend. Its schemas are
    /// registered in the bench's registry, so the ids in the frames resolve for every consumer.
    async fn encode(&self, widgets: &[Widget]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let memory = deimos::producer::MemoryBackend::new();
        let setup = ProducerSetup::builder(self.store.clone(), self.registry.clone(), memory.clone()).build();
        Producer::builder("BenchProducer")
            .topic("bench.encoded")
            .schema("com.acme.Widget")
            .key_config(KeyConfig::field("id"))
            .build(&setup)
            .await?
            .publish_typed_list(widgets)
            .await?;
        Ok(memory
            .sent()
            .into_iter()
            .map(|m| (m.encoded_key.unwrap_or_default(), m.encoded_value.unwrap_or_default()))
            .collect())
    }

    /// A BaseProducer with the same settings as the deimos producer.
    fn raw_producer(&self) -> Result<BaseProducer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()?)
    }

    /// deimos: typed publish of every widget, waiting for every delivery report.
    async fn deimos_produce(&self, topic: &str, widgets: &[Widget]) -> Result<f64> {
        self.mock.create_topic(topic, PARTITIONS, 1)?;
        let producer = self.producer(self.backend()?, topic).await?;
        // Warm up: connection, metadata and the idempotent producer id, as for the raw producer.
        producer.publish_typed(&widgets[0]).await?;
        let started = Instant::now();
        let report = producer.publish_typed_list(widgets).await?;
        let secs = started.elapsed().as_secs_f64();
        ensure!(
            report.delivered().count() == widgets.len(),
            "not every message was delivered"
        );
        Ok(widgets.len() as f64 / secs)
    }

    /// raw: BaseProducer with the same settings, sending pre-encoded keys and values, then flushing.
    fn raw_produce(&self, topic: &str, messages: &[(Vec<u8>, Vec<u8>)]) -> Result<f64> {
        self.mock.create_topic(topic, PARTITIONS, 1)?;
        let producer = self.raw_producer()?;
        // Warm up: connection, metadata and the idempotent producer id.
        producer
            .send(
                BaseRecord::to(topic)
                    .key(messages[0].0.as_slice())
                    .payload(messages[0].1.as_slice()),
            )
            .map_err(|(e, _)| e)?;
        producer.flush(Duration::from_secs(30))?;
        let started = Instant::now();
        for (i, (key, value)) in messages.iter().enumerate() {
            send(
                &producer,
                BaseRecord::to(topic).key(key.as_slice()).payload(value.as_slice()),
            )?;
            if i % 64 == 0 {
                // Serve delivery reports as they come, as a well-behaved BaseProducer loop does.
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(Duration::from_secs(60))?;
        let secs = started.elapsed().as_secs_f64();
        Ok(messages.len() as f64 / secs)
    }

    /// Creates and fills an I/O topic: `count` widgets of [`IO_KEYS`] distinct ids (widget `i` has id
    /// `i % IO_KEYS`), each sent to partition `id % IO_PARTITIONS`. Every partition so holds 83 or 84 keys and
    /// (nearly) as many messages as the others: hashing 1,000 keys onto 12 partitions typically leaves the fullest
    /// a fifth above the mean, and the partition-order run would end with it working alone.
    async fn fill_io_topic(&self, topic: &str, count: usize) -> Result<()> {
        let widgets: Vec<Widget> = widgets(count)
            .into_iter()
            .enumerate()
            .map(|(i, w)| Widget {
                id: (i % IO_KEYS) as i64,
                ..w
            })
            .collect();
        let encoded = self.encode(&widgets).await?;
        self.mock.create_topic(topic, IO_PARTITIONS, 1)?;
        let producer = self.raw_producer()?;
        for (i, (widget, (key, value))) in widgets.iter().zip(&encoded).enumerate() {
            let partition = (widget.id % i64::from(IO_PARTITIONS)) as i32;
            send(
                &producer,
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(key.as_slice())
                    .payload(value.as_slice()),
            )?;
            if i % 64 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(Duration::from_secs(60))?;
        Ok(())
    }

    /// raw: a StreamConsumer in its own group reading the topic from the start; first message to last.
    async fn raw_consume(&self, topic: &str, group: &str) -> Result<f64> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()?;
        consumer.subscribe(&[topic])?;
        let mut first = None;
        let mut bytes = 0usize;
        for _ in 0..MESSAGES {
            let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                .await
                .context("raw consumer stalled")??;
            first.get_or_insert_with(Instant::now);
            bytes += m.payload_len();
        }
        ensure!(bytes > 0);
        let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
        tokio::task::spawn_blocking(move || drop(consumer)).await?;
        Ok((MESSAGES - 1) as f64 / secs)
    }

    /// handwritten: the loop a user writes without deimos-rs. The raw StreamConsumer, storing offsets by hand;
    /// per message it decodes value and key into their serde types with apache-avro (each writer schema fetched
    /// from the registry once) and stores the offset. First message to last.
    async fn handwritten_consume(&self, topic: &str, group: &str) -> Result<f64> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.offset.store", "false")
            .create()?;
        consumer.subscribe(&[topic])?;
        let mut schemas = WriterSchemas::new(self.registry.clone());
        let mut first = None;
        for _ in 0..MESSAGES {
            let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                .await
                .context("handwritten consumer stalled")??;
            first.get_or_insert_with(Instant::now);
            let widget: Widget = schemas
                .decode(m.payload().context("a message without a value")?)
                .await?;
            let key: WidgetKey = schemas.decode(m.key().context("a message without a key")?).await?;
            // The business logic: here, a check that key and value agree.
            ensure!(key.id == widget.id, "key {} on widget {}", key.id, widget.id);
            consumer.store_offset_from_message(&m)?;
        }
        let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
        tokio::task::spawn_blocking(move || drop(consumer)).await?;
        Ok((MESSAGES - 1) as f64 / secs)
    }

    /// deimos: a ConsumerRunner listener decoding into `Widget`; first message handled to last.
    async fn deimos_consume(&self, topic: &str, group: &str) -> Result<f64> {
        let counter = Arc::new(Counting::default());
        let listener = Listener::builder(topic, group)
            .schema("com.acme.Widget")
            .key_config(KeyConfig::field("id"))
            .session_timeout(Duration::from_secs(6))
            .handler(counter.clone())
            .build()?;
        self.run(listener, counter.done.clone()).await?;
        let (first, last) = counter.span.lock().unwrap().context("nothing handled")?;
        Ok((MESSAGES - 1) as f64 / (last - first).as_secs_f64())
    }

    /// deimos: a ConsumerRunner listener scheduled per `mode` whose handler waits [`IO_WAIT`] per message, on
    /// the mode's topic; first message handled to last.
    async fn io_consume(&self, mode: IoMode, group: &str) -> Result<IoRun> {
        let messages = mode.messages();
        let sleeper = Arc::new(Sleeping::new(messages));
        let listener = mode
            .configure(
                Listener::builder(mode.topic(), group)
                    .schema("com.acme.Widget")
                    .key_config(KeyConfig::field("id"))
                    .session_timeout(Duration::from_secs(6)),
            )
            .handler(sleeper.clone())
            .build()?;
        self.run(listener, sleeper.done.clone()).await?;
        let (first, last) = sleeper.first.get().zip(sleeper.last.get()).context("nothing handled")?;
        let handled = sleeper.handled.load(Ordering::Relaxed);
        let latency_ns = sleeper.latency_ns.load(Ordering::Relaxed);
        Ok(IoRun {
            msgs_per_s: (messages - 1) as f64 / (*last - *first).as_secs_f64(),
            latency_s: latency_ns as f64 / handled as f64 / 1e9,
        })
    }

    /// Runs a ConsumerRunner with the one listener until its handler says it is done.
    async fn run(&self, listener: Listener, done: Arc<Notify>) -> Result<()> {
        let runner = ConsumerRunner::builder()
            .bootstrap_servers(self.servers())
            .registry(self.registry.clone())
            .schema_store(SchemaStore::new(self.store.root()))
            .listener(listener)
            .build()?;
        tokio::time::timeout(
            Duration::from_secs(120),
            runner.run_until(async move { done.notified().await }),
        )
        .await
        .context("runner stalled")??;
        Ok(())
    }
}

/// Sends a record, serving delivery reports while librdkafka's queue is full.
fn send(producer: &BaseProducer, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// The handwritten consumer's decoding: Confluent frames, writer schemas fetched from the registry once per id
/// and parsed with apache-avro, datums read with apache-avro into serde types.
struct WriterSchemas {
    registry: Arc<dyn SchemaRegistry>,
    by_id: HashMap<u32, apache_avro::Schema>,
}

impl WriterSchemas {
    fn new(registry: Arc<dyn SchemaRegistry>) -> WriterSchemas {
        WriterSchemas {
            registry,
            by_id: HashMap::new(),
        }
    }

    /// The writer schema with this id, from the registry the first time (as its JSON text, as an HTTP registry
    /// gives it).
    async fn get(&mut self, id: u32) -> Result<&apache_avro::Schema> {
        let schema: &apache_avro::Schema = match self.by_id.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let fetched = self.registry.schema_by_id(id).await?;
                new.insert(apache_avro::Schema::parse_str(fetched.canonical_json())?)
            }
        };
        Ok(schema)
    }

    /// Decodes a framed datum: magic byte 0, the writer schema id (4 bytes, big-endian), the Avro body.
    async fn decode<T: DeserializeOwned>(&mut self, framed: &[u8]) -> Result<T> {
        let [0, a, b, c, d, body @ ..] = framed else {
            bail!("not a Confluent-framed Avro datum");
        };
        let schema = self.get(u32::from_be_bytes([*a, *b, *c, *d])).await?;
        let mut body = body;
        // Deprecated in apache-avro 0.22 for `GenericDatumReader` (which it builds on every call); kept as the
        // call most code written against apache-avro makes.
        #[allow(deprecated)]
        let value = apache_avro::from_avro_datum(schema, &mut body, None)?;
        Ok(apache_avro::from_value(&value)?)
    }
}

#[derive(Default)]
struct Counting {
    seen: AtomicUsize,
    span: Mutex<Option<(Instant, Instant)>>,
    done: Arc<Notify>,
}

#[async_trait]
impl Handler for Counting {
    type Payload = Widget;

    async fn consume(&self, message: DeimosMessage<Widget>) -> Result<(), HandlerError> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            let now = Instant::now();
            *self.span.lock().unwrap() = Some((now, now));
        }
        if message.payload.is_none() {
            return Err("a widget without a payload".into());
        }
        if n == MESSAGES {
            if let Some((_, last)) = self.span.lock().unwrap().as_mut() {
                *last = Instant::now();
            }
            self.done.notify_one();
        }
        Ok(())
    }
}

/// An I/O-bound handler: waits [`IO_WAIT`] per message and measures each call (before and after the wait).
/// Done after `expected` messages.
struct Sleeping {
    expected: usize,
    /// Calls finished; also the count of `latency_ns`.
    handled: AtomicUsize,
    /// The calls' measured latencies, summed.
    latency_ns: AtomicU64,
    /// When the first call finished.
    first: OnceLock<Instant>,
    /// When the `expected`th call finished.
    last: OnceLock<Instant>,
    done: Arc<Notify>,
}

impl Sleeping {
    fn new(expected: usize) -> Sleeping {
        Sleeping {
            expected,
            handled: AtomicUsize::new(0),
            latency_ns: AtomicU64::new(0),
            first: OnceLock::new(),
            last: OnceLock::new(),
            done: Arc::new(Notify::new()),
        }
    }
}

#[async_trait]
impl Handler for Sleeping {
    type Payload = Widget;

    async fn consume(&self, message: DeimosMessage<Widget>) -> Result<(), HandlerError> {
        if message.payload.is_none() {
            return Err("a widget without a payload".into());
        }
        let started = Instant::now();
        tokio::time::sleep(IO_WAIT).await;
        let finished = Instant::now();
        let latency = u64::try_from((finished - started).as_nanos()).unwrap_or(u64::MAX);
        self.latency_ns.fetch_add(latency, Ordering::Relaxed);
        // Set before this call is counted, so it is set when the last one is.
        self.first.get_or_init(|| finished);
        let n = self.handled.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.expected {
            let _ = self.last.set(finished);
            self.done.notify_one();
        }
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_line(metric: &str, value: f64, baseline: Option<&str>) {
    let baseline = baseline.map_or(String::new(), |b| format!(r#","baseline":"{b}""#));
    println!(r#"BENCH {{"metric":"{metric}","value":{value:.0},"unit":"msgs/s"{baseline}}}"#);
}

/// A `BENCH` line for a ratio (`unit` "ratio") or a multiple (`unit` "x").
fn bench_ratio(metric: &str, value: f64, unit: &str) {
    println!(r#"BENCH {{"metric":"{metric}","value":{value:.3},"unit":"{unit}"}}"#);
}

/// A `TARGET` line: the metric's value must be at least `value`.
fn target_at_least(metric: &str, value: f64) {
    println!(r#"TARGET {{"metric":"{metric}","op":">=","value":{value}}}"#);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let bench = Bench {
        mock: MockCluster::new(1)?,
        registry: Arc::new(MemoryRegistry::new()),
        store: Arc::new(SchemaStore::new(root)),
    };
    let widgets = widgets(MESSAGES);

    // The raw side's bytes: exactly what deimos sends for the same widgets.
    let encoded = bench.encode(&widgets).await?;
    let value_len = encoded.iter().map(|(_, v)| v.len()).sum::<usize>() / encoded.len();
    println!(
        "kafka bench: {MESSAGES} messages, values of {value_len} bytes (framed Avro), {PARTITIONS} partitions, acks=all"
    );

    let (mut raw_p, mut deimos_p) = (Vec::new(), Vec::new());
    for round in 0..PRODUCE_ROUNDS {
        raw_p.push(bench.raw_produce(&format!("raw.produce.{round}"), &encoded)?);
        deimos_p.push(
            bench
                .deimos_produce(&format!("deimos.produce.{round}"), &widgets)
                .await?,
        );
        println!(
            "  produce round {round}: raw {:.0}/s, deimos {:.0}/s",
            raw_p[round], deimos_p[round]
        );
    }

    // One source topic for the three consumers, written by deimos.
    bench.deimos_produce("consume.source", &widgets).await?;
    let (mut raw_c, mut hand_c, mut deimos_c) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        raw_c.push(bench.raw_consume("consume.source", &format!("raw.{round}")).await?);
        hand_c.push(
            bench
                .handwritten_consume("consume.source", &format!("handwritten.{round}"))
                .await?,
        );
        deimos_c.push(
            bench
                .deimos_consume("consume.source", &format!("deimos.{round}"))
                .await?,
        );
        println!(
            "  consume round {round}: raw {:.0}/s, handwritten {:.0}/s, deimos {:.0}/s",
            raw_c[round], hand_c[round], deimos_c[round]
        );
    }

    // I/O-bound handlers: one topic per mode, a fresh group per run.
    for mode in IoMode::ALL {
        bench.fill_io_topic(&mode.topic(), mode.messages()).await?;
    }
    println!(
        "kafka bench, I/O-bound: a {} ms wait per message, {IO_PARTITIONS} partitions, {IO_KEYS} keys",
        IO_WAIT.as_millis()
    );
    let mut io_runs: Vec<Vec<IoRun>> = vec![Vec::new(); IoMode::ALL.len()];
    for round in 0..ROUNDS {
        let mut line = format!("  io round {round}:");
        for (mode, runs) in IoMode::ALL.into_iter().zip(&mut io_runs) {
            let run = bench.io_consume(mode, &format!("io.{}.{round}", mode.name())).await?;
            line += &format!(
                " {} {:.0}/s ({:.2} ms, {:.1}x);",
                mode.name(),
                run.msgs_per_s,
                run.latency_s * 1e3,
                run.concurrency()
            );
            runs.push(run);
        }
        println!("{}", line.trim_end_matches(';'));
    }

    let (rp, dp) = (median(raw_p), median(deimos_p));
    let (rc, hc, dc) = (median(raw_c), median(hand_c), median(deimos_c));
    println!();
    println!("| metric                               | msgs/s    | ratio to raw |");
    println!("|--------------------------------------|-----------|--------------|");
    println!("| {RAW_PRODUCE:<36} | {rp:>9.0} |              |");
    println!("| {DEIMOS_PRODUCE:<36} | {dp:>9.0} | {:>12.3} |", dp / rp);
    println!("| {RAW_CONSUME:<36} | {rc:>9.0} |              |");
    println!("| {HANDWRITTEN_CONSUME:<36} | {hc:>9.0} | {:>12.3} |", hc / rc);
    println!("| {DEIMOS_CONSUME:<36} | {dc:>9.0} | {:>12.3} |", dc / rc);
    println!();
    println!("runner / handwritten: {:.3}", dc / hc);

    // Medians per mode, each of its own rounds.
    let io: Vec<(IoMode, IoRun, f64)> = IoMode::ALL
        .into_iter()
        .zip(io_runs)
        .map(|(mode, runs)| {
            let concurrency = median(runs.iter().map(|r| r.concurrency()).collect());
            let run = IoRun {
                msgs_per_s: median(runs.iter().map(|r| r.msgs_per_s).collect()),
                latency_s: median(runs.iter().map(|r| r.latency_s).collect()),
            };
            (mode, run, concurrency)
        })
        .collect();
    println!();
    println!("| I/O-bound mode | msgs/s    | mean latency (ms) | effective concurrency | target  |");
    println!("|----------------|-----------|-------------------|-----------------------|---------|");
    for (mode, run, concurrency) in &io {
        let target = mode.target().map_or(String::new(), |t| format!(">= {t}"));
        println!(
            "| {:<14} | {:>9.0} | {:>17.3} | {:>21.2} | {target:<7} |",
            mode.name(),
            run.msgs_per_s,
            run.latency_s * 1e3,
            concurrency
        );
    }

    bench_line(RAW_PRODUCE, rp, None);
    bench_line(DEIMOS_PRODUCE, dp, Some(RAW_PRODUCE));
    bench_line(RAW_CONSUME, rc, None);
    bench_line(HANDWRITTEN_CONSUME, hc, Some(RAW_CONSUME));
    bench_line(DEIMOS_CONSUME, dc, Some(RAW_CONSUME));
    bench_ratio("kafka.produce.typed_vs_raw_ratio", dp / rp, "ratio");
    bench_ratio("kafka.consume.vs_raw_ratio", dc / rc, "ratio");
    bench_ratio("kafka.consume.vs_handwritten_ratio", dc / hc, "ratio");
    let sequential = IoMode::Sequential.throughput_metric();
    for (mode, run, concurrency) in &io {
        let baseline = match mode {
            IoMode::Sequential => None,
            _ => Some(sequential.as_str()),
        };
        bench_line(&mode.throughput_metric(), run.msgs_per_s, baseline);
        bench_ratio(&mode.concurrency_metric(), *concurrency, "x");
    }
    target_at_least("kafka.produce.typed_vs_raw_ratio", 0.9);
    target_at_least("kafka.consume.vs_raw_ratio", 0.5);
    target_at_least("kafka.consume.vs_handwritten_ratio", 1.5);
    for mode in IoMode::ALL {
        if let Some(target) = mode.target() {
            target_at_least(&mode.concurrency_metric(), target);
        }
    }
    Ok(())
}
