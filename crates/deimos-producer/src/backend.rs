//! The publish backend trait and what goes through it.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde_json::Value as Json;
use tokio::sync::Notify;

/// One encoded message on its way out.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutgoingMessage {
    /// The encoded key (framed Avro for `Schema`/`Field` keys, raw bytes for `Plain`/`None`), if any.
    pub key: Option<Vec<u8>>,
    /// The framed Avro value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// The partition key, when it was given or computed and differs from the key. Partitioning uses it,
    /// else the key.
    pub partition_key: Option<Vec<u8>>,
    /// The key before encoding (Deimos's test backend records this one).
    pub decoded_key: Option<Json>,
    /// The coerced payload as it was encoded (`null` for a tombstone). Filled only when the backend
    /// [wants payloads](PublishBackend::wants_payloads) or someone subscribed to the `produce` events.
    pub payload: Option<Json>,
    /// The partition to send to, when the sender already knows it (the outbox relay, which partitioned the
    /// message when it was written). `None`: partitioned by the partition key, else the key.
    pub partition: Option<i32>,
    /// Headers of this message alone, sent after the batch's headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutgoingMessage {
    /// A message with these bytes.
    pub fn new(key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> OutgoingMessage {
        OutgoingMessage {
            key,
            value,
            partition_key: None,
            decoded_key: None,
            payload: None,
            partition: None,
            headers: Vec::new(),
        }
    }

    /// Sends to this partition instead of partitioning by key.
    pub fn partition(mut self, partition: Option<i32>) -> OutgoingMessage {
        self.partition = partition;
        self
    }

    /// Adds headers of this message alone.
    pub fn headers(mut self, headers: Vec<(String, Vec<u8>)>) -> OutgoingMessage {
        self.headers = headers;
        self
    }

    /// With a partition key.
    pub fn partition_key(mut self, partition_key: Option<Vec<u8>>) -> OutgoingMessage {
        self.partition_key = partition_key;
        self
    }

    /// Key and value bytes together: what counts against a size limit.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len)
    }

    /// The bytes partitioning uses: the partition key, else the key.
    pub fn partitioning_bytes(&self) -> Option<&[u8]> {
        self.partition_key.as_deref().or(self.key.as_deref())
    }
}

/// The messages of one publish call (or one group of at most `max_batch_size` of them), all for one topic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutgoingBatch {
    /// The producer's name.
    pub producer: Arc<str>,
    /// The producer's configured topic, with the prefix: metrics and events are tagged with it.
    pub configured_topic: Arc<str>,
    /// Where the messages go: the configured topic or the call's override, with the prefix.
    pub topic: Arc<str>,
    /// Headers sent with every message of the call.
    pub headers: Arc<[(String, Vec<u8>)]>,
    /// The messages, in order.
    pub messages: Vec<OutgoingMessage>,
    /// The producer has no keys (`key_config none`): a database backend stores no key, as Deimos's DB backend
    /// does, and keeps a given key as the partition key only.
    pub keyless: bool,
}

impl OutgoingBatch {
    /// A batch of `messages` for `topic` from `producer` (configured for `configured_topic`, which labels its
    /// metrics), with `headers` on every message.
    pub fn new(
        producer: impl Into<Arc<str>>,
        configured_topic: impl Into<Arc<str>>,
        topic: impl Into<Arc<str>>,
        headers: Vec<(String, Vec<u8>)>,
        messages: Vec<OutgoingMessage>,
    ) -> OutgoingBatch {
        OutgoingBatch {
            producer: producer.into(),
            configured_topic: configured_topic.into(),
            topic: topic.into(),
            headers: headers.into(),
            messages,
            keyless: false,
        }
    }

    /// Marks the batch as coming from a producer without keys (see [`keyless`](Self::keyless)).
    #[must_use]
    pub fn keyless(mut self, yes: bool) -> OutgoingBatch {
        self.keyless = yes;
        self
    }
}

/// Where a message was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivered {
    /// The partition.
    pub partition: i32,
    /// The offset in the partition, when the backend knows it.
    pub offset: Option<i64>,
}

impl Delivered {
    /// A delivery to `partition` at `offset`.
    pub fn new(partition: i32, offset: Option<i64>) -> Delivered {
        Delivered { partition, offset }
    }
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The message is larger than the backend accepts.
    #[error(
        "message is {size} bytes (key + value), over the limit of {limit} bytes (librdkafka `message.max.bytes`); make it smaller or raise the limit on the producer and the broker/topic (`max.message.bytes`)"
    )]
    TooLarge {
        /// Key + value bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The Kafka client or broker refused or lost the message.
    #[error("Kafka did not accept the message: {message} ({code})")]
    Kafka {
        /// librdkafka's error code name, e.g. `MessageTimedOut`.
        code: String,
        /// The error text.
        message: String,
    },
    /// Another backend failure.
    #[error("{0}")]
    Backend(String),
}

impl DeliveryError {
    /// A short name of the kind of error (for events and logs).
    pub fn kind(&self) -> String {
        match self {
            DeliveryError::TooLarge { .. } => "MessageSizeTooLarge".to_string(),
            DeliveryError::Kafka { code, .. } => code.clone(),
            DeliveryError::Backend(_) => "BackendError".to_string(),
        }
    }
}

/// The outcome of one message.
pub type DeliveryResult = Result<Delivered, DeliveryError>;

/// Collects the per-message results of a batch as they arrive, from any thread.
#[derive(Debug)]
pub struct DeliveryTracker {
    results: Box<[OnceLock<DeliveryResult>]>,
    remaining: AtomicUsize,
    done: Notify,
}

impl DeliveryTracker {
    /// A tracker for `len` messages.
    pub fn new(len: usize) -> Arc<DeliveryTracker> {
        let tracker = Arc::new(DeliveryTracker {
            results: (0..len).map(|_| OnceLock::new()).collect(),
            remaining: AtomicUsize::new(len),
            done: Notify::new(),
        });
        if len == 0 {
            tracker.done.notify_one();
        }
        tracker
    }

    /// Records the result of message `index` (the first result for an index wins).
    pub fn complete(&self, index: usize, result: DeliveryResult) {
        let fresh = self.results.get(index).is_some_and(|slot| slot.set(result).is_ok());
        if fresh && self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// A handle on the results.
    pub fn pending(self: &Arc<Self>) -> Pending {
        Pending {
            tracker: Arc::clone(self),
        }
    }
}

/// The results of an enqueued batch, some of which may still be on their way.
pub struct Pending {
    tracker: Arc<DeliveryTracker>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("remaining", &self.tracker.remaining.load(Ordering::Relaxed))
            .finish()
    }
}

impl Pending {
    /// Results that are all known already.
    pub fn ready(results: Vec<DeliveryResult>) -> Pending {
        let tracker = DeliveryTracker::new(results.len());
        for (i, r) in results.into_iter().enumerate() {
            tracker.complete(i, r);
        }
        tracker.pending()
    }

    /// What is known now: `None` for messages still in flight.
    pub fn so_far(&self) -> Vec<Option<DeliveryResult>> {
        self.tracker.results.iter().map(|r| r.get().cloned()).collect()
    }

    /// Waits until every message has its result.
    pub async fn wait(self) -> Vec<DeliveryResult> {
        while self.tracker.remaining.load(Ordering::Acquire) > 0 {
            self.tracker.done.notified().await;
        }
        self.tracker
            .results
            .iter()
            .map(|r| {
                r.get()
                    .cloned()
                    .unwrap_or_else(|| Err(DeliveryError::Backend("no delivery report".to_string())))
            })
            .collect()
    }
}

/// Where producers send encoded messages: Kafka ([`KafkaBackend`](crate::KafkaBackend)), memory
/// ([`MemoryBackend`](crate::MemoryBackend)), or a database outbox.
#[async_trait]
pub trait PublishBackend: Send + Sync + fmt::Debug + 'static {
    /// Hands the batch over and returns once every message is queued (or refused). The returned
    /// [`Pending`] completes when each message is delivered or failed. Dropping it does not cancel anything.
    async fn enqueue(&self, batch: OutgoingBatch) -> Pending;

    /// Whether the backend wants [`OutgoingMessage::payload`] and [`OutgoingMessage::decoded_key`] filled
    /// (decoding costs time; the Kafka backend does not need them).
    fn wants_payloads(&self) -> bool {
        false
    }
}

#[async_trait]
impl<B: PublishBackend + ?Sized> PublishBackend for Arc<B> {
    async fn enqueue(&self, batch: OutgoingBatch) -> Pending {
        (**self).enqueue(batch).await
    }

    fn wants_payloads(&self) -> bool {
        (**self).wants_payloads()
    }
}
