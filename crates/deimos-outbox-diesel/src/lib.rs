#![doc = include_str!("../README.md")]
// A build without any database (no `postgres`, `mysql` or `sqlite` feature) compiles, so that crates which only
// name the outbox's types build alone, but cannot connect: its statements are dead code.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(unused, unreachable_code, unreachable_patterns)
)]

pub mod db;
mod error;
pub mod headers;
pub mod pool;
mod relay;
pub mod schema;
mod status;
mod writer;

pub use db::{Backlog, BeginTransaction, Conn, Dialect, Lease, Migrations};
pub use error::OutboxError;
pub use relay::{Relay, RelayConfig, RelayConfigBuilder, RelayStats, Topics};
pub use status::Status;
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
