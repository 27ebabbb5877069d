//! [`TestKit`]: the in-memory publish backend, an in-memory registry and the schema store, wired in one call.

use std::path::PathBuf;
use std::sync::Arc;

use deimos_avro::SchemaStore;
use deimos_consumer::{ConsumerError, ErrorContext, HandlerError, InlineListener, Listener};
use deimos_producer::{BuildError, MemoryBackend, Partitioner, Producer, ProducerBuilder, ProducerSetup, SentMessage};
use deimos_registry::{CompatibilityLevel, MemoryRegistry, SchemaRegistry};
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
    fatal_error: Option<FatalError>,
}

/// The consumer runner's global `fatal_error` predicate, shared by the kit's clones.
#[derive(Clone)]
struct FatalError(Arc<FatalPredicate>);

type FatalPredicate = dyn Fn(&HandlerError, &ErrorContext) -> bool + Send + Sync;

impl std::fmt::Debug for FatalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FatalError(..)")
    }
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
    fatal_error: Option<FatalError>,
    compatibility: Option<CompatibilityLevel>,
}

impl TestKitBuilder {
    /// The in-memory registry's global compatibility level (default `BACKWARD`, as Confluent's); `NONE` lets
    /// producers with unrelated schemas share a topic.
    ///
    /// ```
    /// use deimos_registry::CompatibilityLevel;
    /// use deimos_test::TestKit;
    ///
    /// let kit = TestKit::builder(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
    ///     .compatibility(CompatibilityLevel::None)
    ///     .build()?;
    /// assert_eq!(kit.memory_registry().global_compatibility_level(), CompatibilityLevel::None);
    /// # Ok::<(), deimos_test::TestError>(())
    /// ```
    pub fn compatibility(mut self, level: CompatibilityLevel) -> Self {
        self.compatibility = Some(level);
        self
    }

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

    /// Messages per backend call (default 500, as Deimos). A publish call hands its messages to the backend
    /// in groups of this size; a message that does not encode fails its group and the ones after it, while
    /// earlier groups were already sent.
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    /// let kit = TestKit::builder(schemas).max_batch_size(2).build()?;
    /// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::None)).await?;
    /// let gadget = |id: i64| json!({"id": id, "region": "eu", "name": "g"});
    /// let no_name = json!({"id": 3, "region": "eu"});
    /// let err = producer.publish_list(vec![gadget(1), gadget(2), no_name]).await.unwrap_err();
    /// assert_eq!(err.sent(), 2); // the first group of two went out before the third message failed
    /// assert_eq!(kit.sent_messages().len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = Some(n);
        self
    }

    /// Treat every consumer error as fatal in [`consume_message`](TestKit::consume_message) and
    /// [`consume_batch`](TestKit::consume_batch), as Deimos's test setup does (`reraise_errors = true`).
    /// Off by default: each listener's own error policy applies, as in production.
    ///
    /// ```
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
    /// # use deimos_test::{ConsumeError, TestKit};
    /// # use serde_json::{Value, json};
    /// # struct Failing;
    /// # #[async_trait]
    /// # impl Handler for Failing {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, _: Message<Value>) -> Result<(), HandlerError> { Err("boom".into()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    /// // A listener that swallows errors (the default policy), with a handler that always fails.
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(Failing).build()?;
    /// let gadget = json!({"id": 1, "region": "eu", "name": "g"});
    ///
    /// let kit = TestKit::new(schemas)?;
    /// let err = kit.consume_message(&listener, gadget.clone()).await.unwrap_err();
    /// assert!(matches!(err, ConsumeError::Skipped { fatal: false, .. })); // swallowed, as in production
    ///
    /// let strict = TestKit::builder(schemas).reraise_errors(true).build()?;
    /// let err = strict.consume_message(&listener, gadget).await.unwrap_err();
    /// assert!(matches!(err, ConsumeError::Raised { .. })); // fatal, handed back
    /// # Ok(())
    /// # }
    /// ```
    pub fn reraise_errors(mut self, yes: bool) -> Self {
        self.reraise_errors = yes;
        self
    }

    /// Deimos's global `fatal_error` predicate, as given to the consumer runner with
    /// [`ConsumerRunnerBuilder::fatal_error`](deimos_consumer::ConsumerRunnerBuilder::fatal_error): in
    /// [`consume_message`](TestKit::consume_message) and [`consume_batch`](TestKit::consume_batch), an error
    /// for which it returns `true` is fatal whatever the listener's error policy, so it is retried up to the
    /// listener's `max_attempts`, or, without `max_attempts`, handed back as
    /// [`ConsumeError::Raised`](crate::ConsumeError::Raised) (the runner would retry it forever). Give it the
    /// service's own predicate so the test sees what production does. Not set by default.
    ///
    /// ```
    /// use deimos_consumer::{ErrorStage, Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
    /// use deimos_test::{ConsumeError, TestKit};
    /// use serde_json::{Value, json};
    ///
    /// struct Flaky;
    ///
    /// #[async_trait]
    /// impl Handler for Flaky {
    ///     type Payload = Value;
    ///     async fn consume(&self, _: Message<Value>) -> Result<(), HandlerError> {
    ///         Err("the database timed out".into())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    /// let kit = TestKit::builder(schemas)
    ///     .fatal_error(|error, context| {
    ///         context.stage == ErrorStage::Handler && error.to_string().contains("timed out")
    ///     })
    ///     .build()?;
    /// // The listener swallows errors (its default policy), but the predicate makes this one fatal.
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(Flaky).build()?;
    /// let err = kit.consume_message(&listener, json!({"id": 1, "region": "eu", "name": "g"})).await.unwrap_err();
    /// assert!(matches!(err, ConsumeError::Raised { attempts: 1, .. }), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn fatal_error<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&HandlerError, &ErrorContext) -> bool + Send + Sync + 'static,
    {
        self.fatal_error = Some(FatalError(Arc::new(predicate)));
        self
    }

    /// Loads every schema under the folder (errors show now) and wires the kit.
    pub fn build(self) -> Result<TestKit, TestError> {
        let store = SchemaStore::load_all(&self.schemas).map_err(|e| TestError::Schemas {
            path: self.schemas.display().to_string(),
            source: Box::new(e),
        })?;
        let store = Arc::new(store);
        let mut registry = MemoryRegistry::new();
        if let Some(level) = self.compatibility {
            registry = registry.with_compatibility_level(level);
        }
        let registry = Arc::new(registry);
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
            fatal_error: self.fatal_error,
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
            fatal_error: None,
            compatibility: None,
        }
    }

    /// Builds a declared producer against the kit: its schemas are registered in the kit's registry.
    pub async fn producer(&self, builder: ProducerBuilder) -> Result<Producer, BuildError> {
        builder.build(&self.setup).await
    }

    /// The producer setup (schema store, registry, memory backend), to build producers yourself or to hand
    /// to code under test.
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let producer = Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::None).build(kit.setup()).await?;
    /// producer.publish(json!({"id": 1, "region": "eu", "name": "g"})).await?;
    /// assert_eq!(kit.sent_to("gadgets").len(), 1); // recorded by the kit's backend
    /// assert_eq!(kit.setup().topic_prefix(), "");
    /// # Ok(())
    /// # }
    /// ```
    pub fn setup(&self) -> &ProducerSetup {
        &self.setup
    }

    /// The schema store.
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let gadget = kit.store().get("com.acme.keys.Gadget")?;
    /// assert!(gadget.has_field("region"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn store(&self) -> &Arc<SchemaStore> {
        &self.store
    }

    /// The in-memory registry, to inspect subjects and versions.
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// use deimos_registry::SchemaRegistry;
    ///
    /// kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::None)).await?; // registers the value schema, as the preflight does
    /// let subjects = SchemaRegistry::subjects(kit.memory_registry().as_ref()).await?;
    /// assert!(subjects.contains(&"gadgets-value".to_string()), "{subjects:?}");
    /// assert_eq!(SchemaRegistry::versions(kit.memory_registry().as_ref(), "gadgets-value").await?, [1u32]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn memory_registry(&self) -> &Arc<MemoryRegistry> {
        &self.registry
    }

    /// The registry as the trait object producers and consumers take.
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// use std::sync::Arc;
    /// use deimos_registry::SchemaRegistry;
    ///
    /// let registry: Arc<dyn SchemaRegistry> = kit.registry(); // hand it to the code under test
    /// let id = registry.register("gadgets-value", &kit.store().get("com.acme.keys.Gadget")?).await?;
    /// assert!(registry.schema_by_id(id).await?.has_field("name"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn registry(&self) -> Arc<dyn SchemaRegistry> {
        Arc::clone(&self.registry) as Arc<dyn SchemaRegistry>
    }

    /// The memory backend. It shares its record with the kit: clone it for code that takes a backend.
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let backend = kit.backend().clone();
    /// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::None)).await?;
    /// producer.publish(json!({"id": 1, "region": "eu", "name": "g"})).await?;
    /// assert_eq!(backend.sent_to("gadgets")[0].offset, 0);
    /// backend.clear();
    /// assert!(kit.sent_messages().is_empty());
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```
    /// # use deimos_test::TestKit;
    /// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    /// assert!(!TestKit::new(schemas)?.reraise_errors());
    /// assert!(TestKit::builder(schemas).reraise_errors(true).build()?.reraise_errors());
    /// # Ok::<(), deimos_test::TestError>(())
    /// ```
    pub fn reraise_errors(&self) -> bool {
        self.reraise_errors
    }

    /// An [`InlineListener`] for `listener` over the kit's schemas and registry, honouring the kit's
    /// [`reraise_errors`](TestKitBuilder::reraise_errors) and [`fatal_error`](TestKitBuilder::fatal_error):
    /// what the consume helpers run messages through, for messages encoded by hand.
    ///
    /// ```
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
    /// # use deimos_test::{InlineMessage, TestKit};
    /// # use serde_json::{Value, json};
    /// # struct Noop;
    /// # #[async_trait]
    /// # impl Handler for Noop {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, _: Message<Value>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::None).handler(Noop).build()?;
    /// let inline = kit.inline_listener(&listener)?;
    /// assert_eq!(inline.topic(), "gadgets");
    ///
    /// let gadget = json!({"id": 1, "region": "eu", "name": "g"});
    /// let value = kit.setup().codec().encode_value("gadgets-value", inline.schema(), &gadget).await?;
    /// let outcome = inline.process_message(InlineMessage::new(None, Some(value))).await?;
    /// assert!(outcome.is_handled());
    /// # Ok(())
    /// # }
    /// ```
    pub fn inline_listener(&self, listener: &Listener) -> Result<InlineListener, ConsumerError> {
        let mut builder =
            InlineListener::builder(listener, &self.store, self.registry()).reraise_errors(self.reraise_errors);
        if let Some(FatalError(predicate)) = &self.fatal_error {
            let predicate = Arc::clone(predicate);
            builder =
                builder.fatal_error(move |error: &HandlerError, context: &ErrorContext| predicate(error, context));
        }
        builder.build()
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
    ///     .schema("com.acme.keys.Gadget")
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
    /// use deimos_consumer::{Batch, BatchHandler, HandlerError, KeyConfig, Listener, async_trait};
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
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None)
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
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
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
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(Noop).build()?;
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
                listener.schema(),
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
