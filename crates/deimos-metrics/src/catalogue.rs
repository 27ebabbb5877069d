//! Every metric deimos-rs emits, once. Emitting crates use `catalogue::X.name` with the `metrics` macros and
//! the labels listed here, in this order.

/// The kind of a metric, as the `metrics` facade knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonically increasing count (`metrics::counter!`; Deimos's `increment`).
    Counter,
    /// A value that goes up and down (`metrics::gauge!`).
    Gauge,
    /// A distribution of observations (`metrics::histogram!`).
    Histogram,
}

/// One metric: what it is called, what it carries and what Deimos calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricDef {
    /// The name emitted through the `metrics` facade.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The label keys, always all present, in this order.
    pub labels: &'static [&'static str],
    /// The unit: `messages`, `batches`, `seconds`, `bytes`, …
    pub unit: &'static str,
    /// The Deimos (Ruby) metric name and tags it corresponds to, or `""` for metrics Deimos lacks.
    pub deimos: &'static str,
    /// What it counts or measures.
    pub help: &'static str,
}

/// Messages handed to the broker and acknowledged (`status` = `success`), by configured topic.
pub const PUBLISH: MetricDef = MetricDef {
    name: "publish",
    kind: MetricKind::Counter,
    labels: &["status", "topic"],
    unit: "messages",
    deimos: "publish (status:success, topic:T)",
    help: "Messages published; counted when the broker acknowledged them (Deimos's async backend counted on enqueue)",
};

/// Messages the broker or the client failed to deliver, by configured topic.
pub const PUBLISH_ERROR: MetricDef = MetricDef {
    name: "publish_error",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "messages",
    deimos: "publish_error (topic:T)",
    help: "Messages that could not be delivered (too large, delivery timeout, broker errors)",
};

/// Consumer handler counts: `status` is `received`, `success`, `error` (per message, also in batch mode) or
/// `batch_received`, `batch_success`, `batch_error` (per batch).
pub const HANDLER: MetricDef = MetricDef {
    name: "handler",
    kind: MetricKind::Counter,
    labels: &["status", "topic"],
    unit: "messages",
    deimos: "handler (status:received|success|error|batch_received|batch_success|batch_error, topic:T)",
    help: "Messages and batches received, handled and failed by consumers",
};

/// Consumer timings: `time` is `consume` (one message), `consume_batch` (one batch) or `time_delayed` (now
/// minus the payload's `timestamp` field).
pub const HANDLER_TIME: MetricDef = MetricDef {
    name: "handler_time",
    kind: MetricKind::Histogram,
    labels: &["time", "topic"],
    unit: "seconds",
    deimos: "handler histogram (time:consume|consume_batch|time_delayed, topic:T)",
    help: "Seconds spent handling a message or batch, and seconds between a message's timestamp and its handling",
};

/// Messages a consumer sent to its dead-letter topic after its last attempt.
pub const DEAD_LETTER: MetricDef = MetricDef {
    name: "dead_letter",
    kind: MetricKind::Counter,
    labels: &["topic", "dead_letter_topic"],
    unit: "messages",
    deimos: "",
    help: "Messages moved to a dead-letter topic after the handler failed on every attempt",
};

/// Attempts of a fatal error policy that failed and will be retried.
pub const HANDLER_RETRY: MetricDef = MetricDef {
    name: "handler_retry",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "attempts",
    deimos: "",
    help: "Failed handling attempts that are retried with backoff (fatal error policy)",
};

/// Attempts that failed with a transient error (registry or database unreachable, timeouts) and are retried
/// whatever the error policy.
pub const TRANSIENT_RETRY: MetricDef = MetricDef {
    name: "transient_retry",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "attempts",
    deimos: "",
    help: "Failed handling attempts with a transient error, retried with backoff whatever the error policy (nothing is skipped)",
};

/// Partitions held by a listener: waiting to retry a transient error (`reason` = `transient`), waiting out a
/// fatal error policy's backoff (`retry`), or stopped because a dead letter cannot be sent (`stopped`).
pub const PARTITIONS_HELD: MetricDef = MetricDef {
    name: "partitions_held",
    kind: MetricKind::Gauge,
    labels: &["topic", "reason"],
    unit: "partitions",
    deimos: "",
    help: "Partitions paused by a listener: waiting on a transient error, on a retry's backoff, or stopped by an unsendable dead letter",
};

/// Consumer lag per partition: the partition's high watermark minus the group's position.
pub const CONSUMER_LAG: MetricDef = MetricDef {
    name: "consumer_lag",
    kind: MetricKind::Gauge,
    labels: &["consumer_group", "partition", "topic"],
    unit: "messages",
    deimos: "consumer_lag (consumer_group:G, partition:P, topic:T)",
    help: "Messages between the consumer group's position and the end of the partition (when lag reporting is on)",
};

/// Messages written to the outbox table (`kafka_messages`), by topic.
pub const DB_PRODUCER_INSERT: MetricDef = MetricDef {
    name: "db_producer.insert",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "messages",
    deimos: "db_producer.insert (topic:T)",
    help: "Messages written to the outbox table in the caller's transaction",
};

/// Outbox rows the relay finished with (sent and acknowledged, compacted away, or moved aside), by topic.
pub const DB_PRODUCER_PROCESS: MetricDef = MetricDef {
    name: "db_producer.process",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "messages",
    deimos: "db_producer.process (topic:T)",
    help: "Outbox rows processed and deleted by the relay",
};

/// Outbox rows the broker refused as too large, moved to `kafka_messages_dead` instead of being sent.
pub const DB_PRODUCER_TOO_LARGE: MetricDef = MetricDef {
    name: "db_producer.too_large",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "messages",
    deimos: "",
    help: "Outbox rows too large to send, moved aside to kafka_messages_dead (Deimos deleted the whole batch)",
};

/// Outbox writes partitioned with a partition count older than its time to live, because asking Kafka again
/// had not succeeded yet (Kafka down, or the refresh still running), by topic.
pub const DB_PRODUCER_STALE_PARTITION_COUNT: MetricDef = MetricDef {
    name: "db_producer.stale_partition_count",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "writes",
    deimos: "",
    help: "Outbox writes partitioned with the last known partition count, past its time to live, while Kafka is asked again in the background (Kafka unreachable: writes never wait for it)",
};

/// Outbox partitions whose rows cannot be sent because the topic does not have that partition (a writer declared
/// more partitions than the topic has), by topic: 1 while the relay holds such a partition, 0 once it is sent.
pub const DB_PRODUCER_UNKNOWN_PARTITION: MetricDef = MetricDef {
    name: "db_producer.unknown_partition",
    kind: MetricKind::Gauge,
    labels: &["topic", "partition"],
    unit: "partitions",
    deimos: "",
    help: "1 while the relay holds outbox rows for a partition the topic does not have (a writer declared more partitions than the topic has); they wait until the topic has it",
};

/// Seconds the oldest unsent outbox row of a topic has waited (0 when there is none).
pub const PENDING_DB_MESSAGES_MAX_WAIT: MetricDef = MetricDef {
    name: "pending_db_messages_max_wait",
    kind: MetricKind::Gauge,
    labels: &["topic"],
    unit: "seconds",
    deimos: "pending_db_messages_max_wait (topic:T)",
    help: "Age of the oldest outbox row not yet sent, per topic",
};

/// Unsent outbox rows of a topic.
pub const PENDING_DB_MESSAGES_COUNT: MetricDef = MetricDef {
    name: "pending_db_messages_count",
    kind: MetricKind::Gauge,
    labels: &["topic"],
    unit: "messages",
    deimos: "pending_db_messages_count (topic:T)",
    help: "Outbox rows not yet sent, per topic",
};

/// Record-consumer transactions and outbox relay statements retried after a deadlock or lock timeout, by topic.
pub const DEADLOCK: MetricDef = MetricDef {
    name: "deadlock",
    kind: MetricKind::Counter,
    labels: &["topic"],
    unit: "retries",
    deimos: "deadlock (topic:T)",
    help: "Record-consumer transactions and outbox relay statements (leases, batches) retried after a deadlock or lock wait timeout, per topic",
};

/// Every metric above.
pub const ALL: &[MetricDef] = &[
    PUBLISH,
    PUBLISH_ERROR,
    HANDLER,
    HANDLER_TIME,
    HANDLER_RETRY,
    TRANSIENT_RETRY,
    PARTITIONS_HELD,
    DEAD_LETTER,
    CONSUMER_LAG,
    DB_PRODUCER_INSERT,
    DB_PRODUCER_PROCESS,
    DB_PRODUCER_TOO_LARGE,
    DB_PRODUCER_STALE_PARTITION_COUNT,
    DB_PRODUCER_UNKNOWN_PARTITION,
    PENDING_DB_MESSAGES_MAX_WAIT,
    PENDING_DB_MESSAGES_COUNT,
    DEADLOCK,
];

/// Registers the unit and help text of every metric in [`ALL`] with the installed `metrics` recorder. Call it
/// once after installing an exporter; exporters show the text (Prometheus `# HELP`).
pub fn describe_all() {
    for def in ALL {
        let unit = match def.unit {
            "seconds" => Some(metrics::Unit::Seconds),
            "bytes" => Some(metrics::Unit::Bytes),
            _ => Some(metrics::Unit::Count),
        };
        match (def.kind, unit) {
            (MetricKind::Counter, Some(u)) => metrics::describe_counter!(def.name, u, def.help),
            (MetricKind::Gauge, Some(u)) => metrics::describe_gauge!(def.name, u, def.help),
            (MetricKind::Histogram, Some(u)) => metrics::describe_histogram!(def.name, u, def.help),
            (_, None) => {}
        }
    }
}

/// The catalogue as a Markdown table (docs/METRICS.md holds it; a test keeps the two the same).
pub fn markdown_table() -> String {
    let mut out = String::from("| name | type | labels | unit | Deimos | what |\n|---|---|---|---|---|---|\n");
    for d in ALL {
        let kind = match d.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        let deimos = if d.deimos.is_empty() { "(none)" } else { d.deimos }.replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {kind} | {} | {} | `{deimos}` | {} |\n",
            d.name,
            d.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", "),
            d.unit,
            d.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn docs_list_every_metric() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/METRICS.md")).unwrap_or_default();
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/METRICS.md is out of date; put this table under \"## Metrics\":\n\n{table}"
        );
    }

    #[test]
    fn names_are_unique_and_labels_sorted_as_documented() {
        let names: BTreeSet<_> = ALL.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), ALL.len(), "a metric name is listed twice");
        for d in ALL {
            assert!(!d.labels.is_empty(), "{} has no labels", d.name);
            assert!(!d.help.is_empty());
        }
    }

    #[test]
    fn describe_all_reaches_the_recorder() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            metrics::counter!(PUBLISH.name, "status" => "success", "topic" => "t").increment(2);
        });
        let snapshot = snapshotter.snapshot().into_vec();
        let (key, unit, help, _) = &snapshot[0];
        assert_eq!(key.key().name(), "publish");
        assert_eq!(*unit, Some(metrics::Unit::Count));
        assert_eq!(help.as_deref(), Some(PUBLISH.help));
    }
}
