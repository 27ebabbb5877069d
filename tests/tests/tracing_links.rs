//! One trace from producer to consumer, through Kafka and through the outbox: the trace context travels in the
//! messages' headers as the application's global propagator writes it (W3C trace context here, or any other),
//! and the spans follow the OpenTelemetry messaging conventions. Spans are exported to OpenTelemetry's in-memory
//! exporter and their parent links checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use deimos::avro::SchemaStore;
use deimos::consumer::{ConsumerRunner, Handler, HandlerError, Listener, Message};
use deimos::keys::KeyConfig;
use deimos::outbox::{Conn, Outbox, Relay, RelayConfig};
use deimos::producer::{KafkaBackend, Producer, ProducerSetup, PublishOptions};
use deimos::registry::{MemoryRegistry, SchemaRegistry};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, InMemorySpanExporterBuilder, SdkTracerProvider, SpanData};
use rdkafka::mocking::MockCluster;
use serde_json::{Value as Json, json};
use tokio::sync::Notify;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas");

/// The process-wide OpenTelemetry pipeline: tracing → tracing-opentelemetry → the in-memory exporter, and W3C
/// trace context as the global propagator (a test may set another one after this).
fn telemetry() -> &'static (SdkTracerProvider, InMemorySpanExporter) {
    static T: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();
    T.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let exporter = InMemorySpanExporterBuilder::new().build();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("deimos-tests"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
        (provider, exporter)
    })
}

fn spans() -> Vec<SpanData> {
    let (provider, exporter) = telemetry();
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn find<'a>(spans: &'a [SpanData], name: &str, trace: TraceId) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name && s.span_context.trace_id() == trace)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .map(|s| (s.name.to_string(), s.span_context.trace_id()))
                .collect();
            panic!("no span `{name}` in trace {trace}: {names:?}")
        })
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Notes the header names of the message it handles, and says it is done.
struct Done(Notify, std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl Handler for Done {
    type Payload = Json;

    async fn consume(&self, message: Message<Json>) -> Result<(), HandlerError> {
        *self.1.lock().unwrap() = message.metadata.headers.iter().map(|(k, _)| k.to_string()).collect();
        self.0.notify_one();
        Ok(())
    }
}

fn widget(id: i64) -> Json {
    json!({"id": id, "name": "w", "description": "", "price": 1.0, "quantity": 1, "status": "ACTIVE",
           "tags": [], "updated_at": 0})
}

/// Consumes one message of `topic`; returns the names of its headers.
async fn consume_one(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    registry: Arc<MemoryRegistry>,
    topic: &str,
) -> Vec<String> {
    let done = Arc::new(Done(Notify::new(), std::sync::Mutex::new(Vec::new())));
    let listener = Listener::builder(topic, format!("{topic}-group"))
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .handler(done.clone())
        .start_from_beginning(true)
        .session_timeout(Duration::from_secs(6))
        .build()
        .unwrap();
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .registry(registry as Arc<dyn SchemaRegistry>)
        .schema_store(SchemaStore::new(SCHEMAS))
        .listener(listener)
        .build()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        runner.run_until({
            let done = done.clone();
            async move { done.0.notified().await }
        }),
    )
    .await
    .expect("the message is consumed within 60 s")
    .unwrap();
    done.1.lock().unwrap().clone()
}

async fn producer(
    registry: Arc<MemoryRegistry>,
    topic: &str,
    backend: impl deimos::producer::PublishBackend,
) -> Producer {
    let setup = ProducerSetup::builder(SchemaStore::new(SCHEMAS), registry as Arc<dyn SchemaRegistry>, backend).build();
    Producer::builder("WidgetProducer")
        .topic(topic)
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap()
}

/// Publishes one widget to `topic` of the mock cluster inside a request's span; returns the request's trace id.
async fn publish_in_a_request(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    registry: Arc<MemoryRegistry>,
    topic: &str,
) -> TraceId {
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()
        .unwrap();
    let producer = producer(registry, topic, backend).await;
    let request = tracing::info_span!("handle request");
    let trace = {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        request.context().span().span_context().trace_id()
    };
    producer.publish(widget(1)).instrument(request).await.unwrap();
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_share_one_trace_through_kafka() {
    telemetry();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("traced", 2, 1).unwrap();
    let registry = Arc::new(MemoryRegistry::new());
    let trace = publish_in_a_request(&mock, registry.clone(), "traced").await;
    let headers = consume_one(&mock, registry, "traced").await;
    assert_eq!(
        headers,
        ["traceparent", "tracestate"],
        "W3C trace context, as the global propagator writes it"
    );

    let spans = spans();
    let send = find(&spans, "send traced", trace);
    let encode = find(&spans, "encode traced", trace);
    let process = find(&spans, "process traced", trace);
    assert_eq!(send.span_kind, opentelemetry::trace::SpanKind::Producer);
    assert_eq!(process.span_kind, opentelemetry::trace::SpanKind::Consumer);
    assert_eq!(encode.parent_span_id, send.span_context.span_id());
    assert_eq!(
        process.parent_span_id,
        send.span_context.span_id(),
        "the consumer's span is the producer's child"
    );
    assert_eq!(attr(send, "messaging.system").as_deref(), Some("kafka"));
    assert_eq!(attr(send, "messaging.destination.name").as_deref(), Some("traced"));
    assert_eq!(attr(process, "messaging.operation.type").as_deref(), Some("process"));
    assert_eq!(
        attr(process, "messaging.consumer.group.name").as_deref(),
        Some("traced-group")
    );
    assert!(attr(process, "messaging.kafka.offset").is_some());
}

/// A propagator of another format (as B3 or a vendor's would be): one header, `x-trace: <trace id>:<span id>`.
#[derive(Debug)]
struct OneHeader(Vec<String>);

impl TextMapPropagator for OneHeader {
    fn inject_context(&self, cx: &opentelemetry::Context, injector: &mut dyn Injector) {
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            injector.set("x-trace", format!("{}:{}", sc.trace_id(), sc.span_id()));
        }
    }

    fn extract_with_context(&self, cx: &opentelemetry::Context, extractor: &dyn Extractor) -> opentelemetry::Context {
        let ids = extractor.get("x-trace").and_then(|v| v.split_once(':'));
        match ids.map(|(t, s)| (TraceId::from_hex(t), SpanId::from_hex(s))) {
            Some((Ok(t), Ok(s))) => {
                cx.with_remote_span_context(SpanContext::new(t, s, TraceFlags::SAMPLED, true, TraceState::default()))
            }
            _ => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_global_propagator_carries_the_trace() {
    telemetry();
    opentelemetry::global::set_text_map_propagator(OneHeader(vec!["x-trace".into()]));
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("traced-custom", 1, 1).unwrap();
    let registry = Arc::new(MemoryRegistry::new());
    let trace = publish_in_a_request(&mock, registry.clone(), "traced-custom").await;
    let headers = consume_one(&mock, registry, "traced-custom").await;
    assert_eq!(headers, ["x-trace"], "the propagator's header, and no traceparent");
    let spans = spans();
    let send = find(&spans, "send traced-custom", trace);
    let process = find(&spans, "process traced-custom", trace);
    assert_eq!(
        process.parent_span_id,
        send.span_context.span_id(),
        "the consumer's span is the producer's child, read back by the same propagator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_producer_outbox_relay_and_consumer() {
    telemetry();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("traced-outbox", 2, 1).unwrap();
    let registry = Arc::new(MemoryRegistry::new());
    let outbox = Outbox::builder().partitions("traced-outbox", 2).build();
    let producer = producer(registry.clone(), "traced-outbox", outbox.clone()).await;
    let path = std::env::temp_dir().join(format!("deimos-tracing-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    deimos::outbox::migrate(&url).await.unwrap();

    // The business transaction: the message goes to the outbox with the trace context in its headers.
    let request = tracing::info_span!("handle request");
    let (trace, request_id) = {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = request.context();
        let span = context.span();
        (span.span_context().trace_id(), span.span_context().span_id())
    };
    let mut conn = Conn::connect(&url).await.unwrap();
    async {
        conn.begin().await.unwrap();
        outbox
            .publish(&producer, &mut conn, vec![widget(2)], &PublishOptions::new())
            .await
            .unwrap();
        conn.commit().await.unwrap();
    }
    .instrument(request)
    .await;

    // The relay sends it on; the consumer handles it.
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()
        .unwrap();
    let relay = Relay::new(&url, backend, RelayConfig::default()).unwrap();
    let relaying = tokio::spawn(async move {
        relay
            .run_until(tokio::time::sleep(Duration::from_secs(3)))
            .await
            .unwrap();
    });
    consume_one(&mock, registry, "traced-outbox").await;
    relaying.await.unwrap();

    let spans = spans();
    let create = find(&spans, "create traced-outbox", trace);
    let send = find(&spans, "send traced-outbox", trace);
    let process = find(&spans, "process traced-outbox", trace);
    assert_eq!(
        create.parent_span_id, request_id,
        "the outbox write is a child of the request's span"
    );
    assert_eq!(
        send.parent_span_id,
        create.span_context.span_id(),
        "the relay's send continues the outbox write"
    );
    assert_eq!(
        process.parent_span_id,
        create.span_context.span_id(),
        "the consumer continues the message's creation"
    );
    for p in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{p}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_relay_send_marks_its_span() {
    telemetry();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("traced-too-large", 1, 1).unwrap();
    let registry = Arc::new(MemoryRegistry::new());
    let outbox = Outbox::builder().partitions("traced-too-large", 1).build();
    let producer = producer(registry, "traced-too-large", outbox.clone()).await;
    let path = std::env::temp_dir().join(format!("deimos-tracing-large-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    deimos::outbox::migrate(&url).await.unwrap();
    let request = tracing::info_span!("handle request");
    let trace = {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        request.context().span().span_context().trace_id()
    };
    let mut conn = Conn::connect(&url).await.unwrap();
    let mut big = widget(3);
    big["description"] = json!("x".repeat(5000));
    async {
        conn.begin().await.unwrap();
        outbox
            .publish(&producer, &mut conn, vec![big], &PublishOptions::new())
            .await
            .unwrap();
        conn.commit().await.unwrap();
    }
    .instrument(request)
    .await;

    // The relay's producer refuses messages over 2000 bytes: the row moves to kafka_messages_dead.
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .kafka_setting("message.max.bytes", "2000")
        .build()
        .unwrap();
    let relay = Relay::new(&url, backend, RelayConfig::default()).unwrap();
    let stats = relay
        .run_until(tokio::time::sleep(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(stats.too_large, 1);

    let spans = spans();
    let send = find(&spans, "send traced-too-large", trace);
    assert_eq!(send.status, opentelemetry::trace::Status::error(""), "{send:?}");
    assert_eq!(attr(send, "error.type").as_deref(), Some("MessageSizeTooLarge"));
    for p in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{p}", path.display()));
    }
}
