//! [`TestKit`]: the in-memory publish backend, an in-memory registry and the schema store, wired in one call.

use std::path::PathBuf;
use std::sync::Arc;

use deimos_avro::SchemaStore;
use deimos_consumer::{ConsumerError, InlineListener, Listener};
use deimos_producer::{BuildError, MemoryBackend, Partitioner, Producer, ProducerBuilder, ProducerSetup, SentMessage};
use deimos_registry::{MemoryRegistry, SchemaRegistry};
use serde_json::Value as Json;

use crate::consume::{self, ConsumeBatch, ConsumeMessage};
use crate::error::TestError;
use crate::sent::SentMessages;

/// Everything a unit test of producers and consumers needs, without Kafka or a registry server: the
/// schemas, a [`MemoryRegistry`], a [`MemoryBackend`] that records what producers send, and a
/// [`ProducerSetup`] over them. Cloning shares all of it.
///
/// ```
/// use deimos_consumer::KeyConfig;
/// use deimos_producer::Producer;
/// use deimos_test::TestKit;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
/// let kit = TestKit::new(schemas)?;
/// let producer = kit
///     .producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget").key_config(KeyConfig::None))
///     .await?;
/// producer.publish(json!({"id": 1, "region": "eu", "name": "g"})).await?;
///
/// assert_eq!(kit.sent_messages().len(), 1);
/// assert_eq!(kit.sent_to("gadgets")[0].payload, Some(json!({"id": 1, "region": "eu", "name": "g"})));
/// kit.clear_sent_messages();
/// assert!(kit.sent_messages().is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TestKit {
    store: Arc<SchemaStore>,
    registry: Arc<MemoryRegistry>,
    backend: MemoryBackend,
    setup: ProducerSetup,
    reraise_errors: bool,
}

/// Configures a [`TestKit`].
#[derive(Debug)]
#[must_use]
pub struct TestKitBuilder {
    schemas: PathBuf,
    topic_prefix: String,
    partitions: i32,
    max_message_bytes: Option<usize>,
    max_batch_size: Option<usize>,
    reraise_errors: bool,
}

impl TestKitBuilder {
    /// The producers' topic prefix (Deimos's `producers.topic_prefix`); sent messages carry the prefixed topic.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// How many partitions the memory backend spreads keyed messages over (default 1), with librdkafka's
    /// default partitioner.
    pub fn partitions(mut self, n: i32) -> Self {
        self.partitions = n.max(1);
        self
    }

    /// Refuse messages larger than this, as a broker's `message.max.bytes` would.
    pub fn max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = Some(limit);
        self
    }

    /// Messages per backend call (default 500, as Deimos).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = Some(n);
        self
    }

    /// Treat every consumer error as fatal in [`consume_message`](TestKit::consume_message) and
    /// [`consume_batch`](TestKit::consume_batch), as Deimos's test setup does (`reraise_errors = true`).
    /// Off by default: each listener's own error policy applies, as in production.
    pub fn reraise_errors(mut self, yes: bool) -> Self {
        self.reraise_errors = yes;
        self
    }

    /// Loads every schema under the folder (errors show now) and wires the kit.
    pub fn build(self) -> Result<TestKit, TestError> {
        let store = SchemaStore::load_all(&self.schemas).map_err(|e| TestError::Schemas {
            path: self.schemas.display().to_string(),
            source: Box::new(e),
        })?;
        let store = Arc::new(store);
        let registry = Arc::new(MemoryRegistry::new());
        let mut backend = MemoryBackend::new().with_partitions(self.partitions, Partitioner::default());
        if let Some(limit) = self.max_message_bytes {
            backend = backend.max_message_bytes(limit);
        }
        let mut setup = ProducerSetup::builder(
            Arc::clone(&store),
            Arc::clone(&registry) as Arc<dyn SchemaRegistry>,
            backend.clone(),
        )
        .topic_prefix(self.topic_prefix);
        if let Some(n) = self.max_batch_size {
            setup = setup.max_batch_size(n);
        }
        Ok(TestKit {
            store,
            registry,
            backend,
            setup: setup.build(),
            reraise_errors: self.reraise_errors,
        })
    }
}

impl TestKit {
    /// A kit over the schemas under `schemas` (loaded and checked now), with defaults.
    pub fn new(schemas: impl Into<PathBuf>) -> Result<TestKit, TestError> {
        TestKit::builder(schemas).build()
    }

    /// A kit over the schemas under `schemas`, configured before it is built.
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    /// let kit = TestKit::builder(schemas).topic_prefix("staging.").partitions(6).max_message_bytes(1_000).build()?;
    /// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "g"})).await?;
    /// let sent = &kit.sent_to("staging.gadgets")[0];
    /// assert_eq!(sent.key, Some(json!(7)));
    /// assert!(sent.partition < 6);
    /// let too_big = producer.publish(json!({"id": 8, "region": "eu", "name": "x".repeat(2_000)})).await;
    /// assert!(too_big.is_err()); // reported with its size and the limit
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(schemas: impl Into<PathBuf>) -> TestKitBuilder {
        TestKitBuilder {
            schemas: schemas.into(),
            topic_prefix: String::new(),
            partitions: 1,
            max_message_bytes: None,
            max_batch_size: None,
            reraise_errors: false,
        }
    }

    /// Builds a declared producer against the kit: its schemas are registered in the kit's registry.
    pub async fn producer(&self, builder: ProducerBuilder) -> Result<Producer, BuildError> {
        builder.build(&self.setup).await
    }

    /// The producer setup (schema store, registry, memory backend), to build producers yourself or to hand
    /// to code under test.
    pub fn setup(&self) -> &ProducerSetup {
        &self.setup
    }

    /// The schema store.
    pub fn store(&self) -> &Arc<SchemaStore> {
        &self.store
    }

    /// The in-memory registry, to inspect subjects and versions.
    pub fn memory_registry(&self) -> &Arc<MemoryRegistry> {
        &self.registry
    }

    /// The registry as the trait object producers and consumers take.
    pub fn registry(&self) -> Arc<dyn SchemaRegistry> {
        Arc::clone(&self.registry) as Arc<dyn SchemaRegistry>
    }

    /// The memory backend.
    pub fn backend(&self) -> &MemoryBackend {
        &self.backend
    }

    /// Every message sent so far, in order (Deimos's `sent_messages`).
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.backend.sent()
    }

    /// The messages sent to `topic` (with the prefix), in order.
    pub fn sent_to(&self, topic: &str) -> Vec<SentMessage> {
        self.backend.sent_to(topic)
    }

    /// Forgets the messages sent so far (Deimos's `clear_kafka_messages!`).
    pub fn clear_sent_messages(&self) {
        self.backend.clear();
    }

    /// Whether errors are made fatal in the consume helpers (see [`TestKitBuilder::reraise_errors`]).
    pub fn reraise_errors(&self) -> bool {
        self.reraise_errors
    }

    /// An [`InlineListener`] for `listener` over the kit's schemas and registry, honouring the kit's
    /// `reraise_errors`.
    pub fn inline_listener(&self, listener: &Listener) -> Result<InlineListener, ConsumerError> {
        InlineListener::builder(listener, &self.store, self.registry())
            .reraise_errors(self.reraise_errors)
            .build()
    }

    /// Consumes one message through `listener`'s handler (Deimos's `test_consume_message`): the payload is
    /// checked against the listener's value schema, encoded and registered like a producer's, decoded by
    /// the consumer's real path, and handled under the listener's error policy and metrics. Await it,
    /// optionally after setting a key, headers, a partition and offset or a timestamp.
    ///
    /// `Json::Null` consumes a tombstone. Without a key, one is made as Deimos does (see
    /// [`ConsumeMessage::key`]).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
    /// use deimos_test::TestKit;
    /// use serde_json::{Value, json};
    ///
    /// #[derive(Clone, Default)]
    /// struct Seen(Arc<Mutex<Vec<(Option<Value>, Option<Value>)>>>);
    ///
    /// #[async_trait]
    /// impl Handler for Seen {
    ///     type Payload = Value;
    ///     async fn consume(&self, m: Message<Value>) -> Result<(), HandlerError> {
    ///         let key = m.metadata.key.and_then(|k| k.as_value().cloned());
    ///         self.0.lock().unwrap().push((key, m.payload));
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let seen = Seen::default();
    /// let listener = Listener::builder("gadgets", "test-group")
    ///     .value_schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::field("id"))
    ///     .handler(seen.clone())
    ///     .build()?;
    ///
    /// kit.consume_message(&listener, json!({"id": 5, "region": "eu", "name": "g"})).await?;
    /// kit.consume_message(&listener, json!({"id": 6, "region": "eu", "name": "h"})).key(6).await?;
    ///
    /// let seen = seen.0.lock().unwrap();
    /// assert_eq!(seen[0], (Some(json!(1)), Some(json!({"id": 5, "region": "eu", "name": "g"})))); // Deimos's default key
    /// assert_eq!(seen[1].0, Some(json!(6)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn consume_message<'a>(&'a self, listener: &'a Listener, payload: Json) -> ConsumeMessage<'a> {
        ConsumeMessage::new(self, listener, payload)
    }

    /// Consumes payloads as one batch through `listener`'s batch handler (Deimos's `test_consume_batch`),
    /// each checked, encoded and decoded as in [`consume_message`](Self::consume_message), at partition 1
    /// and offsets 1, 2, …
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use deimos_consumer::{Batch, BatchHandler, HandlerError, Listener, async_trait};
    /// use deimos_test::TestKit;
    /// use serde_json::{Value, json};
    ///
    /// #[derive(Clone, Default)]
    /// struct Count(Arc<Mutex<usize>>);
    ///
    /// #[async_trait]
    /// impl BatchHandler for Count {
    ///     type Payload = Value;
    ///     async fn consume_batch(&self, batch: Batch<Value>) -> Result<(), HandlerError> {
    ///         *self.0.lock().unwrap() += batch.payloads.len();
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let count = Count::default();
    /// let listener = Listener::builder("gadgets", "g").value_schema("com.acme.keys.Gadget")
    ///     .batch_handler(count.clone()).build()?;
    /// kit.consume_batch(&listener, vec![
    ///     json!({"id": 1, "region": "eu", "name": "a"}),
    ///     Value::Null, // a tombstone
    /// ]).await?;
    /// assert_eq!(*count.0.lock().unwrap(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn consume_batch<'a>(&'a self, listener: &'a Listener, payloads: Vec<Json>) -> ConsumeBatch<'a> {
        ConsumeBatch::new(self, listener, payloads)
    }

    /// Asserts that `payload` is not valid for `listener`'s value schema (Deimos's
    /// `test_consume_invalid_message`), and returns why. Panics if it is valid.
    ///
    /// ```
    /// # use deimos_consumer::{Handler, HandlerError, Listener, Message, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # struct Noop;
    /// # #[async_trait]
    /// # impl Handler for Noop {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, _: Message<Value>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let listener = Listener::builder("gadgets", "g").value_schema("com.acme.keys.Gadget").handler(Noop).build()?;
    /// let why = kit.assert_invalid_payload(&listener, json!({"id": "seven", "region": "eu", "name": "g"}));
    /// assert!(why.contains("id"), "{why}");
    /// let why = kit.assert_invalid_payload(&listener, json!({"id": 7, "region": "eu", "name": "g", "colour": "red"}));
    /// assert!(why.contains("colour"), "{why}");
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    #[allow(clippy::panic)] // an assertion
    pub fn assert_invalid_payload(&self, listener: &Listener, payload: Json) -> String {
        match consume::check_payload(self, listener, &payload) {
            Ok(Err(reason)) => reason,
            Ok(Ok(())) => panic!(
                "expected the payload to be invalid for `{}` (listener for `{}`), but it is valid: {payload}",
                listener.value_schema(),
                listener.topic()
            ),
            Err(error) => panic!("the listener's value schema could not be loaded: {error}"),
        }
    }
}

impl SentMessages for TestKit {
    fn sent_messages(&self) -> Vec<SentMessage> {
        self.backend.sent()
    }
}
