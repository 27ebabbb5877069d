//! The listener loops: fetch, decode, dispatch, apply the error policy, store offsets.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deimos_avro::AvroSchema;
use deimos_keys::{DecodedKey, KeyDecoder};
use deimos_metrics::catalogue::{DEAD_LETTER, HANDLER, HANDLER_RETRY, HANDLER_TIME};
use deimos_metrics::{PayloadLog, trace};
use deimos_registry::SchemaCodec;
use futures::StreamExt;
use futures::future::BoxFuture;
use metrics::{Counter, Histogram};
use rdkafka::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

use crate::context::KafkaConsumer;
use crate::dead_letter::{DeadLetter, DeadLetterRecord};
use crate::delay::TimestampField;
use crate::error::{HandlerError, MessageDecodeError};
use crate::handler::{
    Batch, BatchHandler, BatchMetadata, ErrorContext, ErrorStage, Handler, Headers, Message, Metadata,
};
use crate::listener::ErrorPolicy;

/// The runner's global `fatal_error` predicate.
pub(crate) type FatalFn = Arc<dyn Fn(&HandlerError, &ErrorContext) -> bool + Send + Sync>;

/// Starts a listener's loop with its handler; erases the handler's payload type.
pub(crate) trait Start: Send + Sync {
    /// The listener's loop over `consumer`.
    fn run(&self, env: Env, consumer: Arc<KafkaConsumer>) -> BoxFuture<'static, ()>;
    /// The listener's processing without a consumer, for messages given by the caller (tests).
    fn inline(&self, env: Env) -> Box<dyn InlineRun>;
}

/// Processes given messages as the listener's loop would, without storing offsets.
pub(crate) trait InlineRun: Send + Sync {
    /// One outcome per message (message delivery), or one for all of them (batch delivery: one batch).
    fn process(&self, messages: Vec<Raw>) -> BoxFuture<'_, Vec<Outcome>>;
    /// The dead-letter topic, if there is one.
    fn dead_letter(&self) -> Option<&DeadLetter>;
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
    /// Inline only: a fatal error the runner would retry forever.
    Raised {
        stage: ErrorStage,
        error: HandlerError,
        attempts: u32,
    },
    /// The runner shut down first; the offsets must not be stored.
    Interrupted,
}

struct InlineMessages<H: Handler> {
    handler: Arc<H>,
    common: Common<H::Payload>,
}

impl<H: Handler> InlineRun for InlineMessages<H> {
    fn process(&self, messages: Vec<Raw>) -> BoxFuture<'_, Vec<Outcome>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(messages.len());
            for m in &messages {
                outcomes.push(process_message(&self.common, &*self.handler, m).await);
            }
            outcomes
        })
    }

    fn dead_letter(&self) -> Option<&DeadLetter> {
        self.common.env.dead_letter.as_deref()
    }
}

struct InlineBatches<H: BatchHandler> {
    handler: Arc<H>,
    common: Common<H::Payload>,
}

impl<H: BatchHandler> InlineRun for InlineBatches<H> {
    fn process(&self, messages: Vec<Raw>) -> BoxFuture<'_, Vec<Outcome>> {
        Box::pin(async move {
            let partition = messages.first().map_or(0, |m| m.partition);
            vec![process_batch(&self.common, &*self.handler, partition, &messages).await]
        })
    }

    fn dead_letter(&self) -> Option<&DeadLetter> {
        self.common.env.dead_letter.as_deref()
    }
}

pub(crate) struct MessageStart<H>(Arc<H>);

impl<H> MessageStart<H> {
    pub(crate) fn new(handler: H) -> MessageStart<H> {
        MessageStart(Arc::new(handler))
    }
}

impl<H: Handler> Start for MessageStart<H> {
    fn run(&self, env: Env, consumer: Arc<KafkaConsumer>) -> BoxFuture<'static, ()> {
        Box::pin(run_messages(Arc::clone(&self.0), env, consumer))
    }

    fn inline(&self, env: Env) -> Box<dyn InlineRun> {
        Box::new(InlineMessages {
            handler: Arc::clone(&self.0),
            common: Common::new(env),
        })
    }
}

pub(crate) struct BatchStart<H>(Arc<H>);

impl<H> BatchStart<H> {
    pub(crate) fn new(handler: H) -> BatchStart<H> {
        BatchStart(Arc::new(handler))
    }
}

impl<H: BatchHandler> Start for BatchStart<H> {
    fn run(&self, env: Env, consumer: Arc<KafkaConsumer>) -> BoxFuture<'static, ()> {
        Box::pin(run_batches(Arc::clone(&self.0), env, consumer))
    }

    fn inline(&self, env: Env) -> Box<dyn InlineRun> {
        Box::new(InlineBatches {
            handler: Arc::clone(&self.0),
            common: Common::new(env),
        })
    }
}

/// How errors are treated, from the listener and the runner.
pub(crate) struct Policy {
    pub(crate) error_policy: ErrorPolicy,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) reraise_errors: bool,
    pub(crate) global_fatal: Option<FatalFn>,
    /// Inline processing (tests): retries at once, and a fatal error without `max_attempts` is raised
    /// instead of retried forever.
    pub(crate) inline: bool,
}

impl Policy {
    /// The wait before retry number `retry` (0-based): min × 2^retry, at most max.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let (min, max) = self.backoff;
        min.saturating_mul(1u32 << retry.min(20)).min(max)
    }
}

/// Everything a listener loop needs, put together by the runner.
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
    pub(crate) shutdown: watch::Receiver<bool>,
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

/// A failed attempt: what failed and why.
struct Failure {
    stage: ErrorStage,
    error: HandlerError,
}

impl Failure {
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

/// What to do after a failed attempt.
enum Decision {
    /// Retry after this long.
    Retry(Duration),
    /// Give up: dead-letter (if configured) and move on. `fatal` says whether retries were involved.
    GiveUp { fatal: bool },
    /// Inline only: hand a fatal error to the caller instead of retrying it forever.
    Raise,
}

/// The part of a listener that does not depend on the delivery mode.
struct Common<P> {
    env: Env,
    metrics: HandlerMetrics,
    _payload: PhantomData<fn() -> P>,
}

impl<P: DeserializeOwned + Serialize + Send + 'static> Common<P> {
    fn new(env: Env) -> Common<P> {
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
            .map_err(|e| Failure {
                stage: ErrorStage::KeyDecode,
                error: Box::new(MessageDecodeError::Key(e)),
            })
    }

    async fn decode_value(&self, value: Option<&[u8]>) -> Result<Option<P>, Failure> {
        let Some(bytes) = value else { return Ok(None) };
        let decoded = match self.env.codec.decode_cached::<P>(bytes, &self.env.reader) {
            Some(result) => result,
            None => self.env.codec.decode::<P>(bytes, &self.env.reader).await,
        };
        decoded.map(Some).map_err(|e| Failure {
            stage: ErrorStage::ValueDecode,
            error: Box::new(MessageDecodeError::Value(e)),
        })
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

    fn error_context(
        &self,
        partition: i32,
        first_offset: i64,
        batch_size: usize,
        retry: u32,
        stage: ErrorStage,
    ) -> ErrorContext {
        ErrorContext {
            topic: Arc::clone(&self.env.topic),
            group_id: Arc::clone(&self.env.group_id),
            partition,
            first_offset,
            batch_size,
            retry_count: retry,
            stage,
        }
    }

    /// Waits `delay` unless the runner shuts down first; `false` on shutdown.
    async fn sleep(&self, delay: Duration) -> bool {
        if self.env.policy.inline {
            return true;
        }
        sleep_unless_shutdown(&self.env.shutdown, delay).await
    }

    /// Sends given-up messages to the dead-letter topic, if there is one, all at once (in order), retrying
    /// those that failed until they are delivered. `false` if the runner shut down first (the offsets must
    /// then not be stored).
    async fn dead_letter(&self, records: &[DeadLetterRecord<'_>], failure: &Failure, attempts: u32) -> bool {
        let Some(dlq) = &self.env.dead_letter else { return true };
        let message = failure.message();
        let (topic, group_id) = (&*self.env.topic, &*self.env.group_id);
        let mut remaining: Vec<&DeadLetterRecord<'_>> = records.iter().collect();
        let mut retry = 0;
        loop {
            let sends = remaining
                .iter()
                .map(|r| dlq.send(r, topic, group_id, failure.stage, &message, attempts));
            let results = futures::future::join_all(sends).await;
            let mut failed = Vec::new();
            let mut last_error = None;
            for (record, result) in remaining.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        self.metrics.dead_letter.increment(1);
                        tracing::warn!(
                            topic,
                            partition = record.partition,
                            offset = record.offset,
                            dead_letter_topic = dlq.topic(),
                            "message sent to the dead-letter topic"
                        );
                    }
                    Err(error) => {
                        failed.push(record);
                        last_error = Some(error);
                    }
                }
            }
            let Some(error) = last_error else { return true };
            let delay = self.env.policy.backoff(retry);
            tracing::error!(
                topic,
                failed = failed.len(),
                dead_letter_topic = dlq.topic(),
                error = %error_chain(&*error),
                ?delay,
                "could not send messages to the dead-letter topic; retrying (the listener waits)"
            );
            if !self.sleep(delay).await {
                return false;
            }
            remaining = failed;
            retry = retry.saturating_add(1);
        }
    }
}

async fn sleep_unless_shutdown(shutdown: &watch::Receiver<bool>, delay: Duration) -> bool {
    let mut rx = shutdown.clone();
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = rx.wait_for(|stop| *stop) => false,
    }
}

async fn wait_shutdown(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn headers_of(m: &BorrowedMessage<'_>) -> Headers {
    match m.headers() {
        None => Headers::new(),
        Some(h) => Headers::from(
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect::<Vec<_>>(),
        ),
    }
}

/// A message to process: fetched from Kafka, or given by the caller (inline).
pub(crate) trait Incoming: Sync {
    fn key_bytes(&self) -> Option<&[u8]>;
    fn value_bytes(&self) -> Option<&[u8]>;
    fn all_headers(&self) -> Headers;
    fn at_partition(&self) -> i32;
    fn at_offset(&self) -> i64;
    fn millis(&self) -> Option<i64>;
}

impl Incoming for BorrowedMessage<'_> {
    fn key_bytes(&self) -> Option<&[u8]> {
        rdkafka::Message::key(self)
    }
    fn value_bytes(&self) -> Option<&[u8]> {
        self.payload()
    }
    fn all_headers(&self) -> Headers {
        headers_of(self)
    }
    fn at_partition(&self) -> i32 {
        rdkafka::Message::partition(self)
    }
    fn at_offset(&self) -> i64 {
        rdkafka::Message::offset(self)
    }
    fn millis(&self) -> Option<i64> {
        rdkafka::Message::timestamp(self).to_millis()
    }
}

impl Incoming for Raw {
    fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value_bytes(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn all_headers(&self) -> Headers {
        self.headers.clone()
    }
    fn at_partition(&self) -> i32 {
        self.partition
    }
    fn at_offset(&self) -> i64 {
        self.offset
    }
    fn millis(&self) -> Option<i64> {
        self.timestamp
    }
}

// ---------------------------------------------------------------------------------------------------------
// One message at a time.

async fn run_messages<H: Handler>(handler: Arc<H>, env: Env, consumer: Arc<KafkaConsumer>) {
    let common = Common::<H::Payload>::new(env);
    let mut handled = Handled::default();
    let mut stream = consumer.stream();
    let shutdown = common.env.shutdown.clone();
    let mut stop = pin!(wait_shutdown(shutdown.clone()));
    loop {
        // The stream first: while messages keep coming, the shutdown flag is read (cheaply) once per message
        // instead of polling the shutdown future before each one.
        let next = tokio::select! {
            biased;
            next = stream.next() => next,
            () = &mut stop => break,
        };
        if *shutdown.borrow() {
            break;
        }
        match next {
            Some(Ok(m)) => {
                if handled.already(&common.env.topic, &consumer, &m) {
                    continue;
                }
                if matches!(process_message(&common, &*handler, &m).await, Outcome::Interrupted) {
                    return;
                }
                if let Err(error) = consumer.store_offset_from_message(&m) {
                    tracing::debug!(topic = &*common.env.topic, partition = m.partition(), %error, "offset not stored (partition no longer assigned?)");
                }
                handled.mark(m.partition(), m.offset());
            }
            Some(Err(error)) => kafka_error(&common.env.topic, &error),
            None => break,
        }
    }
}

/// The last offset this listener handled (or took into a batch) per partition. librdkafka fetches a partition
/// again from its committed offset after a rebalance; when a commit was lost (the mock cluster refuses commits
/// while a group rebalances, real brokers do on coordinator changes), messages this listener already handled
/// would come again. They are skipped here, their offsets stored again, so each message is handled once per
/// process. (Messages another consumer handled and failed to commit still come again: at least once.)
#[derive(Default)]
struct Handled(BTreeMap<i32, i64>);

impl Handled {
    fn already(&self, topic: &str, consumer: &KafkaConsumer, m: &BorrowedMessage<'_>) -> bool {
        let seen = self.0.get(&m.partition()).is_some_and(|last| m.offset() <= *last);
        if seen {
            tracing::debug!(
                topic,
                partition = m.partition(),
                offset = m.offset(),
                "skipping a message this listener already handled (fetched again after a rebalance)"
            );
            let _ = consumer.store_offset_from_message(m);
        }
        seen
    }

    fn mark(&mut self, partition: i32, offset: i64) {
        self.0.insert(partition, offset);
    }
}

fn kafka_error(topic: &str, error: &rdkafka::error::KafkaError) {
    tracing::warn!(topic, %error, "Kafka consumer error; librdkafka keeps retrying");
}

async fn process_message<H: Handler, M: Incoming>(common: &Common<H::Payload>, handler: &H, m: &M) -> Outcome {
    let mut retry = 0u32;
    loop {
        let failure = match attempt_message(common, handler, m, retry).await {
            Ok(()) => return Outcome::Handled { attempts: retry + 1 },
            Err(f) => f,
        };
        common.metrics.error.increment(1);
        let context = common.error_context(m.at_partition(), m.at_offset(), 1, retry, failure.stage);
        let decision = common.decide(&failure, &context, handler.fatal_error(&failure.error, &context));
        let (topic, partition, offset) = (&*common.env.topic, m.at_partition(), m.at_offset());
        match decision {
            Decision::Retry(delay) => {
                common.metrics.retry.increment(1);
                tracing::warn!(
                    topic, partition, offset, retry_count = retry, stage = %failure.stage,
                    error = %failure.message(), ?delay,
                    "Error consuming message; fatal, retrying after backoff"
                );
                if !common.sleep(delay).await {
                    return Outcome::Interrupted;
                }
                retry = retry.saturating_add(1);
            }
            Decision::Raise => return failure.raised(retry + 1),
            Decision::GiveUp { fatal } => {
                if fatal {
                    tracing::error!(
                        topic, partition, offset, attempts = retry + 1, stage = %failure.stage,
                        error = %failure.message(),
                        "Error consuming message; giving up after the last attempt"
                    );
                } else {
                    tracing::warn!(
                        topic, partition, offset, stage = %failure.stage, error = %failure.message(),
                        "Error consuming message; skipping it"
                    );
                }
                let headers = m.all_headers();
                let record = DeadLetterRecord {
                    key: m.key_bytes(),
                    value: m.value_bytes(),
                    headers: &headers,
                    partition,
                    offset,
                    timestamp: m.millis(),
                };
                if !common.dead_letter(&[record], &failure, retry + 1).await {
                    return Outcome::Interrupted;
                }
                return failure.gave_up(retry + 1, fatal);
            }
        }
    }
}

async fn attempt_message<H: Handler, M: Incoming>(
    common: &Common<H::Payload>,
    handler: &H,
    m: &M,
    retry: u32,
) -> Result<(), Failure> {
    let headers = m.all_headers();
    // `process {topic}`: decoding and the handler, a child of the producer's span when the message carries
    // its trace context.
    let span = trace::process_span(
        &common.env.topic,
        &common.env.group_id,
        m.at_partition(),
        m.at_offset(),
        retry,
    );
    let _ = trace::set_parent(&span, headers.iter());
    let failing = span.clone();
    let result = async {
        let raw_key = m.key_bytes();
        let key = common.decode_key(raw_key).await?;
        let payload = common.decode_value(m.value_bytes()).await?;
        common.metrics.received.increment(1);
        common.report_delay(payload.as_ref());
        let metadata = Metadata {
            key,
            raw_key: raw_key.map(<[u8]>::to_vec),
            topic: Arc::clone(&common.env.topic),
            partition: m.at_partition(),
            offset: m.at_offset(),
            headers,
            timestamp: m.millis(),
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
        match handler.consume(Message { payload, metadata }).await {
            Ok(()) => {
                let elapsed = started.elapsed();
                common.metrics.consume.record(elapsed.as_secs_f64());
                common.metrics.success.increment(1);
                tracing::debug!(time_elapsed = elapsed.as_secs_f64(), "Finished processing Kafka event");
                Ok(())
            }
            Err(error) => Err(Failure {
                stage: ErrorStage::Handler,
                error,
            }),
        }
    }
    .instrument(span)
    .await;
    if let Err(f) = &result {
        trace::record_error(&failing, f.stage.as_str());
    }
    result
}

// ---------------------------------------------------------------------------------------------------------
// Batches.

/// A fetched message, owned while its partition's batch fills (or given by the caller, inline).
pub(crate) struct Raw {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Headers,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
}

struct Pending {
    messages: Vec<Raw>,
    deadline: tokio::time::Instant,
}

async fn run_batches<H: BatchHandler>(handler: Arc<H>, env: Env, consumer: Arc<KafkaConsumer>) {
    let common = Common::<H::Payload>::new(env);
    let (max_size, max_wait) = (common.env.max_batch_size, common.env.max_wait);
    let mut pending: BTreeMap<i32, Pending> = BTreeMap::new();
    let mut handled = Handled::default();
    let mut stream = consumer.stream();
    let mut stop = pin!(wait_shutdown(common.env.shutdown.clone()));
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    let mut timer = pin!(tokio::time::sleep_until(far()));
    let mut armed: Option<tokio::time::Instant> = None;
    loop {
        let next_deadline = pending.values().map(|p| p.deadline).min();
        if next_deadline != armed {
            timer.as_mut().reset(next_deadline.unwrap_or_else(far));
            armed = next_deadline;
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = &mut timer, if armed.is_some() => {
                armed = None;
                drop_revoked(&consumer, &mut pending);
                let now = tokio::time::Instant::now();
                let due: Vec<i32> = pending.iter().filter(|(_, p)| p.deadline <= now).map(|(p, _)| *p).collect();
                for partition in due {
                    if let Some(batch) = pending.remove(&partition) {
                        if !deliver_batch(&common, &*handler, &consumer, partition, &batch.messages).await {
                            return;
                        }
                        if let Some(last) = batch.messages.last() {
                            handled.mark(partition, last.offset);
                        }
                    }
                }
            }
            next = stream.next() => match next {
                Some(Ok(m)) => {
                    drop_revoked(&consumer, &mut pending);
                    if handled.already(&common.env.topic, &consumer, &m) {
                        continue;
                    }
                    let partition = m.partition();
                    let entry = pending.entry(partition).or_insert_with(|| Pending {
                        messages: Vec::with_capacity(max_size.min(1024)),
                        deadline: tokio::time::Instant::now() + max_wait,
                    });
                    entry.messages.push(Raw {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: headers_of(&m),
                        partition,
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                    });
                    if entry.messages.len() >= max_size
                        && let Some(batch) = pending.remove(&partition)
                    {
                        if !deliver_batch(&common, &*handler, &consumer, partition, &batch.messages).await {
                            return;
                        }
                        if let Some(last) = batch.messages.last() {
                            handled.mark(partition, last.offset);
                        }
                    }
                }
                Some(Err(error)) => kafka_error(&common.env.topic, &error),
                None => break,
            },
        }
    }
    if !pending.is_empty() {
        let buffered: usize = pending.values().map(|p| p.messages.len()).sum();
        tracing::debug!(
            topic = &*common.env.topic,
            buffered,
            "shutting down: buffered messages not delivered; they are delivered again after a restart"
        );
    }
}

/// Forgets buffered messages of partitions revoked since the last look: their next owner (or this consumer,
/// after a re-assignment) fetches them again from the committed offset.
fn drop_revoked(consumer: &KafkaConsumer, pending: &mut BTreeMap<i32, Pending>) {
    for partition in consumer.context().take_revoked() {
        pending.remove(&partition);
    }
}

/// Processes a batch, then stores its offsets; `false` if the runner shut down first.
async fn deliver_batch<H: BatchHandler>(
    common: &Common<H::Payload>,
    handler: &H,
    consumer: &KafkaConsumer,
    partition: i32,
    messages: &[Raw],
) -> bool {
    if matches!(
        process_batch(common, handler, partition, messages).await,
        Outcome::Interrupted
    ) {
        return false;
    }
    let Some(last) = messages.last() else { return true };
    let mut tpl = TopicPartitionList::with_capacity(1);
    let stored = tpl
        .add_partition_offset(
            &common.env.topic,
            partition,
            Offset::Offset(last.offset.saturating_add(1)),
        )
        .and_then(|()| consumer.store_offsets(&tpl));
    if let Err(error) = stored {
        tracing::debug!(topic = &*common.env.topic, partition, %error, "offset not stored (partition no longer assigned?)");
    }
    true
}

async fn process_batch<H: BatchHandler>(
    common: &Common<H::Payload>,
    handler: &H,
    partition: i32,
    messages: &[Raw],
) -> Outcome {
    let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
        return Outcome::Handled { attempts: 1 };
    };
    let (first_offset, last_offset) = (first.offset, last.offset);
    let size = messages.len();
    let mut retry = 0u32;
    loop {
        let failure = match attempt_batch(common, handler, partition, messages, retry).await {
            Ok(()) => return Outcome::Handled { attempts: retry + 1 },
            Err(f) => f,
        };
        common.metrics.batch_error.increment(1);
        let context = common.error_context(partition, first_offset, size, retry, failure.stage);
        let decision = common.decide(&failure, &context, handler.fatal_error(&failure.error, &context));
        let topic = &*common.env.topic;
        match decision {
            Decision::Retry(delay) => {
                common.metrics.retry.increment(1);
                tracing::warn!(
                    topic, partition, first_offset, last_offset, retry_count = retry, stage = %failure.stage,
                    error = %failure.message(), ?delay,
                    "Error consuming message batch; fatal, retrying after backoff"
                );
                if !common.sleep(delay).await {
                    return Outcome::Interrupted;
                }
                retry = retry.saturating_add(1);
            }
            Decision::Raise => return failure.raised(retry + 1),
            Decision::GiveUp { fatal } => {
                if fatal {
                    tracing::error!(
                        topic, partition, first_offset, last_offset, attempts = retry + 1, stage = %failure.stage,
                        error = %failure.message(),
                        "Error consuming message batch; giving up after the last attempt"
                    );
                } else {
                    tracing::warn!(
                        topic, partition, first_offset, last_offset, stage = %failure.stage,
                        error = %failure.message(),
                        "Error consuming message batch; skipping it"
                    );
                }
                let records: Vec<DeadLetterRecord<'_>> = messages
                    .iter()
                    .map(|r| DeadLetterRecord {
                        key: r.key.as_deref(),
                        value: r.value.as_deref(),
                        headers: &r.headers,
                        partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                    })
                    .collect();
                if !common.dead_letter(&records, &failure, retry + 1).await {
                    return Outcome::Interrupted;
                }
                return failure.gave_up(retry + 1, fatal);
            }
        }
    }
}

async fn attempt_batch<H: BatchHandler>(
    common: &Common<H::Payload>,
    handler: &H,
    partition: i32,
    messages: &[Raw],
    retry: u32,
) -> Result<(), Failure> {
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
    let result = handler
        .consume_batch(Batch { payloads, metadata })
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
            Err(Failure {
                stage: ErrorStage::Handler,
                error,
            })
        }
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
}
