//! [`Listener`]: one topic, one consumer group, one handler.

use std::collections::BTreeMap;

use deimos_metrics::PayloadLog;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deimos_keys::KeyConfig;

use crate::attempt::{Many, One};
use crate::error::ConsumerError;
use crate::handler::{BatchHandler, Handler};
use crate::process::{Start, Starter};

/// Deimos's default backoff between retries of a fatal error: 1 s, doubling up to 60 s.
pub const DEFAULT_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// Default largest batch (Deimos's ActiveRecord batch consumers use 500 too).
pub const DEFAULT_MAX_BATCH_SIZE: usize = 500;
/// Default longest wait for a partition's batch to fill before it is delivered anyway.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(500);
/// Default interval at which handled offsets are committed (Deimos's `offset_commit_interval`, 10 s).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(10);
/// Default interval of librdkafka statistics, hence of `consumer_lag`, when lag reporting is on.
pub const DEFAULT_LAG_INTERVAL: Duration = Duration::from_secs(10);
/// Default bound on a listener's messages (or batches) being handled at the same time.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default bound on the bytes of messages a listener has fetched and not yet handled (32 MiB).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;

/// Which messages of a listener are handled in order; the others are handled at the same time, up to
/// [`max_in_flight`](ListenerBuilder::max_in_flight).
///
/// Whatever the order, the committed offset of a partition never passes a message that is not finished, so
/// after a crash nothing is skipped (messages finished after an unfinished one are handled again). Retries,
/// fatal errors and dead letters hold only what must stay in order behind them: the message's key in `Key`
/// order, its partition in `Partition` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProcessingOrder {
    /// Each partition in order, partitions at the same time (Deimos's order within a partition). Batch handlers
    /// get one batch per partition at a time.
    #[default]
    Partition,
    /// Messages with the same key in order, different keys at the same time, also within one partition.
    /// Tombstones go with their key; messages without a key are in order among themselves, per partition.
    /// Message handlers only.
    Key,
    /// Any order: every message may be handled at the same time as any other. Message handlers only.
    Unordered,
}

impl ProcessingOrder {
    /// `partition`, `key` or `unordered`: the name in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingOrder::Partition => "partition",
            ProcessingOrder::Key => "key",
            ProcessingOrder::Unordered => "unordered",
        }
    }
}

/// What happens when handling a message (or batch) fails, or it cannot be decoded.
///
/// Whatever the listener's policy, an error is also fatal when the runner has
/// [`reraise_errors`](crate::ConsumerRunnerBuilder::reraise_errors), when the runner's
/// [`fatal_error`](crate::ConsumerRunnerBuilder::fatal_error) predicate says so, or when the handler's own
/// [`fatal_error`](crate::Handler::fatal_error) says so (Deimos's `_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Log a warning, count `handler{status=error}`, send the message to the dead-letter topic if there is
    /// one, and move on: the message is skipped (Deimos's default).
    #[default]
    Swallow,
    /// Retry the same message or batch with exponential backoff (Deimos's re-raised errors under Phobos):
    /// forever, or until [`max_attempts`](ListenerBuilder::max_attempts), after which it goes to the
    /// dead-letter topic (or is logged and skipped when there is none).
    Fatal,
}

/// How messages reach the handler.
#[derive(Clone)]
pub(crate) enum Delivery {
    Message(Arc<dyn Start>),
    Batch(Arc<dyn Start>),
}

impl Delivery {
    pub(crate) fn start(&self) -> &Arc<dyn Start> {
        match self {
            Delivery::Message(s) | Delivery::Batch(s) => s,
        }
    }
}

/// One topic consumed by one consumer group with one handler: Deimos's consumer class plus its Phobos
/// listener settings. Built with [`Listener::builder`]; added to a runner with
/// [`ConsumerRunnerBuilder::listener`](crate::ConsumerRunnerBuilder::listener).
#[derive(Clone)]
pub struct Listener {
    pub(crate) topic: String,
    pub(crate) group_id: String,
    pub(crate) value_schema: String,
    pub(crate) namespace: Option<String>,
    pub(crate) key_config: KeyConfig,
    pub(crate) delivery: Delivery,
    pub(crate) start_from_beginning: bool,
    pub(crate) max_batch_size: usize,
    pub(crate) max_wait: Duration,
    pub(crate) session_timeout: Option<Duration>,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) error_policy: ErrorPolicy,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) commit_interval: Duration,
    pub(crate) report_lag: bool,
    pub(crate) lag_interval: Duration,
    pub(crate) payload_log: PayloadLog,
    pub(crate) kafka_settings: BTreeMap<String, String>,
    pub(crate) ordering: ProcessingOrder,
    pub(crate) max_in_flight: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) disabled: bool,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .field("value_schema", &self.value_schema)
            .field("namespace", &self.namespace)
            .field("key_config", &self.key_config)
            .field(
                "delivery",
                &match self.delivery {
                    Delivery::Message(_) => "message",
                    Delivery::Batch(_) => "batch",
                },
            )
            .field("error_policy", &self.error_policy)
            .field("max_attempts", &self.max_attempts)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("ordering", &self.ordering)
            .field("max_in_flight", &self.max_in_flight)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Starts a listener for `topic` in consumer group `group_id`.
    pub fn builder(topic: impl Into<String>, group_id: impl Into<String>) -> ListenerBuilder {
        ListenerBuilder {
            topic: topic.into(),
            group_id: group_id.into(),
            value_schema: None,
            namespace: None,
            key_config: KeyConfig::NotSet,
            delivery: None,
            start_from_beginning: true,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_wait: DEFAULT_MAX_WAIT,
            session_timeout: None,
            heartbeat_interval: None,
            backoff: DEFAULT_BACKOFF,
            error_policy: ErrorPolicy::Swallow,
            max_attempts: None,
            dead_letter_topic: None,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            report_lag: false,
            lag_interval: DEFAULT_LAG_INTERVAL,
            payload_log: PayloadLog::default(),
            kafka_settings: BTreeMap::new(),
            ordering: ProcessingOrder::Partition,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            disabled: false,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Whether the listener is left out of the runners it is added to (see [`ListenerBuilder::disabled`]).
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// The error policy.
    pub fn error_policy(&self) -> ErrorPolicy {
        self.error_policy
    }

    /// The dead-letter topic, if any.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    /// The value schema's full name (the bare name completed by the namespace).
    pub fn schema(&self) -> String {
        deimos_avro::full_name(&self.value_schema, self.namespace.as_deref())
    }

    /// The key config, as given.
    pub fn key_config(&self) -> &KeyConfig {
        &self.key_config
    }

    /// Whether the listener delivers batches (a [`BatchHandler`]) rather than one message at a time.
    pub fn is_batch(&self) -> bool {
        matches!(self.delivery, Delivery::Batch(_))
    }

    /// The largest batch delivered to a batch handler.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    /// Which messages are handled in order.
    pub fn ordering(&self) -> ProcessingOrder {
        self.ordering
    }

    /// The most messages (or batches) handled at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The most bytes of fetched messages held before they are handled.
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered_bytes
    }
}

/// Builds a [`Listener`]. Every setting but the handler and the value schema has a default.
#[derive(Clone)]
#[must_use]
pub struct ListenerBuilder {
    topic: String,
    group_id: String,
    value_schema: Option<String>,
    namespace: Option<String>,
    key_config: KeyConfig,
    delivery: Option<Delivery>,
    start_from_beginning: bool,
    max_batch_size: usize,
    max_wait: Duration,
    session_timeout: Option<Duration>,
    heartbeat_interval: Option<Duration>,
    backoff: (Duration, Duration),
    error_policy: ErrorPolicy,
    max_attempts: Option<u32>,
    dead_letter_topic: Option<String>,
    commit_interval: Duration,
    report_lag: bool,
    lag_interval: Duration,
    payload_log: PayloadLog,
    kafka_settings: BTreeMap<String, String>,
    ordering: ProcessingOrder,
    max_in_flight: usize,
    max_buffered_bytes: usize,
    disabled: bool,
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

impl ListenerBuilder {
    /// The value schema (reader schema): a full name (`com.acme.Widget`), or a bare name completed by
    /// [`namespace`](Self::namespace). Required.
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.value_schema = Some(name.into());
        self
    }

    /// The namespace of a bare [`schema`](Self::schema) name (Deimos's `namespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Leaves the listener out of every runner it is added to (Deimos's `disabled`; default `false`): the
    /// runner logs that at info level and does not consume its topic. The listener is still checked when built.
    pub fn disabled(mut self, yes: bool) -> Self {
        self.disabled = yes;
        self
    }

    /// How keys are decoded (Deimos's `key_config`). Required: without one (`KeyConfig::NotSet`, the default)
    /// [`build`](Self::build) fails with Deimos's "No key config given" message ([`ConsumerError::MissingKeyConfig`]).
    /// `KeyConfig::Plain` or `KeyConfig::None` pass keys through undecoded.
    pub fn key_config(mut self, config: KeyConfig) -> Self {
        self.key_config = config;
        self
    }

    /// Delivers one message at a time to `handler` (Deimos's delivery `message`).
    pub fn handler<H: Handler>(mut self, handler: H) -> Self {
        self.delivery = Some(Delivery::Message(Arc::new(Starter::new(One(Arc::new(handler))))));
        self
    }

    /// Delivers batches of one partition to `handler` (Deimos's delivery `inline_batch`), up to
    /// [`max_batch_size`](Self::max_batch_size) messages or [`max_wait`](Self::max_wait).
    pub fn batch_handler<H: BatchHandler>(mut self, handler: H) -> Self {
        self.delivery = Some(Delivery::Batch(Arc::new(Starter::new(Many(Arc::new(handler))))));
        self
    }

    /// Where a group without committed offsets starts: the earliest message (`true`, the default, as
    /// Deimos) or only new ones (`false`). librdkafka's `auto.offset.reset`.
    pub fn start_from_beginning(mut self, yes: bool) -> Self {
        self.start_from_beginning = yes;
        self
    }

    /// The largest batch delivered to a batch handler (default 500).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = n;
        self
    }

    /// How long a partition's batch may wait to fill before it is delivered anyway (default 500 ms).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// librdkafka's `session.timeout.ms` (default: librdkafka's, 45 s).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// librdkafka's `heartbeat.interval.ms` (default: librdkafka's, 3 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// The backoff between retries of a fatal error: `min` first, doubling each time up to `max`
    /// (default 1 s to 60 s, as Deimos).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// What to do when handling fails (default [`ErrorPolicy::Swallow`]).
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = policy;
        self
    }

    /// With a fatal error, how many attempts in all before the message (or batch) is given up: sent to the
    /// dead-letter topic, or logged and skipped. Without it, fatal errors are retried forever (Deimos).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// A topic that receives the messages given up on: swallowed errors at once, fatal ones after
    /// [`max_attempts`](Self::max_attempts). See the crate docs for its headers.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// How often handled offsets are committed (default 10 s, Deimos's `offset_commit_interval`). They
    /// are also committed when partitions are revoked and at shutdown.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// What debug logs show of each message (Deimos's `payload_log`; default: payloads and keys, at debug level
    /// only).
    pub fn payload_log(mut self, level: PayloadLog) -> Self {
        self.payload_log = level;
        self
    }

    /// Reports the `consumer_lag` gauge per assigned partition (Deimos's `report_lag`), from librdkafka's
    /// statistics every [`lag_interval`](Self::lag_interval).
    pub fn report_lag(mut self, yes: bool) -> Self {
        self.report_lag = yes;
        self
    }

    /// How often `consumer_lag` is reported when [`report_lag`](Self::report_lag) is on (default 10 s).
    pub fn lag_interval(mut self, interval: Duration) -> Self {
        self.lag_interval = interval;
        self
    }

    /// A librdkafka consumer setting for this listener only, passed through as it is; it wins over the
    /// runner's settings and the listener's own.
    pub fn kafka_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka_settings.insert(key.into(), value.into());
        self
    }

    /// Several librdkafka consumer settings for this listener (a map, or a map's reference, or pairs); see
    /// [`kafka_setting`](Self::kafka_setting).
    pub fn kafka_settings<K: Into<String>, V: Into<String>>(
        mut self,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.kafka_settings
            .extend(settings.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Which messages are handled in order (default [`ProcessingOrder::Partition`]); the others are handled at
    /// the same time, up to [`max_in_flight`](Self::max_in_flight).
    pub fn ordering(mut self, ordering: ProcessingOrder) -> Self {
        self.ordering = ordering;
        self
    }

    /// The most messages (or batches) handled at the same time (default 64; 1 handles one after another).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// The most bytes of fetched messages the listener holds before handling them (default 32 MiB; at most 100,000
    /// messages, or four times `max_in_flight` (times `max_batch_size` for batches) if that is more; it stops
    /// sooner, at 8,192 messages or that four times, once every partition it may fetch has messages buffered).
    /// When the handlers fall behind and the buffer is full, the listener takes no more messages from the
    /// consumer; if it stays full for a second, every partition is paused until half of it is left. Memory stays
    /// bounded whatever the lag, and the consumer keeps being polled, so a slow handler never exceeds
    /// `max.poll.interval.ms`.
    /// librdkafka keeps its own prefetch besides (`queued.max.messages.kbytes`).
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Checks the settings that need no schema store and builds the listener.
    pub fn build(self) -> Result<Listener, ConsumerError> {
        if self.topic.trim().is_empty() {
            return Err(ConsumerError::EmptyTopic);
        }
        let topic = self.topic;
        if self.group_id.trim().is_empty() {
            return Err(ConsumerError::EmptyGroupId { topic });
        }
        let invalid = |message: String| ConsumerError::InvalidSetting {
            scope: format!("the listener for topic `{topic}`"),
            message,
        };
        let Some(value_schema) = self.value_schema.filter(|s| !s.trim().is_empty()) else {
            return Err(ConsumerError::MissingValueSchema { topic });
        };
        let Some(delivery) = self.delivery else {
            return Err(ConsumerError::MissingHandler { topic });
        };
        if self.key_config == KeyConfig::NotSet {
            return Err(ConsumerError::MissingKeyConfig { topic });
        }
        if self.max_batch_size == 0 {
            return Err(invalid("max_batch_size is 0; use at least 1".into()));
        }
        if self.max_in_flight == 0 {
            return Err(invalid(
                "max_in_flight is 0; use at least 1 (1 = one message at a time)".into(),
            ));
        }
        if matches!(delivery, Delivery::Batch(_)) && self.ordering != ProcessingOrder::Partition {
            return Err(invalid(format!(
                "ordering `{}` is for message handlers; a batch handler gets one batch per partition at a time \
                 (ordering `partition`)",
                self.ordering.as_str()
            )));
        }
        let (min, max) = self.backoff;
        if min.is_zero() || min > max {
            return Err(invalid(format!(
                "backoff({min:?}, {max:?}) needs 0 < min <= max, e.g. backoff(1 s, 60 s)"
            )));
        }
        if self.max_attempts == Some(0) {
            return Err(invalid("max_attempts is 0; use at least 1 (1 = no retries)".into()));
        }
        if self.commit_interval.is_zero() || self.lag_interval.is_zero() {
            return Err(invalid("commit_interval and lag_interval must be longer than 0".into()));
        }
        if self
            .dead_letter_topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || t == topic)
        {
            return Err(invalid(
                "the dead-letter topic must be a non-empty topic other than the one consumed".into(),
            ));
        }
        if self.dead_letter_topic.is_some() && self.error_policy == ErrorPolicy::Fatal && self.max_attempts.is_none() {
            tracing::warn!(
                topic,
                "the listener has a dead-letter topic and the fatal policy but no max_attempts: fatal errors are retried forever and never reach the dead-letter topic; set `.max_attempts(n)`"
            );
        }
        Ok(Listener {
            topic,
            group_id: self.group_id,
            value_schema,
            namespace: self.namespace,
            key_config: self.key_config,
            delivery,
            start_from_beginning: self.start_from_beginning,
            max_batch_size: self.max_batch_size,
            max_wait: self.max_wait,
            session_timeout: self.session_timeout,
            heartbeat_interval: self.heartbeat_interval,
            backoff: self.backoff,
            error_policy: self.error_policy,
            max_attempts: self.max_attempts,
            dead_letter_topic: self.dead_letter_topic,
            commit_interval: self.commit_interval,
            report_lag: self.report_lag,
            lag_interval: self.lag_interval,
            payload_log: self.payload_log,
            kafka_settings: self.kafka_settings,
            ordering: self.ordering,
            max_in_flight: self.max_in_flight,
            max_buffered_bytes: self.max_buffered_bytes,
            disabled: self.disabled,
        })
    }
}
