//! Error types of deimos-consumer.

use deimos_avro::SchemaError;
use deimos_keys::KeyError;
use deimos_registry::CodecError;

/// What a handler returns when it could not handle a message or batch.
///
/// Any error type converts into it with `?` (`Box<dyn Error>` style). A handler that wants the
/// [`fatal_error`](crate::Handler::fatal_error) predicates to see more than the error message can return
/// an error type of its own and downcast it there.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed dependency error (librdkafka's), kept out of the public API.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Configuring or running the consumer runner failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A listener was built without a topic.
    #[error("a listener needs a topic: `Listener::builder(topic, group_id)` was given an empty topic")]
    EmptyTopic,

    /// A listener was built without a consumer group.
    #[error(
        "the listener for topic `{topic}` needs a consumer group id: `Listener::builder(topic, group_id)` was given an empty group id"
    )]
    EmptyGroupId {
        /// The listener's topic.
        topic: String,
    },

    /// A listener was built without a value schema.
    #[error(
        "the listener for topic `{topic}` has no value schema; call `.schema(\"com.acme.Widget\")` (or a bare name with `.namespace(..)`)"
    )]
    MissingValueSchema {
        /// The listener's topic.
        topic: String,
    },

    /// A listener was built without a handler.
    #[error(
        "the listener for topic `{topic}` has no handler; call `.handler(h)` (one message at a time) or `.batch_handler(h)` (batches)"
    )]
    MissingHandler {
        /// The listener's topic.
        topic: String,
    },

    /// A listener or runner setting is out of range.
    #[error("invalid setting for {scope}: {message}")]
    InvalidSetting {
        /// `listener for topic ...` or `consumer runner`.
        scope: String,
        /// What is wrong and what to use instead.
        message: String,
    },

    /// The runner was built without a schema registry.
    #[error(
        "the consumer runner has no schema registry; call `.registry(Arc::new(HttpRegistry::new(url)?))` (or a MemoryRegistry in tests)"
    )]
    MissingRegistry,

    /// The runner was built without a schema store.
    #[error("the consumer runner has no schema store; call `.schema_store(SchemaStore::load_all(\"schemas\")?)`")]
    MissingSchemaStore,

    /// The runner was built without listeners.
    #[error(
        "the consumer runner has no listeners; add at least one with `.listener(Listener::builder(..)...build()?)`"
    )]
    NoListeners,

    /// Every listener given to the runner is disabled, so it would have nothing to consume.
    #[error(
        "every listener of the consumer runner is disabled (topics {}): enable one (`disabled = false`, or drop `.disabled(true)`), or do not start a runner",
        topics.join(", ")
    )]
    AllListenersDisabled {
        /// The disabled listeners' topics.
        topics: Vec<String>,
    },

    /// The runner was built without bootstrap servers.
    #[error("the consumer runner has no bootstrap servers; call `.bootstrap_servers(\"host1:9092,host2:9092\")`")]
    MissingBootstrapServers,

    /// A listener's value schema could not be loaded.
    #[error("the value schema `{schema}` of the listener for topic `{topic}` could not be loaded: {source}")]
    Schema {
        /// The listener's topic.
        topic: String,
        /// The schema name as configured.
        schema: String,
        /// What the schema store said.
        #[source]
        source: Box<SchemaError>,
    },

    /// A listener was built without a key config. Deimos passes keys through undecoded then, which hands a
    /// typed handler keys it cannot read; deimos-rs asks for the choice when the listener is built.
    #[error(
        "the listener for topic `{topic}`: No key config given - if you are not decoding keys, please use `key_config plain: true`. In deimos-rs: call `.key_config(KeyConfig::Plain)` to read keys as they are, `KeyConfig::None` when the topic's messages have no keys, or `KeyConfig::field(..)` / `KeyConfig::schema(..)` to decode Avro keys (in a configuration file: `key_config = {{ plain = true }}` and so on)"
    )]
    MissingKeyConfig {
        /// The listener's topic.
        topic: String,
    },

    /// A listener's key config does not fit its value schema.
    #[error("the key config of the listener for topic `{topic}` is invalid: {source}")]
    KeyConfig {
        /// The listener's topic.
        topic: String,
        /// What deimos-keys said.
        #[source]
        source: Box<KeyError>,
    },

    /// librdkafka rejected a setting.
    #[error(
        "librdkafka rejected the configuration of the {client} for topic `{topic}`: {source}; check the names and values given to `.kafka_setting(..)`"
    )]
    KafkaConfig {
        /// `consumer` or `dead-letter producer`.
        client: &'static str,
        /// The listener's topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: BoxError,
    },

    /// Reading the last messages of a topic ([`tail::last_messages`](crate::tail::last_messages)) failed.
    #[error("reading the last messages of `{topic}`: {message}{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Read {
        /// The topic.
        topic: String,
        /// What failed and what to check.
        message: String,
        /// librdkafka's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A consumer could not subscribe to its topic.
    #[error("the consumer for topic `{topic}` (group `{group_id}`) could not subscribe: {source}")]
    Subscribe {
        /// The listener's topic.
        topic: String,
        /// The consumer group.
        group_id: String,
        /// librdkafka's error.
        #[source]
        source: BoxError,
    },

    /// A [`ListenerControl`](crate::ListenerControl) command could not be carried out.
    #[error("{what} on the listener for topic `{topic}` (group `{group_id}`): {message}")]
    Control {
        /// The listener's topic.
        topic: String,
        /// The consumer group.
        group_id: String,
        /// The command, e.g. `seeking partition 3 to offset 42`.
        what: String,
        /// What went wrong and what to do.
        message: String,
    },

    /// A listener's task panicked (a handler panicked); the runner shut the other listeners down.
    #[error(
        "the listener for topic `{topic}` (group `{group_id}`) panicked: {message}; handlers should return errors instead of panicking"
    )]
    ListenerPanicked {
        /// The listener's topic.
        topic: String,
        /// The consumer group.
        group_id: String,
        /// The panic message, if it was a string.
        message: String,
    },

    /// An [`InlineListener`](crate::InlineListener) call does not fit its listener.
    #[error("the listener for topic `{topic}` {message}")]
    InlineMisuse {
        /// The listener's topic.
        topic: String,
        /// What does not fit, and what to do.
        message: String,
    },
}

/// A message could not be decoded. Handed to the [`fatal_error`](crate::Handler::fatal_error) predicates
/// (as a [`HandlerError`] to downcast) when decoding, not the handler, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageDecodeError {
    /// The key could not be decoded with the listener's key config.
    #[error("the message key could not be decoded: {0}")]
    Key(#[source] KeyError),
    /// The value could not be decoded (wrong magic byte, unknown schema id, corrupt bytes, schemas that do
    /// not resolve).
    #[error("the message value could not be decoded: {0}")]
    Value(#[source] CodecError),
}

/// Marks an error as transient: the same message or batch may succeed later without any change (a lost
/// database connection, a timeout, a deadlock past its retry budget, a service that is briefly down).
///
/// The runner retries a transient error with capped exponential backoff, whatever the listener's
/// [`ErrorPolicy`](crate::ErrorPolicy), holding the partition (paused, so `max.poll.interval.ms` is never
/// exceeded) until it succeeds: a transient error never skips a message. A handler returns it with
/// `Err(Transient::new(error).into())`. Registry outages (transport errors, timeouts, 5xx) while fetching a
/// writer schema are transient without being marked (see [`is_transient`]).
#[derive(Debug)]
pub struct Transient(HandlerError);

impl Transient {
    /// Marks `error` as transient.
    pub fn new(error: impl Into<HandlerError>) -> Transient {
        Transient(error.into())
    }

    /// The error marked.
    pub fn into_inner(self) -> HandlerError {
        self.0
    }
}

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Transient {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A handler panicked. The runner catches the panic and hands this error to the listener's error policy
/// (stage [`ErrorStage::Handler`](crate::ErrorStage::Handler)), like any error the handler returns.
#[derive(Debug, thiserror::Error)]
#[error("the handler panicked: {message}")]
#[non_exhaustive]
pub struct HandlerPanicked {
    /// The panic message (`(not a string)` when the panic payload was not text).
    pub message: String,
}

impl HandlerPanicked {
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> HandlerPanicked {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(not a string)".to_string());
        HandlerPanicked { message }
    }
}

/// Whether an error (or any error in its chain of sources) is transient: a [`Transient`], a schema registry
/// that could not be reached, timed out or answered 5xx/429 ([`RegistryError::is_retryable`]), or an I/O
/// error of a lost or refused connection or a timeout.
///
/// [`RegistryError::is_retryable`]: deimos_registry::RegistryError::is_retryable
pub fn is_transient(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<Transient>() {
            return true;
        }
        if let Some(r) = registry_error(e) {
            // A registry answer decides: a retryable one is transient, a definite one (404, 422) is not.
            return r.is_retryable();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::Interrupted
            ) {
                return true;
            }
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The registry error `e` is, wraps transparently or boxes (`thiserror` sources of type `Box<RegistryError>`
/// and transparent variants hide the registry error from a plain walk of `source()`).
fn registry_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a deimos_registry::RegistryError> {
    if let Some(r) = e.downcast_ref::<deimos_registry::RegistryError>() {
        return Some(r);
    }
    if let Some(r) = e.downcast_ref::<Box<deimos_registry::RegistryError>>() {
        return Some(r);
    }
    match e.downcast_ref::<CodecError>() {
        Some(CodecError::Registry(r)) => Some(r),
        _ => None,
    }
}

/// A batch handler's error that says which messages of the batch were handled (committed) anyway: when the
/// batch is given up, only the others go to the dead-letter topic, so a redrive does not apply a message
/// twice. Return it with `Err(PartiallyHandled::new(offsets, error).into())`.
#[derive(Debug)]
pub struct PartiallyHandled {
    handled: Vec<i64>,
    error: HandlerError,
}

impl PartiallyHandled {
    /// `error`, with the offsets of the batch's messages that were handled despite it.
    pub fn new(handled_offsets: impl IntoIterator<Item = i64>, error: impl Into<HandlerError>) -> PartiallyHandled {
        PartiallyHandled {
            handled: handled_offsets.into_iter().collect(),
            error: error.into(),
        }
    }

    /// The offsets of the messages that were handled.
    pub fn handled_offsets(&self) -> &[i64] {
        &self.handled
    }
}

impl std::fmt::Display for PartiallyHandled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for PartiallyHandled {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> deimos_registry::RegistryError {
        deimos_registry::RegistryError::Transport {
            method: "GET".into(),
            url: "http://registry".into(),
            timed_out: false,
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        }
    }

    #[test]
    fn transient_errors_are_recognised_through_their_wrappers() {
        let decode = MessageDecodeError::Value(CodecError::Registry(transport()));
        assert!(is_transient(&decode), "a registry outage while decoding");
        let not_found =
            MessageDecodeError::Value(CodecError::Registry(deimos_registry::RegistryError::SchemaNotFound {
                id: Some(7),
                subject: None,
            }));
        assert!(!is_transient(&not_found), "an unknown schema id is permanent");
        let marked: HandlerError = Transient::new("database gone").into();
        assert!(is_transient(&*marked));
        let partial: HandlerError = PartiallyHandled::new([1, 2], Transient::new("database gone")).into();
        assert!(is_transient(&*partial), "a marker inside another wrapper");
        let io: HandlerError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_transient(&*io));
        let plain: HandlerError = "bad data".into();
        assert!(!is_transient(&*plain));
    }
}
