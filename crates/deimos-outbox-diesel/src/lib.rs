//! deimos-rs's transactional outbox on Diesel (Deimos's "database backend").
//!
//! - **Write** messages in the business transaction: [`Outbox::publish`] / [`Outbox::publish_records`] encode
//!   through a [`deimos_producer::Producer`] (same schemas, keys and errors as a Kafka publish) and write every
//!   message of the call to `kafka_messages` with one multi-row INSERT on the caller's diesel-async connection
//!   (or diesel connection, with the `_sync` forms), computing each row's partition with the Kafka backend's
//!   partitioner. A rolled-back transaction leaves nothing behind.
//! - **Relay** them to Kafka with [`Relay`] (or the `deimos-outbox relay` binary): one worker per leased
//!   (topic, partition), several batches in flight, deletes fenced by the lease, too-large messages moved
//!   aside to `kafka_messages_dead`, PostgreSQL LISTEN/NOTIFY with polling as the fallback.
//! - **Tables**: [`migrate`] runs the embedded migrations for PostgreSQL, MySQL/MariaDB and SQLite: Deimos's
//!   tables when missing, then the one upgrade migration that adds partitions, headers, leases and the
//!   dead-letter table (docs/OUTBOX.md has the SQL for teams that run DDL themselves).
//!
//! See docs/OUTBOX.md for the guarantees and how they are tested.

pub mod db;
mod error;
pub mod headers;
mod relay;
pub mod schema;
mod writer;

pub use db::{Backlog, Conn, Dialect, Lease};
pub use error::OutboxError;
pub use relay::{Relay, RelayConfig, RelayStats, Topics, shutdown_signal};
pub use writer::{
    AsyncOutboxConnection, NOTIFY_CHANNEL, NewMessage, Outbox, OutboxBuilder, OutboxReport, SyncOutboxConnection,
};

/// Connects to `database_url` and runs the outbox migrations that have not run yet; returns the versions
/// applied. Needs tokio's multi-thread runtime (diesel's migration harness blocks).
pub async fn migrate(database_url: &str) -> Result<Vec<String>, OutboxError> {
    let conn = Conn::connect(database_url).await?;
    let (_, applied) = conn.migrate().await?;
    Ok(applied)
}
