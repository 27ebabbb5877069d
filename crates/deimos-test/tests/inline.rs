//! The inline consumer and the fixtures, against librdkafka's mock cluster over TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deimos_avro::SchemaStore;
use deimos_consumer::{Batch, BatchHandler, HandlerError, InlineOutcome, KeyConfig, Listener};
use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
use deimos_registry::SchemaRegistry;
use deimos_test::{InlineConsumer, MockKafka, TestCluster, TestError};
use serde_json::{Value, json};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

async fn producer(bootstrap: &str, registry: Arc<dyn SchemaRegistry>, store: Arc<SchemaStore>) -> Producer {
    let backend = KafkaBackend::builder()
        .bootstrap_servers(bootstrap)
        .kafka_setting("linger.ms", "1")
        .build()
        .unwrap();
    let setup = ProducerSetup::builder(store, registry, backend).build();
    Producer::builder("GadgetProducer")
        .topic("gadgets")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap()
}

fn gadget(id: i64) -> Value {
    json!({"id": id, "region": "eu", "name": format!("g{id}")})
}

type Seen = Vec<(i32, Vec<i64>)>;

#[derive(Clone, Default)]
struct Batches(Arc<Mutex<Seen>>);

#[async_trait]
impl BatchHandler for Batches {
    type Payload = Value;

    async fn consume_batch(&self, batch: Batch<Value>) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push((batch.metadata.partition, batch.metadata.offsets.clone()));
        Ok(())
    }
}

/// Deimos's InlineConsumer read partition 0 only; this one reads the newest messages of every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_messages_of_every_partition_decoded_per_producer_or_listener() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.kafka.create_topic("gadgets", 3).unwrap();
    let store = Arc::new(SchemaStore::load_all(SCHEMAS).unwrap());
    let registry = cluster.http_registry().unwrap();
    let producer = producer(cluster.bootstrap_servers(), Arc::clone(&registry), Arc::clone(&store)).await;
    for id in 0..30 {
        producer.publish(gadget(id)).await.unwrap();
    }
    producer.publish(json!({"payload_key": 99})).await.unwrap(); // a tombstone, last

    let inline = cluster.inline_consumer(Arc::clone(&store)).unwrap();
    let raw = inline.last_messages("gadgets", 100).await.unwrap();
    assert_eq!(raw.len(), 31);
    let partitions: std::collections::BTreeSet<i32> = raw.iter().map(|m| m.partition).collect();
    assert!(partitions.len() > 1, "keys spread over the partitions: {partitions:?}");

    let last = inline.messages_for_producer(&producer, 5).await.unwrap();
    assert_eq!(last.len(), 5);
    assert_eq!(last[4].key, Some(json!(99)));
    assert_eq!(last[4].payload, None);
    assert_eq!(last[3].payload, Some(gadget(29)));
    let ids: Vec<Value> = last.iter().map(|m| m.key.clone().unwrap()).collect();
    assert_eq!(ids, [json!(26), json!(27), json!(28), json!(29), json!(99)]);

    let listener = Listener::builder("gadgets", "unused")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::field("id"))
        .batch_handler(Batches::default())
        .build()
        .unwrap();
    let by_listener = inline.messages_for_listener(&listener, 5).await.unwrap();
    assert_eq!(by_listener, last);
    let by_schema = inline
        .messages_with("gadgets", "com.acme.keys.Gadget", KeyConfig::field("id"), 5)
        .await
        .unwrap();
    assert_eq!(by_schema, last);
    // Without a key config the keys come raw: the Avro-framed key, as text of its bytes.
    let raw_keys = inline
        .messages_with("gadgets", "com.acme.keys.Gadget", KeyConfig::None, 1)
        .await
        .unwrap();
    assert!(raw_keys[0].key.is_some());
    // No key config at all: refused with Deimos's message, as producers and listeners are.
    let err = inline
        .messages_with("gadgets", "com.acme.keys.Gadget", KeyConfig::NotSet, 1)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("You must specify either a config_class or a schema, namespace and key_config!"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_runs_over_the_last_messages_in_batches_per_partition() {
    let kafka = MockKafka::start().unwrap();
    kafka.create_topic("gadgets", 2).unwrap();
    let store = Arc::new(SchemaStore::load_all(SCHEMAS).unwrap());
    let registry: Arc<dyn SchemaRegistry> = Arc::new(deimos_registry::MemoryRegistry::new());
    let producer = producer(kafka.bootstrap_servers(), Arc::clone(&registry), Arc::clone(&store)).await;
    producer.publish_list((0..20).map(gadget).collect()).await.unwrap();

    let batches = Batches::default();
    let listener = Listener::builder("gadgets", "unused")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::field("id"))
        .batch_handler(batches.clone())
        .max_batch_size(4)
        .build()
        .unwrap();
    let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
    let outcomes = inline.run_listener(&listener, 20).await.unwrap();
    assert!(outcomes.iter().all(InlineOutcome::is_handled), "{outcomes:?}");
    let seen = batches.0.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|(_, o)| o.len()).sum::<usize>(), 20);
    for (_, offsets) in &seen {
        assert!(
            offsets.len() <= 4 && offsets.windows(2).all(|w| w[0] < w[1]),
            "{seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_missing_topic_or_an_empty_one_says_so() {
    let kafka = MockKafka::start().unwrap();
    kafka.create_topic("empty", 2).unwrap();
    let store = Arc::new(SchemaStore::load_all(SCHEMAS).unwrap());
    let registry: Arc<dyn SchemaRegistry> = Arc::new(deimos_registry::MemoryRegistry::new());
    let inline = InlineConsumer::new(kafka.bootstrap_servers(), registry, store);
    assert!(inline.last_messages("empty", 10).await.unwrap().is_empty());
    let err = inline.last_messages("missing", 10).await.unwrap_err();
    assert!(matches!(err, TestError::Kafka { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixtures_stop_on_drop() {
    let cluster = TestCluster::start().await.unwrap();
    let url = cluster.registry_url().to_string();
    let client = deimos_registry::HttpRegistry::new(url.as_str()).unwrap();
    assert!(client.subjects().await.unwrap().is_empty());
    drop(cluster);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        client.subjects().await.is_err(),
        "the registry still answers after drop"
    );
}
