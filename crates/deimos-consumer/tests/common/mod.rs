//! Shared test kit: a mock Kafka cluster over TCP, a shared in-memory registry, a producer of encoded
//! messages and collecting handlers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deimos_avro::{AvroSchema, SchemaStore};
use deimos_consumer::{
    Batch, BatchHandler, ConsumerError, ConsumerRunner, ConsumerRunnerBuilder, Handler, HandlerError, KeyConfig,
    Listener, ListenerBuilder, Message, ShutdownHandle,
};
use deimos_keys::{KeyEncoder, KeySpec};
use deimos_registry::{MemoryRegistry, SchemaCodec, SchemaRegistry};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
pub const WIDGET: &str = "com.acme.Widget";

// `com.acme.Status` and `com.acme.Widget` as Rust types, shared with deimos-avro's tests and benchmark.
#[path = "../../../deimos-avro/tests/support/widget.rs"]
mod widget;
#[allow(unused_imports)]
pub use widget::{Status, Widget};

pub fn widget_json(id: i64) -> Json {
    json!({
        "id": id, "message_id": format!("m-{id}"), "name": format!("widget {id}"), "description": "a widget",
        "price": 9.5, "quantity": 3, "status": "ACTIVE", "tags": ["a", "b"], "updated_at": 1_700_000_000_000i64,
        "parent_id": null
    })
}

/// Runs a test body under a deadline, so a hang fails instead of blocking the suite.
pub async fn within<F: std::future::Future<Output = T>, T>(secs: u64, f: F) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"))
}

pub struct Kit {
    pub mock: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
    pub registry: Arc<MemoryRegistry>,
    pub codec: SchemaCodec,
    pub store: SchemaStore,
    pub producer: FutureProducer,
}

impl Kit {
    pub fn new() -> Kit {
        let mock = MockCluster::new(1).expect("mock cluster");
        let bootstrap = mock.bootstrap_servers();
        let registry = Arc::new(MemoryRegistry::new());
        let codec = SchemaCodec::from_arc(registry.clone() as Arc<dyn SchemaRegistry>);
        let store = SchemaStore::load_all(SCHEMAS).expect("schemas");
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "1")
            .create()
            .expect("producer");
        Kit {
            mock,
            bootstrap,
            registry,
            codec,
            store,
            producer,
        }
    }

    pub fn topic(&self, name: &str, partitions: i32) -> String {
        self.mock.create_topic(name, partitions, 1).expect("create topic");
        name.to_string()
    }

    pub fn schema(&self, name: &str) -> AvroSchema {
        self.store.get(name).expect("schema")
    }

    /// A framed value, registered under `<topic>-value`.
    pub async fn value(&self, topic: &str, schema: &str, payload: &Json) -> Vec<u8> {
        self.codec
            .encode_value(&format!("{topic}-value"), &self.schema(schema), payload)
            .await
            .expect("encode value")
    }

    pub async fn widget(&self, topic: &str, id: i64) -> Vec<u8> {
        self.value(topic, WIDGET, &widget_json(id)).await
    }

    /// Key bytes as a Deimos producer with this key config sends them.
    pub async fn key(&self, topic: &str, schema: &str, config: KeyConfig, key: &Json) -> Option<Vec<u8>> {
        let spec = KeySpec::build(config, &self.schema(schema), &self.store).expect("key spec");
        let encoder = KeyEncoder::for_topic(spec, "", topic);
        encoder.prepare(&*self.registry).await.expect("prepare key");
        encoder.encode(Some(key)).expect("encode key")
    }

    pub async fn send(&self, topic: &str, partition: Option<i32>, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.send_with_headers(topic, partition, key, value, &[]).await;
    }

    pub async fn send_with_headers(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k, value: *v });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(h);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    /// A listener with test-friendly timings (mock cluster: short session timeout, quick commits).
    pub fn listener(&self, topic: &str, group: &str) -> ListenerBuilder {
        Listener::builder(topic, group)
            .schema(WIDGET)
            .key_config(KeyConfig::Plain)
            .session_timeout(Duration::from_secs(6))
            .commit_interval(Duration::from_millis(200))
            .max_wait(Duration::from_millis(200))
            .backoff(Duration::from_millis(50), Duration::from_millis(200))
    }

    pub fn runner(&self) -> ConsumerRunnerBuilder {
        ConsumerRunner::builder()
            .bootstrap_servers(&self.bootstrap)
            .registry(self.registry.clone())
            .schema_store(SchemaStore::load_all(SCHEMAS).expect("schemas"))
            .shutdown_timeout(Duration::from_secs(10))
    }

    /// Reads every message of `topic` from the start with a group-less consumer, waiting until `n` arrive.
    pub async fn read_all(&self, topic: &str, n: usize) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("reader-{topic}"))
            .set("session.timeout.ms", "6000")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let meta = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .expect("metadata");
        let partitions = meta.topics()[0].partitions().len();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while out.len() < n && std::time::Instant::now() < deadline {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    out.push(m.detach());
                }
            }
            out
        })
        .await
        .unwrap()
    }
}

/// A running runner.
pub struct Running {
    pub handle: ShutdownHandle,
    pub task: JoinHandle<Result<(), ConsumerError>>,
}

impl Running {
    pub fn start(runner: ConsumerRunner) -> Running {
        let handle = runner.shutdown_handle();
        let task = tokio::spawn(runner.run_until(std::future::pending()));
        Running { handle, task }
    }

    pub async fn stop(self) {
        self.handle.shutdown();
        self.task.await.expect("runner task").expect("runner result");
    }
}

/// A handler that forwards every message to a channel.
pub struct Collect<P>(pub mpsc::UnboundedSender<Message<P>>);

#[async_trait]
impl<P: serde::de::DeserializeOwned + Serialize + Send + Sync + 'static> Handler for Collect<P> {
    type Payload = P;

    async fn consume(&self, message: Message<P>) -> Result<(), HandlerError> {
        let _ = self.0.send(message);
        Ok(())
    }
}

pub fn collect<P>() -> (Collect<P>, mpsc::UnboundedReceiver<Message<P>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collect(tx), rx)
}

/// A batch handler that forwards every batch to a channel.
pub struct CollectBatches<P>(pub mpsc::UnboundedSender<Batch<P>>);

#[async_trait]
impl<P: serde::de::DeserializeOwned + Serialize + Send + Sync + 'static> BatchHandler for CollectBatches<P> {
    type Payload = P;

    async fn consume_batch(&self, batch: Batch<P>) -> Result<(), HandlerError> {
        let _ = self.0.send(batch);
        Ok(())
    }
}

pub fn collect_batches<P>() -> (CollectBatches<P>, mpsc::UnboundedReceiver<Batch<P>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (CollectBatches(tx), rx)
}

/// Receives `n` items, failing after `secs`.
pub async fn take<T>(rx: &mut mpsc::UnboundedReceiver<T>, n: usize, secs: u64) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(x)) => out.push(x),
            Ok(None) => panic!("channel closed after {} of {n} items", out.len()),
            Err(_) => panic!("only {} of {n} items arrived within {secs} s", out.len()),
        }
    }
    out
}

/// Asserts nothing more arrives for `millis`.
pub async fn nothing_more<T: std::fmt::Debug>(rx: &mut mpsc::UnboundedReceiver<T>, millis: u64) {
    if let Ok(Some(x)) = tokio::time::timeout(Duration::from_millis(millis), rx.recv()).await {
        panic!("unexpected extra item: {x:?}");
    }
}

pub fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    use rdkafka::message::{Headers, Message as _};
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}
