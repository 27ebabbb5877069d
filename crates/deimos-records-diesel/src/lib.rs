#![doc = include_str!("../README.md")]
// A build without any database (no `postgres`, `mysql` or `sqlite` feature) compiles but cannot run a statement:
// its statement code is dead.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(unused, unreachable_code, unreachable_patterns)
)]

mod consumer;
mod error;
mod ops;
mod producer;
mod source;
mod sql;
mod table;
mod value;

pub use consumer::{BatchRecordConsumer, RecordConsumer, RecordConsumerBuilder, RecordMessage, Tombstone};
pub use error::RecordError;
pub use producer::{RecordProducer, RecordProducerBuilder};
pub use source::{ChangeSource, ChangeSourceBuilder};
pub use sql::RecordConnection;
pub use table::{ColumnDef, ColumnType, DieselColumns, RecordTable, SqlKind};
pub use value::SqlValue;

use deimos_outbox_diesel::{Conn, Migrations};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Connects to `database_url` and creates `deimos_consumer_offsets` (where exactly-once record consumers keep
/// their offsets) if it has not been; returns the versions applied. Needs tokio's multi-thread runtime.
pub async fn migrate(database_url: &str) -> Result<Vec<String>, RecordError> {
    let migrations = Migrations {
        postgres: PG_MIGRATIONS,
        mysql: MYSQL_MIGRATIONS,
        sqlite: SQLITE_MIGRATIONS,
    };
    let (_, applied) = Conn::connect(database_url).await?.run_migrations(migrations).await?;
    Ok(applied)
}
