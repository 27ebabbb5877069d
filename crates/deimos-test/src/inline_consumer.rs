//! [`InlineConsumer`]: reads the last messages of a topic from a real broker, for integration tests (Deimos's
//! `InlineConsumer`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deimos_avro::{AvroSchema, SchemaStore};
use deimos_consumer::{ConsumerError, Headers, InlineListener, InlineMessage, InlineOutcome, Listener};
use deimos_keys::{KeyConfig, KeyDecoder, KeySpec};
use deimos_producer::Producer;
use deimos_registry::{SchemaCodec, SchemaRegistry};
use serde_json::Value as Json;

use crate::error::TestError;

/// How long a read may take by default before it fails; change it per consumer with
/// [`InlineConsumer::timeout`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use deimos_avro::SchemaStore;
/// use deimos_registry::MemoryRegistry;
/// use deimos_test::{DEFAULT_TIMEOUT, InlineConsumer};
///
/// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
/// assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(30));
/// let store = SchemaStore::load_all(schemas)?;
/// let inline = InlineConsumer::new("127.0.0.1:9092", Arc::new(MemoryRegistry::new()), store)
///     .timeout(DEFAULT_TIMEOUT * 2); // a slow CI broker
/// # drop(inline);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A message read by the [`InlineConsumer`], decoded.
///
/// ```
/// # use std::sync::Arc;
/// # use deimos_producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions};
/// # use deimos_keys::KeyConfig;
/// # use deimos_test::{InlineConsumer, MockKafka};
/// # use deimos_registry::MemoryRegistry;
/// # use deimos_avro::SchemaStore;
/// # use serde_json::json;
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kafka = MockKafka::start()?;
/// # kafka.create_topic("gadgets", 1)?;
/// # let store = Arc::new(SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?);
/// # let registry = Arc::new(MemoryRegistry::new());
/// # let backend = KafkaBackend::builder().bootstrap_servers(kafka.bootstrap_servers()).build()?;
/// # let setup = ProducerSetup::builder(Arc::clone(&store), registry.clone(), backend).build();
/// # let producer = Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
/// #     .key_config(KeyConfig::field("id")).build(&setup).await?;
/// # let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
/// let options = PublishOptions::new().header("source", "billing");
/// producer.publish_list_with(vec![json!({"id": 7, "region": "eu", "name": "g"})], &options).await?;
///
/// let received = inline.messages_for_producer(&producer, 1).await?.remove(0);
/// assert_eq!(received.key, Some(json!(7)));
/// assert_eq!(received.payload, Some(json!({"id": 7, "region": "eu", "name": "g"})));
/// assert_eq!((received.topic.as_str(), received.partition, received.offset), ("gadgets", 0, 0));
/// assert!(received.timestamp.is_some());
/// assert_eq!(received.headers.get_str("source"), Some("billing"));
/// # Ok(())
/// # }
/// ```
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
    /// let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store)
    ///     .kafka_setting("client.id", "inline-reader")
    ///     .kafka_setting("fetch.wait.max.ms", "50");
    /// assert_eq!(inline.last_messages("gadgets", 10).await?.len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn kafka_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// How long one read may take before it fails (default [30 s](DEFAULT_TIMEOUT)).
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
    /// use std::time::Duration;
    ///
    /// let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store).timeout(Duration::from_secs(10));
    /// assert_eq!(inline.last_messages("gadgets", 2).await?.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
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
        deimos_consumer::tail::last_messages(&self.bootstrap_servers, &self.settings, topic, n, self.timeout)
            .await
            .map_err(|e| match e {
                ConsumerError::Read { topic, message, source } => TestError::Kafka { topic, message, source },
                other => TestError::Kafka {
                    topic: topic.to_string(),
                    message: other.to_string(),
                    source: None,
                },
            })
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
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget")
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
        self.decoded(listener.topic(), inline.schema(), inline.key_spec().clone(), n)
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
        if key_config == KeyConfig::NotSet {
            return Err(listener_error(
                "You must specify either a config_class or a schema, namespace and key_config! (Deimos's message.) \
                 In deimos-rs: pass `KeyConfig::Plain` or `KeyConfig::None` to read keys as they are, or use \
                 `messages_for_producer` / `messages_for_listener`"
                    .into(),
            ));
        }
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
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget")
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
