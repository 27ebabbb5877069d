//! A listener's Kafka loop: fetch into per-partition lanes, step on the next ready unit, store offsets of
//! finished units, pause partitions that wait or whose buffer is full.
//!
//! One step (one handler attempt, or one round of dead-letter sends) runs at a time; the consumer is polled
//! between steps and while every ready partition waits, so a backoff never exceeds `max.poll.interval.ms`
//! and rebalances are served between steps (never during a handler call: what was handled is stored when a
//! partition is revoked, and nothing that was not).

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use deimos_metrics::catalogue::PARTITIONS_HELD;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::context::KafkaConsumer;
use crate::kafka_headers::read_headers;
use crate::lanes::{Applied, Cut, Lanes, Pushed};
use crate::process::{Handle, Hold, Processor, Raw, Step};

/// At most this many messages are taken from the consumer between two steps.
const FETCH_BETWEEN_STEPS: usize = 256;

/// When a listener stops, and how long it may try to commit what it handled.
pub(crate) struct Stop {
    /// Turns true when the runner shuts down.
    pub(crate) signal: watch::Receiver<bool>,
    /// How long the final commit may be retried (while the group rebalances, say).
    pub(crate) commit_within: Duration,
}

/// Runs `processor` over `consumer` until `stop` is signalled or the consumer's stream ends; then commits what
/// was handled, retrying while the group's state does not allow it.
pub(crate) async fn run<X: Handle>(processor: Arc<Processor<X>>, consumer: Arc<KafkaConsumer>, stop: Stop) {
    let shutdown = stop.signal.clone();
    let env = processor.env();
    let topic = Arc::clone(&env.topic);
    let cut = if processor.batches() {
        Cut::Batch {
            max_size: env.max_batch_size,
            max_wait: env.max_wait,
        }
    } else {
        Cut::Message
    };
    let mut lanes = Lanes::new(cut);
    // Per partition, the offset after the last message handled (or given up on): what must be committed.
    let mut handled: BTreeMap<i32, i64> = BTreeMap::new();
    let mut paused: BTreeSet<i32> = BTreeSet::new();
    let mut gauges = HeldGauges::new(&topic);
    let mut stream = consumer.stream();
    let mut stopped = pin!(wait_shutdown(shutdown.clone()));
    let mut ended = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Fetch what is already there, without waiting: keeps the consumer polled between steps.
        for _ in 0..FETCH_BETWEEN_STEPS {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => take(&consumer, &topic, &mut lanes, &m),
                Some(Some(Err(error))) => kafka_error(&topic, &error),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        if ended {
            break;
        }
        revoke(&consumer, &mut lanes, &mut paused, &mut handled);
        let now = Instant::now();
        if let Some(partition) = lanes.next_ready(now) {
            lanes.release(partition);
            let step = match lanes.unit(partition) {
                Some((unit, state)) => processor.step(unit, state).await,
                None => continue,
            };
            // A rebalance cannot have happened during the step (the consumer is not polled meanwhile).
            match lanes.apply(partition, &step, Instant::now()) {
                Applied::Finished { last_offset } => {
                    store(&consumer, &topic, partition, last_offset);
                    handled.insert(partition, last_offset.saturating_add(1));
                }
                Applied::Stopped => {
                    if let Step::Stop(why) = &step {
                        tracing::error!(topic = &*topic, partition, "{why}");
                    }
                }
                Applied::Waiting | Applied::Gone => {}
            }
            sync_pauses(&consumer, &topic, &lanes, &mut paused);
            gauges.set(&lanes);
            continue;
        }
        sync_pauses(&consumer, &topic, &lanes, &mut paused);
        gauges.set(&lanes);
        // Nothing to do until a message arrives, a wait ends, or shutdown.
        let wake = lanes.next_wake();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut stopped => break,
            next = stream.next() => match next {
                Some(Ok(m)) => take(&consumer, &topic, &mut lanes, &m),
                Some(Err(error)) => kafka_error(&topic, &error),
                None => {
                    ended = true;
                    break;
                }
            },
            () = sleep => {}
        }
    }
    gauges.clear();
    if !ended {
        commit_at_stop(&consumer, &mut stream, &topic, &mut handled, stop.commit_within).await;
    }
    let buffered = lanes.buffered();
    if buffered > 0 {
        tracing::debug!(
            topic = &*topic,
            buffered,
            "shutting down: buffered messages not handled; they are delivered again after a restart"
        );
    }
}

/// Queues a fetched message, or stores its offset again when this lane already handled it.
fn take(consumer: &KafkaConsumer, topic: &str, lanes: &mut Lanes, m: &BorrowedMessage<'_>) {
    let raw = Raw {
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: read_headers(m.headers()),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
    };
    if lanes.push(raw, Instant::now()) == Pushed::AlreadyDone {
        // librdkafka fetches a partition again from its committed offset after a rebalance; when a commit was
        // lost (the mock cluster refuses commits while a group rebalances, real brokers do on coordinator
        // changes), messages this listener already handled come again. They are skipped, their offsets
        // stored again, so each message is handled once per process.
        tracing::debug!(
            topic,
            partition = m.partition(),
            offset = m.offset(),
            "skipping a message this listener already handled (fetched again after a rebalance)"
        );
        store(consumer, topic, m.partition(), m.offset());
    }
}

/// Drops the lanes of partitions revoked since the last look.
fn revoke(consumer: &KafkaConsumer, lanes: &mut Lanes, paused: &mut BTreeSet<i32>, handled: &mut BTreeMap<i32, i64>) {
    let revoked = consumer.context().take_revoked();
    if !revoked.is_empty() {
        lanes.revoke(&revoked);
        for p in &revoked {
            paused.remove(p);
            handled.remove(p);
        }
    }
}

/// Commits the handled offsets when the listener stops, retrying for `within` while the group's state refuses
/// the commit (a rebalance in progress, a generation that moved on, a coordinator that moved): meanwhile the
/// consumer is polled so it can rejoin and the rebalance can finish (messages fetched then are not handled, and
/// their offsets not stored). Logs how many handled messages could not be committed, if any.
async fn commit_at_stop(
    consumer: &Arc<KafkaConsumer>,
    stream: &mut rdkafka::consumer::MessageStream<'_, crate::context::ListenerContext>,
    topic: &str,
    handled: &mut BTreeMap<i32, i64>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        // Offsets stored before a lost generation may have been dropped with the assignment: store them again
        // for the partitions still assigned.
        let assigned = consumer.assignment().unwrap_or_default();
        for (partition, next) in handled.iter() {
            if assigned.find_partition(topic, *partition).is_some() {
                store(consumer, topic, *partition, next.saturating_sub(1));
            }
        }
        let committing = Arc::clone(consumer);
        let result = tokio::task::spawn_blocking(move || committing.commit_consumer_state(CommitMode::Sync)).await;
        let error = match result {
            Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {
                tracing::debug!(topic, attempts, "committed handled offsets at shutdown");
                return;
            }
            Ok(Err(error)) => error,
            Err(join) => {
                tracing::warn!(topic, error = %join, "the shutdown commit could not run");
                return;
            }
        };
        if !commit_may_succeed_later(&error) || Instant::now() >= deadline {
            report_uncommitted(consumer, topic, handled, &error, attempts).await;
            return;
        }
        tracing::debug!(topic, %error, attempts, "the group does not take the shutdown commit yet; retrying once it settles");
        // Poll for a while so the consumer rejoins and the rebalance completes; nothing fetched is handled.
        let pause = tokio::time::sleep(COMMIT_RETRY_POLL.min(deadline.saturating_duration_since(Instant::now())));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                next = stream.next() => if next.is_none() { break },
            }
        }
        for p in consumer.context().take_revoked() {
            handled.remove(&p);
        }
    }
}

/// How long the shutdown commit polls the consumer between two attempts.
const COMMIT_RETRY_POLL: Duration = Duration::from_millis(200);

/// Whether a refused commit may be taken later, once the group has settled.
fn commit_may_succeed_later(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::RebalanceInProgress
                | C::IllegalGeneration
                | C::UnknownMemberId
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::RequestTimedOut
                | C::NetworkException
                | C::OperationTimedOut
                | C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::StaleMemberEpoch
        )
    )
}

/// Logs that handled messages could not be committed at shutdown, and how many.
async fn report_uncommitted(
    consumer: &Arc<KafkaConsumer>,
    topic: &str,
    handled: &BTreeMap<i32, i64>,
    error: &KafkaError,
    attempts: u32,
) {
    let mut wanted = TopicPartitionList::new();
    for partition in handled.keys() {
        wanted.add_partition(topic, *partition);
    }
    let reading = Arc::clone(consumer);
    let committed = tokio::task::spawn_blocking(move || reading.committed_offsets(wanted, Duration::from_secs(2)))
        .await
        .ok()
        .and_then(Result::ok);
    let uncommitted: i64 = handled
        .iter()
        .map(|(partition, next)| {
            let at = committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, *partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            at.map_or(0, |at| (next - at).max(0))
        })
        .sum();
    tracing::warn!(
        topic,
        %error,
        attempts,
        uncommitted,
        handled = ?handled,
        "committing handled offsets at shutdown failed; the next owner of these partitions handles the uncommitted messages again"
    );
}

/// Stores `offset + 1` as the partition's next offset to commit.
fn store(consumer: &KafkaConsumer, topic: &str, partition: i32, offset: i64) {
    let mut tpl = TopicPartitionList::with_capacity(1);
    let stored = tpl
        .add_partition_offset(topic, partition, Offset::Offset(offset.saturating_add(1)))
        .and_then(|()| consumer.store_offsets(&tpl));
    if let Err(error) = stored {
        tracing::debug!(topic, partition, %error, "offset not stored (partition no longer assigned?)");
    }
}

/// Pauses the partitions that wait, are stopped or have a full buffer; resumes the others.
fn sync_pauses(consumer: &KafkaConsumer, topic: &str, lanes: &Lanes, paused: &mut BTreeSet<i32>) {
    let want = lanes.to_pause();
    if want == *paused {
        return;
    }
    let list = |partitions: Vec<i32>| {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for p in partitions {
            tpl.add_partition(topic, p);
        }
        tpl
    };
    let pause: Vec<i32> = want.difference(paused).copied().collect();
    let resume: Vec<i32> = paused.difference(&want).copied().collect();
    if !pause.is_empty() {
        match consumer.pause(&list(pause.clone())) {
            Ok(()) => tracing::debug!(topic, partitions = ?pause, "partitions paused"),
            Err(error) => tracing::warn!(topic, partitions = ?pause, %error, "pausing partitions failed"),
        }
    }
    if !resume.is_empty() {
        match consumer.resume(&list(resume.clone())) {
            Ok(()) => tracing::debug!(topic, partitions = ?resume, "partitions resumed"),
            Err(error) => tracing::warn!(topic, partitions = ?resume, %error, "resuming partitions failed"),
        }
    }
    *paused = want;
}

/// The `partitions_held` gauges of one listener.
struct HeldGauges {
    gauges: [(Hold, metrics::Gauge); 3],
}

impl HeldGauges {
    fn new(topic: &str) -> HeldGauges {
        let gauge = |hold: Hold| {
            (
                hold,
                metrics::gauge!(PARTITIONS_HELD.name, "topic" => topic.to_string(), "reason" => hold.as_str()),
            )
        };
        HeldGauges {
            gauges: [gauge(Hold::Transient), gauge(Hold::Retry), gauge(Hold::Stopped)],
        }
    }

    fn set(&mut self, lanes: &Lanes) {
        let held = lanes.held();
        for (hold, gauge) in &self.gauges {
            // A count of partitions, exact in f64.
            #[allow(clippy::cast_precision_loss)]
            gauge.set(held.get(hold).copied().unwrap_or(0) as f64);
        }
    }

    fn clear(&mut self) {
        for (_, gauge) in &self.gauges {
            gauge.set(0.0);
        }
    }
}

async fn wait_shutdown(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn kafka_error(topic: &str, error: &rdkafka::error::KafkaError) {
    tracing::warn!(topic, %error, "Kafka consumer error; librdkafka keeps retrying");
}
