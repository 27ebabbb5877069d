//! `deimos dlq redrive DLQ_TOPIC`: dead-lettered messages back to their original topic.
//!
//! The dead-letter topic is read under a consumer group from its committed offsets up to the end each partition
//! had when the command started. Each message goes to `--to`, or else to the topic in its
//! `deimos.dlq.original.topic` header when the configuration allows it (a `[[consumer]]` reads it: anyone who
//! can write to the dead-letter topic can write that header, and it must not pick an arbitrary destination),
//! with its key, value and original headers (the `deimos.dlq.*` ones dropped), and is acknowledged by the
//! broker before the next one of its partition is sent. The offsets after the last message sent are committed
//! at the end, so a second run sends only what was dead-lettered since. A message with no original topic, or
//! one the configuration does not allow, stops its partition there (nothing after it is sent or committed) and
//! the command exits 1.
//!
//! Headers are read with their keys as bytes; a header whose key is not UTF-8 cannot be given to rdkafka's
//! producer, so it is left out of the message sent, with a warning naming it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use deimos_config::Config;
use deimos_consumer::{HEADER_ORIGINAL_PARTITION, HEADER_ORIGINAL_TOPIC, read_headers, write_headers};
use deimos_core::redact;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

pub(crate) async fn redrive(
    config: &Config,
    topic: &str,
    group: &str,
    to: Option<&str>,
    dry_run: bool,
    timeout: Duration,
) -> Result<ExitCode> {
    let brokers = config.brokers()?;
    let mut consumer_config = ClientConfig::new();
    consumer_config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (k, v) in config.consumer_settings() {
        consumer_config.set(k, v);
    }
    let consumer: StreamConsumer = consumer_config
        .create()
        .map_err(|e| redact::kafka_error(e, &consumer_config))
        .context("creating the consumer of the dead-letter topic")?;

    // Where each partition starts (the group's committed offset, else the beginning) and ends (its end now).
    let metadata_timeout = timeout.min(Duration::from_secs(10));
    let metadata = consumer.fetch_metadata(Some(topic), metadata_timeout).with_context(|| {
        format!(
            "no answer from Kafka at {brokers} within {metadata_timeout:?} for the metadata of {topic}: is a broker \
             running there? (check kafka.brokers / --brokers; `deimos dev` runs a local one)"
        )
    })?;
    let partitions: Vec<i32> = match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => bail!("the dead-letter topic {topic} does not exist on the broker"),
    };
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(wanted, timeout)
        .with_context(|| format!("reading the offsets group {group} committed on {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut messages = 0;
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("reading the offsets of {topic} partition {p}"))?;
        let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        messages += high - low;
        if start < high {
            assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, high);
        }
    }
    if messages == 0 {
        println!("nothing to redrive: {topic} holds no message");
        return Ok(ExitCode::SUCCESS);
    }
    if ends.is_empty() {
        println!("nothing to redrive: group {group} has seen every message of {topic}");
        return Ok(ExitCode::SUCCESS);
    }
    consumer.assign(&assignment)?;

    let producer: Option<FutureProducer> = if dry_run {
        None
    } else {
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // The producers' partitioner, so a key goes where the service's producers send it.
            .set("partitioner", config.partitioner().librdkafka_name());
        for (k, v) in config.producer_settings() {
            producer_config.set(k, v);
        }
        Some(
            producer_config
                .create()
                .map_err(|e| redact::kafka_error(e, &producer_config))
                .context("creating the producer")?,
        )
    };

    let destinations = Destinations::of(config, topic);
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut sent = 0usize;
    let mut problems = Vec::new();
    let mut deadline = Instant::now() + timeout;
    let outcome: Result<()> = async {
        while !ends.is_empty() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                bail!(
                    "timed out after {timeout:?} with partitions {:?} of {topic} not read to their end",
                    ends.keys().collect::<Vec<_>>()
                );
            }
            let message = match tokio::time::timeout(remaining, consumer.recv()).await {
                Err(_) => continue,
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    ends.remove(&p);
                    continue;
                }
                Ok(Err(e)) => return Err(anyhow!(e).context(format!("reading {topic}"))),
                Ok(Ok(m)) => m,
            };
            // The timeout is per message: a long redrive that keeps going does not time out.
            deadline = Instant::now() + timeout;
            let (partition, offset) = (message.partition(), message.offset());
            let Some(end) = ends.get(&partition).copied() else { continue };
            if offset >= end {
                ends.remove(&partition);
                continue;
            }
            if offset + 1 >= end {
                ends.remove(&partition);
            }
            // Keys as bytes: rdkafka's `Headers::iter` panics on a key that is not UTF-8.
            let read = read_headers(message.headers());
            let original = read.get_str(HEADER_ORIGINAL_TOPIC).map(str::to_string);
            let original_partition = read
                .get_str(HEADER_ORIGINAL_PARTITION)
                .and_then(|p| p.parse::<i32>().ok())
                .filter(|p| *p >= 0);
            let target = match (to, original) {
                (Some(to), _) => to.to_string(),
                (None, Some(original)) if destinations.allows(&original) => original,
                (None, Some(original)) => {
                    problems.push(destinations.refusal(topic, partition, offset, &original));
                    ends.remove(&partition);
                    continue;
                }
                (None, None) => {
                    problems.push(format!(
                        "{topic} partition {partition} offset {offset} has no {HEADER_ORIGINAL_TOPIC} header: pass --to TOPIC \
                         (the topic to send it to{}); this partition stops here",
                        destinations.natural_hint()
                    ));
                    ends.remove(&partition);
                    continue;
                }
            };
            // Original headers, keys as bytes (one that is not UTF-8 goes back as it came), without deimos.dlq.*.
            let kept: Vec<(&[u8], Option<&[u8]>)> =
                read.iter_raw().filter(|(key, _)| !key.starts_with(b"deimos.dlq.")).collect();
            let headers = write_headers(kept.into_iter());
            let Some(producer) = &producer else {
                println!("would send {topic}/{partition}@{offset} to {target}");
                continue;
            };
            let mut record = FutureRecord::to(&target).headers(headers);
            // Back to its own partition when it goes back to its own topic: per-key order and compaction hold
            // even for messages a partition key or another partitioner placed.
            if to.is_none()
                && let Some(p) = original_partition
            {
                record = record.partition(p);
            }
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            match producer.send(record, timeout).await {
                Ok(delivery) => {
                    println!(
                        "sent {topic}/{partition}@{offset} to {target}/{}@{}",
                        delivery.partition, delivery.offset
                    );
                    next.insert(partition, offset + 1);
                    sent += 1;
                }
                Err((e, _)) => {
                    return Err(anyhow!(e).context(format!(
                        "sending {topic}/{partition}@{offset} to {target} (nothing after it in that partition was sent)"
                    )));
                }
            }
        }
        Ok(())
    }
    .await;

    // Commit what was sent, also when a later message failed, so a rerun does not send it twice.
    if !next.is_empty() {
        let mut commit = TopicPartitionList::new();
        for (p, o) in &next {
            commit.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
            let committing = format!(
                "committing the redriven offsets under group {group} failed ({e}): a rerun sends the {sent} messages sent now again"
            );
            return Err(match outcome {
                Ok(()) => anyhow!(committing),
                Err(failure) => failure.context(committing),
            });
        }
    }
    outcome?;
    if dry_run {
        println!("dry run: nothing sent, nothing committed");
    } else {
        println!("{sent} messages redriven from {topic}; progress committed under group {group}");
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where dead letters may go without `--to`: the topics of the configuration's `[[consumer]]` sections, whose
/// dead letters these can be. Those naming this dead-letter topic are its natural destinations.
struct Destinations {
    allowed: BTreeSet<String>,
    /// (consumer, topic) of the `[[consumer]]` sections whose `dead_letter_topic` is this one.
    natural: Vec<(String, String)>,
}

impl Destinations {
    fn of(config: &Config, dead_letter_topic: &str) -> Destinations {
        let mut allowed = BTreeSet::new();
        let mut natural = Vec::new();
        for c in &config.consumer_list {
            let Some(topic) = c.topic.as_deref().filter(|t| !t.trim().is_empty()) else {
                continue;
            };
            allowed.insert(topic.to_string());
            if c.dead_letter_topic.as_deref() == Some(dead_letter_topic) {
                natural.push((c.name.clone(), topic.to_string()));
            }
        }
        Destinations { allowed, natural }
    }

    fn allows(&self, topic: &str) -> bool {
        self.allowed.contains(topic)
    }

    /// Why a message's header does not decide where it goes, and what to do.
    fn refusal(&self, dead_letter_topic: &str, partition: i32, offset: i64, original: &str) -> String {
        let known = if self.allowed.is_empty() {
            "the configuration has no [[consumer]] sections".to_string()
        } else {
            format!(
                "they read {}",
                self.allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        format!(
            "{dead_letter_topic} partition {partition} offset {offset} names {original} in its {HEADER_ORIGINAL_TOPIC} \
             header, but no [[consumer]] of the configuration reads {original} ({known}{}), and a header alone \
             cannot choose where a dead letter goes: it is not sent, and this partition stops here. To send it \
             there, give --config the configuration with the [[consumer]] that reads {original}, or pass \
             --to {original} (every message read then goes there)",
            self.natural_hint()
        )
    }

    /// `; … dead-letters to this topic and reads …` when a `[[consumer]]` names this dead-letter topic.
    fn natural_hint(&self) -> String {
        self.natural
            .iter()
            .map(|(name, topic)| format!("; [[consumer]] `{name}` dead-letters to this topic and reads {topic}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn destinations_are_the_consumers_topics() {
        let config = Config::from_toml_str(
            r#"
            [[consumer]]
            name = "WidgetConsumer"
            topic = "dev.widgets"
            group_id = "widgets"
            dead_letter_topic = "dev.widgets.dead"
            [[consumer]]
            name = "OrderConsumer"
            topic = "dev.orders"
            disabled = true
            "#,
        )
        .unwrap();
        let d = Destinations::of(&config, "dev.widgets.dead");
        assert!(d.allows("dev.widgets") && d.allows("dev.orders"));
        assert!(!d.allows("dev.payments"));
        let refusal = d.refusal("dev.widgets.dead", 0, 7, "dev.payments");
        assert!(
            refusal.contains("names dev.payments") && refusal.contains("--to dev.payments"),
            "{refusal}"
        );
        assert!(
            refusal.contains("`WidgetConsumer` dead-letters to this topic and reads dev.widgets"),
            "{refusal}"
        );
        let empty = Destinations::of(&Config::default(), "dev.widgets.dead");
        assert!(!empty.allows("dev.widgets"));
        assert!(
            empty
                .refusal("dev.widgets.dead", 0, 7, "dev.widgets")
                .contains("no [[consumer]] sections")
        );
    }
}
