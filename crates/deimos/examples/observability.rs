//! Metrics and traces of a producer and a consumer: the `metrics` facade wired to the Prometheus exporter (or,
//! with `-- --dogstatsd HOST:PORT`, to a DogStatsD agent), and `tracing` bridged to OpenTelemetry with the
//! stdout exporter. The consumer's `process` spans are children of the producer's `send` span: the trace
//! context travels in the messages' `traceparent` header, written and read by the global W3C propagator set here
//! (the facade's `otel` feature carries it).
//!
//! Run it with `cargo run --example observability`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deimos::avro::SchemaStore;
use deimos::consumer::{ConsumerRunner, Handler, HandlerError, Listener, Message};
use deimos::keys::KeyConfig;
use deimos::producer::{KafkaBackend, Producer, ProducerSetup};
use deimos::registry::{MemoryRegistry, SchemaRegistry};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Value as Json, json};
use tokio::sync::Semaphore;
use tracing::Instrument;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;

struct Count(Semaphore);

#[async_trait::async_trait]
impl Handler for Count {
    type Payload = Json;

    async fn consume(&self, message: Message<Json>) -> Result<(), HandlerError> {
        tracing::info!(offset = message.metadata.offset, "handled a widget");
        self.0.add_permits(1);
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // Metrics: every deimos-rs metric goes through the `metrics` facade to the exporter installed here.
    let args: Vec<String> = std::env::args().collect();
    let prometheus = match args.iter().position(|a| a == "--dogstatsd") {
        Some(i) => {
            let addr = args.get(i + 1).context("--dogstatsd needs HOST:PORT")?;
            metrics_exporter_dogstatsd::DogStatsDBuilder::default()
                .with_remote_address(addr)?
                .install()?;
            println!("metrics go to the DogStatsD agent at {addr}");
            None
        }
        None => Some(metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?),
    };
    deimos::metrics::describe_all();

    // Traces: tracing → tracing-opentelemetry → OpenTelemetry's stdout exporter (swap in OTLP in production).
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("observability-example")))
        .with(tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::EnvFilter::new("info,librdkafka=warn")));
    tracing::subscriber::set_global_default(subscriber)?;
    // How the trace context goes into Kafka headers and comes back: W3C trace context (compose it with baggage
    // or B3 as the rest of the system needs).
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());

    let mock = deimos::rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic("widgets", 2, 1)?;
    let registry = Arc::new(MemoryRegistry::new());
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()?;
    let setup = ProducerSetup::builder(
        SchemaStore::new(schemas),
        registry.clone() as Arc<dyn SchemaRegistry>,
        backend,
    )
    .build();
    let producer = Producer::builder("WidgetProducer")
        .topic("widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await?;
    let widgets: Vec<Json> = (1..=3)
        .map(|id| {
            json!({"id": id, "name": "gear", "description": "", "price": 1.5, "quantity": 1,
                         "status": "ACTIVE", "tags": [], "updated_at": 0})
        })
        .collect();
    producer
        .publish_list(widgets)
        .instrument(tracing::info_span!("handle request"))
        .await?;

    let handled = Arc::new(Count(Semaphore::new(0)));
    let listener = Listener::builder("widgets", "widget-readers")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .handler(handled.clone())
        .start_from_beginning(true)
        .session_timeout(Duration::from_secs(6))
        .report_lag(true)
        .build()?;
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .registry(registry)
        .schema_store(SchemaStore::new(schemas))
        .listener(listener)
        .build()?;
    let done = handled.clone();
    tokio::time::timeout(
        Duration::from_secs(60),
        runner.run_until(async move {
            let _ = done.0.acquire_many(3).await;
        }),
    )
    .await
    .context("the consumer did not see the widgets within 60 s")??;

    provider.force_flush()?;
    if let Some(handle) = prometheus {
        println!(
            "\n# Prometheus exposition of the run (what /metrics would serve):\n{}",
            handle.render()
        );
    }
    provider.shutdown()?;
    Ok(())
}
