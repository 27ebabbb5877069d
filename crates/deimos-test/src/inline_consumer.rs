//! [`InlineConsumer`]: reads the last messages of a topic from a real broker, for integration tests (Deimos's
//! `InlineConsumer`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deimos_avro::{AvroSchema, SchemaStore};
use deimos_consumer::{Headers, InlineListener, InlineMessage, InlineOutcome, Listener};
use deimos_keys::{KeyConfig, KeyDecoder, KeySpec};
use deimos_producer::Producer;
use deimos_registry::{SchemaCodec, SchemaRegistry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers as _;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use serde_json::Value as Json;

use crate::error::TestError;

/// How long a read may take by default before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A message read by the [`InlineConsumer`], decoded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReceivedMessage {
    /// The decoded key (`None`: no key), as JSON: a key field's value, a key record, or text.
    pub key: Option<Json>,
    /// The decoded payload (`None`: a tombstone).
    pub payload: Option<Json>,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The Kafka timestamp (ms since the epoch).
    pub timestamp: Option<i64>,
    /// The headers.
    pub headers: Headers,
}

/// Reads the last messages of a topic from a broker, synchronously from the caller's point of view: each
/// call returns once it has them (or fails after its timeout). No consumer group is joined and nothing is
/// committed; every partition is read (Deimos's assumed partition 0 only), and "the last N" are the N
/// newest across partitions by Kafka timestamp (then partition and offset).
///
/// ```
/// use std::sync::Arc;
/// use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
/// use deimos_keys::KeyConfig;
/// use deimos_test::{InlineConsumer, MockKafka};
/// use deimos_registry::MemoryRegistry;
/// use deimos_avro::SchemaStore;
/// use serde_json::json;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
/// let kafka = MockKafka::start()?;
/// kafka.create_topic("gadgets", 3)?;
/// let store = Arc::new(SchemaStore::load_all(schemas)?);
/// let registry = Arc::new(MemoryRegistry::new());
/// let backend = KafkaBackend::builder().bootstrap_servers(kafka.bootstrap_servers()).build()?;
/// let setup = ProducerSetup::builder(Arc::clone(&store), registry.clone(), backend).build();
/// let producer = Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
///     .key_config(KeyConfig::field("id")).build(&setup).await?;
/// for id in 0..5 {
///     producer.publish(json!({"id": id, "region": "eu", "name": format!("g{id}")})).await?;
/// }
///
/// let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
/// let last = inline.messages_for_producer(&producer, 2).await?;
/// assert_eq!(last.len(), 2);
/// assert_eq!(last[1].key, Some(json!(4)));
/// assert_eq!(last[1].payload, Some(json!({"id": 4, "region": "eu", "name": "g4"})));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InlineConsumer {
    bootstrap_servers: String,
    registry: Arc<dyn SchemaRegistry>,
    codec: Arc<SchemaCodec>,
    store: Arc<SchemaStore>,
    settings: BTreeMap<String, String>,
    timeout: Duration,
}

impl std::fmt::Debug for InlineConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineConsumer")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl InlineConsumer {
    /// Reads from `bootstrap_servers`, fetching writer schemas from `registry` and reader schemas from `store`.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        registry: Arc<dyn SchemaRegistry>,
        store: impl Into<Arc<SchemaStore>>,
    ) -> InlineConsumer {
        InlineConsumer {
            bootstrap_servers: bootstrap_servers.into(),
            codec: Arc::new(SchemaCodec::from_arc(Arc::clone(&registry))),
            registry,
            store: store.into(),
            settings: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A librdkafka consumer setting (TLS, SASL, …), passed through.
    #[must_use]
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// How long one read may take before it fails (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The last `n` messages of `topic`, undecoded, oldest first.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
    /// # use deimos_keys::KeyConfig;
    /// # use deimos_test::{InlineConsumer, MockKafka};
    /// # use deimos_registry::MemoryRegistry;
    /// # use deimos_avro::SchemaStore;
    /// # use serde_json::json;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kafka = MockKafka::start()?;
    /// # kafka.create_topic("gadgets", 2)?;
    /// # let store = Arc::new(SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?);
    /// # let registry = Arc::new(MemoryRegistry::new());
    /// # let backend = KafkaBackend::builder().bootstrap_servers(kafka.bootstrap_servers()).build()?;
    /// # let setup = ProducerSetup::builder(Arc::clone(&store), registry.clone(), backend).build();
    /// # let producer = Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id")).build(&setup).await?;
    /// # for id in 0..3 { producer.publish(json!({"id": id, "region": "eu", "name": "g"})).await?; }
    /// # let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
    /// let raw = inline.last_messages("gadgets", 10).await?; // every partition, oldest first
    /// assert_eq!(raw.len(), 3);
    /// assert_eq!(raw[0].value.as_ref().map(|v| v[0]), Some(0)); // the Confluent magic byte
    /// # Ok(())
    /// # }
    /// ```
    pub async fn last_messages(&self, topic: &str, n: usize) -> Result<Vec<InlineMessage>, TestError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set(
                "group.id",
                format!("deimos-test-inline-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true");
        for (k, v) in &self.settings {
            config.set(k, v);
        }
        let topic = topic.to_string();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || read_last(&config, &topic, n, timeout))
            .await
            .map_err(|e| TestError::Kafka {
                topic: String::new(),
                message: format!("the reading task failed: {e}"),
                source: None,
            })?
    }

    /// The last `n` messages of the producer's topic, decoded with its value schema and key config (Deimos's
    /// `get_messages_for(config_class: producer)`).
    pub async fn messages_for_producer(
        &self,
        producer: &Producer,
        n: usize,
    ) -> Result<Vec<ReceivedMessage>, TestError> {
        self.decoded(producer.topic(), producer.schema(), producer.key_spec().clone(), n)
            .await
    }

    /// The last `n` messages of the listener's topic, decoded with its value schema and key config.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
    /// # use deimos_keys::KeyConfig;
    /// # use deimos_test::{InlineConsumer, MockKafka};
    /// # use deimos_registry::MemoryRegistry;
    /// # use deimos_avro::SchemaStore;
    /// # use serde_json::json;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kafka = MockKafka::start()?;
    /// # kafka.create_topic("gadgets", 2)?;
    /// # let store = Arc::new(SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?);
    /// # let registry = Arc::new(MemoryRegistry::new());
    /// # let backend = KafkaBackend::builder().bootstrap_servers(kafka.bootstrap_servers()).build()?;
    /// # let setup = ProducerSetup::builder(Arc::clone(&store), registry.clone(), backend).build();
    /// # let producer = Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id")).build(&setup).await?;
    /// # for id in 0..3 { producer.publish(json!({"id": id, "region": "eu", "name": "g"})).await?; }
    /// # let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
    /// use deimos_consumer::{Handler, HandlerError, Listener, Message, async_trait};
    /// struct Noop;
    /// #[async_trait]
    /// impl Handler for Noop {
    ///     type Payload = serde_json::Value;
    ///     async fn consume(&self, _: Message<serde_json::Value>) -> Result<(), HandlerError> { Ok(()) }
    /// }
    /// let listener = Listener::builder("gadgets", "g").value_schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::field("id")).handler(Noop).build()?;
    /// let last = inline.messages_for_listener(&listener, 1).await?;
    /// assert_eq!(last[0].key, Some(json!(2)));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn messages_for_listener(
        &self,
        listener: &Listener,
        n: usize,
    ) -> Result<Vec<ReceivedMessage>, TestError> {
        let inline = InlineListener::builder(listener, &self.store, Arc::clone(&self.registry)).build()?;
        self.decoded(listener.topic(), inline.value_schema(), inline.key_spec().clone(), n)
            .await
    }

    /// The last `n` messages of `topic`, decoded with the value schema `schema` (a full name) and `key_config`
    /// (Deimos's `get_messages_for(topic:, schema:, namespace:, key_config:)`).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
    /// # use deimos_keys::KeyConfig;
    /// # use deimos_test::{InlineConsumer, MockKafka};
    /// # use deimos_registry::MemoryRegistry;
    /// # use deimos_avro::SchemaStore;
    /// # use serde_json::json;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kafka = MockKafka::start()?;
    /// # kafka.create_topic("gadgets", 2)?;
    /// # let store = Arc::new(SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?);
    /// # let registry = Arc::new(MemoryRegistry::new());
    /// # let backend = KafkaBackend::builder().bootstrap_servers(kafka.bootstrap_servers()).build()?;
    /// # let setup = ProducerSetup::builder(Arc::clone(&store), registry.clone(), backend).build();
    /// # let producer = Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id")).build(&setup).await?;
    /// # for id in 0..3 { producer.publish(json!({"id": id, "region": "eu", "name": "g"})).await?; }
    /// # let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
    /// let last = inline.messages_with("gadgets", "com.acme.keys.Gadget", KeyConfig::field("id"), 2).await?;
    /// assert_eq!(last.iter().map(|m| m.key.clone()).collect::<Vec<_>>(), [Some(json!(1)), Some(json!(2))]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn messages_with(
        &self,
        topic: &str,
        schema: &str,
        key_config: KeyConfig,
        n: usize,
    ) -> Result<Vec<ReceivedMessage>, TestError> {
        let listener_error = |message: String| TestError::Kafka {
            topic: topic.to_string(),
            message,
            source: None,
        };
        let reader = self
            .store
            .get(schema)
            .map_err(|e| listener_error(format!("the value schema `{schema}` could not be loaded: {e}")))?;
        let key_config = match key_config {
            KeyConfig::NotSet => KeyConfig::None,
            other => other,
        };
        let spec = KeySpec::build(key_config, &reader, &self.store)
            .map_err(|e| listener_error(format!("the key config does not fit `{schema}`: {e}")))?;
        self.decoded(topic, &reader, spec, n).await
    }

    /// Runs the listener's handler over the last `n` messages of its topic, under its error policy (retries
    /// at once; see [`InlineListener`]): one outcome per message, or per batch for a batch handler (batches
    /// of one partition, in offset order, at most `max_batch_size` long).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
    /// # use deimos_keys::KeyConfig;
    /// # use deimos_test::{InlineConsumer, MockKafka};
    /// # use deimos_registry::MemoryRegistry;
    /// # use deimos_avro::SchemaStore;
    /// # use serde_json::json;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kafka = MockKafka::start()?;
    /// # kafka.create_topic("gadgets", 2)?;
    /// # let store = Arc::new(SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?);
    /// # let registry = Arc::new(MemoryRegistry::new());
    /// # let backend = KafkaBackend::builder().bootstrap_servers(kafka.bootstrap_servers()).build()?;
    /// # let setup = ProducerSetup::builder(Arc::clone(&store), registry.clone(), backend).build();
    /// # let producer = Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id")).build(&setup).await?;
    /// # for id in 0..3 { producer.publish(json!({"id": id, "region": "eu", "name": "g"})).await?; }
    /// # let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use deimos_consumer::{Handler, HandlerError, Listener, Message, async_trait};
    /// #[derive(Clone, Default)]
    /// struct Count(Arc<AtomicUsize>);
    /// #[async_trait]
    /// impl Handler for Count {
    ///     type Payload = serde_json::Value;
    ///     async fn consume(&self, _: Message<serde_json::Value>) -> Result<(), HandlerError> {
    ///         self.0.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    /// }
    /// let count = Count::default();
    /// let listener = Listener::builder("gadgets", "g").value_schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::field("id")).handler(count.clone()).build()?;
    /// let outcomes = inline.run_listener(&listener, 10).await?;
    /// assert!(outcomes.iter().all(|o| o.is_handled()));
    /// assert_eq!(count.0.load(Ordering::SeqCst), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_listener(&self, listener: &Listener, n: usize) -> Result<Vec<InlineOutcome>, TestError> {
        let inline = InlineListener::builder(listener, &self.store, Arc::clone(&self.registry)).build()?;
        let messages = self.last_messages(listener.topic(), n).await?;
        let mut outcomes = Vec::new();
        if !inline.is_batch() {
            for m in messages {
                outcomes.push(inline.process_message(m).await?);
            }
            return Ok(outcomes);
        }
        let mut by_partition: BTreeMap<i32, Vec<InlineMessage>> = BTreeMap::new();
        for m in messages {
            by_partition.entry(m.partition).or_default().push(m);
        }
        for (_, mut messages) in by_partition {
            messages.sort_by_key(|m| m.offset);
            while !messages.is_empty() {
                let rest = messages.split_off(listener.max_batch_size().min(messages.len()));
                outcomes.push(inline.process_batch(std::mem::replace(&mut messages, rest)).await?);
            }
        }
        Ok(outcomes)
    }

    async fn decoded(
        &self,
        topic: &str,
        reader: &AvroSchema,
        spec: KeySpec,
        n: usize,
    ) -> Result<Vec<ReceivedMessage>, TestError> {
        let keys = KeyDecoder::new(spec);
        let raw = self.last_messages(topic, n).await?;
        let mut out = Vec::with_capacity(raw.len());
        for m in raw {
            let failed = |source: Box<dyn std::error::Error + Send + Sync>| TestError::Decode {
                topic: topic.to_string(),
                partition: m.partition,
                offset: m.offset,
                source,
            };
            let key = keys
                .decode(self.registry.as_ref(), m.key.as_deref())
                .await
                .map_err(|e| failed(Box::new(e)))?;
            let payload = match &m.value {
                None => None,
                Some(bytes) => Some(
                    self.codec
                        .decode_value(bytes, Some(reader))
                        .await
                        .map_err(|e| failed(Box::new(e)))?,
                ),
            };
            out.push(ReceivedMessage {
                key: key.map(deimos_keys::DecodedKey::into_json),
                payload,
                topic: topic.to_string(),
                partition: m.partition,
                offset: m.offset,
                timestamp: m.timestamp,
                headers: m.headers,
            });
        }
        Ok(out)
    }
}

fn read_last(config: &ClientConfig, topic: &str, n: usize, timeout: Duration) -> Result<Vec<InlineMessage>, TestError> {
    let kafka = |message: &str, e: KafkaError| TestError::Kafka {
        topic: topic.to_string(),
        message: message.to_string(),
        source: Some(Box::new(e)),
    };
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| kafka("the consumer could not be created (check the settings)", e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka("no metadata (is the broker reachable at bootstrap.servers?)", e))?;
    let partitions: Vec<i32> = match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => Vec::new(),
    };
    if partitions.is_empty() {
        return Err(TestError::Kafka {
            topic: topic.to_string(),
            message: "the topic does not exist on the broker (create it, or produce to it first)".into(),
            source: None,
        });
    }
    let want = i64::try_from(n).unwrap_or(i64::MAX);
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| kafka(&format!("the watermarks of partition {p} could not be read"), e))?;
        if high > low && n > 0 {
            let start = low.max(high.saturating_sub(want));
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| kafka("bad partition", e))?;
            ends.insert(p, high);
        }
    }
    let mut messages = Vec::new();
    if ends.is_empty() {
        return Ok(messages);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka("the partitions could not be assigned", e))?;
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(TestError::Kafka {
                topic: topic.to_string(),
                message: format!(
                    "timed out after {timeout:?} with partitions {:?} not read to their end ({} messages read)",
                    ends.keys().collect::<Vec<_>>(),
                    messages.len()
                ),
                source: last_error.map(|e: KafkaError| Box::new(e) as _),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let partition = m.partition();
                if ends.get(&partition).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&partition);
                }
                let headers = m.headers().map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect::<Vec<_>>()
                });
                let mut message = InlineMessage::new(m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))
                    .at(partition, m.offset())
                    .headers(Headers::from(headers.unwrap_or_default()));
                message.timestamp = m.timestamp().to_millis();
                messages.push(message);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => last_error = Some(e),
        }
    }
    messages.sort_by_key(|m| (m.timestamp.unwrap_or(i64::MIN), m.partition, m.offset));
    let skip = messages.len().saturating_sub(n);
    Ok(messages.split_off(skip))
}
