//! The Kafka backend against librdkafka's mock cluster, over TCP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_metrics::events;
use deimos_producer::{
    DeliveryError, DeliveryMode, KafkaBackend, MessageOutcome, Partitioner, Producer, ProducerSetup, PublishError,
    PublishOptions,
};
use deimos_registry::{MemoryRegistry, SchemaCodec, SchemaRegistry};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value as Json, json};

fn store() -> SchemaStore {
    SchemaStore::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
}

fn widget(id: i64) -> Json {
    json!({"id": id, "name": format!("w{id}"), "description": "", "price": 1.5, "quantity": 2,
           "status": "ACTIVE", "tags": [], "updated_at": 5})
}

struct Kafka {
    mock: MockCluster<'static, DefaultProducerContext>,
    registry: Arc<MemoryRegistry>,
}

impl Kafka {
    fn new(topic: &str, partitions: i32) -> Kafka {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(topic, partitions, 1).unwrap();
        Kafka {
            mock,
            registry: Arc::new(MemoryRegistry::new()),
        }
    }

    fn backend(
        &self,
        f: impl FnOnce(deimos_producer::KafkaBackendBuilder) -> deimos_producer::KafkaBackendBuilder,
    ) -> KafkaBackend {
        f(KafkaBackend::builder().bootstrap_servers(self.mock.bootstrap_servers()))
            .build()
            .unwrap()
    }

    async fn producer(&self, backend: KafkaBackend, key: KeyConfig) -> Producer {
        let setup = ProducerSetup::builder(store(), self.registry.clone(), backend).build();
        self.producer_on(&setup, key).await
    }

    async fn producer_on(&self, setup: &ProducerSetup, key: KeyConfig) -> Producer {
        Producer::builder("WidgetProducer")
            .topic("widgets")
            .schema("com.acme.Widget")
            .key_config(key)
            .build(setup)
            .await
            .unwrap()
    }

    /// Every message of `topic`, read from the start of each partition: (partition, offset, key, value, headers).
    fn read_all(&self, topic: &str, partitions: i32, expect: usize) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.mock.bootstrap_servers())
            .set("group.id", "reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while out.len() < expect && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
        out
    }
}

#[derive(Debug)]
struct Read {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_publish_reports_each_delivery_and_the_bytes_decode() {
    let kafka = Kafka::new("widgets", 3);
    let backend = kafka.backend(|b| b);
    let p = kafka.producer(backend, KeyConfig::field("id")).await;
    let report = p
        .publish_list_with(
            (0..20).map(widget).chain([json!({"payload_key": 99})]).collect(),
            &PublishOptions::new().header("trace", "abc"),
        )
        .await
        .unwrap();
    assert_eq!(report.delivered().count(), 21);
    assert!(report.delivered().all(|(_, d)| d.offset.is_some()));
    let read = kafka.read_all("widgets", 3, 21);
    assert_eq!(read.len(), 21);
    let codec = SchemaCodec::new(kafka.registry.clone() as Arc<dyn SchemaRegistry>);
    let reader = store().get("com.acme.Widget").unwrap();
    let mut names = Vec::new();
    for r in &read {
        assert_eq!(r.headers, vec![("trace".to_string(), Some(b"abc".to_vec()))]);
        let key: Json = codec.decode_value(r.key.as_ref().unwrap(), None).await.unwrap();
        match &r.value {
            Some(v) => {
                let value = codec.decode_value(v, Some(&reader)).await.unwrap();
                assert_eq!(key["id"], value["id"]);
                names.push(value["name"].as_str().unwrap().to_string());
            }
            None => assert_eq!(key, json!({"id": 99}), "the tombstone keeps its key"),
        }
    }
    assert_eq!(names.len(), 20);
    // Each partition holds its messages in publish order.
    for part in 0..3 {
        let ids: Vec<i64> = read
            .iter()
            .filter(|r| r.partition == part && r.value.is_some())
            .map(|r| r.offset)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}

async fn partitions_agree(partitioner: Partitioner) {
    let kafka = Kafka::new("widgets", 6);
    let backend = kafka.backend(|b| b.partitioner(partitioner));
    let p = kafka.producer(backend.clone(), KeyConfig::Plain).await;
    let keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    let payloads = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut w = widget(i as i64);
            w["payload_key"] = json!(k);
            w
        })
        .collect();
    // librdkafka partitions these by key.
    let report = p.publish_list(payloads).await.unwrap();
    for ((_, d), k) in report.delivered().zip(&keys) {
        assert_eq!(
            d.partition,
            partitioner.partition(k.as_bytes(), 6),
            "{partitioner:?} {k}"
        );
    }
    // With a partition key that differs from the key, the producer partitions, the same way.
    let setup = ProducerSetup::builder(store(), kafka.registry.clone(), backend).build();
    let by_name = Producer::builder("ByName")
        .topic("widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .partition_key(|p| p.get("name").and_then(Json::as_str).map(str::to_string))
        .build(&setup)
        .await
        .unwrap();
    let report = by_name.publish_list((0..60).map(widget).collect()).await.unwrap();
    for (i, d) in report.delivered() {
        assert_eq!(d.partition, partitioner.partition(format!("w{i}").as_bytes(), 6));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_partitioning_matches_librdkafka() {
    partitions_agree(Partitioner::Consistent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn murmur2_partitioning_matches_librdkafka() {
    partitions_agree(Partitioner::Murmur2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_reported_and_the_others_are_delivered() {
    let kafka = Kafka::new("widgets", 1);
    let backend = kafka.backend(|b| b.kafka_setting("message.max.bytes", "2000"));
    let p = kafka.producer(backend, KeyConfig::field("id")).await;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let _sub = events::subscribe(events::PRODUCE_ERROR, move |e| sink.lock().unwrap().push(e.clone()));
    let mut big = widget(2);
    big["description"] = json!("x".repeat(5000));
    let err = p.publish_list(vec![widget(1), big, widget(3)]).await.unwrap_err();
    let PublishError::Undelivered {
        report, first_error, ..
    } = &err
    else {
        panic!("{err}")
    };
    let DeliveryError::TooLarge { size, limit } = &**first_error else {
        panic!("{first_error:?}")
    };
    assert!(*size > 5000, "{size}");
    assert_eq!(*limit, 2000);
    assert!(matches!(report.outcomes[0], MessageOutcome::Delivered(_)));
    assert!(matches!(report.outcomes[2], MessageOutcome::Delivered(_)));
    assert_eq!(kafka.read_all("widgets", 1, 2).len(), 2);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].producer.as_deref(), Some("WidgetProducer"));
    assert_eq!(errors[0].error.as_ref().unwrap().kind, "MessageSizeTooLarge");
    assert_eq!(errors[0].payloads[0]["id"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_publish_returns_once_queued() {
    let kafka = Kafka::new("widgets", 2);
    let backend = kafka.backend(|b| b);
    let setup = ProducerSetup::builder(store(), kafka.registry.clone(), backend.clone())
        .delivery(DeliveryMode::Async)
        .build();
    let p = kafka.producer_on(&setup, KeyConfig::field("id")).await;
    let report = p.publish_list((0..100).map(widget).collect()).await.unwrap();
    assert_eq!(report.outcomes.len(), 100);
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, MessageOutcome::Queued | MessageOutcome::Delivered(_)))
    );
    backend.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(backend.in_flight(), 0);
    assert_eq!(kafka.read_all("widgets", 2, 100).len(), 100);
    // A per-call override waits.
    let report = p
        .publish_list_with(vec![widget(1)], &PublishOptions::new().mode(DeliveryMode::Sync))
        .await
        .unwrap();
    assert_eq!(report.delivered().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_are_retried_and_a_down_broker_ends_in_a_result() {
    let kafka = Kafka::new("widgets", 1);
    let backend = kafka.backend(|b| {
        b.kafka_setting("message.timeout.ms", "3000")
            .kafka_setting("retry.backoff.ms", "10")
            .kafka_setting("reconnect.backoff.max.ms", "200")
    });
    let p = kafka.producer(backend, KeyConfig::field("id")).await;
    // Retriable produce errors: librdkafka retries, the call succeeds.
    kafka.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    let report = tokio::time::timeout(Duration::from_secs(20), p.publish_list((0..5).map(widget).collect()))
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(report.delivered().count(), 5);
    // Broker down: the delivery times out and is reported, not hung.
    kafka.mock.broker_down(1).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), p.publish(widget(6)))
        .await
        .expect("no hang")
        .unwrap_err();
    let PublishError::Undelivered { first_error, .. } = &err else {
        panic!("{err}")
    };
    assert!(matches!(**first_error, DeliveryError::Kafka { .. }), "{first_error:?}");
    // Broker back: the same producer delivers again by itself.
    kafka.mock.broker_up(1).unwrap();
    let mut delivered = false;
    for _ in 0..5 {
        let outcome = tokio::time::timeout(Duration::from_secs(20), p.publish(widget(7)))
            .await
            .expect("no hang");
        if outcome.is_ok() {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "no delivery after the broker came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_fails_before_the_first_message() {
    let kafka = Kafka::new("widgets", 1);
    let backend = kafka.backend(|b| b);
    let setup = ProducerSetup::builder(store(), kafka.registry.clone(), backend).build();
    let err = Producer::builder("Bad")
        .topic("widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("tags"))
        .build(&setup)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("primitive"), "{err}");
    let err = KafkaBackend::builder().build().unwrap_err();
    assert!(err.to_string().contains("bootstrap_servers"), "{err}");
    let err = KafkaBackend::builder()
        .bootstrap_servers(kafka.mock.bootstrap_servers())
        .kafka_setting("acks", "sometimes")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("acks"), "{err}");
}

/// A backend tells the settings it was built with, builds another like it, and asks the brokers for a partition
/// count again once its time to live has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_shows_its_settings_and_builds_another_like_it() {
    let kafka = Kafka::new("widgets", 3);
    let backend = KafkaBackend::builder()
        .bootstrap_servers(kafka.mock.bootstrap_servers())
        .kafka_setting("linger.ms", "7")
        .partitioner(Partitioner::Murmur2)
        .partition_count_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(backend.kafka_setting("linger.ms"), Some("7"));
    assert_eq!(backend.kafka_setting("acks"), Some("all"), "the builder's defaults");
    assert_eq!(
        backend.kafka_setting("message.timeout.ms"),
        None,
        "librdkafka's default"
    );
    let other = backend
        .to_builder()
        .kafka_setting("message.timeout.ms", "5000")
        .build()
        .unwrap();
    assert_eq!(other.kafka_setting("linger.ms"), Some("7"));
    assert_eq!(other.kafka_setting("message.timeout.ms"), Some("5000"));
    assert_eq!(other.partitioner(), Partitioner::Murmur2);
    assert_eq!(
        backend.kafka_setting("message.timeout.ms"),
        None,
        "the first backend is unchanged"
    );

    assert_eq!(backend.partition_count("widgets").await.unwrap(), 3);
    kafka.mock.broker_down(1).unwrap();
    // Within its time to live the count needs no broker; after it, the brokers are asked again.
    assert_eq!(backend.partition_count("widgets").await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(backend.partition_count("widgets").await.is_err());
}
