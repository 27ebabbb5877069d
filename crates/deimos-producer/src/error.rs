//! Errors of deimos-producer.

use deimos_avro::{EncodeError, SchemaError};
use deimos_keys::KeyError;
use deimos_registry::CodecError;

use crate::backend::DeliveryError;

/// A publish backend could not be created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// librdkafka refused the configuration. The values of secret settings are not in the error
    /// (`deimos_core::redact::kafka_error`).
    #[error(
        "cannot create the Kafka producer: {source}; check the librdkafka settings passed to KafkaBackend::builder()"
    )]
    Create {
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// No brokers were configured.
    #[error("no Kafka brokers configured; call .bootstrap_servers(\"host:9092,…\") on KafkaBackend::builder()")]
    NoBrokers,
    /// A setting has a value that cannot be used.
    #[error("setting `{key}` = `{value}` is not valid; give a number")]
    Setting {
        /// The setting.
        key: String,
        /// Its value.
        value: String,
    },
    /// The topic's metadata could not be fetched.
    #[error(
        "cannot fetch the metadata (partition count) of topic `{topic}`: {source}; check that the brokers are reachable and the topic exists"
    )]
    Metadata {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The topic has no partitions (it does not exist and is not auto-created).
    #[error(
        "topic `{topic}` has no partitions; create it (or enable auto-creation) before publishing with a partition key"
    )]
    NoPartitions {
        /// The topic.
        topic: String,
    },
    /// Flushing timed out.
    #[error("{in_flight} messages still undelivered after the flush timeout: {source}")]
    Flush {
        /// Messages left.
        in_flight: i32,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A blocking task failed.
    #[error("background task failed: {0}")]
    Runtime(String),
}

/// A producer could not be built: the preflight found a problem before the first message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No topic was configured.
    #[error(
        "Topic not specified. Please specify the topic. (producer `{producer}`: call .topic(\"…\") on its builder)"
    )]
    BlankTopic {
        /// The producer.
        producer: String,
    },
    /// No schema was configured.
    #[error("producer `{producer}` has no schema; call .schema(\"Name\") (and .namespace(\"ns\")) on its builder")]
    NoSchema {
        /// The producer.
        producer: String,
    },
    /// The value schema could not be loaded.
    #[error("producer `{producer}`: value schema {schema} could not be loaded: {source}")]
    Schema {
        /// The producer.
        producer: String,
        /// The schema's full name.
        schema: String,
        /// What the store said.
        #[source]
        source: SchemaError,
    },
    /// The key config does not fit the schema, or the key schema could not be registered.
    #[error("producer `{producer}`: {source}")]
    Key {
        /// The producer.
        producer: String,
        /// The key problem.
        #[source]
        source: KeyError,
    },
    /// The value schema could not be registered or looked up.
    #[error("producer `{producer}`: cannot register value schema {schema} under subject `{subject}`: {source}")]
    Register {
        /// The producer.
        producer: String,
        /// The schema's full name.
        schema: String,
        /// The subject.
        subject: String,
        /// The registry's error.
        #[source]
        source: CodecError,
    },
}

/// A publish call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic (configured or overridden) is blank.
    #[error("Topic not specified. Please specify the topic. (producer `{producer}`)")]
    BlankTopic {
        /// The producer.
        producer: String,
    },
    /// A loose payload is not a JSON object.
    #[error(
        "producer `{producer}`, message {index}: the payload must be a JSON object (a map of field names to values), got {got}"
    )]
    NotAnObject {
        /// The producer.
        producer: String,
        /// The message's position in the call.
        index: usize,
        /// What it was.
        got: &'static str,
        /// Messages of the call handed to the backend before this one's group (see [`PublishError::sent`]).
        sent: usize,
    },
    /// A key was missing, not allowed, or could not be encoded. Nothing of its group or after was sent.
    #[error("producer `{producer}`, message {index}: {source}")]
    Key {
        /// The producer.
        producer: String,
        /// The message's position in the call.
        index: usize,
        /// The key problem (Deimos's messages for a missing key or a missing key config).
        #[source]
        source: Box<KeyError>,
        /// Messages of the call handed to the backend before this one's group.
        sent: usize,
    },
    /// A payload does not fit the schema. Nothing of its group or after was sent.
    #[error("producer `{producer}`, message {index}: payload does not fit schema {schema}: {source}")]
    Encode {
        /// The producer.
        producer: String,
        /// The message's position in the call.
        index: usize,
        /// The schema's full name.
        schema: String,
        /// What did not fit, with the field path.
        #[source]
        source: Box<EncodeError>,
        /// Messages of the call handed to the backend before this one's group.
        sent: usize,
    },
    /// Some messages were not delivered; the others were. The report has the result of each.
    #[error(
        "producer `{producer}`: {failed} of {total} messages were not delivered; first: message {first_index}: {first_error}"
    )]
    Undelivered {
        /// The producer.
        producer: String,
        /// How many failed.
        failed: usize,
        /// How many the call had.
        total: usize,
        /// The first failed message's position.
        first_index: usize,
        /// Its error.
        first_error: Box<DeliveryError>,
        /// Every message's result.
        report: Box<crate::PublishReport>,
    },
}

impl PublishError {
    /// For errors found while encoding (`Key`, `Encode`, `NotAnObject`): how many messages of the call were
    /// handed to the backend before the failing message's group. Calls of at most `max_batch_size` (500)
    /// messages are all or nothing, so this is 0 for them; a longer call sends group by group.
    pub fn sent(&self) -> usize {
        match self {
            PublishError::Key { sent, .. }
            | PublishError::Encode { sent, .. }
            | PublishError::NotAnObject { sent, .. } => *sent,
            _ => 0,
        }
    }

    pub(crate) fn set_sent(&mut self, n: usize) {
        if let PublishError::Key { sent, .. }
        | PublishError::Encode { sent, .. }
        | PublishError::NotAnObject { sent, .. } = self
        {
            *sent = n;
        }
    }

    /// A short name of the error's kind (`blank_topic`, `not_an_object`, `key`, `encode`, `undelivered`), as
    /// spans record it in `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::BlankTopic { .. } => "blank_topic",
            PublishError::NotAnObject { .. } => "not_an_object",
            PublishError::Key { .. } => "key",
            PublishError::Encode { .. } => "encode",
            PublishError::Undelivered { .. } => "undelivered",
            #[allow(unreachable_patterns)]
            _ => "publish",
        }
    }

    /// For [`PublishError::Undelivered`], every message's result.
    pub fn report(&self) -> Option<&crate::PublishReport> {
        match self {
            PublishError::Undelivered { report, .. } => Some(report),
            _ => None,
        }
    }
}
