//! Handling one unit of work (a message, or a batch of one partition) with the listener's error policy:
//! decode, call the handler (panics caught), classify failures, and dead-letter what is given up.
//!
//! Processing is a state machine driven by its caller ([`Processor::step`]): each step makes one attempt (or
//! one round of dead-letter sends) and says what comes next: done, wait and step again, or stop the
//! partition. The caller owns the waiting, so the Kafka loop keeps polling its consumer (and pauses the
//! partition) while a unit waits on a backoff, and inline processing (tests) does not wait at all.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use deimos_avro::AvroSchema;
use deimos_keys::{DecodedKey, KeyDecoder};
use deimos_metrics::catalogue::{DEAD_LETTER, HANDLER, HANDLER_RETRY, HANDLER_TIME, TRANSIENT_RETRY};
use deimos_metrics::{PayloadLog, trace};
use deimos_registry::SchemaCodec;
use futures::FutureExt;
use futures::future::BoxFuture;
use metrics::{Counter, Histogram};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::dead_letter::{DeadLetter, DeadLetterRecord, SendError};
use crate::delay::TimestampField;
use crate::error::{HandlerError, HandlerPanicked, MessageDecodeError, PartiallyHandled, is_transient};
use crate::handler::{
    Batch, BatchHandler, BatchMetadata, ErrorContext, ErrorStage, Handler, Headers, Message, Metadata,
};
use crate::listen::Loop;
use crate::listener::ErrorPolicy;
use crate::listener::ProcessingOrder;

/// The runner's global `fatal_error` predicate.
pub(crate) type FatalFn = Arc<dyn Fn(&HandlerError, &ErrorContext) -> bool + Send + Sync>;

/// A fetched message, owned while it waits for its turn (or given by the caller, inline).
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Headers,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
}

impl Raw {
    /// Roughly how much memory the message holds, for the loop's buffer bound.
    pub(crate) fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter_raw()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
            .sum();
        self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len) + headers + 64
    }
}

/// Copies of fetched keys and values, cut from shared blocks: one allocation per block of
/// [`BLOCK`](Blocks::BLOCK) bytes instead of two per message, freed once the block's last message is dropped.
/// (A message kept a long time, waiting on a retry, keeps its block alive.)
#[derive(Default)]
pub(crate) struct Blocks(BytesMut);

impl Blocks {
    const BLOCK: usize = 64 * 1024;

    /// A copy of `bytes`; one larger than a quarter block gets an allocation of its own.
    pub(crate) fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if bytes.len() > Self::BLOCK / 4 {
            return Bytes::copy_from_slice(bytes);
        }
        if self.0.capacity() - self.0.len() < bytes.len() {
            self.0 = BytesMut::with_capacity(Self::BLOCK);
        }
        self.0.extend_from_slice(bytes);
        self.0.split().freeze()
    }
}

/// How processing a message, or a batch, ended.
pub(crate) enum Outcome {
    /// The handler succeeded, after this many attempts.
    Handled { attempts: u32 },
    /// Given up: skipped (and dead-lettered when there is a dead-letter topic).
    GaveUp {
        stage: ErrorStage,
        error: HandlerError,
        attempts: u32,
        fatal: bool,
    },
    /// Inline only: an error the runner would keep retrying (a fatal error without `max_attempts`, or a
    /// transient error), handed back instead.
    Raised {
        stage: ErrorStage,
        error: HandlerError,
        attempts: u32,
    },
}

/// What comes after a step.
pub(crate) enum Step {
    /// The unit is finished: its offsets may be stored.
    Done(Outcome),
    /// Step again after this long; the partition is held meanwhile.
    Wait { delay: Duration, hold: Hold },
    /// The unit can never finish (a dead letter that cannot be sent): the partition stops, its offsets
    /// are not stored. The text says why and what to do.
    Stop(String),
}

/// Why a partition is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Hold {
    /// Waiting to retry a transient error (or an unsent dead letter).
    Transient,
    /// Waiting out a fatal error policy's backoff.
    Retry,
    /// Stopped: a dead letter cannot be sent.
    Stopped,
}

impl Hold {
    /// The `reason` label of `partitions_held`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Hold::Transient => "transient",
            Hold::Retry => "retry",
            Hold::Stopped => "stopped",
        }
    }
}

/// Where a unit is between steps.
#[derive(Default)]
pub(crate) struct UnitState {
    /// Failed attempts that count towards the policy (not transient ones).
    retry: u32,
    /// Transient failures in a row.
    transient: u32,
    /// Set once the unit is given up and has a dead-letter topic to go to.
    dead: Option<Dead>,
}

/// A unit given up, on its way to the dead-letter topic.
struct Dead {
    failure: Failure,
    attempts: u32,
    fatal: bool,
    /// Per message of the unit: whether its dead letter was delivered.
    sent: Vec<bool>,
    /// Rounds of sends that failed.
    retry: u32,
}

/// How errors are treated, from the listener and the runner.
pub(crate) struct Policy {
    pub(crate) error_policy: ErrorPolicy,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) reraise_errors: bool,
    pub(crate) global_fatal: Option<FatalFn>,
    /// Inline processing (tests): retries at once, and an error the runner would retry without end (a fatal
    /// error without `max_attempts`, a transient error) is raised instead.
    pub(crate) inline: bool,
}

impl Policy {
    /// The wait before retry number `retry` (0-based): min × 2^retry, at most max.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let (min, max) = self.backoff;
        min.saturating_mul(1u32 << retry.min(20)).min(max)
    }
}

/// Everything a listener needs, put together by the runner (or the inline listener).
pub(crate) struct Env {
    pub(crate) topic: Arc<str>,
    pub(crate) group_id: Arc<str>,
    pub(crate) codec: Arc<SchemaCodec>,
    pub(crate) reader: AvroSchema,
    pub(crate) keys: KeyDecoder,
    pub(crate) timestamp: Option<TimestampField>,
    pub(crate) policy: Policy,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    pub(crate) max_batch_size: usize,
    pub(crate) max_wait: Duration,
    pub(crate) payload_log: PayloadLog,
    pub(crate) ordering: ProcessingOrder,
    pub(crate) max_in_flight: usize,
    pub(crate) max_buffered_bytes: usize,
}

/// Metric handles of one listener, obtained once.
struct HandlerMetrics {
    received: Counter,
    success: Counter,
    error: Counter,
    batch_received: Counter,
    batch_success: Counter,
    batch_error: Counter,
    consume: Histogram,
    consume_batch: Histogram,
    time_delayed: Histogram,
    retry: Counter,
    transient: Counter,
    dead_letter: Counter,
}

impl HandlerMetrics {
    fn new(topic: &str, dead_letter_topic: Option<&str>) -> HandlerMetrics {
        let status = |s: &'static str| metrics::counter!(HANDLER.name, "status" => s, "topic" => topic.to_string());
        let time = |t: &'static str| metrics::histogram!(HANDLER_TIME.name, "time" => t, "topic" => topic.to_string());
        HandlerMetrics {
            received: status("received"),
            success: status("success"),
            error: status("error"),
            batch_received: status("batch_received"),
            batch_success: status("batch_success"),
            batch_error: status("batch_error"),
            consume: time("consume"),
            consume_batch: time("consume_batch"),
            time_delayed: time("time_delayed"),
            retry: metrics::counter!(HANDLER_RETRY.name, "topic" => topic.to_string()),
            transient: metrics::counter!(TRANSIENT_RETRY.name, "topic" => topic.to_string()),
            dead_letter: match dead_letter_topic {
                Some(dlq) => metrics::counter!(
                    DEAD_LETTER.name,
                    "topic" => topic.to_string(),
                    "dead_letter_topic" => dlq.to_string()
                ),
                None => Counter::noop(),
            },
        }
    }
}

/// A failed attempt: what failed, why, and whether it may pass on its own.
pub(crate) struct Failure {
    stage: ErrorStage,
    error: HandlerError,
    transient: bool,
}

impl Failure {
    fn new(stage: ErrorStage, error: HandlerError) -> Failure {
        let transient = is_transient(&*error);
        Failure {
            stage,
            error,
            transient,
        }
    }

    fn message(&self) -> String {
        error_chain(&*self.error)
    }

    fn gave_up(self, attempts: u32, fatal: bool) -> Outcome {
        Outcome::GaveUp {
            stage: self.stage,
            error: self.error,
            attempts,
            fatal,
        }
    }

    fn raised(self, attempts: u32) -> Outcome {
        Outcome::Raised {
            stage: self.stage,
            error: self.error,
            attempts,
        }
    }
}

/// The [`PartiallyHandled`] in an error's chain, if any.
fn partially_handled<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a PartiallyHandled> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(p) = e.downcast_ref::<PartiallyHandled>() {
            return Some(p);
        }
        next = e.source();
    }
    None
}

/// Runs a handler's future, turning a panic into a [`HandlerPanicked`] error.
async fn catch_panic<F: std::future::Future<Output = Result<(), HandlerError>>>(f: F) -> Result<(), HandlerError> {
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Box::new(HandlerPanicked::from_payload(&*payload))),
    }
}

/// Deimos's "Got Kafka event" debug log, showing what `payload_log` allows.
fn log_received<P: Serialize>(level: PayloadLog, payloads: &[Option<P>], keys: &[Option<DecodedKey>]) {
    let keys = || {
        keys.iter()
            .map(|k| k.as_ref().map_or(serde_json::Value::Null, |k| k.clone().into_json()))
            .collect::<Vec<_>>()
    };
    match level {
        PayloadLog::Count => tracing::debug!(message_count = payloads.len(), "Got Kafka event"),
        PayloadLog::Keys => {
            tracing::debug!(message_count = payloads.len(), keys = %serde_json::Value::from(keys()), "Got Kafka event")
        }
        _ => tracing::debug!(
            message_count = payloads.len(),
            keys = %serde_json::Value::from(keys()),
            payloads = %serde_json::to_string(payloads).unwrap_or_default(),
            "Got Kafka event"
        ),
    }
}

/// What to do after a failed attempt.
enum Decision {
    /// Retry after this long.
    Retry(Duration),
    /// Give up: dead-letter (if configured) and move on. `fatal` says whether retries were involved.
    GiveUp { fatal: bool },
    /// Inline only: hand a fatal error to the caller instead of retrying it forever.
    Raise,
}

/// A listener's handling of units, whatever its delivery: decoding, policy, dead letters, metrics.
pub(crate) struct Common<P> {
    pub(crate) env: Env,
    metrics: HandlerMetrics,
    _payload: PhantomData<fn() -> P>,
}

impl<P: DeserializeOwned + Serialize + Send + 'static> Common<P> {
    pub(crate) fn new(env: Env) -> Common<P> {
        let metrics = HandlerMetrics::new(&env.topic, env.dead_letter.as_ref().map(|d| d.topic()));
        Common {
            env,
            metrics,
            _payload: PhantomData,
        }
    }

    async fn decode_key(&self, key: Option<&[u8]>) -> Result<Option<DecodedKey>, Failure> {
        self.env
            .keys
            .decode(self.env.codec.registry().as_ref(), key)
            .await
            .map_err(|e| Failure::new(ErrorStage::KeyDecode, Box::new(MessageDecodeError::Key(e))))
    }

    async fn decode_value(&self, value: Option<&[u8]>) -> Result<Option<P>, Failure> {
        let Some(bytes) = value else { return Ok(None) };
        let decoded = match self.env.codec.decode_cached::<P>(bytes, &self.env.reader) {
            Some(result) => result,
            None => self.env.codec.decode::<P>(bytes, &self.env.reader).await,
        };
        decoded
            .map(Some)
            .map_err(|e| Failure::new(ErrorStage::ValueDecode, Box::new(MessageDecodeError::Value(e))))
    }

    /// Deimos's `_report_time_delayed`: now minus the payload's `timestamp`, when it has a usable one.
    fn report_delay(&self, payload: Option<&P>) {
        let (Some(field), Some(payload)) = (self.env.timestamp, payload) else {
            return;
        };
        let Ok(Some(value)) = deimos_keys::serialized_field(payload, "timestamp") else {
            return;
        };
        match field.delay_seconds(&value, chrono::Utc::now()) {
            Some(delay) => self.metrics.time_delayed.record(delay),
            None => tracing::info!(
                topic = &*self.env.topic,
                timestamp = %value,
                "Error parsing timestamp! (the payload's `timestamp` is not a date and time; time_delayed not reported)"
            ),
        }
    }

    /// Deimos's `_error`: whether `failure` is fatal, and what to do about it.
    fn decide(&self, failure: &Failure, context: &ErrorContext, handler_says_fatal: bool) -> Decision {
        let policy = &self.env.policy;
        let fatal = policy.error_policy == ErrorPolicy::Fatal
            || policy.reraise_errors
            || policy.global_fatal.as_ref().is_some_and(|f| f(&failure.error, context))
            || handler_says_fatal;
        if !fatal {
            return Decision::GiveUp { fatal: false };
        }
        let attempts = context.retry_count.saturating_add(1);
        match policy.max_attempts {
            Some(max) if attempts >= max => return Decision::GiveUp { fatal: true },
            None if policy.inline => return Decision::Raise,
            _ => {}
        }
        Decision::Retry(policy.backoff(context.retry_count))
    }

    fn error_context(&self, unit: &[Raw], retry: u32, stage: ErrorStage) -> ErrorContext {
        ErrorContext {
            topic: Arc::clone(&self.env.topic),
            group_id: Arc::clone(&self.env.group_id),
            partition: unit.first().map_or(0, |m| m.partition),
            first_offset: unit.first().map_or(0, |m| m.offset),
            batch_size: unit.len(),
            retry_count: retry,
            stage,
        }
    }
}

/// A handler the loops can drive: one message at a time, or batches.
pub(crate) trait Handle: Send + Sync + 'static {
    /// The payload type.
    type Payload: DeserializeOwned + Serialize + Send + 'static;
    /// Whether units are batches.
    const BATCH: bool;
    /// One attempt at the unit.
    fn attempt<'a>(
        &'a self,
        common: &'a Common<Self::Payload>,
        unit: &'a [Raw],
        retry: u32,
    ) -> BoxFuture<'a, Result<(), Failure>>;
    /// The handler's own `fatal_error` predicate.
    fn fatal(&self, error: &HandlerError, context: &ErrorContext) -> bool;
}

/// A [`Handler`], one message per unit.
pub(crate) struct One<H>(pub(crate) Arc<H>);

impl<H> Clone for One<H> {
    fn clone(&self) -> Self {
        One(Arc::clone(&self.0))
    }
}

impl<H: Handler> Handle for One<H> {
    type Payload = H::Payload;
    const BATCH: bool = false;

    fn attempt<'a>(
        &'a self,
        common: &'a Common<H::Payload>,
        unit: &'a [Raw],
        retry: u32,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            for m in unit {
                attempt_message(common, &*self.0, m, retry).await?;
            }
            Ok(())
        })
    }

    fn fatal(&self, error: &HandlerError, context: &ErrorContext) -> bool {
        self.0.fatal_error(error, context)
    }
}

/// A [`BatchHandler`], one batch of one partition per unit.
pub(crate) struct Many<H>(pub(crate) Arc<H>);

impl<H> Clone for Many<H> {
    fn clone(&self) -> Self {
        Many(Arc::clone(&self.0))
    }
}

impl<H: BatchHandler> Handle for Many<H> {
    type Payload = H::Payload;
    const BATCH: bool = true;

    fn attempt<'a>(
        &'a self,
        common: &'a Common<H::Payload>,
        unit: &'a [Raw],
        retry: u32,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(attempt_batch(common, &*self.0, unit, retry))
    }

    fn fatal(&self, error: &HandlerError, context: &ErrorContext) -> bool {
        self.0.fatal_error(error, context)
    }
}

/// A listener's handler with its environment: what the loops drive, one step at a time.
pub(crate) struct Processor<X: Handle> {
    handler: X,
    pub(crate) common: Common<X::Payload>,
}

impl<X: Handle> Processor<X> {
    pub(crate) fn new(handler: X, env: Env) -> Processor<X> {
        Processor {
            handler,
            common: Common::new(env),
        }
    }

    /// Whether units are batches.
    pub(crate) fn batches(&self) -> bool {
        X::BATCH
    }

    /// The listener's environment.
    pub(crate) fn env(&self) -> &Env {
        &self.common.env
    }

    /// One step of `unit` (one message, or a batch of one partition in offset order) from `state`.
    pub(crate) async fn step(&self, unit: &[Raw], state: &mut UnitState) -> Step {
        if state.dead.is_none() {
            let failure = match self.handler.attempt(&self.common, unit, state.retry).await {
                Ok(()) => {
                    return Step::Done(Outcome::Handled {
                        attempts: state.retry + 1,
                    });
                }
                Err(f) => f,
            };
            let common = &self.common;
            if X::BATCH {
                common.metrics.batch_error.increment(1);
            } else {
                common.metrics.error.increment(1);
            }
            let topic = &*common.env.topic;
            let (partition, first_offset) = unit.first().map_or((0, 0), |m| (m.partition, m.offset));
            let last_offset = unit.last().map_or(0, |m| m.offset);
            let what = if X::BATCH { "message batch" } else { "message" };
            if failure.transient {
                if common.env.policy.inline {
                    return Step::Done(failure.raised(state.retry + 1));
                }
                let delay = common.env.policy.backoff(state.transient);
                state.transient = state.transient.saturating_add(1);
                common.metrics.transient.increment(1);
                tracing::warn!(
                    topic, partition, first_offset, last_offset, transient_retries = state.transient,
                    stage = %failure.stage, error = %failure.message(), ?delay,
                    "Error consuming {what}: transient, retrying after backoff whatever the error policy (the partition waits; nothing is skipped)"
                );
                return Step::Wait {
                    delay,
                    hold: Hold::Transient,
                };
            }
            state.transient = 0;
            let context = common.error_context(unit, state.retry, failure.stage);
            let decision = common.decide(&failure, &context, self.handler.fatal(&failure.error, &context));
            match decision {
                Decision::Retry(delay) => {
                    common.metrics.retry.increment(1);
                    tracing::warn!(
                        topic, partition, first_offset, last_offset, retry_count = state.retry,
                        stage = %failure.stage, error = %failure.message(), ?delay,
                        "Error consuming {what}; fatal, retrying after backoff"
                    );
                    state.retry = state.retry.saturating_add(1);
                    let delay = if common.env.policy.inline {
                        Duration::ZERO
                    } else {
                        delay
                    };
                    return Step::Wait {
                        delay,
                        hold: Hold::Retry,
                    };
                }
                Decision::Raise => return Step::Done(failure.raised(state.retry + 1)),
                Decision::GiveUp { fatal } => {
                    let attempts = state.retry + 1;
                    if fatal {
                        tracing::error!(
                            topic, partition, first_offset, last_offset, attempts, stage = %failure.stage,
                            error = %failure.message(),
                            "Error consuming {what}; giving up after the last attempt"
                        );
                    } else {
                        tracing::warn!(
                            topic, partition, first_offset, last_offset, stage = %failure.stage,
                            error = %failure.message(),
                            "Error consuming {what}; skipping it"
                        );
                    }
                    if common.env.dead_letter.is_none() {
                        return Step::Done(failure.gave_up(attempts, fatal));
                    }
                    // Messages the handler says it handled anyway are not dead-lettered (nor applied twice by
                    // a redrive).
                    let handled: &[i64] =
                        partially_handled(&*failure.error).map_or(&[], PartiallyHandled::handled_offsets);
                    let sent = unit.iter().map(|m| handled.contains(&m.offset)).collect();
                    state.dead = Some(Dead {
                        failure,
                        attempts,
                        fatal,
                        sent,
                        retry: 0,
                    });
                }
            }
        }
        self.dead_letter_step(unit, state).await
    }

    /// Sends the unit's unsent dead letters, all at once (in order).
    async fn dead_letter_step(&self, unit: &[Raw], state: &mut UnitState) -> Step {
        let common = &self.common;
        let (Some(dead), Some(dlq)) = (state.dead.as_mut(), common.env.dead_letter.as_ref()) else {
            return Step::Stop("internal: dead-lettering without a dead-letter topic".into());
        };
        let message = dead.failure.message();
        let (topic, group_id) = (&*common.env.topic, &*common.env.group_id);
        let (stage, attempts) = (dead.failure.stage, dead.attempts);
        let message = &message;
        let pending: Vec<usize> = (0..unit.len()).filter(|i| !dead.sent[*i]).collect();
        let sends = pending.iter().map(|i| {
            let r = &unit[*i];
            let record = DeadLetterRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &r.headers,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
            };
            async move { dlq.send(&record, topic, group_id, stage, message, attempts).await }
        });
        let results = futures::future::join_all(sends).await;
        let mut last_error: Option<SendError> = None;
        for (i, result) in pending.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    dead.sent[i] = true;
                    common.metrics.dead_letter.increment(1);
                    tracing::warn!(
                        topic,
                        partition = unit[i].partition,
                        offset = unit[i].offset,
                        dead_letter_topic = dlq.topic(),
                        "message sent to the dead-letter topic"
                    );
                }
                Err(error) if !error.is_transient() => {
                    return Step::Stop(format!(
                        "the message at offset {} cannot be sent to the dead-letter topic `{}`: {error}; \
                         the partition is stopped so that nothing is skipped: fix the cause (the topic's \
                         existence, ACLs, max.message.bytes) and restart the service",
                        unit[i].offset,
                        dlq.topic()
                    ));
                }
                Err(error) => last_error = Some(error),
            }
        }
        let Some(error) = last_error else {
            let Some(dead) = state.dead.take() else {
                return Step::Stop("internal: dead letters sent twice".into());
            };
            return Step::Done(dead.failure.gave_up(dead.attempts, dead.fatal));
        };
        let delay = common.env.policy.backoff(dead.retry);
        dead.retry = dead.retry.saturating_add(1);
        common.metrics.transient.increment(1);
        tracing::error!(
            topic,
            failed = dead.sent.iter().filter(|s| !**s).count(),
            dead_letter_topic = dlq.topic(),
            %error,
            ?delay,
            "could not send messages to the dead-letter topic; retrying (the partition waits)"
        );
        Step::Wait {
            delay,
            hold: Hold::Transient,
        }
    }
}

/// An error and its sources, joined with ": ".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

async fn attempt_message<H: Handler>(
    common: &Common<H::Payload>,
    handler: &H,
    m: &Raw,
    retry: u32,
) -> Result<(), Failure> {
    let headers = m.headers.clone();
    // `process {topic}`: decoding and the handler, a child of the producer's span when the message carries
    // its trace context.
    let span = trace::process_span(&common.env.topic, &common.env.group_id, m.partition, m.offset, retry);
    let _ = trace::set_parent(&span, headers.iter());
    let failing = span.clone();
    let result = async {
        let raw_key = m.key.as_deref();
        let key = common.decode_key(raw_key).await?;
        let payload = common.decode_value(m.value.as_deref()).await?;
        common.metrics.received.increment(1);
        common.report_delay(payload.as_ref());
        let metadata = Metadata {
            key,
            raw_key: m.key.clone(),
            topic: Arc::clone(&common.env.topic),
            partition: m.partition,
            offset: m.offset,
            headers,
            timestamp: m.timestamp,
            group_id: Arc::clone(&common.env.group_id),
            retry_count: retry,
        };
        let started = Instant::now();
        if tracing::enabled!(tracing::Level::DEBUG) {
            log_received(
                common.env.payload_log,
                std::slice::from_ref(&payload),
                std::slice::from_ref(&metadata.key),
            );
        }
        match catch_panic(handler.consume(Message { payload, metadata })).await {
            Ok(()) => {
                let elapsed = started.elapsed();
                common.metrics.consume.record(elapsed.as_secs_f64());
                common.metrics.success.increment(1);
                tracing::debug!(time_elapsed = elapsed.as_secs_f64(), "Finished processing Kafka event");
                Ok(())
            }
            Err(error) => Err(Failure::new(ErrorStage::Handler, error)),
        }
    }
    .instrument(span)
    .await;
    if let Err(f) = &result {
        trace::record_error(&failing, f.stage.as_str());
    }
    result
}

async fn attempt_batch<H: BatchHandler>(
    common: &Common<H::Payload>,
    handler: &H,
    messages: &[Raw],
    retry: u32,
) -> Result<(), Failure> {
    let partition = messages.first().map_or(0, |m| m.partition);
    let size = messages.len();
    let first_offset = messages.first().map(|m| m.offset).unwrap_or_default();
    // `process {topic}` for the batch, linked to each message's trace context.
    let span = trace::process_batch_span(
        &common.env.topic,
        &common.env.group_id,
        partition,
        first_offset,
        size,
        retry,
    );
    let mut links = trace::Links::default();
    for m in messages {
        links.add(&span, m.headers.iter());
    }
    let (keys, payloads) = async {
        let mut keys = Vec::with_capacity(size);
        let mut payloads = Vec::with_capacity(size);
        for m in messages {
            keys.push(common.decode_key(m.key.as_deref()).await?);
            payloads.push(common.decode_value(m.value.as_deref()).await?);
        }
        Ok::<_, Failure>((keys, payloads))
    }
    .instrument(span.clone())
    .await
    .inspect_err(|f| trace::record_error(&span, f.stage.as_str()))?;
    let count = u64::try_from(size).unwrap_or(u64::MAX);
    common.metrics.batch_received.increment(1);
    common.metrics.received.increment(count);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let _in = span.enter();
        log_received(common.env.payload_log, &payloads, &keys);
    }
    for p in &payloads {
        common.report_delay(p.as_ref());
    }
    let metadata = BatchMetadata {
        keys,
        raw_keys: messages.iter().map(|m| m.key.clone()).collect(),
        offsets: messages.iter().map(|m| m.offset).collect(),
        headers: messages.iter().map(|m| m.headers.clone()).collect(),
        timestamps: messages.iter().map(|m| m.timestamp).collect(),
        topic: Arc::clone(&common.env.topic),
        partition,
        first_offset,
        batch_size: size,
        group_id: Arc::clone(&common.env.group_id),
        retry_count: retry,
    };
    let started = Instant::now();
    let result = catch_panic(handler.consume_batch(Batch { payloads, metadata }))
        .instrument(span.clone())
        .await;
    match result {
        Ok(()) => {
            let elapsed = started.elapsed();
            common.metrics.consume_batch.record(elapsed.as_secs_f64());
            common.metrics.batch_success.increment(1);
            common.metrics.success.increment(count);
            tracing::debug!(parent: &span, time_elapsed = elapsed.as_secs_f64(), "Finished processing Kafka batch event");
            Ok(())
        }
        Err(error) => {
            trace::record_error(&span, ErrorStage::Handler.as_str());
            Err(Failure::new(ErrorStage::Handler, error))
        }
    }
}

/// Starts a listener's loop with its handler; erases the handler's type.
pub(crate) trait Start: Send + Sync {
    /// The listener's loop over its consumer, until stopped.
    fn run(&self, env: Env, parts: Loop) -> BoxFuture<'static, ()>;
    /// The listener's processing without a consumer, for messages given by the caller (tests).
    fn inline(&self, env: Env) -> Box<dyn InlineRun>;
}

/// Processes given messages as the listener's loop would, without offsets and without waiting.
pub(crate) trait InlineRun: Send + Sync {
    /// One outcome per message (message delivery), or one for all of them (batch delivery: one batch).
    fn process(&self, messages: Vec<Raw>) -> BoxFuture<'_, Vec<Outcome>>;
    /// The dead-letter topic, if there is one.
    fn dead_letter(&self) -> Option<&DeadLetter>;
}

/// Starts a listener's loop, or its inline processing, with its handler ([`One`] or [`Many`]).
pub(crate) struct Starter<X>(X);

impl<X: Handle + Clone> Starter<X> {
    pub(crate) fn new(handle: X) -> Starter<X> {
        Starter(handle)
    }
}

impl<X: Handle + Clone> Start for Starter<X> {
    fn run(&self, env: Env, parts: Loop) -> BoxFuture<'static, ()> {
        let processor = Arc::new(Processor::new(self.0.clone(), env));
        Box::pin(crate::listen::run(processor, parts))
    }

    fn inline(&self, env: Env) -> Box<dyn InlineRun> {
        Box::new(Processor::new(self.0.clone(), env))
    }
}

impl<X: Handle> InlineRun for Processor<X> {
    fn process(&self, messages: Vec<Raw>) -> BoxFuture<'_, Vec<Outcome>> {
        Box::pin(async move {
            let units: Vec<&[Raw]> = if X::BATCH {
                vec![&messages[..]]
            } else {
                messages.chunks(1).collect()
            };
            let mut outcomes = Vec::with_capacity(units.len());
            for unit in units {
                let mut state = UnitState::default();
                // Inline steps never ask to wait for long: retries are made at once, and errors the runner
                // would retry without end are raised.
                let outcome = loop {
                    match self.step(unit, &mut state).await {
                        Step::Done(outcome) => break outcome,
                        Step::Wait { .. } => {}
                        Step::Stop(why) => {
                            break Outcome::Raised {
                                stage: ErrorStage::Handler,
                                error: why.into(),
                                attempts: state.retry + 1,
                            };
                        }
                    }
                };
                outcomes.push(outcome);
            }
            outcomes
        })
    }

    fn dead_letter(&self) -> Option<&DeadLetter> {
        self.common.env.dead_letter.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let policy = Policy {
            error_policy: ErrorPolicy::Fatal,
            max_attempts: None,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            reraise_errors: false,
            global_fatal: None,
            inline: false,
        };
        let waits: Vec<u64> = (0..8).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn error_chains_join_sources_once() {
        let inner = std::io::Error::other("disk full");
        let outer = MessageDecodeError::Key(deimos_keys::KeyError::NoKeyConfigForDecoding);
        assert!(error_chain(&outer).starts_with("the message key could not be decoded: No key config given"));
        assert_eq!(error_chain(&inner), "disk full");
    }

    #[tokio::test]
    #[allow(clippy::panic)]
    async fn panics_become_handler_errors() {
        let error = catch_panic(async { panic!("boom {}", 7) })
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("the handler panicked: boom 7"));
        let ok = catch_panic(async { Ok(()) }).await;
        assert!(ok.is_ok());
    }
}
