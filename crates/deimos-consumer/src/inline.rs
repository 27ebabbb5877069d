//! [`InlineListener`]: a listener's processing without a consumer, for messages the caller hands over.
//!
//! Messages are handled one after another in the order given, whatever the listener's
//! [`ordering`](crate::ListenerBuilder::ordering) and [`max_in_flight`](crate::ListenerBuilder::max_in_flight): a test
//! sees every outcome in order, and a handler that is correct one message at a time is correct there. What the
//! runner does at the same time is tested against the mock cluster (`tests/concurrency.rs`).
//!
//! The test kit (`deimos-test`) builds on it; it is public so other harnesses can too.

use std::sync::Arc;

use bytes::Bytes;
use deimos_avro::{AvroSchema, SchemaStore};
use deimos_keys::{KeyDecoder, KeySpec};
use deimos_registry::{SchemaCodec, SchemaRegistry};

use crate::dead_letter::{DeadLetter, DeadLetterMessage};
use crate::error::{ConsumerError, HandlerError};
use crate::handler::{ErrorContext, ErrorStage, Headers};
use crate::listener::{Delivery, Listener};
use crate::process::{Env, FatalFn, InlineRun, Outcome, Policy, Raw};
use crate::runner::{Schemas, schemas};

/// A message handed to an [`InlineListener`], as it would arrive from Kafka: raw (encoded) key and value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InlineMessage {
    /// The encoded key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// The encoded value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// The headers.
    pub headers: Headers,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The Kafka timestamp in milliseconds since the epoch.
    pub timestamp: Option<i64>,
}

impl InlineMessage {
    /// A message with this encoded key and value, at partition 0, offset 0, without headers or timestamp.
    pub fn new(key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> InlineMessage {
        InlineMessage {
            key,
            value,
            ..InlineMessage::default()
        }
    }

    /// At this partition and offset.
    #[must_use]
    pub fn at(mut self, partition: i32, offset: i64) -> InlineMessage {
        self.partition = partition;
        self.offset = offset;
        self
    }

    /// With these headers.
    #[must_use]
    pub fn headers(mut self, headers: Headers) -> InlineMessage {
        self.headers = headers;
        self
    }

    /// With this Kafka timestamp (milliseconds since the epoch).
    #[must_use]
    pub fn timestamp(mut self, millis: i64) -> InlineMessage {
        self.timestamp = Some(millis);
        self
    }
}

/// How processing a message (or a batch) ended, as the runner would have ended it.
#[derive(Debug)]
#[non_exhaustive]
pub enum InlineOutcome {
    /// The handler returned `Ok`, at this attempt (1 unless a fatal error was retried).
    Handled {
        /// Attempts made, this one included.
        attempts: u32,
    },
    /// The error policy gave up: the runner would log it, count it, dead-letter the message(s) when there
    /// is a dead-letter topic, store the offset and move on.
    Skipped {
        /// What failed.
        stage: ErrorStage,
        /// The last error.
        error: HandlerError,
        /// Attempts made.
        attempts: u32,
        /// Whether the error was fatal (retried up to `max_attempts`) rather than swallowed.
        fatal: bool,
        /// What went to the dead-letter topic (empty without one).
        dead_letters: Vec<DeadLetterMessage>,
    },
    /// A fatal error without `max_attempts`: the runner would retry it forever (after backoff), so the
    /// inline listener hands it back instead, after the first attempt.
    Raised {
        /// What failed.
        stage: ErrorStage,
        /// The error.
        error: HandlerError,
        /// Attempts made (1).
        attempts: u32,
    },
}

impl InlineOutcome {
    /// Whether the handler succeeded.
    pub fn is_handled(&self) -> bool {
        matches!(self, InlineOutcome::Handled { .. })
    }

    /// The error, unless the handler succeeded.
    pub fn error(&self) -> Option<&HandlerError> {
        match self {
            InlineOutcome::Handled { .. } => None,
            InlineOutcome::Skipped { error, .. } | InlineOutcome::Raised { error, .. } => Some(error),
        }
    }
}

/// A [`Listener`]'s decoding, handler, error policy and metrics, run on messages given by the caller:
/// no consumer, no group, no offsets. Retries are made at once (the backoff is not waited); a fatal error
/// the runner would retry forever (no [`max_attempts`](crate::ListenerBuilder::max_attempts)) is handed
/// back as [`InlineOutcome::Raised`]; dead letters are kept in memory and returned in the outcome.
///
/// ```
/// # use std::sync::Arc;
/// use deimos_avro::SchemaStore;
/// use deimos_consumer::{Handler, HandlerError, InlineListener, InlineMessage, KeyConfig, Listener, Message, async_trait};
/// use deimos_registry::{MemoryRegistry, SchemaCodec, SchemaRegistry};
/// use serde_json::{Value, json};
///
/// struct Print;
/// #[async_trait]
/// impl Handler for Print {
///     type Payload = Value;
///     async fn consume(&self, message: Message<Value>) -> Result<(), HandlerError> {
///         println!("{:?}", message.payload);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
/// let store = SchemaStore::load_all(schemas)?;
/// let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
/// let listener = Listener::builder("gadgets", "test").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(Print).build()?;
/// let inline = InlineListener::builder(&listener, &store, Arc::clone(&registry)).build()?;
///
/// let codec = SchemaCodec::from_arc(registry);
/// let gadget = json!({"id": 1, "region": "eu", "name": "g"});
/// let value = codec.encode_value("gadgets-value", &store.get("com.acme.keys.Gadget")?, &gadget).await?;
/// let outcome = inline.process_message(InlineMessage::new(None, Some(value))).await?;
/// assert!(outcome.is_handled());
/// # Ok(())
/// # }
/// ```
pub struct InlineListener {
    topic: String,
    batch: bool,
    reader: AvroSchema,
    key_spec: KeySpec,
    run: Box<dyn InlineRun>,
}

impl std::fmt::Debug for InlineListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineListener")
            .field("topic", &self.topic)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// Builds an [`InlineListener`].
#[must_use]
pub struct InlineListenerBuilder<'a> {
    listener: &'a Listener,
    store: &'a SchemaStore,
    registry: Arc<dyn SchemaRegistry>,
    reraise_errors: bool,
    fatal_error: Option<FatalFn>,
}

impl std::fmt::Debug for InlineListenerBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineListenerBuilder")
            .field("topic", &self.listener.topic)
            .field("reraise_errors", &self.reraise_errors)
            .finish_non_exhaustive()
    }
}

impl InlineListenerBuilder<'_> {
    /// Every error is fatal, as with the runner's
    /// [`reraise_errors`](crate::ConsumerRunnerBuilder::reraise_errors) (Deimos's test default).
    pub fn reraise_errors(mut self, yes: bool) -> Self {
        self.reraise_errors = yes;
        self
    }

    /// The runner's global [`fatal_error`](crate::ConsumerRunnerBuilder::fatal_error) predicate.
    pub fn fatal_error<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&HandlerError, &ErrorContext) -> bool + Send + Sync + 'static,
    {
        self.fatal_error = Some(Arc::new(predicate));
        self
    }

    /// Loads the listener's schemas and builds its key decoder, as the runner's `build` does.
    pub fn build(self) -> Result<InlineListener, ConsumerError> {
        let listener = self.listener;
        let Schemas {
            reader,
            key_spec,
            timestamp,
        } = schemas(listener, self.store)?;
        let env = Env {
            topic: Arc::from(listener.topic.as_str()),
            group_id: Arc::from(listener.group_id.as_str()),
            codec: Arc::new(SchemaCodec::from_arc(self.registry)),
            reader,
            keys: KeyDecoder::new(key_spec),
            timestamp,
            policy: Policy {
                error_policy: listener.error_policy,
                max_attempts: listener.max_attempts,
                backoff: listener.backoff,
                reraise_errors: self.reraise_errors,
                global_fatal: self.fatal_error,
                inline: true,
            },
            dead_letter: listener
                .dead_letter_topic
                .clone()
                .map(|topic| Arc::new(DeadLetter::in_memory(topic))),
            max_batch_size: listener.max_batch_size,
            max_wait: listener.max_wait,
            payload_log: listener.payload_log,
            ordering: listener.ordering,
            max_in_flight: listener.max_in_flight,
            max_buffered_bytes: listener.max_buffered_bytes,
        };
        Ok(InlineListener {
            topic: listener.topic.clone(),
            reader: env.reader.clone(),
            key_spec: env.keys.spec().clone(),
            batch: matches!(listener.delivery, Delivery::Batch(_)),
            run: listener.delivery.start().inline(env),
        })
    }
}

impl InlineListener {
    /// Starts an inline listener for `listener`, reading schemas from `store` and writer schemas from
    /// `registry`.
    pub fn builder<'a>(
        listener: &'a Listener,
        store: &'a SchemaStore,
        registry: Arc<dyn SchemaRegistry>,
    ) -> InlineListenerBuilder<'a> {
        InlineListenerBuilder {
            listener,
            store,
            registry,
            reraise_errors: false,
            fatal_error: None,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The listener's value (reader) schema.
    pub fn schema(&self) -> &AvroSchema {
        &self.reader
    }

    /// The listener's key spec: its `key_config` built against its value schema.
    pub fn key_spec(&self) -> &KeySpec {
        &self.key_spec
    }

    /// Whether the listener delivers batches (a [`BatchHandler`](crate::BatchHandler)).
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    /// Processes one message through a [`Handler`](crate::Handler) listener.
    pub async fn process_message(&self, message: InlineMessage) -> Result<InlineOutcome, ConsumerError> {
        if self.batch {
            return Err(self.misuse("delivers batches (a BatchHandler); give it a batch instead of one message"));
        }
        let outcomes = self.run.process(vec![raw(message)]).await;
        Ok(self.outcome(outcomes))
    }

    /// Processes messages as one batch through a [`BatchHandler`](crate::BatchHandler) listener. They must
    /// be of one partition (as the runner's batches are) and at most the listener's `max_batch_size`. An empty
    /// batch reaches the handler as an empty batch, as Deimos's `test_consume_batch` passes it on (the runner
    /// never delivers one).
    pub async fn process_batch(&self, messages: Vec<InlineMessage>) -> Result<InlineOutcome, ConsumerError> {
        if !self.batch {
            return Err(self.misuse("delivers one message at a time (a Handler); give it one message at a time"));
        }
        if messages.iter().any(|m| m.partition != messages[0].partition) {
            return Err(self.misuse("was given a batch of several partitions; the runner's batches have one"));
        }
        let outcomes = self.run.process(messages.into_iter().map(raw).collect()).await;
        Ok(self.outcome(outcomes))
    }

    fn outcome(&self, outcomes: Vec<Outcome>) -> InlineOutcome {
        let dead_letters = self.run.dead_letter().map(DeadLetter::take).unwrap_or_default();
        match outcomes.into_iter().next() {
            Some(Outcome::GaveUp {
                stage,
                error,
                attempts,
                fatal,
            }) => InlineOutcome::Skipped {
                stage,
                error,
                attempts,
                fatal,
                dead_letters,
            },
            Some(Outcome::Raised { stage, error, attempts }) => InlineOutcome::Raised { stage, error, attempts },
            Some(Outcome::Handled { attempts }) => InlineOutcome::Handled { attempts },
            // One call gives one outcome.
            None => InlineOutcome::Handled { attempts: 0 },
        }
    }

    fn misuse(&self, message: &str) -> ConsumerError {
        ConsumerError::InlineMisuse {
            topic: self.topic.clone(),
            message: message.to_string(),
        }
    }
}

fn raw(m: InlineMessage) -> Raw {
    Raw {
        key: m.key.map(Bytes::from),
        value: m.value.map(Bytes::from),
        headers: m.headers,
        partition: m.partition,
        offset: m.offset,
        timestamp: m.timestamp,
    }
}
