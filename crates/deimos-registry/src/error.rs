//! Error type of deimos-registry.

use std::path::PathBuf;

use crate::VersionRef;

/// A boxed dependency error (reqwest, hyper, ...), kept behind `#[source]` so that bumping a dependency
/// does not change this crate's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A schema registry operation failed.
///
/// The variants mirror the Confluent error codes (`40401`, `42201`, ...); [`RegistryError::error_code`]
/// and [`RegistryError::http_status`] give them back. [`RegistryError::is_retryable`] says whether the
/// same call may succeed later without any change on the caller's side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The subject does not exist (or all its versions were deleted). Confluent code 40401.
    #[error(
        "subject `{subject}` not found in the schema registry; register a schema under it first, or check the subject name strategy and topic prefix"
    )]
    SubjectNotFound {
        /// The subject asked for.
        subject: String,
    },
    /// The subject exists but not the version. Confluent code 40402.
    #[error(
        "version {version} of subject `{subject}` not found in the schema registry; list the existing versions with `versions(\"{subject}\")`"
    )]
    VersionNotFound {
        /// The subject asked for.
        subject: String,
        /// The version asked for.
        version: VersionRef,
    },
    /// The schema is not known: an unknown id, or a schema not registered under a subject. Confluent code 40403.
    #[error("{}", schema_not_found_message(*.id, .subject.as_deref()))]
    SchemaNotFound {
        /// The schema id asked for, when looking up by id.
        id: Option<u32>,
        /// The subject searched, when looking up a schema under a subject.
        subject: Option<String>,
    },
    /// A permanent delete was asked for a subject that was not soft-deleted first. Confluent code 40405.
    #[error(
        "subject `{subject}` was not soft-deleted before being permanently deleted; delete it without `permanent` first"
    )]
    SubjectNotSoftDeleted {
        /// The subject.
        subject: String,
    },
    /// The schema is incompatible with earlier versions under the subject's compatibility level. HTTP 409.
    #[error(
        "schema is incompatible with earlier versions of subject `{subject}`: {}; make the change compatible (e.g. give new fields defaults) or change the subject's compatibility level",
        .messages.join("; ")
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// Why, one message per failed check.
        messages: Vec<String>,
    },
    /// The schema is not a valid (Avro) schema. Confluent code 42201.
    #[error("the schema registry rejected the schema as invalid: {message}; fix the schema (it must be valid Avro)")]
    InvalidSchema {
        /// What is wrong.
        message: String,
    },
    /// The version is not a valid version number. Confluent code 42202.
    #[error("invalid schema version `{version}`; versions are positive integers or `latest`")]
    InvalidVersion {
        /// The version as given.
        version: String,
    },
    /// The compatibility level is not one the registry knows. Confluent code 42203.
    #[error(
        "invalid compatibility level `{level}`; use one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
    )]
    InvalidCompatibilityLevel {
        /// The level as given.
        level: String,
    },
    /// The schema is not an Avro schema (e.g. a Protobuf or JSON schema registered by another service).
    #[error(
        "schema{} is a {schema_type} schema; deimos-registry only handles Avro schemas",
        .id.map(|i| format!(" id {i}")).unwrap_or_default()
    )]
    UnsupportedSchemaType {
        /// The schema id, if known.
        id: Option<u32>,
        /// The schema type the registry reported (`PROTOBUF`, `JSON`).
        schema_type: String,
    },
    /// The registry refused the credentials (HTTP 401 or 403).
    #[error(
        "the schema registry refused the request with HTTP {status} ({message}); set or fix the credentials (basic auth user and password, or bearer token)"
    )]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// What the registry said.
        message: String,
    },
    /// Any other error answer of the registry.
    #[error("the schema registry answered HTTP {status}{} to {method} {url}: {message}; {}",
        .error_code.map(|c| format!(" (error code {c})")).unwrap_or_default(),
        http_hint(*.status))]
    Http {
        /// HTTP status.
        status: u16,
        /// The Confluent error code, if the body carried one.
        error_code: Option<u32>,
        /// The message of the body (or the body itself).
        message: String,
        /// HTTP method of the request.
        method: String,
        /// URL of the request.
        url: String,
    },
    /// The registry could not be reached: connection refused, DNS failure, timeout, connection reset.
    #[error(
        "cannot reach the schema registry for {method} {url}: {source}; check the registry URL, that the registry is running and reachable, and the timeouts"
    )]
    Transport {
        /// HTTP method of the request.
        method: String,
        /// URL of the request.
        url: String,
        /// Whether the request timed out.
        timed_out: bool,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The registry's answer could not be understood.
    #[error(
        "unexpected answer from the schema registry for {url}: {message}; check that the URL points at a Confluent-compatible schema registry"
    )]
    InvalidResponse {
        /// URL of the request (or `memory` for in-process registries).
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The registry's answer is larger than the client reads
    /// ([`HttpRegistryBuilder::max_response_bytes`](crate::HttpRegistryBuilder::max_response_bytes)).
    #[error(
        "the schema registry's answer to {method} {url} is larger than {limit} bytes, the most this client reads; if the registry really holds schemas that large, raise HttpRegistryBuilder::max_response_bytes"
    )]
    ResponseTooLarge {
        /// HTTP method of the request.
        method: String,
        /// URL of the request.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The schema references of a schema cannot be resolved: they form a cycle, nest too deep or are too many.
    #[error("cannot resolve the schema references of {url}: {message}; fix the references registered with the schema")]
    InvalidReferences {
        /// URL of the schema whose references were resolved.
        url: String,
        /// What is wrong, with the chain of references.
        message: String,
    },
    /// A builder was given a setting that cannot work.
    #[error("invalid schema registry configuration: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The on-disk schema cache directory could not be prepared.
    #[error(
        "cannot use {} as the schema cache directory: {source}; create it or point the cache at a writable directory",
        .path.display()
    )]
    DiskCache {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn schema_not_found_message(id: Option<u32>, subject: Option<&str>) -> String {
    match (id, subject) {
        (Some(id), _) => format!(
            "schema id {id} not found in the schema registry; the data was probably written against another registry, or the schema was permanently deleted"
        ),
        (None, Some(s)) => format!(
            "schema not registered under subject `{s}`; register it first (or check that the schema text matches the registered one)"
        ),
        (None, None) => "schema not found in the schema registry".to_string(),
    }
}

fn http_hint(status: u16) -> &'static str {
    match status {
        404 => "check the registry URL (including any path prefix)",
        405 | 415 | 406 => "check that the URL points at a Confluent-compatible schema registry",
        429 => "the registry is rate limiting; slow down and retry later",
        500..=599 => "the registry is failing; retry later or check its logs",
        _ => "see the registry's message",
    }
}

impl RegistryError {
    /// Whether retrying the same call later may succeed: the registry was unreachable, timed out, or
    /// answered with a server error (5xx) or 429. Client errors (4xx) are never retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The Confluent error code this error corresponds to (`40401`, `409`, `42201`, ...), if any.
    pub fn error_code(&self) -> Option<u32> {
        match self {
            RegistryError::SubjectNotFound { .. } => Some(40401),
            RegistryError::VersionNotFound { .. } => Some(40402),
            RegistryError::SchemaNotFound { .. } => Some(40403),
            RegistryError::SubjectNotSoftDeleted { .. } => Some(40405),
            RegistryError::Incompatible { .. } => Some(409),
            RegistryError::InvalidSchema { .. } | RegistryError::UnsupportedSchemaType { .. } => Some(42201),
            RegistryError::InvalidVersion { .. } => Some(42202),
            RegistryError::InvalidCompatibilityLevel { .. } => Some(42203),
            RegistryError::Unauthorized { status, .. } => Some(u32::from(*status)),
            RegistryError::Http { error_code, .. } => *error_code,
            _ => None,
        }
    }

    /// The HTTP status a Confluent registry answers with for this error, if it is a registry answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            RegistryError::SubjectNotFound { .. }
            | RegistryError::VersionNotFound { .. }
            | RegistryError::SchemaNotFound { .. }
            | RegistryError::SubjectNotSoftDeleted { .. } => Some(404),
            RegistryError::Incompatible { .. } => Some(409),
            RegistryError::InvalidSchema { .. }
            | RegistryError::UnsupportedSchemaType { .. }
            | RegistryError::InvalidVersion { .. }
            | RegistryError::InvalidCompatibilityLevel { .. } => Some(422),
            RegistryError::Unauthorized { status, .. } | RegistryError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether this error says that something (subject, version or schema) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RegistryError::SubjectNotFound { .. }
                | RegistryError::VersionNotFound { .. }
                | RegistryError::SchemaNotFound { .. }
        )
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        RegistryError::Config {
            message: message.into(),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = RegistryError::SchemaNotFound {
            id: Some(7),
            subject: None,
        };
        assert!(e.to_string().contains("schema id 7"));
        let e = RegistryError::Incompatible {
            subject: "t-value".into(),
            messages: vec!["a".into(), "b".into()],
        };
        assert!(e.to_string().contains("a; b"));
        let e = RegistryError::Http {
            status: 503,
            error_code: Some(50301),
            message: "down".into(),
            method: "GET".into(),
            url: "http://x/subjects".into(),
        };
        assert!(e.is_retryable());
        assert!(e.to_string().contains("(error code 50301)"));
        assert!(!RegistryError::SubjectNotFound { subject: "s".into() }.is_retryable());
    }
}
