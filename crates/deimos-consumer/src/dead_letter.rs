//! The dead-letter topic: messages given up on, with where they came from and why, in headers.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::handler::{ErrorStage, Headers};
use crate::kafka_headers::write_headers;

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
/// Header: present when the message was sent without its value because it was too large for the
/// dead-letter topic; says how large the value was.
pub const HEADER_VALUE_DROPPED: &str = "deimos.dlq.value.dropped";

/// The longest error message kept in [`HEADER_ERROR_MESSAGE`], in bytes; a longer one is cut at a character
/// boundary and ends with `… (truncated)`.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

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
    /// for the broker's acknowledgement. A record whose value is too large for the topic is sent again
    /// without it, with [`HEADER_VALUE_DROPPED`].
    pub(crate) async fn send(
        &self,
        record: &DeadLetterRecord<'_>,
        source_topic: &str,
        group_id: &str,
        stage: ErrorStage,
        error_message: &str,
        attempts: u32,
    ) -> Result<(), SendError> {
        let mut headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = record
            .headers
            .iter_raw()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        let mut add =
            |key: &'static str, value: String| headers.push((key.as_bytes().to_vec(), Some(value.into_bytes())));
        add(HEADER_ORIGINAL_TOPIC, source_topic.to_string());
        add(HEADER_ORIGINAL_PARTITION, record.partition.to_string());
        add(HEADER_ORIGINAL_OFFSET, record.offset.to_string());
        if let Some(ts) = record.timestamp {
            add(HEADER_ORIGINAL_TIMESTAMP, ts.to_string());
        }
        add(HEADER_GROUP_ID, group_id.to_string());
        add(HEADER_ERROR_TYPE, stage.as_str().to_string());
        add(HEADER_ERROR_MESSAGE, bounded(error_message));
        add(HEADER_ATTEMPTS, attempts.to_string());

        let producer = match &self.sink {
            Sink::Kafka(producer) => producer,
            Sink::Memory(kept) => {
                let message = DeadLetterMessage {
                    topic: self.topic.clone(),
                    key: record.key.map(<[u8]>::to_vec),
                    value: record.value.map(<[u8]>::to_vec),
                    headers: Headers::from_iter(headers),
                };
                kept.lock().unwrap_or_else(PoisonError::into_inner).push(message);
                return Ok(());
            }
        };
        match self.produce(producer, record.key, record.value, &headers).await {
            Err(SendError::TooLarge(error)) if record.value.is_some() => {
                let size = record.value.map_or(0, <[u8]>::len);
                tracing::warn!(
                    topic = source_topic,
                    partition = record.partition,
                    offset = record.offset,
                    dead_letter_topic = self.topic,
                    size,
                    %error,
                    "the dead letter is too large for its topic; sending it without its value"
                );
                headers.push((
                    HEADER_VALUE_DROPPED.as_bytes().to_vec(),
                    Some(
                        format!("the value ({size} bytes) was too large for the dead-letter topic: {error}")
                            .into_bytes(),
                    ),
                ));
                self.produce(producer, record.key, None, &headers).await
            }
            other => other,
        }
    }

    async fn produce(
        &self,
        producer: &FutureProducer,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), SendError> {
        let owned = write_headers(headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())));
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(owned);
        if let Some(key) = key {
            out = out.key(key);
        }
        if let Some(value) = value {
            out = out.payload(value);
        }
        match producer.send(out, DELIVERY_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(SendError::classify(error)),
        }
    }
}

/// Why a dead letter was not sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The message is larger than the topic or producer accepts.
    TooLarge(KafkaError),
    /// Sending again will not help: not authorised, no such topic, a record the broker refuses.
    Permanent(KafkaError),
    /// The broker was unreachable or slow; sending again later may work.
    Transient(KafkaError),
}

impl SendError {
    fn classify(error: KafkaError) -> SendError {
        use RDKafkaErrorCode as C;
        match error.rdkafka_error_code() {
            Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge) => SendError::TooLarge(error),
            Some(
                C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::UnknownTopic
                | C::InvalidTopic
                | C::InvalidRecord
                | C::InvalidMessage
                | C::UnsupportedForMessageFormat
                | C::PolicyViolation
                | C::Fatal,
            ) => SendError::Permanent(error),
            _ => SendError::Transient(error),
        }
    }

    /// Whether sending again later may work.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::TooLarge(e) => write!(f, "{e} (too large even without its value)"),
            SendError::Permanent(e) | SendError::Transient(e) => write!(f, "{e}"),
        }
    }
}

/// `message`, at most [`MAX_ERROR_MESSAGE_BYTES`] long.
fn bounded(message: &str) -> String {
    const CUT: &str = "… (truncated)";
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES - CUT.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_ERROR_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("… (truncated)"));
    }
}
