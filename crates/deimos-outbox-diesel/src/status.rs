//! [`Status`]: the outbox's backlog, leases and dead rows, as `deimos-outbox status` and `deimos outbox status`
//! print them.

use std::collections::BTreeMap;
use std::fmt;

use deimos_producer::KafkaBackend;

use crate::{Backlog, Conn, Lease, OutboxError};

/// A snapshot of the outbox: the backlog per topic partition, the leases, and the rows moved to
/// `kafka_messages_dead`. `Display` prints it as a table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// Rows waiting, per topic partition.
    pub backlog: Vec<Backlog>,
    /// Partition leases.
    pub leases: Vec<Lease>,
    /// Rows in `kafka_messages_dead`.
    pub dead: i64,
    /// The partition counts of the backlog's topics on the broker, when [`check_partitions`](Self::check_partitions)
    /// could ask for them: rows for a partition at or above its topic's count can never be sent.
    pub partition_counts: BTreeMap<String, i32>,
}

impl Status {
    /// Reads the status of the outbox at `database_url`; fails with a hint to migrate when the tables are
    /// missing.
    pub async fn read(database_url: &str) -> Result<Status, OutboxError> {
        let mut conn = Conn::connect(database_url).await?;
        let backlog = conn.backlog().await.map_err(OutboxError::not_migrated)?;
        let leases = conn.leases().await?;
        let dead = conn.dead_count().await?;
        Ok(Status {
            backlog,
            leases,
            dead,
            partition_counts: BTreeMap::new(),
        })
    }

    /// Asks the broker (through `backend`'s metadata) for the partition count of each topic with rows, so that
    /// rows for a partition the topic does not have are shown (a writer that declared more partitions than the
    /// topic has). Returns the topics the broker could not describe, with why.
    pub async fn check_partitions(&mut self, backend: &KafkaBackend) -> Vec<(String, String)> {
        let mut unchecked = Vec::new();
        let topics: std::collections::BTreeSet<String> = self.backlog.iter().map(|b| b.topic.clone()).collect();
        for topic in topics {
            match backend.partition_count(&topic).await {
                Ok(n) => {
                    self.partition_counts.insert(topic, n);
                }
                Err(e) => unchecked.push((topic, e.to_string())),
            }
        }
        unchecked
    }

    /// The backlog rows for partitions their topic does not have (known after
    /// [`check_partitions`](Self::check_partitions)), with the topic's partition count.
    pub fn unknown_partitions(&self) -> impl Iterator<Item = (&Backlog, i32)> {
        self.backlog.iter().filter_map(|b| {
            let count = *self.partition_counts.get(&b.topic)?;
            (b.partition >= count).then_some((b, count))
        })
    }

    /// Rows waiting in all partitions.
    pub fn pending(&self) -> i64 {
        self.backlog.iter().map(|b| b.count).sum()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<40} {:>9} {:>10} {:>14}  lease",
            "topic", "partition", "pending", "oldest (s)"
        )?;
        for b in &self.backlog {
            let lease = self
                .leases
                .iter()
                .find(|l| l.topic == b.topic && l.partition == b.partition)
                .and_then(|l| match (&l.locked_by, l.expires_in_ms) {
                    (Some(owner), Some(ms)) if ms > 0 => {
                        Some(format!("{owner} ({:.1} s left, fence {})", ms as f64 / 1000.0, l.fence))
                    }
                    (Some(owner), _) => Some(format!("{owner} (expired)")),
                    _ => None,
                })
                .unwrap_or_else(|| "-".to_string());
            let shown = if b.partition < 0 {
                "none".to_string()
            } else {
                b.partition.to_string()
            };
            writeln!(
                f,
                "{:<40} {:>9} {:>10} {:>14.1}  {lease}",
                b.topic, shown, b.count, b.max_wait_seconds
            )?;
        }
        write!(
            f,
            "{} message{} pending in {} partition{}; {} in kafka_messages_dead",
            self.pending(),
            if self.pending() == 1 { "" } else { "s" },
            self.backlog.len(),
            if self.backlog.len() == 1 { "" } else { "s" },
            self.dead
        )?;
        for (b, count) in self.unknown_partitions() {
            write!(
                f,
                "\n{} has {count} partition{}: its {} row{} for partition {} can never be sent. A writer declared more \
                 partitions than the topic has; give the topic more partitions, or fix the declaration and move the rows",
                b.topic,
                if count == 1 { "" } else { "s" },
                b.count,
                if b.count == 1 { "" } else { "s" },
                b.partition
            )?;
        }
        Ok(())
    }
}
