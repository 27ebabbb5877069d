//! Fixtures: a mock Kafka cluster and the embedded schema registry, each started with one call and torn down
//! when dropped.

use std::sync::Arc;

use deimos_avro::SchemaStore;
use deimos_registry::{EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::error::TestError;
use crate::inline_consumer::InlineConsumer;

/// librdkafka's mock cluster: a real Kafka protocol endpoint on loopback, in this process, with consumer
/// groups, offsets, idempotence and headers (no transactions, no admin API: create topics with
/// [`create_topic`](Self::create_topic) or let producers auto-create them). Stopped when dropped.
///
/// The handle is not `Send`: keep it in the test's own task.
///
/// ```
/// use deimos_test::MockKafka;
///
/// let kafka = MockKafka::start()?;
/// kafka.create_topic("widgets", 6)?;
/// assert!(kafka.bootstrap_servers().starts_with("127.0.0.1:") || kafka.bootstrap_servers().contains(':'));
/// # Ok::<(), deimos_test::TestError>(())
/// ```
pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap_servers: String,
}

impl std::fmt::Debug for MockKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKafka")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

impl MockKafka {
    /// A cluster of one broker.
    pub fn start() -> Result<MockKafka, TestError> {
        MockKafka::with_brokers(1)
    }

    /// A cluster of `brokers` brokers (for leader changes and broker-down tests).
    ///
    /// ```
    /// use deimos_test::MockKafka;
    ///
    /// let kafka = MockKafka::with_brokers(3)?;
    /// kafka.create_topic("widgets", 6)?; // partitions spread over the three brokers
    /// kafka.cluster().broker_down(2)?; // one broker lost; brokers are numbered from 1
    /// kafka.cluster().broker_up(2)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_brokers(brokers: i32) -> Result<MockKafka, TestError> {
        let cluster = MockCluster::new(brokers).map_err(|e| TestError::MockKafka {
            action: "start".into(),
            source: Box::new(e),
        })?;
        let bootstrap_servers = cluster.bootstrap_servers();
        Ok(MockKafka {
            cluster,
            bootstrap_servers,
        })
    }

    /// The `bootstrap.servers` to give clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Creates a topic with `partitions` partitions (replication factor 1).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TestError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(|e| TestError::MockKafka {
                action: format!("create_topic({topic:?}, {partitions})"),
                source: Box::new(e),
            })
    }

    /// The underlying cluster, for fault injection (`request_errors`, `broker_down`, `broker_up`, …).
    ///
    /// ```
    /// use deimos_test::MockKafka;
    ///
    /// let kafka = MockKafka::start()?;
    /// kafka.cluster().broker_down(1)?; // clients now see the broker as unreachable …
    /// kafka.cluster().broker_up(1)?; // … until it is back
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

/// A mock Kafka cluster and the embedded schema registry (a Confluent-compatible HTTP server on loopback),
/// started with one call and both torn down on drop: what an integration test of a service needs.
///
/// ```
/// use std::sync::Arc;
/// use deimos_test::TestCluster;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = TestCluster::start().await?;
/// cluster.kafka.create_topic("widgets", 3)?;
/// let registry = cluster.http_registry()?; // talks HTTP to the embedded registry, as in production
/// assert!(cluster.registry_url().starts_with("http://127.0.0.1:"));
/// # drop(registry);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct TestCluster {
    /// The mock Kafka cluster.
    pub kafka: MockKafka,
    /// The embedded schema registry.
    pub registry: EmbeddedRegistry,
}

impl TestCluster {
    /// Starts a one-broker mock cluster and the embedded registry on a free port. Needs a Tokio runtime.
    pub async fn start() -> Result<TestCluster, TestError> {
        let kafka = MockKafka::start()?;
        let registry = EmbeddedRegistry::start()
            .await
            .map_err(|e| TestError::Registry(Box::new(e)))?;
        Ok(TestCluster { kafka, registry })
    }

    /// The mock cluster's `bootstrap.servers`.
    ///
    /// ```
    /// use deimos_producer::KafkaBackend;
    /// use deimos_test::TestCluster;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = TestCluster::start().await?;
    /// assert_eq!(cluster.bootstrap_servers(), cluster.kafka.bootstrap_servers());
    /// // Give it to the service's producers and consumers as their `bootstrap.servers`:
    /// let backend = KafkaBackend::builder().bootstrap_servers(cluster.bootstrap_servers()).build()?;
    /// # drop(backend);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bootstrap_servers(&self) -> &str {
        self.kafka.bootstrap_servers()
    }

    /// The registry's base URL.
    pub fn registry_url(&self) -> &str {
        self.registry.url()
    }

    /// An HTTP registry client for the embedded registry.
    pub fn http_registry(&self) -> Result<Arc<dyn SchemaRegistry>, TestError> {
        let registry = HttpRegistry::new(self.registry.url()).map_err(|e| TestError::Registry(Box::new(e)))?;
        Ok(Arc::new(registry))
    }

    /// An [`InlineConsumer`] on the cluster, reading writer schemas from the registry over HTTP.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use deimos_test::TestCluster;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    /// let cluster = TestCluster::start().await?;
    /// cluster.kafka.create_topic("gadgets", 1)?;
    /// let inline = cluster.inline_consumer(deimos_avro::SchemaStore::load_all(schemas)?)?;
    /// assert!(inline.last_messages("gadgets", 10).await?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn inline_consumer(&self, store: impl Into<Arc<SchemaStore>>) -> Result<InlineConsumer, TestError> {
        Ok(InlineConsumer::new(
            self.bootstrap_servers(),
            self.http_registry()?,
            store,
        ))
    }
}
