//! [`Status`]: the outbox's backlog, leases and dead rows, as `deimos-outbox status` and `deimos outbox status`
//! print them.

use std::fmt;

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
}

impl Status {
    /// Reads the status of the outbox at `database_url`; fails with a hint to migrate when the tables are
    /// missing.
    pub async fn read(database_url: &str) -> Result<Status, OutboxError> {
        let mut conn = Conn::connect(database_url).await?;
        let backlog = conn.backlog().await.map_err(OutboxError::not_migrated)?;
        let leases = conn.leases().await?;
        let dead = conn.dead_count().await?;
        Ok(Status { backlog, leases, dead })
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
            "{} messages pending in {} partitions; {} in kafka_messages_dead",
            self.pending(),
            self.backlog.len(),
            self.dead
        )
    }
}
