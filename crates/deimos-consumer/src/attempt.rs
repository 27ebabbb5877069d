//! One attempt at a unit (a message, or a batch of one partition): decode key and value, call the handler
//! (panics caught) with its metadata, measure it, and say what failed; and the decisions the error policy
//! takes on a failure. [`Processor`](crate::process::Processor) drives the attempts step by step.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deimos_keys::DecodedKey;
use deimos_metrics::catalogue::{DEAD_LETTER, HANDLER, HANDLER_RETRY, HANDLER_TIME, TRANSIENT_RETRY};
use deimos_metrics::{PayloadLog, trace};
use futures::FutureExt;
use metrics::{Counter, Histogram};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::{HandlerError, HandlerPanicked, MessageDecodeError, PartiallyHandled, is_transient};
use crate::handler::{Batch, BatchHandler, BatchMetadata, ErrorContext, ErrorStage, Handler, Message, Metadata};
use crate::listener::ErrorPolicy;
use crate::process::{Env, Outcome, Raw, error_chain};

/// Metric handles of one listener, obtained once.
pub(crate) struct HandlerMetrics {
    pub(crate) received: Counter,
    pub(crate) success: Counter,
    pub(crate) error: Counter,
    pub(crate) batch_received: Counter,
    pub(crate) batch_success: Counter,
    pub(crate) batch_error: Counter,
    pub(crate) consume: Histogram,
    pub(crate) consume_batch: Histogram,
    pub(crate) time_delayed: Histogram,
    pub(crate) retry: Counter,
    pub(crate) transient: Counter,
    pub(crate) dead_letter: Counter,
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
    pub(crate) stage: ErrorStage,
    pub(crate) error: HandlerError,
    pub(crate) transient: bool,
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

    pub(crate) fn message(&self) -> String {
        error_chain(&*self.error)
    }

    pub(crate) fn gave_up(self, attempts: u32, fatal: bool) -> Outcome {
        Outcome::GaveUp {
            stage: self.stage,
            error: self.error,
            attempts,
            fatal,
        }
    }

    pub(crate) fn raised(self, attempts: u32) -> Outcome {
        Outcome::Raised {
            stage: self.stage,
            error: self.error,
            attempts,
        }
    }
}

/// The [`PartiallyHandled`] in an error's chain, if any.
pub(crate) fn partially_handled<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a PartiallyHandled> {
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
pub(crate) enum Decision {
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
    pub(crate) metrics: HandlerMetrics,
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
    pub(crate) fn decide(&self, failure: &Failure, context: &ErrorContext, handler_says_fatal: bool) -> Decision {
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

    pub(crate) fn error_context(&self, unit: &[Raw], retry: u32, stage: ErrorStage) -> ErrorContext {
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
    /// One attempt at the unit (not boxed: a message's attempt allocates nothing for its future).
    fn attempt<'a>(
        &'a self,
        common: &'a Common<Self::Payload>,
        unit: &'a [Raw],
        retry: u32,
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a;
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

    async fn attempt<'a>(&'a self, common: &'a Common<H::Payload>, unit: &'a [Raw], retry: u32) -> Result<(), Failure> {
        for m in unit {
            attempt_message(common, &*self.0, m, retry).await?;
        }
        Ok(())
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
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a {
        attempt_batch(common, &*self.0, unit, retry)
    }

    fn fatal(&self, error: &HandlerError, context: &ErrorContext) -> bool {
        self.0.fatal_error(error, context)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
