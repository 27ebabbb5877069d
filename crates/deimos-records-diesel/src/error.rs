//! Errors of the record layer.

use deimos_outbox_diesel::OutboxError;
use deimos_producer::PublishError;

/// What went wrong producing, publishing or consuming records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A database statement failed.
    #[error("database error while {doing} (table `{table}`): {source}")]
    Database {
        /// What the record layer was doing.
        doing: &'static str,
        /// The table.
        table: String,
        /// Diesel's error.
        #[source]
        source: diesel::result::Error,
    },
    /// A value could not be converted for its column.
    #[error("table `{table}`: {message}")]
    Convert {
        /// The table.
        table: String,
        /// What was wrong, naming the attribute and the column type.
        message: String,
    },
    /// The messages could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The messages could not be written to the outbox.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The record layer is not set up right (a table without the key columns, a key that has no column, …).
    #[error("record configuration: {0}")]
    Config(String),
    /// After a batch failed, its messages were saved one at a time; these could not be (Deimos's
    /// `BatchFallbackError`). The others were saved.
    #[error(
        "{} message(s) could not be saved individually after the batch failed. Failed keys: {}. First error: {first_error}",
        failed_keys.len(),
        failed_keys.join(", ")
    )]
    BatchFallback {
        /// The keys (JSON) of the messages that failed.
        failed_keys: Vec<String>,
        /// The first of their errors.
        first_error: String,
    },
}

impl RecordError {
    pub(crate) fn db<'a>(
        doing: &'static str,
        table: &'a str,
    ) -> impl FnOnce(diesel::result::Error) -> RecordError + 'a {
        move |source| RecordError::Database {
            doing,
            table: table.to_string(),
            source,
        }
    }

    /// Whether this is a deadlock or lock timeout (retried by the consumers, as Deimos's `DeadlockRetry`).
    pub fn is_deadlock(&self) -> bool {
        match self {
            RecordError::Database { source, .. } => is_deadlock(source),
            RecordError::Outbox(OutboxError::Database { source, .. }) => is_deadlock(source),
            _ => false,
        }
    }
}

/// Deimos's `DeadlockRetry` messages, PostgreSQL's serialization failures, and SQLite's busy database.
pub(crate) fn is_deadlock(error: &diesel::result::Error) -> bool {
    let message = error.to_string();
    [
        "Deadlock found when trying to get lock",
        "Lock wait timeout exceeded",
        "deadlock detected",
        "could not serialize access",
        "database is locked",
    ]
    .iter()
    .any(|m| message.contains(m))
        || matches!(
            error,
            diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::SerializationFailure, _)
        )
}

/// So statements in the record layer's transactions can use `?`.
impl From<diesel::result::Error> for RecordError {
    fn from(source: diesel::result::Error) -> RecordError {
        RecordError::Database {
            doing: "running a statement",
            table: String::new(),
            source,
        }
    }
}
