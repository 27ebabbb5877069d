//! [`MemoryBackend`]: records what would have been sent, in process, deterministically.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value as Json;

use crate::backend::{Delivered, DeliveryError, OutgoingBatch, Pending, PublishBackend};
use crate::partitioner::Partitioner;

/// A message the [`MemoryBackend`] received (Deimos's test backend's `sent_messages` entry).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SentMessage {
    /// The producer's name.
    pub producer: String,
    /// The topic it was sent to.
    pub topic: String,
    /// The key before encoding.
    pub key: Option<Json>,
    /// The partition key as text (lossy UTF-8), else the unencoded key as text: Deimos's `partition_key || key`.
    pub partition_key: Option<String>,
    /// The coerced payload as encoded; `None` for a tombstone.
    pub payload: Option<Json>,
    /// The headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The encoded key.
    pub encoded_key: Option<Vec<u8>>,
    /// The encoded (framed) value.
    pub encoded_value: Option<Vec<u8>>,
    /// The partition it was assigned.
    pub partition: i32,
    /// Its offset within the partition (0, 1, 2, … per topic and partition).
    pub offset: i64,
}

#[derive(Debug, Default)]
struct State {
    sent: Vec<SentMessage>,
    next_offset: HashMap<(String, i32), i64>,
}

/// A publish backend that keeps every message in memory. Cloning shares the record.
///
/// Partitions are assigned with the same [`Partitioner`] as Kafka over a fixed partition count (1 unless
/// [`with_partitions`](Self::with_partitions)); keyless messages go to partition 0.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
    partitions: i32,
    partitioner: Partitioner,
    max_message_bytes: Option<usize>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// An empty backend with one partition per topic.
    pub fn new() -> MemoryBackend {
        MemoryBackend {
            state: Arc::default(),
            partitions: 1,
            partitioner: Partitioner::default(),
            max_message_bytes: None,
        }
    }

    /// With `n` partitions per topic, partitioned by `partitioner`.
    pub fn with_partitions(mut self, n: i32, partitioner: Partitioner) -> MemoryBackend {
        self.partitions = n.max(1);
        self.partitioner = partitioner;
        self
    }

    /// Refuses messages whose key + value exceed `limit` bytes, as Kafka refuses those over
    /// `message.max.bytes`.
    pub fn max_message_bytes(mut self, limit: usize) -> MemoryBackend {
        self.max_message_bytes = Some(limit);
        self
    }

    /// Every message received, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.lock().sent.clone()
    }

    /// The messages sent to `topic`, in order.
    pub fn sent_to(&self, topic: &str) -> Vec<SentMessage> {
        self.lock().sent.iter().filter(|m| m.topic == topic).cloned().collect()
    }

    /// Forgets every message.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.sent.clear();
        state.next_offset.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl PublishBackend for MemoryBackend {
    async fn enqueue(&self, batch: OutgoingBatch) -> Pending {
        let mut state = self.lock();
        let mut results = Vec::with_capacity(batch.messages.len());
        for m in batch.messages {
            if let Some(limit) = self.max_message_bytes.filter(|l| m.size() > *l) {
                results.push(Err(DeliveryError::TooLarge { size: m.size(), limit }));
                continue;
            }
            let partition = m.partition.unwrap_or_else(|| {
                m.partitioning_bytes()
                    .map_or(0, |k| self.partitioner.partition(k, self.partitions))
            });
            let next = state
                .next_offset
                .entry((batch.topic.to_string(), partition))
                .or_insert(0);
            let offset = *next;
            *next += 1;
            let partition_key = match (&m.partition_key, &m.decoded_key) {
                (Some(pk), _) => Some(String::from_utf8_lossy(pk).into_owned()),
                (None, Some(Json::String(k))) => Some(k.clone()),
                (None, Some(k)) => Some(k.to_string()),
                (None, None) => None,
            };
            state.sent.push(SentMessage {
                producer: batch.producer.to_string(),
                topic: batch.topic.to_string(),
                key: m.decoded_key,
                partition_key,
                payload: m.payload.filter(|p| !p.is_null()),
                headers: batch.headers.iter().cloned().chain(m.headers).collect(),
                encoded_key: m.key,
                encoded_value: m.value,
                partition,
                offset,
            });
            results.push(Ok(Delivered::new(partition, Some(offset))));
        }
        Pending::ready(results)
    }

    fn wants_payloads(&self) -> bool {
        true
    }
}
