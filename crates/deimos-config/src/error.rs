//! [`ConfigError`]: what went wrong reading the configuration or building from it.

use std::path::PathBuf;

/// An error reading the configuration, or building a backend, registry, producer or listener from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read the configuration file {}: {source}; pass the path of a TOML file (see docs/CONFIGURATION.md)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a setting has the wrong type or an unknown name.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or "the environment" for an override.
        origin: String,
        /// The parser's message, after the line and column. It does not quote the line, nor the value of a
        /// secret setting (`deimos_core::redact`).
        message: String,
    },
    /// An environment override names no setting.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A setting that the requested object needs is not set.
    #[error("{setting} is not set: {hint}")]
    Missing {
        /// The setting's path in the file, such as `kafka.brokers`.
        setting: String,
        /// Where to set it.
        hint: String,
    },
    /// A setting's value is not allowed.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting's path in the file.
        setting: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// No `[[producer]]` or `[[consumer]]` has that name.
    #[error("no [[{kind}]] named `{name}` in the configuration; configured: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    Unknown {
        /// `producer` or `consumer`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names configured.
        known: Vec<String>,
    },
    /// The Kafka backend could not be built from the settings.
    #[error("building the Kafka producer from [kafka] and [producers]: {0}")]
    Backend(#[source] deimos_producer::BackendError),
    /// The schema registry client could not be built from `[schema]`.
    #[error("building the schema registry client from [schema]: {0}")]
    Registry(#[source] deimos_registry::RegistryError),
    /// A producer could not be built from its `[[producer]]` entry.
    #[error("{0}")]
    Producer(#[source] Box<deimos_producer::BuildError>),
    /// A listener or the consumer runner could not be built from the `[[consumer]]` entries.
    #[error("{0}")]
    Consumer(#[source] Box<deimos_consumer::ConsumerError>),
    /// The schemas under `schema.path` could not be loaded.
    #[error("loading the schemas of schema.path: {0}")]
    Schema(#[source] deimos_avro::SchemaError),
}
