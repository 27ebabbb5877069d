//! Handling one unit of work (a message, or a batch of one partition) with the listener's error policy:
//! decode, call the handler (panics caught), classify failures, and dead-letter what is given up.
//!
//! Processing is a state machine driven by its caller ([`Processor::step`]): each step makes one attempt (or
//! one round of dead-letter sends) and says what comes next: done, wait and step again, or stop the
//! partition. The caller owns the waiting, so the Kafka loop keeps polling its consumer (and pauses the
//! partition) while a unit waits on a backoff, and inline processing (tests) does not wait at all.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use deimos_avro::AvroSchema;
use deimos_keys::KeyDecoder;
use deimos_metrics::PayloadLog;
use deimos_registry::SchemaCodec;
use futures::future::BoxFuture;

use crate::attempt::{Common, Decision, Failure, Handle, partially_handled};
use crate::dead_letter::{DeadLetter, DeadLetterRecord, SendError};
use crate::delay::TimestampField;
use crate::error::{HandlerError, PartiallyHandled};
use crate::handler::{ErrorContext, ErrorStage, Headers};
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
    use crate::error::MessageDecodeError;

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
