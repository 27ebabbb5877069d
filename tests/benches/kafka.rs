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
//! One librdkafka mock cluster (one broker, in process, over TCP on loopback), topics of 6 partitions, values of
//! about 100 bytes (`com.acme.Widget`, framed), keys from the `id` field, `acks=all`, idempotence on,
//! `linger.ms=5` on both sides. Each side runs [`PRODUCE_ROUNDS`] / [`ROUNDS`] times, alternating, on fresh topics and groups; the
//! reported rate is the median.
//!
//! - produce: deimos typed `publish_typed_list` (serde → Avro encoding, key encoding, partitioning, waiting for
//!   every delivery report) against an rdkafka `BaseProducer` sending the same bytes pre-encoded, then flushing;
//! - consume: the deimos `ConsumerRunner` (key and value decoding into a struct, handler dispatch, offset
//!   storing and commits) against a raw rdkafka `StreamConsumer` reading the same topic. Both are timed from
//!   the first message to the last, so the mock's 3 s group-join delay is left out of both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use deimos::avro::SchemaStore;
use deimos::consumer::{ConsumerRunner, Handler, HandlerError, Listener, Message as DeimosMessage};
use deimos::keys::KeyConfig;
use deimos::producer::{KafkaBackend, Producer, ProducerSetup};
use deimos::registry::{MemoryRegistry, SchemaRegistry};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use tokio::sync::Notify;

const MESSAGES: usize = 100_000;
const PARTITIONS: i32 = 6;
/// Rounds of the consume comparison (each joins a fresh group: about 3 s on the mock cluster).
const ROUNDS: usize = 3;
/// Rounds of the produce comparison (short; the deimos side is bimodal on 2 cores, so more rounds steady the median).
const PRODUCE_ROUNDS: usize = 9;

const RAW_PRODUCE: &str = "kafka.produce.raw_msgs_per_s";
const DEIMOS_PRODUCE: &str = "kafka.produce.typed_msgs_per_s";
const RAW_CONSUME: &str = "kafka.consume.raw_msgs_per_s";
const DEIMOS_CONSUME: &str = "kafka.consume.runner_msgs_per_s";

// `com.acme.Widget` (schemas/com/acme/Widget.avsc) as a Rust type, shared with deimos-avro's tests and benchmark.
#[path = "../../crates/deimos-avro/tests/support/widget.rs"]
mod widget;
use widget::{Status, Widget};

fn widgets() -> Vec<Widget> {
    (0..MESSAGES as i64)
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
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
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
            let mut record = BaseRecord::to(topic).key(key.as_slice()).payload(value.as_slice());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            if i % 64 == 0 {
                // Serve delivery reports as they come, as a well-behaved BaseProducer loop does.
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(Duration::from_secs(60))?;
        let secs = started.elapsed().as_secs_f64();
        Ok(messages.len() as f64 / secs)
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

    /// deimos: a ConsumerRunner listener decoding into `Widget`; first message handled to last.
    async fn deimos_consume(&self, topic: &str, group: &str) -> Result<f64> {
        let counter = Arc::new(Counting::default());
        let listener = Listener::builder(topic, group)
            .value_schema("com.acme.Widget")
            .key_config(KeyConfig::field("id"))
            .session_timeout(Duration::from_secs(6))
            .handler(counter.clone())
            .build()?;
        let runner = ConsumerRunner::builder()
            .bootstrap_servers(self.servers())
            .registry(self.registry.clone())
            .schema_store(SchemaStore::new(self.store.root()))
            .listener(listener)
            .build()?;
        let done = counter.done.clone();
        tokio::time::timeout(
            Duration::from_secs(120),
            runner.run_until(async move { done.notified().await }),
        )
        .await
        .context("runner stalled")??;
        let (first, last) = counter.span.lock().unwrap().context("nothing handled")?;
        Ok((MESSAGES - 1) as f64 / (last - first).as_secs_f64())
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_line(metric: &str, value: f64, baseline: Option<&str>) {
    let baseline = baseline.map_or(String::new(), |b| format!(r#","baseline":"{b}""#));
    println!(r#"BENCH {{"metric":"{metric}","value":{value:.0},"unit":"msgs/s"{baseline}}}"#);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let bench = Bench {
        mock: MockCluster::new(1)?,
        registry: Arc::new(MemoryRegistry::new()),
        store: Arc::new(SchemaStore::new(root)),
    };
    let widgets = widgets();

    // The raw side's bytes: exactly what deimos sends for the same widgets.
    let memory = deimos::producer::MemoryBackend::new();
    let setup = ProducerSetup::builder(bench.store.clone(), bench.registry.clone(), memory.clone()).build();
    Producer::builder("BenchProducer")
        .topic("bench.encoded")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await?
        .publish_typed_list(&widgets)
        .await?;
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = memory
        .sent()
        .into_iter()
        .map(|m| (m.encoded_key.unwrap_or_default(), m.encoded_value.unwrap_or_default()))
        .collect();
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

    // One source topic for both consumers, written by deimos.
    bench.deimos_produce("consume.source", &widgets).await?;
    let (mut raw_c, mut deimos_c) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        raw_c.push(bench.raw_consume("consume.source", &format!("raw.{round}")).await?);
        deimos_c.push(
            bench
                .deimos_consume("consume.source", &format!("deimos.{round}"))
                .await?,
        );
        println!(
            "  consume round {round}: raw {:.0}/s, deimos {:.0}/s",
            raw_c[round], deimos_c[round]
        );
    }

    let (rp, dp, rc, dc) = (median(raw_p), median(deimos_p), median(raw_c), median(deimos_c));
    println!();
    println!("| metric                          | msgs/s    | ratio to raw |");
    println!("|---------------------------------|-----------|--------------|");
    println!("| {RAW_PRODUCE:<31} | {rp:>9.0} |              |");
    println!("| {DEIMOS_PRODUCE:<31} | {dp:>9.0} | {:>12.3} |", dp / rp);
    println!("| {RAW_CONSUME:<31} | {rc:>9.0} |              |");
    println!("| {DEIMOS_CONSUME:<31} | {dc:>9.0} | {:>12.3} |", dc / rc);
    bench_line(RAW_PRODUCE, rp, None);
    bench_line(DEIMOS_PRODUCE, dp, Some(RAW_PRODUCE));
    bench_line(RAW_CONSUME, rc, None);
    bench_line(DEIMOS_CONSUME, dc, Some(RAW_CONSUME));
    println!(
        r#"BENCH {{"metric":"kafka.produce.typed_vs_raw_ratio","value":{:.3},"unit":"ratio"}}"#,
        dp / rp
    );
    println!(
        r#"BENCH {{"metric":"kafka.consume.vs_raw_ratio","value":{:.3},"unit":"ratio"}}"#,
        dc / rc
    );
    println!(r#"TARGET {{"metric":"kafka.produce.typed_vs_raw_ratio","op":">=","value":0.9}}"#);
    println!(r#"TARGET {{"metric":"kafka.consume.vs_raw_ratio","op":">=","value":0.8}}"#);
    Ok(())
}
