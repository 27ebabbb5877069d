//! Outbox errors.

use deimos_producer::PublishError;

/// What went wrong writing to, relaying from or setting up the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The messages could not be encoded (bad payload, key or schema): nothing was written.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A database statement failed.
    #[error("outbox database error while {doing}: {source}")]
    Database {
        /// What the outbox was doing.
        doing: &'static str,
        /// Diesel's error.
        #[source]
        source: diesel::result::Error,
    },
    /// The database could not be reached.
    #[error(
        "could not connect to the outbox database {url}: {message}; check the URL, that the server runs and accepts this user"
    )]
    Connect {
        /// The URL, without its password or secret parameters (`deimos_core::redact::url`).
        url: String,
        /// Why (`deimos_core::redact::text`).
        message: String,
    },
    /// The database URL names no supported database. It holds the URL without its password or secret parameters
    /// (`deimos_core::redact::url`).
    #[error(
        "unsupported outbox database URL `{0}`: use postgres://…, mysql://… (MySQL, MariaDB) or sqlite://PATH (or a path ending in .db / .sqlite, or :memory:)"
    )]
    UnsupportedUrl(String),
    /// Migrations failed.
    #[error("outbox migrations failed: {0}")]
    Migration(String),
    /// The relay's lease of a partition was taken over by another relay (it had expired): this worker stopped
    /// without sending or deleting anything more.
    #[error("the lease of {topic} partition {partition} was taken over by another relay after it expired")]
    LeaseLost {
        /// The topic.
        topic: String,
        /// The partition (-1: rows without one).
        partition: i32,
    },
    /// The Kafka side could not be set up.
    #[error("outbox relay: {0}")]
    Kafka(String),
    /// The configuration is not usable.
    #[error("outbox configuration: {0}")]
    Config(String),
}

/// So `diesel::Connection::transaction` can return an `OutboxError` from a closure that also runs queries.
impl From<diesel::result::Error> for OutboxError {
    fn from(source: diesel::result::Error) -> OutboxError {
        OutboxError::Database {
            doing: "running the caller's statement",
            source,
        }
    }
}

impl OutboxError {
    pub(crate) fn db(doing: &'static str) -> impl FnOnce(diesel::result::Error) -> OutboxError {
        move |source| OutboxError::Database { doing, source }
    }

    /// Whether a statement failed on a deadlock or a lock wait timeout ([`crate::db::is_deadlock`]): running it
    /// again succeeds.
    pub fn is_deadlock(&self) -> bool {
        matches!(self, OutboxError::Database { source, .. } if crate::db::is_deadlock(source))
    }

    /// Reading the outbox's tables failed: they are missing or out of date, so say how to migrate.
    pub(crate) fn not_migrated(error: OutboxError) -> OutboxError {
        OutboxError::Config(format!(
            "the outbox tables are missing or out of date ({error}); run `deimos-outbox migrate` (or `deimos outbox \
             migrate`, or deimos_outbox_diesel::migrate) first"
        ))
    }
}
