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

    /// Whether the connection to the database was lost or could not be made: closed, refused or reset, terminated
    /// by the server ("terminating connection due to administrator command", "server closed the connection
    /// unexpectedly", "MySQL server has gone away"), diesel's `ClosedConnection` and `UnableToSendCommand`. The
    /// same statements may succeed on a new connection: the record consumers report these as transient
    /// ([`deimos_consumer::Transient`]), so the runner retries them instead of skipping the messages.
    pub fn is_connection_error(&self) -> bool {
        match self {
            RecordError::Database { source, .. } => is_connection_error(source),
            RecordError::Outbox(OutboxError::Database { source, .. }) => is_connection_error(source),
            RecordError::Outbox(OutboxError::Connect { .. }) => true,
            _ => false,
        }
    }

    /// Whether this is a deadlock or lock timeout (retried by the consumers, as Deimos's `DeadlockRetry`).
    pub fn is_deadlock(&self) -> bool {
        match self {
            RecordError::Database { source, .. } => deimos_outbox_diesel::db::is_deadlock(source),
            RecordError::Outbox(e) => e.is_deadlock(),
            _ => false,
        }
    }
}

/// What the database drivers say when a connection is lost or cannot be made (compared in lower case):
/// PostgreSQL's, MySQL's and MariaDB's messages and the I/O errors under them.
const CONNECTION_MESSAGES: &[&str] = &[
    "connection closed",
    "closed the connection",
    "connection refused",
    "connection reset",
    "connection aborted",
    "connection timed out",
    "broken pipe",
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "no connection to the server",
    "could not connect",
    "lost connection",
    "server has gone away",
    "can't connect",
    "connection was killed",
    "server shutdown in progress",
];

/// A lost connection: diesel's kinds for it, a transaction manager left broken by one, or a driver's message.
pub(crate) fn is_connection_error(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    if matches!(
        error,
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | Error::BrokenTransactionManager
    ) {
        return true;
    }
    let message = error.to_string().to_lowercase();
    CONNECTION_MESSAGES.iter().any(|m| message.contains(m))
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

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};

    use super::*;

    fn db(kind: DatabaseErrorKind, message: &str) -> RecordError {
        RecordError::Database {
            doing: "running a statement",
            table: "products".into(),
            source: Error::DatabaseError(kind, Box::new(message.to_string())),
        }
    }

    #[test]
    fn lost_connections_are_told_from_bad_data() {
        for lost in [
            db(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            db(DatabaseErrorKind::Unknown, "server closed the connection unexpectedly"),
            db(
                DatabaseErrorKind::Unknown,
                "Lost connection to MySQL server during query",
            ),
            db(DatabaseErrorKind::ClosedConnection, "closed"),
            db(DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            RecordError::Outbox(OutboxError::Connect {
                url: "postgres://db/app".into(),
                message: "Connection refused (os error 111)".into(),
            }),
        ] {
            assert!(lost.is_connection_error(), "{lost}");
        }
        for permanent in [
            db(
                DatabaseErrorKind::UniqueViolation,
                "duplicate key value violates unique constraint",
            ),
            db(
                DatabaseErrorKind::NotNullViolation,
                "null value in column \"name\" violates not-null constraint",
            ),
            db(DatabaseErrorKind::Unknown, "deadlock detected"),
            RecordError::Config("no key".into()),
        ] {
            assert!(!permanent.is_connection_error(), "{permanent}");
        }
    }
}
