//! A listener's Kafka loop: fetch into lanes, start units on tasks up to `max_in_flight`, apply their results,
//! pause the partitions that must not fetch, and carry out control commands.
//!
//! The loop itself never waits on a handler: it keeps polling the consumer (so `max.poll.interval.ms` is never
//! exceeded, and rebalances are served) while units run on their own tasks. A unit's task marks its offsets
//! finished in the listener's [`Progress`] and stores the partition's new committable position itself, so that a
//! revoke, which waits there for the revoked partitions' units in flight, commits what they finished.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use deimos_core::shutdown::CancellationToken;
use deimos_metrics::catalogue::PARTITIONS_HELD;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::attempt::Handle;
use crate::context::KafkaConsumer;
use crate::control::{Command, SeekTo, Wiring};
use crate::kafka_headers::read_headers;
use crate::lanes::{Applied, Cut, Lanes, Unit};
use crate::process::{Blocks, Hold, Processor, Raw, Step, UnitState};
use crate::progress::{Fetched, Progress, Stored};

/// At most this many messages are taken from the consumer in one go.
const FETCH_AT_ONCE: usize = 256;
/// A run of messages marks its finished messages in groups of this many (the progress is locked once per group).
const MARK_EVERY: usize = 8;
/// How often a long run of messages stores its partition's position.
const STORE_EVERY: Duration = Duration::from_millis(100);
/// How often the health snapshot and the `partitions_held` gauges are refreshed (and the loop wakes up at least).
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// The listener stops taking messages from the consumer once it buffers this many (at least) and every partition
/// it may fetch has some: a small buffer keeps the messages it copied in the CPU's caches until they are handled.
const MIN_BUFFER_BUDGET: usize = 8_192;
/// ... or once it buffers this many, or `max_buffered_bytes`, whether partitions starve or not. librdkafka fetches
/// a partition in chunks of up to 1 MiB (`max.partition.fetch.bytes`), one partition after another, so a buffer
/// that would stop at the first bound could hold the chunks of a few partitions while the others wait.
const MAX_BUFFER_BUDGET: usize = 100_000;
/// How long the buffer may stay full before every partition is paused (so the consumer can be polled again
/// without taking messages): pausing and resuming makes librdkafka fetch again, which costs far more than a
/// short stop.
const FULL_BEFORE_PAUSE: Duration = Duration::from_secs(1);

/// When a listener stops, and how long it may take to finish its units in flight and commit.
pub(crate) struct Stop {
    /// Cancelled when the runner shuts down.
    pub(crate) signal: CancellationToken,
    /// How long the final commit may be retried (while the group rebalances, say); units in flight get half.
    pub(crate) commit_within: Duration,
}

/// What the loop works with besides its processor.
pub(crate) struct Loop {
    pub(crate) consumer: Arc<KafkaConsumer>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) wiring: Wiring,
    pub(crate) stop: Stop,
}

/// A unit's task: its step, then the unit back to the loop.
type Tasks = JoinSet<(Unit, Step)>;

/// Runs `processor` over the consumer until stopped or the consumer's stream ends; then lets the units in flight
/// end and commits what was handled, retrying while the group's state does not allow it.
pub(crate) async fn run<X: Handle>(processor: Arc<Processor<X>>, parts: Loop) {
    let Loop {
        consumer,
        progress,
        wiring: Wiring { mut commands, health },
        stop,
    } = parts;
    let shutdown = stop.signal.clone();
    let env = processor.env();
    let topic = Arc::clone(&env.topic);
    let (cut, unit_size) = if processor.batches() {
        (
            Cut::Batch {
                max_size: env.max_batch_size,
                max_wait: env.max_wait,
            },
            env.max_batch_size,
        )
    } else {
        (Cut::Message, 1)
    };
    let max_in_flight = env.max_in_flight.max(1);
    let budget = max_in_flight
        .saturating_mul(unit_size)
        .saturating_mul(4)
        .max(MIN_BUFFER_BUDGET);
    let hard_budget = budget.max(MAX_BUFFER_BUDGET);
    let budget_bytes = env.max_buffered_bytes.max(1);
    let mut lanes = Lanes::new(cut, env.ordering);
    let mut blocks = Blocks::default();
    // Since when the buffer is full (nothing more is taken from the consumer meanwhile).
    let mut full_since: Option<Instant> = None;
    let mut tasks: Tasks = JoinSet::new();
    let mut paused: BTreeSet<i32> = BTreeSet::new();
    let mut gauges = HeldGauges::new(&topic);
    let mut stream = consumer.stream();
    let mut stopped = pin!(shutdown.clone().cancelled_owned());
    let mut ended = false;
    let mut next_report = Instant::now();
    health.publish(|h| h.running = true, Some(Instant::now().into_std()));
    // Also when the loop is dropped (its runner aborted or dropped).
    let _looping = Looping::start(&consumer, &health);
    let me = Parts {
        topic: &topic,
        consumer: &consumer,
        progress: &progress,
    };
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Backpressure: while the buffer is full, take nothing more from the consumer; past a second, pause every
        // partition and poll again (nothing comes), until half of the buffer is left, or a partition that may
        // fetch has nothing buffered.
        let now = Instant::now();
        let buffered = lanes.buffered();
        let starving = (budget / 2..hard_budget).contains(&buffered)
            && consumer
                .context()
                .any_assigned(|p| !paused.contains(&p) && !lanes.has_buffered(p));
        let full =
            buffered >= hard_budget || lanes.buffered_bytes() >= budget_bytes || (buffered >= budget && !starving);
        if full {
            full_since.get_or_insert(now);
        } else if starving || (buffered <= budget / 2 && lanes.buffered_bytes() <= budget_bytes / 2) {
            full_since = None;
            lanes.set_throttled(false);
        }
        if full_since.is_some_and(|since| now.duration_since(since) >= FULL_BEFORE_PAUSE) {
            lanes.set_throttled(true);
        }
        let pull = full_since.is_none() || lanes.throttled();
        // Take what is already fetched, without waiting.
        for _ in 0..if pull { FETCH_AT_ONCE } else { 0 } {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => me.take(&mut lanes, &mut paused, &mut blocks, &m, now),
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
        me.revoked(&mut lanes, &mut paused);
        while let Ok(command) = commands.try_recv() {
            me.command(&mut lanes, command).await;
        }
        // Start what may start.
        let now = Instant::now();
        while lanes.in_flight() < max_in_flight {
            let Some(unit) = lanes.next_unit(now) else { break };
            me.start(&mut tasks, &processor, unit);
        }
        sync_pauses(&consumer, &topic, &mut lanes, &mut paused);
        if now >= next_report {
            next_report = now + REPORT_EVERY;
            gauges.set(&lanes);
            me.report(&health, &lanes, &paused, now);
        }
        let mut wake = lanes.next_wake().map_or(next_report, |at| at.min(next_report));
        if let Some(since) = full_since.filter(|_| !pull) {
            wake = wake.min(since + FULL_BEFORE_PAUSE);
        }
        tokio::select! {
            biased;
            () = &mut stopped => break,
            Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                me.finished(&mut lanes, finished);
                while let Some(finished) = tasks.try_join_next() {
                    me.finished(&mut lanes, finished);
                }
            }
            next = stream.next(), if pull => match next {
                Some(Ok(m)) => me.take(&mut lanes, &mut paused, &mut blocks, &m, Instant::now()),
                Some(Err(error)) => kafka_error(&topic, &error),
                None => ended = true,
            },
            Some(command) = commands.recv() => me.command(&mut lanes, command).await,
            () = tokio::time::sleep_until(wake) => {}
        }
        if ended {
            break;
        }
    }
    // Let the units in flight end their step (their offsets stored as they do), for at most half the time left;
    // runs of messages end at their next message.
    progress.stop_runs();
    let drain = tokio::time::timeout(stop.commit_within / 2, async {
        while let Some(finished) = tasks.join_next().await {
            me.finished(&mut lanes, finished);
        }
    });
    if drain.await.is_err() {
        tracing::warn!(
            topic = &*topic,
            in_flight = tasks.len(),
            "shutting down: messages still being handled are abandoned, their offsets not committed; they are delivered again after a restart"
        );
        tasks.abort_all();
    }
    gauges.clear();
    if !ended {
        commit_at_stop(&consumer, &mut stream, &topic, &progress, stop.commit_within).await;
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

/// While it lives, the consumer's context knows the loop runs; dropped, it says the loop stopped.
struct Looping<'a> {
    consumer: &'a KafkaConsumer,
    health: &'a crate::control::HealthCell,
}

impl<'a> Looping<'a> {
    fn start(consumer: &'a KafkaConsumer, health: &'a crate::control::HealthCell) -> Looping<'a> {
        consumer.context().set_looping(true);
        Looping { consumer, health }
    }
}

impl Drop for Looping<'_> {
    fn drop(&mut self) {
        self.consumer.context().set_looping(false);
        self.health.publish(
            |h| {
                h.running = false;
                h.in_flight = 0;
            },
            None,
        );
    }
}

/// The loop's shared parts, for its helpers.
struct Parts<'a> {
    topic: &'a Arc<str>,
    consumer: &'a Arc<KafkaConsumer>,
    progress: &'a Arc<Progress>,
}

impl Parts<'_> {
    /// Queues a fetched message (copying its key and value into `blocks`), or stores its partition's position
    /// again when it was fetched before.
    fn take(
        &self,
        lanes: &mut Lanes,
        paused: &mut BTreeSet<i32>,
        blocks: &mut Blocks,
        m: &BorrowedMessage<'_>,
        now: Instant,
    ) {
        // A revoke served by this poll must be applied before a message of a partition assigned again.
        self.revoked(lanes, paused);
        match self.progress.fetched(m.partition(), m.offset()) {
            Fetched::New { epoch } => {
                let raw = Raw {
                    key: m.key().map(|k| blocks.copy(k)),
                    value: m.payload().map(|v| blocks.copy(v)),
                    headers: read_headers(m.headers()),
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                };
                lanes.push(raw, epoch, now);
            }
            Fetched::Skip { store: stored } => {
                // librdkafka fetches a partition again from its committed offset after a rebalance (or from its
                // position after a pause), and the commit's metadata names messages finished out of order before:
                // neither is handled again. The position is stored again (a commit may have been lost).
                tracing::trace!(
                    topic = &**self.topic,
                    partition = m.partition(),
                    offset = m.offset(),
                    "skipping a message already handled"
                );
                if let Some(stored) = stored {
                    store(self.consumer, self.topic, m.partition(), &stored);
                }
            }
        }
    }

    /// Drops the lanes of partitions revoked since the last look (their progress was forgotten by the revoke).
    fn revoked(&self, lanes: &mut Lanes, paused: &mut BTreeSet<i32>) {
        for p in self.consumer.context().take_revoked() {
            if lanes.epoch(p).is_some() && lanes.epoch(p) != self.progress.epoch(p) {
                lanes.forget(p);
            }
            paused.remove(&p);
        }
    }

    /// Starts `unit` on a task of its own: a batch's step, or a run of messages stepped on one after another
    /// until one must wait or stop, the partition is forgotten, or the listener stops. Each finished message's
    /// offset is marked as it finishes; the partition's position is stored when the run ends.
    fn start<X: Handle>(&self, tasks: &mut Tasks, processor: &Arc<Processor<X>>, mut unit: Unit) {
        self.progress.started(unit.partition, unit.epoch);
        let processor = Arc::clone(processor);
        let progress = Arc::clone(self.progress);
        let consumer = Arc::clone(self.consumer);
        let topic = Arc::clone(self.topic);
        tasks.spawn(async move {
            let (partition, epoch) = (unit.partition, unit.epoch);
            let store = |stored: Stored| store(&consumer, &topic, partition, &stored);
            let mut step;
            // Messages done, and how many of them are marked finished in the progress.
            let (mut finished, mut marked) = (0, 0);
            let mut seen = progress.changes();
            let mut stored_at = Instant::now();
            let mark = |messages: &[Raw]| progress.finished(partition, epoch, messages.iter().map(|m| m.offset));
            loop {
                let len = if unit.each { 1 } else { unit.messages.len() };
                let messages = &unit.messages[finished..finished + len];
                step = AssertUnwindSafe(processor.step(messages, &mut unit.state))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Step::Stop(panicked(&*panic, messages)));
                if !matches!(step, Step::Done(_)) {
                    break;
                }
                finished += len;
                unit.state = UnitState::default();
                if finished == unit.messages.len() {
                    break;
                }
                // Finished messages are marked a few at a time (one lock for several), at once when the listener
                // stops or a partition is forgotten meanwhile, to learn whether to go on.
                let changes = progress.changes();
                if finished - marked >= MARK_EVERY || changes != seen {
                    seen = changes;
                    let go_on = mark(&unit.messages[marked..finished]);
                    marked = finished;
                    if !go_on {
                        break;
                    }
                    // A long run stores its position as it goes (commits and lag stay current).
                    if stored_at.elapsed() >= STORE_EVERY {
                        progress.flush(partition, epoch, store);
                        stored_at = Instant::now();
                    }
                }
            }
            if marked < finished {
                mark(&unit.messages[marked..finished]);
            }
            progress.ended(partition, epoch, store);
            unit.messages.drain(..finished);
            (unit, step)
        });
    }

    /// Applies the result of a unit's step.
    fn finished(&self, lanes: &mut Lanes, finished: Result<(Unit, Step), tokio::task::JoinError>) {
        let (unit, step) = match finished {
            Ok(finished) => finished,
            Err(error) => {
                // Only an abort at shutdown ends a unit's task without a result (panics are caught).
                tracing::debug!(topic = &**self.topic, %error, "a unit's task ended without a result");
                return;
            }
        };
        let partition = unit.partition;
        if let (Applied::Stopped, Step::Stop(why)) = (lanes.complete(unit, &step, Instant::now()), &step) {
            tracing::error!(topic = &**self.topic, partition, "{why}");
        }
    }

    /// Carries out a control command.
    async fn command(&self, lanes: &mut Lanes, command: Command) {
        match command {
            Command::Pause(partition) => {
                tracing::info!(topic = &**self.topic, ?partition, "paused from a control handle");
                lanes.set_paused(partition, true);
            }
            Command::Resume(partition) => {
                tracing::info!(topic = &**self.topic, ?partition, "resumed from a control handle");
                lanes.set_paused(partition, false);
            }
            Command::Seek { partition, to, reply } => {
                let result = self.seek(lanes, partition, to).await;
                match &result {
                    Ok(()) => tracing::info!(topic = &**self.topic, partition, ?to, "partition sought"),
                    Err(error) => tracing::warn!(topic = &**self.topic, partition, ?to, %error, "seek failed"),
                }
                let _ = reply.send(result);
            }
        }
    }

    async fn seek(&self, lanes: &mut Lanes, partition: i32, to: SeekTo) -> Result<(), String> {
        if !self.consumer.context().is_assigned(partition) {
            return Err(format!(
                "partition {partition} is not assigned to this listener now; seek one of {:?}",
                self.consumer.context().assigned()
            ));
        }
        let consumer = Arc::clone(self.consumer);
        let topic = Arc::clone(self.topic);
        let offset = tokio::task::spawn_blocking(move || -> Result<Offset, String> {
            let offset = match to {
                SeekTo::Offset(o) if o >= 0 => Offset::Offset(o),
                SeekTo::Offset(o) => return Err(format!("offset {o} is negative")),
                SeekTo::Beginning => Offset::Beginning,
                SeekTo::End => Offset::End,
                SeekTo::Timestamp(ms) => {
                    let mut wanted = TopicPartitionList::new();
                    wanted
                        .add_partition_offset(&topic, partition, Offset::Offset(ms))
                        .map_err(|e| e.to_string())?;
                    let found = consumer
                        .offsets_for_times(wanted, Duration::from_secs(10))
                        .map_err(|e| format!("looking up the offset of timestamp {ms}: {e}"))?;
                    found
                        .find_partition(&topic, partition)
                        .map_or(Offset::End, |e| match e.offset() {
                            Offset::Offset(o) => Offset::Offset(o),
                            _ => Offset::End,
                        })
                }
            };
            consumer
                .seek(&topic, partition, offset, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok(offset)
        })
        .await
        .map_err(|e| e.to_string())??;
        tracing::debug!(topic = &**self.topic, partition, ?offset, "seek done");
        // What was fetched before, and what is being handled now, belong to the old position.
        self.progress.forget(&[partition], None);
        lanes.forget(partition);
        Ok(())
    }

    /// Publishes the health snapshot.
    fn report(&self, health: &crate::control::HealthCell, lanes: &Lanes, paused: &BTreeSet<i32>, now: Instant) {
        let context = self.consumer.context();
        let held = lanes.waiting_partitions();
        health.publish(
            |h| {
                h.running = true;
                h.assigned = context.assigned();
                h.in_flight = lanes.in_flight();
                h.buffered = lanes.buffered();
                h.lag = context.lag();
                h.waiting = held;
                h.stopped = lanes.stopped();
                h.paused = paused.iter().copied().collect();
            },
            Some(now.into_std()),
        );
    }
}

/// Why a step panicked outside the handler (a handler's panic is caught by the step itself).
fn panicked(panic: &(dyn std::any::Any + Send), messages: &[Raw]) -> String {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!(
        "processing the message at offset {} panicked outside the handler ({why}); the partition is stopped so \
         that nothing is skipped: restart the service",
        messages.first().map_or(-1, |m| m.offset)
    )
}

/// Commits the handled offsets when the listener stops, retrying for `within` while the group's state refuses
/// the commit (a rebalance in progress, a generation that moved on, a coordinator that moved): meanwhile the
/// consumer is polled so it can rejoin and the rebalance can finish (messages fetched then are not handled, and
/// their offsets not stored). Logs how many handled messages could not be committed, if any.
async fn commit_at_stop(
    consumer: &Arc<KafkaConsumer>,
    stream: &mut rdkafka::consumer::MessageStream<'_, crate::context::ListenerContext>,
    topic: &str,
    progress: &Progress,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        // Positions stored before a lost generation may have been dropped with the assignment: store them again
        // for the partitions still assigned.
        let assigned = consumer.assignment().unwrap_or_default();
        let positions = progress.positions();
        for (partition, stored) in &positions {
            if assigned.find_partition(topic, *partition).is_some() {
                store(consumer, topic, *partition, stored);
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
            report_uncommitted(consumer, topic, &positions, &error, attempts).await;
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
        // Revoked meanwhile: the revoke forgot their progress.
        let _ = consumer.context().take_revoked();
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
    positions: &std::collections::BTreeMap<i32, Stored>,
    error: &KafkaError,
    attempts: u32,
) {
    let mut wanted = TopicPartitionList::new();
    for partition in positions.keys() {
        wanted.add_partition(topic, *partition);
    }
    let reading = Arc::clone(consumer);
    let committed = tokio::task::spawn_blocking(move || reading.committed_offsets(wanted, Duration::from_secs(2)))
        .await
        .ok()
        .and_then(Result::ok);
    let uncommitted: i64 = positions
        .iter()
        .map(|(partition, stored)| {
            let next = stored.position;
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
        positions = ?positions,
        "committing handled offsets at shutdown failed; the next owner of these partitions handles the uncommitted messages again"
    );
}

/// Stores the position (the offset of the next message to handle) as the partition's offset to commit, with the
/// metadata naming the messages after it that are finished.
fn store(consumer: &KafkaConsumer, topic: &str, partition: i32, stored: &Stored) {
    let mut tpl = TopicPartitionList::with_capacity(1);
    let stored = tpl
        .add_partition_offset(topic, partition, Offset::Offset(stored.position))
        .and_then(|()| {
            if let Some(mut element) = tpl.find_partition(topic, partition) {
                element.set_metadata(&stored.metadata);
            }
            consumer.store_offsets(&tpl)
        });
    if let Err(error) = stored {
        tracing::debug!(topic, partition, %error, "offset not stored (partition no longer assigned?)");
    }
}

/// Pauses the partitions that must not fetch now; resumes the others.
fn sync_pauses(consumer: &KafkaConsumer, topic: &str, lanes: &mut Lanes, paused: &mut BTreeSet<i32>) {
    let want = lanes.pauses_wanted();
    if want == *paused {
        return;
    }
    let list = |partitions: &[i32]| {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for p in partitions {
            tpl.add_partition(topic, *p);
        }
        tpl
    };
    let pause: Vec<i32> = want.difference(paused).copied().collect();
    let resume: Vec<i32> = paused.difference(&want).copied().collect();
    if !pause.is_empty() {
        match consumer.pause(&list(&pause)) {
            Ok(()) => tracing::debug!(topic, partitions = ?pause, "partitions paused"),
            Err(error) => tracing::warn!(topic, partitions = ?pause, %error, "pausing partitions failed"),
        }
    }
    if !resume.is_empty() {
        match consumer.resume(&list(&resume)) {
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

fn kafka_error(topic: &str, error: &rdkafka::error::KafkaError) {
    tracing::warn!(topic, %error, "Kafka consumer error; librdkafka keeps retrying");
}
