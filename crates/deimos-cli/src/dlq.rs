//! `deimos dlq redrive DLQ_TOPIC`: dead-lettered messages back to their original topic.
//!
//! The dead-letter topic is read under a consumer group from its committed offsets up to the end each partition
//! had when the command started. Each message goes to the topic in its `deimos.dlq.original.topic` header (or
//! `--to`) with its key, value and original headers (the `deimos.dlq.*` ones dropped), and is acknowledged by
//! the broker before the next one of its partition is sent. The offsets after the last message sent are
//! committed at the end, so a second run sends only what was dead-lettered since. A message with no original
//! topic stops its partition there (nothing after it is sent or committed) and the command exits 1.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use deimos_config::Config;
use deimos_consumer::{HEADER_ORIGINAL_PARTITION, HEADER_ORIGINAL_TOPIC};
use deimos_core::redact;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
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
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic} (is the broker reachable at {brokers}?)"))?;
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
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("reading the offsets of {topic} partition {p}"))?;
        let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        if start < high {
            assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, high);
        }
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
            .set("partitioner", config.partitioner()?.librdkafka_name());
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
            let mut original = None;
            let mut original_partition = None;
            let mut headers = OwnedHeaders::new();
            if let Some(h) = message.headers() {
                for header in h.iter() {
                    let text = || header.value.and_then(|v| std::str::from_utf8(v).ok());
                    if header.key == HEADER_ORIGINAL_TOPIC {
                        original = text().map(str::to_string);
                    }
                    if header.key == HEADER_ORIGINAL_PARTITION {
                        original_partition = text().and_then(|p| p.parse::<i32>().ok()).filter(|p| *p >= 0);
                    }
                    if !header.key.starts_with("deimos.dlq.") {
                        headers = headers.insert(Header { key: header.key, value: header.value });
                    }
                }
            }
            let Some(target) = to.map(str::to_string).or(original) else {
                problems.push(format!(
                    "{topic} partition {partition} offset {offset} has no {HEADER_ORIGINAL_TOPIC} header: pass --to TOPIC; \
                     this partition stops here"
                ));
                ends.remove(&partition);
                continue;
            };
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
