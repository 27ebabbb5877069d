//! The test kit's errors.

use deimos_consumer::{ConsumerError, DeadLetterMessage, ErrorStage, HandlerError};

/// A boxed error from a dependency.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Setting up the kit, a fixture or the inline consumer failed, or what it read could not be decoded.
///
/// ```
/// use deimos_test::{TestError, TestKit};
///
/// let err = TestKit::new("no/such/schemas").unwrap_err();
/// assert!(matches!(err, TestError::Schemas { .. }));
/// assert!(err.to_string().contains("no/such/schemas"), "{err}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    /// The schema folder could not be loaded.
    #[error("the schemas under `{path}` could not be loaded: {source}")]
    Schemas {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// A schema given to [`schemas_compatible`](crate::schemas_compatible) could not be read or parsed.
    #[error("schema {which} could not be read: {message}")]
    Schema {
        /// `a` or `b`.
        which: &'static str,
        /// Why.
        message: String,
    },

    /// The mock Kafka cluster could not be started, or a topic created on it.
    #[error("the mock Kafka cluster {action} failed: {source}")]
    MockKafka {
        /// What was being done.
        action: String,
        /// librdkafka's error.
        #[source]
        source: BoxError,
    },

    /// The embedded schema registry could not be started.
    #[error("the embedded schema registry could not be started: {0}")]
    Registry(#[source] BoxError),

    /// The inline consumer could not read the topic.
    #[error("the inline consumer could not read topic `{topic}`: {message}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What failed, and what to check.
        message: String,
        /// The client's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A message read by the inline consumer could not be decoded.
    #[error("the message at `{topic}` partition {partition} offset {offset} could not be decoded: {source}")]
    Decode {
        /// The topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// A producer or listener given to the inline consumer does not fit (its schemas do not load).
    #[error(transparent)]
    Listener(#[from] ConsumerError),
}

/// Consuming a message (or batch) through [`consume_message`](crate::TestKit::consume_message) or
/// [`consume_batch`](crate::TestKit::consume_batch) did not end in the handler's success.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The payload does not fit the listener's value schema, so no producer could have sent it.
    #[error(
        "the payload{at} is not valid for the value schema `{schema}` of the listener for `{topic}`: {reason}",
        at = index.map(|i| format!(" at index {i}")).unwrap_or_default()
    )]
    InvalidPayload {
        /// The listener's topic.
        topic: String,
        /// The value schema's full name.
        schema: String,
        /// Which payload of a batch.
        index: Option<usize>,
        /// What does not fit, with its path.
        reason: String,
    },

    /// The key (given or defaulted) could not be encoded per the listener's key config.
    #[error("the key{at} cannot be encoded per the key config of the listener for `{topic}`: {reason}",
        at = index.map(|i| format!(" at index {i}")).unwrap_or_default())]
    InvalidKey {
        /// The listener's topic.
        topic: String,
        /// Which message of a batch.
        index: Option<usize>,
        /// Why.
        reason: String,
    },

    /// The listener's schemas do not load, or the call does not fit its delivery (a message for a batch
    /// handler, a batch for a message handler, an empty batch).
    #[error(transparent)]
    Listener(#[from] ConsumerError),

    /// The value schema could not be registered in the kit's registry.
    #[error("the value schema of the listener for `{topic}` could not be registered: {source}")]
    Registry {
        /// The listener's topic.
        topic: String,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// The error policy gave up: in production the message (or batch) is logged, counted, sent to the
    /// dead-letter topic when there is one, and skipped.
    #[error(
        "the listener for `{topic}` gave up on the {what} ({kind}, at the {stage} stage, after {attempts} attempt{s}){dlq}: {source}",
        what = if *batch { "batch" } else { "message" },
        kind = if *fatal { "fatal error, max_attempts reached" } else { "error swallowed by its policy" },
        s = if *attempts == 1 { "" } else { "s" },
        dlq = if dead_letters.is_empty() { String::new() } else { format!("; {} sent to the dead-letter topic", dead_letters.len()) }
    )]
    Skipped {
        /// The listener's topic.
        topic: String,
        /// Whether a batch was consumed.
        batch: bool,
        /// What failed.
        stage: ErrorStage,
        /// Attempts made.
        attempts: u32,
        /// Whether the error was fatal (retried up to `max_attempts`).
        fatal: bool,
        /// What went to the dead-letter topic.
        dead_letters: Vec<DeadLetterMessage>,
        /// The last error.
        #[source]
        source: HandlerError,
    },

    /// A fatal error the runner would retry forever (no `max_attempts`), handed back after the first
    /// attempt (Deimos's tests re-raise errors the same way).
    #[error(
        "the listener for `{topic}` failed with a fatal error at the {stage} stage (the runner would retry it forever): {source}"
    )]
    Raised {
        /// The listener's topic.
        topic: String,
        /// What failed.
        stage: ErrorStage,
        /// Attempts made (1).
        attempts: u32,
        /// The error.
        #[source]
        source: HandlerError,
    },
}

impl ConsumeError {
    /// The handler's (or decoder's) error, when the handler ran and failed.
    ///
    /// ```
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # struct Failing;
    /// # #[async_trait]
    /// # impl Handler for Failing {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, _: Message<Value>) -> Result<(), HandlerError> { Err("boom".into()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// // `Failing` returns `Err("boom".into())` for every message.
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(Failing).build()?;
    /// let err = kit.consume_message(&listener, json!({"id": 1, "region": "eu", "name": "g"})).await.unwrap_err();
    /// assert_eq!(err.handler_error().map(|e| e.to_string()).as_deref(), Some("boom"));
    ///
    /// let invalid = kit.consume_message(&listener, json!({"id": 1})).await.unwrap_err();
    /// assert!(invalid.handler_error().is_none()); // refused before the handler ran
    /// # Ok(())
    /// # }
    /// ```
    pub fn handler_error(&self) -> Option<&HandlerError> {
        match self {
            ConsumeError::Skipped { source, .. } | ConsumeError::Raised { source, .. } => Some(source),
            _ => None,
        }
    }

    /// What went to the dead-letter topic: empty unless the error policy gave up on a listener with a
    /// dead-letter topic.
    ///
    /// ```
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # struct Failing;
    /// # #[async_trait]
    /// # impl Handler for Failing {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, _: Message<Value>) -> Result<(), HandlerError> { Err("boom".into()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// // `Failing` returns `Err("boom".into())` for every message.
    /// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(Failing)
    ///     .dead_letter_topic("gadgets.dlq").build()?;
    /// let err = kit.consume_message(&listener, json!({"id": 1, "region": "eu", "name": "g"})).await.unwrap_err();
    /// let dead = err.dead_letters();
    /// assert_eq!(dead.len(), 1);
    /// assert_eq!(dead[0].topic, "gadgets.dlq");
    /// assert_eq!(dead[0].headers.get_str("deimos.dlq.error.message"), Some("boom"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn dead_letters(&self) -> &[DeadLetterMessage] {
        match self {
            ConsumeError::Skipped { dead_letters, .. } => dead_letters,
            _ => &[],
        }
    }
}
