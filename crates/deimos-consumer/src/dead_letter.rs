//! The dead-letter topic: messages given up on, with where they came from and why, in headers.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::BoxError;
use crate::handler::{ErrorStage, Headers};

/// Header: the topic the message was consumed from.
pub const HEADER_ORIGINAL_TOPIC: &str = "deimos.dlq.original.topic";
/// Header: its partition (decimal text).
pub const HEADER_ORIGINAL_PARTITION: &str = "deimos.dlq.original.partition";
/// Header: its offset (decimal text).
pub const HEADER_ORIGINAL_OFFSET: &str = "deimos.dlq.original.offset";
/// Header: its Kafka timestamp in milliseconds since the epoch (decimal text); absent when it had none.
pub const HEADER_ORIGINAL_TIMESTAMP: &str = "deimos.dlq.original.timestamp";
/// Header: the consumer group that gave up on it.
pub const HEADER_GROUP_ID: &str = "deimos.dlq.group.id";
/// Header: what failed: `key_decode`, `value_decode` or `handler` (see [`ErrorStage`]).
pub const HEADER_ERROR_TYPE: &str = "deimos.dlq.error.type";
/// Header: the error message, with its sources joined by `": "`.
pub const HEADER_ERROR_MESSAGE: &str = "deimos.dlq.error.message";
/// Header: how many attempts were made (decimal text).
pub const HEADER_ATTEMPTS: &str = "deimos.dlq.attempts";

/// How long one dead-letter delivery may take before it counts as failed (and is retried).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A message to dead-letter, as it was on the wire.
pub(crate) struct DeadLetterRecord<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: &'a Headers,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
}

/// A message the dead-letter topic received from an [`InlineListener`](crate::InlineListener): the original raw
/// key and value, the original headers followed by the `deimos.dlq.*` ones.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterMessage {
    /// The dead-letter topic.
    pub topic: String,
    /// The original key, as it was on the wire.
    pub key: Option<Vec<u8>>,
    /// The original value, as it was on the wire.
    pub value: Option<Vec<u8>>,
    /// The original headers, then the `deimos.dlq.*` headers.
    pub headers: Headers,
}

/// Where dead letters go.
enum Sink {
    Kafka(FutureProducer),
    /// Inline listeners (tests): kept until taken.
    Memory(Mutex<Vec<DeadLetterMessage>>),
}

/// A listener's dead-letter topic and where its messages go.
pub(crate) struct DeadLetter {
    topic: String,
    sink: Sink,
}

impl DeadLetter {
    pub(crate) fn new(topic: String, producer: FutureProducer) -> DeadLetter {
        DeadLetter {
            topic,
            sink: Sink::Kafka(producer),
        }
    }

    /// A dead-letter topic that keeps its messages in memory.
    pub(crate) fn in_memory(topic: String) -> DeadLetter {
        DeadLetter {
            topic,
            sink: Sink::Memory(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The messages kept in memory since the last call (none for a Kafka dead-letter topic).
    pub(crate) fn take(&self) -> Vec<DeadLetterMessage> {
        match &self.sink {
            Sink::Kafka(_) => Vec::new(),
            Sink::Memory(kept) => std::mem::take(&mut *kept.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }

    /// Sends one record (raw key and value, original headers, plus the `deimos.dlq.*` headers) and waits
    /// for the broker's acknowledgement.
    pub(crate) async fn send(
        &self,
        record: &DeadLetterRecord<'_>,
        source_topic: &str,
        group_id: &str,
        stage: ErrorStage,
        error_message: &str,
        attempts: u32,
    ) -> Result<(), BoxError> {
        let mut headers: Vec<(&str, Option<std::borrow::Cow<'_, [u8]>>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k, v.map(std::borrow::Cow::Borrowed)))
            .collect();
        let mut add = |key: &'static str, value: String| headers.push((key, Some(value.into_bytes().into())));
        add(HEADER_ORIGINAL_TOPIC, source_topic.to_string());
        add(HEADER_ORIGINAL_PARTITION, record.partition.to_string());
        add(HEADER_ORIGINAL_OFFSET, record.offset.to_string());
        if let Some(ts) = record.timestamp {
            add(HEADER_ORIGINAL_TIMESTAMP, ts.to_string());
        }
        add(HEADER_GROUP_ID, group_id.to_string());
        add(HEADER_ERROR_TYPE, stage.as_str().to_string());
        add(HEADER_ERROR_MESSAGE, error_message.to_string());
        add(HEADER_ATTEMPTS, attempts.to_string());

        let producer = match &self.sink {
            Sink::Kafka(producer) => producer,
            Sink::Memory(kept) => {
                let message = DeadLetterMessage {
                    topic: self.topic.clone(),
                    key: record.key.map(<[u8]>::to_vec),
                    value: record.value.map(<[u8]>::to_vec),
                    headers: Headers::from(
                        headers
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.map(std::borrow::Cow::into_owned)))
                            .collect::<Vec<_>>(),
                    ),
                };
                kept.lock().unwrap_or_else(PoisonError::into_inner).push(message);
                return Ok(());
            }
        };
        let owned = headers
            .iter()
            .fold(OwnedHeaders::new_with_capacity(headers.len()), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            });
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(owned);
        if let Some(key) = record.key {
            out = out.key(key);
        }
        if let Some(value) = record.value {
            out = out.payload(value);
        }
        match producer.send(out, DELIVERY_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(Box::new(error)),
        }
    }
}
