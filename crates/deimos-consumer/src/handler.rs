//! What handlers implement and what they receive: [`Handler`], [`BatchHandler`], [`Message`], [`Batch`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use deimos_keys::DecodedKey;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::HandlerError;

/// Handles one message at a time (Deimos's `consume(payload, metadata)`).
///
/// `Payload` is the type values are decoded into: a serde struct for typed payloads, or
/// `serde_json::Value` for dynamic ones. Values are read with the listener's local schema as the reader
/// schema, so fields the writer lacks get their defaults.
///
/// Returning `Err` hands the error to the listener's error policy (see [`ErrorPolicy`](crate::ErrorPolicy)).
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The type payloads are decoded into.
    type Payload: DeserializeOwned + Serialize + Send + 'static;

    /// Handles one message. `message.payload` is `None` for a tombstone.
    async fn consume(&self, message: Message<Self::Payload>) -> Result<(), HandlerError>;

    /// Deimos's per-consumer `fatal_error?`: whether this error should be treated as fatal (retried with
    /// backoff) even when the listener's policy is to swallow errors. The default says no.
    fn fatal_error(&self, error: &HandlerError, context: &ErrorContext) -> bool {
        let _ = (error, context);
        false
    }
}

/// Handles a batch of messages of one partition at a time (Deimos's `consume_batch(payloads, metadata)`,
/// delivery `inline_batch`).
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// The type payloads are decoded into.
    type Payload: DeserializeOwned + Serialize + Send + 'static;

    /// Handles one batch. Tombstones are `None` entries of `batch.payloads`.
    async fn consume_batch(&self, batch: Batch<Self::Payload>) -> Result<(), HandlerError>;

    /// Deimos's per-consumer `fatal_error?` for batches. The default says no.
    fn fatal_error(&self, error: &HandlerError, context: &ErrorContext) -> bool {
        let _ = (error, context);
        false
    }
}

#[async_trait]
impl<H: Handler> Handler for Arc<H> {
    type Payload = H::Payload;

    async fn consume(&self, message: Message<Self::Payload>) -> Result<(), HandlerError> {
        (**self).consume(message).await
    }

    fn fatal_error(&self, error: &HandlerError, context: &ErrorContext) -> bool {
        (**self).fatal_error(error, context)
    }
}

#[async_trait]
impl<H: BatchHandler> BatchHandler for Arc<H> {
    type Payload = H::Payload;

    async fn consume_batch(&self, batch: Batch<Self::Payload>) -> Result<(), HandlerError> {
        (**self).consume_batch(batch).await
    }

    fn fatal_error(&self, error: &HandlerError, context: &ErrorContext) -> bool {
        (**self).fatal_error(error, context)
    }
}

/// Kafka message headers, in the order they were sent. A header may have no value (`None`).
///
/// Kafka header keys are bytes: a key that is not UTF-8 is kept as it came and is only visible through
/// [`iter_raw`](Self::iter_raw) (and re-sent as it came to a dead-letter topic); the name-based accessors see
/// UTF-8 keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The value of the first header called `name` (`None` if there is none or it has no value).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .and_then(|(_, v)| v.as_deref())
    }

    /// The value of the first header called `name`, if it is UTF-8 text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header called `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_deref())
    }

    /// Appends a header.
    pub fn push(&mut self, name: impl Into<String>, value: Option<Vec<u8>>) {
        self.0.push((name.into().into_bytes(), value));
    }

    /// Appends a header whose key is given as bytes (it need not be UTF-8).
    pub fn push_raw(&mut self, name: impl Into<Vec<u8>>, value: Option<Vec<u8>>) {
        self.0.push((name.into(), value));
    }

    /// The headers whose key is UTF-8, in order (see [`iter_raw`](Self::iter_raw) for all of them).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.0
            .iter()
            .filter_map(|(k, v)| std::str::from_utf8(k).ok().map(|k| (k, v.as_deref())))
    }

    /// All headers with their keys as bytes, in order.
    pub fn iter_raw(&self) -> impl ExactSizeIterator<Item = (&[u8], Option<&[u8]>)> {
        self.0.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers as (key bytes, value) pairs.
    pub fn into_raw(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.0
    }
}

impl From<Vec<(String, Option<Vec<u8>>)>> for Headers {
    fn from(v: Vec<(String, Option<Vec<u8>>)>) -> Headers {
        Headers(v.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect())
    }
}

impl FromIterator<(Vec<u8>, Option<Vec<u8>>)> for Headers {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>>(iter: I) -> Headers {
        Headers(iter.into_iter().collect())
    }
}

/// One decoded message, as a [`Handler`] receives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message<P> {
    /// The decoded value; `None` for a tombstone (a message without a value).
    pub payload: Option<P>,
    /// Where the message came from and its key.
    pub metadata: Metadata,
}

impl<P> Message<P> {
    /// A message, for testing handlers.
    pub fn new(payload: Option<P>, metadata: Metadata) -> Message<P> {
        Message { payload, metadata }
    }
}

/// Everything about a message besides its value (Deimos's consumer `metadata`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metadata {
    /// The key, decoded per the listener's key config (`None` when the message has no key).
    pub key: Option<DecodedKey>,
    /// The key bytes as they were on the wire.
    pub raw_key: Option<Bytes>,
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The message's offset.
    pub offset: i64,
    /// The message's headers.
    pub headers: Headers,
    /// The Kafka timestamp (milliseconds since the epoch), if the message has one.
    pub timestamp: Option<i64>,
    /// The listener's consumer group.
    pub group_id: Arc<str>,
    /// How many times this message was tried before (0 on the first attempt; see [`ErrorPolicy::Fatal`](crate::ErrorPolicy::Fatal)).
    pub retry_count: u32,
}

impl Metadata {
    /// Metadata with a topic, partition and offset and nothing else, for testing handlers; set the other
    /// fields directly.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32, offset: i64) -> Metadata {
        Metadata {
            key: None,
            raw_key: None,
            topic: topic.into(),
            partition,
            offset,
            headers: Headers::new(),
            timestamp: None,
            group_id: Arc::from(""),
            retry_count: 0,
        }
    }
}

/// A batch of decoded messages from one partition, in offset order, as a [`BatchHandler`] receives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Batch<P> {
    /// The decoded values, `None` for tombstones.
    pub payloads: Vec<Option<P>>,
    /// The keys, offsets and headers of the same messages, in the same order, and the batch's metadata.
    pub metadata: BatchMetadata,
}

impl<P> Batch<P> {
    /// A batch, for testing handlers.
    pub fn new(payloads: Vec<Option<P>>, metadata: BatchMetadata) -> Batch<P> {
        Batch { payloads, metadata }
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    /// Whether the batch is empty (never, for batches the runner delivers).
    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }
}

/// Metadata of a batch (Deimos's batch `metadata`): per-message vectors in the order of the payloads.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchMetadata {
    /// The decoded keys, one per message.
    pub keys: Vec<Option<DecodedKey>>,
    /// The raw key bytes, one per message.
    pub raw_keys: Vec<Option<Bytes>>,
    /// The offsets, one per message.
    pub offsets: Vec<i64>,
    /// The headers, one per message.
    pub headers: Vec<Headers>,
    /// The Kafka timestamps (ms since the epoch), one per message.
    pub timestamps: Vec<Option<i64>>,
    /// The topic.
    pub topic: Arc<str>,
    /// The partition all messages come from.
    pub partition: i32,
    /// The offset of the first message.
    pub first_offset: i64,
    /// How many messages the batch holds.
    pub batch_size: usize,
    /// The listener's consumer group.
    pub group_id: Arc<str>,
    /// How many times this batch was tried before (0 on the first attempt).
    pub retry_count: u32,
}

impl BatchMetadata {
    /// Empty batch metadata for a topic and partition, for testing handlers; set the other fields directly.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> BatchMetadata {
        BatchMetadata {
            keys: Vec::new(),
            raw_keys: Vec::new(),
            offsets: Vec::new(),
            headers: Vec::new(),
            timestamps: Vec::new(),
            topic: topic.into(),
            partition,
            first_offset: 0,
            batch_size: 0,
            group_id: Arc::from(""),
            retry_count: 0,
        }
    }
}

/// Where handling failed: what the `fatal_error` predicates see next to the error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorContext {
    /// The topic.
    pub topic: Arc<str>,
    /// The consumer group.
    pub group_id: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset of the message, or of the first message of the batch.
    pub first_offset: i64,
    /// 1 for a message, the batch size for a batch.
    pub batch_size: usize,
    /// How many attempts failed before this one.
    pub retry_count: u32,
    /// What failed.
    pub stage: ErrorStage,
}

/// What failed while handling a message or batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorStage {
    /// The key could not be decoded; the error is a [`MessageDecodeError::Key`](crate::MessageDecodeError::Key).
    KeyDecode,
    /// The value could not be decoded; the error is a [`MessageDecodeError::Value`](crate::MessageDecodeError::Value).
    ValueDecode,
    /// The handler returned an error.
    Handler,
}

impl ErrorStage {
    /// `key_decode`, `value_decode` or `handler`: the value of the dead-letter header
    /// `deimos.dlq.error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorStage::KeyDecode => "key_decode",
            ErrorStage::ValueDecode => "value_decode",
            ErrorStage::Handler => "handler",
        }
    }
}

impl std::fmt::Display for ErrorStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
