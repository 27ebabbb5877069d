//! Payload logs (Deimos's `payload_log`): never at info level; at debug level, payloads, keys or a count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_metrics::PayloadLog;
use deimos_producer::{MemoryBackend, Producer, ProducerSetup};
use deimos_registry::MemoryRegistry;
use serde_json::json;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What publishing one widget logs at `level` with `payload_log`.
async fn logged(level: tracing::Level, payload_log: PayloadLog) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let setup = ProducerSetup::builder(
        SchemaStore::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas")),
        Arc::new(MemoryRegistry::new()),
        MemoryBackend::new(),
    )
    .payload_log(payload_log)
    .build();
    let producer = Producer::builder("WidgetProducer")
        .topic("widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    producer
        .publish(
            json!({"id": 4242, "name": "secret-sprocket", "description": "", "price": 1.5, "quantity": 2,
                        "status": "ACTIVE", "tags": [], "updated_at": 5}),
        )
        .await
        .unwrap();
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn payloads_are_logged_only_at_debug_and_as_configured() {
    let info = logged(tracing::Level::INFO, PayloadLog::Full).await;
    assert!(!info.contains("secret-sprocket") && !info.contains("4242"), "{info}");

    let full = logged(tracing::Level::DEBUG, PayloadLog::Full).await;
    assert!(
        full.contains("Publishing messages") && full.contains("secret-sprocket"),
        "{full}"
    );

    let keys = logged(tracing::Level::DEBUG, PayloadLog::Keys).await;
    assert!(
        keys.contains("keys=[4242]") && !keys.contains("secret-sprocket"),
        "{keys}"
    );

    let count = logged(tracing::Level::DEBUG, PayloadLog::Count).await;
    assert!(
        count.contains("message_count=1") && !count.contains("secret-sprocket") && !count.contains("4242"),
        "{count}"
    );
}
