//! The dead-letter topic: messages given up on, with where they came from and why, in headers.

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

/// A listener's dead-letter topic and the producer that writes to it.
pub(crate) struct DeadLetter {
    topic: String,
    producer: FutureProducer,
}

impl DeadLetter {
    pub(crate) fn new(topic: String, producer: FutureProducer) -> DeadLetter {
        DeadLetter { topic, producer }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
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
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 8);
        for (key, value) in record.headers.iter() {
            headers = headers.insert(Header { key, value });
        }
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let attempts = attempts.to_string();
        let mut add = |key: &str, value: &str| {
            let h = std::mem::replace(&mut headers, OwnedHeaders::new());
            headers = h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        };
        add(HEADER_ORIGINAL_TOPIC, source_topic);
        add(HEADER_ORIGINAL_PARTITION, &partition);
        add(HEADER_ORIGINAL_OFFSET, &offset);
        if let Some(ts) = record.timestamp {
            add(HEADER_ORIGINAL_TIMESTAMP, &ts.to_string());
        }
        add(HEADER_GROUP_ID, group_id);
        add(HEADER_ERROR_TYPE, stage.as_str());
        add(HEADER_ERROR_MESSAGE, error_message);
        add(HEADER_ATTEMPTS, &attempts);

        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = record.key {
            out = out.key(key);
        }
        if let Some(value) = record.value {
            out = out.payload(value);
        }
        match self.producer.send(out, DELIVERY_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(Box::new(error)),
        }
    }
}
