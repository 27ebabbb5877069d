//! [`last_messages`]: the last messages of a topic, read without a consumer group (Deimos's `InlineConsumer`),
//! for tools (`deimos tail`) and tests (`deimos-test`'s inline consumer).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use crate::error::ConsumerError;
use crate::inline::InlineMessage;

/// How long to wait for the topic's metadata: a reachable broker answers well within it.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The last `n` messages of `topic` across every partition, undecoded, oldest first (by timestamp, then
/// partition and offset).
///
/// It assigns the partitions itself from their watermarks, so it joins no consumer group and commits nothing;
/// `settings` are passed to librdkafka (TLS, SASL, …). Fails when the topic does not exist or a partition is not
/// read to its end within `timeout`.
pub async fn last_messages(
    bootstrap_servers: &str,
    settings: &BTreeMap<String, String>,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<InlineMessage>, ConsumerError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        // librdkafka wants a group id even for assigned partitions; nothing is committed under it.
        .set(
            "group.id",
            format!(
                "deimos-inline-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_micros()
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in settings {
        config.set(k, v);
    }
    let topic = topic.to_string();
    let task_topic = topic.clone();
    tokio::task::spawn_blocking(move || read_last(&config, &task_topic, n, timeout))
        .await
        .map_err(|e| ConsumerError::Read {
            topic,
            message: format!("the reading task failed: {e}"),
            source: None,
        })?
}

fn read_last(
    config: &ClientConfig,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<InlineMessage>, ConsumerError> {
    let kafka = |message: &str, e: KafkaError| ConsumerError::Read {
        topic: topic.to_string(),
        message: message.to_string(),
        source: Some(Box::new(e)),
    };
    let consumer: BaseConsumer = config.create().map_err(|e| {
        kafka(
            "the consumer could not be created (check the settings)",
            deimos_core::redact::kafka_error(e, config),
        )
    })?;
    // A broker that cannot be reached is said at once, not after the whole timeout.
    let metadata_timeout = timeout.min(METADATA_TIMEOUT);
    let metadata = consumer.fetch_metadata(Some(topic), metadata_timeout).map_err(|e| {
        let brokers = config.get("bootstrap.servers").unwrap_or_default();
        kafka(
            &format!(
                "no answer from Kafka at {brokers} within {metadata_timeout:?}: is a broker running there? (check \
                 kafka.brokers / --brokers; `deimos dev` runs a local one)"
            ),
            e,
        )
    })?;
    let partitions: Vec<i32> = match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => Vec::new(),
    };
    if partitions.is_empty() {
        return Err(ConsumerError::Read {
            topic: topic.to_string(),
            message: "the topic does not exist on the broker (create it, or produce to it first)".into(),
            source: None,
        });
    }
    let want = i64::try_from(n).unwrap_or(i64::MAX);
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| kafka(&format!("the watermarks of partition {p} could not be read"), e))?;
        if high > low && n > 0 {
            let start = low.max(high.saturating_sub(want));
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| kafka("bad partition", e))?;
            ends.insert(p, high);
        }
    }
    let mut messages = Vec::new();
    if ends.is_empty() {
        return Ok(messages);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka("the partitions could not be assigned", e))?;
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(ConsumerError::Read {
                topic: topic.to_string(),
                message: format!(
                    "timed out after {timeout:?} with partitions {:?} not read to their end ({} messages read)",
                    ends.keys().collect::<Vec<_>>(),
                    messages.len()
                ),
                source: last_error.map(|e: KafkaError| Box::new(e) as _),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let partition = m.partition();
                if ends.get(&partition).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&partition);
                }
                let mut message = InlineMessage::new(m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))
                    .at(partition, m.offset())
                    .headers(crate::read_headers(m.headers()));
                message.timestamp = m.timestamp().to_millis();
                messages.push(message);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => last_error = Some(e),
        }
    }
    messages.sort_by_key(|m| (m.timestamp.unwrap_or(i64::MIN), m.partition, m.offset));
    let skip = messages.len().saturating_sub(n);
    Ok(messages.split_off(skip))
}
