#![doc = include_str!("../README.md")]

/// Avro schemas: the schema store, Deimos-style coercion, encode/decode and compatibility (crate `deimos-avro`).
#[cfg(feature = "avro")]
pub use deimos_avro as avro;

/// The Confluent-compatible schema registry: the `SchemaRegistry` trait, HTTP, in-memory and cached registries
/// (crate `deimos-registry`).
#[cfg(feature = "registry")]
pub use deimos_registry as registry;

/// Kafka message keys: `key_config` none / plain / schema / field (crate `deimos-keys`).
#[cfg(feature = "keys")]
pub use deimos_keys as keys;

/// Metric names and instrumentation events (crate `deimos-metrics`).
#[cfg(feature = "metrics")]
pub use deimos_metrics as metrics;

/// Producers: declared once, publishing schema-checked messages to Kafka or memory (crate `deimos-producer`).
#[cfg(feature = "producer")]
pub use deimos_producer as producer;

/// Consumers: handlers, batch handlers, the consumer runner and its error policy (crate `deimos-consumer`).
#[cfg(feature = "consumer")]
pub use deimos_consumer as consumer;

/// Configuration from one TOML file with `DEIMOS_*` environment overrides: Kafka, schemas, producers, consumers
/// and the outbox (crate `deimos-config`, feature `config`).
#[cfg(feature = "config")]
pub use deimos_config as config;

/// The transactional outbox on Diesel: messages written in the business transaction, relayed to Kafka per
/// partition with leases (crate `deimos-outbox-diesel`, feature `outbox`).
#[cfg(feature = "outbox")]
pub use deimos_outbox_diesel as outbox;

/// Records on Diesel: record producers, change publishing through the outbox, record consumers (crate
/// `deimos-records-diesel`, feature `records`).
#[cfg(feature = "records")]
pub use deimos_records_diesel as records;

/// The test kit: sent-message assertions, consume helpers through the real codec and error policy, an inline
/// consumer, a mock Kafka cluster and the embedded registry (crate `deimos-test`, feature `test`).
#[cfg(feature = "test")]
pub use deimos_test as test;

/// librdkafka's Rust binding, the version deimos-rs is built with: for what goes beyond deimos-rs (a
/// `ClientConfig`, an admin client, `rdkafka::mocking::MockCluster` for a Kafka endpoint in a test or an example),
/// with no second version of it in the build.
#[cfg(any(feature = "producer", feature = "consumer"))]
pub use rdkafka;

/// Diesel, the version the outbox and the records are built with: a service's own queries and connections
/// (`deimos::diesel::sql_query`, `deimos::diesel_async::AsyncPgConnection`) with no second version in the build.
#[cfg(feature = "outbox")]
pub use diesel;
/// diesel-async, the version the outbox and the records are built with (its connections are what
/// `Outbox::publish` and the record layer write on).
#[cfg(feature = "outbox")]
pub use diesel_async;

/// The names a service uses to produce and consume: `use deimos::prelude::*;`. Each comes with the feature of
/// its module.
pub mod prelude {
    #[cfg(feature = "avro")]
    pub use deimos_avro::SchemaStore;
    #[cfg(feature = "config")]
    pub use deimos_config::{Config, Handlers};
    #[cfg(feature = "consumer")]
    pub use deimos_consumer::{
        Batch, BatchHandler, ConsumerRunner, ErrorPolicy, Handler, HandlerError, Listener, Message, ProcessingOrder,
        async_trait,
    };
    #[cfg(feature = "keys")]
    pub use deimos_keys::KeyConfig;
    #[cfg(feature = "producer")]
    pub use deimos_producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions, Record};
    #[cfg(feature = "registry")]
    pub use deimos_registry::{CachedRegistry, HttpRegistry, SchemaRegistry};
}
