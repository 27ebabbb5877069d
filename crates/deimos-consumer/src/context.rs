//! The librdkafka consumer context of a listener: tracks the assignment, commits on revoke, reports lag
//! and forwards librdkafka's logs to `tracing`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use deimos_metrics::catalogue::CONSUMER_LAG;

use crate::progress::Progress;

/// The consumer type every listener runs.
pub(crate) type KafkaConsumer = StreamConsumer<ListenerContext>;

/// Per-listener consumer context.
pub(crate) struct ListenerContext {
    topic: Arc<str>,
    group_id: Arc<str>,
    report_lag: bool,
    assigned: Mutex<HashSet<i32>>,
    /// Partitions revoked since the worker last looked, so it can drop batches it buffered for them.
    revoked: Mutex<Vec<i32>>,
    any_revoked: AtomicBool,
    /// Set when the runner closes the consumer (after committing).
    closing: AtomicBool,
    /// The listener's offsets; a revoke waits there for the revoked partitions' units in flight.
    progress: Arc<Progress>,
    /// How long a revoke waits for them.
    drain_within: Duration,
    /// Per partition, the last lag librdkafka's statistics gave.
    lag: Mutex<BTreeMap<i32, i64>>,
    /// Whether the listener's loop runs: a revoke waits for units in flight only then (a consumer dropped with
    /// an aborted loop has none that could finish).
    looping: AtomicBool,
}

impl ListenerContext {
    pub(crate) fn new(
        topic: Arc<str>,
        group_id: Arc<str>,
        report_lag: bool,
        progress: Arc<Progress>,
        drain_within: Duration,
    ) -> ListenerContext {
        ListenerContext {
            topic,
            group_id,
            report_lag,
            assigned: Mutex::new(HashSet::new()),
            revoked: Mutex::new(Vec::new()),
            any_revoked: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            progress,
            drain_within,
            lag: Mutex::new(BTreeMap::new()),
            looping: AtomicBool::new(false),
        }
    }

    /// Says whether the listener's loop runs.
    pub(crate) fn set_looping(&self, yes: bool) {
        self.looping.store(yes, Ordering::Release);
    }

    /// Whether `partition` is assigned now.
    pub(crate) fn is_assigned(&self, partition: i32) -> bool {
        self.assigned.lock().is_ok_and(|a| a.contains(&partition))
    }

    /// Whether `test` holds for one of the partitions assigned now.
    pub(crate) fn any_assigned(&self, mut test: impl FnMut(i32) -> bool) -> bool {
        self.assigned.lock().is_ok_and(|a| a.iter().any(|p| test(*p)))
    }

    /// The partitions assigned now, in order.
    pub(crate) fn assigned(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .assigned
            .lock()
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// The last known lag per assigned partition (with `report_lag`).
    pub(crate) fn lag(&self) -> BTreeMap<i32, i64> {
        self.lag.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Reads the committed offsets of newly assigned partitions: their metadata names the messages after the
    /// committed offset that an earlier owner finished (out of order), which are then skipped.
    fn resume_progress<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, assigned: &TopicPartitionList) {
        if assigned.count() == 0 {
            return;
        }
        let committed = match consumer.committed_offsets(assigned.clone(), Duration::from_secs(10)) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::debug!(topic = &*self.topic, %error, "could not read the committed offsets' metadata; messages finished out of order before may be handled again");
                return;
            }
        };
        for element in committed.elements() {
            if let rdkafka::Offset::Offset(position) = element.offset() {
                let skipped = self
                    .progress
                    .resume_from(element.partition(), position, element.metadata());
                if skipped > 0 {
                    tracing::debug!(
                        topic = &*self.topic,
                        partition = element.partition(),
                        position,
                        skipped,
                        "messages after the committed offset were finished before; they are skipped"
                    );
                }
            }
        }
    }

    /// Forgets the progress of revoked partitions, first waiting (when the consumer is not closing and the
    /// runtime has other threads to run them) for their units in flight, so that what those finish is stored
    /// and committed before the partitions move to another member.
    fn drain_revoked(&self, revoked: &[i32], wait: bool) {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let looping = self.looping.load(Ordering::Acquire);
        let abandoned = if wait && looping && multi_thread && self.progress.in_flight() > 0 {
            tokio::task::block_in_place(|| self.progress.forget(revoked, Some(self.drain_within)))
        } else {
            self.progress.forget(revoked, None)
        };
        if abandoned > 0 {
            tracing::warn!(
                topic = &*self.topic,
                partitions = ?revoked,
                abandoned,
                "partitions revoked with messages still being handled; their offsets are not committed and the next owner handles them again"
            );
        }
    }

    /// Marks the consumer as closing: a revoke then commits without waiting (the runner has committed already,
    /// and the coordinator may be gone).
    pub(crate) fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// The partitions revoked since the last call (cheap when there were none).
    pub(crate) fn take_revoked(&self) -> Vec<i32> {
        // Read before swapping: the listener asks once per message, and a revoke is rare.
        if !self.any_revoked.load(Ordering::Acquire) || !self.any_revoked.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// Commits the stored offsets synchronously; "nothing stored" is success.
pub(crate) fn commit_stored<C: Consumer<X>, X: ConsumerContext>(consumer: &C, topic: &str, why: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!(topic, why, "committed handled offsets"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            tracing::warn!(topic, why, %error, "committing handled offsets failed; the messages handled since the last commit will be delivered again")
        }
    }
}

/// How often, and how far apart, a revoke commit refused for a passing reason is tried.
const REVOKE_COMMIT_ATTEMPTS: u32 = 5;
const REVOKE_COMMIT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Commits the handled offsets before revoked partitions are handed over, and waits for it; a commit refused
/// because the coordinator is moving, loading or slow is tried again a few times (the rebalance waits for this
/// callback meanwhile). A commit refused because the group is rebalancing again cannot succeed before this
/// member rejoins, which it does only after this callback: it is logged, and the next owner may handle those
/// messages again (real brokers accept a commit of the current generation while a rebalance is being prepared;
/// librdkafka's mock cluster refuses it).
fn commit_on_revoke<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) {
    use RDKafkaErrorCode as E;
    for attempt in 1..=REVOKE_COMMIT_ATTEMPTS {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(E::NoOffset)) => return,
            Err(error)
                if attempt < REVOKE_COMMIT_ATTEMPTS
                    && matches!(
                        error.rdkafka_error_code(),
                        Some(
                            E::NotCoordinator
                                | E::CoordinatorNotAvailable
                                | E::CoordinatorLoadInProgress
                                | E::RequestTimedOut
                                | E::NetworkException
                                | E::OperationTimedOut
                        )
                    ) =>
            {
                tracing::debug!(topic, %error, attempt, "the revoke commit was refused for now; trying again");
                std::thread::sleep(REVOKE_COMMIT_PAUSE * attempt);
            }
            Err(error) => {
                tracing::warn!(topic, %error, attempt, "committing handled offsets on revoke failed; the next owner may handle them again");
                return;
            }
        }
    }
}

impl ClientContext for ListenerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let topic = &*self.topic;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", topic, fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", topic, fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", topic, fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", topic, fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", topic = &*self.topic, %error, reason, "librdkafka error");
    }

    fn stats(&self, statistics: Statistics) {
        if !self.report_lag {
            return;
        }
        let Some(topic) = statistics.topics.get(&*self.topic) else {
            return;
        };
        let Ok(assigned) = self.assigned.lock().map(|a| a.clone()) else {
            return;
        };
        let mut lags = BTreeMap::new();
        for (id, partition) in &topic.partitions {
            // Lag behind the last handled (stored) offset, else the committed one; nothing when neither is
            // known yet (Deimos reports nothing for partitions without a known offset).
            let lag = if partition.consumer_lag_stored >= 0 {
                partition.consumer_lag_stored
            } else {
                partition.consumer_lag
            };
            if *id < 0 || !assigned.contains(id) || lag < 0 {
                continue;
            }
            lags.insert(*id, lag);
            // The lag is a count of messages, well inside f64's exact integers.
            #[allow(clippy::cast_precision_loss)]
            let lag = lag as f64;
            metrics::gauge!(
                CONSUMER_LAG.name,
                "consumer_group" => self.group_id.to_string(),
                "partition" => id.to_string(),
                "topic" => self.topic.to_string()
            )
            .set(lag);
        }
        if let Ok(mut l) = self.lag.lock() {
            *l = lags;
        }
    }
}

impl ConsumerContext for ListenerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Let the revoked partitions' messages being handled finish (their offsets are stored as they do),
            // then commit before the rebalance goes on, and wait for it: the partitions' next owner fetches from
            // the committed offset, so a commit still in flight would have it handle these messages again. Not
            // when the assignment is lost (the coordinator is gone, or took the partitions already: a commit
            // could not succeed and a synchronous one could block without bound) nor when closing (the runner
            // has committed already).
            let wait = !consumer.assignment_lost() && !self.closing.load(Ordering::Acquire);
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            self.drain_revoked(&revoked, wait);
            if wait {
                commit_on_revoke(consumer, &self.topic);
            } else {
                match consumer.commit_consumer_state(CommitMode::Async) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(error) => {
                        tracing::warn!(topic = &*self.topic, %error, "committing handled offsets on revoke failed; the next owner may handle them again")
                    }
                }
            }
            if let Ok(mut a) = self.assigned.lock() {
                for p in &revoked {
                    a.remove(p);
                }
            }
            if let Ok(mut r) = self.revoked.lock() {
                r.extend(revoked.iter().copied());
            }
            self.any_revoked.store(true, Ordering::Release);
            tracing::info!(topic = &*self.topic, group_id = &*self.group_id, partitions = ?revoked, "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // The listener pauses partitions that wait; one it gets (back) starts fetching.
                if let Err(error) = consumer.resume(tpl) {
                    tracing::debug!(topic = &*self.topic, %error, "resuming newly assigned partitions failed");
                }
                self.resume_progress(consumer, tpl);
                let added: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                if let Ok(mut a) = self.assigned.lock() {
                    a.extend(added.iter().copied());
                }
                tracing::info!(topic = &*self.topic, group_id = &*self.group_id, partitions = ?added, "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(topic = &*self.topic, group_id = &*self.group_id, %error, "rebalance error")
            }
        }
    }
}
