//! The librdkafka consumer context of a listener: tracks the assignment, commits on revoke, reports lag
//! and forwards librdkafka's logs to `tracing`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use deimos_metrics::catalogue::CONSUMER_LAG;

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
}

impl ListenerContext {
    pub(crate) fn new(topic: Arc<str>, group_id: Arc<str>, report_lag: bool) -> ListenerContext {
        ListenerContext {
            topic,
            group_id,
            report_lag,
            assigned: Mutex::new(HashSet::new()),
            revoked: Mutex::new(Vec::new()),
            any_revoked: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    /// Marks the consumer as closing: a revoke then commits without waiting (the runner has committed already,
    /// and the coordinator may be gone).
    pub(crate) fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// The partitions revoked since the last call (cheap when there were none).
    pub(crate) fn take_revoked(&self) -> Vec<i32> {
        if !self.any_revoked.swap(false, Ordering::AcqRel) {
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
    }
}

impl ConsumerContext for ListenerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // The offsets handled so far are stored (the listener polls its consumer only between two steps,
            // never during a handler call). Commit them before the rebalance goes on, and wait for it: the
            // partitions' next owner fetches from the committed offset, so a commit still in flight would have
            // it handle these messages again. Not when the assignment is lost (the coordinator is gone, or took
            // the partitions already: a commit could not succeed and a synchronous one could block without
            // bound) nor when closing (the runner has committed already).
            let wait = !consumer.assignment_lost() && !self.closing.load(Ordering::Acquire);
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
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
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
