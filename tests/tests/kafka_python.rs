#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Kafka interoperability with Confluent's Python client on one librdkafka mock cluster: its
//! DeserializingConsumer (AvroDeserializer) reads what our producer sent, and our consumer runner decodes what
//! its SerializingProducer (AvroSerializer) sent. Both sides share the embedded schema registry over HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deimos::avro::SchemaStore;
use deimos::consumer::{ConsumerRunner, Handler, HandlerError, Listener, Message};
use deimos::keys::{DecodedKey, KeyConfig};
use deimos::producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions};
use deimos::registry::{EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use tokio::sync::Notify;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python(spec: &Value) -> Value {
    let file = std::env::temp_dir().join(format!(
        "deimos-kafka-interop-{}-{}.json",
        std::process::id(),
        spec["mode"].as_str().unwrap()
    ));
    std::fs::write(&file, spec.to_string()).unwrap();
    let python = std::env::var("DEIMOS_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(root().join("tests/python/kafka_interop.py"))
        .arg(&file)
        .output()
        .expect("python3 runs; `cargo xtask setup` installs confluent-kafka");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "kafka_interop.py failed (needs pip install \"confluent-kafka[avro,schemaregistry]\"):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn widget(id: i64) -> Value {
    json!({"id": id, "message_id": format!("m-{id}"), "name": format!("wïdget {id}"), "description": "d",
           "price": 2.5, "quantity": id, "status": "RETIRED", "tags": ["x", "y"], "updated_at": 1_700_000_000_000i64,
           "parent_id": null})
}

#[derive(Default)]
struct Collect {
    seen: Mutex<Vec<(Option<DecodedKey>, Option<Value>)>>,
    done: Notify,
    want: usize,
}

#[async_trait]
impl Handler for Collect {
    type Payload = Value;

    async fn consume(&self, message: Message<Value>) -> Result<(), HandlerError> {
        let mut seen = self.seen.lock().unwrap();
        seen.push((message.metadata.key.clone(), message.payload));
        if seen.len() == self.want {
            self.done.notify_one();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_confluent_kafka_reads_ours_and_we_read_theirs() {
    let server = EmbeddedRegistry::start().await.unwrap();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(HttpRegistry::builder(server.url()).build().unwrap());
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("py.from_rust", 3, 1).unwrap();
    mock.create_topic("py.from_python", 3, 1).unwrap();
    let store = Arc::new(SchemaStore::new(root().join("schemas")));

    // Ours → Python.
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()
        .unwrap();
    let setup = ProducerSetup::builder(store.clone(), registry.clone(), backend).build();
    let producer = Producer::builder("WidgetProducer")
        .topic("py.from_rust")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let mut payloads: Vec<Value> = (1..=8).map(widget).collect();
    payloads.push(json!({"payload_key": 9}));
    producer
        .publish_list_with(payloads, &PublishOptions::new().header("origin", "rust"))
        .await
        .unwrap();
    let read = python(&json!({
        "mode": "consume", "bootstrap": mock.bootstrap_servers(), "registry_url": server.url(),
        "topic": "py.from_rust", "group": "python", "count": 9,
    }));
    let mut read = read.as_array().unwrap().clone();
    read.sort_by_key(|m| m["key"]["id"].as_i64());
    assert_eq!(read.len(), 9);
    for (i, m) in read.iter().enumerate() {
        let id = i as i64 + 1;
        assert_eq!(m["key"], json!({"id": id}));
        assert_eq!(m["headers"], json!({"origin": "rust"}));
        if id == 9 {
            assert_eq!(m["value"], Value::Null, "tombstone");
        } else {
            assert_eq!(m["value"], widget(id));
        }
    }

    // Python → ours.
    let key_schema = producer.key_spec().key_schema().unwrap().canonical_json().to_string();
    let messages: Vec<Value> = (11..=16)
        .map(|id| json!({"key": {"id": id}, "value": widget(id)}))
        .collect();
    let sent = python(&json!({
        "mode": "produce", "bootstrap": mock.bootstrap_servers(), "registry_url": server.url(),
        "topic": "py.from_python", "key_schema": key_schema,
        "value_schema": store.get("com.acme.Widget").unwrap().canonical_json(), "messages": messages,
    }));
    assert_eq!(sent, json!({"delivered": 6, "failed": 0}));
    let collect = Arc::new(Collect {
        want: 6,
        ..Collect::default()
    });
    let listener = Listener::builder("py.from_python", "rust")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .session_timeout(Duration::from_secs(6))
        .handler(collect.clone())
        .build()
        .unwrap();
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .registry(registry.clone())
        .schema_store(SchemaStore::new(root().join("schemas")))
        .listener(listener)
        .build()
        .unwrap();
    let done = collect.clone();
    tokio::time::timeout(
        Duration::from_secs(60),
        runner.run_until(async move { done.done.notified().await }),
    )
    .await
    .expect("our consumer read what Python sent")
    .unwrap();
    let mut seen = collect.seen.lock().unwrap().clone();
    seen.sort_by_key(|(_, v)| v.as_ref().and_then(|v| v["id"].as_i64()));
    for ((key, value), id) in seen.into_iter().zip(11..) {
        assert_eq!(key, Some(DecodedKey::Value(json!(id))));
        assert_eq!(value, Some(widget(id)));
    }
}
