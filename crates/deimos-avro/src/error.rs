//! Error types of deimos-avro, one family per kind of operation.

use std::path::PathBuf;

/// A schema could not be loaded, parsed or resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file that should hold a schema does not exist.
    #[error(
        "schema {name} not found: there is no {path}, and no other file under {root} defines it. A schema's file is its full name with the dots as folders, under the schema folder: create that file, or fix the name"
    )]
    NotFound {
        /// Full name that was asked for.
        name: String,
        /// Schema root folder.
        root: PathBuf,
        /// The path that was tried.
        path: PathBuf,
    },
    /// The schema folder (or a folder in it) could not be listed.
    #[error(
        "cannot read the schema folder {path}: {source}. Run from the folder that holds `schemas/`, or name the folder: `[schema] path` in the configuration (`--config FILE`), or `--schemas DIR`"
    )]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read schema file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid JSON.
    #[error("schema file {path} is not valid JSON: {message}")]
    Json {
        /// The file (or `<inline>` for a string).
        path: PathBuf,
        /// What the JSON parser said, with line and column.
        message: String,
    },
    /// A referenced type is not defined anywhere.
    #[error("schema file {path} refers to unknown type `{name}`; define it in {expected} or fix the reference")]
    UnknownType {
        /// The file holding the reference.
        path: PathBuf,
        /// The unknown full name.
        name: String,
        /// Where the store looked for it.
        expected: PathBuf,
    },
    /// Two files define the same named type.
    #[error("type `{name}` is defined twice: in {first} and in {second}; keep one definition and refer to it by name")]
    Duplicate {
        /// The full name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// The file name does not match the name of the type it defines.
    #[error("schema file {path} defines `{found}`, but its path says `{expected}`; move the file or rename the type")]
    Misplaced {
        /// The file.
        path: PathBuf,
        /// Name expected from the path.
        expected: String,
        /// Name found in the file.
        found: String,
    },
    /// The schema is not valid Avro.
    #[error("invalid Avro schema in {path}: {message}")]
    Invalid {
        /// The file (or `<inline>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A writer schema cannot be resolved to a reader schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read data written with schema {writer} using reader schema {reader}: {message}")]
pub struct ResolveError {
    /// Writer schema name (or type).
    pub writer: String,
    /// Reader schema name (or type).
    pub reader: String,
    /// The first incompatibility found, with its path.
    pub message: String,
}

/// A payload could not be coerced to its schema or encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A required field is missing and has no default.
    #[error(
        "missing required field `{path}` (expected {expected}); add it to the payload or give the field a default in the schema"
    )]
    MissingField {
        /// Dotted path of the field.
        path: String,
        /// The expected Avro type.
        expected: String,
    },
    /// A value does not fit the schema.
    #[error("field `{path}`: expected {expected}, got {got}")]
    Mismatch {
        /// Dotted path of the value (`<root>` for the top level).
        path: String,
        /// The expected Avro type.
        expected: String,
        /// A short description of the value.
        got: String,
    },
    /// A serde type cannot be written (e.g. a map with non-string keys).
    #[error("field `{path}`: {message}")]
    Unsupported {
        /// Dotted path of the value.
        path: String,
        /// What is not supported.
        message: String,
    },
}

/// Bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message does not start with the Confluent magic byte 0.
    #[error(
        "not a Confluent-framed Avro message: first byte is {found:#04x}, expected 0x00 (was it produced without a schema registry serializer?)"
    )]
    BadMagic {
        /// The byte found.
        found: u8,
    },
    /// The message is shorter than its frame or its data.
    #[error("message truncated: {0}")]
    Truncated(String),
    /// The bytes are not valid for the writer schema.
    #[error("corrupt Avro data at `{path}`: {message}")]
    Corrupt {
        /// Path of the value being read.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The message decodes into more values than [`MAX_DECODED_VALUES`](crate::MAX_DECODED_VALUES).
    #[error(
        "the message decodes into more than {limit} values (at `{path}`); values that take no bytes, such as nulls, empty records and defaults, count too, so the data is corrupt or was not written with its writer schema"
    )]
    TooManyValues {
        /// Path of the value that went over the limit.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// Bytes remain after the value was read.
    #[error("{0} trailing bytes after the Avro value; the writer schema does not match the data")]
    TrailingBytes(usize),
    /// The writer schema cannot be resolved to the reader schema.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The decoded value does not fit the target Rust type.
    #[error("decoded value does not fit the target type: {0}")]
    Type(String),
}

impl serde::ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        EncodeError::Unsupported {
            path: String::new(),
            message: msg.to_string(),
        }
    }
}

impl serde::de::Error for DecodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DecodeError::Type(msg.to_string())
    }
}
