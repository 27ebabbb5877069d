#![doc = include_str!("../README.md")]

mod consumer;
mod error;
mod ops;
mod producer;
mod source;
mod sql;
mod table;
mod value;

pub use consumer::{
    BatchRecordConsumer, DeadlockRetry, RecordConsumer, RecordConsumerBuilder, RecordMessage, Tombstone,
};
pub use error::RecordError;
pub use producer::{RecordProducer, RecordProducerBuilder};
pub use source::{ChangeSource, ChangeSourceBuilder, SourceConfig};
pub use sql::RecordConnection;
pub use table::{ColumnDef, ColumnType, DieselColumns, RecordTable, SqlKind};
pub use value::SqlValue;

use deimos_outbox_diesel::Conn;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Connects to `database_url` and creates `deimos_consumer_offsets` (where exactly-once record consumers keep
/// their offsets) if it has not been; returns the versions applied. Needs tokio's multi-thread runtime.
pub async fn migrate(database_url: &str) -> Result<Vec<String>, RecordError> {
    fn run<DB: diesel::backend::Backend>(
        harness: &mut impl MigrationHarness<DB>,
        migrations: EmbeddedMigrations,
    ) -> Result<Vec<String>, RecordError> {
        harness
            .run_pending_migrations(migrations)
            .map(|v| v.iter().map(ToString::to_string).collect())
            .map_err(|e| RecordError::Config(format!("migrations failed: {e}")))
    }
    use diesel_async::AsyncMigrationHarness;
    match Conn::connect(database_url).await? {
        Conn::Pg(c) => run(&mut AsyncMigrationHarness::new(c), PG_MIGRATIONS),
        Conn::Mysql(c) => run(&mut AsyncMigrationHarness::new(c), MYSQL_MIGRATIONS),
        Conn::Sqlite(c) => run(&mut AsyncMigrationHarness::new(c), SQLITE_MIGRATIONS),
        #[allow(unreachable_patterns)]
        _ => Err(RecordError::Config("unsupported database".into())),
    }
}
