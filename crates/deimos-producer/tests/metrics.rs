//! `publish` and `publish_error` through the `metrics` facade (own test binary: it installs a global recorder,
//! since delivery reports arrive on librdkafka's thread).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
use deimos_registry::MemoryRegistry;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rdkafka::mocking::MockCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_publish_error_are_counted_per_configured_topic() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("dev.widgets", 1, 1).unwrap();
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .kafka_setting("message.max.bytes", "2000")
        .build()
        .unwrap();
    let store = SchemaStore::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"));
    let setup = ProducerSetup::builder(store, Arc::new(MemoryRegistry::new()), backend)
        .topic_prefix("dev.")
        .build();
    let p = Producer::builder("WidgetProducer")
        .topic("widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let w = |id: i64, description: String| {
        json!({"id": id, "name": "n", "description": description, "price": 1.0, "quantity": 1,
               "status": "ACTIVE", "tags": [], "updated_at": 0})
    };
    let _ = p
        .publish_list(vec![
            w(1, String::new()),
            w(2, "x".repeat(3000)),
            w(3, String::new()),
            w(4, String::new()),
        ])
        .await;

    let mut success = None;
    let mut errors = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        match (key.key().name(), value) {
            ("publish", DebugValue::Counter(n)) => {
                assert_eq!(
                    labels,
                    vec![
                        ("status".into(), "success".into()),
                        ("topic".into(), "dev.widgets".into())
                    ]
                );
                success = Some(n);
            }
            ("publish_error", DebugValue::Counter(n)) => {
                assert_eq!(labels, vec![("topic".into(), "dev.widgets".into())]);
                errors = Some(n);
            }
            _ => {}
        }
    }
    assert_eq!(success, Some(3));
    assert_eq!(errors, Some(1));
}
