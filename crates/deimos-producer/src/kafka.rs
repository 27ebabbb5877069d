//! [`KafkaBackend`]: publishing through librdkafka.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deimos_core::redact;
use deimos_metrics::{catalogue, events};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult as RdDelivery, Producer, ProducerContext, ThreadedProducer};
use serde_json::Value as Json;

use crate::backend::{Delivered, DeliveryError, DeliveryTracker, OutgoingBatch, Pending, PublishBackend};
use crate::error::BackendError;
use crate::partitioner::Partitioner;

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// How long a topic's partition count is trusted before it is fetched again, unless the builder says otherwise.
const PARTITION_COUNT_TTL: Duration = Duration::from_secs(300);

/// A publish backend on librdkafka (rdkafka's `ThreadedProducer`).
///
/// Defaults: `acks=all` and `enable.idempotence=true` (no duplicates or reordering from retries),
/// `linger.ms=5`, and the [`Partitioner`] chosen ([`Partitioner::Consistent`] unless set). Every librdkafka
/// producer setting can be passed through with [`KafkaBackendBuilder::kafka_setting`].
///
/// [`enqueue`](PublishBackend::enqueue) returns once librdkafka has queued the messages (waiting, not
/// failing, while its queue is full); the returned [`Pending`] completes from the delivery reports. Nothing
/// is ever flushed per batch. Dropping the backend flushes what is still queued for up to the
/// [close timeout](KafkaBackendBuilder::close_timeout); call [`flush`](Self::flush) to do it explicitly.
///
/// Metrics: `publish{status=success,topic}` per acknowledged message and `publish_error{topic}` per failed
/// one, tagged with the producer's configured topic. Events: `produce` per enqueued batch and `produce_error`
/// per failed delivery.
#[derive(Clone)]
pub struct KafkaBackend {
    inner: Arc<Inner>,
}

struct Inner {
    producer: ThreadedProducer<DeliveryContext>,
    partitioner: Partitioner,
    max_message_bytes: usize,
    close_timeout: Duration,
    partition_counts: Mutex<HashMap<String, (i32, Instant)>>,
    partition_count_ttl: Duration,
    metadata_timeout: Duration,
    /// The librdkafka settings the producer was created with (the builder's, `partitioner` included).
    settings: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("partitioner", &self.inner.partitioner)
            .field("max_message_bytes", &self.inner.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // rdkafka purges whatever is still queued when the producer is dropped: deliver it first.
        if let Err(e) = self.producer.flush(self.close_timeout) {
            tracing::warn!(error = %e, in_flight = self.producer.in_flight_count(),
                "messages still undelivered when the Kafka producer closed; they are lost unless retried by the caller");
        }
    }
}

/// Builds a [`KafkaBackend`].
///
/// Its `Debug` output and the errors of [`build`](Self::build) show the settings without the values of secret
/// ones (`sasl.*`, `ssl.key.*`, passwords, …; see `deimos_core::redact`).
#[derive(Clone)]
#[must_use]
pub struct KafkaBackendBuilder {
    settings: BTreeMap<String, String>,
    partitioner: Partitioner,
    close_timeout: Duration,
    metadata_timeout: Duration,
    partition_count_ttl: Duration,
}

impl fmt::Debug for KafkaBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let KafkaBackendBuilder {
            settings,
            partitioner,
            close_timeout,
            metadata_timeout,
            partition_count_ttl,
        } = self;
        f.debug_struct("KafkaBackendBuilder")
            .field("settings", &redact::settings(settings))
            .field("partitioner", partitioner)
            .field("close_timeout", close_timeout)
            .field("metadata_timeout", metadata_timeout)
            .field("partition_count_ttl", partition_count_ttl)
            .finish()
    }
}

impl KafkaBackend {
    /// A builder with the defaults above.
    pub fn builder() -> KafkaBackendBuilder {
        let mut settings = BTreeMap::new();
        for (k, v) in [
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "1000000"),
        ] {
            settings.insert(k.to_string(), v.to_string());
        }
        KafkaBackendBuilder {
            settings,
            partitioner: Partitioner::default(),
            close_timeout: Duration::from_secs(30),
            metadata_timeout: Duration::from_secs(10),
            partition_count_ttl: PARTITION_COUNT_TTL,
        }
    }

    /// A librdkafka setting this backend was built with (a default of the builder, or one given to it), as
    /// given; `None` when it was not set, and librdkafka uses its own default.
    pub fn kafka_setting(&self, key: &str) -> Option<&str> {
        self.inner.settings.get(key).map(String::as_str)
    }

    /// A builder with this backend's settings, partitioner and timeouts: to build another backend like this one
    /// (a separate librdkafka producer), with some settings changed.
    pub fn to_builder(&self) -> KafkaBackendBuilder {
        let inner = &self.inner;
        KafkaBackendBuilder {
            settings: inner.settings.clone(),
            partitioner: inner.partitioner,
            close_timeout: inner.close_timeout,
            metadata_timeout: inner.metadata_timeout,
            partition_count_ttl: inner.partition_count_ttl,
        }
    }

    /// The partitioner in use.
    pub fn partitioner(&self) -> Partitioner {
        self.inner.partitioner
    }

    /// Waits up to `timeout` for every queued message to be delivered or failed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), BackendError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.producer.flush(timeout))
            .await
            .map_err(|e| BackendError::Runtime(e.to_string()))?
            .map_err(|source| BackendError::Flush {
                in_flight: self.inner.producer.in_flight_count(),
                source,
            })
    }

    /// Messages queued or in flight.
    pub fn in_flight(&self) -> i32 {
        self.inner.producer.in_flight_count()
    }

    /// The partition count of `topic`, from librdkafka's metadata (cached for
    /// [`partition_count_ttl`](KafkaBackendBuilder::partition_count_ttl), five minutes by default). Fetching it
    /// waits for the brokers up to 10 s.
    pub async fn partition_count(&self, topic: &str) -> Result<i32, BackendError> {
        if let Some((n, at)) = self.cached_count(topic)
            && at.elapsed() < self.inner.partition_count_ttl
        {
            return Ok(n);
        }
        let inner = Arc::clone(&self.inner);
        let name = topic.to_string();
        let count = tokio::task::spawn_blocking(move || {
            let md = inner
                .producer
                .client()
                .fetch_metadata(Some(&name), inner.metadata_timeout)?;
            Ok::<_, KafkaError>(md.topics().first().map_or(0, |t| t.partitions().len() as i32))
        })
        .await
        .map_err(|e| BackendError::Runtime(e.to_string()))?
        .map_err(|source| BackendError::Metadata {
            topic: topic.to_string(),
            source,
        })?;
        if count <= 0 {
            return Err(BackendError::NoPartitions {
                topic: topic.to_string(),
            });
        }
        if let Ok(mut c) = self.inner.partition_counts.lock() {
            c.insert(topic.to_string(), (count, Instant::now()));
        }
        Ok(count)
    }

    fn cached_count(&self, topic: &str) -> Option<(i32, Instant)> {
        self.inner.partition_counts.lock().ok()?.get(topic).copied()
    }
}

impl KafkaBackendBuilder {
    /// The brokers to connect to (`bootstrap.servers`).
    pub fn bootstrap_servers(self, servers: impl Into<String>) -> Self {
        self.kafka_setting("bootstrap.servers", servers)
    }

    /// Sets any librdkafka producer setting (see librdkafka's CONFIGURATION.md), overriding the defaults.
    pub fn kafka_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// Sets several librdkafka settings (a map, or a map's reference, or pairs); see
    /// [`kafka_setting`](Self::kafka_setting).
    pub fn kafka_settings<K: Into<String>, V: Into<String>>(
        mut self,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.settings
            .extend(settings.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// How keys map to partitions (default [`Partitioner::Consistent`]).
    pub fn partitioner(mut self, partitioner: Partitioner) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// How long dropping the backend waits for queued messages (default 30 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long a topic's partition count, once fetched, is used before it is fetched again (default 5 min).
    pub fn partition_count_ttl(mut self, ttl: Duration) -> Self {
        self.partition_count_ttl = ttl;
        self
    }

    /// Creates the librdkafka producer. Fails without brokers or on an invalid setting; does not contact the
    /// brokers.
    pub fn build(mut self) -> Result<KafkaBackend, BackendError> {
        let has_brokers = ["bootstrap.servers", "metadata.broker.list", "test.mock.num.brokers"]
            .iter()
            .any(|k| self.settings.get(*k).is_some_and(|v| !v.trim().is_empty()));
        if !has_brokers {
            return Err(BackendError::NoBrokers);
        }
        self.settings.insert(
            "partitioner".to_string(),
            self.partitioner.librdkafka_name().to_string(),
        );
        let mut config = ClientConfig::new();
        for (k, v) in &self.settings {
            config.set(k, v);
        }
        let max_message_bytes = match self.settings.get("message.max.bytes") {
            None => DEFAULT_MAX_MESSAGE_BYTES,
            Some(v) => v.parse().map_err(|_| BackendError::Setting {
                key: "message.max.bytes".to_string(),
                value: v.clone(),
            })?,
        };
        let producer = config
            .create_with_context(DeliveryContext)
            .map_err(|source| BackendError::Create {
                source: redact::kafka_error(source, &config),
            })?;
        Ok(KafkaBackend {
            inner: Arc::new(Inner {
                producer,
                partitioner: self.partitioner,
                max_message_bytes,
                close_timeout: self.close_timeout,
                partition_counts: Mutex::new(HashMap::new()),
                partition_count_ttl: self.partition_count_ttl,
                metadata_timeout: self.metadata_timeout,
                settings: self.settings,
            }),
        })
    }
}

/// What the delivery callback needs about a batch.
struct BatchState {
    tracker: Arc<DeliveryTracker>,
    producer: Arc<str>,
    configured_topic: Arc<str>,
    /// The coerced payloads, kept only when someone listens to `produce_error`.
    payloads: Option<Vec<Json>>,
    published: metrics::Counter,
    failed: metrics::Counter,
}

impl BatchState {
    fn fail(&self, index: usize, error: DeliveryError) {
        self.failed.increment(1);
        tracing::warn!(producer = %self.producer, topic = %self.configured_topic, error = %error, "message not delivered");
        events::emit_with(events::PRODUCE_ERROR, || {
            let payload = self
                .payloads
                .as_ref()
                .and_then(|p| p.get(index).cloned())
                .unwrap_or(Json::Null);
            events::Event::new(events::PRODUCE_ERROR, &*self.configured_topic)
                .producer(&*self.producer)
                .payloads(vec![payload])
                .error(events::EventError::new(error.kind(), error.to_string()))
        });
        self.tracker.complete(index, Err(error));
    }
}

struct Ticket {
    batch: Arc<BatchState>,
    index: usize,
}

/// Routes delivery reports to their batch.
struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &RdDelivery<'_>, ticket: Box<Ticket>) {
        match result {
            Ok(msg) => {
                ticket.batch.published.increment(1);
                let offset = (msg.offset() >= 0).then_some(msg.offset());
                ticket
                    .batch
                    .tracker
                    .complete(ticket.index, Ok(Delivered::new(msg.partition(), offset)));
            }
            Err((err, msg)) => {
                let size = msg.payload_len() + msg.key().map_or(0, <[u8]>::len);
                ticket.batch.fail(ticket.index, delivery_error(err, size, None));
            }
        }
    }
}

/// The batch's headers, then the message's own, as librdkafka takes them.
fn owned_headers(batch: &[(String, Vec<u8>)], message: &[(String, Vec<u8>)]) -> OwnedHeaders {
    batch.iter().chain(message).fold(
        OwnedHeaders::new_with_capacity(batch.len() + message.len()),
        |h, (k, v)| h.insert(Header { key: k, value: Some(v) }),
    )
}

fn delivery_error(err: &KafkaError, size: usize, limit: Option<usize>) -> DeliveryError {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => DeliveryError::TooLarge {
            size,
            limit: limit.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
        },
        Some(code) => DeliveryError::Kafka {
            code: format!("{code:?}"),
            message: err.to_string(),
        },
        None => DeliveryError::Kafka {
            code: "Unknown".to_string(),
            message: err.to_string(),
        },
    }
}

#[async_trait]
impl PublishBackend for KafkaBackend {
    async fn enqueue(&self, batch: OutgoingBatch) -> Pending {
        let inner = &self.inner;
        let started = Instant::now();
        let tracker = DeliveryTracker::new(batch.messages.len());
        let want_payloads = events::is_subscribed(events::PRODUCE_ERROR);
        let topic_label = batch.configured_topic.to_string();
        let state = Arc::new(BatchState {
            tracker: Arc::clone(&tracker),
            producer: Arc::clone(&batch.producer),
            configured_topic: Arc::clone(&batch.configured_topic),
            payloads: want_payloads.then(|| {
                batch
                    .messages
                    .iter()
                    .map(|m| m.payload.clone().unwrap_or(Json::Null))
                    .collect()
            }),
            published: metrics::counter!(catalogue::PUBLISH.name, "status" => "success", "topic" => topic_label.clone()),
            failed: metrics::counter!(catalogue::PUBLISH_ERROR.name, "topic" => topic_label),
        });
        let headers = (!batch.headers.is_empty()).then(|| owned_headers(&batch.headers, &[]));
        let mut partition_count = None;
        for (index, m) in batch.messages.iter().enumerate() {
            let size = m.size();
            if size > inner.max_message_bytes {
                state.fail(
                    index,
                    DeliveryError::TooLarge {
                        size,
                        limit: inner.max_message_bytes,
                    },
                );
                continue;
            }
            // A partition key that differs from the key: partition here, exactly as librdkafka would.
            let partition = match m.partition_key.as_deref() {
                _ if m.partition.is_some() => m.partition,
                Some(pk) if Some(pk) != m.key.as_deref() => {
                    let n = match partition_count {
                        Some(n) => n,
                        None => match self.partition_count(&batch.topic).await {
                            Ok(n) => *partition_count.insert(n),
                            Err(e) => {
                                state.fail(index, DeliveryError::Backend(e.to_string()));
                                continue;
                            }
                        },
                    };
                    Some(inner.partitioner.partition(pk, n))
                }
                _ => None,
            };
            let ticket = Box::new(Ticket {
                batch: Arc::clone(&state),
                index,
            });
            let mut record: BaseRecord<'_, [u8], [u8], Box<Ticket>> = BaseRecord::with_opaque_to(&batch.topic, ticket);
            if let Some(k) = m.key.as_deref() {
                record = record.key(k);
            }
            if let Some(v) = m.value.as_deref() {
                record = record.payload(v);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if m.headers.is_empty() {
                if let Some(h) = &headers {
                    record = record.headers(h.clone());
                }
            } else {
                record = record.headers(owned_headers(&batch.headers, &m.headers));
            }
            loop {
                match inner.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue is full: wait for deliveries to make room (back-pressure).
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((err, back)) => {
                        let ticket = back.delivery_opaque;
                        let error = delivery_error(&err, size, Some(inner.max_message_bytes));
                        ticket.batch.fail(ticket.index, error);
                        break;
                    }
                }
            }
        }
        events::emit_with(events::PRODUCE, || {
            events::Event::new(events::PRODUCE, &*batch.configured_topic)
                .producer(&*batch.producer)
                .payloads(
                    batch
                        .messages
                        .iter()
                        .map(|m| m.payload.clone().unwrap_or(Json::Null))
                        .collect(),
                )
                .duration(started.elapsed())
        });
        tracker.pending()
    }
}
