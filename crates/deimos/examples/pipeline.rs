//! The main job on embedded defaults: producers and consumers through Kafka with schema-checked messages.
//!
//! - a schema registry: an embedded Confluent-compatible one, or `--registry <url>`;
//! - a Kafka cluster: librdkafka's mock cluster (a real Kafka protocol endpoint on loopback), or
//!   `--brokers <host:port,…>` (the topics `dev.widgets` and `dev.widgets.dead` must exist there);
//! - a producer declared the Deimos way (topic prefix `dev.`, key from the `id` field) publishing loose and typed
//!   payloads and a tombstone; a payload that does not fit the schema is refused with the field path;
//! - a consumer runner with one listener decoding keys and values into a struct, retrying a failing message
//!   with backoff and moving it to a dead-letter topic after three attempts.
//!
//! Run it with `cargo run --example pipeline`; against `deimos dev` (a local Kafka and registry that outlive the
//! run, so `deimos tail dev.widgets` shows what it sent): `cargo run -p deimos-cli -- dev --topic dev.widgets
//! --topic dev.widgets.dead`, then `cargo run --example pipeline -- --brokers 127.0.0.1:9092 --registry
//! http://127.0.0.1:8081`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use deimos::avro::SchemaStore;
use deimos::consumer::{ConsumerRunner, ErrorPolicy, Handler, HandlerError, Listener, Message};
use deimos::keys::KeyConfig;
use deimos::producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions, Record};
use deimos::registry::{CachedRegistry, EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
enum Status {
    ACTIVE,
    RETIRED,
    UNKNOWN,
}

/// `com.acme.Widget` (schemas/com/acme/Widget.avsc).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Widget {
    id: i64,
    message_id: String,
    name: String,
    description: String,
    price: f64,
    quantity: i32,
    status: Status,
    tags: Vec<String>,
    updated_at: i64,
    parent_id: Option<i64>,
}

/// Prints what it gets; fails on widget 13 every time.
struct PrintWidgets {
    handled: AtomicUsize,
    expected: usize,
    done: Notify,
}

#[async_trait::async_trait]
impl Handler for PrintWidgets {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        let m = &message.metadata;
        let key = m.key.clone().map(|k| k.into_json());
        match &message.payload {
            Some(w) if w.id == 13 => {
                println!(
                    "  p{} @{:<3} key {:<14} widget 13: failing (attempt {})",
                    m.partition,
                    m.offset,
                    fmt(&key),
                    m.retry_count + 1
                );
                if m.retry_count + 1 == 3 {
                    // The last attempt: the runner moves it to the dead-letter topic next.
                    self.count();
                }
                return Err("widget 13 is unlucky".into());
            }
            Some(w) => println!(
                "  p{} @{:<3} key {:<14} {} x{} at {:.2} ({:?})",
                m.partition,
                m.offset,
                fmt(&key),
                w.name,
                w.quantity,
                w.price,
                w.status
            ),
            None => println!(
                "  p{} @{:<3} key {:<14} tombstone: delete it",
                m.partition,
                m.offset,
                fmt(&key)
            ),
        }
        self.count();
        Ok(())
    }
}

impl PrintWidgets {
    fn count(&self) {
        if self.handled.fetch_add(1, Ordering::SeqCst) + 1 == self.expected {
            self.done.notify_one();
        }
    }
}

fn fmt(key: &Option<serde_json::Value>) -> String {
    key.as_ref().map_or("-".to_string(), |k| k.to_string())
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings and errors of the crates go to stderr; RUST_LOG=info (or debug) shows more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Schema registry: given, or embedded on a free loopback port.
    let embedded;
    let url = match arg("--registry") {
        Some(url) => url,
        None => {
            embedded = EmbeddedRegistry::start().await?;
            embedded.url().to_string()
        }
    };
    let registry: Arc<dyn SchemaRegistry> = Arc::new(CachedRegistry::new(HttpRegistry::builder(&url).build()?));
    println!("schema registry: {url}");

    // Kafka: given, or librdkafka's mock cluster.
    let mock;
    let brokers = match arg("--brokers") {
        Some(b) => b,
        None => {
            mock = deimos::rdkafka::mocking::MockCluster::new(1)?;
            mock.create_topic("dev.widgets", 3, 1)?;
            mock.create_topic("dev.widgets.dead", 1, 1)?;
            mock.bootstrap_servers()
        }
    };
    println!("kafka: {brokers}");

    // Every schema under schemas/ is loaded and checked at start-up.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let store = Arc::new(SchemaStore::load_all(&root).with_context(|| format!("loading {}", root.display()))?);

    // The producer: declared once; building it registers dev.widgets-value and dev.widgets-key.
    let backend = KafkaBackend::builder().bootstrap_servers(&brokers).build()?;
    let setup = ProducerSetup::builder(store.clone(), registry.clone(), backend)
        .topic_prefix("dev.")
        .build();
    let producer = Producer::builder("WidgetProducer")
        .topic("widgets")
        .schema("Widget")
        .namespace("com.acme")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await?;
    println!(
        "\nproducer {} → {} (subjects {}, {})",
        producer.name(),
        producer.topic(),
        producer.value_subject(),
        producer.key_subject()
    );

    // Loose payloads are coerced ("11" → 11, "9.99" → 9.99), get a message_id, and lose unknown fields.
    let loose: Vec<serde_json::Value> = (11..=14)
        .map(|id| {
            json!({"id": id.to_string(), "name": format!("sprocket-{id}"), "description": "zinc", "price": "9.99",
                   "quantity": id, "status": "ACTIVE", "tags": ["steel"], "updated_at": 1_700_000_000_000i64,
                   "not_in_the_schema": true})
        })
        .collect();
    let report = producer
        .publish_list_with(loose, &PublishOptions::new().header("origin", "pipeline-example"))
        .await?;
    for (i, d) in report.delivered() {
        println!(
            "  message {i} delivered to partition {} offset {:?}",
            d.partition, d.offset
        );
    }
    // Typed payloads go straight from the struct to Avro; a tombstone deletes widget 11.
    let typed = Widget {
        id: 15,
        message_id: "00000000-0000-4000-8000-000000000015".into(),
        name: "gear".into(),
        description: "brass".into(),
        price: 4.5,
        quantity: 2,
        status: Status::RETIRED,
        tags: vec![],
        updated_at: 1_700_000_000_000,
        parent_id: Some(11),
    };
    producer
        .publish_records(&[Record::new(&typed), Record::tombstone(11)], &PublishOptions::new())
        .await?;
    // A payload that does not fit is refused before anything is sent.
    let bad = json!({"id": 16, "name": "x", "description": "", "price": 1, "quantity": 1, "status": "MELTED",
                     "tags": [], "updated_at": 0});
    if let Err(e) = producer.publish(bad).await {
        println!("  refused: {e}");
    }

    // The consumer: one listener, typed payloads, keys decoded from the generated key schema; a failing message
    // is retried with backoff, then moved to the dead-letter topic.
    let handler = Arc::new(PrintWidgets {
        handled: AtomicUsize::new(0),
        expected: 6,
        done: Notify::new(),
    });
    let listener = Listener::builder("dev.widgets", "widget-consumers")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .handler(handler.clone())
        .error_policy(ErrorPolicy::Fatal)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .max_attempts(3)
        .dead_letter_topic("dev.widgets.dead")
        .session_timeout(Duration::from_secs(6))
        .build()?;
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(&brokers)
        .registry(registry.clone())
        .schema_store(SchemaStore::new(&root))
        .listener(listener)
        .build()?;
    println!("\nconsuming dev.widgets as group widget-consumers (joining takes a few seconds):");
    let done = handler.clone();
    tokio::time::timeout(
        Duration::from_secs(60),
        runner.run_until(async move { done.done.notified().await }),
    )
    .await
    .context("the consumer did not see every message within 60 s")??;
    println!("\nall messages handled; widget 13 went to dev.widgets.dead; offsets committed, group left.");
    Ok(())
}
